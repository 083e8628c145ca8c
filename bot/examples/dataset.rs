//! Training data and quick evaluation for the ONNX policy, from the real simulation.
//!
//! This example drives a `PongWorld` directly (it is the trainer's data source, not a
//! bot: bots only play through the client SDK). Each decision is taken on the view of
//! a snapshot tick (every second tick, as a 30 Hz client sees them) and takes effect
//! two ticks later (the input lead a networked client has).
//!
//! Record (obs, expert action) pairs, seats played by a mix of policies and difficulties:
//!
//! ```text
//! cargo run --release -p rally-bot --example dataset -- record --out target/bot-data/round0.bin --matches 400 --seed 1
//! # self-improvement round: the model plays too, the expert still labels
//! cargo run --release -p rally-bot --example dataset -- record --out target/bot-data/round1.bin --matches 400 --seed 2 --model bot/models/pong-v1.onnx
//! ```
//!
//! Duel two policies in the simulation (fast; `rally bot bench` is the real measurement):
//!
//! ```text
//! cargo run --release -p rally-bot --example dataset -- duel --a onnx --b predictor --matches 1000
//! ```
//!
//! `--lag-jitter N` draws each decision's lag from 2 to 2 + N ticks; `--a-difficulty`,
//! `--b-difficulty` (presets) or `--a-reaction`/`--a-aim`, `--b-reaction`/`--b-aim`
//! set the handicaps.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use rally_bot::{Action, Difficulty, ExpertPolicy, Handicap, ObsEncoder, Observation, OnnxPolicy, Policy, PolicyKind};
use rally_protocol::{MatchId, Snapshot};
use rally_sim::{Game, LifecycleConfig, MatchSpec, PongWorld, SimEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Ticks between a decision and the tick its input first applies to.
const INPUT_LAG: u32 = 2;
/// With `--lag-jitter N`, each seat's lag is drawn from `INPUT_LAG..=INPUT_LAG + N` per decision.
/// Ticks between snapshots (60 Hz ticks, 30 Hz snapshots).
const SNAPSHOT_EVERY: u32 = 2;
/// A match still running after this many ticks is stopped (counted as unfinished).
const MAX_TICKS: u32 = 60 * 60 * 20;

struct Seat {
    actor: usize,
    handicap: Handicap,
    /// Decisions waiting for their tick: (apply at tick, input).
    pending: std::collections::VecDeque<(u32, u8)>,
    /// Chance of a random action per decision (exploration), and the current random hold.
    epsilon: f64,
    random_hold: u32,
    random_action: Action,
    /// Ticks from this decision to the tick it applies to.
    lag: u32,
}

struct Args {
    mode: String,
    out: Option<PathBuf>,
    matches: u32,
    seed: u64,
    model: Option<PathBuf>,
    a: PolicyKind,
    b: PolicyKind,
    a_difficulty: Option<Difficulty>,
    b_difficulty: Option<Difficulty>,
    points: u8,
    lag_jitter: u32,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        mode: String::new(),
        out: None,
        matches: 400,
        seed: 1,
        model: None,
        a: PolicyKind::Onnx,
        b: PolicyKind::Predictor,
        a_difficulty: None,
        b_difficulty: None,
        points: 5,
        lag_jitter: 0,
    };
    let mut it = std::env::args().skip(1);
    args.mode = it.next().context("usage: dataset record|duel [options]")?;
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--out" => args.out = Some(value()?.into()),
            "--matches" => args.matches = value()?.parse()?,
            "--seed" => args.seed = value()?.parse()?,
            "--model" => args.model = Some(value()?.into()),
            "--points" => args.points = value()?.parse()?,
            "--lag-jitter" => args.lag_jitter = value()?.parse()?,
            "--a" => args.a = PolicyKind::parse(&value()?).context("--a: onnx, tracker, predictor or expert")?,
            "--b" => args.b = PolicyKind::parse(&value()?).context("--b: onnx, tracker, predictor or expert")?,
            "--a-difficulty" => args.a_difficulty = Some(Difficulty::preset(&value()?).context("unknown preset")?),
            "--b-difficulty" => args.b_difficulty = Some(Difficulty::preset(&value()?).context("unknown preset")?),
            "--b-reaction" => args.b_difficulty.get_or_insert(Difficulty::PERFECT).reaction_views = value()?.parse()?,
            "--b-aim" => args.b_difficulty.get_or_insert(Difficulty::PERFECT).aim_error = value()?.parse()?,
            "--a-reaction" => args.a_difficulty.get_or_insert(Difficulty::PERFECT).reaction_views = value()?.parse()?,
            "--a-aim" => args.a_difficulty.get_or_insert(Difficulty::PERFECT).aim_error = value()?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    match args.mode.as_str() {
        "record" => record(&args),
        "duel" => duel(&args),
        other => bail!("unknown mode {other}: record or duel"),
    }
}

