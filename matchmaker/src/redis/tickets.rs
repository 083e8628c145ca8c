//! Tickets on Redis. Keys: `P:t:<id>` the ticket (JSON), `P:s:<id>` its state
//! (`q` while queued, else JSON), `P:q:<mode>` the queue (a sorted set scored
//! by enqueue time; equal scores sort by id, and ids are fixed-width hex, so
//! the order is `(enqueued_at, id)`), `P:p:<player>` the player's newest
//! ticket id (what keeps a player to one live ticket, see [`crate::store`]),
//! `P:k:<leader>:<idempotency key>` the ticket an Enqueue with that key made.
//! Ticket, state, player and idempotency keys expire on their own after the
//! retention.
//!
//! The insert script reads the state key of the ticket a player key names,
//! a key it derives rather than receives: the ticket store needs one Redis
//! (or every key in one hash slot), not a cluster.

use redis::Script;

use rally_protocol::{MatchId, PlayerId};

use super::RedisConnection;
use crate::error::BackendError;
use crate::store::{IdempotencyKey, Insertion, TicketStore};
use crate::ticket::{Ticket, TicketId, TicketState};

const QUEUED: &str = "q";

/// Inserts a ticket unless its idempotency key was used already, or one of
/// its players holds a live ticket (queued, or matched and not released).
/// KEYS[1] = ticket key, KEYS[2] = state key, KEYS[3] = queue, KEYS[4] =
/// idempotency key's key (or the ticket key again: none), KEYS[5..] = player
/// keys; ARGV[1] = ticket JSON, ARGV[2] = keep ms, ARGV[3] = enqueue time,
/// ARGV[4] = ticket id, ARGV[5] = the state key prefix, ARGV[6] = '1' when
/// keyed. Returns '' when inserted, 'k <ticket id>' for a key used before,
/// else '<player index> <ticket id>'.
const INSERT: &str = r#"
if ARGV[6] == '1' then
  local made = redis.call('GET', KEYS[4])
  if made then return 'k ' .. made end
end
for i = 5, #KEYS do
  local held = redis.call('GET', KEYS[i])
  if held and held ~= ARGV[4] then
    local state = redis.call('GET', ARGV[5] .. held)
    if state and (state == 'q' or string.sub(state, 1, 11) == '{"Matched":') then
      return (i - 5) .. ' ' .. held
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], 'q', 'PX', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
if ARGV[6] == '1' then redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[2]) end
for i = 5, #KEYS do
  redis.call('SET', KEYS[i], ARGV[4], 'PX', ARGV[2])
end
return ''
"#;

/// Frees players whose ticket is still the one given. KEYS = player keys,
/// ARGV = their expected ticket ids.
const RELEASE: &str = r"
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then redis.call('DEL', KEYS[i]) end
end
return 1
";

/// Claims tickets for a match: all still queued and Redis's clock not past
/// the deadline, or nothing changes. KEYS[1] = queue, KEYS[2..] = state keys;
/// ARGV[1] = retention ms, ARGV[2] = claim by (Unix ms on Redis's clock;
/// negative: no deadline), ARGV[3..n+2] = new states, ARGV[n+3..] = ticket ids.
const CLAIM: &str = r"
local by = tonumber(ARGV[2])
if by >= 0 then
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  if now > by then return 0 end
end
local n = #KEYS - 1
for i = 1, n do
  if redis.call('GET', KEYS[i + 1]) ~= 'q' then return 0 end
end
for i = 1, n do
  redis.call('SET', KEYS[i + 1], ARGV[i + 2], 'PX', ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[n + 2 + i])
end
return 1
";

/// Sets a new state on tickets matched into one match. KEYS = state keys;
/// ARGV[1] = retention ms, ARGV[2] = new state, ARGV[3] = the JSON a state
/// matched into that match starts with. Returns the indices (1-based) changed.
const ABORT_MATCHED: &str = r"
local changed = {}
for i = 1, #KEYS do
  local state = redis.call('GET', KEYS[i])
  if state and string.sub(state, 1, #ARGV[3]) == ARGV[3] then
    redis.call('SET', KEYS[i], ARGV[2], 'PX', ARGV[1])
    table.insert(changed, i)
  end
end
return changed
";

/// Ends a queued ticket. KEYS[1] = queue, KEYS[2] = state key;
/// ARGV[1] = new state, ARGV[2] = retention ms, ARGV[3] = ticket id.
/// Returns the state afterwards (nil for an unknown ticket, which is also
/// dropped from the queue: its keys expired).
const FINISH: &str = r"
local current = redis.call('GET', KEYS[2])
if not current then
  redis.call('ZREM', KEYS[1], ARGV[3])
  return nil
end
if current == 'q' then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  redis.call('ZREM', KEYS[1], ARGV[3])
  return ARGV[1]
end
return current
";

/// The ticket store on Redis.
#[derive(Clone)]
pub struct RedisTickets {
    redis: RedisConnection,
    retention_ms: u64,
    claim: Script,
    abort_matched: Script,
    finish: Script,
    insert: Script,
    release: Script,
}

impl std::fmt::Debug for RedisTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTickets").field("redis", &self.redis).finish_non_exhaustive()
    }
}

