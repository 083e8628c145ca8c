//! `rally shard --agones` as a process, against the fake Agones SDK sidecar (the SDK's gRPC
//! contract, `rally_agones::fake_sidecar`; no cluster and no real sidecar run here): it
//! registers the GameServer's public address in the Redis registry, is Allocated while a match
//! runs, and on SIGTERM lets the match finish, writes its result, then calls `Shutdown` last.
//! Needs `RALLY_TEST_REDIS_URL`.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::process::Stdio;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rally::common::ReadyLine;
use rally_agones::fake_sidecar::{Call, FakeSidecar};
use rally_client::quic::endpoint;
use rally_client::session::ClientEvent;
use rally_client::tls::{ServerTrust, client_config};
use rally_client::{ConnectConfig, Connection, Transport};
use rally_matchmaker::redis::RedisRegistry;
use rally_matchmaker::{RedisConnection, SeatGrant, ShardRegistry, TokenMinter};
use rally_protocol::control::{ClientHello, EndReason};
use rally_protocol::{MatchId, PlayerId};
use tokio::io::AsyncBufReadExt;

const SHARD: &str = "shard-agones";

fn hello(minter: &TokenMinter, seat: u8) -> ClientHello {
    let grant = SeatGrant {
        player_id: PlayerId(70 + u64::from(seat)),
        match_id: MatchId(7),
        seat,
        n_seats: 2,
        points_to_win: 99,
        shard: SHARD.into(),
    };
    ClientHello::Connect { token: minter.mint(&grant, rally_transport::unix_ms()).unwrap().0 }
}

/// Reads events until the match ends; returns how it ended.
async fn until_end(mut connection: Connection) -> Option<EndReason> {
    while let Some(event) = connection.next_event().await {
        if let ClientEvent::Ended(end) = event {
            return Some(end.reason);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rally_shard_agones_registers_the_gameserver_address_and_shuts_down_last() {
    let redis_url =
        std::env::var("RALLY_TEST_REDIS_URL").expect("RALLY_TEST_REDIS_URL: the Redis for the shard registry");
    let prefix = format!("rally-test-agones-{:016x}", rand::random::<u64>());
    let dir = tempfile::tempdir().unwrap();
    let sidecar = FakeSidecar::shard_ports();
    sidecar.count_lines_at_shutdown(dir.path().join("results.jsonl"));
    let sdk_port = sidecar.serve().await.unwrap();
    let minter = TokenMinter::new(SigningKey::from_bytes(&[9; 32]), 1);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rally"))
        .args(["shard", "--agones", "--name", SHARD, "--listen", "127.0.0.1:0"])
        .args(["--metrics-addr", "127.0.0.1:0", "--max-matches", "16", "--region", "eu-test"])
        .args(["--resume-grace", "0.5"])
        .args(["--redis-url", &redis_url, "--redis-prefix", &prefix, "--ready-json"])
        .args(["--token-key", &minter.public_key_spec()])
        .arg("--data-dir")
        .arg(dir.path())
        .env("AGONES_SDK_GRPC_PORT", sdk_port.to_string())
        .env_remove("RALLY_SHARD_PUBLIC_ADDR")
        .env_remove("RALLY_AGONES")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).await.unwrap();
    let ready = ReadyLine::parse(&line).unwrap();

    // The ready line comes once the GameServer is Ready, labelled and counted.
    assert_eq!(sidecar.state(), "Ready");
    assert_eq!(
        sidecar.lifecycle_calls(),
        vec![
            Call::SetLabel("rally-version".into(), env!("CARGO_PKG_VERSION").into()),
            Call::SetLabel("rally-region".into(), "eu-test".into()),
            Call::UpdateCounter { name: "matches".into(), count: None, capacity: Some(16), diff: 0 },
            Call::UpdateCounter { name: "matches".into(), count: Some(0), capacity: None, diff: 0 },
            Call::Ready,
        ]
    );

    // The registry names the node address and the `quic` port's host port, not the bound one.
    let registry = RedisRegistry::new(RedisConnection::connect_lazy(&redis_url, &prefix).unwrap());
    let registered = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let shards = registry.shards(rally_transport::unix_ms()).await.unwrap();
            if let Some(entry) = shards.into_iter().find(|entry| entry.info.name == SHARD) {
                return entry;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(registered.info.address, "203.0.113.7:27102");

    // A match (over QUIC, to the bound address): Allocated while it runs.
    let client = endpoint(client_config(&ServerTrust::Fingerprint(ready.fingerprint.unwrap())).unwrap()).unwrap();
    let config = ConnectConfig::new(ready.quic.unwrap());
    let a = Connection::connect(&Transport::Quic(client.clone()), &config, &hello(&minter, 0)).await.unwrap();
    let b = Connection::connect(&Transport::Quic(client.clone()), &config, &hello(&minter, 1)).await.unwrap();
    sidecar.wait_until("the match counted", |s| s.counter().0 == 1 && s.state() == "Allocated").await;
    sidecar.wait_until("a health ping from the ticking shard", |s| s.pings() >= 1).await;

    // SIGTERM: the match plays on; when a player leaves it ends, its result is written, and only
    // then does the process tell Agones it is done.
    let pid = child.id().unwrap().to_string();
    assert!(tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let metrics = ready.metrics.unwrap();
    let draining = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let response = http_get(metrics, "/readyz").await;
            if response.starts_with("HTTP/1.1 503") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(draining.is_ok(), "the shard never reported draining");
    assert!(!sidecar.calls().contains(&Call::Shutdown), "no Shutdown while a match runs");
    a.leave();
    let (_, end_b) = tokio::join!(until_end(a), until_end(b));
    assert_eq!(end_b, Some(EndReason::Forfeit), "the match ran to its end through the drain");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");

    let lifecycle = sidecar.lifecycle_calls();
    assert_eq!(lifecycle.last(), Some(&Call::Shutdown), "{lifecycle:?}");
    let states: Vec<_> = lifecycle.iter().filter(|call| call.is_state()).cloned().collect();
    assert_eq!(states, vec![Call::Ready, Call::Allocate, Call::Shutdown], "never Ready again once draining");
    assert_eq!(sidecar.counter().0, 0);
    assert_eq!(sidecar.lines_at_shutdown(), Some(1), "the match's result was on disk before Shutdown");
}

/// `GET path` over a plain TCP connection (the ops endpoint speaks HTTP/1.1).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}
