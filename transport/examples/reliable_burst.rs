//! How the raw UDP transport's reliable channel does under loss, over many seeds:
//! the measurement behind replacing laminar (whose reliable-ordered delivery
//! stalled for good in 2 of 23 runs of a 200-message burst).
//!
//! ```text
//! cargo run --release -p rally-transport --example reliable_burst [-- --runs 500 --messages 1000 --loss 0.05]
//! ```
//!
//! Each run sends `--messages` control-sized messages at once through two
//! [`ReliableChannel`]s joined by seeded [`Link`]s (loss, 50 ± 20 ms, 1%
//! duplication, 1% reordering, both directions, acks included) in virtual time,
//! and checks that the receiver gets every byte in order. It prints how many
//! runs completed, their completion times and how many segments were resent.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rally_transport::conditioner::{Link, LinkConditions};
use rally_transport::udp::ReliableChannel;

/// Virtual time step.
const STEP: Duration = Duration::from_millis(1);
/// A run that has not delivered everything by then counts as stalled.
const GIVE_UP: Duration = Duration::from_secs(120);

struct Args {
    runs: u64,
    messages: u32,
    loss: f64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { runs: 500, messages: 1000, loss: 0.05 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runs" => args.runs = value.parse().context("--runs")?,
            "--messages" => args.messages = value.parse().context("--messages")?,
            "--loss" => args.loss = value.parse().context("--loss")?,
            other => bail!("unknown flag {other}: use --runs, --messages, --loss"),
        }
    }
    if !(0.0..1.0).contains(&args.loss) {
        bail!("--loss must be in [0, 1)");
    }
    Ok(args)
}

struct Outcome {
    /// Virtual time until the last byte arrived, `None` if it never did.
    completed_in: Option<Duration>,
    in_order: bool,
    segments: u64,
    resends: u64,
}

/// A message about the size of a control frame, tagged with its index.
fn message(idx: u32) -> Vec<u8> {
    let mut bytes = idx.to_le_bytes().to_vec();
    bytes.extend((0..24u8).map(|i| i.wrapping_mul(idx as u8)));
    bytes
}

fn run(seed: u64, n_messages: u32, conditions: LinkConditions) -> Outcome {
    let start = Instant::now();
    let mut sender = ReliableChannel::new();
    let mut receiver = ReliableChannel::new();
    let mut up = Link::new(conditions, seed * 2);
    let mut down = Link::new(conditions, seed * 2 + 1);
    let mut expected = Vec::new();
    for idx in 0..n_messages {
        let bytes = message(idx);
        sender.send(&bytes);
        expected.extend_from_slice(&bytes);
    }
    let mut received = Vec::with_capacity(expected.len());
    let mut segments = 0;
    let mut now = start;
    while now - start < GIVE_UP {
        while let Some(packet) = sender.poll_transmit(now) {
            segments += 1;
            up.push(now, packet);
        }
        while let Some(packet) = up.poll(now) {
            received.extend(receiver.handle(now, &packet));
        }
        while let Some(packet) = receiver.poll_transmit(now) {
            down.push(now, packet);
        }
        while let Some(packet) = down.poll(now) {
            sender.handle(now, &packet);
        }
        if received.len() >= expected.len() {
            return Outcome {
                completed_in: Some(now - start),
                in_order: received == expected,
                segments,
                resends: sender.resends(),
            };
        }
        now += STEP;
    }
    Outcome { completed_in: None, in_order: expected.starts_with(&received), segments, resends: sender.resends() }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let conditions = LinkConditions { loss: args.loss, ..LinkConditions::lossy() };
    let mut times = Vec::new();
    let (mut stalled, mut out_of_order, mut segments, mut resends) = (0u64, 0u64, 0u64, 0u64);
    for seed in 1..=args.runs {
        let outcome = run(seed, args.messages, conditions);
        match outcome.completed_in {
            Some(elapsed) => times.push(elapsed),
            None => stalled += 1,
        }
        out_of_order += u64::from(!outcome.in_order);
        segments += outcome.segments;
        resends += outcome.resends;
    }
    times.sort();
    let pct = |q: f64| {
        times.get(((times.len() as f64 - 1.0) * q).round() as usize).map_or(f64::NAN, |t| t.as_secs_f64() * 1e3)
    };
    println!(
        "{} runs of {} messages, {:.0}% loss each way, 50 ± 20 ms, 1% duplicated, 1% reordered",
        args.runs,
        args.messages,
        args.loss * 100.0
    );
    println!("  complete and in order  {}/{}", times.len() as u64 - out_of_order.min(times.len() as u64), args.runs);
    println!("  stalled (nothing for {} s)  {stalled}", GIVE_UP.as_secs());
    println!("  out of order           {out_of_order}");
    println!("  completion (virtual)   p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms", pct(0.5), pct(0.99), pct(1.0));
    println!(
        "  segments sent          {:.3} per message ({:.1}% resends)",
        segments as f64 / (args.runs * u64::from(args.messages)) as f64,
        100.0 * resends as f64 / segments.max(1) as f64
    );
    Ok(())
}
