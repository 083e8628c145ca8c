//! The connection pool: SQLite (a file, created on first run, WAL mode) or
//! PostgreSQL, chosen by URL. Queries use `$N` placeholders and SQL both
//! dialects accept (`RETURNING`, `ON CONFLICT DO NOTHING`), so each query is
//! written once; [`with_tx!`] expands a body once per backend.
//!
//! Every call fails fast while the database is down or stuck rather than
//! holding the caller: a connection is waited for at most [`ACQUIRE_TIMEOUT`],
//! a PostgreSQL statement runs at most [`STATEMENT_TIMEOUT`], and SQLite waits
//! at most [`SQLITE_BUSY_TIMEOUT`] for a lock. Those failures reach clients as
//! `UNAVAILABLE` with a retry hint (see [`crate::error`]); the pool reconnects
//! on its own once the database is back (each connection is checked before use).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::error::LobbyError;

/// Longest wait for a pooled connection (including connecting a new one).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest a PostgreSQL statement may run (`statement_timeout`, set on every connection).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest SQLite waits for another connection's lock.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(3);

/// `options` with the lobby's statement timeout.
fn pg_options(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("statement_timeout", format!("{}ms", STATEMENT_TIMEOUT.as_millis()))])
}

fn pg_pool(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new().max_connections(max_connections).acquire_timeout(ACQUIRE_TIMEOUT)
}

fn sqlite_pool() -> SqlitePoolOptions {
    SqlitePoolOptions::new().max_connections(4).acquire_timeout(ACQUIRE_TIMEOUT)
}

/// A pool on one of the two supported backends.
#[derive(Debug, Clone)]
pub enum Db {
    /// A SQLite file.
    Sqlite(SqlitePool),
    /// A PostgreSQL server.
    Postgres(PgPool),
}

impl Db {
    /// Connects to `url` (`sqlite://path` or `postgres://…`) and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, LobbyError> {
        let db = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT);
            Self::Sqlite(sqlite_pool().connect_with(options).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = pg_options(PgConnectOptions::from_str(url)?);
            Self::Postgres(pg_pool(16).connect_with(options).await?)
        } else {
            return Err(LobbyError::invalid(
                "database url",
                format!("{:?} is neither sqlite://<file> nor postgres://…", redacted_url(url)),
            ));
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Opens `url` to read, for another service: no migrations, and nothing
    /// created. SQLite opens the existing file read-only (a missing file is
    /// [`LobbyError::NotFound`]); PostgreSQL sessions default to read-only
    /// transactions. Check [`Db::schema_version`] and [`Db::has_table`] before
    /// relying on the tables.
    pub async fn connect_read_only(url: &str) -> Result<Self, LobbyError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .read_only(true)
                .create_if_missing(false)
                .busy_timeout(SQLITE_BUSY_TIMEOUT);
            let path = options.get_filename();
            if !path.exists() {
                return Err(LobbyError::NotFound(format!("there is no SQLite file at {}", path.display())));
            }
            Ok(Self::Sqlite(sqlite_pool().connect_with(options).await?))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options =
                pg_options(PgConnectOptions::from_str(url)?).options([("default_transaction_read_only", "on")]);
            Ok(Self::Postgres(pg_pool(4).connect_with(options).await?))
        } else {
            Err(LobbyError::invalid(
                "database url",
                format!("{:?} is neither sqlite://<file> nor postgres://…", redacted_url(url)),
            ))
        }
    }

    /// The newest migration applied successfully (`0001_lobby.sql` is 1), or
    /// `None` when the lobby never migrated this database.
    pub async fn schema_version(&self) -> Result<Option<i64>, LobbyError> {
        const QUERY: &str = "SELECT MAX(version) FROM _sqlx_migrations WHERE success";
        if !self.has_table("_sqlx_migrations").await? {
            return Ok(None);
        }
        let version = match self {
            Self::Sqlite(pool) => sqlx::query_scalar::<_, Option<i64>>(QUERY).fetch_one(pool).await?,
            Self::Postgres(pool) => sqlx::query_scalar::<_, Option<i64>>(QUERY).fetch_one(pool).await?,
        };
        Ok(version)
    }

    /// Whether `table` exists (on PostgreSQL: in a schema on the search path).
    pub async fn has_table(&self, table: &str) -> Result<bool, LobbyError> {
        let found = match self {
            Self::Sqlite(pool) => {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1")
                    .bind(table)
                    .fetch_one(pool)
                    .await?
                    > 0
            }
            Self::Postgres(pool) => {
                sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL").bind(table).fetch_one(pool).await?
            }
        };
        Ok(found)
    }

    async fn migrate(&self) -> Result<(), LobbyError> {
        match self {
            Self::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
            Self::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// Closes every connection; waits for checked-out ones to come back.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

/// Runs `$body` inside a transaction on whichever backend `$db` is, with
/// `$tx` bound to the transaction. The body evaluates to
/// `Result<T, LobbyError>`; the transaction commits on `Ok` and rolls back on `Err`.
macro_rules! with_tx {
    ($db:expr, |$tx:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite(pool) => {
                // A write lock up front: SQLite cannot upgrade a read transaction
                // without risking SQLITE_BUSY.
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let result: Result<_, $crate::error::LobbyError> = async { $body }.await;
                if result.is_ok() {
                    $tx.commit().await?;
                }
                result
            }
            $crate::db::Db::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let result: Result<_, $crate::error::LobbyError> = async { $body }.await;
                if result.is_ok() {
                    $tx.commit().await?;
                }
                result
            }
        }
    };
}

/// Runs `$body` with `$conn` bound to the pool (no transaction).
macro_rules! with_pool {
    ($db:expr, |$conn:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($conn) => {
                let result: Result<_, $crate::error::LobbyError> = async { $body }.await;
                result
            }
            $crate::db::Db::Postgres($conn) => {
                let result: Result<_, $crate::error::LobbyError> = async { $body }.await;
                result
            }
        }
    };
}

pub(crate) use {with_pool, with_tx};

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redacted_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|idx| idx + 3) else { return url.to_owned() };
    let authority_end = url[scheme_end..].find(['/', '?']).map_or(url.len(), |idx| scheme_end + idx);
    let authority = &url[scheme_end..authority_end];
    let Some(at) = authority.rfind('@') else { return url.to_owned() };
    match authority[..at].find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..scheme_end], &authority[..colon], &url[scheme_end + at..]),
        None => url.to_owned(),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A player or message id as the `BIGINT` the tables store (ids beyond
/// `i64::MAX` saturate, so they match nothing rather than wrap).
pub(crate) fn db_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(redacted_url("postgres://lobby:hunter2@db:5432/lobby"), "postgres://lobby:***@db:5432/lobby");
        assert_eq!(redacted_url("postgres://a:b:c@db/x?sslmode=require"), "postgres://a:***@db/x?sslmode=require");
        assert_eq!(redacted_url("postgres://postgres@127.0.0.1/test"), "postgres://postgres@127.0.0.1/test");
        assert_eq!(redacted_url("sqlite:///var/lib/rally/lobby.db"), "sqlite:///var/lib/rally/lobby.db");
        assert_eq!(redacted_url("not a url"), "not a url");
    }
}
