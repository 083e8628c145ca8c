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
use rally_matchmaker::player::{Backoff, Endpoints, PlayerClient, RetryPolicy, lazy_channel, retry_hint};
use rally_tournaments::proto::tournament::tournaments_client::TournamentsClient;
use rally_tournaments::proto::tournament::{
    CheckInRequest, EntrantState, GameState, GetRequest, MatchReady, RegisterRequest, StandingsRequest, Tournament,
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
    /// The lobby's gRPC URL (`http://host:port`): Auth. Several replicas: comma-separated.
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
    let lobby = Endpoints::parse(&config.lobby_url)?.resolve().await?;
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
    /// Games done when the bot last looked whether it is out.
    done_seen: usize,
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
            done_seen: 0,
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
        }
        // Out once the engine says so: looked up after each new result, while the bot has no game open.
        let done = tournament.games.iter().filter(|game| game.state() == GameState::Done).count();
        if tournament.status() == TournamentStatus::Running && done != self.done_seen {
            self.done_seen = done;
            let open = tournament
                .games
                .iter()
                .any(|game| (game.home_id == me || game.away_id == me) && game.state() != GameState::Done);
            if !open
                && update.ready.is_empty()
                && let Some((rank, true)) = self.own_standing().await
            {
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

/// What `rally up`'s bot cup is: its entrants, its format and how long registration stays open.
#[derive(Clone, Debug)]
pub struct CupConfig {
    /// The lobby's gRPC URL; several replicas: comma-separated.
    pub lobby_url: String,
    /// The tournament service's gRPC URL.
    pub tournaments_url: String,
    /// Entrants are `<prefix>-1..=<entrants>`, the organiser `<prefix>-organiser`.
    pub username_prefix: String,
    /// The accounts' password.
    pub password: String,
    /// Bots entering each cup (a power of two makes a bracket without byes).
    pub entrants: u32,
    /// How long registration (and check-in) stays open.
    pub registration: Duration,
    /// How the entrants play.
    pub difficulty: Difficulty,
    /// Cups are named `<name> #<n>`.
    pub name: String,
}

/// What the cups have done, for a status line.
#[derive(Debug, Default)]
pub struct CupBoard {
    state: std::sync::Mutex<CupState>,
}

#[derive(Debug, Default)]
struct CupState {
    /// The cup under way, as last seen.
    current: Option<Tournament>,
    /// Cups finished (cancelled ones not counted).
    finished: u64,
    /// The last finished cup's id and champion's name.
    last: Option<(u64, String)>,
}

impl CupBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, CupState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Cups finished so far.
    pub fn finished(&self) -> u64 {
        self.lock().finished
    }

    /// The last finished cup: its tournament id and champion.
    pub fn last_champion(&self) -> Option<(u64, String)> {
        self.lock().last.clone()
    }

    /// One line: the current cup's phase (registration, round and games done) and the last champion.
    pub fn line(&self) -> String {
        let state = self.lock();
        let current = match &state.current {
            None => "starting".to_owned(),
            Some(cup) => {
                let done = cup.games.iter().filter(|game| game.state() == GameState::Done).count();
                match cup.status() {
                    TournamentStatus::Running => {
                        let round = cup
                            .games
                            .iter()
                            .filter(|game| game.state() != GameState::Done)
                            .filter_map(|game| game.key.as_ref().map(|key| key.round + 1))
                            .min()
                            .unwrap_or(0);
                        format!("#{} round {round}, {done} games done", cup.tournament_id)
                    }
                    TournamentStatus::Finished => format!("#{} finished, {done} games", cup.tournament_id),
                    other => format!(
                        "#{} {}: {}/{} in",
                        cup.tournament_id,
                        other.as_str_name().trim_start_matches("TOURNAMENT_STATUS_").to_lowercase().replace('_', "-"),
                        cup.n_checked_in,
                        cup.max_entrants
                    ),
                }
            }
        };
        match &state.last {
            Some((id, champion)) => {
                format!("cup {current} | cups finished {} (#{id}: champion {champion})", state.finished)
            }
            None => format!("cup {current} | cups finished {}", state.finished),
        }
    }
}

/// `rally up`'s bot cup: logs the organiser and the entrants in once, then
/// creates a single-elimination cup, has every bot enter and play it out,
/// and starts the next one when it ends; until `stop` completes.
pub async fn run_bot_cups(
    config: &CupConfig,
    decider: DeciderHandle,
    stats: Arc<QueueStats>,
    board: Arc<CupBoard>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let lobby = Endpoints::parse(&config.lobby_url)?.resolve().await?;
    let channel = lazy_channel(&config.tournaments_url)?;
    let login = |username: String| {
        let (lobby, channel, password) = (lobby.clone(), channel.clone(), config.password.clone());
        async move {
            PlayerClient::register_or_login_retrying(lobby, channel, &username, &password, RetryPolicy::forever())
                .await
                .map_err(|status| anyhow::anyhow!("logging in as {username}: {}", status.message()))
        }
    };
    let logins = async {
        let organiser = login(format!("{}-organiser", config.username_prefix)).await?;
        let mut entrants = Vec::new();
        for index in 1..=config.entrants {
            entrants.push(login(format!("{}-{index}", config.username_prefix)).await?);
        }
        anyhow::Ok((organiser, entrants))
    };
    let (organiser, entrants) = tokio::select! {
        logged_in = logins => logged_in?,
        () = &mut stop => return Ok(()),
    };
    let mut organiser = EntrantBot::new(organiser, channel.clone(), 0);
    let mut number = 0u64;
    let mut backoff = Backoff::new(RetryPolicy::forever());
    loop {
        number += 1;
        let created = tokio::select! {
            created = create_cup(&mut organiser, config, number) => created,
            () = &mut stop => return Ok(()),
        };
        let cup = match created {
            Ok(cup) => cup,
            Err(status) => {
                tracing::warn!(message = status.message(), "could not create the bot cup; trying again");
                tokio::time::sleep(backoff.next_delay(retry_hint(&status))).await;
                continue;
            }
        };
        backoff.reset();
        let id = cup.tournament_id;
        tracing::info!(tournament = id, name = %cup.name, "bot cup created");
        board.lock().current = Some(cup);
        let mut bots = tokio::task::JoinSet::new();
        for (seat, player) in entrants.iter().enumerate() {
            let mut bot = EntrantBot::new(player.clone(), channel.clone(), id);
            let (decider, stats) = (decider.clone(), stats.clone());
            let style = BotStyle { difficulty: config.difficulty, seed: (id << 8) ^ seat as u64 };
            bots.spawn(async move { bot.play_out(&decider, style, &stats).await });
        }
        organiser.tournament_id = id;
        let followed = tokio::select! {
            followed = follow_cup(&mut organiser, &board) => followed,
            () = &mut stop => {
                bots.abort_all();
                return Ok(());
            }
        };
        // The bots end with the cup; one still going (a lost stream) is not waited for.
        let settle = async { while bots.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), settle).await.is_err() {
            bots.abort_all();
        }
        match followed {
            Ok(cup) if cup.status() == TournamentStatus::Finished => {
                let champion = cup.champion_id.map_or_else(
                    || "none".to_owned(),
                    |champion| {
                        cup.entrants
                            .iter()
                            .find(|entrant| entrant.player_id == champion)
                            .map_or_else(|| format!("player {champion}"), |entrant| entrant.display_name.clone())
                    },
                );
                tracing::info!(tournament = id, %champion, "bot cup finished");
                let mut state = board.lock();
                state.finished += 1;
                state.last = Some((id, champion));
            }
            Ok(cup) => tracing::warn!(tournament = id, status = ?cup.status(), "bot cup ended without a champion"),
            Err(err) => tracing::warn!(tournament = id, error = %format!("{err:#}"), "lost track of the bot cup"),
        }
    }
}

