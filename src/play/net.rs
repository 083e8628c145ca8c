//! The network side of `rally play`: lobby (Auth, Profile, Chat), matchmaker
//! and shard. It takes [`Command`]s from the app and answers with [`NetEvent`]s;
//! every failure becomes an [`NetEvent::Error`] with a message a person can act on.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use rally_client::ConnectConfig;
use rally_client::tls::{ServerTrust, client_config};
use rally_client::{ClientEvent, Connection, Transport, TransportKind};
use rally_lobby::proto::auth::{RegisterRequest, auth_client::AuthClient};
use rally_lobby::proto::chat::{JoinRequest, SendRequest, SubscribeRequest, chat_client::ChatClient, join_request};
use rally_lobby::proto::profile::{GetProfileRequest, LeaderboardRequest, profile_client::ProfileClient};
use rally_matchmaker::player::{self, PlayerClient, QueueOutcome};
use rally_protocol::control::ClientHello;
use tokio::sync::mpsc;

use super::app::{Command, NetEvent};

/// A logged-in player.
type Session = PlayerClient;

/// The lobby chat channel everybody joins, by name.
pub const LOBBY_CHANNEL: &str = "lobby";
/// Its channel id (public channels are `public:<name>`).
pub const LOBBY_CHANNEL_ID: &str = "public:lobby";

/// Where `rally play` connects; the defaults are `rally up`'s.
#[derive(Clone, Debug, Args)]
pub struct PlayArgs {
    /// The lobby's gRPC address (Auth, Profile, Chat).
    #[arg(long, default_value = "http://127.0.0.1:7100", env = "RALLY_LOBBY")]
    pub lobby: String,
    /// The matchmaker's gRPC address.
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
}

/// A gRPC status as a person reads it.
fn status_text(what: &str, status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unavailable => format!("{what}: the server is unreachable ({})", status.message()),
        _ => format!("{what}: {}", status.message()),
    }
}

