//! The tournaments' database: SQLite (a file, the default) or PostgreSQL,
//! chosen by URL, with the same SQL on both (`$N` placeholders, `RETURNING`).
//!
//! Event-sourced: a tournament's bracket is never stored, only its rules, its
//! seeds and its event log ([`EventRecord`]); the bracket is
//! `rally_tournament::replay(rules, seeds, inputs)`. Every event also carries
//! the ledger entry it projects to, and the ledger index once appended, so
//! the ledger is caught up from here after a crash. [`Store::append`] writes
//! a batch of events together with the state changes they cause (match
//! statuses, the tournament's status, entrant states) in one transaction; a
//! match-status change is guarded by its old status, so a result applied
//! twice (a duplicate delivery) fails the guard and writes nothing.
//!
//! Migrations are the crate's own (`tournaments/migrations/`), recorded in
//! `_rally_tournaments_migrations`, so they can share a database with the
//! lobby's.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::error::TournamentError;
use rally_lobby::db::{ACQUIRE_TIMEOUT, SQLITE_BUSY_TIMEOUT, STATEMENT_TIMEOUT, redacted_url};

/// The table the crate's migrations are recorded in.
pub const MIGRATIONS_TABLE: &str = "_rally_tournaments_migrations";

/// Where a tournament is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Registration has not opened yet.
    Created,
    /// Players may register.
    Registration,
    /// Registered players may check in (registration may still be open).
    CheckIn,
    /// Seeded; rounds under way.
    Running,
    /// Every game has a result.
    Finished,
    /// Fewer than two entrants checked in.
    Cancelled,
}

impl Status {
    /// Its name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Registration => "registration",
            Self::CheckIn => "check_in",
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether nothing more happens to it.
    pub fn is_over(self) -> bool {
        matches!(self, Self::Finished | Self::Cancelled)
    }
}

impl FromStr for Status {
    type Err = TournamentError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "created" => Self::Created,
            "registration" => Self::Registration,
            "check_in" => Self::CheckIn,
            "running" => Self::Running,
            "finished" => Self::Finished,
            "cancelled" => Self::Cancelled,
            other => return Err(TournamentError::Internal(format!("unknown tournament status {other:?} stored"))),
        })
    }
}

/// Where an entrant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntrantState {
    /// Registered, not yet checked in.
    Registered,
    /// Checked in: will be seeded.
    CheckedIn,
    /// Withdrew (before seeding, or forfeiting the rest after).
    Withdrawn,
    /// Disqualified by an organiser.
    Disqualified,
    /// Registered but did not check in before seeding: not in the bracket.
    NotCheckedIn,
}

impl EntrantState {
    /// Its name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::CheckedIn => "checked_in",
            Self::Withdrawn => "withdrawn",
            Self::Disqualified => "disqualified",
            Self::NotCheckedIn => "not_checked_in",
        }
    }

    /// Whether the entrant holds a place (registered or checked in).
    pub fn holds_place(self) -> bool {
        matches!(self, Self::Registered | Self::CheckedIn)
    }
}

impl FromStr for EntrantState {
    type Err = TournamentError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "registered" => Self::Registered,
            "checked_in" => Self::CheckedIn,
            "withdrawn" => Self::Withdrawn,
            "disqualified" => Self::Disqualified,
            "not_checked_in" => Self::NotCheckedIn,
            other => return Err(TournamentError::Internal(format!("unknown entrant state {other:?} stored"))),
        })
    }
}

/// What happens to a match on a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchStatus {
    /// Reserved, tokens minted, waiting for its result.
    Scheduled,
    /// Its result counted for its game.
    Counted,
    /// Its shard was lost; the game was scheduled again.
    Lost,
    /// Its deadline passed without a result: counted as a double forfeit.
    Expired,
    /// Its game was decided otherwise (a withdrawal, a correction): ignored.
    Void,
}

impl MatchStatus {
    /// Its name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Counted => "counted",
            Self::Lost => "lost",
            Self::Expired => "expired",
            Self::Void => "void",
        }
    }
}

impl FromStr for MatchStatus {
    type Err = TournamentError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "scheduled" => Self::Scheduled,
            "counted" => Self::Counted,
            "lost" => Self::Lost,
            "expired" => Self::Expired,
            "void" => Self::Void,
            other => return Err(TournamentError::Internal(format!("unknown match status {other:?} stored"))),
        })
    }
}

