//! The game simulation of rally: deterministic, fixed-tick, many matches per world.
//!
//! What it does:
//! - defines the game-agnostic [`Game`] trait the shard drives ([`game`]): create
//!   matches, feed seat connections and one input byte per seat per tick, step, read
//!   per-seat views as protocol [`Snapshot`](rally_protocol::Snapshot)s, drain events;
//! - implements Pong on one standalone bevy_ecs world holding every match
//!   ([`pong::PongWorld`]), with integer fixed-point physics and swept collisions;
//! - records and replays matches from input logs ([`replay`]) and checks them by
//!   per-tick state hashes;
//! - provides a scripted player ([`autopilot`]) that plays from views alone.
//!
//! What it does not do, so that a match is a pure function of its spec, seed and inputs
//! (replays, tests and client prediction depend on it):
//! - no IO: no sockets, no files, no logging sinks; the driver owns all of that;
//! - no clock: time is the tick count the driver advances with [`Game::step`];
//! - no unseeded randomness: each match draws from its own [`rng::SplitMix64`], seeded
//!   at creation;
//! - no hash-map iteration anywhere a result can see it: lookups are `BTreeMap`s and
//!   each step's events are sorted by match id;
//! - no knowledge of the wire: components are not `Serialize`; only the view, built to
//!   the game's schema, leaves a match.
//!
//! `clippy.toml` in this crate disallows the clock and `HashMap`, so the rules above
//! are checked, not just promised.

pub mod autopilot;
pub mod game;
pub mod pong;
pub mod replay;
pub mod rng;

pub use game::{EndReason, Game, LifecycleConfig, MatchOutcome, MatchSpec, Phase, SimError, SimEvent};
pub use pong::PongWorld;
