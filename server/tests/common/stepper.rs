//! The stepper: a shard and N clients in one process over in-memory
//! conditioned links, with manual time and fixed seeds. Full matches run in
//! milliseconds of wall time, and the same seed gives the same run.
//!
//! The stepper plays the drivers of both ends. Each client has four links: its
//! datagrams up and down (conditioned as asked), and its control stream up and
//! down (reliable and ordered, with the same latency). The shard's end reads the
//! control stream with the real [`FrameReader`], hands the first frame to
//! [`Shard::handle_hello`] and the rest to [`Shard::handle_message`], as the QUIC
//! and in-memory connection tasks do; a [`Transmit::Close`] travels down the
//! control stream behind the frames queued before it and ends the client's
//! connection when it arrives ([`StepClient::closed`]).

#![expect(unreachable_pub, reason = "a fixture module shared by test binaries")]

use std::time::{Duration, Instant};

use rally_client::prediction::{Prediction, Predictor};
use rally_client::session::{ClientEvent, ClientSession, SessionConfig};
use rally_protocol::codec::FrameReader;
use rally_protocol::control::{ClientHello, DisconnectReason, MatchEnd, RefuseReason};
use rally_protocol::results::MatchResult;
use rally_protocol::token::TokenVerifier;
use rally_protocol::{Input, Schema, Seat, Tick};
use rally_server::{ConnId, Shard, ShardConfig, ShardEvent, Transmit};
use rally_sim::autopilot::{Autopilot, AutopilotConfig};
use rally_sim::pong::PongWorld;
use rally_sim::pong::prediction::{PaddlePredictor, PredictorError};
use rally_transport::conditioner::{Link, LinkConditions};

/// Time step of the stepper's clock.
pub const STEP: Duration = Duration::from_millis(1);
/// A fixed wall-clock origin for tokens (ms since the epoch).
pub const EPOCH_MS: u64 = 1_800_000_000_000;

/// Pong's paddle predictor behind the client SDK's game-agnostic [`Predictor`]: the
/// few lines a Pong client writes, since neither crate may depend on the other.
#[derive(Debug, Clone)]
pub struct PongPaddle {
    predictor: PaddlePredictor,
    seat: Seat,
    fields: [usize; 2],
}

impl PongPaddle {
    pub fn new(schema: &Schema, seat: Seat) -> Result<Self, PredictorError> {
        let predictor = PaddlePredictor::new(schema, seat)?;
        Ok(Self { predictor, seat, fields: predictor.fields() })
    }
}

impl Predictor for PongPaddle {
    fn step(&self, values: &mut [i32], seat: Seat, input: Input) {
        debug_assert_eq!(seat, self.seat, "a paddle predictor predicts the seat it was made for");
        self.predictor.step(values, input);
    }

    fn predicted_fields(&self) -> &[usize] {
        &self.fields
    }
}

/// What one snapshot did to a predicting client's prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconciliation {
    /// Tick of the snapshot.
    pub tick: Tick,
    /// Tick of the snapshot reconciled before it on this session: the prediction
    /// checked here started from that one.
    pub since: Option<Tick>,
    /// Newest input tick when the snapshot arrived: how far ahead the prediction ran.
    pub predicted_tick: Option<Tick>,
    /// Whether a prediction for `tick` existed to compare.
    pub checked: bool,
    /// Whether it differed from the snapshot.
    pub mispredicted: bool,
}

/// The first bytes a client writes on its control stream.
#[derive(Clone, Debug)]
pub enum Greeting {
    /// The session's own hello frame for this credential.
    Credential(ClientHello),
    /// Bytes written as they are: an old, broken or hostile client.
    Raw(Vec<u8>),
}

/// What travels down a control stream: frames, then perhaps its end.
#[derive(Clone, Debug)]
pub enum ControlDown {
    /// Stream bytes: one or more frames, or a piece of one.
    Bytes(Vec<u8>),
    /// The shard closed the connection after the bytes before this.
    Close(Option<DisconnectReason>),
}

/// How a client's connection ended at the shard's hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// The reason the shard closed with (`None`: a refusal, a match end, a leave).
    pub reason: Option<DisconnectReason>,
    /// When the close reached the client.
    pub at: Instant,
}

