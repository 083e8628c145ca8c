//! rally lobby: the player's front door over gRPC (tonic). Auth (accounts,
//! EdDSA JWT access tokens, rotating refresh tokens), Profile (Glicko-2 ratings,
//! match history, leaderboard) and the `MatchResult` consumer, Chat (public,
//! match and direct channels with moderation), on SQLite by default or
//! PostgreSQL by URL.
//!
//! It does not match players or run games; it only owns accounts, profiles,
//! chat and their tables. The matchmaker opens a match's chat channel with
//! [`ChatStore::create_match_channel`]. Only the lobby signs access tokens
//! ([`AccessSigningKeys`]); other services verify them with the public keys
//! alone ([`AccessTokenVerifier`]), without calling the lobby.

pub mod auth;
pub mod chat;
pub mod contract;
pub mod db;
pub mod error;
pub mod grpc_metrics;
pub mod grpc_web;
pub mod idempotency;
pub mod identity;
pub mod limits;
mod page_token;
pub mod password;
pub mod presence;
pub mod profile;
pub mod proto;
pub mod replicas;
pub mod request_span;
pub mod roles;
pub mod server;
pub mod tokens;

pub use chat::{ChatConfig, ChatStore, WordFilter};
pub use error::{AuthError, LobbyError};
pub use identity::{IdentityConfig, ProviderConfig, ProviderKind};
pub use presence::{Presence, PresenceConfig};
pub use profile::{ApplyOutcome, ProfileStore};
pub use replicas::LobbyRedisConfig;
pub use server::{LobbyConfig, LobbyHandle, serve};
pub use tokens::{
    AccessKeyError, AccessSigningKey, AccessSigningKeys, AccessTokenIssuer, AccessTokenPublicKey, AccessTokenVerifier,
    Claims,
};
