//! The report of a run: every figure as JSON, a text summary for the terminal,
//! the metrics thresholds can name, and merging the reports of several harness
//! processes into one.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::measure::{Histo, LATENCIES, Measures};
use crate::prometheus;
use crate::threshold::{MetricInfo, MetricKind, Threshold, ThresholdOutcome};

/// Version of the JSON layout; merging refuses other versions.
pub const REPORT_VERSION: u32 = 1;

/// IPv4 + UDP header bytes carried by every datagram on the wire (the UDP
/// payload counters do not include them).
pub const IP_UDP_HEADER_BYTES: u64 = 28;

/// Tick budget the capacity target allows at p99, in seconds (a bucket bound of the shard's histogram).
pub const TICK_BUDGET_SECONDS: f64 = 0.004;

/// A finished run (or several merged).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// The scenario's name.
    pub scenario: String,
    /// One entry per harness process that contributed.
    pub runs: Vec<RunInfo>,
    /// What the clients measured (all processes together).
    pub measures: Measures,
    /// Every shard whose metrics endpoint was read, over its measured window.
    pub shards: Vec<ShardFigures>,
    /// The bare echo (quinn or raw UDP) at the same load, when asked for.
    pub baseline: Option<BaselineFigures>,
    /// Cross-checks between what clients saw and what the servers counted.
    pub checks: Vec<Check>,
    /// One sample a second.
    pub timeline: Vec<Sample>,
    /// The thresholds and their verdicts.
    pub thresholds: Vec<ThresholdOutcome>,
}

/// How one harness process ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunInfo {
    /// Wall-clock start, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// Seconds from the first client to the end.
    pub wall_s: f64,
    /// Clients asked for.
    pub clients: u64,
    /// Clients started per second.
    pub ramp_per_sec: f64,
    /// Seconds of load after the ramp.
    pub duration_s: f64,
    /// The seed of tokens, inputs and the link conditioner.
    pub seed: u64,
    /// The link conditioner in front of every client.
    pub conditions: ConditionsInfo,
    /// What was loaded, in words (`embedded shard`, `shard 10.0.0.5:7777`).
    pub target: String,
    /// Whether the harness and the servers were pinned to separate cores.
    pub pinned: bool,
    /// Client UDP sockets the connections were spread over.
    pub endpoints: usize,
    /// Harness CPU over the run, % of one core (servers' threads excluded).
    pub harness_cpu_pct: Option<f64>,
    /// Cores this machine has.
    pub cores: usize,
    /// Scenario-specific settings, for people.
    pub settings: BTreeMap<String, String>,
    /// The transport clients played over (`quic` or `udp`).
    #[serde(default = "quic")]
    pub transport: String,
    /// This machine's UDP counters over the measured window (Linux), which
    /// tell a kernel drop from a shard drop.
    #[serde(default)]
    pub system_udp: Option<SystemUdp>,
}

/// System-wide UDP counters over a window (`/proc/net/snmp`): on loopback
/// every packet is counted once out and once in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemUdp {
    /// UDP packets sent per second by every socket on the machine.
    pub packets_out_per_s: f64,
    /// Datagrams the kernel dropped because a socket's receive buffer was full.
    pub rcvbuf_errors: u64,
}

fn quic() -> String {
    "quic".to_owned()
}

fn quinn_echo() -> String {
    "quinn-echo".to_owned()
}

/// The link conditioner settings, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ConditionsInfo {
    /// Probability a datagram is dropped (each direction).
    pub loss: f64,
    /// One-way delay, ms.
    pub latency_ms: f64,
    /// ± delay variation, ms.
    pub jitter_ms: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability a datagram is held back to be overtaken.
    pub reorder: f64,
}

impl ConditionsInfo {
    /// Whether the link is perfect.
    pub fn is_perfect(&self) -> bool {
        *self == Self::default()
    }
}

