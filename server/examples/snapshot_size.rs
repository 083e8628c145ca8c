//! How big rally's snapshots are, next to bincode of the same views, and what a client
//! costs in bandwidth at 30 Hz once the packet headers are counted.
//!
//! ```text
//! cargo run --release -p rally-server --example snapshot_size [-- --matches 20 --seed 1]
//! ```
//!
//! It plays `--matches` two-seat Pong matches between autopilots in the stepper (the
//! in-process shard and clients of the tests, over a perfect link, virtual time), taps
//! every datagram the shard sends, and compares each snapshot datagram with two bincode
//! 2 encodings of the full view it carries (`Snapshot { tick, values }`):
//! - `standard()`: varint integers, rally's own control-stream encoding;
//! - `legacy()`: fixed-width integers and `u64` lengths, bincode 1's format.
//!
//! The bandwidth estimate adds to each datagram the headers below it on the wire (see
//! [`PacketOverhead`]); inputs ride one datagram per snapshot interval.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use common::stepper::{EPOCH_MS, Stepper};
use rally_client::ClientEvent;
use rally_client::conditioner::LinkConditions;
use rally_protocol::control::ClientHello;
use rally_protocol::datagram::Datagram;
use rally_protocol::{Snapshot, codec};
use rally_server::ShardConfig;

/// Bytes under one QUIC DATAGRAM on the wire, per packet, as quinn 0.11 sends it.
#[derive(Clone, Copy, Debug)]
struct PacketOverhead {
    /// IPv4 header without options (IPv6 would be 40).
    ip: usize,
    /// UDP header.
    udp: usize,
    /// QUIC short header: 1 flags byte, the destination connection id (quinn's default
    /// `RandomConnectionIdGenerator` makes 8-byte ids on both sides) and a 1-byte packet
    /// number (quinn uses 1 byte while fewer than 128 packets are unacknowledged).
    quic_header: usize,
    /// AEAD tag (AES-GCM or ChaCha20-Poly1305).
    aead_tag: usize,
    /// DATAGRAM frame type 0x31 (quinn always writes the length) and a 1-byte length
    /// varint (payloads under 64 bytes).
    frame: usize,
    /// An ACK frame riding along: type, largest acknowledged (2-byte varint past packet
    /// 63), ACK delay (2-byte varint), range count and first range (1 byte each) on a
    /// link without loss. Both directions carry ack-eliciting datagrams, so each packet
    /// carries one.
    ack_frame: usize,
}

const OVERHEAD: PacketOverhead =
    PacketOverhead { ip: 20, udp: 8, quic_header: 1 + 8 + 1, aead_tag: 16, frame: 2, ack_frame: 7 };

impl PacketOverhead {
    /// Bytes added to every datagram's payload.
    fn per_datagram(&self) -> usize {
        self.ip + self.udp + self.quic_header + self.aead_tag + self.frame + self.ack_frame
    }

    /// A packet carrying an ACK frame only: what a side sends when it has no datagram
    /// of its own within the 25 ms max_ack_delay of receiving one.
    fn ack_only(&self) -> usize {
        self.ip + self.udp + self.quic_header + self.aead_tag + self.ack_frame
    }
}

/// Sums over snapshot datagrams.
#[derive(Debug, Default)]
struct Tally {
    datagrams: u64,
    datagram_bytes: u64,
    full: u64,
    full_body_bytes: u64,
    deltas: u64,
    delta_body_bytes: u64,
    views: u64,
    bincode_standard_bytes: u64,
    bincode_legacy_bytes: u64,
    input_datagrams: u64,
    input_bytes: u64,
}

/// Size of bincode 2 `standard()` of a view: rally's control codec is exactly that
/// encoding behind a 4-byte length prefix.
fn bincode_standard_len(view: &Snapshot) -> usize {
    let mut frame = Vec::new();
    codec::encode_frame(view, &mut frame);
    frame.len() - 4
}

/// Size of bincode 2 `legacy()` of a view: a fixed `u32` tick, a `u64` length and a
/// fixed `i32` per value. Computed rather than encoded, since this crate does not
/// depend on bincode; the layout is bincode's documented fixint format.
fn bincode_legacy_len(view: &Snapshot) -> usize {
    4 + 8 + 4 * view.values.len()
}

fn per(total: u64, count: u64) -> f64 {
    if count == 0 { 0.0 } else { total as f64 / count as f64 }
}

fn parse_args() -> anyhow::Result<(u64, u64)> {
    let (mut n_matches, mut seed) = (20, 1);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--matches" => n_matches = value.parse().context("--matches")?,
            "--seed" => seed = value.parse().context("--seed")?,
            other => bail!("unknown flag {other}; expected --matches N (default 20) or --seed S (default 1)"),
        }
    }
    ensure!(n_matches > 0, "--matches must be at least 1");
    Ok((n_matches, seed))
}

