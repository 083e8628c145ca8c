//! The scenarios that go through the services, as players do: every client
//! registers and logs in at the lobby (through the matchmaker crate's
//! [`PlayerClient`], the SDK bots and `rally play` use), then
//!
//! - `chat`: subscribers on one public channel and senders posting to it;
//! - `matchmaker`: a ticket storm, Enqueue → WatchTicket until assigned, again
//!   and again (nobody plays; a registered shard with room takes the matches);
//! - `full`: Enqueue → WatchTicket → connect with the minted token → play the
//!   whole match → again.
//!
//! [`run`] starts the embedded stack ([`crate::services`], [`crate::stack`])
//! or uses the URLs given, drives the clients and cross-checks the clients'
//! figures against the servers' own counters.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rally_lobby::proto::chat::{self as chat_pb, chat_client::ChatClient, join_request::Target};
use rally_matchmaker::player::{Endpoints, PlayerClient, QueueOutcome, Replicas, seat_of};
use rally_matchmaker::proto::matchmaker::Assignment;
use rally_matchmaker::registry::{ShardInfo, ShardLoad};
use tokio::sync::mpsc;

use crate::config::{HARNESS_CORE, LoadConfig, SERVER_CORE};
use crate::game::{GameTarget, MatchOutcome, play_match};
use crate::report::{Check, REPORT_VERSION, Report, RunInfo};
use crate::run::{Observe, RunPlan, drive};
use crate::scenario::{ClientFuture, ClientSlot, Scenario};
use crate::services::{AgentSetup, EmbeddedServices, MODE, ServicesConfig};
use crate::stack::{EmbeddedShard, EmbeddedShardConfig};
use crate::sys;

/// gRPC streams per HTTP/2 connection: clients share connections like a game's backend would not,
/// but thousands of TCP connections from one process would measure the kernel, not the services.
const CLIENTS_PER_CHANNEL: usize = 50;

/// The public chat channel the `chat` scenario uses.
pub const CHAT_CHANNEL: &str = "loadtest";

/// Which platform scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum PlatformScenario {
    /// Subscribers and senders on one public channel.
    Chat {
        /// Clients that send (the rest subscribe); the senders are the last clients started.
        senders: u64,
        /// Messages per second per sender.
        rate_per_sec: f64,
    },
    /// Enqueue → assignment, repeatedly.
    Matchmaker,
    /// Enqueue → assignment → play a whole match, repeatedly.
    Full {
        /// Matches each client plays; `None`: until the run stops.
        rounds: Option<u32>,
    },
}

impl PlatformScenario {
    fn name(&self) -> &'static str {
        match self {
            PlatformScenario::Chat { .. } => "chat",
            PlatformScenario::Matchmaker => "matchmaker",
            PlatformScenario::Full { .. } => "full",
        }
    }
}

/// Where the services are.
#[derive(Debug, Clone)]
pub enum PlatformTarget {
    /// Start lobby, matchmaker and a shard in this process.
    Embedded {
        /// The shard (its token key is the matchmaker's).
        shard: EmbeddedShardConfig,
        /// Lobby and matchmaker settings.
        services: ServicesConfig,
    },
    /// Services someone else runs.
    Remote {
        /// The lobby's gRPC URL, or its replicas' URLs comma-separated.
        lobby_url: String,
        /// The matchmaker's gRPC URL, or its replicas' URLs comma-separated.
        matchmaker_url: String,
        /// A shard's metrics address, to read tick figures from.
        shard_metrics: Option<SocketAddr>,
    },
}

/// Settings of a platform run.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// Shared settings.
    pub load: LoadConfig,
    /// The scenario.
    pub scenario: PlatformScenario,
    /// The services.
    pub target: PlatformTarget,
}

