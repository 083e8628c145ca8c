//! The `connect` scenario: shard capacity without the services in front of it.
//! Clients pair up into two-player matches; each mints its own connect token
//! (the harness holds the issuer key, in a [`TokenMinter`] as the matchmaker
//! does), connects, and plays; with `rounds` set it plays that many matches
//! back to back, otherwise until the run stops.
//!
//! Clients play through the SDK's [`Connection`](rally_client::Connection)
//! over the chosen transport: QUIC, or raw UDP (the embedded shard then also
//! listens on raw UDP on loopback). Over raw UDP to a loopback shard they run,
//! by default, in the [`swarm`](crate::swarm): the same sans-IO session and
//! wire protocol for every client, but all of them on one task over one
//! socket with batched system calls, so the generator costs less than the
//! shard it loads ([`ClientDriver`]).
//!
//! [`run`] is the whole run: an embedded shard (or a remote one), an optional
//! echo baseline first, a link conditioner when asked for, the clients, and
//! the report with its cross-checks against the shard's own counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rally_client::proxy::UdpProxy;
use rally_client::{Transport, TransportKind};
use rally_matchmaker::{SeatGrant, TokenMinter};
use rally_protocol::{MatchId, PlayerId};
use rally_transport::unix_ms;

use crate::config::{HARNESS_CORE, LoadConfig, SERVER_CORE};
use crate::echo::EchoKind;
use crate::game::{GameTarget, MatchOutcome, play_over};
use crate::report::{Check, REPORT_VERSION, Report, RunInfo};
use crate::run::{Observe, RunPlan, ShardProbes, TickDurations, drive_with};
use crate::scenario::{ClientFuture, ClientSlot, Scenario};
use crate::stack::{EmbeddedShard, EmbeddedShardConfig};
use crate::swarm::{SwarmHandle, SwarmIo};
use crate::{baseline, swarm, sys};

/// A shard someone else runs.
#[derive(Debug, Clone)]
pub struct RemoteShard {
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its raw UDP address (`rally shard --udp-addr`), for raw UDP runs.
    pub udp_addr: Option<SocketAddr>,
    /// SHA-256 of its certificate.
    pub fingerprint: String,
    /// Its metrics endpoint, if reachable (tick figures need it).
    pub metrics: Option<SocketAddr>,
    /// Its name, as tokens must carry it.
    pub name: String,
    /// Mints tokens with an issuer key it trusts, under that key's id.
    pub minter: TokenMinter,
    /// Its process id, when it runs on this machine: its RSS before and after
    /// the ramp gives the memory per connection.
    pub pid: Option<u32>,
}

/// Which shard to load.
#[derive(Debug, Clone)]
#[expect(clippy::large_enum_variant, reason = "one per run, never in a collection")]
pub enum ShardTarget {
    /// Start one in this process on its own thread.
    Embedded(EmbeddedShardConfig),
    /// Use a running one.
    Remote(Box<RemoteShard>),
}

/// Settings of a `connect` run.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// Shared settings.
    pub load: LoadConfig,
    /// The shard.
    pub shard: ShardTarget,
    /// Points a side needs to win (99, the most, keeps matches running for minutes).
    pub points_to_win: u8,
    /// Matches each pair plays back to back; `None`: until the run stops.
    pub rounds: Option<u32>,
    /// The transport clients play over.
    pub transport: TransportKind,
    /// Measure this echo baseline first.
    pub baseline: Option<EchoKind>,
    /// What runs the clients.
    pub driver: ClientDriver,
}

/// What runs a `connect` run's clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientDriver {
    /// The swarm for raw UDP to a loopback shard, the SDK otherwise.
    #[default]
    Auto,
    /// One SDK [`Connection`](rally_client::Connection) task per client, its
    /// own socket each (over raw UDP, a system call per datagram each way).
    Sdk,
    /// Raw UDP only: every client in one task over one socket, batched
    /// ([`crate::swarm`]); the shard must be on loopback.
    Swarm,
}

impl ClientDriver {
    /// Whether a run over `transport` to `target` uses the swarm.
    pub fn uses_swarm(self, transport: TransportKind, target: SocketAddr) -> anyhow::Result<bool> {
        let loopback = target.ip().is_loopback() && target.is_ipv4();
        match self {
            Self::Sdk => Ok(false),
            Self::Auto => Ok(transport == TransportKind::Udp && loopback),
            Self::Swarm => {
                anyhow::ensure!(
                    transport == TransportKind::Udp,
                    "the swarm driver plays over raw UDP only (--transport udp)"
                );
                anyhow::ensure!(loopback, "the swarm driver needs a shard on IPv4 loopback, not {target}");
                Ok(true)
            }
        }
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Sdk => "sdk",
            Self::Swarm => "swarm",
        }
    }
}

