//! A PostgreSQL cluster of the test's own: `initdb`/`pg_ctl` as the
//! `postgres` user (they refuse to run as root) into a temporary directory, on
//! a free port, never the machine's shared server. Adapted from the
//! matchmaker's `tests/postgres_outage.rs`, which the root package cannot reach.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL cluster, stopped (immediately) when dropped.
pub struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnPostgres {
    /// `initdb` into a fresh temporary directory, on a free port, and start it.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // The server runs as `postgres`, which must reach the directory.
        chmod(dir.path(), 0o777);
        let cluster = Self { dir, port: super::free_tcp_port() };
        as_postgres(&["initdb", "-D", path_str(&cluster.data()), "-A", "trust", "-U", "postgres", "--no-sync"]);
        cluster.pg_ctl_start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Its `postgres` database, as the superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            path_str(self.dir.path())
        );
        let log = self.dir.path().join("log");
        as_postgres(&["pg_ctl", "-D", path_str(&self.data()), "-o", &options, "-l", path_str(&log), "-w", "start"]);
    }

    /// Stops the server as a crash would (`-m immediate`: no checkpoint, every
    /// connection cut) and starts it again on the same port and data; returns
    /// once it accepts connections.
    pub fn restart_after_crash(&self) {
        as_postgres(&["pg_ctl", "-D", path_str(&self.data()), "-m", "immediate", "-w", "stop"]);
        self.pg_ctl_start();
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", "pg_ctl", "-D", path_str(&self.data()), "-m", "immediate", "stop"])
            .output();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod the cluster's directory");
}

/// Runs a PostgreSQL tool as the `postgres` user.
fn as_postgres(args: &[&str]) {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .expect("runuser (the tests start PostgreSQL as the postgres user)");
    assert!(
        output.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
