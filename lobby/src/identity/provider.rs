//! Talking to one provider: the authorization URL, redeeming a code, the
//! device flow, and who the person is — from a checked ID token (OpenID
//! Connect, via `openidconnect`) or from a userinfo endpoint (plain OAuth2,
//! via `oauth2`).
//!
//! ID tokens are checked for issuer, audience, expiry (with the configured
//! skew), nonce and signature, with an allow-list of asymmetric algorithms
//! the provider advertises: never `none`, never HMAC (a public client has no
//! shared secret, and an HMAC "keyed with the public key" is the classic
//! forgery). The provider's keys are cached; a token signed with a key id the
//! cache lacks fetches them again (at most every `jwks_min_refetch`), which
//! is how a provider's key rotation is followed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use oauth2::basic::BasicClient;
use oauth2::{EndpointMaybeSet, EndpointNotSet, EndpointSet, StandardDeviceAuthorizationResponse};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
    CoreGrantType, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType,
    CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthUrl, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    DeviceAuthorizationUrl, IssuerUrl, JsonWebKeySet, JwsSigningAlgorithm as _, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, ProviderMetadata, RedirectUrl, Scope, SignatureVerificationError, TokenResponse as _, TokenUrl,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::config::{IdentityConfig, ProviderConfig, ProviderKind};
use crate::error::LobbyError;

/// The HTTP client every provider exchange goes through: a timeout, and no
/// redirects followed (a token endpoint that redirects is refused, not chased).
pub(crate) fn http_client(config: &IdentityConfig) -> Result<reqwest::Client, LobbyError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.http_timeout)
        .connect_timeout(config.http_timeout)
        .user_agent(concat!("rally-lobby/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| LobbyError::Internal(format!("cannot build the identity HTTP client: {err}")))
}

/// Who the provider says the person is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProvidedIdentity {
    /// The provider's stable id (`sub`, or the userinfo id).
    pub subject: String,
    /// The first of the configured name claims present, or empty.
    pub display_name: String,
}

/// A started authorization-code login: what the client opens, and what the
/// lobby keeps to finish it.
#[derive(Debug)]
pub(crate) struct Authorization {
    pub url: String,
    pub pkce_verifier: String,
    pub nonce: String,
}

/// One poll of a device login.
#[derive(Debug)]
pub(crate) enum DevicePoll {
    /// Not approved yet; poll again after this interval.
    Pending(Duration),
    /// Approved: the person.
    Done(ProvidedIdentity),
}

/// The provider metadata fields rally reads beyond the core ones.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct DeviceEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
}
impl AdditionalProviderMetadata for DeviceEndpoint {}

type Metadata = ProviderMetadata<
    DeviceEndpoint,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// A provider's discovery document and keys, and when each was fetched.
#[derive(Debug, Clone)]
struct Discovered {
    metadata: Metadata,
    discovered_at: Instant,
    keys_fetched_at: Instant,
}

/// One configured provider, with what the lobby learnt about it.
#[derive(Debug)]
pub(crate) struct Provider {
    pub config: ProviderConfig,
    http: reqwest::Client,
    clock_skew: Duration,
    jwks_max_age: Duration,
    jwks_min_refetch: Duration,
    /// OpenID Connect only: discovery, fetched on first use (so a lobby
    /// starts while a provider is down) and again after `jwks_max_age`.
    discovered: Mutex<Option<Discovered>>,
}

