//! The sans-IO client session: handshake, clock sync, redundant inputs, acks,
//! snapshot decoding against baselines, and events for the game.
//!
//! Call order:
//! 1. write [`ClientSession::hello`] to the control stream;
//! 2. feed stream bytes to [`ClientSession::handle_control`] and datagrams to
//!    [`ClientSession::handle_datagram`] as they arrive;
//! 3. at least once per tick (every wake-up is fine), [`ClientSession::set_input`]
//!    with the player's intent; the session emits [`ClientEvent::InputRecorded`]
//!    for each new tick it stamps;
//! 4. after any call, drain [`ClientSession::poll_datagram`] (send each) and
//!    [`ClientSession::poll_event`]; sleep until [`ClientSession::poll_timeout`],
//!    which covers every deadline the session has (the next input tick too).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rally_protocol::codec::{FrameReader, Hello, decode_payload, encode_frame, encode_hello_frame};
use rally_protocol::control::{
    ClientHello, ClientMessage, DisconnectReason, MatchEnd, Refusal, RefuseReason, ServerHello, ServerMessage, Welcome,
};
use rally_protocol::datagram::{DEFAULT_INPUT_REDUNDANCY, Datagram, InputDatagram, MAX_INPUTS_PER_DATAGRAM};
use rally_protocol::{DecodeError, Input, PROTOCOL_VERSION, Snapshot, Tick};

use crate::clock::{TickClock, loss_margin};

/// Snapshots kept as possible delta baselines (covers the protocol's 255-tick window at 30 Hz/60 Hz).
const BASELINES: usize = 160;

/// Client settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Inputs repeated in each input datagram (1 to 32).
    pub input_redundancy: usize,
    /// Input datagrams per second; `None` sends at the snapshot rate.
    pub send_rate_hz: Option<u16>,
    /// How many ticks ahead of the simulation the *latest-arriving* input of the
    /// last second should arrive; the clock steers toward it.
    pub target_input_lead: f64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { input_redundancy: DEFAULT_INPUT_REDUNDANCY, send_rate_hz: None, target_input_lead: 2.0 }
    }
}

/// What the session tells the game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The seat is ours.
    Welcomed(Box<Welcome>),
    /// The shard refused the hello.
    Refused(Refusal),
    /// A new authoritative view (newer than any before).
    Snapshot(Snapshot),
    /// A control message during the match (phase, point, presence, pong).
    Message(ServerMessage),
    /// The match is over.
    Ended(MatchEnd),
    /// The session stamped the local input for a new tick (for prediction).
    InputRecorded {
        /// The tick the input is for.
        tick: Tick,
        /// The input.
        input: Input,
    },
    /// The shard closed the session for a reason.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// Details.
        message: String,
    },
}

/// Counters for the harness and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Snapshots decoded.
    pub snapshots: u64,
    /// Snapshots dropped: undecodable, missing baseline, or older than the newest.
    pub snapshots_dropped: u64,
    /// Input datagrams produced.
    pub input_datagrams: u64,
    /// Bytes of datagrams received (payload only).
    pub datagram_bytes_in: u64,
    /// Bytes of datagrams produced (payload only).
    pub datagram_bytes_out: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    Playing,
    Ended,
}

/// One client's session with a shard.
#[derive(Debug)]
pub struct ClientSession {
    config: SessionConfig,
    state: State,
    frames: FrameReader,
    welcome: Option<Welcome>,
    clock: Option<TickClock>,
    baselines: VecDeque<Snapshot>,
    inputs: VecDeque<(Tick, Input)>,
    next_send: Option<Instant>,
    send_interval: Duration,
    events: VecDeque<ClientEvent>,
    stats: ClientStats,
    loss: LossEstimate,
    hello_sent_at: Option<Instant>,
}

/// Downstream datagram loss seen in snapshot tick gaps, over the last ~2 seconds.
#[derive(Debug, Clone, Default)]
struct LossEstimate {
    received: u32,
    expected: u32,
    loss: f64,
}

