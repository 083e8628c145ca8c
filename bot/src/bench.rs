//! `rally bot bench`: two policies play many matches through a real shard, over QUIC.
//!
//! By default the shard runs in-process (an embedded [`rally_server::start`] shard on
//! loopback, trusting a key generated for the run, which signs every seat's token);
//! [`ShardTarget::Remote`] plays on a running shard that trusts a given issuer key.
//! Tokens are minted by the matchmaker's [`TokenMinter`], as in a deployment.
//! Side A sits in seat 0 of even matches and seat 1 of odd ones, so a seat advantage
//! cancels out. The report has A's win rate with a 95% Wilson interval, the mean
//! point margin, an Elo difference with its interval, the deciders' batch sizes and
//! call times during play, and a decision-latency micro-benchmark of each policy
//! (batch 1 and batch 1,024, on the calling thread).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use rally_client::tls::ServerTrust;
use rally_client::{Transport, TransportKind};
use rally_matchmaker::{SeatGrant, TokenMinter};
use rally_protocol::{MatchId, PlayerId, Seat};
use rally_server::ServeConfig;
use rally_server::start;
use rally_sim::PongWorld;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::difficulty::Difficulty;
use crate::driver::{BotMatch, BotStyle, SeatTicket, bot_endpoint, play_with_token};
use crate::obs::{Observation, normalize};
use crate::policy::Policy;
use crate::runner::{BatchWindow, Decider, DeciderStats};
use crate::{BotError, PolicyKind};

/// Where the matches are played.
#[derive(Clone, Debug)]
pub enum ShardTarget {
    /// A shard started in this process on loopback.
    Embedded {
        /// Simulation ticks per second (60 is the game's rate; more plays faster).
        tick_rate_hz: u16,
        /// Snapshots per second; must divide the tick rate.
        snapshot_rate_hz: u16,
    },
    /// A running shard that trusts `minter`'s key to sign tokens.
    Remote {
        /// Its QUIC address.
        addr: SocketAddr,
        /// Its name, as tokens must carry it.
        name: String,
        /// How to trust its certificate.
        trust: ServerTrust,
        /// Mints tokens with a key the shard trusts, under the id it knows the key by.
        minter: Box<TokenMinter>,
    },
}

/// One side of the benchmark.
#[derive(Clone, Debug)]
pub struct Side {
    /// Its policy.
    pub policy: PolicyKind,
    /// Its handicap.
    pub difficulty: Difficulty,
    /// An ONNX model file instead of the built-in one.
    pub model: Option<PathBuf>,
}

impl Side {
    /// A side playing `policy` at its default difficulty.
    pub fn new(policy: PolicyKind) -> Self {
        Self { policy, difficulty: policy.default_difficulty(), model: None }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Side A (the one the win rate is about).
    pub a: Side,
    /// Side B.
    pub b: Side,
    /// Matches to play.
    pub matches: u32,
    /// Matches under way at once.
    pub concurrency: u32,
    /// Points a side needs to win a match.
    pub points_to_win: u8,
    /// Seed of the bots' aim errors.
    pub seed: u64,
    /// The shard.
    pub target: ShardTarget,
    /// The deciders' batching.
    pub window: BatchWindow,
    /// Decisions timed one by one in the latency micro-benchmark.
    pub latency_samples: u32,
    /// A match still going after this long is given up (its bots leave; it counts as failed).
    pub max_match: Duration,
    /// How the bots reach the shard: QUIC, raw UDP (an embedded shard then
    /// listens on both; a remote target's address must be its `--udp-addr`), or
    /// the in-memory link to the embedded shard (no network: policies alone).
    pub transport: TransportKind,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            a: Side::new(PolicyKind::Onnx),
            b: Side::new(PolicyKind::Predictor),
            matches: 100,
            concurrency: 100,
            points_to_win: 5,
            seed: 1,
            target: ShardTarget::Embedded { tick_rate_hz: 60, snapshot_rate_hz: 30 },
            window: BatchWindow::default(),
            latency_samples: 20_000,
            max_match: Duration::from_secs(600),
            transport: TransportKind::Quic,
        }
    }
}

/// A proportion with its 95% Wilson score interval.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Interval {
    /// The point estimate.
    pub value: f64,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// The 95% Wilson score interval of `wins` out of `n`.
