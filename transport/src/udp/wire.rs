//! Packet kinds, fixed sizes and the one parser of the raw UDP wire format
//! (PROTOCOL.md §13). Every packet starts with a kind byte; integers are
//! little-endian.

/// Client → shard: asks for a cookie; padded to [`REQUEST_LEN`].
pub const REQUEST: u8 = 1;
/// Shard → client: `[kind][bucket u64][cookie 16]`.
pub const CHALLENGE: u8 = 2;
/// Client → shard: `[kind][bucket u64][cookie 16][hello frame]`.
pub const CONNECT: u8 = 3;
/// Either way: `[kind][game datagram]`.
pub const DATAGRAM: u8 = 4;
/// Either way: `[kind][seq u32][control stream bytes]`.
pub const SEGMENT: u8 = 5;
/// Either way: `[kind][next expected seq u32][received-beyond bitfield, ACK_BITS bits]`.
pub const ACK: u8 = 6;
/// Either way: `[kind][reason u16]`, 0 for a normal end.
pub const DISCONNECT: u8 = 7;
/// Either way: `[kind]`, sent when nothing else was sent for a while.
pub const KEEPALIVE: u8 = 8;
/// Magic after the kind byte of a request, so stray traffic is told apart.
pub const MAGIC: [u8; 4] = *b"RLY1";
/// Size a request must have: larger than any reply before the cookie is proven.
pub const REQUEST_LEN: usize = 256;
/// Size of a challenge.
pub const CHALLENGE_LEN: usize = 1 + 8 + COOKIE_LEN;
/// Bytes of a cookie.
pub const COOKIE_LEN: usize = 16;
/// Largest control-stream chunk in one segment.
pub const SEGMENT_MAX: usize = 1024;
/// Segments beyond `next` an ack reports: as many as a sender keeps in
/// flight, so nothing received is ever resent for want of a bit.
pub const ACK_BITS: usize = 256;
/// Size of an ack.
pub const ACK_LEN: usize = 1 + 4 + ACK_BITS / 8;
/// Size of a disconnect.
pub const DISCONNECT_LEN: usize = 3;

/// A handshake cookie: proof that the sender receives at its source address.
pub type Cookie = [u8; COOKIE_LEN];

/// One parsed packet, borrowing from the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A padded cookie request.
    Request,
    /// The shard's answer to a request.
    Challenge {
        /// The time bucket the cookie was made in.
        bucket: u64,
        /// The cookie to echo.
        cookie: Cookie,
    },
    /// The cookie echoed with the client's hello frame.
    Connect {
        /// The bucket of the echoed cookie.
        bucket: u64,
        /// The echoed cookie.
        cookie: Cookie,
        /// The hello frame (length-prefixed, as on QUIC's control stream).
        hello: &'a [u8],
    },
    /// A game datagram.
    Datagram(&'a [u8]),
    /// A chunk of the reliable control stream.
    Segment {
        /// Its sequence number.
        seq: u32,
        /// Its stream bytes.
        bytes: &'a [u8],
    },
    /// Acknowledges the control stream up to `next` and the segments in `bits`.
    Ack {
        /// The next sequence number the receiver expects.
        next: u32,
        /// Bit `i` (byte `i / 8`, bit `i % 8`): segment `next + 1 + i` arrived.
        bits: &'a [u8; ACK_BITS / 8],
    },
    /// The end of the connection.
    Disconnect {
        /// A `DisconnectReason` code, 0 for a normal end.
        reason: u16,
    },
    /// Keeps an idle link open.
    Keepalive,
}

/// Why received bytes are not a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Nothing was received.
    #[error("empty packet")]
    Empty,
    /// The kind byte names no packet.
    #[error("unknown packet kind {0}")]
    UnknownKind(u8),
    /// The packet is shorter or longer than its kind allows.
    #[error("packet of kind {kind} has the wrong length {len}")]
    BadLength {
        /// The kind byte.
        kind: u8,
        /// The packet's length.
        len: usize,
    },
    /// A request without the magic.
    #[error("request without the RLY1 magic")]
    BadMagic,
    /// A request whose padding is not all zeros (reserved for later versions).
    #[error("request padding is not all zeros")]
    BadPadding,
}