impl Default for ConnectConfig {
    fn default() -> Self {
        Self {
            load: LoadConfig::default(),
            shard: ShardTarget::Embedded(EmbeddedShardConfig::default()),
            points_to_win: rally_sim::pong::MAX_POINTS_TO_WIN,
            rounds: None,
            transport: TransportKind::Quic,
            baseline: None,
            driver: ClientDriver::Auto,
        }
    }
}

/// How clients reach the shard and prove their seat.
#[derive(Debug, Clone)]
pub struct ShardAccess {
    /// Where clients send (the conditioner's address when there is one).
    pub target: GameTarget,
    /// The shard's name for tokens.
    pub shard_name: String,
    /// Mints the tokens the shard trusts.
    pub minter: TokenMinter,
}

impl ShardAccess {
    /// A signed connect token for `seat` of two-player `match_id`.
    pub fn token(&self, match_id: MatchId, seat: u8, points_to_win: u8) -> anyhow::Result<Vec<u8>> {
        let grant = SeatGrant {
            player_id: PlayerId(match_id.0 * 2 + u64::from(seat)),
            match_id,
            seat,
            n_seats: 2,
            points_to_win,
            shard: self.shard_name.clone(),
        };
        let (token, _expires_at_ms) = self.minter.mint(&grant, unix_ms()).context("signing a connect token")?;
        Ok(token)
    }
}

/// The scenario itself.
#[derive(Debug)]
pub struct ConnectScenario {
    access: ShardAccess,
    transports: Vec<Transport>,
    points_to_win: u8,
    rounds: Option<u32>,
    match_base: u64,
    /// Clients play in the swarm (started by the first client, with the run's recorder).
    swarm: Option<Mutex<SwarmSlot>>,
}

/// The swarm of a run, once its first client started it.
#[derive(Debug, Default)]
struct SwarmSlot {
    handle: Option<SwarmHandle>,
    task: Option<tokio::task::JoinHandle<SwarmIo>>,
    failed: bool,
}

impl ConnectScenario {
    /// Clients `2k` and `2k + 1` share matches; match ids start at a value
    /// derived from `seed`. Client `i` connects through `transports[i % len]`.
    pub fn new(
        access: ShardAccess,
        transports: Vec<Transport>,
        points_to_win: u8,
        rounds: Option<u32>,
        seed: u64,
    ) -> Self {
        // Distinct runs against one shard need distinct match ids; 2^20 rounds per pair.
        let match_base = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ unix_ms()) >> 24;
        Self { access, transports, points_to_win, rounds, match_base, swarm: None }
    }

    /// Plays every client in the [`swarm`] instead of one SDK connection each.
    pub fn in_swarm(mut self) -> Self {
        self.swarm = Some(Mutex::new(SwarmSlot::default()));
        self
    }

    /// The run's swarm, started on the first call with that client's run-wide recorder, gauges and stop.
    fn swarm_for(&self, slot: &ClientSlot) -> Option<Result<SwarmHandle, ()>> {
        let mut swarm = self.swarm.as_ref()?.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if swarm.handle.is_none() && !swarm.failed {
            match swarm::start(self.access.target.addr, slot.recorder.clone(), slot.live.clone(), slot.stop.clone()) {
                Ok((handle, task)) => {
                    swarm.handle = Some(handle);
                    swarm.task = Some(task);
                }
                Err(err) => {
                    tracing::error!(%err, "could not start the swarm");
                    swarm.failed = true;
                }
            }
        }
        Some(swarm.handle.clone().ok_or(()))
    }

    /// Lets the swarm end once its clients are done, and returns its IO counters.
    async fn finish_swarm(&self) -> Option<SwarmIo> {
        let task = {
            let mut swarm = self.swarm.as_ref()?.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            swarm.handle = None;
            swarm.task.take()?
        };
        tokio::time::timeout(Duration::from_secs(10), task).await.ok()?.ok()
    }

    async fn run_client(self: Arc<Self>, mut slot: ClientSlot) {
        let pair = slot.idx / 2;
        let seat = (slot.idx % 2) as u8;
        let transport = &self.transports[slot.idx as usize % self.transports.len()];
        let mut joined = false;
        let mut round: u64 = 0;
        while !slot.stop.is_set() && self.rounds.is_none_or(|rounds| round < u64::from(rounds)) {
            let match_id = MatchId(self.match_base + (pair << 20) + round);
            let token = match self.access.token(match_id, seat, self.points_to_win) {
                Ok(token) => token,
                Err(_) => {
                    slot.recorder.error("token");
                    break;
                }
            };
            let played = match self.swarm_for(&slot) {
                Some(Ok(swarm)) => swarm.play(token).await,
                Some(Err(())) => Err("swarm_failed".to_owned()),
                None => {
                    play_over(transport, &self.access.target, token, &slot.recorder, &slot.live, &mut slot.stop).await
                }
            };
            match played {
                Ok(outcome) => {
                    if !joined {
                        joined = true;
                        slot.recorder.count(|counters| counters.clients_connected += 1);
                    }
                    if outcome == MatchOutcome::Cut {
                        break;
                    }
                }
                Err(kind) => {
                    slot.recorder.error(kind);
                    slot.recorder.count(|counters| counters.clients_failed += 1);
                    break;
                }
            }
            round += 1;
        }
    }
}

