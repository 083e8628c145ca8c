//! A whole tournament end to end over real QUIC: `rally up` (lobby, tournament
//! service, shard, ledger) as a child process, 16 bots entering through the
//! public services, a 5-round Swiss whose top 8 go on to single elimination,
//! played to a champion on the shard; then the ledger verifies with every match
//! re-simulated, `rally ledger` and `rally tournament` show what happened, and a
//! changed byte in the log is caught.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rally::common::ReadyLine;
use rally_bot::queue::QueueStats;
use rally_bot::tournament::{EntrantBot, TournamentBotEnd};
use rally_bot::{BatchWindow, BotStyle, Decider, Difficulty, PolicyKind};
use rally_matchmaker::player::{PlayerClient, RetryPolicy, lazy_channel};
use rally_tournaments::proto::tournament::tournaments_client::TournamentsClient;
use rally_tournaments::proto::tournament::{
    CreateRequest, GameState, GetRequest, Rules, Seeding, SingleElimination, Stage, StandingsRequest, Swiss,
    TournamentStatus, game_outcome, stage,
};

const PASSWORD: &str = "tournament test passphrase";
const ENTRANTS: u32 = 16;
const SWISS_ROUNDS: u32 = 5;
const TOP: u32 = 8;

struct Up {
    child: Child,
    lobby: String,
    tournaments: String,
    /// The ledger's read-only HTTP base URL.
    ledger: String,
}

