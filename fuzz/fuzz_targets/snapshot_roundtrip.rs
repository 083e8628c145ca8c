//! Structured: an arbitrary valid schema, a baseline and a snapshot clamped to
//! it, a tick distance within `MAX_BASELINE_DISTANCE`. Full and delta encodings
//! must decode to exactly the snapshot, inside a whole snapshot datagram too, and
//! the delta must be exactly as long as PROTOCOL.md section 8.4 says (each
//! changed field in the cheaper of its residual tier and the `111` escape).
//! Then the fuzzer's spare bytes are decoded as bodies of that schema (arbitrary
//! widths, signedness and predictions), which must not panic, also against a
//! baseline at an arbitrary distance, which must be refused outside 1..=255.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rally_protocol::datagram::{Datagram, MAX_BASELINE_DISTANCE, SnapshotHeader};
use rally_protocol::snapshot::MAX_FIELDS;
use rally_protocol::{DecodeError, FieldSpec, Schema, Snapshot};

#[derive(Arbitrary, Debug)]
struct Field {
    bits: u8,
    signed: bool,
    predict: Option<(u8, u8)>,
}

#[derive(Arbitrary, Debug)]
struct Case {
    fields: Vec<Field>,
    baseline: Vec<i32>,
    values: Vec<i32>,
    baseline_tick: u32,
    distance: u8,
    input_lead: i32,
    probe_tick: u32,
    garbage: Vec<u8>,
}

fn build_schema(fields: &[Field]) -> Option<Schema> {
    if fields.is_empty() {
        return None;
    }
    let fields = &fields[..fields.len().min(MAX_FIELDS)];
    let n_fields = fields.len();
    // A field may be a velocity source only if it is not itself predicted.
    let wants: Vec<Option<(usize, u8)>> = fields
        .iter()
        .enumerate()
        .map(|(idx, field)| {
            let (source, shift) = field.predict?;
            let source = usize::from(source) % n_fields;
            (source != idx).then_some((source, shift % 32))
        })
        .collect();
    let specs = fields
        .iter()
        .enumerate()
        .map(|(idx, field)| {
            let name = format!("f{idx}");
            // Signed fields are 1 to 32 bits wide, unsigned ones 1 to 31.
            let bits = if field.signed { field.bits % 32 + 1 } else { field.bits % 31 + 1 };
            let spec = if field.signed { FieldSpec::signed(&name, bits) } else { FieldSpec::unsigned(&name, bits) };
            match wants[idx] {
                Some((source, shift)) if wants[source].is_none() => spec.predicted_by(source as u8, shift),
                _ => spec,
            }
        })
        .collect();
    Some(Schema::new(specs).expect("the fuzz schema builder only makes valid schemas"))
}

fn clamped(schema: &Schema, values: &[i32], tick: u32) -> Snapshot {
    let mut values: Vec<i32> = (0..schema.len()).map(|idx| values.get(idx).copied().unwrap_or(0)).collect();
    schema.clamp(&mut values);
    Snapshot { tick, values }
}

/// Bits of a delta body per PROTOCOL.md section 8.4, computed independently of
/// `encode_delta`: a mask bit per field, and per changed field the prefix tier
/// of `c = zigzag(r) - 1`, or the escape (3 + width) when that is fewer bits.
fn spec_delta_bits(schema: &Schema, baseline: &Snapshot, snapshot: &Snapshot) -> usize {
    let dt = i64::from(snapshot.tick - baseline.tick);
    let mut total = 0;
    for (idx, field) in schema.fields().iter().enumerate() {
        total += 1;
        let base = i64::from(baseline.values[idx]);
        let predicted = match field.predict {
            Some(p) => base + ((i64::from(baseline.values[usize::from(p.velocity_field)]) * dt) >> p.shift),
            None => base,
        };
        let residual = i64::from(snapshot.values[idx]) - predicted;
        if residual == 0 {
            continue;
        }
        let code = ((residual << 1) ^ (residual >> 63)) as u64 - 1;
        let escape = 3 + usize::from(field.bits);
        let tier = match code {
            0..16 => 5,
            16..256 => 10,
            256..4096 => 15,
            _ => usize::MAX,
        };
        total += if escape < tier { escape } else { tier };
    }
    total
}

fuzz_target!(|case: Case| {
    let Some(schema) = build_schema(&case.fields) else {
        return;
    };
    let distance = u32::from(case.distance) % MAX_BASELINE_DISTANCE + 1;
    let Some(tick) = case.baseline_tick.checked_add(distance) else {
        return;
    };
    let baseline = clamped(&schema, &case.baseline, case.baseline_tick);
    let snapshot = clamped(&schema, &case.values, tick);

    let mut full = Vec::new();
    schema.encode_full(&snapshot, &mut full);
    assert_eq!(full.len(), schema.full_bits().div_ceil(8));
    assert_eq!(schema.decode_full(tick, &full).as_ref(), Ok(&snapshot), "full round trip");

    let mut delta = Vec::new();
    schema.encode_delta(&baseline, &snapshot, &mut delta);
    assert_eq!(schema.decode_delta(&baseline, tick, &delta).as_ref(), Ok(&snapshot), "delta round trip");
    // The encoder picks the cheaper of tier and escape, so the body is exactly the
    // documented size, and never more than a mask bit plus the escape per field.
    let expected_bits = spec_delta_bits(&schema, &baseline, &snapshot);
    assert_eq!(delta.len(), expected_bits.div_ceil(8), "delta size differs from PROTOCOL.md 8.4");
    let worst: usize = schema.fields().iter().map(|field| 1 + 3 + usize::from(field.bits)).sum();
    assert!(expected_bits <= worst);

    let header = SnapshotHeader { tick, baseline: Some(case.baseline_tick), input_lead: case.input_lead };
    let mut datagram = Vec::new();
    header.encode(&mut datagram);
    datagram.extend_from_slice(&delta);
    match Datagram::decode(&datagram) {
        Ok(Datagram::Snapshot(got, body)) => {
            assert_eq!(got, header);
            assert_eq!(schema.decode_delta(&baseline, got.tick, body).as_ref(), Ok(&snapshot));
        }
        other => panic!("own snapshot datagram decoded as {other:?}"),
    }

    // Garbage bodies under this schema: errors are fine, panics are not.
    let _ = schema.decode_full(tick, &case.garbage);
    let _ = schema.decode_delta(&baseline, tick, &case.garbage);

    // A baseline outside 1..=MAX_BASELINE_DISTANCE ticks before the snapshot is
    // refused before any body bit is read (and never overflows the prediction).
    let probe_distance = case.probe_tick.wrapping_sub(case.baseline_tick);
    let probed = schema.decode_delta(&baseline, case.probe_tick, &case.garbage);
    if probe_distance == 0 || probe_distance > MAX_BASELINE_DISTANCE {
        assert_eq!(probed, Err(DecodeError::Baseline), "distance {probe_distance} accepted");
    } else {
        assert_ne!(probed, Err(DecodeError::Baseline), "distance {probe_distance} refused");
    }
});
