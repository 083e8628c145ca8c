//! Where player ratings come from: the lobby's profiles in production, a
//! fixed table in tests and benchmarks.

use std::collections::HashMap;

use rally_lobby::db::Db;
use rally_lobby::{LobbyError, ProfileStore};
use rally_protocol::PlayerId;

use crate::error::MatchmakerError;

/// Reads a player's Glicko-2 rating.
#[tonic::async_trait]
pub trait RatingSource: Send + Sync + std::fmt::Debug + 'static {
    /// The player's rating, `None` when they have no profile.
    async fn rating(&self, player: PlayerId) -> Result<Option<f64>, MatchmakerError>;
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

/// The lobby's profile store: the rating the last applied result left.
#[tonic::async_trait]
impl RatingSource for ProfileStore {
    async fn rating(&self, player: PlayerId) -> Result<Option<f64>, MatchmakerError> {
        match self.profile(player.0).await {
            Ok(profile) => Ok(Some(profile.rating)),
            Err(LobbyError::NotFound(_)) => Ok(None),
            Err(err) => Err(MatchmakerError::Ratings(err.to_string())),
        }
    }
}

/// Ratings read straight from the lobby's database (`profiles.rating`), for a
/// matchmaker that runs apart from the lobby: `ProfileStore` can only be made
/// inside the lobby, so this reads the one column it needs and writes nothing.
#[derive(Debug, Clone)]
pub struct LobbyDbRatings {
    db: Db,
}

impl LobbyDbRatings {
    /// Connects to the lobby's database (`sqlite://…` or `postgres://…`).
    pub async fn connect(url: &str) -> Result<Self, MatchmakerError> {
        let db = Db::connect(url).await.map_err(|err| MatchmakerError::Ratings(err.to_string()))?;
        Ok(Self { db })
    }
}

#[tonic::async_trait]
impl RatingSource for LobbyDbRatings {
    async fn rating(&self, player: PlayerId) -> Result<Option<f64>, MatchmakerError> {
        const QUERY: &str = "SELECT rating FROM profiles WHERE account_id = $1";
        let id = player.0 as i64;
        let rating = match &self.db {
            Db::Sqlite(pool) => sqlx::query_scalar::<_, f64>(QUERY).bind(id).fetch_optional(pool).await,
            Db::Postgres(pool) => sqlx::query_scalar::<_, f64>(QUERY).bind(id).fetch_optional(pool).await,
        };
        rating.map_err(|err| MatchmakerError::Ratings(err.to_string()))
    }
}