/// What one shard's metrics said over the measured window (after the ramp).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShardFigures {
    /// Where they came from (metrics address).
    pub source: String,
    /// Window length, s.
    pub window_s: f64,
    /// Tick-duration histogram over the window: `(upper bound s, cumulative count)`;
    /// the `+Inf` bound is written as `null`.
    #[serde(with = "infinite_bounds")]
    pub tick_buckets: Vec<(f64, f64)>,
    /// Median tick, ms (interpolated in buckets).
    pub tick_p50_ms: Option<f64>,
    /// 99th percentile tick, ms (interpolated in buckets).
    pub tick_p99_ms: Option<f64>,
    /// 99.9th percentile tick, ms (only from the exact histogram).
    #[serde(default)]
    pub tick_p999_ms: Option<f64>,
    /// Fraction of ticks within the 4 ms budget (exact: 4 ms is a bucket bound).
    pub ticks_within_budget: Option<f64>,
    /// The shard's own tick-duration histogram over the window (µs, 0.1%
    /// precision), read straight from an embedded shard; `None` for a shard
    /// known only by its metrics endpoint.
    #[serde(default)]
    pub tick_exact: Option<Histo>,
    /// Where the tick percentiles come from: `exact histogram` (the shard's
    /// own, read in process) or `prometheus buckets` (interpolated inside a bucket).
    #[serde(default)]
    pub tick_source: String,
    /// Ticks run in the window.
    pub ticks: u64,
    /// Ticks that started over a tick late.
    pub late_ticks: u64,
    /// Datagrams received per second.
    pub datagrams_in_per_s: f64,
    /// Datagrams sent per second.
    pub datagrams_out_per_s: f64,
    /// Datagrams dropped inside the shard (send queue full, inbound queue full, rate limit).
    pub dropped: u64,
    /// Input received → first snapshot reflecting it sent, 99th percentile, in ticks.
    pub input_reflect_p99_ticks: Option<f64>,
    /// CPU of the shard's process or thread, % of one core.
    pub cpu_pct: Option<f64>,
    /// Matches the shard ended over the whole run (known for embedded shards).
    pub matches_ended: Option<u64>,
    /// Results by end reason over the whole run (known for embedded shards).
    pub results_by_reason: BTreeMap<String, u64>,
    /// RSS of a shard running as its own process, before the first client
    /// connected (`None` for an embedded shard: it shares the harness's process).
    #[serde(default)]
    pub rss_before_bytes: Option<u64>,
    /// The same shard's RSS at the end of the ramp, every client connected.
    #[serde(default)]
    pub rss_after_ramp_bytes: Option<u64>,
    /// Clients connected at the end of the ramp (what the RSS growth is shared by).
    #[serde(default)]
    pub connections_after_ramp: Option<u64>,
}

/// The echo baseline at the same connection count and rate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BaselineFigures {
    /// Which echo: `quinn-echo` or `udp-echo`.
    #[serde(default = "quinn_echo")]
    pub kind: String,
    /// Connections asked for.
    pub connections: u64,
    /// Connections established.
    pub connected: u64,
    /// Window length, s.
    pub window_s: f64,
    /// Datagrams in + out per second at the echo.
    pub datagrams_per_s: f64,
    /// 1 − echoed / sent.
    pub loss: f64,
    /// Echo CPU, % of one core.
    pub cpu_pct: Option<f64>,
    /// The shard's datagrams in + out per second in its window.
    pub shard_datagrams_per_s: f64,
    /// Shard datagrams/s ÷ echo datagrams/s at the same offered load.
    pub rate_ratio: Option<f64>,
    /// (Shard datagrams per CPU-second) ÷ (echo datagrams per CPU-second): how
    /// close the shard is to what a bare echo on its transport could carry on the same core.
    pub efficiency_ratio: Option<f64>,
}

/// What one run's figures say the load costs the shard(s): derived, never
/// measured apart, so it is as good as the shard CPU and the window behind it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CostModel {
    /// Matches the shards held, averaged over the window's one-second samples.
    pub matches: Option<f64>,
    /// Shard CPU over the window, in cores (1.0 = one core busy).
    pub shard_cores: Option<f64>,
    /// Shard CPU-µs per match per second of play.
    pub cpu_us_per_match_second: Option<f64>,
    /// Shard CPU-µs per datagram, counting datagrams in and out alike.
    pub cpu_us_per_datagram: Option<f64>,
    /// Matches one core could hold at 80% busy, if cost grows linearly with matches.
    pub matches_per_core_at_80pct: Option<f64>,
    /// Growth of a separate shard process's RSS over the ramp, per connection
    /// then connected; `None` for an embedded shard (its process is the harness's).
    pub rss_per_connection_bytes: Option<f64>,
}

/// The share of one core [`CostModel::matches_per_core_at_80pct`] plans for.
pub const PLANNED_CORE_SHARE: f64 = 0.8;

/// A cross-check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What is compared.
    pub name: String,
    /// The clients' figure.
    pub clients: f64,
    /// The servers' figure.
    pub servers: f64,
    /// Whether they agree.
    pub passed: bool,
}

