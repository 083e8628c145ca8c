//! What the shard core reports (quinn's `Connection::stats()` model): plain
//! counters and value histograms, cumulative since the start. The core never
//! calls a metrics facade; the driver reads a [`ShardStats`] after each tick
//! and exports the change to Prometheus (`crate::export`), so the recorder's
//! install order does not matter and the core is tested without one.

use std::collections::BTreeMap;

/// Inputs of one seat index, classified when their tick is simulated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputCounts {
    /// Present in the buffer when their tick was simulated.
    pub on_time: u64,
    /// Arrived after their tick was simulated.
    pub late: u64,
    /// Ticks of a connected seat whose input had not arrived (the last input repeated).
    pub missing: u64,
}

/// A histogram of small non-negative integers: `counts[v]` samples had value
/// `v`; values at or past the top bucket are counted in it. Recording is an
/// index, so the core can count every snapshot it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueCounts {
    counts: Vec<u64>,
}

impl ValueCounts {
    /// Values `0..=max` counted exactly.
    pub fn new(max: usize) -> Self {
        Self { counts: vec![0; max + 1] }
    }

    /// Counts one sample.
    pub fn record(&mut self, value: usize) {
        let last = self.counts.len() - 1;
        self.counts[value.min(last)] += 1;
    }

    /// `(value, count)` for every value seen.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.counts.iter().enumerate().filter(|(_, count)| **count > 0).map(|(value, count)| (value, *count))
    }

    /// The count of `value` (or of the top bucket).
    pub fn count(&self, value: usize) -> u64 {
        self.counts[value.min(self.counts.len() - 1)]
    }

    /// Samples recorded.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Largest snapshot payload counted exactly: the protocol's datagram limit.
const MAX_PAYLOAD: usize = rally_protocol::MAX_DATAGRAM;
/// Largest input-to-snapshot latency counted exactly, in ticks.
const MAX_REFLECT_TICKS: usize = 255;

/// Counters of one shard since it started: everything the driver exports and
/// the load harness reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStats {
    /// Datagrams from connections that hold no seat.
    pub bad_datagrams: u64,
    /// Datagrams from seated connections that did not decode as inputs.
    pub undecodable_datagrams: u64,
    /// Inputs present in the buffer when their tick was simulated (all seats).
    pub inputs_on_time: u64,
    /// Ticks of connected seats whose input had not arrived (all seats).
    pub inputs_missing: u64,
    /// Inputs that arrived after their tick was simulated (all seats).
    pub inputs_late: u64,
    /// The same three by seat index.
    pub inputs_by_seat: Vec<InputCounts>,
    /// Hellos refused, by `RefuseReason` label.
    pub refused: BTreeMap<&'static str, u64>,
    /// Matches created.
    pub matches_created: u64,
    /// Matches ended.
    pub matches_ended: u64,
    /// Matches ended, by end reason (`score`, `forfeit`, `abandoned`, `aborted`).
    pub matches_ended_by_reason: BTreeMap<&'static str, u64>,
    /// Snapshots sent.
    pub snapshots_sent: u64,
    /// Of which full (no baseline).
    pub snapshots_full: u64,
    /// Snapshot datagram bytes sent.
    pub snapshot_bytes: u64,
    /// Snapshot payload sizes (bytes after the header).
    pub snapshot_payload_bytes: ValueCounts,
    /// Ticks from a fresh input's tick to the first snapshot that shows it.
    pub input_reflect_ticks: ValueCounts,
}

impl Default for ShardStats {
    fn default() -> Self {
        Self {
            bad_datagrams: 0,
            undecodable_datagrams: 0,
            inputs_on_time: 0,
            inputs_missing: 0,
            inputs_late: 0,
            inputs_by_seat: Vec::new(),
            refused: BTreeMap::new(),
            matches_created: 0,
            matches_ended: 0,
            matches_ended_by_reason: BTreeMap::new(),
            snapshots_sent: 0,
            snapshots_full: 0,
            snapshot_bytes: 0,
            snapshot_payload_bytes: ValueCounts::new(MAX_PAYLOAD),
            input_reflect_ticks: ValueCounts::new(MAX_REFLECT_TICKS),
        }
    }
}

impl ShardStats {
    pub(crate) fn seat(&mut self, seat: usize) -> &mut InputCounts {
        if self.inputs_by_seat.len() <= seat {
            self.inputs_by_seat.resize(seat + 1, InputCounts::default());
        }
        &mut self.inputs_by_seat[seat]
    }

    pub(crate) fn input_on_time(&mut self, seat: usize) {
        self.inputs_on_time += 1;
        self.seat(seat).on_time += 1;
    }

    pub(crate) fn input_late(&mut self, seat: usize) {
        self.inputs_late += 1;
        self.seat(seat).late += 1;
    }

    pub(crate) fn input_missing(&mut self, seat: usize) {
        self.inputs_missing += 1;
        self.seat(seat).missing += 1;
    }
}
