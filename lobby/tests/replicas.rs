//! Several lobby replicas in one test process on one database (PostgreSQL at
//! `RALLY_TEST_DATABASE_URL`, a fresh schema per test; the idempotency test
//! runs on SQLite too) and one Redis: the shared one at
//! `RALLY_TEST_REDIS_URL` under a unique prefix, or, where the test restarts
//! Redis, a `redis-server` of its own on a free port in a temporary
//! directory (the shared one is never stopped or flushed).

mod common;

use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Backend, PASSWORD, auth_client, authed, chat_client, config, register, start};
use rally_lobby::limits::RateLimitConfig;
use rally_lobby::proto::auth as auth_pb;
use rally_lobby::proto::chat::{self as pb, chat_client::ChatClient, join_request::Target};
use rally_lobby::{LobbyConfig, LobbyHandle, LobbyRedisConfig};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// How long a test waits for something that should happen before failing.
const WAIT: Duration = Duration::from_secs(20);

on_both_backends!(retries_with_an_idempotency_key_give_the_first_result_across_replicas);

/// Polls `condition` until it holds, failing the test after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn shared_redis() -> LobbyRedisConfig {
    let url = std::env::var("RALLY_TEST_REDIS_URL").expect(
        "RALLY_TEST_REDIS_URL is not set: the replica tests need Redis, e.g. \
         export RALLY_TEST_REDIS_URL=redis://127.0.0.1:6379",
    );
    LobbyRedisConfig::new(url, format!("lobby-test-{:016x}", rand::random::<u64>()))
}

