//! The shard registry on Redis. Keys: `P:shards` (a sorted set of shard names
//! scored by entry expiry, Unix ms on Redis's clock), `P:shard:<name>` (a hash:
//! `info` JSON, `capacity`, `draining`, `reserved`, `load` JSON, `incarnation`,
//! `ttl` ms), `P:shard:<name>:m` (a hash of reserved matches: match id → record
//! JSON), `P:orphans` (matches of replaced incarnations, match id → record
//! JSON, until the next reap) and `P:tentative` (a sorted set of tentative
//! reservations, `<match id>:<shard name>`, scored by their confirm-by time on
//! Redis's clock; see [`crate::registry`]). Every change that reads before it writes is one
//! Lua script, so replicas can never reserve past capacity or reap one shard
//! twice.
//!
//! Leases are set and judged on Redis's own clock (`TIME` in each script), so
//! the clocks of shard and matchmaker machines never matter. The registry
//! remembers since when its calls have been succeeding (on the caller's
//! `now_ms`): after an outage it reaps a lapsed shard only once it has been
//! connected again for that shard's TTL, which gives every live shard a
//! heartbeat's chance to take its entry back first.
//!
//! Needs Redis 5 or later: the scripts read `TIME` before they write, which
//! relies on scripts replicating their effects.

use std::sync::{Arc, Mutex};

use rally_protocol::MatchId;
use redis::Script;

use super::RedisConnection;
use crate::error::BackendError;
use crate::registry::{
    Confirmation, ExpiredShard, Heartbeat, MatchRecord, Registration, Reservation, ShardEntry, ShardInfo, ShardLoad,
    ShardLoss, ShardRegistry, Tentative, restarted_shards,
};

/// Prepends `now`, Redis's clock in Unix ms, to a script's body.
macro_rules! on_redis_time {
    ($body:literal) => {
        concat!(
            "local clock = redis.call('TIME')\n",
            "local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)\n",
            $body
        )
    };
}

/// KEYS = shards, shard hash, its matches, orphans;
/// ARGV = name, ttl, info, capacity, incarnation. Returns the matches orphaned.
const REGISTER: &str = on_redis_time!(
    r"
local orphaned = 0
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('HGET', KEYS[2], 'incarnation') ~= ARGV[5] then
    local held = redis.call('HGETALL', KEYS[3])
    for i = 1, #held, 2 do
      redis.call('HSET', KEYS[4], held[i], held[i + 1])
    end
    orphaned = #held / 2
    redis.call('DEL', KEYS[2], KEYS[3])
  end
else
  redis.call('DEL', KEYS[2], KEYS[3])
end
redis.call('HSET', KEYS[2], 'info', ARGV[3], 'capacity', ARGV[4], 'draining', '0', 'incarnation', ARGV[5], 'ttl', ARGV[2])
redis.call('HSETNX', KEYS[2], 'reserved', '0')
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return orphaned
"
);

/// KEYS = shards, shard hash; ARGV = name, ttl, load, incarnation.
const HEARTBEAT: &str = on_redis_time!(
    r"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 'unknown' end
if redis.call('HGET', KEYS[2], 'incarnation') ~= ARGV[4] then return 'superseded' end
redis.call('HSET', KEYS[2], 'load', ARGV[3], 'ttl', ARGV[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 'alive'
"
);

/// KEYS = shards, shard hash, its matches, tentative; ARGV = name, match id,
/// record, confirm within ms (negative: for good). Returns 'ok <confirm by>'
/// or why not.
const RESERVE: &str = on_redis_time!(
    r"
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expires or tonumber(expires) < now then return 'gone' end
local fields = redis.call('HMGET', KEYS[2], 'draining', 'reserved', 'capacity')
if fields[1] == '1' then return 'draining' end
if tonumber(fields[2] or '0') >= tonumber(fields[3] or '0') then return 'full' end
if redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[3]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'reserved', 1)
end
local within = tonumber(ARGV[4])
if within < 0 then return 'ok 0' end
local by = now + within
redis.call('ZADD', KEYS[4], by, ARGV[2] .. ':' .. ARGV[1])
return 'ok ' .. by
"
);

/// KEYS = tentative, the shard's matches; ARGV = member, match id.
/// Returns 1 when the match is (still) on its shard.
const CONFIRM: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('HEXISTS', KEYS[2], ARGV[2])
";

/// KEYS = tentative, shard hash, its matches; ARGV = member, match id.
const DROP_UNCONFIRMED: &str = r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HDEL', KEYS[3], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'reserved', -1)
  return 1
end
return 0
";

/// KEYS = tentative; ARGV = key prefix. Returns the records of overdue
/// tentative reservations still held (and forgets those whose match left
/// its shard some other way).
const OVERDUE: &str = on_redis_time!(
    r"
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, 256)
local out = {}
for _, member in ipairs(members) do
  local sep = string.find(member, ':', 1, true)
  local record = nil
  if sep then
    local key = ARGV[1] .. ':shard:' .. string.sub(member, sep + 1) .. ':m'
    record = redis.call('HGET', key, string.sub(member, 1, sep - 1))
  end
  if record then table.insert(out, record) else redis.call('ZREM', KEYS[1], member) end
end
return out
"
);

