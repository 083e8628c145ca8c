//! The in-memory link: a client in the same process as the shard, no sockets.
//!
//! Control frames and datagrams travel over channels between the client
//! driver here and a connection task in the shard (which implements
//! [`MemoryDial`]; the client crate knows no shard). Everything above the
//! link is the same [`ClientSession`] as over QUIC and raw UDP, so the
//! conformance suite runs on it too, and a game can embed a shard for
//! offline play without a network stack.
//!
//! Optionally the link is conditioned in-process with [`Link`]: datagrams get
//! the full [`LinkConditions`] (loss, jitter, duplication, reordering);
//! control frames only the base latency, since the link is reliable and
//! ordered for them as a QUIC stream is.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rally_protocol::Input;
use rally_protocol::control::{ClientHello, Welcome};
use tokio::sync::mpsc;

use crate::conditioner::{Link, LinkConditions};
use crate::driver::{DriverHandle, DriverPorts};
use crate::quic::{ConnectConfig, Refused};
use crate::session::{ClientEvent, ClientSession, ClientStats};

/// Client → shard over an in-memory link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientToShard {
    /// Control-stream bytes: length-prefixed frames, the hello first.
    Control(Vec<u8>),
    /// One game datagram.
    Datagram(Vec<u8>),
}

/// Shard → client over an in-memory link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardToClient {
    /// One length-prefixed control frame.
    Frame(Vec<u8>),
    /// One game datagram.
    Datagram(Vec<u8>),
    /// The shard closed the connection; nothing follows.
    Closed,
}

/// The client's ends of one in-memory connection. Dropping `to_shard` is the
/// client hanging up.
#[derive(Debug)]
pub struct MemoryEnds {
    /// What the client sends.
    pub to_shard: mpsc::UnboundedSender<ClientToShard>,
    /// What the shard sends.
    pub from_shard: mpsc::UnboundedReceiver<ShardToClient>,
}

/// Opens in-memory connections to a shard; the shard's handle implements it.
pub trait MemoryDial: Send + Sync + fmt::Debug {
    /// A new connection, not yet greeted.
    fn dial(&self) -> anyhow::Result<MemoryEnds>;
}

/// An in-memory transport: where to dial, and the network to pretend.
#[derive(Clone, Debug)]
pub struct MemoryTransport {
    /// The shard's dialer.
    pub dialer: Arc<dyn MemoryDial>,
    /// Conditions applied in both directions.
    pub conditions: LinkConditions,
    /// Seeds the conditioner (each connection adds its own offset).
    pub seed: u64,
}

impl MemoryTransport {
    /// A perfect in-memory link to the shard behind `dialer`.
    pub fn new(dialer: Arc<dyn MemoryDial>) -> Self {
        Self { dialer, conditions: LinkConditions::perfect(), seed: 0 }
    }

    /// The same link under `conditions`.
    pub fn conditioned(mut self, conditions: LinkConditions, seed: u64) -> Self {
        self.conditions = conditions;
        self.seed = seed;
        self
    }
}

/// The links of one connection, conditioned or not.
struct Links {
    up: Link<Vec<u8>>,
    down: Link<Vec<u8>>,
    control_up: Link<Vec<u8>>,
    control_down: Link<Vec<u8>>,
}

impl Links {
    fn new(conditions: LinkConditions, seed: u64) -> Self {
        let reliable = LinkConditions { latency: conditions.latency, ..LinkConditions::perfect() };
        Self {
            up: Link::new(conditions, seed.wrapping_mul(4)),
            down: Link::new(conditions, seed.wrapping_mul(4).wrapping_add(1)),
            control_up: Link::new(reliable, seed.wrapping_mul(4).wrapping_add(2)),
            control_down: Link::new(reliable, seed.wrapping_mul(4).wrapping_add(3)),
        }
    }

