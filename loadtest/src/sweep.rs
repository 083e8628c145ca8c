//! A capacity sweep (`rally loadtest connect --sweep`): the [`connect`]
//! scenario once per client count, each point on a fresh embedded shard (or
//! the same running one), every point judged by the same thresholds, and one
//! table of them all. The most clients that passed is the shard's capacity on
//! this machine under those criteria.
//!
//! Points run one after another in this process, like single `connect` runs:
//! the embedded shard on its own pinned core, the clients on theirs, and with
//! a baseline the bare echo measured first at the same load.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::connect::{self, ConnectConfig};
use crate::report::{Report, parse_thresholds};

/// What a point must meet when the run names no thresholds: the capacity
/// target's criteria. No errors, no lost snapshot, no late tick, nothing
/// dropped inside the shard, and 99% of ticks within the 4 ms budget.
pub const CAPACITY_THRESHOLDS: &[&str] =
    &["errors==0", "snapshot_loss==0", "late_ticks==0", "shard_dropped==0", "ticks_within_budget>=99%"];

/// A finished sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepReport {
    /// One `connect` report per point, in the order run, thresholds evaluated.
    pub points: Vec<Report>,
    /// The most clients of a point that met every threshold.
    pub max_passing_clients: Option<u64>,
}

/// Runs `config` once for each count in `clients` (its own `load.clients` is
/// ignored), with its thresholds, or [`CAPACITY_THRESHOLDS`] when it has none.
/// `on_point` sees each report as soon as its point is done.
pub fn run(config: &ConnectConfig, clients: &[u64], mut on_point: impl FnMut(&Report)) -> anyhow::Result<SweepReport> {
    anyhow::ensure!(!clients.is_empty(), "a sweep needs at least one client count");
    let thresholds = if config.load.thresholds.is_empty() {
        let defaults: Vec<String> = CAPACITY_THRESHOLDS.iter().map(|&expression| expression.to_owned()).collect();
        parse_thresholds(&defaults)?
    } else {
        config.load.thresholds.clone()
    };
    let mut points = Vec::with_capacity(clients.len());
    for &count in clients {
        let mut point = config.clone();
        point.load.clients = count;
        point.load.thresholds = thresholds.clone();
        let report = connect::run(&point)?;
        on_point(&report);
        points.push(report);
    }
    let max_passing_clients = points.iter().filter(|report| passed(report)).map(clients_of).max();
    Ok(SweepReport { points, max_passing_clients })
}

fn passed(report: &Report) -> bool {
    report.failed_thresholds().is_empty()
}

fn clients_of(report: &Report) -> u64 {
    report.runs.iter().map(|run| run.clients).sum()
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.digits$}"))
}

/// The header of [`render_row`]'s lines. Besides the thresholds' figures:
/// the cost model (shard CPU-µs per match-second and per datagram, matches per
/// core at 80%) and QUIC UDP packets per game datagram each way.
pub fn render_header() -> String {
    format!(
        "{:>7} {:>7} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>5} {:>8} {:>6} {:>6} {:>9} {:>7} {:>6} {:>5} {:>8} {:>8} {:>7} {:>6} {:>6} {:>6}",
        "clients",
        "matches",
        "connected",
        "dgram/s",
        "p50 ms",
        "p99 ms",
        "p99.9",
        "in 4ms",
        "late",
        "loss %",
        "shard%",
        "gen%",
        "udp pk/s",
        "rcvbuf",
        "ratio",
        "eff",
        "us/mt-s",
        "us/dgram",
        "mt/core",
        "pk up",
        "pk dn",
        "result"
    )
}

/// One point as a table row.
pub fn render_row(report: &Report) -> String {
    let clients = clients_of(report);
    let shard = report.shards.first();
    let udp = report.runs.first().and_then(|run| run.system_udp);
    let cost = report.cost_model();
    format!(
        "{:>7} {:>7} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>5} {:>8} {:>6} {:>6} {:>9} {:>7} {:>6} {:>5} {:>8} {:>8} {:>7} {:>6} {:>6} {:>6}",
        clients,
        clients / 2,
        opt(report.metric("clients_connected"), 0),
        opt(shard.map(|shard| shard.datagrams_in_per_s + shard.datagrams_out_per_s), 0),
        opt(report.metric("tick_p50"), 2),
        opt(report.metric("tick_p99"), 2),
        opt(report.metric("tick_p999"), 2),
        opt(report.metric("ticks_within_budget").map(|fraction| fraction * 100.0), 2),
        opt(report.metric("late_ticks"), 0),
        opt(report.metric("snapshot_loss").map(|fraction| fraction * 100.0), 4),
        opt(shard.and_then(|shard| shard.cpu_pct), 0),
        opt(report.runs.first().and_then(|run| run.harness_cpu_pct), 0),
        opt(udp.map(|udp| udp.packets_out_per_s), 0),
        udp.map_or_else(|| "-".to_owned(), |udp| udp.rcvbuf_errors.to_string()),
        opt(report.metric("baseline_ratio"), 2),
        opt(report.metric("baseline_efficiency"), 2),
        opt(cost.cpu_us_per_match_second, 1),
        opt(cost.cpu_us_per_datagram, 2),
        opt(cost.matches_per_core_at_80pct, 0),
        opt(report.metric("quic_packets_per_datagram_up"), 3),
        opt(report.metric("quic_packets_per_datagram_down"), 3),
        if passed(report) { "PASS" } else { "FAIL" },
    )
}

/// The whole table, with the verdict and the criteria under it.
pub fn render_table(sweep: &SweepReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", render_header());
    for report in &sweep.points {
        let _ = writeln!(out, "{}", render_row(report));
    }
    let criteria: Vec<&str> = sweep
        .points
        .first()
        .map(|report| report.thresholds.iter().map(|outcome| outcome.threshold.expression.as_str()).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "most clients passing ({}): {}",
        criteria.join(", "),
        sweep
            .max_passing_clients
            .map_or_else(|| "none".to_owned(), |clients| format!("{clients} ({} matches)", clients / 2))
    );
    out
}