pub fn wilson(wins: u64, n: u64) -> Interval {
    if n == 0 {
        return Interval { value: 0.5, low: 0.0, high: 1.0 };
    }
    let z = 1.959_963_984_540_054_f64;
    let n_f = n as f64;
    let p = wins as f64 / n_f;
    let denom = 1.0 + z * z / n_f;
    let centre = (p + z * z / (2.0 * n_f)) / denom;
    let half = z * (p * (1.0 - p) / n_f + z * z / (4.0 * n_f * n_f)).sqrt() / denom;
    Interval { value: p, low: (centre - half).max(0.0), high: (centre + half).min(1.0) }
}

/// The Elo difference that predicts win probability `p` (clamped to ±800).
pub fn elo_difference(p: f64) -> f64 {
    let p = p.clamp(0.0099, 0.9901);
    400.0 * (p / (1.0 - p)).log10()
}

/// Decision latency of one policy, measured on the calling thread.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// The policy.
    pub policy: String,
    /// Batch of 1: median, ns.
    pub single_p50_ns: u64,
    /// Batch of 1: 99th percentile, ns.
    pub single_p99_ns: u64,
    /// Batch of 1,024: median time per call, ns.
    pub batch_1024_p50_ns: u64,
    /// Batch of 1,024: 99th percentile per call, ns.
    pub batch_1024_p99_ns: u64,
    /// Decisions per second at batch 1,024 on one thread.
    pub batch_1024_decisions_per_s: f64,
}

/// How a decider did during play.
#[derive(Clone, Debug, Serialize)]
pub struct PlayStats {
    /// The policy.
    pub policy: String,
    /// Decisions made.
    pub decisions: u64,
    /// Policy calls made.
    pub calls: u64,
    /// Mean decisions per call.
    pub mean_batch: f64,
    /// Largest batch.
    pub max_batch: u64,
    /// Median call time, ns.
    pub call_p50_ns: u64,
    /// 99th percentile call time, ns.
    pub call_p99_ns: u64,
}

impl From<&DeciderStats> for PlayStats {
    fn from(stats: &DeciderStats) -> Self {
        Self {
            policy: stats.policy.clone(),
            decisions: stats.decisions,
            calls: stats.calls,
            mean_batch: stats.batch_sizes.mean(),
            max_batch: stats.batch_sizes.max(),
            call_p50_ns: stats.call_ns.value_at_quantile(0.5),
            call_p99_ns: stats.call_ns.value_at_quantile(0.99),
        }
    }
}

/// The benchmark's findings.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Side A's policy and difficulty.
    pub a: String,
    /// Side B's policy and difficulty.
    pub b: String,
    /// Matches that ended with a winner.
    pub matches: u64,
    /// Matches that failed (connection errors, forfeits, abandons).
    pub failed: u64,
    /// A's wins.
    pub a_wins: u64,
    /// A's win rate, 95% Wilson interval.
    pub win_rate: Interval,
    /// Mean of A's points minus B's per match.
    pub mean_margin: f64,
    /// Elo difference A − B (from the win rate), with the interval's bounds.
    pub elo: Interval,
    /// Points to win a match.
    pub points_to_win: u8,
    /// Shard tick rate (Hz), when embedded.
    pub tick_rate_hz: Option<u16>,
    /// The transport the bots played over (`quic` or `udp`).
    pub transport: &'static str,
    /// Wall-clock seconds of play.
    pub seconds: f64,
    /// The deciders during play.
    pub play: Vec<PlayStats>,
    /// The latency micro-benchmark of each policy.
    pub latency: Vec<Latency>,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