/// The cross-checks between the matches clients saw end and the shard's
/// results: every match a client saw finish was ended by its rules (points or
/// the time limit), and every match the shard so ended before the stop was
/// seen finishing. (After the stop the players have left, and a match without
/// players can still end by score; those are not the clients' to see.)
pub fn match_checks(
    seen_finished: &std::collections::BTreeSet<u64>,
    results: &[rally_protocol::results::MatchResult],
    stopped_unix_ms: u64,
) -> Vec<Check> {
    let scored: Vec<&rally_protocol::results::MatchResult> =
        results.iter().filter(|result| result.reason.ended_by_the_rules()).collect();
    let seen_and_scored =
        seen_finished.iter().filter(|id| scored.iter().any(|result| result.match_id.0 == **id)).count();
    let scored_before_stop: Vec<u64> =
        scored.iter().filter(|result| result.ended_at_ms < stopped_unix_ms).map(|result| result.match_id.0).collect();
    let before_stop_seen = scored_before_stop.iter().filter(|id| seen_finished.contains(id)).count();
    vec![
        Check {
            name: "matches clients saw finish = of those, matches the shard ended by its rules (points or time limit)"
                .into(),
            clients: seen_finished.len() as f64,
            servers: seen_and_scored as f64,
            passed: seen_and_scored == seen_finished.len(),
        },
        Check {
            name: "matches the shard ended by its rules before the stop = of those, matches clients saw finish".into(),
            clients: before_stop_seen as f64,
            servers: scored_before_stop.len() as f64,
            passed: before_stop_seen == scored_before_stop.len(),
        },
    ]
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the first client started.
    pub t_s: f64,
    /// Clients started so far.
    pub clients_started: u64,
    /// Clients connected now.
    pub clients_active: u64,
    /// Matches running now (clients' view).
    pub matches_running: u64,
    /// Matches finished so far.
    pub matches_finished: u64,
    /// Errors so far.
    pub errors: u64,
    /// RTT p99 over this second, ms.
    pub rtt_p99_ms: Option<f64>,
    /// Server-added input latency p99 over this second, ms.
    pub server_added_p99_ms: Option<f64>,
    /// Matchmaker Enqueue → assignment p99 over this second, ms.
    #[serde(default)]
    pub ticket_assign_p99_ms: Option<f64>,
    /// Chat send → delivery p99 over this second, ms.
    #[serde(default)]
    pub chat_delivery_p99_ms: Option<f64>,
    /// Bytes received per connected client per second (IP/UDP headers included).
    pub bytes_in_per_client: Option<f64>,
    /// Bytes sent per connected client per second (IP/UDP headers included).
    pub bytes_out_per_client: Option<f64>,
    /// Shard tick p50 over this second, ms.
    pub tick_p50_ms: Option<f64>,
    /// Shard tick p99 over this second, ms.
    pub tick_p99_ms: Option<f64>,
    /// Shard ticks late this second.
    pub late_ticks: Option<u64>,
    /// Matches the shard holds now.
    pub shard_matches: Option<u64>,
    /// Other per-scenario gauges (tickets waiting, chat messages/s…).
    #[serde(default)]
    pub extra: BTreeMap<String, f64>,
}

impl Report {
    /// Every shard's tick buckets added together.
    pub fn tick_buckets(&self) -> Vec<(f64, f64)> {
        let mut total: Vec<(f64, f64)> = Vec::new();
        for shard in &self.shards {
            for &(bound, count) in &shard.tick_buckets {
                match total.iter_mut().find(|(b, _)| *b == bound) {
                    Some(entry) => entry.1 += count,
                    None => total.push((bound, count)),
                }
            }
        }
        total.sort_by(|a, b| a.0.total_cmp(&b.0));
        total
    }

    /// Every shard's exact tick histogram added together, when every shard has
    /// one (embedded shards); `None` otherwise, and the percentiles come from the buckets.
    pub fn tick_exact(&self) -> Option<Histo> {
        let mut total = Histo::new();
        for shard in &self.shards {
            total.merge(shard.tick_exact.as_ref()?);
        }
        (!self.shards.is_empty()).then_some(total)
    }

    /// Tick duration at quantile `q`, ms: from the shards' own histograms when
    /// every shard has one, else interpolated in the Prometheus buckets.
    pub fn tick_quantile_ms(&self, q: f64) -> Option<f64> {
        match self.tick_exact() {
            Some(exact) => exact.quantile_ms(q),
            None => prometheus::quantile(&self.tick_buckets(), q).map(|s| s * 1e3),
        }
    }

    /// The shard cost model of this run (see [`CostModel`]).
    pub fn cost_model(&self) -> CostModel {
        let has_shard = !self.shards.is_empty();
        let cpu_pct: Option<f64> = has_shard.then(|| self.shards.iter().map(|shard| shard.cpu_pct).sum()).flatten();
        let shard_cores = cpu_pct.map(|pct| pct / 100.0);
        let datagrams_per_s: f64 =
            self.shards.iter().map(|shard| shard.datagrams_in_per_s + shard.datagrams_out_per_s).sum();
        let matches = self.window_matches();
        let per_match = shard_cores.zip(matches).filter(|&(_, matches)| matches > 0.0);
        let mut rss_growth = 0.0;
        let mut connections = 0u64;
        let mut rss_known = has_shard;
        for shard in &self.shards {
            match (shard.rss_before_bytes, shard.rss_after_ramp_bytes, shard.connections_after_ramp) {
                (Some(before), Some(after), Some(connected)) => {
                    rss_growth += after as f64 - before as f64;
                    connections += connected;
                }
                _ => rss_known = false,
            }
        }
        CostModel {
            matches,
            shard_cores,
            cpu_us_per_match_second: per_match.map(|(cores, matches)| cores * 1e6 / matches),
            cpu_us_per_datagram: shard_cores
                .filter(|_| datagrams_per_s > 0.0)
                .map(|cores| cores * 1e6 / datagrams_per_s),
            matches_per_core_at_80pct: per_match
                .filter(|&(cores, _)| cores > 0.0)
                .map(|(cores, matches)| PLANNED_CORE_SHARE * matches / cores),
            rss_per_connection_bytes: (rss_known && connections > 0).then(|| rss_growth / connections as f64),
        }
    }

