//! Every datagram a shard or client receives: `Datagram::decode`, then the
//! snapshot body with a fixed Pong-like schema against a fixed baseline.
//!
//! Besides "never panics", it checks that whatever decodes is in range and
//! survives a re-encode unchanged (decode ∘ encode ∘ decode = decode).

#![no_main]

use libfuzzer_sys::fuzz_target;
use rally_fuzz::{assert_in_range, pong_baseline, pong_schema};
use rally_protocol::MAX_DATAGRAM;
use rally_protocol::datagram::{Datagram, MAX_BASELINE_DISTANCE, MAX_INPUTS_PER_DATAGRAM};

fuzz_target!(|data: &[u8]| {
    let Ok(datagram) = Datagram::decode(data) else {
        return;
    };
    assert!(data.len() <= MAX_DATAGRAM);
    match datagram {
        Datagram::Input(input) => {
            assert!((1..=MAX_INPUTS_PER_DATAGRAM).contains(&input.inputs.len()));
            for (age, (tick, value)) in input.ticked_inputs().enumerate() {
                assert_eq!(u64::from(tick) + age as u64, u64::from(input.newest_tick));
                assert_eq!(value, input.inputs[age]);
            }
            let mut bytes = Vec::new();
            input.encode(&mut bytes);
            assert!(bytes.len() <= data.len(), "canonical re-encoding is longer than the input");
            assert_eq!(Datagram::decode(&bytes), Ok(Datagram::Input(input)));
        }
        Datagram::Snapshot(header, body) => {
            if let Some(baseline) = header.baseline {
                let distance = header.tick - baseline;
                assert!((1..=MAX_BASELINE_DISTANCE).contains(&distance));
            }
            let mut bytes = Vec::new();
            header.encode(&mut bytes);
            bytes.extend_from_slice(body);
            assert_eq!(Datagram::decode(&bytes), Ok(Datagram::Snapshot(header.clone(), body)));

            let schema = pong_schema();
            match header.baseline {
                None => {
                    let Ok(snapshot) = schema.decode_full(header.tick, body) else {
                        return;
                    };
                    assert_in_range(&schema, &snapshot);
                    let mut again = Vec::new();
                    schema.encode_full(&snapshot, &mut again);
                    assert_eq!(again.len(), body.len());
                    assert_eq!(schema.decode_full(header.tick, &again), Ok(snapshot));
                }
                Some(baseline_tick) => {
                    let baseline = pong_baseline(baseline_tick);
                    let Ok(snapshot) = schema.decode_delta(&baseline, header.tick, body) else {
                        return;
                    };
                    assert_in_range(&schema, &snapshot);
                    let mut again = Vec::new();
                    schema.encode_delta(&baseline, &snapshot, &mut again);
                    assert_eq!(schema.decode_delta(&baseline, header.tick, &again), Ok(snapshot));
                }
            }
        }
    }
});