fn u32_at(packet: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&packet[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn u64_at(packet: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&packet[at..at + 8]);
    u64::from_le_bytes(bytes)
}

fn cookie_at(packet: &[u8], at: usize) -> Cookie {
    let mut cookie = [0u8; COOKIE_LEN];
    cookie.copy_from_slice(&packet[at..at + COOKIE_LEN]);
    cookie
}

impl<'a> Packet<'a> {
    /// Parses untrusted bytes. Every length is checked before it is read, so
    /// no input panics (`fuzz/fuzz_targets/udp_packet.rs`).
    pub fn parse(packet: &'a [u8]) -> Result<Self, WireError> {
        let (&kind, _) = packet.split_first().ok_or(WireError::Empty)?;
        let len = packet.len();
        let bad_length = WireError::BadLength { kind, len };
        match kind {
            REQUEST => {
                if len != REQUEST_LEN {
                    return Err(bad_length);
                }
                if packet[1..5] != MAGIC {
                    return Err(WireError::BadMagic);
                }
                if packet[5..].iter().any(|&byte| byte != 0) {
                    return Err(WireError::BadPadding);
                }
                Ok(Self::Request)
            }
            CHALLENGE if len == CHALLENGE_LEN => {
                Ok(Self::Challenge { bucket: u64_at(packet, 1), cookie: cookie_at(packet, 9) })
            }
            CONNECT if len >= 1 + 8 + COOKIE_LEN => Ok(Self::Connect {
                bucket: u64_at(packet, 1),
                cookie: cookie_at(packet, 9),
                hello: &packet[9 + COOKIE_LEN..],
            }),
            DATAGRAM => Ok(Self::Datagram(&packet[1..])),
            SEGMENT if len >= 5 => Ok(Self::Segment { seq: u32_at(packet, 1), bytes: &packet[5..] }),
            ACK if len == ACK_LEN => {
                let bits = packet[5..].try_into().map_err(|_| bad_length)?;
                Ok(Self::Ack { next: u32_at(packet, 1), bits })
            }
            DISCONNECT if len == DISCONNECT_LEN => {
                Ok(Self::Disconnect { reason: u16::from_le_bytes([packet[1], packet[2]]) })
            }
            KEEPALIVE if len == 1 => Ok(Self::Keepalive),
            CHALLENGE | CONNECT | SEGMENT | ACK | DISCONNECT | KEEPALIVE => Err(bad_length),
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

/// The `(bucket, cookie)` of a challenge, if `packet` is one (for clients
/// that wait for nothing else).
pub fn parse_challenge(packet: &[u8]) -> Option<(u64, Cookie)> {
    match Packet::parse(packet) {
        Ok(Packet::Challenge { bucket, cookie }) => Some((bucket, cookie)),
        _ => None,
    }
}

/// A padded cookie request.
pub fn request() -> Vec<u8> {
    let mut packet = vec![0u8; REQUEST_LEN];
    packet[0] = REQUEST;
    packet[1..5].copy_from_slice(&MAGIC);
    packet
}

/// A challenge packet.
pub fn challenge(bucket: u64, cookie: &Cookie) -> Vec<u8> {
    let mut packet = Vec::with_capacity(CHALLENGE_LEN);
    packet.push(CHALLENGE);
    packet.extend_from_slice(&bucket.to_le_bytes());
    packet.extend_from_slice(cookie);
    packet
}

/// A connect packet carrying the cookie and the hello frame.
pub fn connect(bucket: u64, cookie: &Cookie, hello_frame: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(1 + 8 + COOKIE_LEN + hello_frame.len());
    packet.push(CONNECT);
    packet.extend_from_slice(&bucket.to_le_bytes());
    packet.extend_from_slice(cookie);
    packet.extend_from_slice(hello_frame);
    packet
}

/// A game datagram packet.
pub fn datagram(payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(1 + payload.len());
    packet.push(DATAGRAM);
    packet.extend_from_slice(payload);
    packet
}

/// A disconnect packet.
pub fn disconnect(reason: u16) -> Vec<u8> {
    let mut packet = vec![DISCONNECT];
    packet.extend_from_slice(&reason.to_le_bytes());
    packet
}

/// A keepalive packet.
pub fn keepalive() -> Vec<u8> {
    vec![KEEPALIVE]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_packet_round_trips_through_the_parser() {
        let cookie = [7u8; COOKIE_LEN];
        assert_eq!(Packet::parse(&request()), Ok(Packet::Request));
        let mut padded = request();
        padded[REQUEST_LEN - 1] = 1;
        assert_eq!(Packet::parse(&padded), Err(WireError::BadPadding), "padding must be zeros");
        assert_eq!(Packet::parse(&challenge(42, &cookie)), Ok(Packet::Challenge { bucket: 42, cookie }));
        assert_eq!(
            Packet::parse(&connect(9, &cookie, b"hello")),
            Ok(Packet::Connect { bucket: 9, cookie, hello: b"hello" })
        );
        assert_eq!(Packet::parse(&datagram(b"dg")), Ok(Packet::Datagram(b"dg")));
        assert_eq!(Packet::parse(&disconnect(513)), Ok(Packet::Disconnect { reason: 513 }));
        assert_eq!(Packet::parse(&keepalive()), Ok(Packet::Keepalive));
        assert!(request().len() > CHALLENGE_LEN, "a request outweighs its answer: no amplification");
    }

    #[test]
    fn malformed_packets_say_what_is_wrong() {
        assert_eq!(Packet::parse(&[]), Err(WireError::Empty));
        assert_eq!(Packet::parse(&[99]), Err(WireError::UnknownKind(99)));
        assert_eq!(Packet::parse(&[CHALLENGE]), Err(WireError::BadLength { kind: CHALLENGE, len: 1 }));
        assert_eq!(Packet::parse(&[CONNECT, 1]), Err(WireError::BadLength { kind: CONNECT, len: 2 }));
        assert_eq!(Packet::parse(&[ACK, 1, 2]), Err(WireError::BadLength { kind: ACK, len: 3 }));
        assert_eq!(Packet::parse(&[REQUEST; 10]), Err(WireError::BadLength { kind: REQUEST, len: 10 }));
        let mut unmagic = request();
        unmagic[2] = b'X';
        assert_eq!(Packet::parse(&unmagic), Err(WireError::BadMagic));
    }
}
