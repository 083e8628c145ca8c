//! End to end in one process: a lobby on SQLite, the matchmaker (embedded
//! backends) over gRPC, a Pong shard over QUIC with its agent, and two SDK
//! clients. Register → Enqueue → WatchTicket → connect with the minted token
//! → play to the end → the result crosses the bus → ratings change once.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use common::{eventually, within};
use rally_client::ConnectConfig;
use rally_client::quic::endpoint;
use rally_client::session::ClientEvent;
use rally_client::tls::{ServerTrust, client_config};
use rally_client::{Connection, Transport};
use rally_lobby::password::PasswordHashConfig;
use rally_lobby::proto::auth::{RegisterRequest, auth_client::AuthClient};
use rally_lobby::{AccessSigningKey, AccessSigningKeys, LobbyConfig};
use rally_matchmaker::config::{MatchmakerConfig, ModeConfig};
use rally_matchmaker::lobby_results::consume_into_profiles;
use rally_matchmaker::proto::matchmaker::{
    self as pb, EnqueueRequest, WatchTicketRequest, matchmaker_client::MatchmakerClient,
};
use rally_matchmaker::registry::{ShardInfo, ShardLoad};
use rally_matchmaker::shard_agent::{self, ShardAgentConfig};
use rally_matchmaker::{Matchmaker, TokenMinter};
use rally_protocol::control::{ClientHello, EndReason, MatchEnd};
use rally_server::ServeConfig;
use rally_server::start;
use rally_sim::autopilot::{Autopilot, AutopilotConfig};
use rally_sim::pong::PongWorld;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

fn authed<T>(message: T, access_token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {access_token}").parse().unwrap());
    request
}

