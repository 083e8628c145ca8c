//! Access tokens: HS256 JWTs, 15 minutes. [`AccessTokenVerifier`] checks one
//! offline (no database, no network), so other services call it directly.
//! [`TokenInterceptor`] checks the token of every gRPC request the lobby serves
//! and stores the outcome as a [`Caller`]; handlers read it with [`require_caller`].

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

use crate::error::{AuthError, LobbyError};
use crate::request_span::record_player;

/// How long an access token lives.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// The shortest signing key accepted (HS256 wants at least the hash size).
pub const MIN_SECRET_LEN: usize = 32;

/// What an access token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The player id, as a decimal string (JWT `sub`).
    pub sub: String,
    /// The username at issue time.
    pub name: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

impl Claims {
    /// The player id in `sub`.
    pub fn player_id(&self) -> Result<u64, AuthError> {
        self.sub.parse().map_err(|_| AuthError::Invalid("subject is not a player id".into()))
    }
}

/// A validated HS256 signing secret.
#[derive(Clone)]
pub struct JwtSecret(Arc<[u8]>);

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtSecret(..)")
    }
}

impl JwtSecret {
    /// Wraps `bytes`; refuses keys shorter than [`MIN_SECRET_LEN`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, String> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(format!("JWT secret is {} bytes; it needs at least {MIN_SECRET_LEN}", bytes.len()));
        }
        Ok(Self(bytes.into()))
    }

    /// A fresh random 64-byte secret.
    pub fn random() -> Self {
        use rand::RngCore as _;
        let mut bytes = vec![0_u8; 64];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes.into())
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Mints access tokens.
#[derive(Clone)]
pub struct AccessTokenIssuer {
    key: EncodingKey,
}

impl std::fmt::Debug for AccessTokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessTokenIssuer(..)")
    }
}

impl AccessTokenIssuer {
    /// An issuer signing with `secret`.
    pub fn new(secret: &JwtSecret) -> Self {
        Self { key: EncodingKey::from_secret(secret.as_bytes()) }
    }

    /// Signs `claims` as they are (tests use this to forge expired tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.key)
            .map_err(|err| AuthError::Invalid(err.to_string()))
    }

    /// A token for `player_id` valid for [`ACCESS_TOKEN_TTL`] from `now_unix_s`.
    pub fn issue(&self, player_id: u64, name: &str, now_unix_s: i64) -> Result<(String, i64), AuthError> {
        let exp = now_unix_s + ACCESS_TOKEN_TTL.as_secs() as i64;
        let claims = Claims { sub: player_id.to_string(), name: name.to_owned(), iat: now_unix_s, exp };
        Ok((self.sign(&claims)?, exp))
    }
}

/// Checks access tokens offline: signature (HS256 only), expiry, claims.
#[derive(Clone)]
pub struct AccessTokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for AccessTokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessTokenVerifier(..)")
    }
}

impl AccessTokenVerifier {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: &JwtSecret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self { key: DecodingKey::from_secret(secret.as_bytes()), validation }
    }

    /// The token's claims if it is genuine and unexpired.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                _ => AuthError::Invalid(err.to_string()),
            })?;
        data.claims.player_id()?;
        Ok(data.claims)
    }
}

/// The caller as the token interceptor found it, stored in request extensions.
#[derive(Debug, Clone)]
pub struct Caller(pub Result<Claims, AuthError>);

/// Reads the authenticated caller that [`TokenInterceptor`] stored.
pub fn require_caller<T>(request: &Request<T>) -> Result<(u64, Claims), LobbyError> {
    let caller = request.extensions().get::<Caller>().ok_or(AuthError::Missing)?;
    let claims = caller.0.clone()?;
    Ok((claims.player_id()?, claims))
}

/// The one interceptor that validates access tokens. `required` services
/// (Profile, Chat) refuse a request without a valid token; on Auth, only `Me`
/// needs one, so there it records the outcome and `Me` checks it.
#[derive(Debug, Clone)]
pub struct TokenInterceptor {
    verifier: AccessTokenVerifier,
    required: bool,
}

impl TokenInterceptor {
    /// An interceptor verifying with `verifier`.
    pub fn new(verifier: AccessTokenVerifier, required: bool) -> Self {
        Self { verifier, required }
    }
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let outcome = match request.metadata().get("authorization") {
            None => Err(AuthError::Missing),
            Some(value) => match value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
                Some(token) => self.verifier.verify(token.trim()),
                None => Err(AuthError::Invalid("authorization metadata is not `Bearer <token>`".into())),
            },
        };
        match &outcome {
            Ok(claims) => {
                if let Ok(player_id) = claims.player_id() {
                    record_player(player_id);
                }
            }
            Err(err) if self.required => return Err(LobbyError::Token(err.clone()).into()),
            Err(_) => {}
        }
        request.extensions_mut().insert(Caller(outcome));
        Ok(request)
    }
}

/// Unix seconds now.
pub(crate) fn now_unix_s() -> i64 {
    crate::db::now_ms() / 1000
}
