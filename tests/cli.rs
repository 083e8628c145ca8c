//! The `rally` binary as users run it: the headless demo, replays, and a shard
//! that drains on SIGTERM without losing a result.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rally::common::ReadyLine;
use rally_client::ConnectConfig;
use rally_client::quic::endpoint;
use rally_client::session::ClientEvent;
use rally_client::tls::{ServerTrust, client_config};
use rally_client::{Connection, Transport};
use rally_matchmaker::{SeatGrant, TokenMinter};
use rally_protocol::control::{ClientHello, EndReason, MatchEnd};
use rally_protocol::results::MatchResult;
use rally_protocol::{MatchId, PlayerId};
use rally_sim::autopilot::{Autopilot, AutopilotConfig};

fn rally() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rally"))
}

#[test]
fn the_demo_records_matches_that_replay_to_the_same_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let output = rally()
        .args(["sim", "--matches", "200", "--seconds", "3", "--points-to-win", "1", "--json", "--record-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let finished = summary["matches_finished"].as_u64().unwrap();
    assert!(summary["ticks"].as_u64().unwrap() > 0);
    assert!(finished > 0, "{summary}");
    let replays: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert_eq!(replays.len() as u64, finished, "one replay per finished match");
    let output = rally().args(["sim", "replay"]).arg(&replays[0]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("outcome: Score"), "{text}");
}

#[test]
fn a_replay_that_is_not_one_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bogus.replay");
    std::fs::write(&path, b"definitely not a replay").unwrap();
    let output = rally().args(["sim", "replay"]).arg(&path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("is not a rally replay"), "{stderr}");
}

