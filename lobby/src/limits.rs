//! Rate limits (governor): per IP on Register/Login, per account on Login and
//! chat sends. A refusal carries how long to wait: at least 1 ms, rounded up,
//! measured on the limiter's own clock, so waiting that long is enough.
//!
//! The per-account limits protect something every replica shares (an
//! account's password, a channel's readers), so with Redis configured they
//! are counted there ([`SharedLimiter`]: GCRA in one Lua script, on Redis's
//! own clock), and three lobbies allow what one does. While Redis is
//! unreachable each process falls back to its local limiter (never to no
//! limit) and says so in the log. Per-IP limits stay per process: they guard
//! each process's own CPU (password hashing) and a load balancer spreads one
//! address over replicas, so a per-process limit is what each replica can take.
//!
//! Networks an operator trusts (a bot farm's, a NAT gateway's) can be exempt
//! from the per-IP limit ([`LobbyLimitsConfig::auth_per_ip_exempt`]); the
//! per-account limit still applies to them.

use std::fmt::Display;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::LobbyError;
use crate::replicas::RedisLink;

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

/// An IP network in CIDR notation (`10.0.0.0/8`, `fd00::/8`), or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    /// The address with the host bits cleared.
    network: IpAddr,
    /// Leading bits that must match.
    prefix_len: u8,
}

impl IpNetwork {
    /// Whether `ip` lies in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        match (self.network, ip) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => mask_v4(u32::from(ip), self.prefix_len) == u32::from(network),
            (IpAddr::V6(network), IpAddr::V6(ip)) => mask_v6(u128::from(ip), self.prefix_len) == u128::from(network),
            _ => false,
        }
    }
}

fn mask_v4(bits: u32, prefix_len: u8) -> u32 {
    if prefix_len == 0 { 0 } else { bits & (u32::MAX << (32 - u32::from(prefix_len))) }
}

fn mask_v6(bits: u128, prefix_len: u8) -> u128 {
    if prefix_len == 0 { 0 } else { bits & (u128::MAX << (128 - u32::from(prefix_len))) }
}

impl FromStr for IpNetwork {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (address, prefix_len) = match text.split_once('/') {
            Some((address, prefix_len)) => (address, Some(prefix_len)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP network (expected e.g. 10.0.0.0/8, fd00::/8 or 192.0.2.7)"))?;
        let max_len = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix_len {
            None => max_len,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|len| *len <= max_len)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max_len}"))?,
        };
        let network = match address {
            IpAddr::V4(v4) => IpAddr::V4(mask_v4(u32::from(v4), prefix_len).into()),
            IpAddr::V6(v6) => IpAddr::V6(mask_v6(u128::from(v6), prefix_len).into()),
        };
        Ok(Self { network, prefix_len })
    }
}

impl std::fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// All of the lobby's rate limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbyLimitsConfig {
    /// Register and Login attempts per client IP.
    pub auth_per_ip: RateLimitConfig,
    /// Client networks exempt from `auth_per_ip` (`rally lobby --login-limit-exempt`):
    /// an operator's bot farm or load generator behind one address. Empty by default.
    pub auth_per_ip_exempt: Vec<IpNetwork>,
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
            auth_per_ip_exempt: Vec::new(),
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
            retry_after: retry_after(not_until.wait_time_from(self.inner.clock().now())),
        })
    }
}

/// GCRA over one key: the stored value is the theoretical arrival time in
/// microseconds on Redis's clock (`TIME`), so replicas with skewed clocks
/// agree. Answers 0 when the request is allowed, else the microseconds to wait.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local tolerance = (burst - 1) * period
if tat - now > tolerance then
  return math.ceil(tat - now - tolerance)
end
local next_tat = tat + period
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return 0
";

/// After a Redis failure, how long a [`SharedLimiter`] uses its local limiter
/// before it asks Redis again (so an outage costs one timeout, not one per request).
const REDIS_RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// A per-account limit every replica counts together in Redis, falling back
/// to a local [`Limiter`] while Redis is unreachable. Without Redis it is the
/// local limiter alone.
#[derive(Debug)]
pub(crate) struct SharedLimiter<K: Hash + Eq + Clone> {
    local: Limiter<K>,
    config: RateLimitConfig,
    /// Redis and the key space of this limit (`<prefix>:limit:<kind>:<key>`).
    redis: Option<(RedisLink, &'static str, redis::Script)>,
    /// Set while Redis is failing, so the log says it once per outage.
    degraded: AtomicBool,
    /// Until when the local limiter answers without asking Redis.
    local_until: Mutex<Option<Instant>>,
}

impl<K: Hash + Eq + Clone + Display> SharedLimiter<K> {
    /// `what` names the limit in refusals; `kind` is its Redis key space.
    pub(crate) fn new(
        what: &'static str,
        kind: &'static str,
        config: RateLimitConfig,
        redis: Option<&RedisLink>,
    ) -> Self {
        Self {
            local: Limiter::new(what, config),
            config,
            redis: redis.map(|link| (link.clone(), kind, redis::Script::new(GCRA_SCRIPT))),
            degraded: AtomicBool::new(false),
            local_until: Mutex::new(None),
        }
    }

