//! Connect tokens: the matchmaker's signed permission for one player to take one
//! seat of one match on one shard, verified offline with a public key.
//!
//! The layout is fixed-width little-endian (PROTOCOL.md, "Connect token"), not
//! bincode, so other languages can mint and read tokens from this page alone.
//! The Ed25519 signature covers a domain-separation prefix followed by every
//! byte before the signature. One-time use is the shard's job (a nonce cache).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::{MatchId, PROTOCOL_VERSION, PlayerId, Seat};

/// Prepended to the token bytes before signing, so a token signature can never
/// be replayed as a signature over some other message type.
const SIGNING_CONTEXT: &[u8] = b"rally connect token v2\0";

/// Longest shard name a token may carry.
pub const MAX_SHARD_NAME: usize = 128;

const FIXED_LEN: usize = 57;
const SIGNATURE_LEN: usize = 64;

/// Longest possible encoded token.
pub const MAX_TOKEN_LEN: usize = FIXED_LEN + MAX_SHARD_NAME + SIGNATURE_LEN;

/// The time limit issuers put in a token unless a mode asks for another: five minutes
/// of regulation (the match spec adds sudden death, PROTOCOL.md section 10).
pub const DEFAULT_TIME_LIMIT_S: u16 = 300;

/// The seat a spectator token names: a read-only place in a running match that
/// takes no seat, sends no input and gets delayed full snapshots (PROTOCOL.md
/// section 15). Any other seat must be below `n_seats`.
pub const SPECTATOR_SEAT: Seat = 255;

/// Clock difference tolerated between the issuer and the shard.
pub const DEFAULT_CLOCK_SKEW_MS: u64 = 5_000;

/// What a token grants. Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenClaims {
    /// Protocol version the client will speak.
    pub protocol_version: u16,
    /// Which issuer key signed it, so keys can rotate.
    pub key_id: u8,
    /// The player.
    pub player_id: PlayerId,
    /// The match to join (created by the shard on first sight).
    pub match_id: MatchId,
    /// The seat the player takes.
    pub seat: Seat,
    /// Seats in the match.
    pub n_seats: u8,
    /// Points to win.
    pub points_to_win: u8,
    /// Regulation time of the match in seconds (1 or more; shards refuse 0).
    pub time_limit_s: u16,
    /// When it was minted.
    pub issued_at_ms: u64,
    /// After this instant the token is refused.
    pub expires_at_ms: u64,
    /// Random bytes from the issuer; the shard refuses a nonce it has seen.
    pub nonce: [u8; 16],
    /// The shard it is valid on (its registered name or address).
    pub shard: String,
}

