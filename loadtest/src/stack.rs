//! The servers a run talks to when none is given by address: a shard (and the
//! echo baseline) started inside the harness process, each on its own thread
//! with its own single-threaded runtime, optionally pinned to its own core.
//!
//! A dedicated thread keeps the shard's work off the clients' runtime, so its
//! tick times and CPU time are its own, exactly as in a separate `rally shard`
//! process, while the run still knows the shard's final counters (matches
//! ended, results delivered) to check its own figures against.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use ed25519_dalek::VerifyingKey;
use rally_matchmaker::TokenMinter;
use rally_protocol::results::MatchResult;
use rally_server::ServeConfig;
use rally_server::ShardConfig;
use rally_server::ShardLive;
use rally_server::ShardReport;
use rally_sim::game::LifecycleConfig;
use rally_sim::pong::PongWorld;
use tokio::sync::{mpsc, oneshot};

use crate::echo::EchoKind;
use crate::sys;

/// Settings of an embedded shard.
#[derive(Debug, Clone)]
pub struct EmbeddedShardConfig {
    /// Simulation ticks per second.
    pub tick_rate_hz: u16,
    /// Snapshots per second per client.
    pub snapshot_rate_hz: u16,
    /// Most matches at once.
    pub max_matches: usize,
    /// Countdown before each serve, in ticks.
    pub countdown_ticks: u32,
    /// Pin the shard's thread to this core.
    pub core: Option<usize>,
    /// The token issuer to trust (key id 1); `None`: a fresh key the harness holds.
    pub token_key: Option<VerifyingKey>,
    /// Also serve raw UDP on a free loopback port (next to QUIC).
    pub udp: bool,
}

impl Default for EmbeddedShardConfig {
    fn default() -> Self {
        Self {
            tick_rate_hz: 60,
            snapshot_rate_hz: 30,
            max_matches: 20_000,
            countdown_ticks: 60,
            core: None,
            token_key: None,
            udp: false,
        }
    }
}

/// A shard the harness started; [`EmbeddedShard::stop`] drains it and returns its counters.
#[derive(Debug)]
pub struct EmbeddedShard {
    /// QUIC address.
    pub addr: SocketAddr,
    /// Raw UDP address, when [`EmbeddedShardConfig::udp`] asked for it.
    pub udp_addr: Option<SocketAddr>,
    /// Metrics endpoint (`/metrics`).
    pub metrics: SocketAddr,
    /// SHA-256 of its self-signed certificate.
    pub fingerprint: String,
    /// Its name, as tokens must carry it.
    pub name: String,
    /// Mints the tokens it trusts (key id 1), when the harness made the key.
    pub minter: Option<TokenMinter>,
    /// Its thread's kernel id, for CPU accounting.
    pub tid: Option<u32>,
    /// Its live figures (matches, connections), for a registry heartbeat.
    pub live: Arc<ShardLive>,
    results: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<EmbeddedShardReport>>>,
    _dir: tempdir::TempDir,
}

/// What an embedded shard reports when stopped.
#[derive(Debug, Clone)]
pub struct EmbeddedShardReport {
    /// The shard loop's counters.
    pub shard: ShardReport,
    /// Every match result it emitted.
    pub results: Vec<MatchResult>,
}

/// A throwaway directory removed on drop (the shard's self-signed certificate).
mod tempdir {
    use std::path::{Path, PathBuf};

    #[derive(Debug)]
    pub(super) struct TempDir(PathBuf);

    impl TempDir {
        pub(super) fn new(prefix: &str) -> std::io::Result<Self> {
            let dir =
                std::env::temp_dir().join(format!("{prefix}-{}-{:08x}", std::process::id(), rand::random::<u32>()));
            std::fs::create_dir_all(&dir)?;
            Ok(Self(dir))
        }

        pub(super) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

struct Started {
    live: Arc<ShardLive>,
    addr: SocketAddr,
    udp_addr: Option<SocketAddr>,
    metrics: SocketAddr,
    fingerprint: String,
    name: String,
    tid: Option<u32>,
}

impl EmbeddedShard {
    /// Starts the shard thread and waits until it listens.
    pub fn start(config: &EmbeddedShardConfig) -> anyhow::Result<Self> {
        Self::start_forwarding(config, None)
    }

