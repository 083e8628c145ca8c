//! `rally sim`: the headless demo (scripted players in many matches of one
//! world, as fast as the machine allows) and the replay tool.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rally_protocol::{MatchId, Seat, Snapshot};
use rally_sim::autopilot::{Autopilot, AutopilotConfig};
use rally_sim::game::{Game, LifecycleConfig, MatchSpec, SimEvent};
use rally_sim::pong::PongWorld;
use rally_sim::replay::{InputLog, Recording, replay};
use serde::Serialize;

/// `rally sim`: the headless simulation demo and replay tool.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimArgs {
    /// Replay instead of running the demo.
    #[command(subcommand)]
    pub command: Option<SimCommand>,
    /// Matches kept running at once in one world.
    #[arg(long, default_value_t = 10_000)]
    pub matches: u32,
    /// Wall-clock seconds to run for (ticks run as fast as the machine allows).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seed for match seeds and player behaviour; the same seed gives the same matches.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Points a side needs to win.
    #[arg(long, default_value_t = 5)]
    pub points_to_win: u8,
    /// Seats per match (2, or 4 for doubles).
    #[arg(long, default_value_t = 2)]
    pub seats: u8,
    /// Regulation time of each match in seconds of 60 Hz ticks (sudden death adds half).
    #[arg(long, default_value_t = rally_protocol::token::DEFAULT_TIME_LIMIT_S)]
    pub time_limit_s: u16,
    /// Write the input log of every finished match into this directory.
    #[arg(long)]
    pub record_dir: Option<PathBuf>,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Subcommands of `rally sim`.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Replay a recorded input log and print its outcome and final hash.
    Replay {
        /// The `.replay` file written by `--record-dir` or by a shard.
        file: PathBuf,
        /// Print every tick's hash.
        #[arg(long)]
        hashes: bool,
    },
}

/// Runs `rally sim`.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    match &args.command {
        Some(SimCommand::Replay { file, hashes }) => replay_file(file, *hashes),
        None => {
            if args.matches == 0 {
                bail!("--matches must be at least 1");
            }
            let summary = match &args.record_dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                    demo(Recording::<PongWorld>::new(LifecycleConfig::default()), &args, |game, match_id| {
                        if let Some(log) = game.take_log(match_id) {
                            let path = dir.join(format!("{match_id}.replay"));
                            std::fs::write(&path, log.encode()?)
                                .with_context(|| format!("writing {}", path.display()))?;
                        }
                        Ok(())
                    })?
                }
                None => demo(PongWorld::new(LifecycleConfig::default()), &args, |_, _| Ok(()))?,
            };
            summary.print(args.json)
        }
    }
}

/// What a demo run measured.
#[derive(Debug, Serialize)]
pub struct DemoSummary {
    /// Matches kept running at once.
    pub matches: u32,
    /// Wall-clock seconds run.
    pub seconds: f64,
    /// World ticks stepped.
    pub ticks: u64,
    /// Matches that reached a result.
    pub matches_finished: u64,
    /// World ticks per second of wall time (60 is real time).
    pub ticks_per_second: f64,
    /// Match-ticks simulated per second.
    pub match_ticks_per_second: f64,
    /// Time in `step` per match-tick, nanoseconds: the simulation's own cost.
    pub sim_ns_per_match_tick: f64,
    /// Time in the scripted players (views + decisions) per match-tick, nanoseconds.
    pub players_ns_per_match_tick: f64,
    /// Points scored.
    pub points: u64,
}

impl DemoSummary {
    fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        println!("rally sim: {} Pong matches in one world, scripted players, {:.1} s", self.matches, self.seconds);
        println!(
            "  ticks stepped        {:>12}  ({:.0} ticks/s, {:.0}x real time at 60 Hz)",
            self.ticks,
            self.ticks_per_second,
            self.ticks_per_second / 60.0
        );
        println!("  matches finished     {:>12}  ({} points)", self.matches_finished, self.points);
        println!("  match-ticks/s        {:>12.0}", self.match_ticks_per_second);
        println!("  sim cost             {:>12.0} ns per match-tick", self.sim_ns_per_match_tick);
        println!(
            "  players cost         {:>12.0} ns per match-tick (views + decisions at 30 Hz)",
            self.players_ns_per_match_tick
        );
        Ok(())
    }
}

struct Seated {
    match_id: MatchId,
    players: Vec<Autopilot>,
}