    /// Matches held over the measured window: the shard's own gauge where the
    /// timeline has it, else the clients' count, averaged over the seconds
    /// from the end of the ramp to the stop.
    pub fn window_matches(&self) -> Option<f64> {
        let run = self.runs.first()?;
        let ramp_end = run.clients as f64 / run.ramp_per_sec.max(1e-9);
        let window: Vec<&Sample> = self
            .timeline
            .iter()
            .filter(|sample| sample.t_s > ramp_end && sample.t_s <= ramp_end + run.duration_s)
            .collect();
        if window.is_empty() {
            return None;
        }
        let n = window.len() as f64;
        if window.iter().all(|sample| sample.shard_matches.is_some()) {
            Some(window.iter().filter_map(|sample| sample.shard_matches).sum::<u64>() as f64 / n)
        } else {
            Some(window.iter().map(|sample| sample.matches_running).sum::<u64>() as f64 / n)
        }
    }

    /// The transport(s) the runs' clients used, e.g. `quic` or `quic+udp` for a merge of both.
    pub fn transport(&self) -> String {
        let mut names: Vec<&str> = self.runs.iter().map(|run| run.transport.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() { quic() } else { names.join("+") }
    }

    /// Bytes per connected client per second, `(in, out)`, IP/UDP headers included.
    pub fn bytes_per_client(&self) -> (Option<f64>, Option<f64>) {
        let counters = &self.measures.counters;
        if counters.client_seconds <= 0.0 {
            return (None, None);
        }
        let with_headers = |bytes: u64, datagrams: u64| (bytes + datagrams * IP_UDP_HEADER_BYTES) as f64;
        (
            Some(with_headers(counters.udp_bytes_in, counters.udp_datagrams_in) / counters.client_seconds),
            Some(with_headers(counters.udp_bytes_out, counters.udp_datagrams_out) / counters.client_seconds),
        )
    }

    /// Every metric thresholds can name, with this report's value.
    pub fn metrics(&self) -> Vec<(MetricInfo, Option<f64>)> {
        let mut out = Vec::new();
        let mut add = |name: &str, kind: MetricKind, help: &str, value: Option<f64>| {
            out.push((MetricInfo { name: name.to_owned(), kind, help: help.to_owned() }, value));
        };
        for &(latency, help) in LATENCIES {
            let histo = self.measures.histo(latency);
            for (suffix, value) in [
                ("p50", histo.quantile_ms(0.5)),
                ("p90", histo.quantile_ms(0.9)),
                ("p99", histo.quantile_ms(0.99)),
                ("p999", histo.quantile_ms(0.999)),
                ("max", histo.max_ms()),
                ("mean", histo.mean_ms()),
            ] {
                add(&format!("{latency}_{suffix}"), MetricKind::Millis, help, value);
            }
        }
        let counters = &self.measures.counters;
        let count = |value: u64| Some(value as f64);
        add("errors", MetricKind::Count, "errors of every kind", count(self.measures.total_errors()));
        add("clients_started", MetricKind::Count, "clients started", count(counters.clients_started));
        add(
            "clients_connected",
            MetricKind::Count,
            "clients that joined at least once",
            count(counters.clients_connected),
        );
        add(
            "clients_failed",
            MetricKind::Count,
            "clients that ended early on an error",
            count(counters.clients_failed),
        );
        add("joins", MetricKind::Count, "successful joins (connect + hello + welcome)", count(counters.joins));
        add("failed_joins", MetricKind::Count, "joins that failed", count(counters.failed_joins));
        add("matches_started", MetricKind::Count, "matches begun", count(counters.matches_started));
        add("matches_finished", MetricKind::Count, "matches that ended on their own", count(counters.matches_finished));
        add("tickets", MetricKind::Count, "matchmaker tickets enqueued", count(counters.tickets));
        add("tickets_assigned", MetricKind::Count, "tickets assigned", count(counters.tickets_assigned));
        add("chat_sent", MetricKind::Count, "chat messages sent", count(counters.chat_sent));
        add("chat_received", MetricKind::Count, "chat messages received by subscribers", count(counters.chat_received));
        let loss = (counters.snapshots_expected > 0)
            .then(|| 1.0 - counters.snapshots as f64 / counters.snapshots_expected as f64);
        add("snapshot_loss", MetricKind::Fraction, "snapshots missing / snapshots expected", loss);
        let (bytes_in, bytes_out) = self.bytes_per_client();
        add(
            "bytes_in_per_client",
            MetricKind::BytesPerSec,
            "bytes received per connected client, IP/UDP headers included",
            bytes_in,
        );
        add(
            "bytes_out_per_client",
            MetricKind::BytesPerSec,
            "bytes sent per connected client, IP/UDP headers included",
            bytes_out,
        );
        add(
            "quic_packets_per_datagram_up",
            MetricKind::Ratio,
            "QUIC: UDP packets the clients sent per game datagram they sent, while playing (ACK-only packets raise it above 1)",
            counters.quic_packets_per_datagram_up(),
        );
        add(
            "quic_packets_per_datagram_down",
            MetricKind::Ratio,
            "QUIC: UDP packets the clients received per game datagram they received, while playing",
            counters.quic_packets_per_datagram_down(),
        );
        let buckets = self.tick_buckets();
        let has_shard = !self.shards.is_empty();
        add(
            "tick_p50",
            MetricKind::Millis,
            "shard tick duration, median over the window (exact for an embedded shard, else interpolated in buckets)",
            self.tick_quantile_ms(0.5),
        );
        add(
            "tick_p99",
            MetricKind::Millis,
            "shard tick duration, 99th percentile over the window (exact for an embedded shard, else interpolated in buckets)",
            self.tick_quantile_ms(0.99),
        );
        add(
            "tick_p999",
            MetricKind::Millis,
            "shard tick duration, 99.9th percentile over the window (embedded shards only: buckets cannot tell it)",
            self.tick_exact().and_then(|exact| exact.quantile_ms(0.999)),
        );
        add(
            "ticks_within_budget",
            MetricKind::Fraction,
            "fraction of ticks within 4 ms",
            prometheus::fraction_at_most(&buckets, TICK_BUDGET_SECONDS),
        );
        add(
            "late_ticks",
            MetricKind::Count,
            "shard ticks started over a tick late",
            has_shard.then(|| self.shards.iter().map(|shard| shard.late_ticks as f64).sum()),
        );
        add(
            "shard_dropped",
            MetricKind::Count,
            "datagrams dropped inside the shard",
            has_shard.then(|| self.shards.iter().map(|shard| shard.dropped as f64).sum()),
        );
        add(
            "input_reflect_p99_ticks",
            MetricKind::Ratio,
            "shard: input received → snapshot reflecting it sent, p99, ticks",
            self.shards.iter().filter_map(|shard| shard.input_reflect_p99_ticks).reduce(f64::max),
        );
        add(
            "baseline_ratio",
            MetricKind::Ratio,
            "shard datagrams/s ÷ bare echo (quinn or raw UDP) datagrams/s at the same load",
            self.baseline.as_ref().and_then(|b| b.rate_ratio),
        );
        add(
            "baseline_efficiency",
            MetricKind::Ratio,
            "shard datagrams per CPU-second ÷ echo datagrams per CPU-second",
            self.baseline.as_ref().and_then(|b| b.efficiency_ratio),
        );
        let cost = self.cost_model();
        add(
            "shard_cpu_us_per_match_second",
            MetricKind::Ratio,
            "cost model: shard CPU-µs per match per second of play",
            cost.cpu_us_per_match_second,
        );
        add(
            "shard_cpu_us_per_datagram",
            MetricKind::Ratio,
            "cost model: shard CPU-µs per datagram (in and out)",
            cost.cpu_us_per_datagram,
        );
        add(
            "matches_per_core",
            MetricKind::Count,
            "cost model: matches one shard core holds at 80% busy (linear in matches)",
            cost.matches_per_core_at_80pct,
        );
        add(
            "rss_per_connection",
            MetricKind::Bytes,
            "cost model: a separate shard process's RSS growth over the ramp per connection",
            cost.rss_per_connection_bytes,
        );
        add(
            "failed_checks",
            MetricKind::Count,
            "client/server cross-checks that disagree",
            count(self.checks.iter().filter(|check| !check.passed).count() as u64),
        );
        out
    }

    /// The value of metric `name`, if the run has data for it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics().into_iter().find(|(info, _)| info.name == name).and_then(|(_, value)| value)
    }

