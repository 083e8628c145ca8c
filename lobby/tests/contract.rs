//! The gRPC contract a client author reads: size and header limits, unknown
//! methods, reflection, chat body rules, pagination, lookups and missing
//! players, on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use common::{Backend, auth_client, authed, chat_client, config, profile_client, register, start};
use rally_lobby::LobbyHandle;
use rally_lobby::proto::auth as auth_pb;
use rally_lobby::proto::chat::{self as pb, chat_client::ChatClient, join_request::Target};
use rally_lobby::proto::profile as profile_pb;
use rally_protocol::control::EndReason;
use rally_protocol::results::{MatchResult, SeatResult};
use rally_protocol::{MatchId, PlayerId};
use tonic::transport::Channel;
use tonic::{Code, Status};

on_both_backends!(
    missing_players_are_not_found,
    chat_body_rules_match_the_proto,
    a_subscribe_cursor_past_the_newest_starts_at_the_newest,
    leaderboard_ranks_are_shared_by_equal_ratings,
    page_tokens_belong_to_their_query,
    players_are_found_by_username_in_any_case,
);

/// How long a test waits for a streamed message before failing.
const WAIT: Duration = Duration::from_secs(30);

struct Player {
    id: u64,
    token: String,
}

async fn players(lobby: &LobbyHandle, names: &[&str]) -> Vec<Player> {
    let mut auth = auth_client(lobby).await;
    let mut players = Vec::new();
    for name in names {
        let registered = register(&mut auth, name).await;
        players.push(Player {
            id: registered.account.expect("account").player_id,
            token: registered.tokens.expect("tokens").access_token,
        });
    }
    players
}

fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, needle: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(status.message().contains(needle), "{:?} lacks {needle:?}", status.message());
}

async fn join_public(chat: &mut ChatClient<Channel>, player: &Player, name: &str) -> pb::Channel {
    chat.join(authed(pb::JoinRequest { target: Some(Target::PublicName(name.into())) }, &player.token))
        .await
        .expect("join")
        .into_inner()
}

async fn send(
    chat: &mut ChatClient<Channel>,
    player: &Player,
    channel_id: &str,
    body: &str,
) -> Result<pb::ChatMessage, Status> {
    chat.send(authed(
        pb::SendRequest { channel_id: channel_id.into(), body: body.into(), idempotency_key: String::new() },
        &player.token,
    ))
    .await
    .map(tonic::Response::into_inner)
}

fn result(match_id: u64, winner: u64, loser: u64, ended_at_ms: u64) -> MatchResult {
    MatchResult {
        match_id: MatchId(match_id),
        game: "pong".into(),
        shard: "shard-test".into(),
        seats: vec![
            SeatResult { seat: 0, player_id: Some(PlayerId(winner)), side: 0, forfeited: false },
            SeatResult { seat: 1, player_id: Some(PlayerId(loser)), side: 1, forfeited: false },
        ],
        scores: vec![5, 2],
        winner: Some(0),
        reason: EndReason::Score,
        duration_ticks: 600,
        tick_rate_hz: 60,
        started_at_ms: ended_at_ms.saturating_sub(10_000),
        ended_at_ms,
        input_log_digest: "00".repeat(32),
    }
}

async fn missing_players_are_not_found(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let [alice, moderator] = <[Player; 2]>::try_from(players(&lobby, &["alice", "mod_mia"]).await).ok().expect("two");
    lobby.chat().set_moderator(moderator.id, true).await.expect("grant");
    let missing = moderator.id + 1;
    let needle = format!("no player with id {missing}");
    let mut chat = chat_client(&lobby).await;

    // A direct channel with the next id to register is refused, so nothing
    // waits there for whoever takes that id.
    let dm = chat.join(authed(pb::JoinRequest { target: Some(Target::DirectWith(missing)) }, &alice.token)).await;
    assert_status(dm, Code::NotFound, &needle);
    let block = |player_id| authed(pb::BlockRequest { player_id }, &alice.token);
    assert_status(chat.block(block(missing)).await, Code::NotFound, &needle);
    assert_status(chat.unblock(block(missing)).await, Code::NotFound, &needle);
    let mute = pb::MuteRequest { player_id: missing, duration_ms: 1000, reason: String::new() };
    assert_status(chat.mute(authed(mute, &moderator.token)).await, Code::NotFound, &needle);
    let unmute = pb::UnmuteRequest { player_id: missing };
    assert_status(chat.unmute(authed(unmute, &moderator.token)).await, Code::NotFound, &needle);

    let mut profiles = profile_client(&lobby).await;
    let history = profile_pb::MatchHistoryRequest { player_id: missing, page_size: 0, page_token: String::new() };
    assert_status(profiles.match_history(authed(history, &alice.token)).await, Code::NotFound, &needle);

    // The next account to register finds no channel opened before it existed.
    let late = players(&lobby, &["late_larry"]).await.pop().expect("one");
    assert_eq!(late.id, missing);
    let dm_id = format!("dm:{}:{}", alice.id, late.id);
    assert_status(send(&mut chat, &late, &dm_id, "anyone?").await, Code::NotFound, "no channel");
    lobby.shutdown().await.expect("shutdown");
}

