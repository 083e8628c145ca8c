//! The bridge between a running rally shard and Agones, through the official Agones Rust SDK
//! (the `agones` crate), for `rally shard --agones`.
//!
//! What it does, over a shard's life:
//!
//! 1. [`Bridge::start`], called once the shard listens: sets the labels
//!    [`LABEL_VERSION`] and [`LABEL_REGION`] (`SetLabel`), the Counter [`COUNTER`]'s capacity
//!    to the shard's most matches and its count to 0 (beta `UpdateCounter`), then `Ready`.
//! 2. While it runs: a health ping every [`BridgeConfig::health_every`] (2 s), sent only if the
//!    shard's tick counter advanced since the last one, so a stuck tick loop stops pinging and
//!    Agones marks the GameServer Unhealthy and replaces the pod. The Counter's count follows the
//!    shard's running matches (read every [`BridgeConfig::poll_every`]); the GameServer is
//!    `Allocate`d while the shard holds a match (Agones' scale-down and Fleet rolling updates
//!    never delete an Allocated GameServer) and `Ready` again once it holds none.
//! 3. Once the shard drains (SIGTERM), it is never made `Ready` again; the count keeps
//!    following the matches that finish. [`Bridge::shutdown`], called by the shard's process
//!    once the drain is over and every result is flushed, stops the pings and calls `Shutdown`
//!    last.
//!
//! [`public_addr`] reads the address players reach the shard at from the GameServer's status
//! (the node address and the host port Agones allocated to the port named [`QUIC_PORT`]).
//!
//! What it does not do: it never creates, allocates or watches other GameServers (the
//! matchmaker finds shards through the Redis registry, as on bare metal), and it holds no
//! Kubernetes credentials; the Agones sidecar in the pod does all of that. It is tested against
//! the SDK's gRPC contract (a fake sidecar served from the SDK's `.proto` files in
//! `agones/tests/`), not against a cluster.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rally_server::ShardHandle;
use rally_server::ShardLive;
use rally_server::ops::Readiness;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use agones::{GameServer, Sdk};

#[cfg(feature = "fake-sidecar")]
pub mod fake_sidecar;

/// The Counter that holds the shard's matches (the Fleet must declare it).
pub const COUNTER: &str = "matches";
/// Label key of the rally version. The SDK sidecar prefixes every key with `agones.dev/sdk-`,
/// so the GameServer carries `agones.dev/sdk-rally-version`.
pub const LABEL_VERSION: &str = "rally-version";
/// Label key of the shard's region (on the GameServer: `agones.dev/sdk-rally-region`).
pub const LABEL_REGION: &str = "rally-region";
/// The GameServer port whose host port players reach the shard's QUIC endpoint on.
pub const QUIC_PORT: &str = "quic";

/// What the bridge reads of the shard.
pub trait ShardProbe: Send + Sync + 'static {
    /// Ticks run since the start: health pings are sent only while it advances.
    fn ticks(&self) -> u64;
    /// Matches held, in any phase.
    fn matches(&self) -> u32;
    /// Whether the shard drains (takes no new matches).
    fn draining(&self) -> bool;
}

/// A [`ShardProbe`] over a running shard's live figures and readiness.
#[derive(Debug, Clone)]
pub struct LiveProbe {
    live: Arc<ShardLive>,
    readiness: Readiness,
}

impl LiveProbe {
    /// Probes `shard`.
    pub fn new(shard: &ShardHandle) -> Self {
        Self { live: shard.live.clone(), readiness: shard.readiness.clone() }
    }
}

impl ShardProbe for LiveProbe {
    fn ticks(&self) -> u64 {
        self.live.ticks()
    }

    fn matches(&self) -> u32 {
        self.live.matches()
    }

    fn draining(&self) -> bool {
        !self.readiness.is_ready()
    }
}

