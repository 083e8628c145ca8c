//! Access tokens: EdDSA (Ed25519) JWTs, 15 minutes, each naming its signing
//! key in the `kid` header. Only the lobby holds private keys
//! ([`AccessSigningKeys`]); every other service holds public keys
//! ([`AccessTokenPublicKey`]) and checks a token offline with
//! [`AccessTokenVerifier`] (no database, no network), so it can verify
//! identities but never mint one. [`TokenInterceptor`] checks the token of
//! every gRPC request the lobby serves and stores the outcome as a [`Caller`];
//! handlers read it with [`require_caller`].
//!
//! Rotation with overlap: the lobby signs with the newest of its keys and
//! verifies with all of them, so a key that stopped signing stays trusted
//! until the tokens it signed have expired ([`ACCESS_TOKEN_TTL`]); then the
//! operator drops it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tonic::{Request, Status};

use crate::error::{AuthError, LobbyError};
use crate::request_span::record_player;

/// How long an access token lives.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// Clock difference tolerated between the lobby and a verifier, applied to
/// both `exp` and `nbf`: a token is accepted up to this long after it expired
/// and from this long before it becomes valid.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(30);

/// What an access token asserts. Only the lobby signs, so `name` is the
/// account's username as the lobby's database held it at issue time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The player id, as a decimal string (JWT `sub`).
    pub sub: String,
    /// The username at issue time.
    pub name: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds (the issue time).
    pub nbf: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

impl Claims {
    /// The player id in `sub`.
    pub fn player_id(&self) -> Result<u64, AuthError> {
        self.sub.parse().map_err(|_| AuthError::Invalid("subject is not a player id".into()))
    }
}

/// Why an access-token key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessKeyError {
    /// The text is not hexadecimal.
    #[error("{what} is not hex")]
    NotHex {
        /// Which key.
        what: String,
    },
    /// The key is not 32 bytes.
    #[error("{what} must be 32 bytes (64 hex digits), not {n_bytes}")]
    WrongLength {
        /// Which key.
        what: String,
        /// The bytes given.
        n_bytes: usize,
    },
    /// The bytes are not an Ed25519 public key.
    #[error("{what} is not an Ed25519 public key")]
    NotEd25519 {
        /// Which key.
        what: String,
    },
    /// A key set is empty.
    #[error("no access-token key given")]
    Empty,
    /// The same key is listed twice.
    #[error("access-token key {kid} is listed twice")]
    Duplicate {
        /// The key's id.
        kid: String,
    },
    /// The key file could not be read or written.
    #[error("access-token key file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// The IO error.
        reason: String,
    },
}

fn key_bytes(what: &str, text: &str) -> Result<[u8; 32], AccessKeyError> {
    let bytes = hex::decode(text.trim()).map_err(|_| AccessKeyError::NotHex { what: what.to_owned() })?;
    let n_bytes = bytes.len();
    bytes.try_into().map_err(|_| AccessKeyError::WrongLength { what: what.to_owned(), n_bytes })
}

/// The key id of `key`: the first 8 bytes of SHA-256 over the 32 public-key
/// bytes, in lowercase hex. Derived, so a key file or flag cannot name a key wrongly.
fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// An Ed25519 public key that verifies access tokens, with its key id.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessTokenPublicKey {
    kid: String,
    key: VerifyingKey,
}

impl std::fmt::Debug for AccessTokenPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokenPublicKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl AccessTokenPublicKey {
    /// Wraps `key`.
    pub fn new(key: VerifyingKey) -> Self {
        Self { kid: key_id(&key), key }
    }

    /// Reads the 64 hex digits [`AccessTokenPublicKey::to_hex`] writes (what
    /// `rally matchmaker --access-token-key` takes).
    pub fn from_hex(text: &str) -> Result<Self, AccessKeyError> {
        let what = "the access-token public key";
        let bytes = key_bytes(what, text)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| AccessKeyError::NotEd25519 { what: what.to_owned() })?;
        Ok(Self::new(key))
    }

    /// The 32 public-key bytes in lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// The id tokens signed by this key carry in their `kid` header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The Ed25519 key.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }
}

/// One Ed25519 private key that signs access tokens.
#[derive(Clone)]
pub struct AccessSigningKey {
    seed: SigningKey,
    public: AccessTokenPublicKey,
    encoding: EncodingKey,
}

impl std::fmt::Debug for AccessSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessSigningKey").field("kid", &self.public.kid).finish_non_exhaustive()
    }
}

