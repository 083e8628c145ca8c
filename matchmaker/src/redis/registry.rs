//! The shard registry on Redis. Keys: `P:shards` (a sorted set of shard names
//! scored by entry expiry, Unix ms), `P:shard:<name>` (a hash: `info` JSON,
//! `capacity`, `draining`, `reserved`, `load` JSON) and `P:shard:<name>:m`
//! (a hash of reserved matches: match id → record JSON). Every change that
//! reads before it writes is one Lua script, so replicas can never reserve
//! past capacity or reap one shard twice.

use rally_protocol::MatchId;
use redis::Script;

use super::RedisConnection;
use crate::error::BackendError;
use crate::registry::{ExpiredShard, MatchRecord, Reservation, ShardEntry, ShardInfo, ShardLoad, ShardRegistry};

/// KEYS[1] = shards, KEYS[2] = shard hash; ARGV = name, expiry, info, capacity.
const REGISTER: &str = r"
local alive = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not alive then
  redis.call('DEL', KEYS[2], KEYS[2] .. ':m')
end
redis.call('HSET', KEYS[2], 'info', ARGV[3], 'capacity', ARGV[4], 'draining', '0')
redis.call('HSETNX', KEYS[2], 'reserved', '0')
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
";

/// KEYS[1] = shards, KEYS[2] = shard hash; ARGV = name, now, expiry, load.
const HEARTBEAT: &str = r"
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expires or tonumber(expires) < tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[2], 'load', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
";

/// KEYS[1] = shards, KEYS[2] = shard hash, KEYS[3] = its matches;
/// ARGV = name, now, match id, record.
const RESERVE: &str = r"
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expires or tonumber(expires) < tonumber(ARGV[2]) then return 'gone' end
local fields = redis.call('HMGET', KEYS[2], 'draining', 'reserved', 'capacity')
if fields[1] == '1' then return 'draining' end
if tonumber(fields[2] or '0') >= tonumber(fields[3] or '0') then return 'full' end
if redis.call('HSETNX', KEYS[3], ARGV[3], ARGV[4]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'reserved', 1)
end
return 'ok'
";

/// KEYS[1] = shard hash, KEYS[2] = its matches; ARGV[1] = match id.
const RELEASE: &str = r"
if redis.call('HDEL', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'reserved', -1)
  return 1
end
return 0
";

/// KEYS[1] = shards; ARGV[1] = now, ARGV[2] = key prefix.
/// Returns {name, {match records…}} per expired shard.
const REAP: &str = r"
local names = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local out = {}
for _, name in ipairs(names) do
  local key = ARGV[2] .. ':shard:' .. name
  local matches = redis.call('HVALS', key .. ':m')
  redis.call('DEL', key, key .. ':m')
  redis.call('ZREM', KEYS[1], name)
  table.insert(out, {name, matches})
end
return out
";

/// KEYS[1] = shards, KEYS[2] = shard hash; ARGV[1] = name.
const DEREGISTER: &str = r"
local matches = redis.call('HVALS', KEYS[2] .. ':m')
redis.call('DEL', KEYS[2], KEYS[2] .. ':m')
redis.call('ZREM', KEYS[1], ARGV[1])
return matches
";

/// KEYS[1] = shards; ARGV[1] = now, ARGV[2] = key prefix.
/// Returns {name, expiry, info, draining, reserved, load} per live shard.
const LIST: &str = r"
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES')
local out = {}
for i = 1, #entries, 2 do
  local name = entries[i]
  local fields = redis.call('HMGET', ARGV[2] .. ':shard:' .. name, 'info', 'draining', 'reserved', 'load')
  if fields[1] then
    table.insert(out, {name, entries[i + 1], fields[1], fields[2] or '0', fields[3] or '0', fields[4] or ''})
  end
end
return out
";

/// The shard registry on Redis.
#[derive(Clone)]
pub struct RedisRegistry {
    redis: RedisConnection,
    register: Script,
    heartbeat: Script,
    reserve: Script,
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
            register: Script::new(REGISTER),
            heartbeat: Script::new(HEARTBEAT),
            reserve: Script::new(RESERVE),
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
}

fn decode_records(values: Vec<String>) -> Result<Vec<MatchRecord>, BackendError> {
    let mut records: Vec<MatchRecord> =
        values.iter().map(|json| serde_json::from_str(json)).collect::<Result<_, _>>()?;
    records.sort_by_key(|record| record.match_id);
    Ok(records)
}

