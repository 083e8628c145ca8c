//! Match chat channels end to end in one process: the matchmaker forms a
//! match, its match-formed event reaches the lobby's follower, which opens
//! `match:<id>` for the match's players (not its bots); the match's result on
//! the bus makes the channel read-only, while History still answers.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::shard;
use rally_lobby::password::PasswordHashConfig;
use rally_lobby::proto::auth::{RegisterRequest, auth_client::AuthClient};
use rally_lobby::proto::chat::{HistoryRequest, SendRequest, chat_client::ChatClient};
use rally_lobby::{AccessSigningKey, AccessSigningKeys, LobbyConfig};
use rally_matchmaker::config::{MatchmakerConfig, ModeConfig};
use rally_matchmaker::lobby_results::consume_into_lobby;
use rally_matchmaker::{EnqueueRequest, Matchmaker, TicketState, TokenMinter};
use rally_protocol::control::EndReason;
use rally_protocol::results::{MatchResult, SeatResult};
use rally_protocol::{MatchId, PlayerId};
use tonic::Code;
use tonic::transport::Channel;

fn authed<T>(message: T, access_token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {access_token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_formed_match_gets_a_channel_for_its_players_read_only_after_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let keys = AccessSigningKeys::from(AccessSigningKey::from_seed([9; 32]));
    let url = format!("sqlite://{}", dir.path().join("lobby.db").display());
    let mut lobby_config = LobbyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), url, keys);
    lobby_config.password_hash = PasswordHashConfig { memory_kib: 1024, iterations: 1, max_concurrent: 2 };
    let lobby = rally_lobby::serve(lobby_config).await.unwrap();
    let pong = ModeConfig::one_vs_one("pong");
    let config = MatchmakerConfig { modes: vec![pong], ..MatchmakerConfig::default() };
    let mm = Matchmaker::embedded(config, Arc::new(lobby.profiles().clone()), TokenMinter::random(1)).unwrap();
    let backends = mm.backends().clone();
    backends.registry.register(&shard("s1", "eu", 10), 600_000, 0).await.unwrap();
    let (consumer, results, channels) = consume_into_lobby(
        backends.bus.clone(),
        backends.events.clone(),
        lobby.profiles().clone(),
        lobby.chat().clone(),
        "lobby-1",
    );

    let lobby_channel =
        Channel::from_shared(format!("http://{}", lobby.local_addr())).unwrap().connect().await.unwrap();
    let mut auth = AuthClient::new(lobby_channel.clone());
    let mut chat = ChatClient::new(lobby_channel);
    let mut players = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let request = RegisterRequest {
            username: name.into(),
            password: "correct horse battery".into(),
            idempotency_key: String::new(),
        };
        let registered = auth.register(request).await.unwrap().into_inner();
        players.push((registered.account.unwrap().player_id, registered.tokens.unwrap().access_token));
    }
    let [(alice, alice_token), (bob, _), (_, carol_token)] = <[_; 3]>::try_from(players).unwrap();
    let request = EnqueueRequest { mode: "pong".into(), ..EnqueueRequest::default() };
    let ticket = mm.enqueue(PlayerId(alice), request.clone(), 0).await.unwrap();
    mm.enqueue(PlayerId(bob), request, 0).await.unwrap();
    assert_eq!(mm.run_round(100).await.unwrap().matches, 1);
    let (_, state) = mm.watch(PlayerId(alice), ticket.id).await.unwrap();
    let TicketState::Matched(assignment) = state.borrow().clone().unwrap() else { panic!("not matched") };
    let match_id = assignment.match_id.0;
    let channel_id = format!("match:{match_id}");

    assert!(channels.wait_opened(1, Duration::from_secs(30)).await, "the match's channel is opened");
    let send =
        |body: &str| SendRequest { channel_id: channel_id.clone(), body: body.into(), idempotency_key: String::new() };
    let sent = chat.send(authed(send("good luck"), &alice_token)).await.unwrap().into_inner();
    assert_eq!(sent.message_id, 1);
    let outsider = chat.send(authed(send("hi"), &carol_token)).await.unwrap_err();
    assert_eq!(outsider.code(), Code::PermissionDenied, "only the match's players: {}", outsider.message());

    // The match ends: its result on the bus makes the channel read-only.
    let result = MatchResult {
        match_id: MatchId(match_id),
        game: "pong".into(),
        shard: "s1".into(),
        seats: [alice, bob]
            .iter()
            .enumerate()
            .map(|(seat, &player)| SeatResult {
                seat: seat as u8,
                player_id: Some(PlayerId(player)),
                side: seat as u8,
                forfeited: false,
            })
            .collect(),
        scores: vec![5, 2],
        winner: Some(0),
        reason: EndReason::Score,
        duration_ticks: 600,
        tick_rate_hz: 60,
        started_at_ms: 100,
        ended_at_ms: 10_000,
        input_log_digest: String::new(),
    };
    backends.bus.publish(&result).await.unwrap();
    assert!(results.wait_until(Duration::from_secs(30), |stats| stats.applied == 1).await, "the result is applied");
    let refused = chat.send(authed(send("gg"), &alice_token)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(refused.message(), format!("match {match_id} has ended; its channel is read-only"));
    let history = HistoryRequest { channel_id: channel_id.clone(), ..HistoryRequest::default() };
    let history = chat.history(authed(history, &alice_token)).await.unwrap().into_inner();
    assert_eq!(history.messages.iter().map(|message| message.body.as_str()).collect::<Vec<_>>(), ["good luck"]);

    channels.stop().await;
    consumer.stop().await;
    lobby.shutdown().await.unwrap();
}