async fn chat_body_rules_match_the_proto(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let alice = players(&lobby, &["alice"]).await.pop().expect("one");
    let mut chat = chat_client(&lobby).await;
    join_public(&mut chat, &alice, "lobby").await;

    // Newline and tab are allowed; so is a zero-width joiner inside visible text.
    let sent = send(&mut chat, &alice, "public:lobby", "line one\n\tline two \u{1F469}\u{200D}\u{1F4BB}").await;
    assert_eq!(sent.expect("allowed").message_id, 1);
    let refused: &[(&str, &str)] = &[
        ("\u{200B}\u{200B}", "no visible character"),
        (" \u{FEFF}\n\u{2060} ", "no visible character"),
        ("abc\u{202E}fed", "U+202E"),
        ("\u{2066}isolated\u{2069}", "U+2066"),
        ("del \u{7F}", "control character"),
    ];
    for (body, needle) in refused {
        assert_status(send(&mut chat, &alice, "public:lobby", body).await, Code::InvalidArgument, needle);
    }
    // The limit counts characters, not bytes: 500 four-byte characters fit.
    assert!(send(&mut chat, &alice, "public:lobby", &"\u{1F3D3}".repeat(500)).await.is_ok());
    lobby.shutdown().await.expect("shutdown");
}

async fn a_subscribe_cursor_past_the_newest_starts_at_the_newest(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let alice = players(&lobby, &["alice"]).await.pop().expect("one");
    let mut chat = chat_client(&lobby).await;
    join_public(&mut chat, &alice, "lobby").await;
    send(&mut chat, &alice, "public:lobby", "one").await.expect("one");
    let mut stream = chat
        .subscribe(authed(
            pb::SubscribeRequest { channel_id: "public:lobby".into(), after_id: Some(999) },
            &alice.token,
        ))
        .await
        .expect("a cursor past the newest message is accepted")
        .into_inner();
    send(&mut chat, &alice, "public:lobby", "two").await.expect("two");
    let message = tokio::time::timeout(WAIT, stream.message()).await.expect("in time").expect("ok").expect("open");
    assert_eq!((message.message_id, message.body.as_str()), (2, "two"));
    lobby.shutdown().await.expect("shutdown");
}

async fn leaderboard_ranks_are_shared_by_equal_ratings(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let [ann, bea, cal, dan] =
        <[Player; 4]>::try_from(players(&lobby, &["ann", "bea", "cal", "dan"]).await).ok().expect("four");
    lobby.profiles().apply_match_result(&result(1, ann.id, bea.id, 1_000)).await.expect("apply");
    let mut profiles = profile_client(&lobby).await;
    let page = |page_size, page_token: String| {
        authed(profile_pb::LeaderboardRequest { page_size, page_token, rank_of: dan.id }, &ann.token)
    };
    let board = profiles.leaderboard(page(4, String::new())).await.expect("leaderboard").into_inner();
    let ranks: Vec<(u64, u64)> = board.entries.iter().map(|entry| (entry.rank, entry.player_id)).collect();
    // cal and dan are still at the initial rating: they share rank 2, and bea is 4th.
    assert_eq!(ranks, [(1, ann.id), (2, cal.id), (2, dan.id), (4, bea.id)]);
    assert_eq!(board.player.expect("rank_of").rank, 2);
    assert!(board.next_page_token.is_empty());
    // Paged one at a time, the ranks are the same, ties split across pages included.
    let mut paged = Vec::new();
    let mut page_token = String::new();
    loop {
        let board = profiles.leaderboard(page(1, page_token)).await.expect("page").into_inner();
        paged.extend(board.entries.iter().map(|entry| (entry.rank, entry.player_id)));
        if board.next_page_token.is_empty() {
            break;
        }
        page_token = board.next_page_token;
    }
    assert_eq!(paged, ranks);
    lobby.shutdown().await.expect("shutdown");
}

