//! The state of `rally play`, without a terminal or a network: keys and network
//! events go in, [`Command`]s for the network come out. Drawing it is
//! [`super::ui`]'s job ([`App::draw`]). Tests drive it exactly as a person would.

use std::collections::VecDeque;
use std::time::Instant;

use rally_client::ClientEvent;
use rally_client::view::{DEFAULT_DELAY_SNAPSHOTS, GameView};
use rally_protocol::control::{MatchEnd, ServerMessage, Welcome};
use rally_protocol::{Input, Seat};
use rally_sim::pong::{INPUT_DOWN, INPUT_STOP, INPUT_UP};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::court::{CourtLayout, PongPaddle, side_name};

/// Lines of chat kept on screen.
const CHAT_LINES: usize = 50;

/// What the app asks the network side to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Create an account, then log in.
    Register { username: String, password: String },
    /// Log in.
    Login { username: String, password: String },
    /// Fetch the profile and the leaderboard again.
    Refresh,
    /// Post to the lobby chat channel.
    Chat(String),
    /// Queue for a match; `against_bot` asks for a bot opponent.
    Queue { against_bot: bool },
    /// Leave the queue.
    CancelQueue,
    /// The paddle input for the coming ticks.
    Input(Input),
    /// Leave the running match.
    LeaveMatch,
    /// Exit the program.
    Quit,
}

/// What the network side reports.
#[derive(Debug)]
pub enum NetEvent {
    /// Logged in as this account.
    LoggedIn { player_id: u64, username: String },
    /// The account's rating and record.
    Profile { rating: f64, deviation: f64, wins: u32, losses: u32 },
    /// The top of the leaderboard and the player's own rank (0 when unranked).
    Leaderboard { top: Vec<(u64, String, f64)>, own_rank: u64 },
    /// A chat line from the lobby channel.
    Chat { from: String, text: String },
    /// Queued; waiting for a match.
    Queued,
    /// Left the queue.
    QueueCancelled(String),
    /// A match was found; connecting to the shard.
    Matched { shard: String },
    /// The matchmaker lost the match's shard; queued again (the reason, for the screen).
    Requeued(String),
    /// An event of the running match's session.
    Game(ClientEvent),
    /// The match is over and the connection closed; `rating` is the new rating when known.
    MatchOver { rating: Option<f64> },
    /// Something failed; shown to the player.
    Error(String),
    /// An identity provider's device login started: the person opens
    /// `verification_uri` and enters `user_code` (or opens
    /// `verification_uri_complete`, which has the code in it).
    DeviceCode { verification_uri: String, user_code: String, verification_uri_complete: String, expires_at_ms: i64 },
    /// An identity provider's browser login started: the person opens `url`.
    OpenBrowser { url: String },
}

/// What the login screen asks a person to do at an identity provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginPrompt {
    /// Enter `user_code` at `verification_uri`.
    Device { verification_uri: String, user_code: String, verification_uri_complete: String, expires_at_ms: i64 },
    /// Sign in at `url` in a browser.
    Browser { url: String },
}

/// Which field of the login form has the cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LoginField {
    Username,
    Password,
}

/// The screen being shown.
#[derive(Debug)]
pub(super) enum Screen {
    Login { username: String, password: String, field: LoginField, busy: bool },
    Home { chat_input: String, typing: bool },
    Queued { against_bot: bool },
    Game(Box<GameState>),
    Result { end: Option<MatchEnd>, seat: Option<Seat>, rating_before: Option<f64> },
}

/// A match in progress.
#[derive(Debug)]
pub(super) struct GameState {
    pub(super) welcome: Option<Welcome>,
    pub(super) view: Option<GameView>,
    pub(super) layout: Option<CourtLayout>,
    /// Where the player wants the paddle, in wire units; keys move it.
    target_y: Option<f64>,
    input: Input,
    pub(super) end: Option<MatchEnd>,
    pub(super) shard: String,
    rating_before: Option<f64>,
}

