//! What clients measure while they run: latency histograms (hdrhistogram),
//! counters, errors by kind and bytes on the wire, shared by every client task
//! of one harness process.
//!
//! [`Histo`] serializes losslessly (at the histogram's precision), so reports
//! written by several harness processes merge into the distribution of all of
//! them rather than an average of percentiles.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant decimal digits kept by every histogram (0.1% relative error).
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency distribution in microseconds.
#[derive(Debug, Clone)]
pub struct Histo {
    inner: Histogram<u64>,
}

impl Default for Histo {
    fn default() -> Self {
        Self::new()
    }
}

impl Histo {
    /// An empty histogram that grows to whatever is recorded.
    pub fn new() -> Self {
        let mut inner = Histogram::new(SIGNIFICANT_DIGITS).expect("3 significant digits is a valid precision");
        inner.auto(true);
        Self { inner }
    }

    /// The same observations as `histogram`, whose values are microseconds
    /// (the shard's own tick-duration histogram, for one).
    pub fn from_micros(histogram: &Histogram<u64>) -> Self {
        let mut histo = Self::new();
        let _ = histo.inner.add(histogram);
        histo
    }

    /// Records one duration (microsecond resolution).
    pub fn record(&mut self, duration: Duration) {
        self.record_us(duration.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    /// Records one value in microseconds.
    pub fn record_us(&mut self, micros: u64) {
        // Auto-resizing histograms accept any u64.
        let _ = self.inner.record(micros);
    }

    /// Adds every observation of `other`.
    pub fn merge(&mut self, other: &Histo) {
        let _ = self.inner.add(&other.inner);
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    /// The `q` quantile (0 to 1) in milliseconds; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (self.count() > 0).then(|| self.inner.value_at_quantile(q) as f64 / 1e3)
    }

    /// Mean in milliseconds; `None` when empty.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.inner.mean() / 1e3)
    }

    /// Largest value in milliseconds; `None` when empty.
    pub fn max_ms(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.inner.max() as f64 / 1e3)
    }

    /// Smallest value in milliseconds; `None` when empty.
    pub fn min_ms(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.inner.min() as f64 / 1e3)
    }

    /// `(value µs, count)` for every distinct recorded bucket, ascending.
    pub fn recorded(&self) -> Vec<(u64, u64)> {
        self.inner
            .iter_recorded()
            .map(|value| (self.inner.highest_equivalent(value.value_iterated_to()), value.count_at_value()))
            .collect()
    }

    /// The summary written into reports.
    pub fn summary(&self) -> HistoSummary {
        HistoSummary {
            count: self.count(),
            min_ms: self.min_ms(),
            mean_ms: self.mean_ms(),
            p50_ms: self.quantile_ms(0.50),
            p90_ms: self.quantile_ms(0.90),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: self.max_ms(),
        }
    }
}

/// Percentiles of a [`Histo`], for people and thresholds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoSummary {
    /// Observations.
    pub count: u64,
    /// Smallest, ms.
    pub min_ms: Option<f64>,
    /// Mean, ms.
    pub mean_ms: Option<f64>,
    /// Median, ms.
    pub p50_ms: Option<f64>,
    /// 90th percentile, ms.
    pub p90_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile, ms.
    pub p999_ms: Option<f64>,
    /// Largest, ms.
    pub max_ms: Option<f64>,
}

/// The serialized form: the summary for readers, the buckets for merging.
#[derive(Serialize, Deserialize)]
struct HistoWire {
    #[serde(flatten)]
    summary: HistoSummary,
    /// `[value µs, count]` pairs.
    buckets_us: Vec<(u64, u64)>,
}

impl Serialize for Histo {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        HistoWire { summary: self.summary(), buckets_us: self.recorded() }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Histo {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = HistoWire::deserialize(deserializer)?;
        let mut histo = Histo::new();
        for (value, count) in wire.buckets_us {
            histo.inner.record_n(value, count).map_err(serde::de::Error::custom)?;
        }
        Ok(histo)
    }
}

