//! The fast path: hand-packed datagrams for inputs (client → shard) and
//! snapshots (shard → client). Each fits one QUIC datagram or UDP packet.
//!
//! ```text
//! input    = 0x01, varint newest_tick, varint ack, u8 n, n × input byte (newest first)
//! snapshot = 0x02, varint tick, varint baseline_distance, varint zigzag(input_lead), body
//! ```
//!
//! `ack` is 0 when the client holds no snapshot yet, else
//! `zigzag(newest_tick - acked_snapshot_tick) + 1`. `baseline_distance` is 0 for a
//! full snapshot, else `tick - baseline_tick`. See PROTOCOL.md.

use crate::bits::{unzigzag, zigzag};
use crate::{DecodeError, Input, MAX_DATAGRAM, Tick, varint};

/// First byte of an input datagram.
pub const KIND_INPUT: u8 = 0x01;
/// First byte of a snapshot datagram.
pub const KIND_SNAPSHOT: u8 = 0x02;

/// Most inputs one datagram may carry (redundancy window upper bound).
pub const MAX_INPUTS_PER_DATAGRAM: usize = 32;

/// Default redundancy: each input datagram repeats the last 8 ticks' inputs.
pub const DEFAULT_INPUT_REDUNDANCY: usize = 8;

/// Largest baseline distance a delta may use; older acks force a full snapshot.
/// Clients keep at least this many ticks of received snapshots.
pub const MAX_BASELINE_DISTANCE: Tick = 255;

/// Client → shard: the inputs of the latest ticks plus a snapshot ack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputDatagram {
    /// Tick of `inputs[0]`.
    pub newest_tick: Tick,
    /// Newest snapshot tick the client has received and can use as a baseline.
    pub ack: Option<Tick>,
    /// Inputs for `newest_tick`, `newest_tick - 1`, … (newest first), 1 to 32.
    pub inputs: Vec<Input>,
}

impl InputDatagram {
    /// The tick each input is for, newest first. Ticks before 0 are skipped.
    pub fn ticked_inputs(&self) -> impl Iterator<Item = (Tick, Input)> + '_ {
        self.inputs.iter().enumerate().filter_map(|(age, &input)| {
            let age = Tick::try_from(age).ok()?;
            Some((self.newest_tick.checked_sub(age)?, input))
        })
    }

    /// Appends the wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(!self.inputs.is_empty() && self.inputs.len() <= MAX_INPUTS_PER_DATAGRAM);
        out.push(KIND_INPUT);
        varint::write_u32(out, self.newest_tick);
        let ack = match self.ack {
            None => 0,
            Some(acked) => zigzag(i64::from(self.newest_tick) - i64::from(acked)) + 1,
        };
        // Ticks are u32, so the zigzag of their difference fits 33 bits; clamp to
        // "no ack" rather than lie if a client sends nonsense.
        varint::write_u32(out, u32::try_from(ack).unwrap_or(0));
        out.push(self.inputs.len() as u8);
        out.extend_from_slice(&self.inputs);
    }

    /// Parses the bytes after the kind byte.
    fn decode_body(input: &[u8]) -> Result<Self, DecodeError> {
        InputsRef::decode_body(input).map(|view| Self {
            newest_tick: view.newest_tick,
            ack: view.ack,
            inputs: view.inputs.to_vec(),
        })
    }
}

/// An input datagram borrowed from the received bytes: what the shard reads
/// for every datagram, without the allocation an [`InputDatagram`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputsRef<'a> {
    /// Tick of `inputs[0]`.
    pub newest_tick: Tick,
    /// Newest snapshot tick the client has received and can use as a baseline.
    pub ack: Option<Tick>,
    /// Inputs for `newest_tick`, `newest_tick - 1`, … (newest first), 1 to 32.
    pub inputs: &'a [Input],
}

