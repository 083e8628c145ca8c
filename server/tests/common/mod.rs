//! Shared test fixtures: token minting and the in-process stepper.

#![allow(dead_code, unreachable_pub, reason = "shared by several test binaries, each using a subset")]

pub mod stepper;

use ed25519_dalek::SigningKey;
use rally_protocol::token::TokenClaims;
use rally_protocol::{MatchId, PROTOCOL_VERSION, PlayerId, Seat};

/// The issuer key every test signs with (key id 1).
pub fn issuer() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// A valid token for `seat` of `match_id` on `shard`, valid for ten minutes from `now_ms`.
pub fn token(shard: &str, match_id: u64, seat: Seat, player: u64, now_ms: u64) -> Vec<u8> {
    claims(shard, match_id, seat, player, now_ms).sign(&issuer()).expect("valid claims")
}

/// The claims behind [`token`], for tests that alter one field.
pub fn claims(shard: &str, match_id: u64, seat: Seat, player: u64, now_ms: u64) -> TokenClaims {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&match_id.to_le_bytes());
    nonce[8] = seat;
    nonce[9..].copy_from_slice(&player.to_le_bytes()[..7]);
    TokenClaims {
        protocol_version: PROTOCOL_VERSION,
        key_id: 1,
        player_id: PlayerId(player),
        match_id: MatchId(match_id),
        seat,
        n_seats: 2,
        points_to_win: 3,
        // The longest limit a token carries, so matches played to test something
        // else end by score; the time limit's own tests set a short one.
        time_limit_s: u16::MAX,
        issued_at_ms: now_ms,
        expires_at_ms: now_ms + 600_000,
        nonce,
        shard: shard.to_owned(),
    }
}
