//! `rally up`: the whole platform in one process on localhost — lobby (SQLite
//! in the data dir), matchmaker (in-memory registry, tickets and results bus),
//! one shard, and bots that register, queue and play without end — with a
//! compact status line, one metrics endpoint, and a clean drain on Ctrl-C.
//!
//! The shard also serves raw UDP on loopback (`--udp-addr`, off with
//! `--no-udp`) for `rally play --transport udp`: unencrypted, so it stays on
//! loopback unless moved on purpose.
//!
//! `--database-url` and `--redis-url` swap the embedded stores for real
//! PostgreSQL and Redis; every role is also its own subcommand for a split
//! deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use rally_bot::queue::{BotFiller, QueueConfig, QueueStats, run_queue_bot};
use rally_bot::tournament::{CupBoard, CupConfig, run_bot_cups};
use rally_bot::{BatchWindow, Decider, Difficulty, PolicyKind};
use rally_lobby::{LobbyConfig, ProfileStore};
use rally_matchmaker::engine::Backends;
use rally_matchmaker::player::PlayerClient;
use rally_matchmaker::registry::ShardInfo;
use rally_matchmaker::shard_agent::{self, ShardAgentConfig};
use rally_matchmaker::{Matchmaker, MatchmakerConfig, ModeConfig, RedisConnection, TokenMinter};
use rally_server::ServeConfig;
use rally_sim::PongWorld;
use tokio::sync::{mpsc, watch};

use crate::common::{READY_JSON_HELP, ReadyLine, shutdown_signal};

/// House bots that take seats the matchmaker fills with bots.
const HOUSE_BOTS: u32 = 4;
/// The password of the bots' accounts (local development only).
const BOT_PASSWORD: &str = "rally-up-bot-password";

/// `rally up` flags.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Directory for the lobby database, keys, certificates and results.
    #[arg(long, default_value = "data/up", env = "RALLY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Lobby gRPC address (Auth, Profile, Chat).
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub lobby_addr: SocketAddr,
    /// Matchmaker gRPC address.
    #[arg(long, default_value = "127.0.0.1:7101")]
    pub matchmaker_addr: SocketAddr,
    /// Shard QUIC (UDP) address.
    #[arg(long, default_value = "127.0.0.1:7102")]
    pub shard_addr: SocketAddr,
    /// Shard raw UDP address (unencrypted: for LAN play, bots and load tests; `rally play --transport udp`).
    #[arg(long, default_value = "127.0.0.1:7103", conflicts_with = "no_udp")]
    pub udp_addr: SocketAddr,
    /// Do not serve raw UDP (QUIC only).
    #[arg(long)]
    pub no_udp: bool,
    /// Prometheus metrics of every role, plus /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:7109")]
    pub metrics_addr: SocketAddr,
    /// `sqlite://<file>` or `postgres://…` [default: sqlite://<data-dir>/lobby.db].
    #[arg(long, env = "RALLY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis for the matchmaker's tickets, shard registry and results bus [default: in memory].
    #[arg(long, env = "RALLY_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Bots that queue and play continuously.
    #[arg(long, default_value_t = 8)]
    pub bots: u32,
    /// How the bots play: onnx, predictor, tracker or expert.
    #[arg(long, default_value = "onnx", value_parser = parse_policy)]
    pub bot_policy: PolicyKind,
    /// How well the bots play: perfect, hard, medium or easy; repeat or
    /// comma-separate to give the bots different levels in turn (two perfect bots never miss).
    #[arg(long, default_value = "hard,medium,easy", value_parser = parse_difficulty, value_delimiter = ',')]
    pub bot_difficulty: Vec<Difficulty>,
    /// Points a side needs to win.
    #[arg(long, default_value_t = 5)]
    pub points_to_win: u8,
    /// Stop (and drain) after this many seconds; without it, run until Ctrl-C.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// How long running matches may finish after Ctrl-C.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Seconds between status lines (0: none).
    #[arg(long, default_value_t = 2.0)]
    pub status_interval: f64,
    /// Print the machine-readable ready line instead of the banner.
    #[arg(long, help = READY_JSON_HELP)]
    pub ready_json: bool,
    /// Tournaments gRPC address (its ledger is <data-dir>/ledger, signed with <data-dir>/ledger.key)
    /// [default: 127.0.0.1:7104, or any free port when --lobby-addr asks for one with port 0].
    #[arg(long)]
    pub tournaments_addr: Option<SocketAddr>,
    /// The ledger's read-only HTTP address (checkpoint, entries, proofs, replays: `rally ledger verify http://…`)
    /// [default: 127.0.0.1:7105, or any free port when --lobby-addr asks for one with port 0].
    #[arg(long)]
    pub ledger_addr: Option<SocketAddr>,
    /// Do not run the built-in bot cup (the tournament service still serves).
    #[arg(long)]
    pub no_tournament: bool,
    /// Bots in each bot cup (single elimination, best of one; a new cup starts when one ends).
    #[arg(long, default_value_t = 8)]
    pub cup_bots: u32,
    /// Seconds each bot cup's registration (and check-in) stays open.
    #[arg(long, default_value_t = 20.0)]
    pub cup_registration: f64,
    /// Points a side needs to win a tournament match (short, so a cup ends in minutes).
    #[arg(long, default_value_t = 2)]
    pub tournament_points_to_win: u8,
    /// Seconds a tournament player has to connect to a ready match before forfeiting it.
    #[arg(long, default_value_t = 20.0)]
    pub tournament_no_show: f64,
}

