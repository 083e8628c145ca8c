//! The ledger end to end on real files: a small real log (one single-elimination cup of
//! four, its matches played in Pong and recorded), then recovery, receipts, the HTTP
//! API, the witness and tampering with every byte.

#![expect(clippy::unwrap_used, reason = "test setup: a failure should stop the test")]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rally_ledger::entry::{ENTRY_VERSION, Entry};
use rally_ledger::witness::{Witness, WitnessError, WitnessOutcome};
use rally_ledger::{
    Ledger, LedgerError, LogReader, LogSigner, Receipt, ReceiptError, VerifyError, VerifyOptions, verify,
    verify_receipt,
};
use rally_sim::replay::{InputLog, LogEntry, SeatAction, replay};
use rally_sim::{LifecycleConfig, MatchSpec, PongWorld};
use rally_tournament::{Entrant, Format, Game, GameOutcome, Input, Rules, Seeding, Stage, Tournament};

const ORIGIN: &str = "rally.test/ledger";

fn signer(seed: u8) -> LogSigner {
    LogSigner::from_seed([seed; 32], ORIGIN).unwrap()
}

fn verify_dir(dir: &Path) -> Result<rally_ledger::VerifyReport, VerifyError> {
    verify(dir.to_str().unwrap(), &VerifyOptions::default())
}

fn verify_with_replay(source: &str) -> Result<rally_ledger::VerifyReport, VerifyError> {
    verify(source, &VerifyOptions { replay: true, key: None })
}

/// A short Pong match (first point wins) whose idle paddles let a ball through; the
/// seed picks the serve. Returns its encoded input log and the replayed outcome.
fn pong_match(seed: u64) -> (Vec<u8>, rally_sim::MatchOutcome) {
    let mut entries = vec![
        LogEntry { tick: 0, seat: 0, action: SeatAction::Connect },
        LogEntry { tick: 0, seat: 1, action: SeatAction::Connect },
    ];
    // A few moves so the log is not trivial.
    for (tick, seat, input) in [(70, 0, 1), (90, 1, 2), (120, 0, 0), (150, 1, 0)] {
        entries.push(LogEntry { tick, seat, action: SeatAction::Input(input) });
    }
    let log = InputLog {
        game: "pong".to_owned(),
        spec: MatchSpec { n_seats: 2, points_to_win: 1, time_limit_ticks: 1200 },
        seed,
        lifecycle: LifecycleConfig::default(),
        entries,
        end_tick: 2000,
    };
    let outcome = replay::<PongWorld>(&log).unwrap().outcome.expect("the match ends within the log");
    (log.encode().unwrap(), outcome)
}

/// What the tournaments service would do, in miniature: play a 4-entrant single
/// elimination cup, appending each step as it happens (several checkpoints).
struct Cup {
    engine: Tournament,
    paired: Vec<rally_tournament::GameKey>,
    next_seed: u64,
}

impl Cup {
    const ID: u64 = 7;

    fn rules() -> Rules {
        Rules {
            stages: vec![Stage { format: Format::SingleElimination { third_place: false }, best_of: 1, advance: None }],
            seeding: Seeding::Rating,
        }
    }

    fn entrants() -> Vec<Entrant> {
        (1..=4)
            .map(|id| Entrant { id, name: format!("bot-{id}"), rating: 1500 + i32::try_from(id).unwrap() * 10 })
            .collect()
    }

    fn start(ledger: &mut Ledger) -> Self {
        let engine = Tournament::new(Self::rules(), Self::entrants()).unwrap();
        let mut cup = Self { engine, paired: vec![], next_seed: 1 };
        let mut batch = vec![
            Entry::TournamentCreated {
                v: ENTRY_VERSION,
                tournament: Self::ID,
                name: "test cup".to_owned(),
                rules: Self::rules(),
                created_at_ms: 1_700_000_000_000,
            },
            Entry::EntrantsLocked { v: ENTRY_VERSION, tournament: Self::ID, seeds: cup.engine.seeds().to_vec() },
        ];
        batch.extend(cup.newly_paired());
        ledger.append(&batch).unwrap();
        cup
    }

    fn newly_paired(&mut self) -> Option<Entry> {
        let games: Vec<Game> =
            self.engine.ready_games().into_iter().filter(|game| !self.paired.contains(&game.key)).collect();
        if games.is_empty() {
            return None;
        }
        self.paired.extend(games.iter().map(|game| game.key));
        Some(Entry::Paired { v: ENTRY_VERSION, tournament: Self::ID, games })
    }

