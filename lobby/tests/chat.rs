//! Chat over real gRPC on loopback, on SQLite and PostgreSQL.

mod common;

use std::num::NonZeroU32;
use std::time::Duration;

use common::{Backend, auth_client, authed, chat_client, config, register, start};
use rally_lobby::limits::RateLimitConfig;
use rally_lobby::proto::chat::{self as pb, chat_client::ChatClient, join_request::Target};
use rally_lobby::{LobbyConfig, LobbyHandle, WordFilter};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

on_both_backends!(
    public_channel_send_history_and_subscribe,
    bad_input_is_refused_and_writes_nothing,
    direct_messages_and_blocks,
    moderators_mute_word_filter_and_reports,
    match_channels_are_for_their_players,
    send_rate_limit_is_per_player,
    messages_survive_a_restart_and_subscribe_resumes_exactly,
    concurrent_senders_on_two_lobbies_get_increasing_ids_and_none_are_lost,
    a_subscriber_that_falls_behind_catches_up_from_the_database,
    chat_needs_a_token_and_reports_healthy,
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

/// A config whose send limit does not get in the way of bulk sends.
fn unlimited(backend: &Backend) -> LobbyConfig {
    let mut config = config(backend);
    config.limits.chat_send_per_account =
        RateLimitConfig::new(NonZeroU32::new(100_000).expect("non-zero"), Duration::from_millis(1));
    config
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

async fn subscribe(
    chat: &mut ChatClient<Channel>,
    player: &Player,
    channel_id: &str,
    after_id: Option<u64>,
) -> Result<Streaming<pb::ChatMessage>, Status> {
    chat.subscribe(authed(pb::SubscribeRequest { channel_id: channel_id.into(), after_id }, &player.token))
        .await
        .map(tonic::Response::into_inner)
}

async fn next(stream: &mut Streaming<pb::ChatMessage>) -> pb::ChatMessage {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a message within the deadline")
        .expect("stream ok")
        .expect("stream still open")
}

/// Every message the player sees in the channel, newest first, page by page.
async fn all_history(chat: &mut ChatClient<Channel>, player: &Player, channel_id: &str) -> Vec<pb::ChatMessage> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = chat
            .history(authed(
                pb::HistoryRequest { channel_id: channel_id.into(), page_size: 7, page_token },
                &player.token,
            ))
            .await
            .expect("history")
            .into_inner();
        all.extend(page.messages);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

fn ids(messages: &[pb::ChatMessage]) -> Vec<u64> {
    messages.iter().map(|message| message.message_id).collect()
}

fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, needle: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(status.message().contains(needle), "{:?} lacks {needle:?}", status.message());
}

async fn public_channel_send_history_and_subscribe(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let [alice, bob] = <[Player; 2]>::try_from(players(&lobby, &["alice", "bob"]).await).ok().expect("two");
    let mut chat = chat_client(&lobby).await;
    let channel = join_public(&mut chat, &alice, "Lobby").await;
    assert_eq!(channel.channel_id, "public:lobby");
    assert_eq!(channel.kind(), pb::ChannelKind::Public);
    assert_eq!((channel.name.as_str(), channel.last_message_id), ("lobby", 0));

    assert_status(subscribe(&mut chat, &bob, "public:lobby", None).await, Code::PermissionDenied, "call Chat.Join");
    join_public(&mut chat, &bob, "lobby").await;
    let mut live = subscribe(&mut chat, &bob, "public:lobby", None).await.expect("subscribe");

    for n in 1..=5_u64 {
        let sent = send(&mut chat, &alice, "public:lobby", &format!("message {n}")).await.expect("send");
        assert_eq!((sent.message_id, sent.sender_id, sent.sender_name.as_str()), (n, alice.id, "alice"));
    }
    for n in 1..=5_u64 {
        let message = next(&mut live).await;
        assert_eq!((message.message_id, message.body), (n, format!("message {n}")));
    }

    let page = chat
        .history(authed(
            pb::HistoryRequest { channel_id: "public:lobby".into(), page_size: 2, page_token: String::new() },
            &bob.token,
        ))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(ids(&page.messages), vec![5, 4]);
    let page = chat
        .history(authed(
            pb::HistoryRequest { channel_id: "public:lobby".into(), page_size: 2, page_token: page.next_page_token },
            &bob.token,
        ))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(ids(&page.messages), vec![3, 2]);
    assert!(!page.next_page_token.is_empty(), "message 1 is left");
    assert_eq!(ids(&all_history(&mut chat, &bob, "public:lobby").await), vec![5, 4, 3, 2, 1]);

    // Leaving is idempotent and takes the channel away.
    for _ in 0..2 {
        chat.leave(authed(pb::LeaveRequest { channel_id: "public:lobby".into() }, &bob.token)).await.expect("leave");
    }
    assert_status(send(&mut chat, &bob, "public:lobby", "still here?").await, Code::PermissionDenied, "not joined");
    let left = chat.leave(authed(pb::LeaveRequest { channel_id: "public:nowhere".into() }, &bob.token)).await;
    assert_status(left, Code::NotFound, "no channel public:nowhere");
    lobby.shutdown().await.expect("shutdown");
}

async fn bad_input_is_refused_and_writes_nothing(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let [alice, carol] = <[Player; 2]>::try_from(players(&lobby, &["alice", "carol"]).await).ok().expect("two");
    let mut chat = chat_client(&lobby).await;
    join_public(&mut chat, &alice, "lobby").await;
    send(&mut chat, &alice, "public:lobby", "hello").await.expect("first message");

    let long = "x".repeat(501);
    let sends: &[(&str, &str, Code, &str)] = &[
        ("public:lobby", "", Code::InvalidArgument, "empty"),
        ("public:lobby", " \n\t ", Code::InvalidArgument, "no visible character"),
        ("public:lobby", &long, Code::InvalidArgument, "limit is 500"),
        ("public:lobby", "nul \u{0} byte", Code::InvalidArgument, "control character"),
        ("public:lobby", "bell \u{7}", Code::InvalidArgument, "control character"),
        ("public:nowhere", "hi", Code::NotFound, "no channel public:nowhere"),
        ("match:99", "hi", Code::NotFound, "no channel match:99"),
        ("lobby", "hi", Code::InvalidArgument, "not a channel id"),
        ("", "hi", Code::InvalidArgument, "channel_id"),
        ("public:x'; DROP TABLE chat_messages;--", "hi", Code::InvalidArgument, "not a channel id"),
        ("public:LOBBY", "hi", Code::InvalidArgument, "not a channel id"),
    ];
    for (channel_id, body, code, needle) in sends {
        assert_status(send(&mut chat, &alice, channel_id, body).await, *code, needle);
    }
    // Not a member.
    assert_status(send(&mut chat, &carol, "public:lobby", "let me in").await, Code::PermissionDenied, "not joined");
    let history = chat
        .history(authed(
            pb::HistoryRequest { channel_id: "public:lobby".into(), page_size: 0, page_token: String::new() },
            &carol.token,
        ))
        .await;
    assert_status(history, Code::PermissionDenied, "call Chat.Join");

    let joins: &[(Option<Target>, &str)] = &[
        (None, "set one of"),
        (Some(Target::PublicName(String::new())), "1 to 32"),
        (Some(Target::PublicName("a b".into())), "may only contain"),
        (Some(Target::PublicName("x".repeat(33))), "1 to 32"),
        (Some(Target::PublicName("lobby'--".into())), "may only contain"),
        (Some(Target::DirectWith(alice.id)), "not yourself"),
        (Some(Target::DirectWith(0)), "not a player"),
        (Some(Target::ChannelId("dm:x:y".into())), "not a channel id"),
    ];
    for (target, needle) in joins {
        let joined = chat.join(authed(pb::JoinRequest { target: target.clone() }, &alice.token)).await;
        assert_status(joined, Code::InvalidArgument, needle);
    }

    // Bad cursors.
    let history = |page_token: &str, page_size| {
        authed(
            pb::HistoryRequest { channel_id: "public:lobby".into(), page_size, page_token: page_token.into() },
            &alice.token,
        )
    };
    assert_status(chat.history(history("999", 0)).await, Code::InvalidArgument, "not a token this server issued");
    assert_status(chat.history(history("", 101)).await, Code::InvalidArgument, "at most 100");
    assert_status(subscribe(&mut chat, &alice, "public:nowhere", Some(0)).await, Code::NotFound, "no channel");

    // Moderation requests from a non-moderator or about nobody.
    let report = |message_id, reason: &str| {
        authed(pb::ReportRequest { channel_id: "public:lobby".into(), message_id, reason: reason.into() }, &alice.token)
    };
    assert_status(chat.report(report(0, "spam")).await, Code::NotFound, "no message 0");
    assert_status(chat.report(report(99, "spam")).await, Code::NotFound, "ids run from 1 to 1");
    assert_status(chat.report(report(1, " ")).await, Code::InvalidArgument, "reason");
    let mute = pb::MuteRequest { player_id: carol.id, duration_ms: 1000, reason: String::new() };
    assert_status(chat.mute(authed(mute, &alice.token)).await, Code::PermissionDenied, "only moderators");
    let block = |player_id| authed(pb::BlockRequest { player_id }, &alice.token);
    assert_status(chat.block(block(alice.id)).await, Code::InvalidArgument, "yourself");
    assert_status(chat.block(block(0)).await, Code::InvalidArgument, "player_id");

    // Oversized requests are refused before they reach the service.
    let huge = "y".repeat(100 * 1024);
    assert_status(send(&mut chat, &alice, "public:lobby", &huge).await, Code::ResourceExhausted, "the limit is 65536");

    // Nothing was written: one message, no reports, the channel's counter unchanged.
    let history = all_history(&mut chat, &alice, "public:lobby").await;
    assert_eq!(ids(&history), vec![1]);
    assert_eq!(history[0].body, "hello");
    assert_eq!(join_public(&mut chat, &alice, "lobby").await.last_message_id, 1);
    assert!(lobby.chat().reports(10).await.expect("reports").is_empty());
    lobby.shutdown().await.expect("shutdown");
}

async fn direct_messages_and_blocks(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let [alice, bob, carol] =
        <[Player; 3]>::try_from(players(&lobby, &["alice", "bob", "carol"]).await).ok().expect("three");
    let mut chat = chat_client(&lobby).await;
    let dm = |player: &Player, other: u64| {
        authed(pb::JoinRequest { target: Some(Target::DirectWith(other)) }, &player.token)
    };
    let from_alice = chat.join(dm(&alice, bob.id)).await.expect("alice opens").into_inner();
    let from_bob = chat.join(dm(&bob, alice.id)).await.expect("bob opens").into_inner();
    assert_eq!(from_alice.channel_id, from_bob.channel_id);
    assert_eq!(from_alice.channel_id, format!("dm:{}:{}", alice.id.min(bob.id), alice.id.max(bob.id)));
    assert_eq!(from_alice.kind(), pb::ChannelKind::Direct);
    assert_eq!((from_alice.name, from_bob.name), (bob.id.to_string(), alice.id.to_string()));
    let dm_id = from_alice.channel_id;

    let outsider = chat.join(authed(pb::JoinRequest { target: Some(Target::ChannelId(dm_id.clone())) }, &carol.token));
    assert_status(outsider.await, Code::PermissionDenied, "two other players");
    assert_status(send(&mut chat, &carol, &dm_id, "psst").await, Code::PermissionDenied, "two other players");

    let mut bob_dm = subscribe(&mut chat, &bob, &dm_id, Some(0)).await.expect("subscribe");
    send(&mut chat, &alice, &dm_id, "hi bob").await.expect("dm");
    assert_eq!(next(&mut bob_dm).await.body, "hi bob");

    for player in [&alice, &bob, &carol] {
        join_public(&mut chat, player, "lobby").await;
    }
    let mut bob_lobby = subscribe(&mut chat, &bob, "public:lobby", None).await.expect("subscribe");

    chat.block(authed(pb::BlockRequest { player_id: alice.id }, &bob.token)).await.expect("block");
    assert_status(send(&mut chat, &alice, &dm_id, "hello?").await, Code::PermissionDenied, "does not accept");
    assert_status(send(&mut chat, &bob, &dm_id, "hello?").await, Code::PermissionDenied, "you blocked");
    // The refused direct messages were not stored (alice does not block bob, so she sees everything).
    assert_eq!(ids(&all_history(&mut chat, &alice, &dm_id).await), vec![1]);

    // In a public channel alice's messages reach everyone but bob.
    send(&mut chat, &alice, "public:lobby", "from alice").await.expect("send");
    send(&mut chat, &carol, "public:lobby", "from carol").await.expect("send");
    let seen = next(&mut bob_lobby).await;
    assert_eq!((seen.message_id, seen.body.as_str()), (2, "from carol"));
    assert_eq!(ids(&all_history(&mut chat, &bob, "public:lobby").await), vec![2]);
    assert_eq!(ids(&all_history(&mut chat, &carol, "public:lobby").await), vec![2, 1]);
    // A resumed subscription skips alice's message too.
    let mut resumed = subscribe(&mut chat, &bob, "public:lobby", Some(0)).await.expect("subscribe");
    assert_eq!(next(&mut resumed).await.message_id, 2);

    chat.unblock(authed(pb::BlockRequest { player_id: alice.id }, &bob.token)).await.expect("unblock");
    send(&mut chat, &alice, "public:lobby", "again").await.expect("send");
    let seen = next(&mut bob_lobby).await;
    assert_eq!((seen.message_id, seen.body.as_str()), (3, "again"));
    assert_eq!(next(&mut resumed).await.message_id, 3);
    send(&mut chat, &alice, &dm_id, "friends again").await.expect("dm after unblock");
    assert_eq!(next(&mut bob_dm).await.body, "friends again");
    lobby.shutdown().await.expect("shutdown");
}

async fn moderators_mute_word_filter_and_reports(backend: &Backend) {
    let mut config = config(backend);
    config.chat.word_filter = WordFilter::from_list("heck\n");
    let lobby = start(config).await;
    let [mia, dan, eve] =
        <[Player; 3]>::try_from(players(&lobby, &["mod_mia", "dan", "eve"]).await).ok().expect("three");
    lobby.chat().set_moderator(mia.id, true).await.expect("grant");
    let mut chat = chat_client(&lobby).await;
    for player in [&mia, &dan, &eve] {
        join_public(&mut chat, player, "lobby").await;
    }
    let filtered = send(&mut chat, &dan, "public:lobby", "what the HECK, Heckler").await.expect("send");
    assert_eq!(filtered.body, "what the ****, Heckler");
    assert_eq!(all_history(&mut chat, &eve, "public:lobby").await[0].body, "what the ****, Heckler");

    let mute = |player: &Player, duration_ms| {
        authed(pb::MuteRequest { player_id: dan.id, duration_ms, reason: "spam".into() }, &player.token)
    };
    assert_status(chat.mute(mute(&eve, 60_000)).await, Code::PermissionDenied, "only moderators");
    assert_status(chat.mute(mute(&mia, 0)).await, Code::InvalidArgument, "duration_ms");
    let until = chat.mute(mute(&mia, 60_000)).await.expect("moderator mutes").into_inner().muted_until_ms;
    assert!(until > 0);
    let muted = send(&mut chat, &dan, "public:lobby", "let me talk").await;
    assert_status(muted, Code::PermissionDenied, &format!("muted by a moderator until {until}"));
    assert_eq!(ids(&all_history(&mut chat, &eve, "public:lobby").await), vec![1]);

    // A moderator granted through the store.
    let unmute = |player: &Player| authed(pb::UnmuteRequest { player_id: dan.id }, &player.token);
    assert_status(chat.unmute(unmute(&eve)).await, Code::PermissionDenied, "only moderators");
    lobby.chat().set_moderator(eve.id, true).await.expect("grant");
    chat.unmute(unmute(&eve)).await.expect("eve unmutes");
    send(&mut chat, &dan, "public:lobby", "thanks").await.expect("unmuted");
    lobby.chat().set_moderator(eve.id, false).await.expect("revoke");
    assert_status(chat.mute(mute(&eve, 60_000)).await, Code::PermissionDenied, "only moderators");

    let report = |message_id| {
        authed(pb::ReportRequest { channel_id: "public:lobby".into(), message_id, reason: "rude".into() }, &eve.token)
    };
    assert!(chat.report(report(1)).await.expect("report").into_inner().created);
    assert!(!chat.report(report(1)).await.expect("report again").into_inner().created);
    let reports = lobby.chat().reports(10).await.expect("reports");
    assert_eq!(reports.len(), 1);
    assert_eq!(
        (reports[0].reporter_id, reports[0].channel_id.as_str(), reports[0].message_id, reports[0].reason.as_str()),
        (eve.id, "public:lobby", 1, "rude")
    );
    lobby.shutdown().await.expect("shutdown");
}

async fn match_channels_are_for_their_players(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let [alice, bob, carol] =
        <[Player; 3]>::try_from(players(&lobby, &["alice", "bob", "carol"]).await).ok().expect("three");
    let channel_id = lobby.chat().create_match_channel(7, &[alice.id, bob.id]).await.expect("create");
    assert_eq!(channel_id, "match:7");
    assert_eq!(lobby.chat().create_match_channel(7, &[alice.id, bob.id]).await.expect("again"), channel_id);
    assert!(lobby.chat().create_match_channel(8, &[0]).await.is_err());

    let mut chat = chat_client(&lobby).await;
    let join = |player: &Player| {
        authed(pb::JoinRequest { target: Some(Target::ChannelId(channel_id.clone())) }, &player.token)
    };
    let joined = chat.join(join(&alice)).await.expect("player joins").into_inner();
    assert_eq!((joined.kind(), joined.name.as_str()), (pb::ChannelKind::Match, "7"));
    assert_status(chat.join(join(&carol)).await, Code::PermissionDenied, "only for the players of match 7");
    assert_status(send(&mut chat, &carol, &channel_id, "gl hf").await, Code::PermissionDenied, "match 7");
    assert_status(subscribe(&mut chat, &carol, &channel_id, Some(0)).await, Code::PermissionDenied, "match 7");

    send(&mut chat, &alice, &channel_id, "gl hf").await.expect("player sends");
    assert_eq!(all_history(&mut chat, &bob, &channel_id).await[0].body, "gl hf");
    let left = chat.leave(authed(pb::LeaveRequest { channel_id: channel_id.clone() }, &alice.token)).await;
    assert_status(left, Code::FailedPrecondition, "cannot be left");
    lobby.shutdown().await.expect("shutdown");
}

async fn send_rate_limit_is_per_player(backend: &Backend) {
    let mut config = config(backend);
    config.limits.chat_send_per_account =
        RateLimitConfig::new(NonZeroU32::new(3).expect("non-zero"), Duration::from_secs(3600));
    let lobby = start(config).await;
    let [alice, bob] = <[Player; 2]>::try_from(players(&lobby, &["alice", "bob"]).await).ok().expect("two");
    let mut chat = chat_client(&lobby).await;
    join_public(&mut chat, &alice, "lobby").await;
    join_public(&mut chat, &bob, "lobby").await;
    for n in 0..3 {
        send(&mut chat, &alice, "public:lobby", &format!("{n}")).await.expect("within the burst");
    }
    assert_status(send(&mut chat, &alice, "public:lobby", "one more").await, Code::ResourceExhausted, "retry after");
    send(&mut chat, &bob, "public:lobby", "bob is not limited").await.expect("another player");
    let history = all_history(&mut chat, &bob, "public:lobby").await;
    assert_eq!(ids(&history), vec![4, 3, 2, 1]);
    assert_eq!(history[0].body, "bob is not limited");
    lobby.shutdown().await.expect("shutdown");
}

async fn messages_survive_a_restart_and_subscribe_resumes_exactly(backend: &Backend) {
    let lobby = start(config(backend)).await;
    let [alice, bob] = <[Player; 2]>::try_from(players(&lobby, &["alice", "bob"]).await).ok().expect("two");
    let mut chat = chat_client(&lobby).await;
    join_public(&mut chat, &alice, "lobby").await;
    join_public(&mut chat, &bob, "lobby").await;
    for n in 1..=3 {
        send(&mut chat, &alice, "public:lobby", &format!("before {n}")).await.expect("send");
    }
    let mut stream = subscribe(&mut chat, &bob, "public:lobby", Some(0)).await.expect("subscribe");
    let mut last_received = 0;
    for n in 1..=3 {
        let message = next(&mut stream).await;
        assert_eq!(message.message_id, n);
        last_received = message.message_id;
    }
    lobby.shutdown().await.expect("shutdown");
    // The stream ends telling the client to come back.
    let ended = tokio::time::timeout(WAIT, stream.message()).await.expect("stream ends");
    assert_eq!(ended.expect_err("ends with a status").code(), Code::Unavailable);

    let lobby = start(config(backend)).await;
    let mut chat = chat_client(&lobby).await;
    // Sent while bob is away.
    for n in 4..=5 {
        send(&mut chat, &alice, "public:lobby", &format!("missed {n}")).await.expect("send");
    }
    let mut stream = subscribe(&mut chat, &bob, "public:lobby", Some(last_received)).await.expect("resume");
    for n in 4..=5 {
        let message = next(&mut stream).await;
        assert_eq!((message.message_id, message.body), (n, format!("missed {n}")));
    }
    send(&mut chat, &alice, "public:lobby", "live 6").await.expect("send");
    let message = next(&mut stream).await;
    assert_eq!((message.message_id, message.body.as_str()), (6, "live 6"));
    let history = all_history(&mut chat, &bob, "public:lobby").await;
    assert_eq!(ids(&history), vec![6, 5, 4, 3, 2, 1]);
    assert_eq!(history[5].body, "before 1");
    lobby.shutdown().await.expect("shutdown");
}

/// Two lobby processes' worth of servers on one database, so the database (not
/// an in-process lock) must keep ids unique and increasing.
async fn concurrent_senders_on_two_lobbies_get_increasing_ids_and_none_are_lost(backend: &Backend) {
    const N_SENDERS: usize = 4;
    const N_EACH: u64 = 25;
    let first = start(unlimited(backend)).await;
    let second = start(unlimited(backend)).await;
    let senders = players(&first, &["sender0", "sender1", "sender2", "sender3"]).await;
    let watcher = players(&first, &["watcher"]).await.pop().expect("watcher");
    let mut chat = chat_client(&first).await;
    for player in senders.iter().chain([&watcher]) {
        join_public(&mut chat, player, "busy").await;
    }
    let mut stream = subscribe(&mut chat, &watcher, "public:busy", None).await.expect("subscribe");

    let mut tasks = tokio::task::JoinSet::new();
    for (idx, player) in senders.into_iter().enumerate() {
        let mut chat = chat_client(if idx % 2 == 0 { &first } else { &second }).await;
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for n in 0..N_EACH {
                let body = format!("sender {idx} message {n}");
                let sent = send(&mut chat, &player, "public:busy", &body).await.expect("send");
                acked.push((sent.message_id, body));
            }
            acked
        });
    }
    let mut all_acked = Vec::new();
    while let Some(acked) = tasks.join_next().await {
        let acked = acked.expect("sender task");
        assert!(acked.windows(2).all(|pair| pair[0].0 < pair[1].0), "one sender's ids increase");
        all_acked.extend(acked);
    }
    all_acked.sort();
    let total = N_SENDERS as u64 * N_EACH;
    assert_eq!(all_acked.iter().map(|(id, _)| *id).collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());

    // One more through the watcher's lobby: it arrives after every other one,
    // including those the second lobby published to its own subscribers only.
    send(&mut chat, &watcher, "public:busy", "last").await.expect("send");
    for expected in 1..=total {
        let message = next(&mut stream).await;
        assert_eq!(message.message_id, expected);
        assert_eq!(message.body, all_acked[expected as usize - 1].1);
    }
    assert_eq!(next(&mut stream).await.body, "last");
    // The second lobby's messages reached this subscriber only through the database.
    assert!(first.chat().stats().gap_refills >= 1, "{:?}", first.chat().stats());
    let history = all_history(&mut chat, &watcher, "public:busy").await;
    assert_eq!(ids(&history), (1..=total + 1).rev().collect::<Vec<_>>());
    second.shutdown().await.expect("shutdown");
    first.shutdown().await.expect("shutdown");
}

