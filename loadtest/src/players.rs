//! Cheap scripted players: one task per connection driving a [`ClientSession`]
//! directly, so thousands share one core.
//!
//! The SDK's `GameConnection` wakes every simulation tick and forwards every
//! snapshot over a channel; a load client needs neither. This driver wakes only
//! when a datagram or control bytes arrive or an input is due (the snapshot rate),
//! alternates up and down once a second, and counts snapshots by their ticks, so
//! loss is exact: every gap between consecutive snapshot ticks larger than one
//! snapshot interval is a lost (or late-dropped) snapshot.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rally_client::session::{ClientEvent, ClientSession, SessionConfig};
use rally_protocol::control::ClientHello;
use rally_sim::pong::{INPUT_DOWN, INPUT_UP};
use tokio::sync::watch;

use crate::Phase;

/// Counters shared by every player of a run.
#[derive(Debug, Default)]
pub struct PlayerCounters {
    /// Connections welcomed by the shard.
    pub connected: AtomicU64,
    /// Connections that failed before the welcome (handshake, refusal, timeout).
    pub failed: AtomicU64,
    /// Welcomed connections that ended before the window closed.
    pub dropped: AtomicU64,
    /// Snapshots received during the window.
    pub snapshots: AtomicU64,
    /// Snapshots the ticks say should have been received during the window.
    pub snapshots_expected: AtomicU64,
    /// Snapshots received but not usable (stale, missing baseline, undecodable).
    pub snapshots_unusable: AtomicU64,
    /// Input datagrams sent during the window.
    pub inputs_sent: AtomicU64,
    /// Connections that had received nothing for a while when the window closed.
    pub stalled: AtomicU64,
}

