//! The connection pool: SQLite (a file, created on first run, WAL mode) or
//! PostgreSQL, chosen by URL. Queries use `$N` placeholders and SQL both
//! dialects accept (`RETURNING`, `ON CONFLICT DO NOTHING`), so each query is
//! written once; [`with_tx!`] expands a body once per backend.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::error::LobbyError;

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
                .foreign_keys(true);
            Self::Sqlite(SqlitePoolOptions::new().max_connections(4).connect_with(options).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?;
            Self::Postgres(PgPoolOptions::new().max_connections(16).connect_with(options).await?)
        } else {
            return Err(LobbyError::invalid(
                "database url",
                format!("{url:?} is neither sqlite://<file> nor postgres://…"),
            ));
        };
        db.migrate().await?;
        Ok(db)
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
