//! `rally.profile.v1.Profile`: display names, Glicko-2 ratings, match history
//! and the leaderboard. Owns `profiles`, `match_history` and `processed_results`.

use rally_protocol::results::MatchResult;
use skillratings::Outcomes;
use skillratings::glicko2::{Glicko2Config, Glicko2Rating, glicko2_rating_period};
use sqlx::Row as _;
use tonic::{Request, Response, Status};

use crate::db::{Db, now_ms, with_pool, with_tx};
use crate::error::LobbyError;
use crate::proto::profile::{self as pb, profile_server};
use crate::tokens::require_caller;

/// Profile storage and the `MatchResult` consumer.
#[derive(Debug, Clone)]
pub struct ProfileStore {
    db: Db,
}

/// What applying a result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Ratings and history were updated.
    Applied,
    /// This match id was applied before; nothing changed.
    AlreadyApplied,
}

struct RatedPlayer {
    player_id: i64,
    side: u8,
    rating: Glicko2Rating,
}

impl ProfileStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }

    /// Creates `player_id`'s profile with the default rating (Auth calls this on Register).
    pub async fn create_profile(
        &self,
        player_id: u64,
        display_name: &str,
        created_at_ms: i64,
    ) -> Result<(), LobbyError> {
        let initial = Glicko2Rating::new();
        with_pool!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO profiles (account_id, display_name, created_at_ms, rating, deviation, volatility) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(player_id as i64)
            .bind(display_name)
            .bind(created_at_ms)
            .bind(initial.rating)
            .bind(initial.deviation)
            .bind(initial.volatility)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Applies one finished match to ratings, win/loss counts and history,
    /// exactly once per match id: a second delivery of the same result changes
    /// nothing. The `processed_results` marker is written in the same
    /// transaction as the updates, so a crash in between cannot half-apply it.
    /// Seats without a player or without a profile are skipped.
    pub async fn apply_match_result(&self, result: &MatchResult) -> Result<ApplyOutcome, LobbyError> {
        let match_id = result.match_id.0 as i64;
        let ended_at = i64::try_from(result.ended_at_ms).unwrap_or(i64::MAX);
        let config = Glicko2Config::new();
        with_tx!(&self.db, |tx| {
            let inserted = sqlx::query(
                "INSERT INTO processed_results (match_id, processed_at_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(match_id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Ok(ApplyOutcome::AlreadyApplied);
            }
            let mut players = Vec::new();
            for seat in &result.seats {
                let Some(player_id) = seat.player_id else { continue };
                let player_id = player_id.0 as i64;
                let row = sqlx::query("SELECT rating, deviation, volatility FROM profiles WHERE account_id = $1")
                    .bind(player_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    tracing::warn!(player_id, match_id, "match result names a player with no profile; skipped");
                    continue;
                };
                let rating = Glicko2Rating {
                    rating: row.try_get("rating")?,
                    deviation: row.try_get("deviation")?,
                    volatility: row.try_get("volatility")?,
                };
                players.push(RatedPlayer { player_id, side: seat.side, rating });
            }
            for player in &players {
                // Each player's rating period is every opponent on another side.
                let outcome = match result.winner {
                    Some(side) if side == player.side => Outcomes::WIN,
                    Some(_) => Outcomes::LOSS,
                    None => Outcomes::DRAW,
                };
                let opponents: Vec<(Glicko2Rating, Outcomes)> = players
                    .iter()
                    .filter(|other| other.side != player.side)
                    .map(|other| (other.rating, outcome))
                    .collect();
                if opponents.is_empty() {
                    continue;
                }
                let new_rating = glicko2_rating_period(&player.rating, &opponents, &config);
                let (wins, losses, label) = match outcome {
                    Outcomes::WIN => (1_i64, 0_i64, "win"),
                    Outcomes::LOSS => (0, 1, "loss"),
                    Outcomes::DRAW => (0, 0, "draw"),
                };
                sqlx::query(
                    "UPDATE profiles SET rating = $1, deviation = $2, volatility = $3, \
                     wins = wins + $4, losses = losses + $5 WHERE account_id = $6",
                )
                .bind(new_rating.rating)
                .bind(new_rating.deviation)
                .bind(new_rating.volatility)
                .bind(wins)
                .bind(losses)
                .bind(player.player_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO match_history \
                     (account_id, match_id, game, outcome, rating_before, rating_after, ended_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(player.player_id)
                .bind(match_id)
                .bind(&result.game)
                .bind(label)
                .bind(player.rating.rating)
                .bind(new_rating.rating)
                .bind(ended_at)
                .execute(&mut *tx)
                .await?;
            }
            Ok(ApplyOutcome::Applied)
        })
    }

    /// One player's profile.
    pub async fn profile(&self, player_id: u64) -> Result<pb::PlayerProfile, LobbyError> {
        let profile = with_pool!(&self.db, |pool| {
            let row = sqlx::query(
                "SELECT display_name, created_at_ms, rating, deviation, wins, losses \
                 FROM profiles WHERE account_id = $1",
            )
            .bind(player_id as i64)
            .fetch_optional(pool)
            .await?;
            Ok(match row {
                None => None,
                Some(row) => Some(pb::PlayerProfile {
                    player_id,
                    display_name: row.try_get("display_name")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    rating: row.try_get("rating")?,
                    rating_deviation: row.try_get("deviation")?,
                    wins: u32::try_from(row.try_get::<i64, _>("wins")?).unwrap_or(u32::MAX),
                    losses: u32::try_from(row.try_get::<i64, _>("losses")?).unwrap_or(u32::MAX),
                }),
            })
        })?;
        profile.ok_or_else(|| LobbyError::NotFound(format!("no player with id {player_id}")))
    }

    /// A page of `player_id`'s history, newest first.
    pub async fn history(
        &self,
        player_id: u64,
        page_size: u32,
        page_token: &str,
    ) -> Result<pb::MatchHistoryResponse, LobbyError> {
        let page_size = match page_size {
            0 => 20,
            1..=100 => i64::from(page_size),
            _ => return Err(LobbyError::invalid("page_size", "must be at most 100")),
        };
        let (before_ended, before_match) = if page_token.is_empty() {
            (i64::MAX, i64::MAX)
        } else {
            parse_page_token(page_token)
                .ok_or_else(|| LobbyError::invalid("page_token", "not a token from a previous page"))?
        };
        let entries: Vec<(pb::MatchHistoryEntry, i64)> = with_pool!(&self.db, |pool| {
            let rows = sqlx::query(
                "SELECT match_id, game, outcome, rating_before, rating_after, ended_at_ms FROM match_history \
                 WHERE account_id = $1 AND (ended_at_ms < $2 OR (ended_at_ms = $2 AND match_id < $3)) \
                 ORDER BY ended_at_ms DESC, match_id DESC LIMIT $4",
            )
            .bind(player_id as i64)
            .bind(before_ended)
            .bind(before_match)
            .bind(page_size + 1)
            .fetch_all(pool)
            .await?;
            let mut entries = Vec::with_capacity(rows.len());
            for row in rows {
                let match_id: i64 = row.try_get("match_id")?;
                entries.push((
                    pb::MatchHistoryEntry {
                        match_id: match_id as u64,
                        game: row.try_get("game")?,
                        outcome: row.try_get("outcome")?,
                        rating_before: row.try_get("rating_before")?,
                        rating_after: row.try_get("rating_after")?,
                        ended_at_ms: row.try_get("ended_at_ms")?,
                    },
                    match_id,
                ));
            }
            Ok(entries)
        })?;
        let has_more = entries.len() as i64 > page_size;
        let entries: Vec<_> = entries.into_iter().take(page_size as usize).collect();
        let next_page_token = match entries.last() {
            Some((entry, match_id)) if has_more => format!("{}:{}", entry.ended_at_ms, match_id),
            _ => String::new(),
        };
        Ok(pb::MatchHistoryResponse { entries: entries.into_iter().map(|(entry, _)| entry).collect(), next_page_token })
    }

    /// The top `top_n` players, and `rank_of`'s rank when non-zero.
    pub async fn leaderboard(&self, top_n: u32, rank_of: u64) -> Result<pb::LeaderboardResponse, LobbyError> {
        let top_n = match top_n {
            0 => 10,
            1..=100 => i64::from(top_n),
            _ => return Err(LobbyError::invalid("top_n", "must be at most 100")),
        };
        let top = with_pool!(&self.db, |pool| {
            let rows = sqlx::query(
                "SELECT account_id, display_name, rating FROM profiles \
                 ORDER BY rating DESC, account_id ASC LIMIT $1",
            )
            .bind(top_n)
            .fetch_all(pool)
            .await?;
            let mut top = Vec::with_capacity(rows.len());
            for (idx, row) in rows.into_iter().enumerate() {
                top.push(pb::LeaderboardEntry {
                    rank: idx as u64 + 1,
                    player_id: row.try_get::<i64, _>("account_id")? as u64,
                    display_name: row.try_get("display_name")?,
                    rating: row.try_get("rating")?,
                });
            }
            Ok(top)
        })?;
        let player = if rank_of == 0 {
            None
        } else {
            let profile = self.profile(rank_of).await?;
            let ahead: i64 = with_pool!(&self.db, |pool| {
                let row = sqlx::query(
                    "SELECT COUNT(*) AS ahead FROM profiles \
                     WHERE rating > $1 OR (rating = $1 AND account_id < $2)",
                )
                .bind(profile.rating)
                .bind(rank_of as i64)
                .fetch_one(pool)
                .await?;
                Ok(row.try_get("ahead")?)
            })?;
            Some(pb::LeaderboardEntry {
                rank: ahead as u64 + 1,
                player_id: rank_of,
                display_name: profile.display_name,
                rating: profile.rating,
            })
        };
        Ok(pb::LeaderboardResponse { top, player })
    }
}

fn parse_page_token(token: &str) -> Option<(i64, i64)> {
    let (ended, match_id) = token.split_once(':')?;
    Some((ended.parse().ok()?, match_id.parse().ok()?))
}

/// The Profile service (every method needs an access token).
#[derive(Debug, Clone)]
pub struct ProfileService {
    store: ProfileStore,
}

impl ProfileService {
    pub(crate) fn new(store: ProfileStore) -> Self {
        Self { store }
    }
}

fn subject(requested: u64, caller: u64) -> u64 {
    if requested == 0 { caller } else { requested }
}

#[tonic::async_trait]
impl profile_server::Profile for ProfileService {
    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::PlayerProfile>, Status> {
        let (caller, _) = require_caller(&request)?;
        let player_id = subject(request.get_ref().player_id, caller);
        Ok(Response::new(self.store.profile(player_id).await?))
    }

    async fn match_history(
        &self,
        request: Request<pb::MatchHistoryRequest>,
    ) -> Result<Response<pb::MatchHistoryResponse>, Status> {
        let (caller, _) = require_caller(&request)?;
        let request = request.into_inner();
        let player_id = subject(request.player_id, caller);
        Ok(Response::new(self.store.history(player_id, request.page_size, &request.page_token).await?))
    }

    async fn leaderboard(
        &self,
        request: Request<pb::LeaderboardRequest>,
    ) -> Result<Response<pb::LeaderboardResponse>, Status> {
        require_caller(&request)?;
        let request = request.into_inner();
        Ok(Response::new(self.store.leaderboard(request.top_n, request.rank_of).await?))
    }
}