    /// Plays a game on Pong (retrying seeds until the match has a winner) and logs it.
    fn play(&mut self, ledger: &mut Ledger, game: &Game) -> Entry {
        let (bytes, outcome) = loop {
            let (bytes, outcome) = pong_match(self.next_seed);
            self.next_seed += 1;
            if outcome.winner.is_some() {
                break (bytes, outcome);
            }
        };
        let replay_sha256 = ledger.put_replay(&bytes).unwrap();
        let log = InputLog::decode(&bytes).unwrap();
        let result = GameOutcome::Played { home_score: outcome.scores[0], away_score: outcome.scores[1] };
        self.engine.apply(&Input::Result { key: game.key, outcome: result.clone() }).unwrap();
        Entry::MatchResult {
            v: ENTRY_VERSION,
            tournament: Self::ID,
            key: game.key,
            match_id: 1000 + self.next_seed,
            outcome: result,
            home: game.home,
            away: game.away,
            scores: outcome.scores.clone(),
            winner_side: outcome.winner,
            reason: match outcome.reason {
                rally_sim::EndReason::Score => "score",
                rally_sim::EndReason::TimeLimit => "time_limit",
                rally_sim::EndReason::Forfeit => "forfeit",
                rally_sim::EndReason::Abandoned => "abandoned",
            }
            .to_owned(),
            shard: "shard-a".to_owned(),
            ended_at_ms: 1_700_000_100_000 + self.next_seed,
            input_log_sha256: hex::encode(log.digest()),
            replay_sha256,
        }
    }

    /// Plays every ready game, one append per round.
    fn play_round(&mut self, ledger: &mut Ledger) {
        let mut batch = vec![];
        for game in self.engine.ready_games() {
            batch.push(self.play(ledger, &game));
        }
        batch.extend(self.newly_paired());
        ledger.append(&batch).unwrap();
    }

    fn finished(&self) -> Entry {
        Entry::Finished {
            v: ENTRY_VERSION,
            tournament: Self::ID,
            standings: self.engine.standings(),
            champion: self.engine.champion(),
        }
    }
}

