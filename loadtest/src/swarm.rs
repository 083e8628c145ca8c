//! A raw UDP load generator cheaper than the shard it loads: thousands of
//! protocol-faithful clients on one task, over one socket, with batched
//! system calls both ways.
//!
//! Every client is the SDK's own sans-IO [`ClientSession`] behind the same
//! cookie handshake, [`ReliableChannel`] control stream, keepalives and
//! goodbye as `rally_client::udp`'s driver (PROTOCOL.md §13), so the shard
//! cannot tell it from a game. What differs is only the IO: where the SDK
//! gives each connection its own socket and task (a system call per datagram
//! each way, a wake-up per client per tick), the swarm gives each client its
//! own loopback address, `127.64.0.0/10` counted up, on one socket bound to
//! the wildcard address, and moves the datagrams of every client with one
//! `recvmmsg` / `sendmmsg` per batch (`rally_transport::udp::batch`); the
//! address a datagram was sent to tells which client it is for. Client
//! deadlines live in one timer heap, and what the clients measure is kept in
//! the task and merged into the run's recorder a few times a second.
//!
//! It needs a shard on this machine's loopback (the embedded one, or one
//! given by a 127.0.0.0/8 address): the addresses it speaks for exist only there.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use rally_client::session::{ClientEvent, ClientSession, SessionConfig};
use rally_protocol::Tick;
use rally_protocol::control::{ClientHello, MatchEnd, MatchPhase, ServerMessage};
use rally_transport::udp::ReliableChannel;
use rally_transport::udp::batch::{self, RecvBatch, SendBatch};
use rally_transport::udp::wire::{self, Packet};
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};

use crate::game::{MatchOutcome, scripted_input};
use crate::measure::{Histo, Measures, Recorder};
use crate::scenario::{Live, StopSignal};

/// The first client address; clients count up from it (4 M addresses before it wraps).
const FIRST_ADDRESS: u32 = u32::from_be_bytes([127, 64, 0, 1]);
const ADDRESSES: u32 = 1 << 22;
/// As the SDK's raw UDP driver (`rally_client::udp`).
const KEEPALIVE_AFTER: Duration = Duration::from_millis(500);
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_RESEND: Duration = Duration::from_millis(200);
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
const LEAVE_FLUSH: Duration = Duration::from_secs(2);
/// How often the task's measures are merged into the run's recorder.
const MERGE_EVERY: Duration = Duration::from_millis(250);
/// Datagrams per receive call; batches are drained until the socket is empty.
const RECV_BATCH: usize = 128;
/// Kernel socket buffers asked for: a snapshot tick's burst for every client must fit.
const SOCKET_BUFFER: usize = 16 << 20;

/// How a match ended for one swarm client, or the error kind to count.
pub type Outcome = Result<MatchOutcome, String>;

/// One client's request to play a match with `token`.
struct Join {
    token: Vec<u8>,
    done: oneshot::Sender<Outcome>,
}

/// Where the scenario's clients hand their matches to the swarm.
#[derive(Debug, Clone)]
pub struct SwarmHandle {
    joins: mpsc::UnboundedSender<Join>,
}

impl SwarmHandle {
    /// Plays one match with `token` as a new connection; resolves when it ends.
    pub async fn play(&self, token: Vec<u8>) -> Outcome {
        let (done, outcome) = oneshot::channel();
        self.joins.send(Join { token, done }).map_err(|_| "swarm_stopped".to_owned())?;
        outcome.await.unwrap_or_else(|_| Err("swarm_stopped".to_owned()))
    }
}

/// Counters of the swarm's own IO, for the report's settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct SwarmIo {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// `recvmmsg` calls that returned datagrams.
    pub recv_calls: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// `sendmmsg` calls.
    pub send_calls: u64,
}