fn parse_difficulty(name: &str) -> Result<Difficulty, String> {
    Difficulty::preset(name).ok_or_else(|| format!("unknown difficulty {name:?}; choose perfect, hard, medium or easy"))
}

fn parse_policy(name: &str) -> Result<PolicyKind, String> {
    PolicyKind::parse(name).ok_or_else(|| format!("unknown policy {name:?}; choose onnx, predictor, tracker or expert"))
}

/// The game modes `rally up` serves: `pong` (bots fill a seat after 15 s) and
/// `pong-bot` (a bot at once), both first to `points_to_win`.
pub fn modes(points_to_win: u8) -> Vec<ModeConfig> {
    let pong = ModeConfig { points_to_win, bot_fill_after_ms: Some(15_000), ..ModeConfig::one_vs_one("pong") };
    let against_bot = ModeConfig { points_to_win, ..ModeConfig::against_house_bot("pong-bot") };
    vec![pong, against_bot]
}

/// Runs everything until Ctrl-C / SIGTERM (or `--seconds`), then drains.
pub fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    rally_server::ops::prometheus();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(up(args))
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;

    // Lobby.
    let keys = rally_lobby::AccessSigningKeys::load_or_create_dev(&args.data_dir)
        .with_context(|| format!("development access-token keys in {}", args.data_dir.display()))?;
    let database_url =
        args.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", args.data_dir.join("lobby.db").display()));
    let mut lobby_config = LobbyConfig::new(args.lobby_addr, database_url, keys);
    // Every bot of this process (queue bots, cup bots, the cup's organiser) signs in
    // from loopback: the per-IP sign-in limit would otherwise refuse a person on the
    // same machine once they are all in.
    lobby_config.limits.auth_per_ip_exempt = ["127.0.0.0/8", "::1/128"]
        .into_iter()
        .map(|network| network.parse().map_err(|err: String| anyhow::anyhow!("loopback network {network}: {err}")))
        .collect::<anyhow::Result<_>>()?;
    let lobby = rally_lobby::serve(lobby_config)
        .await
        .with_context(|| format!("starting the lobby on {} (is another `rally up` running?)", args.lobby_addr))?;
    let lobby_url = format!("http://{}", lobby.local_addr());

    // Matchmaker with its backends.
    let minter = TokenMinter::random(1);
    let config = MatchmakerConfig { modes: modes(args.points_to_win), ..MatchmakerConfig::default() };
    let backends = match &args.redis_url {
        Some(url) => {
            let redis = RedisConnection::connect_lazy(url, "rally").context("--redis-url")?;
            Backends::redis(&redis, Duration::from_millis(config.ticket_retention_ms))
        }
        None => Backends::in_memory(Duration::from_millis(config.ticket_retention_ms)),
    };
    let ratings: Arc<dyn rally_matchmaker::RatingSource> = Arc::new(lobby.profiles().clone());
    let matchmaker = Matchmaker::new(config, backends.clone(), ratings.clone(), minter.clone())?;
    let matchmaker_server = rally_matchmaker::serve(args.matchmaker_addr, matchmaker.clone(), lobby.verifier().clone())
        .await
        .with_context(|| format!("starting the matchmaker on {}", args.matchmaker_addr))?;
    let matchmaker_url = format!("http://{}", matchmaker_server.local_addr());

    // Shard, registered with the matchmaker's registry and publishing to its bus.
    let mut serve = ServeConfig::local(args.data_dir.join("shard"), vec![(minter.key_id(), minter.verifying_key())]);
    serve.listen = args.shard_addr;
    serve.udp_listen = (!args.no_udp).then_some(args.udp_addr);
    let udp_listen = serve.udp_listen;
    serve.drain_timeout = Duration::from_secs_f64(args.drain_timeout.max(0.0));
    // The tournament service copies each counted match's replay from `replays/` into the ledger
    // when the result arrives; the shard writes them to `shard-replays/` (see `hand_on_whole_replays`).
    let replay_dir = args.data_dir.join("replays");
    let shard_replays = args.data_dir.join("shard-replays");
    for dir in [&replay_dir, &shard_replays] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    serve.replay_dir = Some(shard_replays.clone());
    serve.shard.name = "up-1".to_owned();
    let capacity = u32::try_from(serve.shard.max_matches).unwrap_or(u32::MAX);
    let (results_tx, shard_results_rx) = mpsc::unbounded_channel();
    let (agent_tx, results_rx) = mpsc::unbounded_channel();
    tokio::spawn(hand_on_whole_replays(shard_results_rx, agent_tx, shard_replays, replay_dir.clone()));
    let shard = rally_server::start::<PongWorld>(serve, results_tx).await.with_context(|| match udp_listen {
        Some(udp) => format!("starting the shard on {} and raw UDP on {udp}", args.shard_addr),
        None => format!("starting the shard on {}", args.shard_addr),
    })?;
    let info = ShardInfo {
        name: shard.name.clone(),
        address: shard.local_addr.to_string(),
        region: "local".to_owned(),
        capacity,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        certificate_sha256: shard.fingerprint.clone(),
        incarnation: ShardInfo::new_incarnation(),
    };
    let live = shard.live.clone();
    let load: shard_agent::LoadProbe =
        Arc::new(move || rally_matchmaker::ShardLoad { matches: live.matches(), players: live.connections() });
    let (draining_tx, draining_rx) = watch::channel(false);
    let agent = tokio::spawn(shard_agent::run(
        backends.registry.clone(),
        backends.bus.clone(),
        ShardAgentConfig::new(info),
        results_rx,
        load,
        draining_rx,
    ));

    // Results → ratings.
    let (consumer, applied, match_channels) = rally_matchmaker::lobby_results::consume_into_lobby(
        backends.bus.clone(),
        backends.events.clone(),
        lobby.profiles().clone(),
        lobby.chat().clone(),
        "up",
    );
    let engine = matchmaker.start();

    // Tournaments: scheduled on the same shard registry, results from the same bus, logged to the ledger.
    let ledger = rally_tournaments::open_ledger(
        &args.data_dir.join("ledger"),
        &args.data_dir.join("ledger.key"),
        "rally.up/ledger",
    )
    .with_context(|| format!("opening the ledger in {}", args.data_dir.join("ledger").display()))?;
    let tournaments_db = match &args.database_url {
        Some(url) if !url.starts_with("sqlite:") => url.clone(),
        _ => format!("sqlite://{}", args.data_dir.join("tournaments.db").display()),
    };
    let store = rally_tournaments::Store::connect(&tournaments_db).await.context("the tournaments database")?;
    let tournaments_config = rally_tournaments::TournamentsConfig {
        modes: vec![rally_tournaments::TournamentMode {
            name: "pong".to_owned(),
            points_to_win: args.tournament_points_to_win,
        }],
        no_show: Duration::from_secs_f64(args.tournament_no_show.max(1.0)),
        replay_dir: Some(replay_dir),
        consumer: "up".to_owned(),
        ..rally_tournaments::TournamentsConfig::default()
    };
    let director = rally_tournaments::TournamentDirector::open(
        tournaments_config,
        store,
        backends.registry.clone(),
        backends.bus.clone(),
        ratings.clone(),
        minter.clone(),
        ledger.clone(),
    )
    .await
    .context("starting the tournament director")?;
    let director_handle = director.start();
    let tournaments_addr = args.tournaments_addr.unwrap_or_else(|| match args.lobby_addr.port() {
        0 => SocketAddr::new(args.lobby_addr.ip(), 0),
        _ => SocketAddr::from(([127, 0, 0, 1], 7104)),
    });
    let tournaments_server = rally_tournaments::serve(tournaments_addr, director.clone(), lobby.verifier().clone())
        .await
        .with_context(|| format!("starting the tournament service on {tournaments_addr}"))?;
    let tournaments_url = format!("http://{}", tournaments_server.local_addr());
    let ledger_addr = args.ledger_addr.unwrap_or_else(|| match args.lobby_addr.port() {
        0 => SocketAddr::new(args.lobby_addr.ip(), 0),
        _ => SocketAddr::from(([127, 0, 0, 1], 7105)),
    });
    let ledger_listener = tokio::net::TcpListener::bind(ledger_addr)
        .await
        .with_context(|| format!("serving the ledger on {ledger_addr}"))?;
    let ledger_addr = ledger_listener.local_addr().context("the ledger's address")?;
    let ledger_http = tokio::spawn(axum::serve(ledger_listener, rally_ledger::router(ledger.clone())).into_future());

    // Bots: one decider batches every bot's decisions.
    let policy = args.bot_policy.build(None).context("loading the bot policy")?;
    let decider = Decider::spawn(policy, BatchWindow::default());
    // House bots fill the seats nobody came for; they are real accounts, so
    // a person's match against one is rated like any other.
    let mut house = Vec::new();
    for index in 1..=HOUSE_BOTS {
        let lobby_channel = rally_matchmaker::player::channel(&lobby_url).await?;
        let matchmaker_channel = rally_matchmaker::player::channel(&matchmaker_url).await?;
        let name = format!("house-bot-{index}");
        let account = PlayerClient::register_or_login(lobby_channel, matchmaker_channel, &name, BOT_PASSWORD)
            .await
            .with_context(|| format!("registering {name}"))?;
        house.push(rally_protocol::PlayerId(account.player_id()));
    }
    let filler = Arc::new(BotFiller::with_players(decider.handle(), Difficulty::MEDIUM, house)?);
    matchmaker.set_bot_fill(filler.clone());
    let bot_stats = Arc::new(QueueStats::default());
    let (stop_bots_tx, stop_bots_rx) = watch::channel(false);
    let mut bots = tokio::task::JoinSet::new();
    let queue = QueueConfig {
        lobby_url: lobby_url.clone(),
        matchmaker_url: matchmaker_url.clone(),
        mode: "pong".to_owned(),
        username_prefix: format!("{}-bot", args.bot_policy.name()),
        password: BOT_PASSWORD.to_owned(),
        difficulty: Difficulty::MEDIUM,
        matches_per_bot: None,
    };
    for index in 1..=args.bots {
        let mut queue = queue.clone();
        if !args.bot_difficulty.is_empty() {
            queue.difficulty = args.bot_difficulty[(index as usize - 1) % args.bot_difficulty.len()];
        }
        let (queue, decider, stats) = (queue, decider.handle(), bot_stats.clone());
        let mut stop = stop_bots_rx.clone();
        bots.spawn(async move {
            tokio::select! {
                played = run_queue_bot(&queue, index, decider, stats) => {
                    if let Err(err) = played {
                        tracing::warn!(index, "bot stopped: {err:#}");
                    }
                }
                _ = stop.wait_for(|stop| *stop) => {}
            }
        });
    }

    // The bot cup: its own accounts, so the queueing bots keep queueing.
    let cups = Arc::new(CupBoard::default());
    let cup_task = (!args.no_tournament).then(|| {
        let config = CupConfig {
            lobby_url: lobby_url.clone(),
            tournaments_url: tournaments_url.clone(),
            username_prefix: "cup-bot".to_owned(),
            password: BOT_PASSWORD.to_owned(),
            entrants: args.cup_bots.max(2),
            registration: Duration::from_secs_f64(args.cup_registration.max(1.0)),
            // Points come quickly between easy bots, so a cup takes minutes.
            difficulty: Difficulty::EASY,
            name: "rally up cup".to_owned(),
        };
        let (decider, stats, board) = (decider.handle(), bot_stats.clone(), cups.clone());
        let mut stop = stop_bots_rx.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            if let Err(err) = run_bot_cups(&config, decider, stats, board, stop).await {
                tracing::warn!("the bot cup stopped: {err:#}");
            }
        })
    });

    let metrics = rally_server::ops::serve(args.metrics_addr, shard.readiness.clone())
        .await
        .with_context(|| format!("serving metrics on {}", args.metrics_addr))?;
    if args.ready_json {
        ReadyLine {
            lobby: Some(lobby.local_addr()),
            matchmaker: Some(matchmaker_server.local_addr()),
            tournaments: Some(tournaments_server.local_addr()),
            ledger: Some(ledger_addr),
            token_key: Some(minter.public_key_spec()),
            ..ReadyLine::with_shard("up", &shard, metrics)
        }
        .print()?;
    } else {
        println!("rally up: everything on localhost (data in {})", args.data_dir.display());
        println!("  lobby       {lobby_url}   (Auth, Profile, Chat)");
        println!("  matchmaker  {matchmaker_url}");
        println!(
            "  tournaments {tournaments_url}   (ledger in {}; `rally ledger verify {}`)",
            args.data_dir.join("ledger").display(),
            args.data_dir.display()
        );
        println!("  shard       {} (QUIC), certificate sha256 {}", shard.local_addr, shard.fingerprint);
        match shard.udp_addr {
            Some(udp) => println!("  udp         {udp} (the shard's raw UDP: unencrypted; --no-udp turns it off)"),
            None => println!("  udp         off (--no-udp)"),
        }
        println!("  metrics     http://{metrics}/metrics");
        println!("  bots        {} × {} queueing for \"pong\"", args.bots, args.bot_policy.name());
        println!("  ledger      http://{ledger_addr}   (read-only: checkpoint, entries, proofs, replays)");
        if args.no_tournament {
            println!("  bot cup     off (--no-tournament)");
        } else {
            println!("  bot cup     {} bots, single elimination, a new cup when one ends", args.cup_bots.max(2));
        }
        println!("Play a match: `rally play` in another terminal. Ctrl-C drains and stops.");
    }

    // Status until asked to stop.
    let stop_after = async {
        match args.seconds {
            Some(seconds) => tokio::time::sleep(Duration::from_secs_f64(seconds.max(0.0))).await,
            None => std::future::pending().await,
        }
    };
    let cup_status = CupStatus { board: &cups, ledger: &ledger, enabled: !args.no_tournament };
    let status = status_loop(&args, &shard.live, &bot_stats, &filler, lobby.profiles(), &applied, &cup_status);
    tokio::select! {
        _ = shutdown => println!("shutdown requested: draining (running matches finish, up to {} s)", args.drain_timeout),
        _ = stop_after => println!("--seconds elapsed: draining (running matches finish, up to {} s)", args.drain_timeout),
        _ = status => {}
    }

    // Drain: no new matches; bots finish the match they are in, then stop queueing.
    let _ = draining_tx.send(true);
    shard.drain();
    let report = shard.wait().await.context("draining the shard")?;
    tracing::info!("shard drained; stopping bots");
    let _ = stop_bots_tx.send(true);
    while bots.join_next().await.is_some() {}
    if let Some(cup_task) = cup_task {
        let _ = cup_task.await;
    }
    tracing::info!("bots stopped; flushing results");
    // The agent ends once the shard dropped its results sender and every result is published.
    let agent_report = agent.await.context("shard agent")?;
    // Let the consumer apply what was published before stopping it.
    let published = agent_report.published;
    if !applied.wait_until(Duration::from_secs(10), |stats| stats.handled() >= published).await {
        tracing::warn!(
            published,
            handled = applied.stats().handled(),
            "not every published result reached the ratings within 10 s; the bus keeps the rest"
        );
    }
    tracing::info!("results flushed; stopping the tournaments");
    director_handle.stop().await;
    // Watch streams stay open until their clients go: bound the wait.
    match tokio::time::timeout(Duration::from_secs(5), tournaments_server.shutdown()).await {
        Ok(result) => result.context("tournaments shutdown")?,
        Err(_) => tracing::warn!("the tournament service did not close its streams within 5 s; stopping anyway"),
    }
    ledger_http.abort();
    tracing::info!("tournaments stopped; stopping the matchmaker");
    match_channels.stop().await;
    consumer.stop().await;
    engine.stop().await;
    matchmaker_server.shutdown().await.context("matchmaker shutdown")?;
    tracing::info!("matchmaker stopped; stopping the lobby");
    // The decider thread ends once every handle is gone: the bot-fill hook
    // (inside the matchmaker) holds some, so drop both first.
    drop(matchmaker);
    drop(filler);
    let decided = tokio::task::spawn_blocking(move || decider.finish()).await.context("decider thread")?;
    tracing::info!(decisions = decided.decisions, calls = decided.calls, "bots' decider stopped");
    // Open client connections can hold the lobby's graceful shutdown; its
    // data is already committed, so bound the wait.
    match tokio::time::timeout(Duration::from_secs(5), lobby.shutdown()).await {
        Ok(result) => result.context("lobby shutdown")?,
        Err(_) => tracing::warn!("the lobby did not close its connections within 5 s; stopping anyway"),
    }
    println!(
        "rally up stopped: {} matches finished ({} cut short), {} results applied to ratings, {} late ticks of {}",
        // The shard's own count: the live figures stop at the last tick, before the matches cut at the deadline.
        report.stats.matches_ended,
        report.aborted_matches,
        applied.stats().applied,
        report.late_ticks,
        report.ticks
    );
    let size = ledger.lock().map_or(0, |ledger| ledger.size());
    match cups.last_champion() {
        Some((id, champion)) => println!(
            "bot cups finished: {} (the last, tournament {id}, won by {champion}); the ledger holds {size} entries: \
             `rally ledger verify --replay {}` checks them",
            cups.finished(),
            args.data_dir.display()
        ),
        None => println!("bot cups finished: 0; the ledger holds {size} entries"),
    }
    Ok(())
}

