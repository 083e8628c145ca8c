//! The driver's side of "the core reports, the driver exports": every
//! Prometheus series of the shard is written here, from [`ShardStats`] (the
//! core's counters, read after each tick and exported as the change since the
//! last read), from the loop's own figures (tick time, late and skipped
//! ticks, datagrams sent) and from the transports' connection tasks
//! ([`InboundCounters`]). Nothing in `shard.rs` touches a metrics facade.
//!
//! Handles are registered once: `counter!` looks its key up on every call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::Histogram;
use rally_sim::game::Game;

use rally_protocol::control::{EndReason as WireEndReason, RefuseReason};

use crate::driver::ShardReport;
use crate::limits::Admit;
use crate::shard::{Shard, end_reason_label};
use crate::stats::{InputCounts, ShardStats, ValueCounts};

/// Phase labels of `rally_shard_matches_by_phase`, indexed like [`Shard::matches_by_phase`].
const PHASES: [&str; 4] = ["waiting", "countdown", "playing", "finished"];

/// Exports one shard loop's figures. Series are looked up in the recorder at
/// each [`Exporter::publish`] (once per tick), never held from the start, so
/// a recorder installed after the shard started still gets every series.
#[derive(Debug, Default)]
pub(crate) struct Exporter {
    /// Publishes so far: every [`INTRODUCE_EVERY`]th one (the first too)
    /// describes the series and zeroes the labelled counters again, so a
    /// recorder installed after the shard started gets them within a second.
    publishes: u64,
    last: ShardStats,
    last_late_ticks: u64,
    last_skipped_ticks: u64,
    last_inbound: [u64; INBOUND_COUNTERS],
    tick_seconds: Vec<f64>,
    sent: u64,
    sent_bytes: u64,
    refused: u64,
}

impl Exporter {
    /// One tick took `elapsed`.
    pub(crate) fn tick(&mut self, elapsed: Duration) {
        self.tick_seconds.push(elapsed.as_secs_f64());
    }

    /// A flush sent `sent` datagrams of `bytes` in all; the transports refused `refused`.
    pub(crate) fn sent(&mut self, sent: u64, bytes: u64, refused: u64) {
        self.sent += sent;
        self.sent_bytes += bytes;
        self.refused += refused;
    }

