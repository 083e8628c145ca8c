//! The report's transport and cost figures: UDP packets per game datagram
//! each way over QUIC from a real run, the cost model derived from a run's
//! figures, and the sweep's page that plots matches against tick duration
//! and CPU.

use std::time::Duration;

use rally_client::TransportKind;
use rally_loadtest::config::LoadConfig;
use rally_loadtest::connect::{self, ConnectConfig, ShardTarget};
use rally_loadtest::measure::Measures;
use rally_loadtest::report::{REPORT_VERSION, Report, RunInfo, Sample, ShardFigures, parse_thresholds, render_text};
use rally_loadtest::stack::EmbeddedShardConfig;
use rally_loadtest::sweep::{self, SweepReport};

#[test]
fn a_short_quic_run_reports_packets_per_datagram_each_way() {
    let config = ConnectConfig {
        load: LoadConfig {
            clients: 4,
            ramp_per_sec: 100.0,
            duration: Duration::from_secs(3),
            thresholds: parse_thresholds(&[
                "quic_packets_per_datagram_up<=3".into(),
                "quic_packets_per_datagram_down<=3".into(),
            ])
            .unwrap(),
            ..LoadConfig::default()
        },
        shard: ShardTarget::Embedded(EmbeddedShardConfig { countdown_ticks: 6, ..EmbeddedShardConfig::default() }),
        // Matches outlast the run: the clients play until the stop.
        points_to_win: 99,
        rounds: Some(1),
        transport: TransportKind::Quic,
        ..ConnectConfig::default()
    };
    let report = connect::run(&config).unwrap();
    let summary = render_text(&report);
    let counters = &report.measures.counters;
    assert!(report.measures.errors.is_empty(), "{summary}");
    // Counted from the welcome: every game datagram the clients sent went as a DATAGRAM frame.
    assert!(counters.quic_datagram_frames_out > 0, "{summary}");
    assert!(counters.quic_datagram_frames_out <= counters.input_datagrams, "{summary}");
    assert!(counters.quic_datagram_frames_in > 0, "{summary}");
    for metric in ["quic_packets_per_datagram_up", "quic_packets_per_datagram_down"] {
        let ratio = report.metric(metric).unwrap_or_else(|| panic!("{metric} is reported: {summary}"));
        // Each game datagram rides in a packet of its own; ACK-only packets add to that.
        assert!((0.9..3.0).contains(&ratio), "{metric} {ratio}: {summary}");
    }
    assert!(report.check_thresholds().is_ok(), "{summary}");
    assert!(summary.contains("QUIC UDP packets per game datagram"), "{summary}");

    // The cost model has the embedded shard's CPU, and no RSS: the shard's
    // memory cannot be told from the clients' in one process.
    let cost = report.cost_model();
    assert!(cost.shard_cores.is_some_and(|cores| cores > 0.0), "{summary}");
    assert!(cost.matches.is_some_and(|matches| matches > 0.0), "{summary}");
    assert!(cost.cpu_us_per_match_second.is_some_and(|us| us > 0.0), "{summary}");
    assert!(cost.cpu_us_per_datagram.is_some_and(|us| us > 0.0), "{summary}");
    assert_eq!(cost.rss_per_connection_bytes, None, "{summary}");
    assert!(!report.shards[0].tick_source.is_empty(), "{summary}");

    let page = rally_loadtest::html::render(&report);
    assert!(page.contains("QUIC UDP packets per game datagram") && page.contains("Cost model"));

    // A raw UDP run has no QUIC figures rather than made-up ones.
    let json = serde_json::to_string(&report).unwrap();
    let mut reread: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(reread.metric("quic_packets_per_datagram_up"), report.metric("quic_packets_per_datagram_up"));
    reread.measures.counters.quic_datagram_frames_out = 0;
    assert_eq!(reread.metric("quic_packets_per_datagram_up"), None);
}

