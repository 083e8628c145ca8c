//! The sans-IO shard: every match of one shard, their seats and connections,
//! driven by the IO layer through `handle_*` calls and drained through `poll_*`.
//!
//! Call order, per tick:
//! 1. between ticks, as bytes arrive: [`Shard::handle_hello`],
//!    [`Shard::handle_datagram`], [`Shard::handle_message`],
//!    [`Shard::handle_disconnect`];
//! 2. at the tick's deadline: [`Shard::tick`];
//! 3. after any call: [`Shard::poll_transmit`] and [`Shard::poll_event`] until `None`.
//!
//! Time comes in as arguments: the world tick advances only in `tick`, and wall
//! clock milliseconds (for token validity and result timestamps) are passed in.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rally_protocol::codec::{Hello, encode_frame, encode_hello_frame};
use rally_protocol::control::{
    ClientHello, ClientMessage, DisconnectReason, EndReason as WireEndReason, MatchEnd, MatchPhase, RESUME_SECRET_LEN,
    Refusal, RefuseReason, ServerHello, ServerMessage, Welcome,
};
use rally_protocol::datagram::{InputsRef, MAX_BASELINE_DISTANCE, SnapshotHeader};
use rally_protocol::results::{MatchResult, SeatResult};
use rally_protocol::token::{TokenError, TokenVerifier};
use rally_protocol::{MatchId, PROTOCOL_VERSION, PlayerId, Schema, Seat, Snapshot, Tick};
use rally_sim::game::{EndReason, Game, LifecycleConfig, MatchSpec, Phase, SimEvent};
use rally_sim::replay::{InputLog, Recording};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::input::{Accepted, InputBuffer};
use crate::nonce::NonceCache;
pub use crate::stats::ShardStats;

/// Identifies one transport connection, assigned by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Settings of one shard.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// The name connect tokens must carry.
    pub name: String,
    /// Simulation ticks per second.
    pub tick_rate_hz: u16,
    /// Snapshots per second per client; must divide `tick_rate_hz`.
    pub snapshot_rate_hz: u16,
    /// Countdown and timeouts of the simulation.
    pub lifecycle: LifecycleConfig,
    /// How long a dropped seat is held for a resume, in ticks; also the forfeit timeout.
    pub resume_grace_ticks: u32,
    /// Most matches running at once; tokens for new matches beyond it are refused.
    pub max_matches: usize,
    /// Inputs stamped further ahead of the simulation than this are dropped.
    pub max_input_lead_ticks: u32,
    /// Sent snapshots kept per seat as delta baselines.
    pub snapshot_history: usize,
    /// Seed for resume secrets and match seeds; the driver passes OS entropy.
    pub rng_seed: u64,
    /// How long a finished match id is remembered to refuse late tokens, in ms.
    pub finished_memory_ms: u64,
}

impl Default for ShardConfig {
    fn default() -> Self {
        let lifecycle = LifecycleConfig::default();
        Self {
            name: "shard-local".into(),
            tick_rate_hz: 60,
            snapshot_rate_hz: 30,
            resume_grace_ticks: lifecycle.forfeit_after_ticks,
            lifecycle,
            max_matches: 10_000,
            max_input_lead_ticks: 60,
            snapshot_history: 32,
            rng_seed: 0,
            finished_memory_ms: 10 * 60 * 1000,
        }
    }
}

impl ShardConfig {
    /// Checks the settings make sense together, with a message a person can act on.
    pub fn validate(&self) -> Result<(), String> {
        if self.tick_rate_hz == 0 || self.tick_rate_hz > 1000 {
            return Err(format!("tick rate {} Hz must be 1 to 1000", self.tick_rate_hz));
        }
        if self.snapshot_rate_hz == 0 || !self.tick_rate_hz.is_multiple_of(self.snapshot_rate_hz) {
            return Err(format!(
                "snapshot rate {} Hz must divide the tick rate {} Hz (e.g. 60 and 30)",
                self.snapshot_rate_hz, self.tick_rate_hz
            ));
        }
        if self.name.is_empty() || self.name.len() > rally_protocol::token::MAX_SHARD_NAME {
            return Err("the shard name must be 1 to 128 bytes".into());
        }
        if self.snapshot_history == 0 {
            return Err("snapshot history must hold at least one snapshot".into());
        }
        Ok(())
    }
}

