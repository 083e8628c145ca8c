//! The shard's side of the registry and the bus: register, heartbeat with
//! load, mark draining, publish each finished match's result and release its
//! reservation, deregister at the end. `rally shard --redis-url` runs it next
//! to the shard loop; the embedded form runs it in process.
//!
//! Results are never lost: one that cannot be published (Redis down) waits
//! in an in-memory outbox, in order, and is retried every heartbeat. When the
//! shard's result channel closes (the shard stopped), the outbox is flushed
//! (retrying for up to `final_flush`) before deregistering. Each result is
//! published through [`ResultsBus::settle`], so a match the matchmaker already
//! reported aborted (its shard was reaped or restarted) keeps that one outcome:
//! the late real result is dropped, counted in
//! `rally_shard_agent_results_dropped_total` and logged.
//!
//! The agent registers with the shard's incarnation ([`ShardInfo::incarnation`]).
//! When the registry has forgotten the shard (it was reaped while alive, or
//! Redis came back without its data), the next heartbeat registers it again;
//! when a newer incarnation holds the name, the agent stops heartbeating and
//! leaves the entry to it.
//!
//! A result Redis acknowledged can still be lost with Redis's data (a restart
//! without it, a flush, a failover to an empty replica) before any consumer
//! read it. So the agent keeps what it published in the last
//! [`ShardAgentConfig::republish_window`], and when the registry turns out to
//! have forgotten the shard it settles those results again. Where the data
//! survived (the shard was only reaped), the match ids are still settled and
//! nothing is appended; where it was lost, each result goes back on the stream
//! once. Consumers are idempotent by match id, so a result that had already
//! been applied before the loss changes nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rally_protocol::results::MatchResult;
use tokio::sync::{mpsc, watch};

use crate::bus::{ResultsBus, Settlement};
use crate::engine::unix_ms;
use crate::registry::{Heartbeat, ShardInfo, ShardLoad, ShardRegistry};

/// Reads the shard's current load for each heartbeat.
pub type LoadProbe = Arc<dyn Fn() -> ShardLoad + Send + Sync>;

/// The agent's settings.
#[derive(Clone, Debug)]
pub struct ShardAgentConfig {
    /// What the shard registers as.
    pub info: ShardInfo,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// The registry forgets the shard this long after its last heartbeat.
    pub ttl: Duration,
    /// How long to keep retrying unpublished results once the shard stopped.
    pub final_flush: Duration,
    /// How long a published result is kept to publish again if Redis loses
    /// its data (at most [`MAX_REPUBLISH`] results).
    pub republish_window: Duration,
    /// Results a previous process of this shard recorded (its results file)
    /// shortly before it stopped: settled before the agent first registers,
    /// since registering reports the predecessor's unfinished matches aborted.
    /// A predecessor killed between writing a result and publishing it so
    /// still gets its real outcome on the bus; the ones it did publish are
    /// already settled and append nothing.
    pub recovered: Vec<MatchResult>,
}

/// Most published results kept for [`ShardAgentConfig::republish_window`].
pub const MAX_REPUBLISH: usize = 4096;

impl ShardAgentConfig {
    /// Heartbeats every second, a 5 s TTL, 30 s to flush at the end, results
    /// kept 120 s to publish again.
    pub fn new(info: ShardInfo) -> Self {
        Self {
            info,
            heartbeat_interval: Duration::from_secs(1),
            ttl: Duration::from_secs(5),
            final_flush: Duration::from_secs(30),
            republish_window: Duration::from_secs(120),
            recovered: Vec::new(),
        }
    }
}

/// What the agent did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentReport {
    /// Times it registered (again after a lapse).
    pub registrations: u64,
    /// Heartbeats accepted.
    pub heartbeats: u64,
    /// Results published.
    pub published: u64,
    /// Results not published because their match already had an outcome
    /// (reported aborted after its shard was reaped or restarted).
    pub dropped: u64,
    /// Reservations released.
    pub released: u64,
    /// Results still unpublished when it gave up (lost unless the shard's own file has them).
    pub unpublished: u64,
    /// Results published again after the registry had forgotten the shard
    /// and their match ids were no longer settled (Redis lost its data).
    pub republished: u64,
    /// Results of a previous process of this shard (its results file) that
    /// it had not published, published at start.
    pub recovered: u64,
}