/// One simulated client.
pub struct StepClient {
    pub conn: ConnId,
    pub session: ClientSession,
    pub autopilot: Option<Autopilot>,
    pub wants_autopilot: bool,
    /// Predict the own paddle once welcomed (set with [`Stepper::predict`]).
    pub wants_prediction: bool,
    /// The prediction of the current session, fed by the autopilot's inputs.
    pub prediction: Option<Prediction<PongPaddle>>,
    /// Every snapshot's effect on the prediction, over all sessions.
    pub reconciliations: Vec<Reconciliation>,
    pub up: Link<Vec<u8>>,
    pub down: Link<Vec<u8>>,
    pub control_up: Link<Vec<u8>>,
    pub control_down: Link<ControlDown>,
    /// Every session event, over all sessions.
    pub events: Vec<ClientEvent>,
    pub ended: Option<MatchEnd>,
    /// The client's end of the connection is up (not dropped, not closed).
    pub connected: bool,
    /// The current connection's close, once it reached the client.
    pub closed: Option<Closed>,
    pub greeting: Greeting,
    pub hello_sent: bool,
    /// The shard's end of the control stream: reassembles frames from chunks.
    shard_frames: FrameReader,
    /// The shard's end has read the hello frame.
    shard_greeted: bool,
    /// The shard's end is closed: nothing more reaches the shard or leaves it.
    shard_closed: bool,
    /// Connections this client has made, for fresh link seeds on each.
    generation: u64,
}

impl StepClient {
    /// The reason of the newest refusal this client was given.
    pub fn refusal(&self) -> Option<RefuseReason> {
        self.events.iter().rev().find_map(|event| match event {
            ClientEvent::Refused(refusal) => Some(refusal.reason),
            _ => None,
        })
    }

    /// The reason of the newest disconnect message this client was given.
    pub fn disconnect(&self) -> Option<DisconnectReason> {
        self.events.iter().rev().find_map(|event| match event {
            ClientEvent::Disconnected { reason, .. } => Some(*reason),
            _ => None,
        })
    }

    /// How many times this client was welcomed, over all its connections.
    pub fn welcomes(&self) -> usize {
        self.events.iter().filter(|event| matches!(event, ClientEvent::Welcomed(_))).count()
    }
}

/// Shard + clients + virtual time.
pub struct Stepper {
    pub shard: Shard<PongWorld>,
    pub clients: Vec<StepClient>,
    pub start: Instant,
    pub now: Instant,
    pub next_tick: Instant,
    pub tick_dt: Duration,
    pub results: Vec<MatchResult>,
    pub conditions: LinkConditions,
    /// Control stream writes are cut into pieces of at most this many bytes.
    pub control_chunk: usize,
    /// Ticks on which some connected seat's input had not arrived (the shard's
    /// `inputs_missing` grew), in order.
    pub missing_input_ticks: Vec<Tick>,
    /// When set, a copy of every datagram the shard sends, in send order.
    pub sent_datagrams: Option<Vec<(ConnId, Vec<u8>)>>,
    seed: u64,
    next_conn: u64,
}

impl Stepper {
    pub fn new(config: ShardConfig, conditions: LinkConditions, seed: u64) -> Self {
        let verifier = TokenVerifier::new(config.name.clone(), [(1, super::issuer().verifying_key())]);
        let tick_dt = Duration::from_secs_f64(1.0 / f64::from(config.tick_rate_hz));
        let start = Instant::now();
        Self {
            shard: Shard::new(config, verifier),
            clients: Vec::new(),
            start,
            now: start,
            next_tick: start + tick_dt,
            tick_dt,
            results: Vec::new(),
            conditions,
            control_chunk: usize::MAX,
            missing_input_ticks: Vec::new(),
            sent_datagrams: None,
            seed,
            next_conn: 1,
        }
    }

    /// Wall clock in ms as the shard sees it.
    pub fn now_ms(&self) -> u64 {
        EPOCH_MS + (self.now - self.start).as_millis() as u64
    }

    /// Adds a client that will say hello with `credential`; returns its index.
    pub fn add_client(&mut self, credential: &ClientHello, autopilot: bool) -> usize {
        self.add(Greeting::Credential(credential.clone()), autopilot)
    }

    /// Adds a client that opens its control stream with `bytes`; returns its index.
    pub fn add_raw_client(&mut self, bytes: Vec<u8>) -> usize {
        self.add(Greeting::Raw(bytes), false)
    }

    fn add(&mut self, greeting: Greeting, autopilot: bool) -> usize {
        let idx = self.clients.len();
        let [up, down, control_up, control_down] = self.links(idx, 0);
        let conn = self.next_conn();
        self.clients.push(StepClient {
            conn,
            session: ClientSession::new(SessionConfig::default()),
            autopilot: None,
            wants_autopilot: autopilot,
            wants_prediction: false,
            prediction: None,
            reconciliations: Vec::new(),
            up: Link::new(self.conditions, up),
            down: Link::new(self.conditions, down),
            control_up: Link::new(self.control_conditions(), control_up),
            control_down: Link::new(self.control_conditions(), control_down),
            events: Vec::new(),
            ended: None,
            connected: true,
            closed: None,
            greeting,
            hello_sent: false,
            shard_frames: FrameReader::new(),
            shard_greeted: false,
            shard_closed: false,
            generation: 0,
        });
        idx
    }