/// Something the driver must put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// An unreliable datagram.
    Datagram {
        /// To whom.
        conn: ConnId,
        /// The whole datagram.
        bytes: Vec<u8>,
    },
    /// Framed bytes for the reliable control stream.
    Control {
        /// To whom.
        conn: ConnId,
        /// One or more complete frames.
        bytes: Vec<u8>,
    },
    /// Close the connection after flushing the control stream.
    Close {
        /// Which one.
        conn: ConnId,
        /// Why, when it is not a normal end of match.
        reason: Option<DisconnectReason>,
    },
}

/// What the shard reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardEvent {
    /// A match was created by its first valid token.
    MatchCreated(MatchId),
    /// A match ended; deliver the result to the sink, keep the log if replays are wanted.
    MatchEnded {
        /// The result, once per match id.
        result: Box<MatchResult>,
        /// The match's input log; replaying it reproduces the result.
        log: Option<Box<InputLog>>,
    },
}

#[derive(Debug)]
struct SeatSlot {
    player: Option<PlayerId>,
    conn: Option<ConnId>,
    secret: [u8; RESUME_SECRET_LEN],
    /// Tick the seat last lost its connection, for the resume window.
    dropped_at: Option<Tick>,
    left: bool,
    inputs: InputBuffer,
    sent: VecDeque<Snapshot>,
    acked: Option<Tick>,
    /// First input tick received on the current connection; ticks before it had no input to miss.
    first_input: Option<Tick>,
    /// The oldest tick whose freshly received input was applied since the last
    /// snapshot to this seat: how long the shard took to show an input back.
    applied_unshown: Option<Tick>,
    /// Smallest lead (newest input tick minus the simulated tick) of the input
    /// datagrams received since the last snapshot: the margin the client's worst
    /// recent input arrived with.
    min_lead: Option<i64>,
}

impl SeatSlot {
    fn new(secret: [u8; RESUME_SECRET_LEN]) -> Self {
        Self {
            player: None,
            conn: None,
            secret,
            dropped_at: None,
            left: false,
            inputs: InputBuffer::default(),
            sent: VecDeque::new(),
            acked: None,
            first_input: None,
            applied_unshown: None,
            min_lead: None,
        }
    }
}

#[derive(Debug)]
struct MatchSlot {
    spec: MatchSpec,
    seats: Vec<SeatSlot>,
    schema: Schema,
    started_at_ms: u64,
    created_tick: Tick,
    /// Ticks after a multiple of the snapshot interval this match sends on,
    /// spreading snapshot work evenly over ticks.
    snapshot_phase: u32,
    scores: Vec<u32>,
    seat_sides: Vec<u8>,
    phase: Phase,
}

#[derive(Debug, Clone, Copy)]
struct ConnSlot {
    match_id: MatchId,
    seat: Seat,
}

/// The match shard's state machine, generic over the game it runs.
#[derive(Debug)]
pub struct Shard<G: Game> {
    config: ShardConfig,
    game: Recording<G>,
    verifier: TokenVerifier,
    nonces: NonceCache,
    matches: BTreeMap<MatchId, MatchSlot>,
    finished: BTreeMap<MatchId, u64>,
    conns: HashMap<ConnId, ConnSlot>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ShardEvent>,
    rng: StdRng,
    draining: bool,
    stats: ShardStats,
    view: Snapshot,
    by_phase: [usize; 4],
    next_snapshot_phase: u32,
    /// Datagram buffers handed back by the driver ([`Shard::recycle_datagram`]),
    /// reused for the next snapshots.
    spare_datagrams: Vec<Vec<u8>>,
}

/// Spare datagram buffers kept at most: more than one tick's snapshots of a
/// full shard (10,000 seats at 30 of 60 ticks), a few hundred KiB.
const MAX_SPARE_DATAGRAMS: usize = 8192;

/// A spare buffer larger than this (grown by an unusual snapshot) is let go.
const MAX_SPARE_CAPACITY: usize = 2048;

