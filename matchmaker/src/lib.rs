//! rally matchmaker: players' tickets in, shard assignments with signed
//! connect tokens out, and match results back to the lobby.
//!
//! - [`engine::Matchmaker`]: enqueue, cancel and watch tickets; matching
//!   rounds ([`matching::propose`]: a Glicko-2 rating window widening with
//!   wait, region preference relaxing, parties on one side, bot fill), shard
//!   reservation and token minting ([`token::TokenMinter`]).
//! - Three shared backends behind traits, each in memory (the embedded
//!   default) or on Redis ([`redis`]): [`store::TicketStore`],
//!   [`registry::ShardRegistry`] and [`bus::ResultsBus`].
//! - [`service`]: `rally.matchmaker.v1.Matchmaker` over tonic.
//! - [`shard_agent`]: a shard's registration, heartbeats and result publishing.
//! - [`lobby_results`]: the bus consumer that applies results to lobby
//!   ratings and publishes the new ratings ([`rating_events`]).
//! - [`ratings`]: the matchmaker's read model of those ratings
//!   ([`BusRatings`], fed by [`follow_ratings`]).
//! - The bus events are the versioned protobuf messages of
//!   `protocol/proto/bus.proto` (`rally_protocol::bus`).
//!
//! It does not run games or own accounts: shards play matches, the lobby
//! issues access tokens and keeps ratings. The matchmaker never opens the
//! lobby's database.

pub mod bots;
pub mod bus;
pub mod config;
pub mod engine;
pub mod error;
pub mod lobby_results;
pub mod match_events;
pub mod matching;
pub mod player;
pub mod proto;
pub mod rating_events;
pub mod ratings;
pub mod redis;
pub mod registry;
pub mod service;
pub mod shard_agent;
pub mod store;
pub mod ticket;
pub mod token;

pub use bots::{BotFill, BotSeat};
pub use bus::{ConsumerConfig, ConsumerHandle, Delivery, MemoryBus, ResultHandler, ResultsBus, run_consumer};
pub use config::{MatchmakerConfig, ModeConfig, WindowCurve};
pub use engine::{Backends, EngineHandle, EnqueueRequest, Matchmaker, RoundStats};
pub use error::{BackendError, MatchmakerError};
pub use rating_events::{MemoryRatingEvents, RatingEvents};
pub use ratings::{BusRatings, FixedRatings, MemoryRatingModel, RatingModel, RatingSource, follow_ratings};
pub use redis::RedisConnection;
pub use registry::{MemoryRegistry, ShardInfo, ShardLoad, ShardRegistry};
pub use service::{MatchmakerServer, MatchmakerService, serve};
pub use store::{Insertion, MemoryTickets, TicketStore};
pub use ticket::{Ticket, TicketId, TicketState};
pub use token::{SeatGrant, TokenMinter, mint_connect_token};
