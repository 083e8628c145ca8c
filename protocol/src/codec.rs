//! The one place that knows how control messages become bytes.
//!
//! Control messages travel on a reliable ordered stream (the QUIC control
//! stream) as frames: a `u32` little-endian length, then that many payload
//! bytes. The payload is bincode 2 (standard config: varint integers) of the
//! message. The first frame in each direction is a *hello*: its payload starts
//! with the magic `RALY` and the sender's `u16` protocol version, so two peers of
//! different versions can always tell each other so, whatever else changed.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{DecodeError, PROTOCOL_VERSION};

/// Largest control frame payload accepted. Hellos and events are far smaller;
/// the limit bounds what a peer can make us buffer.
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;

/// First bytes of every hello payload.
pub const MAGIC: [u8; 4] = *b"RALY";

const LENGTH_PREFIX: usize = 4;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_CONTROL_FRAME>()
}

/// Appends one framed message to `out`.
pub fn encode_frame<T: Serialize>(message: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    write_payload(message, out);
    patch_length(out, start);
}

/// Appends one framed hello (magic, version, message) to `out`.
pub fn encode_hello_frame<T: Serialize>(message: &T, out: &mut Vec<u8>) {
    encode_hello_frame_with_version(PROTOCOL_VERSION, message, out);
}

/// Like [`encode_hello_frame`] with an explicit version; tests use it to play an old peer.
pub fn encode_hello_frame_with_version<T: Serialize>(version: u16, message: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    write_payload(message, out);
    patch_length(out, start);
}

fn write_payload<T: Serialize>(message: &T, out: &mut Vec<u8>) {
    // Our own message types always serialize: no maps with non-string keys, no
    // unsized sequences. A failure here is a programming error in this crate.
    let bytes = bincode::serde::encode_to_vec(message, config()).expect("control messages always serialize");
    out.extend_from_slice(&bytes);
}

fn patch_length(out: &mut [u8], start: usize) {
    let len = out.len() - start - LENGTH_PREFIX;
    assert!(len <= MAX_CONTROL_FRAME, "control message of {len} bytes exceeds MAX_CONTROL_FRAME");
    out[start..start + LENGTH_PREFIX].copy_from_slice(&(len as u32).to_le_bytes());
}

/// Decodes a frame payload (without its length prefix) as `T`.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let (message, used) = bincode::serde::decode_from_slice::<T, _>(payload, config())
        .map_err(|err| DecodeError::Control(err.to_string()))?;
    if used != payload.len() {
        return Err(DecodeError::Length);
    }
    Ok(message)
}

/// A hello payload split into the peer's version and its still-encoded body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello<'a> {
    /// The version the peer speaks.
    pub version: u16,
    /// The bincode body; decode it only if `version` is ours.
    pub body: &'a [u8],
}

impl<'a> Hello<'a> {
    /// Checks the magic and reads the version.
    pub fn parse(payload: &'a [u8]) -> Result<Self, DecodeError> {
        if payload.len() < MAGIC.len() + 2 {
            return Err(DecodeError::Truncated);
        }
        if payload[..4] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        Ok(Self { version: u16::from_le_bytes([payload[4], payload[5]]), body: &payload[6..] })
    }

    /// Decodes the body as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        decode_payload(self.body)
    }
}

/// Sans-IO reassembly of frames from stream chunks of any size.
///
/// Feed bytes with [`FrameReader::push`], then take complete payloads with
/// [`FrameReader::poll_frame`] until it returns `Ok(None)`. `poll_frame`
/// refuses a length over [`MAX_CONTROL_FRAME`] as soon as the prefix is in, so
/// a caller that polls after every push never buffers more than one chunk of
/// an oversized frame.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received stream bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete payload, `Ok(None)` if more bytes are needed.
    pub fn poll_frame(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        if self.buf.len() < LENGTH_PREFIX {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_CONTROL_FRAME {
            return Err(DecodeError::TooLarge { what: "control frame", got: len, limit: MAX_CONTROL_FRAME });
        }
        if self.buf.len() < LENGTH_PREFIX + len {
            return Ok(None);
        }
        let payload = self.buf[LENGTH_PREFIX..LENGTH_PREFIX + len].to_vec();
        self.buf.drain(..LENGTH_PREFIX + len);
        Ok(Some(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reassemble_from_single_bytes() {
        let mut bytes = Vec::new();
        encode_frame(&(1u8, "hello".to_string()), &mut bytes);
        encode_frame(&300u32, &mut bytes);
        let mut reader = FrameReader::new();
        let mut frames = Vec::new();
        for byte in &bytes {
            reader.push(std::slice::from_ref(byte));
            while let Some(frame) = reader.poll_frame().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(decode_payload::<(u8, String)>(&frames[0]).unwrap(), (1, "hello".to_string()));
        assert_eq!(decode_payload::<u32>(&frames[1]).unwrap(), 300);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn oversized_frames_are_refused_before_buffering() {
        let mut reader = FrameReader::new();
        reader.push(&(MAX_CONTROL_FRAME as u32 + 1).to_le_bytes());
        assert!(matches!(reader.poll_frame(), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn hello_carries_magic_and_version() {
        let mut bytes = Vec::new();
        encode_hello_frame_with_version(7, &5u8, &mut bytes);
        assert_eq!(bytes, [7, 0, 0, 0, b'R', b'A', b'L', b'Y', 7, 0, 5]);
        let hello = Hello::parse(&bytes[4..]).unwrap();
        assert_eq!(hello.version, 7);
        assert_eq!(hello.decode::<u8>().unwrap(), 5);
        assert_eq!(Hello::parse(b"RALX\x01\x00"), Err(DecodeError::BadMagic));
        assert_eq!(Hello::parse(b"RA"), Err(DecodeError::Truncated));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        assert_eq!(decode_payload::<u8>(&[5, 0]), Err(DecodeError::Length));
        assert!(matches!(decode_payload::<String>(&[0xff]), Err(DecodeError::Control(_))));
    }
}