impl<G: Game> Shard<G> {
    /// A shard with no matches that accepts tokens `verifier` accepts.
    pub fn new(config: ShardConfig, verifier: TokenVerifier) -> Self {
        let lifecycle = LifecycleConfig { forfeit_after_ticks: config.resume_grace_ticks, ..config.lifecycle };
        assert!(config.validate().is_ok(), "invalid shard config; call ShardConfig::validate first");
        Self {
            game: Recording::<G>::new(lifecycle),
            rng: StdRng::seed_from_u64(config.rng_seed),
            config,
            verifier,
            nonces: NonceCache::default(),
            matches: BTreeMap::new(),
            finished: BTreeMap::new(),
            conns: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            draining: false,
            stats: ShardStats::default(),
            view: Snapshot::default(),
            by_phase: [0; 4],
            next_snapshot_phase: 0,
            spare_datagrams: Vec::new(),
        }
    }

    /// The shard's settings.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The last simulated tick.
    pub fn tick_number(&self) -> Tick {
        self.game.tick()
    }

    /// Counters since start.
    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    /// Matches running now (created and not yet ended).
    pub fn n_matches(&self) -> usize {
        self.matches.len()
    }

    /// Running matches per phase, indexed by [`Phase`] as `u8`.
    pub fn matches_by_phase(&self) -> [usize; 4] {
        self.by_phase
    }

    /// Connections holding a seat.
    pub fn n_connections(&self) -> usize {
        self.conns.len()
    }

    /// Whether the shard refuses new matches.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Stops accepting new matches; running ones play on.
    pub fn begin_drain(&mut self) {
        self.draining = true;
    }

    /// Ends every running match now as [`WireEndReason::ShardShutdown`] (drain deadline).
    pub fn abort_all(&mut self, now_ms: u64) {
        let ids: Vec<MatchId> = self.matches.keys().copied().collect();
        let tick = self.game.tick();
        for match_id in ids {
            let Some(slot) = self.matches.get(&match_id) else { continue };
            let end = MatchEnd {
                tick,
                scores: slot.scores.clone(),
                winner: None,
                reason: WireEndReason::ShardShutdown,
                forfeited: Vec::new(),
            };
            self.end_match(match_id, end, now_ms);
        }
    }

    /// The next thing to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Gives back the buffer of a [`Transmit::Datagram`] the driver has
    /// finished with (its transport copied the bytes), for a later snapshot to
    /// reuse, so a steady shard allocates no buffer per snapshot.
    pub fn recycle_datagram(&mut self, mut bytes: Vec<u8>) {
        if self.spare_datagrams.len() < MAX_SPARE_DATAGRAMS && bytes.capacity() <= MAX_SPARE_CAPACITY {
            bytes.clear();
            self.spare_datagrams.push(bytes);
        }
    }

    /// The next event for the owner, if any.
    pub fn poll_event(&mut self) -> Option<ShardEvent> {
        self.events.pop_front()
    }

    /// Handles the first control frame of a connection (its payload, unframed).
    pub fn handle_hello(&mut self, conn: ConnId, payload: &[u8], now_ms: u64) {
        let result = Hello::parse(payload)
            .map_err(|err| refusal(RefuseReason::MalformedHello, format!("not a rally hello: {err}")))
            .and_then(|hello| {
                if hello.version != PROTOCOL_VERSION {
                    return Err(refusal(
                        RefuseReason::VersionMismatch,
                        format!(
                            "client speaks protocol version {}, this shard speaks {PROTOCOL_VERSION}; update the client",
                            hello.version
                        ),
                    ));
                }
                hello.decode::<ClientHello>().map_err(|err| {
                    // The decoder's own text names serde internals; the client gets a
                    // short one it can act on, the log keeps the detail.
                    tracing::debug!(?conn, %err, "undecodable hello body");
                    refusal(
                        RefuseReason::MalformedHello,
                        "the hello's body is not a ClientHello of this protocol version (PROTOCOL.md 5.1)".into(),
                    )
                })
            })
            .and_then(|hello| match hello {
                ClientHello::Connect { token } => self.admit_token(conn, &token, now_ms),
                ClientHello::Resume { match_id, seat, secret } => self.admit_resume(conn, match_id, seat, &secret),
            });
        match result {
            Ok(welcome) => {
                let mut bytes = Vec::new();
                encode_hello_frame(&ServerHello::Welcome(Box::new(welcome)), &mut bytes);
                self.transmits.push_back(Transmit::Control { conn, bytes });
            }
            Err(refusal) => {
                *self.stats.refused.entry(refusal.reason.label()).or_default() += 1;
                tracing::debug!(?conn, reason = refusal.reason.label(), message = %refusal.message, "hello refused");
                let mut bytes = Vec::new();
                encode_hello_frame(&ServerHello::Refused(refusal), &mut bytes);
                self.transmits.push_back(Transmit::Control { conn, bytes });
                self.transmits.push_back(Transmit::Close { conn, reason: None });
            }
        }
    }

