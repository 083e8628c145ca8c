//! `rally shard --agones` as a process, against the fake Agones SDK sidecar (the SDK's gRPC
//! contract, `rally_agones::fake_sidecar`; no cluster and no real sidecar run here): it
//! registers the GameServer's public address in the Redis registry, and on SIGTERM drains and
//! calls `Shutdown` last. Needs `RALLY_TEST_REDIS_URL`.

use std::process::Stdio;
use std::time::Duration;

use rally_agones::fake_sidecar::{Call, FakeSidecar};
use rally_matchmaker::redis::RedisRegistry;
use rally_matchmaker::{RedisConnection, ShardRegistry};

#[tokio::test]
async fn rally_shard_agones_registers_the_gameserver_address_and_shuts_down_last() {
    let redis_url =
        std::env::var("RALLY_TEST_REDIS_URL").expect("RALLY_TEST_REDIS_URL: the Redis for the shard registry");
    let prefix = format!("rally-test-agones-{:016x}", rand::random::<u64>());
    let sidecar = FakeSidecar::shard_ports();
    let sdk_port = sidecar.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rally"))
        .args(["shard", "--agones", "--name", "shard-agones", "--listen", "127.0.0.1:0"])
        .args(["--metrics-addr", "127.0.0.1:0", "--max-matches", "16", "--region", "eu-test"])
        .args(["--redis-url", &redis_url, "--redis-prefix", &prefix, "--ready-json"])
        .arg("--token-key")
        .arg(format!("1:{}", hex::encode(token_key.as_bytes())))
        .arg("--data-dir")
        .arg(dir.path())
        .env("AGONES_SDK_GRPC_PORT", sdk_port.to_string())
        .env_remove("RALLY_SHARD_PUBLIC_ADDR")
        .env_remove("RALLY_AGONES")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    sidecar.wait_until("the shard is Ready", |s| s.state() == "Ready").await;
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
            if let Some(entry) = shards.into_iter().find(|entry| entry.info.name == "shard-agones") {
                return entry;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(registered.info.address, "203.0.113.7:27102");
    sidecar.wait_until("a health ping from the ticking shard", |s| s.pings() >= 1).await;

    let pid = child.id().unwrap().to_string();
    assert!(tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    let lifecycle = sidecar.lifecycle_calls();
    assert_eq!(lifecycle.last(), Some(&Call::Shutdown), "{lifecycle:?}");
    let states: Vec<_> = lifecycle.into_iter().filter(Call::is_state).collect();
    assert_eq!(states, vec![Call::Ready, Call::Shutdown], "no match ran, so never Allocated");
}
