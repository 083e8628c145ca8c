//! The identity tables: `account_identities` (which account each external
//! identity logs in to) and `login_attempts` (logins started at a provider,
//! finished by whichever replica the client reaches next). Auth owns both.

use sqlx::Row as _;

use crate::db::{Db, now_ms, with_pool, with_tx};
use crate::error::LobbyError;
use crate::proto::auth as pb;

/// The login method name of guest accounts (the device secret).
pub const GUEST: &str = "guest";

/// The login method name of an account's password.
pub const PASSWORD: &str = "password";

/// Which flow an attempt belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Authorization code with PKCE.
    Code,
    /// Device authorization (RFC 8628).
    Device,
}

impl Flow {
    fn as_str(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Device => "device",
        }
    }
}

/// A started login as stored.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub provider: String,
    pub flow: Flow,
    pub redirect_uri: String,
    pub pkce_verifier: String,
    pub nonce: String,
    pub device_json: String,
    pub link_account_id: Option<i64>,
    pub expires_at_ms: i64,
    pub next_poll_at_ms: i64,
    pub consumed: bool,
}

/// Stores a new attempt under `handle_hash`, and drops attempts that expired
/// over an hour ago (nothing else reads them).
pub(crate) async fn insert_attempt(db: &Db, handle_hash: &str, attempt: &Attempt) -> Result<(), LobbyError> {
    let now = now_ms();
    with_pool!(db, |pool| {
        sqlx::query("DELETE FROM login_attempts WHERE expires_at_ms < $1").bind(now - 3_600_000).execute(pool).await?;
        sqlx::query(
            "INSERT INTO login_attempts (handle_hash, provider, flow, redirect_uri, pkce_verifier, nonce, \
             device_json, link_account_id, expires_at_ms, next_poll_at_ms, consumed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0)",
        )
        .bind(handle_hash)
        .bind(&attempt.provider)
        .bind(attempt.flow.as_str())
        .bind(&attempt.redirect_uri)
        .bind(&attempt.pkce_verifier)
        .bind(&attempt.nonce)
        .bind(&attempt.device_json)
        .bind(attempt.link_account_id)
        .bind(attempt.expires_at_ms)
        .bind(attempt.next_poll_at_ms)
        .execute(pool)
        .await?;
        Ok(())
    })
}

