//! `rally.profile.v1.Profile`: display names, Glicko-2 ratings, match history
//! and the leaderboard. Owns `profiles`, `match_history` and `processed_results`.
//! Pages use the lobby's one page-token format (`page_token.rs`), bound to the
//! query that made them.

use rally_protocol::results::MatchResult;
use skillratings::Outcomes;
use skillratings::glicko2::{Glicko2Config, Glicko2Rating, glicko2_rating_period};
use sqlx::Row as _;
use tonic::{Request, Response, Status};

use crate::auth::check_username;
use crate::db::{Db, db_id, now_ms, with_pool, with_tx};
use crate::error::LobbyError;
use crate::page_token;
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

/// A player's rating and its version ([`ProfileStore::rating_state`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatingState {
    /// Glicko-2 rating.
    pub rating: f64,
    /// Glicko-2 rating deviation.
    pub deviation: f64,
    /// Glicko-2 volatility.
    pub volatility: f64,
    /// Rated matches applied to the player so far: grows by one with every
    /// rating change, so it orders the player's ratings.
    pub rated_games: u64,
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
        profile.ok_or_else(|| no_player(player_id))
    }

    /// `player_id`'s Glicko-2 rating with its per-player version (the rated
    /// matches applied so far, counted in `match_history`), read in one
    /// statement so the two always agree; `None` without a profile. The
    /// results consumer publishes this after each result it applies, and the
    /// matchmaker's read model keeps the highest version per player.
    pub async fn rating_state(&self, player_id: u64) -> Result<Option<RatingState>, LobbyError> {
        with_pool!(&self.db, |pool| {
            let row = sqlx::query(
                "SELECT p.rating, p.deviation, p.volatility, \
                 (SELECT COUNT(*) FROM match_history h WHERE h.account_id = p.account_id) AS rated_games \
                 FROM profiles p WHERE p.account_id = $1",
            )
            .bind(db_id(player_id))
            .fetch_optional(pool)
            .await?;
            Ok(match row {
                None => None,
                Some(row) => Some(RatingState {
                    rating: row.try_get("rating")?,
                    deviation: row.try_get("deviation")?,
                    volatility: row.try_get("volatility")?,
                    rated_games: u64::try_from(row.try_get::<i64, _>("rated_games")?).unwrap_or(0),
                }),
            })
        })
    }

    /// Refuses a player id that has no profile (every account has one) with
    /// `NOT_FOUND`. Chat asks this before it opens a direct channel, blocks or
    /// mutes, so it never acts on an id nobody holds yet.
    pub async fn require_player(&self, player_id: u64) -> Result<(), LobbyError> {
        let exists = with_pool!(&self.db, |pool| {
            let row = sqlx::query("SELECT account_id FROM profiles WHERE account_id = $1")
                .bind(db_id(player_id))
                .fetch_optional(pool)
                .await?;
            Ok(row.is_some())
        })?;
        if exists { Ok(()) } else { Err(no_player(player_id)) }
    }

    /// The player whose display name (the username as registered) is
    /// `username`, compared case-insensitively: `(player id, display name)`.
    pub async fn find_player(&self, username: &str) -> Result<(u64, String), LobbyError> {
        check_username(username)?;
        let lower = username.to_ascii_lowercase();
        let found: Option<(i64, String)> = with_pool!(&self.db, |pool| {
            let row = sqlx::query("SELECT account_id, display_name FROM profiles WHERE lower(display_name) = $1")
                .bind(&lower)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(row) => Some((row.try_get("account_id")?, row.try_get("display_name")?)),
                None => None,
            })
        })?;
        let (player_id, display_name) =
            found.ok_or_else(|| LobbyError::NotFound(format!("no player with username {username:?}")))?;
        Ok((player_id as u64, display_name))
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
            1..=MAX_PAGE_SIZE => i64::from(page_size),
            n => return Err(LobbyError::invalid("page_size", format!("must be at most {MAX_PAGE_SIZE} (got {n})"))),
        };
        let scope = format!("profile.match_history:{player_id}");
        let [before_ended, before_match] = page_token::decode::<2>(page_token, &scope)?.unwrap_or([i64::MAX; 2]);
        self.require_player(player_id).await?;
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
            Some((entry, match_id)) if has_more => page_token::encode(&scope, &[entry.ended_at_ms, *match_id]),
            _ => String::new(),
        };
        Ok(pb::MatchHistoryResponse { entries: entries.into_iter().map(|(entry, _)| entry).collect(), next_page_token })
    }

    /// A page of the leaderboard (best first, ranks shared by equal ratings),
    /// and `rank_of`'s entry when non-zero.
    pub async fn leaderboard(
        &self,
        page_size: u32,
        page_token: &str,
        rank_of: u64,
    ) -> Result<pb::LeaderboardResponse, LobbyError> {
        let page_size = match page_size {
            0 => 10,
            1..=MAX_PAGE_SIZE => i64::from(page_size),
            n => return Err(LobbyError::invalid("page_size", format!("must be at most {MAX_PAGE_SIZE} (got {n})"))),
        };
        const SCOPE: &str = "profile.leaderboard";
        // The cursor is the previous page's last (rating, account id); the
        // rating travels as its bit pattern so equality survives the trip.
        let after = page_token::decode::<2>(page_token, SCOPE)?.map(|[bits, id]| (f64::from_bits(bits as u64), id));
        let (rows, ahead, higher) = with_pool!(&self.db, |pool| {
            let (after_rating, after_id) = after.unwrap_or((f64::INFINITY, 0));
            let rows = sqlx::query(
                "SELECT account_id, display_name, rating FROM profiles \
                 WHERE rating < $1 OR (rating = $1 AND account_id > $2) \
                 ORDER BY rating DESC, account_id ASC LIMIT $3",
            )
            .bind(after_rating)
            .bind(after_id)
            .bind(page_size + 1)
            .fetch_all(pool)
            .await?;
            let mut entries = Vec::with_capacity(rows.len());
            for row in rows {
                let account_id: i64 = row.try_get("account_id")?;
                let rating: f64 = row.try_get("rating")?;
                entries.push((account_id, row.try_get::<String, _>("display_name")?, rating));
            }
            // Where the page starts: how many players come before its first
            // entry, and how many of those rate strictly higher.
            let (ahead, higher) = match entries.first() {
                Some((first_id, _, first_rating)) if after.is_some() => {
                    let row = sqlx::query(
                        "SELECT COUNT(*) AS ahead, \
                         COALESCE(SUM(CASE WHEN rating > $1 THEN 1 ELSE 0 END), 0) AS higher FROM profiles \
                         WHERE rating > $1 OR (rating = $1 AND account_id < $2)",
                    )
                    .bind(*first_rating)
                    .bind(*first_id)
                    .fetch_one(pool)
                    .await?;
                    (row.try_get::<i64, _>("ahead")?, row.try_get::<i64, _>("higher")?)
                }
                _ => (0, 0),
            };
            Ok((entries, ahead, higher))
        })?;
        let has_more = rows.len() as i64 > page_size;
        let mut entries: Vec<pb::LeaderboardEntry> = Vec::with_capacity(rows.len());
        let mut last = None;
        for (idx, (account_id, display_name, rating)) in rows.into_iter().take(page_size as usize).enumerate() {
            // Competition ranking: 1 + the players rated strictly higher. Every
            // player before a new, lower rating is rated higher than it.
            let rank = match entries.last() {
                None => higher as u64 + 1,
                Some(previous) if previous.rating == rating => previous.rank,
                Some(_) => (ahead as u64) + idx as u64 + 1,
            };
            last = Some((rating, account_id));
            entries.push(pb::LeaderboardEntry { rank, player_id: account_id as u64, display_name, rating });
        }
        let next_page_token = match last {
            Some((rating, account_id)) if has_more => page_token::encode(SCOPE, &[rating.to_bits() as i64, account_id]),
            _ => String::new(),
        };
        let player = if rank_of == 0 {
            None
        } else {
            let profile = self.profile(rank_of).await?;
            let higher: i64 = with_pool!(&self.db, |pool| {
                let row = sqlx::query("SELECT COUNT(*) AS higher FROM profiles WHERE rating > $1")
                    .bind(profile.rating)
                    .fetch_one(pool)
                    .await?;
                Ok(row.try_get("higher")?)
            })?;
            Some(pb::LeaderboardEntry {
                rank: higher as u64 + 1,
                player_id: rank_of,
                display_name: profile.display_name,
                rating: profile.rating,
            })
        };
        Ok(pb::LeaderboardResponse { entries, player, next_page_token })
    }
}

/// Largest `page_size` of MatchHistory and Leaderboard.
pub const MAX_PAGE_SIZE: u32 = 100;

fn no_player(player_id: u64) -> LobbyError {
    LobbyError::NotFound(format!("no player with id {player_id}"))
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
        Ok(Response::new(self.store.leaderboard(request.page_size, &request.page_token, request.rank_of).await?))
    }

    async fn find_player(
        &self,
        request: Request<pb::FindPlayerRequest>,
    ) -> Result<Response<pb::FindPlayerResponse>, Status> {
        require_caller(&request)?;
        let (player_id, display_name) = self.store.find_player(&request.get_ref().username).await?;
        Ok(Response::new(pb::FindPlayerResponse { player_id, display_name }))
    }
}
