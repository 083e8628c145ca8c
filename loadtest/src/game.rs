//! One simulated player for one match: connect with a token, say hello, play
//! with scripted inputs, and measure everything on the way. Two drivers:
//!
//! - [`play_over`] plays through the SDK's [`Connection`], over QUIC or raw
//!   UDP, exactly as a game would (the `connect` scenario).
//! - [`play_match`] is the SDK's own [`ClientSession`] with a thin quinn event
//!   loop: it wakes only when bytes arrive, an input
//!   is due, or the once-a-second bookkeeping is due, and it sees the snapshot
//!   headers, so it also measures input acknowledgement. `full` uses it: after
//!   a leave it keeps reading the control stream for a match end the shard sent
//!   first, which the QUIC [`Connection`] does not, and `full`'s cross-checks
//!   count on it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rally_client::session::{ClientEvent, ClientSession, SessionConfig};
use rally_client::{ConnectConfig, ConnectError};
use rally_client::{Connection, Transport, TransportKind};
use rally_protocol::Tick;
use rally_protocol::control::{ClientHello, MatchEnd, MatchPhase, ServerMessage};
use rally_protocol::datagram::Datagram;
use rally_sim::pong::{INPUT_DOWN, INPUT_STOP, INPUT_UP};

use crate::measure::Recorder;
use crate::scenario::{Live, StopSignal};

/// How long a handshake or hello may take before it counts as failed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a player connects.
#[derive(Debug, Clone)]
pub struct GameTarget {
    /// The address to send to (the shard, or the link conditioner in front of it).
    pub addr: SocketAddr,
    /// The name the certificate is checked for (ignored when pinning by fingerprint).
    pub server_name: String,
}

/// How a match ended for this player.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOutcome {
    /// The match ended on its own.
    Finished,
    /// The run stopped first; the player left.
    Cut,
}

/// Connects with `token` through `endpoint` and plays until the match ends or
/// `stop` fires. `Err` carries the error kind to count (already counted as a
/// failed join where it is one).
pub async fn play_match(
    endpoint: &quinn::Endpoint,
    target: &GameTarget,
    token: Vec<u8>,
    recorder: &Arc<Recorder>,
    live: &Arc<Live>,
    stop: &mut StopSignal,
) -> Result<MatchOutcome, String> {
    let join = async {
        let connect_started = Instant::now();
        let connecting = endpoint.connect(target.addr, &target.server_name).map_err(|_| "connect_refused_locally")?;
        let connection = match tokio::time::timeout(JOIN_TIMEOUT, connecting).await {
            Err(_) => return Err("connect_timeout".to_owned()),
            Ok(Err(_)) => return Err("handshake_failed".to_owned()),
            Ok(Ok(connection)) => connection,
        };
        recorder.latency("connect", connect_started.elapsed());
        let (mut send, mut recv) = connection.open_bi().await.map_err(|_| "control_stream")?;
        let mut session = ClientSession::new(SessionConfig::default());
        let hello_at = Instant::now();
        send.write_all(&session.hello(hello_at, &ClientHello::Connect { token }))
            .await
            .map_err(|_| "control_stream")?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match tokio::time::timeout(JOIN_TIMEOUT, recv.read(&mut buf)).await {
                Err(_) => return Err("join_timeout".to_owned()),
                Ok(Err(_) | Ok(None)) => return Err("join_closed".to_owned()),
                Ok(Ok(Some(n))) => n,
            };
            session.handle_control(Instant::now(), &buf[..n]).map_err(|_| "bad_control_frame")?;
            match session.poll_event() {
                Some(ClientEvent::Welcomed(_)) => break,
                Some(ClientEvent::Refused(refusal)) => return Err(format!("refused:{}", refusal.reason.label())),
                _ => {}
            }
        }
        recorder.latency("join", hello_at.elapsed());
        Ok((connection, session, send, recv))
    };
    let (connection, session, send, recv) = match join.await {
        Ok(joined) => joined,
        Err(kind) => {
            recorder.count(|counters| counters.failed_joins += 1);
            return Err(kind);
        }
    };
    let seat = session.welcome().map_or(0, |welcome| welcome.seat);
    let match_id = session.welcome().map_or(0, |welcome| welcome.match_id.0);
    recorder.count(|counters| {
        counters.joins += 1;
        if seat == 0 {
            counters.matches_started += 1;
        }
    });
    let _active = live.connected();
    let mut player = Player::new(&connection, session, recorder.clone());
    let outcome = player.play(send, recv, stop).await;
    player.flush_bookkeeping(Instant::now());
    match outcome {
        Ok(MatchOutcome::Finished) if seat == 0 => {
            recorder.count(|counters| counters.matches_finished += 1);
            recorder.match_finished(match_id);
        }
        Ok(MatchOutcome::Cut) if seat == 0 => recorder.count(|counters| counters.matches_cut += 1),
        _ => {}
    }
    connection.close(0u32.into(), b"load test client done");
    outcome
}