/// Starts the swarm on the current runtime: clients connect to `shard` (a
/// loopback address) as they join, and all leave when `stop` fires. The task
/// ends once every handle is dropped and every client is done.
pub fn start(
    shard: SocketAddr,
    recorder: Arc<Recorder>,
    live: Arc<Live>,
    stop: StopSignal,
) -> anyhow::Result<(SwarmHandle, tokio::task::JoinHandle<SwarmIo>)> {
    anyhow::ensure!(
        shard.ip().is_loopback() && shard.is_ipv4(),
        "the swarm driver speaks from 127.64.0.0/10 and needs a shard on IPv4 loopback, not {shard}"
    );
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into()).context("binding the swarm's socket")?;
    socket.set_nonblocking(true)?;
    let socket: std::net::UdpSocket = socket.into();
    batch::enable_local_addresses(&socket).context("asking for local addresses (IP_PKTINFO)")?;
    // Best effort: skips the kernel's per-datagram IP id (see the batch module).
    let _ = batch::set_dont_fragment(&socket);
    let io = socket.try_clone()?;
    let registered = tokio::net::UdpSocket::from_std(socket).context("registering the swarm's socket")?;
    let (joins, joins_rx) = mpsc::unbounded_channel();
    let swarm = Swarm {
        shard,
        io,
        socket: registered,
        clients: Vec::new(),
        free: Vec::new(),
        by_address: HashMap::new(),
        timers: BinaryHeap::new(),
        next_address: 0,
        out: SendBatch::with_capacity(4096, 4096 * 32),
        measures: Measures::default(),
        hot: HotLatencies::default(),
        recorder,
        live,
        stop,
        stopping: false,
        stats: SwarmIo::default(),
    };
    Ok((SwarmHandle { joins }, tokio::spawn(swarm.run(joins_rx))))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sending cookie requests.
    Requesting,
    /// Sending the connect (cookie + hello) until the welcome arrives.
    Connecting,
    Playing,
    /// Left the seat; reading until the leave is acknowledged or the flush ends.
    Leaving {
        until: Instant,
    },
}

/// One connection of the swarm.
struct Client {
    address: Ipv4Addr,
    phase: Phase,
    session: ClientSession,
    channel: ReliableChannel,
    /// The connect packet once the challenge came (resent as is).
    connect: Vec<u8>,
    token: Vec<u8>,
    started: Instant,
    welcomed: Option<Instant>,
    seat: u8,
    match_id: u64,
    interval_ticks: u32,
    snapshot_period: Duration,
    last_handshake: Instant,
    last_heard: Instant,
    last_sent: Instant,
    newest_snapshot: Option<(Tick, Instant)>,
    /// Input ticks recorded and not yet shown by a snapshot, oldest first, with when.
    pending_inputs: VecDeque<(Tick, Instant)>,
    matched: bool,
    /// The deadline in the timer heap (older entries for this client are stale).
    scheduled: Instant,
    done: Option<oneshot::Sender<Outcome>>,
}

struct Swarm {
    shard: SocketAddr,
    /// The socket for the batched calls; `socket` is the same one, registered for readiness.
    io: std::net::UdpSocket,
    socket: tokio::net::UdpSocket,
    clients: Vec<Option<Client>>,
    free: Vec<usize>,
    by_address: HashMap<Ipv4Addr, usize>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    next_address: u32,
    out: SendBatch,
    measures: Measures,
    /// The latencies recorded per datagram, kept apart from `measures` (whose
    /// map is keyed by name) until the merge.
    hot: HotLatencies,
    recorder: Arc<Recorder>,
    live: Arc<Live>,
    stop: StopSignal,
    stopping: bool,
    stats: SwarmIo,
}

/// Per-snapshot latencies, recorded without a map lookup.
#[derive(Debug, Default)]
struct HotLatencies {
    snapshot_interval: Histo,
    snapshot_jitter: Histo,
    input_to_snapshot: Histo,
}