/// Runs `n` matches to the end; `actors[seat.actor]` decides, batched per actor per tick.
/// `on_decision(obs, seat index)` sees every true (unhandicapped) observation.
fn play(
    n: u32,
    points: u8,
    seed: u64,
    actors: &mut [Box<dyn Policy>],
    mut seats: Vec<Seat>,
    lag_jitter: u32,
    mut on_decision: impl FnMut(&Observation),
) -> anyhow::Result<Vec<Option<[u32; 2]>>> {
    let mut world = PongWorld::new(LifecycleConfig::default());
    let schema = PongWorld::schema(2);
    let encoders = [ObsEncoder::new(&schema, 0, 2)?, ObsEncoder::new(&schema, 1, 2)?];
    for idx in 0..n {
        let id = MatchId(u64::from(idx));
        world.create_match(
            id,
            MatchSpec {
                n_seats: 2,
                points_to_win: points,
                time_limit_ticks: u32::from(rally_protocol::token::DEFAULT_TIME_LIMIT_S) * 60,
            },
            seed.wrapping_mul(1_000_003) + u64::from(idx),
        )?;
        world.set_seat_connected(id, 0, true)?;
        world.set_seat_connected(id, 1, true)?;
    }
    let mut results: Vec<Option<[u32; 2]>> = vec![None; n as usize];
    let mut done = 0;
    let mut view = Snapshot { tick: 0, values: Vec::new() };
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut batches: Vec<(Vec<usize>, Vec<Observation>)> =
        (0..actors.len()).map(|_| (Vec::new(), Vec::new())).collect();
    let mut actions = Vec::new();
    let mut tick = 0u32;
    while done < n as usize && tick < MAX_TICKS {
        tick += 1;
        // Inputs whose time has come.
        for (idx, seat) in seats.iter_mut().enumerate() {
            while seat.pending.front().is_some_and(|(at, _)| *at <= tick) {
                let (_, input) = seat.pending.pop_front().unwrap_or_default();
                let id = MatchId((idx / 2) as u64);
                if results[idx / 2].is_none() {
                    world.set_input(id, (idx % 2) as u8, input)?;
                }
            }
        }
        world.step();
        while let Some(event) = world.poll_event() {
            if let SimEvent::MatchFinished { match_id, outcome, .. } = event {
                let scores = [outcome.scores[0], outcome.scores[1]];
                results[match_id.0 as usize] = Some(scores);
                done += 1;
            }
        }
        if !tick.is_multiple_of(SNAPSHOT_EVERY) {
            continue;
        }
        for batch in &mut batches {
            batch.0.clear();
            batch.1.clear();
        }
        for (idx, seat) in seats.iter_mut().enumerate() {
            if results[idx / 2].is_some() {
                continue;
            }
            world.write_view(MatchId((idx / 2) as u64), (idx % 2) as u8, &mut view)?;
            if view.values[0] == 0 || view.values[0] == 3 {
                continue; // waiting or finished
            }
            let Some(obs) = encoders[idx % 2].encode(&view) else { continue };
            seat.lag = INPUT_LAG + rng.gen_range(0..=lag_jitter);
            on_decision(&obs);
            if seat.random_hold > 0 {
                seat.random_hold -= 1;
                seat.pending.push_back((tick + seat.lag, seat.random_action.input()));
                continue;
            }
            if seat.epsilon > 0.0 && rng.gen_bool(seat.epsilon) {
                seat.random_hold = rng.gen_range(1..8);
                seat.random_action = Action::from_index(rng.gen_range(0..3));
                seat.pending.push_back((tick + seat.lag, seat.random_action.input()));
                continue;
            }
            let seen = seat.handicap.observe(obs);
            batches[seat.actor].0.push(idx);
            batches[seat.actor].1.push(seen);
        }
        for (actor, (who, observations)) in batches.iter().enumerate() {
            if who.is_empty() {
                continue;
            }
            actors[actor].decide(observations, &mut actions)?;
            for (&idx, action) in who.iter().zip(&actions) {
                let lag = seats[idx].lag;
                seats[idx].pending.push_back((tick + lag, action.input()));
            }
        }
    }
    Ok(results)
}

