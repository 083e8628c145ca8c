//! `rally play`: a terminal client for people. Log in, see your rating and the
//! leaderboard, chat in the lobby, queue against a human or a bot, and play
//! Pong with the keyboard, predicted locally at the shard's tick rate.
//!
//! [`app::App`] holds the state and [`ui`] draws it; [`court`] turns a
//! snapshot into cells; [`net`] talks to the lobby, the matchmaker and the
//! shard, and [`login`] logs in through an identity provider or as a guest;
//! [`drive`] joins them to a terminal and a source of keys, so a test can run
//! the very same loop headless.

pub mod app;
pub mod court;
pub mod login;
pub mod net;
pub mod seat_file;
pub mod ui;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui::crossterm::event::{self, Event, KeyEvent};
use tokio::sync::mpsc;

use app::{App, Command, NetEvent};

/// How often the screen is redrawn and the paddle steered.
const FRAME: Duration = Duration::from_millis(16);

/// Runs the loop until the player quits or `done` says so: keys and network
/// events go into `app`, its commands go to `commands`, and the screen is
/// redrawn every frame.
pub async fn drive<B: Backend>(
    app: &mut App,
    terminal: &mut Terminal<B>,
    keys: &mut mpsc::UnboundedReceiver<KeyEvent>,
    events: &mut mpsc::UnboundedReceiver<NetEvent>,
    commands: &mpsc::UnboundedSender<Command>,
    mut done: impl FnMut(&App) -> bool,
) -> anyhow::Result<()>
where
    B::Error: Send + Sync + 'static,
{
    let mut frames = tokio::time::interval(FRAME);
    frames.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            key = keys.recv() => match key {
                Some(key) => app.handle_key(key),
                None => return Ok(()),
            },
            event = events.recv() => match event {
                Some(event) => app.handle_net(Instant::now(), event),
                None => anyhow::bail!("the network task stopped: {}", app.status()),
            },
            _ = frames.tick() => {
                app.steer();
                let now = Instant::now();
                terminal.draw(|frame| app.draw(frame, now)).context("draw the screen")?;
            }
        }
        while let Some(command) = app.poll_command() {
            // The network task only ends after the app says Quit.
            let _ = commands.send(command);
        }
        if app.should_quit() || done(app) {
            return Ok(());
        }
    }
}

/// Reads terminal key presses on a thread of its own (crossterm's reader blocks).
fn spawn_key_reader() -> mpsc::UnboundedReceiver<KeyEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        loop {
            match event::poll(Duration::from_millis(100)) {
                Ok(true) => match event::read() {
                    Ok(Event::Key(key)) => {
                        if tx.send(key).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                Ok(false) if tx.is_closed() => return,
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
    rx
}

/// `rally play`'s flags: where to connect, and a tournament to play in.
#[derive(Clone, Debug, clap::Args)]
pub struct PlayCommandArgs {
    /// Where to connect.
    #[command(flatten)]
    pub net: net::PlayArgs,
    /// Tournaments.
    #[command(flatten)]
    pub tournament: net::TournamentPlayArgs,
    /// Logging in through an identity provider, or as a guest.
    #[command(flatten)]
    pub login: login::LoginArgs,
}

/// `rally play` in a real terminal.
pub async fn run(args: PlayCommandArgs) -> anyhow::Result<()> {
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (event_tx, mut event_rx) = mpsc::unbounded_channel();
    let net = tokio::spawn(net::run_with_login(args.net, args.tournament, args.login, command_rx, event_tx));
    let mut keys = spawn_key_reader();
    let mut app = App::new();
    let mut terminal = ratatui::init();
    let result = drive(&mut app, &mut terminal, &mut keys, &mut event_rx, &command_tx, |_| false).await;
    ratatui::restore();
    drop(command_tx);
    net.abort();
    result
}
