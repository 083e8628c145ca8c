//! Staged here until the web client plays matches (issue #20): this is the cargo
//! integration test that becomes `tests/browser.rs` (so `cargo test browser` runs
//! it); outside `tests/` it is not compiled.
//!
//! The browser test: `rally up` with its web client, and headless Chromium
//! (Debian's `chromium`, driven by `playwright-core` from web/node_modules)
//! running web/e2e/browser.mjs against it: a person registers, queues against
//! a house bot and plays the match to its end over WebTransport with the
//! keyboard, then sees the result and the new rating; a second account watches
//! a running match and sees the ball move; an operator's console lists the
//! shard and a match. Screenshots and the page's measurements (canvas frames
//! per second, input-to-screen latency) land in `target/browser-artifacts/`.
//!
//! Nothing here judges a speed: the figures are printed and kept as
//! artifacts (BENCHMARKS.md quotes them with this test's command); the test
//! checks only that they were measured.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rally::common::ReadyLine;
use rally_matchmaker::player::PlayerClient;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// `rally up` with its output read on a thread; killed when dropped.
struct Up {
    child: Child,
    ready: ReadyLine,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_up(data_dir: &Path) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rally"))
        .args(["up", "--bots", "2", "--points-to-win", "3", "--bot-difficulty", "easy", "--no-tournament"])
        .args(["--lobby-addr", "127.0.0.1:0", "--matchmaker-addr", "127.0.0.1:0", "--shard-addr", "127.0.0.1:0"])
        .args(["--udp-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--web-addr", "127.0.0.1:0"])
        .args(["--ready-json", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting rally up");
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let ready = loop {
        let line = lines.recv_timeout(Duration::from_secs(120)).expect("rally up prints its ready line");
        if line.starts_with('{') {
            break ReadyLine::parse(&line).unwrap();
        }
    };
    Up { child, ready }
}

/// What the browser needs that this machine may lack, said so a person can act on it.
fn prerequisites() -> PathBuf {
    let chromium = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(chromium.exists(), "no Chromium at {}: `make debs` installs Debian's chromium", chromium.display());
    let web = Path::new(REPO).join("web");
    assert!(
        web.join("node_modules/playwright-core").exists(),
        "web/node_modules is missing: run `make web` (npm ci from web/package-lock.json)"
    );
    assert!(web.join("dist/index.html").exists(), "the web client is not built: run `make web`");
    chromium
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_plays_a_match_against_a_bot_watches_another_and_sees_the_console() {
    let chromium = prerequisites();
    let data = tempfile::tempdir().unwrap();
    let up = start_up(data.path());
    let lobby = format!("http://{}", up.ready.lobby.unwrap());
    let matchmaker = format!("http://{}", up.ready.matchmaker.unwrap());
    let web = up.ready.web.expect("rally up's ready line names the web client");

    // The operator: an account made here, granted the role the console needs
    // with the operator's own command, before it logs in (the access token
    // carries the role).
    let (operator, password) = ("console-operator", "operator password 1");
    PlayerClient::register_or_login(lobby.clone(), matchmaker.clone(), operator, password)
        .await
        .expect("registering the operator's account");
    let granted = Command::new(env!("CARGO_BIN_EXE_rally"))
        .args(["admin", "grant", "operator", operator, "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(granted.status.success(), "rally admin grant operator: {}", String::from_utf8_lossy(&granted.stderr));

    let artifacts = Path::new(REPO).join("target/browser-artifacts");
    let script = Path::new(REPO).join("web/e2e/browser.mjs");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .current_dir(Path::new(REPO).join("web"))
            .env("RALLY_WEB_URL", format!("http://{web}/"))
            .env("CHROMIUM", chromium)
            .env("ARTIFACTS", &artifacts)
            .env("OPERATOR_USER", operator)
            .env("OPERATOR_PASSWORD", password)
            .stderr(Stdio::inherit())
            .output()
            .expect("running node (Node.js 20 is needed for the web client)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    assert!(output.status.success(), "the browser script failed ({}); screenshots in target/browser-artifacts", output.status);

    let report = stdout.lines().find_map(|line| line.strip_prefix("BROWSER_STATS ")).expect("the script's report line");
    let report: serde_json::Value = serde_json::from_str(report).unwrap();
    let result = &report["result"];
    let (ours, theirs) = (result["ourScore"].as_u64().unwrap(), result["theirScore"].as_u64().unwrap());
    assert!(ours == 3 || theirs == 3, "the match was played to 3 points: {result}");
    assert_eq!(result["won"].as_bool(), Some(ours > theirs), "{result}");
    let (before, after) = (result["ratingBefore"].as_f64().unwrap(), result["ratingAfter"].as_f64().unwrap());
    assert!(if ours > theirs { after > before } else { after < before }, "the rating moved the right way: {result}");

    let shard = up.ready.name.clone().unwrap();
    assert!(report["console"]["shardText"].as_str().unwrap().contains(&shard), "the console lists {shard}: {report}");
    assert!(report["console"]["matchRows"].as_u64().unwrap() >= 1, "{report}");

    let stats = &report["stats"];
    assert!(stats["fps"].as_f64().unwrap() > 0.0, "frames were counted: {stats}");
    assert!(stats["inputToScreenMs"]["samples"].as_u64().unwrap() > 0, "key presses were timed to the screen: {stats}");
    println!("browser measurements: {stats}");
}
