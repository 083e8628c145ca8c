//! Quantized game state and its bit-packed delta encoding.
//!
//! The shard does not know the game. A game describes the per-seat view it sends
//! to clients as a [`Schema`]: an ordered list of integer fields, each with a bit
//! width and optionally a linear prediction from another field (a position
//! predicted from its velocity). A [`Snapshot`] is one such view at one tick.
//!
//! A snapshot is sent either in full (every field in its bit width) or as a delta
//! against a baseline the client acknowledged: a change mask, then for each
//! changed field the residual against the prediction in a short prefix code. A
//! ball flying in a straight line costs zero bits beyond its mask bit.
//! PROTOCOL.md gives the exact layout.

use serde::{Deserialize, Serialize};

use crate::bits::{BitReader, BitWriter, unzigzag, zigzag};
use crate::datagram::MAX_BASELINE_DISTANCE;
use crate::{DecodeError, Tick};

/// Most fields a schema may hold; keeps the change mask and decode work bounded.
pub const MAX_FIELDS: usize = 64;

/// Longest field name accepted in a schema (bytes).
pub const MAX_FIELD_NAME: usize = 32;

/// How a field's value is predicted from the baseline before the residual is coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prediction {
    /// Index of the field holding this field's velocity, in units of `2^shift`
    /// of this field per tick.
    pub velocity_field: u8,
    /// Right shift applied to `velocity × ticks` (arithmetic, rounds toward −∞).
    pub shift: u8,
}

/// One integer field of a schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// Human-readable name, for debugging and other-language clients.
    pub name: String,
    /// Width on the wire in a full snapshot, 1 to 32 bits.
    pub bits: u8,
    /// Whether the value is two's complement in `bits` bits.
    pub signed: bool,
    /// Optional linear prediction used by delta snapshots.
    pub predict: Option<Prediction>,
}

impl FieldSpec {
    /// An unsigned field without prediction.
    pub fn unsigned(name: &str, bits: u8) -> Self {
        Self { name: name.to_owned(), bits, signed: false, predict: None }
    }

    /// A signed field without prediction.
    pub fn signed(name: &str, bits: u8) -> Self {
        Self { name: name.to_owned(), bits, signed: true, predict: None }
    }

    /// Adds a linear prediction from `velocity_field`.
    pub fn predicted_by(mut self, velocity_field: u8, shift: u8) -> Self {
        self.predict = Some(Prediction { velocity_field, shift });
        self
    }

    /// Smallest representable value.
    pub fn min(&self) -> i64 {
        if self.signed { -(1i64 << (self.bits - 1)) } else { 0 }
    }

    /// Largest representable value.
    pub fn max(&self) -> i64 {
        if self.signed { (1i64 << (self.bits - 1)) - 1 } else { (1i64 << self.bits) - 1 }
    }

    fn to_raw(&self, value: i32) -> u32 {
        (value as u32) & mask(self.bits)
    }

    fn sign_extend(&self, raw: u32) -> i32 {
        if self.signed && self.bits < 32 && raw & (1 << (self.bits - 1)) != 0 {
            (raw | !mask(self.bits)) as i32
        } else {
            raw as i32
        }
    }
}

fn mask(bits: u8) -> u32 {
    if bits >= 32 { u32::MAX } else { (1u32 << bits) - 1 }
}

/// Errors describing why a schema is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaError {
    /// A schema needs between 1 and [`MAX_FIELDS`] fields.
    #[error("a schema needs 1 to {MAX_FIELDS} fields, got {0}")]
    FieldCount(usize),
    /// A field's width is outside 1..=32 bits (1..=31 when unsigned).
    #[error("field {name:?} has {bits} bits; widths are 1 to 32 signed, 1 to 31 unsigned")]
    Width {
        /// The field's name.
        name: String,
        /// The width given.
        bits: u8,
    },
    /// A field name is empty or longer than [`MAX_FIELD_NAME`].
    #[error("field name {0:?} must be 1 to {MAX_FIELD_NAME} bytes")]
    Name(String),
    /// A prediction refers to a missing field, to itself, or to a predicted field.
    #[error("field {0:?} predicts from a field that is missing, itself, or itself predicted")]
    Prediction(String),
}

/// A validated, ordered list of fields: the shape of one game's per-seat view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<FieldSpec>", into = "Vec<FieldSpec>")]
pub struct Schema {
    fields: Vec<FieldSpec>,
}

impl TryFrom<Vec<FieldSpec>> for Schema {
    type Error = SchemaError;

    fn try_from(fields: Vec<FieldSpec>) -> Result<Self, SchemaError> {
        Self::new(fields)
    }
}

impl From<Schema> for Vec<FieldSpec> {
    fn from(schema: Schema) -> Self {
        schema.fields
    }
}

