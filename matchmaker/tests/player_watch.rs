//! `PlayerClient` keeps a matched ticket watched: when the matchmaker gives
//! up on the match's shard, `TicketWatch::aborted` says so at once, instead
//! of the client waiting out its connection's idle timeout.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{matchmaker, shard};
use rally_lobby::password::PasswordHashConfig;
use rally_lobby::{AccessSigningKey, AccessSigningKeys, LobbyConfig};
use rally_matchmaker::Backends;
use rally_matchmaker::config::MatchmakerConfig;
use rally_matchmaker::engine::unix_ms;
use rally_matchmaker::player::{PlayerClient, QueueOutcome};
use tonic::transport::Channel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matched_player_hears_at_once_that_its_shard_was_lost() {
    let keys = AccessSigningKeys::from(AccessSigningKey::from_seed([5; 32]));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lobby.db").display());
    let mut config = LobbyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), url, keys.clone());
    config.password_hash = PasswordHashConfig { memory_kib: 1024, iterations: 1, max_concurrent: 2 };
    let lobby = rally_lobby::serve(config).await.unwrap();
    let backends = Backends::in_memory(Duration::from_secs(60));
    let config = MatchmakerConfig {
        round_interval: Duration::from_millis(20),
        watch_poll_interval: Duration::from_millis(20),
        ..MatchmakerConfig::default()
    };
    let mm = matchmaker(config, backends.clone(), &[]);
    let engine = mm.start();
    let server = rally_matchmaker::serve(SocketAddr::from(([127, 0, 0, 1], 0)), mm, keys.verifier()).await.unwrap();
    let lobby_channel =
        Channel::from_shared(format!("http://{}", lobby.local_addr())).unwrap().connect().await.unwrap();
    let mm_channel = Channel::from_shared(format!("http://{}", server.local_addr())).unwrap().connect().await.unwrap();

    // A shard that heartbeats (300 ms TTL) until the match is made, then dies.
    backends.registry.register(&shard("doomed", "eu", 10), 300, unix_ms()).await.unwrap();
    let heartbeats = {
        let registry = backends.registry.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(Duration::from_millis(50));
            loop {
                beat.tick().await;
                let _ = registry.heartbeat("doomed", 1, rally_matchmaker::ShardLoad::default(), 300, unix_ms()).await;
            }
        })
    };
    let mut players = Vec::new();
    for name in ["watcher-1", "watcher-2"] {
        let player =
            PlayerClient::register_or_login(lobby_channel.clone(), mm_channel.clone(), name, "long passphrase x")
                .await
                .unwrap();
        players.push(player);
    }
    let (mut one, mut two) = (players[0].clone(), players[1].clone());
    let (first, second) = tokio::join!(one.queue_watched("pong"), two.queue_watched("pong"));
    let (outcome, mut watch) = first.unwrap();
    let (_, mut other_watch) = second.unwrap();
    let QueueOutcome::Matched(assignment) = outcome else { panic!("{outcome:?}") };
    assert_eq!(assignment.shard_name, "doomed");
    heartbeats.abort();
    let _ = heartbeats.await;

    // Both players hear of the loss well inside a QUIC idle timeout (10 s).
    let bound = Duration::from_secs(5);
    let reason = tokio::time::timeout(bound, watch.aborted()).await.expect("the abort reaches the player");
    assert!(reason.contains("doomed"), "{reason}");
    tokio::time::timeout(bound, other_watch.aborted()).await.expect("the abort reaches the other player");

    server.shutdown().await.unwrap();
    engine.stop().await;
    lobby.shutdown().await.unwrap();
}
