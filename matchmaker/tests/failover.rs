//! Clients fail over between replicas, on the real Redis: a `PlayerClient`
//! given a dead endpoint first logs in, enqueues and watches; a matchmaker
//! replica that dies between Enqueue and WatchTicket leaves the ticket to
//! the other, where the watch sees it matched; an Enqueue whose answer was
//! lost, retried with the same idempotency key on the other replica, makes
//! one ticket.

#![expect(clippy::unwrap_used, reason = "a test")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Backend, eventually, matchmaker, shard};
use rally_lobby::password::PasswordHashConfig;
use rally_lobby::{AccessSigningKey, AccessSigningKeys, LobbyConfig};
use rally_matchmaker::config::MatchmakerConfig;
use rally_matchmaker::engine::unix_ms;
use rally_matchmaker::player::{Endpoints, PlayerClient, QueueOutcome, authorized, replica_failed};
use rally_matchmaker::proto::matchmaker::{EnqueueRequest, matchmaker_client::MatchmakerClient};
use rally_matchmaker::{MatchmakerServer, ShardLoad};
use tonic::Code;

/// A URL where nothing listens.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn url(server: &MatchmakerServer) -> String {
    format!("http://{}", server.local_addr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_fail_over_to_live_replicas_and_a_retried_enqueue_makes_one_ticket() {
    let keys = AccessSigningKeys::from(AccessSigningKey::from_seed([6; 32]));
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("lobby.db").display());
    let mut lobby_config = LobbyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), db, keys.clone());
    lobby_config.password_hash = PasswordHashConfig { memory_kib: 1024, iterations: 1, max_concurrent: 2 };
    let lobby = rally_lobby::serve(lobby_config).await.unwrap();

    // Two matchmaker replicas on one Redis, each with its own connection.
    let backend = Backend::redis().await;
    let shared = backend.backends();
    let config = MatchmakerConfig {
        round_interval: Duration::from_millis(20),
        watch_poll_interval: Duration::from_millis(20),
        ..MatchmakerConfig::default()
    };
    let first = matchmaker(config.clone(), shared.clone(), &[]);
    let second = matchmaker(config, backend.own_connection(&shared), &[]);
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let first_server = rally_matchmaker::serve(listen, first.clone(), keys.verifier()).await.unwrap();
    let second_server = rally_matchmaker::serve(listen, second.clone(), keys.verifier()).await.unwrap();
    // The first replica matches nothing: it only takes the Enqueue before it dies.
    let second_engine = second.start();
    shared.registry.register(&shard("s", "eu", 10), 60_000, unix_ms()).await.unwrap();
    let heartbeats = {
        let registry = shared.registry.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(Duration::from_millis(500));
            loop {
                beat.tick().await;
                let _ = registry.heartbeat("s", 1, ShardLoad::default(), 60_000, unix_ms()).await;
            }
        })
    };

    let lobbies = Endpoints::parse(&format!("{}, http://{}", dead_url(), lobby.local_addr())).unwrap();
    let matchmakers =
        Endpoints::parse(&format!("{},{},{}", dead_url(), url(&first_server), url(&second_server))).unwrap();
    assert_eq!(matchmakers.urls().len(), 3);
    let (lobby_replicas, mm_replicas) = (lobbies.lazy().unwrap(), matchmakers.lazy().unwrap());
    let mut one =
        PlayerClient::register_or_login(lobby_replicas.clone(), mm_replicas.clone(), "fo-1", "long passphrase x")
            .await
            .expect("registers and logs in past the dead lobby endpoint");
    let mut two =
        PlayerClient::register_or_login(lobby_replicas, mm_replicas, "fo-2", "long passphrase x").await.unwrap();

    // Enqueued past the dead endpoint, on the first replica, which then dies.
    let ticket = one.enqueue("pong").await.expect("enqueues past the dead matchmaker endpoint");
    assert_eq!(one.matchmaker_replicas().url(), url(&first_server));
    first_server.shutdown().await.unwrap();
    // The watch moves on to the second replica and sees the ticket the first one made.
    let mut watch = one.watch(&ticket).await.expect("watches on the surviving replica");
    let ticket_two = two.enqueue("pong").await.unwrap();
    let (outcome_one, outcome_two) = tokio::join!(watch.outcome(), two.wait(&ticket_two));
    let (QueueOutcome::Matched(a), QueueOutcome::Matched(b)) = (outcome_one.unwrap(), outcome_two.unwrap()) else {
        panic!("both players are matched");
    };
    assert_eq!(a.match_id, b.match_id);
    // A matched ticket's stream stays open; closing it lets the replica shut down.
    drop(watch);

    // An Enqueue sent to a replica whose answer is lost, retried with the
    // same key on another: one ticket. Another request under the key is refused.
    let third_server = rally_matchmaker::serve(listen, first.clone(), keys.verifier()).await.unwrap();
    let mut player = PlayerClient::register_or_login(
        lobbies.lazy().unwrap(),
        mm_channel(&third_server),
        "fo-3",
        "long passphrase x",
    )
    .await
    .unwrap();
    player.ensure_fresh().await.unwrap();
    let keyed = |mode: &str, key: &str| EnqueueRequest {
        mode: mode.into(),
        idempotency_key: key.into(),
        ..EnqueueRequest::default()
    };
    let lost = MatchmakerClient::new(mm_channel(&third_server))
        .enqueue(player.request(keyed("pong", "retry-7f3a")))
        .await
        .unwrap()
        .into_inner();
    let retried = MatchmakerClient::new(mm_channel(&second_server))
        .enqueue(player.request(keyed("pong", "retry-7f3a")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.ticket_id, lost.ticket_id);
    let queued = shared.tickets.queued("pong").await.unwrap();
    assert_eq!(queued.iter().filter(|id| id.to_string() == lost.ticket_id).count(), 1);
    let other = MatchmakerClient::new(mm_channel(&second_server))
        .enqueue(player.request(keyed("pong-doubles", "retry-7f3a")))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::FailedPrecondition, "{}", other.message());
    assert!(other.message().contains("different Enqueue"), "{}", other.message());
    let bad = MatchmakerClient::new(mm_channel(&second_server))
        .enqueue(player.request(keyed("pong", "has a space")))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{}", bad.message());
    assert!(bad.message().contains("idempotency_key"), "{}", bad.message());
    // The unauthenticated form says so rather than failing over.
    let anonymous = MatchmakerClient::new(mm_channel(&second_server))
        .enqueue(authorized(keyed("pong", "x"), "not-a-token"))
        .await
        .unwrap_err();
    assert!(!replica_failed(&anonymous), "{anonymous:?}");
    eventually("the retried ticket is still the only one", || {
        let tickets = shared.tickets.clone();
        let id = lost.ticket_id.clone();
        async move { tickets.queued("pong").await.unwrap().iter().filter(|queued| queued.to_string() == id).count() == 1 }
    })
    .await;

    heartbeats.abort();
    third_server.shutdown().await.unwrap();
    second_server.shutdown().await.unwrap();
    second_engine.stop().await;
    lobby.shutdown().await.unwrap();
    backend.cleanup().await;
}

