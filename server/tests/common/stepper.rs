//! The stepper: a shard and N clients in one process over in-memory
//! conditioned links, with manual time and fixed seeds. Full matches run in
//! milliseconds of wall time, and the same seed gives the same run.

#![allow(unreachable_pub, reason = "test fixture module")]

use std::time::{Duration, Instant};

use rally_client::conditioner::{Link, LinkConditions};
use rally_client::prediction::{Prediction, Predictor};
use rally_client::session::{ClientEvent, ClientSession, SessionConfig};
use rally_protocol::control::{ClientHello, MatchEnd};
use rally_protocol::results::MatchResult;
use rally_protocol::token::TokenVerifier;
use rally_protocol::{Input, Schema, Seat, Tick};
use rally_server::{ConnId, Shard, ShardConfig, ShardEvent, Transmit};
use rally_sim::autopilot::{Autopilot, AutopilotConfig};
use rally_sim::pong::PongWorld;
use rally_sim::pong::prediction::{PaddlePredictor, PredictorError};

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
    pub control_down: Link<Vec<u8>>,
    pub events: Vec<ClientEvent>,
    pub ended: Option<MatchEnd>,
    pub connected: bool,
    pub credential: ClientHello,
    pub hello_sent: bool,
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
        let idx = self.clients.len();
        let seed = self.seed.wrapping_mul(1_000_003).wrapping_add(idx as u64 * 4);
        let reliable =
            LinkConditions { loss: 0.0, duplicate: 0.0, reorder: 0.0, jitter: Duration::ZERO, ..self.conditions };
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.clients.push(StepClient {
            conn,
            session: ClientSession::new(SessionConfig::default()),
            autopilot: None,
            wants_autopilot: autopilot,
            wants_prediction: false,
            prediction: None,
            reconciliations: Vec::new(),
            up: Link::new(self.conditions, seed),
            down: Link::new(self.conditions, seed + 1),
            control_up: Link::new(reliable, seed + 2),
            control_down: Link::new(reliable, seed + 3),
            events: Vec::new(),
            ended: None,
            connected: true,
            credential: credential.clone(),
            hello_sent: false,
        });
        idx
    }

    /// Makes client `idx` predict its own paddle from its inputs (from its next welcome).
    pub fn predict(&mut self, idx: usize) {
        self.clients[idx].wants_prediction = true;
    }

    /// Drops client `idx`'s connection as a lost network would.
    pub fn drop_client(&mut self, idx: usize) {
        let client = &mut self.clients[idx];
        client.connected = false;
        self.shard.handle_disconnect(client.conn);
    }

    /// Replaces client `idx` with a fresh connection resuming with `credential`.
    pub fn reconnect_client(&mut self, idx: usize, credential: &ClientHello) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let client = &mut self.clients[idx];
        client.conn = conn;
        client.session = ClientSession::new(SessionConfig::default());
        client.prediction = None;
        client.credential = credential.clone();
        client.hello_sent = false;
        client.connected = true;
    }

    /// Advances virtual time by one step: deliveries, client frames, shard ticks.
    pub fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        let now_ms = self.now_ms();
        for client in &mut self.clients {
            if !client.connected {
                continue;
            }
            if !client.hello_sent {
                client.hello_sent = true;
                let hello = client.session.hello(now, &client.credential);
                client.control_up.push(now, hello);
            }
            while let Some(bytes) = client.control_up.poll(now) {
                if client.session.welcome().is_none() && !client.session.is_over() {
                    // The first frame is the hello: strip its length prefix as the driver does.
                    self.shard.handle_hello(client.conn, &bytes[4..], now_ms);
                } else {
                    self.shard.handle_message(client.conn, &bytes[4..]);
                }
            }
            while let Some(bytes) = client.up.poll(now) {
                self.shard.handle_datagram(client.conn, &bytes);
            }
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
            if !client.connected {
                continue;
            }
            while let Some(bytes) = client.control_down.poll(now) {
                let _ = client.session.handle_control(now, &bytes);
            }
            while let Some(bytes) = client.down.poll(now) {
                client.session.handle_datagram(now, &bytes);
            }
            while let Some(event) = client.session.poll_event() {
                match &event {
                    // The autopilot and the prediction are created on welcome, when the
                    // schema and seat are known; a resumed session predicts afresh.
                    ClientEvent::Welcomed(welcome) => {
                        if client.wants_autopilot && client.autopilot.is_none() {
                            client.autopilot = Autopilot::new(
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
                        if client.wants_prediction {
                            client.prediction = PongPaddle::new(&welcome.schema, welcome.seat)
                                .ok()
                                .map(|paddle| Prediction::new(paddle, welcome.seat));
                        }
                    }
                    ClientEvent::Snapshot(snapshot) => {
                        if let Some(prediction) = &mut client.prediction {
                            let (checks, mispredictions) = (prediction.checks(), prediction.mispredictions());
                            let predicted_tick = prediction.predicted().map(|predicted| predicted.tick);
                            let since = prediction.authoritative_tick();
                            prediction.reconcile(snapshot);
                            client.reconciliations.push(Reconciliation {
                                tick: snapshot.tick,
                                since,
                                predicted_tick,
                                checked: prediction.checks() > checks,
                                mispredicted: prediction.mispredictions() > mispredictions,
                            });
                        }
                    }
                    ClientEvent::Ended(end) => client.ended = Some(end.clone()),
                    _ => {}
                }
                client.events.push(event);
            }
            if let (Some(autopilot), Some(latest)) = (&mut client.autopilot, client.session.latest()) {
                let input = autopilot.decide(latest);
                if let Some(tick) = client.session.set_input(now, input)
                    && let Some(prediction) = &mut client.prediction
                {
                    prediction.push_input(tick, input);
                }
            }
            while let Some(bytes) = client.session.poll_datagram(now) {
                client.up.push(now, bytes);
            }
        }
        while let Some(event) = self.shard.poll_event() {
            if let ShardEvent::MatchEnded { result, .. } = event {
                self.results.push(*result);
            }
        }
    }

    fn route_transmits(&mut self) {
        let now = self.now;
        while let Some(transmit) = self.shard.poll_transmit() {
            let (conn, bytes, control) = match transmit {
                Transmit::Datagram { conn, bytes } => (conn, bytes, false),
                Transmit::Control { conn, bytes } => (conn, bytes, true),
                Transmit::Close { .. } => continue,
            };
            if let (Some(sent), false) = (&mut self.sent_datagrams, control) {
                sent.push((conn, bytes.clone()));
            }
            let Some(client) = self.clients.iter_mut().find(|client| client.conn == conn && client.connected) else {
                continue;
            };
            if control {
                client.control_down.push(now, bytes);
            } else {
                client.down.push(now, bytes);
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
}