/// The latency distributions a run can have. Names are the keys in reports and
/// the prefixes of threshold metrics (`rtt_p99`, `join_p50`, …).
pub const LATENCIES: &[(&str, &str)] = &[
    ("connect", "QUIC handshake: connect called → connection established"),
    ("join", "hello sent on the control stream → welcome received"),
    ("match_wait", "time to match: welcome (or enqueue, with a matchmaker) → every seat present, countdown started"),
    ("rtt", "QUIC round-trip time, sampled once a second per connection"),
    (
        "input_to_ack",
        "input datagram sent → first snapshot whose header shows the shard has received that input's tick",
    ),
    (
        "server_added",
        "server-added input latency: input_to_ack minus the connection's RTT (the wait for the next snapshot, and the shard's processing)",
    ),
    (
        "input_to_snapshot",
        "input datagram sent → first snapshot of the input's tick or later (includes the input lead the client's clock keeps so inputs arrive before their tick)",
    ),
    ("snapshot_interval", "time between consecutive snapshots with no snapshot missing between them"),
    ("snapshot_jitter", "|snapshot interval − nominal snapshot period|"),
    ("login", "lobby register/login RPC round trip"),
    ("ticket_assign", "matchmaker Enqueue → assignment seen on WatchTicket"),
    ("chat_send", "chat Send RPC round trip (the message is stored when it returns)"),
    ("chat_delivery", "chat message sent → received by a subscriber (sender's and subscriber's clocks)"),
    ("match_duration", "welcome → match ended, for matches that ended on their own"),
];

/// Counters every scenario may bump. Absent keys read as 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Clients the harness started.
    pub clients_started: u64,
    /// Clients that joined at least once (welcomed by a shard, or logged in).
    pub clients_connected: u64,
    /// Clients that ended without finishing their work (their errors are in `errors`).
    pub clients_failed: u64,
    /// Joins (connect + hello + welcome) that succeeded.
    pub joins: u64,
    /// Joins that failed (handshake, refusal, timeout).
    pub failed_joins: u64,
    /// Matches begun (counted once, by seat 0, at its welcome).
    pub matches_started: u64,
    /// Matches seen ending on their own (counted by seat 0).
    pub matches_finished: u64,
    /// Matches still running when the run stopped (counted by seat 0).
    pub matches_cut: u64,
    /// Snapshots received.
    pub snapshots: u64,
    /// Snapshots the tick numbers say should have arrived.
    pub snapshots_expected: u64,
    /// Snapshots received but unusable (stale, missing baseline, undecodable).
    pub snapshots_unusable: u64,
    /// Input datagrams sent.
    pub input_datagrams: u64,
    /// UDP datagrams sent by clients (QUIC packets, including handshake and acks).
    pub udp_datagrams_out: u64,
    /// UDP datagrams received by clients.
    pub udp_datagrams_in: u64,
    /// UDP payload bytes sent by clients (QUIC headers and encryption included).
    pub udp_bytes_out: u64,
    /// UDP payload bytes received by clients.
    pub udp_bytes_in: u64,
    /// Seconds clients spent connected, summed over clients (the denominator of per-client rates).
    pub client_seconds: f64,
    /// QUIC only, from quinn's own connection stats while playing (from the
    /// welcome on, so the handshake is left out): UDP datagrams the clients sent.
    #[serde(default)]
    pub quic_packets_out: u64,
    /// QUIC only, while playing: UDP datagrams the clients received.
    #[serde(default)]
    pub quic_packets_in: u64,
    /// QUIC only, while playing: DATAGRAM frames (game datagrams) the clients sent.
    #[serde(default)]
    pub quic_datagram_frames_out: u64,
    /// QUIC only, while playing: DATAGRAM frames the clients received.
    #[serde(default)]
    pub quic_datagram_frames_in: u64,
    /// Chat messages sent.
    pub chat_sent: u64,
    /// Chat messages received by subscribers.
    pub chat_received: u64,
    /// Matchmaker tickets enqueued.
    pub tickets: u64,
    /// Tickets that got an assignment.
    pub tickets_assigned: u64,
}