impl Scenario for ConnectScenario {
    fn name(&self) -> &'static str {
        "connect"
    }

    fn client(self: Arc<Self>, client: ClientSlot) -> ClientFuture {
        Box::pin(self.run_client(client))
    }
}

/// Runs a whole `connect` load test and returns its report (thresholds evaluated).
pub fn run(config: &ConnectConfig) -> anyhow::Result<Report> {
    let load = &config.load;
    anyhow::ensure!(
        matches!(config.transport, TransportKind::Quic | TransportKind::Udp),
        "the connect scenario plays over a shard's sockets: quic or udp, not {}",
        config.transport
    );
    anyhow::ensure!(load.clients >= 2, "the connect scenario plays two-player matches: ask for at least 2 clients");
    let clients = load.clients + load.clients % 2;
    if clients != load.clients {
        tracing::warn!(clients, "two-player matches: rounding the client count up to an even number");
    }
    let cores = sys::cores();
    let pin = load.effective_pin();
    if pin {
        sys::pin_self(HARNESS_CORE)?;
    }
    let server_core = pin.then_some(SERVER_CORE);
    let started_unix_ms = unix_ms();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let plan = RunPlan {
        clients,
        ramp_per_sec: load.ramp_per_sec,
        duration: load.duration,
        grace: Duration::from_secs(10),
        progress: load.progress,
    };

    let baseline = if let Some(kind) = config.baseline {
        Some(runtime.block_on(baseline::measure_echo(
            kind,
            clients,
            load.ramp_per_sec,
            load.duration,
            server_core,
            load.endpoints,
        ))?)
    } else {
        None
    };

    let (embedded, access, fingerprint, metrics, target_text) = match &config.shard {
        ShardTarget::Embedded(shard_config) => {
            let udp = config.transport == TransportKind::Udp;
            let shard = EmbeddedShard::start(&EmbeddedShardConfig { core: server_core, udp, ..shard_config.clone() })?;
            let addr =
                if udp { shard.udp_addr.context("the embedded shard did not serve raw UDP")? } else { shard.addr };
            let access = ShardAccess {
                target: GameTarget { addr, server_name: "localhost".into() },
                shard_name: shard.name.clone(),
                minter: shard.minter.clone().context("the embedded shard made its own issuer key")?,
            };
            let (fingerprint, metrics) = (shard.fingerprint.clone(), Some(shard.metrics));
            (Some(shard), access, fingerprint, metrics, "embedded shard".to_owned())
        }
        ShardTarget::Remote(remote) => (
            None,
            ShardAccess {
                target: GameTarget {
                    addr: if config.transport == TransportKind::Udp {
                        remote.udp_addr.context("a raw UDP run against a running shard needs its raw UDP address")?
                    } else {
                        remote.addr
                    },
                    server_name: "localhost".into(),
                },
                shard_name: remote.name.clone(),
                minter: remote.minter.clone(),
            },
            remote.fingerprint.clone(),
            remote.metrics,
            format!("shard {}", remote.addr),
        ),
    };

    let output = runtime.block_on(async {
        let mut access = access;
        let proxy = if load.conditions == rally_client::conditioner::LinkConditions::perfect() {
            None
        } else {
            let proxy = UdpProxy::start(access.target.addr, load.conditions, load.seed).await?;
            access.target.addr = proxy.local_addr();
            Some(proxy)
        };
        let transports = if config.transport == TransportKind::Udp {
            // Raw UDP connections each bind their own socket.
            vec![Transport::Udp]
        } else {
            sys::client_endpoints(&fingerprint, load.endpoints)?.into_iter().map(Transport::Quic).collect()
        };
        let in_swarm = config.driver.uses_swarm(config.transport, access.target.addr)?;
        let scenario = ConnectScenario::new(access, transports, config.points_to_win, config.rounds, load.seed);
        let scenario = Arc::new(if in_swarm { scenario.in_swarm() } else { scenario });
        let observe = Observe {
            shard_metrics: metrics,
            shard_cpu: embedded.as_ref().and_then(|shard| {
                let tid = shard.tid?;
                Some(Box::new(move || sys::thread_cpu(tid)) as Box<dyn Fn() -> Option<Duration> + Send + Sync>)
            }),
            other_cpu: Vec::new(),
        };
        let probes = ShardProbes {
            // An embedded shard's exact tick histogram, not its Prometheus buckets.
            tick_durations: embedded.as_ref().map(|shard| {
                let live = shard.live.clone();
                Box::new(move || live.take_tick_durations()) as TickDurations
            }),
            shard_pid: match &config.shard {
                ShardTarget::Remote(remote) => remote.pid,
                ShardTarget::Embedded(_) => None,
            },
        };
        let output = drive_with(scenario.clone(), &plan, observe, probes).await;
        let swarm_io = scenario.finish_swarm().await;
        drop(proxy);
        anyhow::Ok((output, in_swarm, swarm_io))
    })?;
    let (output, in_swarm, swarm_io) = output;

    let mut shards = Vec::new();
    let mut checks = Vec::new();
    let shard_report = embedded.map(EmbeddedShard::stop).transpose()?;
    if let Some(mut figures) = output.shard.clone() {
        if let Some(report) = &shard_report {
            figures.matches_ended = Some(report.shard.stats.matches_ended);
            let mut by_reason = BTreeMap::new();
            for result in &report.results {
                *by_reason.entry(format!("{:?}", result.reason).to_lowercase()).or_insert(0u64) += 1;
            }
            figures.results_by_reason = by_reason;
        }
        shards.push(figures);
    }
    let counters = &output.measures.counters;
    if let Some(report) = &shard_report {
        checks.extend(crate::report::match_checks(&output.finished_matches, &report.results, output.stopped_unix_ms));
        checks.push(Check {
            name: "matches started (clients) = match results the shard emitted".into(),
            clients: counters.matches_started as f64,
            servers: report.results.len() as f64,
            passed: counters.matches_started == report.results.len() as u64,
        });
    }
    let mut settings = BTreeMap::new();
    let baseline = baseline.map(|echo| {
        let shard = output.shard.as_ref();
        let mut datagrams_in_per_s = shard.map_or(0.0, |shard| shard.datagrams_in_per_s);
        if config.transport == TransportKind::Udp && datagrams_in_per_s == 0.0 && counters.client_seconds > 0.0 {
            // A shard from before raw UDP datagrams were counted in
            // rally_shard_datagrams_in_total reports none: estimate what it
            // received from what the clients sent, their input datagrams per
            // connected second times the clients.
            datagrams_in_per_s = counters.input_datagrams as f64 / counters.client_seconds * clients as f64;
            settings.insert("shard_datagrams_in".into(), "estimated from the clients' input datagrams".into());
        }
        baseline::compare(
            echo,
            shard.map_or(0.0, |shard| datagrams_in_per_s + shard.datagrams_out_per_s),
            shard.and_then(|shard| shard.cpu_pct),
        )
    });
    settings.insert("client_driver".into(), if in_swarm { "swarm" } else { "sdk" }.into());
    if let Some(io) = swarm_io {
        // Batching as it happened: datagrams per system call each way.
        let per_call = |datagrams: u64, calls: u64| format!("{:.1}", datagrams as f64 / calls.max(1) as f64);
        settings.insert("swarm_datagrams_per_recv_call".into(), per_call(io.datagrams_in, io.recv_calls));
        settings.insert("swarm_datagrams_per_send_call".into(), per_call(io.datagrams_out, io.send_calls));
    }
    settings.insert("points_to_win".into(), config.points_to_win.to_string());
    settings
        .insert("rounds".into(), config.rounds.map_or_else(|| "until stop".to_owned(), |rounds| rounds.to_string()));
    if let ShardTarget::Embedded(shard) = &config.shard {
        settings.insert("tick_rate_hz".into(), shard.tick_rate_hz.to_string());
        settings.insert("snapshot_rate_hz".into(), shard.snapshot_rate_hz.to_string());
    }
    let mut report = Report {
        version: REPORT_VERSION,
        scenario: "connect".into(),
        runs: vec![RunInfo {
            started_unix_ms,
            wall_s: output.wall_s,
            clients,
            ramp_per_sec: load.ramp_per_sec,
            duration_s: load.duration.as_secs_f64(),
            seed: load.seed,
            conditions: load.conditions_info(),
            target: target_text,
            pinned: pin,
            endpoints: load.endpoints,
            harness_cpu_pct: output.harness_cpu_pct,
            cores,
            settings,
            transport: config.transport.name().to_owned(),
            system_udp: output.system_udp,
        }],
        measures: output.measures,
        shards,
        baseline,
        checks,
        timeline: output.timeline,
        thresholds: Vec::new(),
    };
    report.evaluate(&load.thresholds);
    Ok(report)
}