/// A `redis-server` owned by one test, killed when dropped.
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let mut redis = Self { port, dir: tempfile::tempdir().expect("temp dir"), child: None };
        redis.spawn().await;
        redis
    }

    fn config(&self) -> LobbyRedisConfig {
        LobbyRedisConfig::new(format!("redis://127.0.0.1:{}", self.port), "lobby-own")
    }

    /// Starts the server (loading the snapshot a saving stop left) and waits until it answers.
    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (the Redis restart test starts its own)");
        self.child = Some(child);
        let client = redis::Client::open(self.config().url).expect("redis url");
        eventually("the test's own redis-server answers", || async {
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return false };
            redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
        })
        .await;
    }

    /// Stops the server, keeping its data (`SAVE`) for the restart or not.
    async fn stop(&mut self, keep_data: bool) {
        let how = if keep_data { "SAVE" } else { "NOSAVE" };
        let status = Command::new("redis-cli").args(["-p", &self.port.to_string(), "SHUTDOWN", how]).status();
        assert!(status.is_ok(), "redis-cli: {status:?}");
        let mut child = self.child.take().expect("running");
        tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
        if !keep_data {
            let _ = std::fs::remove_file(self.dir.path().join("dump.rdb"));
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn replica_config(backend: &Backend, redis: &LobbyRedisConfig) -> LobbyConfig {
    let mut config = config(backend);
    config.redis = Some(redis.clone());
    config.limits.chat_send_per_account =
        RateLimitConfig::new(NonZeroU32::new(100_000).expect("non-zero"), Duration::from_millis(1));
    config
}

/// `n` lobbies on one database and Redis, started one after another (each
/// runs the migrations), each with its relay subscribed.
async fn replicas(n: usize, config: &LobbyConfig) -> Vec<LobbyHandle> {
    let mut lobbies = Vec::new();
    for _ in 0..n {
        let lobby = start(config.clone()).await;
        eventually("the replica's relay subscribed to Redis", || async { lobby.chat().stats().relay_connects >= 1 })
            .await;
        lobbies.push(lobby);
    }
    lobbies
}

struct Player {
    id: u64,
    token: String,
}

async fn player(lobby: &LobbyHandle, name: &str) -> Player {
    let registered = register(&mut auth_client(lobby).await, name).await;
    Player {
        id: registered.account.expect("account").player_id,
        token: registered.tokens.expect("tokens").access_token,
    }
}

async fn join_public(chat: &mut ChatClient<Channel>, player: &Player, name: &str) -> String {
    chat.join(authed(pb::JoinRequest { target: Some(Target::PublicName(name.into())) }, &player.token))
        .await
        .expect("join")
        .into_inner()
        .channel_id
}

async fn send_keyed(
    chat: &mut ChatClient<Channel>,
    player: &Player,
    channel_id: &str,
    body: &str,
    key: &str,
) -> Result<pb::ChatMessage, Status> {
    chat.send(authed(
        pb::SendRequest { channel_id: channel_id.into(), body: body.into(), idempotency_key: key.into() },
        &player.token,
    ))
    .await
    .map(tonic::Response::into_inner)
}

async fn send(chat: &mut ChatClient<Channel>, player: &Player, channel_id: &str, body: &str) -> pb::ChatMessage {
    send_keyed(chat, player, channel_id, body, "").await.expect("send")
}

async fn subscribe(chat: &mut ChatClient<Channel>, player: &Player, channel_id: &str) -> Streaming<pb::ChatMessage> {
    chat.subscribe(authed(pb::SubscribeRequest { channel_id: channel_id.into(), after_id: None }, &player.token))
        .await
        .expect("subscribe")
        .into_inner()
}

async fn next(stream: &mut Streaming<pb::ChatMessage>) -> pb::ChatMessage {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a message within the deadline")
        .expect("stream ok")
        .expect("stream still open")
}

async fn presence(chat: &mut ChatClient<Channel>, asker: &Player, ids: &[u64]) -> Result<Vec<bool>, Status> {
    let response = chat.get_presence(authed(pb::GetPresenceRequest { player_ids: ids.to_vec() }, &asker.token)).await?;
    let players = response.into_inner().players;
    assert_eq!(players.iter().map(|p| p.player_id).collect::<Vec<_>>(), ids, "answered in request order");
    Ok(players.into_iter().map(|p| p.online).collect())
}

async fn shutdown(lobbies: Vec<LobbyHandle>) {
    for lobby in lobbies {
        lobby.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_on_one_replica_reaches_a_subscriber_on_another() {
    let backend = Backend::postgres().await;
    let lobbies = replicas(2, &replica_config(&backend, &shared_redis())).await;
    let alice = player(&lobbies[0], "alice").await;
    let bob = player(&lobbies[1], "bob").await;
    let mut chat_a = chat_client(&lobbies[0]).await;
    let mut chat_b = chat_client(&lobbies[1]).await;
    let channel_id = join_public(&mut chat_a, &alice, "replicas").await;
    join_public(&mut chat_b, &bob, "replicas").await;
    let mut stream = subscribe(&mut chat_b, &bob, &channel_id).await;

    for n in 1..=3 {
        let sent = send(&mut chat_a, &alice, &channel_id, &format!("hello {n}")).await;
        let received = next(&mut stream).await;
        assert_eq!((received.message_id, received.body), (sent.message_id, sent.body), "live on the other replica");
    }
    // And back the other way, to a subscriber on the first replica.
    let mut stream_a = subscribe(&mut chat_a, &alice, &channel_id).await;
    let sent = send(&mut chat_b, &bob, &channel_id, "from b").await;
    assert_eq!(next(&mut stream_a).await.message_id, sent.message_id);
    assert_eq!(next(&mut stream).await.message_id, sent.message_id);

    // A block made on one replica holds on the other's live stream.
    chat_b.block(authed(pb::BlockRequest { player_id: alice.id }, &bob.token)).await.expect("block");
    let mut blocked_view = subscribe(&mut chat_b, &bob, &channel_id).await;
    send(&mut chat_a, &alice, &channel_id, "bob blocked me").await;
    let after = send(&mut chat_b, &bob, &channel_id, "after the block").await;
    assert_eq!(next(&mut blocked_view).await.message_id, after.message_id, "alice's message skipped");

    shutdown(lobbies).await;
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarts_with_and_without_data_lose_no_message_for_live_subscribers() {
    let backend = Backend::postgres().await;
    let mut redis = OwnRedis::start().await;
    let lobbies = replicas(2, &replica_config(&backend, &redis.config())).await;
    let alice = player(&lobbies[0], "alice").await;
    let bob = player(&lobbies[1], "bob").await;
    let mut chat_a = chat_client(&lobbies[0]).await;
    let mut chat_b = chat_client(&lobbies[1]).await;
    let channel_id = join_public(&mut chat_a, &alice, "outage").await;
    join_public(&mut chat_b, &bob, "outage").await;
    let mut stream = subscribe(&mut chat_b, &bob, &channel_id).await;
    let sent = send(&mut chat_a, &alice, &channel_id, "before").await;
    assert_eq!(next(&mut stream).await.message_id, sent.message_id);

    for keep_data in [true, false] {
        let connects = lobbies[1].chat().stats().relay_connects;
        let sender_connects = lobbies[0].chat().stats().relay_connects;
        let failures = lobbies[0].chat().stats().relay_publish_failures;
        redis.stop(keep_data).await;
        // Send does not fail while Redis is down: the message is stored.
        let during: Vec<u64> = {
            let mut ids = Vec::new();
            for n in 0..3 {
                ids.push(send(&mut chat_a, &alice, &channel_id, &format!("during {n} ({keep_data})")).await.message_id);
            }
            ids
        };
        // Restarted only once the sender has given up on publishing them, so
        // they are truly missing from pub/sub and only a resync brings them.
        eventually("the sending replica failed to publish the outage's messages", || async {
            lobbies[0].chat().stats().relay_publish_failures >= failures + 3
        })
        .await;
        redis.spawn().await;
        eventually("the other replica's relay resubscribed", || async {
            lobbies[1].chat().stats().relay_connects > connects
        })
        .await;
        // Delivered by the resync, before anything else is sent.
        for id in during {
            assert_eq!(next(&mut stream).await.message_id, id, "sent during the outage (keep data: {keep_data})");
        }
        eventually("the sending replica's relay resubscribed", || async {
            lobbies[0].chat().stats().relay_connects > sender_connects
        })
        .await;
        let after = send(&mut chat_a, &alice, &channel_id, &format!("after ({keep_data})")).await;
        assert_eq!(next(&mut stream).await.message_id, after.message_id, "live again");
    }
    assert!(lobbies[1].chat().stats().resync_refills >= 2, "{:?}", lobbies[1].chat().stats());

    shutdown(lobbies).await;
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_replicas_and_drops_when_the_holding_replica_stops() {
    let backend = Backend::postgres().await;
    let mut lobbies = replicas(2, &replica_config(&backend, &shared_redis())).await;
    let carol = player(&lobbies[0], "carol").await;
    let dave = player(&lobbies[1], "dave").await;
    let mut chat_a = chat_client(&lobbies[0]).await;
    let mut chat_b = chat_client(&lobbies[1]).await;
    let channel_id = join_public(&mut chat_a, &carol, "presence").await;
    let _carol_stream = subscribe(&mut chat_a, &carol, &channel_id).await;

    // Dave asks replica B; carol holds her stream on replica A. Dave's own
    // call makes him online; an unknown id is offline.
    let ids = [carol.id, dave.id, 987_654_321];
    eventually("carol is online on the other replica", || {
        let mut chat = chat_b.clone();
        let dave = &dave;
        async move { presence(&mut chat, dave, &ids).await.expect("presence") == [true, true, false] }
    })
    .await;

    let too_many: Vec<u64> = (1..=101).collect();
    let refused = presence(&mut chat_b, &dave, &too_many).await.expect_err("over the limit");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("at most 100"), "{}", refused.message());
    let empty = presence(&mut chat_b, &dave, &[]).await.expect_err("no ids");
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");

    // The replica holding carol stops: she is offline at once, not after the expiry.
    let holder = lobbies.remove(0);
    holder.shutdown().await.expect("shutdown");
    let asked = presence(&mut chat_b, &dave, &[carol.id, dave.id]).await.expect("presence");
    assert_eq!(asked, [false, true], "carol left with her replica");

    shutdown(lobbies).await;
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_account_limits_hold_across_replicas() {
    let backend = Backend::postgres().await;
    let mut config = replica_config(&backend, &shared_redis());
    config.limits.login_per_account = RateLimitConfig::new(NonZeroU32::new(3).expect("3"), Duration::from_secs(3600));
    config.limits.chat_send_per_account =
        RateLimitConfig::new(NonZeroU32::new(2).expect("2"), Duration::from_secs(3600));
    let lobbies = replicas(3, &config).await;
    let erin = player(&lobbies[0], "erin").await;

    let mut auths = Vec::new();
    for lobby in &lobbies {
        auths.push(auth_client(lobby).await);
    }
    let login = || auth_pb::LoginRequest { username: "erin".into(), password: PASSWORD.into() };
    // One attempt per replica per round: three replicas allow three in all, not nine.
    for attempt in 0..3 {
        auths[attempt % 3].login(login()).await.expect("within the shared burst");
    }
    for auth in &mut auths {
        let refused = auth.login(login()).await.expect_err("the account's burst is spent on every replica");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        let wait: u64 = refused.metadata().get("retry-after-ms").expect("hint").to_str().unwrap().parse().unwrap();
        assert!(wait >= 1, "a wait of at least 1 ms");
    }

    let mut chats = Vec::new();
    for lobby in &lobbies {
        chats.push(chat_client(lobby).await);
    }
    let channel_id = join_public(&mut chats[0], &erin, "limits").await;
    send(&mut chats[0], &erin, &channel_id, "one").await;
    send(&mut chats[1], &erin, &channel_id, "two").await;
    let refused = send_keyed(&mut chats[2], &erin, &channel_id, "three", "").await.expect_err("limited");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    shutdown(lobbies).await;
    backend.cleanup().await;
}

/// Both backends: on PostgreSQL with the shared Redis, on SQLite without
/// (the keys live in the database either way).
async fn retries_with_an_idempotency_key_give_the_first_result_across_replicas(backend: &Backend) {
    let mut config = replica_config(backend, &shared_redis());
    if matches!(backend, Backend::Sqlite { .. }) {
        config.redis = None;
    }
    let lobby_a = start(config.clone()).await;
    let lobby_b = start(config.clone()).await;
    let mut auth_a = auth_client(&lobby_a).await;
    let mut auth_b = auth_client(&lobby_b).await;
    let register = |username: &str, key: &str| auth_pb::RegisterRequest {
        username: username.into(),
        password: PASSWORD.into(),
        idempotency_key: key.into(),
    };

    let first = auth_a.register(register("frank", "reg-1")).await.expect("register").into_inner();
    let frank_id = first.account.as_ref().expect("account").player_id;
    let again = auth_b.register(register("frank", "reg-1")).await.expect("retried on the other replica").into_inner();
    assert_eq!(again.account.as_ref().expect("account").player_id, frank_id, "the same account");
    assert!(!again.tokens.expect("tokens").access_token.is_empty());
    let other = auth_b.register(register("grace", "reg-1")).await.expect_err("same key, another body");
    assert_eq!(other.code(), Code::FailedPrecondition, "{other:?}");
    assert!(other.message().contains("different registration"), "{}", other.message());
    let wrong_password =
        auth_pb::RegisterRequest { password: "another long password".into(), ..register("frank", "reg-1") };
    assert_eq!(auth_a.register(wrong_password).await.expect_err("other password").code(), Code::FailedPrecondition);
    let taken = auth_a.register(register("frank", "")).await.expect_err("no key: the name is taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    let bad = auth_a.register(register("heidi", "has space")).await.expect_err("bad key");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("idempotency_key"), "{}", bad.message());

    let frank = Player { id: frank_id, token: first.tokens.expect("tokens").access_token };
    let mut chat_a = chat_client(&lobby_a).await;
    let mut chat_b = chat_client(&lobby_b).await;
    let channel_id = join_public(&mut chat_a, &frank, "keys").await;
    let sent = send_keyed(&mut chat_a, &frank, &channel_id, "exactly once", "msg-1").await.expect("send");
    let retried = send_keyed(&mut chat_b, &frank, &channel_id, "exactly once", "msg-1").await.expect("retry");
    assert_eq!(retried, sent, "the retry answers the first message");
    let different = send_keyed(&mut chat_b, &frank, &channel_id, "something else", "msg-1").await.expect_err("body");
    assert_eq!(different.code(), Code::FailedPrecondition, "{different:?}");
    assert!(different.message().contains("different message"), "{}", different.message());
    let too_long = send_keyed(&mut chat_a, &frank, &channel_id, "x", &"k".repeat(65)).await.expect_err("65 chars");
    assert_eq!(too_long.code(), Code::InvalidArgument, "{too_long:?}");

    // After a restart too: the keys are in the database.
    lobby_a.shutdown().await.expect("shutdown");
    let lobby_c = start(config.clone()).await;
    let mut chat_c = chat_client(&lobby_c).await;
    let after_restart = send_keyed(&mut chat_c, &frank, &channel_id, "exactly once", "msg-1").await.expect("retry");
    assert_eq!(after_restart.message_id, sent.message_id);
    let next_message = send_keyed(&mut chat_c, &frank, &channel_id, "exactly once", "msg-2").await.expect("new key");
    assert_eq!(next_message.message_id, sent.message_id + 1, "one message per key");
    let history = chat_c
        .history(authed(
            pb::HistoryRequest { channel_id: channel_id.clone(), page_size: 0, page_token: String::new() },
            &frank.token,
        ))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(history.messages.len(), 2, "{:?}", history.messages);

    // Retries racing on two replicas at once still store one message.
    let (first_race, second_race) = tokio::join!(
        send_keyed(&mut chat_b, &frank, &channel_id, "raced", "msg-race"),
        send_keyed(&mut chat_c, &frank, &channel_id, "raced", "msg-race"),
    );
    assert_eq!(first_race.expect("one"), second_race.expect("the other"), "one message for one key");
    let mut auth_c = auth_client(&lobby_c).await;
    let (reg_one, reg_other) =
        tokio::join!(auth_b.register(register("olivia", "reg-race")), auth_c.register(register("olivia", "reg-race")),);
    let player_of = |response: tonic::Response<auth_pb::RegisterResponse>| {
        response.into_inner().account.expect("account").player_id
    };
    assert_eq!(player_of(reg_one.expect("one")), player_of(reg_other.expect("the other")), "one account for one key");

    // A retry that arrives after the match ended still gets its message;
    // a new message there is refused.
    let match_channel = lobby_c.chat().create_match_channel(77, &[frank.id]).await.expect("match channel");
    let gg = send_keyed(&mut chat_c, &frank, &match_channel, "gg", "msg-gg").await.expect("send");
    lobby_c.chat().end_match_channel(77, &[frank.id]).await.expect("end");
    let retried_gg =
        send_keyed(&mut chat_b, &frank, &match_channel, "gg", "msg-gg").await.expect("retry after the end");
    assert_eq!(retried_gg, gg);
    let late = send_keyed(&mut chat_b, &frank, &match_channel, "gg", "msg-late").await.expect_err("read-only");
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");

    lobby_b.shutdown().await.expect("shutdown");
    lobby_c.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_limits_fall_back_to_each_replica_and_presence_is_unavailable() {
    let backend = Backend::postgres().await;
    let mut redis = OwnRedis::start().await;
    let mut config = replica_config(&backend, &redis.config());
    config.limits.login_per_account = RateLimitConfig::new(NonZeroU32::new(2).expect("2"), Duration::from_secs(3600));
    let lobbies = replicas(1, &config).await;
    let ivan = player(&lobbies[0], "ivan").await;
    let mut auth = auth_client(&lobbies[0]).await;
    let mut chat = chat_client(&lobbies[0]).await;
    redis.stop(false).await;

    // Fail open to the local limit, not to no limit.
    let login = || auth_pb::LoginRequest { username: "ivan".into(), password: PASSWORD.into() };
    auth.login(login()).await.expect("first, counted locally");
    auth.login(login()).await.expect("second, counted locally");
    let refused = auth.login(login()).await.expect_err("the local limit still holds");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    let unavailable = presence(&mut chat, &ivan, &[ivan.id]).await.expect_err("presence needs Redis");
    assert_eq!(unavailable.code(), Code::Unavailable, "{unavailable:?}");

    shutdown(lobbies).await;
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_presence_is_this_process() {
    let backend = Backend::sqlite().await;
    let lobby = start(config(&backend)).await;
    let judy = player(&lobby, "judy").await;
    let mallory = player(&lobby, "mallory").await;
    let mut chat = chat_client(&lobby).await;
    // Judy's own call makes her online; Mallory has made no Chat call.
    assert_eq!(presence(&mut chat, &judy, &[judy.id, mallory.id]).await.expect("presence"), [true, false]);
    let channel_id = join_public(&mut chat, &mallory, "here").await;
    let _stream = subscribe(&mut chat, &mallory, &channel_id).await;
    assert_eq!(presence(&mut chat, &judy, &[mallory.id, judy.id]).await.expect("presence"), [true, true]);
    let too_many = presence(&mut chat, &judy, &[judy.id; 101]).await.expect_err("101 ids");
    assert_eq!(too_many.code(), Code::InvalidArgument);
    lobby.shutdown().await.expect("shutdown");
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_replicas_claim_expires_by_itself() {
    let backend = Backend::postgres().await;
    let redis_config = shared_redis();
    let lobbies = replicas(1, &replica_config(&backend, &redis_config)).await;
    let kim = player(&lobbies[0], "kim").await;
    let mut chat = chat_client(&lobbies[0]).await;
    // What a replica that crashed leaves behind: its last claim on a player,
    // due to expire 300 ms from now on Redis's clock, in a key that lives on
    // (another replica's refresh keeps the hash itself alive).
    let ghost = 424_242_u64;
    let client = redis::Client::open(redis_config.url.as_str()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.expect("TIME");
    let expires_ms = seconds * 1000 + micros / 1000 + 300;
    let key = format!("{}:presence:{ghost}", redis_config.prefix);
    let () =
        redis::cmd("HSET").arg(&key).arg("crashed-replica").arg(expires_ms).query_async(&mut conn).await.expect("HSET");
    let () =
        redis::cmd("PEXPIRE").arg(&key).arg(60_000).query_async::<i64>(&mut conn).await.map(|_| ()).expect("PEXPIRE");
    assert_eq!(presence(&mut chat, &kim, &[ghost]).await.expect("presence"), [true], "claimed, not yet expired");
    eventually("the crashed replica's claim expired", || {
        let mut chat = chat.clone();
        let kim = &kim;
        async move { presence(&mut chat, kim, &[ghost]).await.expect("presence") == [false] }
    })
    .await;
    let () = redis::cmd("DEL").arg(&key).query_async::<i64>(&mut conn).await.map(|_| ()).expect("DEL");
    shutdown(lobbies).await;
    backend.cleanup().await;
}