/// Errors of the Agones bridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// No SDK sidecar answered.
    #[error(
        "could not reach the Agones SDK sidecar on localhost:{port} (AGONES_SDK_GRPC_PORT; Agones sets it in \
         the pod): {source}"
    )]
    Connect {
        /// The port tried.
        port: String,
        /// What the SDK said.
        #[source]
        source: Box<agones::errors::Error>,
    },
    /// An SDK call failed.
    #[error("Agones SDK call {call} failed: {source}")]
    Sdk {
        /// The call, as the SDK names it.
        call: &'static str,
        /// What the SDK said.
        #[source]
        source: Box<agones::errors::Error>,
    },
    /// A label value Kubernetes would refuse.
    #[error(
        "{key} {value:?} is not a valid Kubernetes label value (at most 63 characters: letters, digits, '-', '_' \
         and '.', starting and ending with a letter or digit)"
    )]
    BadLabel {
        /// The label key.
        key: &'static str,
        /// The refused value.
        value: String,
    },
    /// The GameServer status lacks what the public address is made of.
    #[error(
        "the GameServer status has {missing}: name the Fleet's QUIC container port `{QUIC_PORT}`, or pass \
         --public-addr"
    )]
    NoPublicAddr {
        /// What is missing.
        missing: &'static str,
    },
    /// The bridge's task panicked.
    #[error("the Agones bridge task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Connects to the SDK sidecar on localhost at `AGONES_SDK_GRPC_PORT` (9357 when unset), waiting
/// up to 30 s for it to answer (the SDK's own handshake).
pub async fn connect() -> Result<Sdk, BridgeError> {
    let port = std::env::var("AGONES_SDK_GRPC_PORT").unwrap_or_else(|_| "9357".to_owned());
    Sdk::new(None, None).await.map_err(|source| BridgeError::Connect { port, source: Box::new(source) })
}

/// `host:port` players reach this GameServer at: its status address and the host port of the
/// port named [`QUIC_PORT`].
pub fn public_addr(game_server: &GameServer) -> Result<String, BridgeError> {
    let status = game_server.status.as_ref().ok_or(BridgeError::NoPublicAddr { missing: "no status" })?;
    if status.address.is_empty() {
        return Err(BridgeError::NoPublicAddr { missing: "no address yet" });
    }
    let port = status
        .ports
        .iter()
        .find(|port| port.name == QUIC_PORT)
        .ok_or(BridgeError::NoPublicAddr { missing: "no port named `quic`" })?;
    let port = u16::try_from(port.port).map_err(|_| BridgeError::NoPublicAddr { missing: "an invalid `quic` port" })?;
    if port == 0 {
        return Err(BridgeError::NoPublicAddr { missing: "no host port for `quic` yet" });
    }
    Ok(match status.address.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{}:{port}", status.address),
    })
}

/// The bridge's settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The Counter's capacity: the shard's most matches at once.
    pub capacity: usize,
    /// The rally version, set as the [`LABEL_VERSION`] label.
    pub version: String,
    /// The shard's region, set as the [`LABEL_REGION`] label.
    pub region: String,
    /// Time between health pings (each sent only if the shard ticked since the last).
    pub health_every: Duration,
    /// Time between reads of the shard's matches (the Counter and the state follow them).
    pub poll_every: Duration,
}

impl BridgeConfig {
    /// The production cadence: a health ping every 2 s (the Fleet's health check allows 5 s
    /// periods and 3 failures), matches read every 100 ms.
    pub fn new(capacity: usize, version: impl Into<String>, region: impl Into<String>) -> Self {
        Self {
            capacity,
            version: version.into(),
            region: region.into(),
            health_every: Duration::from_secs(2),
            poll_every: Duration::from_millis(100),
        }
    }
}

/// Counters of a bridge, readable while it runs.
#[derive(Debug, Default)]
pub struct BridgeStats {
    pings_sent: AtomicU64,
    pings_withheld: AtomicU64,
    sdk_errors: AtomicU64,
}

impl BridgeStats {
    /// Health pings sent.
    pub fn pings_sent(&self) -> u64 {
        self.pings_sent.load(Ordering::Acquire)
    }

    /// Health pings withheld because the tick loop had not advanced.
    pub fn pings_withheld(&self) -> u64 {
        self.pings_withheld.load(Ordering::Acquire)
    }