    /// Checks `thresholds` and stores the verdicts.
    pub fn evaluate(&mut self, thresholds: &[Threshold]) {
        let metrics = self.metrics();
        self.thresholds = thresholds
            .iter()
            .map(|threshold| {
                let actual =
                    metrics.iter().find(|(info, _)| info.name == threshold.metric).and_then(|(_, value)| *value);
                ThresholdOutcome::check(threshold, actual)
            })
            .collect();
    }

    /// `Err` naming every violated threshold (what sets a non-zero exit code).
    pub fn check_thresholds(&self) -> Result<(), crate::threshold::ThresholdsViolated> {
        let failed: Vec<String> = self
            .failed_thresholds()
            .iter()
            .map(|outcome| match outcome.actual {
                Some(actual) => format!("{} (actual {actual:.3})", outcome.threshold.expression),
                None => format!("{} (no data)", outcome.threshold.expression),
            })
            .collect();
        if failed.is_empty() { Ok(()) } else { Err(crate::threshold::ThresholdsViolated(failed)) }
    }

    /// Thresholds that failed.
    pub fn failed_thresholds(&self) -> Vec<&ThresholdOutcome> {
        self.thresholds.iter().filter(|outcome| !outcome.passed).collect()
    }

    /// Merges the reports of several harness processes that ran the same
    /// scenario at the same time. Counters and histograms add; shards read by
    /// more than one process (same metrics address) count once; timelines add
    /// second by second (percentiles take the worst process); thresholds are
    /// re-checked on the merged figures (`thresholds`, or the inputs' own when empty).
    pub fn merge(reports: Vec<Report>, thresholds: &[Threshold]) -> anyhow::Result<Report> {
        let mut reports = reports.into_iter();
        let mut merged = reports.next().context("nothing to merge")?;
        if merged.version != REPORT_VERSION {
            bail!(
                "report version {} is not {REPORT_VERSION}: merge reports from the same rally version",
                merged.version
            );
        }
        let mut own_thresholds: Vec<Threshold> =
            merged.thresholds.iter().map(|outcome| outcome.threshold.clone()).collect();
        for report in reports {
            if report.version != REPORT_VERSION {
                bail!(
                    "report version {} is not {REPORT_VERSION}: merge reports from the same rally version",
                    report.version
                );
            }
            if report.scenario != merged.scenario {
                bail!("cannot merge a {:?} report into a {:?} one", report.scenario, merged.scenario);
            }
            merged.runs.extend(report.runs);
            merged.measures.merge(&report.measures);
            for shard in report.shards {
                match merged.shards.iter_mut().find(|held| held.source == shard.source) {
                    // The same shard seen by two harness processes: keep the longer look.
                    Some(held) => {
                        if shard.window_s > held.window_s {
                            *held = shard;
                        }
                    }
                    None => merged.shards.push(shard),
                }
            }
            merged.baseline = match (merged.baseline.take(), report.baseline) {
                (Some(a), Some(b)) => Some(merge_baselines(a, b)),
                (a, b) => a.or(b),
            };
            merged.checks.extend(report.checks);
            merge_timelines(&mut merged.timeline, report.timeline);
            for outcome in report.thresholds {
                if !own_thresholds.iter().any(|held| held.expression == outcome.threshold.expression) {
                    own_thresholds.push(outcome.threshold);
                }
            }
        }
        merged.evaluate(if thresholds.is_empty() { &own_thresholds } else { thresholds });
        Ok(merged)
    }
}

