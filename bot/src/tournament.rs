//! Bots as tournament entrants (`rally bot play --tournament ID`, `rally up`'s bot
//! cup): log in at the lobby, Register, CheckIn once the window opens, Watch the
//! tournament, and play every match the service says is ready, with the same
//! driver as a queueing bot, until the tournament is over or the bot is out.
//!
//! Everything goes through the public services a person's client uses: the
//! lobby's Auth, the `rally.tournament.v1.Tournaments` gRPC service and the
//! shard's QUIC protocol. A bot that loses its Watch stream (the service
//! restarting) watches again with backoff; the service re-announces a ready
//! match with every update until it ends, so nothing is missed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use rally_client::Transport;
use rally_client::tls::ServerTrust;
use rally_matchmaker::player::{Backoff, PlayerClient, RetryPolicy, lazy_channel, retry_hint};
use rally_tournaments::proto::tournament::tournaments_client::TournamentsClient;
use rally_tournaments::proto::tournament::{
    CheckInRequest, EntrantState, GetRequest, MatchReady, RegisterRequest, StandingsRequest, Tournament,
    TournamentStatus, TournamentUpdate, WatchRequest,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::difficulty::Difficulty;
use crate::driver::{BotMatch, BotStyle, SeatTicket, bot_endpoint};
use crate::queue::{QueueStats, play_resuming};
use crate::runner::DeciderHandle;

/// Where the services are, which tournament, and how the bot plays.
#[derive(Clone, Debug)]
pub struct TournamentBotConfig {
    /// The lobby's gRPC URL (`http://host:port`): Auth.
    pub lobby_url: String,
    /// The tournament service's gRPC URL.
    pub tournaments_url: String,
    /// The tournament to enter.
    pub tournament_id: u64,
    /// Usernames are `<prefix>-<index>`; accounts are registered on first use.
    pub username_prefix: String,
    /// The bots' password.
    pub password: String,
    /// How each bot plays.
    pub difficulty: Difficulty,
}

/// How a bot's tournament ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TournamentBotEnd {
    /// The tournament finished; `rank` is the bot's final place, `champion` the winner.
    Finished {
        /// The bot's final rank, if it was in the bracket.
        rank: Option<u32>,
        /// The champion's player id, if the format names one.
        champion: Option<u64>,
    },
    /// The bot is out (eliminated, or did not advance to the next stage) while the
    /// tournament goes on.
    Eliminated {
        /// Its rank when it went out.
        rank: u32,
    },
    /// The tournament was cancelled (too few checked in).
    Cancelled,
    /// The bot is not in the bracket: it was not checked in in time, withdrew or
    /// was disqualified.
    NotInBracket(String),
}

/// What one bot did in one tournament.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TournamentBotReport {
    /// The bot's player id.
    pub player_id: u64,
    /// Its username.
    pub username: String,
    /// Matches it played to the end.
    pub matches: u32,
    /// Of those, won.
    pub wins: u32,
    /// How it ended.
    pub end: TournamentBotEnd,
}

/// Logs in as `<prefix>-<index>`, enters the tournament and plays it out; see the module docs.
/// Counts matches, wins, failures and resumed seats in `stats`.
pub async fn run_tournament_bot(
    config: &TournamentBotConfig,
    index: u32,
    decider: DeciderHandle,
    stats: Arc<QueueStats>,
) -> anyhow::Result<TournamentBotReport> {
    let username = format!("{}-{index}", config.username_prefix);
    let lobby = lazy_channel(&config.lobby_url)?;
    let channel = lazy_channel(&config.tournaments_url)?;
    // The matchmaker channel of a PlayerClient is not used here: the tournament service seats players.
    let player = PlayerClient::register_or_login_retrying(
        lobby,
        channel.clone(),
        &username,
        &config.password,
        RetryPolicy::forever(),
    )
    .await
    .map_err(|status| anyhow::anyhow!("logging in as {username}: {}", status.message()))?;
    let mut bot = EntrantBot::new(player, channel, config.tournament_id);
    let style = BotStyle { difficulty: config.difficulty, seed: (u64::from(index) << 32) ^ config.tournament_id };
    bot.play_out(&decider, style, &stats).await
}

/// One logged-in entrant of one tournament.
#[derive(Debug)]
pub struct EntrantBot {
    player: PlayerClient,
    client: TournamentsClient<Channel>,
    tournament_id: u64,
    /// Match ids already played (or given up on), so a re-announced match is not played twice.
    played: BTreeSet<u64>,
    matches: u32,
    wins: u32,
}

