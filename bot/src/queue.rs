//! Bots as players of the platform: log in at the lobby, queue at the matchmaker,
//! play the assigned seat through a shard, queue again (`rally bot play`), and the
//! matchmaker's bot-fill hook ([`BotFiller`]), which plays seats it assigns to bots.
//!
//! Both go through the same public services a person's client uses: the lobby's
//! Auth gRPC service, the matchmaker's gRPC service
//! ([`rally_matchmaker::player::PlayerClient`]) and the shard's QUIC protocol.
//!
//! A queueing bot recovers by itself: a refused login (rate limit, the lobby's
//! database down) is retried with backoff and jitter, honouring the lobby's
//! retry hint; a dropped connection resumes the seat with the welcome's resume
//! credential within its grace window; and the ticket stays watched during
//! the match, so when the matchmaker reports it ABORTED (its shard was lost)
//! the bot drops the connection and queues again at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use rally_client::tls::ServerTrust;
use rally_client::{ConnectConfig, ConnectError, Connection, Transport};
use rally_matchmaker::player::{
    Backoff, Endpoints, PlayerClient, QueueOutcome, RetryPolicy, TicketWatch, retry_hint, seat_of,
};
use rally_matchmaker::{BotFill, BotSeat};
use rally_protocol::PlayerId;
use rally_protocol::control::{ClientHello, RefuseReason};

use crate::difficulty::Difficulty;
use crate::driver::{BotMatch, BotStyle, Played, SeatPlay, SeatTicket, bot_endpoint};
use crate::runner::DeciderHandle;

/// Where the platform's services are, and how the bots play.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// The lobby's gRPC URL (`http://host:port`), or its replicas' URLs
    /// comma-separated ([`Endpoints`]): the bot fails over between them.
    pub lobby_url: String,
    /// The matchmaker's gRPC URL, or its replicas' URLs comma-separated.
    pub matchmaker_url: String,
    /// The game mode to queue for.
    pub mode: String,
    /// Usernames are `<prefix>-<index>`.
    pub username_prefix: String,
    /// The bots' password (accounts are registered on first use).
    pub password: String,
    /// How each bot plays.
    pub difficulty: Difficulty,
    /// Matches each bot plays before stopping (`None`: until stopped).
    pub matches_per_bot: Option<u32>,
}

/// Counters shared by the bots of a `rally bot play` run.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Matches finished.
    pub matches: AtomicU64,
    /// Matches won.
    pub wins: AtomicU64,
    /// Queue, connection or match failures (each followed by a retry).
    pub failures: AtomicU64,
    /// Matches the matchmaker reported aborted (their shard was lost) while
    /// the bot played them; it queued again at once.
    pub aborted: AtomicU64,
    /// Dropped connections whose seat the bot took back with its resume credential.
    pub resumed: AtomicU64,
}

/// Resolves `host:port` (as the matchmaker's assignment gives it) to a socket address.
async fn resolve(address: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(address)
        .await
        .with_context(|| format!("resolving the shard address {address:?}"))?
        .next()
        .with_context(|| format!("the shard address {address:?} resolves to nothing"))
}

/// Plays one assigned seat (trusting the shard by the certificate hash it
/// came with), resuming it after a dropped connection.
async fn play_assigned(
    shard_address: &str,
    certificate_sha256: &str,
    token: Vec<u8>,
    decider: &DeciderHandle,
    style: BotStyle,
    stats: &QueueStats,
) -> anyhow::Result<BotMatch> {
    let addr = resolve(shard_address).await?;
    let endpoint = bot_endpoint(&ServerTrust::Fingerprint(certificate_sha256.to_owned()))?;
    let transport = Transport::Quic(endpoint.clone());
    let ticket = SeatTicket { addr, server_name: "localhost".into(), token };
    let result = play_resuming(&transport, &ticket, decider, style, stats).await;
    endpoint.close(0u32.into(), b"match over");
    result
}

/// Connects with `ticket` and plays to the end of the match; a connection
/// lost before the end is replaced by one that resumes the seat, until the
/// shard's grace window has passed or it refuses the credential.
pub async fn play_resuming(
    transport: &Transport,
    ticket: &SeatTicket,
    decider: &DeciderHandle,
    style: BotStyle,
    stats: &QueueStats,
) -> anyhow::Result<BotMatch> {
    let mut config = ConnectConfig::new(ticket.addr);
    config.server_name.clone_from(&ticket.server_name);
    let hello = ClientHello::Connect { token: ticket.token.clone() };
    let mut connection = Connection::connect(transport, &config, &hello).await?;
    let mut play = SeatPlay::new(&connection, style)?;
    loop {
        let why = match play.play_on(&mut connection, decider).await? {
            Played::Ended(result) => return Ok(result),
            Played::Dropped(why) => why,
        };
        let credential = connection.resume_credential();
        drop(connection);
        connection = resume_seat(transport, &config, &credential, play.resume_grace())
            .await
            .with_context(|| format!("{why}; resuming the seat failed"))?;
        stats.resumed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%why, "resumed the seat");
    }
}

