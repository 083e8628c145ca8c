//! Pong: every match of a shard in one bevy_ecs world.
//!
//! A match is one entity (see `components.rs` for why seats and paddles are arrays in
//! it rather than entities). Three systems, chained on the single-threaded executor
//! with ambiguity detection set to error, step every match at once. Physics is integer
//! fixed point ([`geometry`], `physics.rs`); the world never reads a clock and draws
//! randomness only from each match's seeded generator.
//!
//! # Input
//!
//! A seat's input is a paddle *intent*: [`INPUT_STOP`], [`INPUT_UP`] or
//! [`INPUT_DOWN`] (any other byte means stop). An intent rather than a target position
//! because it fits in two bits, because repeating the last input when a packet is lost
//! (the [`Game`] contract) is exactly right for a held key, and because the server
//! enforces the paddle speed: a client cannot teleport its paddle by sending a far
//! target, and there is nothing to validate.
//!
//! # Seats and sides
//!
//! Two seats play one paddle per side; four seats play doubles, two paddles per side at
//! different depths. A seat's side is `seat % 2` ([`geometry::side_of`]); seats 0 and 1
//! hold the back paddles, 2 and 3 the front ones. Scores are per side.
//!
//! # View
//!
//! Fields, in order: `phase` (2 bits), `countdown` (ticks left, 8 bits, clamped),
//! `ball_vx`, `ball_vy` (signed, 10 bits, wire units per tick), `ball_x`, `ball_y`
//! (13 bits, predicted from the velocities), then per seat `paddle_y_<seat>` (13 bits,
//! predicted from the next field) and `paddle_vy_<seat>` (signed, 8 bits), then
//! `score_0`, `score_1` (7 bits), then `seat` (the viewer, 3 bits). Positions are the
//! centres of the ball and paddles, `>> WIRE_SHIFT`. Views are absolute, not mirrored:
//! the client knows its seat.

pub(crate) mod components;
pub mod geometry;
pub(crate) mod physics;
pub mod prediction;
pub(crate) mod systems;
pub(crate) mod view;

use std::collections::{BTreeMap, VecDeque};

use bevy_ecs::entity::Entity;
use bevy_ecs::schedule::{
    IntoScheduleConfigs, LogLevel, Schedule, ScheduleBuildSettings, ScheduleLabel, SingleThreadedExecutor,
};
use bevy_ecs::world::World;
use rally_protocol::{Input, MatchId, Schema, Seat, Snapshot, Tick};

use self::components::{EventQueue, MatchKey, MatchRng, Paddles, Progress, Rules, Score, Seats, Timing, WorldTick};
use self::physics::Ball;
use self::view::MatchParts;
use crate::game::{Game, LifecycleConfig, MatchSpec, Phase, SimError, SimEvent};
use crate::rng::SplitMix64;

/// Input byte: hold the paddle still.
pub const INPUT_STOP: Input = 0;
/// Input byte: move the paddle up (toward y = 0).
pub const INPUT_UP: Input = systems::INTENT_UP;
/// Input byte: move the paddle down (toward larger y).
pub const INPUT_DOWN: Input = systems::INTENT_DOWN;
/// Most points a match may be played to; a score must fit its 7-bit view field.
pub const MAX_POINTS_TO_WIN: u8 = 99;

#[derive(ScheduleLabel, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PongStep;

/// A schedule on the single-threaded executor that refuses to build if two systems
/// touch the same data in an unspecified order: with one world per shard thread there
/// is nothing to gain from parallel systems, and a fixed order is what determinism needs.
fn empty_schedule() -> Schedule {
    let mut schedule = Schedule::new(PongStep);
    schedule.set_executor(SingleThreadedExecutor::new());
    schedule.set_build_settings(ScheduleBuildSettings { ambiguity_detection: LogLevel::Error, ..Default::default() });
    schedule
}

/// Every Pong match of a shard (or of a replay, or of a test) in one ECS world.
pub struct PongWorld {
    world: World,
    schedule: Schedule,
    /// Match lookup. A `BTreeMap` so that nothing here can ever iterate in hash order;
    /// it lives beside the world rather than in it because no system reads it.
    matches: BTreeMap<MatchId, Entity>,
    /// Events of the last step, sorted by match id.
    events: VecDeque<SimEvent>,
    tick: Tick,
}