fn merge_baselines(a: BaselineFigures, b: BaselineFigures) -> BaselineFigures {
    let datagrams_per_s = a.datagrams_per_s + b.datagrams_per_s;
    let shard_datagrams_per_s = a.shard_datagrams_per_s + b.shard_datagrams_per_s;
    BaselineFigures {
        kind: if a.kind == b.kind { a.kind } else { format!("{}+{}", a.kind, b.kind) },
        connections: a.connections + b.connections,
        connected: a.connected + b.connected,
        window_s: a.window_s.max(b.window_s),
        datagrams_per_s,
        loss: (a.loss + b.loss) / 2.0,
        cpu_pct: a.cpu_pct.zip(b.cpu_pct).map(|(x, y)| x + y),
        shard_datagrams_per_s,
        rate_ratio: (datagrams_per_s > 0.0).then(|| shard_datagrams_per_s / datagrams_per_s),
        efficiency_ratio: a.efficiency_ratio.zip(b.efficiency_ratio).map(|(x, y)| (x + y) / 2.0),
    }
}

fn merge_timelines(into: &mut Vec<Sample>, other: Vec<Sample>) {
    let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    for (idx, sample) in other.into_iter().enumerate() {
        if idx >= into.len() {
            into.push(sample);
            continue;
        }
        let held = &mut into[idx];
        held.clients_started += sample.clients_started;
        held.clients_active += sample.clients_active;
        held.matches_running += sample.matches_running;
        held.matches_finished += sample.matches_finished;
        held.errors += sample.errors;
        held.rtt_p99_ms = max(held.rtt_p99_ms, sample.rtt_p99_ms);
        held.server_added_p99_ms = max(held.server_added_p99_ms, sample.server_added_p99_ms);
        held.ticket_assign_p99_ms = max(held.ticket_assign_p99_ms, sample.ticket_assign_p99_ms);
        held.chat_delivery_p99_ms = max(held.chat_delivery_p99_ms, sample.chat_delivery_p99_ms);
        held.bytes_in_per_client = max(held.bytes_in_per_client, sample.bytes_in_per_client);
        held.bytes_out_per_client = max(held.bytes_out_per_client, sample.bytes_out_per_client);
        held.tick_p50_ms = max(held.tick_p50_ms, sample.tick_p50_ms);
        held.tick_p99_ms = max(held.tick_p99_ms, sample.tick_p99_ms);
        held.late_ticks = match (held.late_ticks, sample.late_ticks) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        held.shard_matches = match (held.shard_matches, sample.shard_matches) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (key, value) in sample.extra {
            *held.extra.entry(key).or_default() += value;
        }
    }
}

