//! The gRPC service: status codes for bad requests, WatchTicket across
//! replicas through queued → matched → aborted, and Redis outages answered
//! with UNAVAILABLE until the connection comes back by itself.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Backend, eventually, matchmaker, shard, within};
use rally_lobby::{AccessSigningKey, AccessSigningKeys, AccessTokenIssuer};
use rally_matchmaker::config::MatchmakerConfig;
use rally_matchmaker::engine::unix_ms;
use rally_matchmaker::proto::matchmaker::{
    CancelRequest, EnqueueRequest, TicketState, WatchTicketRequest, matchmaker_client::MatchmakerClient,
};
use rally_matchmaker::{Backends, Matchmaker, MatchmakerServer, RedisConnection};
use tonic::Code;
use tonic::transport::Channel;

on_both_backends!(watch_ticket_follows_a_ticket_across_replicas_to_an_abort);

fn secret() -> AccessSigningKeys {
    AccessSigningKeys::from(AccessSigningKey::from_seed([3; 32]))
}

fn token(player: u64) -> String {
    let now = (unix_ms() / 1000) as i64;
    AccessTokenIssuer::new(secret()).issue(player, "p", now).unwrap().0
}

fn authed<T>(message: T, access_token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {access_token}").parse().unwrap());
    request
}

fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    result.map(drop).unwrap_err().code()
}

async fn serve(mm: Matchmaker) -> (MatchmakerServer, MatchmakerClient<Channel>) {
    let server = rally_matchmaker::serve(SocketAddr::from(([127, 0, 0, 1], 0)), mm, secret().verifier()).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", server.local_addr())).unwrap().connect().await.unwrap();
    (server, MatchmakerClient::new(channel))
}

fn pong() -> EnqueueRequest {
    EnqueueRequest { mode: "pong".into(), ..EnqueueRequest::default() }
}

#[tokio::test]
async fn bad_requests_get_the_right_codes() {
    let mm = matchmaker(MatchmakerConfig::default(), Backends::in_memory(Duration::from_secs(60)), &[]);
    let (server, mut client) = serve(mm).await;

    assert_eq!(code(client.enqueue(pong()).await), Code::Unauthenticated);
    let err = client.enqueue(authed(pong(), "not-a-jwt")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("Auth.Login"), "{}", err.message());
    let forged = AccessTokenIssuer::new(AccessSigningKeys::from(AccessSigningKey::from_seed([4; 32])))
        .issue(1, "p", 0)
        .unwrap()
        .0;
    assert_eq!(code(client.enqueue(authed(pong(), &forged)).await), Code::Unauthenticated);

    let unknown_mode = EnqueueRequest { mode: "chess".into(), ..EnqueueRequest::default() };
    let err = client.enqueue(authed(unknown_mode, &token(1))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("pong"), "names the modes served: {}", err.message());
    let bad_party = EnqueueRequest { party_access_tokens: vec!["junk".into()], ..pong() };
    assert_eq!(code(client.enqueue(authed(bad_party, &token(1))).await), Code::InvalidArgument);
    let too_big = EnqueueRequest { party_access_tokens: vec![token(2)], ..pong() };
    assert_eq!(code(client.enqueue(authed(too_big, &token(1))).await), Code::InvalidArgument, "pong is 1 v 1");

    let bad_id = WatchTicketRequest { ticket_id: "nope".into() };
    assert_eq!(code(client.watch_ticket(authed(bad_id, &token(1))).await), Code::InvalidArgument);
    let unknown = CancelRequest { ticket_id: "00000000000000ff".into() };
    assert_eq!(code(client.cancel(authed(unknown, &token(1))).await), Code::NotFound);

    let ticket = client.enqueue(authed(pong(), &token(1))).await.unwrap().into_inner();
    let someone_elses = WatchTicketRequest { ticket_id: ticket.ticket_id.clone() };
    assert_eq!(code(client.watch_ticket(authed(someone_elses, &token(2))).await), Code::PermissionDenied);
    let cancel = CancelRequest { ticket_id: ticket.ticket_id.clone() };
    assert_eq!(code(client.cancel(authed(cancel.clone(), &token(2))).await), Code::PermissionDenied);
    let cancelled = client.cancel(authed(cancel, &token(1))).await.unwrap().into_inner();
    assert_eq!(cancelled.state, TicketState::Cancelled as i32);
    let mut watch = client
        .watch_ticket(authed(WatchTicketRequest { ticket_id: ticket.ticket_id }, &token(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().state, TicketState::Cancelled as i32);
    assert!(watch.message().await.unwrap().is_none(), "the stream ends after a final state");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_second_ticket_is_already_exists_and_a_bot_mode_without_bots_is_a_failed_precondition() {
    let config = MatchmakerConfig {
        modes: vec![
            rally_matchmaker::ModeConfig::one_vs_one("pong"),
            rally_matchmaker::ModeConfig::two_vs_two("pong-doubles"),
            rally_matchmaker::ModeConfig::against_house_bot("pong-bot"),
        ],
        ..MatchmakerConfig::default()
    };
    let mm = matchmaker(config, Backends::in_memory(Duration::from_secs(60)), &[]);
    let (server, mut client) = serve(mm).await;
    let first = client.enqueue(authed(pong(), &token(1))).await.unwrap().into_inner();
    let again = client.enqueue(authed(pong(), &token(1))).await.unwrap().into_inner();
    assert_eq!(again.ticket_id, first.ticket_id, "Enqueue repeated is the same ticket");
    let doubles = EnqueueRequest { mode: "pong-doubles".into(), ..EnqueueRequest::default() };
    let err = client.enqueue(authed(doubles, &token(1))).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&first.ticket_id), "names the ticket to watch: {}", err.message());
    let bot = EnqueueRequest { mode: "pong-bot".into(), ..EnqueueRequest::default() };
    let err = client.enqueue(authed(bot, &token(2))).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "mode pong-bot needs house bots, and this matchmaker has none; queue for another mode");
    server.shutdown().await.unwrap();
}