impl PlayerCounters {
    /// Connections that have finished connecting, either way.
    pub fn settled(&self) -> u64 {
        self.connected.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

/// Where players connect.
#[derive(Debug, Clone)]
pub struct PlayerTarget {
    /// The shard's QUIC address.
    pub addr: SocketAddr,
    /// Name the certificate is checked for (ignored when pinning by fingerprint).
    pub server_name: String,
}

#[derive(Default)]
struct WindowTally {
    snapshots: u64,
    expected: u64,
    unusable: u64,
    inputs: u64,
    stalled: bool,
}

/// Connects with `token`, plays until the phase is [`Phase::Stop`], and adds
/// what it saw to `counters`.
pub async fn play(
    endpoint: quinn::Endpoint,
    target: PlayerTarget,
    token: Vec<u8>,
    counters: std::sync::Arc<PlayerCounters>,
    mut phase: watch::Receiver<Phase>,
) {
    // The send half is held until the end: dropping it finishes the control stream.
    let Some((connection, session, _send, recv)) = connect(&endpoint, &target, token).await else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let mut tally = WindowTally::default();
    let ended_early = drive(&connection, session, recv, &mut phase, &mut tally).await;
    if ended_early {
        counters.dropped.fetch_add(1, Ordering::Relaxed);
    }
    counters.snapshots.fetch_add(tally.snapshots, Ordering::Relaxed);
    counters.snapshots_expected.fetch_add(tally.expected, Ordering::Relaxed);
    counters.snapshots_unusable.fetch_add(tally.unusable, Ordering::Relaxed);
    counters.inputs_sent.fetch_add(tally.inputs, Ordering::Relaxed);
    counters.stalled.fetch_add(u64::from(tally.stalled), Ordering::Relaxed);
    connection.close(0u32.into(), b"load test over");
}

async fn connect(
    endpoint: &quinn::Endpoint,
    target: &PlayerTarget,
    token: Vec<u8>,
) -> Option<(quinn::Connection, ClientSession, quinn::SendStream, quinn::RecvStream)> {
    let timeout = Duration::from_secs(15);
    let connecting = endpoint.connect(target.addr, &target.server_name).ok()?;
    let connection = tokio::time::timeout(timeout, connecting).await.ok()?.ok()?;
    let (mut send, mut recv) = connection.open_bi().await.ok()?;
    let mut session = ClientSession::new(SessionConfig::default());
    send.write_all(&session.hello(Instant::now(), &ClientHello::Connect { token })).await.ok()?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(timeout, recv.read(&mut buf)).await.ok()?.ok()??;
        session.handle_control(Instant::now(), &buf[..n]).ok()?;
        match session.poll_event() {
            Some(ClientEvent::Welcomed(_)) => return Some((connection, session, send, recv)),
            Some(ClientEvent::Refused(refusal)) => {
                tracing::debug!(?refusal, "refused");
                return None;
            }
            _ => {}
        }
    }
}

/// Plays until the window closes; true if the connection ended before that.
async fn drive(
    connection: &quinn::Connection,
    mut session: ClientSession,
    mut recv: quinn::RecvStream,
    phase: &mut watch::Receiver<Phase>,
    tally: &mut WindowTally,
) -> bool {
    let welcome = session.welcome().cloned().expect("connect returns welcomed sessions");
    let interval_ticks = u32::from((welcome.tick_rate_hz / welcome.snapshot_rate_hz.max(1)).max(1));
    let snapshot_period = Duration::from_secs_f64(f64::from(interval_ticks) / f64::from(welcome.tick_rate_hz.max(1)));
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut stream_open = true;
    let mut in_window = *phase.borrow() == Phase::Hold;
    let mut newest_tick: Option<u32> = None;
    let mut counted_any = false;
    let mut last_snapshot_at = Instant::now();
    let mut unusable_before = session.stats().snapshots_dropped;
    loop {
        let wake = session.poll_timeout().unwrap_or_else(|| Instant::now() + snapshot_period);
        tokio::select! {
            changed = phase.changed() => {
                let current = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Stop };
                match current {
                    Phase::Hold => in_window = true,
                    Phase::Ramp => {}
                    Phase::Stop => {
                        // A connection that went quiet before the end owes the
                        // snapshots it should have had since its last one.
                        let silent = last_snapshot_at.elapsed();
                        if in_window && silent > snapshot_period * 3 {
                            tally.expected += (silent.as_secs_f64() / snapshot_period.as_secs_f64()) as u64;
                            tally.stalled = true;
                        }
                        return false;
                    }
                }
            }
            datagram = connection.read_datagram() => {
                let Ok(bytes) = datagram else { return true };
                session.handle_datagram(Instant::now(), &bytes);
            }
            chunk = recv.read(&mut buf), if stream_open => {
                match chunk {
                    Ok(Some(n)) => {
                        if session.handle_control(Instant::now(), &buf[..n]).is_err() {
                            return true;
                        }
                    }
                    Ok(None) | Err(_) => stream_open = false,
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
        let now = Instant::now();
        // Alternate up and down every second; seats move in opposite directions.
        let up = (now.duration_since(started).as_secs() + u64::from(welcome.seat)).is_multiple_of(2);
        session.set_input(now, if up { INPUT_UP } else { INPUT_DOWN });
        while let Some(datagram) = session.poll_datagram(now) {
            if connection.send_datagram(Bytes::from(datagram)).is_ok() && in_window {
                tally.inputs += 1;
            }
        }
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::Snapshot(snapshot) => {
                    last_snapshot_at = now;
                    if in_window {
                        tally.snapshots += 1;
                        tally.expected += match newest_tick {
                            Some(previous) if counted_any => {
                                u64::from(snapshot.tick.saturating_sub(previous) / interval_ticks).max(1)
                            }
                            _ => 1,
                        };
                        counted_any = true;
                    }
                    newest_tick = Some(snapshot.tick);
                }
                ClientEvent::Ended(_) | ClientEvent::Disconnected { .. } => return true,
                _ => {}
            }
        }
        let unusable = session.stats().snapshots_dropped;
        if in_window {
            tally.unusable += unusable - unusable_before;
        }
        unusable_before = unusable;
        if session.is_over() || (!stream_open && in_window) {
            return true;
        }
    }
}