    /// Like [`EmbeddedShard::start`], and sends a copy of every match result to `forward`
    /// (a registry agent publishing them, in the full stack).
    pub fn start_forwarding(
        config: &EmbeddedShardConfig,
        forward: Option<mpsc::UnboundedSender<MatchResult>>,
    ) -> anyhow::Result<Self> {
        let minter = match config.token_key {
            Some(_) => None,
            None => Some(TokenMinter::random(1)),
        };
        let token_key = config
            .token_key
            .or_else(|| minter.as_ref().map(TokenMinter::verifying_key))
            .context("a token key is always chosen")?;
        let dir = tempdir::TempDir::new("rally-loadtest-shard").context("creating the shard's data directory")?;
        let mut serve = ServeConfig::local(dir.path().to_owned(), vec![(1, token_key)]);
        serve.shard = ShardConfig {
            name: "loadtest-shard".into(),
            tick_rate_hz: config.tick_rate_hz,
            snapshot_rate_hz: config.snapshot_rate_hz,
            max_matches: config.max_matches,
            lifecycle: LifecycleConfig { countdown_ticks: config.countdown_ticks, ..LifecycleConfig::default() },
            rng_seed: rand::random(),
            ..ShardConfig::default()
        };
        serve.shard.validate().map_err(anyhow::Error::msg).context("invalid embedded shard settings")?;
        if config.udp {
            serve.udp_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        // Players have left when the run stops; nothing is worth waiting for.
        serve.drain_timeout = Duration::from_millis(500);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<Started>>();
        let (stop_tx, stop_rx) = oneshot::channel();
        let results = Arc::new(AtomicU64::new(0));
        let results_count = results.clone();
        let core = config.core;
        let thread = std::thread::Builder::new()
            .name("loadtest-shard".into())
            .spawn(move || shard_thread(serve, core, ready_tx, stop_rx, results_count, forward))
            .context("spawning the shard thread")?;
        let started = ready_rx.recv().context("the shard thread ended before it was ready")??;
        Ok(Self {
            addr: started.addr,
            udp_addr: started.udp_addr,
            metrics: started.metrics,
            fingerprint: started.fingerprint,
            name: started.name,
            minter,
            tid: started.tid,
            live: started.live,
            results,
            stop: Some(stop_tx),
            thread: Some(thread),
            _dir: dir,
        })
    }

    /// Match results emitted so far.
    pub fn results_so_far(&self) -> u64 {
        self.results.load(Ordering::Relaxed)
    }

    /// CPU time its thread has used.
    pub fn cpu(&self) -> Option<Duration> {
        sys::thread_cpu(self.tid?)
    }

    /// Drains the shard, waits for its thread and returns its counters.
    pub fn stop(mut self) -> anyhow::Result<EmbeddedShardReport> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let thread = self.thread.take().context("the shard was already stopped")?;
        thread.join().map_err(|_| anyhow::anyhow!("the shard thread panicked"))?
    }
}

impl Drop for EmbeddedShard {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn shard_thread(
    serve: ServeConfig,
    core: Option<usize>,
    ready: std::sync::mpsc::Sender<anyhow::Result<Started>>,
    stop: oneshot::Receiver<()>,
    results_count: Arc<AtomicU64>,
    forward: Option<mpsc::UnboundedSender<MatchResult>>,
) -> anyhow::Result<EmbeddedShardReport> {
    let tid = sys::current_tid();
    if let (Some(core), Some(tid)) = (core, tid)
        && let Err(err) = sys::pin_thread(tid, core)
    {
        let _ = ready.send(Err(err));
        anyhow::bail!("could not pin the shard thread");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready.send(Err(err.into()));
            anyhow::bail!("could not build the shard runtime");
        }
    };
    // The recorder must exist before the shard registers its metric handles.
    rally_server::ops::prometheus();
    runtime.block_on(async move {
        let (results_tx, mut results_rx) = mpsc::unbounded_channel::<MatchResult>();
        let started = async {
            let shard = rally_server::start::<PongWorld>(serve, results_tx).await?;
            let metrics = rally_server::ops::serve(SocketAddr::from(([127, 0, 0, 1], 0)), shard.readiness.clone())
                .await
                .context("serving the shard's metrics")?;
            anyhow::Ok((shard, metrics))
        }
        .await;
        let (shard, metrics) = match started {
            Ok(started) => started,
            Err(err) => {
                let _ = ready.send(Err(err));
                anyhow::bail!("the embedded shard did not start");
            }
        };
        let _ = ready.send(Ok(Started {
            live: shard.live.clone(),
            addr: shard.local_addr,
            udp_addr: shard.udp_addr,
            metrics,
            fingerprint: shard.fingerprint.clone(),
            name: shard.name.clone(),
            tid,
        }));
        let collector = tokio::spawn(async move {
            let mut results = Vec::new();
            while let Some(result) = results_rx.recv().await {
                results_count.fetch_add(1, Ordering::Relaxed);
                if let Some(forward) = &forward {
                    let _ = forward.send(result.clone());
                }
                results.push(result);
            }
            results
        });
        let _ = stop.await;
        shard.drain();
        let report = shard.wait().await?;
        let results = collector.await.context("the results collector panicked")?;
        Ok(EmbeddedShardReport { shard: report, results })
    })
}

/// A bare echo baseline (quinn or raw UDP), served on its own (optionally pinned) thread.
#[derive(Debug)]
pub struct EmbeddedEcho {
    /// Its address.
    pub addr: SocketAddr,
    /// SHA-256 of its certificate (empty for the raw UDP echo).
    pub fingerprint: String,
    /// Its thread's kernel id.
    pub tid: Option<u32>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempdir::TempDir,
}

impl EmbeddedEcho {
    /// Starts the echo thread and waits until it listens.
    pub fn start(kind: EchoKind, core: Option<usize>) -> anyhow::Result<Self> {
        let dir = tempdir::TempDir::new("rally-loadtest-echo").context("creating the echo's data directory")?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<(SocketAddr, String, Option<u32>)>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let path = dir.path().to_owned();
        let thread = std::thread::Builder::new()
            .name("loadtest-echo".into())
            .spawn(move || {
                let tid = sys::current_tid();
                if let (Some(core), Some(tid)) = (core, tid)
                    && let Err(err) = sys::pin_thread(tid, core)
                {
                    let _ = ready_tx.send(Err(err));
                    return;
                }
                let served = match kind {
                    EchoKind::Quinn => crate::echo::serve_until(path, tid, ready_tx.clone(), stop_rx),
                    EchoKind::Udp => crate::echo::serve_udp_until(tid, ready_tx.clone(), stop_rx),
                };
                if let Err(err) = served {
                    let _ = ready_tx.send(Err(err));
                }
            })
            .context("spawning the echo thread")?;
        let (addr, fingerprint, tid) = ready_rx.recv().context("the echo thread ended before it was ready")??;
        Ok(Self { addr, fingerprint, tid, stop: Some(stop_tx), thread: Some(thread), _dir: dir })
    }

    /// CPU time its thread has used.
    pub fn cpu(&self) -> Option<Duration> {
        sys::thread_cpu(self.tid?)
    }
}

impl Drop for EmbeddedEcho {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