async fn page_tokens_belong_to_their_query(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let [kim, lee] = <[Player; 2]>::try_from(players(&lobby, &["kim", "lee"]).await).ok().expect("two");
    for match_id in 1..=3 {
        lobby.profiles().apply_match_result(&result(match_id, kim.id, lee.id, match_id * 100)).await.expect("apply");
    }
    let mut profiles = profile_client(&lobby).await;
    let page = |player_id, page_token: &str| {
        authed(profile_pb::MatchHistoryRequest { player_id, page_size: 1, page_token: page_token.into() }, &kim.token)
    };
    let first = profiles.match_history(page(kim.id, "")).await.expect("first page").into_inner();
    assert!(!first.next_page_token.is_empty());
    let other = profiles.match_history(page(lee.id, &first.next_page_token)).await;
    assert_status(other, Code::InvalidArgument, "page token belongs to a different query");
    let board = profile_pb::LeaderboardRequest { page_size: 1, page_token: first.next_page_token.clone(), rank_of: 0 };
    assert_status(profiles.leaderboard(authed(board, &kim.token)).await, Code::InvalidArgument, "different query");
    let second = profiles.match_history(page(kim.id, &first.next_page_token)).await.expect("same query");
    assert_eq!(second.into_inner().entries[0].match_id, 2);

    // Chat history tokens are bound to the channel and to the player asking.
    let mut chat = chat_client(&lobby).await;
    for name in ["one", "two"] {
        join_public(&mut chat, &kim, name).await;
        join_public(&mut chat, &lee, name).await;
        for body in ["a", "b"] {
            send(&mut chat, &kim, &format!("public:{name}"), body).await.expect("send");
        }
    }
    let history = |player: &Player, channel_id: &str, page_token: &str| {
        authed(
            pb::HistoryRequest { channel_id: channel_id.into(), page_size: 1, page_token: page_token.into() },
            &player.token,
        )
    };
    let first = chat.history(history(&kim, "public:one", "")).await.expect("first").into_inner();
    let token = first.next_page_token;
    assert_eq!(first.messages[0].message_id, 2);
    let second = chat.history(history(&kim, "public:one", &token)).await.expect("second").into_inner();
    assert_eq!((second.messages[0].message_id, second.next_page_token.as_str()), (1, ""));
    for (player, channel_id) in [(&kim, "public:two"), (&lee, "public:one")] {
        let refused = chat.history(history(player, channel_id, &token)).await;
        assert_status(refused, Code::InvalidArgument, "page token belongs to a different query");
    }
    lobby.shutdown().await.expect("shutdown");
}

async fn players_are_found_by_username_in_any_case(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let [mia, _] = <[Player; 2]>::try_from(players(&lobby, &["Mod_Mia", "other"]).await).ok().expect("two");
    let mut profiles = profile_client(&lobby).await;
    let find = |username: &str| authed(profile_pb::FindPlayerRequest { username: username.into() }, &mia.token);
    for spelling in ["Mod_Mia", "mod_mia", "MOD_MIA"] {
        let found = profiles.find_player(find(spelling)).await.expect("found").into_inner();
        assert_eq!((found.player_id, found.display_name.as_str()), (mia.id, "Mod_Mia"));
    }
    assert_status(profiles.find_player(find("nobody")).await, Code::NotFound, "no player with username \"nobody\"");
    assert_status(profiles.find_player(find("x")).await, Code::InvalidArgument, "username");
    assert_status(profiles.find_player(find("a%' OR 1=1 --")).await, Code::InvalidArgument, "username");
    let anonymous = profiles.find_player(profile_pb::FindPlayerRequest { username: "Mod_Mia".into() }).await;
    assert_eq!(anonymous.expect_err("needs a token").code(), Code::Unauthenticated);
    lobby.shutdown().await.expect("shutdown");
}