impl BenchReport {
    /// A plain-text table.
    pub fn table(&self) -> String {
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        let mut out = String::new();
        out.push_str(&format!("A: {}\nB: {}\n", self.a, self.b));
        out.push_str(&format!(
            "matches          {} played to {} points ({} failed) in {:.1} s over {}{}\n",
            self.matches,
            self.points_to_win,
            self.failed,
            self.seconds,
            self.transport,
            self.tick_rate_hz.map(|hz| format!(", shard at {hz} Hz")).unwrap_or_default()
        ));
        out.push_str(&format!(
            "A win rate       {} (95% CI {} – {}), {} wins\n",
            pct(self.win_rate.value),
            pct(self.win_rate.low),
            pct(self.win_rate.high),
            self.a_wins
        ));
        out.push_str(&format!("mean margin      {:+.2} points per match (A − B)\n", self.mean_margin));
        out.push_str(&format!(
            "Elo difference   {:+.0} (95% CI {:+.0} – {:+.0})\n",
            self.elo.value, self.elo.low, self.elo.high
        ));
        out.push_str("\nduring play       decisions      calls   mean batch  max batch   call p50    call p99\n");
        for play in &self.play {
            out.push_str(&format!(
                "{:<16} {:>10} {:>10} {:>12.1} {:>10} {:>8.1} µs {:>8.1} µs\n",
                play.policy,
                play.decisions,
                play.calls,
                play.mean_batch,
                play.max_batch,
                play.call_p50_ns as f64 / 1e3,
                play.call_p99_ns as f64 / 1e3
            ));
        }
        out.push_str(
            "\nlatency (1 thread)  batch 1 p50   batch 1 p99   batch 1024 p50   batch 1024 p99   decisions/s @1024\n",
        );
        for lat in &self.latency {
            out.push_str(&format!(
                "{:<16} {:>10.2} µs {:>10.2} µs {:>13.1} µs {:>13.1} µs {:>16.3e}\n",
                lat.policy,
                lat.single_p50_ns as f64 / 1e3,
                lat.single_p99_ns as f64 / 1e3,
                lat.batch_1024_p50_ns as f64 / 1e3,
                lat.batch_1024_p99_ns as f64 / 1e3,
                lat.batch_1024_decisions_per_s
            ));
        }
        if let Some(err) = &self.first_error {
            out.push_str(&format!("\nfirst failure: {err}\n"));
        }
        out
    }
}

/// Observations spread over the situations of a match, for latency measurements.
pub fn sample_observations(n: usize, seed: u64) -> Vec<Observation> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            normalize(
                rng.gen_range(300.0..7900.0),
                rng.gen_range(64.0..6080.0),
                rng.gen_range(-256.0..256.0),
                rng.gen_range(-192.0..192.0),
                rng.gen_range(512.0..5632.0),
                rng.gen_range(512.0..5632.0),
            )
        })
        .collect()
}

/// Times `policy` on batches of 1 (`samples` calls) and of 1,024.
pub fn measure_latency(policy: &mut dyn Policy, samples: u32) -> Result<Latency, BotError> {
    let observations = sample_observations(4096, 7);
    let mut actions = Vec::with_capacity(1024);
    let mut single = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("constant bounds");
    let mut batched = single.clone();
    // Warm up (first runs allocate and fault pages in).
    for obs in observations.iter().take(200) {
        policy.decide(std::slice::from_ref(obs), &mut actions)?;
    }
    for idx in 0..samples as usize {
        let obs = &observations[idx % observations.len()];
        let started = Instant::now();
        policy.decide(std::slice::from_ref(obs), &mut actions)?;
        let _ = single.record(started.elapsed().as_nanos().max(1) as u64);
    }
    let calls = (samples / 20).max(50);
    let started_all = Instant::now();
    for idx in 0..calls as usize {
        let start = (idx * 1024) % (observations.len() - 1024);
        let started = Instant::now();
        policy.decide(&observations[start..start + 1024], &mut actions)?;
        let _ = batched.record(started.elapsed().as_nanos().max(1) as u64);
    }
    let total = started_all.elapsed().as_secs_f64();
    Ok(Latency {
        policy: policy.name().to_owned(),
        single_p50_ns: single.value_at_quantile(0.5),
        single_p99_ns: single.value_at_quantile(0.99),
        batch_1024_p50_ns: batched.value_at_quantile(0.5),
        batch_1024_p99_ns: batched.value_at_quantile(0.99),
        batch_1024_decisions_per_s: f64::from(calls) * 1024.0 / total.max(1e-9),
    })
}

/// The token for `seat` of `match_id` (player ids are derived from it).
fn mint(minter: &TokenMinter, shard: &str, match_id: u64, seat: Seat, points_to_win: u8) -> anyhow::Result<Vec<u8>> {
    let grant = SeatGrant {
        player_id: PlayerId(match_id * 2 + u64::from(seat)),
        match_id: MatchId(match_id),
        seat,
        n_seats: 2,
        points_to_win,
        shard: shard.to_owned(),
    };
    let (token, _expires_at_ms) = minter.mint(&grant, rally_transport::unix_ms()).context("signing a connect token")?;
    Ok(token)
}

