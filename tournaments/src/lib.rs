//! rally tournaments: the `rally.tournament.v1.Tournaments` gRPC service.
//!
//! - [`director::TournamentDirector`]: lifecycles (registration, check-in,
//!   seeding, rounds), scheduling games on shards through the matchmaker's
//!   registry with connect tokens, results from the bus exactly once per
//!   match id, deadlines and lost shards, and the ledger projection. Time is
//!   an argument ([`TournamentDirector::tick`]).
//! - [`store`]: the event-sourced database (SQLite by default, PostgreSQL by
//!   URL): tournaments, entrants, each tournament's event log and its matches.
//! - [`mod@service`]: `rally.tournament.v1.Tournaments` over tonic, standalone
//!   ([`serve`]) or mounted on another server ([`service()`]).
//! - [`client::TournamentClient`]: the client the CLI and bots use.
//!
//! Wiring, as `rally up` does: [`Store::connect`] (`sqlite://<data-dir>/tournaments.db`
//! by default, or a PostgreSQL URL), [`open_ledger`] (`<data-dir>/ledger`, its key
//! outside it), [`TournamentDirector::open`] over the matchmaker's registry and bus,
//! then [`TournamentDirector::start`] (ticks every 250 ms, results consumer in group
//! [`RESULTS_GROUP`]) and [`serve`], or [`service()`] to mount on another server.
//!
//! Metrics (counters): `rally_tournaments_matches_scheduled_total`,
//! `rally_tournaments_results_counted_total`, `rally_tournaments_results_ignored_total`
//! (duplicates and late results), `rally_tournaments_matches_lost_total` (lost shards),
//! `rally_tournaments_matches_expired_total` (no result by the deadline).
//!
//! It does not define brackets (that is `rally-tournament`, a pure engine),
//! run matches (shards do) or own the results log's format (`rally-ledger`).

pub mod client;
pub mod config;
pub mod director;
pub mod error;
pub mod proto;
pub mod service;
pub mod store;

pub use client::{ConnectError, TournamentClient};
pub use config::{RESULTS_GROUP, TournamentMode, TournamentsConfig};
pub use director::{
    CreateTournament, DirectorHandle, ResultOutcome, TickStats, TournamentDirector, TournamentView, game_outcome,
    open_ledger,
};
pub use error::TournamentError;
pub use service::{TournamentsServer, TournamentsService, serve, service};
pub use store::Store;