/// Connects with a resume `credential`, retrying with backoff for up to
/// `grace` (the seat is held that long); a refusal of the credential is final.
pub async fn resume_seat(
    transport: &Transport,
    config: &ConnectConfig,
    credential: &ClientHello,
    grace: Duration,
) -> Result<Connection, ConnectError> {
    let deadline = tokio::time::Instant::now() + grace;
    let mut backoff = Backoff::new(RetryPolicy {
        max_attempts: None,
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
    });
    loop {
        let mut attempt = config.clone();
        attempt.connect_timeout = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .clamp(Duration::from_millis(100), config.connect_timeout);
        match Connection::connect(transport, &attempt, credential).await {
            Ok(connection) => return Ok(connection),
            Err(ConnectError::Refused(refusal))
                if matches!(refusal.reason, RefuseReason::ResumeRefused | RefuseReason::ResumeExpired) =>
            {
                return Err(ConnectError::Refused(refusal));
            }
            Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
            Err(err) => {
                tracing::debug!(error = %err, "resume attempt failed; retrying");
                tokio::time::sleep(backoff.next_delay(None)).await;
            }
        }
    }
}

/// One bot: registers or logs in as `<prefix>-<index>`, then queues and plays,
/// again and again, until it has played its matches. Failures are counted and
/// retried after a pause (a refused login too, after the wait it names).
pub async fn run_queue_bot(
    config: &QueueConfig,
    index: u32,
    decider: DeciderHandle,
    stats: Arc<QueueStats>,
) -> anyhow::Result<()> {
    run_queue_bot_until(config, index, decider, stats, std::future::pending()).await
}

/// [`run_queue_bot`] that also stops, with `Ok`, once `stop` completes: a
/// queued ticket is cancelled first; a match in play is dropped.
pub async fn run_queue_bot_until(
    config: &QueueConfig,
    index: u32,
    decider: DeciderHandle,
    stats: Arc<QueueStats>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let username = format!("{}-{index}", config.username_prefix);
    // Lazy channels: a lobby or matchmaker that is not up yet is a refusal to retry, not the end.
    // One per replica listed, and one per address of a DNS name that has several.
    let lobby = Endpoints::parse(&config.lobby_url)?.resolve().await?;
    let matchmaker = Endpoints::parse(&config.matchmaker_url)?.resolve().await?;
    let login = PlayerClient::register_or_login_retrying(
        lobby,
        matchmaker,
        &username,
        &config.password,
        RetryPolicy::forever(),
    );
    let mut player = tokio::select! {
        player = login => player.map_err(|status| anyhow::anyhow!("logging in as {username}: {}", status.message()))?,
        () = &mut stop => return Ok(()),
    };
    let mut played = 0u32;
    let mut seed = u64::from(index) << 32;
    let mut backoff = Backoff::new(RetryPolicy::forever());
    while config.matches_per_bot.is_none_or(|limit| played < limit) {
        let queued = tokio::select! {
            queued = queue(&mut player, &config.mode) => queued,
            () = &mut stop => return Ok(()),
        };
        let (ticket, mut watch) = match queued {
            Ok(queued) => queued,
            Err(status) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%username, code = ?status.code(), message = status.message(), "queueing failed");
                tokio::time::sleep(backoff.next_delay(retry_hint(&status))).await;
                continue;
            }
        };
        let outcome = tokio::select! {
            outcome = watch.outcome() => outcome,
            () = &mut stop => {
                if let Err(status) = player.cancel(&ticket).await {
                    tracing::debug!(%username, message = status.message(), "cancelling the ticket on stop");
                }
                return Ok(());
            }
        };
        let assignment = match outcome {
            Ok(QueueOutcome::Matched(assignment)) => assignment,
            Ok(QueueOutcome::Ended { state, reason }) => {
                tracing::info!(%username, ?state, %reason, "ticket ended without a match; queueing again");
                continue;
            }
            Err(status) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%username, code = ?status.code(), message = status.message(), "queueing failed");
                tokio::time::sleep(backoff.next_delay(retry_hint(&status))).await;
                continue;
            }
        };
        backoff.reset();
        let Some(seat) = seat_of(&assignment, player.player_id()) else {
            bail!("the matchmaker's assignment for match {} has no seat for {username}", assignment.match_id);
        };
        seed += 1;
        let style = BotStyle { difficulty: config.difficulty, seed };
        let play = play_assigned(
            &assignment.shard_address,
            &assignment.certificate_sha256,
            seat.connect_token.clone(),
            &decider,
            style,
            &stats,
        );
        let result = tokio::select! {
            result = play => result,
            reason = watch.aborted() => {
                stats.aborted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%username, match_id = assignment.match_id, %reason, "match aborted; queueing again");
                continue;
            }
            () = &mut stop => return Ok(()),
        };
        match result {
            Ok(result) => {
                played += 1;
                stats.matches.fetch_add(1, Ordering::Relaxed);
                stats.wins.fetch_add(u64::from(result.won()), Ordering::Relaxed);
            }
            Err(err) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%username, error = %format!("{err:#}"), "match failed");
                tokio::time::sleep(backoff.next_delay(None)).await;
            }
        }
    }
    Ok(())
}

