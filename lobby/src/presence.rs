//! Presence: which players are online. A player is online on a lobby process
//! while they hold a Subscribe stream there, or made an authenticated Chat
//! call there within [`PresenceConfig::window`].
//!
//! With Redis, each process publishes its online players into one hash per
//! player (`<prefix>:presence:<player id>`: field = the process's replica id,
//! value = when that claim expires, Unix ms on Redis's clock) and refreshes
//! the claims every third of [`PresenceConfig::expiry`]; a player is online
//! when any replica's claim has not expired. A process that stops withdraws
//! its claims at once; one that crashes loses them within `expiry`. A Redis
//! restart without its data forgets presence until the next refresh.
//! Without Redis presence is this process's own knowledge.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::error::LobbyError;
use crate::replicas::RedisLink;

/// Most player ids one GetPresence may ask about.
pub const MAX_PRESENCE_IDS: usize = 100;

/// Presence settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceConfig {
    /// How long after an authenticated call a player counts as online.
    pub window: Duration,
    /// How long a replica's claim in Redis lasts unless refreshed: the
    /// longest a crashed replica's players stay online. Refreshed every third of it.
    pub expiry: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { window: Duration::from_secs(60), expiry: Duration::from_secs(30) }
    }
}

/// Sets this replica's claims (the first `ARGV[3]` keys) and withdraws them
/// from the rest.
const REFRESH_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local n_online = tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  if i <= n_online then
    redis.call('HSET', key, ARGV[1], string.format('%.0f', now + ttl))
    redis.call('PEXPIRE', key, ttl)
  else
    redis.call('HDEL', key, ARGV[1])
  end
end
return 0
";

/// 1 for each key with an unexpired claim, else 0.
const QUERY_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local online = {}
for i, key in ipairs(KEYS) do
  online[i] = 0
  for _, expires in ipairs(redis.call('HVALS', key)) do
    if tonumber(expires) > now then
      online[i] = 1
      break
    end
  end
end
return online
";

#[derive(Debug, Default)]
struct LocalPresence {
    streams: u32,
    last_call: Option<Instant>,
}

#[derive(Debug)]
struct PresenceInner {
    config: PresenceConfig,
    local: Mutex<HashMap<u64, LocalPresence>>,
    redis: Option<RedisLink>,
    /// The players this replica has claimed in Redis.
    claimed: Mutex<BTreeSet<u64>>,
    /// Held by each refresh, so a withdrawal is never overtaken by an older refresh.
    refreshing: tokio::sync::Mutex<()>,
    /// Wakes the refresher when a player comes online here.
    changed: Notify,
    stopping: watch::Sender<bool>,
}

/// Who is online, on this process or (with Redis) on any. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Presence {
    inner: Arc<PresenceInner>,
}

/// Keeps a player online while held (one per Subscribe stream).
#[derive(Debug)]
pub(crate) struct PresenceGuard {
    presence: Presence,
    player: u64,
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        let mut local = self.presence.inner.local.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = local.get_mut(&self.player) {
            entry.streams = entry.streams.saturating_sub(1);
        }
    }
}

impl Presence {
    /// Presence in memory, or in Redis when `redis` is set (then a refresher
    /// task runs until [`Presence::withdraw`]).
    pub(crate) fn new(config: PresenceConfig, redis: Option<RedisLink>) -> Self {
        let presence = Self {
            inner: Arc::new(PresenceInner {
                config,
                local: Mutex::new(HashMap::new()),
                redis,
                claimed: Mutex::new(BTreeSet::new()),
                refreshing: tokio::sync::Mutex::new(()),
                changed: Notify::new(),
                stopping: watch::Sender::new(false),
            }),
        };
        if presence.inner.redis.is_some() {
            tokio::spawn(presence.clone().refresh_loop());
        }
        presence
    }

    /// `player` made an authenticated call.
    pub(crate) fn touch(&self, player: u64) {
        let now = Instant::now();
        let mut local = self.inner.local.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = local.entry(player).or_default();
        let was_online = self.is_locally_online(entry, now);
        entry.last_call = Some(now);
        drop(local);
        if !was_online {
            self.inner.changed.notify_one();
        }
    }

    /// `player` holds a Subscribe stream until the guard drops.
    pub(crate) fn hold(&self, player: u64) -> PresenceGuard {
        let now = Instant::now();
        let mut local = self.inner.local.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = local.entry(player).or_default();
        let was_online = self.is_locally_online(entry, now);
        entry.streams += 1;
        drop(local);
        if !was_online {
            self.inner.changed.notify_one();
        }
        PresenceGuard { presence: self.clone(), player }
    }