struct Agent {
    registry: Arc<dyn ShardRegistry>,
    bus: Arc<dyn ResultsBus>,
    config: ShardAgentConfig,
    outbox: VecDeque<MatchResult>,
    /// Results published lately, with when (Unix ms), oldest first.
    published: VecDeque<(u64, MatchResult)>,
    report: AgentReport,
    registered: bool,
    draining: bool,
    /// A newer incarnation holds the name: register no more.
    superseded: bool,
}

impl Agent {
    async fn register(&mut self) {
        let ttl_ms = self.config.ttl.as_millis() as u64;
        if self.superseded {
            return;
        }
        match self.registry.register(&self.config.info, ttl_ms, unix_ms()).await {
            Ok(registration) => {
                self.registered = true;
                self.report.registrations += 1;
                tracing::info!(
                    shard = %self.config.info.name,
                    incarnation = self.config.info.incarnation,
                    previous_incarnations_matches = registration.orphaned,
                    "registered with the shard registry"
                );
                if self.draining {
                    self.mark_draining().await;
                }
            }
            Err(err) => tracing::warn!(%err, "could not register the shard; retrying"),
        }
    }

    async fn mark_draining(&mut self) {
        if let Err(err) = self.registry.set_draining(&self.config.info.name, true).await {
            tracing::warn!(%err, "could not mark the shard draining; retrying with the next heartbeat");
            self.registered = false;
        }
    }

    async fn heartbeat(&mut self, load: ShardLoad) {
        if !self.registered {
            self.register().await;
            return;
        }
        let ttl_ms = self.config.ttl.as_millis() as u64;
        let info = &self.config.info;
        match self.registry.heartbeat(&info.name, info.incarnation, load, ttl_ms, unix_ms()).await {
            Ok(Heartbeat::Alive) => self.report.heartbeats += 1,
            Ok(Heartbeat::Unknown) => {
                tracing::warn!(shard = %info.name, "the registry had forgotten this shard; registering again");
                self.registered = false;
                self.register().await;
                self.republish().await;
            }
            Ok(Heartbeat::Superseded) => {
                tracing::error!(
                    shard = %info.name,
                    incarnation = info.incarnation,
                    "another process registered under this shard's name; this one takes no new matches \
                     (give each shard process its own --name)"
                );
                self.registered = false;
                self.superseded = true;
            }
            Err(err) => tracing::warn!(%err, "heartbeat failed"),
        }
    }

    /// Settles the results published within the republish window again, in
    /// order, ahead of anything still queued: those whose match ids are no
    /// longer settled were lost with Redis's data and go back on the stream.
    async fn republish(&mut self) {
        let cutoff = unix_ms().saturating_sub(self.config.republish_window.as_millis() as u64);
        while self.published.front().is_some_and(|(at, _)| *at < cutoff) {
            self.published.pop_front();
        }
        let recent: Vec<MatchResult> = self.published.iter().map(|(_, result)| result.clone()).collect();
        let again = self.settle_again(&recent).await;
        if again > 0 {
            self.report.republished += again;
            metrics::counter!("rally_shard_agent_results_republished_total").increment(again);
            tracing::warn!(
                n = again,
                "Redis had lost recent match results (it came back without its data): published them again"
            );
        }
    }

    /// Settles the results a previous process of this shard recorded, before
    /// the first registration reports its unfinished matches aborted.
    async fn recover(&mut self) {
        let recovered = std::mem::take(&mut self.config.recovered);
        if recovered.is_empty() {
            return;
        }
        let published = self.settle_again(&recovered).await;
        self.report.recovered += published;
        if published > 0 {
            tracing::warn!(
                n = published,
                "published results the previous process of this shard recorded but had not published"
            );
        }
        let now = unix_ms();
        for result in recovered {
            if self.published.len() == MAX_REPUBLISH {
                self.published.pop_front();
            }
            self.published.push_back((now, result));
        }
    }

