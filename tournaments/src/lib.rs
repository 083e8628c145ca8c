//! rally tournaments: the `rally.tournament.v1.Tournaments` gRPC service.
//!
//! - [`store`]: the event-sourced database (SQLite by default, PostgreSQL by
//!   URL): tournaments, entrants, each tournament's event log and its matches.
//!
//! It does not define brackets (that is `rally-tournament`, a pure engine),
//! run matches (shards do) or own the results log's format (`rally-ledger`).

pub mod error;
pub mod proto;
pub mod store;

pub use error::TournamentError;
