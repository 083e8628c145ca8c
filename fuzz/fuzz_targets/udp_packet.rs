//! The raw UDP wire format: raw bytes to `rally_transport::udp::wire::Packet::parse`,
//! the one parser of raw UDP packets (PROTOCOL.md section 13).
//!
//! Whether a packet parses is checked against an independent model of the
//! documented sizes (`accepted`), not against the parser's own constants
//! alone. Whatever parses must rebuild to exactly the input: with the `wire::`
//! builders for challenge, connect, datagram, disconnect and keepalive, and
//! from the documented layout for segments and acks (which have no builder).
//! A request parses only with zero padding, so it equals `wire::request()`;
//! one with a non-zero padding byte is refused as `BadPadding`. Refusals must name the input's
//! own kind byte and length. `wire::parse_challenge` agrees with `parse`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rally_transport::udp::wire::{self, Packet, WireError};

/// Whether PROTOCOL.md section 13 allows a packet of `kind` and `len` bytes
/// (the request's magic aside): written from the table, not from `wire.rs`.
fn accepted(kind: u8, len: usize) -> bool {
    match kind {
        1 => len == 256,
        2 => len == 1 + 8 + 16,
        3 => len >= 1 + 8 + 16,
        4 => len >= 1,
        // The kind byte and `seq u32`, then any number of stream bytes.
        5 => len >= 5,
        6 => len == 1 + 4 + 32,
        7 => len == 1 + 2,
        8 => len == 1,
        _ => false,
    }
}

fn segment(seq: u32, bytes: &[u8]) -> Vec<u8> {
    let mut packet = vec![wire::SEGMENT];
    packet.extend_from_slice(&seq.to_le_bytes());
    packet.extend_from_slice(bytes);
    packet
}

fn ack(next: u32, bits: &[u8; wire::ACK_BITS / 8]) -> Vec<u8> {
    let mut packet = vec![wire::ACK];
    packet.extend_from_slice(&next.to_le_bytes());
    packet.extend_from_slice(bits);
    packet
}

fuzz_target!(|data: &[u8]| {
    let parsed = Packet::parse(data);
    match parsed {
        Ok(packet) => {
            let kind = data[0];
            assert!(accepted(kind, data.len()), "kind {kind} of {} bytes parsed as {packet:?}", data.len());
            let rebuilt = match packet {
                Packet::Request => {
                    assert_eq!(kind, wire::REQUEST);
                    assert_eq!(data.len(), wire::REQUEST_LEN);
                    assert_eq!(&data[1..5], b"RLY1");
                    let canonical = wire::request();
                    assert_eq!(data, &canonical[..], "only zero padding parses");
                    assert!(canonical.len() > wire::CHALLENGE_LEN, "a request must outweigh its challenge");
                    None
                }
                Packet::Challenge { bucket, cookie } => {
                    assert_eq!(data.len(), wire::CHALLENGE_LEN);
                    Some(wire::challenge(bucket, &cookie))
                }
                Packet::Connect { bucket, cookie, hello } => {
                    assert_eq!(data.len(), 1 + 8 + wire::COOKIE_LEN + hello.len());
                    Some(wire::connect(bucket, &cookie, hello))
                }
                Packet::Datagram(payload) => {
                    assert_eq!(data.len(), 1 + payload.len());
                    Some(wire::datagram(payload))
                }
                Packet::Segment { seq, bytes } => {
                    assert_eq!(data.len(), 5 + bytes.len());
                    Some(segment(seq, bytes))
                }
                Packet::Ack { next, bits } => {
                    assert_eq!(data.len(), wire::ACK_LEN);
                    Some(ack(next, bits))
                }
                Packet::Disconnect { reason } => {
                    assert_eq!(data.len(), wire::DISCONNECT_LEN);
                    Some(wire::disconnect(reason))
                }
                Packet::Keepalive => Some(wire::keepalive()),
            };
            if let Some(rebuilt) = rebuilt {
                assert_eq!(rebuilt, data, "{packet:?} does not rebuild to its bytes");
                assert_eq!(Packet::parse(&rebuilt), Ok(packet));
            }
        }
        Err(WireError::Empty) => assert!(data.is_empty()),
        Err(WireError::UnknownKind(kind)) => {
            assert_eq!(kind, data[0]);
            assert!(!(1..=8).contains(&kind), "a documented kind {kind} reported unknown");
        }
        Err(WireError::BadLength { kind, len }) => {
            assert_eq!((kind, len), (data[0], data.len()));
            assert!((1..=8).contains(&kind));
            assert!(!accepted(kind, len), "kind {kind} of {len} bytes refused");
        }
        Err(WireError::BadMagic) => {
            assert_eq!(data[0], wire::REQUEST);
            assert!(accepted(data[0], data.len()));
            assert_ne!(&data[1..5], b"RLY1");
        }
        Err(WireError::BadPadding) => {
            assert_eq!((data[0], data.len(), &data[1..5]), (wire::REQUEST, wire::REQUEST_LEN, &b"RLY1"[..]));
            assert!(data[5..].iter().any(|&byte| byte != 0));
        }
        Err(other) => panic!("an error the target does not know: {other}"),
    }
    let challenge = match parsed {
        Ok(Packet::Challenge { bucket, cookie }) => Some((bucket, cookie)),
        _ => None,
    };
    assert_eq!(wire::parse_challenge(data), challenge);
});
