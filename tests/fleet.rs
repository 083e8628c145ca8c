//! The fleet test (issue 17): every role as replicas sharing only a
//! PostgreSQL and a Redis of the test's own, surviving the loss of any one.
//!
//! 3 `rally lobby`, 2 `rally matchmaker` and 3 `rally shard` processes, 60
//! bots in 3 `rally bot play` processes (each given every lobby and
//! matchmaker, its own first) and 3 chat clients over gRPC play while the
//! test kills -9 one lobby, one matchmaker and one shard (restarting each on
//! its ports and data), restarts Redis keeping its data and then empty, and
//! crashes and restarts PostgreSQL. It follows the Redis streams the roles
//! share (match results, matches formed) through the matchmaker's own
//! readers, and in the end compares every shard's `results.jsonl` with the
//! lobby's match histories. It asserts:
//! - each restarted role answers healthy again (`rally health`: gRPC
//!   SERVING for lobbies and matchmakers, `/readyz` for shards);
//! - every chat message a Send acknowledged reaches every subscriber, live
//!   or after it resumes with `after_id` on another lobby, once and in order,
//!   and a Send retried with its idempotency key is stored once;
//! - one outcome per match id on the results stream (on each: the stream
//!   Redis makes after losing its data holds, once, what shards publish
//!   again then, the same outcome);
//! - no result lost or applied twice: each player's lobby history holds
//!   exactly the rated results the shards wrote with that player;
//! - no ticket lost: every bot is matched again after a matchmaker's kill;
//! - no player in two matches at once: a player's next match is announced
//!   only after the previous one's outcome, and no two of its played matches
//!   overlap;
//! - every player of the killed shard is matched again, and playing on a
//!   shard again, within 10 s of the kill (also printed as measured figures).
//!
//! Waits are conditions polled with deadlines; the whole run takes under a
//! minute on 2 cores. Needs `redis-server`, `redis-cli`, `initdb` and
//! `pg_ctl` (run as the `postgres` user through `runuser`) on `PATH`.

#![expect(clippy::unwrap_used, reason = "test code: a failed step should fail the test")]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::postgres::OwnPostgres;
use common::process::{Logs, Process};
use common::redis::OwnRedis;
use common::{eventually, free_tcp_port, free_udp_port, unix_ms};
use rally_lobby::proto::chat::{JoinRequest, SendRequest, SubscribeRequest, chat_client::ChatClient, join_request};
use rally_lobby::proto::profile::{MatchHistoryRequest, profile_client::ProfileClient};
use rally_matchmaker::RedisConnection;
use rally_matchmaker::bus::ResultsBus as _;
use rally_matchmaker::engine::is_aborted;
use rally_matchmaker::match_events::MatchEvents as _;
use rally_matchmaker::player::{PlayerClient, RetryPolicy, lazy_channel, retry_hint};
use rally_matchmaker::redis::{RedisBus, RedisMatchEvents};
use rally_protocol::results::MatchResult;
use tokio::sync::watch;

/// Bots per `rally bot play` process; three processes.
const BOTS_PER_FARM: u32 = 20;
/// The bots' password.
const BOT_PASSWORD: &str = "fleet-bot-passphrase-17";
/// The Redis key prefix every role shares (the default).
const REDIS_PREFIX: &str = "rally";
/// The test's own consumer group on the results stream: it sees every entry.
const AUDIT_GROUP: &str = "fleet-test-audit";
/// How long a restarted role may take to answer healthy again.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);
/// The bound from a shard's kill to its players playing again.
const PLAYING_AGAIN_WITHIN: Duration = Duration::from_secs(10);
/// How long the fleet may take to form and finish matches after a disruption.
const PLAYS_ON_WITHIN: Duration = Duration::from_secs(45);

/// What the test saw on the shared Redis streams.
#[derive(Debug, Default)]
struct Audit {
    /// Every entry of the results stream (the outcome of a match), once each.
    outcomes: Vec<MatchResult>,
    /// When Redis appended each of `outcomes` (its entry id's time).
    outcome_entry_ms: Vec<u64>,
    outcome_entries: HashSet<String>,
    /// Every match-formed event.
    formed: Vec<Formed>,
}

/// A match-formed event, as far as the test reads it.
#[derive(Debug, Clone)]
struct Formed {
    match_id: u64,
    shard: String,
    players: Vec<u64>,
    formed_at_ms: u64,
    /// When Redis appended the event (its entry id's time): after the
    /// matchmaker's claim of the tickets, which `formed_at_ms` (the round's
    /// clock) precedes.
    announced_at_ms: u64,
}

type SharedAudit = Arc<Mutex<Audit>>;

