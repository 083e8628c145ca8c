//! The lobby's one error type and its mapping to gRPC status codes.
//!
//! Refusals a client should retry carry a hint: `RESOURCE_EXHAUSTED` (a rate
//! limit) and `UNAVAILABLE` (the database is unreachable or too slow) come with
//! [`RETRY_AFTER_MS_METADATA`], the milliseconds to wait, as well as saying it
//! in the message.

use std::time::Duration;

/// Response metadata naming how many milliseconds to wait before retrying
/// (decimal ASCII), on `RESOURCE_EXHAUSTED` and `UNAVAILABLE` refusals.
pub const RETRY_AFTER_MS_METADATA: &str = "retry-after-ms";

/// How long a client is told to wait when the database is unavailable.
pub const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(2);

/// The message of every refusal caused by an unreachable or too slow database.
pub const STORAGE_UNAVAILABLE_MESSAGE: &str = "the database is unavailable; retry in a few seconds";

/// Why an access token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `authorization: Bearer <token>` metadata was sent.
    #[error("missing access token: send `authorization: Bearer <access token>` (get one from Auth.Login)")]
    Missing,
    /// The token's `exp` is in the past.
    #[error("access token expired: get a new one with Auth.Refresh")]
    Expired,
    /// The token is malformed, signed with another key or algorithm, or lacks claims.
    #[error("invalid access token ({0}): log in again with Auth.Login")]
    Invalid(String),
}

/// Everything a lobby operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LobbyError {
    /// A request field is missing, malformed or out of range.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The offending field.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The caller is not (or no longer) authenticated.
    #[error("{0}")]
    Unauthenticated(String),
    /// The access token is missing or bad.
    #[error(transparent)]
    Token(#[from] AuthError),
    /// The caller is authenticated but may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but the thing is in a state that forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Something timed out for good (e.g. a device login's code expired); start over.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The service cannot take this now (e.g. shutting down); retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// A rate limit was hit.
    #[error("rate limit exceeded for {what}; retry after {} ms", retry_after.as_millis())]
    RateLimited {
        /// Which limit.
        what: &'static str,
        /// When the next attempt may succeed.
        retry_after: Duration,
    },
    /// The database (or another dependency) failed.
    #[error("storage unavailable: {0}")]
    Storage(#[from] sqlx::Error),
    /// Migrations failed at start.
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// An internal invariant broke (a bug) or a worker task died.
    #[error("internal error: {0}")]
    Internal(String),
}

impl LobbyError {
    /// Shorthand for [`LobbyError::InvalidArgument`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field, reason: reason.into() }
    }
}

/// `status` with the [`RETRY_AFTER_MS_METADATA`] hint.
fn with_retry_after(mut status: tonic::Status, retry_after: Duration) -> tonic::Status {
    let millis = retry_after.as_millis().max(1).to_string();
    if let Ok(value) = tonic::metadata::MetadataValue::try_from(millis) {
        status.metadata_mut().insert(RETRY_AFTER_MS_METADATA, value);
    }
    status
}

impl From<LobbyError> for tonic::Status {
    fn from(err: LobbyError) -> Self {
        let message = err.to_string();
        match err {
            LobbyError::InvalidArgument { .. } => tonic::Status::invalid_argument(message),
            LobbyError::AlreadyExists(_) => tonic::Status::already_exists(message),
            LobbyError::Unauthenticated(_) | LobbyError::Token(_) => tonic::Status::unauthenticated(message),
            LobbyError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            LobbyError::NotFound(_) => tonic::Status::not_found(message),
            LobbyError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            LobbyError::Unavailable(_) => tonic::Status::unavailable(message),
            LobbyError::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(message),
            LobbyError::RateLimited { retry_after, .. } => {
                with_retry_after(tonic::Status::resource_exhausted(message), retry_after)
            }
            LobbyError::Storage(ref source) => {
                tracing::warn!(error = %source, "storage error");
                with_retry_after(tonic::Status::unavailable(STORAGE_UNAVAILABLE_MESSAGE), STORAGE_RETRY_AFTER)
            }
            LobbyError::Migrate(_) | LobbyError::Internal(_) => {
                tracing::error!(error = %message, "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}
