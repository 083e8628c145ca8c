//! Matchmaker benchmarks (release build; not part of `cargo test`).
//!
//! `throughput`: queue N tickets, then time matching rounds until the queue is
//! empty, on a single-threaded runtime (one core): tickets matched per second,
//! shard reservation and connect-token minting (Ed25519) included.
//!
//! `latency`: enqueue at a steady rate with the engine's rounds running and
//! record, per ticket, the time from the start of `enqueue` to its watcher
//! seeing the assignment (p50/p99/max).
//!
//! ```text
//! cargo run --release -p rally-matchmaker --example matchmaker_bench -- throughput memory 100000
//! cargo run --release -p rally-matchmaker --example matchmaker_bench -- throughput redis 20000
//! cargo run --release -p rally-matchmaker --example matchmaker_bench -- latency memory 1000 20
//! cargo run --release -p rally-matchmaker --example matchmaker_bench -- replicas 2 20000
//! cargo run --release -p rally-matchmaker --example matchmaker_bench -- latency redis 1000 20
//! ```
//!
//! `replicas`: like `throughput redis`, but R matchmakers (each with its own
//! Redis connection, runtime and thread, as separate processes would have)
//! run rounds on one queue at once until it is empty; it counts the tickets
//! each replica matched and the proposals each lost to another, and checks
//! that no ticket was assigned twice.
//!
//! Redis comes from `RALLY_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`),
//! under a fresh key prefix that is deleted afterwards.

#![expect(clippy::unwrap_used, reason = "a benchmark binary")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rally_matchmaker::config::{MatchmakerConfig, ModeConfig};
use rally_matchmaker::engine::unix_ms;
use rally_matchmaker::registry::ShardInfo;
use rally_matchmaker::{Backends, EnqueueRequest, FixedRatings, Matchmaker, RedisConnection, TicketState, TokenMinter};
use rally_protocol::PlayerId;

fn rating(player: u64) -> f64 {
    1200.0 + ((player.wrapping_mul(7919)) % 600) as f64
}

fn shard(idx: usize) -> ShardInfo {
    ShardInfo {
        name: format!("bench-{idx}"),
        address: "127.0.0.1:7777".into(),
        region: "local".into(),
        capacity: 1_000_000,
        version: "bench".into(),
        certificate_sha256: "00".repeat(32),
        incarnation: 1,
    }
}

fn redis_url() -> String {
    std::env::var("RALLY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn fresh_prefix() -> String {
    format!("rally-bench-{:08x}", rand::random::<u32>())
}

async fn setup(backend: &str, n_players: u64) -> (Matchmaker, Option<RedisConnection>) {
    let (backends, redis) = match backend {
        "memory" => (Backends::in_memory(Duration::from_secs(600)), None),
        "redis" => {
            let redis = RedisConnection::connect_lazy(&redis_url(), &fresh_prefix()).unwrap();
            (Backends::redis(&redis, Duration::from_secs(600)), Some(redis))
        }
        other => panic!("backend {other:?}: memory or redis"),
    };
    for idx in 0..4 {
        backends.registry.register(&shard(idx), 3_600_000, unix_ms()).await.unwrap();
    }
    (matchmaker_on(backends, n_players), redis)
}

fn matchmaker_on(backends: Backends, n_players: u64) -> Matchmaker {
    let ratings = FixedRatings::new((1..=n_players).map(|player| (PlayerId(player), rating(player))));
    let config = MatchmakerConfig { modes: vec![ModeConfig::one_vs_one("pong")], ..MatchmakerConfig::default() };
    Matchmaker::new(config, backends, Arc::new(ratings), TokenMinter::random(1)).unwrap()
}

fn pong() -> EnqueueRequest {
    EnqueueRequest { mode: "pong".into(), ..EnqueueRequest::default() }
}

async fn throughput(backend: &str, n_tickets: u64) {
    let (matchmaker, redis) = setup(backend, n_tickets).await;
    let now = unix_ms();
    let started = Instant::now();
    for player in 1..=n_tickets {
        matchmaker.enqueue(PlayerId(player), pong(), now).await.unwrap();
    }
    let enqueue_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (mut matched, mut rounds) = (0usize, 0usize);
    loop {
        let stats = matchmaker.run_round(now + 1_000).await.unwrap();
        rounds += 1;
        matched += stats.matched_tickets;
        if stats.matched_tickets == 0 {
            break;
        }
    }
    let match_s = started.elapsed().as_secs_f64();
    println!(
        "throughput {backend}: {n_tickets} tickets enqueued in {enqueue_s:.2} s ({:.0}/s); \
         {matched} matched in {rounds} rounds, {match_s:.2} s: {:.0} tickets matched/s on one core",
        n_tickets as f64 / enqueue_s,
        matched as f64 / match_s
    );
    if let Some(redis) = redis {
        redis.delete_all().await.unwrap();
    }
}

async fn latency(backend: &str, rate: u64, seconds: u64) {
    let n_tickets = rate * seconds;
    let (matchmaker, redis) = setup(backend, n_tickets).await;
    let engine = matchmaker.start();
    let mut waits = tokio::task::JoinSet::new();
    let batch = (rate / 100).max(1);
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 * batch / rate));
    let mut player = 0u64;
    while player < n_tickets {
        ticker.tick().await;
        for _ in 0..batch {
            player += 1;
            let matchmaker = matchmaker.clone();
            waits.spawn(async move {
                let started = Instant::now();
                let ticket = matchmaker.enqueue(PlayerId(player), pong(), unix_ms()).await.unwrap();
                let (_, mut states) = matchmaker.watch(PlayerId(player), ticket.id).await.unwrap();
                loop {
                    if matches!(*states.borrow_and_update(), Some(TicketState::Matched(_))) {
                        return Some(started.elapsed());
                    }
                    if tokio::time::timeout(Duration::from_secs(30), states.changed()).await.is_err() {
                        return None;
                    }
                }
            });
        }
    }
    let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut unmatched = 0;
    while let Some(wait) = waits.join_next().await {
        match wait.unwrap() {
            Some(wait) => histogram.record(wait.as_micros().max(1) as u64).unwrap(),
            None => unmatched += 1,
        }
    }
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "latency {backend}: {} tickets at {rate}/s, enqueue -> assignment p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         ({unmatched} unmatched; the last ticket of an odd count has no partner)",
        histogram.len(),
        ms(0.5),
        ms(0.99),
        histogram.max() as f64 / 1000.0
    );
    engine.stop().await;
    if let Some(redis) = redis {
        redis.delete_all().await.unwrap();
    }
}

