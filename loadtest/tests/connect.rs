//! A small `connect` run against an embedded shard, over QUIC and over raw
//! UDP: zero errors, figures that agree with the shard's own counters, a
//! report that survives JSON and renders, and thresholds that fail when
//! violated; the raw UDP echo baseline echoes what it is sent.

use std::time::Duration;

use rally_client::TransportKind;
use rally_loadtest::baseline;
use rally_loadtest::config::LoadConfig;
use rally_loadtest::connect::{self, ClientDriver, ConnectConfig, ShardTarget};
use rally_loadtest::echo::EchoKind;
use rally_loadtest::report::{Report, parse_thresholds};
use rally_loadtest::stack::EmbeddedShardConfig;

#[test]
fn a_small_connect_run_is_clean_and_consistent() {
    let config = ConnectConfig {
        load: LoadConfig {
            clients: 6,
            ramp_per_sec: 100.0,
            // The run ends as soon as every pair has played its matches; this is a cap.
            duration: Duration::from_secs(60),
            thresholds: parse_thresholds(&["errors==0".into(), "failed_joins==0".into(), "matches_finished>=6".into()])
                .unwrap(),
            ..LoadConfig::default()
        },
        shard: ShardTarget::Embedded(EmbeddedShardConfig { countdown_ticks: 6, ..EmbeddedShardConfig::default() }),
        points_to_win: 1,
        rounds: Some(2),
        transport: TransportKind::Quic,
        baseline: None,
        driver: Default::default(),
    };
    let report = connect::run(&config).unwrap();
    let summary = rally_loadtest::report::render_text(&report);
    let counters = &report.measures.counters;
    assert!(report.measures.errors.is_empty(), "{summary}");
    assert_eq!(counters.clients_started, 6, "{summary}");
    assert_eq!(counters.clients_connected, 6, "{summary}");
    assert_eq!(counters.joins, 12, "3 pairs × 2 rounds × 2 seats: {summary}");
    assert_eq!(counters.matches_started, 6, "{summary}");
    assert_eq!(counters.matches_finished, 6, "{summary}");
    assert_eq!(report.shards.len(), 1, "the shard's metrics were read: {summary}");
    assert_eq!(report.shards[0].matches_ended, Some(6), "{summary}");
    assert!(report.checks.len() >= 2 && report.checks.iter().all(|check| check.passed), "{summary}");
    assert!(counters.snapshots > 0 && counters.snapshots <= counters.snapshots_expected, "{summary}");
    for latency in ["connect", "rtt", "match_wait", "input_to_snapshot", "snapshot_interval", "match_duration"] {
        assert!(report.measures.histo(latency).count() > 0, "{latency} was measured: {summary}");
    }
    assert_eq!(report.runs[0].transport, "quic");
    let (bytes_in, bytes_out) = report.bytes_per_client();
    assert!(bytes_in.unwrap() > 0.0 && bytes_out.unwrap() > 0.0, "{summary}");
    assert!(report.check_thresholds().is_ok(), "{summary}");

    // The JSON carries every figure: thresholds judge the reread report alike.
    let json = serde_json::to_string(&report).unwrap();
    let mut reread: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(reread.metric("rtt_p99"), report.metric("rtt_p99"));
    assert_eq!(reread.metric("matches_finished"), Some(6.0));

    // A violated threshold fails the verdict, naming it.
    reread.evaluate(&parse_thresholds(&["matches_finished>=7".into(), "joins<=1".into()]).unwrap());
    let violated = reread.check_thresholds().unwrap_err();
    assert_eq!(violated.0.len(), 2, "{violated}");
    assert!(violated.to_string().contains("matches_finished>=7"), "{violated}");

    // Two processes' reports merge into one with the sums.
    let merged = Report::merge(vec![report.clone(), report.clone()], &[]).unwrap();
    assert_eq!(merged.measures.counters.matches_finished, 12);
    assert_eq!(merged.runs.len(), 2);

    let page = rally_loadtest::html::render(&report);
    assert!(page.contains("<svg") && page.contains("PASS"), "the page plots and shows the verdict");
}

#[test]
fn the_link_conditioner_sits_between_every_client_and_the_shard() {
    let config = ConnectConfig {
        load: LoadConfig {
            clients: 4,
            ramp_per_sec: 100.0,
            duration: Duration::from_secs(60),
            conditions: rally_client::conditioner::LinkConditions {
                latency: Duration::from_millis(15),
                ..rally_client::conditioner::LinkConditions::perfect()
            },
            ..LoadConfig::default()
        },
        shard: ShardTarget::Embedded(EmbeddedShardConfig { countdown_ticks: 6, ..EmbeddedShardConfig::default() }),
        points_to_win: 1,
        rounds: Some(1),
        transport: TransportKind::Quic,
        baseline: None,
        driver: Default::default(),
    };
    let report = connect::run(&config).unwrap();
    let summary = rally_loadtest::report::render_text(&report);
    assert!(report.measures.errors.is_empty(), "{summary}");
    assert_eq!(report.measures.counters.matches_finished, 2, "{summary}");
    // 15 ms each way through the conditioning proxy: no round trip is shorter than 30 ms.
    let rtt_min = report.measures.histo("rtt").min_ms().unwrap();
    assert!(rtt_min >= 29.0, "rtt min {rtt_min} ms: {summary}");
    assert_eq!(report.runs[0].conditions.latency_ms, 15.0);
}

#[test]
fn a_small_connect_run_over_raw_udp_through_the_sdk_is_clean_and_consistent() {
    small_raw_udp_run(ClientDriver::Sdk, "sdk");
}