    fn admit_token(&mut self, conn: ConnId, token: &[u8], now_ms: u64) -> Result<Welcome, Refusal> {
        let claims = self.verifier.verify(token, now_ms).map_err(|err| {
            let reason = match err {
                TokenError::WrongVersion { .. } => RefuseReason::VersionMismatch,
                TokenError::UnknownKey(_) => RefuseReason::UnknownKey,
                TokenError::BadSignature => RefuseReason::TokenForged,
                TokenError::NotYetValid { .. } => RefuseReason::TokenNotYetValid,
                TokenError::Expired { .. } => RefuseReason::TokenExpired,
                TokenError::WrongShard { .. } => RefuseReason::WrongShard,
                _ => RefuseReason::TokenMalformed,
            };
            refusal(reason, err.to_string())
        })?;
        if claims.is_spectator() {
            // Spectator seats (PROTOCOL.md section 15) are not served yet; refusing here
            // also keeps seat 255 from indexing the match's seats.
            return Err(refusal(
                RefuseReason::BadMatchSpec,
                "this shard does not admit spectators yet; ask for a player seat".into(),
            ));
        }
        if self.finished.contains_key(&claims.match_id) {
            return Err(refusal(
                RefuseReason::MatchFinished,
                format!("match {} has already finished", claims.match_id),
            ));
        }
        let spec = MatchSpec {
            n_seats: claims.n_seats,
            points_to_win: claims.points_to_win,
            time_limit_ticks: u32::from(claims.time_limit_s) * u32::from(self.config.tick_rate_hz),
        };
        if let Some(slot) = self.matches.get(&claims.match_id) {
            if slot.spec != spec {
                return Err(refusal(
                    RefuseReason::BadMatchSpec,
                    format!(
                        "the token's match settings ({}) differ from the running match's ({})",
                        describe_spec(&spec, self.config.tick_rate_hz),
                        describe_spec(&slot.spec, self.config.tick_rate_hz)
                    ),
                ));
            }
            let seat = &slot.seats[usize::from(claims.seat)];
            if seat.player.is_some_and(|player| player != claims.player_id) || seat.left {
                return Err(refusal(
                    RefuseReason::SeatTaken,
                    format!("seat {} of match {} belongs to another player", claims.seat, claims.match_id),
                ));
            }
        } else {
            if self.draining {
                return Err(refusal(RefuseReason::Draining, "this shard is draining; ask the matchmaker again".into()));
            }
            if self.matches.len() >= self.config.max_matches {
                return Err(refusal(
                    RefuseReason::ShardFull,
                    "this shard is at capacity; ask the matchmaker again".into(),
                ));
            }
        }
        if !self.nonces.insert(claims.nonce, claims.expires_at_ms) {
            return Err(refusal(
                RefuseReason::TokenReused,
                "connect token already used; ask the matchmaker again".into(),
            ));
        }
        if !self.matches.contains_key(&claims.match_id) {
            self.create_match(claims.match_id, spec, now_ms)?;
        }
        self.seat_connection(conn, claims.match_id, claims.seat, Some(claims.player_id))
    }

    fn create_match(&mut self, match_id: MatchId, spec: MatchSpec, now_ms: u64) -> Result<(), Refusal> {
        let seed = self.rng.next_u64();
        self.game
            .create_match(match_id, spec, seed)
            .map_err(|err| refusal(RefuseReason::BadMatchSpec, format!("the game refuses this match: {err}")))?;
        let interval = u32::from(self.config.tick_rate_hz / self.config.snapshot_rate_hz);
        let seats = (0..spec.n_seats)
            .map(|_| {
                let mut secret = [0u8; RESUME_SECRET_LEN];
                self.rng.fill_bytes(&mut secret);
                SeatSlot::new(secret)
            })
            .collect();
        let slot = MatchSlot {
            spec,
            seats,
            schema: G::schema(spec.n_seats),
            started_at_ms: now_ms,
            created_tick: self.game.tick(),
            snapshot_phase: self.next_snapshot_phase,
            scores: vec![0; usize::from(G::SIDES)],
            seat_sides: Vec::new(),
            phase: Phase::Waiting,
        };
        self.by_phase[Phase::Waiting as usize] += 1;
        // Round-robin, whatever the ids look like, so every tick sends an equal share.
        self.next_snapshot_phase = (self.next_snapshot_phase + 1) % interval;
        self.matches.insert(match_id, slot);
        self.events.push_back(ShardEvent::MatchCreated(match_id));
        self.stats.matches_created += 1;
        Ok(())
    }