impl std::fmt::Debug for PongWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PongWorld")
            .field("tick", &self.tick)
            .field("n_matches", &self.matches.len())
            .field("pending_events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl PongWorld {
    fn entity(&self, match_id: MatchId) -> Result<Entity, SimError> {
        self.matches.get(&match_id).copied().ok_or(SimError::UnknownMatch(match_id))
    }

    fn parts(&self, match_id: MatchId) -> Result<MatchParts<'_>, SimError> {
        let entity = self.world.entity(self.entity(match_id)?);
        let missing = "every match entity is spawned with the full bundle";
        Ok(MatchParts {
            rules: entity.get::<Rules>().expect(missing),
            progress: entity.get::<Progress>().expect(missing),
            seats: entity.get::<Seats>().expect(missing),
            paddles: entity.get::<Paddles>().expect(missing),
            ball: entity.get::<Ball>().expect(missing),
            score: entity.get::<Score>().expect(missing),
            rng: entity.get::<MatchRng>().expect(missing),
        })
    }

    /// The seats of a match that may still change, or `None` once it is finished
    /// (finished matches are frozen: connection changes and inputs are ignored).
    fn live_seats(&mut self, match_id: MatchId, seat: Seat) -> Result<Option<&mut Seats>, SimError> {
        let entity = self.entity(match_id)?;
        let entity = self.world.entity_mut(entity);
        let n_seats = entity.get::<Rules>().map_or(0, |rules| rules.n_seats);
        if seat >= n_seats {
            return Err(SimError::BadSeat { seat, n_seats });
        }
        if entity.get::<Progress>().is_some_and(|progress| progress.phase == Phase::Finished) {
            return Ok(None);
        }
        Ok(entity.into_mut::<Seats>().map(|seats| seats.into_inner()))
    }

    /// The phase of a match, for drivers and tests that want to wait for play.
    pub fn phase(&self, match_id: MatchId) -> Result<Phase, SimError> {
        Ok(self.parts(match_id)?.progress.phase)
    }

    /// Points per side of a match.
    pub fn scores(&self, match_id: MatchId) -> Result<[u32; 2], SimError> {
        Ok(self.parts(match_id)?.score.0)
    }

    /// The match ids in the world, in ascending order.
    pub fn match_ids(&self) -> impl Iterator<Item = MatchId> + '_ {
        self.matches.keys().copied()
    }
}

impl Game for PongWorld {
    const NAME: &'static str = "pong";
    const SIDES: u8 = 2;

    fn new(lifecycle: LifecycleConfig) -> Self {
        let mut world = World::new();
        world.insert_resource(Timing(lifecycle));
        world.insert_resource(WorldTick::default());
        world.insert_resource(EventQueue::default());
        let mut schedule = empty_schedule();
        schedule.add_systems((systems::advance_lifecycle, systems::move_paddles, systems::fly_ball).chain());
        // Building now rather than on the first step surfaces a schedule error at
        // construction; the three systems are chained, so there is no ambiguity to find.
        schedule.initialize(&mut world).expect("the Pong schedule is a chain of three systems and builds");
        Self { world, schedule, matches: BTreeMap::new(), events: VecDeque::new(), tick: 0 }
    }

    fn schema(n_seats: u8) -> Schema {
        view::schema(n_seats)
    }

    fn create_match(&mut self, match_id: MatchId, spec: MatchSpec, seed: u64) -> Result<(), SimError> {
        if spec.n_seats != 2 && spec.n_seats != 4 {
            return Err(SimError::BadSpec(format!("Pong plays 2 or 4 seats, not {}", spec.n_seats)));
        }
        if spec.points_to_win == 0 || spec.points_to_win > MAX_POINTS_TO_WIN {
            return Err(SimError::BadSpec(format!(
                "points to win must be 1 to {MAX_POINTS_TO_WIN}, not {}",
                spec.points_to_win
            )));
        }
        if spec.time_limit_ticks == 0 {
            return Err(SimError::BadSpec("the time limit must be at least one tick".into()));
        }
        if self.matches.contains_key(&match_id) {
            return Err(SimError::DuplicateMatch(match_id));
        }
        let entity = self
            .world
            .spawn((
                MatchKey(match_id),
                Rules {
                    n_seats: spec.n_seats,
                    points_to_win: spec.points_to_win,
                    time_limit_ticks: spec.time_limit_ticks,
                    max_play_ticks: spec.max_play_ticks(),
                },
                Progress { phase: Phase::Waiting, countdown: 0, age: 0, clock: 0, ending: None },
                Seats::EMPTY,
                Paddles::CENTRED,
                Ball::CENTRE,
                Score([0; 2]),
                MatchRng(SplitMix64::new(seed)),
            ))
            .id();
        self.matches.insert(match_id, entity);
        Ok(())
    }