    /// Takes one token for `key` across replicas, or says how long to wait.
    pub(crate) async fn check(&self, key: &K) -> Result<(), LobbyError> {
        let Some((link, kind, script)) = &self.redis else { return self.local.check(key) };
        {
            let mut local_until = self.local_until.lock().unwrap_or_else(PoisonError::into_inner);
            match *local_until {
                Some(until) if Instant::now() < until => return self.local.check(key),
                Some(_) => *local_until = None,
                None => {}
            }
        }
        let period_us = u64::try_from(self.config.period.as_micros()).unwrap_or(u64::MAX).max(1);
        let redis_key = link.key(&format!("limit:{kind}:{key}"));
        let mut conn = link.conn();
        let mut invocation = script.key(&redis_key);
        invocation.arg(period_us).arg(self.config.burst.get());
        match link.run(invocation.invoke_async::<u64>(&mut conn)).await {
            Ok(wait_us) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        limit = self.local.what,
                        "rate limit: Redis is back; counting across replicas again"
                    );
                }
                if wait_us == 0 {
                    Ok(())
                } else {
                    Err(LobbyError::RateLimited {
                        what: self.local.what,
                        retry_after: retry_after(Duration::from_micros(wait_us)),
                    })
                }
            }
            Err(err) => {
                metrics::counter!("rally_lobby_rate_limit_redis_failures_total").increment(1);
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        limit = self.local.what,
                        error = %err,
                        "rate limit: Redis is unreachable; falling back to this replica's local limit                          (each replica now allows the full rate on its own)"
                    );
                }
                *self.local_until.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(Instant::now() + REDIS_RETRY_AFTER_FAILURE);
                self.local.check(key)
            }
        }
    }
}

/// The wait a refusal names: the limiter's wait rounded up to whole
/// milliseconds and at least 1 ms (a wait under 1 ms used to read "retry
/// after 0 ms", and a client that retried at once was refused again).
fn retry_after(wait: Duration) -> Duration {
    let millis = wait.as_nanos().div_ceil(1_000_000).max(1);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// The per-IP limiter, with the networks it does not limit.
#[derive(Debug)]
pub(crate) struct IpLimiter {
    limiter: Limiter<IpAddr>,
    exempt: Vec<IpNetwork>,
}

impl IpLimiter {
    /// The per-IP limit of `limits` (`auth_per_ip`, sparing `auth_per_ip_exempt`).
    pub(crate) fn new(what: &'static str, limits: &LobbyLimitsConfig) -> Self {
        Self { limiter: Limiter::new(what, limits.auth_per_ip), exempt: limits.auth_per_ip_exempt.clone() }
    }

    /// Takes one token for `ip` unless its network is exempt, or says how long to wait.
    pub(crate) fn check(&self, ip: &IpAddr) -> Result<(), LobbyError> {
        if self.exempt.iter().any(|network| network.contains(*ip)) {
            return Ok(());
        }
        self.limiter.check(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal_wait(result: Result<(), LobbyError>) -> Duration {
        match result {
            Err(LobbyError::RateLimited { retry_after, .. }) => retry_after,
            other => panic!("expected a rate-limit refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_refusal_names_a_wait_of_at_least_one_millisecond_that_is_enough() {
        // One request, earned back every 200 µs: the true wait is under 1 ms.
        let limiter = Limiter::new("test", RateLimitConfig::new(NonZeroU32::MIN, Duration::from_micros(200)));
        assert!(limiter.check(&1_u8).is_ok());
        let wait = refusal_wait(limiter.check(&1_u8));
        assert_eq!(wait, Duration::from_millis(1), "rounded up to one whole millisecond");
        let message = refusal_wait_message(&limiter);
        assert!(!message.contains("retry after 0 ms"), "{message}");
        // Waiting what the refusal says is enough.
        std::thread::sleep(wait);
        assert!(limiter.check(&1_u8).is_ok());
    }

    fn refusal_wait_message(limiter: &Limiter<u8>) -> String {
        match limiter.check(&1_u8) {
            Err(err) => err.to_string(),
            Ok(()) => "retry after 1 ms (no refusal)".to_owned(),
        }
    }

    #[test]
    fn waits_round_up_to_whole_milliseconds() {
        assert_eq!(retry_after(Duration::ZERO), Duration::from_millis(1));
        assert_eq!(retry_after(Duration::from_micros(1)), Duration::from_millis(1));
        assert_eq!(retry_after(Duration::from_micros(1500)), Duration::from_millis(2));
        assert_eq!(retry_after(Duration::from_millis(3)), Duration::from_millis(3));
    }

    #[test]
    fn exempt_networks_skip_the_per_ip_limit_and_others_do_not() {
        let limits = LobbyLimitsConfig {
            auth_per_ip: RateLimitConfig::new(NonZeroU32::MIN, Duration::from_secs(3600)),
            auth_per_ip_exempt: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            ..LobbyLimitsConfig::default()
        };
        let limiter = IpLimiter::new("sign-ins", &limits);
        for ip in ["10.1.2.3", "10.255.0.1", "fd12::1", "::ffff:10.9.9.9"] {
            let ip: IpAddr = ip.parse().unwrap();
            for _ in 0..5 {
                assert!(limiter.check(&ip).is_ok(), "{ip} is exempt");
            }
        }
        let outside: IpAddr = "11.0.0.1".parse().unwrap();
        assert!(limiter.check(&outside).is_ok());
        assert!(limiter.check(&outside).is_err(), "11.0.0.1 is limited");
    }

    #[test]
    fn networks_parse_and_refuse_nonsense() {
        let network: IpNetwork = "10.1.2.3/8".parse().unwrap();
        assert_eq!(network.to_string(), "10.0.0.0/8");
        assert_eq!("192.0.2.7".parse::<IpNetwork>().unwrap().to_string(), "192.0.2.7/32");
        assert!("0.0.0.0/0".parse::<IpNetwork>().unwrap().contains("203.0.113.9".parse().unwrap()));
        assert!(!"10.0.0.0/8".parse::<IpNetwork>().unwrap().contains("fd00::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "fd00::/129", "ten/8", "10.0.0.0/x", ""] {
            assert!(bad.parse::<IpNetwork>().is_err(), "{bad:?}");
        }
    }
}