async fn watch_ticket_follows_a_ticket_across_replicas_to_an_abort(backend: &Backend) {
    let backends = backend.backends();
    let config = MatchmakerConfig {
        round_interval: Duration::from_millis(20),
        watch_poll_interval: Duration::from_millis(20),
        ..MatchmakerConfig::default()
    };
    // Replica A takes the Enqueue and the watch; replica B runs the rounds.
    let replica_a = matchmaker(
        MatchmakerConfig { round_interval: Duration::from_secs(3600), ..config.clone() },
        backends.clone(),
        &[],
    );
    let replica_b = matchmaker(config, backends.clone(), &[]);
    let (engine_a, engine_b) = (replica_a.start(), replica_b.start());
    let (server, mut client) = serve(replica_a).await;
    let ticket = client.enqueue(authed(pong(), &token(1))).await.unwrap().into_inner();
    let mut watch = client
        .watch_ticket(authed(WatchTicketRequest { ticket_id: ticket.ticket_id.clone() }, &token(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().state, TicketState::Queued as i32);

    // A shard that heartbeats (300 ms TTL) until the match is made, then dies.
    backends.registry.register(&shard("flaky", "eu", 10), 300, unix_ms()).await.unwrap();
    let heartbeats = {
        let registry = backends.registry.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(Duration::from_millis(50));
            loop {
                beat.tick().await;
                let load = rally_matchmaker::ShardLoad::default();
                let beat = registry.heartbeat("flaky", 1, load, 300, unix_ms()).await.unwrap();
                if beat != rally_matchmaker::registry::Heartbeat::Alive {
                    registry.register(&shard("flaky", "eu", 10), 300, unix_ms()).await.unwrap();
                }
            }
        })
    };
    client.enqueue(authed(pong(), &token(2))).await.unwrap();
    let matched = within(watch.message()).await.unwrap().unwrap();
    heartbeats.abort();
    let _ = heartbeats.await;
    assert_eq!(matched.state, TicketState::Matched as i32, "{matched:?}");
    let assignment = matched.assignment.unwrap();
    assert_eq!((assignment.shard_name.as_str(), assignment.seats.len()), ("flaky", 1));
    assert!(!assignment.seats[0].connect_token.is_empty());
    // The roster names both players, with the names their access tokens carry.
    let mut roster: Vec<(u64, &str, bool)> =
        assignment.roster.iter().map(|seat| (seat.player_id, seat.display_name.as_str(), seat.bot)).collect();
    roster.sort_unstable();
    assert_eq!(roster, [(1, "p", false), (2, "p", false)]);

    let aborted = within(watch.message()).await.unwrap().unwrap();
    assert_eq!(aborted.state, TicketState::Aborted as i32, "{aborted:?}");
    assert!(aborted.reason.contains("flaky"), "{}", aborted.reason);
    assert!(within(watch.message()).await.unwrap().is_none());
    server.shutdown().await.unwrap();
    engine_a.stop().await;
    engine_b.stop().await;
}

/// A TCP proxy to the test Redis that can refuse connections, to take Redis
/// "down" and bring it back without touching the shared server.
async fn switchable_proxy(target: String) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let flag = up.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { return };
            if !flag.load(Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            let target = target.clone();
            open.push(tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            }));
        }
    });
    (addr, up)
}

#[tokio::test]
async fn redis_at_a_closed_port_is_unavailable_without_panicking() {
    let redis = RedisConnection::connect_lazy("redis://127.0.0.1:1", "rally-test-closed").unwrap();
    let mm = matchmaker(MatchmakerConfig::default(), Backends::redis(&redis, Duration::from_secs(60)), &[]);
    assert!(mm.run_round(unix_ms()).await.is_err(), "a round fails cleanly");
    let (server, mut client) = serve(mm).await;
    let err = client.enqueue(authed(pong(), &token(1))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("Redis"), "{}", err.message());
    let err = client.cancel(authed(CancelRequest { ticket_id: "00000000000000ff".into() }, &token(1))).await;
    assert_eq!(err.unwrap_err().code(), Code::Unavailable);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn service_resumes_by_itself_when_redis_returns() {
    let url = std::env::var("RALLY_TEST_REDIS_URL").expect("RALLY_TEST_REDIS_URL, e.g. redis://127.0.0.1:6379");
    let target = url.trim_start_matches("redis://").trim_end_matches('/').split('/').next().unwrap().to_owned();
    let (proxy, up) = switchable_proxy(target).await;
    let prefix = format!("rally-test-{:016x}", rand::random::<u64>());
    let redis = RedisConnection::connect_lazy(&format!("redis://{proxy}"), &prefix).unwrap();
    let mm = matchmaker(MatchmakerConfig::default(), Backends::redis(&redis, Duration::from_secs(60)), &[]);
    let (server, mut client) = serve(mm).await;
    let err = client.enqueue(authed(pong(), &token(1))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    up.store(true, Ordering::SeqCst);
    eventually("Enqueue works again once Redis is reachable", || {
        let mut client = client.clone();
        async move { client.enqueue(authed(pong(), &token(1))).await.is_ok() }
    })
    .await;
    server.shutdown().await.unwrap();
    let direct = RedisConnection::connect_lazy(&url, &prefix).unwrap();
    direct.delete_all().await.unwrap();
}