    /// Seeds of the four links of connection `generation` of client `idx`.
    fn links(&self, idx: usize, generation: u64) -> [u64; 4] {
        let base = self.seed.wrapping_mul(1_000_003).wrapping_add(idx as u64 * 4).wrapping_add(generation << 32);
        [base, base + 1, base + 2, base + 3]
    }

    /// The control stream is reliable and ordered: the datagram link's latency, nothing else.
    fn control_conditions(&self) -> LinkConditions {
        LinkConditions { loss: 0.0, duplicate: 0.0, reorder: 0.0, jitter: Duration::ZERO, ..self.conditions }
    }

    fn next_conn(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        conn
    }

    /// Makes client `idx` predict its own paddle from its inputs (from its next welcome).
    pub fn predict(&mut self, idx: usize) {
        self.clients[idx].wants_prediction = true;
    }

    /// Writes `bytes` on client `idx`'s control stream now.
    pub fn send_control(&mut self, idx: usize, bytes: &[u8]) {
        let (now, chunk) = (self.now, self.control_chunk);
        for piece in bytes.chunks(chunk.max(1)) {
            self.clients[idx].control_up.push(now, piece.to_vec());
        }
    }

    /// Drops client `idx`'s connection as a lost network would.
    pub fn drop_client(&mut self, idx: usize) {
        let client = &mut self.clients[idx];
        client.connected = false;
        client.shard_closed = true;
        self.shard.handle_disconnect(client.conn);
    }

    /// Gives client `idx` a fresh connection, over fresh links, that says hello with `credential`.
    pub fn reconnect_client(&mut self, idx: usize, credential: &ClientHello) {
        let generation = self.clients[idx].generation + 1;
        let [up, down, control_up, control_down] = self.links(idx, generation);
        let conn = self.next_conn();
        let (conditions, control) = (self.conditions, self.control_conditions());
        let client = &mut self.clients[idx];
        client.conn = conn;
        client.generation = generation;
        client.session = ClientSession::new(SessionConfig::default());
        client.prediction = None;
        client.up = Link::new(conditions, up);
        client.down = Link::new(conditions, down);
        client.control_up = Link::new(control, control_up);
        client.control_down = Link::new(control, control_down);
        client.greeting = Greeting::Credential(credential.clone());
        client.hello_sent = false;
        client.connected = true;
        client.closed = None;
        client.shard_frames = FrameReader::new();
        client.shard_greeted = false;
        client.shard_closed = false;
    }

    /// Advances virtual time by one step: deliveries, client frames, shard ticks.
    pub fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        let now_ms = self.now_ms();
        for idx in 0..self.clients.len() {
            if self.clients[idx].connected && !self.clients[idx].hello_sent {
                self.clients[idx].hello_sent = true;
                let hello = match self.clients[idx].greeting.clone() {
                    Greeting::Credential(credential) => self.clients[idx].session.hello(now, &credential),
                    Greeting::Raw(bytes) => bytes,
                };
                self.send_control(idx, &hello);
            }
            self.deliver_up(idx, now_ms);
        }
        while now >= self.next_tick {
            self.next_tick += self.tick_dt;
            let missing = self.shard.stats().inputs_missing;
            self.shard.tick(now_ms);
            if self.shard.stats().inputs_missing > missing {
                self.missing_input_ticks.push(self.shard.tick_number());
            }
        }
        self.route_transmits();
        for client in &mut self.clients {
            client.step(now);
        }
        while let Some(event) = self.shard.poll_event() {
            if let ShardEvent::MatchEnded { result, .. } = event {
                self.results.push(*result);
            }
        }
    }

    /// The shard's end of client `idx`'s connection: what has arrived goes to the shard.
    fn deliver_up(&mut self, idx: usize, now_ms: u64) {
        let now = self.now;
        let client = &mut self.clients[idx];
        while let Some(bytes) = client.control_up.poll(now) {
            if client.shard_closed {
                continue;
            }
            client.shard_frames.push(&bytes);
            loop {
                match client.shard_frames.poll_frame() {
                    Ok(Some(payload)) if client.shard_greeted => self.shard.handle_message(client.conn, &payload),
                    Ok(Some(payload)) => {
                        client.shard_greeted = true;
                        self.shard.handle_hello(client.conn, &payload, now_ms);
                    }
                    Ok(None) => break,
                    Err(_) => {
                        // An oversized frame: the connection task hangs up, as QUIC's does.
                        client.shard_closed = true;
                        client.control_down.push(now, ControlDown::Close(None));
                        self.shard.handle_disconnect(client.conn);
                        break;
                    }
                }
            }
        }
        while let Some(bytes) = client.up.poll(now) {
            // Datagrams before the hello have no seat to go to; the drivers drop them.
            if client.shard_greeted && !client.shard_closed {
                self.shard.handle_datagram(client.conn, &bytes);
            }
        }
    }

    fn route_transmits(&mut self) {
        let (now, chunk) = (self.now, self.control_chunk.max(1));
        while let Some(transmit) = self.shard.poll_transmit() {
            let conn = match &transmit {
                Transmit::Datagram { conn, .. } | Transmit::Control { conn, .. } | Transmit::Close { conn, .. } => {
                    *conn
                }
            };
            if let (Some(sent), Transmit::Datagram { bytes, .. }) = (&mut self.sent_datagrams, &transmit) {
                sent.push((conn, bytes.clone()));
            }
            let Some(client) = self.clients.iter_mut().find(|client| client.conn == conn && !client.shard_closed)
            else {
                continue;
            };
            match transmit {
                Transmit::Datagram { bytes, .. } => client.down.push(now, bytes),
                Transmit::Control { bytes, .. } => {
                    for piece in bytes.chunks(chunk) {
                        client.control_down.push(now, ControlDown::Bytes(piece.to_vec()));
                    }
                }
                Transmit::Close { reason, .. } => {
                    client.shard_closed = true;
                    client.control_down.push(now, ControlDown::Close(reason));
                    // The connection task ends and says so, as a driver's does.
                    self.shard.handle_disconnect(conn);
                }
            }
        }
    }

    /// Steps until `done` holds or `limit` of virtual time passes; returns whether it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Stepper) -> bool) -> bool {
        let deadline = self.now + limit;
        while self.now < deadline {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Steps for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(duration, |_| false);
    }
}