/// The whole client state.
#[derive(Debug)]
pub struct App {
    pub(super) screen: Screen,
    commands: VecDeque<Command>,
    pub(super) account: Option<(u64, String)>,
    pub(super) profile: Option<(f64, f64, u32, u32)>,
    /// The top of the leaderboard, and the player's own rank (0 when unranked).
    pub(super) leaderboard: (Vec<(u64, String, f64)>, u64),
    pub(super) chat: VecDeque<(String, String)>,
    /// A login at an identity provider waiting for the person.
    pub(super) login_prompt: Option<LoginPrompt>,
    status: String,
    quit: bool,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    /// A client at the login screen.
    pub fn new() -> Self {
        Self {
            screen: Screen::Login {
                username: String::new(),
                password: String::new(),
                field: LoginField::Username,
                busy: false,
            },
            commands: VecDeque::new(),
            account: None,
            profile: None,
            leaderboard: (Vec::new(), 0),
            chat: VecDeque::new(),
            login_prompt: None,
            status: "Type a username and password; Enter logs in, Ctrl-R registers.".to_owned(),
            quit: false,
        }
    }

    /// The next command for the network side.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Whether the player asked to exit.
    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// The line at the bottom of the screen: the latest news or error.
    pub fn status(&self) -> &str {
        &self.status
    }

