//! The matchmaker's error types and their mapping to gRPC status codes.

/// A shared backend (the registry, the ticket store or the results bus) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend could not be reached or did not answer in time. The
    /// connection is re-established in the background; retrying later works.
    #[error("{0}")]
    Unavailable(String),
    /// The backend holds data this version cannot read.
    #[error("unreadable data in the backend: {0}")]
    Corrupt(String),
}

impl From<redis::RedisError> for BackendError {
    fn from(err: redis::RedisError) -> Self {
        if err.kind() == redis::ErrorKind::Parse || err.kind() == redis::ErrorKind::UnexpectedReturnType {
            return Self::Corrupt(format!("unexpected reply from Redis: {err}"));
        }
        if err.code() == Some("NOGROUP") {
            return Self::Unavailable(format!(
                "Redis has lost the results consumer group ({err}): it restarted without its data, failed over or \
                 was flushed; the consumer makes the group again"
            ));
        }
        Self::Unavailable(format!(
            "Redis is unavailable ({err}); the connection is re-established on its own, retry shortly"
        ))
    }
}

impl From<serde_json::Error> for BackendError {
    fn from(err: serde_json::Error) -> Self {
        Self::Corrupt(err.to_string())
    }
}

/// Everything a matchmaker operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MatchmakerError {
    /// A request field is missing, malformed or out of range.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The offending field.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The access token is missing, expired or forged.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not act on this ticket.
    #[error("{0}")]
    PermissionDenied(String),
    /// No such ticket (or it was forgotten after its retention).
    #[error("{0}")]
    NotFound(String),
    /// A player already holds a live ticket or seat; the message names it.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request cannot be served in this deployment as configured (a bot
    /// mode without house bots).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A shared backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Minting a connect token failed (a bug in the claims we built).
    #[error("connect token: {0}")]
    Token(#[from] rally_protocol::token::TokenError),
    /// The ratings source failed.
    #[error("ratings unavailable ({0}); retry in a few seconds")]
    Ratings(String),
    /// An internal invariant broke (a bug).
    #[error("internal error: {0}")]
    Internal(String),
    /// The lobby's database is missing, lacks the lobby's tables or is older
    /// than this matchmaker reads (found when it starts).
    #[error("{0}")]
    LobbyDatabase(String),
}

impl MatchmakerError {
    /// Shorthand for [`MatchmakerError::InvalidArgument`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field, reason: reason.into() }
    }
}

impl From<rally_lobby::AuthError> for MatchmakerError {
    fn from(err: rally_lobby::AuthError) -> Self {
        Self::Unauthenticated(err.to_string())
    }
}

impl From<MatchmakerError> for tonic::Status {
    fn from(err: MatchmakerError) -> Self {
        let message = err.to_string();
        match err {
            MatchmakerError::InvalidArgument { .. } => tonic::Status::invalid_argument(message),
            MatchmakerError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            MatchmakerError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            MatchmakerError::NotFound(_) => tonic::Status::not_found(message),
            MatchmakerError::AlreadyExists(_) => tonic::Status::already_exists(message),
            MatchmakerError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            MatchmakerError::Backend(BackendError::Unavailable(_))
            | MatchmakerError::Ratings(_)
            | MatchmakerError::LobbyDatabase(_) => {
                tracing::warn!(error = %message, "backend unavailable");
                tonic::Status::unavailable(message)
            }
            MatchmakerError::Backend(BackendError::Corrupt(_))
            | MatchmakerError::Token(_)
            | MatchmakerError::Internal(_) => {
                tracing::error!(error = %message, "internal error");
                tonic::Status::internal(message)
            }
        }
    }
}