impl RedisTickets {
    /// Tickets under `redis`'s prefix; finished ones are kept `retention_ms`.
    pub fn new(redis: RedisConnection, retention_ms: u64) -> Self {
        Self {
            redis,
            retention_ms: retention_ms.max(1),
            claim: Script::new(CLAIM),
            abort_matched: Script::new(ABORT_MATCHED),
            finish: Script::new(FINISH),
            insert: Script::new(INSERT),
            release: Script::new(RELEASE),
        }
    }

    fn player_key(&self, player: PlayerId) -> String {
        self.redis.key(&format!("p:{}", player.0))
    }

    fn ticket_key(&self, id: TicketId) -> String {
        self.redis.key(&format!("t:{id}"))
    }

    fn state_key(&self, id: TicketId) -> String {
        self.redis.key(&format!("s:{id}"))
    }

    fn queue_key(&self, mode: &str) -> String {
        self.redis.key(&format!("q:{mode}"))
    }

    fn idempotency_key(&self, leader: PlayerId, key: &IdempotencyKey) -> String {
        self.redis.key(&format!("k:{}:{}", leader.0, key.as_str()))
    }
}

/// How the stored state of a ticket matched into `match_id` begins: an
/// [`crate::ticket::Assignment`] serializes its match id first.
fn matched_prefix(match_id: MatchId) -> Result<String, BackendError> {
    Ok(format!("{{\"Matched\":{{\"match_id\":{},", serde_json::to_string(&match_id)?))
}

fn encode_state(state: &TicketState) -> Result<String, BackendError> {
    match state {
        TicketState::Queued => Ok(QUEUED.to_owned()),
        other => Ok(serde_json::to_string(other)?),
    }
}

fn decode_state(text: &str) -> Result<TicketState, BackendError> {
    if text == QUEUED { Ok(TicketState::Queued) } else { Ok(serde_json::from_str(text)?) }
}

#[tonic::async_trait]
impl TicketStore for RedisTickets {
    async fn insert(&self, ticket: &Ticket, key: Option<&IdempotencyKey>) -> Result<Insertion, BackendError> {
        let json = serde_json::to_string(ticket)?;
        let keep_ms = ticket.expires_at_ms.saturating_sub(ticket.enqueued_at_ms) + self.retention_ms;
        let keyed = key.zip(ticket.players.first()).map(|(key, leader)| self.idempotency_key(leader.player_id, key));
        let mut invocation = self.insert.prepare_invoke();
        invocation
            .key(self.ticket_key(ticket.id))
            .key(self.state_key(ticket.id))
            .key(self.queue_key(&ticket.mode))
            .key(keyed.clone().unwrap_or_else(|| self.ticket_key(ticket.id)));
        for member in &ticket.players {
            invocation.key(self.player_key(member.player_id));
        }
        invocation
            .arg(json)
            .arg(keep_ms)
            .arg(ticket.enqueued_at_ms)
            .arg(ticket.id.to_string())
            .arg(self.redis.key("s:"))
            .arg(if keyed.is_some() { "1" } else { "0" });
        let mut conn = self.redis.conn();
        let held: String = self.redis.run(invocation.invoke_async(&mut conn)).await?;
        if held.is_empty() {
            return Ok(Insertion::Inserted);
        }
        let corrupt = || BackendError::Corrupt(format!("the ticket insert script answered {held:?}"));
        let (idx, id) = held.split_once(' ').ok_or_else(corrupt)?;
        if idx == "k" {
            let id = id.parse().map_err(|err: String| BackendError::Corrupt(format!("an idempotency key: {err}")))?;
            return Ok(Insertion::Replayed { ticket: id });
        }
        let member = idx.parse::<usize>().ok().and_then(|idx| ticket.players.get(idx)).ok_or_else(corrupt)?;
        let id = id.parse().map_err(|err: String| BackendError::Corrupt(format!("a player key: {err}")))?;
        Ok(Insertion::Held { player_id: member.player_id, ticket: id })
    }

    async fn queued(&self, mode: &str) -> Result<Vec<TicketId>, BackendError> {
        let mut conn = self.redis.conn();
        let ids: Vec<String> = self
            .redis
            .run(redis::cmd("ZRANGE").arg(self.queue_key(mode)).arg(0).arg(-1).query_async(&mut conn))
            .await?;
        ids.iter()
            .map(|id| id.parse().map_err(|err: String| BackendError::Corrupt(format!("queue {mode}: {err}"))))
            .collect()
    }