    fn admit_resume(
        &mut self,
        conn: ConnId,
        match_id: MatchId,
        seat: Seat,
        secret: &[u8; RESUME_SECRET_LEN],
    ) -> Result<Welcome, Refusal> {
        if self.finished.contains_key(&match_id) {
            return Err(refusal(RefuseReason::MatchFinished, format!("match {match_id} has already finished")));
        }
        let grace = self.config.resume_grace_ticks;
        let tick = self.game.tick();
        let slot = self
            .matches
            .get(&match_id)
            .and_then(|slot| slot.seats.get(usize::from(seat)))
            .filter(|slot| constant_time_eq(&slot.secret, secret) && !slot.left)
            .ok_or_else(|| refusal(RefuseReason::ResumeRefused, "unknown match, seat or resume secret".into()))?;
        if slot.dropped_at.is_some_and(|dropped| tick.saturating_sub(dropped) > grace) {
            return Err(refusal(RefuseReason::ResumeExpired, "the resume window has passed".into()));
        }
        let player = slot.player;
        self.seat_connection(conn, match_id, seat, player)
    }

    /// Binds `conn` to a seat, displacing any connection that held it.
    fn seat_connection(
        &mut self,
        conn: ConnId,
        match_id: MatchId,
        seat: Seat,
        player: Option<PlayerId>,
    ) -> Result<Welcome, Refusal> {
        let tick = self.game.tick();
        let slot = self.matches.get_mut(&match_id).expect("caller checked the match exists");
        let seat_slot = &mut slot.seats[usize::from(seat)];
        if let Some(old) = seat_slot.conn.replace(conn) {
            self.conns.remove(&old);
            // The old connection's input stops, exactly as after a drop and resume,
            // so a predicting client and the shard agree on the gap.
            let _ = self.game.set_seat_connected(match_id, seat, false);
            let mut bytes = Vec::new();
            let message = "this seat was taken over by a newer connection".to_string();
            encode_frame(&ServerMessage::Disconnect { reason: DisconnectReason::Replaced, message }, &mut bytes);
            self.transmits.push_back(Transmit::Control { conn: old, bytes });
            self.transmits.push_back(Transmit::Close { conn: old, reason: Some(DisconnectReason::Replaced) });
        }
        seat_slot.player = player;
        seat_slot.dropped_at = None;
        seat_slot.acked = None;
        seat_slot.first_input = None;
        seat_slot.min_lead = None;
        // Inputs buffered from the old connection would skew the new one's lead report.
        seat_slot.inputs = InputBuffer::default();
        seat_slot.sent.clear();
        let welcome = Welcome {
            game: G::NAME.to_owned(),
            match_id,
            player_id: player.unwrap_or(PlayerId(0)),
            seat,
            n_seats: slot.spec.n_seats,
            points_to_win: slot.spec.points_to_win,
            tick_rate_hz: self.config.tick_rate_hz,
            snapshot_rate_hz: self.config.snapshot_rate_hz,
            server_tick: tick,
            schema: slot.schema.clone(),
            resume_secret: seat_slot.secret,
            resume_grace_ms: ticks_to_ms(self.config.resume_grace_ticks, self.config.tick_rate_hz),
        };
        self.conns.insert(conn, ConnSlot { match_id, seat });
        self.game.set_seat_connected(match_id, seat, true).expect("seat validated by the token and the match");
        self.broadcast(match_id, Some(seat), &ServerMessage::SeatPresence { seat, connected: true });
        Ok(welcome)
    }

