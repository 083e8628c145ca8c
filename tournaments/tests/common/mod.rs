//! Test scaffolding: a database (a fresh SQLite file, or a fresh schema on
//! `RALLY_TEST_DATABASE_URL`), shared backends (in memory, or on
//! `RALLY_TEST_REDIS_URL` under a fresh prefix), a director over them with its
//! ledger in a temp dir, and a fake shard that turns scheduled matches into
//! results on the bus (no QUIC).

#![expect(unreachable_pub, reason = "a module of each test binary, not a library")]
// Not `expect`: each test binary uses a different part of this module.
#![allow(dead_code, reason = "each test binary uses a different part of this module")]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rally_ledger::{Ledger, LogSigner};
use rally_matchmaker::redis::{RedisBus, RedisRegistry};
use rally_matchmaker::registry::ShardInfo;
use rally_matchmaker::{
    ConsumerHandle, FixedRatings, MemoryBus, MemoryRegistry, RedisConnection, ResultsBus, ShardRegistry, TokenMinter,
};
use rally_protocol::control::EndReason;
use rally_protocol::results::{MatchResult, SeatResult};
use rally_protocol::token::TokenVerifier;
use rally_protocol::{MatchId, PlayerId};
use rally_tournament::{Format, Rules, Seeding, Stage};
use rally_tournaments::store::{MatchRow, MatchStatus};
use rally_tournaments::{CreateTournament, Store, TournamentDirector, TournamentsConfig};

pub const ORIGIN: &str = "rally.test/ledger";
pub const LEDGER_SEED: [u8; 32] = [9; 32];
pub const SHARD_TTL_MS: u64 = 3_600_000;

/// Where a test's tournaments are stored.
pub enum Database {
    Sqlite { _dir: tempfile::TempDir, url: String },
    Postgres { admin: sqlx::PgPool, schema: String, url: String },
}

impl Database {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("tournaments.db").display());
        Self::Sqlite { _dir: dir, url }
    }

    /// A fresh schema on the server at `RALLY_TEST_DATABASE_URL`.
    pub async fn postgres() -> Self {
        let base = std::env::var("RALLY_TEST_DATABASE_URL").expect(
            "RALLY_TEST_DATABASE_URL is not set: the PostgreSQL half of the tournaments suite needs a server, e.g. \
             export RALLY_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test",
        );
        let admin = sqlx::PgPool::connect(&base).await.expect("connect to RALLY_TEST_DATABASE_URL");
        let schema = format!("tournaments_test_{:016x}", rand::random::<u64>());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .expect("create test schema");
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options[search_path]={schema}");
        Self::Postgres { admin, schema, url }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url, .. } => url,
        }
    }

    pub async fn cleanup(self) {
        if let Self::Postgres { admin, schema, .. } = self {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&admin)
                .await
                .expect("drop test schema");
            admin.close().await;
        }
    }
}

/// The shard registry and results bus a test's director and shards share.
pub enum Shared {
    Memory { registry: Arc<MemoryRegistry>, bus: Arc<MemoryBus> },
    Redis { redis: RedisConnection, registry: Arc<RedisRegistry>, bus: Arc<RedisBus> },
}

impl Shared {
    pub fn memory() -> Self {
        Self::Memory { registry: Arc::new(MemoryRegistry::new()), bus: Arc::new(MemoryBus::new()) }
    }

    /// A fresh key prefix on the server at `RALLY_TEST_REDIS_URL`.
    pub async fn redis() -> Self {
        let url = std::env::var("RALLY_TEST_REDIS_URL").expect(
            "RALLY_TEST_REDIS_URL is not set: the Redis half of the tournaments suite needs a server, e.g. \
             export RALLY_TEST_REDIS_URL=redis://127.0.0.1:6379",
        );
        let prefix = format!("rally-tournaments-test-{:016x}", rand::random::<u64>());
        let redis = RedisConnection::connect_lazy(&url, &prefix).expect("redis url");
        redis.delete_all().await.expect("RALLY_TEST_REDIS_URL is set but Redis does not answer");
        Self::Redis {
            registry: Arc::new(RedisRegistry::new(redis.clone())),
            bus: Arc::new(RedisBus::new(redis.clone())),
            redis,
        }
    }

