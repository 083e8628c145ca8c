//! `rally.auth.v1.Auth`: accounts, logins and token rotation. Owns the
//! `accounts`, `refresh_families` and `refresh_tokens` tables, and (through
//! [`crate::identity`]) `account_identities` and `login_attempts`: logins by
//! OpenID Connect or OAuth2 providers, guests, and linked identities, each
//! ending in the same token pair as a password login.

use std::net::IpAddr;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use sqlx::Row as _;
use tonic::{Request, Response, Status};

use crate::db::{Db, now_ms, with_pool, with_tx};
use crate::error::LobbyError;
use crate::idempotency::IdempotencyKey;
use crate::identity::provider::{DevicePoll, ProvidedIdentity, redirect_allowed};
use crate::identity::store::{self, Attempt, ExternalIdentity, Flow};
use crate::identity::{GUEST, Identities, IdentityConfig, PASSWORD};
use crate::limits::{IpLimiter, SharedLimiter};
use crate::password::{MAX_PASSWORD_LEN, PasswordHasherPool, check_password_policy};
use crate::profile::ProfileStore;
use crate::proto::auth::{self as pb, auth_server};
use crate::replicas::RedisLink;
use crate::tokens::{AccessTokenIssuer, now_unix_s, require_caller};

/// How long a refresh token lives.
pub const REFRESH_TOKEN_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// Checks the username rules: 3–24 characters from `[A-Za-z0-9_-]`.
pub fn check_username(username: &str) -> Result<(), LobbyError> {
    let n_chars = username.chars().count();
    if !(3..=24).contains(&n_chars) {
        return Err(LobbyError::invalid("username", format!("must be 3 to 24 characters (got {n_chars})")));
    }
    if let Some(bad) = username.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(LobbyError::invalid(
            "username",
            format!("may only contain letters, digits, '_' and '-' (found {bad:?})"),
        ));
    }
    Ok(())
}

/// The Auth service.
#[derive(Debug, Clone)]
pub struct AuthService {
    inner: Arc<AuthInner>,
}

#[derive(Debug)]
struct AuthInner {
    db: Db,
    hasher: PasswordHasherPool,
    issuer: AccessTokenIssuer,
    profiles: ProfileStore,
    per_ip: IpLimiter,
    per_account: SharedLimiter<String>,
    identities: Identities,
}

impl AuthService {
    pub(crate) fn new(
        db: Db,
        hasher: PasswordHasherPool,
        issuer: AccessTokenIssuer,
        profiles: ProfileStore,
        limits: &crate::limits::LobbyLimitsConfig,
        redis: Option<&RedisLink>,
        identity: &IdentityConfig,
    ) -> Result<Self, LobbyError> {
        Ok(Self {
            inner: Arc::new(AuthInner {
                db,
                hasher,
                issuer,
                profiles,
                per_ip: IpLimiter::new("this IP's sign-ins", limits),
                per_account: SharedLimiter::new("this account's logins", "login", limits.login_per_account, redis),
                identities: Identities::new(identity)?,
            }),
        })
    }
}

fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_hex(n_bytes: usize) -> String {
    let mut bytes = vec![0_u8; n_bytes];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    hex::encode(bytes)
}