    fn next_delivery(&self) -> Option<Instant> {
        [
            self.up.next_delivery(),
            self.down.next_delivery(),
            self.control_up.next_delivery(),
            self.control_down.next_delivery(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Hands the shard whatever the uplinks deliver by `now`; false once the shard is gone.
    fn deliver_up(&mut self, now: Instant, to_shard: &mpsc::UnboundedSender<ClientToShard>) -> bool {
        let mut open = true;
        while let Some(bytes) = self.control_up.poll(now) {
            open &= to_shard.send(ClientToShard::Control(bytes)).is_ok();
        }
        while let Some(datagram) = self.up.poll(now) {
            open &= to_shard.send(ClientToShard::Datagram(datagram)).is_ok();
        }
        open
    }
}

/// A live in-memory connection to a shard seat; the same surface as
/// [`crate::quic::GameConnection`].
#[derive(Debug)]
pub struct MemoryConnection {
    driver: DriverHandle,
}

impl MemoryConnection {
    /// Dials, says hello with `credential`, and waits for the welcome (up to
    /// `config.connect_timeout`; `config.addr` is ignored). A refusal is a
    /// [`Refused`] error.
    pub async fn connect(
        transport: &MemoryTransport,
        config: &ConnectConfig,
        credential: &ClientHello,
    ) -> anyhow::Result<Self> {
        let MemoryEnds { to_shard, mut from_shard } = transport.dialer.dial().context("dialing the shard in memory")?;
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let mut session = ClientSession::new(config.session.clone());
        let mut links = Links::new(transport.conditions, transport.seed.wrapping_add(rand::random::<u32>().into()));
        // The hello goes as control, reliably (and as late as the link makes it:
        // its round trip seeds the session's clock); the answer comes the same way.
        let now = Instant::now();
        links.control_up.push(now, session.hello(now, credential));
        let mut early_datagrams = Vec::new();
        // The shard closed its end; its last frames (a refusal) may still be in the conditioner.
        let mut closed = false;
        let welcome = 'welcome: loop {
            let wake = links.next_delivery().map_or(deadline, |due| tokio::time::Instant::from_std(due).min(deadline));
            tokio::select! {
                message = from_shard.recv(), if !closed => {
                    let now = Instant::now();
                    match message {
                        Some(ShardToClient::Frame(bytes)) => links.control_down.push(now, bytes),
                        Some(ShardToClient::Datagram(bytes)) => links.down.push(now, bytes),
                        Some(ShardToClient::Closed) | None => closed = true,
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            closed |= !links.deliver_up(now, &to_shard);
            while let Some(bytes) = links.down.poll(now) {
                early_datagrams.push(bytes);
            }
            while let Some(bytes) = links.control_down.poll(now) {
                session.handle_control(now, &bytes).context("undecodable answer to hello")?;
                match session.poll_event() {
                    Some(ClientEvent::Welcomed(welcome)) => break 'welcome *welcome,
                    Some(ClientEvent::Refused(refusal)) => return Err(Refused(refusal).into()),
                    _ => {}
                }
            }
            if closed && links.control_down.next_delivery().is_none() {
                bail!("the shard closed the connection without answering");
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("no answer to hello within {:?}", config.connect_timeout);
            }
        };
        let now = Instant::now();
        for datagram in early_datagrams {
            session.handle_datagram(now, &datagram);
        }
        let driver = DriverHandle::spawn(welcome, |ports| drive(session, links, to_shard, from_shard, ports));
        Ok(Self { driver })
    }

    /// The shard's welcome (seat, tick rate, schema, resume secret).
    pub fn welcome(&self) -> &Welcome {
        self.driver.welcome()
    }

    /// The credential that takes this seat back after a dropped connection.
    pub fn resume_credential(&self) -> ClientHello {
        self.driver.resume_credential()
    }

    /// Sets the intent sent from the next tick on.
    pub fn set_input(&self, input: Input) {
        self.driver.set_input(input);
    }

    /// The next event; `None` once the connection is closed and all events are read.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.driver.next_event().await
    }

    /// Leaves the match for good.
    pub fn leave(&self) {
        self.driver.leave();
    }

    /// Drops the connection abruptly, as a lost network would (no goodbye).
    pub fn abort(self) {
        self.driver.abort();
    }

    /// Waits for the driver to stop and returns its counters.
    pub async fn finish(self) -> ClientStats {
        self.driver.finish().await
    }
}

async fn drive(
    mut session: ClientSession,
    mut links: Links,
    to_shard: mpsc::UnboundedSender<ClientToShard>,
    mut from_shard: mpsc::UnboundedReceiver<ShardToClient>,
    ports: DriverPorts,
) -> ClientStats {
    let DriverPorts { input, events, mut leave } = ports;
    let mut last_input_tick = None;
    let mut closed_by_shard = false;
    loop {
        let now = Instant::now();
        let next_tick = session
            .input_tick(now)
            .and_then(|tick| session.clock().map(|clock| clock.instant_of(tick + 1)))
            .unwrap_or(now + Duration::from_millis(16));
        let mut wake = session.poll_timeout().map_or(next_tick, |due| due.min(next_tick));
        wake = links.next_delivery().map_or(wake, |due| due.min(wake));
        tokio::select! {
            message = from_shard.recv(), if !closed_by_shard => {
                let now = Instant::now();
                match message {
                    Some(ShardToClient::Frame(bytes)) => links.control_down.push(now, bytes),
                    Some(ShardToClient::Datagram(bytes)) => links.down.push(now, bytes),
                    Some(ShardToClient::Closed) | None => closed_by_shard = true,
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            request = leave.recv() => {
                if request.is_some() {
                    let _ = to_shard.send(ClientToShard::Control(ClientSession::leave()));
                }
                break;
            }
        }
        let now = Instant::now();
        while let Some(bytes) = links.down.poll(now) {
            session.handle_datagram(now, &bytes);
        }
        let mut broken = false;
        while let Some(bytes) = links.control_down.poll(now) {
            broken |= session.handle_control(now, &bytes).is_err();
        }
        let intent = input.load(Ordering::Relaxed);
        if let Some(tick) = session.set_input(now, intent)
            && last_input_tick.is_none_or(|last| tick > last)
        {
            last_input_tick = Some(tick);
            let _ = events.send(ClientEvent::InputRecorded { tick, input: intent });
        }
        while let Some(datagram) = session.poll_datagram(now) {
            links.up.push(now, datagram);
        }
        links.deliver_up(now, &to_shard);
        while let Some(event) = session.poll_event() {
            let _ = events.send(event);
        }
        // The shard's last frames still in the conditioner are read before closing.
        let drained = links.control_down.next_delivery().is_none();
        if broken || session.is_over() || (closed_by_shard && drained) {
            break;
        }
    }
    session.stats().clone()
}
