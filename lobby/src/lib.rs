//! rally lobby: the player's front door over gRPC (tonic). Auth (accounts,
//! JWT access tokens, rotating refresh tokens), Profile (Glicko-2 ratings,
//! match history, leaderboard) and the `MatchResult` consumer, on SQLite by
//! default or PostgreSQL by URL.
//!
//! It does not match players or run games; it only owns accounts, profiles and
//! their tables. Other services verify access tokens with
//! [`AccessTokenVerifier`] without calling the lobby.

pub mod auth;
pub mod db;
pub mod error;
pub mod limits;
pub mod password;
pub mod profile;
pub mod proto;
pub mod server;
pub mod tokens;

pub use error::{AuthError, LobbyError};
pub use profile::{ApplyOutcome, ProfileStore};
pub use server::{LobbyConfig, LobbyHandle, load_or_create_dev_secret, serve};
pub use tokens::{AccessTokenIssuer, AccessTokenVerifier, Claims, JwtSecret};