impl Provider {
    pub(crate) fn new(config: ProviderConfig, http: reqwest::Client, identity: &IdentityConfig) -> Self {
        Self {
            config,
            http,
            clock_skew: identity.clock_skew,
            jwks_max_age: identity.jwks_max_age,
            jwks_min_refetch: identity.jwks_min_refetch,
            discovered: Mutex::new(None),
        }
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn unreachable(&self, what: &str, err: impl std::fmt::Display) -> LobbyError {
        tracing::warn!(provider = self.name(), error = %err, "{what}");
        LobbyError::Unavailable(format!(
            "identity provider {:?} cannot be reached ({what}: {err}); retry in a moment",
            self.name()
        ))
    }

    /// Whether the provider has a device authorization endpoint. For OpenID
    /// Connect this needs discovery; a provider that cannot be reached now
    /// answers false.
    pub(crate) async fn has_device_flow(&self) -> bool {
        match &self.config.kind {
            ProviderKind::OAuth2 { device_authorization_url, .. } => device_authorization_url.is_some(),
            ProviderKind::Oidc { .. } => self
                .metadata()
                .await
                .is_ok_and(|metadata| metadata.additional_metadata().device_authorization_endpoint.is_some()),
        }
    }

    /// The discovery document, fetched now if it is missing or old.
    async fn metadata(&self) -> Result<Metadata, LobbyError> {
        let ProviderKind::Oidc { issuer } = &self.config.kind else {
            return Err(LobbyError::Internal("discovery on a plain OAuth2 provider".into()));
        };
        let mut discovered = self.discovered.lock().await;
        if let Some(cached) = discovered.as_ref()
            && cached.discovered_at.elapsed() < self.jwks_max_age
        {
            return Ok(cached.metadata.clone());
        }
        let issuer_url = IssuerUrl::new(issuer.clone())
            .map_err(|err| LobbyError::Internal(format!("issuer {issuer:?} was checked at start: {err}")))?;
        let metadata = Metadata::discover_async(issuer_url, &self.http)
            .await
            .map_err(|err| self.unreachable("discovery failed", error_chain(&err)))?;
        let now = Instant::now();
        *discovered = Some(Discovered { metadata: metadata.clone(), discovered_at: now, keys_fetched_at: now });
        Ok(metadata)
    }

    /// Fetches the signing keys again unless they were fetched within
    /// `jwks_min_refetch`; answers the metadata with the newest keys.
    async fn refetch_keys(&self) -> Result<Metadata, LobbyError> {
        let mut discovered = self.discovered.lock().await;
        let Some(cached) = discovered.as_mut() else {
            drop(discovered);
            return self.metadata().await;
        };
        if cached.keys_fetched_at.elapsed() >= self.jwks_min_refetch {
            let keys = JsonWebKeySet::fetch_async(cached.metadata.jwks_uri(), &self.http)
                .await
                .map_err(|err| self.unreachable("fetching its signing keys failed", error_chain(&err)))?;
            cached.metadata = cached.metadata.clone().set_jwks(keys);
            cached.keys_fetched_at = Instant::now();
            tracing::info!(provider = self.name(), "fetched the provider's signing keys again (unknown key id)");
        }
        Ok(cached.metadata.clone())
    }

    fn client_secret(&self) -> Option<ClientSecret> {
        self.config.client_secret.clone().map(ClientSecret::new)
    }

    /// The OpenID Connect client for `metadata`, with this lobby's client id and secret.
    fn oidc_client(
        &self,
        metadata: Metadata,
    ) -> CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>
    {
        CoreClient::from_provider_metadata(metadata, ClientId::new(self.config.client_id.clone()), self.client_secret())
    }

    /// The plain OAuth2 client on `token_url`, with this lobby's client id and secret.
    fn oauth2_client(
        &self,
        token_url: &str,
    ) -> Result<BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>, LobbyError>
    {
        let client = BasicClient::new(ClientId::new(self.config.client_id.clone()))
            .set_token_uri(TokenUrl::new(token_url.to_owned()).map_err(checked_at_start)?);
        Ok(match self.client_secret() {
            Some(secret) => client.set_client_secret(secret),
            None => client,
        })
    }

    fn scopes(&self) -> impl Iterator<Item = Scope> + '_ {
        self.config.scopes.iter().filter(|scope| scope.as_str() != "openid").cloned().map(Scope::new)
    }

