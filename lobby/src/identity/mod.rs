//! External identities: OpenID Connect and plain OAuth2 providers, guest
//! accounts, and the identities linked to each account (issue #18).
//!
//! [`config`] parses the providers; [`provider`] speaks to one (discovery,
//! the authorization URL, code redemption, the device flow, ID-token checks
//! or userinfo); [`store`] keeps the identities linked to accounts and the
//! logins in flight. `Auth` (crate::auth) ties them to rally's own tokens.

pub mod config;
pub(crate) mod provider;
pub(crate) mod store;

use std::sync::Arc;

pub use config::{IdentityConfig, ProviderConfig, ProviderKind, ProviderSpecError};
pub use store::{GUEST, PASSWORD};

use crate::error::LobbyError;
use crate::proto::auth as pb;
use provider::Provider;

/// The configured providers, ready to talk to.
#[derive(Debug)]
pub(crate) struct Identities {
    providers: Vec<Arc<Provider>>,
    /// How long a started login stays redeemable.
    pub attempt_ttl: std::time::Duration,
}

impl Identities {
    /// Every provider of `config`; refuses two with one name.
    pub(crate) fn new(config: &IdentityConfig) -> Result<Self, LobbyError> {
        let http = provider::http_client(config)?;
        let mut providers: Vec<Arc<Provider>> = Vec::with_capacity(config.providers.len());
        for provider in &config.providers {
            if providers.iter().any(|known| known.config.name == provider.name) {
                return Err(LobbyError::invalid(
                    "identity providers",
                    format!("two providers are named {:?}; give each its own name", provider.name),
                ));
            }
            let mut provider = provider.clone();
            provider.load_secret().map_err(|err| LobbyError::invalid("identity providers", err.to_string()))?;
            providers.push(Arc::new(Provider::new(provider, http.clone(), config)));
        }
        Ok(Self { providers, attempt_ttl: config.attempt_ttl })
    }

    /// The provider named `name`: NOT_FOUND naming the ones there are.
    pub(crate) fn provider(&self, name: &str) -> Result<&Arc<Provider>, LobbyError> {
        self.providers.iter().find(|provider| provider.config.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.providers.iter().map(|provider| provider.config.name.as_str()).collect();
            LobbyError::NotFound(if known.is_empty() {
                format!(
                    "no identity provider named {name:?}: this lobby has none configured (rally lobby --oidc/--oauth2)"
                )
            } else {
                format!("no identity provider named {name:?}; this lobby has: {}", known.join(", "))
            })
        })
    }

    /// The providers as clients see them.
    pub(crate) async fn list(&self) -> Vec<pb::Provider> {
        let mut listed = Vec::with_capacity(self.providers.len());
        for provider in &self.providers {
            let config = &provider.config;
            listed.push(pb::Provider {
                name: config.name.clone(),
                display_name: config.display_name.clone(),
                kind: match config.kind {
                    ProviderKind::Oidc { .. } => pb::provider::Kind::Oidc,
                    ProviderKind::OAuth2 { .. } => pb::provider::Kind::Oauth2,
                }
                .into(),
                device_flow: provider.has_device_flow().await,
                redirect_uris: config.redirect_uris.clone(),
            });
        }
        listed
    }
}