fn client_ip<T>(request: &Request<T>) -> IpAddr {
    request.remote_addr().map(|addr| addr.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// The longest PollDeviceLogin waits for approval.
pub const MAX_DEVICE_WAIT_MS: u32 = 20_000;

/// The least time one device poll gets, so that `wait_ms = 0` still asks the provider once.
const MIN_DEVICE_POLL_MS: i64 = 250;

fn duration_ms(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A login state or device attempt handle: what StartLogin or StartDeviceLogin answered.
fn check_handle(field: &'static str, handle: &str) -> Result<(), LobbyError> {
    if handle.is_empty() || handle.len() > 256 {
        return Err(LobbyError::invalid(field, "must be the value the lobby answered when the login started"));
    }
    Ok(())
}

fn check_token_field(field: &'static str, token: &str) -> Result<(), LobbyError> {
    if token.is_empty() {
        return Err(LobbyError::invalid(field, "is empty"));
    }
    if token.len() > 256 {
        return Err(LobbyError::invalid(field, "is too long to be a refresh token"));
    }
    Ok(())
}

impl AuthInner {
    /// Starts a new refresh family for `account_id` and mints a token pair.
    async fn new_session(&self, account_id: i64, username: &str) -> Result<pb::TokenPair, LobbyError> {
        let family_id = random_hex(16);
        let refresh_token = random_hex(32);
        let token_hash = sha256_hex(&refresh_token);
        let expires_at = now_ms() + REFRESH_TOKEN_TTL_MS;
        with_tx!(&self.db, |tx| {
            sqlx::query("INSERT INTO refresh_families (family_id, account_id, revoked) VALUES ($1, $2, 0)")
                .bind(&family_id)
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family_id, account_id, expires_at_ms, rotated) \
                 VALUES ($1, $2, $3, $4, 0)",
            )
            .bind(&token_hash)
            .bind(&family_id)
            .bind(account_id)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })?;
        self.token_pair(account_id, username, refresh_token)
    }

    fn token_pair(&self, account_id: i64, username: &str, refresh_token: String) -> Result<pb::TokenPair, LobbyError> {
        let (access_token, access_expires_at_ms) = self.issuer.issue(account_id as u64, username, now_unix_s())?;
        Ok(pb::TokenPair { access_token, access_expires_at_ms, refresh_token })
    }

    async fn register(&self, ip: IpAddr, request: pb::RegisterRequest) -> Result<pb::RegisterResponse, LobbyError> {
        self.per_ip.check(&ip)?;
        let key = IdempotencyKey::parse(&request.idempotency_key)?;
        check_username(&request.username)?;
        check_password_policy(&request.password)?;
        if request.password.eq_ignore_ascii_case(&request.username) {
            return Err(LobbyError::invalid("password", "must differ from the username"));
        }
        if let Some(key) = &key
            && let Some(response) = self.registered_with(key, &request).await?
        {
            return Ok(response);
        }
        let hash = self.hasher.hash(request.password.clone()).await?;
        let created_at = now_ms();
        let username = request.username.clone();
        let lower = username.to_ascii_lowercase();
        // None: the key was claimed meanwhile, by a concurrent retry.
        let created: Option<i64> = with_tx!(&self.db, |tx| {
            if let Some(key) = &key {
                // Claimed first: a concurrent retry (on any replica) waits
                // here for this transaction, then finds the key taken.
                let claimed = sqlx::query(
                    "INSERT INTO register_keys (idempotency_key, account_id) VALUES ($1, 0) ON CONFLICT DO NOTHING",
                )
                .bind(key.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if claimed == 0 {
                    return Ok(None);
                }
            }
            let row = sqlx::query(
                "INSERT INTO accounts (username, username_lower, password_hash, created_at_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(&username)
            .bind(&lower)
            .bind(&hash)
            .bind(created_at)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(account_id) = row.map(|row| row.try_get::<i64, _>("id")).transpose()? else {
                // Rolls the key's claim back with the transaction.
                return Err(LobbyError::AlreadyExists(format!("username {username:?} is taken; choose another")));
            };
            if let Some(key) = &key {
                sqlx::query("UPDATE register_keys SET account_id = $2 WHERE idempotency_key = $1")
                    .bind(key.as_str())
                    .bind(account_id)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(Some(account_id))
        })?;
        let account_id = match (created, &key) {
            (Some(account_id), _) => account_id,
            (None, Some(key)) => {
                return self.registered_with(key, &request).await?.ok_or_else(|| {
                    LobbyError::Internal(format!("idempotency key {key} is claimed but names no account"))
                });
            }
            (None, None) => return Err(LobbyError::Internal("a keyless registration found its key taken".into())),
        };
        self.profiles.create_profile(account_id as u64, &username, created_at).await?;
        let tokens = self.new_session(account_id, &username).await?;
        Ok(pb::RegisterResponse {
            account: Some(pb::Account { player_id: account_id as u64, username, created_at_ms: created_at }),
            tokens: Some(tokens),
        })
    }

    /// The answer to a Register retried with `key`: the account the key
    /// first created (with a fresh token pair) when the retry carries the
    /// same username and password; FAILED_PRECONDITION when it carries
    /// others; None when the key is new.
    async fn registered_with(
        &self,
        key: &IdempotencyKey,
        request: &pb::RegisterRequest,
    ) -> Result<Option<pb::RegisterResponse>, LobbyError> {
        let row: Option<(i64, String, String, i64)> = with_pool!(&self.db, |pool| {
            let row = sqlx::query(
                "SELECT a.id, a.username, a.password_hash, a.created_at_ms FROM register_keys k \
                 JOIN accounts a ON a.id = k.account_id WHERE k.idempotency_key = $1",
            )
            .bind(key.as_str())
            .fetch_optional(pool)
            .await?;
            Ok(match row {
                Some(row) => Some((
                    row.try_get("id")?,
                    row.try_get("username")?,
                    row.try_get("password_hash")?,
                    row.try_get("created_at_ms")?,
                )),
                None => None,
            })
        })?;
        let Some((account_id, username, hash, created_at_ms)) = row else { return Ok(None) };
        let different = || {
            LobbyError::FailedPrecondition(format!(
                "idempotency key {key} was used for a different registration; choose a new key for a new account"
            ))
        };
        if !username.eq_ignore_ascii_case(&request.username) {
            return Err(different());
        }
        if !self.hasher.verify_or_dummy(request.password.clone(), Some(hash)).await? {
            return Err(different());
        }
        // The first attempt may have stopped between the account and its profile.
        self.profiles.create_profile(account_id as u64, &username, created_at_ms).await?;
        let tokens = self.new_session(account_id, &username).await?;
        Ok(Some(pb::RegisterResponse {
            account: Some(pb::Account { player_id: account_id as u64, username, created_at_ms }),
            tokens: Some(tokens),
        }))
    }

    async fn login(&self, ip: IpAddr, request: pb::LoginRequest) -> Result<pb::TokenPair, LobbyError> {
        self.per_ip.check(&ip)?;
        let bad_login = || LobbyError::Unauthenticated("wrong username or password".into());
        if request.username.is_empty() || request.username.len() > 64 || request.password.len() > MAX_PASSWORD_LEN {
            return Err(bad_login());
        }
        let lower = request.username.to_ascii_lowercase();
        self.per_account.check(&lower).await?;
        let row: Option<(i64, String, String)> = with_pool!(&self.db, |pool| {
            let row = sqlx::query("SELECT id, username, password_hash FROM accounts WHERE username_lower = $1")
                .bind(&lower)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(row) => Some((row.try_get("id")?, row.try_get("username")?, row.try_get("password_hash")?)),
                None => None,
            })
        })?;
        // An unknown username costs the same argon2 verification as a wrong
        // password, so the answer's timing does not say which names exist.
        // An account without a password (a guest, or external logins only)
        // has an empty hash; it answers like an unknown username.
        let (account, hash) = match row {
            Some((account_id, username, hash)) if !hash.is_empty() => (Some((account_id, username)), Some(hash)),
            _ => (None, None),
        };
        let matches = self.hasher.verify_or_dummy(request.password, hash).await?;
        match account {
            Some((account_id, username)) if matches => self.new_session(account_id, &username).await,
            _ => Err(bad_login()),
        }
    }

    async fn refresh(&self, request: pb::RefreshRequest) -> Result<pb::TokenPair, LobbyError> {
        check_token_field("refresh_token", &request.refresh_token)?;
        let old_hash = sha256_hex(&request.refresh_token);
        let new_token = random_hex(32);
        let new_hash = sha256_hex(&new_token);
        let now = now_ms();
        // The inner result lets a detected reuse commit its revocation and still fail.
        let outcome: Result<(i64, String), LobbyError> = with_tx!(&self.db, |tx| {
            let row = sqlx::query(
                "SELECT t.account_id, t.family_id, t.rotated, t.expires_at_ms, f.revoked, a.username \
                 FROM refresh_tokens t JOIN refresh_families f ON f.family_id = t.family_id \
                 JOIN accounts a ON a.id = t.account_id WHERE t.token_hash = $1",
            )
            .bind(&old_hash)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(Err(LobbyError::Unauthenticated("unknown refresh token; log in again".into())));
            };
            let account_id: i64 = row.try_get("account_id")?;
            let family_id: String = row.try_get("family_id")?;
            let rotated: i64 = row.try_get("rotated")?;
            let expires_at: i64 = row.try_get("expires_at_ms")?;
            let revoked: i64 = row.try_get("revoked")?;
            let username: String = row.try_get("username")?;
            if revoked != 0 {
                return Ok(Err(LobbyError::Unauthenticated("refresh token revoked; log in again".into())));
            }
            let claimed = sqlx::query("UPDATE refresh_tokens SET rotated = 1 WHERE token_hash = $1 AND rotated = 0")
                .bind(&old_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if rotated != 0 || claimed != 1 {
                sqlx::query("UPDATE refresh_families SET revoked = 1 WHERE family_id = $1")
                    .bind(&family_id)
                    .execute(&mut *tx)
                    .await?;
                tracing::warn!(account_id, "refresh token reuse; family revoked");
                return Ok(Err(LobbyError::Unauthenticated(
                    "refresh token was already used; every session from that login is revoked, log in again".into(),
                )));
            }
            if expires_at <= now {
                return Ok(Err(LobbyError::Unauthenticated("refresh token expired; log in again".into())));
            }
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family_id, account_id, expires_at_ms, rotated) \
                 VALUES ($1, $2, $3, $4, 0)",
            )
            .bind(&new_hash)
            .bind(&family_id)
            .bind(account_id)
            .bind(now + REFRESH_TOKEN_TTL_MS)
            .execute(&mut *tx)
            .await?;
            Ok(Ok((account_id, username)))
        })?;
        let (account_id, username) = outcome?;
        self.token_pair(account_id, &username, new_token)
    }

    async fn logout(&self, request: pb::LogoutRequest) -> Result<(), LobbyError> {
        check_token_field("refresh_token", &request.refresh_token)?;
        let hash = sha256_hex(&request.refresh_token);
        let revoked: u64 = with_pool!(&self.db, |pool| {
            Ok(sqlx::query(
                "UPDATE refresh_families SET revoked = 1 WHERE family_id = \
                 (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
            )
            .bind(&hash)
            .execute(pool)
            .await?
            .rows_affected())
        })?;
        if revoked == 0 {
            return Err(LobbyError::Unauthenticated("unknown refresh token".into()));
        }
        Ok(())
    }

    async fn me(&self, player_id: u64) -> Result<pb::Account, LobbyError> {
        store::account(&self.db, crate::db::db_id(player_id)).await
    }

    /// Ends any external or guest login: the identity's account (created or
    /// linked as needed) and a fresh token pair.
    async fn sign_in_with(
        &self,
        provider: &str,
        who: ProvidedIdentity,
        link: Option<i64>,
    ) -> Result<pb::LoginResponse, LobbyError> {
        let hint = if who.display_name.is_empty() { provider.to_owned() } else { who.display_name.clone() };
        let identity =
            ExternalIdentity { provider: provider.to_owned(), subject: who.subject, display_name: who.display_name };
        let signed_in = store::sign_in(&self.db, &identity, &hint, link).await?;
        let account = signed_in.account;
        if signed_in.created {
            self.profiles.create_profile(account.player_id, &account.username, account.created_at_ms).await?;
        }
        let tokens = self.new_session(account.player_id as i64, &account.username).await?;
        Ok(pb::LoginResponse {
            account: Some(account),
            tokens: Some(tokens),
            created: signed_in.created,
            linked: signed_in.linked,
        })
    }

    async fn start_login(
        &self,
        ip: IpAddr,
        caller: Option<u64>,
        request: pb::StartLoginRequest,
    ) -> Result<pb::StartLoginResponse, LobbyError> {
        self.per_ip.check(&ip)?;
        let provider = self.identities.provider(&request.provider)?;
        let allowed = &provider.config.redirect_uris;
        if !redirect_allowed(allowed, &request.redirect_uri) {
            return Err(LobbyError::invalid(
                "redirect_uri",
                format!(
                    "{:?} is not one identity provider {:?} allows; use one of: {} (a loopback entry without a port \
                     allows any port)",
                    request.redirect_uri,
                    request.provider,
                    allowed.join(", ")
                ),
            ));
        }
        let state = random_hex(32);
        let authorization = provider.authorize(&request.redirect_uri, &state).await?;
        let expires_at_ms = now_ms() + duration_ms(self.identities.attempt_ttl);
        let attempt = Attempt {
            provider: request.provider,
            flow: Flow::Code,
            redirect_uri: request.redirect_uri,
            pkce_verifier: authorization.pkce_verifier,
            nonce: authorization.nonce,
            device_json: String::new(),
            link_account_id: caller.map(|id| id as i64),
            expires_at_ms,
            next_poll_at_ms: 0,
            consumed: false,
        };
        store::insert_attempt(&self.db, &sha256_hex(&state), &attempt).await?;
        Ok(pb::StartLoginResponse { authorization_url: authorization.url, state, expires_at_ms })
    }

    async fn finish_login(&self, request: pb::FinishLoginRequest) -> Result<pb::LoginResponse, LobbyError> {
        check_handle("state", &request.state)?;
        if request.code.is_empty() || request.code.len() > 4096 {
            return Err(LobbyError::invalid("code", "must be the 1 to 4096 characters the provider redirected with"));
        }
        let handle = sha256_hex(&request.state);
        let attempt =
            store::attempt(&self.db, &handle).await?.filter(|attempt| attempt.flow == Flow::Code).ok_or_else(|| {
                LobbyError::Unauthenticated(
                    "unknown login state: this lobby did not start that login (or it ended over an hour ago); start \
                     the login again with Auth.StartLogin"
                        .into(),
                )
            })?;
        if attempt.redirect_uri != request.redirect_uri {
            return Err(LobbyError::invalid(
                "redirect_uri",
                format!(
                    "{:?} differs from the one this login was started with ({:?}); send the URI the provider \
                     redirected to",
                    request.redirect_uri, attempt.redirect_uri
                ),
            ));
        }
        let used = || {
            LobbyError::Unauthenticated(
                "this login was already finished: a state and its code are redeemed once; start a new login".into(),
            )
        };
        if attempt.consumed {
            return Err(used());
        }
        if attempt.expires_at_ms <= now_ms() {
            return Err(LobbyError::Unauthenticated(format!(
                "this login expired (a started login lasts {} s); start a new one",
                self.identities.attempt_ttl.as_secs()
            )));
        }
        if !store::claim_attempt(&self.db, &handle).await? {
            return Err(used());
        }
        let provider = self.identities.provider(&attempt.provider)?;
        let who = provider.redeem(&request.code, &attempt.redirect_uri, &attempt.pkce_verifier, &attempt.nonce).await?;
        self.sign_in_with(&attempt.provider, who, attempt.link_account_id).await
    }

    async fn start_device_login(
        &self,
        ip: IpAddr,
        caller: Option<u64>,
        request: pb::StartDeviceLoginRequest,
    ) -> Result<pb::StartDeviceLoginResponse, LobbyError> {
        self.per_ip.check(&ip)?;
        let provider = self.identities.provider(&request.provider)?;
        let details = provider.start_device().await?;
        let now = now_ms();
        let expires_at_ms = now + duration_ms(details.expires_in().min(std::time::Duration::from_secs(3600)));
        let interval_ms = duration_ms(details.interval());
        let device_json = serde_json::to_string(&details)
            .map_err(|err| LobbyError::Internal(format!("a device authorization does not serialize: {err}")))?;
        let handle = random_hex(32);
        let attempt = Attempt {
            provider: request.provider,
            flow: Flow::Device,
            redirect_uri: String::new(),
            pkce_verifier: String::new(),
            nonce: String::new(),
            device_json,
            link_account_id: caller.map(|id| id as i64),
            expires_at_ms,
            next_poll_at_ms: now + interval_ms,
            consumed: false,
        };
        store::insert_attempt(&self.db, &sha256_hex(&handle), &attempt).await?;
        Ok(pb::StartDeviceLoginResponse {
            attempt: handle,
            user_code: details.user_code().secret().clone(),
            verification_uri: details.verification_uri().to_string(),
            verification_uri_complete: details
                .verification_uri_complete()
                .map(|uri| uri.secret().clone())
                .unwrap_or_default(),
            expires_at_ms,
            interval_ms: u32::try_from(interval_ms).unwrap_or(u32::MAX),
        })
    }

    async fn poll_device_login(
        &self,
        request: pb::PollDeviceLoginRequest,
    ) -> Result<pb::PollDeviceLoginResponse, LobbyError> {
        use std::time::Duration;
        check_handle("attempt", &request.attempt)?;
        let wait = Duration::from_millis(u64::from(request.wait_ms.min(MAX_DEVICE_WAIT_MS)));
        let started = now_ms();
        let handle = sha256_hex(&request.attempt);
        let attempt =
            store::attempt(&self.db, &handle).await?.filter(|attempt| attempt.flow == Flow::Device).ok_or_else(
                || LobbyError::Unauthenticated("unknown device login; start one with Auth.StartDeviceLogin".into()),
            )?;
        let finished = || {
            LobbyError::Unauthenticated("this device login already finished; start a new one to log in again".into())
        };
        let expired = || {
            LobbyError::DeadlineExceeded(
                "the code expired before it was approved; start a new device login (Auth.StartDeviceLogin)".into(),
            )
        };
        if attempt.consumed {
            return Err(finished());
        }
        if attempt.expires_at_ms <= started {
            return Err(expired());
        }
        let pending = |interval_ms: i64| {
            Ok(pb::PollDeviceLoginResponse {
                outcome: Some(pb::poll_device_login_response::Outcome::Pending(pb::DevicePending {
                    interval_ms: u32::try_from(interval_ms.max(0)).unwrap_or(u32::MAX),
                })),
            })
        };
        let details: oauth2::StandardDeviceAuthorizationResponse = serde_json::from_str(&attempt.device_json)
            .map_err(|err| LobbyError::Internal(format!("a stored device authorization does not parse: {err}")))?;
        let interval_ms = duration_ms(details.interval());
        // The provider's interval holds across calls (and replicas): wait for
        // the next allowed poll if the caller's wait covers it.
        let until_poll = attempt.next_poll_at_ms - started;
        if until_poll > 0 {
            if until_poll > duration_ms(wait) {
                return pending(interval_ms);
            }
            tokio::time::sleep(Duration::from_millis(until_poll as u64)).await;
        }
        let now = now_ms();
        let left_ms = (started + duration_ms(wait)).min(attempt.expires_at_ms) - now;
        // Long enough for one exchange with the provider even when wait is 0.
        let budget = Duration::from_millis(left_ms.max(MIN_DEVICE_POLL_MS) as u64);
        let provider = self.identities.provider(&attempt.provider)?;
        match provider.poll_device(&details, budget).await? {
            DevicePoll::Pending(interval) => {
                let now = now_ms();
                store::set_next_poll(&self.db, &handle, now + duration_ms(interval)).await?;
                if now >= attempt.expires_at_ms {
                    return Err(expired());
                }
                pending(duration_ms(interval))
            }
            DevicePoll::Done(who) => {
                if !store::claim_attempt(&self.db, &handle).await? {
                    return Err(finished());
                }
                let login = self.sign_in_with(&attempt.provider, who, attempt.link_account_id).await?;
                Ok(pb::PollDeviceLoginResponse { outcome: Some(pb::poll_device_login_response::Outcome::Login(login)) })
            }
        }
    }

    async fn login_guest(&self, ip: IpAddr, request: pb::LoginGuestRequest) -> Result<pb::LoginResponse, LobbyError> {
        self.per_ip.check(&ip)?;
        let secret = &request.device_secret;
        if !(32..=256).contains(&secret.len()) || !secret.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(LobbyError::invalid(
                "device_secret",
                format!(
                    "must be 32 to 256 printable ASCII characters, U+0021 to U+007E (got {} bytes); generate one \
                     random secret per device and keep it",
                    secret.len()
                ),
            ));
        }
        let subject = sha256_hex(secret);
        self.per_account.check(&format!("{GUEST}:{}", &subject[..16])).await?;
        self.sign_in_with(GUEST, ProvidedIdentity { subject, display_name: String::new() }, None).await
    }

    async fn set_password(&self, player_id: u64, request: pb::SetPasswordRequest) -> Result<pb::Account, LobbyError> {
        let username = (!request.username.is_empty()).then_some(request.username.as_str());
        if let Some(username) = username {
            check_username(username)?;
        }
        check_password_policy(&request.password)?;
        let current = store::account(&self.db, player_id as i64).await?;
        if request.password.eq_ignore_ascii_case(username.unwrap_or(&current.username)) {
            return Err(LobbyError::invalid("password", "must differ from the username"));
        }
        let hash = self.hasher.hash(request.password).await?;
        store::set_password(&self.db, player_id as i64, username, &hash).await
    }

    async fn unlink(
        &self,
        player_id: u64,
        request: pb::UnlinkRequest,
    ) -> Result<pb::ListIdentitiesResponse, LobbyError> {
        let method = request.provider.as_str();
        if method.is_empty() || method.len() > 32 {
            return Err(LobbyError::invalid(
                "provider",
                format!("must name a login method: {PASSWORD:?}, {GUEST:?} or a provider (Auth.ListIdentities)"),
            ));
        }
        store::unlink(&self.db, player_id as i64, method).await?;
        store::identities(&self.db, player_id as i64).await
    }
}