/// A TCP proxy to `target` that can be killed with every connection through it.
struct Proxy {
    addr: SocketAddr,
    tasks: tokio::task::JoinSet<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, tasks }
    }

    /// Closes the listener and every connection, as a dead replica's host does.
    async fn kill(mut self) {
        self.tasks.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_stream_broken_mid_watch_is_opened_again_on_another_replica() {
    let keys = AccessSigningKeys::from(AccessSigningKey::from_seed([7; 32]));
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("lobby.db").display());
    let mut lobby_config = LobbyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), db, keys.clone());
    lobby_config.password_hash = PasswordHashConfig { memory_kib: 1024, iterations: 1, max_concurrent: 2 };
    let lobby = rally_lobby::serve(lobby_config).await.unwrap();
    let backend = Backend::redis().await;
    let shared = backend.backends();
    let config = MatchmakerConfig {
        round_interval: Duration::from_millis(20),
        watch_poll_interval: Duration::from_millis(20),
        ..MatchmakerConfig::default()
    };
    let first = matchmaker(config.clone(), shared.clone(), &[]);
    let second = matchmaker(config, backend.own_connection(&shared), &[]);
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let first_server = rally_matchmaker::serve(listen, first, keys.verifier()).await.unwrap();
    let second_server = rally_matchmaker::serve(listen, second.clone(), keys.verifier()).await.unwrap();
    // Only the second replica runs rounds: the first never tells its watchers of a match.
    let second_engine = second.start();
    shared.registry.register(&shard("s", "eu", 10), 60_000, unix_ms()).await.unwrap();
    let proxy = Proxy::start(first_server.local_addr()).await;

    let lobby_url = format!("http://{}", lobby.local_addr());
    let matchmakers = Endpoints::parse(&format!("http://{},{}", proxy.addr, url(&second_server))).unwrap();
    let password = "long passphrase x";
    let mut one =
        PlayerClient::register_or_login(lazy_channel(&lobby_url), matchmakers.lazy().unwrap(), "mid-1", password)
            .await
            .unwrap();
    let mut two =
        PlayerClient::register_or_login(lazy_channel(&lobby_url), mm_channel(&second_server), "mid-2", password)
            .await
            .unwrap();
    let ticket = one.enqueue("pong").await.unwrap();
    let mut watch = one.watch(&ticket).await.unwrap();
    assert_eq!(one.matchmaker_replicas().url(), format!("http://{}", proxy.addr), "watching on the first replica");
    // The first replica's host dies with the stream open; then the match is made.
    proxy.kill().await;
    let ticket_two = two.enqueue("pong").await.unwrap();
    let (outcome_one, outcome_two) = tokio::join!(watch.outcome(), two.wait(&ticket_two));
    let (QueueOutcome::Matched(a), QueueOutcome::Matched(b)) = (outcome_one.unwrap(), outcome_two.unwrap()) else {
        panic!("both players are matched");
    };
    assert_eq!(a.match_id, b.match_id);
    assert_eq!(one.matchmaker_replicas().url(), url(&second_server), "the stream moved to the second replica");

    drop(watch);
    first_server.shutdown().await.unwrap();
    second_server.shutdown().await.unwrap();
    second_engine.stop().await;
    lobby.shutdown().await.unwrap();
    backend.cleanup().await;
}

fn lazy_channel(url: &str) -> tonic::transport::Channel {
    rally_matchmaker::player::lazy_channel(url).unwrap()
}

fn mm_channel(server: &MatchmakerServer) -> tonic::transport::Channel {
    rally_matchmaker::player::lazy_channel(&url(server)).unwrap()
}