    pub fn registry(&self) -> Arc<dyn ShardRegistry> {
        match self {
            Self::Memory { registry, .. } => registry.clone(),
            Self::Redis { registry, .. } => registry.clone(),
        }
    }

    pub fn bus(&self) -> Arc<dyn ResultsBus> {
        match self {
            Self::Memory { bus, .. } => bus.clone(),
            Self::Redis { bus, .. } => bus.clone(),
        }
    }

    pub async fn cleanup(self) {
        if let Self::Redis { redis, .. } = self {
            redis.delete_all().await.expect("delete test keys");
        }
    }
}

/// Ratings of the test players 1..=32: 2000 - 10 × id.
pub fn ratings() -> FixedRatings {
    FixedRatings::new((1..=32).map(|id| (PlayerId(id), 2000.0 - 10.0 * id as f64)))
}

/// The same connect-token key in every test, so a restarted director mints alike.
pub fn minter() -> TokenMinter {
    TokenMinter::new(ed25519_dalek::SigningKey::from_bytes(&[5; 32]), 1)
}

pub fn config() -> TournamentsConfig {
    TournamentsConfig {
        no_show: Duration::from_secs(20),
        fill_timeout: Duration::from_secs(10),
        time_limit: Duration::from_secs(60),
        deadline_slack: Duration::from_secs(10),
        consumer: format!("test-{:08x}", rand::random::<u32>()),
        ..TournamentsConfig::default()
    }
}

pub fn open_ledger(dir: &Path) -> Arc<Mutex<Ledger>> {
    let signer = LogSigner::from_seed(LEDGER_SEED, ORIGIN).expect("signer");
    Arc::new(Mutex::new(Ledger::open(dir, signer).expect("open ledger")))
}

pub fn ledger_vkey() -> String {
    LogSigner::from_seed(LEDGER_SEED, ORIGIN).expect("signer").verifier_key()
}

/// A director with its results consumer, over a database, a ledger dir and shared backends.
pub struct Rig {
    pub director: TournamentDirector,
    pub ledger: Arc<Mutex<Ledger>>,
    pub consumer: Option<ConsumerHandle>,
}

impl Rig {
    pub async fn open(db_url: &str, ledger_dir: &Path, shared: &Shared, config: TournamentsConfig) -> Self {
        let store = Store::connect(db_url).await.expect("store");
        let ledger = open_ledger(ledger_dir);
        let director = TournamentDirector::open(
            config,
            store,
            shared.registry(),
            shared.bus(),
            Arc::new(ratings()),
            minter(),
            ledger.clone(),
        )
        .await
        .expect("director opens");
        let consumer = Some(director.start_results());
        Self { director, ledger, consumer }
    }

    /// Waits until every event is in the ledger (appends follow the
    /// database commits that the tests wait on).
    pub async fn caught_up(&self) {
        eventually("the ledger to catch up", || async {
            self.director.store().unlogged(1).await.expect("unlogged").is_empty().then_some(())
        })
        .await;
    }

    /// The ledger's entries once it has caught up.
    pub async fn entries(&self) -> Vec<rally_ledger::entry::Entry> {
        self.caught_up().await;
        ledger_entries(&self.ledger)
    }

    /// Verifies the ledger in `dir` once it has caught up.
    pub async fn verify(&self, dir: &Path, replay: bool) -> rally_ledger::VerifyReport {
        self.caught_up().await;
        verify_ledger_with(dir, replay)
    }

    /// Stops the consumer and drops everything (as a process exit would;
    /// nothing is flushed that a crash would not have).
    pub async fn close(mut self) {
        if let Some(consumer) = self.consumer.take() {
            consumer.stop().await;
        }
        self.director.store().close().await;
    }
}

/// A cup of single elimination, best of 1, seeded by rating.
pub fn cup() -> Rules {
    Rules {
        stages: vec![Stage { format: Format::SingleElimination { third_place: false }, best_of: 1, advance: None }],
        seeding: Seeding::Rating,
    }
}