    /// Handles a datagram from a connection.
    pub fn handle_datagram(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(&ConnSlot { match_id, seat }) = self.conns.get(&conn) else {
            self.stats.bad_datagrams += 1;
            return;
        };
        // Borrowed, not an `InputDatagram`: no allocation per datagram.
        let Ok(datagram) = InputsRef::decode(bytes) else {
            self.stats.undecodable_datagrams += 1;
            return;
        };
        let current = self.game.tick();
        let max_lead = self.config.max_input_lead_ticks;
        let Some(slot) = self.matches.get_mut(&match_id) else { return };
        let seat_slot = &mut slot.seats[usize::from(seat)];
        for (tick, input) in datagram.ticked_inputs() {
            if seat_slot.inputs.offer(current, max_lead, tick, input) == Accepted::Late {
                // Redundant copies of inputs already applied are expected; only the
                // newest entry being late means this input missed its tick.
                if tick == datagram.newest_tick {
                    self.stats.input_late(usize::from(seat));
                }
            }
        }
        let lead = i64::from(datagram.newest_tick) - i64::from(current);
        seat_slot.min_lead = Some(seat_slot.min_lead.map_or(lead, |min| min.min(lead)));
        if seat_slot.first_input.is_none() {
            seat_slot.first_input = Some(datagram.newest_tick);
        }
        if let Some(ack) = datagram.ack.filter(|&ack| ack <= current) {
            seat_slot.acked = Some(seat_slot.acked.map_or(ack, |old| old.max(ack)));
        }
    }

    /// Handles a control message (after the hello) from a connection.
    pub fn handle_message(&mut self, conn: ConnId, payload: &[u8]) {
        let message = match rally_protocol::codec::decode_payload::<ClientMessage>(payload) {
            Ok(message) => message,
            Err(err) => {
                tracing::debug!(?conn, %err, "undecodable control message");
                let mut bytes = Vec::new();
                let message = "a control frame is not a ClientMessage (PROTOCOL.md 5.3)".to_string();
                encode_frame(
                    &ServerMessage::Disconnect { reason: DisconnectReason::ProtocolViolation, message },
                    &mut bytes,
                );
                self.transmits.push_back(Transmit::Control { conn, bytes });
                self.transmits.push_back(Transmit::Close { conn, reason: Some(DisconnectReason::ProtocolViolation) });
                self.handle_disconnect(conn);
                return;
            }
        };
        match message {
            ClientMessage::Ping { client_time_us } => {
                let mut bytes = Vec::new();
                encode_frame(&ServerMessage::Pong { client_time_us, server_tick: self.game.tick() }, &mut bytes);
                self.transmits.push_back(Transmit::Control { conn, bytes });
            }
            ClientMessage::Leave => {
                if let Some(&ConnSlot { match_id, seat }) = self.conns.get(&conn)
                    && let Some(slot) = self.matches.get_mut(&match_id)
                {
                    slot.seats[usize::from(seat)].left = true;
                    self.handle_disconnect(conn);
                    // The seat forfeits on the next tick rather than after the resume window.
                    let _ = self.game.leave_seat(match_id, seat);
                } else {
                    self.handle_disconnect(conn);
                }
                self.transmits.push_back(Transmit::Close { conn, reason: None });
            }
        }
    }

    /// The connection is gone (closed, timed out, or reset). Its seat is held
    /// for the resume window; after it the game forfeits the seat.
    pub fn handle_disconnect(&mut self, conn: ConnId) {
        let Some(ConnSlot { match_id, seat }) = self.conns.remove(&conn) else { return };
        let tick = self.game.tick();
        let Some(slot) = self.matches.get_mut(&match_id) else { return };
        let seat_slot = &mut slot.seats[usize::from(seat)];
        if seat_slot.conn != Some(conn) {
            return;
        }
        seat_slot.conn = None;
        seat_slot.dropped_at = Some(tick);
        // The match exists and the seat was validated when the connection joined.
        let _ = self.game.set_seat_connected(match_id, seat, false);
        self.broadcast(match_id, None, &ServerMessage::SeatPresence { seat, connected: false });
    }

    /// Steps every match one tick, then queues events and due snapshots.
    pub fn tick(&mut self, now_ms: u64) {
        self.nonces.purge(now_ms);
        while let Some(entry) = self.finished.first_entry() {
            if now_ms.saturating_sub(*entry.get()) < self.config.finished_memory_ms {
                break;
            }
            entry.remove();
        }
        let next = self.game.tick() + 1;
        for (&match_id, slot) in &mut self.matches {
            for (seat_idx, seat) in slot.seats.iter_mut().enumerate() {
                match seat.inputs.take(next) {
                    Some(input) => {
                        self.stats.input_on_time(seat_idx);
                        seat.applied_unshown.get_or_insert(next);
                        // Seat indices come from the match's own spec.
                        let _ = self.game.set_input(match_id, seat_idx as Seat, input);
                    }
                    None if seat.conn.is_some() && seat.first_input.is_some_and(|first| first <= next) => {
                        self.stats.input_missing(seat_idx);
                    }
                    None => {}
                }
            }
        }
        self.game.step();
        while let Some(event) = self.game.poll_event() {
            self.handle_sim_event(event, now_ms);
        }
        self.send_snapshots();
    }