fn demo<G: Game>(
    mut game: G,
    args: &SimArgs,
    mut on_finished: impl FnMut(&mut G, MatchId) -> anyhow::Result<()>,
) -> anyhow::Result<DemoSummary> {
    let spec = MatchSpec {
        n_seats: args.seats,
        points_to_win: args.points_to_win,
        time_limit_ticks: u32::from(args.time_limit_s) * 60,
    };
    let schema = G::schema(args.seats);
    let mut next_id = 0u64;
    let mut new_match = |game: &mut G| -> anyhow::Result<Seated> {
        next_id += 1;
        let match_id = MatchId(next_id);
        let seed = args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(next_id);
        game.create_match(match_id, spec, seed).with_context(|| format!("creating a {}-seat match", args.seats))?;
        let players = (0..args.seats)
            .map(|seat| {
                game.set_seat_connected(match_id, seat, true)?;
                // Mixed skill, so points are scored and matches end.
                let config = if seat % 2 == 0 {
                    AutopilotConfig {
                        anticipate: true,
                        aim_error: 300,
                        reaction_ticks: 2,
                        ..AutopilotConfig::default()
                    }
                } else {
                    AutopilotConfig { reaction_ticks: 6, aim_error: 500, ..AutopilotConfig::default() }
                };
                Ok(Autopilot::new(&schema, seat, config, seed ^ u64::from(seat))?)
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Seated { match_id, players })
    };
    let mut running: Vec<Seated> = (0..args.matches).map(|_| new_match(&mut game)).collect::<anyhow::Result<_>>()?;
    let mut slot_of = std::collections::BTreeMap::new();
    for (idx, seated) in running.iter().enumerate() {
        slot_of.insert(seated.match_id, idx);
    }
    let mut view = Snapshot::default();
    let (mut sim_time, mut players_time) = (Duration::ZERO, Duration::ZERO);
    let (mut ticks, mut finished, mut points, mut match_ticks) = (0u64, 0u64, 0u64, 0u64);
    let budget = Duration::from_secs_f64(args.seconds.max(0.0));
    let started = Instant::now();
    while started.elapsed() < budget {
        // Players look at a fresh view every other tick, as they would at 30 snapshots per second.
        if ticks % 2 == 0 {
            let players_started = Instant::now();
            for seated in &mut running {
                for (seat, player) in seated.players.iter_mut().enumerate() {
                    game.write_view(seated.match_id, seat as Seat, &mut view)?;
                    game.set_input(seated.match_id, seat as Seat, player.decide(&view))?;
                }
            }
            players_time += players_started.elapsed();
        }
        let step_started = Instant::now();
        game.step();
        sim_time += step_started.elapsed();
        ticks += 1;
        match_ticks += running.len() as u64;
        while let Some(event) = game.poll_event() {
            match event {
                SimEvent::PointScored { .. } => points += 1,
                SimEvent::MatchFinished { match_id, .. } => {
                    finished += 1;
                    on_finished(&mut game, match_id)?;
                    game.remove_match(match_id);
                    if let Some(idx) = slot_of.remove(&match_id) {
                        running[idx] = new_match(&mut game)?;
                        slot_of.insert(running[idx].match_id, idx);
                    }
                }
                _ => {}
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let per = |time: Duration| time.as_nanos() as f64 / match_ticks.max(1) as f64;
    Ok(DemoSummary {
        matches: args.matches,
        seconds,
        ticks,
        matches_finished: finished,
        ticks_per_second: ticks as f64 / seconds,
        match_ticks_per_second: match_ticks as f64 / seconds,
        sim_ns_per_match_tick: per(sim_time),
        players_ns_per_match_tick: per(players_time),
        points,
    })
}

fn replay_file(path: &Path, print_hashes: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let log = InputLog::decode(&bytes).with_context(|| format!("{} is not a rally replay", path.display()))?;
    if log.game != PongWorld::NAME {
        bail!("{} is a replay of {:?}; this build plays {:?}", path.display(), log.game, PongWorld::NAME);
    }
    let report = replay::<PongWorld>(&log).with_context(|| format!("replaying {}", path.display()))?;
    if print_hashes {
        for (tick, hash) in report.hashes.iter().enumerate() {
            println!("{tick}\t{hash:016x}");
        }
    }
    let digest = hex::encode(log.digest());
    println!("replay {}: {} ticks, input log sha256 {digest}", path.display(), report.hashes.len());
    match &report.outcome {
        Some(outcome) => println!(
            "  outcome: {:?}, scores {:?}, winner side {:?}, {} ticks",
            outcome.reason, outcome.scores, outcome.winner, outcome.duration_ticks
        ),
        None => println!("  the log ends before the match does"),
    }
    if let Some(hash) = report.hashes.last() {
        println!("  final world hash {hash:016x}");
    }
    Ok(())
}