/// KEYS[1] = shard hash, KEYS[2] = its matches; ARGV[1] = match id.
const RELEASE: &str = r"
if redis.call('HDEL', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'reserved', -1)
  return 1
end
return 0
";

/// KEYS = shards, orphans; ARGV = key prefix, how long the caller has been
/// connected (ms). Returns {{name, {match records…}} per reaped shard, {orphaned records…}}.
const REAP: &str = on_redis_time!(
    r"
local names = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local lapsed = {}
for _, name in ipairs(names) do
  local key = ARGV[1] .. ':shard:' .. name
  local ttl = tonumber(redis.call('HGET', key, 'ttl') or '0')
  if ttl <= tonumber(ARGV[2]) then
    local matches = redis.call('HVALS', key .. ':m')
    redis.call('DEL', key, key .. ':m')
    redis.call('ZREM', KEYS[1], name)
    table.insert(lapsed, {name, matches})
  end
end
local orphans = redis.call('HVALS', KEYS[2])
redis.call('DEL', KEYS[2])
return {lapsed, orphans}
"
);

/// KEYS[1] = shards, KEYS[2] = shard hash; ARGV = name, incarnation.
const DEREGISTER: &str = r"
if redis.call('HGET', KEYS[2], 'incarnation') ~= ARGV[2] then return {} end
local matches = redis.call('HVALS', KEYS[2] .. ':m')
redis.call('DEL', KEYS[2], KEYS[2] .. ':m')
redis.call('ZREM', KEYS[1], ARGV[1])
return matches
";

/// KEYS[1] = shards; ARGV[1] = key prefix.
/// Returns {name, expiry, info, draining, reserved, load} per live shard.
const LIST: &str = on_redis_time!(
    r"
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'WITHSCORES')
local out = {}
for i = 1, #entries, 2 do
  local name = entries[i]
  local fields = redis.call('HMGET', ARGV[1] .. ':shard:' .. name, 'info', 'draining', 'reserved', 'load')
  if fields[1] then
    table.insert(out, {name, entries[i + 1], fields[1], fields[2] or '0', fields[3] or '0', fields[4] or ''})
  end
end
return out
"
);

/// The shard registry on Redis.
#[derive(Clone)]
pub struct RedisRegistry {
    redis: RedisConnection,
    /// Since when (caller's `now_ms`) every call has succeeded; `None` after a
    /// failure until the next success.
    connected_since_ms: Arc<Mutex<Option<u64>>>,
    register: Script,
    heartbeat: Script,
    reserve: Script,
    confirm: Script,
    drop_unconfirmed: Script,
    overdue: Script,
    release: Script,
    reap: Script,
    deregister: Script,
    list: Script,
}

impl std::fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRegistry").field("redis", &self.redis).finish_non_exhaustive()
    }
}

impl RedisRegistry {
    /// The registry under `redis`'s prefix.
    pub fn new(redis: RedisConnection) -> Self {
        Self {
            redis,
            connected_since_ms: Arc::new(Mutex::new(None)),
            register: Script::new(REGISTER),
            heartbeat: Script::new(HEARTBEAT),
            reserve: Script::new(RESERVE),
            confirm: Script::new(CONFIRM),
            drop_unconfirmed: Script::new(DROP_UNCONFIRMED),
            overdue: Script::new(OVERDUE),
            release: Script::new(RELEASE),
            reap: Script::new(REAP),
            deregister: Script::new(DEREGISTER),
            list: Script::new(LIST),
        }
    }

    fn shards_key(&self) -> String {
        self.redis.key("shards")
    }

    fn shard_key(&self, name: &str) -> String {
        self.redis.key(&format!("shard:{name}"))
    }

    fn matches_key(&self, name: &str) -> String {
        format!("{}:m", self.shard_key(name))
    }

    fn orphans_key(&self) -> String {
        self.redis.key("orphans")
    }

    fn tentative_key(&self) -> String {
        self.redis.key("tentative")
    }

