//! Small runs of the scenarios that go through the services, each against an
//! embedded stack (lobby on temporary SQLite, matchmaker, shard): zero errors,
//! and client figures that agree with the servers' own counters.

use std::time::Duration;

use rally_loadtest::config::LoadConfig;
use rally_loadtest::platform::{self, PlatformConfig, PlatformScenario, PlatformTarget};
use rally_loadtest::report::{Report, parse_thresholds, render_text};
use rally_loadtest::services::ServicesConfig;
use rally_loadtest::stack::EmbeddedShardConfig;

fn embedded() -> PlatformTarget {
    PlatformTarget::Embedded {
        shard: EmbeddedShardConfig { countdown_ticks: 6, ..EmbeddedShardConfig::default() },
        services: ServicesConfig { points_to_win: 1, real_password_hashing: false },
    }
}

fn run(scenario: PlatformScenario, clients: u64, duration: Duration) -> Report {
    let config = PlatformConfig {
        load: LoadConfig {
            clients,
            ramp_per_sec: 200.0,
            duration,
            thresholds: parse_thresholds(&["errors==0".into(), "failed_checks==0".into()]).expect("valid thresholds"),
            ..LoadConfig::default()
        },
        scenario,
        target: embedded(),
    };
    let report = platform::run(&config).expect("the run completes");
    let summary = render_text(&report);
    assert!(report.measures.errors.is_empty(), "{summary}");
    assert!(!report.checks.is_empty() && report.checks.iter().all(|check| check.passed), "{summary}");
    assert!(report.check_thresholds().is_ok(), "{summary}");
    assert_eq!(report.measures.counters.clients_connected, clients, "every client logged in: {summary}");
    assert!(report.measures.histo("login").count() == clients, "{summary}");
    report
}

#[test]
fn chat_subscribers_receive_every_message() {
    let report = run(PlatformScenario::Chat { senders: 2, rate_per_sec: 20.0 }, 10, Duration::from_secs(1));
    let counters = &report.measures.counters;
    assert!(counters.chat_sent > 0, "{}", render_text(&report));
    assert_eq!(counters.chat_received, counters.chat_sent * 8);
    assert_eq!(report.measures.histo("chat_delivery").count(), counters.chat_received);
}

#[test]
fn a_ticket_storm_pairs_every_ticket() {
    let report = run(PlatformScenario::Matchmaker, 8, Duration::from_secs(1));
    let counters = &report.measures.counters;
    assert!(counters.tickets_assigned >= 8, "{}", render_text(&report));
    assert_eq!(report.measures.histo("ticket_assign").count(), counters.tickets_assigned);
}

#[test]
fn full_flow_players_queue_play_and_get_rated() {
    // Each of 4 players plays 2 matches: 4 matches, all finished, all rated.
    let report = run(PlatformScenario::Full { rounds: Some(2) }, 4, Duration::from_secs(60));
    let counters = &report.measures.counters;
    let summary = render_text(&report);
    assert_eq!(counters.matches_started, 4, "{summary}");
    assert_eq!(counters.matches_finished, 4, "{summary}");
    assert_eq!(counters.tickets_assigned, 8, "{summary}");
    assert_eq!(report.shards.len(), 1, "{summary}");
    assert!(report.checks.iter().any(|check| check.name.contains("ratings")), "{summary}");
}
