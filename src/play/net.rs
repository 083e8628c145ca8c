//! The network side of `rally play`: lobby (Auth, Profile, Chat), matchmaker
//! and shard. It takes [`Command`]s from the app and answers with [`NetEvent`]s;
//! every failure becomes an [`NetEvent::Error`] with a message a person can act on.
//!
//! A match survives the network and the client: a dropped connection resumes
//! the seat with the welcome's credential within the shard's grace window; the
//! credential is kept in a [`SeatFile`] while the match runs, so a restarted
//! `rally play` resumes right after logging in; and the ticket stays watched,
//! so when the matchmaker reports the match ABORTED (its shard was lost) the
//! client drops the connection and queues again at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use rally_client::ConnectConfig;
use rally_client::tls::{ServerTrust, client_config};
use rally_client::{ClientEvent, Connection, Transport, TransportKind};
use rally_lobby::proto::auth::{RegisterRequest, auth_client::AuthClient};
use rally_lobby::proto::chat::{JoinRequest, SubscribeRequest, chat_client::ChatClient, join_request};
use rally_lobby::proto::profile::{GetProfileRequest, LeaderboardRequest, profile_client::ProfileClient};
use rally_matchmaker::player::{self, PlayerClient, QueueOutcome};
use rally_protocol::control::ClientHello;
use tokio::sync::mpsc;

use super::app::{Command, NetEvent};
use super::login::{LoginArgs, external_login};
use super::seat_file::{HeldSeat, SeatFile};

/// A logged-in player.
type Session = PlayerClient;

/// A login under way beside the commands (an identity provider's, a guest's).
type PendingLogin = std::pin::Pin<Box<dyn Future<Output = Result<Session, String>> + Send>>;

/// The lobby chat channel everybody joins, by name.
pub const LOBBY_CHANNEL: &str = "lobby";
/// Its channel id (public channels are `public:<name>`).
pub const LOBBY_CHANNEL_ID: &str = "public:lobby";