/// Like [`play_match`], but through the SDK's [`Connection`] over either
/// transport, as a game would: connect and hello in one step, the SDK's driver
/// task sends the inputs, and the player reads the session's events.
///
/// What the events cannot show is not measured here: `join` (the hello is
/// inside the connect), `input_to_ack` and `server_added` (snapshot headers stay
/// inside the SDK), and the RTT over raw UDP (its driver keeps none). Bytes
/// come from quinn's counters over QUIC; over raw UDP from the session's
/// datagram counters when the connection ends, plus rally's 1-byte packet kind
/// per datagram (the control stream's few frames are not counted).
pub async fn play_over(
    transport: &Transport,
    target: &GameTarget,
    token: Vec<u8>,
    recorder: &Arc<Recorder>,
    live: &Arc<Live>,
    stop: &mut StopSignal,
) -> Result<MatchOutcome, String> {
    let config = ConnectConfig {
        server_name: target.server_name.clone(),
        connect_timeout: JOIN_TIMEOUT,
        ..ConnectConfig::new(target.addr)
    };
    let connect_started = Instant::now();
    let mut connection = match Connection::connect(transport, &config, &ClientHello::Connect { token }).await {
        Ok(connection) => connection,
        Err(err) => {
            recorder.count(|counters| counters.failed_joins += 1);
            return Err(join_error_kind(&err));
        }
    };
    recorder.latency("connect", connect_started.elapsed());
    let welcome = connection.welcome().clone();
    recorder.count(|counters| {
        counters.joins += 1;
        if welcome.seat == 0 {
            counters.matches_started += 1;
        }
    });
    let _active = live.connected();
    let now = Instant::now();
    let mut player = SeatPlayer {
        tally: SnapshotTally::new(recorder.clone(), now, welcome.seat, welcome.tick_rate_hz, welcome.snapshot_rate_hz),
        recorder: recorder.clone(),
        last_input_tick: None,
        last_bookkeeping: now,
        quic_before: quinn::ConnectionStats::default(),
        play_before: connection.quic_connection().map(quinn::Connection::stats),
    };
    let outcome = player.play(&mut connection, stop).await;
    player.flush_bookkeeping(&connection, Instant::now());
    let is_udp = connection.kind() == TransportKind::Udp;
    // The driver stops on its own once the match ended, the seat was left or the link died.
    let stats = tokio::time::timeout(Duration::from_secs(5), connection.finish()).await.unwrap_or_default();
    recorder.count(|counters| {
        counters.input_datagrams += stats.input_datagrams;
        counters.snapshots_unusable += stats.snapshots_dropped;
        if is_udp {
            let datagrams_in = stats.snapshots + stats.snapshots_dropped;
            counters.udp_datagrams_out += stats.input_datagrams;
            counters.udp_bytes_out += stats.datagram_bytes_out + stats.input_datagrams * UDP_KIND_BYTES;
            counters.udp_datagrams_in += datagrams_in;
            counters.udp_bytes_in += stats.datagram_bytes_in + datagrams_in * UDP_KIND_BYTES;
        }
    });
    match outcome {
        Ok(MatchOutcome::Finished) if welcome.seat == 0 => {
            recorder.count(|counters| counters.matches_finished += 1);
            recorder.match_finished(welcome.match_id.0);
        }
        Ok(MatchOutcome::Cut) if welcome.seat == 0 => recorder.count(|counters| counters.matches_cut += 1),
        _ => {}
    }
    outcome
}