/// Enqueues and starts watching the ticket.
async fn queue(player: &mut PlayerClient, mode: &str) -> Result<(String, TicketWatch), tonic::Status> {
    let ticket = player.enqueue(mode).await?;
    let watch = player.watch(&ticket).await?;
    Ok((ticket, watch))
}

/// The matchmaker's bot-fill hook: hands out bot player ids and plays every bot
/// seat it is given, on the tokio runtime it was created in.
#[derive(Debug)]
pub struct BotFiller {
    runtime: tokio::runtime::Handle,
    decider: DeciderHandle,
    difficulty: Difficulty,
    /// The player ids bots play as, handed out in turn.
    players: Vec<u64>,
    next: AtomicU64,
    /// Bot seats in play, by match.
    playing: Arc<Mutex<HashMap<u64, u32>>>,
    /// Signalled each time a bot seat is done (played or failed).
    seat_done: Arc<tokio::sync::Notify>,
    stats: Arc<QueueStats>,
}

impl BotFiller {
    /// A filler whose bots decide through `decider` at `difficulty`, using player ids
    /// `first_player_id..first_player_id + pool`. Call from inside a tokio runtime.
    pub fn new(
        decider: DeciderHandle,
        difficulty: Difficulty,
        first_player_id: u64,
        pool: u64,
    ) -> anyhow::Result<Self> {
        let runtime =
            tokio::runtime::Handle::try_current().context("a BotFiller must be created inside a tokio runtime")?;
        Ok(Self {
            runtime,
            decider,
            difficulty,
            players: (first_player_id..first_player_id + pool.max(1)).collect(),
            next: AtomicU64::new(0),
            playing: Arc::new(Mutex::new(HashMap::new())),
            seat_done: Arc::new(tokio::sync::Notify::new()),
            stats: Arc::new(QueueStats::default()),
        })
    }

    /// A filler whose bots play as the given accounts (registered at the lobby, so
    /// their matches rate everyone in them). Call from inside a tokio runtime.
    pub fn with_players(
        decider: DeciderHandle,
        difficulty: Difficulty,
        players: Vec<PlayerId>,
    ) -> anyhow::Result<Self> {
        if players.is_empty() {
            bail!("a BotFiller needs at least one bot player id");
        }
        let mut filler = Self::new(decider, difficulty, 0, 1)?;
        filler.players = players.into_iter().map(|player| player.0).collect();
        Ok(filler)
    }

    /// Counters of the seats played.
    pub fn stats(&self) -> Arc<QueueStats> {
        self.stats.clone()
    }

    /// Bot seats being played now.
    pub fn seats_in_play(&self) -> u32 {
        self.playing.lock().map_or(0, |playing| playing.values().sum())
    }

    /// Waits until no bot seat is in play (each finished seat wakes it).
    pub async fn wait_until_idle(&self) {
        loop {
            // Registered before looking, so a seat ending in between is not missed.
            let done = self.seat_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.seats_in_play() == 0 {
                return;
            }
            done.await;
        }
    }
}

impl BotFill for BotFiller {
    fn bot_players(&self, _mode: &str, n: usize, _rating: f64) -> Option<Vec<PlayerId>> {
        let ids = (0..n)
            .map(|_| {
                let turn = self.next.fetch_add(1, Ordering::Relaxed) as usize;
                PlayerId(self.players[turn % self.players.len()])
            })
            .collect();
        Some(ids)
    }

    fn seat_assigned(&self, seat: BotSeat) {
        let match_id = seat.match_id.0;
        if let Ok(mut playing) = self.playing.lock() {
            *playing.entry(match_id).or_default() += 1;
        }
        let decider = self.decider.clone();
        let stats = self.stats.clone();
        let style = BotStyle { difficulty: self.difficulty, seed: match_id ^ u64::from(seat.seat) };
        let playing = self.playing.clone();
        let seat_done = self.seat_done.clone();
        self.runtime.spawn(async move {
            let result = play_assigned(
                &seat.shard_address,
                &seat.certificate_sha256,
                seat.connect_token,
                &decider,
                style,
                &stats,
            )
            .await;
            match result {
                Ok(result) => {
                    stats.matches.fetch_add(1, Ordering::Relaxed);
                    stats.wins.fetch_add(u64::from(result.won()), Ordering::Relaxed);
                }
                Err(err) => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(match_id, seat = seat.seat, error = %format!("{err:#}"), "bot seat failed");
                }
            }
            if let Ok(mut playing) = playing.lock()
                && let Some(count) = playing.get_mut(&match_id)
            {
                *count -= 1;
                if *count == 0 {
                    playing.remove(&match_id);
                }
            }
            seat_done.notify_waiters();
        });
    }
}
