//! The `rally` binary as users run it: the headless demo, replays, and a shard
//! that drains on SIGTERM without losing a result.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use rally_client::quic::{ConnectConfig, GameConnection, endpoint};
use rally_client::session::ClientEvent;
use rally_client::tls::{ServerTrust, client_config};
use rally_protocol::control::{ClientHello, EndReason, MatchEnd};
use rally_protocol::results::MatchResult;
use rally_protocol::token::TokenClaims;
use rally_protocol::{MatchId, PROTOCOL_VERSION, PlayerId};
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
fn a_shard_without_an_issuer_key_says_how_to_get_one() {
    let output = rally().args(["shard", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--token-key"));
}

struct ShardProcess {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    fingerprint: String,
}

fn start_shard(data_dir: &std::path::Path, key: &SigningKey, drain_timeout: &str) -> ShardProcess {
    let public: String = key.verifying_key().as_bytes().iter().map(|byte| format!("{byte:02x}")).collect();
    let mut child = rally()
        .args(["shard", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--name", "cli-shard"])
        .args(["--drain-timeout", drain_timeout, "--token-key", &format!("1:{public}"), "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    // "shard NAME listening on ADDR (QUIC), metrics on http://ADDR/metrics, certificate sha256 HEX"
    let words: Vec<&str> = line.split_whitespace().collect();
    let addr = words[4].parse().unwrap();
    let metrics = words[8].trim_start_matches("http://").trim_end_matches("/metrics,").parse().unwrap();
    let fingerprint = words[11].to_owned();
    ShardProcess { child, addr, metrics, fingerprint }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn token(key: &SigningKey, match_id: u64, seat: u8, points_to_win: u8) -> ClientHello {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let mut nonce = [0u8; 16];
    nonce[0] = seat;
    nonce[8..].copy_from_slice(&match_id.to_le_bytes());
    let claims = TokenClaims {
        protocol_version: PROTOCOL_VERSION,
        key_id: 1,
        player_id: PlayerId(match_id * 10 + u64::from(seat)),
        match_id: MatchId(match_id),
        seat,
        n_seats: 2,
        points_to_win,
        issued_at_ms: now,
        expires_at_ms: now + 60_000,
        nonce,
        shard: "cli-shard".into(),
    };
    ClientHello::Connect { token: claims.sign(key).unwrap() }
}

async fn play(mut connection: GameConnection, config: AutopilotConfig) -> Option<MatchEnd> {
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
    let key = SigningKey::from_bytes(&[5; 32]);
    let mut shard = start_shard(dir.path(), &key, "60");
    assert!(http_get(shard.metrics, "/readyz").starts_with("HTTP/1.1 200"));
    let client = endpoint(client_config(&ServerTrust::Fingerprint(shard.fingerprint.clone())).unwrap()).unwrap();
    let config = ConnectConfig::new(shard.addr);
    let mut a = GameConnection::connect(&client, &config, &token(&key, 1, 0, 1)).await.unwrap();
    let b = GameConnection::connect(&client, &config, &token(&key, 1, 1, 1)).await.unwrap();
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
    let key = SigningKey::from_bytes(&[6; 32]);
    let mut shard = start_shard(dir.path(), &key, "1");
    let client = endpoint(client_config(&ServerTrust::Fingerprint(shard.fingerprint.clone())).unwrap()).unwrap();
    let config = ConnectConfig::new(shard.addr);
    let a = GameConnection::connect(&client, &config, &token(&key, 2, 0, 99)).await.unwrap();
    let b = GameConnection::connect(&client, &config, &token(&key, 2, 1, 99)).await.unwrap();
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
