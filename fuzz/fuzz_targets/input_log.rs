//! Input logs (`.replay` files, which `rally sim` replays from disk):
//! `InputLog::decode` on raw bytes. Whatever decodes must re-encode to bytes
//! that decode to the same log, no longer than the input (bincode accepts
//! overlong varints, the encoder writes the shortest form), and re-encoding
//! that is a fixed point with the same digest.
//!
//! Short Pong logs are also replayed, since a replay runs whatever a decoded
//! file holds: it must not panic, and when it succeeds it reports one hash per
//! step and replays identically a second time.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rally_sim::PongWorld;
use rally_sim::game::Game;
use rally_sim::replay::{InputLog, MAX_LOG_BYTES, replay};

/// Longest log replayed per input, to keep executions fast.
const MAX_FUZZ_REPLAY_TICKS: u32 = 512;

fuzz_target!(|data: &[u8]| {
    let Ok(log) = InputLog::decode(data) else {
        return;
    };
    let bytes = log.encode().expect("a decoded log re-encodes within the size limit");
    assert!(bytes.len() <= data.len(), "canonical re-encoding is longer than the input");
    assert!(bytes.len() <= MAX_LOG_BYTES);
    let again = InputLog::decode(&bytes).expect("a re-encoded log decodes");
    assert_eq!(again, log, "decode(encode(log)) differs from log");
    assert_eq!(again.encode().as_deref(), Ok(bytes.as_slice()), "re-encoding is not a fixed point");
    assert_eq!(again.digest(), log.digest());

    if log.game == PongWorld::NAME && log.end_tick <= MAX_FUZZ_REPLAY_TICKS {
        let first = replay::<PongWorld>(&log);
        if let Ok(report) = &first {
            assert_eq!(report.hashes.len(), log.end_tick as usize, "one hash per step");
        }
        assert_eq!(replay::<PongWorld>(&log), first, "a replay is not deterministic");
    }
});
