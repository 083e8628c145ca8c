//! The tournament service's one error type and its mapping to gRPC status codes.

use rally_lobby::error::{RETRY_AFTER_MS_METADATA, STORAGE_RETRY_AFTER, STORAGE_UNAVAILABLE_MESSAGE};
use rally_matchmaker::BackendError;

/// Everything a tournament operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TournamentError {
    /// A request field is missing, malformed or out of range.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The offending field.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The bracket engine refused the rules (with the engine's reason).
    #[error("invalid rules: {0}")]
    Rules(String),
    /// The access token is missing, expired or forged.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is not an organiser of this tournament.
    #[error("{0}")]
    PermissionDenied(String),
    /// No such tournament, entrant, game or receipt.
    #[error("{0}")]
    NotFound(String),
    /// Registration is not open (not yet, or no longer); the message says when.
    #[error("{0}")]
    RegistrationClosed(String),
    /// Every place is taken.
    #[error("tournament {tournament} is full: all {max_entrants} places are taken; watch it, or join another")]
    Full {
        /// The tournament.
        tournament: u64,
        /// Its places.
        max_entrants: u32,
    },
    /// The caller's rating is outside the tournament's bounds.
    #[error("your rating {rating} is outside tournament {tournament}'s bounds ({}); join another tournament", bounds(*.min, *.max))]
    RatingOutOfBounds {
        /// The tournament.
        tournament: u64,
        /// The caller's rating.
        rating: i32,
        /// The lowest rating admitted, if any.
        min: Option<i32>,
        /// The highest rating admitted, if any.
        max: Option<i32>,
    },
    /// The caller is not registered (or withdrew).
    #[error("{0}")]
    NotRegistered(String),
    /// The caller did not check in in time, so is not in the bracket.
    #[error("{0}")]
    NotCheckedIn(String),
    /// The tournament is in a state that forbids this (e.g. a correction too late).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The ratings source failed.
    #[error("ratings unavailable ({0}); retry in a few seconds")]
    Ratings(String),
    /// The shard registry or the results bus failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The database failed.
    #[error("storage unavailable: {0}")]
    Storage(#[from] sqlx::Error),
    /// Migrations failed at start.
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The results ledger failed (appending, reading a receipt).
    #[error("ledger: {0}")]
    Ledger(String),
    /// An internal invariant broke (a bug), or stored data is unreadable.
    #[error("internal error: {0}")]
    Internal(String),
}

fn bounds(min: Option<i32>, max: Option<i32>) -> String {
    match (min, max) {
        (Some(min), Some(max)) => format!("{min} to {max}"),
        (Some(min), None) => format!("at least {min}"),
        (None, Some(max)) => format!("at most {max}"),
        (None, None) => "none".to_owned(),
    }
}

impl TournamentError {
    /// Shorthand for [`TournamentError::InvalidArgument`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field, reason: reason.into() }
    }

    /// Shorthand for [`TournamentError::Internal`].
    pub(crate) fn internal(what: impl std::fmt::Display) -> Self {
        Self::Internal(what.to_string())
    }
}

impl From<rally_lobby::AuthError> for TournamentError {
    fn from(err: rally_lobby::AuthError) -> Self {
        Self::Unauthenticated(err.to_string())
    }
}

impl From<serde_json::Error> for TournamentError {
    fn from(err: serde_json::Error) -> Self {
        Self::Internal(format!("unreadable stored JSON: {err}"))
    }
}

impl From<TournamentError> for tonic::Status {
    fn from(err: TournamentError) -> Self {
        let message = err.to_string();
        match err {
            TournamentError::InvalidArgument { .. } | TournamentError::Rules(_) => {
                tonic::Status::invalid_argument(message)
            }
            TournamentError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            TournamentError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            TournamentError::NotFound(_) => tonic::Status::not_found(message),
            TournamentError::Full { .. } => tonic::Status::resource_exhausted(message),
            TournamentError::RegistrationClosed(_)
            | TournamentError::RatingOutOfBounds { .. }
            | TournamentError::NotRegistered(_)
            | TournamentError::NotCheckedIn(_)
            | TournamentError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            TournamentError::Ratings(_) | TournamentError::Backend(BackendError::Unavailable(_)) => {
                tracing::warn!(error = %message, "backend unavailable");
                tonic::Status::unavailable(message)
            }
            TournamentError::Storage(ref source) => {
                tracing::warn!(error = %source, "storage error");
                let mut status = tonic::Status::unavailable(STORAGE_UNAVAILABLE_MESSAGE);
                let millis = STORAGE_RETRY_AFTER.as_millis().to_string();
                if let Ok(value) = tonic::metadata::MetadataValue::try_from(millis) {
                    status.metadata_mut().insert(RETRY_AFTER_MS_METADATA, value);
                }
                status
            }
            TournamentError::Backend(_)
            | TournamentError::Migrate(_)
            | TournamentError::Ledger(_)
            | TournamentError::Internal(_) => {
                tracing::error!(error = %message, "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_get_the_codes_clients_act_on() {
        let cases = [
            (TournamentError::RegistrationClosed("closed".into()), tonic::Code::FailedPrecondition),
            (TournamentError::Full { tournament: 1, max_entrants: 8 }, tonic::Code::ResourceExhausted),
            (
                TournamentError::RatingOutOfBounds { tournament: 1, rating: 900, min: Some(1000), max: Some(2000) },
                tonic::Code::FailedPrecondition,
            ),
            (TournamentError::NotFound("no".into()), tonic::Code::NotFound),
            (TournamentError::PermissionDenied("no".into()), tonic::Code::PermissionDenied),
            (TournamentError::Rules("no".into()), tonic::Code::InvalidArgument),
        ];
        for (err, code) in cases {
            assert_eq!(tonic::Status::from(err).code(), code);
        }
        let bounds =
            TournamentError::RatingOutOfBounds { tournament: 3, rating: 900, min: Some(1000), max: Some(2000) };
        assert_eq!(
            bounds.to_string(),
            "your rating 900 is outside tournament 3's bounds (1000 to 2000); join another tournament"
        );
    }
}
