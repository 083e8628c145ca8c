//! Page tokens: the one opaque `page_token` / `next_page_token` format of
//! every paged lobby RPC (Chat.History, Profile.MatchHistory,
//! Profile.Leaderboard).
//!
//! A token is lowercase hex of: a version byte, the first 8 bytes of the
//! SHA-256 of the query's scope (which RPC, and the parameters that pick the
//! rows: the channel and viewer, the player), then the cursor's values as
//! big-endian `i64`s. The scope digest binds a token to the query that made
//! it; the cursor is the last row's sort key, so a page is found by seeking,
//! never by offset. Tokens are not secret: tampering with a cursor only moves
//! within rows the caller may read anyway.

use sha2::{Digest as _, Sha256};

use crate::error::LobbyError;

const VERSION: u8 = 1;
const DIGEST_LEN: usize = 8;

fn scope_digest(scope: &str) -> [u8; DIGEST_LEN] {
    let digest = Sha256::digest(scope.as_bytes());
    let mut out = [0_u8; DIGEST_LEN];
    out.copy_from_slice(&digest[..DIGEST_LEN]);
    out
}

/// The token continuing the query `scope` after the row whose sort key is `cursor`.
pub(crate) fn encode(scope: &str, cursor: &[i64]) -> String {
    let mut bytes = Vec::with_capacity(1 + DIGEST_LEN + 8 * cursor.len());
    bytes.push(VERSION);
    bytes.extend_from_slice(&scope_digest(scope));
    for value in cursor {
        bytes.extend_from_slice(&value.to_be_bytes());
    }
    hex::encode(bytes)
}

/// The `N`-value cursor in `token`, which must have been made by the query
/// `scope`; `None` for an empty token (the first page).
pub(crate) fn decode<const N: usize>(token: &str, scope: &str) -> Result<Option<[i64; N]>, LobbyError> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || {
        LobbyError::invalid(
            "page_token",
            "is not a token this server issued; pass the next_page_token of the previous page, or empty for the first",
        )
    };
    let bytes = hex::decode(token).map_err(|_| malformed())?;
    if bytes.len() != 1 + DIGEST_LEN + 8 * N || bytes[0] != VERSION {
        return Err(malformed());
    }
    if bytes[1..1 + DIGEST_LEN] != scope_digest(scope) {
        return Err(LobbyError::invalid(
            "page_token",
            "page token belongs to a different query; pass a next_page_token this query returned, or empty to start over",
        ));
    }
    let mut cursor = [0_i64; N];
    for (value, chunk) in cursor.iter_mut().zip(bytes[1 + DIGEST_LEN..].chunks_exact(8)) {
        let mut be = [0_u8; 8];
        be.copy_from_slice(chunk);
        *value = i64::from_be_bytes(be);
    }
    Ok(Some(cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_within_their_scope_only() {
        let token = encode("profile.match_history:7", &[-5, i64::MAX]);
        assert_eq!(decode::<2>(&token, "profile.match_history:7").expect("same scope"), Some([-5, i64::MAX]));
        assert_eq!(decode::<2>("", "anything").expect("first page"), None);
        let other = decode::<2>(&token, "profile.match_history:8").expect_err("other scope").to_string();
        assert!(other.contains("page token belongs to a different query"), "{other}");
        for bad in ["x'--", "00", &token[..token.len() - 2], &format!("{token}00")] {
            let refused = decode::<2>(bad, "profile.match_history:7").expect_err("malformed").to_string();
            assert!(refused.contains("not a token this server issued"), "{bad}: {refused}");
        }
    }
}