/// JSON has no infinity: histogram bounds of `+Inf` travel as `null`.
mod infinite_bounds {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(buckets: &[(f64, f64)], serializer: S) -> Result<S::Ok, S::Error> {
        let wire: Vec<(Option<f64>, f64)> =
            buckets.iter().map(|&(bound, count)| (bound.is_finite().then_some(bound), count)).collect();
        wire.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<(f64, f64)>, D::Error> {
        let wire = Vec::<(Option<f64>, f64)>::deserialize(deserializer)?;
        Ok(wire.into_iter().map(|(bound, count)| (bound.unwrap_or(f64::INFINITY), count)).collect())
    }
}

/// The metrics thresholds can name (values are irrelevant here).
pub fn metric_catalog() -> Vec<MetricInfo> {
    empty_report().metrics().into_iter().map(|(info, _)| info).collect()
}

fn empty_report() -> Report {
    Report {
        version: REPORT_VERSION,
        scenario: String::new(),
        runs: Vec::new(),
        measures: Measures::default(),
        shards: Vec::new(),
        baseline: None,
        checks: Vec::new(),
        timeline: Vec::new(),
        thresholds: Vec::new(),
    }
}

/// Parses threshold expressions against the catalog.
pub fn parse_thresholds(expressions: &[String]) -> anyhow::Result<Vec<Threshold>> {
    let catalog = metric_catalog();
    expressions.iter().map(|expression| Ok(Threshold::parse(expression, &catalog)?)).collect()
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |value| if value < 10.0 { format!("{value:.2}") } else { format!("{value:.1}") },
    )
}

fn num(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.digits$}"))
}