/// What the platform clients share.
#[derive(Debug)]
struct Shared {
    /// Per group of clients, the replicas of each service (each group starts at another one).
    lobby: Vec<Replicas>,
    matchmaker: Vec<Replicas>,
    run_id: u32,
    password: String,
    endpoints: usize,
    /// Client endpoints by certificate fingerprint.
    quic: Mutex<HashMap<String, Vec<quinn::Endpoint>>>,
    /// The link conditioner, and its proxies by shard address.
    conditions: rally_client::conditioner::LinkConditions,
    seed: u64,
    proxies: tokio::sync::Mutex<HashMap<SocketAddr, rally_client::proxy::UdpProxy>>,
    /// Chat: subscribers streaming, and messages sent so far.
    subscribed: AtomicU64,
    chat_sent: AtomicU64,
    /// Matchmaker: match ids seen in assignments, with how many of its tickets saw it.
    assigned_matches: Mutex<HashMap<u64, u32>>,
    /// The `matchmaker` scenario's virtual shard: where its matches end. Nobody
    /// plays them, so once every seat of a match has been told, the virtual
    /// shard reports it abandoned, as a shard does a match nobody joined; that
    /// frees the players' seats for their next ticket (a player holds one seat).
    virtual_shard: Option<mpsc::UnboundedSender<rally_protocol::results::MatchResult>>,
}

impl Shared {
    fn channels(&self, idx: u64) -> (Replicas, Replicas) {
        let group = idx as usize / CLIENTS_PER_CHANNEL;
        (self.lobby[group % self.lobby.len()].clone(), self.matchmaker[group % self.matchmaker.len()].clone())
    }

    fn endpoint(&self, fingerprint: &str, idx: u64) -> anyhow::Result<quinn::Endpoint> {
        let mut quic = self.quic.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !quic.contains_key(fingerprint) {
            quic.insert(fingerprint.to_owned(), crate::sys::client_endpoints(fingerprint, self.endpoints)?);
        }
        let endpoints = &quic[fingerprint];
        Ok(endpoints[idx as usize % endpoints.len()].clone())
    }
}

/// The result a shard reports for a match nobody joined: abandoned, no winner.
fn abandoned(assignment: &Assignment) -> rally_protocol::results::MatchResult {
    use rally_protocol::results::{MatchResult, SeatResult};
    let now_ms = rally_transport::unix_ms();
    let sides = assignment.roster.iter().map(|seat| seat.side as usize + 1).max().unwrap_or(2);
    MatchResult {
        match_id: rally_protocol::MatchId(assignment.match_id),
        game: "pong".into(),
        shard: assignment.shard_name.clone(),
        seats: assignment
            .roster
            .iter()
            .map(|seat| SeatResult {
                seat: seat.seat as rally_protocol::Seat,
                player_id: Some(rally_protocol::PlayerId(seat.player_id)),
                side: seat.side as u8,
                forfeited: false,
            })
            .collect(),
        scores: vec![0; sides],
        winner: None,
        reason: rally_protocol::control::EndReason::Abandoned,
        duration_ticks: 0,
        tick_rate_hz: 30,
        started_at_ms: now_ms,
        ended_at_ms: now_ms,
        input_log_digest: String::new(),
    }
}

/// The scenario.
#[derive(Debug)]
pub struct PlatformLoad {
    scenario: PlatformScenario,
    clients: u64,
    shared: Shared,
}

impl Scenario for PlatformLoad {
    fn name(&self) -> &'static str {
        self.scenario.name()
    }

    fn client(self: Arc<Self>, client: ClientSlot) -> ClientFuture {
        Box::pin(async move {
            let started = Instant::now();
            let player = match self.login(&client).await {
                Ok(player) => {
                    client.recorder.latency("login", started.elapsed());
                    client.recorder.count(|counters| counters.clients_connected += 1);
                    player
                }
                Err(kind) => {
                    client.recorder.error(kind);
                    client.recorder.count(|counters| counters.clients_failed += 1);
                    return;
                }
            };
            let outcome = match self.scenario.clone() {
                PlatformScenario::Chat { senders, rate_per_sec } => {
                    let subscribers = self.clients.saturating_sub(senders);
                    if client.idx < subscribers {
                        self.subscriber(player, client.clone()).await
                    } else {
                        self.sender(player, client.clone(), subscribers, rate_per_sec).await
                    }
                }
                PlatformScenario::Matchmaker => self.queue_loop(player, client.clone(), None, false).await,
                PlatformScenario::Full { rounds } => self.queue_loop(player, client.clone(), rounds, true).await,
            };
            if let Err(kind) = outcome {
                client.recorder.error(kind);
                client.recorder.count(|counters| counters.clients_failed += 1);
            }
        })
    }
}