/// Where `rally play` connects; the defaults are `rally up`'s.
#[derive(Clone, Debug, Args)]
pub struct PlayArgs {
    /// The lobby's gRPC address (Auth, Profile, Chat); several replicas
    /// comma-separated (`http://a:7100,http://b:7100`), failed over between.
    #[arg(long, default_value = "http://127.0.0.1:7100", env = "RALLY_LOBBY")]
    pub lobby: String,
    /// The matchmaker's gRPC address; several replicas comma-separated.
    #[arg(long, default_value = "http://127.0.0.1:7101", env = "RALLY_MATCHMAKER")]
    pub matchmaker: String,
    /// The game mode to queue for against humans (bots fill in after a wait).
    #[arg(long, default_value = "pong")]
    pub mode: String,
    /// The game mode to queue for against a bot at once.
    #[arg(long, default_value = "pong-bot")]
    pub bot_mode: String,
    /// How to reach the shard: quic, or udp (raw UDP: unencrypted, for LAN play; the shard must serve
    /// it, as `rally up` does on 127.0.0.1:7103).
    #[arg(long, default_value = "quic")]
    pub transport: TransportKind,
    /// The shard's raw UDP address, for --transport udp (the matchmaker names only its QUIC address).
    #[arg(long, default_value = "127.0.0.1:7103", env = "RALLY_SHARD_UDP")]
    pub shard_udp: SocketAddr,
    /// Where the seat of a running match is kept (a 0600 file, removed when the
    /// match ends), so a restarted client resumes it [default:
    /// $XDG_STATE_HOME/rally, else ~/.local/state/rally].
    #[arg(long, env = "RALLY_PLAY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `rally play`'s tournament flags (apart from [`PlayArgs`], which tests build field by field).
#[derive(Clone, Debug, Default, Args)]
pub struct TournamentPlayArgs {
    /// Play in this tournament: logging in registers you (and checks you in when its window opens);
    /// then `b` or `h` waits for your next match in it and plays it. Without it, logging in lists
    /// the tournaments open to entrants in the chat pane.
    #[arg(long, value_name = "ID")]
    pub tournament: Option<u64>,
    /// The tournament service's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:7104", env = "RALLY_TOURNAMENTS")]
    pub tournaments: String,
}

fn tournaments_client(
    url: &str,
) -> anyhow::Result<
    rally_tournaments::proto::tournament::tournaments_client::TournamentsClient<tonic::transport::Channel>,
> {
    Ok(rally_tournaments::proto::tournament::tournaments_client::TournamentsClient::new(player::lazy_channel(url)?)
        .max_decoding_message_size(16 * 1024 * 1024))
}

/// How far a tournament is, in a few words.
fn progress(tournament: &rally_tournaments::proto::tournament::Tournament) -> String {
    use rally_tournaments::proto::tournament::GameState;
    let done = tournament.games.iter().filter(|game| game.state() == GameState::Done).count();
    let status = tournament.status().as_str_name().trim_start_matches("TOURNAMENT_STATUS_").to_lowercase();
    format!(
        "tournament {} {:?}: {status}, {done} of {} games done",
        tournament.tournament_id,
        tournament.name,
        tournament.games.len()
    )
}

/// After logging in: registers in `--tournament` and shows its bracket, or lists
/// the tournaments open to entrants, as lines in the chat pane.
async fn announce_tournaments(session: &Session, args: &TournamentPlayArgs, events: &mpsc::UnboundedSender<NetEvent>) {
    use rally_tournaments::proto::tournament::{GetRequest, ListRequest, RegisterRequest, TournamentStatus};
    let line = |text: String| send(events, NetEvent::Chat { from: "tournaments".to_owned(), text });
    let Ok(mut client) = tournaments_client(&args.tournaments) else { return };
    let Some(id) = args.tournament else {
        let statuses = vec![TournamentStatus::Registration as i32, TournamentStatus::CheckIn as i32];
        let request = session.request(ListRequest { page_size: 10, page_token: String::new(), statuses });
        // No tournament service (an older deployment) is not worth an error on screen.
        if let Ok(list) = client.list(request).await {
            for tournament in list.into_inner().tournaments {
                line(format!(
                    "open: #{} {} ({}/{}): rally play --tournament {}",
                    tournament.tournament_id,
                    tournament.name,
                    tournament.n_registered,
                    tournament.max_entrants,
                    tournament.tournament_id
                ));
            }
        }
        return;
    };
    match client.register(session.request(RegisterRequest { tournament_id: id })).await {
        Ok(_) => line(format!("registered in tournament {id}: press b or h to play your next match in it")),
        Err(status) => send(events, NetEvent::Error(status_text("tournament", &status))),
    }
    if let Ok(response) = client.get(session.request(GetRequest { tournament_id: id })).await
        && let Some(tournament) = response.into_inner().tournament
    {
        line(progress(&tournament));
        for text in tournament.bracket_text.lines() {
            line(text.to_owned());
        }
    }
}

/// A gRPC status as a person reads it.
pub(super) fn status_text(what: &str, status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unavailable => format!("{what}: the server is unreachable ({})", status.message()),
        _ => format!("{what}: {}", status.message()),
    }
}

/// Runs until the app says [`Command::Quit`] or drops its sender.
pub async fn run(
    args: PlayArgs,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<NetEvent>,
) -> anyhow::Result<()> {
    run_with(args, TournamentPlayArgs::default(), commands, events).await
}

/// [`run`], playing in a tournament when `tournament` names one.
pub async fn run_with(
    args: PlayArgs,
    tournament: TournamentPlayArgs,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<NetEvent>,
) -> anyhow::Result<()> {
    run_with_login(args, tournament, LoginArgs::default(), commands, events).await
}