/// Starts `rally up` on `data_dir` with ephemeral ports, no queueing bots and no
/// bot cup, one-point tournament matches; reads its addresses from the ready line.
fn start_up(data_dir: &Path) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rally"))
        .args(["up", "--bots", "0", "--no-tournament", "--tournament-points-to-win", "1"])
        .args(["--lobby-addr", "127.0.0.1:0", "--matchmaker-addr", "127.0.0.1:0", "--shard-addr", "127.0.0.1:0"])
        .args(["--udp-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--tournaments-addr", "127.0.0.1:0"])
        .args(["--status-interval", "0", "--ready-json", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let ready = loop {
        let line = lines.recv_timeout(Duration::from_secs(120)).expect("rally up prints its ready line");
        if line.starts_with('{') {
            break ReadyLine::parse(&line).unwrap();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || while lines.recv().is_ok() {});
    Up {
        child,
        lobby: format!("http://{}", ready.lobby.unwrap()),
        tournaments: format!("http://{}", ready.tournaments.expect("the ready line names the tournament service")),
        ledger: format!("http://{}", ready.ledger.expect("the ready line names the ledger")),
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

fn rally(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rally")).args(args).env("RUST_LOG", "warn").output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

async fn login(up: &Up, username: &str) -> PlayerClient {
    PlayerClient::register_or_login_retrying(
        lazy_channel(&up.lobby).unwrap(),
        lazy_channel(&up.tournaments).unwrap(),
        username,
        PASSWORD,
        RetryPolicy::forever(),
    )
    .await
    .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_bots_play_a_swiss_then_a_top_eight_knockout_to_a_champion_and_the_ledger_replays() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = start_up(dir.path());

    // Everyone logs in first, so registration only waits on the service.
    let organiser = login(&up, "organiser").await;
    let mut entrants = Vec::new();
    for index in 1..=ENTRANTS {
        entrants.push(login(&up, &format!("entrant-{index}")).await);
    }
    let mut client = TournamentsClient::new(lazy_channel(&up.tournaments).unwrap());
    let now = i64::try_from(rally_matchmaker::engine::unix_ms()).unwrap();
    let request = CreateRequest {
        name: "swiss into knockout".to_owned(),
        rules: Some(Rules {
            stages: vec![
                Stage {
                    format: Some(stage::Format::Swiss(Swiss { rounds: SWISS_ROUNDS })),
                    best_of: 1,
                    advance: Some(TOP),
                },
                Stage {
                    format: Some(stage::Format::SingleElimination(SingleElimination { third_place: false })),
                    best_of: 1,
                    advance: None,
                },
            ],
            seeding: Seeding::Rating as i32,
        }),
        mode: String::new(),
        max_entrants: ENTRANTS,
        min_rating: None,
        max_rating: None,
        registration_opens_at_ms: 0,
        // Long enough for sixteen Register and CheckIn calls on a busy machine; seeding waits for it.
        registration_closes_at_ms: now + 8_000,
        check_in_opens_at_ms: 0,
        check_in_closes_at_ms: 0,
    };
    let created = client.create(organiser.request(request)).await.unwrap().into_inner().tournament.unwrap();
    let id = created.tournament_id;

    // Scripted bots (no model needed), easy so that one-point matches end quickly.
    let decider = Decider::spawn(PolicyKind::Tracker.build(None).unwrap(), BatchWindow::default());
    let stats = Arc::new(QueueStats::default());
    let mut bots = tokio::task::JoinSet::new();
    for (index, player) in entrants.iter().enumerate() {
        let mut bot = EntrantBot::new(player.clone(), lazy_channel(&up.tournaments).unwrap(), id);
        let (handle, stats) = (decider.handle(), stats.clone());
        let style = BotStyle { difficulty: Difficulty::EASY, seed: index as u64 };
        bots.spawn(async move { bot.play_out(&handle, style, &stats).await });
    }
    let mut reports = Vec::new();
    let all_played = async {
        while let Some(joined) = bots.join_next().await {
            reports.push(joined.unwrap().unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(600), all_played).await.expect("the tournament ends within 10 minutes");

    // The bracket: 16 seeded, 5 Swiss rounds of 8 tables, then 4 + 2 + 1 knockout games, all played.
    let tournament =
        client.get(organiser.request(GetRequest { tournament_id: id })).await.unwrap().into_inner().tournament.unwrap();
    assert_eq!(tournament.status(), TournamentStatus::Finished, "{}", tournament.bracket_text);
    let seeded = tournament.entrants.iter().filter(|entrant| entrant.seed > 0).count();
    assert_eq!(seeded, ENTRANTS as usize, "every bot registered and checked in in time");
    let stage_games = |stage: u32| {
        tournament.games.iter().filter(|game| game.key.as_ref().is_some_and(|key| key.stage == stage)).count()
    };
    assert_eq!(stage_games(0), (SWISS_ROUNDS * ENTRANTS / 2) as usize);
    assert_eq!(stage_games(1), (TOP - 1) as usize);
    for game in &tournament.games {
        assert_eq!(game.state(), GameState::Done, "{game:?}");
        let outcome = game.outcome.as_ref().and_then(|outcome| outcome.outcome.as_ref());
        assert!(matches!(outcome, Some(game_outcome::Outcome::Played(_))), "a forfeit instead of a match: {game:?}");
        assert_ne!(game.match_id, 0, "{game:?}");
    }
    let champion = tournament.champion_id.expect("a champion");
    let standings = client
        .standings(organiser.request(StandingsRequest { tournament_id: id }))
        .await
        .unwrap()
        .into_inner()
        .standings;
    assert_eq!(standings.first().map(|standing| standing.player_id), Some(champion));

    // What each bot saw agrees: five Swiss games each, the top eight more, the champion three.
    assert_eq!(reports.len(), ENTRANTS as usize);
    let total_matches: u32 = reports.iter().map(|report| report.matches).sum();
    assert_eq!(total_matches as usize, 2 * tournament.games.len(), "each game played by both of its bots");
    for report in &reports {
        // Out bots stop as soon as the engine says so; the others stay to the end.
        assert!(
            matches!(report.end, TournamentBotEnd::Finished { .. } | TournamentBotEnd::Eliminated { .. }),
            "{report:?}"
        );
        assert!(report.matches >= SWISS_ROUNDS, "{report:?}");
        if report.player_id == champion {
            assert_eq!(report.matches, SWISS_ROUNDS + 3, "{report:?}");
            assert_eq!(report.end, TournamentBotEnd::Finished { rank: Some(1), champion: Some(champion) });
        }
    }
    let _ = decider.finish();

    // The CLI shows the bracket and the champion.
    let tournaments_flag = format!("--tournaments={}", up.tournaments);
    let lobby_flag = format!("--lobby={}", up.lobby);
    let id_text = id.to_string();
    let show = rally(&[
        "tournament",
        "show",
        &id_text,
        &lobby_flag,
        &tournaments_flag,
        "--username=organiser",
        &format!("--password={PASSWORD}"),
    ]);
    assert!(show.status.success(), "{}", text(&show));
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(shown.contains(tournament.bracket_text.trim()), "{shown}");
    assert!(shown.contains("champion: "), "{shown}");

    // While it runs, anyone verifies the log over HTTP (only published entries are served), and a
    // witness pinned to its key cosigns it.
    let over_http = rally_ledger::verify(&up.ledger, &rally_ledger::VerifyOptions::default()).unwrap();
    assert_eq!((over_http.tournaments, over_http.finished), (1, 1));
    assert_eq!(over_http.match_results, tournament.games.len());
    let vkey = std::fs::read_to_string(dir.path().join("ledger").join(rally_ledger::VKEY_FILE)).unwrap();
    let http_state = dir.path().join("http-witness").display().to_string();
    let witnessed =
        rally(&["ledger", "witness", "--log", &up.ledger, "--key", vkey.trim(), "--state-dir", &http_state, "--once"]);
    assert!(witnessed.status.success(), "{}", text(&witnessed));
    assert!(String::from_utf8_lossy(&witnessed.stdout).contains("cosigned checkpoint"), "{}", text(&witnessed));

    // Stopped cleanly, the ledger verifies, every match re-simulated to its logged result.
    let stopped = tokio::task::spawn_blocking(move || sigint_and_wait(&mut up.child)).await.unwrap();
    assert!(stopped.success(), "rally up exited with {stopped}");
    let ledger_dir = dir.path().join("ledger");
    let options = rally_ledger::VerifyOptions { replay: true, key: None };
    let report = rally_ledger::verify(&ledger_dir.display().to_string(), &options).unwrap();
    assert_eq!((report.tournaments, report.finished), (1, 1));
    assert_eq!(report.match_results, tournament.games.len());
    assert_eq!(report.replayed, tournament.games.len(), "every match had a replay and replayed the same");

    let data = dir.path().display().to_string();
    let verified = rally(&["ledger", "verify", "--replay", &data]);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains(&format!("{} matches re-simulated", tournament.games.len())),
        "{}",
        text(&verified)
    );

    // A player's receipt for the final, checked offline against the log's key.
    let final_match = tournament.games.last().unwrap().match_id.to_string();
    let proof = rally(&["ledger", "proof", &data, "--match", &final_match]);
    assert!(proof.status.success(), "{}", text(&proof));
    let receipt = rally_ledger::Receipt::from_json(String::from_utf8_lossy(&proof.stdout).trim()).unwrap();
    let entry = rally_ledger::verify_receipt(&receipt, vkey.trim()).unwrap();
    assert!(
        matches!(entry, rally_ledger::entry::Entry::MatchResult { match_id, .. } if match_id.to_string() == final_match)
    );

    // A witness cosigns the log as it is.
    let state = dir.path().join("witness");
    let witnessed =
        rally(&["ledger", "witness", "--log", &data, "--state-dir", &state.display().to_string(), "--once"]);
    assert!(witnessed.status.success(), "{}", text(&witnessed));

    // One changed byte in a copy — in the entries, or in a replay file — and verify says where.
    let entries = std::fs::read(ledger_dir.join(rally_ledger::ENTRIES_FILE)).unwrap();
    let result_at = entries.windows(14).position(|window| window == b"\"match_result\"").unwrap();
    let replay = std::fs::read_dir(ledger_dir.join(rally_ledger::REPLAYS_DIR)).unwrap().next().unwrap().unwrap();
    let replay_name = PathBuf::from(rally_ledger::REPLAYS_DIR).join(replay.file_name());
    for (file, offset) in [(PathBuf::from(rally_ledger::ENTRIES_FILE), result_at + 20), (replay_name, 40)] {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&ledger_dir, copy.path());
        let path = copy.path().join(&file);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        let tampered = rally(&["ledger", "verify", &copy.path().display().to_string()]);
        assert!(!tampered.status.success(), "a changed byte in {} went unnoticed", file.display());
        assert!(text(&tampered).contains("does not verify"), "{}", text(&tampered));
    }
}