impl<'a> InputsRef<'a> {
    /// Decodes untrusted bytes that should be an input datagram, kind byte
    /// included, exactly as [`Datagram::decode`] would (the same errors), but
    /// allocates nothing. A snapshot datagram is [`DecodeError::UnknownKind`].
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(DecodeError::TooLarge { what: "datagram", got: bytes.len(), limit: MAX_DATAGRAM });
        }
        match bytes.split_first().ok_or(DecodeError::Truncated)? {
            (&KIND_INPUT, body) => Self::decode_body(body),
            (&other, _) => Err(DecodeError::UnknownKind(other)),
        }
    }

    /// The tick each input is for, newest first. Ticks before 0 are skipped.
    pub fn ticked_inputs(&self) -> impl Iterator<Item = (Tick, Input)> + 'a {
        let newest_tick = self.newest_tick;
        self.inputs.iter().enumerate().filter_map(move |(age, &input)| {
            let age = Tick::try_from(age).ok()?;
            Some((newest_tick.checked_sub(age)?, input))
        })
    }

    fn decode_body(mut input: &'a [u8]) -> Result<Self, DecodeError> {
        let newest_tick = varint::read_u32(&mut input)?;
        let ack = match varint::read_u32(&mut input)? {
            0 => None,
            code => {
                let acked = i64::from(newest_tick) - unzigzag(u64::from(code) - 1);
                Some(Tick::try_from(acked).map_err(|_| DecodeError::OutOfRange)?)
            }
        };
        let (&n_inputs, rest) = input.split_first().ok_or(DecodeError::Truncated)?;
        let n_inputs = usize::from(n_inputs);
        if n_inputs == 0 {
            return Err(DecodeError::Length);
        }
        if n_inputs > MAX_INPUTS_PER_DATAGRAM {
            return Err(DecodeError::TooLarge { what: "input count", got: n_inputs, limit: MAX_INPUTS_PER_DATAGRAM });
        }
        if rest.len() != n_inputs {
            return Err(if rest.len() < n_inputs { DecodeError::Truncated } else { DecodeError::Length });
        }
        Ok(Self { newest_tick, ack, inputs: rest })
    }
}

/// Shard → client: the header of a snapshot datagram. The body is decoded with
/// the match's [`crate::Schema`] once the client has found the baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Server tick of the snapshot.
    pub tick: Tick,
    /// The baseline tick of a delta, `None` for a full snapshot.
    pub baseline: Option<Tick>,
    /// Newest input tick received from this client minus `tick`: how far ahead
    /// of the simulation the client's inputs arrive. Clients steer their clock by it.
    pub input_lead: i32,
}

impl SnapshotHeader {
    /// Appends the header; the caller appends the body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(KIND_SNAPSHOT);
        varint::write_u32(out, self.tick);
        let distance = self.baseline.map_or(0, |baseline| self.tick - baseline);
        debug_assert!(self.baseline.is_none() || (1..=MAX_BASELINE_DISTANCE).contains(&distance));
        varint::write_u32(out, distance);
        varint::write_u32(out, zigzag(i64::from(self.input_lead)) as u32);
    }

    fn decode_body(mut input: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        let tick = varint::read_u32(&mut input)?;
        let distance = varint::read_u32(&mut input)?;
        let baseline = match distance {
            0 => None,
            d if d > MAX_BASELINE_DISTANCE || d > tick => return Err(DecodeError::Baseline),
            d => Some(tick - d),
        };
        let input_lead =
            i32::try_from(unzigzag(u64::from(varint::read_u32(&mut input)?))).map_err(|_| DecodeError::OutOfRange)?;
        Ok((Self { tick, baseline, input_lead }, input))
    }
}

/// A decoded datagram of either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// Client inputs.
    Input(InputDatagram),
    /// A snapshot header and its still-encoded body.
    Snapshot(SnapshotHeader, &'a [u8]),
}

