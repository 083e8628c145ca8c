//! Password policy and argon2id hashing on a bounded pool, so a login storm
//! occupies at most one blocking thread per core and other RPCs keep running.
//! A login for an unknown username verifies against a dummy hash of the same
//! cost ([`PasswordHasherPool::verify_or_dummy`]), so its answer takes as long
//! as a wrong password's and does not tell which usernames exist.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::error::LobbyError;

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 10;
/// Longest password accepted (bounds hashing work per request).
pub const MAX_PASSWORD_LEN: usize = 256;

const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

/// Checks the password policy: length and the bundled common-password list.
pub fn check_password_policy(password: &str) -> Result<(), LobbyError> {
    let n_chars = password.chars().count();
    if n_chars < MIN_PASSWORD_LEN {
        return Err(LobbyError::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters (got {n_chars})"),
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(LobbyError::invalid("password", format!("must be at most {MAX_PASSWORD_LEN} bytes")));
    }
    let lowered = password.to_lowercase();
    if COMMON_PASSWORDS.lines().any(|common| common.trim().eq_ignore_ascii_case(&lowered)) {
        return Err(LobbyError::invalid("password", "is too common; choose another"));
    }
    Ok(())
}

/// argon2id cost settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordHashConfig {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Hashes computed at once (defaults to the core count).
    pub max_concurrent: usize,
}

impl Default for PasswordHashConfig {
    /// OWASP's argon2id minimum: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            max_concurrent: std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        }
    }
}

/// Hashes and verifies passwords on at most `max_concurrent` blocking threads.
#[derive(Debug, Clone)]
pub struct PasswordHasherPool {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// A hash with this pool's costs of a random password nobody knows,
    /// made on first use.
    dummy_hash: Arc<tokio::sync::OnceCell<String>>,
    /// argon2 verifications run, dummy ones included.
    n_verified: Arc<AtomicU64>,
}

impl PasswordHasherPool {
    /// A pool with `config`'s costs.
    pub fn new(config: PasswordHashConfig) -> Result<Self, LobbyError> {
        let params = Params::new(config.memory_kib, config.iterations, 1, None)
            .map_err(|err| LobbyError::Internal(format!("argon2 parameters: {err}")))?;
        Ok(Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            dummy_hash: Arc::new(tokio::sync::OnceCell::new()),
            n_verified: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A PHC string for `password`.
    pub async fn hash(&self, password: String) -> Result<String, LobbyError> {
        let argon2 = self.argon2.clone();
        self.run(move || {
            let mut salt_bytes = [0_u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt_bytes);
            let salt = SaltString::encode_b64(&salt_bytes)
                .map_err(|err| LobbyError::Internal(format!("argon2 salt: {err}")))?;
            argon2
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|err| LobbyError::Internal(format!("argon2: {err}")))
        })
        .await
    }

    /// Whether `password` matches the PHC string `hash`.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, LobbyError> {
        let argon2 = self.argon2.clone();
        let n_verified = self.n_verified.clone();
        self.run(move || {
            let parsed = PasswordHash::new(&hash).map_err(|err| LobbyError::Internal(format!("stored hash: {err}")))?;
            n_verified.fetch_add(1, Ordering::Relaxed);
            Ok(argon2.verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
    }

    /// Whether `password` matches `hash`; with no hash (an unknown account)
    /// it verifies against the dummy hash and answers false, doing the same
    /// work as a wrong password.
    pub async fn verify_or_dummy(&self, password: String, hash: Option<String>) -> Result<bool, LobbyError> {
        match hash {
            Some(hash) => self.verify(password, hash).await,
            None => {
                let dummy = self
                    .dummy_hash
                    .get_or_try_init(|| {
                        let mut unknowable = [0_u8; 32];
                        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut unknowable);
                        self.hash(hex::encode(unknowable))
                    })
                    .await?
                    .clone();
                self.verify(password, dummy).await?;
                Ok(false)
            }
        }
    }

    /// How many argon2 verifications this pool has run, dummy ones included.
    pub fn n_verified(&self) -> u64 {
        self.n_verified.load(Ordering::Relaxed)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, LobbyError> + Send + 'static,
    ) -> Result<T, LobbyError> {
        let _permit = self.permits.acquire().await.map_err(|_| LobbyError::Internal("hasher pool closed".into()))?;
        tokio::task::spawn_blocking(work).await.map_err(|err| LobbyError::Internal(format!("hasher task: {err}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_account_costs_a_verification_like_a_wrong_password() {
        let pool = PasswordHasherPool::new(PasswordHashConfig { memory_kib: 1024, iterations: 1, max_concurrent: 1 })
            .expect("pool");
        let hash = pool.hash("correct horse battery".into()).await.expect("hash");
        assert!(pool.verify_or_dummy("correct horse battery".into(), Some(hash.clone())).await.expect("verify"));
        assert!(!pool.verify_or_dummy("wrong horse".into(), Some(hash)).await.expect("verify"));
        assert_eq!(pool.n_verified(), 2);
        for _ in 0..2 {
            assert!(!pool.verify_or_dummy("correct horse battery".into(), None).await.expect("dummy"));
        }
        assert_eq!(pool.n_verified(), 4, "each unknown account ran argon2 once");
    }

    #[test]
    fn policy_rejects_short_and_common_passwords() {
        assert!(check_password_policy("short").is_err());
        assert!(check_password_policy("Password123").is_err());
        assert!(check_password_policy(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
        assert!(check_password_policy("correct horse battery").is_ok());
    }
}