/// A tournament's settings and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TournamentRecord {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// `rally_tournament::Rules` as JSON.
    pub rules_json: String,
    /// The game mode its matches are played in.
    pub mode: String,
    /// Most entrants.
    pub max_entrants: u32,
    /// Lowest rating admitted.
    pub min_rating: Option<i32>,
    /// Highest rating admitted.
    pub max_rating: Option<i32>,
    /// Registration window, Unix ms: `[opens, closes)`.
    pub registration_opens_at_ms: u64,
    /// See `registration_opens_at_ms`.
    pub registration_closes_at_ms: u64,
    /// Check-in window, Unix ms: `[opens, closes)`; seeding at `closes`.
    pub check_in_opens_at_ms: u64,
    /// See `check_in_opens_at_ms`.
    pub check_in_closes_at_ms: u64,
    /// Where it is.
    pub status: Status,
    /// Who created it.
    pub organiser_id: u64,
    /// When, Unix ms.
    pub created_at_ms: u64,
    /// `Vec<rally_tournament::Entrant>` in seed order as JSON, once locked.
    pub seeds_json: Option<String>,
}

/// One entrant of a tournament.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrantRecord {
    /// The player.
    pub player_id: u64,
    /// Their display name.
    pub display_name: String,
    /// Their rating at registration.
    pub rating: i32,
    /// Where they stand.
    pub state: EntrantState,
    /// When they (last) registered, Unix ms.
    pub registered_at_ms: u64,
}

/// One event of a tournament's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Global order of events (the ledger's order).
    pub id: i64,
    /// The tournament.
    pub tournament_id: u64,
    /// Its place in the tournament's log, from 0.
    pub seq: u64,
    /// `rally_tournament::Input` JSON, for events that change the bracket.
    pub input_json: Option<String>,
    /// `rally_ledger::entry::Entry` JSON.
    pub entry_json: String,
    /// The match whose result this is.
    pub match_id: Option<u64>,
    /// Its ledger index once appended.
    pub ledger_index: Option<u64>,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// `rally_tournament::Input` JSON, if it changes the bracket.
    pub input_json: Option<String>,
    /// `rally_ledger::entry::Entry` JSON.
    pub entry_json: String,
    /// The counted match, for results.
    pub match_id: Option<u64>,
}

/// A match scheduled on a shard for one game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRow {
    /// The match.
    pub match_id: u64,
    /// The tournament.
    pub tournament_id: u64,
    /// `rally_tournament::GameKey` JSON.
    pub game_key_json: String,
    /// 1, or 2 after a lost shard.
    pub attempt: u32,
    /// The shard's name.
    pub shard: String,
    /// Its QUIC address.
    pub shard_address: String,
    /// Its certificate's SHA-256, hex.
    pub certificate_sha256: String,
    /// Home (seat 0, side 0).
    pub home_id: u64,
    /// Away (seat 1, side 1).
    pub away_id: u64,
    /// Home's connect token.
    pub home_token: Vec<u8>,
    /// Away's connect token.
    pub away_token: Vec<u8>,
    /// When the tokens were minted, Unix ms.
    pub issued_at_ms: u64,
    /// When the tokens expire, Unix ms.
    pub token_expires_at_ms: u64,
    /// When it counts as a double forfeit without a result, Unix ms.
    pub deadline_ms: u64,
    /// Where it is.
    pub status: MatchStatus,
}

/// State changes committed with a batch of events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The tournament's new status.
    pub status: Option<Status>,
    /// The seeds, when locking entrants.
    pub seeds_json: Option<String>,
    /// A match status change `(match, from, to)`, made first: unless it
    /// finds the match in `from`, nothing is written ([`Appended::Stale`]).
    pub guard: Option<(u64, MatchStatus, MatchStatus)>,
    /// Entrant state changes.
    pub entrants: Vec<(u64, EntrantState)>,
}

/// What [`Store::append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Written, with these global event ids.
    Written(Vec<i64>),
    /// A match was not in the expected status (already counted: a
    /// duplicate): nothing was written.
    Stale,
}

/// A pool on one of the two supported backends.
#[derive(Debug, Clone)]
pub enum Db {
    /// A SQLite file.
    Sqlite(SqlitePool),
    /// A PostgreSQL server.
    Postgres(PgPool),
}