impl<'a> Datagram<'a> {
    /// Decodes untrusted bytes. Never panics; allocates at most 32 bytes.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(DecodeError::TooLarge { what: "datagram", got: bytes.len(), limit: MAX_DATAGRAM });
        }
        let (&kind, body) = bytes.split_first().ok_or(DecodeError::Truncated)?;
        match kind {
            KIND_INPUT => InputDatagram::decode_body(body).map(Datagram::Input),
            KIND_SNAPSHOT => {
                let (header, rest) = SnapshotHeader::decode_body(body)?;
                Ok(Datagram::Snapshot(header, rest))
            }
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn input_golden_bytes() {
        let datagram = InputDatagram { newest_tick: 300, ack: Some(298), inputs: vec![1, 1, 0] };
        let mut bytes = Vec::new();
        datagram.encode(&mut bytes);
        // kind, varint 300, ack = zigzag(2)+1 = 5, count 3, inputs.
        assert_eq!(bytes, [0x01, 0xac, 0x02, 0x05, 0x03, 0x01, 0x01, 0x00]);
        assert_eq!(Datagram::decode(&bytes), Ok(Datagram::Input(datagram)));
    }

    #[test]
    fn input_without_ack_golden_bytes() {
        let datagram = InputDatagram { newest_tick: 5, ack: None, inputs: vec![2] };
        let mut bytes = Vec::new();
        datagram.encode(&mut bytes);
        assert_eq!(bytes, [0x01, 0x05, 0x00, 0x01, 0x02]);
        assert_eq!(Datagram::decode(&bytes), Ok(Datagram::Input(datagram)));
    }

    #[test]
    fn snapshot_header_golden_bytes() {
        let header = SnapshotHeader { tick: 1000, baseline: Some(996), input_lead: -3 };
        let mut bytes = Vec::new();
        header.encode(&mut bytes);
        bytes.extend_from_slice(&[0xAA, 0xBB]);
        assert_eq!(bytes, [0x02, 0xe8, 0x07, 0x04, 0x05, 0xAA, 0xBB]);
        assert_eq!(Datagram::decode(&bytes), Ok(Datagram::Snapshot(header, &[0xAA, 0xBB][..])));
    }

    #[test]
    fn redundant_inputs_map_to_ticks_newest_first() {
        let datagram = InputDatagram { newest_tick: 1, ack: None, inputs: vec![7, 8, 9] };
        let ticked: Vec<_> = datagram.ticked_inputs().collect();
        assert_eq!(ticked, [(1, 7), (0, 8)], "ticks before 0 are skipped");
    }

    #[test]
    fn bad_datagrams_get_typed_errors() {
        assert_eq!(Datagram::decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(Datagram::decode(&[0x7f]), Err(DecodeError::UnknownKind(0x7f)));
        assert_eq!(Datagram::decode(&[0x01, 0x05, 0x00, 0x00]), Err(DecodeError::Length));
        assert_eq!(Datagram::decode(&[0x01, 0x05, 0x00, 0x02, 0x01]), Err(DecodeError::Truncated));
        assert_eq!(Datagram::decode(&[0x01, 0x05, 0x00, 0x01, 0x01, 0x01]), Err(DecodeError::Length));
        assert!(matches!(Datagram::decode(&[0x01, 0x05, 0x00, 33]), Err(DecodeError::TooLarge { .. })));
        // An ack pointing before tick 0.
        assert_eq!(Datagram::decode(&[0x01, 0x01, 0x09, 0x01, 0x00]), Err(DecodeError::OutOfRange));
        // A baseline older than the window, and one before tick 0.
        assert_eq!(Datagram::decode(&[0x02, 0xe8, 0x07, 0xff, 0x03, 0x00]), Err(DecodeError::Baseline));
        assert_eq!(Datagram::decode(&[0x02, 0x02, 0x03, 0x00]), Err(DecodeError::Baseline));
        assert!(matches!(Datagram::decode(&[0x02; 1200]), Err(DecodeError::TooLarge { .. })));
    }

    proptest! {
        #[test]
        fn inputs_round_trip(newest in any::<u32>(), ack_back in proptest::option::of(-1000i64..100_000), inputs in proptest::collection::vec(any::<u8>(), 1..=32)) {
            let ack = ack_back.and_then(|back| u32::try_from(i64::from(newest) - back).ok());
            let datagram = InputDatagram { newest_tick: newest, ack, inputs };
            let mut bytes = Vec::new();
            datagram.encode(&mut bytes);
            prop_assert!(bytes.len() <= MAX_DATAGRAM);
            prop_assert_eq!(Datagram::decode(&bytes), Ok(Datagram::Input(datagram.clone())));
            let borrowed = InputsRef::decode(&bytes).expect("an input datagram");
            prop_assert_eq!((borrowed.newest_tick, borrowed.ack, borrowed.inputs), (datagram.newest_tick, datagram.ack, &datagram.inputs[..]));
            prop_assert!(borrowed.ticked_inputs().eq(datagram.ticked_inputs()));
        }

        #[test]
        fn snapshot_headers_round_trip(tick in 255u32.., distance in 0u32..=255, lead in any::<i32>()) {
            let header = SnapshotHeader { tick, baseline: (distance > 0).then(|| tick - distance), input_lead: lead };
            let mut bytes = Vec::new();
            header.encode(&mut bytes);
            prop_assert_eq!(Datagram::decode(&bytes), Ok(Datagram::Snapshot(header, &[][..])));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            // The borrowed decode refuses exactly what the owned one does, with the same error;
            // a snapshot (valid or not) it refuses as not being an input datagram.
            match (Datagram::decode(&bytes), InputsRef::decode(&bytes)) {
                (Ok(Datagram::Input(owned)), Ok(borrowed)) => prop_assert_eq!(&owned.inputs[..], borrowed.inputs),
                (Ok(Datagram::Snapshot(..)), Err(err)) => prop_assert_eq!(err, DecodeError::UnknownKind(KIND_SNAPSHOT)),
                // A snapshot is not inputs, whether or not its own decode succeeds.
                (Err(_), Err(borrowed)) if bytes.first() == Some(&KIND_SNAPSHOT) => {
                    prop_assert_eq!(borrowed, DecodeError::UnknownKind(KIND_SNAPSHOT))
                }
                (Err(owned), Err(borrowed)) => prop_assert_eq!(owned, borrowed),
                (owned, borrowed) => prop_assert!(false, "{:?} vs {:?}", owned, borrowed),
            }
        }
    }
}
