//! rally tournaments: the `rally.tournament.v1.Tournaments` gRPC service.
//!
//! - [`store`]: the event-sourced database (SQLite by default, PostgreSQL by
//!   URL): tournaments, entrants, each tournament's event log and its matches.
//!
//! It does not define brackets (that is `rally-tournament`, a pure engine),
//! run matches (shards do) or own the results log's format (`rally-ledger`).

pub mod config;
pub mod director;
pub mod error;
pub mod proto;
pub mod store;

pub use config::{RESULTS_GROUP, TournamentMode, TournamentsConfig};
pub use director::{CreateTournament, DirectorHandle, TickStats, TournamentDirector, TournamentView, open_ledger};
pub use error::TournamentError;
pub use store::Store;