    /// The URL to send the person to, with a fresh PKCE challenge and nonce.
    pub(crate) async fn authorize(&self, redirect_uri: &str, state: &str) -> Result<Authorization, LobbyError> {
        let redirect = redirect_url(redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = Nonce::new_random();
        let state = CsrfToken::new(state.to_owned());
        let url = match &self.config.kind {
            ProviderKind::Oidc { .. } => {
                let metadata = self.metadata().await?;
                let client = self.oidc_client(metadata).set_redirect_uri(redirect);
                let nonce = nonce.clone();
                let (url, _, _) = client
                    .authorize_url(CoreAuthenticationFlow::AuthorizationCode, move || state, move || nonce)
                    .add_scopes(self.scopes())
                    .set_pkce_challenge(challenge)
                    .url();
                url
            }
            ProviderKind::OAuth2 { authorization_url, token_url, .. } => {
                let client = self
                    .oauth2_client(token_url)?
                    .set_auth_uri(AuthUrl::new(authorization_url.clone()).map_err(checked_at_start)?)
                    .set_redirect_uri(redirect);
                let (url, _) = client
                    .authorize_url(move || state)
                    .add_scopes(self.config.scopes.iter().cloned().map(Scope::new))
                    .set_pkce_challenge(challenge)
                    .url();
                url
            }
        };
        Ok(Authorization { url: url.to_string(), pkce_verifier: verifier.into_secret(), nonce: nonce.secret().clone() })
    }

    /// Redeems an authorization code and answers who logged in.
    pub(crate) async fn redeem(
        &self,
        code: &str,
        redirect_uri: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<ProvidedIdentity, LobbyError> {
        let redirect = redirect_url(redirect_uri)?;
        let code = AuthorizationCode::new(code.to_owned());
        let verifier = PkceCodeVerifier::new(pkce_verifier.to_owned());
        match &self.config.kind {
            ProviderKind::Oidc { .. } => {
                let metadata = self.metadata().await?;
                let client = self.oidc_client(metadata).set_redirect_uri(redirect);
                let response = client
                    .exchange_code(code)
                    .map_err(|err| self.unreachable("its discovery document has no token endpoint", err))?
                    .set_pkce_verifier(verifier)
                    .request_async(&self.http)
                    .await
                    .map_err(|err| self.token_error(err))?;
                let id_token = response.id_token().ok_or_else(|| {
                    LobbyError::Unauthenticated(format!(
                        "identity provider {:?} answered without an ID token; is `openid` among its scopes?",
                        self.name()
                    ))
                })?;
                self.verify_id_token(id_token, Some(nonce)).await
            }
            ProviderKind::OAuth2 { authorization_url, token_url, .. } => {
                let client = self
                    .oauth2_client(token_url)?
                    .set_auth_uri(AuthUrl::new(authorization_url.clone()).map_err(checked_at_start)?)
                    .set_redirect_uri(redirect);
                let response = client
                    .exchange_code(code)
                    .set_pkce_verifier(verifier)
                    .request_async(&self.http)
                    .await
                    .map_err(|err| self.token_error(err))?;
                self.userinfo(oauth2::TokenResponse::access_token(&response).secret()).await
            }
        }
    }

    /// Starts a device authorization (RFC 8628) at the provider.
    pub(crate) async fn start_device(&self) -> Result<StandardDeviceAuthorizationResponse, LobbyError> {
        let no_device = || {
            LobbyError::FailedPrecondition(format!(
                "identity provider {:?} has no device authorization endpoint; log in with Auth.StartLogin \
                 and a loopback redirect (http://127.0.0.1:PORT/…) instead",
                self.name()
            ))
        };
        let response = match &self.config.kind {
            ProviderKind::Oidc { .. } => {
                let metadata = self.metadata().await?;
                let device_url =
                    metadata.additional_metadata().device_authorization_endpoint.clone().ok_or_else(no_device)?;
                let client = self.oidc_client(metadata).set_device_authorization_url(device_url);
                client.exchange_device_code().add_scopes(self.scopes()).request_async(&self.http).await
            }
            ProviderKind::OAuth2 { token_url, device_authorization_url, .. } => {
                let device_url = device_authorization_url.clone().ok_or_else(no_device)?;
                let client = self
                    .oauth2_client(token_url)?
                    .set_device_authorization_url(DeviceAuthorizationUrl::new(device_url).map_err(checked_at_start)?);
                client
                    .exchange_device_code()
                    .add_scopes(self.config.scopes.iter().cloned().map(Scope::new))
                    .request_async(&self.http)
                    .await
            }
        };
        response.map_err(|err| match err {
            oauth2::RequestTokenError::ServerResponse(refusal) => LobbyError::FailedPrecondition(format!(
                "identity provider {:?} refused to start a device login: {}; is the device grant enabled \
                 for client {:?} there?",
                self.name(),
                describe_refusal(refusal.error().as_ref(), refusal.error_description()),
                self.config.client_id
            )),
            other => self.unreachable("its device authorization endpoint failed", error_chain(&other)),
        })
    }

    /// Polls a device login for up to `wait`, at the interval the provider asks for.
    pub(crate) async fn poll_device(
        &self,
        details: &StandardDeviceAuthorizationResponse,
        wait: Duration,
    ) -> Result<DevicePoll, LobbyError> {
        let deadline = Instant::now() + wait;
        let interval_ms = Arc::new(AtomicU64::new(duration_ms(details.interval())));
        let seen = Arc::clone(&interval_ms);
        // The crate sleeps the interval between polls; this bounds each sleep
        // by the caller's wait and remembers the interval (it grows on
        // slow_down) for the next call.
        let sleep = move |interval: Duration| {
            seen.store(duration_ms(interval), Ordering::Relaxed);
            tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now())))
        };
        let pending =
            |interval_ms: &AtomicU64| DevicePoll::Pending(Duration::from_millis(interval_ms.load(Ordering::Relaxed)));
        match &self.config.kind {
            ProviderKind::Oidc { .. } => {
                let metadata = self.metadata().await?;
                let client = self.oidc_client(metadata);
                let result = client
                    .exchange_device_access_token(details)
                    .map_err(|err| self.unreachable("its discovery document has no token endpoint", err))?
                    .request_async(&self.http, sleep, Some(wait))
                    .await;
                match result {
                    Ok(response) => {
                        let id_token = response.id_token().ok_or_else(|| {
                            LobbyError::Unauthenticated(format!(
                                "identity provider {:?} answered the device login without an ID token",
                                self.name()
                            ))
                        })?;
                        Ok(DevicePoll::Done(self.verify_id_token(id_token, None).await?))
                    }
                    Err(err) => self.device_error(err).map(|()| pending(&interval_ms)),
                }
            }
            ProviderKind::OAuth2 { token_url, .. } => {
                let client = self.oauth2_client(token_url)?;
                let result =
                    client.exchange_device_access_token(details).request_async(&self.http, sleep, Some(wait)).await;
                match result {
                    Ok(response) => Ok(DevicePoll::Done(
                        self.userinfo(oauth2::TokenResponse::access_token(&response).secret()).await?,
                    )),
                    Err(err) => self.device_error(err).map(|()| pending(&interval_ms)),
                }
            }
        }
    }

    /// Ok for "still pending" (the crate's own timeout, which is our wait), the error otherwise.
    fn device_error(
        &self,
        err: oauth2::RequestTokenError<oauth2::HttpClientError<reqwest::Error>, oauth2::DeviceCodeErrorResponse>,
    ) -> Result<(), LobbyError> {
        use oauth2::DeviceCodeErrorResponseType as Kind;
        match err {
            oauth2::RequestTokenError::ServerResponse(refusal) => match refusal.error() {
                // The caller checks the attempt's own expiry; before it, this is the wait running out.
                Kind::ExpiredToken | Kind::AuthorizationPending | Kind::SlowDown => Ok(()),
                Kind::AccessDenied => Err(LobbyError::PermissionDenied(format!(
                    "the login was refused at identity provider {:?}; start a new one to try again",
                    self.name()
                ))),
                Kind::Basic(other) => Err(LobbyError::Unauthenticated(format!(
                    "identity provider {:?} refused the device login: {}; start a new one",
                    self.name(),
                    describe_refusal(other.as_ref(), refusal.error_description())
                ))),
            },
            other => Err(self.token_error(other)),
        }
    }

    /// A failed token request as the lobby's error.
    fn token_error<T: oauth2::ErrorResponse + std::fmt::Display>(
        &self,
        err: oauth2::RequestTokenError<oauth2::HttpClientError<reqwest::Error>, T>,
    ) -> LobbyError {
        match err {
            oauth2::RequestTokenError::ServerResponse(refusal) => LobbyError::Unauthenticated(format!(
                "identity provider {:?} refused the code ({refusal}); codes are single-use and short-lived: \
                 start the login again",
                self.name()
            )),
            oauth2::RequestTokenError::Parse(err, _) => LobbyError::Unauthenticated(format!(
                "identity provider {:?} answered with a token response that cannot be read ({err}); \
                 the ID token or the response is malformed",
                self.name()
            )),
            other => self.unreachable("its token endpoint failed", error_chain(&other)),
        }
    }

    /// Checks an ID token and answers its subject and display name.
    async fn verify_id_token(
        &self,
        id_token: &CoreIdToken,
        nonce: Option<&str>,
    ) -> Result<ProvidedIdentity, LobbyError> {
        let ProviderKind::Oidc { issuer } = &self.config.kind else {
            return Err(LobbyError::Internal("an ID token from a plain OAuth2 provider".into()));
        };
        let mut metadata = self.metadata().await?;
        let mut refetched = false;
        loop {
            let verifier = self.verifier(issuer, &metadata)?;
            let checked = match nonce {
                Some(nonce) => {
                    id_token.claims(&verifier, &Nonce::new(nonce.to_owned())).map(|claims| claims.subject().to_string())
                }
                // The device grant has no nonce (RFC 8628 has no authorization request to carry one).
                None => {
                    id_token.claims(&verifier, |_: Option<&Nonce>| Ok(())).map(|claims| claims.subject().to_string())
                }
            };
            match checked {
                Ok(subject) => {
                    let claims = unverified_payload(&id_token.to_string()).unwrap_or_default();
                    return Ok(ProvidedIdentity { subject, display_name: self.display_name(&claims) });
                }
                Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey))
                    if !refetched =>
                {
                    // Perhaps the provider rotated its keys: fetch them again once.
                    metadata = self.refetch_keys().await?;
                    refetched = true;
                }
                Err(err) => return Err(self.id_token_refusal(&err, &id_token.to_string(), issuer)),
            }
        }
    }

    fn verifier<'a>(&self, issuer: &str, metadata: &Metadata) -> Result<CoreIdTokenVerifier<'a>, LobbyError> {
        let issuer = IssuerUrl::new(issuer.to_owned()).map_err(checked_at_start)?;
        let skew = chrono::Duration::from_std(self.clock_skew).unwrap_or_else(|_| chrono::Duration::seconds(30));
        Ok(CoreIdTokenVerifier::new_public_client(
            ClientId::new(self.config.client_id.clone()),
            issuer,
            metadata.jwks().clone(),
        )
        .set_allowed_algs(allowed_algs(metadata))
        // `exp` is compared with this clock: running it `skew` behind accepts
        // a token up to `skew` past its expiry.
        .set_time_fn(move || chrono::Utc::now() - skew))
    }

    /// What the person is told when an ID token fails a check: which check,
    /// and what to do.
    fn id_token_refusal(&self, err: &ClaimsVerificationError, token: &str, issuer: &str) -> LobbyError {
        let name = self.name();
        let message = match err {
            ClaimsVerificationError::Expired(detail) => format!(
                "the ID token from {name:?} has expired ({detail}; {} s of clock skew allowed); check the clocks \
                 of this lobby and the provider, then log in again",
                self.clock_skew.as_secs()
            ),
            ClaimsVerificationError::InvalidAudience(detail) => format!(
                "the ID token from {name:?} was issued to another client ({detail}); this lobby is client {:?} there",
                self.config.client_id
            ),
            ClaimsVerificationError::InvalidIssuer(detail) => format!(
                "the ID token is not from the configured issuer {issuer:?} ({detail}); check the provider's --oidc issuer"
            ),
            ClaimsVerificationError::InvalidNonce(_) => format!(
                "the ID token from {name:?} carries another login's nonce (a replayed or mixed-up token); start the \
                 login again"
            ),
            ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey) => format!(
                "the ID token from {name:?} is signed with a key the provider does not publish (kid {:?}); it is forged \
                 or the provider's keys are misconfigured",
                unverified_header(token)
                    .and_then(|header| header.get("kid").and_then(|kid| kid.as_str()).map(str::to_owned))
                    .unwrap_or_default()
            ),
            ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::DisallowedAlg(detail) | SignatureVerificationError::UnsupportedAlg(detail),
            ) => format!(
                "the ID token from {name:?} is signed with an algorithm this lobby does not accept ({detail}); only the \
                 provider's asymmetric algorithms are (never none or HMAC)"
            ),
            ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoSignature) => {
                format!("the ID token from {name:?} is unsigned (alg none); this lobby accepts signed ID tokens only")
            }
            ClaimsVerificationError::SignatureVerification(other) => {
                format!("the ID token from {name:?} has a bad signature ({other}); log in again")
            }
            other => format!("the ID token from {name:?} fails validation ({other}); log in again"),
        };
        tracing::warn!(provider = name, error = %err, "ID token refused");
        LobbyError::Unauthenticated(message)
    }

    /// Asks the userinfo endpoint who owns `access_token` (plain OAuth2).
    async fn userinfo(&self, access_token: &str) -> Result<ProvidedIdentity, LobbyError> {
        let ProviderKind::OAuth2 { userinfo_url, id_claim, .. } = &self.config.kind else {
            return Err(LobbyError::Internal("userinfo on an OpenID Connect provider".into()));
        };
        let response = self
            .http
            .get(userinfo_url)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|err| self.unreachable("its userinfo endpoint failed", error_chain(&err)))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(LobbyError::Unauthenticated(format!(
                "the userinfo endpoint of {:?} refused the access token it issued ({status}); check the provider's \
                 scopes (scopes=…)",
                self.name()
            )));
        }
        if !status.is_success() {
            return Err(self.unreachable("its userinfo endpoint failed", status));
        }
        let claims: serde_json::Value = response.json().await.map_err(|err| {
            LobbyError::Unauthenticated(format!("the userinfo of {:?} is not JSON: {err}", self.name()))
        })?;
        let subject = claim_text(&claims, id_claim).ok_or_else(|| {
            LobbyError::FailedPrecondition(format!(
                "the userinfo of identity provider {:?} has no {id_claim:?} to identify the person by; set \
                 id-claim=… in its --oauth2 spec",
                self.name()
            ))
        })?;
        Ok(ProvidedIdentity { subject, display_name: self.display_name(&claims) })
    }

    fn display_name(&self, claims: &serde_json::Value) -> String {
        self.config.name_claims.iter().find_map(|path| claim_text(claims, path)).unwrap_or_default()
    }
}

