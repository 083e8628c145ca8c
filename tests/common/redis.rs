//! A `redis-server` of the test's own: a free port, a temporary directory,
//! the append-only file on with an fsync per write (so a restart keeps every
//! acknowledged write), never the machine's shared server. Needs
//! `redis-server` and `redis-cli` on `PATH`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server`, killed when dropped.
pub struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> Self {
        let mut redis = Self {
            port: super::free_tcp_port(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            child: None,
        };
        redis.spawn().await;
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (the fleet test starts its own)");
        self.child = Some(child);
        let port = self.port;
        super::eventually("the test's own redis-server answers PING", Duration::from_secs(20), || async move {
            ping(port).await
        })
        .await;
    }

    /// Shuts the server down gracefully (the append-only file is complete) and
    /// starts it again on the same port and data; returns once it answers.
    pub async fn restart_keeping_data(&mut self) {
        let output = tokio::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "SHUTDOWN"])
            .output()
            .await
            .expect("redis-cli");
        // A SHUTDOWN that works closes the connection: no reply, so no exit-status check.
        drop(output);
        self.reap().await;
        self.spawn().await;
    }

    /// Kills the server (SIGKILL), deletes everything it kept, and starts it
    /// again on the same port, empty; returns once it answers, with the Unix
    /// ms at which it was down (every entry id of the old server's streams is
    /// at or before it, every one of the new server's after it).
    pub async fn restart_empty(&mut self) -> u64 {
        if let Some(child) = self.child.as_mut() {
            child.kill().expect("kill redis-server");
        }
        self.reap().await;
        let down_at = super::unix_ms();
        for entry in std::fs::read_dir(self.dir.path()).expect("the Redis directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).expect("remove the append-only directory");
            } else {
                std::fs::remove_file(&path).expect("remove a Redis file");
            }
        }
        self.spawn().await;
        down_at
    }

    async fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait for redis-server");
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether the server on `port` answers PING (not while it loads its data).
async fn ping(port: u16) -> bool {
    let output = tokio::process::Command::new("redis-cli").args(["-p", &port.to_string(), "PING"]).output().await;
    output.is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "PONG")
}