async fn a_subscriber_that_falls_behind_catches_up_from_the_database(backend: &Backend) {
    const N_MESSAGES: u64 = 150;
    let mut config = unlimited(backend);
    config.chat.broadcast_capacity = 4;
    config.chat.subscriber_buffer = 1;
    config.chat.max_message_chars = 8000;
    let lobby = start(config).await;
    let [alice, bob] = <[Player; 2]>::try_from(players(&lobby, &["alice", "bob"]).await).ok().expect("two");
    let mut chat = chat_client(&lobby).await;
    join_public(&mut chat, &alice, "lobby").await;
    join_public(&mut chat, &bob, "lobby").await;
    // Bob's connection advertises small HTTP/2 windows, so a reader that does
    // not read soon stops the server's writes and the broadcast runs ahead.
    let slow = Channel::from_shared(format!("http://{}", lobby.local_addr()))
        .expect("uri")
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .expect("connect");
    let mut slow = ChatClient::new(slow);
    let mut stream = subscribe(&mut slow, &bob, "public:lobby", None).await.expect("subscribe");
    let body = "z".repeat(8000);
    for _ in 0..N_MESSAGES {
        send(&mut chat, &alice, "public:lobby", &body).await.expect("send");
    }
    for expected in 1..=N_MESSAGES {
        assert_eq!(next(&mut stream).await.message_id, expected);
    }
    assert!(lobby.chat().stats().lag_refills >= 1, "{:?}", lobby.chat().stats());
    lobby.shutdown().await.expect("shutdown");
}

async fn chat_needs_a_token_and_reports_healthy(backend: &Backend) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let lobby = start(config(backend)).await;
    let mut chat = chat_client(&lobby).await;
    let missing = chat
        .send(pb::SendRequest { channel_id: "public:lobby".into(), body: "hi".into(), idempotency_key: String::new() })
        .await;
    assert_status(missing, Code::Unauthenticated, "missing access token");
    let forged = chat
        .subscribe(authed(pb::SubscribeRequest { channel_id: "public:lobby".into(), after_id: None }, "forged"))
        .await;
    assert_status(forged, Code::Unauthenticated, "invalid access token");
    let mut health = HealthClient::new(common::channel(&lobby).await);
    let response =
        health.check(HealthCheckRequest { service: "rally.chat.v1.Chat".into() }).await.expect("health").into_inner();
    assert_eq!(response.status(), ServingStatus::Serving);
    lobby.shutdown().await.expect("shutdown");
}