/// A whole small log: the cup played to the end, with a correction of the final.
fn small_log(dir: &Path) -> Ledger {
    let mut ledger = Ledger::open(dir, signer(1)).unwrap();
    let mut cup = Cup::start(&mut ledger);
    cup.play_round(&mut ledger);
    cup.play_round(&mut ledger);
    assert!(cup.engine.is_finished(), "a cup of four is over after two rounds");
    // The operator reverses the final (nothing depends on it): the engine takes it.
    let final_game = cup.engine.games().into_iter().last().unwrap().0;
    let correction = Entry::Correction {
        v: ENTRY_VERSION,
        tournament: Cup::ID,
        key: final_game.key,
        outcome: GameOutcome::Forfeit { winner: rally_tournament::Side::Away },
        reason: "home seat used a modified client".to_owned(),
        by: 99,
    };
    if let Entry::Correction { key, outcome, reason, .. } = &correction {
        cup.engine.apply(&Input::Correct { key: *key, outcome: outcome.clone(), reason: reason.clone() }).unwrap();
    }
    ledger.append(&[correction]).unwrap();
    ledger.append(&[cup.finished()]).unwrap();
    ledger
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

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![];
    for item in std::fs::read_dir(dir).unwrap() {
        let path = item.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn a_played_cup_verifies_with_replays() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = small_log(dir.path());
    let report = verify_with_replay(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(report.size, ledger.size());
    assert_eq!(report.origin, ORIGIN);
    assert_eq!((report.tournaments, report.finished), (1, 1));
    assert_eq!(report.match_results, 3);
    assert_eq!((report.replay_files, report.replayed), (3, 3));
    // Checkpoint 0 (the empty log) and one per append.
    assert_eq!(ledger.checkpoint_sizes(), [0, 3, 6, 7, 8, 9]);
    assert_eq!(report.checkpoints, 6);
    // Pinning the right key passes, another key fails on the first signature.
    let pinned = VerifyOptions { replay: false, key: Some(ledger.verifier_key()) };
    verify(dir.path().to_str().unwrap(), &pinned).unwrap();
    let other = VerifyOptions { replay: false, key: Some(signer(2).verifier_key()) };
    assert!(matches!(verify(dir.path().to_str().unwrap(), &other), Err(VerifyError::Key { .. })));
}

#[test]
fn every_flipped_byte_of_every_file_fails_verification() {
    let original = tempfile::tempdir().unwrap();
    drop(small_log(original.path()));
    let copy = tempfile::tempdir().unwrap();
    copy_dir(original.path(), copy.path());
    verify_dir(copy.path()).unwrap();
    let files = files_under(copy.path());
    assert!(files.len() >= 10, "entries, checkpoint, vkey, 6 checkpoints, 3 replays: {files:?}");
    let mut flips = 0;
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for position in 0..bytes.len() {
            // A low-bit flip is the subtlest change: digits stay digits, letters letters.
            let mut changed = bytes.clone();
            changed[position] ^= 0x01;
            std::fs::write(file, &changed).unwrap();
            let result = verify_dir(copy.path());
            assert!(result.is_err(), "flipping byte {position} of {} went unnoticed", file.display());
            flips += 1;
        }
        std::fs::write(file, &bytes).unwrap();
    }
    // Dropping a file or adding one is caught too, except an intermediate checkpoint
    // (nothing lists them; witnesses keep their own copies).
    let latest = std::fs::read_to_string(copy.path().join("checkpoint")).unwrap();
    let latest_size = latest.lines().nth(1).unwrap();
    let intermediate = |file: &Path| {
        file.parent().unwrap().ends_with("checkpoints") && !file.ends_with("0") && !file.ends_with(latest_size)
    };
    for file in files.iter().filter(|file| !intermediate(file)) {
        let bytes = std::fs::read(file).unwrap();
        std::fs::remove_file(file).unwrap();
        assert!(verify_dir(copy.path()).is_err(), "removing {} went unnoticed", file.display());
        std::fs::write(file, &bytes).unwrap();
    }
    std::fs::write(copy.path().join("notes.txt"), b"hello").unwrap();
    assert!(matches!(verify_dir(copy.path()), Err(VerifyError::UnexpectedFile { .. })));
    std::fs::remove_file(copy.path().join("notes.txt")).unwrap();
    verify_dir(copy.path()).unwrap();
    assert!(flips > 3000, "a real log of a few kilobytes: {flips} flips");
}

#[test]
fn a_changed_entry_is_named_by_index() {
    let dir = tempfile::tempdir().unwrap();
    drop(small_log(dir.path()));
    let path = dir.path().join("entries.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    // An escape serde would not write: same value, other bytes.
    let changed = text.replacen("test cup", "test\\u0020cup", 1);
    std::fs::write(&path, changed).unwrap();
    let error = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(error, VerifyError::Entry { index: 0, .. }), "{error}");
    // A digit changed inside the third line: the tree names the range it is in.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[3] = lines[3].replacen("\"shard-a\"", "\"shard-b\"", 1);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let error = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(error, VerifyError::Root { first: 3, size: 6 }), "{error}");
}

#[test]
fn the_bracket_and_the_replays_are_checked_against_the_engine_and_the_sim() {
    // A log whose every byte is signed, but which lies about the bracket.
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), signer(1)).unwrap();
    let cup = Cup::start(&mut ledger);
    let games = cup.engine.ready_games();
    let wrong = Entry::Paired {
        v: ENTRY_VERSION,
        tournament: Cup::ID,
        games: vec![Game { key: games[0].key, home: games[0].away, away: games[0].home }],
    };
    ledger.append(&[wrong]).unwrap();
    let error = verify_dir(dir.path()).unwrap_err();
    assert!(matches!(error, VerifyError::Entry { index: 3, .. }), "{error}");

    // A result whose logged score is not what its match replays to: found only by replay.
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), signer(1)).unwrap();
    let mut cup = Cup::start(&mut ledger);
    let game = cup.engine.ready_games()[0].clone();
    let mut result = cup.play(&mut ledger, &game);
    if let Entry::MatchResult { winner_side, .. } = &mut result {
        *winner_side = winner_side.map(|side| 1 - side);
    }
    ledger.append(&[result]).unwrap();
    verify_dir(dir.path()).unwrap();
    let error = verify_with_replay(dir.path().to_str().unwrap()).unwrap_err();
    assert!(matches!(&error, VerifyError::Entry { index: 3, reason } if reason.contains("winner side")), "{error}");

    // An unreferenced replay file is not part of the log; discarding it mends that,
    // and a referenced one cannot be discarded.
    let orphan = ledger.put_replay(b"not referenced").unwrap();
    assert!(matches!(verify_dir(dir.path()), Err(VerifyError::UnexpectedFile { .. })));
    assert!(ledger.discard_replay(&orphan).unwrap());
    let Some(Entry::MatchResult { replay_sha256, .. }) =
        ledger.entries(3..4).unwrap().pop().map(|bytes| Entry::decode(&bytes).unwrap())
    else {
        panic!("entry 3 is the result")
    };
    assert!(!ledger.discard_replay(&replay_sha256).unwrap());
    verify_dir(dir.path()).unwrap();
}