/// Creates cup number `number`: single elimination, best of one, registration open now.
async fn create_cup(organiser: &mut EntrantBot, config: &CupConfig, number: u64) -> Result<Tournament, tonic::Status> {
    use rally_tournaments::proto::tournament::{CreateRequest, Rules, SingleElimination, Stage, stage};
    let request = CreateRequest {
        name: format!("{} #{number}", config.name),
        rules: Some(Rules {
            stages: vec![Stage {
                format: Some(stage::Format::SingleElimination(SingleElimination { third_place: false })),
                best_of: 1,
                advance: None,
            }],
            seeding: rally_tournaments::proto::tournament::Seeding::Rating as i32,
        }),
        mode: String::new(),
        max_entrants: config.entrants,
        min_rating: None,
        max_rating: None,
        registration_opens_at_ms: 0,
        registration_closes_at_ms: unix_ms_i64() + i64::try_from(config.registration.as_millis()).unwrap_or(20_000),
        check_in_opens_at_ms: 0,
        check_in_closes_at_ms: 0,
    };
    let response = organiser.call(|mut client, request| async move { client.create(request).await }, request).await?;
    response.tournament.ok_or_else(|| tonic::Status::internal("Create answered without a tournament"))
}

/// Watches the organiser's tournament until it is over, keeping `board` up to date.
async fn follow_cup(organiser: &mut EntrantBot, board: &CupBoard) -> anyhow::Result<Tournament> {
    let mut backoff = Backoff::new(RetryPolicy::forever());
    loop {
        let mut stream = match organiser.watch().await {
            Ok(stream) => stream,
            Err(status) if retryable(&status) => {
                tokio::time::sleep(backoff.next_delay(retry_hint(&status))).await;
                continue;
            }
            Err(status) => bail!("watching the cup: {}", status.message()),
        };
        while let Ok(Some(update)) = stream.message().await {
            backoff.reset();
            let Some(cup) = update.tournament else { continue };
            let over = matches!(cup.status(), TournamentStatus::Finished | TournamentStatus::Cancelled);
            board.lock().current = Some(cup.clone());
            if over {
                return Ok(cup);
            }
        }
        tokio::time::sleep(backoff.next_delay(None)).await;
    }
}
