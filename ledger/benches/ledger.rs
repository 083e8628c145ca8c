//! Ledger benchmarks: append rate (batches of 1,000 entries, one signed checkpoint per
//! batch, fsynced), verification of a 100,000-entry log without replay, and the
//! replay-verification rate.
//!
//! `cargo bench -p rally-ledger --bench ledger`

#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rally_ledger::entry::{ENTRY_VERSION, Entry};
use rally_ledger::{Ledger, LogSigner, VerifyOptions, verify};
use rally_sim::replay::{InputLog, LogEntry, SeatAction, replay};
use rally_sim::{LifecycleConfig, MatchSpec, PongWorld};
use rally_tournament::{Entrant, Format, GameOutcome, Input, Rules, Seeding, Stage, Tournament};

const BATCH: usize = 1_000;

fn signer() -> LogSigner {
    LogSigner::from_seed([7; 32], "bench.rally/ledger").unwrap()
}

/// A 16-entrant single-elimination cup played to the end (home always wins 3-1), as
/// the service would log it: about 22 entries. With a ledger in `replays`, each match
/// is a real Pong match whose replay file is stored there.
fn cup(id: u64, mut replays: Option<&mut Ledger>) -> Vec<Entry> {
    let rules = Rules {
        stages: vec![Stage { format: Format::SingleElimination { third_place: false }, best_of: 1, advance: None }],
        seeding: Seeding::Rating,
    };
    let entrants: Vec<Entrant> = (0..16)
        .map(|n| Entrant { id: id * 100 + n, name: format!("player-{n}"), rating: 1400 + n as i32 * 7 })
        .collect();
    let mut engine = Tournament::new(rules.clone(), entrants).unwrap();
    let mut entries = vec![
        Entry::TournamentCreated {
            v: ENTRY_VERSION,
            tournament: id,
            name: format!("cup {id}"),
            rules,
            created_at_ms: id,
        },
        Entry::EntrantsLocked { v: ENTRY_VERSION, tournament: id, seeds: engine.seeds().to_vec() },
    ];
    let mut paired = std::collections::BTreeSet::new();
    loop {
        let new: Vec<_> = engine.ready_games().into_iter().filter(|game| !paired.contains(&game.key)).collect();
        if new.is_empty() {
            break;
        }
        paired.extend(new.iter().map(|game| game.key));
        entries.push(Entry::Paired { v: ENTRY_VERSION, tournament: id, games: new.clone() });
        for game in new {
            let (scores, winner_side, reason, input_log_sha256, replay_sha256) =
                if let Some(ledger) = replays.as_deref_mut() {
                    let (bytes, outcome) = pong_match(game.home);
                    let digest = hex::encode(InputLog::decode(&bytes).unwrap().digest());
                    let reason = if outcome.reason == rally_sim::EndReason::Score { "score" } else { "time_limit" };
                    (outcome.scores, outcome.winner, reason, digest, ledger.put_replay(&bytes).unwrap())
                } else {
                    (vec![3, 1], Some(0), "score", "ab".repeat(32), String::new())
                };
            let outcome = GameOutcome::Played { home_score: scores[0], away_score: scores[1] };
            engine.apply(&Input::Result { key: game.key, outcome: outcome.clone() }).unwrap();
            entries.push(Entry::MatchResult {
                v: ENTRY_VERSION,
                tournament: id,
                key: game.key,
                match_id: id * 1000 + u64::from(game.key.table),
                outcome,
                home: game.home,
                away: game.away,
                scores,
                winner_side,
                reason: reason.to_owned(),
                shard: "shard-0".to_owned(),
                ended_at_ms: 1_700_000_000_000 + id,
                input_log_sha256,
                replay_sha256,
            });
        }
    }
    entries.push(Entry::Finished {
        v: ENTRY_VERSION,
        tournament: id,
        standings: engine.standings(),
        champion: engine.champion(),
    });
    entries
}

/// A real Pong match of up to three points, about 2,000 ticks.
fn pong_match(seed: u64) -> (Vec<u8>, rally_sim::MatchOutcome) {
    let mut entries = vec![
        LogEntry { tick: 0, seat: 0, action: SeatAction::Connect },
        LogEntry { tick: 0, seat: 1, action: SeatAction::Connect },
    ];
    for tick in (70..1800).step_by(45) {
        entries.push(LogEntry { tick, seat: (tick % 2) as u8, action: SeatAction::Input((tick % 3) as u8) });
    }
    let log = InputLog {
        game: "pong".to_owned(),
        spec: MatchSpec { n_seats: 2, points_to_win: 3, time_limit_ticks: 1800 },
        seed,
        lifecycle: LifecycleConfig::default(),
        entries,
        end_tick: 3000,
    };
    let outcome = replay::<PongWorld>(&log).unwrap().outcome.unwrap();
    (log.encode().unwrap(), outcome)
}

/// Fills a log with cups until it holds at least `n_entries`, appending in batches.
fn fill(dir: &Path, n_entries: usize, replays: bool) -> Ledger {
    let mut ledger = Ledger::open(dir, signer()).unwrap();
    let mut pending = vec![];
    let mut id = 1;
    while (ledger.size() as usize) + pending.len() < n_entries {
        pending.extend(cup(id, replays.then_some(&mut ledger)));
        id += 1;
        if pending.len() >= BATCH {
            ledger.append(&pending).unwrap();
            pending.clear();
        }
    }
    ledger.append(&pending).unwrap();
    ledger
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), signer()).unwrap();
    let mut entries = vec![];
    let mut id = 1;
    while entries.len() < BATCH {
        entries.extend(cup(id, None));
        id += 1;
    }
    entries.truncate(BATCH);
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(30);
    group.bench_function("append 1000 entries + signed checkpoint (fsynced)", |b| {
        b.iter(|| black_box(ledger.append(&entries).unwrap()));
    });
    group.finish();
}

fn verify_100k(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = fill(dir.path(), 100_000, false);
    let n_entries = ledger.size();
    drop(ledger);
    let source = dir.path().to_str().unwrap().to_owned();
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(n_entries));
    group.sample_size(10);
    group.bench_function(format!("verify {n_entries} entries without replay"), |b| {
        b.iter(|| black_box(verify(&source, &VerifyOptions::default()).unwrap()));
    });
    group.finish();
}

fn verify_replays(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // Four cups: 60 matches with replay files.
    let ledger = fill(dir.path(), 88, true);
    drop(ledger);
    let source = dir.path().to_str().unwrap().to_owned();
    let report = verify(&source, &VerifyOptions { replay: true, key: None }).unwrap();
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(report.replayed as u64));
    group.sample_size(10);
    group.bench_function(
        format!(
            "verify with replay: {} matches on {} threads",
            report.replayed,
            std::thread::available_parallelism().map_or(1, usize::from)
        ),
        |b| b.iter(|| black_box(verify(&source, &VerifyOptions { replay: true, key: None }).unwrap())),
    );
    group.finish();
}

criterion_group!(benches, append, verify_100k, verify_replays);
criterion_main!(benches);