/// The attempt stored under `handle_hash`, if any.
pub(crate) async fn attempt(db: &Db, handle_hash: &str) -> Result<Option<Attempt>, LobbyError> {
    with_pool!(db, |pool| {
        let row = sqlx::query(
            "SELECT provider, flow, redirect_uri, pkce_verifier, nonce, device_json, link_account_id, \
             expires_at_ms, next_poll_at_ms, consumed FROM login_attempts WHERE handle_hash = $1",
        )
        .bind(handle_hash)
        .fetch_optional(pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let flow: String = row.try_get("flow")?;
        Ok(Some(Attempt {
            provider: row.try_get("provider")?,
            flow: if flow == "device" { Flow::Device } else { Flow::Code },
            redirect_uri: row.try_get("redirect_uri")?,
            pkce_verifier: row.try_get("pkce_verifier")?,
            nonce: row.try_get("nonce")?,
            device_json: row.try_get("device_json")?,
            link_account_id: row.try_get("link_account_id")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
            next_poll_at_ms: row.try_get("next_poll_at_ms")?,
            consumed: row.try_get::<i64, _>("consumed")? != 0,
        }))
    })
}

/// Marks the attempt used; false when another call (on any replica) did first.
pub(crate) async fn claim_attempt(db: &Db, handle_hash: &str) -> Result<bool, LobbyError> {
    with_pool!(db, |pool| {
        let claimed = sqlx::query("UPDATE login_attempts SET consumed = 1 WHERE handle_hash = $1 AND consumed = 0")
            .bind(handle_hash)
            .execute(pool)
            .await?
            .rows_affected();
        Ok(claimed == 1)
    })
}

/// When a device attempt may next poll the provider.
pub(crate) async fn set_next_poll(db: &Db, handle_hash: &str, at_ms: i64) -> Result<(), LobbyError> {
    with_pool!(db, |pool| {
        sqlx::query("UPDATE login_attempts SET next_poll_at_ms = $2 WHERE handle_hash = $1")
            .bind(handle_hash)
            .bind(at_ms)
            .execute(pool)
            .await?;
        Ok(())
    })
}

/// An identity a provider vouched for.
#[derive(Debug, Clone)]
pub(crate) struct ExternalIdentity {
    pub provider: String,
    pub subject: String,
    pub display_name: String,
}

/// The account a login ended on.
#[derive(Debug, Clone)]
pub(crate) struct SignedIn {
    pub account: pb::Account,
    /// The login created the account (it needs a profile).
    pub created: bool,
    /// For a link: the identity added.
    pub linked: Option<pb::Identity>,
}

enum Outcome {
    Existing(i64),
    Created(i64),
    Linked(i64),
    /// A concurrent first login with the same identity won; look again.
    Raced,
}

/// Logs in with `identity`: to the account it is linked to, or to a new
/// account named after `username_hint` — or, with `link`, links it to that
/// account. ALREADY_EXISTS when linking an identity another account has, or
/// a second identity of one provider.
pub(crate) async fn sign_in(
    db: &Db,
    identity: &ExternalIdentity,
    username_hint: &str,
    link: Option<i64>,
) -> Result<SignedIn, LobbyError> {
    let now = now_ms();
    let provider = identity.provider.as_str();
    for _ in 0..3 {
        let outcome: Outcome = with_tx!(db, |tx| {
            let owner: Option<i64> =
                sqlx::query_scalar("SELECT account_id FROM account_identities WHERE provider = $1 AND subject = $2")
                    .bind(provider)
                    .bind(&identity.subject)
                    .fetch_optional(&mut *tx)
                    .await?;
            match (owner, link) {
                (Some(owner), Some(me)) if owner == me => Ok(Outcome::Linked(me)),
                (Some(_), Some(_)) => Err(LobbyError::AlreadyExists(format!(
                    "this {provider} identity is linked to another rally account; log in with it and unlink it \
                     there (Auth.Unlink) before linking it here"
                ))),
                (Some(owner), None) => Ok(Outcome::Existing(owner)),
                (None, Some(me)) => {
                    let has_one: Option<String> = sqlx::query_scalar(
                        "SELECT subject FROM account_identities WHERE account_id = $1 AND provider = $2",
                    )
                    .bind(me)
                    .bind(provider)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if has_one.is_some() {
                        return Err(LobbyError::AlreadyExists(format!(
                            "your account already has a {provider} identity; unlink it first (Auth.Unlink) to link \
                             another"
                        )));
                    }
                    let inserted = sqlx::query(
                        "INSERT INTO account_identities (provider, subject, account_id, display_name, linked_at_ms) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    )
                    .bind(provider)
                    .bind(&identity.subject)
                    .bind(me)
                    .bind(&identity.display_name)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    Ok(if inserted == 1 { Outcome::Linked(me) } else { Outcome::Raced })
                }
                (None, None) => {
                    let mut account_id = None;
                    for attempt in 0..8 {
                        let username = candidate_username(username_hint, provider, attempt);
                        let row: Option<i64> = sqlx::query_scalar(
                            "INSERT INTO accounts (username, username_lower, password_hash, created_at_ms) \
                             VALUES ($1, $2, '', $3) ON CONFLICT DO NOTHING RETURNING id",
                        )
                        .bind(&username)
                        .bind(username.to_ascii_lowercase())
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if row.is_some() {
                            account_id = row;
                            break;
                        }
                    }
                    let account_id = account_id.ok_or_else(|| {
                        LobbyError::Unavailable("could not find a free username for the new account; retry".into())
                    })?;
                    let inserted = sqlx::query(
                        "INSERT INTO account_identities (provider, subject, account_id, display_name, linked_at_ms) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    )
                    .bind(provider)
                    .bind(&identity.subject)
                    .bind(account_id)
                    .bind(&identity.display_name)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if inserted == 1 {
                        Ok(Outcome::Created(account_id))
                    } else {
                        // Another first login with this identity committed meanwhile.
                        sqlx::query("DELETE FROM accounts WHERE id = $1").bind(account_id).execute(&mut *tx).await?;
                        Ok(Outcome::Raced)
                    }
                }
            }
        })?;
        let (account_id, created, linked) = match outcome {
            Outcome::Existing(id) => (id, false, false),
            Outcome::Created(id) => (id, true, false),
            Outcome::Linked(id) => (id, false, true),
            Outcome::Raced => continue,
        };
        let account = account(db, account_id).await?;
        let linked = linked.then(|| pb::Identity {
            provider: identity.provider.clone(),
            subject: shown_subject(provider, &identity.subject),
            display_name: identity.display_name.clone(),
            linked_at_ms: now,
        });
        return Ok(SignedIn { account, created, linked });
    }
    Err(LobbyError::Unavailable("concurrent logins with this identity kept racing; retry".into()))
}

/// The account with `account_id`.
pub(crate) async fn account(db: &Db, account_id: i64) -> Result<pb::Account, LobbyError> {
    let row: Option<(String, i64)> = with_pool!(db, |pool| {
        let row = sqlx::query("SELECT username, created_at_ms FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(pool)
            .await?;
        Ok(match row {
            Some(row) => Some((row.try_get("username")?, row.try_get("created_at_ms")?)),
            None => None,
        })
    })?;
    let (username, created_at_ms) =
        row.ok_or_else(|| LobbyError::NotFound(format!("account {account_id} no longer exists")))?;
    Ok(pb::Account { player_id: account_id as u64, username, created_at_ms })
}

/// A username for a new account: the hint cut to the username rules, then
/// with a random suffix when that is taken (`attempt` > 0).
fn candidate_username(hint: &str, provider: &str, attempt: usize) -> String {
    let mut suffix = [0_u8; 4];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut suffix);
    let suffix = hex::encode(suffix);
    if provider == GUEST {
        return format!("guest-{suffix}");
    }
    let mut base: String = hint
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    base.truncate(15);
    if base.chars().count() < 3 {
        base = format!("{provider}-user");
        base.truncate(15);
    }
    if attempt == 0 { base } else { format!("{base}-{suffix}") }
}

/// The subject as shown to clients: a guest's is a hash of its secret, of
/// which 16 hex digits say enough.
fn shown_subject(provider: &str, subject: &str) -> String {
    if provider == GUEST { subject.chars().take(16).collect() } else { subject.to_owned() }
}

/// The account's login methods.
pub(crate) async fn identities(db: &Db, account_id: i64) -> Result<pb::ListIdentitiesResponse, LobbyError> {
    with_pool!(db, |pool| {
        let hash: Option<String> = sqlx::query_scalar("SELECT password_hash FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(pool)
            .await?;
        let hash = hash.ok_or_else(|| LobbyError::NotFound(format!("account {account_id} no longer exists")))?;
        let rows = sqlx::query(
            "SELECT provider, subject, display_name, linked_at_ms FROM account_identities \
             WHERE account_id = $1 ORDER BY linked_at_ms, provider",
        )
        .bind(account_id)
        .fetch_all(pool)
        .await?;
        let mut identities = Vec::with_capacity(rows.len());
        for row in rows {
            let provider: String = row.try_get("provider")?;
            let subject: String = row.try_get("subject")?;
            identities.push(pb::Identity {
                subject: shown_subject(&provider, &subject),
                provider,
                display_name: row.try_get("display_name")?,
                linked_at_ms: row.try_get("linked_at_ms")?,
            });
        }
        Ok(pb::ListIdentitiesResponse { has_password: !hash.is_empty(), identities })
    })
}

/// Removes one login method; refuses to remove the last.
pub(crate) async fn unlink(db: &Db, account_id: i64, method: &str) -> Result<(), LobbyError> {
    with_tx!(db, |tx| {
        let hash: Option<String> = sqlx::query_scalar("SELECT password_hash FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
        let hash = hash.ok_or_else(|| LobbyError::NotFound(format!("account {account_id} no longer exists")))?;
        let providers: Vec<String> =
            sqlx::query_scalar("SELECT provider FROM account_identities WHERE account_id = $1")
                .bind(account_id)
                .fetch_all(&mut *tx)
                .await?;
        let has_password = !hash.is_empty();
        let present = if method == PASSWORD { has_password } else { providers.iter().any(|p| p == method) };
        if !present {
            return Err(LobbyError::NotFound(format!("your account has no {method} login method to unlink")));
        }
        if usize::from(has_password) + providers.len() <= 1 {
            return Err(LobbyError::FailedPrecondition(format!(
                "{method} is your account's last login method; link another (Auth.StartLogin with link, or \
                 Auth.SetPassword) before unlinking it"
            )));
        }
        if method == PASSWORD {
            sqlx::query("UPDATE accounts SET password_hash = '' WHERE id = $1")
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("DELETE FROM account_identities WHERE account_id = $1 AND provider = $2")
                .bind(account_id)
                .bind(method)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    })
}

/// Gives a password-less account `hash` (and `username`, when given).
pub(crate) async fn set_password(
    db: &Db,
    account_id: i64,
    username: Option<&str>,
    hash: &str,
) -> Result<pb::Account, LobbyError> {
    with_tx!(db, |tx| {
        let current: Option<String> = sqlx::query_scalar("SELECT password_hash FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
        let current = current.ok_or_else(|| LobbyError::NotFound(format!("account {account_id} no longer exists")))?;
        if !current.is_empty() {
            return Err(LobbyError::FailedPrecondition(
                "this account has a password already; SetPassword only adds one to a guest or external-only account"
                    .into(),
            ));
        }
        if let Some(username) = username {
            let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM accounts WHERE username_lower = $1")
                .bind(username.to_ascii_lowercase())
                .fetch_optional(&mut *tx)
                .await?;
            if taken.is_some_and(|id| id != account_id) {
                return Err(LobbyError::AlreadyExists(format!("username {username:?} is taken; choose another")));
            }
            sqlx::query("UPDATE accounts SET username = $2, username_lower = $3, password_hash = $4 WHERE id = $1")
                .bind(account_id)
                .bind(username)
                .bind(username.to_ascii_lowercase())
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("UPDATE accounts SET password_hash = $2 WHERE id = $1")
                .bind(account_id)
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    })?;
    account(db, account_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_rules_whatever_the_provider_says() {
        assert_eq!(candidate_username("Name of alice", "oidc", 0), "Name-of-alice");
        assert_eq!(candidate_username("  ", "gitlab", 0), "gitlab-user");
        assert_eq!(candidate_username("é", "42", 0), "42-user");
        let guest = candidate_username("", GUEST, 0);
        assert!(guest.len() == 14 && guest.starts_with("guest-"), "{guest}");
        assert_ne!(guest, candidate_username("", GUEST, 0), "guest names are random");
        for hint in ["a very long display name indeed, with commas", "norminet", "x"] {
            for attempt in 0..3 {
                let name = candidate_username(hint, "provider-name", attempt);
                crate::auth::check_username(&name).unwrap_or_else(|err| panic!("{name}: {err}"));
            }
        }
    }
}
