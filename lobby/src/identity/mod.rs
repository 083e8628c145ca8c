//! External identities: OpenID Connect and plain OAuth2 providers, guest
//! accounts, and the identities linked to each account (issue #18).

pub mod config;

pub use config::{IdentityConfig, ProviderConfig, ProviderKind, ProviderSpecError};