/// What one replica did in a `replicas` run.
struct ReplicaRun {
    matched: usize,
    lost: usize,
    rounds: usize,
    /// Tickets still queued at the start of its last round.
    queued_at_end: usize,
}

/// R replicas on one Redis queue of `n_tickets`, each on its own thread and
/// single-threaded runtime, rounds back to back until the queue is empty.
fn replicas(n_replicas: usize, n_tickets: u64) {
    let prefix = fresh_prefix();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // The connection manager spawns its tasks on the runtime it is made in.
    let redis = runtime.block_on(async { RedisConnection::connect_lazy(&redis_url(), &prefix).unwrap() });
    let now = unix_ms();
    runtime.block_on(async {
        let matchmaker = matchmaker_on(Backends::redis(&redis, Duration::from_secs(600)), n_tickets);
        for idx in 0..4 {
            Backends::redis(&redis, Duration::from_secs(600))
                .registry
                .register(&shard(idx), 3_600_000, unix_ms())
                .await
                .unwrap();
        }
        for player in 1..=n_tickets {
            matchmaker.enqueue(PlayerId(player), pong(), now).await.unwrap();
        }
    });
    let start = Arc::new(std::sync::Barrier::new(n_replicas + 1));
    let threads: Vec<_> = (0..n_replicas)
        .map(|_| {
            let (prefix, start) = (prefix.clone(), start.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async move {
                    let redis = RedisConnection::connect_lazy(&redis_url(), &prefix).unwrap();
                    let matchmaker = matchmaker_on(Backends::redis(&redis, Duration::from_secs(600)), n_tickets);
                    start.wait();
                    let mut run = ReplicaRun { matched: 0, lost: 0, rounds: 0, queued_at_end: 0 };
                    let mut idle_rounds = 0;
                    // Another replica may hold the last proposals a moment longer:
                    // stop after a few rounds in a row that found nothing.
                    while idle_rounds < 3 {
                        let stats = matchmaker.run_round(now + 1_000).await.unwrap();
                        run.rounds += 1;
                        run.matched += stats.matched_tickets;
                        run.lost += stats.conflicts;
                        run.queued_at_end = stats.queued;
                        idle_rounds = if stats.matched_tickets == 0 { idle_rounds + 1 } else { 0 };
                    }
                    run
                })
            })
        })
        .collect();
    start.wait();
    let started = Instant::now();
    let runs: Vec<ReplicaRun> = threads.into_iter().map(|thread| thread.join().unwrap()).collect();
    let seconds = started.elapsed().as_secs_f64();
    let matched: usize = runs.iter().map(|run| run.matched).sum();
    // Each replica counts only the tickets its own claims won, so a ticket
    // assigned twice would push the sum past the queue.
    assert!(matched as u64 <= n_tickets, "{matched} assignments for {n_tickets} tickets: one was assigned twice");
    let queued = runs.iter().map(|run| run.queued_at_end).min().unwrap_or(0);
    assert_eq!(matched + queued, n_tickets as usize, "tickets lost: {matched} matched, {queued} queued");
    for (idx, run) in runs.iter().enumerate() {
        println!(
            "replica {idx}: {} tickets matched in {} rounds, {} proposals lost to another replica",
            run.matched, run.rounds, run.lost
        );
    }
    println!(
        "replicas {n_replicas}: {matched} of {n_tickets} tickets matched in {seconds:.2} s: {:.0} tickets matched/s \
         in all; no ticket assigned twice; {} still queued (none lost: matched + queued = tickets)",
        matched as f64 / seconds,
        runs.iter().map(|run| run.queued_at_end).min().unwrap_or(0)
    );
    runtime.block_on(redis.delete_all()).unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |idx: usize, default: &str| args.get(idx).cloned().unwrap_or_else(|| default.to_owned());
    match arg(0, "throughput").as_str() {
        "throughput" => {
            // One core: a single-threaded runtime.
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(throughput(&arg(1, "memory"), arg(2, "100000").parse().unwrap()));
        }
        "latency" => {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(latency(
                &arg(1, "memory"),
                arg(2, "1000").parse().unwrap(),
                arg(3, "20").parse().unwrap(),
            ));
        }
        "replicas" => replicas(arg(1, "2").parse().unwrap(), arg(2, "20000").parse().unwrap()),
        other => panic!("{other:?}: throughput, latency or replicas"),
    }
}