fn main() -> anyhow::Result<()> {
    let (n_matches, seed) = parse_args()?;
    let config = ShardConfig { name: "step".into(), rng_seed: seed, ..ShardConfig::default() };
    let snapshot_rate_hz = f64::from(config.snapshot_rate_hz);
    let mut stepper = Stepper::new(config, LinkConditions::perfect(), seed);
    stepper.sent_datagrams = Some(Vec::new());
    for match_id in 1..=n_matches {
        for seat in 0..2 {
            let token = common::token("step", match_id, seat, match_id * 10 + u64::from(seat), EPOCH_MS);
            stepper.add_client(&ClientHello::Connect { token }, true);
        }
    }
    let done = stepper.run_until(Duration::from_secs(3600), |s| s.results.len() == n_matches as usize);
    ensure!(done, "only {} of {n_matches} matches finished within an hour of play", stepper.results.len());

    let mut tally = Tally::default();
    for (_, bytes) in stepper.sent_datagrams.as_deref().unwrap_or_default() {
        let Ok(Datagram::Snapshot(header, body)) = Datagram::decode(bytes) else { continue };
        tally.datagrams += 1;
        tally.datagram_bytes += bytes.len() as u64;
        if header.baseline.is_some() {
            tally.deltas += 1;
            tally.delta_body_bytes += body.len() as u64;
        } else {
            tally.full += 1;
            tally.full_body_bytes += body.len() as u64;
        }
    }
    for client in &stepper.clients {
        for event in &client.events {
            if let ClientEvent::Snapshot(view) = event {
                tally.views += 1;
                tally.bincode_standard_bytes += bincode_standard_len(view) as u64;
                tally.bincode_legacy_bytes += bincode_legacy_len(view) as u64;
            }
        }
        tally.input_datagrams += client.session.stats().input_datagrams;
        tally.input_bytes += client.session.stats().datagram_bytes_out;
    }
    // Over a perfect link every snapshot sent is decoded, so both sides of the
    // comparison cover the same views.
    ensure!(tally.views == tally.datagrams, "{} views decoded of {} sent", tally.views, tally.datagrams);

    let snapshot = per(tally.datagram_bytes, tally.datagrams);
    let body = per(tally.delta_body_bytes + tally.full_body_bytes, tally.datagrams);
    let standard = per(tally.bincode_standard_bytes, tally.views);
    let legacy = per(tally.bincode_legacy_bytes, tally.views);
    let input = per(tally.input_bytes, tally.input_datagrams);
    let kbit = |bytes: f64| bytes * snapshot_rate_hz * 8.0 / 1000.0;
    let overhead = OVERHEAD.per_datagram() as f64;
    let down = kbit(snapshot + overhead);
    let up = kbit(input + overhead);
    let ack_only = kbit(OVERHEAD.ack_only() as f64);
    let ticks: u64 = stepper.results.iter().map(|result| u64::from(result.duration_ticks)).sum();

    println!("{n_matches} matches, {ticks} ticks of play, {} snapshot datagrams, seed {seed}", tally.datagrams);
    println!();
    println!("{:<52} {:>10}", "per snapshot", "bytes");
    println!("{:<52} {:>10.2}", "rally datagram (header + body)", snapshot);
    println!("{:<52} {:>10.2}", "  header", snapshot - body);
    println!("{:<52} {:>10.2}", "  body", body);
    println!("{:<52} {:>10.2}", "  delta body", per(tally.delta_body_bytes, tally.deltas));
    println!("{:<52} {:>10.2}", "  full body", per(tally.full_body_bytes, tally.full));
    println!("{:<52} {:>10.4}", "  fraction full", per(tally.full, tally.datagrams));
    println!(
        "{:<52} {:>10.2}  ({:.1}x rally datagram, {:.1}x body)",
        "bincode 2 standard() of the full view",
        standard,
        standard / snapshot,
        standard / body
    );
    println!(
        "{:<52} {:>10.2}  ({:.1}x rally datagram, {:.1}x body)",
        "bincode 2 legacy() of the full view",
        legacy,
        legacy / snapshot,
        legacy / body
    );
    println!("{:<52} {:>10.2}", "rally input datagram", input);
    println!();
    let PacketOverhead { ip, udp, quic_header, aead_tag, frame, ack_frame } = OVERHEAD;
    println!(
        "per-packet overhead {overhead} B = IPv4 {ip} + UDP {udp} + QUIC short header {quic_header} \
         + AEAD tag {aead_tag} + DATAGRAM frame {frame} + ACK frame {ack_frame}"
    );
    println!("{:<52} {:>10}", "per client at 30 Hz", "kbit/s");
    println!("{:<52} {:>10.2}", "down (snapshots)", down);
    println!("{:<52} {:>10.2}", "up (inputs)", up);
    println!("{:<52} {:>10.2}", "ACK-only packets, worst case, each way", ack_only);
    println!();
    println!(
        "{{\"matches\":{n_matches},\"seed\":{seed},\"ticks\":{ticks},\"snapshot_datagrams\":{},\
         \"snapshot_datagram_bytes\":{snapshot:.3},\"body_bytes\":{body:.3},\"delta_body_bytes\":{:.3},\"full_body_bytes\":{:.3},\
         \"fraction_full\":{:.5},\"bincode_standard_bytes\":{standard:.3},\"bincode_legacy_bytes\":{legacy:.3},\
         \"ratio_standard\":{:.3},\"ratio_legacy\":{:.3},\"ratio_standard_body\":{:.3},\"input_datagram_bytes\":{input:.3},\
         \"packet_overhead_bytes\":{overhead},\"rate_hz\":{snapshot_rate_hz},\"down_kbit_s\":{down:.3},\
         \"up_kbit_s\":{up:.3},\"ack_only_worst_kbit_s\":{ack_only:.3}}}",
        tally.datagrams,
        per(tally.delta_body_bytes, tally.deltas),
        per(tally.full_body_bytes, tally.full),
        per(tally.full, tally.datagrams),
        standard / snapshot,
        legacy / snapshot,
        standard / body,
    );
    Ok(())
}