#[test]
fn a_torn_tail_is_truncated_on_open_and_covered_entries_are_never_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = small_log(dir.path());
    let size = ledger.size();
    let root = ledger.root();
    drop(ledger);
    let path = dir.path().join("entries.jsonl");
    let clean = std::fs::read(&path).unwrap();

    // An append that wrote a whole entry and half of another, then crashed before its
    // checkpoint: verify refuses the unsigned tail, open cuts it.
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"{\"kind\":\"withdrawal\",\"v\":1,\"tournament\":7,\"entrant\":1}\n{\"kind\":\"wi").unwrap();
    drop(file);
    assert!(matches!(verify_dir(dir.path()), Err(VerifyError::Entries(_))));
    let mut ledger = Ledger::open(dir.path(), signer(1)).unwrap();
    assert_eq!((ledger.size(), ledger.root()), (size, root));
    assert_eq!(std::fs::read(&path).unwrap(), clean);
    verify_dir(dir.path()).unwrap();
    // It goes on appending where it was.
    let range = ledger.append(&[Entry::TournamentCreated {
        v: ENTRY_VERSION,
        tournament: 8,
        name: "second".to_owned(),
        rules: Cup::rules(),
        created_at_ms: 1,
    }]);
    assert_eq!(range.unwrap(), size..size + 1);
    drop(ledger);
    verify_dir(dir.path()).unwrap();

    // A crash between the two renames of a publish: the newest checkpoint is only in
    // checkpoints/. Open completes the publish.
    let newest = std::fs::read(dir.path().join("checkpoint")).unwrap();
    std::fs::copy(dir.path().join("checkpoints").join(size.to_string()), dir.path().join("checkpoint")).unwrap();
    std::fs::write(dir.path().join("checkpoint.tmp"), b"half").unwrap();
    let ledger = Ledger::open(dir.path(), signer(1)).unwrap();
    assert_eq!(ledger.size(), size + 1);
    assert_eq!(std::fs::read(dir.path().join("checkpoint")).unwrap(), newest);
    drop(ledger);
    verify_dir(dir.path()).unwrap();

    // A changed byte inside a signed entry is corruption: open refuses, changes nothing.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.iter().position(|&byte| byte == b'4').unwrap();
    bytes[at] = b'5';
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(Ledger::open(dir.path(), signer(1)), Err(LedgerError::Corrupt { .. })));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    // Another key cannot take over the directory.
    assert!(matches!(Ledger::open(dir.path(), signer(2)), Err(LedgerError::KeyMismatch { .. })));
}

#[test]
fn receipts_prove_each_entry_offline() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = small_log(dir.path());
    let vkey = ledger.verifier_key();
    let entries = ledger.entries(0..ledger.size()).unwrap();
    for index in 0..ledger.size() {
        let receipt = Receipt::from_json(&ledger.receipt(index).unwrap().to_json()).unwrap();
        let entry = verify_receipt(&receipt, &vkey).unwrap();
        assert_eq!(entry.encode(), entries[index as usize]);
        // The same proof does not prove a neighbour, a changed entry or another key's log.
        let moved = Receipt { index: (index + 1) % ledger.size(), ..receipt.clone() };
        assert!(matches!(verify_receipt(&moved, &vkey), Err(ReceiptError::NotIncluded { .. })));
        let changed = Receipt { entry: receipt.entry.replacen('7', "8", 1), ..receipt.clone() };
        assert!(matches!(verify_receipt(&changed, &vkey), Err(ReceiptError::NotIncluded { .. })));
        assert!(matches!(verify_receipt(&receipt, &signer(2).verifier_key()), Err(ReceiptError::Checkpoint(_))));
    }
    // The same receipts from the files alone, without the key, past a torn tail.
    let mut file = std::fs::OpenOptions::new().append(true).open(dir.path().join("entries.jsonl")).unwrap();
    file.write_all(b"{\"kind\":\"with").unwrap();
    let reader = LogReader::open(dir.path()).unwrap();
    assert_eq!(reader.size(), ledger.size());
    for index in 0..ledger.size() {
        assert_eq!(reader.receipt(index).unwrap(), ledger.receipt(index).unwrap());
    }
    let (first_result, match_id) = (0..reader.size())
        .find_map(|index| match Entry::decode(reader.entry(index).unwrap()).unwrap() {
            Entry::MatchResult { match_id, .. } => Some((index, match_id)),
            _ => None,
        })
        .unwrap();
    assert_eq!(reader.find_match_result(match_id), Some(first_result));
    assert_eq!(reader.find_match_result(5), None);
    assert!(matches!(reader.receipt(ledger.size()), Err(LedgerError::Range(_))));
    // Proofs at an earlier size check against that checkpoint.
    let sizes = ledger.checkpoint_sizes().to_vec();
    for pair in sizes.windows(2).filter(|pair| pair[0] > 0) {
        assert!(ledger.consistency_proof(pair[0], pair[1]).is_ok());
        assert!(ledger.inclusion_proof(pair[0] - 1, pair[0]).is_ok());
    }
    assert!(matches!(ledger.inclusion_proof(ledger.size(), ledger.size()), Err(LedgerError::Range(_))));
    assert!(matches!(ledger.consistency_proof(0, 1), Err(LedgerError::Range(_))));
    assert!(matches!(ledger.consistency_proof(1, ledger.size() + 1), Err(LedgerError::Range(_))));
}

