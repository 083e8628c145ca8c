//! Connect tokens: `TokenVerifier::verify` and `TokenClaims::parse_unverified`
//! on raw bytes, and on tokens built and signed from PROTOCOL.md's layout (by
//! an independent encoder in `rally_fuzz`) so every post-signature branch is
//! reached and checked against the documented verification order.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rally_fuzz::{FUZZ_SHARD, RawClaims, expected_after_signature, issuer_key, spec_layout_ok, spec_token};
use rally_protocol::token::{TokenClaims, TokenError, TokenVerifier};
use rally_protocol::{MatchId, PROTOCOL_VERSION, PlayerId};

#[derive(Arbitrary, Debug)]
enum TokenInput {
    Raw {
        bytes: Vec<u8>,
        now_ms: u64,
    },
    Signed {
        signer: u8,
        version_is_current: bool,
        protocol_version: u16,
        key_id: u8,
        player_id: u64,
        match_id: u64,
        seat: u8,
        n_seats: u8,
        points_to_win: u8,
        time_limit_s: u16,
        // Times relative to `now_ms`, so the skew and expiry edges are reachable.
        issued_offset_ms: i32,
        expires_offset_ms: i32,
        nonce: [u8; 16],
        right_shard: bool,
        shard: Vec<u8>,
        now_ms: u64,
        skew_ms: u16,
        flip: Option<(u8, u8)>,
    },
}

fn verifier(skew_ms: u64) -> TokenVerifier {
    TokenVerifier::new(FUZZ_SHARD, [(1, issuer_key(1).verifying_key()), (2, issuer_key(2).verifying_key())])
        .with_clock_skew_ms(skew_ms)
}

fn to_claims(raw: &RawClaims) -> TokenClaims {
    TokenClaims {
        protocol_version: raw.protocol_version,
        key_id: raw.key_id,
        player_id: PlayerId(raw.player_id),
        match_id: MatchId(raw.match_id),
        seat: raw.seat,
        n_seats: raw.n_seats,
        points_to_win: raw.points_to_win,
        time_limit_s: raw.time_limit_s,
        issued_at_ms: raw.issued_at_ms,
        expires_at_ms: raw.expires_at_ms,
        nonce: raw.nonce,
        shard: String::from_utf8(raw.shard.clone()).expect("callers check the shard is UTF-8"),
    }
}

/// Checks that parse and verify agree with each other and with the layout rules.
fn check_raw(bytes: &[u8], now_ms: u64, skew_ms: u64) -> Result<TokenClaims, TokenError> {
    let parsed = TokenClaims::parse_unverified(bytes);
    let verified = verifier(skew_ms).verify(bytes, now_ms);
    assert_eq!(parsed.is_ok(), spec_layout_ok(bytes), "layout rules disagree with PROTOCOL.md");
    match &parsed {
        Err(err) => {
            assert!(matches!(err, TokenError::Malformed(_)));
            assert_eq!(&verified, &parsed);
        }
        Ok(claims) => {
            if let Ok(verified) = &verified {
                assert_eq!(verified, claims);
            }
            if claims.protocol_version != PROTOCOL_VERSION {
                assert!(matches!(verified, Err(TokenError::WrongVersion { .. })));
            } else if !(1..=2).contains(&claims.key_id) {
                assert_eq!(verified, Err(TokenError::UnknownKey(claims.key_id)));
            }
        }
    }
    verified
}

fuzz_target!(|input: TokenInput| {
    match input {
        TokenInput::Raw { bytes, now_ms } => {
            let _ = check_raw(&bytes, now_ms, 5_000);
        }
        TokenInput::Signed {
            signer,
            version_is_current,
            protocol_version,
            key_id,
            player_id,
            match_id,
            seat,
            n_seats,
            points_to_win,
            time_limit_s,
            issued_offset_ms,
            expires_offset_ms,
            nonce,
            right_shard,
            shard,
            now_ms,
            skew_ms,
            flip,
        } => {
            let shard = if right_shard { FUZZ_SHARD.as_bytes().to_vec() } else { shard };
            if shard.len() > 255 {
                return;
            }
            let raw = RawClaims {
                protocol_version: if version_is_current { PROTOCOL_VERSION } else { protocol_version },
                key_id: key_id % 4,
                player_id,
                match_id,
                seat: seat % 5,
                n_seats: n_seats % 5,
                points_to_win,
                time_limit_s,
                issued_at_ms: now_ms.saturating_add_signed(i64::from(issued_offset_ms)),
                expires_at_ms: now_ms.saturating_add_signed(i64::from(expires_offset_ms)),
                nonce,
                shard,
            };
            // Signer 1 and 2 are the trusted keys for ids 1 and 2; 3 is a stranger.
            let signer = signer % 3 + 1;
            let mut bytes = spec_token(&raw, &issuer_key(signer));
            let skew_ms = u64::from(skew_ms);

            // Where the library would sign these claims, it must produce the same bytes.
            if std::str::from_utf8(&raw.shard).is_ok()
                && let Ok(signed) = to_claims(&raw).sign(&issuer_key(signer))
            {
                assert_eq!(signed, bytes, "TokenClaims::sign differs from PROTOCOL.md's layout");
            }

            let flipped = match flip {
                Some((at, xor)) if xor != 0 && usize::from(at) < bytes.len() => {
                    bytes[usize::from(at)] ^= xor;
                    true
                }
                _ => false,
            };
            let verified = check_raw(&bytes, now_ms, skew_ms);
            if flipped {
                // Any change to a signed token must be refused (layout, key or signature).
                assert!(verified.is_err(), "an altered token verified");
                return;
            }
            if !spec_layout_ok(&bytes) || raw.protocol_version != PROTOCOL_VERSION || !(1..=2).contains(&raw.key_id) {
                return; // check_raw covered these.
            }
            if raw.key_id != signer {
                assert_eq!(verified, Err(TokenError::BadSignature));
                return;
            }
            match expected_after_signature(&raw, now_ms, skew_ms) {
                Ok(()) => assert_eq!(verified, Ok(to_claims(&raw))),
                Err(TokenError::Malformed(_)) => assert!(matches!(verified, Err(TokenError::Malformed(_)))),
                Err(expected) => assert_eq!(verified, Err(expected)),
            }
        }
    }
});