/// Why a token was refused. Each reason is distinct so shards can count them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The bytes are not a token (wrong length, bad UTF-8, limits exceeded).
    #[error("malformed connect token: {0}")]
    Malformed(&'static str),
    /// The token was minted for another protocol version.
    #[error("token is for protocol version {got}, this shard speaks {expected}")]
    WrongVersion {
        /// Version in the token.
        got: u16,
        /// Version this side speaks.
        expected: u16,
    },
    /// No verifying key with the token's key id is configured.
    #[error("token signed with unknown key id {0}")]
    UnknownKey(u8),
    /// The signature does not verify: forged or altered.
    #[error("token signature is invalid (forged or altered)")]
    BadSignature,
    /// The token's issue time is in the future beyond the allowed clock skew.
    #[error("token not valid yet (issued {issued_at_ms} ms, now {now_ms} ms)")]
    NotYetValid {
        /// Issue time in the token.
        issued_at_ms: u64,
        /// The verifier's clock.
        now_ms: u64,
    },
    /// The token has expired.
    #[error("token expired at {expires_at_ms} ms (now {now_ms} ms); ask the matchmaker for a new one")]
    Expired {
        /// Expiry in the token.
        expires_at_ms: u64,
        /// The verifier's clock.
        now_ms: u64,
    },
    /// The token names another shard.
    #[error("token is for shard {got:?}, this is {expected:?}")]
    WrongShard {
        /// Shard named in the token.
        got: String,
        /// This shard's name.
        expected: String,
    },
    /// Claims that cannot be encoded (shard name too long, seat out of range).
    #[error("invalid claims: {0}")]
    InvalidClaims(&'static str),
}

impl TokenClaims {
    /// Encodes and signs the claims with the issuer's key.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, TokenError> {
        if self.shard.is_empty() || self.shard.len() > MAX_SHARD_NAME {
            return Err(TokenError::InvalidClaims("shard name must be 1 to 128 bytes"));
        }
        if self.seat >= self.n_seats && !self.is_spectator() {
            return Err(TokenError::InvalidClaims("seat must be below n_seats (or SPECTATOR_SEAT)"));
        }
        let mut bytes = Vec::with_capacity(FIXED_LEN + self.shard.len() + SIGNATURE_LEN);
        bytes.extend_from_slice(&self.protocol_version.to_le_bytes());
        bytes.push(self.key_id);
        bytes.extend_from_slice(&self.player_id.0.to_le_bytes());
        bytes.extend_from_slice(&self.match_id.0.to_le_bytes());
        bytes.push(self.seat);
        bytes.push(self.n_seats);
        bytes.push(self.points_to_win);
        bytes.extend_from_slice(&self.time_limit_s.to_le_bytes());
        bytes.extend_from_slice(&self.issued_at_ms.to_le_bytes());
        bytes.extend_from_slice(&self.expires_at_ms.to_le_bytes());
        bytes.extend_from_slice(&self.nonce);
        bytes.push(self.shard.len() as u8);
        debug_assert_eq!(bytes.len(), FIXED_LEN);
        bytes.extend_from_slice(self.shard.as_bytes());
        let signature = key.sign(&signed_message(&bytes));
        bytes.extend_from_slice(&signature.to_bytes());
        Ok(bytes)
    }

    /// Whether the token grants a spectator's read-only place, not a seat.
    pub fn is_spectator(&self) -> bool {
        self.seat == SPECTATOR_SEAT
    }

    /// Parses the claims without checking anything but the layout. Use
    /// [`TokenVerifier::verify`] for anything that grants access.
    pub fn parse_unverified(bytes: &[u8]) -> Result<Self, TokenError> {
        Ok(split(bytes)?.0)
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(body);
    message
}

fn split(bytes: &[u8]) -> Result<(TokenClaims, &[u8], [u8; SIGNATURE_LEN]), TokenError> {
    if bytes.len() < FIXED_LEN + 1 + SIGNATURE_LEN || bytes.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("length out of range"));
    }
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let shard_len = usize::from(bytes[56]);
    if bytes.len() != FIXED_LEN + shard_len + SIGNATURE_LEN {
        return Err(TokenError::Malformed("shard name length does not match token length"));
    }
    let body_len = FIXED_LEN + shard_len;
    let shard = std::str::from_utf8(&bytes[FIXED_LEN..body_len])
        .map_err(|_| TokenError::Malformed("shard name is not UTF-8"))?;
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&bytes[40..56]);
    let claims = TokenClaims {
        protocol_version: u16::from_le_bytes([bytes[0], bytes[1]]),
        key_id: bytes[2],
        player_id: PlayerId(u64_at(3)),
        match_id: MatchId(u64_at(11)),
        seat: bytes[19],
        n_seats: bytes[20],
        points_to_win: bytes[21],
        time_limit_s: u16::from_le_bytes([bytes[22], bytes[23]]),
        issued_at_ms: u64_at(24),
        expires_at_ms: u64_at(32),
        nonce,
        shard: shard.to_owned(),
    };
    let mut signature = [0u8; SIGNATURE_LEN];
    signature.copy_from_slice(&bytes[body_len..]);
    Ok((claims, &bytes[..body_len], signature))
}

/// Checks tokens for one shard against the issuers' public keys.
#[derive(Clone, Debug)]
pub struct TokenVerifier {
    keys: Vec<(u8, VerifyingKey)>,
    shard: String,
    clock_skew_ms: u64,
}

impl TokenVerifier {
    /// A verifier for the shard called `shard`, trusting `keys` by key id.
    pub fn new(shard: impl Into<String>, keys: impl IntoIterator<Item = (u8, VerifyingKey)>) -> Self {
        Self { keys: keys.into_iter().collect(), shard: shard.into(), clock_skew_ms: DEFAULT_CLOCK_SKEW_MS }
    }

