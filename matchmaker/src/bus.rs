//! The results bus: finished matches from shards to their consumers (the
//! lobby's ratings, later tournaments). In-process by default
//! ([`MemoryBus`]); Redis Streams with consumer groups when scaled out
//! ([`crate::redis::RedisBus`]).
//!
//! Delivery is at least once, per consumer group: every group sees every
//! result; within a group each result goes to one consumer, stays pending
//! until that consumer acknowledges it, and is claimed by another consumer
//! once it has been pending longer than an idle limit (its consumer died).
//! Consumers must therefore be idempotent by match id, as
//! `ProfileStore::apply_match_result` is. [`run_consumer`] drives that loop.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rally_protocol::MatchId;
use rally_protocol::results::MatchResult;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::error::BackendError;

/// How long a match id stays settled ([`ResultsBus::settle`]): a late result
/// for it within this time is dropped. Longer than any outage a shard's outbox
/// rides out.
pub const SETTLED_TTL: Duration = Duration::from_secs(24 * 3600);

/// The counter of bus entries a consumer refused, by `stream` (`results`,
/// `matches`, `ratings`) and `reason` (`unknown_version`, `malformed`): a
/// producer newer than this consumer, or corruption. Never misread, never
/// silently dropped (`bus.proto` states the rule).
pub const REFUSED_TOTAL: &str = "rally_bus_events_refused_total";

/// Counts one refused entry in [`REFUSED_TOTAL`].
pub fn count_refused(stream: &'static str, reason: &'static str) {
    metrics::describe_counter!(
        REFUSED_TOTAL,
        "Bus entries a consumer refused (a version it does not know, or malformed), by stream and reason"
    );
    metrics::counter!(REFUSED_TOTAL, "stream" => stream, "reason" => reason).increment(1);
}

/// What settling a match's outcome found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// This was the match's first outcome: published under this entry id.
    Published(String),
    /// The match already had an outcome on the bus; this one was not published.
    AlreadySettled,
}

/// One result handed to a consumer, with the id to acknowledge it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The bus's id for the entry.
    pub id: String,
    /// The result.
    pub result: MatchResult,
}

/// Where results are published and consumed.
#[tonic::async_trait]
pub trait ResultsBus: Send + Sync + std::fmt::Debug + 'static {
    /// Appends a result; returns its entry id.
    async fn publish(&self, result: &MatchResult) -> Result<String, BackendError>;
    /// Publishes `result` only if its match has no outcome yet, in one atomic
    /// step (marks the match id settled for [`SETTLED_TTL`] and appends): a
    /// shard's real result and the matchmaker's abort of the same match go
    /// through here, so each match id has exactly one outcome on the bus.
    async fn settle(&self, result: &MatchResult) -> Result<Settlement, BackendError>;
    /// Creates `group` if missing; a new group starts from the oldest entry kept.
    async fn ensure_group(&self, group: &str) -> Result<(), BackendError>;
    /// Up to `max` entries never delivered to `group`, now pending with
    /// `consumer`; waits up to `wait` for the first one.
    async fn read_new(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BackendError>;
    /// Entries delivered to `consumer` and not yet acknowledged (what a
    /// restarted consumer must finish first).
    async fn read_pending(&self, group: &str, consumer: &str, max: usize) -> Result<Vec<Delivery>, BackendError>;
    /// Moves to `consumer` up to `max` entries pending with any consumer of
    /// `group` for at least `min_idle` (Redis `XAUTOCLAIM`).
    async fn claim_stale(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<Delivery>, BackendError>;
    /// Acknowledges entries: they are done for `group`.
    async fn ack(&self, group: &str, ids: &[String]) -> Result<(), BackendError>;
    /// How far `group` is behind, or `None` when this bus cannot tell.
    async fn lag(&self, group: &str) -> Result<Option<ConsumerLag>, BackendError> {
        let _ = group;
        Ok(None)
    }
}

/// A consumer group's backlog ([`ResultsBus::lag`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerLag {
    /// Entries delivered to a consumer and not yet acknowledged.
    pub pending: u64,
    /// Entries never delivered to the group.
    pub undelivered: u64,
}

impl ConsumerLag {
    /// Entries not yet done.
    pub fn backlog(&self) -> u64 {
        self.pending + self.undelivered
    }
}

#[derive(Debug, Default)]
struct MemoryGroup {
    /// Sequence number of the next entry never delivered.
    next: u64,
    /// Delivered, unacknowledged: seq → (consumer, delivered at).
    pending: BTreeMap<u64, (String, Instant)>,
}