impl EntrantBot {
    /// An entrant `player` of tournament `tournament_id`, served on `channel`.
    pub fn new(player: PlayerClient, channel: Channel, tournament_id: u64) -> Self {
        Self {
            player,
            client: TournamentsClient::new(channel),
            tournament_id,
            played: BTreeSet::new(),
            matches: 0,
            wins: 0,
        }
    }

    /// Registers (waiting for registration to open), checks in when the window
    /// opens, and plays every ready match until the end.
    pub async fn play_out(
        &mut self,
        decider: &DeciderHandle,
        mut style: BotStyle,
        stats: &QueueStats,
    ) -> anyhow::Result<TournamentBotReport> {
        self.register().await?;
        let mut backoff = Backoff::new(RetryPolicy::forever());
        loop {
            let mut stream = match self.watch().await {
                Ok(stream) => stream,
                Err(status) if retryable(&status) => {
                    tracing::debug!(message = status.message(), "watching the tournament failed; retrying");
                    tokio::time::sleep(backoff.next_delay(retry_hint(&status))).await;
                    continue;
                }
                Err(status) => bail!("watching tournament {}: {}", self.tournament_id, status.message()),
            };
            loop {
                let update = match stream.message().await {
                    Ok(Some(update)) => update,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(message = status.message(), "the tournament watch broke; watching again");
                        break;
                    }
                };
                backoff.reset();
                if let Some(end) = self.handle_update(&update, decider, &mut style, stats).await? {
                    return Ok(self.report(end));
                }
            }
            tokio::time::sleep(backoff.next_delay(None)).await;
        }
    }

    fn report(&self, end: TournamentBotEnd) -> TournamentBotReport {
        TournamentBotReport {
            player_id: self.player.player_id(),
            username: self.player.username().to_owned(),
            matches: self.matches,
            wins: self.wins,
            end,
        }
    }

    /// Reacts to one update: checks in, plays a ready match, or says it is over.
    async fn handle_update(
        &mut self,
        update: &TournamentUpdate,
        decider: &DeciderHandle,
        style: &mut BotStyle,
        stats: &QueueStats,
    ) -> anyhow::Result<Option<TournamentBotEnd>> {
        let Some(tournament) = &update.tournament else { return Ok(None) };
        let me = self.player.player_id();
        let state = tournament.entrants.iter().find(|entrant| entrant.player_id == me).map(|entrant| entrant.state());
        match tournament.status() {
            TournamentStatus::Finished => {
                let rank = self.own_standing().await.map(|(rank, _)| rank);
                return Ok(Some(TournamentBotEnd::Finished { rank, champion: tournament.champion_id }));
            }
            TournamentStatus::Cancelled => return Ok(Some(TournamentBotEnd::Cancelled)),
            TournamentStatus::CheckIn if state == Some(EntrantState::Registered) => self.check_in().await?,
            _ => {}
        }
        match state {
            Some(EntrantState::NotCheckedIn) => {
                return Ok(Some(TournamentBotEnd::NotInBracket("not checked in before seeding".into())));
            }
            Some(EntrantState::Withdrawn) => return Ok(Some(TournamentBotEnd::NotInBracket("withdrawn".into()))),
            Some(EntrantState::Disqualified) => {
                return Ok(Some(TournamentBotEnd::NotInBracket("disqualified".into())));
            }
            _ => {}
        }
        let mut played_one = false;
        for ready in &update.ready {
            if self.played.contains(&ready.match_id) {
                continue;
            }
            self.played.insert(ready.match_id);
            style.seed = style.seed.wrapping_add(1);
            match play_ready(ready, decider, *style, stats).await {
                Ok(result) => {
                    self.matches += 1;
                    self.wins += u32::from(result.won());
                    stats.matches.fetch_add(1, Ordering::Relaxed);
                    stats.wins.fetch_add(u64::from(result.won()), Ordering::Relaxed);
                    tracing::info!(
                        player = me,
                        tournament = self.tournament_id,
                        game = ready.key.as_ref().map_or("", |key| key.label.as_str()),
                        match_id = ready.match_id,
                        won = result.won(),
                        "tournament match played"
                    );
                }
                Err(err) => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(player = me, match_id = ready.match_id, error = %format!("{err:#}"), "tournament match failed");
                }
            }
            played_one = true;
        }
        if played_one
            && tournament.status() == TournamentStatus::Running
            && let Some((rank, true)) = self.own_standing().await
        {
            // Out, unless the service still holds a game for it (a bronze final).
            let still_playing = tournament.games.iter().any(|game| {
                (game.home_id == me || game.away_id == me)
                    && game.state() != rally_tournaments::proto::tournament::GameState::Done
            });
            if !still_playing {
                return Ok(Some(TournamentBotEnd::Eliminated { rank }));
            }
        }
        Ok(None)
    }

    /// The bot's (rank, eliminated) in the current standings, if it is ranked.
    async fn own_standing(&mut self) -> Option<(u32, bool)> {
        let request = StandingsRequest { tournament_id: self.tournament_id };
        let standings =
            self.call(|mut client, request| async move { client.standings(request).await }, request).await.ok()?;
        let me = self.player.player_id();
        standings
            .standings
            .iter()
            .find(|standing| standing.player_id == me)
            .map(|standing| (standing.rank, standing.eliminated))
    }

    /// Registers, waiting for registration to open when it has not yet; being
    /// registered already is fine.
    async fn register(&mut self) -> anyhow::Result<()> {
        let id = self.tournament_id;
        let mut backoff = Backoff::new(RetryPolicy::forever());
        loop {
            let tournament = self.get().await?;
            let now = unix_ms_i64();
            if tournament.status() == TournamentStatus::Created && tournament.registration_opens_at_ms > now {
                let wait = Duration::from_millis((tournament.registration_opens_at_ms - now) as u64);
                tracing::info!(tournament = id, ?wait, "registration not open yet; waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
            let request = RegisterRequest { tournament_id: id };
            match self.call(|mut client, request| async move { client.register(request).await }, request).await {
                Ok(_) => return Ok(()),
                Err(status) if retryable(&status) => tokio::time::sleep(backoff.next_delay(retry_hint(&status))).await,
                Err(status) => bail!("registering in tournament {id}: {}", status.message()),
            }
        }
    }

    async fn check_in(&mut self) -> anyhow::Result<()> {
        let id = self.tournament_id;
        let request = CheckInRequest { tournament_id: id };
        match self.call(|mut client, request| async move { client.check_in(request).await }, request).await {
            Ok(_) => {
                tracing::debug!(tournament = id, player = self.player.player_id(), "checked in");
                Ok(())
            }
            // The window may have just closed, or the next update says more: not fatal here.
            Err(status) if status.code() == Code::FailedPrecondition || retryable(&status) => {
                tracing::warn!(tournament = id, message = status.message(), "check-in refused");
                Ok(())
            }
            Err(status) => bail!("checking in to tournament {id}: {}", status.message()),
        }
    }

    async fn get(&mut self) -> anyhow::Result<Tournament> {
        let id = self.tournament_id;
        let mut backoff = Backoff::new(RetryPolicy::forever());
        loop {
            let request = GetRequest { tournament_id: id };
            match self.call(|mut client, request| async move { client.get(request).await }, request).await {
                Ok(response) => {
                    return response.tournament.with_context(|| format!("the service sent no tournament {id}"));
                }
                Err(status) if retryable(&status) => tokio::time::sleep(backoff.next_delay(retry_hint(&status))).await,
                Err(status) => bail!("tournament {id}: {}", status.message()),
            }
        }
    }

    async fn watch(&mut self) -> Result<tonic::Streaming<TournamentUpdate>, tonic::Status> {
        let request = WatchRequest { tournament_id: self.tournament_id };
        self.call(|mut client, request| async move { client.watch(request).await }, request).await
    }

    /// Calls the service with a fresh access token.
    async fn call<Req, Resp, F, Fut>(&mut self, call: F, message: Req) -> Result<Resp, tonic::Status>
    where
        F: FnOnce(TournamentsClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.player.ensure_fresh().await?;
        let request = self.player.request(message);
        call(self.client.clone(), request).await.map(tonic::Response::into_inner)
    }
}

/// Refusals worth trying again: the service (or the lobby behind it) down or busy.
fn retryable(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Aborted)
}

fn unix_ms_i64() -> i64 {
    i64::try_from(rally_transport::unix_ms()).unwrap_or(i64::MAX)
}

/// Plays a ready tournament match: connects to its shard (pinned by the
/// certificate hash it came with) and plays to the end, resuming a dropped seat.
pub async fn play_ready(
    ready: &MatchReady,
    decider: &DeciderHandle,
    style: BotStyle,
    stats: &QueueStats,
) -> anyhow::Result<BotMatch> {
    let addr = tokio::net::lookup_host(&ready.shard_address)
        .await
        .with_context(|| format!("resolving the shard address {:?}", ready.shard_address))?
        .next()
        .with_context(|| format!("the shard address {:?} resolves to nothing", ready.shard_address))?;
    let endpoint = bot_endpoint(&ServerTrust::Fingerprint(ready.certificate_sha256.clone()))?;
    let transport = Transport::Quic(endpoint.clone());
    let ticket = SeatTicket { addr, server_name: "localhost".into(), token: ready.connect_token.clone() };
    let result = play_resuming(&transport, &ticket, decider, style, stats).await;
    endpoint.close(0u32.into(), b"match over");
    result
}