    /// Runs the reserve script: for good (`confirm_within_ms` `None`) or tentatively.
    async fn reserve_with(
        &self,
        shard: &str,
        record: &MatchRecord,
        confirm_within_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<Tentative, BackendError> {
        let mut invocation = self.reserve.prepare_invoke();
        invocation
            .key(self.shards_key())
            .key(self.shard_key(shard))
            .key(self.matches_key(shard))
            .key(self.tentative_key())
            .arg(shard)
            .arg(record.match_id.0)
            .arg(serde_json::to_string(record)?)
            .arg(confirm_within_ms.map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX)));
        let mut conn = self.redis.conn();
        let outcome: String = self.call(Some(now_ms), invocation.invoke_async(&mut conn)).await?;
        let (word, by) = outcome.split_once(' ').unwrap_or((outcome.as_str(), "0"));
        let reservation = match word {
            "ok" => Reservation::Reserved,
            "full" => Reservation::Full,
            "draining" => Reservation::Draining,
            _ => Reservation::Gone,
        };
        let confirm_by_ms = by
            .parse::<u64>()
            .map_err(|err| BackendError::Corrupt(format!("the reserve script answered {outcome:?}: {err}")))?;
        Ok(Tentative { reservation, confirm_by_ms })
    }

    fn connected_since(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        // Critical sections are single assignments.
        self.connected_since_ms.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs one call, keeping track of whether Redis has been answering: a
    /// failure ends the connected stretch, the next success at `now_ms` starts one.
    async fn call<T>(
        &self,
        now_ms: Option<u64>,
        operation: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BackendError> {
        let outcome = self.redis.run(operation).await;
        match &outcome {
            Err(BackendError::Unavailable(_)) => *self.connected_since() = None,
            Ok(_) => {
                if let Some(now_ms) = now_ms {
                    let mut since = self.connected_since();
                    if since.is_none() {
                        *since = Some(now_ms);
                    }
                }
            }
            Err(_) => {}
        }
        outcome
    }
}

fn decode_records(values: Vec<String>) -> Result<Vec<MatchRecord>, BackendError> {
    let mut records: Vec<MatchRecord> =
        values.iter().map(|json| serde_json::from_str(json)).collect::<Result<_, _>>()?;
    records.sort_by_key(|record| record.match_id);
    Ok(records)
}

#[tonic::async_trait]
impl ShardRegistry for RedisRegistry {
    async fn register(&self, info: &ShardInfo, ttl_ms: u64, now_ms: u64) -> Result<Registration, BackendError> {
        let mut invocation = self.register.prepare_invoke();
        invocation
            .key(self.shards_key())
            .key(self.shard_key(&info.name))
            .key(self.matches_key(&info.name))
            .key(self.orphans_key())
            .arg(&info.name)
            .arg(ttl_ms)
            .arg(serde_json::to_string(info)?)
            .arg(info.capacity)
            .arg(info.incarnation);
        let mut conn = self.redis.conn();
        let orphaned: i64 = self.call(Some(now_ms), invocation.invoke_async(&mut conn)).await?;
        Ok(Registration { orphaned: usize::try_from(orphaned).unwrap_or(0) })
    }

    async fn heartbeat(
        &self,
        name: &str,
        incarnation: u64,
        load: ShardLoad,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<Heartbeat, BackendError> {
        let mut invocation = self.heartbeat.prepare_invoke();
        invocation
            .key(self.shards_key())
            .key(self.shard_key(name))
            .arg(name)
            .arg(ttl_ms)
            .arg(serde_json::to_string(&load)?)
            .arg(incarnation);
        let mut conn = self.redis.conn();
        let outcome: String = self.call(Some(now_ms), invocation.invoke_async(&mut conn)).await?;
        Ok(match outcome.as_str() {
            "alive" => Heartbeat::Alive,
            "superseded" => Heartbeat::Superseded,
            _ => Heartbeat::Unknown,
        })
    }

    async fn set_draining(&self, name: &str, draining: bool) -> Result<bool, BackendError> {
        let mut conn = self.redis.conn();
        let exists: bool =
            self.call(None, redis::cmd("EXISTS").arg(self.shard_key(name)).query_async(&mut conn)).await?;
        if !exists {
            return Ok(false);
        }
        let value = if draining { "1" } else { "0" };
        self.call(
            None,
            redis::cmd("HSET").arg(self.shard_key(name)).arg("draining").arg(value).query_async::<()>(&mut conn),
        )
        .await?;
        Ok(true)
    }

    async fn deregister(&self, name: &str, incarnation: u64) -> Result<Vec<MatchRecord>, BackendError> {
        let mut invocation = self.deregister.prepare_invoke();
        invocation.key(self.shards_key()).key(self.shard_key(name)).arg(name).arg(incarnation);
        let mut conn = self.redis.conn();
        let values: Vec<String> = self.call(None, invocation.invoke_async(&mut conn)).await?;
        decode_records(values)
    }

    async fn shards(&self, now_ms: u64) -> Result<Vec<ShardEntry>, BackendError> {
        let mut invocation = self.list.prepare_invoke();
        invocation.key(self.shards_key()).arg(self.redis.prefix());
        let mut conn = self.redis.conn();
        type Row = (String, String, String, String, String, String);
        let rows: Vec<Row> = self.call(Some(now_ms), invocation.invoke_async(&mut conn)).await?;
        let mut entries = Vec::with_capacity(rows.len());
        for (_name, expires, info, draining, reserved, load) in rows {
            let info: ShardInfo = serde_json::from_str(&info)?;
            let load = if load.is_empty() { ShardLoad::default() } else { serde_json::from_str(&load)? };
            entries.push(ShardEntry {
                info,
                draining: draining == "1",
                reserved: reserved.parse::<i64>().unwrap_or(0).max(0) as u32,
                load,
                expires_at_ms: expires.parse::<f64>().unwrap_or(0.0) as u64,
            });
        }
        entries.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        Ok(entries)
    }

    async fn reserve(&self, shard: &str, record: &MatchRecord, now_ms: u64) -> Result<Reservation, BackendError> {
        Ok(self.reserve_with(shard, record, None, now_ms).await?.reservation)
    }

    async fn reserve_tentative(
        &self,
        shard: &str,
        record: &MatchRecord,
        confirm_within_ms: u64,
        now_ms: u64,
    ) -> Result<Tentative, BackendError> {
        self.reserve_with(shard, record, Some(confirm_within_ms), now_ms).await
    }

    async fn confirm(&self, shard: &str, match_id: MatchId) -> Result<Confirmation, BackendError> {
        let mut invocation = self.confirm.prepare_invoke();
        invocation
            .key(self.tentative_key())
            .key(self.matches_key(shard))
            .arg(format!("{}:{shard}", match_id.0))
            .arg(match_id.0);
        let mut conn = self.redis.conn();
        let held: i64 = self.call(None, invocation.invoke_async(&mut conn)).await?;
        Ok(if held == 1 { Confirmation::Confirmed } else { Confirmation::Gone })
    }

    async fn overdue(&self, now_ms: u64) -> Result<Vec<MatchRecord>, BackendError> {
        let mut invocation = self.overdue.prepare_invoke();
        invocation.key(self.tentative_key()).arg(self.redis.prefix());
        let mut conn = self.redis.conn();
        let values: Vec<String> = self.call(Some(now_ms), invocation.invoke_async(&mut conn)).await?;
        // Oldest first as the script found them; a record that does not parse is corrupt.
        values.iter().map(|json| serde_json::from_str(json).map_err(Into::into)).collect()
    }

    async fn drop_unconfirmed(&self, shard: &str, match_id: MatchId) -> Result<bool, BackendError> {
        let mut invocation = self.drop_unconfirmed.prepare_invoke();
        invocation
            .key(self.tentative_key())
            .key(self.shard_key(shard))
            .key(self.matches_key(shard))
            .arg(format!("{}:{shard}", match_id.0))
            .arg(match_id.0);
        let mut conn = self.redis.conn();
        let dropped: i64 = self.call(None, invocation.invoke_async(&mut conn)).await?;
        Ok(dropped == 1)
    }

    async fn release(&self, shard: &str, match_id: MatchId) -> Result<bool, BackendError> {
        let mut invocation = self.release.prepare_invoke();
        invocation.key(self.shard_key(shard)).key(self.matches_key(shard)).arg(match_id.0);
        let mut conn = self.redis.conn();
        let released: i64 = self.call(None, invocation.invoke_async(&mut conn)).await?;
        Ok(released == 1)
    }

    async fn reap_expired(&self, now_ms: u64) -> Result<Vec<ExpiredShard>, BackendError> {
        // Not yet connected (a failure since): only orphans and shards with no TTL to wait out.
        let connected_for_ms = self.connected_since().map_or(0, |since| now_ms.saturating_sub(since));
        let mut invocation = self.reap.prepare_invoke();
        invocation.key(self.shards_key()).key(self.orphans_key()).arg(self.redis.prefix()).arg(connected_for_ms);
        let mut conn = self.redis.conn();
        type Reaped = (Vec<(String, Vec<String>)>, Vec<String>);
        let (lapsed, orphans): Reaped = self.call(Some(now_ms), invocation.invoke_async(&mut conn)).await?;
        let mut reaped = lapsed
            .into_iter()
            .map(|(name, matches)| {
                Ok(ExpiredShard { name, loss: ShardLoss::Lapsed, matches: decode_records(matches)? })
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        reaped.extend(restarted_shards(decode_records(orphans)?));
        reaped.sort_by(|a, b| a.name.cmp(&b.name).then(a.loss.cmp(&b.loss)));
        Ok(reaped)
    }
}