// Transport-level rules: the same on either backend, so SQLite only.

async fn sqlite_lobby() -> (Backend, LobbyHandle) {
    let backend = Backend::sqlite().await;
    let lobby = start(config(&backend)).await;
    (backend, lobby)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_resource_exhausted_with_the_limit_named() {
    let (_backend, lobby) = sqlite_lobby().await;
    let alice = players(&lobby, &["alice"]).await.pop().expect("one");
    let mut chat = chat_client(&lobby).await;
    join_public(&mut chat, &alice, "lobby").await;
    let huge = "y".repeat(70_000);
    let sent = send(&mut chat, &alice, "public:lobby", &huge).await;
    assert_status(sent, Code::ResourceExhausted, "the limit is 65536");
    // Auth has the same limit as every other service.
    let mut auth = auth_client(&lobby).await;
    let register = auth
        .register(auth_pb::RegisterRequest {
            username: "bob".into(),
            password: huge.clone(),
            idempotency_key: String::new(),
        })
        .await;
    assert_status(register, Code::ResourceExhausted, "the limit is 65536");
    lobby.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_metadata_is_refused_clearly_and_spares_the_connection() {
    let (_backend, lobby) = sqlite_lobby().await;
    let alice = players(&lobby, &["alice"]).await.pop().expect("one");
    let mut chat = chat_client(&lobby).await;
    join_public(&mut chat, &alice, "lobby").await;
    // A stream open on the same connection as the oversized requests.
    let mut stream = chat
        .subscribe(authed(pb::SubscribeRequest { channel_id: "public:lobby".into(), after_id: None }, &alice.token))
        .await
        .expect("subscribe")
        .into_inner();
    for size in [16 * 1024, 64 * 1024] {
        let mut request = authed(
            pb::SendRequest { channel_id: "public:lobby".into(), body: "hi".into(), idempotency_key: String::new() },
            &alice.token,
        );
        request.metadata_mut().insert("x-padding", "p".repeat(size).parse().expect("ascii"));
        assert_status(chat.send(request).await, Code::ResourceExhausted, "metadata");
    }
    send(&mut chat, &alice, "public:lobby", "still here").await.expect("the connection still works");
    let message = tokio::time::timeout(WAIT, stream.message()).await.expect("in time").expect("ok").expect("open");
    assert_eq!(message.body, "still here");
    lobby.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_and_services_are_named() {
    let (_backend, lobby) = sqlite_lobby().await;
    let mut grpc = tonic::client::Grpc::new(common::channel(&lobby).await);
    for (path, needle) in [
        ("/rally.chat.v1.Chat/Foo", "unknown method rally.chat.v1.Chat/Foo; rally.chat.v1.Chat has Join, Leave"),
        ("/rally.nope.v1.Nope/Bar", "unknown service rally.nope.v1.Nope (method Bar); this server has "),
    ] {
        grpc.ready().await.expect("ready");
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
        let answer = grpc.unary(tonic::Request::new(()), path, codec).await;
        let status = answer.expect_err("unimplemented");
        assert_eq!(status.code(), Code::Unimplemented, "{}", status.message());
        assert!(status.message().starts_with(needle), "{:?} lacks {needle:?}", status.message());
        assert!(status.message().contains("rally.chat.v1.Chat"), "{:?} names the services", status.message());
    }
    lobby.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_answers_v1alpha_and_v1() {
    use tokio_stream::StreamExt as _;
    use tonic_reflection::pb::v1alpha;
    let (_backend, lobby) = sqlite_lobby().await;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(common::channel(&lobby).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut answers =
        client.server_reflection_info(tokio_stream::iter([request])).await.expect("v1alpha is served").into_inner();
    let answer = answers.next().await.expect("an answer").expect("ok");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|service| service.name.as_str()).collect();
    for expected in ["rally.auth.v1.Auth", "rally.chat.v1.Chat", "rally.profile.v1.Profile"] {
        assert!(names.contains(&expected), "{names:?} lacks {expected}");
    }
    lobby.shutdown().await.expect("shutdown");
}