/// rally's packet kind byte in front of every raw UDP datagram.
const UDP_KIND_BYTES: u64 = 1;

/// The error kind to count for a failed connect.
fn join_error_kind(err: &ConnectError) -> String {
    match err {
        ConnectError::Refused(refusal) => format!("refused:{}", refusal.reason.label()),
        ConnectError::Timeout(_) => "join_timeout".to_owned(),
        _ => "join_failed".to_owned(),
    }
}

/// A player of [`play_over`]: sets the scripted input, reads events.
struct SeatPlayer {
    tally: SnapshotTally,
    recorder: Arc<Recorder>,
    last_input_tick: Option<Tick>,
    last_bookkeeping: Instant,
    quic_before: quinn::ConnectionStats,
    /// Over QUIC, the stats at the last bookkeeping since the welcome: packets
    /// per game datagram are counted while playing, without the handshake.
    play_before: Option<quinn::ConnectionStats>,
}

impl SeatPlayer {
    async fn play(&mut self, connection: &mut Connection, stop: &mut StopSignal) -> Result<MatchOutcome, String> {
        connection.set_input(self.tally.input(Instant::now()));
        loop {
            let now = Instant::now();
            let wake = self.tally.next_input_change(now).min(self.last_bookkeeping + Duration::from_secs(1));
            tokio::select! {
                () = stop.wait() => {
                    // Give the seat up for good, as a player quitting would.
                    connection.leave();
                    return Ok(self.after_leave(connection).await);
                }
                event = connection.next_event() => {
                    let Some(event) = event else { return Err("connection_lost".to_owned()) };
                    if let Some(outcome) = self.on_event(Instant::now(), event)? {
                        return Ok(outcome);
                    }
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
            let now = Instant::now();
            connection.set_input(self.tally.input(now));
            if now.duration_since(self.last_bookkeeping) >= Duration::from_secs(1) {
                self.flush_bookkeeping(connection, now);
            }
        }
    }

    fn on_event(&mut self, now: Instant, event: ClientEvent) -> Result<Option<MatchOutcome>, String> {
        if let ClientEvent::InputRecorded { tick, .. } = event {
            if self.last_input_tick.is_none_or(|last| tick > last) {
                self.last_input_tick = Some(tick);
                self.tally.input_sent(tick, now);
            }
            return Ok(None);
        }
        self.tally.on_event(now, event)
    }

    /// After a leave, a match end the shard sent first still counts as
    /// finished (the raw UDP driver reads until its leave is acknowledged;
    /// the QUIC driver stops at once, so its events end here).
    async fn after_leave(&mut self, connection: &mut Connection) -> MatchOutcome {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, connection.next_event()).await {
            if let ClientEvent::Ended(end) = event {
                return self.tally.ended(Instant::now(), &end);
            }
        }
        MatchOutcome::Cut
    }

    /// Samples the RTT where the transport keeps one, adds QUIC's byte
    /// counters and the connected time since the last call.
    fn flush_bookkeeping(&mut self, connection: &Connection, now: Instant) {
        if let Some(rtt) = connection.transport_rtt() {
            self.recorder.latency("rtt", rtt);
        }
        let connected = now.duration_since(self.last_bookkeeping).as_secs_f64();
        let quic = connection.quic_connection().map(quinn::Connection::stats);
        let before = &self.quic_before;
        self.recorder.count(|counters| {
            if let (Some(stats), Some(play_before)) = (&quic, &self.play_before) {
                counters.add_quic_packets(play_before, stats);
            }
            if let Some(stats) = &quic {
                counters.udp_bytes_out += stats.udp_tx.bytes.saturating_sub(before.udp_tx.bytes);
                counters.udp_datagrams_out += stats.udp_tx.datagrams.saturating_sub(before.udp_tx.datagrams);
                counters.udp_bytes_in += stats.udp_rx.bytes.saturating_sub(before.udp_rx.bytes);
                counters.udp_datagrams_in += stats.udp_rx.datagrams.saturating_sub(before.udp_rx.datagrams);
            }
            counters.client_seconds += connected;
        });
        if let Some(stats) = quic {
            self.play_before = Some(stats);
            self.quic_before = stats;
        }
        self.last_bookkeeping = now;
    }
}

/// A playing client's state.
struct Player<'a> {
    connection: &'a quinn::Connection,
    session: ClientSession,
    recorder: Arc<Recorder>,
    tally: SnapshotTally,
    /// Input ticks sent and not yet acknowledged by a snapshot header.
    pending_acks: VecDeque<(Tick, Instant)>,
    last_sent_tick: Option<Tick>,
    unusable_before: u64,
    rtt: Duration,
    last_bookkeeping: Instant,
    udp_before: quinn::ConnectionStats,
    /// The stats at the last bookkeeping since the welcome, for packets per game datagram.
    play_before: quinn::ConnectionStats,
}