fn describe(side: &Side) -> String {
    let d = side.difficulty;
    let model = side.model.as_ref().map(|path| format!(" ({})", path.display())).unwrap_or_default();
    format!("{}{model}, reaction {} views, aim error {:.2} reach", side.policy.name(), d.reaction_views, d.aim_error)
}

/// Plays the benchmark and reports.
pub async fn run_bench(config: BenchConfig) -> anyhow::Result<BenchReport> {
    let mut policy_a = config.a.policy.build(config.a.model.as_deref())?;
    let mut policy_b = config.b.policy.build(config.b.model.as_deref())?;
    let latency = vec![
        measure_latency(policy_a.as_mut(), config.latency_samples)?,
        measure_latency(policy_b.as_mut(), config.latency_samples)?,
    ];

    // The shard: embedded with a fresh key, or remote.
    let mut embedded = None;
    let (addr, name, trust, minter, tick_rate_hz) = match &config.target {
        ShardTarget::Embedded { tick_rate_hz, snapshot_rate_hz } => {
            let minter = TokenMinter::random(1);
            let dir = tempfile::tempdir().context("a temporary directory for the shard's certificate")?;
            let mut serve = ServeConfig::local(dir.path().to_owned(), vec![(minter.key_id(), minter.verifying_key())]);
            serve.shard.name = "bot-bench".into();
            if config.transport == TransportKind::Udp {
                serve.udp_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            }
            serve.shard.tick_rate_hz = *tick_rate_hz;
            serve.shard.snapshot_rate_hz = *snapshot_rate_hz;
            // Faster ticks mean more input datagrams per second; keep the limit's headroom.
            let per_second = u32::from(*snapshot_rate_hz).max(u32::from(*tick_rate_hz)) * 2;
            serve.limits.datagrams_per_second = per_second.max(serve.limits.datagrams_per_second);
            serve.limits.datagram_burst = per_second.max(serve.limits.datagram_burst);
            let (results_tx, results_rx) = tokio::sync::mpsc::unbounded_channel();
            let handle = start::<PongWorld>(serve, results_tx).await.context("starting the embedded shard")?;
            let trust = ServerTrust::Fingerprint(handle.fingerprint.clone());
            let addr = match config.transport {
                // The in-memory link has no address; the QUIC one stands in, unused.
                TransportKind::Quic | TransportKind::Memory => handle.local_addr,
                TransportKind::Udp => handle.udp_addr.context("the embedded shard's raw UDP address")?,
            };
            let out = (addr, handle.name.clone(), trust, minter, Some(*tick_rate_hz));
            embedded = Some((handle, results_rx, dir));
            out
        }
        ShardTarget::Remote { addr, name, trust, minter } => {
            (*addr, name.clone(), trust.clone(), (**minter).clone(), None)
        }
    };
    let endpoint = bot_endpoint(&trust)?;
    let transport = match (config.transport, &embedded) {
        (TransportKind::Quic, _) => Transport::Quic(endpoint.clone()),
        (TransportKind::Udp, _) => Transport::Udp,
        (TransportKind::Memory, Some((handle, _, _))) => Transport::Memory(handle.memory_transport()),
        (TransportKind::Memory, None) => {
            anyhow::bail!("the in-memory transport plays on the embedded shard only (drop --shard-addr)");
        }
    };
    let decider_a = Decider::spawn(policy_a, config.window);
    let decider_b = Decider::spawn(policy_b, config.window);
    let run: u64 = rand::random();
    let started = Instant::now();

    let mut tasks = tokio::task::JoinSet::new();
    let mut arrivals = tokio::time::interval(Duration::from_millis(5));
    let mut progress = tokio::time::interval(Duration::from_secs(10));
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0u32;
    let mut outcomes: Vec<anyhow::Result<BotMatch>> = Vec::new();
    let concurrency = config.concurrency.max(1);
    while next < config.matches || !tasks.is_empty() {
        while next < config.matches && tasks.len() < concurrency as usize {
            // Matches start a few milliseconds apart, as a matchmaker would send them,
            // rather than hundreds of handshakes in one burst.
            arrivals.tick().await;
            let match_no = u64::from(next);
            // Match ids unique per run so a remote shard never sees one twice.
            let match_id = (run & 0xffff_ffff) << 24 | match_no;
            let a_seat = (next % 2) as Seat;
            let mut seats = Vec::new();
            for seat in 0..2u8 {
                let (decider, side) = if seat == a_seat { (&decider_a, &config.a) } else { (&decider_b, &config.b) };
                let ticket = SeatTicket {
                    addr,
                    server_name: "localhost".into(),
                    token: mint(&minter, &name, match_id, seat, config.points_to_win)?,
                };
                let style =
                    BotStyle { difficulty: side.difficulty, seed: config.seed ^ (match_no * 2 + u64::from(seat)) };
                seats.push((ticket, decider.handle(), style));
            }
            let transport = transport.clone();
            let max_match = config.max_match;
            tasks.spawn(async move {
                let mut played = Vec::new();
                let mut joins = Vec::new();
                for (ticket, handle, style) in seats {
                    let transport = transport.clone();
                    joins.push(tokio::spawn(async move {
                        tokio::time::timeout(max_match, play_with_token(&transport, &ticket, &handle, style))
                            .await
                            .map_err(|_| anyhow::anyhow!("the match went on past {} s", max_match.as_secs()))?
                    }));
                }
                for join in joins {
                    played.push(join.await.map_err(anyhow::Error::from).and_then(|result| result));
                }
                // A's result is the seat-a_seat one.
                let mut played = played.into_iter();
                let (first, second) = (played.next(), played.next());
                let a_result = if a_seat == 0 { first } else { second };
                a_result.unwrap_or_else(|| Err(anyhow::anyhow!("no result")))
            });
            next += 1;
        }
        tokio::select! {
            joined = tasks.join_next() => {
                if let Some(joined) = joined {
                    outcomes.push(joined.map_err(anyhow::Error::from).and_then(|result| result));
                }
            }
            _ = progress.tick() => tracing::info!(
                finished = outcomes.len(),
                in_play = tasks.len(),
                total = config.matches,
                "bot bench progress"
            ),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let stats_a = decider_a.finish();
    let stats_b = decider_b.finish();
    endpoint.close(0u32.into(), b"bench over");
    if let Some((handle, _results, _dir)) = embedded {
        handle.drain();
        let _ = tokio::time::timeout(Duration::from_secs(10), handle.wait()).await;
    }

    let mut first_error = None;
    let (mut played, mut failed, mut wins, mut margin) = (0u64, 0u64, 0u64, 0i64);
    for outcome in outcomes {
        match outcome {
            Ok(bot) if bot.end.winner.is_some() && bot.end.forfeited.is_empty() => {
                played += 1;
                wins += u64::from(bot.won());
                margin += bot.margin();
            }
            Ok(bot) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("match ended without a fair winner: {:?}", bot.end));
            }
            Err(err) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{err:#}"));
            }
        }
    }
    let win_rate = wilson(wins, played);
    Ok(BenchReport {
        a: describe(&config.a),
        b: describe(&config.b),
        matches: played,
        failed,
        a_wins: wins,
        win_rate,
        mean_margin: if played == 0 { 0.0 } else { margin as f64 / played as f64 },
        elo: Interval {
            value: elo_difference(win_rate.value),
            low: elo_difference(win_rate.low),
            high: elo_difference(win_rate.high),
        },
        points_to_win: config.points_to_win,
        tick_rate_hz,
        transport: config.transport.name(),
        seconds,
        play: vec![PlayStats::from(&stats_a), PlayStats::from(&stats_b)],
        latency,
        first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_known_values() {
        // 60 of 100: 95% Wilson interval 0.502 – 0.691.
        let interval = wilson(60, 100);
        assert!((interval.low - 0.5020).abs() < 1e-3 && (interval.high - 0.6906).abs() < 1e-3, "{interval:?}");
        let all = wilson(10, 10);
        assert!(all.high > 0.999_999 && (all.low - 0.7225).abs() < 1e-3, "{all:?}");
        assert_eq!(wilson(0, 0).value, 0.5);
    }

    #[test]
    fn elo_of_even_and_favoured_matches() {
        assert!(elo_difference(0.5).abs() < 1e-9);
        // A 64% expected score is about +100 Elo.
        assert!((elo_difference(0.64) - 100.0).abs() < 1.0);
        assert!(elo_difference(1.0).is_finite() && elo_difference(0.0) < -700.0);
    }
}