impl Swarm {
    async fn run(mut self, mut joins: mpsc::UnboundedReceiver<Join>) -> SwarmIo {
        let mut recv = RecvBatch::new(RECV_BATCH, batch::DEFAULT_SLOT);
        let mut last_merge = Instant::now();
        let mut joins_open = true;
        loop {
            if !joins_open && self.by_address.is_empty() {
                break;
            }
            let wake = self.timers.peek().map(|Reverse((at, _))| *at);
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
                wake.unwrap_or_else(|| Instant::now() + MERGE_EVERY).min(last_merge + MERGE_EVERY),
            ));
            let stop_wait = self.stop.clone();
            let woke = tokio::select! {
                biased;
                ready = self.socket.readable() => if ready.is_ok() { Wake::Readable } else { Wake::Timer },
                () = sleep => Wake::Timer,
                join = joins.recv(), if joins_open => Wake::Join(join),
                () = wait_stop(stop_wait), if !self.stopping => Wake::Stop,
            };
            match woke {
                Wake::Readable => self.receive(&mut recv),
                Wake::Timer => {}
                Wake::Join(Some(join)) => self.join(join),
                Wake::Join(None) => joins_open = false,
                Wake::Stop => {
                    self.stopping = true;
                    let now = Instant::now();
                    for idx in 0..self.clients.len() {
                        self.leave(idx, now);
                    }
                }
            }
            self.service_timers(Instant::now());
            self.flush().await;
            if last_merge.elapsed() >= MERGE_EVERY {
                self.merge();
                last_merge = Instant::now();
            }
        }
        self.merge();
        self.stats
    }

    /// Drains the socket, batch by batch, handing each packet to its client.
    fn receive(&mut self, recv: &mut RecvBatch) {
        loop {
            let got = self.socket.try_io(Interest::READABLE, || batch::recv_batch(&self.io, recv));
            if got.is_err() {
                return;
            }
            self.stats.recv_calls += 1;
            self.stats.datagrams_in += recv.len() as u64;
            let now = Instant::now();
            for received in recv.iter() {
                if received.truncated || received.from != self.shard {
                    continue;
                }
                let Some(IpAddr::V4(to)) = received.to else { continue };
                let Some(&idx) = self.by_address.get(&to) else { continue };
                self.on_packet(idx, now, received.bytes);
            }
            if recv.len() < recv.capacity() {
                return;
            }
        }
    }

    /// Sends what the clients queued; a full socket buffer is waited out, never dropped.
    async fn flush(&mut self) {
        while !self.out.is_empty() {
            match self.socket.try_io(Interest::WRITABLE, || batch::send_batch(&self.io, &mut self.out)) {
                Ok(sent) => {
                    self.stats.datagrams_out += sent.datagrams as u64;
                    self.stats.send_calls += sent.calls as u64;
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.socket.writable().await.is_err() {
                        self.out.clear();
                    }
                }
                Err(_) => self.out.clear(),
            }
        }
    }

    fn join(&mut self, join: Join) {
        if self.stopping {
            let _ = join.done.send(Ok(MatchOutcome::Cut));
            return;
        }
        let address = Ipv4Addr::from(FIRST_ADDRESS + self.next_address);
        self.next_address = (self.next_address + 1) % ADDRESSES;
        let now = Instant::now();
        let client = Client {
            address,
            phase: Phase::Requesting,
            session: ClientSession::new(SessionConfig::default()),
            channel: ReliableChannel::new(),
            connect: Vec::new(),
            token: join.token,
            started: now,
            welcomed: None,
            seat: 0,
            match_id: 0,
            interval_ticks: 2,
            snapshot_period: Duration::from_millis(33),
            last_handshake: now,
            last_heard: now,
            last_sent: now,
            newest_snapshot: None,
            pending_inputs: VecDeque::new(),
            matched: false,
            scheduled: now,
            done: Some(join.done),
        };
        let idx = match self.free.pop() {
            Some(idx) => {
                self.clients[idx] = Some(client);
                idx
            }
            None => {
                self.clients.push(Some(client));
                self.clients.len() - 1
            }
        };
        self.by_address.insert(address, idx);
        self.send(idx, &[&wire::request()], now);
        self.schedule(idx, now + HANDSHAKE_RESEND);
    }

    fn send(&mut self, idx: usize, parts: &[&[u8]], now: Instant) {
        let Some(client) = self.clients[idx].as_mut() else { return };
        client.last_sent = now;
        self.out.push(self.shard, Some(IpAddr::V4(client.address)), parts);
    }

    /// Puts `idx` in the timer heap at `at`, unless it is due earlier already.
    fn schedule(&mut self, idx: usize, at: Instant) {
        let Some(client) = self.clients[idx].as_mut() else { return };
        if client.scheduled > Instant::now() && client.scheduled <= at {
            return;
        }
        client.scheduled = at;
        self.timers.push(Reverse((at, idx)));
    }

    fn service_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, idx))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let current = self.clients[idx].as_ref().is_some_and(|client| client.scheduled == at);
            if current {
                self.service(idx, now);
            }
        }
    }

    /// Everything time-driven for one client: handshake resends, inputs,
    /// control-stream resends, keepalives, timeouts.
    fn service(&mut self, idx: usize, now: Instant) {
        let Some(client) = self.clients[idx].as_mut() else { return };
        if now >= client.started + JOIN_TIMEOUT && matches!(client.phase, Phase::Requesting | Phase::Connecting) {
            let kind = if client.phase == Phase::Requesting { "udp_request_timeout" } else { "join_timeout" };
            self.measures.counters.failed_joins += 1;
            return self.finish(idx, now, Err(kind.to_owned()));
        }
        if now >= client.last_heard + IDLE_TIMEOUT && client.phase != Phase::Requesting {
            return self.finish(idx, now, Err("idle_timeout".to_owned()));
        }
        match client.phase {
            Phase::Requesting | Phase::Connecting => {
                if now >= client.last_handshake + HANDSHAKE_RESEND {
                    client.last_handshake = now;
                    let packet =
                        if client.phase == Phase::Requesting { wire::request() } else { client.connect.clone() };
                    self.send(idx, &[&packet], now);
                }
            }
            Phase::Playing => {
                let input = scripted_input(client.seat, client.welcomed.unwrap_or(client.started), now);
                client.session.set_input(now, input);
                self.pump(idx, now);
            }
            Phase::Leaving { until } => {
                if client.channel.is_idle() || now >= until {
                    return self.finish(idx, now, Ok(MatchOutcome::Cut));
                }
            }
        }
        self.transmit_control(idx, now);
        self.reschedule(idx, now);
    }

    /// Sends the session's due input datagrams and handles its events.
    fn pump(&mut self, idx: usize, now: Instant) {
        loop {
            let Some(client) = self.clients[idx].as_mut() else { return };
            let Some(datagram) = client.session.poll_datagram(now) else { break };
            self.send(idx, &[&[wire::DATAGRAM], &datagram], now);
        }
        loop {
            let Some(client) = self.clients[idx].as_mut() else { return };
            let Some(event) = client.session.poll_event() else { break };
            if let Some(outcome) = self.on_event(idx, now, event) {
                return self.finish(idx, now, outcome);
            }
        }
    }

    /// Control-stream segments and acks due, and a keepalive after a quiet spell.
    fn transmit_control(&mut self, idx: usize, now: Instant) {
        loop {
            let Some(client) = self.clients[idx].as_mut() else { return };
            let Some(packet) = client.channel.poll_transmit(now) else { break };
            self.send(idx, &[&packet], now);
        }
        let Some(client) = self.clients[idx].as_ref() else { return };
        if matches!(client.phase, Phase::Playing | Phase::Leaving { .. }) && now >= client.last_sent + KEEPALIVE_AFTER {
            self.send(idx, &[&wire::keepalive()], now);
        }
    }

    fn reschedule(&mut self, idx: usize, now: Instant) {
        let Some(client) = self.clients[idx].as_ref() else { return };
        let mut wake = match client.phase {
            Phase::Requesting | Phase::Connecting => client.last_handshake + HANDSHAKE_RESEND,
            // Woken to send, not every tick: the input is stamped as it goes out
            // (it changes once a second; ticks between repeat it, as the shard does).
            Phase::Playing => client.session.next_send().unwrap_or(now + KEEPALIVE_AFTER),
            Phase::Leaving { until } => until,
        };
        wake = wake.min(client.last_sent + KEEPALIVE_AFTER).min(client.last_heard + IDLE_TIMEOUT);
        if let Some(resend) = client.channel.poll_timeout() {
            wake = wake.min(resend);
        }
        // At least a millisecond on: a deadline that servicing could not move
        // (an input not yet stampable) must not spin the timer loop.
        self.schedule(idx, wake.max(now + Duration::from_millis(1)));
    }

    fn on_packet(&mut self, idx: usize, now: Instant, packet: &[u8]) {
        let Some(client) = self.clients[idx].as_mut() else { return };
        client.last_heard = now;
        match (Packet::parse(packet), client.phase) {
            (Ok(Packet::Challenge { bucket, cookie }), Phase::Requesting) => {
                let hello =
                    client.session.hello(now, &ClientHello::Connect { token: std::mem::take(&mut client.token) });
                client.connect = wire::connect(bucket, &cookie, &hello);
                client.phase = Phase::Connecting;
                client.last_handshake = now;
                let connect = client.connect.clone();
                self.send(idx, &[&connect], now);
            }
            (Ok(Packet::Datagram(datagram)), Phase::Playing | Phase::Leaving { .. }) => {
                client.session.handle_datagram(now, datagram);
                self.pump(idx, now);
            }
            (
                Ok(Packet::Segment { .. } | Packet::Ack { .. }),
                Phase::Connecting | Phase::Playing | Phase::Leaving { .. },
            ) => {
                let bytes = client.channel.handle(now, packet);
                if !bytes.is_empty() && client.session.handle_control(now, &bytes).is_err() {
                    return self.finish(idx, now, Err("bad_control_frame".to_owned()));
                }
                self.pump(idx, now);
                self.transmit_control(idx, now);
            }
            (Ok(Packet::Disconnect { .. }), phase) => {
                // After a leave (or a match end) the shard's goodbye is the normal end.
                let expected = client.session.is_over() || matches!(phase, Phase::Leaving { .. });
                let outcome = if expected { Ok(MatchOutcome::Cut) } else { Err("disconnected_by_shard".to_owned()) };
                return self.finish_closed(idx, now, outcome);
            }
            _ => {}
        }
        self.reschedule(idx, now);
    }

    /// Counts one session event; `Some` when the client is done.
    fn on_event(&mut self, idx: usize, now: Instant, event: ClientEvent) -> Option<Outcome> {
        let client = self.clients[idx].as_mut()?;
        match event {
            ClientEvent::Welcomed(welcome) => {
                client.phase = if self.stopping { Phase::Leaving { until: now + LEAVE_FLUSH } } else { Phase::Playing };
                if self.stopping {
                    client.channel.send(&ClientSession::leave());
                }
                client.welcomed = Some(now);
                client.seat = welcome.seat;
                client.match_id = welcome.match_id.0;
                client.interval_ticks = u32::from((welcome.tick_rate_hz / welcome.snapshot_rate_hz.max(1)).max(1));
                client.snapshot_period =
                    Duration::from_secs_f64(f64::from(client.interval_ticks) / f64::from(welcome.tick_rate_hz.max(1)));
                self.measures.latency("connect", now.duration_since(client.started));
                self.measures.counters.joins += 1;
                if welcome.seat == 0 {
                    self.measures.counters.matches_started += 1;
                }
                self.live.clients_active.fetch_add(1, Ordering::Relaxed);
            }
            ClientEvent::Refused(refusal) => {
                self.measures.counters.failed_joins += 1;
                return Some(Err(format!("refused:{}", refusal.reason.label())));
            }
            ClientEvent::Snapshot(snapshot) => {
                let expected = match client.newest_snapshot {
                    Some((previous, at)) => {
                        if snapshot.tick.saturating_sub(previous) == client.interval_ticks {
                            let interval = now.duration_since(at);
                            self.hot.snapshot_interval.record(interval);
                            self.hot.snapshot_jitter.record(interval.abs_diff(client.snapshot_period));
                        }
                        u64::from(snapshot.tick.saturating_sub(previous) / client.interval_ticks).max(1)
                    }
                    None => 1,
                };
                self.measures.counters.snapshots += 1;
                self.measures.counters.snapshots_expected += expected;
                client.newest_snapshot = Some((snapshot.tick, now));
                while let Some(&(input_tick, sent_at)) = client.pending_inputs.front() {
                    if input_tick > snapshot.tick {
                        break;
                    }
                    client.pending_inputs.pop_front();
                    self.hot.input_to_snapshot.record(now.duration_since(sent_at));
                }
            }
            ClientEvent::InputRecorded { tick, .. }
                if client.pending_inputs.back().is_none_or(|&(last, _)| tick > last) =>
            {
                if client.pending_inputs.len() == 128 {
                    client.pending_inputs.pop_front();
                }
                client.pending_inputs.push_back((tick, now));
            }
            ClientEvent::Message(ServerMessage::Phase {
                phase: MatchPhase::Countdown | MatchPhase::Playing, ..
            }) if !client.matched => {
                client.matched = true;
                let since = client.welcomed.unwrap_or(client.started);
                self.measures.latency("match_wait", now.duration_since(since));
            }
            ClientEvent::Ended(end) => return Some(Ok(self.ended(idx, now, &end))),
            ClientEvent::Disconnected { reason, .. } => {
                return Some(Err(format!("disconnected:{}", format!("{reason:?}").to_lowercase())));
            }
            _ => {}
        }
        None
    }

    fn ended(&mut self, idx: usize, now: Instant, end: &MatchEnd) -> MatchOutcome {
        let Some(client) = self.clients[idx].as_ref() else { return MatchOutcome::Cut };
        if end.reason.ended_by_the_rules() {
            let since = client.welcomed.unwrap_or(client.started);
            self.measures.latency("match_duration", now.duration_since(since));
            MatchOutcome::Finished
        } else {
            MatchOutcome::Cut
        }
    }

    /// Gives the seat up (the run is stopping), as a player quitting would.
    fn leave(&mut self, idx: usize, now: Instant) {
        let Some(client) = self.clients[idx].as_mut() else { return };
        match client.phase {
            Phase::Playing => {
                client.channel.send(&ClientSession::leave());
                client.phase = Phase::Leaving { until: now + LEAVE_FLUSH };
                self.transmit_control(idx, now);
                self.reschedule(idx, now);
            }
            // Not welcomed yet: the welcome is answered with a leave.
            Phase::Requesting => self.finish(idx, now, Ok(MatchOutcome::Cut)),
            Phase::Connecting | Phase::Leaving { .. } => {}
        }
    }

    /// Says goodbye and ends the client.
    fn finish(&mut self, idx: usize, now: Instant, outcome: Outcome) {
        self.send(idx, &[&wire::disconnect(0)], now);
        self.finish_closed(idx, now, outcome);
    }

    /// Ends the client, counts what it did, and answers its join.
    fn finish_closed(&mut self, idx: usize, now: Instant, outcome: Outcome) {
        let Some(mut client) = self.clients[idx].take() else { return };
        self.free.push(idx);
        self.by_address.remove(&client.address);
        let counters = &mut self.measures.counters;
        let stats = client.session.stats();
        counters.input_datagrams += stats.input_datagrams;
        counters.snapshots_unusable += stats.snapshots_dropped;
        let datagrams_in = stats.snapshots + stats.snapshots_dropped;
        counters.udp_datagrams_out += stats.input_datagrams;
        counters.udp_bytes_out += stats.datagram_bytes_out + stats.input_datagrams;
        counters.udp_datagrams_in += datagrams_in;
        counters.udp_bytes_in += stats.datagram_bytes_in + datagrams_in;
        if let Some(welcomed) = client.welcomed {
            counters.client_seconds += now.duration_since(welcomed).as_secs_f64();
            self.live.clients_active.fetch_sub(1, Ordering::Relaxed);
        }
        if client.seat == 0 && client.welcomed.is_some() {
            match outcome {
                Ok(MatchOutcome::Finished) => {
                    counters.matches_finished += 1;
                    self.recorder.match_finished(client.match_id);
                }
                Ok(MatchOutcome::Cut) => counters.matches_cut += 1,
                Err(_) => {}
            }
        }
        // Merged before the answer, so a run that ends with this client's
        // match reads everything it counted.
        self.merge();
        if let Some(done) = client.done.take() {
            let _ = done.send(outcome);
        }
    }

    /// Hands what the clients measured to the run's recorder.
    fn merge(&mut self) {
        let mut measures = std::mem::take(&mut self.measures);
        let hot = std::mem::take(&mut self.hot);
        for (name, histo) in [
            ("snapshot_interval", hot.snapshot_interval),
            ("snapshot_jitter", hot.snapshot_jitter),
            ("input_to_snapshot", hot.input_to_snapshot),
        ] {
            if histo.count() > 0 {
                measures.latencies.insert(name.to_owned(), histo);
            }
        }
        self.recorder.lock().merge(&measures);
    }
}

/// Why the swarm's loop woke.
enum Wake {
    Readable,
    Timer,
    Join(Option<Join>),
    Stop,
}

async fn wait_stop(mut stop: StopSignal) {
    stop.wait().await;
}