impl<'a> Player<'a> {
    fn new(connection: &'a quinn::Connection, session: ClientSession, recorder: Arc<Recorder>) -> Self {
        let (tick_rate, snapshot_rate, seat) = session
            .welcome()
            .map_or((60, 30, 0), |welcome| (welcome.tick_rate_hz, welcome.snapshot_rate_hz, welcome.seat));
        let now = Instant::now();
        Self {
            connection,
            unusable_before: session.stats().snapshots_dropped,
            session,
            tally: SnapshotTally::new(recorder.clone(), now, seat, tick_rate, snapshot_rate),
            recorder,
            pending_acks: VecDeque::new(),
            last_sent_tick: None,
            rtt: connection.rtt(),
            last_bookkeeping: now,
            // Counted from zero: the handshake's bytes are the client's too.
            udp_before: quinn::ConnectionStats::default(),
            play_before: connection.stats(),
        }
    }

    async fn play(
        &mut self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        stop: &mut StopSignal,
    ) -> Result<MatchOutcome, String> {
        let mut buf = vec![0u8; 4096];
        let mut stream_open = true;
        loop {
            let next_input = self.session.poll_timeout().unwrap_or_else(|| Instant::now() + self.tally.snapshot_period);
            let wake = next_input.min(self.last_bookkeeping + Duration::from_secs(1));
            tokio::select! {
                () = stop.wait() => {
                    // Give the seat up for good, as a player quitting would.
                    let _ = send.write_all(&ClientSession::leave()).await;
                    return Ok(self.after_leave(&mut recv, &mut buf).await);
                }
                datagram = self.connection.read_datagram() => {
                    match datagram {
                        Ok(bytes) => self.on_datagram(Instant::now(), &bytes),
                        Err(_) => return Err("connection_lost".to_owned()),
                    }
                }
                chunk = recv.read(&mut buf), if stream_open => {
                    match chunk {
                        Ok(Some(n)) => {
                            if self.session.handle_control(Instant::now(), &buf[..n]).is_err() {
                                return Err("bad_control_frame".to_owned());
                            }
                        }
                        Ok(None) | Err(_) => stream_open = false,
                    }
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
            let now = Instant::now();
            if let Some(outcome) = self.step(now)? {
                return Ok(outcome);
            }
            if !stream_open && !self.session.is_over() {
                return Err("control_stream_closed".to_owned());
            }
            if now.duration_since(self.last_bookkeeping) >= Duration::from_secs(1) {
                self.flush_bookkeeping(now);
            }
        }
    }

    /// After a leave, the shard closes the stream; a match end it sent first
    /// (the match was decided before the leave reached it) still counts as
    /// finished, so the clients' count agrees with the shard's results.
    async fn after_leave(&mut self, recv: &mut quinn::RecvStream, buf: &mut [u8]) -> MatchOutcome {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match tokio::time::timeout_at(deadline, recv.read(buf)).await {
                Ok(Ok(Some(n))) => {
                    if self.session.handle_control(Instant::now(), &buf[..n]).is_err() {
                        return MatchOutcome::Cut;
                    }
                    while let Some(event) = self.session.poll_event() {
                        if let ClientEvent::Ended(end) = event {
                            return self.tally.ended(Instant::now(), &end);
                        }
                    }
                }
                _ => return MatchOutcome::Cut,
            }
        }
    }

    /// Inputs out, events in. `Some` once the match is over for this player.
    fn step(&mut self, now: Instant) -> Result<Option<MatchOutcome>, String> {
        let input = self.tally.input(now);
        let input_tick = self.session.set_input(now, input);
        while let Some(datagram) = self.session.poll_datagram(now) {
            if self.connection.send_datagram(Bytes::from(datagram)).is_err() {
                continue;
            }
            self.recorder.count(|counters| counters.input_datagrams += 1);
            if let Some(tick) = input_tick
                && self.last_sent_tick.is_none_or(|last| tick > last)
            {
                self.last_sent_tick = Some(tick);
                self.tally.input_sent(tick, now);
                if self.pending_acks.len() == 128 {
                    self.pending_acks.pop_front();
                }
                self.pending_acks.push_back((tick, now));
            }
        }
        let mut outcome = None;
        while let Some(event) = self.session.poll_event() {
            outcome = self.tally.on_event(now, event)?.or(outcome);
        }
        let unusable = self.session.stats().snapshots_dropped;
        if unusable > self.unusable_before {
            let more = unusable - self.unusable_before;
            self.recorder.count(|counters| counters.snapshots_unusable += more);
        }
        self.unusable_before = unusable;
        Ok(outcome)
    }

    /// A snapshot's header says the newest input tick the shard has received
    /// (`tick + input_lead`): every input up to it is acknowledged.
    fn on_datagram(&mut self, now: Instant, bytes: &[u8]) {
        if let Ok(Datagram::Snapshot(header, _)) = Datagram::decode(bytes) {
            let acked = i64::from(header.tick) + i64::from(header.input_lead);
            while let Some(&(input_tick, sent_at)) = self.pending_acks.front() {
                if i64::from(input_tick) > acked {
                    break;
                }
                self.pending_acks.pop_front();
                let latency = now.duration_since(sent_at);
                self.recorder.latency("input_to_ack", latency);
                self.recorder.latency("server_added", latency.saturating_sub(self.rtt));
            }
        }
        self.session.handle_datagram(now, bytes);
    }

    /// Samples the RTT and adds the bytes and connected time since the last call.
    fn flush_bookkeeping(&mut self, now: Instant) {
        self.rtt = self.connection.rtt();
        self.recorder.latency("rtt", self.rtt);
        let stats = self.connection.stats();
        let before = &self.udp_before;
        let connected = now.duration_since(self.last_bookkeeping).as_secs_f64();
        self.recorder.count(|counters| {
            counters.udp_bytes_out += stats.udp_tx.bytes.saturating_sub(before.udp_tx.bytes);
            counters.udp_datagrams_out += stats.udp_tx.datagrams.saturating_sub(before.udp_tx.datagrams);
            counters.udp_bytes_in += stats.udp_rx.bytes.saturating_sub(before.udp_rx.bytes);
            counters.udp_datagrams_in += stats.udp_rx.datagrams.saturating_sub(before.udp_rx.datagrams);
            counters.add_quic_packets(&self.play_before, &stats);
            counters.client_seconds += connected;
        });
        self.play_before = stats;
        self.udp_before = stats;
        self.last_bookkeeping = now;
    }
}

/// What both player drivers measure from session events: snapshots against
/// the tick numbers, input → snapshot latency, time to match and match length.
/// The harness's scripted player for `seat`, welcomed at `since`: seat 0
/// sweeps up and down once a second, seat 1 holds still, so points are scored
/// and short matches end on their own. The swarm plays the same.
pub(crate) fn scripted_input(seat: u8, since: Instant, now: Instant) -> rally_protocol::Input {
    if seat % 2 == 1 {
        return INPUT_STOP;
    }
    let up = (now.duration_since(since).as_secs() + u64::from(seat)).is_multiple_of(2);
    if up { INPUT_UP } else { INPUT_DOWN }
}

/// Also the scripted input.
struct SnapshotTally {
    recorder: Arc<Recorder>,
    welcomed_at: Instant,
    seat: u8,
    interval_ticks: u32,
    snapshot_period: Duration,
    /// Input ticks sent and not yet reflected in a snapshot, oldest first, with when they were first sent.
    pending_inputs: VecDeque<(Tick, Instant)>,
    newest_snapshot: Option<(Tick, Instant)>,
    counted_any: bool,
    matched: bool,
}

impl SnapshotTally {
    fn new(recorder: Arc<Recorder>, welcomed_at: Instant, seat: u8, tick_rate: u16, snapshot_rate: u16) -> Self {
        let interval_ticks = u32::from((tick_rate / snapshot_rate.max(1)).max(1));
        Self {
            recorder,
            welcomed_at,
            seat,
            interval_ticks,
            snapshot_period: Duration::from_secs_f64(f64::from(interval_ticks) / f64::from(tick_rate.max(1))),
            pending_inputs: VecDeque::new(),
            newest_snapshot: None,
            counted_any: false,
            matched: false,
        }
    }