#[derive(Debug, Default)]
struct MemoryLog {
    entries: BTreeMap<u64, MatchResult>,
    next_seq: u64,
    groups: HashMap<String, MemoryGroup>,
    /// Match ids settled, with when (oldest first), forgotten after [`SETTLED_TTL`].
    settled: HashSet<MatchId>,
    settled_order: VecDeque<(Instant, MatchId)>,
}

impl MemoryLog {
    fn delivery(&self, seq: u64) -> Option<Delivery> {
        self.entries.get(&seq).map(|result| Delivery { id: seq.to_string(), result: result.clone() })
    }

    /// Drops entries every group has acknowledged (none are dropped before a group exists).
    fn trim(&mut self) {
        let Some(keep_from) = self
            .groups
            .values()
            .map(|group| group.pending.keys().next().copied().unwrap_or(group.next).min(group.next))
            .min()
        else {
            return;
        };
        while let Some((&seq, _)) = self.entries.first_key_value() {
            if seq >= keep_from {
                break;
            }
            self.entries.pop_first();
        }
    }
}

/// The embedded bus: an in-process log with consumer groups, the same
/// semantics as the Redis stream (ids are decimal sequence numbers).
#[derive(Debug, Default)]
pub struct MemoryBus {
    log: Mutex<MemoryLog>,
    published: Notify,
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryLog> {
        // Every critical section is a few infallible map operations.
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn parse_ids(ids: &[String]) -> impl Iterator<Item = u64> + '_ {
    ids.iter().filter_map(|id| id.parse().ok())
}

#[tonic::async_trait]
impl ResultsBus for MemoryBus {
    async fn publish(&self, result: &MatchResult) -> Result<String, BackendError> {
        let seq = {
            let mut log = self.lock();
            let seq = log.next_seq;
            log.next_seq += 1;
            log.entries.insert(seq, result.clone());
            seq
        };
        self.published.notify_waiters();
        Ok(seq.to_string())
    }

    async fn settle(&self, result: &MatchResult) -> Result<Settlement, BackendError> {
        let seq = {
            let mut log = self.lock();
            let now = Instant::now();
            while let Some(&(at, match_id)) = log.settled_order.front() {
                if now.duration_since(at) < SETTLED_TTL {
                    break;
                }
                log.settled_order.pop_front();
                log.settled.remove(&match_id);
            }
            if !log.settled.insert(result.match_id) {
                return Ok(Settlement::AlreadySettled);
            }
            log.settled_order.push_back((now, result.match_id));
            let seq = log.next_seq;
            log.next_seq += 1;
            log.entries.insert(seq, result.clone());
            seq
        };
        self.published.notify_waiters();
        Ok(Settlement::Published(seq.to_string()))
    }

    async fn ensure_group(&self, group: &str) -> Result<(), BackendError> {
        let mut log = self.lock();
        let oldest = log.entries.keys().next().copied().unwrap_or(log.next_seq);
        log.groups.entry(group.to_owned()).or_insert_with(|| MemoryGroup { next: oldest, ..MemoryGroup::default() });
        Ok(())
    }