impl LossEstimate {
    /// Counts a snapshot `gap` snapshot intervals after the newest before it.
    fn observe(&mut self, gap: u32) {
        self.received += 1;
        self.expected += gap.clamp(1, 60);
        if self.expected >= 60 {
            self.loss = 1.0 - f64::from(self.received) / f64::from(self.expected);
            *self = Self { loss: self.loss, ..Self::default() };
        }
    }
}

impl ClientSession {
    /// A session that has not said hello yet.
    pub fn new(config: SessionConfig) -> Self {
        Self {
            config,
            state: State::Handshake,
            frames: FrameReader::new(),
            welcome: None,
            clock: None,
            baselines: VecDeque::new(),
            inputs: VecDeque::new(),
            next_send: None,
            send_interval: Duration::from_millis(33),
            events: VecDeque::new(),
            stats: ClientStats::default(),
            loss: LossEstimate::default(),
            hello_sent_at: None,
        }
    }

    /// The framed hello to write first on the control stream, sent at `now`
    /// (the round trip to the welcome seeds the clock's initial lead).
    pub fn hello(&mut self, now: Instant, credential: &ClientHello) -> Vec<u8> {
        self.hello_sent_at = Some(now);
        let mut bytes = Vec::new();
        encode_hello_frame(credential, &mut bytes);
        bytes
    }

    /// A framed ping (RTT and clock probe) for the control stream.
    pub fn ping(client_time_us: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_frame(&ClientMessage::Ping { client_time_us }, &mut bytes);
        bytes
    }

