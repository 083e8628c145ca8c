//! The services in front of the shard, embedded for a run when no URLs are
//! given: the lobby on a temporary SQLite file, the matchmaker with its
//! in-memory backends serving gRPC, the lobby's ratings consumer, and a
//! registry agent for the shard. They run on a thread of their own with a
//! two-worker runtime, so their work does not share the clients' thread.
//!
//! Settings differ from production where the run would otherwise measure
//! something else: password hashing is cheap (1 MiB, 1 pass; a login storm has
//! its own benchmark) and per-IP/per-account rate limits are lifted, because
//! every simulated player comes from 127.0.0.1.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rally_lobby::limits::RateLimitConfig;
use rally_lobby::password::PasswordHashConfig;
use rally_lobby::{AccessSigningKeys, LobbyConfig};
use rally_matchmaker::config::{MatchmakerConfig, ModeConfig};
use rally_matchmaker::lobby_results::consume_into_profiles;
use rally_matchmaker::registry::ShardInfo;
use rally_matchmaker::shard_agent::{self, LoadProbe, ShardAgentConfig};
use rally_matchmaker::{Matchmaker, TokenMinter};
use rally_protocol::results::MatchResult;
use tokio::sync::{mpsc, oneshot, watch};

/// The mode the harness queues for.
pub const MODE: &str = "pong";

/// The shard the matchmaker may place matches on.
pub struct AgentSetup {
    /// What it registers as.
    pub info: ShardInfo,
    /// Its match results, to publish on the results bus.
    pub results: mpsc::UnboundedReceiver<MatchResult>,
    /// Its live load, for heartbeats.
    pub load: LoadProbe,
}

impl std::fmt::Debug for AgentSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSetup").field("info", &self.info).finish_non_exhaustive()
    }
}

/// Settings of the embedded services.
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    /// Points to win in the `pong` mode.
    pub points_to_win: u8,
    /// Production password hashing (OWASP minimum) instead of the cheap test setting.
    pub real_password_hashing: bool,
}

/// What the services counted, read when they stop.
#[derive(Debug, Clone, Default)]
pub struct ServicesReport {
    /// Results the lobby applied to ratings.
    pub ratings_applied: u64,
    /// Aborted results the lobby skipped.
    pub ratings_aborted: u64,
    /// Results the shard's agent published on the bus.
    pub published: u64,
}

/// Running lobby + matchmaker; [`EmbeddedServices::stop`] shuts them down.
#[derive(Debug)]
pub struct EmbeddedServices {
    /// The lobby's gRPC URL.
    pub lobby_url: String,
    /// The matchmaker's gRPC URL.
    pub matchmaker_url: String,
    /// The matchmaker's token key: the shard must trust it (key id 1).
    pub token_key: ed25519_dalek::VerifyingKey,
    stop: Option<oneshot::Sender<u64>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<ServicesReport>>>,
    _dir: tempfile_dir::TempDir,
}

/// A throwaway directory removed on drop (the lobby's database).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    #[derive(Debug)]
    pub(super) struct TempDir(PathBuf);

    impl TempDir {
        pub(super) fn new() -> std::io::Result<Self> {
            let dir = std::env::temp_dir().join(format!(
                "rally-loadtest-services-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
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

type Ready = (String, String);

impl EmbeddedServices {
    /// A fresh matchmaker token key, to start the shard with before the services.
    pub fn minter() -> TokenMinter {
        TokenMinter::random(1)
    }

    /// Starts the lobby, the matchmaker and (with `agent`) the shard's registry agent.
    pub fn start(config: &ServicesConfig, minter: TokenMinter, agent: Option<AgentSetup>) -> anyhow::Result<Self> {
        let dir = tempfile_dir::TempDir::new().context("creating the lobby's directory")?;
        let url = format!("sqlite://{}", dir.path().join("lobby.db").display());
        let token_key = minter.verifying_key();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<Ready>>();
        let (stop_tx, stop_rx) = oneshot::channel::<u64>();
        let config = config.clone();
        let thread = std::thread::Builder::new()
            .name("loadtest-services".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err.into()));
                        anyhow::bail!("could not build the services runtime");
                    }
                };
                runtime.block_on(services(config, url, minter, agent, ready_tx, stop_rx))
            })
            .context("spawning the services thread")?;
        let (lobby_url, matchmaker_url) =
            ready_rx.recv().context("the services thread ended before it was ready")??;
        Ok(Self { lobby_url, matchmaker_url, token_key, stop: Some(stop_tx), thread: Some(thread), _dir: dir })
    }

    /// Stops everything; first waits (up to 10 s) until the lobby has applied
    /// `expect_ratings` results, so the report counts what was in flight.
    pub fn stop(mut self, expect_ratings: u64) -> anyhow::Result<ServicesReport> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(expect_ratings);
        }
        let thread = self.thread.take().context("the services were already stopped")?;
        thread.join().map_err(|_| anyhow::anyhow!("the services thread panicked"))?
    }
}

