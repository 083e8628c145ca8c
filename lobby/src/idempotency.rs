//! Client-chosen idempotency keys (chat `Send`, auth `Register`): a retry
//! with the same key returns the first result instead of doing it again. The
//! stores claim a key in the transaction that does the work, under a unique
//! constraint, so two replicas racing on one key end with one result.

use crate::error::LobbyError;

/// Longest key, in bytes (every allowed character is one byte).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 64;

/// A valid key: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] printable ASCII characters
/// (`!` to `~`, no spaces), as the `.proto` files state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key of a request field: `None` when it is empty (no key), an
    /// INVALID_ARGUMENT naming the rule when it breaks one.
    pub fn parse(text: &str) -> Result<Option<Self>, LobbyError> {
        if text.is_empty() {
            return Ok(None);
        }
        if text.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(LobbyError::invalid(
                "idempotency_key",
                format!("must be at most {MAX_IDEMPOTENCY_KEY_LEN} characters (got {} bytes)", text.len()),
            ));
        }
        if let Some(bad) = text.chars().find(|c| !('!'..='~').contains(c)) {
            return Err(LobbyError::invalid(
                "idempotency_key",
                format!("may only hold printable ASCII without spaces, '!' to '~' (found {bad:?})"),
            ));
        }
        Ok(Some(Self(text.to_owned())))
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_proto_rules() {
        assert_eq!(IdempotencyKey::parse("").unwrap(), None);
        let uuid = "3f2b8c1e-5d6a-4f7b-9c0d-1e2f3a4b5c6d";
        assert_eq!(IdempotencyKey::parse(uuid).unwrap().unwrap().as_str(), uuid);
        assert!(IdempotencyKey::parse(&"k".repeat(64)).unwrap().is_some());
        for bad in ["k".repeat(65), "has space".into(), "tab\t".into(), "é".into(), "\u{0}".into()] {
            let err = IdempotencyKey::parse(&bad).unwrap_err();
            assert!(matches!(err, LobbyError::InvalidArgument { field: "idempotency_key", .. }), "{bad:?}: {err}");
        }
    }
}