    fn is_locally_online(&self, entry: &LocalPresence, now: Instant) -> bool {
        entry.streams > 0 || entry.last_call.is_some_and(|at| now.duration_since(at) < self.inner.config.window)
    }

    /// The players online on this process (forgetting those long gone).
    fn locally_online(&self) -> BTreeSet<u64> {
        let now = Instant::now();
        let mut local = self.inner.local.lock().unwrap_or_else(PoisonError::into_inner);
        local.retain(|_, entry| self.is_locally_online(entry, now));
        local.keys().copied().collect()
    }

    /// Whether each of `players` is online, in order. At most
    /// [`MAX_PRESENCE_IDS`]; UNAVAILABLE while Redis is unreachable.
    pub async fn online(&self, players: &[u64]) -> Result<Vec<bool>, LobbyError> {
        if players.is_empty() {
            return Err(LobbyError::invalid("player_ids", "name at least one player id"));
        }
        if players.len() > MAX_PRESENCE_IDS {
            return Err(LobbyError::invalid(
                "player_ids",
                format!("at most {MAX_PRESENCE_IDS} ids per request (got {}); split the list", players.len()),
            ));
        }
        let Some(link) = &self.inner.redis else {
            let local = self.locally_online();
            return Ok(players.iter().map(|player| local.contains(player)).collect());
        };
        let script = redis::Script::new(QUERY_SCRIPT);
        let mut invocation = script.prepare_invoke();
        for player in players {
            invocation.key(link.key(&format!("presence:{player}")));
        }
        let mut conn = link.conn();
        let online: Vec<u8> = link.run(invocation.invoke_async(&mut conn)).await.map_err(|err| {
            tracing::warn!(error = %err, "presence: Redis is unreachable");
            LobbyError::Unavailable("presence is unavailable (its store is unreachable); retry in a few seconds".into())
        })?;
        Ok(online.into_iter().map(|flag| flag != 0).collect())
    }

    /// Claims this process's online players in Redis and withdraws the claims
    /// of players who left; errors say why Redis refused.
    async fn refresh(&self, link: &RedisLink) -> Result<(), String> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        let online = self.locally_online();
        let gone: Vec<u64> = {
            let claimed = self.inner.claimed.lock().unwrap_or_else(PoisonError::into_inner);
            claimed.difference(&online).copied().collect()
        };
        if online.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let script = redis::Script::new(REFRESH_SCRIPT);
        let mut invocation = script.prepare_invoke();
        for player in online.iter().chain(&gone) {
            invocation.key(link.key(&format!("presence:{player}")));
        }
        let expiry_ms = u64::try_from(self.inner.config.expiry.as_millis()).unwrap_or(u64::MAX).max(1);
        invocation.arg(link.replica_id()).arg(expiry_ms).arg(online.len());
        let mut conn = link.conn();
        link.run(invocation.invoke_async::<i64>(&mut conn)).await?;
        *self.inner.claimed.lock().unwrap_or_else(PoisonError::into_inner) = online;
        Ok(())
    }

    async fn refresh_loop(self) {
        let Some(link) = self.inner.redis.clone() else { return };
        let period = (self.inner.config.expiry / 3).max(Duration::from_millis(10));
        let mut stopping = self.inner.stopping.subscribe();
        let mut failing = false;
        loop {
            match self.refresh(&link).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("presence: Redis is back; claims refreshed");
                }
                Ok(()) => {}
                Err(err) => {
                    metrics::counter!("rally_lobby_presence_redis_failures_total").increment(1);
                    if !failing {
                        failing = true;
                        tracing::warn!(error = %err, "presence: cannot refresh this replica's players in Redis");
                    }
                }
            }
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return,
                () = self.inner.changed.notified() => {}
                () = tokio::time::sleep(period) => {}
            }
        }
    }

    /// Stops refreshing and withdraws this process's claims, so its players
    /// go offline now rather than after the expiry (a stopping lobby calls it).
    pub(crate) async fn withdraw(&self) {
        self.inner.stopping.send_replace(true);
        let Some(link) = &self.inner.redis else { return };
        self.inner.local.lock().unwrap_or_else(PoisonError::into_inner).clear();
        if let Err(err) = self.refresh(link).await {
            tracing::warn!(error = %err, "presence: could not withdraw this replica's players; they expire by themselves");
        }
    }
}