/// A tournament open for registration and check-in from `now_ms` for a minute.
pub fn create(rules: Rules, max_entrants: u32, now_ms: u64) -> CreateTournament {
    CreateTournament {
        name: "Test Cup".into(),
        rules,
        mode: String::new(),
        max_entrants,
        min_rating: None,
        max_rating: None,
        registration_opens_at_ms: now_ms,
        registration_closes_at_ms: now_ms + 60_000,
        check_in_opens_at_ms: 0,
        check_in_closes_at_ms: 0,
    }
}

/// Creates a tournament, registers and checks in `players`, and seeds it at `now + 60 s`.
pub async fn seeded(director: &TournamentDirector, rules: Rules, players: &[u64], now_ms: u64) -> u64 {
    let view = director.create(100, create(rules, 16, now_ms), now_ms).await.expect("create");
    let id = view.record.id;
    for &player in players {
        director.register(id, player, &format!("p{player}"), now_ms + 1).await.expect("register");
        director.check_in(id, player, now_ms + 2).await.expect("check in");
    }
    let stats = director.tick(now_ms + 60_000).await.expect("tick");
    assert_eq!(stats.seeded, 1, "seeded at the end of check-in");
    id
}

/// How a fake shard ends a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Play {
    /// Played to this score (home, away).
    Score(u32, u32),
    /// The seat never connected while the other did: forfeited.
    NoShow { absent_seat: u8 },
    /// Nobody connected.
    Empty,
}

/// A shard that plays whatever the director scheduled on it, instantly.
pub struct FakeShard {
    pub info: ShardInfo,
    pub registry: Arc<dyn ShardRegistry>,
    pub bus: Arc<dyn ResultsBus>,
    verifier: TokenVerifier,
}

impl FakeShard {
    pub async fn start(shared: &Shared, name: &str, capacity: u32, now_ms: u64) -> Self {
        let info = ShardInfo {
            name: name.into(),
            address: format!("127.0.0.1:{}", 7000 + capacity),
            region: "test".into(),
            capacity,
            version: "test".into(),
            certificate_sha256: "ab".repeat(32),
            incarnation: ShardInfo::new_incarnation(),
        };
        let registry = shared.registry();
        registry.register(&info, SHARD_TTL_MS, now_ms).await.expect("register shard");
        let minter = minter();
        let verifier = TokenVerifier::new(name, [(minter.key_id(), minter.verifying_key())]);
        Self { info, registry, bus: shared.bus(), verifier }
    }

    /// The result `play` gives `row`, after checking its tokens are this
    /// shard's for its seats.
    pub fn result(&self, row: &MatchRow, play: Play, now_ms: u64) -> MatchResult {
        assert_eq!(row.shard, self.info.name, "the match is on this shard");
        for (token, player, seat) in [(&row.home_token, row.home_id, 0), (&row.away_token, row.away_id, 1)] {
            let claims = self.verifier.verify(token, now_ms).expect("the shard accepts the token");
            assert_eq!(
                (claims.player_id, claims.match_id, claims.seat),
                (PlayerId(player), MatchId(row.match_id), seat)
            );
        }
        let seat = |seat: u8, player: u64, present: bool, forfeited: bool| SeatResult {
            seat,
            player_id: present.then_some(PlayerId(player)),
            side: seat,
            forfeited,
        };
        let (seats, scores, winner, reason) = match play {
            Play::Score(home, away) => (
                vec![seat(0, row.home_id, true, false), seat(1, row.away_id, true, false)],
                vec![home, away],
                match home.cmp(&away) {
                    std::cmp::Ordering::Greater => Some(0),
                    std::cmp::Ordering::Less => Some(1),
                    std::cmp::Ordering::Equal => None,
                },
                EndReason::Score,
            ),
            Play::NoShow { absent_seat } => (
                vec![
                    seat(0, row.home_id, absent_seat != 0, absent_seat == 0),
                    seat(1, row.away_id, absent_seat != 1, absent_seat == 1),
                ],
                vec![0, 0],
                Some(1 - absent_seat),
                EndReason::Forfeit,
            ),
            Play::Empty => (
                vec![seat(0, row.home_id, false, false), seat(1, row.away_id, false, false)],
                vec![0, 0],
                None,
                EndReason::Abandoned,
            ),
        };
        MatchResult {
            match_id: MatchId(row.match_id),
            game: "pong".into(),
            shard: self.info.name.clone(),
            seats,
            scores,
            winner,
            reason,
            duration_ticks: 600,
            tick_rate_hz: 60,
            started_at_ms: now_ms,
            ended_at_ms: now_ms + 10_000,
            input_log_digest: String::new(),
        }
    }