impl StepClient {
    /// The client's end of its connection for one step: deliveries, events, inputs.
    fn step(&mut self, now: Instant) {
        if !self.connected {
            return;
        }
        while let Some(down) = self.control_down.poll(now) {
            match down {
                ControlDown::Bytes(bytes) => {
                    let _ = self.session.handle_control(now, &bytes);
                }
                ControlDown::Close(reason) => {
                    self.closed = Some(Closed { reason, at: now });
                    self.connected = false;
                    break;
                }
            }
        }
        if self.connected {
            while let Some(bytes) = self.down.poll(now) {
                self.session.handle_datagram(now, &bytes);
            }
        }
        while let Some(event) = self.session.poll_event() {
            self.observe(&event);
            self.events.push(event);
        }
        if !self.connected {
            return;
        }
        if let (Some(autopilot), Some(latest)) = (&mut self.autopilot, self.session.latest()) {
            let input = autopilot.decide(latest);
            if let Some(tick) = self.session.set_input(now, input)
                && let Some(prediction) = &mut self.prediction
            {
                prediction.push_input(tick, input);
            }
        }
        while let Some(bytes) = self.session.poll_datagram(now) {
            self.up.push(now, bytes);
        }
    }

    fn observe(&mut self, event: &ClientEvent) {
        match event {
            // The autopilot and the prediction are created on welcome, when the
            // schema and seat are known; a resumed session predicts afresh.
            ClientEvent::Welcomed(welcome) => {
                if self.wants_autopilot && self.autopilot.is_none() {
                    self.autopilot = Autopilot::new(
                        &welcome.schema,
                        welcome.seat,
                        AutopilotConfig {
                            anticipate: true,
                            aim_error: 400,
                            reaction_ticks: 3,
                            ..AutopilotConfig::default()
                        },
                        u64::from(welcome.seat) + 1,
                    )
                    .ok();
                }
                if self.wants_prediction {
                    self.prediction = PongPaddle::new(&welcome.schema, welcome.seat)
                        .ok()
                        .map(|paddle| Prediction::new(paddle, welcome.seat));
                }
            }
            ClientEvent::Snapshot(snapshot) => {
                if let Some(prediction) = &mut self.prediction {
                    let (checks, mispredictions) = (prediction.checks(), prediction.mispredictions());
                    let predicted_tick = prediction.predicted().map(|predicted| predicted.tick);
                    let since = prediction.authoritative_tick();
                    prediction.reconcile(snapshot);
                    self.reconciliations.push(Reconciliation {
                        tick: snapshot.tick,
                        since,
                        predicted_tick,
                        checked: prediction.checks() > checks,
                        mispredicted: prediction.mispredictions() > mispredictions,
                    });
                }
            }
            ClientEvent::Ended(end) => self.ended = Some(end.clone()),
            _ => {}
        }
    }
}
