//! Bots play whole matches through an embedded shard over real QUIC and raw
//! UDP on loopback, and over the in-memory link.

use std::time::Duration;

use rally_bot::bench::{BenchConfig, ShardTarget, Side, run_bench};
use rally_bot::{Difficulty, PolicyKind};
use rally_client::TransportKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_onnx_bot_completes_matches_against_the_scripted_predictor() {
    if let Err(err) = rally_bot::onnx::runtime() {
        panic!("this test needs ONNX Runtime: {err}");
    }
    let config = BenchConfig {
        a: Side::new(PolicyKind::Onnx),
        // Easy, so that points come quickly whatever the model's strength.
        b: Side { difficulty: Difficulty::EASY, ..Side::new(PolicyKind::Predictor) },
        matches: 4,
        concurrency: 4,
        points_to_win: 1,
        // Twice the game's rate, same ticks per snapshot: the policies see the same game, faster.
        target: ShardTarget::Embedded { tick_rate_hz: 120, snapshot_rate_hz: 60 },
        latency_samples: 200,
        ..BenchConfig::default()
    };
    let report =
        tokio::time::timeout(Duration::from_secs(120), run_bench(config)).await.expect("within 120 s").unwrap();
    assert_eq!(report.failed, 0, "{:?}", report.first_error);
    assert_eq!(report.matches, 4);
    assert!(report.win_rate.low <= report.win_rate.value && report.win_rate.value <= report.win_rate.high);
    // One-point matches end 1–0 either way: each is +1 or −1 for A.
    let expected_margin = (2.0 * report.a_wins as f64 - report.matches as f64) / report.matches as f64;
    assert_eq!(report.mean_margin, expected_margin, "one-point matches end 1–0 either way");
    // Every seat decided on its views, through the batching deciders.
    for play in &report.play {
        assert!(play.decisions > 0 && play.calls > 0 && play.calls <= play.decisions, "{play:?}");
    }
    let table = report.table();
    assert!(table.contains("A win rate") && table.contains("Elo"), "{table}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["matches"], 4);
    assert_eq!(json["transport"], "quic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_play_over_raw_udp_and_the_in_memory_link_as_over_quic() {
    if let Err(err) = rally_bot::onnx::runtime() {
        panic!("this test needs ONNX Runtime: {err}");
    }
    for transport in [TransportKind::Udp, TransportKind::Memory] {
        let config = BenchConfig {
            a: Side::new(PolicyKind::Onnx),
            b: Side { difficulty: Difficulty::EASY, ..Side::new(PolicyKind::Predictor) },
            matches: 4,
            concurrency: 4,
            points_to_win: 1,
            target: ShardTarget::Embedded { tick_rate_hz: 120, snapshot_rate_hz: 60 },
            latency_samples: 200,
            transport,
            ..BenchConfig::default()
        };
        let report =
            tokio::time::timeout(Duration::from_secs(120), run_bench(config)).await.expect("within 120 s").unwrap();
        assert_eq!(report.failed, 0, "{transport}: {:?}", report.first_error);
        assert_eq!(report.matches, 4, "{transport}");
        let expected_margin = (2.0 * report.a_wins as f64 - report.matches as f64) / report.matches as f64;
        assert_eq!(report.mean_margin, expected_margin, "{transport}: one-point matches end 1–0 either way");
        for play in &report.play {
            assert!(play.decisions > 0, "{transport}: {play:?}");
        }
        assert!(report.table().contains(&format!("over {transport}")), "{}", report.table());
    }
}