/// Hands each result from the shard on to its agent once the match's replay
/// file is whole, moved into `replay_dir` (a rename, so a reader sees all of it
/// or none). The shard writes the file while the result leaves; a reader
/// racing it would copy a partial replay into the ledger.
async fn hand_on_whole_replays(
    mut from_shard: mpsc::UnboundedReceiver<rally_protocol::results::MatchResult>,
    to_agent: mpsc::UnboundedSender<rally_protocol::results::MatchResult>,
    written_to: PathBuf,
    replay_dir: PathBuf,
) {
    /// How long a replay may take to appear; a match may also end without one.
    const REPLAY_WAIT: Duration = Duration::from_secs(3);
    while let Some(result) = from_shard.recv().await {
        let name = format!("{}.replay", result.match_id);
        let (from, to) = (written_to.join(&name), replay_dir.join(&name));
        let deadline = tokio::time::Instant::now() + REPLAY_WAIT;
        loop {
            let whole =
                tokio::fs::read(&from).await.is_ok_and(|bytes| rally_sim::replay::InputLog::decode(&bytes).is_ok());
            if whole {
                if let Err(err) = tokio::fs::rename(&from, &to).await {
                    tracing::warn!(path = %from.display(), %err, "could not move the replay");
                }
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!(match_id = %result.match_id, "no whole replay for the match");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to_agent.send(result).is_err() {
            return;
        }
    }
}

/// What the status line says about tournaments.
struct CupStatus<'a> {
    board: &'a CupBoard,
    ledger: &'a std::sync::Mutex<rally_ledger::Ledger>,
    enabled: bool,
}

impl CupStatus<'_> {
    fn line(&self) -> String {
        let size = self.ledger.lock().map_or(0, |ledger| ledger.size());
        if self.enabled {
            format!("{} | ledger {size} entries", self.board.line())
        } else {
            format!("ledger {size} entries")
        }
    }
}