/// Runs until the app says [`Command::Quit`] or drops its sender.
pub async fn run(
    args: PlayArgs,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<NetEvent>,
) -> anyhow::Result<()> {
    let mut session: Option<Session> = None;
    let mut game: Option<tokio::task::JoinHandle<()>> = None;
    let mut ticket: Option<String> = None;
    let (input_tx, input_rx) = tokio::sync::watch::channel(rally_sim::pong::INPUT_STOP);
    let mut input_rx = Some(input_rx);
    let (leave_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let (ticket_tx, mut ticket_rx) = mpsc::unbounded_channel::<String>();
    loop {
        let command = tokio::select! {
            command = commands.recv() => command,
            Some(id) = ticket_rx.recv() => { ticket = Some(id); continue; }
        };
        let Some(command) = command else { return Ok(()) };
        match command {
            Command::Quit => return Ok(()),
            Command::Register { username, password } | Command::Login { username, password } if session.is_some() => {
                let _ = (username, password);
            }
            Command::Register { username, password } => match login(&args, &username, &password, true).await {
                Ok(new) => session = Some(start_session(new, &events)),
                Err(message) => send(&events, NetEvent::Error(message)),
            },
            Command::Login { username, password } => match login(&args, &username, &password, false).await {
                Ok(new) => session = Some(start_session(new, &events)),
                Err(message) => send(&events, NetEvent::Error(message)),
            },
            Command::Refresh => {
                if let Some(session) = &session {
                    refresh(session, &events).await;
                }
            }
            Command::Chat(text) => {
                if let Some(session) = &session {
                    let request = session.request(SendRequest { channel_id: LOBBY_CHANNEL_ID.to_owned(), body: text });
                    if let Err(status) = ChatClient::new(session.lobby().clone()).send(request).await {
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
                game = Some(tokio::spawn(async move {
                    if let Err(err) = queue_and_play(&session, &mode, reach, &events, input, leave, ticket_tx).await {
                        send(&events, NetEvent::Error(format!("{err:#}")));
                    }
                }));
            }
            Command::CancelQueue => {
                if let (Some(session), Some(id)) = (&mut session, ticket.take()) {
                    if let Err(status) = session.cancel(&id).await {
                        send(&events, NetEvent::Error(status_text("cancel", &status)));
                    }
                } else if let Some(task) = game.take() {
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
}

fn send(events: &mpsc::UnboundedSender<NetEvent>, event: NetEvent) {
    // The app outlives this task; a closed channel means it is quitting.
    let _ = events.send(event);
}

/// Registers (when asked) and logs in.
async fn login(args: &PlayArgs, username: &str, password: &str, register: bool) -> Result<Session, String> {
    let lobby = player::channel(&args.lobby).await.map_err(|err| format!("{err:#}"))?;
    let matchmaker = player::channel(&args.matchmaker).await.map_err(|err| format!("{err:#}"))?;
    if register {
        let request = RegisterRequest { username: username.to_owned(), password: password.to_owned() };
        AuthClient::new(lobby.clone()).register(request).await.map_err(|status| status_text("register", &status))?;
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

/// Queues, waits for the assignment, plays the match over `transport` (the
/// raw UDP address is `shard_udp`), and reports the result.
async fn queue_and_play(
    session: &Session,
    mode: &str,
    (transport, shard_udp): (TransportKind, SocketAddr),
    events: &mpsc::UnboundedSender<NetEvent>,
    mut input: tokio::sync::watch::Receiver<u8>,
    mut leave: tokio::sync::broadcast::Receiver<()>,
    ticket_tx: mpsc::UnboundedSender<String>,
) -> anyhow::Result<()> {
    let mut session = session.clone();
    let mut profiles = ProfileClient::new(session.lobby().clone());
    let before = profiles
        .get_profile(session.request(GetProfileRequest { player_id: session.player_id() }))
        .await
        .ok()
        .map(|p| p.into_inner());
    let ticket = session.enqueue(mode).await.map_err(|status| anyhow::anyhow!(status_text("queue", &status)))?;
    let _ = ticket_tx.send(ticket.clone());
    send(events, NetEvent::Queued);
    let assignment = match session.wait(&ticket).await {
        Ok(QueueOutcome::Matched(assignment)) => assignment,
        Ok(QueueOutcome::Ended { state, reason }) => {
            let why = if reason.is_empty() { format!("{state:?}") } else { reason };
            send(events, NetEvent::QueueCancelled(format!("Left the queue: {why}")));
            return Ok(());
        }
        Err(status) => anyhow::bail!(status_text("queue", &status)),
    };
    let seat =
        player::seat_of(&assignment, session.player_id()).context("the assignment has no seat for this player")?;
    send(events, NetEvent::Matched { shard: assignment.shard_name.clone() });
    let addr: SocketAddr = tokio::net::lookup_host(&assignment.shard_address)
        .await
        .with_context(|| format!("cannot resolve the shard address {:?}", assignment.shard_address))?
        .next()
        .with_context(|| format!("the shard address {:?} resolves to nothing", assignment.shard_address))?;
    let credential = ClientHello::Connect { token: seat.connect_token.clone() };
    let (transport, addr) = if transport == TransportKind::Udp {
        (Transport::Udp, shard_udp)
    } else if transport == TransportKind::Quic {
        let trust = ServerTrust::Fingerprint(assignment.certificate_sha256.clone());
        (Transport::Quic(rally_client::quic::endpoint(client_config(&trust)?)?), addr)
    } else {
        anyhow::bail!("rally play reaches a shard over quic or udp, not {transport}");
    };
    let mut connection = Connection::connect(&transport, &ConnectConfig::new(addr), &credential)
        .await
        .with_context(|| format!("connecting to the shard over {} at {addr}", transport.kind()))?;
    send(events, NetEvent::Game(ClientEvent::Welcomed(Box::new(connection.welcome().clone()))));
    loop {
        tokio::select! {
            event = connection.next_event() => match event {
                Some(event) => {
                    let over = matches!(event, ClientEvent::Ended(_) | ClientEvent::Disconnected { .. });
                    send(events, NetEvent::Game(event));
                    if over {
                        break;
                    }
                }
                None => break,
            },
            changed = input.changed() => {
                if changed.is_err() {
                    break;
                }
                connection.set_input(*input.borrow_and_update());
            }
            _ = leave.recv() => {
                connection.leave();
            }
        }
    }
    let matches_before = before.as_ref().map(|p| p.wins + p.losses);
    let rating = rating_after(&session, before.map(|p| p.rating), matches_before).await;
    send(events, NetEvent::MatchOver { rating });
    let _ = connection.finish().await;
    if let Transport::Quic(endpoint) = transport {
        endpoint.wait_idle().await;
    }
    Ok(())
}