#[test]
fn oidc_providers_are_lobby_options_and_a_bad_spec_says_what_to_change() {
    let output = rally().args(["lobby", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for option in ["--oidc <SPEC>", "--oauth2 <SPEC>", "--identity-providers <FILE>", "redirect-uri=URI"] {
        assert!(help.contains(option), "{option} is not in rally lobby --help:\n{help}");
    }
    let output = rally().args(["lobby", "--oidc", "google=https://accounts.google.com,client-id"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("no redirect-uri"), "{stderr}");

    // A secret file is read when the lobby starts: a missing one stops it with its path.
    let dir = tempfile::tempdir().unwrap();
    let spec = "g=http://127.0.0.1:9/,rally,secret-file=/nonexistent/g.secret,redirect-uri=http://127.0.0.1/cb";
    let output = rally()
        .args([
            "lobby",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--oidc",
            spec,
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("cannot read secret-file /nonexistent/g.secret"), "{stderr}");
}

#[test]
fn a_shard_without_an_issuer_key_says_how_to_get_one() {
    let output = rally().args(["shard", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--token-key"));
}

#[test]
fn a_token_key_with_a_non_ascii_character_is_an_error_not_a_panic() {
    // Two bytes of 'é' straddle the first pair of digits: slicing the text at
    // byte offsets would cut the character in half.
    let key = format!("1:0é{}", "0".repeat(61));
    let output = rally()
        .args(["shard", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--token-key", &key])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not hex") && !stderr.contains("panicked"), "{stderr}");
}

struct ShardProcess {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    fingerprint: String,
}

/// Starts `rally shard --ready-json` trusting `minter` and reads its ready line.
fn start_shard(data_dir: &std::path::Path, minter: &TokenMinter, drain_timeout: &str) -> ShardProcess {
    let mut child = rally()
        .args(["shard", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--name", "cli-shard"])
        .args(["--drain-timeout", drain_timeout, "--token-key", &minter.public_key_spec(), "--ready-json"])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let ready = ReadyLine::parse(&line).unwrap();
    assert_eq!((ready.role.as_str(), ready.name.as_deref(), ready.udp), ("shard", Some("cli-shard"), None), "{line}");
    ShardProcess {
        child,
        addr: ready.quic.unwrap(),
        metrics: ready.metrics.unwrap(),
        fingerprint: ready.fingerprint.unwrap(),
    }
}

fn minter(seed: u8) -> TokenMinter {
    TokenMinter::new(SigningKey::from_bytes(&[seed; 32]), 1)
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn token(minter: &TokenMinter, match_id: u64, seat: u8, points_to_win: u8) -> ClientHello {
    let grant = SeatGrant {
        player_id: PlayerId(match_id * 10 + u64::from(seat)),
        match_id: MatchId(match_id),
        seat,
        n_seats: 2,
        points_to_win,
        shard: "cli-shard".into(),
    };
    let (token, _expires_at_ms) = minter.mint(&grant, rally_transport::unix_ms()).unwrap();
    ClientHello::Connect { token }
}

async fn play(mut connection: Connection, config: AutopilotConfig) -> Option<MatchEnd> {
    let welcome = connection.welcome().clone();
    let mut autopilot = Autopilot::new(&welcome.schema, welcome.seat, config, 3).unwrap();
    while let Some(event) = connection.next_event().await {
        match event {
            ClientEvent::Snapshot(view) => connection.set_input(autopilot.decide(&view)),
            ClientEvent::Ended(end) => return Some(end),
            _ => {}
        }
    }
    None
}

fn results(data_dir: &std::path::Path) -> Vec<MatchResult> {
    let text = std::fs::read_to_string(data_dir.join("results.jsonl")).unwrap_or_default();
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the shard did not exit after SIGTERM");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_matches_finish_and_loses_no_result() {
    let dir = tempfile::tempdir().unwrap();
    let key = minter(5);
    let mut shard = start_shard(dir.path(), &key, "60");
    assert!(http_get(shard.metrics, "/readyz").starts_with("HTTP/1.1 200"));
    let client = endpoint(client_config(&ServerTrust::Fingerprint(shard.fingerprint.clone())).unwrap()).unwrap();
    let config = ConnectConfig::new(shard.addr);
    let mut a = Connection::connect(&Transport::Quic(client.clone()), &config, &token(&key, 1, 0, 1)).await.unwrap();
    let b = Connection::connect(&Transport::Quic(client.clone()), &config, &token(&key, 1, 1, 1)).await.unwrap();
    // Once snapshots flow, the metrics endpoint shows the shard at work.
    while let Some(event) = a.next_event().await {
        if matches!(event, ClientEvent::Snapshot(_)) {
            break;
        }
    }
    let metrics = tokio::task::spawn_blocking(move || http_get(shard.metrics, "/metrics")).await.unwrap();
    for name in ["rally_shard_tick_seconds", "rally_shard_snapshot_payload_bytes", "rally_shard_connections 2"] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    sigterm(&shard.child);
    let good = AutopilotConfig { anticipate: true, aim_error: 200, ..AutopilotConfig::default() };
    let wild = AutopilotConfig { aim_error: 2000, reaction_ticks: 20, ..AutopilotConfig::default() };
    let (end_a, end_b) = tokio::join!(play(a, good), play(b, wild));
    assert_eq!(end_a.unwrap().reason, EndReason::Score, "the running match plays on through the drain");
    assert_eq!(end_b.unwrap().reason, EndReason::Score);
    let status = tokio::task::spawn_blocking(move || wait_for_exit(&mut shard.child)).await.unwrap();
    assert!(status.success(), "{status:?}");
    let results = results(dir.path());
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].reason, EndReason::Score);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_deadline_cuts_matches_short_but_still_records_them() {
    let dir = tempfile::tempdir().unwrap();
    let key = minter(6);
    let mut shard = start_shard(dir.path(), &key, "1");
    let client = endpoint(client_config(&ServerTrust::Fingerprint(shard.fingerprint.clone())).unwrap()).unwrap();
    let config = ConnectConfig::new(shard.addr);
    let a = Connection::connect(&Transport::Quic(client.clone()), &config, &token(&key, 2, 0, 99)).await.unwrap();
    let b = Connection::connect(&Transport::Quic(client.clone()), &config, &token(&key, 2, 1, 99)).await.unwrap();
    sigterm(&shard.child);
    // Ready to nobody once the signal is handled: the shard refuses new matches
    // while draining. The signal arrives asynchronously, so poll for it.
    let metrics = shard.metrics;
    let draining = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let response = http_get(metrics, "/readyz");
            if response.starts_with("HTTP/1.1 503") || Instant::now() >= deadline {
                return response;
            }
            std::thread::park_timeout(Duration::from_millis(10));
        }
    })
    .await
    .unwrap();
    assert!(draining.starts_with("HTTP/1.1 503"), "{draining}");
    let steady = AutopilotConfig { anticipate: true, ..AutopilotConfig::default() };
    let (end_a, end_b) = tokio::join!(play(a, steady), play(b, steady));
    assert_eq!(end_a.unwrap().reason, EndReason::ShardShutdown);
    assert_eq!(end_b.unwrap().reason, EndReason::ShardShutdown);
    let status = tokio::task::spawn_blocking(move || wait_for_exit(&mut shard.child)).await.unwrap();
    assert!(status.success(), "{status:?}");
    let results = results(dir.path());
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].reason, EndReason::ShardShutdown);
}

#[test]
fn bot_play_stops_cleanly_on_ctrl_c_while_its_bots_wait_for_the_lobby() {
    // Nothing listens here: the bots keep retrying their logins until stopped.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let mut child = rally()
        .args(["bot", "play", "--policy", "tracker", "--count", "3", "--lobby", &nowhere, "--matchmaker", &nowhere])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut said = Vec::new();
    loop {
        let line = lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no start: {said:?}"));
        let started = line.contains("bots queueing");
        said.push(line);
        if started {
            break;
        }
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "rally bot play did not stop after Ctrl-C");
        std::thread::park_timeout(Duration::from_millis(50));
    };
    said.extend(lines.try_iter());
    assert!(status.success(), "exit {status:?} after a clean stop; it said {said:?}");
    assert!(!said.iter().any(|line| line.contains("cancelled")), "{said:?}");
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert!(stdout.contains("0 matches"), "the summary line: {stdout}");
}