    /// Exports the shard's gauges, the change in its counters, the loop's and
    /// the transports' counters since the last call, and RTT samples.
    pub(crate) fn publish<G: Game>(
        &mut self,
        shard: &Shard<G>,
        report: &ShardReport,
        inbound: &InboundCounters,
        rtts: &[Duration],
    ) {
        if self.publishes.is_multiple_of(INTRODUCE_EVERY) {
            introduce();
        }
        self.publishes += 1;
        metrics::gauge!("rally_shard_draining").set(if shard.is_draining() { 1.0 } else { 0.0 });
        metrics::gauge!("rally_shard_matches").set(shard.n_matches() as f64);
        metrics::gauge!("rally_shard_connections").set(shard.n_connections() as f64);
        metrics::gauge!("rally_shard_tick").set(f64::from(shard.tick_number()));
        for (phase, count) in PHASES.iter().zip(shard.matches_by_phase()) {
            metrics::gauge!("rally_shard_matches_by_phase", "phase" => *phase).set(count as f64);
        }
        let rtt = metrics::histogram!("rally_shard_client_rtt_seconds");
        for sample in rtts {
            rtt.record(sample.as_secs_f64());
        }
        let tick_seconds = metrics::histogram!("rally_shard_tick_seconds");
        for elapsed in self.tick_seconds.drain(..) {
            tick_seconds.record(elapsed);
        }
        for (name, count) in [
            ("rally_shard_datagrams_out_total", std::mem::take(&mut self.sent)),
            ("rally_shard_bytes_out_total", std::mem::take(&mut self.sent_bytes)),
            ("rally_shard_datagrams_dropped_total", std::mem::take(&mut self.refused)),
            ("rally_shard_late_ticks_total", report.late_ticks - self.last_late_ticks),
            ("rally_shard_skipped_ticks_total", report.skipped_ticks - self.last_skipped_ticks),
        ] {
            metrics::counter!(name).increment(count);
        }
        self.last_late_ticks = report.late_ticks;
        self.last_skipped_ticks = report.skipped_ticks;
        let inbound = inbound.read();
        for (idx, (name, label)) in INBOUND_SERIES.iter().enumerate() {
            let delta = inbound[idx] - self.last_inbound[idx];
            match label {
                Some(reason) => metrics::counter!(*name, "reason" => *reason).increment(delta),
                None => metrics::counter!(*name).increment(delta),
            }
        }
        self.last_inbound = inbound;

        let (now, last) = (shard.stats(), &self.last);
        for (name, now, before) in [
            ("rally_shard_bad_datagrams_total", now.bad_datagrams, last.bad_datagrams),
            ("rally_shard_decode_errors_total", now.undecodable_datagrams, last.undecodable_datagrams),
            ("rally_shard_matches_created_total", now.matches_created, last.matches_created),
            ("rally_shard_snapshots_total", now.snapshots_sent, last.snapshots_sent),
            ("rally_shard_snapshots_full_total", now.snapshots_full, last.snapshots_full),
        ] {
            metrics::counter!(name).increment(now - before);
        }
        if now == last {
            return;
        }
        for (seat, counts) in now.inputs_by_seat.iter().enumerate() {
            let before = last.inputs_by_seat.get(seat).copied().unwrap_or_default();
            export_inputs(seat, counts, &before);
        }
        export_labelled("rally_shard_refused_total", &now.refused, &last.refused);
        export_labelled("rally_shard_matches_ended_total", &now.matches_ended_by_reason, &last.matches_ended_by_reason);
        export_values(
            &metrics::histogram!("rally_shard_snapshot_payload_bytes"),
            &now.snapshot_payload_bytes,
            &last.snapshot_payload_bytes,
        );
        export_values(
            &metrics::histogram!("rally_shard_input_reflect_ticks"),
            &now.input_reflect_ticks,
            &last.input_reflect_ticks,
        );
        self.last.clone_from(now);
    }
}

/// Publishes between two [`introduce`] calls (about a second at 60 Hz).
const INTRODUCE_EVERY: u64 = 64;

/// Describes the shard's series to the recorder, and makes the labelled
/// counters the dashboards and alerts read exist at zero for every reason
/// this build knows: a counter appears only once incremented, and "no
/// refusal of that kind yet" is an honest 0.
fn introduce() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    for reason in (1..=u16::from(u8::MAX)).filter_map(|code| RefuseReason::try_from(code).ok()) {
        metrics::counter!("rally_shard_refused_total", "reason" => reason.label()).increment(0);
    }
    for reason in [
        WireEndReason::Score,
        WireEndReason::Forfeit,
        WireEndReason::Abandoned,
        WireEndReason::ShardShutdown,
        WireEndReason::TimeLimit,
    ] {
        metrics::counter!("rally_shard_matches_ended_total", "reason" => end_reason_label(reason)).increment(0);
    }
    describe_gauge!("rally_shard_draining", "1 while the shard drains (takes no new matches; /readyz answers 503)");
    describe_gauge!("rally_shard_matches", "Matches running on the shard");
    describe_gauge!("rally_shard_connections", "Player connections on the shard (its concurrent players)");
    describe_gauge!("rally_shard_tick", "The shard's tick number (stops moving when the tick loop is stuck)");
    describe_gauge!("rally_shard_matches_by_phase", "Matches by phase: waiting, countdown, playing, finished");
    describe_histogram!("rally_shard_tick_seconds", Unit::Seconds, "Time to run one tick (step every match, send)");
    describe_histogram!("rally_shard_client_rtt_seconds", Unit::Seconds, "Transport round-trip time per connection");
    describe_counter!("rally_shard_late_ticks_total", "Ticks that started more than one tick late");
    describe_counter!("rally_shard_skipped_ticks_total", "Ticks skipped to catch up (past max catch-up)");
    describe_counter!("rally_shard_datagrams_out_total", "Datagrams sent to players");
    describe_counter!("rally_shard_bytes_out_total", Unit::Bytes, "Datagram payload bytes sent to players");
    describe_counter!("rally_shard_datagrams_in_total", "Datagrams received from players");
    describe_counter!("rally_shard_bytes_in_total", Unit::Bytes, "Datagram payload bytes received from players");
    describe_counter!("rally_shard_datagrams_dropped_total", "Datagrams the transports refused to send");
    describe_counter!("rally_shard_refused_total", "Hellos refused, by reason");
    describe_counter!("rally_shard_matches_ended_total", "Matches ended, by reason (score, forfeit, ...)");
    describe_counter!("rally_shard_matches_created_total", "Matches created on the shard");
}