fn status_kind(what: &str, status: &tonic::Status) -> String {
    format!("{what}:{}", format!("{:?}", status.code()).to_lowercase())
}

/// Microseconds since the Unix epoch: chat messages carry their send time at
/// this precision so delivery latency spans processes.
fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_micros() as u64)
}

impl PlatformLoad {
    async fn login(&self, client: &ClientSlot) -> Result<PlayerClient, String> {
        let (lobby, matchmaker) = self.shared.channels(client.idx);
        let username = format!("lt-{:08x}-{}", self.shared.run_id, client.idx);
        PlayerClient::register_or_login(lobby, matchmaker, &username, &self.shared.password)
            .await
            .map_err(|status| status_kind("login", &status))
    }

    async fn subscriber(&self, player: PlayerClient, mut client: ClientSlot) -> Result<(), String> {
        let mut chat = ChatClient::new(player.lobby().clone());
        let join = chat_pb::JoinRequest { target: Some(Target::PublicName(CHAT_CHANNEL.into())) };
        let channel = chat.join(player.request(join)).await.map_err(|status| status_kind("chat_join", &status))?;
        let request = chat_pb::SubscribeRequest { channel_id: channel.into_inner().channel_id, after_id: None };
        let mut stream = chat
            .subscribe(player.request(request))
            .await
            .map_err(|status| status_kind("chat_subscribe", &status))?
            .into_inner();
        let _active = client.live.connected();
        self.shared.subscribed.fetch_add(1, Ordering::Relaxed);
        let mut received = 0u64;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            if let Some(deadline) = drain_deadline
                && (received >= self.shared.chat_sent.load(Ordering::Relaxed)
                    || tokio::time::Instant::now() >= deadline)
            {
                return Ok(());
            }
            let message = tokio::select! {
                () = client.stop.wait(), if drain_deadline.is_none() => {
                    // Messages already sent are still on their way: take them, briefly.
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3));
                    continue;
                }
                () = tokio::time::sleep(Duration::from_millis(100)), if drain_deadline.is_some() => continue,
                message = stream.message() => message,
            };
            let message = match message {
                Ok(Some(message)) => message,
                Ok(None) => return Err("chat_stream_ended".into()),
                Err(status) => return Err(status_kind("chat_stream", &status)),
            };
            received += 1;
            client.recorder.count(|counters| counters.chat_received += 1);
            if let Some(sent_us) = message.body.strip_prefix("lt ").and_then(|rest| rest.parse::<u64>().ok()) {
                client.recorder.latency("chat_delivery", Duration::from_micros(unix_us().saturating_sub(sent_us)));
            }
        }
    }

    async fn sender(
        &self,
        mut player: PlayerClient,
        mut client: ClientSlot,
        subscribers: u64,
        rate_per_sec: f64,
    ) -> Result<(), String> {
        let mut chat = ChatClient::new(player.lobby().clone());
        let join = chat_pb::JoinRequest { target: Some(Target::PublicName(CHAT_CHANNEL.into())) };
        let channel_id = chat
            .join(player.request(join))
            .await
            .map_err(|status| status_kind("chat_join", &status))?
            .into_inner()
            .channel_id;
        let _active = client.live.connected();
        // Every subscriber must be listening, or what it missed would look lost.
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.shared.subscribed.load(Ordering::Relaxed) < subscribers {
            if Instant::now() > deadline {
                return Err("chat_subscribers_never_ready".into());
            }
            tokio::select! {
                () = client.stop.wait() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate_per_sec.max(0.001)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = client.stop.wait() => return Ok(()),
                _ = ticker.tick() => {}
            }
            let started = Instant::now();
            let body = format!("lt {}", unix_us());
            // Counted before the call returns: subscribers may see it first.
            self.shared.chat_sent.fetch_add(1, Ordering::Relaxed);
            // With an idempotency key, and on another lobby replica if this one is gone.
            match player.send_chat(&channel_id, &body).await {
                Ok(_) => {
                    client.recorder.latency("chat_send", started.elapsed());
                    client.recorder.count(|counters| counters.chat_sent += 1);
                }
                Err(status) => {
                    self.shared.chat_sent.fetch_sub(1, Ordering::Relaxed);
                    return Err(status_kind("chat_send", &status));
                }
            }
        }
    }

    /// Queues (and with `play`, plays) until stopped or `rounds` are done.
    async fn queue_loop(
        &self,
        mut player: PlayerClient,
        mut client: ClientSlot,
        rounds: Option<u32>,
        play: bool,
    ) -> Result<(), String> {
        let mut round = 0u32;
        while !client.stop.is_set() && rounds.is_none_or(|rounds| round < rounds) {
            round += 1;
            let enqueued = Instant::now();
            let ticket = player.enqueue(MODE).await.map_err(|status| status_kind("enqueue", &status))?;
            client.recorder.count(|counters| counters.tickets += 1);
            let outcome = {
                let wait = player.wait(&ticket);
                tokio::pin!(wait);
                tokio::select! {
                    outcome = &mut wait => Some(outcome),
                    // A partner may be matched this very round: give the watch a moment.
                    () = client.stop.wait() => tokio::time::timeout(Duration::from_secs(2), &mut wait).await.ok(),
                }
            };
            let Some(outcome) = outcome else {
                let _ = player.cancel(&ticket).await;
                return Ok(());
            };
            let assignment = match outcome {
                Ok(QueueOutcome::Matched(assignment)) => assignment,
                Ok(QueueOutcome::Ended { state, reason }) => {
                    return Err(format!("ticket_{}:{reason}", format!("{state:?}").to_lowercase()));
                }
                Err(status) => return Err(status_kind("watch_ticket", &status)),
            };
            client.recorder.latency("ticket_assign", enqueued.elapsed());
            client.recorder.count(|counters| counters.tickets_assigned += 1);
            let told = {
                let mut assigned =
                    self.shared.assigned_matches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let told = assigned.entry(assignment.match_id).or_default();
                *told += 1;
                *told
            };
            if let Some(virtual_shard) = &self.shared.virtual_shard
                && told as usize == assignment.roster.len()
            {
                let _ = virtual_shard.send(abandoned(&assignment));
            }
            if play {
                match self.play(&player, &mut client, &assignment).await? {
                    MatchOutcome::Finished => {}
                    MatchOutcome::Cut => return Ok(()),
                }
            }
        }
        Ok(())
    }

    async fn play(
        &self,
        player: &PlayerClient,
        client: &mut ClientSlot,
        assignment: &Assignment,
    ) -> Result<MatchOutcome, String> {
        let seat = seat_of(assignment, player.player_id()).ok_or("assignment_without_my_seat")?;
        let addr: SocketAddr = assignment.shard_address.parse().map_err(|_| "bad_shard_address")?;
        let endpoint =
            self.shared.endpoint(&assignment.certificate_sha256, client.idx).map_err(|_| "client_endpoint")?;
        let addr = if self.shared.conditions == rally_client::conditioner::LinkConditions::perfect() {
            addr
        } else {
            let mut proxies = self.shared.proxies.lock().await;
            match proxies.get(&addr) {
                Some(proxy) => proxy.local_addr(),
                None => {
                    let proxy = rally_client::proxy::UdpProxy::start(addr, self.shared.conditions, self.shared.seed)
                        .await
                        .map_err(|_| "link_conditioner")?;
                    let local = proxy.local_addr();
                    proxies.insert(addr, proxy);
                    local
                }
            }
        };
        let target = GameTarget { addr, server_name: "localhost".into() };
        play_match(&endpoint, &target, seat.connect_token.clone(), &client.recorder, &client.live, &mut client.stop)
            .await
    }
}

