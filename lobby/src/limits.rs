//! Rate limits (governor): per IP on Register/Login, per account on Login and
//! chat sends. A refusal carries how long to wait.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::LobbyError;

/// One limit: a burst, refilled at one token per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests allowed back to back.
    pub burst: NonZeroU32,
    /// Time to earn back one request.
    pub period: Duration,
}

impl RateLimitConfig {
    /// `burst` requests, one more every `period`.
    pub const fn new(burst: NonZeroU32, period: Duration) -> Self {
        Self { burst, period }
    }

    fn quota(self) -> Quota {
        Quota::with_period(self.period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(self.burst)
    }
}

/// All of the lobby's rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LobbyLimitsConfig {
    /// Register and Login attempts per client IP.
    pub auth_per_ip: RateLimitConfig,
    /// Login attempts per username (slows password guessing from many IPs).
    pub login_per_account: RateLimitConfig,
    /// Chat messages per sender.
    pub chat_send_per_account: RateLimitConfig,
}

impl Default for LobbyLimitsConfig {
    fn default() -> Self {
        const fn nz(n: u32) -> NonZeroU32 {
            match NonZeroU32::new(n) {
                Some(n) => n,
                None => NonZeroU32::MIN,
            }
        }
        Self {
            auth_per_ip: RateLimitConfig::new(nz(30), Duration::from_secs(1)),
            login_per_account: RateLimitConfig::new(nz(10), Duration::from_secs(6)),
            chat_send_per_account: RateLimitConfig::new(nz(10), Duration::from_millis(500)),
        }
    }
}

/// A keyed limiter with a name for its error messages.
#[derive(Debug)]
pub(crate) struct Limiter<K: Hash + Eq + Clone> {
    what: &'static str,
    inner: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub(crate) fn new(what: &'static str, config: RateLimitConfig) -> Self {
        Self { what, inner: RateLimiter::keyed(config.quota()) }
    }

    /// Takes one token for `key`, or says how long to wait.
    pub(crate) fn check(&self, key: &K) -> Result<(), LobbyError> {
        self.inner.check_key(key).map_err(|not_until| LobbyError::RateLimited {
            what: self.what,
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
    }
}

/// Per-IP limiter type.
pub(crate) type IpLimiter = Limiter<IpAddr>;
