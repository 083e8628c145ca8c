//! A fixed, seeded shard workload in the stepper (the sans-IO shard and its
//! clients in one process, virtual time): `--matches` two-player matches
//! played by autopilots for `--ticks` shard ticks, to 99 points so none ends.
//! Nothing in it reads a clock or draws an unseeded number, so the
//! instructions it executes are a regression figure that does not depend on
//! how busy the machine is:
//!
//! ```text
//! cargo build --release -p rally-server --example stepper_workload
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/examples/stepper_workload --matches 100 --ticks 600
//! callgrind_annotate /tmp/cg.out | head -30
//! ```
//!
//! Divide the total Ir by the match-ticks it prints for instructions per
//! match-tick, the clients' sessions, autopilots and links (and the 200 token
//! signatures) included. For the shard's share alone, collect inside one of
//! its entry points per run (valgrind 3.19 honours only the first
//! `--toggle-collect`); `Collected` is then that function's inclusive Ir:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg-tick.out '--toggle-collect=*Shard<*>::tick' \
//!     target/release/examples/stepper_workload --matches 100 --ticks 600
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg-datagram.out '--toggle-collect=*Shard<*>::handle_datagram' \
//!     target/release/examples/stepper_workload --matches 100 --ticks 600
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use anyhow::{Context, bail};
use common::stepper::{EPOCH_MS, Stepper};
use rally_protocol::control::ClientHello;
use rally_protocol::token::TokenClaims;
use rally_server::ShardConfig;
use rally_transport::conditioner::LinkConditions;

const SHARD: &str = "workload";

struct Args {
    matches: u64,
    ticks: u64,
    seed: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { matches: 100, ticks: 600, seed: 1 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--matches" => args.matches = value.parse().context("--matches")?,
            "--ticks" => args.ticks = value.parse().context("--ticks")?,
            "--seed" => args.seed = value.parse().context("--seed")?,
            other => bail!("unknown flag {other}: use --matches, --ticks, --seed"),
        }
    }
    if args.matches == 0 || args.ticks == 0 {
        bail!("--matches and --ticks must be at least 1");
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let config = ShardConfig {
        name: SHARD.into(),
        rng_seed: args.seed,
        max_matches: usize::try_from(args.matches).context("--matches")?.max(1),
        ..ShardConfig::default()
    };
    let mut stepper = Stepper::new(config, LinkConditions::perfect(), args.seed);
    for match_id in 1..=args.matches {
        for seat in 0..2 {
            let claims = TokenClaims {
                points_to_win: 99,
                ..common::claims(SHARD, match_id, seat, match_id * 10 + u64::from(seat), EPOCH_MS)
            };
            let token = claims.sign(&common::issuer()).context("signing a token")?;
            stepper.add_client(&ClientHello::Connect { token }, true);
        }
    }

    let wall = Instant::now();
    let first_tick = stepper.shard.tick_number();
    let mut match_ticks: u64 = 0;
    let mut last_tick = first_tick;
    while u64::from(stepper.shard.tick_number() - first_tick) < args.ticks {
        stepper.step();
        let tick = stepper.shard.tick_number();
        if tick != last_tick {
            // Matches alive over the ticks just run (they are created on the first hello).
            match_ticks += u64::from(tick - last_tick) * stepper.shard.n_matches() as u64;
            last_tick = tick;
        }
    }
    let wall_s = wall.elapsed().as_secs_f64();

    let stats = stepper.shard.stats();
    let welcomed = stepper.clients.iter().filter(|client| client.welcomes() > 0).count();
    if welcomed as u64 != 2 * args.matches || stats.matches_ended != 0 {
        bail!(
            "the workload is not what it claims: {welcomed} of {} clients welcomed, {} matches ended",
            2 * args.matches,
            stats.matches_ended
        );
    }
    println!(
        "stepper workload: {} matches x {} ticks (seed {}), {match_ticks} match-ticks",
        args.matches, args.ticks, args.seed
    );
    println!(
        "shard: {} matches created, {} snapshots sent ({} full, {} bytes), {} inputs on time, {} missing, {} late",
        stats.matches_created,
        stats.snapshots_sent,
        stats.snapshots_full,
        stats.snapshot_bytes,
        stats.inputs_on_time,
        stats.inputs_missing,
        stats.inputs_late
    );
    println!(
        "wall {wall_s:.3} s ({:.0} ns per match-tick, clients included; informational, count instructions instead)",
        wall_s * 1e9 / match_ticks.max(1) as f64
    );
    Ok(())
}
