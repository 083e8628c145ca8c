//! Password policy and argon2id hashing on a bounded pool, so a login storm
//! occupies at most one blocking thread per core and other RPCs keep running.

use std::sync::Arc;

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
}

impl PasswordHasherPool {
    /// A pool with `config`'s costs.
    pub fn new(config: PasswordHashConfig) -> Result<Self, LobbyError> {
        let params = Params::new(config.memory_kib, config.iterations, 1, None)
            .map_err(|err| LobbyError::Internal(format!("argon2 parameters: {err}")))?;
        Ok(Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
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
        self.run(move || {
            let parsed = PasswordHash::new(&hash).map_err(|err| LobbyError::Internal(format!("stored hash: {err}")))?;
            Ok(argon2.verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
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

    #[test]
    fn policy_rejects_short_and_common_passwords() {
        assert!(check_password_policy("short").is_err());
        assert!(check_password_policy("Password123").is_err());
        assert!(check_password_policy(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
        assert!(check_password_policy("correct horse battery").is_ok());
    }
}
