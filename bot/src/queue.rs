//! Bots as players of the platform: log in at the lobby, queue at the matchmaker,
//! play the assigned seat through a shard, queue again (`rally bot play`), and the
//! matchmaker's bot-fill hook ([`BotFiller`]), which plays seats it assigns to bots.
//!
//! Both go through the same public services a person's client uses: the lobby's
//! Auth gRPC service, the matchmaker's gRPC service
//! ([`rally_matchmaker::player::PlayerClient`]) and the shard's QUIC protocol.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use rally_client::Transport;
use rally_client::tls::ServerTrust;
use rally_matchmaker::player::{PlayerClient, QueueOutcome, channel, seat_of};
use rally_matchmaker::{BotFill, BotSeat};
use rally_protocol::PlayerId;

use crate::difficulty::Difficulty;
use crate::driver::{BotMatch, BotStyle, SeatTicket, bot_endpoint, play_with_token};
use crate::runner::DeciderHandle;

/// Where the platform's services are, and how the bots play.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// The lobby's gRPC URL (`http://host:port`).
    pub lobby_url: String,
    /// The matchmaker's gRPC URL.
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
}

/// Resolves `host:port` (as the matchmaker's assignment gives it) to a socket address.
async fn resolve(address: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(address)
        .await
        .with_context(|| format!("resolving the shard address {address:?}"))?
        .next()
        .with_context(|| format!("the shard address {address:?} resolves to nothing"))
}

/// Plays one assigned seat (trusting the shard by the certificate hash it came with).
async fn play_assigned(
    shard_address: &str,
    certificate_sha256: &str,
    token: Vec<u8>,
    decider: &DeciderHandle,
    style: BotStyle,
) -> anyhow::Result<BotMatch> {
    let addr = resolve(shard_address).await?;
    let endpoint = bot_endpoint(&ServerTrust::Fingerprint(certificate_sha256.to_owned()))?;
    let ticket = SeatTicket { addr, server_name: "localhost".into(), token };
    let result = play_with_token(&Transport::Quic(endpoint.clone()), &ticket, decider, style).await;
    endpoint.close(0u32.into(), b"match over");
    result
}

/// One bot: registers or logs in as `<prefix>-<index>`, then queues and plays,
/// again and again. Failures are counted and retried after a pause; it returns when
/// it has played its matches, or with an error if it cannot log in.
pub async fn run_queue_bot(
    config: &QueueConfig,
    index: u32,
    decider: DeciderHandle,
    stats: Arc<QueueStats>,
) -> anyhow::Result<()> {
    let lobby = channel(&config.lobby_url).await?;
    let matchmaker = channel(&config.matchmaker_url).await?;
    let username = format!("{}-{index}", config.username_prefix);
    let mut player = PlayerClient::register_or_login(lobby, matchmaker, &username, &config.password)
        .await
        .map_err(|status| anyhow::anyhow!("logging in as {username}: {}", status.message()))?;
    let mut played = 0u32;
    let mut seed = u64::from(index) << 32;
    while config.matches_per_bot.is_none_or(|limit| played < limit) {
        let outcome = player.queue(&config.mode).await;
        let assignment = match outcome {
            Ok(QueueOutcome::Matched(assignment)) => assignment,
            Ok(QueueOutcome::Ended { state, reason }) => {
                tracing::info!(%username, ?state, %reason, "ticket ended without a match; queueing again");
                continue;
            }
            Err(status) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%username, code = ?status.code(), message = status.message(), "queueing failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(seat) = seat_of(&assignment, player.player_id()) else {
            bail!("the matchmaker's assignment for match {} has no seat for {username}", assignment.match_id);
        };
        seed += 1;
        let style = BotStyle { difficulty: config.difficulty, seed };
        match play_assigned(
            &assignment.shard_address,
            &assignment.certificate_sha256,
            seat.connect_token.clone(),
            &decider,
            style,
        )
        .await
        {
            Ok(result) => {
                played += 1;
                stats.matches.fetch_add(1, Ordering::Relaxed);
                stats.wins.fetch_add(u64::from(result.won()), Ordering::Relaxed);
            }
            Err(err) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%username, error = %format!("{err:#}"), "match failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Ok(())
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
            let result =
                play_assigned(&seat.shard_address, &seat.certificate_sha256, seat.connect_token, &decider, style).await;
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