impl AccessSigningKey {
    /// Wraps `key`.
    pub fn new(key: SigningKey) -> Self {
        // PKCS#8 DER is the form jsonwebtoken signs EdDSA with; encoding a
        // 32-byte seed into it cannot fail.
        let der = key.to_pkcs8_der().map(|der| der.as_bytes().to_vec()).unwrap_or_default();
        Self {
            public: AccessTokenPublicKey::new(key.verifying_key()),
            encoding: EncodingKey::from_ed_der(&der),
            seed: key,
        }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self::new(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The key whose 32-byte Ed25519 seed is `seed` (tests use fixed seeds).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self::new(SigningKey::from_bytes(&seed))
    }

    /// Reads a 32-byte Ed25519 seed written as 64 hex digits (`openssl rand -hex 32`).
    pub fn from_hex(text: &str) -> Result<Self, AccessKeyError> {
        Ok(Self::new(SigningKey::from_bytes(&key_bytes("an access-token signing key", text)?)))
    }

    /// The seed in lowercase hex (what a key file holds).
    pub fn to_hex(&self) -> String {
        hex::encode(self.seed.to_bytes())
    }

    /// The public half, for verifiers.
    pub fn public_key(&self) -> &AccessTokenPublicKey {
        &self.public
    }
}

/// The lobby's signing keys, oldest first: the newest signs, all of them verify.
#[derive(Debug, Clone)]
pub struct AccessSigningKeys {
    keys: Arc<[AccessSigningKey]>,
}

impl AccessSigningKeys {
    /// The keys `keys`, oldest first; refuses an empty list and repeated keys.
    pub fn new(keys: Vec<AccessSigningKey>) -> Result<Self, AccessKeyError> {
        if keys.is_empty() {
            return Err(AccessKeyError::Empty);
        }
        for (idx, key) in keys.iter().enumerate() {
            if keys[..idx].iter().any(|earlier| earlier.public.kid == key.public.kid) {
                return Err(AccessKeyError::Duplicate { kid: key.public.kid.clone() });
            }
        }
        Ok(Self { keys: keys.into() })
    }

    /// One fresh random key (tests and development).
    pub fn generate() -> Self {
        Self { keys: vec![AccessSigningKey::generate()].into() }
    }

    /// Parses a key file: one seed of 64 hex digits a line, oldest first
    /// (the last line signs); blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, AccessKeyError> {
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(AccessSigningKey::from_hex)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    /// The key file [`AccessSigningKeys::parse`] reads.
    pub fn to_file_text(&self) -> String {
        self.keys.iter().map(|key| format!("{}\n", key.to_hex())).collect()
    }

    /// The key that signs: the newest.
    pub fn signing_key(&self) -> &AccessSigningKey {
        // `new` refuses an empty list.
        &self.keys[self.keys.len() - 1]
    }

    /// Every public key, oldest first: what the other services must trust.
    pub fn public_keys(&self) -> Vec<AccessTokenPublicKey> {
        self.keys.iter().map(|key| key.public.clone()).collect()
    }

    /// A verifier trusting every key of the set.
    pub fn verifier(&self) -> AccessTokenVerifier {
        AccessTokenVerifier::new(self.public_keys())
    }

    /// A copy with `key` added as the newest (it signs from now on), for rotation.
    pub fn rotated(&self, key: AccessSigningKey) -> Result<Self, AccessKeyError> {
        Self::new(self.keys.iter().cloned().chain([key]).collect())
    }

    /// The development keys at `<data_dir>/access_signing_keys`, created (0600)
    /// with one random key on first use, so dev tokens survive restarts
    /// without a committed key.
    pub fn load_or_create_dev(data_dir: &Path) -> Result<Self, AccessKeyError> {
        let path = data_dir.join("access_signing_keys");
        let file_error =
            |err: std::io::Error| AccessKeyError::File { path: path.display().to_string(), reason: err.to_string() };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(file_error)?;
                let keys = Self::generate();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path).map_err(file_error)?;
                std::io::Write::write_all(&mut file, keys.to_file_text().as_bytes()).map_err(file_error)?;
                Ok(keys)
            }
            Err(err) => Err(file_error(err)),
        }
    }
}

impl From<AccessSigningKey> for AccessSigningKeys {
    /// A set of one key.
    fn from(key: AccessSigningKey) -> Self {
        Self { keys: vec![key].into() }
    }
}

/// Mints access tokens (in the lobby only).
#[derive(Debug, Clone)]
pub struct AccessTokenIssuer {
    keys: AccessSigningKeys,
}