/// A point of a sweep: `matches` matches held for 10 s after a 1 s ramp, the shard at `cpu_pct`.
fn point(matches: u64, cpu_pct: f64, tick_p99_ms: f64) -> Report {
    let clients = matches * 2;
    Report {
        version: REPORT_VERSION,
        scenario: "connect".into(),
        runs: vec![RunInfo {
            clients,
            ramp_per_sec: clients as f64,
            duration_s: 10.0,
            harness_cpu_pct: Some(cpu_pct / 2.0),
            ..RunInfo::default()
        }],
        measures: Measures::default(),
        shards: vec![ShardFigures {
            source: "embedded".into(),
            window_s: 10.0,
            // Every tick at the p99 bound, the bucket below it empty.
            tick_buckets: vec![(tick_p99_ms / 2e3, 0.0), (tick_p99_ms / 1e3, 600.0), (f64::INFINITY, 600.0)],
            ticks: 600,
            cpu_pct: Some(cpu_pct),
            datagrams_in_per_s: matches as f64 * 60.0,
            datagrams_out_per_s: matches as f64 * 60.0,
            ..ShardFigures::default()
        }],
        baseline: None,
        checks: Vec::new(),
        // The ramp's second, with fewer matches, is not in the window.
        timeline: (1..=11)
            .map(|t| Sample {
                t_s: f64::from(t),
                shard_matches: Some(if t == 1 { matches / 2 } else { matches }),
                ..Sample::default()
            })
            .collect(),
        thresholds: Vec::new(),
    }
}

#[test]
fn the_cost_model_follows_from_the_shards_cpu_and_matches() {
    let report = point(100, 40.0, 1.0);
    let cost = report.cost_model();
    assert_eq!(cost.matches, Some(100.0));
    assert_eq!(cost.shard_cores, Some(0.4));
    let close = |value: Option<f64>, expected: f64| value.is_some_and(|value| (value - expected).abs() < 1e-6);
    // 0.4 cores for 100 matches: 4,000 CPU-µs per match-second, 12,000 datagrams/s.
    assert!(close(cost.cpu_us_per_match_second, 4_000.0), "{cost:?}");
    assert!(close(cost.cpu_us_per_datagram, 0.4e6 / 12_000.0), "{cost:?}");
    assert!(close(cost.matches_per_core_at_80pct, 200.0), "{cost:?}");
    assert!(close(report.metric("matches_per_core"), 200.0));
    assert_eq!(cost.rss_per_connection_bytes, None, "no shard process, no RSS figure");

    // A shard in its own process: its RSS growth over the ramp per connection.
    let mut separate = point(100, 40.0, 1.0);
    separate.shards[0].rss_before_bytes = Some(10_000_000);
    separate.shards[0].rss_after_ramp_bytes = Some(12_000_000);
    separate.shards[0].connections_after_ramp = Some(200);
    assert_eq!(separate.cost_model().rss_per_connection_bytes, Some(10_000.0));
    assert_eq!(separate.metric("rss_per_connection"), Some(10_000.0));
    let thresholds = parse_thresholds(&["rss_per_connection<=32KiB".into()]).unwrap();
    separate.evaluate(&thresholds);
    assert!(separate.check_thresholds().is_ok());

    // Without the shard's CPU there is no model, not a zero one.
    let mut blind = point(100, 40.0, 1.0);
    blind.shards[0].cpu_pct = None;
    assert_eq!(blind.cost_model().cpu_us_per_match_second, None);
    assert_eq!(blind.metric("matches_per_core"), None);
}

#[test]
fn a_sweep_page_plots_matches_against_tick_duration_and_cpu() {
    let sweep = SweepReport {
        points: vec![point(100, 20.0, 0.5), point(200, 40.0, 0.8), point(400, 85.0, 3.0)],
        max_passing_clients: Some(800),
    };
    let page = rally_loadtest::html::render_sweep(&sweep);
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("Matches vs shard tick duration") && page.contains("Matches vs shard CPU"), "{page}");
    assert_eq!(page.matches("<svg").count(), 2);
    assert!(page.contains("800 (400 matches)"));
    let table = sweep::render_table(&sweep);
    let header = table.lines().next().unwrap();
    for column in ["p99.9", "us/mt-s", "us/dgram", "mt/core", "pk up", "pk dn", "result"] {
        assert!(header.contains(column), "{header}");
    }
    // 100 matches at 20% of a core: 400 matches per core at 80%.
    assert!(table.lines().nth(1).unwrap().contains(" 400 "), "{table}");
}