fn seat(actor: usize, difficulty: Difficulty, seed: u64, epsilon: f64) -> Seat {
    Seat {
        actor,
        handicap: Handicap::new(difficulty, seed),
        pending: Default::default(),
        epsilon,
        random_hold: 0,
        random_action: Action::Stop,
        lag: INPUT_LAG,
    }
}

fn record(args: &Args) -> anyhow::Result<()> {
    let out = args.out.clone().context("record needs --out FILE")?;
    let mut actors: Vec<Box<dyn Policy>> =
        vec![PolicyKind::Expert.build(None)?, PolicyKind::Predictor.build(None)?, PolicyKind::Tracker.build(None)?];
    if let Some(model) = &args.model {
        actors.push(Box::new(OnnxPolicy::from_file(model)?));
    }
    let mut rng = StdRng::seed_from_u64(args.seed);
    let presets = [Difficulty::PERFECT, Difficulty::HARD, Difficulty::MEDIUM, Difficulty::EASY];
    let seats: Vec<Seat> = (0..args.matches * 2)
        .map(|idx| {
            let actor = rng.gen_range(0..actors.len());
            // The model plays at full strength (it is what is being improved); the others vary.
            let difficulty = if actor == 3 { Difficulty::PERFECT } else { presets[rng.gen_range(0..presets.len())] };
            let epsilon = [0.0, 0.02, 0.05][rng.gen_range(0..3)];
            seat(actor, difficulty, args.seed.wrapping_mul(31).wrapping_add(u64::from(idx)), epsilon)
        })
        .collect();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?);
    let mut n = 0u64;
    let mut write_error = None;
    let results = play(args.matches, args.points, args.seed, &mut actors, seats, args.lag_jitter, |obs| {
        let label = ExpertPolicy::act(obs) as u8 as f32;
        for value in obs.iter().chain(std::iter::once(&label)) {
            if let Err(err) = file.write_all(&value.to_le_bytes()) {
                write_error.get_or_insert(err);
            }
        }
        n += 1;
    })?;
    if let Some(err) = write_error {
        return Err(err).context("writing the dataset");
    }
    file.flush()?;
    let finished = results.iter().filter(|r| r.is_some()).count();
    println!("wrote {n} samples from {finished}/{} matches to {}", args.matches, out.display());
    Ok(())
}

fn duel(args: &Args) -> anyhow::Result<()> {
    let model = args.model.as_deref();
    let mut actors: Vec<Box<dyn Policy>> = vec![args.a.build(model)?, args.b.build(model)?];
    let (da, db) = (
        args.a_difficulty.unwrap_or(args.a.default_difficulty()),
        args.b_difficulty.unwrap_or(args.b.default_difficulty()),
    );
    // A sits in seat 0 of even matches and seat 1 of odd ones.
    let seats: Vec<Seat> = (0..args.matches * 2)
        .map(|idx| {
            let a_here = (idx / 2) % 2 == idx % 2;
            let (actor, difficulty) = if a_here { (0, da) } else { (1, db) };
            seat(actor, difficulty, args.seed.wrapping_mul(31).wrapping_add(u64::from(idx)), 0.0)
        })
        .collect();
    let results = play(args.matches, args.points, args.seed, &mut actors, seats, args.lag_jitter, |_| {})?;
    let (mut wins, mut played, mut margin) = (0u32, 0u32, 0i64);
    for (idx, result) in results.iter().enumerate() {
        let Some(scores) = result else { continue };
        let a_side = idx % 2;
        played += 1;
        wins += u32::from(scores[a_side] > scores[1 - a_side]);
        margin += i64::from(scores[a_side]) - i64::from(scores[1 - a_side]);
    }
    let report = rally_bot::bench::wilson(u64::from(wins), u64::from(played));
    println!(
        "{} ({da:?}) vs {} ({db:?}): A won {wins}/{played} = {:.1}% (95% CI {:.1}–{:.1}%), mean margin {:+.2}, unfinished {}",
        args.a.name(),
        args.b.name(),
        100.0 * report.value,
        100.0 * report.low,
        100.0 * report.high,
        margin as f64 / f64::from(played.max(1)),
        args.matches - played
    );
    Ok(())
}