    /// Plays `row` for real in Pong (first point wins), choosing the first
    /// seed from which `winner_side` wins, writes its replay file to
    /// `replay_dir` as the shard driver does, and returns its result.
    pub fn replayed(&self, row: &MatchRow, winner_side: u8, replay_dir: &Path, now_ms: u64) -> MatchResult {
        use rally_sim::replay::{InputLog, LogEntry, SeatAction, replay};
        use rally_sim::{LifecycleConfig, MatchSpec, PongWorld};
        let mut result = self.result(row, Play::Score(0, 0), now_ms);
        // Seeds from the match id, so each match has a log of its own.
        for seed in row.match_id % 1_000_000.. {
            let log = InputLog {
                game: "pong".to_owned(),
                spec: MatchSpec { n_seats: 2, points_to_win: 1, time_limit_ticks: 1200 },
                seed,
                lifecycle: LifecycleConfig::default(),
                entries: vec![
                    LogEntry { tick: 0, seat: 0, action: SeatAction::Connect },
                    LogEntry { tick: 0, seat: 1, action: SeatAction::Connect },
                    LogEntry { tick: 70, seat: 0, action: SeatAction::Input(1) },
                ],
                end_tick: 2000,
            };
            let outcome = replay::<PongWorld>(&log).expect("replay").outcome.expect("the match ends within the log");
            if outcome.winner != Some(winner_side) {
                continue;
            }
            std::fs::create_dir_all(replay_dir).expect("replay dir");
            let path = replay_dir.join(format!("{}.replay", MatchId(row.match_id)));
            std::fs::write(path, log.encode().expect("encode")).expect("write replay");
            result.scores = outcome.scores;
            result.winner = outcome.winner;
            result.input_log_digest = hex::encode(log.digest());
            break;
        }
        result
    }

    /// Publishes a result as a shard agent does (settled once per match id)
    /// and frees its slot.
    pub async fn finish(&self, result: &MatchResult) {
        self.bus.settle(result).await.expect("settle");
        self.registry.release(&self.info.name, result.match_id).await.expect("release");
    }
}

/// The tournament's matches in `status`.
pub async fn matches(director: &TournamentDirector, id: u64, status: MatchStatus) -> Vec<MatchRow> {
    let mut rows = director.store().matches(id).await.expect("matches");
    rows.retain(|row| row.status == status);
    rows
}

/// Polls `check` until it returns `Some`, for at most 20 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The entries of the ledger in `dir` (decoded).
pub fn ledger_entries(ledger: &Arc<Mutex<Ledger>>) -> Vec<rally_ledger::entry::Entry> {
    let ledger = ledger.lock().expect("ledger lock");
    ledger
        .entries(0..ledger.size())
        .expect("entries")
        .iter()
        .map(|bytes| rally_ledger::entry::Entry::decode(bytes).expect("canonical entry"))
        .collect()
}

/// Verifies the ledger directory as `rally ledger verify` does.
pub fn verify_ledger(dir: &Path) -> rally_ledger::VerifyReport {
    verify_ledger_with(dir, false)
}

/// Verifies the ledger directory, re-simulating every match with a replay when `replay`.
pub fn verify_ledger_with(dir: &Path, replay: bool) -> rally_ledger::VerifyReport {
    let options = rally_ledger::VerifyOptions { replay, key: Some(ledger_vkey()) };
    rally_ledger::verify(&dir.display().to_string(), &options).expect("the ledger verifies")
}

pub fn ledger_dir(data: &tempfile::TempDir) -> PathBuf {
    data.path().join("ledger")
}
