//! The driver's side of "the core reports, the driver exports": every
//! Prometheus series of the shard is written here, from [`ShardStats`] (the
//! core's counters, read after each tick and exported as the change since the
//! last read), from the loop's own figures (tick time, late and skipped
//! ticks, datagrams sent) and from the transports' connection tasks
//! ([`InboundMetrics`]). Nothing in `shard.rs` touches a metrics facade.
//!
//! Handles are registered once: `counter!` looks its key up on every call.

use std::collections::BTreeMap;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use rally_sim::game::Game;

use crate::driver::ShardReport;
use crate::limits::Admit;
use crate::shard::Shard;
use crate::stats::{InputCounts, ShardStats, ValueCounts};

/// Phase labels of `rally_shard_matches_by_phase`, indexed like [`Shard::matches_by_phase`].
const PHASES: [&str; 4] = ["waiting", "countdown", "playing", "finished"];

/// Exports one shard loop's figures.
#[derive(Debug)]
pub(crate) struct Exporter {
    last: ShardStats,
    last_late_ticks: u64,
    last_skipped_ticks: u64,
    tick_seconds: Histogram,
    datagrams_out: Counter,
    bytes_out: Counter,
    datagrams_dropped: Counter,
    matches: Gauge,
    connections: Gauge,
    tick: Gauge,
    by_phase: [Gauge; 4],
    client_rtt: Histogram,
    late_ticks: Counter,
    skipped_ticks: Counter,
    bad_datagrams: Counter,
    decode_errors: Counter,
    matches_created: Counter,
    snapshots: Counter,
    snapshots_full: Counter,
    snapshot_payload_bytes: Histogram,
    input_reflect_ticks: Histogram,
}

impl Default for Exporter {
    fn default() -> Self {
        Self {
            last: ShardStats::default(),
            last_late_ticks: 0,
            last_skipped_ticks: 0,
            tick_seconds: metrics::histogram!("rally_shard_tick_seconds"),
            datagrams_out: metrics::counter!("rally_shard_datagrams_out_total"),
            bytes_out: metrics::counter!("rally_shard_bytes_out_total"),
            datagrams_dropped: metrics::counter!("rally_shard_datagrams_dropped_total"),
            matches: metrics::gauge!("rally_shard_matches"),
            connections: metrics::gauge!("rally_shard_connections"),
            tick: metrics::gauge!("rally_shard_tick"),
            by_phase: PHASES.map(|phase| metrics::gauge!("rally_shard_matches_by_phase", "phase" => phase)),
            client_rtt: metrics::histogram!("rally_shard_client_rtt_seconds"),
            late_ticks: metrics::counter!("rally_shard_late_ticks_total"),
            skipped_ticks: metrics::counter!("rally_shard_skipped_ticks_total"),
            bad_datagrams: metrics::counter!("rally_shard_bad_datagrams_total"),
            decode_errors: metrics::counter!("rally_shard_decode_errors_total"),
            matches_created: metrics::counter!("rally_shard_matches_created_total"),
            snapshots: metrics::counter!("rally_shard_snapshots_total"),
            snapshots_full: metrics::counter!("rally_shard_snapshots_full_total"),
            snapshot_payload_bytes: metrics::histogram!("rally_shard_snapshot_payload_bytes"),
            input_reflect_ticks: metrics::histogram!("rally_shard_input_reflect_ticks"),
        }
    }
}

impl Exporter {
    /// One tick took `elapsed`.
    pub(crate) fn tick(&self, elapsed: Duration) {
        self.tick_seconds.record(elapsed.as_secs_f64());
    }

    /// A flush sent `sent` datagrams of `bytes` in all; the transports refused `refused`.
    pub(crate) fn sent(&self, sent: u64, bytes: u64, refused: u64) {
        if sent > 0 {
            self.datagrams_out.increment(sent);
            self.bytes_out.increment(bytes);
        }
        if refused > 0 {
            self.datagrams_dropped.increment(refused);
        }
    }