    /// Seat 0 sweeps up and down once a second; seat 1 holds still, so points
    /// are scored and short matches end on their own.
    fn input(&self, now: Instant) -> rally_protocol::Input {
        scripted_input(self.seat, self.welcomed_at, now)
    }

    /// When [`Self::input`] changes next.
    fn next_input_change(&self, now: Instant) -> Instant {
        let elapsed = now.duration_since(self.welcomed_at).as_secs();
        self.welcomed_at + Duration::from_secs(elapsed + 1)
    }

    /// Notes the first send of the input for `tick`.
    fn input_sent(&mut self, tick: Tick, now: Instant) {
        if self.pending_inputs.len() == 128 {
            self.pending_inputs.pop_front();
        }
        self.pending_inputs.push_back((tick, now));
    }

    /// What an end means for the counts: a match the game ended by its rules
    /// (points, or the time limit) finished on its own; one ended by a forfeit or abandonment was cut short (at the stop,
    /// the opponent's leave forfeits its seat at once).
    fn ended(&self, now: Instant, end: &MatchEnd) -> MatchOutcome {
        if end.reason.ended_by_the_rules() {
            self.recorder.latency("match_duration", now.duration_since(self.welcomed_at));
            MatchOutcome::Finished
        } else {
            MatchOutcome::Cut
        }
    }