/// Runs `$body` once per backend with `$pool` bound to the pool.
macro_rules! with_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` in a transaction (`$tx`) once per backend; commits on `Ok`.
macro_rules! with_tx {
    ($db:expr, |$tx:ident| $body:expr) => {
        match $db {
            Db::Sqlite(pool) => {
                // A write lock up front: SQLite cannot upgrade a read transaction
                // without risking SQLITE_BUSY.
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let result: Result<_, TournamentError> = async { $body }.await;
                if result.is_ok() {
                    $tx.commit().await?;
                }
                result
            }
            Db::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let result: Result<_, TournamentError> = async { $body }.await;
                if result.is_ok() {
                    $tx.commit().await?;
                }
                result
            }
        }
    };
}

/// An id or time as the `BIGINT` the tables store (values past `i64::MAX`
/// saturate, so they match nothing rather than wrap).
fn db_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

type TournamentTuple =
    (i64, String, String, String, i64, Option<i64>, Option<i64>, i64, i64, i64, i64, String, i64, i64, Option<String>);

const TOURNAMENT_COLUMNS: &str = "id, name, rules, mode, max_entrants, min_rating, max_rating, \
     registration_opens_at_ms, registration_closes_at_ms, check_in_opens_at_ms, check_in_closes_at_ms, status, \
     organiser_id, created_at_ms, seeds";

fn tournament(row: TournamentTuple) -> Result<TournamentRecord, TournamentError> {
    let rating =
        |value: Option<i64>| value.map(|v| i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX }));
    Ok(TournamentRecord {
        id: from_db(row.0),
        name: row.1,
        rules_json: row.2,
        mode: row.3,
        max_entrants: u32::try_from(row.4).unwrap_or(0),
        min_rating: rating(row.5),
        max_rating: rating(row.6),
        registration_opens_at_ms: from_db(row.7),
        registration_closes_at_ms: from_db(row.8),
        check_in_opens_at_ms: from_db(row.9),
        check_in_closes_at_ms: from_db(row.10),
        status: row.11.parse()?,
        organiser_id: from_db(row.12),
        created_at_ms: from_db(row.13),
        seeds_json: row.14,
    })
}

type EntrantTuple = (i64, String, i64, String, i64);

fn entrant(row: EntrantTuple) -> Result<EntrantRecord, TournamentError> {
    Ok(EntrantRecord {
        player_id: from_db(row.0),
        display_name: row.1,
        rating: i32::try_from(row.2).unwrap_or(0),
        state: row.3.parse()?,
        registered_at_ms: from_db(row.4),
    })
}

type EventTuple = (i64, i64, i64, Option<String>, String, Option<i64>, Option<i64>, i64);

const EVENT_COLUMNS: &str = "id, tournament_id, seq, input, entry, match_id, ledger_index, at_ms";

fn event(row: EventTuple) -> EventRecord {
    EventRecord {
        id: row.0,
        tournament_id: from_db(row.1),
        seq: from_db(row.2),
        input_json: row.3,
        entry_json: row.4,
        match_id: row.5.map(from_db),
        ledger_index: row.6.map(from_db),
        at_ms: from_db(row.7),
    }
}

type MatchTuple = (i64, i64, String, i64, String, String, String, i64, i64, String, String, i64, i64, i64, String);

const MATCH_COLUMNS: &str = "match_id, tournament_id, game_key, attempt, shard, shard_address, certificate_sha256, \
     home_id, away_id, home_token, away_token, issued_at_ms, token_expires_at_ms, deadline_ms, status";

fn match_row(row: MatchTuple) -> Result<MatchRow, TournamentError> {
    let token =
        |text: &str| hex::decode(text).map_err(|_| TournamentError::Internal("a stored token is not hex".into()));
    Ok(MatchRow {
        match_id: from_db(row.0),
        tournament_id: from_db(row.1),
        game_key_json: row.2,
        attempt: u32::try_from(row.3).unwrap_or(1),
        shard: row.4,
        shard_address: row.5,
        certificate_sha256: row.6,
        home_id: from_db(row.7),
        away_id: from_db(row.8),
        home_token: token(&row.9)?,
        away_token: token(&row.10)?,
        issued_at_ms: from_db(row.11),
        token_expires_at_ms: from_db(row.12),
        deadline_ms: from_db(row.13),
        status: row.14.parse()?,
    })
}

/// A new tournament's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTournament {
    /// Its name.
    pub name: String,
    /// `rally_tournament::Rules` JSON.
    pub rules_json: String,
    /// Game mode.
    pub mode: String,
    /// Most entrants.
    pub max_entrants: u32,
    /// Lowest rating admitted.
    pub min_rating: Option<i32>,
    /// Highest rating admitted.
    pub max_rating: Option<i32>,
    /// Windows, Unix ms.
    pub registration_opens_at_ms: u64,
    /// See above.
    pub registration_closes_at_ms: u64,
    /// See above.
    pub check_in_opens_at_ms: u64,
    /// See above.
    pub check_in_closes_at_ms: u64,
    /// Its first status.
    pub status: Status,
    /// Its creator.
    pub organiser_id: u64,
    /// When, Unix ms.
    pub created_at_ms: u64,
}

/// The tournaments' database.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Connects to `url` (`sqlite://path`, created if missing, or
    /// `postgres://…`) and runs the crate's migrations.
    pub async fn connect(url: &str) -> Result<Self, TournamentError> {
        let db = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT);
            Db::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await?,
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?
                .options([("statement_timeout", format!("{}ms", STATEMENT_TIMEOUT.as_millis()))]);
            Db::Postgres(
                PgPoolOptions::new().max_connections(8).acquire_timeout(ACQUIRE_TIMEOUT).connect_with(options).await?,
            )
        } else {
            return Err(TournamentError::invalid(
                "database url",
                format!("{:?} is neither sqlite://<file> nor postgres://…", redacted_url(url)),
            ));
        };
        let store = Self { db };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), TournamentError> {
        match &self.db {
            Db::Sqlite(pool) => {
                let mut migrator = sqlx::migrate!("./migrations/sqlite");
                migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
                migrator.run(pool).await?;
            }
            Db::Postgres(pool) => {
                let mut migrator = sqlx::migrate!("./migrations/postgres");
                migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
                migrator.run(pool).await?;
            }
        }
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        with_pool!(&self.db, |pool| pool.close().await);
    }

    /// Creates a tournament and its first event (`first_entry(id)` gives the
    /// ledger entry JSON, which names the id); returns the id.
    pub async fn create(
        &self,
        new: &NewTournament,
        first_entry: impl FnOnce(u64) -> Result<String, TournamentError> + Send,
    ) -> Result<u64, TournamentError> {
        const INSERT: &str = "INSERT INTO tournaments (name, rules, mode, max_entrants, min_rating, max_rating, \
             registration_opens_at_ms, registration_closes_at_ms, check_in_opens_at_ms, check_in_closes_at_ms, status, \
             organiser_id, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id";
        const EVENT: &str =
            "INSERT INTO events (tournament_id, seq, input, entry, match_id, at_ms) VALUES ($1, 0, NULL, $2, NULL, $3)";
        with_tx!(&self.db, |tx| {
            let id: i64 = sqlx::query_scalar(INSERT)
                .bind(&new.name)
                .bind(&new.rules_json)
                .bind(&new.mode)
                .bind(i64::from(new.max_entrants))
                .bind(new.min_rating.map(i64::from))
                .bind(new.max_rating.map(i64::from))
                .bind(db_int(new.registration_opens_at_ms))
                .bind(db_int(new.registration_closes_at_ms))
                .bind(db_int(new.check_in_opens_at_ms))
                .bind(db_int(new.check_in_closes_at_ms))
                .bind(new.status.as_str())
                .bind(db_int(new.organiser_id))
                .bind(db_int(new.created_at_ms))
                .fetch_one(&mut *tx)
                .await?;
            let entry = first_entry(from_db(id))?;
            sqlx::query(EVENT).bind(id).bind(entry).bind(db_int(new.created_at_ms)).execute(&mut *tx).await?;
            Ok(from_db(id))
        })
    }

    /// One tournament.
    pub async fn tournament(&self, id: u64) -> Result<Option<TournamentRecord>, TournamentError> {
        let query = sqlx::AssertSqlSafe(format!("SELECT {TOURNAMENT_COLUMNS} FROM tournaments WHERE id = $1"));
        let row: Option<TournamentTuple> =
            with_pool!(&self.db, |pool| { sqlx::query_as(query).bind(db_int(id)).fetch_optional(pool).await? });
        row.map(tournament).transpose()
    }

    /// Tournaments not finished or cancelled, oldest first.
    pub async fn active(&self) -> Result<Vec<TournamentRecord>, TournamentError> {
        let query = sqlx::AssertSqlSafe(format!(
            "SELECT {TOURNAMENT_COLUMNS} FROM tournaments WHERE status NOT IN ('finished', 'cancelled') ORDER BY id"
        ));
        let rows: Vec<TournamentTuple> = with_pool!(&self.db, |pool| sqlx::query_as(query).fetch_all(pool).await?);
        rows.into_iter().map(tournament).collect()
    }

    /// Up to `limit` tournaments with ids below `before` (all when `None`),
    /// newest first, in `statuses` (all when empty).
    pub async fn list(
        &self,
        before: Option<u64>,
        statuses: &[Status],
        limit: u32,
    ) -> Result<Vec<TournamentRecord>, TournamentError> {
        let filter = if statuses.is_empty() {
            String::new()
        } else {
            // The names come from `Status::as_str`, never from the caller.
            let names: Vec<String> = statuses.iter().map(|status| format!("'{}'", status.as_str())).collect();
            format!(" AND status IN ({})", names.join(", "))
        };
        let query = sqlx::AssertSqlSafe(format!(
            "SELECT {TOURNAMENT_COLUMNS} FROM tournaments WHERE id < $1{filter} ORDER BY id DESC LIMIT $2"
        ));
        let before = before.map_or(i64::MAX, db_int);
        let rows: Vec<TournamentTuple> = with_pool!(&self.db, |pool| {
            sqlx::query_as(query).bind(before).bind(i64::from(limit)).fetch_all(pool).await?
        });
        rows.into_iter().map(tournament).collect()
    }

    /// A tournament's entrants in registration order (ties by player id).
    pub async fn entrants(&self, tournament_id: u64) -> Result<Vec<EntrantRecord>, TournamentError> {
        const QUERY: &str = "SELECT player_id, display_name, rating, state, registered_at_ms FROM entrants \
             WHERE tournament_id = $1 ORDER BY registered_at_ms, player_id";
        let rows: Vec<EntrantTuple> =
            with_pool!(&self.db, |pool| { sqlx::query_as(QUERY).bind(db_int(tournament_id)).fetch_all(pool).await? });
        rows.into_iter().map(entrant).collect()
    }

    /// Registers (or re-registers) an entrant, if the tournament has a free
    /// place; `false` when it is full (counted inside the transaction).
    pub async fn register(
        &self,
        tournament_id: u64,
        max_entrants: u32,
        entrant: &EntrantRecord,
    ) -> Result<bool, TournamentError> {
        const COUNT: &str = "SELECT COUNT(*) FROM entrants WHERE tournament_id = $1 AND player_id <> $2 \
             AND state IN ('registered', 'checked_in')";
        const UPSERT: &str = "INSERT INTO entrants (tournament_id, player_id, display_name, rating, state, \
             registered_at_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tournament_id, player_id) DO UPDATE SET \
             display_name = excluded.display_name, rating = excluded.rating, state = excluded.state, \
             registered_at_ms = excluded.registered_at_ms";
        with_tx!(&self.db, |tx| {
            let taken: i64 = sqlx::query_scalar(COUNT)
                .bind(db_int(tournament_id))
                .bind(db_int(entrant.player_id))
                .fetch_one(&mut *tx)
                .await?;
            if taken >= i64::from(max_entrants) {
                return Ok(false);
            }
            sqlx::query(UPSERT)
                .bind(db_int(tournament_id))
                .bind(db_int(entrant.player_id))
                .bind(&entrant.display_name)
                .bind(i64::from(entrant.rating))
                .bind(entrant.state.as_str())
                .bind(db_int(entrant.registered_at_ms))
                .execute(&mut *tx)
                .await?;
            Ok(true)
        })
    }

    /// Sets an entrant's state (before seeding: no event); `false` when
    /// there is no such entrant.
    pub async fn set_entrant_state(
        &self,
        tournament_id: u64,
        player_id: u64,
        state: EntrantState,
    ) -> Result<bool, TournamentError> {
        const UPDATE: &str = "UPDATE entrants SET state = $3 WHERE tournament_id = $1 AND player_id = $2";
        let affected = with_pool!(&self.db, |pool| {
            sqlx::query(UPDATE)
                .bind(db_int(tournament_id))
                .bind(db_int(player_id))
                .bind(state.as_str())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(affected == 1)
    }

    /// Sets a tournament's status with no event (registration opening).
    pub async fn set_status(&self, tournament_id: u64, status: Status) -> Result<(), TournamentError> {
        const UPDATE: &str = "UPDATE tournaments SET status = $2 WHERE id = $1";
        with_pool!(&self.db, |pool| {
            sqlx::query(UPDATE).bind(db_int(tournament_id)).bind(status.as_str()).execute(pool).await?.rows_affected()
        });
        Ok(())
    }

    /// A tournament's events in order.
    pub async fn events(&self, tournament_id: u64) -> Result<Vec<EventRecord>, TournamentError> {
        let query =
            sqlx::AssertSqlSafe(format!("SELECT {EVENT_COLUMNS} FROM events WHERE tournament_id = $1 ORDER BY seq"));
        let rows: Vec<EventTuple> =
            with_pool!(&self.db, |pool| { sqlx::query_as(query).bind(db_int(tournament_id)).fetch_all(pool).await? });
        Ok(rows.into_iter().map(event).collect())
    }

    /// Appends `events` to a tournament's log with `changes`, in one
    /// transaction (see [`Changes::guard`]).
    pub async fn append(
        &self,
        tournament_id: u64,
        events: &[NewEvent],
        changes: &Changes,
        now_ms: u64,
    ) -> Result<Appended, TournamentError> {
        const GUARD: &str = "UPDATE matches SET status = $3 WHERE match_id = $1 AND status = $2";
        const NEXT_SEQ: &str = "SELECT COALESCE(MAX(seq) + 1, 0) FROM events WHERE tournament_id = $1";
        const EVENT: &str = "INSERT INTO events (tournament_id, seq, input, entry, match_id, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
        const STATUS: &str = "UPDATE tournaments SET status = $2 WHERE id = $1";
        const SEEDS: &str = "UPDATE tournaments SET seeds = $2 WHERE id = $1";
        const ENTRANT: &str = "UPDATE entrants SET state = $3 WHERE tournament_id = $1 AND player_id = $2";
        with_tx!(&self.db, |tx| {
            if let Some((match_id, from, to)) = &changes.guard {
                let affected = sqlx::query(GUARD)
                    .bind(db_int(*match_id))
                    .bind(from.as_str())
                    .bind(to.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if affected != 1 {
                    // The guard is the first statement: nothing has been written.
                    return Ok(Appended::Stale);
                }
            }
            let mut seq: i64 = sqlx::query_scalar(NEXT_SEQ).bind(db_int(tournament_id)).fetch_one(&mut *tx).await?;
            let mut ids = Vec::with_capacity(events.len());
            for event in events {
                let id: i64 = sqlx::query_scalar(EVENT)
                    .bind(db_int(tournament_id))
                    .bind(seq)
                    .bind(event.input_json.as_deref())
                    .bind(&event.entry_json)
                    .bind(event.match_id.map(db_int))
                    .bind(db_int(now_ms))
                    .fetch_one(&mut *tx)
                    .await?;
                ids.push(id);
                seq += 1;
            }
            if let Some(status) = changes.status {
                sqlx::query(STATUS).bind(db_int(tournament_id)).bind(status.as_str()).execute(&mut *tx).await?;
            }
            if let Some(seeds) = &changes.seeds_json {
                sqlx::query(SEEDS).bind(db_int(tournament_id)).bind(seeds).execute(&mut *tx).await?;
            }
            for (player_id, state) in &changes.entrants {
                sqlx::query(ENTRANT)
                    .bind(db_int(tournament_id))
                    .bind(db_int(*player_id))
                    .bind(state.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(Appended::Written(ids))
        })
    }

    /// Records a scheduled match.
    pub async fn insert_match(&self, row: &MatchRow) -> Result<(), TournamentError> {
        let query = sqlx::AssertSqlSafe(format!(
            "INSERT INTO matches ({MATCH_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
             $14, $15)"
        ));
        with_pool!(&self.db, |pool| {
            sqlx::query(query)
                .bind(db_int(row.match_id))
                .bind(db_int(row.tournament_id))
                .bind(&row.game_key_json)
                .bind(i64::from(row.attempt))
                .bind(&row.shard)
                .bind(&row.shard_address)
                .bind(&row.certificate_sha256)
                .bind(db_int(row.home_id))
                .bind(db_int(row.away_id))
                .bind(hex::encode(&row.home_token))
                .bind(hex::encode(&row.away_token))
                .bind(db_int(row.issued_at_ms))
                .bind(db_int(row.token_expires_at_ms))
                .bind(db_int(row.deadline_ms))
                .bind(row.status.as_str())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Forgets a match that was never reserved on its shard.
    pub async fn delete_match(&self, match_id: u64) -> Result<(), TournamentError> {
        const DELETE: &str = "DELETE FROM matches WHERE match_id = $1 AND status = 'scheduled'";
        with_pool!(&self.db, |pool| sqlx::query(DELETE).bind(db_int(match_id)).execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Sets a match's status if it is in `from`; `false` if it was not.
    pub async fn set_match_status(
        &self,
        match_id: u64,
        from: MatchStatus,
        to: MatchStatus,
    ) -> Result<bool, TournamentError> {
        const GUARD: &str = "UPDATE matches SET status = $3 WHERE match_id = $1 AND status = $2";
        let affected = with_pool!(&self.db, |pool| {
            sqlx::query(GUARD)
                .bind(db_int(match_id))
                .bind(from.as_str())
                .bind(to.as_str())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(affected == 1)
    }

    /// One match.
    pub async fn match_row(&self, match_id: u64) -> Result<Option<MatchRow>, TournamentError> {
        let query = sqlx::AssertSqlSafe(format!("SELECT {MATCH_COLUMNS} FROM matches WHERE match_id = $1"));
        let row: Option<MatchTuple> =
            with_pool!(&self.db, |pool| { sqlx::query_as(query).bind(db_int(match_id)).fetch_optional(pool).await? });
        row.map(match_row).transpose()
    }

    /// A tournament's matches, in the order they were scheduled.
    pub async fn matches(&self, tournament_id: u64) -> Result<Vec<MatchRow>, TournamentError> {
        let query = sqlx::AssertSqlSafe(format!(
            "SELECT {MATCH_COLUMNS} FROM matches WHERE tournament_id = $1 ORDER BY issued_at_ms, match_id"
        ));
        let rows: Vec<MatchTuple> =
            with_pool!(&self.db, |pool| { sqlx::query_as(query).bind(db_int(tournament_id)).fetch_all(pool).await? });
        rows.into_iter().map(match_row).collect()
    }

    /// Up to `limit` events not yet in the ledger, in global order.
    pub async fn unlogged(&self, limit: u32) -> Result<Vec<EventRecord>, TournamentError> {
        let query = sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE ledger_index IS NULL ORDER BY id LIMIT $1"
        ));
        let rows: Vec<EventTuple> =
            with_pool!(&self.db, |pool| { sqlx::query_as(query).bind(i64::from(limit)).fetch_all(pool).await? });
        Ok(rows.into_iter().map(event).collect())
    }

    /// Events already in the ledger.
    pub async fn logged_count(&self) -> Result<u64, TournamentError> {
        const QUERY: &str = "SELECT COUNT(*) FROM events WHERE ledger_index IS NOT NULL";
        let count: i64 = with_pool!(&self.db, |pool| sqlx::query_scalar(QUERY).fetch_one(pool).await?);
        Ok(from_db(count))
    }

    /// Records where events went in the ledger: `(event id, ledger index)`.
    pub async fn set_logged(&self, placed: &[(i64, u64)]) -> Result<(), TournamentError> {
        const UPDATE: &str = "UPDATE events SET ledger_index = $2 WHERE id = $1 AND ledger_index IS NULL";
        with_tx!(&self.db, |tx| {
            for (id, index) in placed {
                sqlx::query(UPDATE).bind(*id).bind(db_int(*index)).execute(&mut *tx).await?;
            }
            Ok(())
        })
    }

    /// The ledger index of the counted result of `match_id`.
    pub async fn result_ledger_index(&self, match_id: u64) -> Result<Option<(u64, Option<u64>)>, TournamentError> {
        const QUERY: &str = "SELECT tournament_id, ledger_index FROM events WHERE match_id = $1";
        let row: Option<(i64, Option<i64>)> =
            with_pool!(&self.db, |pool| { sqlx::query_as(QUERY).bind(db_int(match_id)).fetch_optional(pool).await? });
        Ok(row.map(|(tournament, index)| (from_db(tournament), index.map(from_db))))
    }
}