    /// SDK calls that failed (each is retried at the next poll).
    pub fn sdk_errors(&self) -> u64 {
        self.sdk_errors.load(Ordering::Acquire)
    }
}

/// The GameServer state the bridge asked for last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Ready,
    Allocated,
}

/// A running bridge: its task pings and follows the shard until [`Bridge::shutdown`].
pub struct Bridge {
    stop: watch::Sender<bool>,
    task: JoinHandle<Sdk>,
    stats: Arc<BridgeStats>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("stats", &self.stats).finish_non_exhaustive()
    }
}

/// Kubernetes' label value syntax: at most 63 characters of `[A-Za-z0-9_.-]`, starting and
/// ending with an alphanumeric (empty is allowed).
fn valid_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes.first().is_none_or(u8::is_ascii_alphanumeric)
        && bytes.last().is_none_or(u8::is_ascii_alphanumeric)
}

fn sdk_error(call: &'static str) -> impl FnOnce(agones::errors::Error) -> BridgeError {
    move |source| BridgeError::Sdk { call, source: Box::new(source) }
}

impl Bridge {
    /// Sets the labels and the Counter, marks the GameServer `Ready`, and starts pinging and
    /// following the shard on the current runtime. Call it once the shard listens.
    pub async fn start(mut sdk: Sdk, probe: impl ShardProbe, config: BridgeConfig) -> Result<Self, BridgeError> {
        for (key, value) in [(LABEL_VERSION, &config.version), (LABEL_REGION, &config.region)] {
            if !valid_label_value(value) {
                return Err(BridgeError::BadLabel { key, value: value.clone() });
            }
        }
        sdk.set_label(LABEL_VERSION, config.version.clone()).await.map_err(sdk_error("SetLabel"))?;
        sdk.set_label(LABEL_REGION, config.region.clone()).await.map_err(sdk_error("SetLabel"))?;
        let capacity = i64::try_from(config.capacity).unwrap_or(i64::MAX);
        sdk.beta().clone().set_counter_capacity(COUNTER, capacity).await.map_err(sdk_error("UpdateCounter"))?;
        let matches = probe.matches();
        sdk.beta().clone().set_counter_count(COUNTER, i64::from(matches)).await.map_err(sdk_error("UpdateCounter"))?;
        // Ready even if a match slipped in already: the first poll allocates it.
        sdk.ready().await.map_err(sdk_error("Ready"))?;
        tracing::info!(capacity, region = %config.region, "Agones: GameServer Ready");
        let stats = Arc::new(BridgeStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let follower = Follower {
            health: sdk.health_check(),
            sdk,
            probe,
            config,
            stats: stats.clone(),
            reported_count: matches,
            asked: Asked::Ready,
            last_ticks: 0,
            stalled: false,
            failing: false,
        };
        let task = tokio::spawn(follower.run(stop_rx));
        Ok(Self { stop, task, stats })
    }

    /// The bridge's counters.
    pub fn stats(&self) -> Arc<BridgeStats> {
        self.stats.clone()
    }

    /// Stops the pings and the following, then tells Agones the GameServer is done
    /// (`Shutdown`, the last call). Call it once the shard has drained and every result is
    /// flushed: Agones deletes the pod soon after.
    pub async fn shutdown(self) -> Result<(), BridgeError> {
        let _ = self.stop.send(true);
        let mut sdk = self.task.await?;
        sdk.shutdown().await.map_err(sdk_error("Shutdown"))?;
        tracing::info!("Agones: GameServer Shutdown");
        Ok(())
    }
}

/// The bridge's task state.
struct Follower<P> {
    sdk: Sdk,
    health: mpsc::Sender<()>,
    probe: P,
    config: BridgeConfig,
    stats: Arc<BridgeStats>,
    /// The count the Counter was last set to.
    reported_count: u32,
    asked: Asked,
    /// The tick counter at the last health decision.
    last_ticks: u64,
    /// Whether the last health decision withheld the ping (logged once per stall).
    stalled: bool,
    /// Whether the last SDK call failed (logged once per run of failures).
    failing: bool,
}

impl<P: ShardProbe> Follower<P> {
    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Sdk {
        self.last_ticks = self.probe.ticks();
        // The first ping waits one period, so the tick counter has had time to advance.
        let first_ping = tokio::time::Instant::now() + self.config.health_every;
        let mut health = tokio::time::interval_at(first_ping, self.config.health_every);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut poll = tokio::time::interval(self.config.poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = health.tick() => self.health(),
                _ = poll.tick() => self.follow().await,
            }
        }
        // One last look, so the Counter reads what the drain left (normally 0).
        self.follow().await;
        self.sdk
    }