/// Runs a whole platform load test and returns its report (thresholds evaluated).
pub fn run(config: &PlatformConfig) -> anyhow::Result<Report> {
    let load = &config.load;
    if let PlatformScenario::Chat { senders, rate_per_sec } = &config.scenario {
        anyhow::ensure!(*senders >= 1 && *senders < load.clients, "chat needs at least one sender and one subscriber");
        anyhow::ensure!(*rate_per_sec > 0.0, "the chat message rate must be positive");
    }
    let cores = sys::cores();
    let pin = load.effective_pin();
    if pin {
        sys::pin_self(HARNESS_CORE)?;
    }
    let started_unix_ms = rally_transport::unix_ms();

    // The stack: a shard trusting the matchmaker's key, its results forwarded to
    // the registry agent, and the services.
    let mut shard = None;
    let mut services = None;
    // The virtual shard's result channel stays open for the run: its agent
    // takes a closed channel for a stopped shard and deregisters it.
    let mut virtual_results = None;
    let (lobby_url, matchmaker_url, metrics, target_text) = match &config.target {
        PlatformTarget::Embedded { shard: shard_config, services: services_config } => {
            let minter = EmbeddedServices::minter();
            let (forward_tx, forward_rx) = mpsc::unbounded_channel();
            let agent = if matches!(config.scenario, PlatformScenario::Chat { .. }) {
                // Chat needs neither a shard nor the matchmaker's registry.
                None
            } else if config.scenario == PlatformScenario::Matchmaker {
                // Nobody plays: a registered shard with room for every match is all the matchmaker needs.
                virtual_results = Some(forward_tx);
                Some(AgentSetup {
                    info: ShardInfo {
                        name: "loadtest-virtual-shard".into(),
                        address: "127.0.0.1:9".into(),
                        region: "local".into(),
                        capacity: 10_000_000,
                        version: env!("CARGO_PKG_VERSION").into(),
                        certificate_sha256: String::new(),
                        incarnation: ShardInfo::new_incarnation(),
                    },
                    results: forward_rx,
                    load: Arc::new(|| ShardLoad { matches: 0, players: 0 }),
                })
            } else {
                let embedded = EmbeddedShard::start_forwarding(
                    &EmbeddedShardConfig {
                        core: pin.then_some(SERVER_CORE),
                        token_key: Some(minter.verifying_key()),
                        ..shard_config.clone()
                    },
                    Some(forward_tx),
                )?;
                let live = embedded.live.clone();
                let info = ShardInfo {
                    name: embedded.name.clone(),
                    address: embedded.addr.to_string(),
                    region: "local".into(),
                    capacity: u32::try_from(shard_config.max_matches).unwrap_or(u32::MAX),
                    version: env!("CARGO_PKG_VERSION").into(),
                    certificate_sha256: embedded.fingerprint.clone(),
                    incarnation: ShardInfo::new_incarnation(),
                };
                shard = Some(embedded);
                Some(AgentSetup {
                    info,
                    results: forward_rx,
                    load: Arc::new(move || ShardLoad { matches: live.matches(), players: live.connections() }),
                })
            };
            let started = EmbeddedServices::start(services_config, minter, agent)?;
            let urls = (started.lobby_url.clone(), started.matchmaker_url.clone());
            services = Some(started);
            (
                urls.0,
                urls.1,
                shard.as_ref().map(|shard| shard.metrics),
                "embedded lobby, matchmaker and shard".to_owned(),
            )
        }
        PlatformTarget::Remote { lobby_url, matchmaker_url, shard_metrics } => (
            lobby_url.clone(),
            matchmaker_url.clone(),
            *shard_metrics,
            format!("lobby {lobby_url}, matchmaker {matchmaker_url}"),
        ),
    };

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let plan = RunPlan {
        clients: load.clients,
        ramp_per_sec: load.ramp_per_sec,
        duration: load.duration,
        grace: Duration::from_secs(15),
        progress: load.progress,
    };
    let scenario = Arc::new(runtime.block_on(async {
        let n_channels = (load.clients as usize).div_ceil(CLIENTS_PER_CHANNEL).max(1);
        // One URL, or several replicas comma-separated: each group of clients
        // has its own channels and starts at the next replica.
        let lazy = |urls: &str| -> anyhow::Result<Vec<Replicas>> {
            let endpoints = Endpoints::parse(urls).context("a service's URLs")?;
            (0..n_channels).map(|group| Ok(endpoints.lazy()?.starting_at(group))).collect()
        };
        anyhow::Ok(PlatformLoad {
            scenario: config.scenario.clone(),
            clients: load.clients,
            shared: Shared {
                lobby: lazy(&lobby_url)?,
                matchmaker: lazy(&matchmaker_url)?,
                run_id: rand::random(),
                password: format!("loadtest {:016x} passphrase", load.seed),
                endpoints: load.endpoints,
                quic: Mutex::new(HashMap::new()),
                conditions: load.conditions,
                seed: load.seed,
                proxies: tokio::sync::Mutex::new(HashMap::new()),
                subscribed: AtomicU64::new(0),
                chat_sent: AtomicU64::new(0),
                assigned_matches: Mutex::new(HashMap::new()),
                virtual_shard: virtual_results.clone(),
            },
        })
    })?);
    let observe = Observe {
        shard_metrics: metrics,
        shard_cpu: shard.as_ref().and_then(|shard| {
            let tid = shard.tid?;
            Some(Box::new(move || sys::thread_cpu(tid)) as Box<dyn Fn() -> Option<Duration> + Send + Sync>)
        }),
        other_cpu: Vec::new(),
    };
    let output = runtime.block_on(drive(scenario.clone(), &plan, observe));

    let counters = output.measures.counters.clone();
    let assigned_whole = scenario
        .shared
        .assigned_matches
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .filter(|&&seen| seen == 2)
        .count() as u64;
    // Close the clients' gRPC connections (their tasks live on this runtime)
    // before the services shut down gracefully, or the shutdown waits on them.
    drop(scenario);
    drop(runtime);
    drop(virtual_results);
    let mut checks = Vec::new();
    let mut shards = Vec::new();
    let shard_report = shard.map(EmbeddedShard::stop).transpose()?;
    let scored = shard_report
        .as_ref()
        .map(|report| report.results.iter().filter(|result| result.reason.ended_by_the_rules()).count() as u64);
    let services_report = services.map(|services| services.stop(scored.unwrap_or(0))).transpose()?;
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
    match &config.scenario {
        PlatformScenario::Chat { senders, .. } => {
            let subscribers = load.clients - senders;
            checks.push(Check {
                name: "chat messages received = messages sent × subscribers".into(),
                clients: counters.chat_received as f64,
                servers: (counters.chat_sent * subscribers) as f64,
                passed: counters.chat_received == counters.chat_sent * subscribers,
            });
        }
        PlatformScenario::Matchmaker | PlatformScenario::Full { .. } => {
            let whole = assigned_whole;
            checks.push(Check {
                name: "tickets assigned = 2 × matches both players were told about".into(),
                clients: counters.tickets_assigned as f64,
                servers: (2 * whole) as f64,
                passed: counters.tickets_assigned == 2 * whole,
            });
        }
    }
    if let (Some(report), Some(scored)) = (&shard_report, scored) {
        checks.extend(crate::report::match_checks(&output.finished_matches, &report.results, output.stopped_unix_ms));
        checks.push(Check {
            name: "matches started (clients) = match results the shard emitted".into(),
            clients: counters.matches_started as f64,
            servers: report.results.len() as f64,
            passed: counters.matches_started == report.results.len() as u64,
        });
        if let Some(services) = &services_report {
            checks.push(Check {
                name: "matches the shard ended by its rules = results applied to lobby ratings".into(),
                clients: scored as f64,
                servers: services.ratings_applied as f64,
                passed: scored == services.ratings_applied,
            });
        }
    }

    let mut settings = BTreeMap::new();
    match &config.scenario {
        PlatformScenario::Chat { senders, rate_per_sec } => {
            settings.insert("senders".into(), senders.to_string());
            settings.insert("messages_per_sender_per_s".into(), rate_per_sec.to_string());
        }
        PlatformScenario::Matchmaker => {}
        PlatformScenario::Full { rounds } => {
            settings
                .insert("rounds".into(), rounds.map_or_else(|| "until stop".to_owned(), |rounds| rounds.to_string()));
        }
    }
    if let PlatformTarget::Embedded { services, .. } = &config.target {
        settings.insert("points_to_win".into(), services.points_to_win.to_string());
        settings.insert(
            "password_hashing".into(),
            if services.real_password_hashing { "argon2id 19 MiB, 2 passes" } else { "cheap (1 MiB, 1 pass)" }.into(),
        );
    }
    let mut report = Report {
        version: REPORT_VERSION,
        scenario: config.scenario.name().into(),
        runs: vec![RunInfo {
            started_unix_ms,
            wall_s: output.wall_s,
            clients: load.clients,
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
            transport: rally_client::TransportKind::Quic.name().to_owned(),
            system_udp: output.system_udp,
        }],
        measures: output.measures,
        shards,
        baseline: None,
        checks,
        timeline: output.timeline,
        thresholds: Vec::new(),
    };
    report.evaluate(&load.thresholds);
    Ok(report)
}