#[tonic::async_trait]
impl ShardRegistry for RedisRegistry {
    async fn register(&self, info: &ShardInfo, ttl_ms: u64, now_ms: u64) -> Result<(), BackendError> {
        let mut invocation = self.register.prepare_invoke();
        invocation
            .key(self.shards_key())
            .key(self.shard_key(&info.name))
            .arg(&info.name)
            .arg(now_ms.saturating_add(ttl_ms))
            .arg(serde_json::to_string(info)?)
            .arg(info.capacity);
        let mut conn = self.redis.conn();
        self.redis.run(invocation.invoke_async::<i64>(&mut conn)).await.map(drop)
    }

    async fn heartbeat(&self, name: &str, load: ShardLoad, ttl_ms: u64, now_ms: u64) -> Result<bool, BackendError> {
        let mut invocation = self.heartbeat.prepare_invoke();
        invocation
            .key(self.shards_key())
            .key(self.shard_key(name))
            .arg(name)
            .arg(now_ms)
            .arg(now_ms.saturating_add(ttl_ms))
            .arg(serde_json::to_string(&load)?);
        let mut conn = self.redis.conn();
        let alive: i64 = self.redis.run(invocation.invoke_async(&mut conn)).await?;
        Ok(alive == 1)
    }

    async fn set_draining(&self, name: &str, draining: bool) -> Result<bool, BackendError> {
        let mut conn = self.redis.conn();
        let exists: bool =
            self.redis.run(redis::cmd("EXISTS").arg(self.shard_key(name)).query_async(&mut conn)).await?;
        if !exists {
            return Ok(false);
        }
        let value = if draining { "1" } else { "0" };
        self.redis
            .run(redis::cmd("HSET").arg(self.shard_key(name)).arg("draining").arg(value).query_async::<()>(&mut conn))
            .await?;
        Ok(true)
    }

    async fn deregister(&self, name: &str) -> Result<Vec<MatchRecord>, BackendError> {
        let mut invocation = self.deregister.prepare_invoke();
        invocation.key(self.shards_key()).key(self.shard_key(name)).arg(name);
        let mut conn = self.redis.conn();
        let values: Vec<String> = self.redis.run(invocation.invoke_async(&mut conn)).await?;
        decode_records(values)
    }

    async fn shards(&self, now_ms: u64) -> Result<Vec<ShardEntry>, BackendError> {
        let mut invocation = self.list.prepare_invoke();
        invocation.key(self.shards_key()).arg(now_ms).arg(self.redis.prefix());
        let mut conn = self.redis.conn();
        type Row = (String, String, String, String, String, String);
        let rows: Vec<Row> = self.redis.run(invocation.invoke_async(&mut conn)).await?;
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
        let mut invocation = self.reserve.prepare_invoke();
        invocation
            .key(self.shards_key())
            .key(self.shard_key(shard))
            .key(self.matches_key(shard))
            .arg(shard)
            .arg(now_ms)
            .arg(record.match_id.0)
            .arg(serde_json::to_string(record)?);
        let mut conn = self.redis.conn();
        let outcome: String = self.redis.run(invocation.invoke_async(&mut conn)).await?;
        Ok(match outcome.as_str() {
            "ok" => Reservation::Reserved,
            "full" => Reservation::Full,
            "draining" => Reservation::Draining,
            _ => Reservation::Gone,
        })
    }

    async fn release(&self, shard: &str, match_id: MatchId) -> Result<bool, BackendError> {
        let mut invocation = self.release.prepare_invoke();
        invocation.key(self.shard_key(shard)).key(self.matches_key(shard)).arg(match_id.0);
        let mut conn = self.redis.conn();
        let released: i64 = self.redis.run(invocation.invoke_async(&mut conn)).await?;
        Ok(released == 1)
    }

    async fn reap_expired(&self, now_ms: u64) -> Result<Vec<ExpiredShard>, BackendError> {
        let mut invocation = self.reap.prepare_invoke();
        invocation.key(self.shards_key()).arg(now_ms).arg(self.redis.prefix());
        let mut conn = self.redis.conn();
        let rows: Vec<(String, Vec<String>)> = self.redis.run(invocation.invoke_async(&mut conn)).await?;
        let mut reaped = rows
            .into_iter()
            .map(|(name, matches)| Ok(ExpiredShard { name, matches: decode_records(matches)? }))
            .collect::<Result<Vec<_>, BackendError>>()?;
        reaped.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(reaped)
    }
}