#[tonic::async_trait]
impl auth_server::Auth for AuthService {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let ip = client_ip(&request);
        Ok(Response::new(self.inner.register(ip, request.into_inner()).await?))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::TokenPair>, Status> {
        let ip = client_ip(&request);
        Ok(Response::new(self.inner.login(ip, request.into_inner()).await?))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::TokenPair>, Status> {
        Ok(Response::new(self.inner.refresh(request.into_inner()).await?))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        self.inner.logout(request.into_inner()).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn me(&self, request: Request<pb::MeRequest>) -> Result<Response<pb::Account>, Status> {
        let (player_id, _) = require_caller(&request)?;
        Ok(Response::new(self.inner.me(player_id).await?))
    }

    async fn list_providers(
        &self,
        _request: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        Ok(Response::new(pb::ListProvidersResponse { providers: self.inner.identities.list().await }))
    }

    async fn start_login(
        &self,
        request: Request<pb::StartLoginRequest>,
    ) -> Result<Response<pb::StartLoginResponse>, Status> {
        let ip = client_ip(&request);
        let caller = if request.get_ref().link { Some(require_caller(&request)?.0) } else { None };
        Ok(Response::new(self.inner.start_login(ip, caller, request.into_inner()).await?))
    }

    async fn finish_login(
        &self,
        request: Request<pb::FinishLoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        Ok(Response::new(self.inner.finish_login(request.into_inner()).await?))
    }

    async fn start_device_login(
        &self,
        request: Request<pb::StartDeviceLoginRequest>,
    ) -> Result<Response<pb::StartDeviceLoginResponse>, Status> {
        let ip = client_ip(&request);
        let caller = if request.get_ref().link { Some(require_caller(&request)?.0) } else { None };
        Ok(Response::new(self.inner.start_device_login(ip, caller, request.into_inner()).await?))
    }

    async fn poll_device_login(
        &self,
        request: Request<pb::PollDeviceLoginRequest>,
    ) -> Result<Response<pb::PollDeviceLoginResponse>, Status> {
        Ok(Response::new(self.inner.poll_device_login(request.into_inner()).await?))
    }

    async fn login_guest(
        &self,
        request: Request<pb::LoginGuestRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let ip = client_ip(&request);
        Ok(Response::new(self.inner.login_guest(ip, request.into_inner()).await?))
    }

    async fn set_password(&self, request: Request<pb::SetPasswordRequest>) -> Result<Response<pb::Account>, Status> {
        let (player_id, _) = require_caller(&request)?;
        Ok(Response::new(self.inner.set_password(player_id, request.into_inner()).await?))
    }

    async fn list_identities(
        &self,
        request: Request<pb::ListIdentitiesRequest>,
    ) -> Result<Response<pb::ListIdentitiesResponse>, Status> {
        let (player_id, _) = require_caller(&request)?;
        Ok(Response::new(store::identities(&self.inner.db, player_id as i64).await?))
    }

    async fn unlink(
        &self,
        request: Request<pb::UnlinkRequest>,
    ) -> Result<Response<pb::ListIdentitiesResponse>, Status> {
        let (player_id, _) = require_caller(&request)?;
        Ok(Response::new(self.inner.unlink(player_id, request.into_inner()).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::PasswordHashConfig;
    use crate::tokens::AccessSigningKeys;

    #[tokio::test]
    async fn a_login_for_an_unknown_username_runs_argon2_like_a_wrong_password() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("lobby.db").display())).await.expect("db");
        let hasher = PasswordHasherPool::new(PasswordHashConfig { memory_kib: 1024, iterations: 1, max_concurrent: 1 })
            .expect("hasher");
        let issuer = AccessTokenIssuer::new(AccessSigningKeys::generate());
        let limits = crate::limits::LobbyLimitsConfig::default();
        let identity = IdentityConfig::default();
        let auth = AuthService::new(
            db.clone(),
            hasher.clone(),
            issuer,
            ProfileStore::new(db.clone()),
            &limits,
            None,
            &identity,
        )
        .expect("no providers to check");
        let ip = IpAddr::from([127, 0, 0, 1]);
        let password = "correct horse battery";
        let register =
            pb::RegisterRequest { username: "ivan".into(), password: password.into(), idempotency_key: String::new() };
        auth.inner.register(ip, register).await.expect("registered");
        let login =
            |username: &str, password: &str| pb::LoginRequest { username: username.into(), password: password.into() };

        let before = hasher.n_verified();
        let wrong = auth.inner.login(ip, login("ivan", "not the password")).await.expect_err("wrong password");
        assert_eq!(hasher.n_verified(), before + 1);
        let unknown = auth.inner.login(ip, login("nobody", password)).await.expect_err("unknown user");
        assert_eq!(hasher.n_verified(), before + 2, "an unknown username runs argon2 too");
        assert_eq!(wrong.to_string(), unknown.to_string());
        auth.inner.login(ip, login("IVAN", password)).await.expect("the right password");
        db.close().await;
    }

    #[test]
    fn usernames_follow_the_rules() {
        assert!(check_username("ab").is_err());
        assert!(check_username(&"a".repeat(25)).is_err());
        assert!(check_username("bob'; DROP TABLE accounts;--").is_err());
        assert!(check_username("élan").is_err());
        assert!(check_username("Player_One-2").is_ok());
    }
}