/// The terminal summary.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let counters = &report.measures.counters;
    let clients: u64 = report.runs.iter().map(|run| run.clients).sum();
    let _ = writeln!(
        out,
        "scenario {} over {} — {} harness process(es), {} clients asked, {} started, {} connected, {} failed",
        report.scenario,
        report.transport(),
        report.runs.len(),
        clients,
        counters.clients_started,
        counters.clients_connected,
        counters.clients_failed
    );
    if counters.matches_started > 0 || counters.tickets > 0 {
        let _ = writeln!(
            out,
            "matches: {} started, {} finished, {} still running at the stop; tickets {} ({} assigned)",
            counters.matches_started,
            counters.matches_finished,
            counters.matches_cut,
            counters.tickets,
            counters.tickets_assigned
        );
    }
    let _ = writeln!(
        out,
        "\n{:<20} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, histo) in &report.measures.latencies {
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            name,
            histo.count(),
            ms(histo.quantile_ms(0.5)),
            ms(histo.quantile_ms(0.9)),
            ms(histo.quantile_ms(0.99)),
            ms(histo.quantile_ms(0.999)),
            ms(histo.max_ms()),
        );
    }
    let (bytes_in, bytes_out) = report.bytes_per_client();
    if bytes_in.is_some() {
        let _ = writeln!(
            out,
            "\nper client (IP/UDP headers included): {} B/s in, {} B/s out; snapshots {} of {} expected ({} unusable)",
            num(bytes_in, 0),
            num(bytes_out, 0),
            counters.snapshots,
            counters.snapshots_expected,
            counters.snapshots_unusable
        );
    }
    if counters.quic_datagram_frames_out > 0 || counters.quic_datagram_frames_in > 0 {
        let _ = writeln!(
            out,
            "QUIC UDP packets per game datagram: {} up (client → shard), {} down",
            num(counters.quic_packets_per_datagram_up(), 3),
            num(counters.quic_packets_per_datagram_down(), 3),
        );
    }
    for shard in &report.shards {
        let _ = writeln!(
            out,
            "shard {}: tick p50 {} ms, p99 {} ms, p99.9 {} ms ({}), {} within 4 ms, {} late of {} ticks, {:.0} dgram/s in, {:.0} out, {} dropped, cpu {}%, reflect p99 {} ticks{}",
            shard.source,
            ms(shard.tick_p50_ms),
            ms(shard.tick_p99_ms),
            ms(shard.tick_p999_ms),
            if shard.tick_source.is_empty() { "prometheus buckets" } else { &shard.tick_source },
            shard.ticks_within_budget.map_or_else(|| "-".to_owned(), |f| format!("{:.2}%", f * 100.0)),
            shard.late_ticks,
            shard.ticks,
            shard.datagrams_in_per_s,
            shard.datagrams_out_per_s,
            shard.dropped,
            num(shard.cpu_pct, 0),
            num(shard.input_reflect_p99_ticks, 2),
            shard.matches_ended.map_or_else(String::new, |ended| format!(", {ended} matches ended")),
        );
    }
    let cost = report.cost_model();
    if cost.shard_cores.is_some() {
        let _ = writeln!(
            out,
            "cost model: {} matches on {} shard cores — {} CPU-µs per match-second, {} CPU-µs per datagram, {} matches per core at 80%, RSS per connection {}",
            num(cost.matches, 1),
            num(cost.shard_cores, 3),
            num(cost.cpu_us_per_match_second, 1),
            num(cost.cpu_us_per_datagram, 2),
            num(cost.matches_per_core_at_80pct, 0),
            cost.rss_per_connection_bytes
                .map_or_else(|| "- (embedded shard: not separable)".to_owned(), |bytes| format!("{bytes:.0} B")),
        );
    }
    if let Some(baseline) = &report.baseline {
        let _ = writeln!(
            out,
            "baseline {}: {} connections, {:.0} dgram/s, cpu {}%; shard/echo rate ratio {}, per-CPU efficiency ratio {}",
            baseline.kind,
            baseline.connected,
            baseline.datagrams_per_s,
            num(baseline.cpu_pct, 0),
            num(baseline.rate_ratio, 3),
            num(baseline.efficiency_ratio, 3),
        );
    }
    if report.measures.errors.is_empty() {
        let _ = writeln!(out, "errors: none");
    } else {
        let _ = writeln!(
            out,
            "errors: {}",
            report.measures.errors.iter().map(|(kind, n)| format!("{kind} {n}")).collect::<Vec<_>>().join(", ")
        );
    }
    for check in &report.checks {
        let _ = writeln!(
            out,
            "check {}: clients {} / servers {} — {}",
            check.name,
            check.clients,
            check.servers,
            if check.passed { "ok" } else { "MISMATCH" }
        );
    }
    for outcome in &report.thresholds {
        let _ = writeln!(
            out,
            "threshold {:<28} actual {:>10} — {}",
            outcome.threshold.expression,
            num(outcome.actual, 3),
            if outcome.passed {
                "pass"
            } else if outcome.actual.is_none() {
                "FAIL (no data)"
            } else {
                "FAIL"
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report_with(joins: u64, rtt_ms: u64) -> Report {
        let mut report = empty_report();
        report.scenario = "connect".into();
        report.measures.counters.joins = joins;
        report.measures.latency("rtt", Duration::from_millis(rtt_ms));
        report.shards.push(ShardFigures {
            source: "127.0.0.1:9600".into(),
            window_s: 10.0,
            tick_buckets: vec![(0.001, 90.0), (0.004, 100.0), (f64::INFINITY, 100.0)],
            ..ShardFigures::default()
        });
        report.timeline.push(Sample { t_s: 1.0, clients_active: 2, ..Sample::default() });
        report
    }

    #[test]
    fn merging_adds_clients_and_counts_a_shared_shard_once() {
        let thresholds = parse_thresholds(&["rtt_p99<5ms".to_owned(), "joins>=3".to_owned()]).unwrap();
        let merged = Report::merge(vec![report_with(2, 1), report_with(2, 10)], &thresholds).unwrap();
        assert_eq!(merged.measures.counters.joins, 4);
        assert_eq!(merged.measures.histo("rtt").count(), 2);
        assert_eq!(merged.shards.len(), 1);
        assert_eq!(merged.timeline[0].clients_active, 4);
        assert_eq!(merged.thresholds.len(), 2);
        assert!(!merged.thresholds[0].passed, "the slower process's RTT counts");
        assert!(merged.thresholds[1].passed);
        let mut other = report_with(1, 1);
        other.scenario = "chat".into();
        assert!(Report::merge(vec![report_with(1, 1), other], &[]).is_err());
    }

    #[test]
    fn every_metric_parses_as_a_threshold_and_json_round_trips() {
        let report = report_with(2, 3);
        for (info, _) in report.metrics() {
            let unit = if info.kind == MetricKind::Millis { "ms" } else { "" };
            parse_thresholds(&[format!("{}<1{unit}", info.name)]).unwrap();
        }
        assert_eq!(report.metric("tick_p99").map(|v| (v * 1e3).round()), Some(3700.0));
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.metric("rtt_p99"), report.metric("rtt_p99"));
    }
}
