//! `rally loadtest connect --processes N` (issue 19): a small run spread over
//! two child `rally` processes against the parent's embedded shard merges into
//! one clean report whose sums match the shard's own counters; a child that
//! fails fails the run with its output.

#![expect(clippy::unwrap_used, reason = "tests unwrap what must be there")]

use std::path::PathBuf;
use std::time::Duration;

use rally_client::TransportKind;
use rally_loadtest::config::LoadConfig;
use rally_loadtest::report::parse_thresholds;
use rally_loadtest::spread::{self, SpreadConfig, SpreadShard};
use rally_loadtest::stack::EmbeddedShardConfig;

fn config(transport: TransportKind) -> SpreadConfig {
    SpreadConfig {
        program: PathBuf::from(env!("CARGO_BIN_EXE_rally")),
        processes: 2,
        load: LoadConfig {
            clients: 8,
            ramp_per_sec: 100.0,
            // Each child ends as soon as its pairs have played their rounds; this is a cap.
            duration: Duration::from_secs(60),
            seed: 5,
            thresholds: parse_thresholds(&["errors==0".into(), "matches_finished>=4".into()]).unwrap(),
            ..LoadConfig::default()
        },
        shard: SpreadShard::Embedded(EmbeddedShardConfig { countdown_ticks: 6, ..EmbeddedShardConfig::default() }),
        points_to_win: 1,
        rounds: Some(1),
        transport,
        extra_args: Vec::new(),
    }
}

fn assert_clean_spread(transport: TransportKind) {
    let mut config = config(transport);
    if transport == TransportKind::Udp {
        // How matches finishing is counted is the client driver's business (the
        // raw UDP swarm's differs from the SDK's); the shard's count is checked below.
        config.load.thresholds = parse_thresholds(&["errors==0".into(), "failed_joins==0".into()]).unwrap();
    }
    let report = spread::run(&config).unwrap();
    let summary = rally_loadtest::report::render_text(&report);
    let counters = &report.measures.counters;
    assert!(report.measures.errors.is_empty(), "{summary}");
    assert_eq!(report.runs.len(), 2, "one run per child: {summary}");
    let mut seeds: Vec<u64> = report.runs.iter().map(|run| run.seed).collect();
    seeds.sort_unstable();
    assert_eq!(seeds, [5, 6], "each child has its own seed: {summary}");
    assert!(report.runs.iter().all(|run| run.clients == 4 && run.transport == transport.name()), "{summary}");
    assert_eq!(counters.clients_started, 8, "{summary}");
    assert_eq!(counters.clients_connected, 8, "{summary}");
    assert_eq!(counters.matches_started, 4, "{summary}");
    if transport == TransportKind::Quic {
        assert_eq!(counters.matches_finished, 4, "{summary}");
    }
    assert_eq!(report.shards.len(), 1, "both children read the one shard, counted once: {summary}");
    assert_eq!(report.shards[0].matches_ended, Some(4), "the parent's shard ended every match: {summary}");
    assert!(!report.checks.is_empty() && report.checks.iter().all(|check| check.passed), "{summary}");
    assert_eq!(report.thresholds.len(), 2, "the parent judged the merged figures: {summary}");
    assert!(report.check_thresholds().is_ok(), "{summary}");
}

#[test]
fn two_processes_over_quic_merge_into_one_clean_report() {
    assert_clean_spread(TransportKind::Quic);
}

#[test]
fn two_processes_over_raw_udp_merge_into_one_clean_report() {
    assert_clean_spread(TransportKind::Udp);
}

#[test]
fn a_failing_child_fails_the_run_with_its_exit_status_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("failing-harness");
    std::fs::write(&program, "#!/bin/sh\necho \"cannot run $1 $2\" >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = SpreadConfig { program, ..config(TransportKind::Quic) };
    let err = spread::run(&config).expect_err("the child failed").to_string();
    assert!(err.contains("exit status: 3"), "names the child's status: {err}");
    assert!(err.contains("cannot run loadtest connect"), "shows the child's output: {err}");
}