/// Prints a status line every `--status-interval` seconds; never returns.
async fn status_loop(
    args: &UpArgs,
    live: &rally_server::ShardLive,
    bots: &QueueStats,
    filler: &BotFiller,
    profiles: &ProfileStore,
    applied: &rally_matchmaker::lobby_results::ProfileResults,
    cups: &CupStatus<'_>,
) {
    if args.status_interval <= 0.0 {
        return std::future::pending().await;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(args.status_interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let ticks = live.take_tick_durations();
        let leaders = profiles
            .leaderboard(3, "", 0)
            .await
            .map(|board| {
                board
                    .entries
                    .iter()
                    .map(|e| format!("{} {:.0}", e.display_name, e.rating))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|err| format!("unavailable ({err})"));
        println!(
            "[status] matches running {} finished {} | players online {} | tick p99 {:.2} ms, late {} | \
             bot matches {} (+{} bot-fill), errors {} | ratings applied {} | top: {} | {}",
            live.matches(),
            live.matches_ended(),
            live.connections(),
            ticks.value_at_quantile(0.99) as f64 / 1000.0,
            live.late_ticks(),
            bots.matches.load(Ordering::Relaxed),
            filler.stats().matches.load(Ordering::Relaxed),
            bots.failures.load(Ordering::Relaxed) + filler.stats().failures.load(Ordering::Relaxed),
            applied.stats().applied,
            leaders,
            cups.line(),
        );
    }
}