impl Drop for EmbeddedServices {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(0);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn services(
    config: ServicesConfig,
    url: String,
    minter: TokenMinter,
    agent: Option<AgentSetup>,
    ready: std::sync::mpsc::Sender<anyhow::Result<Ready>>,
    stop: oneshot::Receiver<u64>,
) -> anyhow::Result<ServicesReport> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let started = async {
        let mut lobby_config = LobbyConfig::new(any, url, AccessSigningKeys::generate());
        if !config.real_password_hashing {
            lobby_config.password_hash = PasswordHashConfig { memory_kib: 1024, iterations: 1, max_concurrent: 2 };
        }
        let unlimited = RateLimitConfig::new(NonZeroU32::MAX, Duration::from_nanos(1));
        lobby_config.limits.auth_per_ip = unlimited;
        lobby_config.limits.login_per_account = unlimited;
        lobby_config.limits.chat_send_per_account = unlimited;
        let lobby = rally_lobby::serve(lobby_config).await.context("starting the lobby")?;
        let mode = ModeConfig { points_to_win: config.points_to_win, ..ModeConfig::one_vs_one(MODE) };
        let mm_config = MatchmakerConfig { modes: vec![mode], ..MatchmakerConfig::default() };
        let matchmaker = Matchmaker::embedded(mm_config, Arc::new(lobby.profiles().clone()), minter)
            .context("starting the matchmaker")?;
        let engine = matchmaker.start();
        let server = rally_matchmaker::serve(any, matchmaker.clone(), lobby.verifier().clone())
            .await
            .context("serving the matchmaker")?;
        anyhow::Ok((lobby, matchmaker, engine, server))
    }
    .await;
    let (lobby, matchmaker, engine, server) = match started {
        Ok(started) => started,
        Err(err) => {
            let _ = ready.send(Err(err));
            anyhow::bail!("the embedded services did not start");
        }
    };
    let backends = matchmaker.backends().clone();
    let (consumer, ratings) = consume_into_profiles(backends.bus.clone(), lobby.profiles().clone(), "loadtest-lobby");
    let (drain_tx, drain_rx) = watch::channel(false);
    let agent = agent.map(|setup| {
        let config =
            ShardAgentConfig { heartbeat_interval: Duration::from_millis(200), ..ShardAgentConfig::new(setup.info) };
        tokio::spawn(shard_agent::run(
            backends.registry.clone(),
            backends.bus.clone(),
            config,
            setup.results,
            setup.load,
            drain_rx,
        ))
    });
    // Matches can only be placed once the shard is registered.
    if agent.is_some() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while backends.registry.shards(rally_transport::unix_ms()).await.map_or(true, |shards| shards.is_empty())
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = ready.send(Ok((format!("http://{}", lobby.local_addr()), format!("http://{}", server.local_addr()))));

    let expect_ratings = stop.await.unwrap_or(0);
    let _ = drain_tx.send(true);
    let published = match agent {
        Some(agent) => tokio::time::timeout(Duration::from_secs(35), agent)
            .await
            .ok()
            .and_then(Result::ok)
            .map_or(0, |report| report.published),
        None => 0,
    };
    ratings.wait_until(Duration::from_secs(10), |stats| stats.applied >= expect_ratings).await;
    let stats = ratings.stats();
    // Bounded: a client connection left open must not hold the run's end hostage.
    let bound = Duration::from_secs(5);
    let _ = tokio::time::timeout(bound, consumer.stop()).await;
    let _ = tokio::time::timeout(bound, engine.stop()).await;
    if let Ok(shutdown) = tokio::time::timeout(bound, server.shutdown()).await {
        shutdown?;
    }
    if let Ok(shutdown) = tokio::time::timeout(bound, lobby.shutdown()).await {
        shutdown?;
    }
    Ok(ServicesReport { ratings_applied: stats.applied, ratings_aborted: stats.aborted, published })
}
