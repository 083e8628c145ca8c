//! Minting connect tokens: the one place that turns a seat grant into signed
//! bytes a shard accepts. The matchmaker, the tests and the load harness all
//! call [`TokenMinter::mint`] (or [`mint_connect_token`]) so nonces, expiry and
//! versioning are chosen the same way everywhere.

use ed25519_dalek::{SigningKey, VerifyingKey};
use rally_protocol::token::{TokenClaims, TokenError};
use rally_protocol::{MatchId, PROTOCOL_VERSION, PlayerId, Seat};

/// How long a minted token stays valid by default: enough to open QUIC and
/// say hello, short enough that a leaked token is soon useless.
pub const DEFAULT_TOKEN_TTL_MS: u64 = 60_000;

/// What one connect token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatGrant {
    /// The player taking the seat.
    pub player_id: PlayerId,
    /// The match (created by the shard on first sight of a token for it).
    pub match_id: MatchId,
    /// The seat.
    pub seat: Seat,
    /// Seats in the match.
    pub n_seats: u8,
    /// Points a side needs to win.
    pub points_to_win: u8,
    /// The shard's registered name.
    pub shard: String,
}

/// Mints one token for `grant`, valid from `now_ms` for `ttl_ms`, with a fresh
/// random nonce, signed by `key` under `key_id`.
pub fn mint_connect_token(
    key: &SigningKey,
    key_id: u8,
    grant: &SeatGrant,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<Vec<u8>, TokenError> {
    let claims = TokenClaims {
        protocol_version: PROTOCOL_VERSION,
        key_id,
        player_id: grant.player_id,
        match_id: grant.match_id,
        seat: grant.seat,
        n_seats: grant.n_seats,
        points_to_win: grant.points_to_win,
        time_limit_s: rally_protocol::token::DEFAULT_TIME_LIMIT_S,
        issued_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
        nonce: rand::random(),
        shard: grant.shard.clone(),
    };
    claims.sign(key)
}

/// The matchmaker's issuer key, its id and the token lifetime.
#[derive(Clone)]
pub struct TokenMinter {
    key: SigningKey,
    key_id: u8,
    ttl_ms: u64,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenMinter")
            .field("key_id", &self.key_id)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl TokenMinter {
    /// A minter signing with `key` under `key_id`, tokens valid for [`DEFAULT_TOKEN_TTL_MS`].
    pub fn new(key: SigningKey, key_id: u8) -> Self {
        Self { key, key_id, ttl_ms: DEFAULT_TOKEN_TTL_MS }
    }

    /// A minter with a fresh random key (development and tests).
    pub fn random(key_id: u8) -> Self {
        Self::new(SigningKey::generate(&mut rand::rngs::OsRng), key_id)
    }

    /// Changes how long tokens stay valid.
    pub fn with_ttl_ms(mut self, ttl_ms: u64) -> Self {
        self.ttl_ms = ttl_ms;
        self
    }

    /// The key id tokens carry.
    pub fn key_id(&self) -> u8 {
        self.key_id
    }

    /// Token lifetime in milliseconds.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// The public key shards must trust (`rally shard --token-key KEY_ID:HEX`).
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// `KEY_ID:HEX`, the form `rally shard --token-key` takes.
    pub fn public_key_spec(&self) -> String {
        format!("{}:{}", self.key_id, hex::encode(self.verifying_key().to_bytes()))
    }

    /// Mints a token for `grant`, valid from `now_ms`; returns it with its expiry.
    pub fn mint(&self, grant: &SeatGrant, now_ms: u64) -> Result<(Vec<u8>, u64), TokenError> {
        let token = mint_connect_token(&self.key, self.key_id, grant, now_ms, self.ttl_ms)?;
        Ok((token, now_ms.saturating_add(self.ttl_ms)))
    }
}

#[cfg(test)]
mod tests {
    use rally_protocol::token::TokenVerifier;

    use super::*;

    fn grant() -> SeatGrant {
        SeatGrant {
            player_id: PlayerId(5),
            match_id: MatchId(9),
            seat: 1,
            n_seats: 2,
            points_to_win: 3,
            shard: "shard-a".into(),
        }
    }

    #[test]
    fn minted_tokens_verify_on_the_named_shard_only() {
        let minter = TokenMinter::random(3).with_ttl_ms(10_000);
        let (token, expires) = minter.mint(&grant(), 1_000_000).unwrap();
        assert_eq!(expires, 1_010_000);
        let verifier = TokenVerifier::new("shard-a", [(3, minter.verifying_key())]);
        let claims = verifier.verify(&token, 1_000_001).unwrap();
        assert_eq!(
            (claims.player_id, claims.match_id, claims.seat, claims.points_to_win),
            (PlayerId(5), MatchId(9), 1, 3)
        );
        assert!(verifier.verify(&token, 1_010_000).is_err(), "expired");
        let elsewhere = TokenVerifier::new("shard-b", [(3, minter.verifying_key())]);
        assert!(elsewhere.verify(&token, 1_000_001).is_err());
    }

    #[test]
    fn each_token_gets_a_fresh_nonce() {
        let minter = TokenMinter::random(1);
        let (a, _) = minter.mint(&grant(), 1).unwrap();
        let (b, _) = minter.mint(&grant(), 1).unwrap();
        let nonce = |bytes: &[u8]| TokenClaims::parse_unverified(bytes).unwrap().nonce;
        assert_ne!(nonce(&a), nonce(&b));
    }

    #[test]
    fn the_public_key_spec_names_the_key() {
        let minter = TokenMinter::new(SigningKey::from_bytes(&[1; 32]), 7);
        let spec = minter.public_key_spec();
        assert!(spec.starts_with("7:"));
        assert_eq!(spec.len(), 2 + 64);
    }
}