/// Reads every results-stream entry through a consumer group of the test's
/// own, making the group again whenever Redis lost it (a restart without data).
fn follow_results(
    redis_url: String,
    audit: SharedAudit,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let connection = RedisConnection::connect_lazy(&redis_url, REDIS_PREFIX).unwrap().with_role("the fleet test");
        let bus = RedisBus::new(connection);
        let mut ready = false;
        while !*stop.borrow() {
            if !ready {
                ready = bus.ensure_group(AUDIT_GROUP).await.is_ok();
                if !ready {
                    // A pause before retrying a Redis that is down, not a wait for a condition.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            let read = tokio::select! {
                read = bus.read_new(AUDIT_GROUP, "auditor", 256, Duration::from_millis(200)) => read,
                _ = stop.changed() => return,
            };
            match read {
                Ok(deliveries) => {
                    let ids: Vec<String> = deliveries.iter().map(|delivery| delivery.id.clone()).collect();
                    {
                        let mut audit = audit.lock().unwrap();
                        for delivery in deliveries {
                            if audit.outcome_entries.insert(delivery.id.clone()) {
                                audit.outcomes.push(delivery.result);
                                audit.outcome_entry_ms.push(entry_ms(&delivery.id));
                            }
                        }
                    }
                    let _ = bus.ack(AUDIT_GROUP, &ids).await;
                }
                Err(_) => {
                    // Redis down, or it lost the group: make the group again.
                    ready = false;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Follows the match-formed stream from its oldest entry.
fn follow_formed(
    redis_url: String,
    audit: SharedAudit,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let connection = RedisConnection::connect_lazy(&redis_url, REDIS_PREFIX).unwrap().with_role("the fleet test");
        let events = RedisMatchEvents::new(connection);
        let mut cursor: Option<String> = None;
        while !*stop.borrow() {
            let read = tokio::select! {
                read = events.read_after(cursor.as_deref(), 256, Duration::from_millis(200)) => read,
                _ = stop.changed() => return,
            };
            match read {
                Ok(batch) => {
                    let mut audit = audit.lock().unwrap();
                    for (next, formed) in batch {
                        if !formed.players.is_empty() {
                            audit.formed.push(Formed {
                                match_id: formed.match_id.0,
                                shard: formed.shard,
                                players: formed.players.iter().map(|player| player.0).collect(),
                                formed_at_ms: formed.formed_at_ms,
                                announced_at_ms: entry_ms(&next),
                            });
                        }
                        cursor = Some(next);
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
}

/// The time part of a Redis stream entry id (`MS-SEQ`).
fn entry_ms(id: &str) -> u64 {
    id.split_once('-').and_then(|(ms, _)| ms.parse().ok()).unwrap_or_else(|| panic!("{id:?} is no stream entry id"))
}

/// `rally health TARGET` answers healthy.
async fn healthy(target: &str) -> bool {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_rally"))
        .args(["health", target, "--timeout", "1"])
        .output()
        .await
        .is_ok_and(|output| output.status.success())
}

/// Waits until `target` answers healthy; returns how long it took.
async fn wait_healthy(what: &str, target: &str) -> Duration {
    eventually(&format!("{what} ({target}) answers healthy"), HEALTHY_WITHIN, || healthy(target)).await
}

fn grpc(addr: std::net::SocketAddr) -> String {
    format!("grpc://{addr}")
}

fn readyz(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}/readyz")
}

/// The timeline the test prints: what happened when, from the start.
struct Timeline {
    start: Instant,
    start_ms: u64,
}

impl Timeline {
    fn new() -> Self {
        Self { start: Instant::now(), start_ms: unix_ms() }
    }

    fn note(&self, what: &str) {
        eprintln!("[fleet {:6.1} s] {what}", self.start.elapsed().as_secs_f64());
    }

    /// A Unix-ms time as seconds on the timeline.
    fn at(&self, unix_ms: u64) -> String {
        format!("{:.1} s", (unix_ms as f64 - self.start_ms as f64) / 1000.0)
    }
}

/// Waits until matches are formed, and rated matches finish, after `since_ms`:
/// the fleet plays on after a disruption.
async fn wait_plays_on(audit: &SharedAudit, after: &str, since_ms: u64) -> Duration {
    const N: usize = 3;
    eventually(&format!("{N} matches formed and {N} rated matches finished after {after}"), PLAYS_ON_WITHIN, || {
        let audit = audit.lock().unwrap();
        let formed = audit.formed.iter().filter(|formed| formed.formed_at_ms > since_ms).count();
        let finished =
            audit.outcomes.iter().filter(|result| !is_aborted(result) && result.ended_at_ms > since_ms).count();
        std::future::ready(formed >= N && finished >= N)
    })
    .await
}

/// Every result a shard wrote to `results.jsonl` in `data_dir` (over all its incarnations).
fn shard_results(data_dir: &Path) -> Vec<MatchResult> {
    let path = data_dir.join("results.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("{}: unreadable result {line:?}: {err}", path.display()))
        })
        .collect()
}

/// A player's whole match history at the lobby: match id → times listed.
async fn history(
    profile: &mut ProfileClient<tonic::transport::Channel>,
    reader: &PlayerClient,
    player_id: u64,
) -> Result<BTreeMap<u64, u32>, tonic::Status> {
    let mut matches = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let request = MatchHistoryRequest { player_id, page_size: 100, page_token: page_token.clone() };
        let page = profile.match_history(reader.request(request)).await?.into_inner();
        for entry in page.entries {
            *matches.entry(entry.match_id).or_insert(0) += 1;
        }
        if page.next_page_token.is_empty() {
            return Ok(matches);
        }
        page_token = page.next_page_token;
    }
}

/// The public channel the chat clients talk in.
const CHAT_CHANNEL: &str = "fleet";
/// Chat clients: each subscribes on its own lobby and sends through the next one.
const N_CHATTERS: usize = 3;
/// Time between two messages of one sender (the lobby allows 2 a second per account).
const CHAT_EVERY: Duration = Duration::from_millis(700);
/// How long a sender keeps retrying one message before it gives up on it.
const SEND_FOR: Duration = Duration::from_secs(30);

/// What the chat clients saw.
#[derive(Debug, Default)]
struct ChatLog {
    /// Messages a Send acknowledged: message id → body.
    acked: BTreeMap<u64, String>,
    /// Messages given up on after [`SEND_FOR`] of retries.
    unacked: Vec<String>,
    /// Send attempts that failed and were retried (on the next lobby).
    send_retries: u64,
    /// Per subscriber, the message ids in the order they arrived.
    received: Vec<Vec<u64>>,
    /// Every message received by anyone: id → body.
    bodies: BTreeMap<u64, String>,
    /// Per subscriber, how often it subscribed again (after its stream broke).
    resumes: Vec<u32>,
}

type SharedChat = Arc<Mutex<ChatLog>>;

/// Subscribes to the channel on lobby `home` from the first message, and
/// whenever the stream breaks subscribes again on the next lobby with
/// `after_id` set to the last message received.
fn subscriber(
    index: usize,
    player: PlayerClient,
    lobbies: Vec<tonic::transport::Channel>,
    channel_id: String,
    chat: SharedChat,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lobby = index;
        let mut after_id = 0u64;
        while !*stop.borrow() {
            let mut client = ChatClient::new(lobbies[lobby].clone());
            let request = SubscribeRequest { channel_id: channel_id.clone(), after_id: Some(after_id) };
            if let Ok(Ok(response)) =
                tokio::time::timeout(Duration::from_secs(3), client.subscribe(player.request(request))).await
            {
                let mut stream = response.into_inner();
                loop {
                    let message = tokio::select! {
                        message = stream.message() => message,
                        _ = stop.changed() => return,
                    };
                    let Ok(Some(message)) = message else { break };
                    after_id = message.message_id;
                    let mut chat = chat.lock().unwrap();
                    chat.received[index].push(message.message_id);
                    chat.bodies.insert(message.message_id, message.body);
                }
            }
            chat.lock().unwrap().resumes[index] += 1;
            lobby = (lobby + 1) % lobbies.len();
            // A pause before trying the next lobby, not a wait for a condition.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => return,
            }
        }
    })
}

/// Sends a message every [`CHAT_EVERY`] through lobby `index + 1`, each with
/// an idempotency key; a failed Send is retried with the same key on the
/// next lobby until it is acknowledged or [`SEND_FOR`] has passed.
fn sender(
    index: usize,
    player: PlayerClient,
    lobbies: Vec<tonic::transport::Channel>,
    channel_id: String,
    chat: SharedChat,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lobby = (index + 1) % lobbies.len();
        let mut pace = tokio::time::interval(CHAT_EVERY);
        let mut n = 0u32;
        while !*stop.borrow() {
            tokio::select! {
                _ = pace.tick() => {}
                _ = stop.changed() => return,
            }
            n += 1;
            let body = format!("chatter {index} says {n}");
            let key = format!("fleet-{index}-{n}");
            let give_up = tokio::time::Instant::now() + SEND_FOR;
            loop {
                let mut client = ChatClient::new(lobbies[lobby].clone());
                let request =
                    SendRequest { channel_id: channel_id.clone(), body: body.clone(), idempotency_key: key.clone() };
                let sent = tokio::time::timeout(Duration::from_secs(3), client.send(player.request(request))).await;
                let wait = match sent {
                    Ok(Ok(message)) => {
                        chat.lock().unwrap().acked.insert(message.into_inner().message_id, body);
                        break;
                    }
                    // Too fast for the per-account limit: wait as told, on the same lobby.
                    Ok(Err(status)) if status.code() == tonic::Code::ResourceExhausted => {
                        retry_hint(&status).unwrap_or(Duration::from_millis(500))
                    }
                    _ => {
                        lobby = (lobby + 1) % lobbies.len();
                        Duration::from_millis(200)
                    }
                };
                if tokio::time::Instant::now() >= give_up {
                    chat.lock().unwrap().unacked.push(body);
                    break;
                }
                chat.lock().unwrap().send_retries += 1;
                tokio::time::sleep(wait).await;
            }
        }
    })
}

/// The fleet's processes and the servers under them.
struct Fleet {
    lobbies: Vec<Process>,
    matchmakers: Vec<Process>,
    shards: Vec<Process>,
    shard_dirs: Vec<PathBuf>,
    bots: Vec<Process>,
}

impl Fleet {
    fn lobby_addr(&self, index: usize) -> std::net::SocketAddr {
        self.lobbies[index].ready.as_ref().unwrap().lobby.unwrap()
    }

    fn matchmaker_addr(&self, index: usize) -> std::net::SocketAddr {
        self.matchmakers[index].ready.as_ref().unwrap().matchmaker.unwrap()
    }

    fn shard_metrics(&self, index: usize) -> std::net::SocketAddr {
        self.shards[index].ready.as_ref().unwrap().metrics.unwrap()
    }

    /// Every role still runs (none exited by itself).
    fn assert_all_running(&mut self) {
        for process in
            self.lobbies.iter_mut().chain(&mut self.matchmakers).chain(&mut self.shards).chain(&mut self.bots)
        {
            if let Some(status) = process.exited() {
                panic!(
                    "{} exited by itself ({status}); its log:\n{}",
                    process.name(),
                    std::fs::read_to_string(process.log_path()).unwrap_or_default()
                );
            }
        }
    }
}

fn hex_seed() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_survives_losing_one_of_each_role_and_its_shared_servers_restarting() {
    let timeline = Timeline::new();
    let logs = Logs::new();
    let work = tempfile::tempdir().unwrap();
    let postgres = tokio::task::block_in_place(OwnPostgres::start);
    let mut redis = OwnRedis::start().await;
    timeline.note(&format!("PostgreSQL at {} and Redis at {} up", postgres.url(), redis.url()));

    // Keys every replica of a role shares: the lobbies sign access tokens with
    // one key, the matchmakers connect tokens with another.
    let access_key = work.path().join("access.key");
    std::fs::write(&access_key, format!("{}\n", hex_seed())).unwrap();
    let token_key = work.path().join("token.key");
    std::fs::write(&token_key, format!("{}\n", hex_seed())).unwrap();
    let ports = |n: usize| -> Vec<(u16, u16)> { (0..n).map(|_| (free_tcp_port(), free_tcp_port())).collect() };

    let mut lobbies = Vec::new();
    for (index, (grpc_port, metrics_port)) in ports(3).into_iter().enumerate() {
        let mut lobby = Process::new(
            &format!("lobby-{index}"),
            [
                "lobby".into(),
                "--listen".into(),
                format!("127.0.0.1:{grpc_port}"),
                "--metrics-addr".into(),
                format!("127.0.0.1:{metrics_port}"),
                "--data-dir".into(),
                work.path().join(format!("lobby-{index}")).display().to_string(),
                "--database-url".into(),
                postgres.url(),
                "--access-signing-key-file".into(),
                access_key.display().to_string(),
                "--redis-url".into(),
                redis.url(),
                "--login-limit-exempt".into(),
                "127.0.0.1".into(),
            ],
            &logs,
        )
        .with_ready_line();
        // The first lobby migrates the database; the others start after it.
        lobby.start().await;
        lobbies.push(lobby);
    }
    let [access_public] = <[String; 1]>::try_from(lobbies[0].ready.clone().unwrap().access_token_keys).unwrap();

    let mut matchmakers = Vec::new();
    for (index, (grpc_port, metrics_port)) in ports(2).into_iter().enumerate() {
        let mut matchmaker = Process::new(
            &format!("matchmaker-{index}"),
            [
                "matchmaker".into(),
                "--listen".into(),
                format!("127.0.0.1:{grpc_port}"),
                "--metrics-addr".into(),
                format!("127.0.0.1:{metrics_port}"),
                "--data-dir".into(),
                work.path().join(format!("matchmaker-{index}")).display().to_string(),
                "--redis-url".into(),
                redis.url(),
                "--access-token-key".into(),
                access_public.clone(),
                "--token-signing-key-file".into(),
                token_key.display().to_string(),
                // Short matches: more results to check in a bounded run.
                "--points-to-win".into(),
                "1".into(),
            ],
            &logs,
        )
        .with_ready_line();
        matchmaker.start().await;
        matchmakers.push(matchmaker);
    }
    let token_public = matchmakers[0].ready.clone().unwrap().token_key.unwrap();
    assert_eq!(matchmakers[1].ready.as_ref().unwrap().token_key.as_ref(), Some(&token_public));

    let mut shards = Vec::new();
    let mut shard_dirs = Vec::new();
    for index in 0..3 {
        let data_dir = work.path().join(format!("shard-{index}"));
        let mut shard = Process::new(
            &format!("shard-{index}"),
            [
                "shard".into(),
                "--listen".into(),
                format!("127.0.0.1:{}", free_udp_port()),
                "--metrics-addr".into(),
                format!("127.0.0.1:{}", free_tcp_port()),
                "--name".into(),
                format!("shard-{index}"),
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--redis-url".into(),
                redis.url(),
                "--token-key".into(),
                token_public.clone(),
                "--drain-timeout".into(),
                "2".into(),
            ],
            &logs,
        )
        .with_ready_line();
        shard.start().await;
        shards.push(shard);
        shard_dirs.push(data_dir);
    }
    timeline.note("3 lobbies, 2 matchmakers and 3 shards serving");

    // Three bot farms, each homed on another lobby; two share a matchmaker.
    // Each farm knows every replica (comma-separated), its own first, and fails over between them.
    // Easy bots miss often, so matches (to one point) end in seconds.
    let farms = [("fleet-a", 0, 0), ("fleet-b", 1, 1), ("fleet-c", 2, 0)];
    let mut bots = Vec::new();
    for (prefix, lobby, matchmaker) in farms {
        let lobby_url = (0..3)
            .map(|turn| format!("http://{}", lobbies[(lobby + turn) % 3].ready.as_ref().unwrap().lobby.unwrap()))
            .collect::<Vec<_>>()
            .join(",");
        let matchmaker_url = (0..2)
            .map(|turn| {
                format!("http://{}", matchmakers[(matchmaker + turn) % 2].ready.as_ref().unwrap().matchmaker.unwrap())
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut farm = Process::new(
            &format!("bots-{prefix}"),
            [
                "bot".into(),
                "play".into(),
                "--lobby".into(),
                lobby_url,
                "--matchmaker".into(),
                matchmaker_url,
                "--count".into(),
                BOTS_PER_FARM.to_string(),
                "--ramp-per-sec".into(),
                "20".into(),
                "--policy".into(),
                "tracker".into(),
                "--difficulty".into(),
                "easy".into(),
                "--username-prefix".into(),
                prefix.into(),
                "--password".into(),
                BOT_PASSWORD.into(),
            ],
            &logs,
        );
        farm.start().await;
        bots.push(farm);
    }
    let mut fleet = Fleet { lobbies, matchmakers, shards, shard_dirs, bots };

    let audit: SharedAudit = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let results_reader = follow_results(redis.url(), audit.clone(), stop_rx.clone());
    let formed_reader = follow_formed(redis.url(), audit.clone(), stop_rx.clone());

    let n_bots = 3 * BOTS_PER_FARM as usize;
    eventually(&format!("all {n_bots} bots are matched"), Duration::from_secs(90), || {
        let audit = audit.lock().unwrap();
        let players: HashSet<u64> = audit.formed.iter().flat_map(|formed| formed.players.iter().copied()).collect();
        std::future::ready(players.len() >= n_bots)
    })
    .await;
    let since = unix_ms();
    wait_plays_on(&audit, "the start", 0).await;
    timeline.note(&format!(
        "all {n_bots} bots matched; matches finishing ({} ms after all were matched)",
        unix_ms() - since
    ));
    fleet.assert_all_running();

    // Chat clients: each subscribes on its own lobby and sends through the next.
    let lobby_channels: Vec<tonic::transport::Channel> =
        (0..3).map(|index| lazy_channel(&format!("http://{}", fleet.lobby_addr(index))).unwrap()).collect();
    let chat: SharedChat = Arc::new(Mutex::new(ChatLog {
        received: vec![Vec::new(); N_CHATTERS],
        resumes: vec![0; N_CHATTERS],
        ..ChatLog::default()
    }));
    let (stop_chat_tx, stop_chat_rx) = watch::channel(false);
    let (stop_listening_tx, stop_listening_rx) = watch::channel(false);
    let mut chatters = Vec::new();
    let mut listeners = Vec::new();
    for index in 0..N_CHATTERS {
        let player = PlayerClient::register_or_login_retrying(
            lobby_channels[index].clone(),
            lazy_channel(&format!("http://{}", fleet.matchmaker_addr(index % 2))).unwrap(),
            &format!("fleet-chatter-{index}"),
            "fleet chatter passphrase 17",
            RetryPolicy::forever(),
        )
        .await
        .unwrap();
        let join = JoinRequest { target: Some(join_request::Target::PublicName(CHAT_CHANNEL.into())) };
        let channel_id = ChatClient::new(lobby_channels[index].clone())
            .join(player.request(join))
            .await
            .unwrap()
            .into_inner()
            .channel_id;
        listeners.push(subscriber(
            index,
            player.clone(),
            lobby_channels.clone(),
            channel_id.clone(),
            chat.clone(),
            stop_listening_rx.clone(),
        ));
        chatters.push(sender(index, player, lobby_channels.clone(), channel_id, chat.clone(), stop_chat_rx.clone()));
    }
    timeline.note(&format!("{N_CHATTERS} chat clients subscribed and sending"));

    // 1. A lobby dies; the others serve on; it comes back on its port.
    fleet.lobbies[0].kill9().await;
    let killed_at = unix_ms();
    timeline.note("kill -9 lobby-0");
    for index in 1..3 {
        assert!(healthy(&grpc(fleet.lobby_addr(index))).await, "lobby-{index} serves while lobby-0 is down");
    }
    // While it is down, its subscriber resumes on another lobby and hears
    // what is said after the kill, through the lobbies that remain.
    let heard_before = chat.lock().unwrap().received[0].len();
    eventually(
        "lobby-0's subscriber hears, elsewhere, messages sent after lobby-0 died",
        Duration::from_secs(20),
        || {
            let chat = chat.lock().unwrap();
            std::future::ready(chat.resumes[0] >= 1 && chat.received[0].len() >= heard_before + N_CHATTERS)
        },
    )
    .await;
    fleet.lobbies[0].start().await;
    let took = wait_healthy("the restarted lobby-0", &grpc(fleet.lobby_addr(0))).await;
    timeline.note(&format!(
        "lobby-0 restarted: SERVING {took:?} after its start, {} ms after the kill",
        unix_ms() - killed_at
    ));
    wait_plays_on(&audit, "the lobby's kill", killed_at).await;

    // 2. A matchmaker dies mid-round; the other matches on; it comes back.
    fleet.matchmakers[0].kill9().await;
    let killed_at = unix_ms();
    timeline.note("kill -9 matchmaker-0");
    assert!(healthy(&grpc(fleet.matchmaker_addr(1))).await, "matchmaker-1 serves while matchmaker-0 is down");
    wait_plays_on(&audit, "the matchmaker's kill", killed_at).await;
    fleet.matchmakers[0].start().await;
    let took = wait_healthy("the restarted matchmaker-0", &grpc(fleet.matchmaker_addr(0))).await;
    timeline.note(&format!(
        "matchmaker-0 restarted: SERVING {took:?} after its start, {} ms after the kill",
        unix_ms() - killed_at
    ));
    // No ticket lost: every bot is matched again after the kill, those whose
    // ticket or assignment matchmaker-0 held when it died included.
    // Those in play then are matched again once their match ends (most last a few seconds, a few 20 s).
    eventually(
        &format!("all {n_bots} bots are matched again after matchmaker-0's kill"),
        Duration::from_secs(60),
        || {
            let audit = audit.lock().unwrap();
            let players: HashSet<u64> = audit
                .formed
                .iter()
                .filter(|formed| formed.formed_at_ms > killed_at)
                .flat_map(|formed| formed.players.iter().copied())
                .collect();
            std::future::ready(players.len() >= n_bots)
        },
    )
    .await;
    timeline.note(&format!("all {n_bots} bots matched again, {} ms after matchmaker-0's kill", unix_ms() - killed_at));

    // 3. A shard dies: its players must be playing again, elsewhere, within 10 s.
    let shard_name = "shard-0";
    let affected: BTreeSet<u64> = {
        let audit = audit.lock().unwrap();
        let settled: HashSet<u64> = audit.outcomes.iter().map(|result| result.match_id.0).collect();
        let live =
            audit.formed.iter().filter(|formed| formed.shard == shard_name && !settled.contains(&formed.match_id));
        live.flat_map(|formed| formed.players.iter().copied()).collect()
    };
    fleet.shards[0].kill9().await;
    let killed_at = unix_ms();
    timeline.note(&format!("kill -9 {shard_name}: {} players in its unfinished matches", affected.len()));
    assert!(!affected.is_empty(), "{shard_name} had players when it was killed");
    let matched_again = |audit: &Audit, player: u64| {
        audit
            .formed
            .iter()
            .filter(|formed| formed.formed_at_ms > killed_at && formed.players.contains(&player))
            .map(|formed| formed.formed_at_ms - killed_at)
            .min()
    };
    eventually(&format!("every player of {shard_name} is matched again"), Duration::from_secs(40), || {
        let audit = audit.lock().unwrap();
        std::future::ready(affected.iter().all(|&player| matched_again(&audit, player).is_some()))
    })
    .await;
    let rematch_ms: Vec<u64> = {
        let audit = audit.lock().unwrap();
        let mut times: Vec<u64> = affected.iter().filter_map(|&player| matched_again(&audit, player)).collect();
        times.sort_unstable();
        times
    };
    timeline.note(&format!(
        "{shard_name}'s {} players matched again: median {} ms, max {} ms after the kill",
        rematch_ms.len(),
        rematch_ms[rematch_ms.len() / 2],
        rematch_ms[rematch_ms.len() - 1]
    ));
    fleet.shards[0].start().await;
    let took = wait_healthy("the restarted shard-0", &readyz(fleet.shard_metrics(0))).await;
    let restarted_at = unix_ms();
    timeline.note(&format!("{shard_name} restarted: ready {took:?} after its start"));
    eventually(&format!("matches are placed on the restarted {shard_name}"), PLAYS_ON_WITHIN, || {
        let audit = audit.lock().unwrap();
        std::future::ready(
            audit.formed.iter().any(|formed| formed.shard == shard_name && formed.formed_at_ms > restarted_at),
        )
    })
    .await;
    fleet.assert_all_running();

    // 4. Redis restarts with its data.
    let restarted_at = unix_ms();
    redis.restart_keeping_data().await;
    timeline.note(&format!("Redis restarted keeping its data ({} ms)", unix_ms() - restarted_at));
    let took = wait_plays_on(&audit, "Redis's restart with data", unix_ms()).await;
    timeline.note(&format!("the fleet plays on after Redis's restart with data ({took:?})"));

    // 5. Redis restarts empty: registry, tickets, streams and groups gone.
    let restarted_at = unix_ms();
    let wiped_at = redis.restart_empty().await;
    timeline.note(&format!("Redis restarted empty ({} ms)", unix_ms() - restarted_at));
    let took = wait_plays_on(&audit, "Redis's restart without data", unix_ms()).await;
    timeline.note(&format!("the fleet plays on after Redis's restart without data ({took:?})"));

    // 6. PostgreSQL crashes and comes back.
    let restarted_at = unix_ms();
    tokio::task::block_in_place(|| postgres.restart_after_crash());
    timeline.note(&format!("PostgreSQL crashed and restarted ({} ms)", unix_ms() - restarted_at));
    let took = wait_plays_on(&audit, "PostgreSQL's restart", unix_ms()).await;
    timeline.note(&format!("the fleet plays on after PostgreSQL's restart ({took:?})"));
    for index in 0..3 {
        wait_healthy(&format!("lobby-{index}"), &grpc(fleet.lobby_addr(index))).await;
    }
    for index in 0..2 {
        wait_healthy(&format!("matchmaker-{index}"), &grpc(fleet.matchmaker_addr(index))).await;
    }
    fleet.assert_all_running();

    // Chat: senders stop; every acknowledged message reaches every subscriber.
    let _ = stop_chat_tx.send(true);
    for chatter in chatters {
        chatter.await.unwrap();
    }
    let delivered = {
        let chat = chat.clone();
        move || {
            let chat = chat.lock().unwrap();
            let all = chat.received.iter().all(|ids| {
                let ids: HashSet<u64> = ids.iter().copied().collect();
                chat.acked.keys().all(|id| ids.contains(id))
            });
            std::future::ready(all)
        }
    };
    let chat_check = tokio::time::timeout(Duration::from_secs(20), async {
        while !delivered().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let _ = stop_listening_tx.send(true);
    for listener in listeners {
        listener.await.unwrap();
    }
    let chat = std::mem::take(&mut *chat.lock().unwrap());
    timeline.note(&format!(
        "chat: {} messages acknowledged ({} given up on, {} retried sends); received {:?}; resumed {:?}",
        chat.acked.len(),
        chat.unacked.len(),
        chat.send_retries,
        chat.received.iter().map(Vec::len).collect::<Vec<_>>(),
        chat.resumes
    ));

    // The end: bots stop queueing, shards drain (every running match's result
    // written and published before they exit).
    for farm in &mut fleet.bots {
        farm.terminate(Duration::from_secs(20)).await;
    }
    for shard in &mut fleet.shards {
        shard.terminate(Duration::from_secs(40)).await;
    }
    timeline.note("bots stopped, shards drained");

    // Every shard's rated results, over all incarnations.
    let mut written: Vec<MatchResult> = fleet.shard_dirs.iter().flat_map(|dir| shard_results(dir)).collect();
    written.sort_by_key(|result| result.match_id.0);
    let mut by_id: HashMap<u64, u32> = HashMap::new();
    for result in &written {
        *by_id.entry(result.match_id.0).or_insert(0) += 1;
    }
    let rewritten: Vec<_> = by_id.iter().filter(|&(_, &n)| n > 1).collect();
    assert!(rewritten.is_empty(), "match ids written by shards more than once: {rewritten:?}");
    let rated: Vec<&MatchResult> = written.iter().filter(|result| !is_aborted(result)).collect();
    // A match the killed shard finished (and wrote down) in the instant before
    // its kill, but never published, has the reaper's abort as its one outcome
    // on the bus, by design; any other rated result must reach the lobby.
    let superseded: Vec<&MatchResult> = {
        let audit = audit.lock().unwrap();
        rated
            .iter()
            .copied()
            .filter(|result| {
                let mut on_stream =
                    audit.outcomes.iter().filter(|outcome| outcome.match_id == result.match_id).peekable();
                result.shard == shard_name
                    && result.ended_at_ms <= killed_at
                    && result.ended_at_ms + 1_000 >= killed_at
                    && on_stream.peek().is_some()
                    && on_stream.all(is_aborted)
            })
            .collect()
    };
    let mut expected: BTreeMap<u64, BTreeMap<u64, u32>> = BTreeMap::new();
    for result in rated.iter().filter(|result| !superseded.iter().any(|gone| gone.match_id == result.match_id)) {
        for player in result.seats.iter().filter_map(|seat| seat.player_id) {
            *expected.entry(player.0).or_default().entry(result.match_id.0).or_insert(0) += 1;
        }
    }

    // The lobby applies each exactly once: every player's history is exactly
    // the rated results the shards wrote with them (a killed lobby's pending
    // entries are claimed by another after 30 s idle, so this can take a while).
    let lobby_url = format!("http://{}", fleet.lobby_addr(1));
    let reader = PlayerClient::register_or_login_retrying(
        lazy_channel(&lobby_url).unwrap(),
        lazy_channel(&format!("http://{}", fleet.matchmaker_addr(1))).unwrap(),
        "fleet-auditor",
        "fleet auditor passphrase 17",
        RetryPolicy::forever(),
    )
    .await
    .unwrap();
    let mut profile = ProfileClient::new(lazy_channel(&lobby_url).unwrap());
    let mut differences = Vec::new();
    let settled = Instant::now();
    loop {
        differences.clear();
        for (&player, matches) in &expected {
            match history(&mut profile, &reader, player).await {
                Ok(listed) if &listed == matches => {}
                Ok(listed) => {
                    differences.push(format!("player {player}: lobby lists {listed:?}, shards wrote {matches:?}"))
                }
                Err(status) => differences.push(format!("player {player}: {status:?}")),
            }
        }
        if differences.is_empty() || settled.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut lasted_ms: Vec<u64> =
        rated.iter().map(|result| result.ended_at_ms.saturating_sub(result.started_at_ms)).collect();
    lasted_ms.sort_unstable();
    timeline.note(&format!(
        "{} results written by shards ({} rated, lasting median {} ms, max {} ms; {} ended as {shard_name} died and \
         were reported aborted instead), {} players' histories checked",
        written.len(),
        rated.len(),
        lasted_ms.get(lasted_ms.len() / 2).copied().unwrap_or_default(),
        lasted_ms.last().copied().unwrap_or_default(),
        superseded.len(),
        expected.len()
    ));
    if !differences.is_empty() {
        // Where each result the lobby lacks came from, and whether it reached the stream.
        let audit = audit.lock().unwrap();
        for result in &rated {
            let listed_by_all = result.seats.iter().filter_map(|seat| seat.player_id).all(|player| {
                differences.iter().all(|difference| !difference.starts_with(&format!("player {}:", player.0)))
            });
            if !listed_by_all {
                let on_stream: Vec<_> = audit
                    .outcomes
                    .iter()
                    .filter(|outcome| outcome.match_id == result.match_id)
                    .map(|outcome| (outcome.reason, outcome.winner))
                    .collect();
                differences.push(format!(
                    "match {} on {}: {:?}, started {}, ended {}; on the results stream (reason, winner): {on_stream:?}",
                    result.match_id.0,
                    result.shard,
                    result.reason,
                    timeline.at(result.started_at_ms),
                    timeline.at(result.ended_at_ms)
                ));
            }
        }
    }
    assert!(differences.is_empty(), "results lost or applied twice:\n{}", differences.join("\n"));

    let _ = stop_tx.send(true);
    results_reader.await.unwrap();
    formed_reader.await.unwrap();
    let audit = std::mem::take(&mut *audit.lock().unwrap());

    // Chat assertions: no acknowledged message missing at any subscriber, none
    // delivered twice or out of order, none stored twice by a retried Send.
    for (index, ids) in chat.received.iter().enumerate() {
        let got: HashSet<u64> = ids.iter().copied().collect();
        let missing: Vec<u64> = chat.acked.keys().copied().filter(|id| !got.contains(id)).collect();
        assert!(
            missing.is_empty() && chat_check.is_ok(),
            "subscriber {index} never received acknowledged messages {missing:?} (of {})",
            chat.acked.len()
        );
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "subscriber {index} got a message twice or out of order: {ids:?}"
        );
    }
    let mut stored: HashMap<&str, Vec<u64>> = HashMap::new();
    for (id, body) in &chat.bodies {
        stored.entry(body.as_str()).or_default().push(*id);
    }
    let twice: Vec<_> = stored.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "messages stored twice by retried Sends: {twice:?}");
    for (id, body) in &chat.acked {
        assert_eq!(chat.bodies.get(id), Some(body), "message {id} as acknowledged");
    }

    // One outcome per match id on the results stream. The stream Redis made
    // after its restart without data is another stream: a shard publishes
    // there again what the wipe may have taken before a consumer read it.
    let mut outcomes: HashMap<u64, Vec<&MatchResult>> = HashMap::new();
    let mut per_stream: HashMap<(u64, bool), u32> = HashMap::new();
    for (result, &appended_ms) in audit.outcomes.iter().zip(&audit.outcome_entry_ms) {
        outcomes.entry(result.match_id.0).or_default().push(result);
        *per_stream.entry((result.match_id.0, appended_ms > wiped_at)).or_insert(0) += 1;
    }
    let doubled: Vec<_> = per_stream
        .iter()
        .filter(|&(_, &n)| n > 1)
        .map(|(&(id, after_wipe), _)| (id, &outcomes[&id], after_wipe))
        .collect();
    assert!(
        doubled.is_empty(),
        "match ids with more than one outcome on one stream (id, outcomes, on the stream after the wipe): {doubled:?}"
    );
    let republished = outcomes.values().filter(|results| results.len() > 1).count();
    // A republished result is the same outcome, never another one.
    for results in outcomes.values() {
        assert!(results.windows(2).all(|pair| pair[0] == pair[1]), "one match, different outcomes: {results:?}");
    }

    // No player in two matches at once: its next match is formed only once
    // the previous one has its outcome, and no two played matches overlap.
    let mut seated: BTreeMap<u64, Vec<&Formed>> = BTreeMap::new();
    for formed in &audit.formed {
        for player in &formed.players {
            seated.entry(*player).or_default().push(formed);
        }
    }
    let outcome_of = |match_id: u64| -> Option<&MatchResult> {
        outcomes
            .get(&match_id)
            .map(|results| results[0])
            .or_else(|| written.iter().find(|result| result.match_id.0 == match_id))
    };
    let mut double_seated = Vec::new();
    for (player, matches) in &mut seated {
        matches.sort_by_key(|formed| formed.announced_at_ms);
        for pair in matches.windows(2) {
            let (first, next) = (pair[0], pair[1]);
            match outcome_of(first.match_id) {
                Some(end) if end.ended_at_ms <= next.announced_at_ms => {}
                end => double_seated.push(format!(
                    "player {player}: match {} (on {}) announced at {} while match {} (on {}, announced at {}) had {}",
                    next.match_id,
                    next.shard,
                    timeline.at(next.announced_at_ms),
                    first.match_id,
                    first.shard,
                    timeline.at(first.announced_at_ms),
                    end.map_or_else(
                        || "no outcome at all".to_owned(),
                        |end| format!("its outcome ({:?}) at {}", end.reason, timeline.at(end.ended_at_ms))
                    ),
                )),
            }
        }
    }
    let mut played: BTreeMap<u64, Vec<&MatchResult>> = BTreeMap::new();
    for result in &rated {
        for player in result.seats.iter().filter_map(|seat| seat.player_id) {
            played.entry(player.0).or_default().push(result);
        }
    }
    for (player, results) in &mut played {
        results.sort_by_key(|result| result.started_at_ms);
        for pair in results.windows(2) {
            if pair[1].started_at_ms < pair[0].ended_at_ms {
                double_seated.push(format!(
                    "player {player} played matches {} ({} to {}) and {} ({} to {}) at once",
                    pair[0].match_id.0,
                    timeline.at(pair[0].started_at_ms),
                    timeline.at(pair[0].ended_at_ms),
                    pair[1].match_id.0,
                    timeline.at(pair[1].started_at_ms),
                    timeline.at(pair[1].ended_at_ms),
                ));
            }
        }
    }

    // The killed shard's players, playing again: their next match started on a shard.
    let mut playing_again_ms: Vec<(u64, Option<u64>)> = affected
        .iter()
        .map(|&player| {
            let next = written
                .iter()
                .filter(|result| result.started_at_ms > killed_at)
                .filter(|result| result.seats.iter().any(|seat| seat.player_id.is_some_and(|p| p.0 == player)))
                .map(|result| result.started_at_ms - killed_at)
                .min();
            (player, next)
        })
        .collect();
    playing_again_ms.sort_by_key(|&(_, ms)| ms);
    let known: Vec<u64> = playing_again_ms.iter().filter_map(|&(_, ms)| ms).collect();
    eprintln!(
        "fleet: shard kill -9 → its {} players matched again: median {} ms, max {} ms; playing again on a shard: \
         median {:?} ms, max {:?} ms ({} of them)",
        rematch_ms.len(),
        rematch_ms[rematch_ms.len() / 2],
        rematch_ms[rematch_ms.len() - 1],
        known.get(known.len() / 2),
        known.last(),
        known.len()
    );
    timeline.note(&format!(
        "{} outcomes on the stream for {} match ids ({republished} published again after the wipe); {} matches formed",
        audit.outcomes.len(),
        outcomes.len(),
        audit.formed.len()
    ));
    assert!(double_seated.is_empty(), "players seated in two matches at once:\n{}", double_seated.join("\n"));
    let late: Vec<_> = playing_again_ms
        .iter()
        .filter(|&&(_, ms)| ms.is_none_or(|ms| ms > PLAYING_AGAIN_WITHIN.as_millis() as u64))
        .collect();
    assert!(
        late.is_empty(),
        "players of the killed shard not playing again within {PLAYING_AGAIN_WITHIN:?} (player, ms): {late:?}"
    );
    let late: Vec<_> = rematch_ms.iter().filter(|&&ms| ms > PLAYING_AGAIN_WITHIN.as_millis() as u64).collect();
    assert!(late.is_empty(), "players of the killed shard matched again only after (ms): {late:?}");

    for process in fleet.lobbies.iter_mut().chain(&mut fleet.matchmakers) {
        process.terminate(Duration::from_secs(20)).await;
    }
    timeline.note("done");
}