impl AccessTokenIssuer {
    /// An issuer signing with the newest of `keys`.
    pub fn new(keys: AccessSigningKeys) -> Self {
        Self { keys }
    }

    /// Signs `claims` as they are (tests use this to forge expired tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        let key = self.keys.signing_key();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.public.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|err| AuthError::Invalid(format!("signing failed: {}", describe(err.kind()))))
    }

    /// A token for `player_id` valid for [`ACCESS_TOKEN_TTL`] from
    /// `now_unix_s`; returns it with its expiry in Unix milliseconds.
    pub fn issue(&self, player_id: u64, name: &str, now_unix_s: i64) -> Result<(String, i64), AuthError> {
        let exp = now_unix_s + ACCESS_TOKEN_TTL.as_secs() as i64;
        let claims =
            Claims { sub: player_id.to_string(), name: name.to_owned(), iat: now_unix_s, nbf: now_unix_s, exp };
        Ok((self.sign(&claims)?, exp.saturating_mul(1000)))
    }

    /// A verifier trusting every key this issuer has.
    pub fn verifier(&self) -> AccessTokenVerifier {
        self.keys.verifier()
    }
}

/// A short description of a jsonwebtoken error, never the library's own text
/// (which can quote serde's expectations back at the caller).
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "not a JWT: three base64url parts separated by '.'".into()
        }
        ErrorKind::Json(_) => "its header or claims are not the JSON the lobby issues".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            "signed with another algorithm; only EdDSA is accepted".into()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("the {} claim is missing", shown(claim)),
        ErrorKind::InvalidClaimFormat(claim) => format!("the {} claim has the wrong type", shown(claim)),
        ErrorKind::ImmatureSignature => "not valid yet (its nbf is in the future)".into(),
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::InvalidEddsaKey | ErrorKind::InvalidKeyFormat => "the key is not an Ed25519 key".into(),
        _ => "unreadable".into(),
    }
}

/// `text` quoted and cut to 32 characters, for echoing token contents.
fn shown(text: &str) -> String {
    format!("{:?}", text.chars().take(32).collect::<String>())
}

/// Checks access tokens offline: an EdDSA signature by a trusted key (looked
/// up by `kid`), `exp` and `nbf` within [`CLOCK_LEEWAY`], and the claims.
#[derive(Clone)]
pub struct AccessTokenVerifier {
    keys: Arc<HashMap<String, DecodingKey>>,
    validation: Validation,
}

impl std::fmt::Debug for AccessTokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("AccessTokenVerifier").field("kids", &kids).finish_non_exhaustive()
    }
}

