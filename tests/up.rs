//! `rally up` as a newcomer runs it, and `rally play` driven through its input
//! layer against it: bots play, results reach the leaderboard and the metrics,
//! a person (here, scripted keys) logs in, queues against a bot and finishes a
//! match over raw UDP, and SIGINT stops everything with nothing lost.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rally::common::ReadyLine;
use rally::play::app::{App, Command as AppCommand};
use rally::play::net::PlayArgs;
use rally_lobby::proto::profile::{LeaderboardRequest, profile_client::ProfileClient};
use rally_matchmaker::player::{PlayerClient, channel};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tokio::sync::mpsc;

struct Up {
    child: Child,
    lobby: String,
    matchmaker: String,
    metrics: SocketAddr,
    /// The shard's raw UDP address.
    udp: SocketAddr,
    lines: std::sync::mpsc::Receiver<String>,
}

/// Starts `rally up` on `data_dir` with ephemeral ports and reads its addresses.
fn start_up(data_dir: &std::path::Path, bots: u32) -> Up {
    start_up_with(data_dir, bots, 1, 20)
}

/// [`start_up`] with matches to `points_to_win` and a drain deadline of `drain_timeout_s`.
fn start_up_with(data_dir: &std::path::Path, bots: u32, points_to_win: u32, drain_timeout_s: u32) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rally"))
        .args(["up", "--bots", &bots.to_string(), "--points-to-win", &points_to_win.to_string()])
        .args(["--bot-difficulty", "easy"])
        .args(["--lobby-addr", "127.0.0.1:0", "--matchmaker-addr", "127.0.0.1:0", "--shard-addr", "127.0.0.1:0"])
        .args(["--udp-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .args(["--drain-timeout", &drain_timeout_s.to_string()])
        .args(["--status-interval", "1", "--ready-json", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The ready line, not the banner meant for people, says where everything is.
    let ready = loop {
        let line = lines.recv_timeout(Duration::from_secs(60)).expect("rally up prints its ready line");
        if line.starts_with('{') {
            break ReadyLine::parse(&line).unwrap();
        }
    };
    Up {
        child,
        lobby: format!("http://{}", ready.lobby.unwrap()),
        matchmaker: format!("http://{}", ready.matchmaker.unwrap()),
        metrics: ready.metrics.unwrap(),
        udp: ready.udp.unwrap(),
        lines,
    }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The sum of a metric's samples (over all labels) in a Prometheus page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .filter_map(|line| line.rsplit(' ').next().and_then(|value| value.trim().parse::<f64>().ok()))
        .sum()
}

/// Every ranked player's (name → (rating, rank)) as the lobby's Profile API shows it.
async fn leaderboard(player: &PlayerClient) -> Vec<(String, f64)> {
    let mut profiles = ProfileClient::new(player.lobby().clone());
    let board = profiles
        .leaderboard(player.request(LeaderboardRequest { page_size: 100, page_token: String::new(), rank_of: 0 }))
        .await
        .unwrap()
        .into_inner();
    board.entries.into_iter().map(|entry| (entry.display_name, entry.rating)).collect()
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn type_text(keys: &mpsc::UnboundedSender<KeyEvent>, text: &str) {
    for c in text.chars() {
        keys.send(key(KeyCode::Char(c))).unwrap();
    }
}

/// Runs `rally play`'s loop headless until `done` or a deadline.
async fn play_until(
    app: &mut App,
    keys: &mut mpsc::UnboundedReceiver<KeyEvent>,
    events: &mut mpsc::UnboundedReceiver<rally::play::app::NetEvent>,
    commands: &mpsc::UnboundedSender<AppCommand>,
    seconds: u64,
    done: impl FnMut(&App) -> bool,
) {
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
    let drive = rally::play::drive(app, &mut terminal, keys, events, commands, done);
    match tokio::time::timeout(Duration::from_secs(seconds), drive).await {
        Ok(driven) => driven.unwrap(),
        Err(_) => panic!(
            "the play loop did not reach its goal in {seconds} s: screen {}, status {:?}",
            app.screen_name(),
            app.status()
        ),
    }
}

fn sigint_and_wait(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "rally up did not exit after SIGINT");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rally_up_plays_matches_a_person_can_join_and_sigint_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = start_up(dir.path(), 4);

    // A person: log in through the terminal client's input layer and play a
    // bot, over raw UDP (the bots play over QUIC on the same shard).
    let args = PlayArgs {
        lobby: up.lobby.clone(),
        matchmaker: up.matchmaker.clone(),
        mode: "pong".into(),
        bot_mode: "pong-bot".into(),
        transport: rally_client::TransportKind::Udp,
        shard_udp: up.udp,
        state_dir: Some(dir.path().join("play")),
    };
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (event_tx, mut event_rx) = mpsc::unbounded_channel();
    let net = tokio::spawn(rally::play::net::run(args, command_rx, event_tx));
    let (key_tx, mut key_rx) = mpsc::unbounded_channel();
    let mut app = App::new();
    type_text(&key_tx, "casual-human");
    key_tx.send(key(KeyCode::Tab)).unwrap();
    type_text(&key_tx, "a long enough passphrase");
    key_tx.send(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::CONTROL)).unwrap();
    play_until(&mut app, &mut key_rx, &mut event_rx, &command_tx, 60, |app| {
        app.screen_name() == "home" && app.rating().is_some()
    })
    .await;
    let rating_before = app.rating().unwrap();
    key_tx.send(key(KeyCode::Char('b'))).unwrap();
    play_until(&mut app, &mut key_rx, &mut event_rx, &command_tx, 120, |app| app.screen_name() == "result").await;
    let end = app.last_match_end().cloned().unwrap_or_else(|| panic!("no match end; status: {}", app.status()));
    assert!(end.winner.is_some(), "{end:?}");
    assert!(app.rating().is_some_and(|after| after != rating_before), "the rating moved after a rated match");
    drop(command_tx);
    net.abort();

    // The bots' matches reach the leaderboard and the metrics.
    let lobby = channel(&up.lobby).await.unwrap();
    let matchmaker = channel(&up.matchmaker).await.unwrap();
    let observer =
        PlayerClient::register_or_login(lobby, matchmaker, "observer", "another long passphrase").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let before_stop = loop {
        let board = leaderboard(&observer).await;
        if board.iter().filter(|(name, rating)| name.starts_with("onnx-bot") && *rating != 1500.0).count() >= 2 {
            break board;
        }
        assert!(Instant::now() < deadline, "no bot match reached the leaderboard: {board:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let page = http_get(up.metrics, "/metrics");
    assert!(metric(&page, "rally_shard_matches_ended_total") >= 2.0, "{page}");

    // SIGINT drains and exits 0; a restart shows every rating kept.
    let status = tokio::task::spawn_blocking(move || {
        let status = sigint_and_wait(&mut up.child);
        let said: Vec<String> = up.lines.try_iter().collect();
        (status, said)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "rally up exited with {:?}; it said {:?}", status.0, status.1);
    assert!(status.1.iter().any(|line| line.starts_with("rally up stopped")), "{:?}", status.1);

    let mut again = start_up(dir.path(), 0);
    let lobby = channel(&again.lobby).await.unwrap();
    let matchmaker = channel(&again.matchmaker).await.unwrap();
    let observer = PlayerClient::login(lobby, matchmaker, "observer", "another long passphrase").await.unwrap();
    let after_restart: HashMap<String, f64> = leaderboard(&observer).await.into_iter().collect();
    for (name, rating) in &before_stop {
        assert!(after_restart.contains_key(name), "{name} is gone after the restart: {after_restart:?}");
        // Matches that ended while draining may have moved it further, never back to the default.
        if *rating != 1500.0 {
            assert_ne!(after_restart[name], 1500.0, "{name}'s rating was lost");
        }
    }
    assert!(after_restart.contains_key("casual-human"), "{after_restart:?}");
    assert!(tokio::task::spawn_blocking(move || sigint_and_wait(&mut again.child)).await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_cut_at_the_drain_deadline_count_among_those_rally_up_says_ended() {
    let dir = tempfile::tempdir().unwrap();
    // Long matches and no time to finish them: whatever runs at SIGINT is cut.
    let mut up = start_up_with(dir.path(), 2, 99, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = up.lines.recv_timeout(Duration::from_secs(120)).expect("rally up prints status lines");
        if line.starts_with("[status] matches running 1 ") {
            break;
        }
        assert!(Instant::now() < deadline, "the bots' match never started");
    }
    let (status, said) = tokio::task::spawn_blocking(move || {
        let status = sigint_and_wait(&mut up.child);
        let said: Vec<String> = up.lines.try_iter().collect();
        (status, said)
    })
    .await
    .unwrap();
    assert!(status.success(), "rally up exited with {status:?}; it said {said:?}");
    let last = said.iter().find(|line| line.starts_with("rally up stopped")).unwrap_or_else(|| panic!("{said:?}"));
    // "rally up stopped: N matches finished (M cut short), ..."
    let counts: Vec<u64> = last
        .split(|c: char| !c.is_ascii_digit())
        .filter(|word| !word.is_empty())
        .take(2)
        .map(|number| number.parse().unwrap())
        .collect();
    let (ended, cut) = (counts[0], counts[1]);
    assert!(cut >= 1, "the running match was cut at the deadline: {last}");
    assert!(ended >= cut, "the matches cut short are among those that ended: {last}");
}

/// Logs in through `rally play`'s loop with `state_dir` as its seat store and
/// returns the app, its key sender and the network task.
async fn play_client(
    up: &Up,
    state_dir: &std::path::Path,
    username: &str,
    register: bool,
) -> (App, mpsc::UnboundedSender<KeyEvent>, PlayLoop) {
    let args = PlayArgs {
        lobby: up.lobby.clone(),
        matchmaker: up.matchmaker.clone(),
        mode: "pong".into(),
        bot_mode: "pong-bot".into(),
        transport: rally_client::TransportKind::Quic,
        shard_udp: up.udp,
        state_dir: Some(state_dir.to_owned()),
    };
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let net = tokio::spawn(rally::play::net::run(args, command_rx, event_tx));
    let (key_tx, key_rx) = mpsc::unbounded_channel();
    let app = App::new();
    type_text(&key_tx, username);
    key_tx.send(key(KeyCode::Tab)).unwrap();
    type_text(&key_tx, "a long enough passphrase");
    let enter = if register { KeyEvent::new(KeyCode::Char('r'), KeyModifiers::CONTROL) } else { key(KeyCode::Enter) };
    key_tx.send(enter).unwrap();
    (app, key_tx, PlayLoop { net, keys: key_rx, events: event_rx, commands: command_tx })
}

struct PlayLoop {
    net: tokio::task::JoinHandle<anyhow::Result<()>>,
    keys: mpsc::UnboundedReceiver<KeyEvent>,
    events: mpsc::UnboundedReceiver<rally::play::app::NetEvent>,
    commands: mpsc::UnboundedSender<AppCommand>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_rally_play_resumes_its_seat_instead_of_queueing_again() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough matches that the restart lands in the middle of one.
    let up = start_up_with(dir.path(), 0, 3, 20);
    let state_dir = dir.path().join("play-state");

    // The first client queues against a bot and is welcomed to a seat.
    let (mut app, keys, mut play) = play_client(&up, &state_dir, "restarting-human", true).await;
    play_until(&mut app, &mut play.keys, &mut play.events, &play.commands, 60, |app| app.screen_name() == "home").await;
    keys.send(key(KeyCode::Char('b'))).unwrap();
    play_until(&mut app, &mut play.keys, &mut play.events, &play.commands, 60, |app| {
        app.screen_name() == "game" && app.status().starts_with("You defend")
    })
    .await;
    let seat_files: Vec<_> = std::fs::read_dir(&state_dir).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert_eq!(seat_files.len(), 1, "the seat is kept while the match runs: {seat_files:?}");
    let held: rally::play::seat_file::HeldSeat =
        serde_json::from_str(&std::fs::read_to_string(&seat_files[0]).unwrap()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&seat_files[0]).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only its user reads the seat file: {mode:o}");
    }

    // The client dies mid-match (no Leave) and a new one starts and logs in.
    play.net.abort();
    let _ = play.net.await;
    drop((app, keys));
    assert!(seat_files[0].exists(), "the seat file outlives the client");
    let (mut app, _keys, mut play) = play_client(&up, &state_dir, "restarting-human", false).await;
    // It takes the same seat back and plays that match to its end, without queueing.
    play_until(&mut app, &mut play.keys, &mut play.events, &play.commands, 120, |app| app.screen_name() == "result")
        .await;
    let end = app.last_match_end().cloned().unwrap_or_else(|| panic!("no match end; status: {}", app.status()));
    assert!(end.winner.is_some(), "the resumed match was played to its end: {end:?}");
    assert!(!seat_files[0].exists(), "the seat file of match {} is removed when it ends", held.match_id);
    play.net.abort();
    let mut up = up;
    assert!(tokio::task::spawn_blocking(move || sigint_and_wait(&mut up.child)).await.unwrap().success());
}