/// [`run_with`], logging in at once through an identity provider or as a
/// guest when `login` says so (the login form still works meanwhile).
pub async fn run_with_login(
    args: PlayArgs,
    tournament: TournamentPlayArgs,
    login_args: LoginArgs,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<NetEvent>,
) -> anyhow::Result<()> {
    let mut session: Option<Session> = None;
    // Boxed: it runs beside the commands, so Ctrl-C still quits while a person
    // is away at the provider.
    let mut external: Option<PendingLogin> =
        login_args.logs_in().then(|| Box::pin(external_login(args.clone(), login_args, events.clone())) as _);
    // Aborted with this task, so a stopped client leaves no match playing behind it.
    let mut game = GameTask(None);
    let mut ticket: Option<String> = None;
    let (input_tx, input_rx) = tokio::sync::watch::channel(rally_sim::pong::INPUT_STOP);
    let mut input_rx = Some(input_rx);
    let (leave_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let (ticket_tx, mut ticket_rx) = mpsc::unbounded_channel::<String>();
    let seats = SeatFile::new(args.state_dir.clone().or_else(SeatFile::default_dir));
    loop {
        let mut logged_in = None;
        let command = tokio::select! {
            command = commands.recv() => Some(command),
            Some(id) = ticket_rx.recv() => { ticket = Some(id); continue; }
            result = async {
                match &mut external {
                    Some(login) => login.await,
                    None => std::future::pending().await,
                }
            } => {
                external = None;
                logged_in = Some(result);
                None
            }
        };
        if let Some(command) = command {
            let Some(command) = command else { return Ok(()) };
            let register = matches!(command, Command::Register { .. });
            match command {
                Command::Quit => return Ok(()),
                Command::Register { username, password } | Command::Login { username, password }
                    if session.is_some() =>
                {
                    let _ = (username, password);
                }
                Command::Register { username, password } | Command::Login { username, password } => {
                    logged_in = Some(login(&args, &username, &password, register).await);
                }
                Command::Refresh => {
                    if let Some(session) = &session {
                        refresh(session, &events).await;
                    }
                }
                Command::Chat(text) => {
                    if let Some(session) = &mut session {
                        // With an idempotency key: a retry on another lobby replica posts it once.
                        if let Err(status) = session.send_chat(LOBBY_CHANNEL_ID, &text).await {
                            send(&events, NetEvent::Error(status_text("chat", &status)));
                        }
                    }
                }
                Command::Queue { against_bot } => {
                    let Some(session) = session.clone() else { continue };
                    let mode = if against_bot { args.bot_mode.clone() } else { args.mode.clone() };
                    let reach = (args.transport, args.shard_udp);
                    let events = events.clone();
                    let input = input_rx.take().unwrap_or_else(|| input_tx.subscribe());
                    let leave = leave_tx.subscribe();
                    let ticket_tx = ticket_tx.clone();
                    let seats = seats.clone();
                    let tournament = tournament.clone();
                    game.0 = Some(tokio::spawn(async move {
                        let mut play = Play { session, events: &events, input, leave, seats };
                        let played = match tournament.tournament {
                            Some(id) => play.tournament_match(id, &tournament.tournaments, reach).await,
                            None => play.queue_and_play(&mode, reach, ticket_tx).await,
                        };
                        if let Err(err) = played {
                            send(&events, NetEvent::Error(format!("{err:#}")));
                        }
                    }));
                }
                Command::CancelQueue => {
                    if let (Some(session), Some(id)) = (&mut session, ticket.take()) {
                        if let Err(status) = session.cancel(&id).await {
                            send(&events, NetEvent::Error(status_text("cancel", &status)));
                        }
                    } else if let Some(task) = game.0.take() {
                        task.abort();
                        send(&events, NetEvent::QueueCancelled("Left the queue.".to_owned()));
                    }
                }
                Command::Input(input) => {
                    let _ = input_tx.send(input);
                }
                Command::LeaveMatch => {
                    let _ = leave_tx.send(());
                }
            }
        }
        // A login that finished after another one (the form's, while a provider
        // login waited) is dropped: the first one's session stays.
        match logged_in {
            Some(_) if session.is_some() => {}
            Some(Ok(new)) => {
                let new = start_session(new, &events);
                // A seat held when the last client stopped: take it back first.
                if let Some(held) = seats.load(new.player_id()) {
                    let (events, seats, session) = (events.clone(), seats.clone(), new.clone());
                    let input = input_rx.take().unwrap_or_else(|| input_tx.subscribe());
                    let leave = leave_tx.subscribe();
                    game.0 = Some(tokio::spawn(async move {
                        let mut play = Play { session, events: &events, input, leave, seats };
                        if let Err(err) = play.resume_held(held).await {
                            send(&events, NetEvent::Error(format!("{err:#}")));
                        }
                    }));
                }
                if !tournament.tournaments.is_empty() {
                    let (session, events, tournament) = (new.clone(), events.clone(), tournament.clone());
                    tokio::spawn(async move { announce_tournaments(&session, &tournament, &events).await });
                }
                session = Some(new);
            }
            Some(Err(message)) => send(&events, NetEvent::Error(message)),
            None => {}
        }
    }
}

/// The running queue-and-play task, aborted when dropped.
struct GameTask(Option<tokio::task::JoinHandle<()>>);

impl Drop for GameTask {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

fn send(events: &mpsc::UnboundedSender<NetEvent>, event: NetEvent) {
    // The app outlives this task; a closed channel means it is quitting.
    let _ = events.send(event);
}

/// Registers (when asked) and logs in.
async fn login(args: &PlayArgs, username: &str, password: &str, register: bool) -> Result<Session, String> {
    let replicas = |urls: &str| player::Endpoints::parse(urls).and_then(|endpoints| endpoints.lazy());
    let lobby = replicas(&args.lobby).map_err(|err| format!("{err:#}"))?;
    let matchmaker = replicas(&args.matchmaker).map_err(|err| format!("{err:#}"))?;
    if register {
        // One key for every try, so a retry on another replica after a lost
        // answer registers once (and is not told the name is taken).
        let request = RegisterRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            idempotency_key: player::new_idempotency_key(),
        };
        let each_once = player::RetryPolicy {
            max_attempts: Some(u32::try_from(lobby.len()).unwrap_or(u32::MAX)),
            ..player::RetryPolicy::default()
        };
        lobby
            .call(each_once, "register", |channel| {
                let request = request.clone();
                async move { AuthClient::new(channel).register(request).await }
            })
            .await
            .map_err(|status| status_text("register", &status))?;
    }
    PlayerClient::login(lobby, matchmaker, username, password).await.map_err(|status| status_text("log in", &status))
}

fn start_session(session: Session, events: &mpsc::UnboundedSender<NetEvent>) -> Session {
    send(events, NetEvent::LoggedIn { player_id: session.player_id(), username: session.username().to_owned() });
    let background = session.clone();
    let events = events.clone();
    tokio::spawn(async move {
        refresh(&background, &events).await;
        if let Err(status) = follow_chat(&background, &events).await {
            send(&events, NetEvent::Error(status_text("chat", &status)));
        }
    });
    session
}

/// Joins the lobby channel and forwards its last messages and every new one.
async fn follow_chat(session: &Session, events: &mpsc::UnboundedSender<NetEvent>) -> Result<(), tonic::Status> {
    let mut chat = ChatClient::new(session.lobby().clone());
    let join = JoinRequest { target: Some(join_request::Target::PublicName(LOBBY_CHANNEL.to_owned())) };
    let channel = chat.join(session.request(join)).await?.into_inner();
    let after_id = channel.last_message_id.saturating_sub(20);
    let request = SubscribeRequest { channel_id: channel.channel_id, after_id: Some(after_id) };
    let mut stream = chat.subscribe(session.request(request)).await?.into_inner();
    while let Some(message) = stream.message().await? {
        send(events, NetEvent::Chat { from: message.sender_name, text: message.body });
    }
    Ok(())
}

/// Fetches the player's profile and the top of the leaderboard.
async fn refresh(session: &Session, events: &mpsc::UnboundedSender<NetEvent>) {
    let mut profiles = ProfileClient::new(session.lobby().clone());
    match profiles.get_profile(session.request(GetProfileRequest { player_id: session.player_id() })).await {
        Ok(profile) => {
            let p = profile.into_inner();
            let event =
                NetEvent::Profile { rating: p.rating, deviation: p.rating_deviation, wins: p.wins, losses: p.losses };
            send(events, event);
        }
        Err(status) => send(events, NetEvent::Error(status_text("profile", &status))),
    }
    match profiles
        .leaderboard(session.request(LeaderboardRequest {
            page_size: 10,
            page_token: String::new(),
            rank_of: session.player_id(),
        }))
        .await
    {
        Ok(board) => {
            let board = board.into_inner();
            let top = board.entries.into_iter().map(|e| (e.rank, e.display_name, e.rating)).collect();
            let own_rank = board.player.map_or(0, |p| p.rank);
            send(events, NetEvent::Leaderboard { top, own_rank });
        }
        Err(status) => send(events, NetEvent::Error(status_text("leaderboard", &status))),
    }
}

/// The new rating after a match, once the result has reached the profile
/// (results travel over the bus, so it may take a moment).
async fn rating_after(session: &Session, before: Option<f64>, matches_before: Option<u32>) -> Option<f64> {
    let mut profiles = ProfileClient::new(session.lobby().clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut latest = None;
    while tokio::time::Instant::now() < deadline {
        if let Ok(profile) =
            profiles.get_profile(session.request(GetProfileRequest { player_id: session.player_id() })).await
        {
            let p = profile.into_inner();
            latest = Some(p.rating);
            if matches_before.is_some_and(|n| p.wins + p.losses > n) || before.is_none() {
                return latest;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latest
}

/// Where a seat is: the transport to reach the shard and its address on it.
struct ShardTarget {
    transport: Transport,
    addr: SocketAddr,
}

impl ShardTarget {
    /// Over `kind` to `addr`, pinning `certificate_sha256` for QUIC.
    fn new(kind: TransportKind, addr: SocketAddr, certificate_sha256: &str) -> anyhow::Result<Self> {
        let transport = match kind {
            TransportKind::Udp => Transport::Udp,
            TransportKind::Quic => {
                let trust = ServerTrust::Fingerprint(certificate_sha256.to_owned());
                Transport::Quic(rally_client::quic::endpoint(client_config(&trust)?)?)
            }
            TransportKind::Memory => anyhow::bail!("rally play reaches a shard over quic or udp, not {kind}"),
        };
        Ok(Self { transport, addr })
    }

    async fn close(self) {
        if let Transport::Quic(endpoint) = self.transport {
            endpoint.wait_idle().await;
        }
    }
}

/// How play on one connection stopped.
enum Played {
    /// The match is over (ended, or left).
    Over,
    /// The connection was lost before the end.
    Dropped(String),
    /// The client is stopping (its app is gone): the seat stays kept for a restart.
    Stopped,
}

/// One match's worth of playing: the session, the app's channels, the seat file.
struct Play<'a> {
    session: Session,
    events: &'a mpsc::UnboundedSender<NetEvent>,
    input: tokio::sync::watch::Receiver<u8>,
    leave: tokio::sync::broadcast::Receiver<()>,
    seats: SeatFile,
}

impl Play<'_> {
    /// Queues, waits for the assignment, plays the match over `transport` (the
    /// raw UDP address is `shard_udp`), and reports the result. A match the
    /// matchmaker aborts is dropped and queued for again.
    async fn queue_and_play(
        &mut self,
        mode: &str,
        (transport, shard_udp): (TransportKind, SocketAddr),
        ticket_tx: mpsc::UnboundedSender<String>,
    ) -> anyhow::Result<()> {
        let before = self.profile().await;
        loop {
            let ticket =
                self.session.enqueue(mode).await.map_err(|status| anyhow::anyhow!(status_text("queue", &status)))?;
            let _ = ticket_tx.send(ticket.clone());
            send(self.events, NetEvent::Queued);
            let mut watch =
                self.session.watch(&ticket).await.map_err(|status| anyhow::anyhow!(status_text("queue", &status)))?;
            let assignment = match watch.outcome().await {
                Ok(QueueOutcome::Matched(assignment)) => assignment,
                Ok(QueueOutcome::Ended { state, reason }) => {
                    let why = if reason.is_empty() { format!("{state:?}") } else { reason };
                    send(self.events, NetEvent::QueueCancelled(format!("Left the queue: {why}")));
                    return Ok(());
                }
                Err(status) => anyhow::bail!(status_text("queue", &status)),
            };
            let seat = player::seat_of(&assignment, self.session.player_id())
                .context("the assignment has no seat for this player")?;
            send(self.events, NetEvent::Matched { shard: assignment.shard_name.clone() });
            let addr = match transport {
                TransportKind::Udp => shard_udp,
                _ => tokio::net::lookup_host(&assignment.shard_address)
                    .await
                    .with_context(|| format!("cannot resolve the shard address {:?}", assignment.shard_address))?
                    .next()
                    .with_context(|| format!("the shard address {:?} resolves to nothing", assignment.shard_address))?,
            };
            let target = ShardTarget::new(transport, addr, &assignment.certificate_sha256)?;
            let credential = ClientHello::Connect { token: seat.connect_token.clone() };
            let shard_name = assignment.shard_name.clone();
            let played = tokio::select! {
                played = self.play_seat(&target, &credential, &shard_name, &assignment.certificate_sha256) => played,
                reason = watch.aborted() => {
                    self.seats.clear(self.session.player_id());
                    send(self.events, NetEvent::Requeued(format!("The match was lost ({reason}); queueing again…")));
                    continue;
                }
            };
            target.close().await;
            played?;
            break;
        }
        self.report_result(before).await;
        Ok(())
    }

    /// Waits on the tournament's Watch stream for the player's next ready match
    /// and plays it (checking in when the window is open), like a queued match.
    async fn tournament_match(
        &mut self,
        id: u64,
        tournaments_url: &str,
        (transport, shard_udp): (TransportKind, SocketAddr),
    ) -> anyhow::Result<()> {
        use rally_tournaments::proto::tournament::{CheckInRequest, EntrantState, TournamentStatus, WatchRequest};
        let mut client = tournaments_client(tournaments_url)?;
        send(self.events, NetEvent::Queued);
        let request = self.session.request(WatchRequest { tournament_id: id });
        let mut stream = client
            .watch(request)
            .await
            .map_err(|status| anyhow::anyhow!(status_text("tournament", &status)))?
            .into_inner();
        let me = self.session.player_id();
        let ready = loop {
            let update = stream
                .message()
                .await
                .map_err(|status| anyhow::anyhow!(status_text("tournament", &status)))?
                .context("the tournament service closed the stream")?;
            let Some(tournament) = &update.tournament else { continue };
            let mine =
                tournament.entrants.iter().find(|entrant| entrant.player_id == me).map(|entrant| entrant.state());
            if tournament.status() == TournamentStatus::CheckIn && mine == Some(EntrantState::Registered) {
                let request = self.session.request(CheckInRequest { tournament_id: id });
                client.check_in(request).await.map_err(|status| anyhow::anyhow!(status_text("check-in", &status)))?;
            }
            if let Some(ready) = update.ready.first() {
                break ready.clone();
            }
            if matches!(tournament.status(), TournamentStatus::Finished | TournamentStatus::Cancelled) {
                let line = progress(tournament);
                send(self.events, NetEvent::QueueCancelled(format!("No more matches for you: {line}")));
                return Ok(());
            }
        };
        let label = ready.key.as_ref().map_or(String::new(), |key| key.label.clone());
        send(
            self.events,
            NetEvent::Chat { from: "tournament".to_owned(), text: format!("{label} against {}", ready.opponent_name) },
        );
        send(self.events, NetEvent::Matched { shard: ready.shard_name.clone() });
        let addr = match transport {
            TransportKind::Udp => shard_udp,
            _ => tokio::net::lookup_host(&ready.shard_address)
                .await
                .with_context(|| format!("cannot resolve the shard address {:?}", ready.shard_address))?
                .next()
                .with_context(|| format!("the shard address {:?} resolves to nothing", ready.shard_address))?,
        };
        let before = self.profile().await;
        let target = ShardTarget::new(transport, addr, &ready.certificate_sha256)?;
        let credential = ClientHello::Connect { token: ready.connect_token.clone() };
        let played = self.play_seat(&target, &credential, &ready.shard_name, &ready.certificate_sha256).await;
        target.close().await;
        played?;
        self.report_result(before).await;
        Ok(())
    }

    /// Takes back the seat a previous client held, and plays the match out.
    async fn resume_held(&mut self, held: HeldSeat) -> anyhow::Result<()> {
        let Some(credential) = held.credential() else {
            self.seats.clear(held.player_id);
            anyhow::bail!("the stored seat is unreadable; queue again");
        };
        let kind = held.transport.parse::<TransportKind>().map_err(anyhow::Error::msg)?;
        send(self.events, NetEvent::Matched { shard: held.shard_name.clone() });
        let before = self.profile().await;
        let target = ShardTarget::new(kind, held.addr, &held.certificate_sha256)?;
        let played = self.play_seat(&target, &credential, &held.shard_name, &held.certificate_sha256).await;
        target.close().await;
        if let Err(err) = played {
            self.seats.clear(held.player_id);
            send(self.events, NetEvent::QueueCancelled(format!("Could not take back the last match's seat: {err:#}")));
            return Ok(());
        }
        self.report_result(before).await;
        Ok(())
    }

    async fn profile(&self) -> Option<rally_lobby::proto::profile::PlayerProfile> {
        let request = self.session.request(GetProfileRequest { player_id: self.session.player_id() });
        ProfileClient::new(self.session.lobby().clone()).get_profile(request).await.ok().map(|p| p.into_inner())
    }

    async fn report_result(&self, before: Option<rally_lobby::proto::profile::PlayerProfile>) {
        let matches_before = before.as_ref().map(|p| p.wins + p.losses);
        let rating = rating_after(&self.session, before.map(|p| p.rating), matches_before).await;
        send(self.events, NetEvent::MatchOver { rating });
    }

    /// Connects with `credential` and plays the seat to the end of the match,
    /// resuming it after a dropped connection; the seat is kept in the seat
    /// file while the match runs.
    async fn play_seat(
        &mut self,
        target: &ShardTarget,
        credential: &ClientHello,
        shard_name: &str,
        certificate_sha256: &str,
    ) -> anyhow::Result<()> {
        let config = ConnectConfig::new(target.addr);
        let mut connection = Connection::connect(&target.transport, &config, credential)
            .await
            .with_context(|| format!("connecting to the shard over {} at {}", target.transport.kind(), target.addr))?;
        let player_id = self.session.player_id();
        let welcome = connection.welcome().clone();
        let held = HeldSeat {
            player_id,
            match_id: welcome.match_id.0,
            seat: welcome.seat,
            secret_hex: hex::encode(welcome.resume_secret),
            shard_name: shard_name.to_owned(),
            addr: target.addr,
            transport: target.transport.kind().name().to_owned(),
            certificate_sha256: certificate_sha256.to_owned(),
        };
        if let Err(err) = self.seats.save(&held) {
            tracing::warn!(error = %format!("{err:#}"), "cannot keep the seat for a restart");
        }
        let grace = Duration::from_millis(u64::from(welcome.resume_grace_ms));
        loop {
            send(self.events, NetEvent::Game(ClientEvent::Welcomed(Box::new(connection.welcome().clone()))));
            match self.play_on(&mut connection).await {
                Played::Over => {
                    self.seats.clear(player_id);
                    let _ = connection.finish().await;
                    return Ok(());
                }
                Played::Stopped => return Ok(()),
                Played::Dropped(why) => {
                    send(self.events, NetEvent::Error(format!("Connection lost ({why}); resuming…")));
                    let resume = connection.resume_credential();
                    drop(connection);
                    match rally_bot::queue::resume_seat(&target.transport, &config, &resume, grace).await {
                        Ok(resumed) => connection = resumed,
                        Err(err) => {
                            self.seats.clear(player_id);
                            let message = format!("Connection lost ({why}); the seat could not be resumed: {err}");
                            send(self.events, NetEvent::Error(message));
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Forwards the match's events and the player's input until it is over or the connection drops.
    async fn play_on(&mut self, connection: &mut Connection) -> Played {
        let mut left = false;
        loop {
            tokio::select! {
                event = connection.next_event() => match event {
                    Some(event @ ClientEvent::Disconnected { .. }) if left => {
                        send(self.events, NetEvent::Game(event));
                        return Played::Over;
                    }
                    Some(ClientEvent::Disconnected { reason, message }) => {
                        return Played::Dropped(format!("{reason:?}: {message}"));
                    }
                    Some(event) => {
                        let over = matches!(event, ClientEvent::Ended(_));
                        send(self.events, NetEvent::Game(event));
                        if over {
                            return Played::Over;
                        }
                    }
                    None if left => return Played::Over,
                    None => {
                        return Played::Dropped(connection.close_reason().unwrap_or_else(|| "closed".to_owned()));
                    }
                },
                changed = self.input.changed() => {
                    if changed.is_err() {
                        return Played::Stopped;
                    }
                    connection.set_input(*self.input.borrow_and_update());
                }
                _ = self.leave.recv() => {
                    left = true;
                    connection.leave();
                }
            }
        }
    }
}