    async fn read_new(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BackendError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so a publish in between still wakes us.
            let published = self.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            {
                let mut log = self.lock();
                let next_seq = log.next_seq;
                let Some(state) = log.groups.get_mut(group) else {
                    return Err(BackendError::Unavailable(format!("no consumer group {group:?}; call ensure_group")));
                };
                let from = state.next;
                let to = next_seq.min(from.saturating_add(max as u64));
                if to > from {
                    state.next = to;
                    let now = Instant::now();
                    for seq in from..to {
                        state.pending.insert(seq, (consumer.to_owned(), now));
                    }
                    let deliveries = (from..to).filter_map(|seq| log.delivery(seq)).collect();
                    return Ok(deliveries);
                }
            }
            if tokio::time::timeout_at(deadline, published).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn read_pending(&self, group: &str, consumer: &str, max: usize) -> Result<Vec<Delivery>, BackendError> {
        let log = self.lock();
        let Some(state) = log.groups.get(group) else { return Ok(Vec::new()) };
        Ok(state
            .pending
            .iter()
            .filter(|(_, (owner, _))| owner == consumer)
            .take(max)
            .filter_map(|(&seq, _)| log.delivery(seq))
            .collect())
    }

    async fn claim_stale(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<Delivery>, BackendError> {
        let mut log = self.lock();
        let Some(state) = log.groups.get_mut(group) else { return Ok(Vec::new()) };
        let now = Instant::now();
        let stale: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= min_idle)
            .map(|(&seq, _)| seq)
            .take(max)
            .collect();
        for seq in &stale {
            state.pending.insert(*seq, (consumer.to_owned(), now));
        }
        Ok(stale.into_iter().filter_map(|seq| log.delivery(seq)).collect())
    }

    async fn ack(&self, group: &str, ids: &[String]) -> Result<(), BackendError> {
        let mut log = self.lock();
        if let Some(state) = log.groups.get_mut(group) {
            for seq in parse_ids(ids) {
                state.pending.remove(&seq);
            }
        }
        log.trim();
        Ok(())
    }

    async fn lag(&self, group: &str) -> Result<Option<ConsumerLag>, BackendError> {
        let log = self.lock();
        Ok(log.groups.get(group).map(|state| ConsumerLag {
            pending: state.pending.len() as u64,
            undelivered: log.next_seq.saturating_sub(state.next),
        }))
    }
}

/// What a consumer does with one result. An `Err` leaves the entry
/// unacknowledged, so it is delivered again later (to this or another consumer).
#[tonic::async_trait]
pub trait ResultHandler: Send + Sync + 'static {
    /// Handles one result; must be idempotent by match id.
    async fn handle(&self, result: &MatchResult) -> Result<(), String>;
}

/// Settings of one consumer loop.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// The consumer group (e.g. `lobby-ratings`).
    pub group: String,
    /// This consumer's name, stable across restarts of the same process slot.
    pub consumer: String,
    /// Most entries read at once.
    pub batch: usize,
    /// How long one read waits for new entries.
    pub wait: Duration,
    /// Entries pending this long with any consumer are taken over.
    pub claim_idle: Duration,
    /// How often to look for such entries (and to report the group's lag).
    pub claim_every: Duration,
    /// A backlog (pending and undelivered entries) this large and growing is logged as a warning.
    pub lag_warn: u64,
}

impl ConsumerConfig {
    /// Defaults: batches of 64, 100 ms waits, take over after 30 s idle, look
    /// every 5 s, warn about a growing backlog from 1 000 entries.
    pub fn new(group: impl Into<String>, consumer: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            consumer: consumer.into(),
            batch: 64,
            wait: Duration::from_millis(100),
            claim_idle: Duration::from_secs(30),
            claim_every: Duration::from_secs(5),
            lag_warn: 1_000,
        }
    }
}

/// Counters of a consumer loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Results handled and acknowledged.
    pub handled: u64,
    /// Handler failures (left pending for a retry).
    pub failed: u64,
    /// Entries taken over from idle consumers.
    pub claimed: u64,
}

/// A running consumer loop.
#[derive(Debug)]
pub struct ConsumerHandle {
    stop: watch::Sender<bool>,
    stats: watch::Receiver<ConsumerStats>,
    task: JoinHandle<ConsumerStats>,
}

impl ConsumerHandle {
    /// The counters so far.
    pub fn stats(&self) -> ConsumerStats {
        *self.stats.borrow()
    }

    /// A receiver that changes whenever the counters do (for tests to wait on).
    pub fn watch_stats(&self) -> watch::Receiver<ConsumerStats> {
        self.stats.clone()
    }

    /// Stops after the entry in hand and returns the counters.
    pub async fn stop(self) -> ConsumerStats {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }

    /// Stops at once, as a crash would: entries read but not yet
    /// acknowledged stay pending, for a restart or another consumer.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// Starts a consumer: first it finishes its own pending entries (a restart
/// loses nothing), then reads new ones, and every `claim_every` takes over
/// entries idle with dead consumers. Bus errors are logged and retried with
/// backoff; the loop never gives up on its own.
pub fn run_consumer(
    bus: Arc<dyn ResultsBus>,
    config: ConsumerConfig,
    handler: Arc<dyn ResultHandler>,
) -> ConsumerHandle {
    metrics::describe_gauge!(
        "rally_results_consumer_pending",
        "Results delivered to a consumer group and not yet acknowledged, by group (results-bus lag)"
    );
    metrics::describe_gauge!(
        "rally_results_consumer_undelivered",
        "Results on the bus never delivered to a consumer group, by group (results-bus lag)"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stats_tx, stats_rx) = watch::channel(ConsumerStats::default());
    let span = tracing::info_span!("results_consumer", group = %config.group, consumer = %config.consumer);
    let task = tokio::spawn(consume(bus, config, handler, stop_rx, stats_tx).instrument(span));
    ConsumerHandle { stop: stop_tx, stats: stats_rx, task }
}

async fn consume(
    bus: Arc<dyn ResultsBus>,
    config: ConsumerConfig,
    handler: Arc<dyn ResultHandler>,
    mut stop: watch::Receiver<bool>,
    stats: watch::Sender<ConsumerStats>,
) -> ConsumerStats {
    let mut backoff = Duration::from_millis(50);
    let mut ready = false;
    let mut last_claim: Option<Instant> = None;
    let mut last_backlog = 0u64;
    while !*stop.borrow() {
        let step: Result<(), BackendError> = async {
            if !ready {
                bus.ensure_group(&config.group).await?;
                loop {
                    let pending = bus.read_pending(&config.group, &config.consumer, config.batch).await?;
                    if pending.is_empty() {
                        break;
                    }
                    let n = pending.len();
                    let failed = handle_batch(&*bus, &config, &*handler, pending, &stats).await?;
                    if failed == n {
                        break; // they stay pending; claim_stale retries them later
                    }
                }
                ready = true;
            }
            if last_claim.is_none_or(|at| at.elapsed() >= config.claim_every) {
                last_claim = Some(Instant::now());
                report_lag(&*bus, &config, &mut last_backlog).await?;
                let claimed = bus.claim_stale(&config.group, &config.consumer, config.claim_idle, config.batch).await?;
                if !claimed.is_empty() {
                    tracing::info!(n = claimed.len(), group = %config.group, "took over idle results");
                    stats.send_modify(|stats| stats.claimed += claimed.len() as u64);
                    handle_batch(&*bus, &config, &*handler, claimed, &stats).await?;
                }
            }
            let fresh = tokio::select! {
                fresh = bus.read_new(&config.group, &config.consumer, config.batch, config.wait) => fresh?,
                _ = stop.changed() => return Ok(()),
            };
            handle_batch(&*bus, &config, &*handler, fresh, &stats).await?;
            Ok(())
        }
        .await;
        match step {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(err) => {
                // Start again from ensuring the group: if Redis lost it (a
                // restart without its data, a failover, a flush), it is made
                // again from the oldest entry kept, so no result is skipped;
                // one delivered twice is a duplicate the handler ignores.
                ready = false;
                tracing::warn!(%err, group = %config.group, retry_in = ?backoff, "results consumer: bus error");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    *stats.borrow()
}

/// Publishes `config.group`'s backlog as `rally_results_consumer_pending` and
/// `rally_results_consumer_undelivered` gauges, and warns while it grows past
/// [`ConsumerConfig::lag_warn`].
async fn report_lag(bus: &dyn ResultsBus, config: &ConsumerConfig, last_backlog: &mut u64) -> Result<(), BackendError> {
    let Some(lag) = bus.lag(&config.group).await? else { return Ok(()) };
    metrics::gauge!("rally_results_consumer_pending", "group" => config.group.clone()).set(lag.pending as f64);
    metrics::gauge!("rally_results_consumer_undelivered", "group" => config.group.clone()).set(lag.undelivered as f64);
    let backlog = lag.backlog();
    if backlog >= config.lag_warn && backlog > *last_backlog {
        tracing::warn!(
            group = %config.group,
            pending = lag.pending,
            undelivered = lag.undelivered,
            "results consumers are falling behind; start more, or look for a failing handler"
        );
    }
    *last_backlog = backlog;
    Ok(())
}

/// Handles each delivery and acknowledges the successes; returns the failures.
async fn handle_batch(
    bus: &dyn ResultsBus,
    config: &ConsumerConfig,
    handler: &dyn ResultHandler,
    deliveries: Vec<Delivery>,
    stats: &watch::Sender<ConsumerStats>,
) -> Result<usize, BackendError> {
    let mut done = Vec::with_capacity(deliveries.len());
    let mut failed = 0;
    for delivery in deliveries {
        match handler.handle(&delivery.result).await {
            Ok(()) => done.push(delivery.id),
            Err(err) => {
                failed += 1;
                tracing::warn!(match_id = %delivery.result.match_id, %err, "result handler failed; it will be retried");
            }
        }
    }
    if !done.is_empty() {
        bus.ack(&config.group, &done).await?;
    }
    stats.send_modify(|stats| {
        stats.handled += done.len() as u64;
        stats.failed += failed as u64;
    });
    Ok(failed)
}
