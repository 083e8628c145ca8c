//! Tickets on Redis. Keys: `P:t:<id>` the ticket (JSON), `P:s:<id>` its state
//! (`q` while queued, else JSON), `P:q:<mode>` the queue (a sorted set scored
//! by enqueue time; equal scores sort by id, and ids are fixed-width hex, so
//! the order is `(enqueued_at, id)`). Ticket and state keys expire on their
//! own after the retention.

use redis::Script;

use super::RedisConnection;
use crate::error::BackendError;
use crate::store::TicketStore;
use crate::ticket::{Ticket, TicketId, TicketState};

const QUEUED: &str = "q";

/// Claims tickets for a match: all still queued, or nothing changes.
/// KEYS[1] = queue, KEYS[2..] = state keys; ARGV[1] = retention ms,
/// ARGV[2..n+1] = new states, ARGV[n+2..] = ticket ids.
const CLAIM: &str = r"
local n = #KEYS - 1
for i = 1, n do
  if redis.call('GET', KEYS[i + 1]) ~= 'q' then return 0 end
end
for i = 1, n do
  redis.call('SET', KEYS[i + 1], ARGV[i + 1], 'PX', ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[n + 1 + i])
end
return 1
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
    finish: Script,
}

impl std::fmt::Debug for RedisTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTickets").field("redis", &self.redis).finish_non_exhaustive()
    }
}

impl RedisTickets {
    /// Tickets under `redis`'s prefix; finished ones are kept `retention_ms`.
    pub fn new(redis: RedisConnection, retention_ms: u64) -> Self {
        Self { redis, retention_ms: retention_ms.max(1), claim: Script::new(CLAIM), finish: Script::new(FINISH) }
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
    async fn insert(&self, ticket: &Ticket) -> Result<(), BackendError> {
        let json = serde_json::to_string(ticket)?;
        let keep_ms = ticket.expires_at_ms.saturating_sub(ticket.enqueued_at_ms) + self.retention_ms;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.ticket_key(ticket.id))
            .arg(json)
            .arg("PX")
            .arg(keep_ms)
            .ignore()
            .cmd("SET")
            .arg(self.state_key(ticket.id))
            .arg(QUEUED)
            .arg("PX")
            .arg(keep_ms)
            .ignore()
            .cmd("ZADD")
            .arg(self.queue_key(&ticket.mode))
            .arg(ticket.enqueued_at_ms)
            .arg(ticket.id.to_string())
            .ignore();
        let mut conn = self.redis.conn();
        self.redis.run(pipe.query_async::<()>(&mut conn)).await
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

    async fn claim(&self, mode: &str, claims: &[(TicketId, TicketState)]) -> Result<bool, BackendError> {
        if claims.is_empty() {
            return Ok(true);
        }
        let mut invocation = self.claim.prepare_invoke();
        invocation.key(self.queue_key(mode));
        for (id, _) in claims {
            invocation.key(self.state_key(*id));
        }
        invocation.arg(self.retention_ms);
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
}
