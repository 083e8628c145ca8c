//! `rally` roles as child processes of a test: each with a fixed command line
//! (so a restart is the same process again, on the same ports and data), its
//! log in a file, and its ready line read from stdout (`--ready-json`).
//! Killed (SIGKILL) when dropped; [`Logs`] prints every log's tail when the
//! test fails.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rally::common::ReadyLine;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a role may take to print its ready line.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Where the processes' logs go; on a failing test, their tails are printed.
pub struct Logs {
    dir: tempfile::TempDir,
}

impl Logs {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("a temporary directory") }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else { return };
        let mut paths: Vec<PathBuf> = entries.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            eprintln!("---- {} (last {} lines) ----\n{}", path.display(), tail.len(), tail.join("\n"));
        }
    }
}

/// One role: `rally ARGS…`, started again with the same arguments after a kill.
pub struct Process {
    name: String,
    args: Vec<OsString>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    ready_json: bool,
    child: Option<Child>,
    /// The ready line of the latest start (roles started with `--ready-json`).
    pub ready: Option<ReadyLine>,
    /// Starts so far.
    pub starts: u32,
}

impl Process {
    /// A role named `name` (for logs and messages), not started yet.
    pub fn new<I, S>(name: &str, args: I, logs: &Logs) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self {
            name: name.to_owned(),
            args: args.into_iter().map(Into::into).collect(),
            envs: Vec::new(),
            log: logs.path(name),
            ready_json: false,
            child: None,
            ready: None,
            starts: 0,
        }
    }

    /// Passes `--ready-json` and waits for the ready line on each start.
    #[must_use]
    pub fn with_ready_line(mut self) -> Self {
        self.ready_json = true;
        self
    }

    /// Sets an environment variable for every start.
    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Starts the process (appending to its log) and, for a role with a ready
    /// line, waits for it; a role that exits first fails the test with its log.
    pub async fn start(&mut self) -> &ReadyLine {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open the log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_rally"));
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(key, value)| (key, value)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stderr(log.try_clone().expect("clone the log handle"))
            .kill_on_drop(true);
        if self.ready_json {
            command.arg("--ready-json").stdout(Stdio::piped());
        } else {
            command.stdout(log);
        }
        let mut child = command.spawn().expect("spawn rally");
        self.starts += 1;
        if self.ready_json {
            let stdout = child.stdout.take().expect("piped stdout");
            let mut lines = BufReader::new(stdout).lines();
            let line = tokio::time::timeout(READY_WITHIN, lines.next_line()).await;
            let line = match line {
                Ok(Ok(Some(line))) => line,
                other => panic!(
                    "{} printed no ready line within {READY_WITHIN:?} ({other:?}); its log:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
            };
            self.ready = Some(ReadyLine::parse(&line).unwrap_or_else(|err| panic!("{}: {err:#}", self.name)));
            // Whatever else it prints goes nowhere, and never fills the pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        }
        self.child = Some(child);
        self.ready.get_or_insert_with(|| ReadyLine::new("none"))
    }

    /// `kill -9`: no drain, no goodbye. Waits until the process is gone.
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().unwrap_or_else(|| panic!("{} is not running", self.name));
        child.kill().await.unwrap_or_else(|err| panic!("kill -9 {}: {err}", self.name));
    }

    /// SIGTERM (a role drains), then waits up to `limit` for it to exit.
    pub async fn terminate(&mut self, limit: Duration) {
        let mut child = self.child.take().unwrap_or_else(|| panic!("{} is not running", self.name));
        let pid = child.id().expect("a running child has a pid");
        let status = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        assert!(status.is_ok_and(|status| status.success()), "kill -TERM {pid} ({})", self.name);
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(exited) => {
                exited.unwrap_or_else(|err| panic!("waiting for {}: {err}", self.name));
            }
            Err(_) => panic!("{} did not exit within {limit:?} of SIGTERM", self.name),
        }
    }

    /// Whether it exited by itself (it should not have).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }
}