    /// A framed leave message: the player gives up the seat for good.
    pub fn leave() -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_frame(&ClientMessage::Leave, &mut bytes);
        bytes
    }

    /// The welcome, once received.
    pub fn welcome(&self) -> Option<&Welcome> {
        self.welcome.as_ref()
    }

    /// Whether the match has ended or the session was refused or closed.
    pub fn is_over(&self) -> bool {
        self.state == State::Ended
    }

    /// Counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// The tick clock, once welcomed.
    pub fn clock(&self) -> Option<&TickClock> {
        self.clock.as_ref()
    }

    /// Downstream datagram loss estimated from snapshot gaps (0 to 1).
    pub fn estimated_loss(&self) -> f64 {
        self.loss.loss
    }

    /// The newest snapshot received.
    pub fn latest(&self) -> Option<&Snapshot> {
        self.baselines.back()
    }

    /// The tick an input made at `now` is for; `None` before the welcome.
    pub fn input_tick(&self, now: Instant) -> Option<Tick> {
        self.clock.as_ref().map(|clock| clock.input_tick(now))
    }

    /// Feeds bytes received on the control stream.
    pub fn handle_control(&mut self, now: Instant, bytes: &[u8]) -> Result<(), DecodeError> {
        self.frames.push(bytes);
        while let Some(payload) = self.frames.poll_frame()? {
            match self.state {
                State::Handshake => self.handle_hello(now, &payload)?,
                State::Playing => self.handle_message(decode_payload(&payload)?),
                State::Ended => {}
            }
        }
        Ok(())
    }

    fn handle_hello(&mut self, now: Instant, payload: &[u8]) -> Result<(), DecodeError> {
        let hello = Hello::parse(payload)?;
        if hello.version != PROTOCOL_VERSION {
            self.state = State::Ended;
            self.events.push_back(ClientEvent::Refused(Refusal {
                reason: RefuseReason::VersionMismatch,
                message: format!(
                    "the shard speaks protocol version {}, this client {PROTOCOL_VERSION}; update the client",
                    hello.version
                ),
            }));
            return Ok(());
        }
        match hello.decode::<ServerHello>()? {
            ServerHello::Welcome(welcome) => {
                let rate = self.config.send_rate_hz.unwrap_or(welcome.snapshot_rate_hz).max(1);
                self.send_interval = Duration::from_secs_f64(1.0 / f64::from(rate));
                // The welcome left the shard half a round trip ago, and inputs take
                // another half to get there: start a full round trip ahead, plus the
                // target and one spare send interval until loss has been measured.
                // The clock settles from there.
                let tick_s = 1.0 / f64::from(welcome.tick_rate_hz.max(1));
                let rtt_ticks = self.hello_sent_at.map_or(0.0, |sent| now.duration_since(sent).as_secs_f64() / tick_s);
                let initial_lead =
                    rtt_ticks + self.config.target_input_lead + self.send_interval.as_secs_f64() / tick_s;
                self.clock = Some(TickClock::new(
                    now,
                    welcome.server_tick,
                    welcome.tick_rate_hz,
                    initial_lead,
                    self.config.target_input_lead,
                ));
                self.baselines.clear();
                self.inputs.clear();
                self.next_send = Some(now);
                self.state = State::Playing;
                self.welcome = Some((*welcome).clone());
                self.events.push_back(ClientEvent::Welcomed(welcome));
            }
            ServerHello::Refused(refusal) => {
                self.state = State::Ended;
                self.events.push_back(ClientEvent::Refused(refusal));
            }
        }
        Ok(())
    }

    fn handle_message(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::MatchEnded(end) => {
                self.state = State::Ended;
                self.events.push_back(ClientEvent::Ended(end));
            }
            ServerMessage::Disconnect { reason, message } => {
                self.state = State::Ended;
                self.events.push_back(ClientEvent::Disconnected { reason, message });
            }
            other => self.events.push_back(ClientEvent::Message(other)),
        }
    }

    /// Feeds a received datagram. Bad or stale snapshots are dropped and counted.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) {
        self.stats.datagram_bytes_in += bytes.len() as u64;
        match self.decode_snapshot(bytes) {
            Ok((snapshot, input_lead)) => {
                if let (Some(welcome), Some(previous)) = (&self.welcome, self.baselines.back()) {
                    let interval = u32::from(welcome.tick_rate_hz / welcome.snapshot_rate_hz.max(1)).max(1);
                    self.loss.observe((snapshot.tick - previous.tick) / interval);
                }
                if let Some(clock) = &mut self.clock {
                    // Assume the uplink loses what the downlink does, and keep enough
                    // spare lead for the redundant copies of a lost input to arrive.
                    let send_interval_ticks =
                        clock.tick_duration().as_secs_f64().recip() * self.send_interval.as_secs_f64();
                    let margin = f64::from(loss_margin(self.loss.loss)) * send_interval_ticks;
                    clock.set_target_lead(self.config.target_input_lead + margin);
                    clock.observe_lead(now, input_lead);
                }
                self.align_sends(now);
                self.stats.snapshots += 1;
                if self.baselines.len() == BASELINES {
                    self.baselines.pop_front();
                }
                self.baselines.push_back(snapshot.clone());
                self.events.push_back(ClientEvent::Snapshot(snapshot));
            }
            Err(_) => self.stats.snapshots_dropped += 1,
        }
    }

    /// When inputs go at the snapshot rate, sends them half an interval after
    /// each snapshot arrives: each datagram then carries the transport's
    /// acknowledgement of the latest one the other way, so QUIC sends no
    /// packet for an ACK alone (on a short path quinn acknowledges within
    /// 25 ms, less than the 33 ms between datagrams, so an ACK rides only on a
    /// datagram due within 25 ms, both ways). Only the phase moves, and only
    /// when it is off by more than an eighth of the interval; the rate, the
    /// inputs and their ticks stay as they were.
    fn align_sends(&mut self, now: Instant) {
        let (Some(welcome), Some(due)) = (&self.welcome, self.next_send) else { return };
        let snapshot_interval = Duration::from_secs_f64(1.0 / f64::from(welcome.snapshot_rate_hz.max(1)));
        if snapshot_interval.abs_diff(self.send_interval) > Duration::from_millis(1) || due < now {
            return;
        }
        let aligned = now + self.send_interval / 2;
        if due.max(aligned) - due.min(aligned) > self.send_interval / 8 {
            self.next_send = Some(aligned);
        }
    }

    fn decode_snapshot(&self, bytes: &[u8]) -> Result<(Snapshot, i32), DecodeError> {
        let Some(welcome) = &self.welcome else { return Err(DecodeError::Baseline) };
        let Datagram::Snapshot(header, body) = Datagram::decode(bytes)? else {
            return Err(DecodeError::UnknownKind(bytes.first().copied().unwrap_or(0)));
        };
        if self.baselines.back().is_some_and(|newest| newest.tick >= header.tick) {
            // Reordered or duplicated: a newer view is already held.
            return Err(DecodeError::Baseline);
        }
        let snapshot = match header.baseline {
            None => welcome.schema.decode_full(header.tick, body)?,
            Some(baseline_tick) => {
                let baseline =
                    self.baselines.iter().find(|held| held.tick == baseline_tick).ok_or(DecodeError::Baseline)?;
                welcome.schema.decode_delta(baseline, header.tick, body)?
            }
        };
        Ok((snapshot, header.input_lead))
    }

    /// Records the player's input for the current input tick. Call at least once
    /// per tick; the first call in a tick fixes its input, and ticks the clock
    /// skipped repeat the previous input on the server.
    pub fn set_input(&mut self, now: Instant, input: Input) -> Option<Tick> {
        let tick = self.input_tick(now)?;
        if self.inputs.back().is_some_and(|&(last, _)| last >= tick) {
            // This tick's input is set (and may be sent already): like the shard,
            // keep the first value, so prediction and simulation agree.
            return Some(tick);
        }
        if self.inputs.len() == MAX_INPUTS_PER_DATAGRAM {
            self.inputs.pop_front();
        }
        self.inputs.push_back((tick, input));
        self.events.push_back(ClientEvent::InputRecorded { tick, input });
        Some(tick)
    }

    /// The input datagram due at `now`, if any: the newest inputs plus the ack.
    pub fn poll_datagram(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.state != State::Playing || self.next_send.is_none_or(|due| now < due) {
            return None;
        }
        let &(newest_tick, _) = self.inputs.back()?;
        self.next_send = Some(self.next_send.map_or(now, |due| (due + self.send_interval).max(now)));
        let redundancy = self.config.input_redundancy.clamp(1, MAX_INPUTS_PER_DATAGRAM);
        // Newest first; ticks with no recorded input repeat the one before them,
        // exactly what the shard would do.
        let mut inputs = Vec::with_capacity(redundancy);
        let mut held = self.inputs.iter().rev().peekable();
        for age in 0..redundancy as Tick {
            let Some(tick) = newest_tick.checked_sub(age) else { break };
            while held.peek().is_some_and(|&&(at, _)| at > tick) {
                held.next();
            }
            let Some(&&(_, input)) = held.peek() else { break };
            inputs.push(input);
        }
        let datagram = InputDatagram { newest_tick, ack: self.baselines.back().map(|snapshot| snapshot.tick), inputs };
        let mut bytes = Vec::with_capacity(16);
        datagram.encode(&mut bytes);
        self.stats.input_datagrams += 1;
        self.stats.datagram_bytes_out += bytes.len() as u64;
        Some(bytes)
    }

    /// The session's next deadline: the next input datagram, or the start of
    /// the next input tick (when [`ClientSession::set_input`] stamps a new
    /// input), whichever is first. `None` before the welcome and after the end.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != State::Playing {
            return None;
        }
        let next_tick = match (&self.clock, self.inputs.back()) {
            (Some(clock), Some(&(newest, _))) => Some(clock.instant_of(newest + 1)),
            _ => self.next_send,
        };
        match (self.next_send, next_tick) {
            (Some(send), Some(tick)) => Some(send.min(tick)),
            (send, tick) => send.or(tick),
        }
    }

    /// When the next input datagram is due (`None` before the welcome and
    /// after the end). A driver that stamps the input only when it sends
    /// (the load harness's swarm) wakes at this instead of
    /// [`Self::poll_timeout`]: the ticks in between repeat the previous
    /// input, as the shard does for any tick without one.
    pub fn next_send(&self) -> Option<Instant> {
        if self.state == State::Playing { self.next_send } else { None }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}