    /// Changes the tolerated clock difference (default 5 s).
    pub fn with_clock_skew_ms(mut self, clock_skew_ms: u64) -> Self {
        self.clock_skew_ms = clock_skew_ms;
        self
    }

    /// The shard name tokens must carry.
    pub fn shard(&self) -> &str {
        &self.shard
    }

    /// Verifies, in this order: layout, version, key id, signature, validity
    /// window, shard, and `seat < n_seats` or `seat == SPECTATOR_SEAT`; the
    /// first failure is the error.
    pub fn verify(&self, bytes: &[u8], now_ms: u64) -> Result<TokenClaims, TokenError> {
        let (claims, body, signature) = split(bytes)?;
        if claims.protocol_version != PROTOCOL_VERSION {
            return Err(TokenError::WrongVersion { got: claims.protocol_version, expected: PROTOCOL_VERSION });
        }
        let key = self
            .keys
            .iter()
            .find_map(|(id, key)| (*id == claims.key_id).then_some(key))
            .ok_or(TokenError::UnknownKey(claims.key_id))?;
        key.verify(&signed_message(body), &Signature::from_bytes(&signature)).map_err(|_| TokenError::BadSignature)?;
        if claims.issued_at_ms > now_ms.saturating_add(self.clock_skew_ms) {
            return Err(TokenError::NotYetValid { issued_at_ms: claims.issued_at_ms, now_ms });
        }
        if now_ms >= claims.expires_at_ms {
            return Err(TokenError::Expired { expires_at_ms: claims.expires_at_ms, now_ms });
        }
        if claims.shard != self.shard {
            return Err(TokenError::WrongShard { got: claims.shard, expected: self.shard.clone() });
        }
        if claims.seat >= claims.n_seats && !claims.is_spectator() {
            return Err(TokenError::Malformed("seat must be below n_seats (or SPECTATOR_SEAT)"));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn claims() -> TokenClaims {
        TokenClaims {
            protocol_version: PROTOCOL_VERSION,
            key_id: 1,
            player_id: PlayerId(42),
            match_id: MatchId(7),
            seat: 1,
            n_seats: 2,
            points_to_win: 5,
            time_limit_s: 300,
            issued_at_ms: 1_000_000,
            expires_at_ms: 1_030_000,
            nonce: [9; 16],
            shard: "shard-a".into(),
        }
    }

    fn verifier() -> TokenVerifier {
        TokenVerifier::new("shard-a", [(1, key(1).verifying_key())])
    }

    #[test]
    fn a_valid_token_verifies() {
        let bytes = claims().sign(&key(1)).unwrap();
        assert_eq!(bytes.len(), FIXED_LEN + 7 + SIGNATURE_LEN);
        assert_eq!(verifier().verify(&bytes, 1_000_500), Ok(claims()));
    }

    #[test]
    fn golden_layout_is_pinned() {
        let bytes = claims().sign(&key(1)).unwrap();
        let expected_body: Vec<u8> = [
            &[2u8, 0][..],               // version
            &[1],                        // key id
            &42u64.to_le_bytes(),        // player
            &7u64.to_le_bytes(),         // match
            &[1, 2, 5],                  // seat, n_seats, points
            &300u16.to_le_bytes(),       // time limit
            &1_000_000u64.to_le_bytes(), // issued
            &1_030_000u64.to_le_bytes(), // expires
            &[9; 16],                    // nonce
            &[7],                        // shard length
            b"shard-a",
        ]
        .concat();
        assert_eq!(&bytes[..expected_body.len()], &expected_body[..]);
        // Ed25519 signatures are deterministic: pin them too (PROTOCOL.md 9.2 prints them).
        let again = claims().sign(&key(1)).unwrap();
        assert_eq!(bytes, again);
        assert_eq!(bytes.len(), 128);
        let signature: String = bytes[expected_body.len()..].iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(
            signature,
            "1e4253aea39d27fcc4f8e9458438b664fcb3a8f19301302af4f3ead5d111da6abdb8b8875bc80b18b4b9f4fd15ecdee54447cc868f66d3ad8752e4ad3c8e7e02"
        );
    }

    #[test]
    fn golden_spectator_token_is_pinned() {
        let spectator = TokenClaims { seat: SPECTATOR_SEAT, ..claims() };
        let bytes = spectator.sign(&key(1)).unwrap();
        assert_eq!(bytes.len(), 128);
        assert_eq!(bytes[19], 0xff, "the seat byte of a spectator token");
        let regular = claims().sign(&key(1)).unwrap();
        // Same layout: only the seat byte and the signature differ.
        assert_eq!(&bytes[..19], &regular[..19]);
        assert_eq!(&bytes[20..FIXED_LEN + 7], &regular[20..FIXED_LEN + 7]);
        let verified = verifier().verify(&bytes, 1_000_500).unwrap();
        assert!(verified.is_spectator());
        assert_eq!(verified, spectator);
        let signature: String = bytes[FIXED_LEN + 7..].iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(
            signature,
            "68489c72ad1d94b3704d5f59044a63d16a3e0ef8218bbb0f3a5ceddaeeff44c58d585e760ce2c0a48222433c3cb30d0b16cfc2aed241d02001f2e35b4640aa0b"
        );
        // Seats between n_seats and 254 stay invalid.
        let stray = TokenClaims { seat: 254, ..claims() };
        assert!(matches!(stray.sign(&key(1)), Err(TokenError::InvalidClaims(_))));
    }

    #[test]
    fn each_bad_token_gets_its_own_error() {
        let now = 1_000_500;
        let good = claims().sign(&key(1)).unwrap();

        let forged = claims().sign(&key(2)).unwrap();
        assert_eq!(verifier().verify(&forged, now), Err(TokenError::BadSignature));

        let mut altered = good.clone();
        altered[19] = 0; // take seat 0 instead
        assert_eq!(verifier().verify(&altered, now), Err(TokenError::BadSignature));

        assert!(matches!(verifier().verify(&good, 1_030_000), Err(TokenError::Expired { .. })));
        let future = TokenClaims { issued_at_ms: now + 60_000, expires_at_ms: now + 90_000, ..claims() };
        assert!(matches!(verifier().verify(&future.sign(&key(1)).unwrap(), now), Err(TokenError::NotYetValid { .. })));

        let elsewhere = TokenClaims { shard: "shard-b".into(), ..claims() };
        assert!(matches!(
            verifier().verify(&elsewhere.sign(&key(1)).unwrap(), now),
            Err(TokenError::WrongShard { .. })
        ));

        let old = TokenClaims { protocol_version: 0, ..claims() };
        assert_eq!(
            verifier().verify(&old.sign(&key(1)).unwrap(), now),
            Err(TokenError::WrongVersion { got: 0, expected: PROTOCOL_VERSION })
        );

        let rotated = TokenClaims { key_id: 9, ..claims() };
        assert_eq!(verifier().verify(&rotated.sign(&key(1)).unwrap(), now), Err(TokenError::UnknownKey(9)));

        assert!(matches!(verifier().verify(&good[..good.len() - 1], now), Err(TokenError::Malformed(_))));
        assert!(matches!(verifier().verify(&[], now), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn clock_skew_is_tolerated_within_bounds() {
        let early = TokenClaims { issued_at_ms: 1_004_000, ..claims() };
        let bytes = early.sign(&key(1)).unwrap();
        assert!(verifier().verify(&bytes, 1_000_000).is_ok());
        assert!(verifier().with_clock_skew_ms(0).verify(&bytes, 1_000_000).is_err());
    }

    #[test]
    fn unencodable_claims_are_refused() {
        let long = TokenClaims { shard: "x".repeat(129), ..claims() };
        assert!(matches!(long.sign(&key(1)), Err(TokenError::InvalidClaims(_))));
        let seat = TokenClaims { seat: 2, ..claims() };
        assert!(matches!(seat.sign(&key(1)), Err(TokenError::InvalidClaims(_))));
    }

    proptest! {
        #[test]
        fn garbage_never_verifies(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert!(verifier().verify(&bytes, 1_000_500).is_err());
        }

        #[test]
        fn any_single_bit_flip_is_refused(bit in 0usize..(FIXED_LEN + 7 + SIGNATURE_LEN) * 8) {
            let mut bytes = claims().sign(&key(1)).unwrap();
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(verifier().verify(&bytes, 1_000_500).is_err());
        }
    }
}