    fn handle_sim_event(&mut self, event: SimEvent, now_ms: u64) {
        match event {
            SimEvent::PhaseChanged { match_id, tick, phase } => {
                if let Some(slot) = self.matches.get_mut(&match_id) {
                    self.by_phase[slot.phase as usize] -= 1;
                    self.by_phase[phase as usize] += 1;
                    slot.phase = phase;
                }
                let phase = match phase {
                    Phase::Waiting => MatchPhase::Waiting,
                    Phase::Countdown => MatchPhase::Countdown,
                    Phase::Playing => MatchPhase::Playing,
                    Phase::Finished => MatchPhase::Finished,
                };
                self.broadcast(match_id, None, &ServerMessage::Phase { tick, phase });
            }
            SimEvent::PointScored { match_id, tick, side, scores } => {
                if let Some(slot) = self.matches.get_mut(&match_id) {
                    slot.scores.clone_from(&scores);
                }
                self.broadcast(match_id, None, &ServerMessage::PointScored { tick, side, scores });
            }
            SimEvent::MatchFinished { match_id, tick, outcome } => {
                if let Some(slot) = self.matches.get_mut(&match_id) {
                    slot.seat_sides.clone_from(&outcome.seat_sides);
                }
                let reason = match outcome.reason {
                    EndReason::Score => WireEndReason::Score,
                    EndReason::Forfeit => WireEndReason::Forfeit,
                    EndReason::Abandoned => WireEndReason::Abandoned,
                    EndReason::TimeLimit => WireEndReason::TimeLimit,
                };
                let end = MatchEnd {
                    tick,
                    scores: outcome.scores,
                    winner: outcome.winner,
                    reason,
                    forfeited: outcome.forfeited,
                };
                self.end_match(match_id, end, now_ms);
            }
            _ => {}
        }
    }

    /// Tells every seat, emits the result once, and forgets the match.
    fn end_match(&mut self, match_id: MatchId, end: MatchEnd, now_ms: u64) {
        self.broadcast(match_id, None, &ServerMessage::MatchEnded(end.clone()));
        let Some(slot) = self.matches.remove(&match_id) else { return };
        self.by_phase[slot.phase as usize] -= 1;
        for seat in &slot.seats {
            if let Some(conn) = seat.conn {
                self.conns.remove(&conn);
                self.transmits.push_back(Transmit::Close { conn, reason: None });
            }
        }
        let log = self.game.take_log(match_id);
        self.game.remove_match(match_id);
        self.finished.insert(match_id, now_ms);
        let digest = log.as_ref().map(|log| hex::encode(log.digest())).unwrap_or_default();
        let seats = slot
            .seats
            .iter()
            .enumerate()
            .map(|(idx, seat)| SeatResult {
                seat: idx as Seat,
                player_id: seat.player,
                side: slot.seat_sides.get(idx).copied().unwrap_or((idx % 2) as u8),
                forfeited: end.forfeited.contains(&(idx as Seat)),
            })
            .collect();
        let result = MatchResult {
            match_id,
            game: G::NAME.to_owned(),
            shard: self.config.name.clone(),
            seats,
            scores: end.scores,
            winner: end.winner,
            reason: end.reason,
            duration_ticks: end.tick.saturating_sub(slot.created_tick),
            tick_rate_hz: self.config.tick_rate_hz,
            started_at_ms: slot.started_at_ms,
            ended_at_ms: now_ms,
            input_log_digest: digest,
        };
        self.stats.matches_ended += 1;
        *self.stats.matches_ended_by_reason.entry(end_reason_label(result.reason)).or_default() += 1;
        self.events.push_back(ShardEvent::MatchEnded { result: Box::new(result), log: log.map(Box::new) });
    }