/// Serves `ledger` on a loopback port from a thread of its own; returns the base URL.
fn serve(ledger: Arc<Mutex<Ledger>>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, rally_ledger::router(ledger)).await.unwrap();
        });
    });
    format!("http://{address}")
}

/// A raw GET: (status, body).
fn get(base: &str, path: &str) -> (u16, String) {
    let address = base.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[test]
fn the_http_api_serves_what_verify_and_the_witness_need() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(small_log(dir.path())));
    let base = serve(ledger.clone());
    let (size, checkpoint, vkey) = {
        let ledger = ledger.lock().unwrap();
        (ledger.size(), ledger.checkpoint(), ledger.verifier_key())
    };
    let report = verify_with_replay(&base).unwrap();
    assert_eq!((report.size, report.replayed), (size, 3));

    assert_eq!(get(&base, "/checkpoint"), (200, checkpoint.clone()));
    assert_eq!(get(&base, &format!("/checkpoints/{size}")), (200, checkpoint));
    assert_eq!(get(&base, "/log.vkey"), (200, format!("{vkey}\n")));
    let (status, lines) = get(&base, "/entries?start=1&end=3");
    assert_eq!(status, 200);
    assert_eq!(lines.lines().count(), 2);
    let (status, receipt) = get(&base, "/receipt?index=4");
    assert_eq!(status, 200);
    verify_receipt(&Receipt::from_json(&receipt).unwrap(), &vkey).unwrap();
    assert_eq!(get(&base, "/proof/inclusion?index=0&size=3").0, 200);
    assert_eq!(get(&base, "/proof/consistency?old=3&new=6").0, 200);
    for bad in [
        "/entries?start=3&end=1",
        "/entries?start=0&end=20000",
        "/entries?start=0",
        "/entries?start=0&end=x",
        "/entries?start=0&end=999",
        "/proof/inclusion?index=9&size=3",
        "/proof/consistency?old=0&new=3",
        "/proof/consistency?old=1&new=3&old=2",
        "/checkpoints/007",
        "/replays/nothex.replay",
    ] {
        let (status, message) = get(&base, bad);
        assert_eq!(status, 400, "{bad}: {message}");
        assert!(!message.trim().is_empty(), "{bad} says why");
    }
    assert_eq!(get(&base, "/checkpoints/2").0, 404);
    assert_eq!(get(&base, &format!("/replays/{}.replay", "0".repeat(64))).0, 404);

    // A witness follows the served log as it grows.
    let state = tempfile::tempdir().unwrap();
    let mut witness = Witness::open(state.path(), "witness.test", Some(&vkey)).unwrap();
    assert!(matches!(witness.poll(&base).unwrap(), WitnessOutcome::Cosigned { size: s, .. } if s == size));
    assert_eq!(witness.poll(&base).unwrap(), WitnessOutcome::Unchanged { size });
    ledger.lock().unwrap().append(&[Entry::Withdrawal { v: ENTRY_VERSION, tournament: 1, entrant: 2 }]).unwrap();
    let WitnessOutcome::Cosigned { size: new_size, note } = witness.poll(&base).unwrap() else {
        panic!("a grown log is cosigned")
    };
    assert_eq!(new_size, size + 1);
    assert_eq!(note.matches("\n— ").count(), 2, "the log's signature and the witness's: {note}");
    assert!(note.contains("— witness.test "));
}