    async fn tickets(&self, ids: &[TicketId]) -> Result<Vec<Option<Ticket>>, BackendError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|&id| self.ticket_key(id)).collect();
        let mut conn = self.redis.conn();
        let values: Vec<Option<String>> = self.redis.run(redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?;
        values
            .into_iter()
            .map(|value| value.map(|json| serde_json::from_str(&json)).transpose().map_err(Into::into))
            .collect()
    }

    async fn states(&self, ids: &[TicketId]) -> Result<Vec<Option<TicketState>>, BackendError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|&id| self.state_key(id)).collect();
        let mut conn = self.redis.conn();
        let values: Vec<Option<String>> = self.redis.run(redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?;
        values.into_iter().map(|value| value.map(|text| decode_state(&text)).transpose()).collect()
    }

    async fn claim_by(
        &self,
        mode: &str,
        claims: &[(TicketId, TicketState)],
        by_ms: u64,
        _now_ms: u64,
    ) -> Result<bool, BackendError> {
        if claims.is_empty() {
            return Ok(true);
        }
        let mut invocation = self.claim.prepare_invoke();
        invocation.key(self.queue_key(mode));
        for (id, _) in claims {
            invocation.key(self.state_key(*id));
        }
        invocation.arg(self.retention_ms).arg(i64::try_from(by_ms).unwrap_or(-1));
        for (_, state) in claims {
            invocation.arg(encode_state(state)?);
        }
        for (id, _) in claims {
            invocation.arg(id.to_string());
        }
        let mut conn = self.redis.conn();
        let claimed: i64 = self.redis.run(invocation.invoke_async(&mut conn)).await?;
        Ok(claimed == 1)
    }

    async fn finish(&self, mode: &str, id: TicketId, state: TicketState) -> Result<Option<TicketState>, BackendError> {
        let mut invocation = self.finish.prepare_invoke();
        invocation
            .key(self.queue_key(mode))
            .key(self.state_key(id))
            .arg(encode_state(&state)?)
            .arg(self.retention_ms)
            .arg(id.to_string());
        let mut conn = self.redis.conn();
        let after: Option<String> = self.redis.run(invocation.invoke_async(&mut conn)).await?;
        after.map(|text| decode_state(&text)).transpose()
    }

    async fn set_states(&self, updates: &[(TicketId, TicketState)]) -> Result<(), BackendError> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (id, state) in updates {
            pipe.cmd("SET")
                .arg(self.state_key(*id))
                .arg(encode_state(state)?)
                .arg("PX")
                .arg(self.retention_ms)
                .ignore();
        }
        let mut conn = self.redis.conn();
        self.redis.run(pipe.query_async::<()>(&mut conn)).await
    }

    async fn abort_matched(
        &self,
        match_id: MatchId,
        ids: &[TicketId],
        state: &TicketState,
    ) -> Result<Vec<TicketId>, BackendError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.abort_matched.prepare_invoke();
        for &id in ids {
            invocation.key(self.state_key(id));
        }
        invocation.arg(self.retention_ms).arg(encode_state(state)?).arg(matched_prefix(match_id)?);
        let mut conn = self.redis.conn();
        let changed: Vec<usize> = self.redis.run(invocation.invoke_async(&mut conn)).await?;
        Ok(changed.into_iter().filter_map(|idx| ids.get(idx.checked_sub(1)?).copied()).collect())
    }

    async fn release_seats(&self, match_id: MatchId, players: &[PlayerId]) -> Result<(), BackendError> {
        if players.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = players.iter().map(|&player| self.player_key(player)).collect();
        let mut conn = self.redis.conn();
        let held: Vec<Option<String>> = self.redis.run(redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?;
        let held: Vec<(String, TicketId)> =
            keys.into_iter().zip(held).filter_map(|(key, id)| Some((key, id?.parse().ok()?))).collect();
        let ids: Vec<TicketId> = held.iter().map(|(_, id)| *id).collect();
        let states = self.states(&ids).await?;
        let mut invocation = self.release.prepare_invoke();
        let mut n = 0;
        for ((key, id), state) in held.iter().zip(states) {
            if matches!(state, Some(TicketState::Matched(assignment)) if assignment.match_id == match_id) {
                invocation.key(key).arg(id.to_string());
                n += 1;
            }
        }
        if n == 0 {
            return Ok(());
        }
        self.redis.run(invocation.invoke_async::<i64>(&mut conn)).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::Assignment;

    #[test]
    fn a_matched_state_starts_with_its_match_id() {
        let assignment = Assignment {
            match_id: MatchId(u64::MAX - 3),
            mode: "pong".into(),
            shard_name: "s".into(),
            shard_address: "127.0.0.1:1".into(),
            certificate_sha256: String::new(),
            seats: Vec::new(),
            roster: Vec::new(),
            matched_at_ms: 0,
        };
        let stored = encode_state(&TicketState::Matched(assignment)).unwrap();
        assert!(stored.starts_with(&matched_prefix(MatchId(u64::MAX - 3)).unwrap()), "{stored}");
        assert!(!stored.starts_with(&matched_prefix(MatchId(u64::MAX - 30)).unwrap()));
        assert!(!stored.starts_with(&matched_prefix(MatchId(1)).unwrap()));
    }
}
