//! The control stream: `FrameReader` fed the input in chunks of varying size,
//! every frame through `Hello::parse` and `decode_payload` as each of the four
//! message enums, and the raw input through the same decoders directly (so
//! bincode is reached without a valid length prefix).
//!
//! Whatever decodes must re-encode to a frame that decodes to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rally_protocol::codec::{FrameReader, Hello, MAX_CONTROL_FRAME, decode_payload, encode_frame};
use rally_protocol::control::{ClientHello, ClientMessage, ServerHello, ServerMessage};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(payload: &[u8]) {
    let Ok(message) = decode_payload::<T>(payload) else {
        return;
    };
    let mut frame = Vec::new();
    encode_frame(&message, &mut frame);
    // bincode accepts overlong varints, so the canonical form is never longer.
    assert!(frame.len() <= payload.len() + 4, "canonical re-encoding is longer than the input");
    let mut reader = FrameReader::new();
    reader.push(&frame);
    let again = reader.poll_frame().expect("own frame is valid").expect("own frame is complete");
    assert_eq!(decode_payload::<T>(&again).as_ref(), Ok(&message));
}

fn check_all(payload: &[u8]) {
    check::<ClientHello>(payload);
    check::<ServerHello>(payload);
    check::<ClientMessage>(payload);
    check::<ServerMessage>(payload);
    if let Ok(hello) = Hello::parse(payload) {
        assert_eq!(&payload[..4], b"RALY");
        assert_eq!(hello.body.len() + 6, payload.len());
        let _ = hello.decode::<ClientHello>();
        let _ = hello.decode::<ServerHello>();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    check_all(stream);

    // Chunk sizes from a tiny xorshift seeded by the first byte: 1 to 64 bytes.
    let mut state = u32::from(seed) | 0x100;
    let mut reader = FrameReader::new();
    let mut pushed = 0usize;
    let mut framed = 0usize;
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let take = (state as usize % 64 + 1).min(rest.len());
        reader.push(&rest[..take]);
        pushed += take;
        rest = &rest[take..];
        loop {
            match reader.poll_frame() {
                Ok(Some(payload)) => {
                    assert!(payload.len() <= MAX_CONTROL_FRAME);
                    framed += 4 + payload.len();
                    check_all(&payload);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert_eq!(framed + reader.buffered(), pushed, "the frame reader lost or invented bytes");
    }
});