/// Queues, waits for the assignment, connects with the token and plays.
async fn queue_and_play(matchmaker: SocketAddr, access_token: String) -> anyhow::Result<(u64, MatchEnd)> {
    let channel = Channel::from_shared(format!("http://{matchmaker}"))?.connect().await?;
    let mut client = MatchmakerClient::new(channel);
    let request = EnqueueRequest { mode: "pong".into(), ..EnqueueRequest::default() };
    let ticket = client.enqueue(authed(request, &access_token)).await?.into_inner();
    let mut updates = client
        .watch_ticket(authed(WatchTicketRequest { ticket_id: ticket.ticket_id.clone() }, &access_token))
        .await?
        .into_inner();
    let assignment = loop {
        let Some(update) = updates.message().await? else { bail!("the watch ended before a match") };
        match pb::TicketState::try_from(update.state)? {
            pb::TicketState::Queued => {}
            pb::TicketState::Matched => break update.assignment.expect("a matched ticket has an assignment"),
            other => bail!("ticket ended {other:?}: {}", update.reason),
        }
    };
    drop(updates);
    let seat = assignment.seats.first().expect("one seat");
    let addr: SocketAddr = assignment.shard_address.parse()?;
    // Pin the certificate the registry vouches for.
    let quic = endpoint(client_config(&ServerTrust::Fingerprint(assignment.certificate_sha256.clone()))?)?;
    let hello = ClientHello::Connect { token: seat.connect_token.clone() };
    let mut connection = Connection::connect(&Transport::Quic(quic.clone()), &ConnectConfig::new(addr), &hello).await?;
    let welcome = connection.welcome().clone();
    // A steady player on seat 0 and a wild one on seat 1, so a point comes quickly.
    let config = if welcome.seat == 0 {
        AutopilotConfig { anticipate: true, aim_error: 200, ..AutopilotConfig::default() }
    } else {
        AutopilotConfig { aim_error: 2000, reaction_ticks: 20, ..AutopilotConfig::default() }
    };
    let mut autopilot = Autopilot::new(&welcome.schema, welcome.seat, config, 1)?;
    while let Some(event) = connection.next_event().await {
        match event {
            ClientEvent::Snapshot(view) => connection.set_input(autopilot.decide(&view)),
            ClientEvent::Ended(end) => return Ok((assignment.match_id, end)),
            ClientEvent::Disconnected { reason, message } => bail!("disconnected: {reason:?} {message}"),
            _ => {}
        }
    }
    bail!("the connection closed before the match ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_queue_play_and_the_result_rates_both_players_once() {
    let dir = tempfile::tempdir().unwrap();
    let secret = AccessSigningKeys::from(AccessSigningKey::from_seed([9; 32]));
    let url = format!("sqlite://{}", dir.path().join("lobby.db").display());
    let mut lobby_config = LobbyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), url, secret);
    lobby_config.password_hash = PasswordHashConfig { memory_kib: 1024, iterations: 1, max_concurrent: 2 };
    let lobby = rally_lobby::serve(lobby_config).await.unwrap();

    // The matchmaker, embedded, rating players from the lobby's profiles.
    let minter = TokenMinter::random(1);
    let pong = ModeConfig { points_to_win: 1, ..ModeConfig::one_vs_one("pong") };
    let config = MatchmakerConfig { modes: vec![pong], ..MatchmakerConfig::default() };
    let matchmaker = Matchmaker::embedded(config, Arc::new(lobby.profiles().clone()), minter.clone()).unwrap();
    let engine = matchmaker.start();
    let server =
        rally_matchmaker::serve(SocketAddr::from(([127, 0, 0, 1], 0)), matchmaker.clone(), lobby.verifier().clone())
            .await
            .unwrap();
    let backends = matchmaker.backends().clone();
    let (consumer, ratings) = consume_into_profiles(backends.bus.clone(), lobby.profiles().clone(), "lobby-1");

    // A shard trusting the matchmaker's key, registered through its agent.
    let mut serve = ServeConfig::local(dir.path().to_owned(), vec![(1, minter.verifying_key())]);
    serve.shard.name = "shard-e2e".into();
    let (results_tx, results_rx) = mpsc::unbounded_channel();
    let shard = start::<PongWorld>(serve, results_tx).await.unwrap();
    let info = ShardInfo {
        name: shard.name.clone(),
        address: shard.local_addr.to_string(),
        region: "local".into(),
        capacity: 10,
        version: env!("CARGO_PKG_VERSION").into(),
        certificate_sha256: shard.fingerprint.clone(),
        incarnation: ShardInfo::new_incarnation(),
    };
    let live = shard.live.clone();
    let load = Arc::new(move || ShardLoad { matches: live.matches(), players: live.connections() });
    let (drain_tx, drain_rx) = watch::channel(false);
    let agent = tokio::spawn(shard_agent::run(
        backends.registry.clone(),
        backends.bus.clone(),
        ShardAgentConfig { heartbeat_interval: Duration::from_millis(100), ..ShardAgentConfig::new(info) },
        results_rx,
        load,
        drain_rx,
    ));
    let registry = backends.registry.clone();
    eventually("the shard registers", || async {
        !registry.shards(rally_matchmaker::engine::unix_ms()).await.unwrap().is_empty()
    })
    .await;

    let mut auth = AuthClient::new(
        Channel::from_shared(format!("http://{}", lobby.local_addr())).unwrap().connect().await.unwrap(),
    );
    let mut accounts = Vec::new();
    for name in ["alice", "bob"] {
        let request = RegisterRequest {
            username: name.into(),
            password: "correct horse battery".into(),
            idempotency_key: String::new(),
        };
        let registered = auth.register(request).await.unwrap().into_inner();
        accounts.push((registered.account.unwrap().player_id, registered.tokens.unwrap().access_token));
    }
    let before = lobby.profiles().profile(accounts[0].0).await.unwrap();

    backends.bus.ensure_group("audit").await.unwrap();
    let (a, b) = within(async {
        tokio::join!(
            queue_and_play(server.local_addr(), accounts[0].1.clone()),
            queue_and_play(server.local_addr(), accounts[1].1.clone()),
        )
    })
    .await;
    let ((match_a, end_a), (match_b, end_b)) = (a.unwrap(), b.unwrap());
    assert_eq!(match_a, match_b, "both were put in the same match");
    assert_eq!((end_a.reason, end_a.winner), (EndReason::Score, end_b.winner));

    assert!(
        ratings.wait_until(Duration::from_secs(30), |stats| stats.applied == 1).await,
        "the result reaches the lobby's ratings"
    );
    let mut profiles = Vec::new();
    for (player_id, _) in &accounts {
        profiles.push(lobby.profiles().profile(*player_id).await.unwrap());
    }
    assert_eq!(profiles.iter().map(|p| p.wins + p.losses).collect::<Vec<_>>(), [1, 1]);
    assert_eq!(profiles.iter().map(|p| p.wins).sum::<u32>(), 1);
    let winner = profiles.iter().find(|p| p.wins == 1).unwrap();
    assert!(winner.rating > before.rating);
    assert!(profiles.iter().any(|p| p.rating < before.rating));
    // The reservation was released when the result was published.
    eventually("the slot is free again", || async {
        registry.shards(rally_matchmaker::engine::unix_ms()).await.unwrap()[0].reserved == 0
    })
    .await;

    // Delivered again (at least once): the ratings do not change a second time.
    let history = lobby.profiles().history(accounts[0].0, 10, "").await.unwrap();
    assert_eq!(history.entries.len(), 1);
    assert_eq!(history.entries[0].match_id, match_a);
    let published = backends.bus.read_new("audit", "t", 10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(published.len(), 1);
    let again = published[0].result.clone();
    assert_eq!(again.match_id.0, match_a);
    backends.bus.publish(&again).await.unwrap();
    assert!(ratings.wait_until(Duration::from_secs(30), |stats| stats.duplicates == 1).await, "the duplicate is seen");
    assert_eq!(ratings.stats().applied, 1);
    let after = lobby.profiles().profile(winner.player_id).await.unwrap();
    assert_eq!((after.rating, after.wins), (winner.rating, 1));

    // An aborted match (its shard was lost) changes no rating.
    let lost = rally_matchmaker::registry::MatchRecord {
        match_id: rally_protocol::MatchId(match_a + 1),
        mode: "pong".into(),
        shard: "shard-e2e".into(),
        tickets: Vec::new(),
        seats: accounts
            .iter()
            .enumerate()
            .map(|(idx, (player, _))| rally_matchmaker::registry::SeatRecord {
                seat: idx as u8,
                side: idx as u8,
                player_id: rally_protocol::PlayerId(*player),
                bot: false,
            })
            .collect(),
        n_sides: 2,
        reserved_at_ms: 0,
    };
    backends.bus.publish(&rally_matchmaker::engine::aborted_result(&lost, 1)).await.unwrap();
    assert!(
        ratings.wait_until(Duration::from_secs(30), |stats| stats.aborted == 1).await,
        "the aborted result is seen"
    );
    let unchanged = lobby.profiles().profile(winner.player_id).await.unwrap();
    assert_eq!((unchanged.rating, unchanged.wins, unchanged.losses), (winner.rating, 1, 0));

    drain_tx.send(true).unwrap();
    shard.drain();
    shard.wait().await.unwrap();
    let report = within(agent).await.unwrap();
    assert_eq!((report.published, report.released, report.unpublished), (1, 1, 0));
    assert!(registry.shards(rally_matchmaker::engine::unix_ms()).await.unwrap().is_empty(), "deregistered");
    consumer.stop().await;
    engine.stop().await;
    server.shutdown().await.unwrap();
    lobby.shutdown().await.unwrap();
}