impl Counters {
    /// Client → shard UDP packets per game datagram over QUIC (1.0 when every
    /// ACK rides on an input); `None` without QUIC datagrams.
    pub fn quic_packets_per_datagram_up(&self) -> Option<f64> {
        (self.quic_datagram_frames_out > 0).then(|| self.quic_packets_out as f64 / self.quic_datagram_frames_out as f64)
    }

    /// Shard → client UDP packets per game datagram over QUIC; `None` without QUIC datagrams.
    pub fn quic_packets_per_datagram_down(&self) -> Option<f64> {
        (self.quic_datagram_frames_in > 0).then(|| self.quic_packets_in as f64 / self.quic_datagram_frames_in as f64)
    }

    /// Adds the QUIC packet and DATAGRAM frame counts between two stats of one connection.
    pub fn add_quic_packets(&mut self, before: &quinn::ConnectionStats, after: &quinn::ConnectionStats) {
        self.quic_packets_out += after.udp_tx.datagrams.saturating_sub(before.udp_tx.datagrams);
        self.quic_packets_in += after.udp_rx.datagrams.saturating_sub(before.udp_rx.datagrams);
        self.quic_datagram_frames_out += after.frame_tx.datagram.saturating_sub(before.frame_tx.datagram);
        self.quic_datagram_frames_in += after.frame_rx.datagram.saturating_sub(before.frame_rx.datagram);
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Counters) {
        let Counters {
            clients_started,
            clients_connected,
            clients_failed,
            joins,
            failed_joins,
            matches_started,
            matches_finished,
            matches_cut,
            snapshots,
            snapshots_expected,
            snapshots_unusable,
            input_datagrams,
            udp_datagrams_out,
            udp_datagrams_in,
            udp_bytes_out,
            udp_bytes_in,
            client_seconds,
            quic_packets_out,
            quic_packets_in,
            quic_datagram_frames_out,
            quic_datagram_frames_in,
            chat_sent,
            chat_received,
            tickets,
            tickets_assigned,
        } = other;
        self.clients_started += clients_started;
        self.clients_connected += clients_connected;
        self.clients_failed += clients_failed;
        self.joins += joins;
        self.failed_joins += failed_joins;
        self.matches_started += matches_started;
        self.matches_finished += matches_finished;
        self.matches_cut += matches_cut;
        self.snapshots += snapshots;
        self.snapshots_expected += snapshots_expected;
        self.snapshots_unusable += snapshots_unusable;
        self.input_datagrams += input_datagrams;
        self.udp_datagrams_out += udp_datagrams_out;
        self.udp_datagrams_in += udp_datagrams_in;
        self.udp_bytes_out += udp_bytes_out;
        self.udp_bytes_in += udp_bytes_in;
        self.client_seconds += client_seconds;
        self.quic_packets_out += quic_packets_out;
        self.quic_packets_in += quic_packets_in;
        self.quic_datagram_frames_out += quic_datagram_frames_out;
        self.quic_datagram_frames_in += quic_datagram_frames_in;
        self.chat_sent += chat_sent;
        self.chat_received += chat_received;
        self.tickets += tickets;
        self.tickets_assigned += tickets_assigned;
    }
}

/// Everything the clients of one process measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measures {
    /// Counters.
    pub counters: Counters,
    /// Errors by kind (`connect_timeout`, `refused:match_full`, …).
    pub errors: BTreeMap<String, u64>,
    /// Latency distributions by name (see [`LATENCIES`]).
    pub latencies: BTreeMap<String, Histo>,
}

impl Measures {
    /// Records a latency under `name`.
    pub fn latency(&mut self, name: &str, duration: Duration) {
        self.latencies.entry(name.to_owned()).or_default().record(duration);
    }

    /// Counts an error of `kind`.
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    /// Errors of every kind.
    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Measures) {
        self.counters.merge(&other.counters);
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += count;
        }
        for (name, histo) in &other.latencies {
            self.latencies.entry(name.clone()).or_default().merge(histo);
        }
    }

    /// The named distribution, or an empty one.
    pub fn histo(&self, name: &str) -> Histo {
        self.latencies.get(name).cloned().unwrap_or_default()
    }
}