impl Schema {
    /// Validates field widths, names and prediction links.
    pub fn new(fields: Vec<FieldSpec>) -> Result<Self, SchemaError> {
        if fields.is_empty() || fields.len() > MAX_FIELDS {
            return Err(SchemaError::FieldCount(fields.len()));
        }
        for (idx, field) in fields.iter().enumerate() {
            // Values are i32: an unsigned field of 32 bits could hold values no i32 can.
            if field.bits == 0 || field.bits > 32 || (field.bits == 32 && !field.signed) {
                return Err(SchemaError::Width { name: field.name.clone(), bits: field.bits });
            }
            if field.name.is_empty() || field.name.len() > MAX_FIELD_NAME {
                return Err(SchemaError::Name(field.name.clone()));
            }
            if let Some(prediction) = field.predict {
                let source = usize::from(prediction.velocity_field);
                let valid =
                    source != idx && source < fields.len() && fields[source].predict.is_none() && prediction.shift < 32;
                if !valid {
                    return Err(SchemaError::Prediction(field.name.clone()));
                }
            }
        }
        Ok(Self { fields })
    }

    /// The fields in wire order.
    pub fn fields(&self) -> &[FieldSpec] {
        &self.fields
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Always false: a schema holds at least one field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Index of the field called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|field| field.name == name)
    }

    /// Clamps each value into its field's range, so any game state can be encoded.
    pub fn clamp(&self, values: &mut [i32]) {
        for (value, field) in values.iter_mut().zip(&self.fields) {
            *value = i64::from(*value).clamp(field.min(), field.max()) as i32;
        }
    }

    /// Bits a full encoding of the body takes.
    pub fn full_bits(&self) -> usize {
        self.fields.iter().map(|field| usize::from(field.bits)).sum()
    }

    fn predicted(&self, baseline: &Snapshot, idx: usize, dt: i64) -> i64 {
        let base = i64::from(baseline.values[idx]);
        match self.fields[idx].predict {
            Some(p) => base + ((i64::from(baseline.values[usize::from(p.velocity_field)]) * dt) >> p.shift),
            None => base,
        }
    }

    /// Writes every field in its full width.
    pub fn encode_full(&self, snapshot: &Snapshot, out: &mut Vec<u8>) {
        debug_assert_eq!(snapshot.values.len(), self.fields.len());
        let mut writer = BitWriter::new(out);
        for (field, &value) in self.fields.iter().zip(&snapshot.values) {
            writer.write(field.to_raw(value), u32::from(field.bits));
        }
        writer.finish();
    }

    /// Writes `snapshot` as a delta against `baseline`, an earlier tick the peer
    /// holds, at most [`MAX_BASELINE_DISTANCE`] ticks older.
    pub fn encode_delta(&self, baseline: &Snapshot, snapshot: &Snapshot, out: &mut Vec<u8>) {
        debug_assert!(baseline.tick < snapshot.tick && snapshot.tick - baseline.tick <= MAX_BASELINE_DISTANCE);
        let dt = i64::from(snapshot.tick.wrapping_sub(baseline.tick));
        let mut writer = BitWriter::new(out);
        let mut residuals = [0i64; MAX_FIELDS];
        for (idx, &value) in snapshot.values.iter().enumerate() {
            residuals[idx] = i64::from(value) - self.predicted(baseline, idx, dt);
            writer.write_bit(residuals[idx] != 0);
        }
        for (idx, field) in self.fields.iter().enumerate() {
            let residual = residuals[idx];
            if residual == 0 {
                continue;
            }
            // Residuals are never zero here, so code `zigzag - 1` to gain one value per tier.
            // A narrow field may be cheaper to send whole than as a large residual.
            let code = zigzag(residual) - 1;
            let tier_bits = if code < 1 << 4 {
                5
            } else if code < 1 << 8 {
                10
            } else if code < 1 << 12 {
                15
            } else {
                u32::MAX
            };
            if 3 + u32::from(field.bits) < tier_bits {
                writer.write(0b111, 3);
                writer.write(field.to_raw(snapshot.values[idx]), u32::from(field.bits));
            } else if code < 1 << 4 {
                writer.write(0b0, 1);
                writer.write(code as u32, 4);
            } else if code < 1 << 8 {
                writer.write(0b01, 2);
                writer.write(code as u32, 8);
            } else if code < 1 << 12 {
                writer.write(0b011, 3);
                writer.write(code as u32, 12);
            } else {
                writer.write(0b111, 3);
                writer.write(field.to_raw(snapshot.values[idx]), u32::from(field.bits));
            }
        }
        writer.finish();
    }

    /// Reads a full body written by [`Schema::encode_full`].
    pub fn decode_full(&self, tick: Tick, bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        if bytes.len() != self.full_bits().div_ceil(8) {
            return Err(DecodeError::Length);
        }
        let mut reader = BitReader::new(bytes);
        let mut values = Vec::with_capacity(self.fields.len());
        for field in &self.fields {
            values.push(field.sign_extend(reader.read(u32::from(field.bits))?));
        }
        Ok(Snapshot { tick, values })
    }

    /// Reads a delta body written by [`Schema::encode_delta`] against `baseline`.
    pub fn decode_delta(&self, baseline: &Snapshot, tick: Tick, bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        let distance = tick.wrapping_sub(baseline.tick);
        if baseline.values.len() != self.fields.len() || distance == 0 || distance > MAX_BASELINE_DISTANCE {
            return Err(DecodeError::Baseline);
        }
        let dt = i64::from(tick.wrapping_sub(baseline.tick));
        let mut reader = BitReader::new(bytes);
        let mut changed = 0u64;
        for idx in 0..self.fields.len() {
            if reader.read_bit()? {
                changed |= 1 << idx;
            }
        }
        let mut values = Vec::with_capacity(self.fields.len());
        for (idx, field) in self.fields.iter().enumerate() {
            let predicted = self.predicted(baseline, idx, dt);
            if changed & (1 << idx) == 0 {
                values.push(checked_value(field, predicted)?);
                continue;
            }
            let code_bits = if !reader.read_bit()? {
                4
            } else if !reader.read_bit()? {
                8
            } else if !reader.read_bit()? {
                12
            } else {
                values.push(field.sign_extend(reader.read(u32::from(field.bits))?));
                continue;
            };
            let residual = unzigzag(u64::from(reader.read(code_bits)?) + 1);
            values.push(checked_value(field, predicted + residual)?);
        }
        if reader.remaining_bytes() != 0 {
            return Err(DecodeError::Length);
        }
        Ok(Snapshot { tick, values })
    }
}