#[test]
fn a_small_connect_run_over_raw_udp_in_the_swarm_is_clean_and_consistent() {
    // The default for raw UDP to a loopback shard.
    small_raw_udp_run(ClientDriver::Auto, "swarm");
}

fn small_raw_udp_run(driver: ClientDriver, expected: &str) {
    let config = ConnectConfig {
        load: LoadConfig {
            clients: 6,
            ramp_per_sec: 100.0,
            // The run ends as soon as every pair has played its matches; this is a cap.
            duration: Duration::from_secs(60),
            thresholds: parse_thresholds(&["errors==0".into(), "failed_joins==0".into()]).expect("thresholds"),
            ..LoadConfig::default()
        },
        shard: ShardTarget::Embedded(EmbeddedShardConfig { countdown_ticks: 6, ..EmbeddedShardConfig::default() }),
        points_to_win: 1,
        rounds: Some(2),
        transport: TransportKind::Udp,
        baseline: None,
        driver,
    };
    let report = connect::run(&config).expect("the run");
    let summary = rally_loadtest::report::render_text(&report);
    let counters = &report.measures.counters;
    assert!(report.measures.errors.is_empty(), "{summary}");
    assert_eq!(counters.clients_connected, 6, "{summary}");
    assert_eq!(counters.joins, 12, "3 pairs × 2 rounds × 2 seats: {summary}");
    assert_eq!(counters.matches_started, 6, "{summary}");
    assert_eq!(counters.matches_finished, 6, "{summary}");
    assert_eq!(report.shards.len(), 1, "the shard's metrics were read: {summary}");
    assert_eq!(report.shards[0].matches_ended, Some(6), "{summary}");
    assert!(report.checks.len() >= 2 && report.checks.iter().all(|check| check.passed), "{summary}");
    assert!(counters.snapshots > 0 && counters.snapshots <= counters.snapshots_expected, "{summary}");
    for latency in ["connect", "match_wait", "input_to_snapshot", "snapshot_interval", "match_duration"] {
        assert!(report.measures.histo(latency).count() > 0, "{latency} was measured: {summary}");
    }
    assert_eq!(report.measures.histo("rtt").count(), 0, "raw UDP keeps no transport RTT: {summary}");

    // Raw UDP bytes: every datagram is rally's kind byte plus the session's payload, no QUIC.
    assert_eq!(counters.udp_datagrams_out, counters.input_datagrams, "{summary}");
    assert!(counters.udp_datagrams_in >= counters.snapshots, "{summary}");
    assert!(counters.udp_bytes_out > counters.udp_datagrams_out, "{summary}");
    let (bytes_in, bytes_out) = report.bytes_per_client();
    let (bytes_in, bytes_out) = (bytes_in.expect("bytes in"), bytes_out.expect("bytes out"));
    let per_datagram_out =
        (counters.udp_bytes_out + counters.udp_datagrams_out * 28) as f64 / counters.udp_datagrams_out as f64;
    assert!(per_datagram_out > 29.0 && per_datagram_out < 200.0, "{per_datagram_out} B per input datagram");
    assert!(bytes_in > 0.0 && bytes_out > 0.0, "{summary}");
    assert!(report.check_thresholds().is_ok(), "{summary}");

    assert_eq!(report.runs[0].transport, "udp");
    assert_eq!(report.runs[0].settings.get("client_driver").map(String::as_str), Some(expected), "{summary}");
    assert!(summary.contains("connect over udp"), "{summary}");
    let json = serde_json::to_string(&report).expect("JSON");
    let reread: Report = serde_json::from_str(&json).expect("reread");
    assert_eq!(reread.transport(), "udp");
    let page = rally_loadtest::html::render(&report);
    assert!(page.contains("connect over udp") && page.contains("PASS"), "the page names the transport");
}

#[test]
fn the_raw_udp_echo_baseline_echoes_every_datagram() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let echo =
        runtime.block_on(baseline::measure_echo(EchoKind::Udp, 4, 100.0, Duration::from_secs(1), None, 1)).unwrap();
    assert_eq!(echo.kind, "udp-echo");
    assert_eq!(echo.connected, 4);
    assert!(echo.datagrams_per_s > 0.0, "{echo:?}");
    assert!(echo.loss == 0.0, "{echo:?}");
}

#[test]
fn swarm_clients_cut_at_the_stop_leave_without_errors() {
    // Matches to 99 points outlast the run: every client leaves at the stop,
    // and the shard's goodbye after a leave is the normal end, not an error.
    let config = ConnectConfig {
        load: LoadConfig {
            clients: 10,
            ramp_per_sec: 100.0,
            duration: Duration::from_secs(2),
            thresholds: parse_thresholds(&["errors==0".into()]).unwrap(),
            ..LoadConfig::default()
        },
        shard: ShardTarget::Embedded(EmbeddedShardConfig { countdown_ticks: 6, ..EmbeddedShardConfig::default() }),
        points_to_win: rally_sim::pong::MAX_POINTS_TO_WIN,
        rounds: None,
        transport: TransportKind::Udp,
        baseline: None,
        driver: ClientDriver::Swarm,
    };
    let report = connect::run(&config).unwrap();
    let summary = rally_loadtest::report::render_text(&report);
    let counters = &report.measures.counters;
    assert!(report.measures.errors.is_empty(), "{summary}");
    assert_eq!(counters.joins, 10, "{summary}");
    assert_eq!((counters.matches_started, counters.matches_cut, counters.matches_finished), (5, 5, 0), "{summary}");
    assert!(counters.client_seconds > 0.0 && counters.snapshots > 0, "{summary}");
}