impl AccessTokenVerifier {
    /// A verifier trusting `keys` (the lobby's current and overlapping old keys).
    pub fn new(keys: impl IntoIterator<Item = AccessTokenPublicKey>) -> Self {
        let keys = keys.into_iter().map(|key| (key.kid, DecodingKey::from_ed_der(key.key.as_bytes()))).collect();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = CLOCK_LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "sub"]);
        Self { keys: Arc::new(keys), validation }
    }

    /// The token's claims if it is genuine, current and names a player.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|err| match err.kind() {
            ErrorKind::Json(_) => AuthError::Invalid("its header is not an EdDSA JWT header with a kid".into()),
            kind => AuthError::Invalid(describe(kind)),
        })?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Invalid(describe(&ErrorKind::InvalidAlgorithm)));
        }
        let kid = header.kid.ok_or_else(|| AuthError::Invalid("it names no signing key (no kid header)".into()))?;
        let key = self.keys.get(&kid).ok_or_else(|| {
            AuthError::Invalid(format!(
                "signed with key {}, which this service does not trust (retired, or another deployment's)",
                shown(&kid)
            ))
        })?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|err| match err.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            kind => AuthError::Invalid(describe(kind)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> Claims {
        Claims { sub: "7".into(), name: "seven".into(), iat: now, nbf: now, exp: now + 900 }
    }

    #[test]
    fn keys_round_trip_through_hex_and_files() {
        let keys = AccessSigningKeys::generate().rotated(AccessSigningKey::generate()).expect("two keys");
        let parsed = AccessSigningKeys::parse(&format!("# rotated\n\n{}", keys.to_file_text())).expect("parses");
        assert_eq!(parsed.public_keys(), keys.public_keys());
        let public = &keys.public_keys()[0];
        assert_eq!(&AccessTokenPublicKey::from_hex(&public.to_hex()).expect("public hex"), public);
        assert_eq!(public.kid().len(), 16);
        assert!(matches!(AccessSigningKeys::parse("# nothing\n"), Err(AccessKeyError::Empty)));
        let twice = format!("{0}\n{0}\n", "11".repeat(32));
        assert!(matches!(AccessSigningKeys::parse(&twice), Err(AccessKeyError::Duplicate { .. })));
        for bad in ["zz", "abcd", "é"] {
            assert!(AccessSigningKey::from_hex(bad).is_err(), "{bad}");
            assert!(AccessTokenPublicKey::from_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rotation_signs_with_the_newest_key_and_still_trusts_the_old_one() {
        let old = AccessSigningKeys::generate();
        let old_token = AccessTokenIssuer::new(old.clone()).sign(&claims(now_unix_s())).expect("sign");
        let rotated = old.rotated(AccessSigningKey::generate()).expect("rotated");
        let issuer = AccessTokenIssuer::new(rotated.clone());
        let new_token = issuer.sign(&claims(now_unix_s())).expect("sign");
        let kid = |token: &str| jsonwebtoken::decode_header(token).expect("header").kid.expect("kid");
        assert_eq!(kid(&new_token), rotated.signing_key().public_key().kid());
        assert_ne!(kid(&new_token), kid(&old_token));
        let verifier = issuer.verifier();
        verifier.verify(&old_token).expect("the old key overlaps");
        verifier.verify(&new_token).expect("the new key signs");
        // Once the old key is dropped, its tokens are refused, by name.
        let without_old = AccessTokenVerifier::new([rotated.signing_key().public_key().clone()]);
        let err = without_old.verify(&old_token).expect_err("retired");
        assert!(err.to_string().contains("does not trust"), "{err}");
        // And the old set alone does not know the new key.
        assert!(old.verifier().verify(&new_token).is_err());
    }

    #[test]
    fn nbf_is_checked_with_the_same_leeway_as_exp() {
        let keys = AccessSigningKeys::generate();
        let issuer = AccessTokenIssuer::new(keys.clone());
        let verifier = keys.verifier();
        let now = now_unix_s();
        let leeway = CLOCK_LEEWAY.as_secs() as i64;
        let future = Claims { nbf: now + leeway + 60, ..claims(now) };
        let err = verifier.verify(&issuer.sign(&future).expect("sign")).expect_err("not valid yet");
        assert_eq!(err, AuthError::Invalid("not valid yet (its nbf is in the future)".into()));
        let skewed = Claims { nbf: now + leeway / 2, ..claims(now) };
        verifier.verify(&issuer.sign(&skewed).expect("sign")).expect("within the leeway");
        let expired = Claims { exp: now - leeway - 1, ..claims(now - 3600) };
        assert_eq!(verifier.verify(&issuer.sign(&expired).expect("sign")), Err(AuthError::Expired));
        let recent = Claims { exp: now - leeway / 2, ..claims(now - 3600) };
        verifier.verify(&issuer.sign(&recent).expect("sign")).expect("expired within the leeway");
    }

    #[test]
    fn refusals_are_short_and_never_quote_the_jwt_library() {
        let keys = AccessSigningKeys::generate();
        let genuine = AccessTokenIssuer::new(keys.clone()).sign(&claims(now_unix_s())).expect("sign");
        let payload = genuine.split('.').nth(1).expect("payload");
        let b64 = |json: &str| {
            // base64url without padding of a short ASCII header, by hand: the
            // test should not depend on the encoder under test.
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let bytes = json.as_bytes();
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk.iter().enumerate().fold(0_u32, |n, (idx, byte)| n | u32::from(*byte) << (16 - 8 * idx));
                for idx in 0..=chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * idx) & 63) as usize]));
                }
            }
            out
        };
        let verifier = keys.verifier();
        let cases = [
            (format!("{}.{payload}.", b64(r#"{"alg":"none","typ":"JWT"}"#)), "header is not an EdDSA JWT header"),
            (format!("{}.{payload}.sig", b64(r#"{"alg":"HS256","kid":"x"}"#)), "only EdDSA is accepted"),
            (format!("{}.{payload}.sig", b64(r#"{"alg":"EdDSA"}"#)), "no kid header"),
            ("garbage".to_owned(), "not a JWT"),
        ];
        for (token, needle) in cases {
            let message = verifier.verify(&token).expect_err("refused").to_string();
            assert!(message.contains(needle), "{token}: {message}");
            for leak in ["variant", "expected", "line ", "column"] {
                assert!(!message.contains(leak), "{token}: {message}");
            }
        }
    }
}