fn export_inputs(seat: usize, now: &InputCounts, before: &InputCounts) {
    // Seat indices are below the game's seat count (two or four): few label values.
    let seat = seat.to_string();
    for (name, now, before) in [
        ("rally_shard_inputs_on_time_total", now.on_time, before.on_time),
        ("rally_shard_inputs_late_total", now.late, before.late),
        ("rally_shard_inputs_missing_total", now.missing, before.missing),
    ] {
        metrics::counter!(name, "seat" => seat.clone()).increment(now - before);
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

const INBOUND_COUNTERS: usize = 6;

/// The series of [`InboundCounters`], in its order, with their `reason` label.
const INBOUND_SERIES: [(&str, Option<&str>); INBOUND_COUNTERS] = [
    ("rally_shard_datagrams_in_total", None),
    ("rally_shard_bytes_in_total", None),
    ("rally_shard_oversized_datagrams_total", None),
    ("rally_shard_rate_limited_datagrams_total", None),
    ("rally_shard_disconnects_total", Some("rate_limited")),
    ("rally_shard_inbound_dropped_total", None),
];

/// The counters every transport's connection tasks share: what arrived and
/// what the limits did with it. Plain atomics the loop's [`Exporter`] reads
/// each tick; the connection tasks never touch the metrics facade.
#[derive(Debug, Default)]
pub(crate) struct InboundCounters {
    counts: [AtomicU64; INBOUND_COUNTERS],
}

impl InboundCounters {
    fn add(&self, idx: usize, n: u64) {
        self.counts[idx].fetch_add(n, Ordering::Relaxed);
    }

    fn read(&self) -> [u64; INBOUND_COUNTERS] {
        std::array::from_fn(|idx| self.counts[idx].load(Ordering::Relaxed))
    }

    /// A datagram of `len` payload bytes arrived and the gate said `verdict`.
    pub(crate) fn datagram(&self, len: usize, verdict: Admit) {
        self.add(0, 1);
        self.add(1, len as u64);
        match verdict {
            Admit::Pass => {}
            Admit::Oversized => self.add(2, 1),
            Admit::Throttled => self.add(3, 1),
            Admit::Disconnect => {
                self.add(3, 1);
                self.add(4, 1);
            }
        }
    }

    /// The loop's queue was full: a datagram was dropped.
    pub(crate) fn inbound_dropped(&self) {
        self.add(5, 1);
    }
}

/// [`InboundCounters`]' counts gathered locally by a driver that handles many
/// datagrams per wake-up (raw UDP's receive batches) and added once per
/// batch: the same totals, without atomic additions per datagram.
#[derive(Debug, Default)]
pub(crate) struct InboundTally {
    counts: [u64; INBOUND_COUNTERS],
}

impl InboundTally {
    /// As [`InboundCounters::datagram`].
    pub(crate) fn datagram(&mut self, len: usize, verdict: Admit) {
        self.counts[0] += 1;
        self.counts[1] += len as u64;
        match verdict {
            Admit::Pass => {}
            Admit::Oversized => self.counts[2] += 1,
            Admit::Throttled => self.counts[3] += 1,
            Admit::Disconnect => {
                self.counts[3] += 1;
                self.counts[4] += 1;
            }
        }
    }

    /// As [`InboundCounters::inbound_dropped`], for `count` datagrams.
    pub(crate) fn inbound_dropped(&mut self, count: u64) {
        self.counts[5] += count;
    }

    /// Adds the counts to `counters` and starts again from zero.
    pub(crate) fn flush_into(&mut self, counters: &InboundCounters) {
        for (idx, count) in self.counts.iter_mut().enumerate() {
            if *count > 0 {
                counters.add(idx, std::mem::take(count));
            }
        }
    }
}