/// The asymmetric algorithms the provider advertises for ID tokens (RS256,
/// which every provider must support, when it advertises none of them).
fn allowed_algs(metadata: &Metadata) -> Vec<CoreJwsSigningAlgorithm> {
    let advertised: Vec<CoreJwsSigningAlgorithm> = metadata
        .id_token_signing_alg_values_supported()
        .iter()
        .filter(|alg| !alg.uses_shared_secret() && **alg != CoreJwsSigningAlgorithm::None)
        .cloned()
        .collect();
    if advertised.is_empty() { vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256] } else { advertised }
}

/// A claim at a dotted path (`user.login`) as text: strings as they are, numbers in decimal.
fn claim_text(claims: &serde_json::Value, path: &str) -> Option<String> {
    let value = path.split('.').try_fold(claims, |value, key| value.get(key))?;
    match value {
        serde_json::Value::String(text) if !text.is_empty() => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A JWT's segment `index` as JSON, unverified (for messages and for claims
/// read after the signature was checked).
fn segment(token: &str, index: usize) -> Option<serde_json::Value> {
    let part = token.split('.').nth(index)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn unverified_header(token: &str) -> Option<serde_json::Value> {
    segment(token, 0)
}

fn unverified_payload(token: &str) -> Option<serde_json::Value> {
    segment(token, 1)
}

fn redirect_url(uri: &str) -> Result<RedirectUrl, LobbyError> {
    RedirectUrl::new(uri.to_owned()).map_err(|err| LobbyError::invalid("redirect_uri", format!("is not a URL: {err}")))
}

fn checked_at_start(err: impl std::fmt::Display) -> LobbyError {
    LobbyError::Internal(format!("a provider URL checked at start no longer parses: {err}"))
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn describe_refusal(error: &str, description: Option<&String>) -> String {
    match description {
        Some(description) => format!("{error}: {description}"),
        None => error.to_owned(),
    }
}

/// An error and its sources, for messages (reqwest's own message omits the cause).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether `requested` is one of `allowed`: equal, or — for a loopback
/// entry without a port — equal but for the port (RFC 8252 §7.3: native
/// apps listen on any free port).
pub(crate) fn redirect_allowed(allowed: &[String], requested: &str) -> bool {
    let Ok(requested) = url::Url::parse(requested) else { return false };
    allowed.iter().any(|entry| {
        let Ok(entry) = url::Url::parse(entry) else { return false };
        if entry == requested {
            return true;
        }
        let loopback = matches!(entry.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
            || matches!(entry.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
        loopback
            && entry.port().is_none()
            && entry.scheme() == "http"
            && requested.scheme() == "http"
            && entry.host() == requested.host()
            && entry.path() == requested.path()
            && entry.query() == requested.query()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_allow_any_port_and_nothing_else() {
        let allowed = vec!["http://127.0.0.1/callback".to_owned(), "https://game.example/cb".to_owned()];
        assert!(redirect_allowed(&allowed, "http://127.0.0.1:54321/callback"));
        assert!(redirect_allowed(&allowed, "http://127.0.0.1/callback"));
        assert!(redirect_allowed(&allowed, "https://game.example/cb"));
        assert!(!redirect_allowed(&allowed, "https://game.example:8443/cb"), "only loopback entries allow any port");
        assert!(!redirect_allowed(&allowed, "http://127.0.0.1:54321/other"));
        assert!(!redirect_allowed(&allowed, "http://127.0.0.2:54321/callback"));
        assert!(!redirect_allowed(&allowed, "https://127.0.0.1:54321/callback"));
        assert!(!redirect_allowed(&allowed, "http://evil.example/callback"));
        assert!(!redirect_allowed(&allowed, "not a url"));
    }

    #[test]
    fn claims_are_found_at_dotted_paths() {
        let claims = serde_json::json!({"id": 4242, "login": "norminet", "user": {"name": "Nor Minet"}, "empty": ""});
        assert_eq!(claim_text(&claims, "id").as_deref(), Some("4242"));
        assert_eq!(claim_text(&claims, "login").as_deref(), Some("norminet"));
        assert_eq!(claim_text(&claims, "user.name").as_deref(), Some("Nor Minet"));
        assert_eq!(claim_text(&claims, "empty"), None);
        assert_eq!(claim_text(&claims, "user.missing"), None);
    }
}