    /// Exports the shard's gauges, the change in its counters since the last
    /// call, the loop's tick counters, and RTT samples of its connections.
    pub(crate) fn publish<G: Game>(&mut self, shard: &Shard<G>, report: &ShardReport, rtts: &[Duration]) {
        self.matches.set(shard.n_matches() as f64);
        self.connections.set(shard.n_connections() as f64);
        self.tick.set(f64::from(shard.tick_number()));
        for (gauge, count) in self.by_phase.iter().zip(shard.matches_by_phase()) {
            gauge.set(count as f64);
        }
        for rtt in rtts {
            self.client_rtt.record(rtt.as_secs_f64());
        }
        self.late_ticks.increment(report.late_ticks - self.last_late_ticks);
        self.skipped_ticks.increment(report.skipped_ticks - self.last_skipped_ticks);
        self.last_late_ticks = report.late_ticks;
        self.last_skipped_ticks = report.skipped_ticks;

        let (now, last) = (shard.stats(), &self.last);
        if now == last {
            return;
        }
        self.bad_datagrams.increment(now.bad_datagrams - last.bad_datagrams);
        self.decode_errors.increment(now.undecodable_datagrams - last.undecodable_datagrams);
        self.matches_created.increment(now.matches_created - last.matches_created);
        self.snapshots.increment(now.snapshots_sent - last.snapshots_sent);
        self.snapshots_full.increment(now.snapshots_full - last.snapshots_full);
        for (seat, counts) in now.inputs_by_seat.iter().enumerate() {
            let before = last.inputs_by_seat.get(seat).copied().unwrap_or_default();
            export_inputs(seat, counts, &before);
        }
        export_labelled("rally_shard_refused_total", &now.refused, &last.refused);
        export_labelled("rally_shard_matches_ended_total", &now.matches_ended_by_reason, &last.matches_ended_by_reason);
        export_values(&self.snapshot_payload_bytes, &now.snapshot_payload_bytes, &last.snapshot_payload_bytes);
        export_values(&self.input_reflect_ticks, &now.input_reflect_ticks, &last.input_reflect_ticks);
        self.last.clone_from(now);
    }
}

fn export_inputs(seat: usize, now: &InputCounts, before: &InputCounts) {
    // Seat indices are below the game's seat count (two or four): few label values.
    let seat = seat.to_string();
    for (name, now, before) in [
        ("rally_shard_inputs_on_time_total", now.on_time, before.on_time),
        ("rally_shard_inputs_late_total", now.late, before.late),
        ("rally_shard_inputs_missing_total", now.missing, before.missing),
    ] {
        if now > before {
            metrics::counter!(name, "seat" => seat.clone()).increment(now - before);
        }
    }
}

fn export_labelled(name: &'static str, now: &BTreeMap<&'static str, u64>, before: &BTreeMap<&'static str, u64>) {
    for (&reason, &count) in now {
        let delta = count - before.get(reason).copied().unwrap_or(0);
        if delta > 0 {
            metrics::counter!(name, "reason" => reason).increment(delta);
        }
    }
}

fn export_values(histogram: &Histogram, now: &ValueCounts, before: &ValueCounts) {
    for (value, count) in now.iter() {
        let delta = count - before.count(value);
        if delta > 0 {
            histogram.record_many(value as f64, delta as usize);
        }
    }
}

/// The counters every transport's connection tasks share: what arrived and
/// what the limits did with it.
#[derive(Debug, Clone)]
pub(crate) struct InboundMetrics {
    datagrams_in: Counter,
    bytes_in: Counter,
    oversized: Counter,
    rate_limited: Counter,
    disconnected: Counter,
    inbound_dropped: Counter,
}

impl Default for InboundMetrics {
    fn default() -> Self {
        Self {
            datagrams_in: metrics::counter!("rally_shard_datagrams_in_total"),
            bytes_in: metrics::counter!("rally_shard_bytes_in_total"),
            oversized: metrics::counter!("rally_shard_oversized_datagrams_total"),
            rate_limited: metrics::counter!("rally_shard_rate_limited_datagrams_total"),
            disconnected: metrics::counter!("rally_shard_disconnects_total", "reason" => "rate_limited"),
            inbound_dropped: metrics::counter!("rally_shard_inbound_dropped_total"),
        }
    }
}

impl InboundMetrics {
    /// A datagram of `len` payload bytes arrived and the gate said `verdict`.
    pub(crate) fn datagram(&self, len: usize, verdict: Admit) {
        self.datagrams_in.increment(1);
        self.bytes_in.increment(len as u64);
        match verdict {
            Admit::Pass => {}
            Admit::Oversized => self.oversized.increment(1),
            Admit::Throttled => self.rate_limited.increment(1),
            Admit::Disconnect => {
                self.rate_limited.increment(1);
                self.disconnected.increment(1);
            }
        }
    }

    /// The loop's queue was full: a datagram was dropped.
    pub(crate) fn inbound_dropped(&self) {
        self.inbound_dropped.increment(1);
    }
}
