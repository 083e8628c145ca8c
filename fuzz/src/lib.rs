//! Shared fixtures for the rally fuzz targets: a Pong-like schema, fixed
//! baselines, and an independent implementation of the connect-token layout
//! written from PROTOCOL.md (not from `protocol/src/token.rs`), so the `token`
//! target checks the code against the document as well as for panics.

use ed25519_dalek::{Signer, SigningKey};
use rally_protocol::token::TokenError;
use rally_protocol::{FieldSpec, PROTOCOL_VERSION, Schema, Snapshot, Tick};

/// A Pong-like per-seat view, with a signed 32-bit field and a shifted prediction
/// (`Schema::new` refuses unsigned 32-bit fields).
pub fn pong_schema() -> Schema {
    let fields = vec![
        FieldSpec::unsigned("phase", 3),
        FieldSpec::signed("ball_vx", 12),
        FieldSpec::signed("ball_vy", 12),
        FieldSpec::unsigned("ball_x", 13).predicted_by(1, 0),
        FieldSpec::unsigned("ball_y", 13).predicted_by(2, 0),
        FieldSpec::unsigned("paddle_0", 13),
        FieldSpec::unsigned("paddle_1", 13),
        FieldSpec::unsigned("score_0", 5),
        FieldSpec::unsigned("score_1", 5),
        FieldSpec::signed("wide", 32),
        FieldSpec::signed("sub_vx", 16),
        FieldSpec::signed("sub_x", 20).predicted_by(10, 4),
    ];
    match Schema::new(fields) {
        Ok(schema) => schema,
        Err(err) => panic!("the fixed fuzz schema is invalid: {err}"),
    }
}

/// One of a few fixed baselines for [`pong_schema`], picked by tick, at `tick`.
pub fn pong_baseline(tick: Tick) -> Snapshot {
    let values = match tick % 3 {
        0 => vec![2, 30, -7, 1000, 2000, 4000, 4100, 3, 4, -1, 100, 5000],
        1 => vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        // Extremes: the largest velocities and positions at the field edges.
        _ => vec![7, 2047, -2048, 8191, 0, 8191, 0, 31, 31, i32::MIN, -32768, 524_287],
    };
    Snapshot { tick, values }
}

/// Panics unless every value lies inside its field's declared range.
pub fn assert_in_range(schema: &Schema, snapshot: &Snapshot) {
    assert_eq!(snapshot.values.len(), schema.len(), "decoded snapshot has the wrong number of values");
    for (field, &value) in schema.fields().iter().zip(&snapshot.values) {
        let value = i64::from(value);
        assert!(
            (field.min()..=field.max()).contains(&value),
            "field {:?} decoded to {value}, outside {}..={}",
            field.name,
            field.min(),
            field.max()
        );
    }
}

/// The signing context of PROTOCOL.md, "Connect token".
pub const TOKEN_SIGNING_CONTEXT: &[u8] = b"rally connect token v2\0";

/// The shard name the fuzz verifier answers to.
pub const FUZZ_SHARD: &str = "shard-a";

/// Issuer key `seed` (1 and 2 are trusted under key ids 1 and 2; others are not).
pub fn issuer_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Token claims as plain fields, so targets can build ones `TokenClaims::sign` refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawClaims {
    /// Offset 0, u16 LE.
    pub protocol_version: u16,
    /// Offset 2.
    pub key_id: u8,
    /// Offset 3, u64 LE.
    pub player_id: u64,
    /// Offset 11, u64 LE.
    pub match_id: u64,
    /// Offset 19.
    pub seat: u8,
    /// Offset 20.
    pub n_seats: u8,
    /// Offset 21.
    pub points_to_win: u8,
    /// Offset 22, u16 LE.
    pub time_limit_s: u16,
    /// Offset 24, u64 LE.
    pub issued_at_ms: u64,
    /// Offset 32, u64 LE.
    pub expires_at_ms: u64,
    /// Offset 40, 16 bytes.
    pub nonce: [u8; 16],
    /// Offset 56 holds its length; the bytes follow at 57.
    pub shard: Vec<u8>,
}

/// Encodes and signs per PROTOCOL.md, with no validation at all.
pub fn spec_token(claims: &RawClaims, key: &SigningKey) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&claims.protocol_version.to_le_bytes());
    body.push(claims.key_id);
    body.extend_from_slice(&claims.player_id.to_le_bytes());
    body.extend_from_slice(&claims.match_id.to_le_bytes());
    body.push(claims.seat);
    body.push(claims.n_seats);
    body.push(claims.points_to_win);
    body.extend_from_slice(&claims.time_limit_s.to_le_bytes());
    body.extend_from_slice(&claims.issued_at_ms.to_le_bytes());
    body.extend_from_slice(&claims.expires_at_ms.to_le_bytes());
    body.extend_from_slice(&claims.nonce);
    body.push(claims.shard.len() as u8);
    body.extend_from_slice(&claims.shard);
    let mut message = TOKEN_SIGNING_CONTEXT.to_vec();
    message.extend_from_slice(&body);
    let signature = key.sign(&message);
    body.extend_from_slice(&signature.to_bytes());
    body
}

/// What PROTOCOL.md says `verify` answers for a token whose layout parsed and
/// whose key id is trusted, once the signature has verified.
pub fn expected_after_signature(claims: &RawClaims, now_ms: u64, skew_ms: u64) -> Result<(), TokenError> {
    if claims.issued_at_ms > now_ms.saturating_add(skew_ms) {
        return Err(TokenError::NotYetValid { issued_at_ms: claims.issued_at_ms, now_ms });
    }
    if now_ms >= claims.expires_at_ms {
        return Err(TokenError::Expired { expires_at_ms: claims.expires_at_ms, now_ms });
    }
    if claims.shard != FUZZ_SHARD.as_bytes() {
        let got = String::from_utf8_lossy(&claims.shard).into_owned();
        return Err(TokenError::WrongShard { got, expected: FUZZ_SHARD.to_owned() });
    }
    if claims.seat >= claims.n_seats {
        return Err(TokenError::Malformed("seat must be below n_seats"));
    }
    Ok(())
}

/// Whether the layout rules of PROTOCOL.md accept `len` bytes with `shard_len` at offset 56.
pub fn spec_layout_ok(bytes: &[u8]) -> bool {
    if bytes.len() < 122 || bytes.len() > 249 {
        return false;
    }
    let shard_len = usize::from(bytes[56]);
    bytes.len() == 57 + shard_len + 64 && std::str::from_utf8(&bytes[57..57 + shard_len]).is_ok()
}

/// The version tokens must carry.
pub const TOKEN_VERSION: u16 = PROTOCOL_VERSION;