/// The measures of a run, shared by its client tasks.
///
/// A plain mutex: the harness runs its clients on one thread, so it is never
/// contended, and each lock is held for a few counter updates.
#[derive(Debug, Default)]
pub struct Recorder {
    measures: Mutex<Measures>,
    /// The distributions the timeline plots, since the last [`Recorder::take_recent`].
    recent: Mutex<BTreeMap<String, Histo>>,
    /// Matches seen ending on their own, by id (for cross-checks with the shard).
    finished_matches: Mutex<std::collections::BTreeSet<u64>>,
}

/// Latencies also kept per timeline sample.
const RECENT: &[&str] = &["rtt", "server_added", "ticket_assign", "chat_delivery"];

impl Recorder {
    /// Locks the measures for an update.
    pub fn lock(&self) -> MutexGuard<'_, Measures> {
        // A panicking client task cannot leave counters half-updated in a way
        // that matters more than losing the run's report.
        self.measures.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a latency under `name`.
    pub fn latency(&self, name: &str, duration: Duration) {
        self.lock().latency(name, duration);
        if RECENT.contains(&name) {
            let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            recent.entry(name.to_owned()).or_default().record(duration);
        }
    }

    /// The timeline's distributions since the last call, emptied.
    pub fn take_recent(&self) -> BTreeMap<String, Histo> {
        std::mem::take(&mut *self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: impl Into<String>) {
        self.lock().error(kind);
    }

    /// Bumps one counter.
    pub fn count(&self, update: impl FnOnce(&mut Counters)) {
        update(&mut self.lock().counters);
    }

    /// Notes that match `match_id` was seen ending on its own.
    pub fn match_finished(&self, match_id: u64) {
        self.finished_matches.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(match_id);
    }

    /// The ids of the matches seen ending on their own.
    pub fn finished_matches(&self) -> std::collections::BTreeSet<u64> {
        self.finished_matches.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The counters and the error total so far (cheap: no histograms copied).
    pub fn totals(&self) -> (Counters, u64) {
        let measures = self.lock();
        (measures.counters.clone(), measures.total_errors())
    }

    /// A copy of everything so far.
    pub fn snapshot(&self) -> Measures {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_json_and_merge_exactly() {
        let mut a = Histo::new();
        let mut b = Histo::new();
        for micros in 1..=1000 {
            a.record_us(micros);
            b.record_us(micros * 1000);
        }
        let json = serde_json::to_string(&a).unwrap();
        let back: Histo = serde_json::from_str(&json).unwrap();
        assert_eq!(back.count(), 1000);
        assert_eq!(back.quantile_ms(0.99), a.quantile_ms(0.99));
        assert_eq!(back.max_ms(), a.max_ms());

        let mut merged = back;
        merged.merge(&b);
        assert_eq!(merged.count(), 2000);
        // Half the observations are ≤ 1 ms, half ≥ 1 ms.
        let p50 = merged.quantile_ms(0.5).unwrap();
        assert!((0.99..=1.01).contains(&p50), "{p50}");
        let max = merged.max_ms().unwrap();
        assert!((999.0..=1001.0).contains(&max), "{max}");
    }

    #[test]
    fn measures_merge_counts_errors_and_latencies() {
        let mut a = Measures::default();
        a.counters.joins = 3;
        a.error("connect_timeout");
        a.latency("rtt", Duration::from_millis(2));
        let mut b = Measures::default();
        b.counters.joins = 4;
        b.error("connect_timeout");
        b.error("refused:match_full");
        b.latency("rtt", Duration::from_millis(4));
        a.merge(&b);
        assert_eq!(a.counters.joins, 7);
        assert_eq!(a.errors["connect_timeout"], 2);
        assert_eq!(a.total_errors(), 3);
        assert_eq!(a.histo("rtt").count(), 2);
    }
}
