//! Where player ratings come from: the lobby's profiles in production, a
//! fixed table in tests and benchmarks.

use std::collections::HashMap;

use rally_lobby::db::{Db, redacted_url};
use rally_lobby::{LobbyError, ProfileStore};
use rally_protocol::PlayerId;

use crate::error::MatchmakerError;

/// Reads a player's Glicko-2 rating.
#[tonic::async_trait]
pub trait RatingSource: Send + Sync + std::fmt::Debug + 'static {
    /// The player's rating, `None` when they have no profile. A source that
    /// knows the accounts refuses a player whose account no longer exists
    /// with [`MatchmakerError::Unauthenticated`]: their access token outlived
    /// the account, and Enqueue must not queue it.
    async fn rating(&self, player: PlayerId) -> Result<Option<f64>, MatchmakerError>;
}

/// The refusal for a token whose account is gone.
fn account_gone(player: PlayerId) -> MatchmakerError {
    MatchmakerError::Unauthenticated(format!("account {} no longer exists; log in again", player.0))
}

/// Ratings from a table; players not in it have none.
#[derive(Debug, Clone, Default)]
pub struct FixedRatings {
    ratings: HashMap<PlayerId, f64>,
}

impl FixedRatings {
    /// A table of ratings.
    pub fn new(ratings: impl IntoIterator<Item = (PlayerId, f64)>) -> Self {
        Self { ratings: ratings.into_iter().collect() }
    }
}

#[tonic::async_trait]
impl RatingSource for FixedRatings {
    async fn rating(&self, player: PlayerId) -> Result<Option<f64>, MatchmakerError> {
        Ok(self.ratings.get(&player).copied())
    }
}

/// The lobby's profile store: the rating the last applied result left. Every
/// account gets its profile when it registers, so a player without one has
/// no account (any more).
#[tonic::async_trait]
impl RatingSource for ProfileStore {
    async fn rating(&self, player: PlayerId) -> Result<Option<f64>, MatchmakerError> {
        match self.profile(player.0).await {
            Ok(profile) => Ok(Some(profile.rating)),
            Err(LobbyError::NotFound(_)) => Err(account_gone(player)),
            Err(err) => Err(MatchmakerError::Ratings(err.to_string())),
        }
    }
}

/// The lobby migration that made `profiles.rating`, the one column
/// [`LobbyDbRatings`] reads (`lobby/migrations/*/0001_lobby.sql`).
pub const MIN_LOBBY_SCHEMA_VERSION: i64 = 1;

/// Ratings read straight from the lobby's database (`profiles.rating`), for a
/// matchmaker that runs apart from the lobby: `ProfileStore` can only be made
/// inside the lobby, so this reads the one column it needs (and whether the
/// account still exists, `accounts.id`) and writes nothing.
/// The lobby owns that database: this neither creates nor migrates it.
#[derive(Debug, Clone)]
pub struct LobbyDbRatings {
    db: Db,
}

impl LobbyDbRatings {
    /// Opens the lobby's database (`sqlite://…` or `postgres://…`) read-only
    /// and checks that the lobby has made its tables there; fails with
    /// [`MatchmakerError::LobbyDatabase`], saying what to do, when it has not.
    pub async fn connect(url: &str) -> Result<Self, MatchmakerError> {
        let shown = redacted_url(url);
        let problem =
            |problem: String| MatchmakerError::LobbyDatabase(format!("the lobby's database at {shown} {problem}"));
        let db = match Db::connect_read_only(url).await {
            Ok(db) => db,
            Err(LobbyError::NotFound(missing)) => {
                return Err(problem(format!(
                    "does not exist ({missing}): start the lobby first, which creates it, or pass the \
                     --lobby-database-url the lobby uses"
                )));
            }
            Err(err) => return Err(problem(format!("cannot be opened to read: {err}"))),
        };
        let checked = Self::check_schema(&db).await.map_err(problem);
        if checked.is_err() {
            db.close().await;
        }
        checked.map(|()| Self { db })
    }

    async fn check_schema(db: &Db) -> Result<(), String> {
        let unreadable = |err: LobbyError| format!("cannot be read: {err}");
        let version = db.schema_version().await.map_err(unreadable)?;
        let has_profiles = db.has_table("profiles").await.map_err(unreadable)?;
        schema_problem(version, has_profiles, MIN_LOBBY_SCHEMA_VERSION).map_or(Ok(()), Err)
    }
}

/// What is wrong with a lobby database at schema `version` (`None`: never
/// migrated) for a reader that needs `min_version`, if anything.
fn schema_problem(version: Option<i64>, has_profiles: bool, min_version: i64) -> Option<String> {
    match version {
        None if !has_profiles => {
            Some("has no profiles table: start the lobby first, which creates its tables there".to_owned())
        }
        None => Some(
            "has a profiles table but no lobby migrations (_sqlx_migrations): it is not a database the lobby \
             made; pass the --lobby-database-url the lobby uses"
                .to_owned(),
        ),
        Some(version) if version < min_version => Some(format!(
            "has schema version {version}, older than {min_version}, which this matchmaker reads: start the \
             lobby of this release once so that it migrates"
        )),
        Some(_) if !has_profiles => Some(
            "has lobby migrations but no profiles table (on PostgreSQL, check the search_path in the URL)".to_owned(),
        ),
        Some(_) => None,
    }
}

#[tonic::async_trait]
impl RatingSource for LobbyDbRatings {
    async fn rating(&self, player: PlayerId) -> Result<Option<f64>, MatchmakerError> {
        // One row per existing account; its rating is NULL without a profile.
        const QUERY: &str =
            "SELECT p.rating FROM accounts a LEFT JOIN profiles p ON p.account_id = a.id WHERE a.id = $1";
        let id = i64::try_from(player.0).unwrap_or(i64::MAX);
        let row = match &self.db {
            Db::Sqlite(pool) => sqlx::query_scalar::<_, Option<f64>>(QUERY).bind(id).fetch_optional(pool).await,
            Db::Postgres(pool) => sqlx::query_scalar::<_, Option<f64>>(QUERY).bind(id).fetch_optional(pool).await,
        };
        match row.map_err(|err| MatchmakerError::Ratings(err.to_string()))? {
            Some(rating) => Ok(rating),
            None => Err(account_gone(player)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_is_refused_when_absent_foreign_or_too_old() {
        let problem = |version, has_profiles| schema_problem(version, has_profiles, 2).unwrap_or_default();
        assert!(problem(None, false).contains("has no profiles table: start the lobby first"));
        assert!(problem(None, true).contains("not a database the lobby made"));
        assert!(problem(Some(1), true).contains("has schema version 1, older than 2"));
        assert!(problem(Some(2), false).contains("no profiles table"));
        assert_eq!(schema_problem(Some(2), true, 2), None);
        assert_eq!(schema_problem(Some(3), true, 2), None, "a newer lobby is fine");
    }
}