    fn remove_match(&mut self, match_id: MatchId) {
        if let Some(entity) = self.matches.remove(&match_id) {
            self.world.despawn(entity);
        }
    }

    fn set_seat_connected(&mut self, match_id: MatchId, seat: Seat, connected: bool) -> Result<(), SimError> {
        if let Some(seats) = self.live_seats(match_id, seat)? {
            let bit = 1 << seat;
            if connected {
                // A seat whose player left stays empty.
                seats.connected |= bit & !seats.left;
            } else if seats.connected & bit != 0 {
                seats.connected &= !bit;
                // A seat that left holds its paddle still rather than running into a
                // wall. Only on the transition: repeating a state must change nothing,
                // which the input recorder relies on.
                seats.intent[usize::from(seat)] = INPUT_STOP;
            }
        }
        Ok(())
    }

    fn leave_seat(&mut self, match_id: MatchId, seat: Seat) -> Result<(), SimError> {
        if let Some(seats) = self.live_seats(match_id, seat)? {
            let bit = 1 << seat;
            seats.left |= bit;
            seats.connected &= !bit;
            seats.intent[usize::from(seat)] = INPUT_STOP;
        }
        Ok(())
    }

    fn set_input(&mut self, match_id: MatchId, seat: Seat, input: Input) -> Result<(), SimError> {
        if let Some(seats) = self.live_seats(match_id, seat)? {
            seats.intent[usize::from(seat)] = input;
        }
        Ok(())
    }

    fn step(&mut self) {
        self.tick = self.tick.wrapping_add(1);
        self.world.resource_mut::<WorldTick>().0 = self.tick;
        self.schedule.run(&mut self.world);
        let mut queue = self.world.resource_mut::<EventQueue>();
        self.events.clear();
        self.events.extend(queue.0.drain(..));
        // Systems raise events in entity order, which depends on the world's history;
        // a stable sort by match id keeps each match's own order and makes the stream
        // independent of it.
        self.events.make_contiguous().sort_by_key(|event| event.match_id());
    }

    fn tick(&self) -> Tick {
        self.tick
    }

    fn poll_event(&mut self) -> Option<SimEvent> {
        self.events.pop_front()
    }

    fn write_view(&self, match_id: MatchId, seat: Seat, out: &mut Snapshot) -> Result<(), SimError> {
        let parts = self.parts(match_id)?;
        if seat >= parts.rules.n_seats {
            return Err(SimError::BadSeat { seat, n_seats: parts.rules.n_seats });
        }
        parts.write_view(seat, self.tick, out);
        Ok(())
    }

    fn match_hash(&self, match_id: MatchId) -> Result<u64, SimError> {
        Ok(self.parts(match_id)?.hash())
    }

    fn n_matches(&self) -> usize {
        self.matches.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unordered_systems_would_be_refused() {
        // The same systems without `.chain()` conflict on the match components; the
        // schedule settings turn that into a build error rather than a silent race.
        let mut world = World::new();
        world.insert_resource(Timing(LifecycleConfig::default()));
        world.insert_resource(WorldTick::default());
        world.insert_resource(EventQueue::default());
        let mut schedule = empty_schedule();
        schedule.add_systems((systems::advance_lifecycle, systems::move_paddles, systems::fly_ball));
        assert!(schedule.initialize(&mut world).is_err());
    }

    #[test]
    fn stepping_does_not_spawn_or_leak_entities() {
        let mut world = PongWorld::new(LifecycleConfig::default());
        for id in 0..10 {
            world
                .create_match(MatchId(id), MatchSpec { n_seats: 2, points_to_win: 5, time_limit_ticks: 3600 }, id)
                .expect("valid");
        }
        let before = world.world.entities().len();
        for _ in 0..100 {
            world.step();
        }
        assert_eq!(world.world.entities().len(), before);
        world.remove_match(MatchId(3));
        let mut matches = world.world.query::<&MatchKey>();
        assert_eq!(matches.iter(&world.world).count(), 9);
    }
}