    fn send_snapshots(&mut self) {
        let tick = self.game.tick();
        let interval = u32::from(self.config.tick_rate_hz / self.config.snapshot_rate_hz);
        let history = self.config.snapshot_history;
        for (&match_id, slot) in &mut self.matches {
            if !(tick + slot.snapshot_phase).is_multiple_of(interval) {
                continue;
            }
            for (seat_idx, seat) in slot.seats.iter_mut().enumerate() {
                let Some(conn) = seat.conn else { continue };
                if self.game.write_view(match_id, seat_idx as Seat, &mut self.view).is_err() {
                    continue;
                }
                let baseline = seat.acked.and_then(|acked| {
                    (tick - acked <= MAX_BASELINE_DISTANCE)
                        .then(|| seat.sent.iter().find(|sent| sent.tick == acked))
                        .flatten()
                });
                // With no datagram since the last snapshot, the newest input's lead now
                // is the honest (and alarming) figure.
                let input_lead = seat
                    .min_lead
                    .take()
                    .or_else(|| seat.inputs.newest().map(|newest| i64::from(newest) - i64::from(tick)))
                    .unwrap_or(0);
                let header = SnapshotHeader {
                    tick,
                    baseline: baseline.map(|baseline| baseline.tick),
                    input_lead: input_lead.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
                };
                let mut bytes = self.spare_datagrams.pop().unwrap_or_else(|| Vec::with_capacity(48));
                header.encode(&mut bytes);
                let header_len = bytes.len();
                match baseline {
                    Some(baseline) => slot.schema.encode_delta(baseline, &self.view, &mut bytes),
                    None => {
                        self.stats.snapshots_full += 1;
                        slot.schema.encode_full(&self.view, &mut bytes);
                    }
                }
                self.stats.snapshots_sent += 1;
                if let Some(applied) = seat.applied_unshown.take() {
                    // Server-added latency: ticks from applying an input to the
                    // first snapshot that shows it (0 = the same tick).
                    self.stats.input_reflect_ticks.record((tick - applied) as usize);
                }
                self.stats.snapshot_bytes += bytes.len() as u64;
                self.stats.snapshot_payload_bytes.record(bytes.len() - header_len);
                if seat.sent.len() >= history {
                    // Reuse the oldest snapshot's allocation for the newest.
                    let mut recycled = seat.sent.pop_front().unwrap_or_default();
                    recycled.tick = self.view.tick;
                    recycled.values.clone_from(&self.view.values);
                    seat.sent.push_back(recycled);
                } else {
                    seat.sent.push_back(self.view.clone());
                }
                self.transmits.push_back(Transmit::Datagram { conn, bytes });
            }
        }
    }

    fn broadcast(&mut self, match_id: MatchId, except: Option<Seat>, message: &ServerMessage) {
        let Some(slot) = self.matches.get(&match_id) else { return };
        let mut bytes = Vec::new();
        encode_frame(message, &mut bytes);
        for (seat_idx, seat) in slot.seats.iter().enumerate() {
            if Some(seat_idx as Seat) == except {
                continue;
            }
            if let Some(conn) = seat.conn {
                self.transmits.push_back(Transmit::Control { conn, bytes: bytes.clone() });
            }
        }
    }
}

fn refusal(reason: RefuseReason, message: String) -> Refusal {
    Refusal { reason, message }
}

/// A match spec as a person reads it, for refusals.
fn describe_spec(spec: &MatchSpec, tick_rate_hz: u16) -> String {
    format!(
        "{} seats, {} points to win, {} s time limit",
        spec.n_seats,
        spec.points_to_win,
        spec.time_limit_ticks / u32::from(tick_rate_hz.max(1))
    )
}

fn ticks_to_ms(ticks: u32, tick_rate_hz: u16) -> u32 {
    (u64::from(ticks) * 1000 / u64::from(tick_rate_hz.max(1))) as u32
}

fn constant_time_eq(a: &[u8; RESUME_SECRET_LEN], b: &[u8; RESUME_SECRET_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A metrics label for an end reason.
pub fn end_reason_label(reason: WireEndReason) -> &'static str {
    match reason {
        WireEndReason::Score => "score",
        WireEndReason::Forfeit => "forfeit",
        WireEndReason::Abandoned => "abandoned",
        WireEndReason::ShardShutdown => "shard_shutdown",
        WireEndReason::TimeLimit => "time_limit",
    }
}