fn checked_value(field: &FieldSpec, value: i64) -> Result<i32, DecodeError> {
    if value < field.min() || value > field.max() {
        return Err(DecodeError::OutOfRange);
    }
    Ok(value as i32)
}

/// One per-seat view of a match at one tick, already quantized to its schema.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// The server tick this view was taken after.
    pub tick: Tick,
    /// One value per schema field, in schema order.
    pub values: Vec<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pong_like() -> Schema {
        Schema::new(vec![
            FieldSpec::unsigned("phase", 3),
            FieldSpec::signed("ball_vx", 12),
            FieldSpec::signed("ball_vy", 12),
            FieldSpec::unsigned("ball_x", 13).predicted_by(1, 0),
            FieldSpec::unsigned("ball_y", 13).predicted_by(2, 0),
            FieldSpec::unsigned("score_0", 5),
            FieldSpec::unsigned("score_1", 5),
            FieldSpec::signed("wide", 32),
        ])
        .unwrap()
    }

    fn snapshot_strategy(schema: Schema) -> impl Strategy<Value = Snapshot> {
        let ranges: Vec<_> = schema.fields().iter().map(|f| (f.min() as i32)..=(f.max() as i32)).collect();
        (0u32..1_000_000, ranges).prop_map(|(tick, values)| Snapshot { tick, values })
    }

    proptest! {
        #[test]
        fn full_round_trips(snapshot in snapshot_strategy(pong_like())) {
            let schema = pong_like();
            let mut bytes = Vec::new();
            schema.encode_full(&snapshot, &mut bytes);
            prop_assert_eq!(bytes.len(), schema.full_bits().div_ceil(8));
            prop_assert_eq!(schema.decode_full(snapshot.tick, &bytes).unwrap(), snapshot);
        }

        #[test]
        fn delta_applies_to_its_baseline(
            a in snapshot_strategy(pong_like()),
            b in snapshot_strategy(pong_like()),
            dt in 1u32..=255,
        ) {
            let schema = pong_like();
            let b = Snapshot { tick: a.tick + dt, ..b };
            let mut bytes = Vec::new();
            schema.encode_delta(&a, &b, &mut bytes);
            prop_assert_eq!(schema.decode_delta(&a, b.tick, &bytes).unwrap(), b);
        }

        #[test]
        fn small_changes_round_trip(a in snapshot_strategy(pong_like()), deltas in proptest::collection::vec(-5000i32..5000, 8)) {
            let schema = pong_like();
            let mut values: Vec<i32> = a.values.iter().zip(&deltas).map(|(v, d)| v.saturating_add(*d)).collect();
            schema.clamp(&mut values);
            let b = Snapshot { tick: a.tick + 2, values };
            let mut bytes = Vec::new();
            schema.encode_delta(&a, &b, &mut bytes);
            prop_assert_eq!(schema.decode_delta(&a, b.tick, &bytes).unwrap(), b);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), a in snapshot_strategy(pong_like())) {
            let schema = pong_like();
            let _ = schema.decode_full(1, &bytes);
            let _ = schema.decode_delta(&a, a.tick + 1, &bytes);
        }
    }

    #[test]
    fn straight_flight_costs_only_the_mask() {
        let schema = pong_like();
        let a = Snapshot { tick: 10, values: vec![2, 30, -7, 1000, 2000, 3, 4, -1] };
        let b = Snapshot { tick: 12, values: vec![2, 30, -7, 1060, 1986, 3, 4, -1] };
        let mut bytes = Vec::new();
        schema.encode_delta(&a, &b, &mut bytes);
        assert_eq!(bytes, vec![0u8], "eight mask bits, all clear");
    }

    #[test]
    fn prefix_code_tiers_are_pinned() {
        let schema = Schema::new(vec![FieldSpec::signed("x", 16)]).unwrap();
        let base = Snapshot { tick: 1, values: vec![0] };
        let cases: [(i32, &[u8]); 4] = [
            // mask 1, tier '0', code zigzag(1)-1 = 1 → bits: 1,0,1000 → 0b0000_0101
            (1, &[0b0000_0101]),
            // residual -9 → zigzag 17 → code 16 → tier '10' + 8 bits
            (-9, &[0b1000_0011, 0b0000_0000]),
            // residual 200 → zigzag 400 → code 399 → tier '110' + 12 bits
            (200, &[0b1111_0111, 0b0001_1000]),
            // residual 10000 → full width
            (10000, &[0b0000_1111, 0b0111_0001, 0b0000_0010]),
        ];
        for (value, expected) in cases {
            let snap = Snapshot { tick: 2, values: vec![value] };
            let mut bytes = Vec::new();
            schema.encode_delta(&base, &snap, &mut bytes);
            assert_eq!(bytes, expected, "value {value}");
            assert_eq!(schema.decode_delta(&base, 2, &bytes).unwrap(), snap);
        }
    }

    #[test]
    fn invalid_schemas_are_refused() {
        assert_eq!(Schema::new(vec![]), Err(SchemaError::FieldCount(0)));
        assert!(matches!(Schema::new(vec![FieldSpec::unsigned("x", 33)]), Err(SchemaError::Width { .. })));
        assert!(matches!(Schema::new(vec![FieldSpec::unsigned("x", 32)]), Err(SchemaError::Width { .. })));
        assert!(matches!(Schema::new(vec![FieldSpec::unsigned("", 3)]), Err(SchemaError::Name(_))));
        let self_predicted = FieldSpec::unsigned("x", 8).predicted_by(0, 0);
        assert!(matches!(Schema::new(vec![self_predicted]), Err(SchemaError::Prediction(_))));
        let dangling = FieldSpec::unsigned("x", 8).predicted_by(5, 0);
        assert!(matches!(Schema::new(vec![dangling]), Err(SchemaError::Prediction(_))));
    }

    #[test]
    fn narrow_fields_escape_when_cheaper_than_a_residual() {
        let schema = Schema::new(vec![FieldSpec::unsigned("x", 4)]).unwrap();
        let base = Snapshot { tick: 1, values: vec![0] };
        let snap = Snapshot { tick: 2, values: vec![15] };
        let mut bytes = Vec::new();
        schema.encode_delta(&base, &snap, &mut bytes);
        // mask 1, escape '111', then 15 in 4 bits: 8 bits rather than 1 + 10.
        assert_eq!(bytes, [0b1111_1111]);
        assert_eq!(schema.decode_delta(&base, 2, &bytes).unwrap(), snap);
    }

    #[test]
    fn deltas_against_baselines_outside_the_window_are_refused() {
        let schema =
            Schema::new(vec![FieldSpec::signed("v", 32), FieldSpec::signed("x", 32).predicted_by(0, 0)]).unwrap();
        let base = Snapshot { tick: 1, values: vec![i32::MIN, i32::MIN] };
        assert_eq!(schema.decode_delta(&base, 0, &[0]), Err(DecodeError::Baseline));
        assert_eq!(schema.decode_delta(&base, 1, &[0]), Err(DecodeError::Baseline));
        assert_eq!(schema.decode_delta(&base, 1 + 256, &[0]), Err(DecodeError::Baseline));
        assert_eq!(
            schema.decode_delta(&base, 2, &[0]),
            Err(DecodeError::OutOfRange),
            "i32::MIN + i32::MIN is out of range"
        );
    }

    #[test]
    fn decoded_values_outside_the_field_are_refused() {
        let schema = Schema::new(vec![FieldSpec::unsigned("x", 4)]).unwrap();
        let base = Snapshot { tick: 1, values: vec![15] };
        // mask 1, tier '0', code 1 → residual +1 → 16, outside 4 bits.
        assert_eq!(schema.decode_delta(&base, 2, &[0b0000_0101]), Err(DecodeError::OutOfRange));
    }
}