#[test]
fn the_witness_catches_a_log_with_two_histories() {
    let honest = tempfile::tempdir().unwrap();
    let ledger = small_log(honest.path());
    let vkey = ledger.verifier_key();
    let seen = ledger.size();
    drop(ledger);
    let state = tempfile::tempdir().unwrap();
    let mut witness = Witness::open(state.path(), "witness.test", Some(&vkey)).unwrap();
    witness.poll(honest.path().to_str().unwrap()).unwrap();
    assert_eq!(witness.last_seen().unwrap().0, seen);

    // The same key signs another history: same first entries, then a different one.
    let forked = tempfile::tempdir().unwrap();
    let mut fork = Ledger::open(forked.path(), signer(1)).unwrap();
    let mut honest_entries: Vec<Entry> = Ledger::open(honest.path(), signer(1))
        .unwrap()
        .entries(0..seen)
        .unwrap()
        .iter()
        .map(|bytes| Entry::decode(bytes).unwrap())
        .collect();
    honest_entries[seen as usize - 1] = Entry::Withdrawal { v: ENTRY_VERSION, tournament: Cup::ID, entrant: 1 };
    fork.append(&honest_entries).unwrap();
    let fork_dir = forked.path().to_str().unwrap();
    // Same size, other root.
    let error = witness.poll(fork_dir).unwrap_err();
    assert!(
        matches!(&error, WitnessError::Fork { old_size, new_size, .. } if *old_size == seen && *new_size == seen),
        "{error}"
    );
    // Larger, but not an extension.
    fork.append(&[Entry::Withdrawal { v: ENTRY_VERSION, tournament: Cup::ID, entrant: 2 }]).unwrap();
    let error = witness.poll(fork_dir).unwrap_err();
    assert!(matches!(&error, WitnessError::Fork { new_size, .. } if *new_size == seen + 1), "{error}");
    assert!(error.to_string().contains(&format!("checkpoint {seen}")), "{error}");

    // The witness's state survives a restart, and it still refuses the fork.
    drop(witness);
    let mut witness = Witness::open(state.path(), "witness.test", None).unwrap();
    assert_eq!(witness.last_seen().unwrap().0, seen);
    assert!(matches!(witness.poll(fork_dir), Err(WitnessError::Fork { .. })));
    // The honest log, grown, is still fine.
    let mut ledger = Ledger::open(honest.path(), signer(1)).unwrap();
    ledger.append(&[Entry::Withdrawal { v: ENTRY_VERSION, tournament: 1, entrant: 9 }]).unwrap();
    assert!(matches!(witness.poll(honest.path().to_str().unwrap()), Ok(WitnessOutcome::Cosigned { .. })));
    // A witness pinned to another key will not follow this log.
    assert!(Witness::open(state.path(), "witness.test", Some(&signer(3).verifier_key())).is_err());
}

/// LEDGER.md names every kind, file and route the code has, so it cannot drift.
#[test]
fn ledger_md_names_every_kind_file_and_route() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../LEDGER.md")).unwrap();
    for kind in rally_ledger::entry::ENTRY_KINDS {
        assert!(doc.contains(&format!("| `{kind}` |")), "LEDGER.md lacks kind {kind}");
    }
    for file in [
        rally_ledger::ENTRIES_FILE,
        rally_ledger::CHECKPOINT_FILE,
        rally_ledger::CHECKPOINTS_DIR,
        rally_ledger::REPLAYS_DIR,
        rally_ledger::VKEY_FILE,
        rally_ledger::REPLAY_SUFFIX,
        rally_ledger::witness::WITNESS_KEY_FILE,
        rally_ledger::witness::COSIGNED_DIR,
    ] {
        assert!(doc.contains(file), "LEDGER.md lacks {file}");
    }
    let routes = [
        "/checkpoint`",
        "/checkpoints`",
        "/checkpoints/{size}",
        "/entries?start=&end=",
        "/proof/inclusion?index=&size=",
        "/proof/consistency?old=&new=",
        "/receipt?index=",
        "/replays/{hex}.replay",
        "/log.vkey",
    ];
    for route in routes {
        assert!(doc.contains(&format!("GET {route}")), "LEDGER.md lacks GET {route}");
    }
    assert_eq!(rally_ledger::MAX_ENTRIES_PER_REQUEST, 10_000);
    assert!(doc.contains("at most 10,000"));
}