    /// Pings if the shard ticked since the last decision.
    fn health(&mut self) {
        let ticks = self.probe.ticks();
        let advanced = ticks > self.last_ticks;
        self.last_ticks = ticks;
        if !advanced {
            self.stats.pings_withheld.fetch_add(1, Ordering::AcqRel);
            if !self.stalled {
                tracing::error!(
                    ticks,
                    every = ?self.config.health_every,
                    "the tick loop has not advanced; withholding the Agones health ping (Agones replaces the pod \
                     if it stays stuck)"
                );
            }
            self.stalled = true;
            return;
        }
        if self.stalled {
            tracing::warn!(ticks, "the tick loop advances again; Agones health pings resume");
            self.stalled = false;
        }
        match self.health.try_send(()) {
            Ok(()) => {
                self.stats.pings_sent.fetch_add(1, Ordering::AcqRel);
            }
            Err(mpsc::error::TrySendError::Full(())) => {
                // The health stream is not taking pings (the sidecar is slow): one missed ping.
                self.stats.sdk_errors.fetch_add(1, Ordering::AcqRel);
            }
            Err(mpsc::error::TrySendError::Closed(())) => {
                // The health stream ended (the sidecar restarted): open a new one for the next.
                tracing::warn!("the Agones health stream closed; opening a new one");
                self.stats.sdk_errors.fetch_add(1, Ordering::AcqRel);
                self.health = self.sdk.health_check();
            }
        }
    }

    /// Brings the Counter and the GameServer state in line with the shard's matches.
    async fn follow(&mut self) {
        let matches = self.probe.matches();
        let draining = self.probe.draining();
        if matches != self.reported_count {
            let mut beta = self.sdk.beta().clone();
            match beta.set_counter_count(COUNTER, i64::from(matches)).await {
                Ok(()) => {
                    tracing::debug!(matches, "Agones: Counter {COUNTER} updated");
                    self.reported_count = matches;
                    self.succeeded();
                }
                Err(err) => self.failed("UpdateCounter", &err),
            }
        }
        let wanted = if matches > 0 {
            Asked::Allocated
        } else if draining {
            // Never Ready again once draining: the GameServer is on its way out.
            self.asked
        } else {
            Asked::Ready
        };
        if wanted == self.asked {
            return;
        }
        let (call, outcome) = match wanted {
            Asked::Allocated => ("Allocate", self.sdk.allocate().await),
            Asked::Ready => ("Ready", self.sdk.ready().await),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(matches, state = ?wanted, "Agones: GameServer state asked");
                self.asked = wanted;
                self.succeeded();
            }
            Err(err) => self.failed(call, &err),
        }
    }

    fn succeeded(&mut self) {
        if self.failing {
            tracing::info!("Agones SDK calls succeed again");
            self.failing = false;
        }
    }

    fn failed(&mut self, call: &'static str, err: &agones::errors::Error) {
        self.stats.sdk_errors.fetch_add(1, Ordering::AcqRel);
        if !self.failing {
            tracing::warn!(call, %err, "Agones SDK call failed; retrying at the next poll");
        }
        self.failing = true;
    }
}

#[cfg(test)]
mod tests {
    use super::valid_label_value;

    #[test]
    fn label_values_follow_kubernetes_syntax() {
        for good in ["", "0.1.0", "eu-west-1", "local", "a", "A_b.c-9"] {
            assert!(valid_label_value(good), "{good:?}");
        }
        let long = "a".repeat(64);
        for bad in ["-eu", "eu-", "eu west", "eu/west", ".5", long.as_str(), "é"] {
            assert!(!valid_label_value(bad), "{bad:?}");
        }
    }
}