    /// Settles each of `results` in order and counts the ones that went on
    /// the stream (the others' match ids were settled already); stops at the
    /// first failure.
    async fn settle_again(&self, results: &[MatchResult]) -> u64 {
        let mut again = 0u64;
        for result in results {
            match self.bus.settle(result).await {
                Ok(Settlement::Published(_)) => again += 1,
                Ok(Settlement::AlreadySettled) => {}
                Err(err) => {
                    // Still unsettled ones are retried with the next lapse;
                    // the queued ones keep their own retry.
                    tracing::warn!(%err, "could not publish recent results again; will retry when the registry forgets this shard again");
                    break;
                }
            }
        }
        again
    }

    /// Publishes queued results in order; stops at the first failure.
    async fn flush(&mut self) {
        while let Some(result) = self.outbox.front() {
            let published = match self.bus.settle(result).await {
                Ok(Settlement::Published(_)) => {
                    self.report.published += 1;
                    true
                }
                Ok(Settlement::AlreadySettled) => {
                    self.report.dropped += 1;
                    metrics::counter!("rally_shard_agent_results_dropped_total").increment(1);
                    tracing::warn!(
                        match_id = %result.match_id,
                        "match already reported (aborted when this shard was reaped or restarted); its result is dropped"
                    );
                    false
                }
                Err(err) => {
                    tracing::warn!(%err, queued = self.outbox.len(), "could not publish a match result; will retry");
                    return;
                }
            };
            match self.registry.release(&self.config.info.name, result.match_id).await {
                Ok(true) => self.report.released += 1,
                Ok(false) => {}
                Err(err) => tracing::warn!(%err, match_id = %result.match_id, "could not release the reservation"),
            }
            // Only what went on the stream is kept: a dropped result's match
            // has its outcome already (aborted) and must not get a second one.
            if let Some(result) = self.outbox.pop_front().filter(|_| published) {
                if self.published.len() == MAX_REPUBLISH {
                    self.published.pop_front();
                }
                self.published.push_back((unix_ms(), result));
            }
        }
    }
}

/// Runs until `results` closes: registers `config.info` (with its incarnation), heartbeats with
/// `load()`, marks the shard draining when `draining` turns true, publishes
/// every result to `bus` and releases its reservation, then deregisters.
pub async fn run(
    registry: Arc<dyn ShardRegistry>,
    bus: Arc<dyn ResultsBus>,
    config: ShardAgentConfig,
    mut results: mpsc::UnboundedReceiver<MatchResult>,
    load: LoadProbe,
    mut draining: watch::Receiver<bool>,
) -> AgentReport {
    let mut ticker = tokio::time::interval(config.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut agent = Agent {
        registry,
        bus,
        config,
        outbox: VecDeque::new(),
        published: VecDeque::new(),
        report: AgentReport::default(),
        registered: false,
        draining: false,
        superseded: false,
    };
    agent.recover().await;
    let mut watching_drain = true;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                agent.heartbeat(load()).await;
                agent.flush().await;
            }
            result = results.recv() => {
                let Some(result) = result else { break };
                agent.outbox.push_back(result);
                agent.flush().await;
            }
            changed = draining.changed(), if watching_drain => {
                if changed.is_err() {
                    watching_drain = false;
                } else if *draining.borrow_and_update() && !agent.draining {
                    agent.draining = true;
                    tracing::info!(shard = %agent.config.info.name, "draining: no new matches will be assigned here");
                    agent.mark_draining().await;
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + agent.config.final_flush;
    while !agent.outbox.is_empty() && tokio::time::Instant::now() < deadline {
        agent.flush().await;
        if !agent.outbox.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    agent.report.unpublished = agent.outbox.len() as u64;
    if agent.report.unpublished > 0 {
        tracing::error!(n = agent.report.unpublished, "results could not be published before shutdown");
    }
    match agent.registry.deregister(&agent.config.info.name, agent.config.info.incarnation).await {
        Ok(left) if !left.is_empty() => {
            tracing::warn!(n = left.len(), "deregistered with reservations that never produced a result");
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "could not deregister; the entry will expire on its own"),
    }
    agent.report
}