    /// Counts one session event; `Some` once the match ended on its own.
    fn on_event(&mut self, now: Instant, event: ClientEvent) -> Result<Option<MatchOutcome>, String> {
        match event {
            ClientEvent::Snapshot(snapshot) => self.on_snapshot(now, snapshot.tick),
            ClientEvent::Message(ServerMessage::Phase {
                phase: MatchPhase::Countdown | MatchPhase::Playing, ..
            }) if !self.matched => {
                self.matched = true;
                self.recorder.latency("match_wait", now.duration_since(self.welcomed_at));
            }
            ClientEvent::Ended(end) => return Ok(Some(self.ended(now, &end))),
            ClientEvent::Disconnected { reason, .. } => {
                return Err(format!("disconnected:{}", format!("{reason:?}").to_lowercase()));
            }
            _ => {}
        }
        Ok(None)
    }

    fn on_snapshot(&mut self, now: Instant, tick: Tick) {
        let expected = match self.newest_snapshot {
            Some((previous, _)) if self.counted_any => {
                u64::from(tick.saturating_sub(previous) / self.interval_ticks).max(1)
            }
            _ => 1,
        };
        self.counted_any = true;
        let mut recorder = self.recorder.lock();
        recorder.counters.snapshots += 1;
        recorder.counters.snapshots_expected += expected;
        if let Some((previous, at)) = self.newest_snapshot
            && tick.saturating_sub(previous) == self.interval_ticks
        {
            let interval = now.duration_since(at);
            recorder.latency("snapshot_interval", interval);
            recorder.latency("snapshot_jitter", interval.abs_diff(self.snapshot_period));
        }
        drop(recorder);
        self.newest_snapshot = Some((tick, now));
        while let Some(&(input_tick, sent_at)) = self.pending_inputs.front() {
            if input_tick > tick {
                break;
            }
            self.pending_inputs.pop_front();
            self.recorder.latency("input_to_snapshot", now.duration_since(sent_at));
        }
    }
}
