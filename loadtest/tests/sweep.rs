//! The capacity sweep: one `connect` run per client count against a fresh
//! embedded shard, each judged by the same thresholds, one table, and the most
//! clients that passed.

use std::time::Duration;

use rally_client::TransportKind;
use rally_loadtest::config::LoadConfig;
use rally_loadtest::connect::{ConnectConfig, ShardTarget};
use rally_loadtest::report::parse_thresholds;
use rally_loadtest::stack::EmbeddedShardConfig;
use rally_loadtest::sweep::{self, SweepReport};

#[test]
fn a_sweep_runs_every_point_and_names_the_most_clients_that_passed() {
    let config = ConnectConfig {
        load: LoadConfig {
            // Ignored: the sweep sets each point's count.
            clients: 1_000,
            ramp_per_sec: 100.0,
            // Each point ends once its pairs have played their match; this is a cap.
            duration: Duration::from_secs(60),
            // Two clients cannot pass the second criterion, four can.
            thresholds: parse_thresholds(&["errors==0".into(), "clients_connected>=4".into()]).unwrap(),
            ..LoadConfig::default()
        },
        shard: ShardTarget::Embedded(EmbeddedShardConfig { countdown_ticks: 6, ..EmbeddedShardConfig::default() }),
        points_to_win: 1,
        rounds: Some(1),
        transport: TransportKind::Quic,
        baseline: None,
        driver: Default::default(),
    };
    let mut seen = Vec::new();
    let report = sweep::run(&config, &[2, 4], |point| seen.push(point.runs[0].clients)).unwrap();
    let table = sweep::render_table(&report);
    assert_eq!(seen, [2, 4], "{table}");
    assert_eq!(report.points[0].measures.counters.matches_finished, 1, "{table}");
    assert_eq!(report.points[1].measures.counters.matches_finished, 2, "{table}");
    assert_eq!(report.max_passing_clients, Some(4), "{table}");
    // Pinning the first point to its cores must not make the next see fewer.
    let runs: Vec<_> = report.points.iter().map(|point| (point.runs[0].cores, point.runs[0].pinned)).collect();
    assert_eq!(runs[0], runs[1], "{table}");
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[1].trim_start().starts_with("2 ") && rows[1].ends_with("FAIL"), "{table}");
    assert!(rows[2].trim_start().starts_with("4 ") && rows[2].ends_with("PASS"), "{table}");
    assert!(table.contains("errors==0, clients_connected>=4): 4 (2 matches)"), "{table}");

    let json = serde_json::to_string(&report).unwrap();
    let reread: SweepReport = serde_json::from_str(&json).unwrap();
    assert_eq!(reread.points.len(), 2);
    assert_eq!(reread.max_passing_clients, Some(4));
}

#[test]
fn the_capacity_criteria_parse_and_a_sweep_needs_points() {
    let defaults: Vec<String> = sweep::CAPACITY_THRESHOLDS.iter().map(|&text| text.to_owned()).collect();
    assert_eq!(parse_thresholds(&defaults).unwrap().len(), defaults.len());
    assert!(sweep::run(&ConnectConfig::default(), &[], |_| {}).is_err());
}