    /// A short name of the current screen, for tests and logs.
    pub fn screen_name(&self) -> &'static str {
        match self.screen {
            Screen::Login { .. } => "login",
            Screen::Home { .. } => "home",
            Screen::Queued { .. } => "queued",
            Screen::Game(_) => "game",
            Screen::Result { .. } => "result",
        }
    }

    /// The account logged in to (player id, username), once logged in.
    pub fn account(&self) -> Option<(u64, &str)> {
        self.account.as_ref().map(|(player_id, username)| (*player_id, username.as_str()))
    }

    /// What the login screen asks the person to do at an identity provider, while it waits.
    pub fn login_prompt(&self) -> Option<&LoginPrompt> {
        self.login_prompt.as_ref()
    }

    /// The rating shown on the home screen, once known.
    pub fn rating(&self) -> Option<f64> {
        self.profile.map(|(rating, ..)| rating)
    }

    /// The end of the last match, once over.
    pub fn last_match_end(&self) -> Option<&MatchEnd> {
        match &self.screen {
            Screen::Result { end, .. } => end.as_ref(),
            Screen::Game(game) => game.end.as_ref(),
            _ => None,
        }
    }

    fn push(&mut self, command: Command) {
        self.commands.push_back(command);
    }

    /// Takes one key press.
    pub fn handle_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            self.push(Command::Quit);
            return;
        }
        match &mut self.screen {
            Screen::Login { username, password, field, busy } => {
                if *busy {
                    return;
                }
                if key.code == KeyCode::Char('r') && key.modifiers.contains(KeyModifiers::CONTROL) {
                    let command = Command::Register { username: username.clone(), password: password.clone() };
                    *busy = true;
                    self.status = "Registering…".to_owned();
                    self.push(command);
                    return;
                }
                let text = match field {
                    LoginField::Username => &mut *username,
                    LoginField::Password => &mut *password,
                };
                match key.code {
                    KeyCode::Char(c) => text.push(c),
                    KeyCode::Backspace => {
                        text.pop();
                    }
                    KeyCode::Tab | KeyCode::Down | KeyCode::Up => {
                        *field = match field {
                            LoginField::Username => LoginField::Password,
                            LoginField::Password => LoginField::Username,
                        };
                    }
                    KeyCode::Enter if *field == LoginField::Username => *field = LoginField::Password,
                    KeyCode::Enter => {
                        let command = Command::Login { username: username.clone(), password: password.clone() };
                        *busy = true;
                        self.status = "Logging in…".to_owned();
                        self.push(command);
                    }
                    KeyCode::Esc => {
                        self.quit = true;
                        self.push(Command::Quit);
                    }
                    _ => {}
                }
            }
            Screen::Home { chat_input, typing } => {
                if *typing {
                    match key.code {
                        KeyCode::Enter => {
                            let text = std::mem::take(chat_input);
                            *typing = false;
                            if !text.trim().is_empty() {
                                self.push(Command::Chat(text));
                            }
                        }
                        KeyCode::Esc => {
                            chat_input.clear();
                            *typing = false;
                        }
                        KeyCode::Backspace => {
                            chat_input.pop();
                        }
                        KeyCode::Char(c) => chat_input.push(c),
                        _ => {}
                    }
                    return;
                }
                match key.code {
                    KeyCode::Char('b') => self.queue(true),
                    KeyCode::Char('h') => self.queue(false),
                    KeyCode::Char('c') | KeyCode::Enter => *typing = true,
                    KeyCode::Char('r') => self.push(Command::Refresh),
                    KeyCode::Char('q') | KeyCode::Esc => {
                        self.quit = true;
                        self.push(Command::Quit);
                    }
                    _ => {}
                }
            }
            Screen::Queued { .. } => {
                if matches!(key.code, KeyCode::Esc | KeyCode::Char('q')) {
                    self.push(Command::CancelQueue);
                }
            }
            Screen::Game(game) => {
                let step = f64::from(rally_sim::pong::geometry::PADDLE_HALF_HEIGHT >> 7);
                match key.code {
                    KeyCode::Up | KeyCode::Char('w') | KeyCode::Char('k') => {
                        game.target_y = game.target_y.map(|y| y - step);
                    }
                    KeyCode::Down | KeyCode::Char('s') | KeyCode::Char('j') => {
                        game.target_y = game.target_y.map(|y| y + step);
                    }
                    KeyCode::Char(' ') => game.target_y = None,
                    KeyCode::Esc | KeyCode::Char('q') => {
                        if game.end.is_none() {
                            self.status = "Leaving the match (it counts as a forfeit).".to_owned();
                        }
                        self.push(Command::LeaveMatch);
                    }
                    _ => {}
                }
            }
            Screen::Result { .. } => match key.code {
                KeyCode::Char('q') | KeyCode::Esc => {
                    self.quit = true;
                    self.push(Command::Quit);
                }
                _ => {
                    self.screen = Screen::Home { chat_input: String::new(), typing: false };
                    self.push(Command::Refresh);
                }
            },
        }
    }

    fn queue(&mut self, against_bot: bool) {
        self.screen = Screen::Queued { against_bot };
        self.status = if against_bot { "Looking for a bot opponent…" } else { "Looking for an opponent…" }.to_owned();
        self.push(Command::Queue { against_bot });
    }

    /// Takes one network event.
    pub fn handle_net(&mut self, now: Instant, event: NetEvent) {
        match event {
            NetEvent::LoggedIn { player_id, username } => {
                self.status = format!("Logged in as {username}. b: play a bot, h: play a human, c: chat, q: quit.");
                self.account = Some((player_id, username));
                self.login_prompt = None;
                self.screen = Screen::Home { chat_input: String::new(), typing: false };
            }
            NetEvent::Profile { rating, deviation, wins, losses } => {
                self.profile = Some((rating, deviation, wins, losses));
            }
            NetEvent::Leaderboard { top, own_rank } => self.leaderboard = (top, own_rank),
            NetEvent::Chat { from, text } => {
                self.chat.push_back((from, text));
                while self.chat.len() > CHAT_LINES {
                    self.chat.pop_front();
                }
            }
            NetEvent::Queued => {}
            NetEvent::QueueCancelled(why) => {
                self.status = why;
                self.screen = Screen::Home { chat_input: String::new(), typing: false };
            }
            NetEvent::Matched { shard } => {
                self.status = format!("Match found on {shard}; connecting…");
                self.screen = Screen::Game(Box::new(GameState {
                    welcome: None,
                    view: None,
                    layout: None,
                    target_y: None,
                    input: INPUT_STOP,
                    end: None,
                    shard,
                    rating_before: self.rating(),
                }));
            }
            NetEvent::Requeued(why) => {
                self.status = why;
                self.screen = Screen::Queued { against_bot: false };
            }
            NetEvent::Game(event) => self.handle_game_event(now, event),
            NetEvent::MatchOver { rating } => {
                if let Some(rating) = rating
                    && let Some(profile) = &mut self.profile
                {
                    profile.0 = rating;
                }
                let (end, seat, rating_before) = match &self.screen {
                    Screen::Game(game) => (game.end.clone(), game.welcome.as_ref().map(|w| w.seat), game.rating_before),
                    _ => (None, None, None),
                };
                if end.is_none() && !self.status.starts_with("Connection lost") {
                    self.status = "The match ended without a result.".to_owned();
                }
                self.screen = Screen::Result { end, seat, rating_before };
            }
            NetEvent::DeviceCode { verification_uri, user_code, verification_uri_complete, expires_at_ms } => {
                self.status = format!("Waiting for you to enter {user_code} at the provider…");
                self.login_prompt =
                    Some(LoginPrompt::Device { verification_uri, user_code, verification_uri_complete, expires_at_ms });
            }
            NetEvent::OpenBrowser { url } => {
                self.status = "Waiting for you to sign in at the provider in the browser…".to_owned();
                self.login_prompt = Some(LoginPrompt::Browser { url });
            }
            NetEvent::Error(message) => {
                if let Screen::Login { busy, .. } = &mut self.screen {
                    *busy = false;
                    // The provider login it asked for is over.
                    self.login_prompt = None;
                }
                if let Screen::Queued { .. } = self.screen {
                    self.screen = Screen::Home { chat_input: String::new(), typing: false };
                }
                self.status = message;
            }
        }
    }

    fn handle_game_event(&mut self, now: Instant, event: ClientEvent) {
        let Screen::Game(game) = &mut self.screen else { return };
        match &event {
            ClientEvent::Welcomed(welcome) => {
                self.status = format!(
                    "You defend the {} side. ↑/↓ (or w/s) move the paddle, space stops, q leaves.",
                    side_name(welcome.seat)
                );
                game.layout = CourtLayout::new(&welcome.schema, welcome.n_seats);
                if game.layout.is_none() {
                    self.status = format!("This client draws Pong only; the shard runs {:?}.", welcome.game);
                }
                let predictor = PongPaddle::new(&welcome.schema, welcome.seat)
                    .map(|p| Box::new(p) as Box<dyn rally_client::prediction::Predictor>);
                game.view = Some(GameView::new(welcome, predictor, DEFAULT_DELAY_SNAPSHOTS));
                game.welcome = Some((**welcome).clone());
            }
            ClientEvent::Message(ServerMessage::MatchEnded(end)) | ClientEvent::Ended(end) => {
                game.end = Some(end.clone());
            }
            ClientEvent::Disconnected { message, .. } if game.end.is_none() => {
                self.status = format!("Connection lost: {message}");
            }
            _ => {}
        }
        if let Some(view) = &mut game.view {
            view.handle_event(now, &event);
        }
    }

    /// Called once per tick while a match runs: steers the paddle toward the
    /// target and returns the input to send when it changed.
    pub fn steer(&mut self) -> Option<Input> {
        let Screen::Game(game) = &mut self.screen else { return None };
        let (Some(view), Some(layout), Some(welcome)) = (&game.view, &game.layout, &game.welcome) else {
            return None;
        };
        let idx = layout.paddle_index(welcome.seat)?;
        let own_y = f64::from(*view.predicted()?.values.get(idx)?);
        let target = *game.target_y.get_or_insert(own_y);
        // Half a tick of paddle travel as a dead zone keeps it from jittering.
        let dead_zone = f64::from(rally_sim::pong::geometry::PADDLE_SPEED >> 7) / 2.0;
        let input = if target < own_y - dead_zone {
            INPUT_UP
        } else if target > own_y + dead_zone {
            INPUT_DOWN
        } else {
            INPUT_STOP
        };
        if input == game.input {
            return None;
        }
        game.input = input;
        self.commands.push_back(Command::Input(input));
        Some(input)
    }
}
