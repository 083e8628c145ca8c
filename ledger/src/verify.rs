//! Verifying a whole log, from a directory or a URL, trusting nothing in it but the key.
//!
//! The checks, in order (the first failure is returned, naming the file or entry):
//! 1. the verifier key (pinned, else `log.vkey`), byte-exact;
//! 2. every checkpoint under `checkpoints/`: named by its size, signed by the key, for
//!    the key's origin, canonical; `checkpoint` equals the largest of them;
//! 3. in a directory, no file outside the layout;
//! 4. `entries.jsonl` holds exactly the latest checkpoint's entries, each ending in a
//!    newline: nothing missing, no unsigned tail;
//! 5. each entry decodes in canonical form; the tree rebuilt (with `ct-merkle`) has each
//!    checkpoint's root at its size, so consecutive checkpoints are consistent;
//! 6. every replay file named exists and hashes to its name, decodes as an input log
//!    whose digest the entry names; no file under `replays/` is unreferenced or misnamed;
//! 7. each tournament rebuilt with `rally_tournament` from its entries agrees with every
//!    logged `Paired`, result and `Finished`;
//! 8. with [`VerifyOptions::replay`], every match with a replay re-simulated bit-exactly
//!    gives the logged scores, winner and end reason.

use std::collections::{BTreeMap, BTreeSet};

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use rally_sim::replay::InputLog;
use rally_sim::{EndReason, PongWorld};
use rally_tournament::{GameKey, GameOutcome, Input, Tournament};
use sha2_011::Sha256;

use crate::entry::{Entry, is_sha256_hex};
use crate::note::{LogVerifier, VerifiedCheckpoint, hash_b64};
use crate::source::Source;
use crate::store::{parse_size_name, sha256_hex};
use crate::{CHECKPOINT_FILE, CHECKPOINTS_DIR, ENTRIES_FILE, REPLAY_SUFFIX, REPLAYS_DIR, VKEY_FILE};

/// What to check beyond the log's own integrity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Re-simulate every match that has a replay file and compare its result.
    pub replay: bool,
    /// The log's verifier key, pinned; `None` trusts the log's own `log.vkey`
    /// (which then only proves the log is self-consistent).
    pub key: Option<String>,
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The log's origin.
    pub origin: String,
    /// Entries in the log.
    pub size: u64,
    /// The latest root, base64.
    pub root: String,
    /// Checkpoints checked.
    pub checkpoints: usize,
    /// Tournaments rebuilt.
    pub tournaments: usize,
    /// Of those, finished.
    pub finished: usize,
    /// Match results logged.
    pub match_results: usize,
    /// Replay files checked (hash and digest).
    pub replay_files: usize,
    /// Matches re-simulated (0 without [`VerifyOptions::replay`]).
    pub replayed: usize,
}

/// Why a log does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The source cannot be read (a missing directory, a refused connection).
    #[error("cannot read the log: {0}")]
    Source(String),
    /// The verifier key is missing, malformed or not the pinned one.
    #[error("{file}: {reason}")]
    Key {
        /// `log.vkey` or `--key`.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint file is unsigned, malformed, misnamed or inconsistent.
    #[error("{file}: {reason}")]
    Checkpoint {
        /// The file, e.g. `checkpoints/12`.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A file that is not part of the layout (or a replay nothing references).
    #[error("{file}: {reason}")]
    UnexpectedFile {
        /// The file.
        file: String,
        /// Why it should not be there.
        reason: String,
    },
    /// The entries file does not hold exactly the signed entries.
    #[error("{ENTRIES_FILE}: {0}")]
    Entries(String),
    /// An entry is malformed, or disagrees with the tree, the bracket or its match.
    #[error("entry {index}: {reason}")]
    Entry {
        /// The entry's index in the log.
        index: u64,
        /// What is wrong.
        reason: String,
    },
    /// The entries do not hash to a checkpoint's root.
    #[error(
        "entries {first}..{size} do not hash to the root of checkpoint {size} (one of them was changed, or the checkpoint)"
    )]
    Root {
        /// The first entry not covered by the previous checkpoint.
        first: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// A replay file is missing, changed or not a replay of its match.
    #[error("{file}: {reason}")]
    Replay {
        /// The file, `replays/<hex>.replay`.
        file: String,
        /// What is wrong.
        reason: String,
    },
}

fn entry_error(index: usize, reason: impl Into<String>) -> VerifyError {
    VerifyError::Entry { index: index as u64, reason: reason.into() }
}

/// Verifies the log at `source` (a directory, or an `http://` URL of [`crate::router`])
/// and returns what it covered, or the first problem, naming the entry or file.
///
/// A directory being appended to may show a transient unsigned tail: verify a copy, a
/// stopped log, or the HTTP endpoint (which serves only published entries).
pub fn verify(source: &str, options: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let source = Source::parse(source).map_err(VerifyError::Source)?;
    if let Source::Dir(dir) = &source
        && !dir.is_dir()
    {
        return Err(VerifyError::Source(format!("{} is not a directory", dir.display())));
    }
    let verifier = read_key(&source, options.key.as_deref())?;
    let (checkpoints, latest) = read_checkpoints(&source, &verifier)?;
    if let Source::Dir(_) = &source {
        check_layout(&source)?;
    }
    let entries = read_entries(&source, latest.size)?;
    // Decoding first names the entry when one is malformed; the tree then catches a
    // change that still decodes.
    let decoded: Vec<Entry> = entries
        .iter()
        .enumerate()
        .map(|(index, leaf)| Entry::decode(leaf).map_err(|err| entry_error(index, err.to_string())))
        .collect::<Result<_, _>>()?;
    check_tree(entries, &checkpoints)?;
    let logs = check_replay_files(&source, &decoded)?;
    let (tournaments, finished) = check_brackets(&decoded)?;
    let replayed = if options.replay { replay_matches(&decoded, &logs)? } else { 0 };
    Ok(VerifyReport {
        origin: latest.origin.clone(),
        size: latest.size,
        root: hash_b64(&latest.root),
        checkpoints: checkpoints.len(),
        tournaments,
        finished,
        match_results: decoded.iter().filter(|entry| matches!(entry, Entry::MatchResult { .. })).count(),
        replay_files: logs.len(),
        replayed,
    })
}

fn read(source: &Source, name: &str) -> Result<Option<Vec<u8>>, VerifyError> {
    source.read(name).map_err(VerifyError::Source)
}

/// The key to check signatures with; `log.vkey` must be exactly `<key>\n` (and the
/// pinned key, when there is one).
fn read_key(source: &Source, pinned: Option<&str>) -> Result<LogVerifier, VerifyError> {
    let file = read(source, VKEY_FILE)?;
    let key_error = |file: &str, reason: String| VerifyError::Key { file: file.to_owned(), reason };
    let line = match (&file, pinned) {
        (_, Some(pinned)) => pinned.trim().to_owned(),
        (Some(bytes), None) => {
            String::from_utf8(bytes.clone()).map_err(|_| key_error(VKEY_FILE, "not UTF-8".into()))?
        }
        (None, None) => return Err(key_error(VKEY_FILE, "missing (pin the key to verify without it)".into())),
    };
    let verifier = LogVerifier::new(line.strip_suffix('\n').unwrap_or(&line))
        .map_err(|reason| key_error(if pinned.is_some() { "the pinned key" } else { VKEY_FILE }, reason))?;
    if let Some(bytes) = file
        && bytes != format!("{}\n", verifier.vkey()).as_bytes()
    {
        let reason = if pinned.is_some() { "is not the pinned key" } else { "is not one key line ending in a newline" };
        return Err(key_error(VKEY_FILE, reason.to_owned()));
    }
    Ok(verifier)
}

/// Every checkpoint, opened and sorted by size, and the latest (`checkpoint`).
fn read_checkpoints(
    source: &Source,
    verifier: &LogVerifier,
) -> Result<(Vec<VerifiedCheckpoint>, VerifiedCheckpoint), VerifyError> {
    let mut checkpoints = vec![];
    for name in source.checkpoint_names().map_err(VerifyError::Source)? {
        let file = format!("{CHECKPOINTS_DIR}/{name}");
        let checkpoint_error = |reason: String| VerifyError::Checkpoint { file: file.clone(), reason };
        let size = parse_size_name(&name).ok_or_else(|| checkpoint_error("not named by a tree size".to_owned()))?;
        let bytes = read(source, &file)?.ok_or_else(|| checkpoint_error("listed but missing".to_owned()))?;
        let checkpoint = verifier.open(&bytes).map_err(checkpoint_error)?;
        if checkpoint.size != size {
            return Err(checkpoint_error(format!("holds the checkpoint of size {}", checkpoint.size)));
        }
        checkpoints.push(checkpoint);
    }
    checkpoints.sort_by_key(|checkpoint| checkpoint.size);
    // Every log publishes the empty tree first; an intermediate checkpoint removed
    // cannot be noticed (nothing lists them), but this one can.
    if checkpoints.first().is_none_or(|first| first.size != 0) {
        return Err(VerifyError::Checkpoint {
            file: format!("{CHECKPOINTS_DIR}/0"),
            reason: "missing: every log publishes the empty tree first".to_owned(),
        });
    }
    let checkpoint_error = |reason: String| VerifyError::Checkpoint { file: CHECKPOINT_FILE.to_owned(), reason };
    let bytes = read(source, CHECKPOINT_FILE)?.ok_or_else(|| checkpoint_error("missing".to_owned()))?;
    let latest = verifier.open(&bytes).map_err(checkpoint_error)?;
    match checkpoints.last() {
        Some(newest) if newest.size == latest.size && newest.note == latest.note => {}
        Some(newest) if newest.size == latest.size => {
            return Err(checkpoint_error(format!(
                "differs from {CHECKPOINTS_DIR}/{}: two checkpoints of one size",
                latest.size
            )));
        }
        Some(newest) => {
            return Err(checkpoint_error(format!(
                "is of size {}, but the newest in {CHECKPOINTS_DIR}/ is {}",
                latest.size, newest.size
            )));
        }
        None => return Err(checkpoint_error(format!("{CHECKPOINTS_DIR}/ holds no checkpoint"))),
    }
    Ok((checkpoints, latest))
}

/// A directory holds the layout's files and nothing else, so that every byte under it
/// is checked by something.
fn check_layout(source: &Source) -> Result<(), VerifyError> {
    let Source::Dir(dir) = source else { return Ok(()) };
    let unexpected = |file: String, reason: &str| VerifyError::UnexpectedFile { file, reason: reason.to_owned() };
    let items = std::fs::read_dir(dir).map_err(|err| VerifyError::Source(format!("{}: {err}", dir.display())))?;
    for item in items {
        let item = item.map_err(|err| VerifyError::Source(format!("{}: {err}", dir.display())))?;
        let name = item.file_name().to_string_lossy().into_owned();
        let is_dir = item.file_type().is_ok_and(|kind| kind.is_dir());
        match name.as_str() {
            ENTRIES_FILE | CHECKPOINT_FILE | VKEY_FILE if !is_dir => {}
            CHECKPOINTS_DIR | REPLAYS_DIR if is_dir => {
                for inner in std::fs::read_dir(item.path()).map_err(|err| VerifyError::Source(err.to_string()))? {
                    let inner = inner.map_err(|err| VerifyError::Source(err.to_string()))?;
                    if !inner.file_type().is_ok_and(|kind| kind.is_file()) {
                        return Err(unexpected(
                            format!("{name}/{}", inner.file_name().to_string_lossy()),
                            "not a plain file",
                        ));
                    }
                }
            }
            _ => return Err(unexpected(name, "not part of a ledger directory")),
        }
    }
    Ok(())
}

/// The entries' lines: exactly `size` of them, each newline-terminated.
fn read_entries(source: &Source, size: u64) -> Result<Vec<Vec<u8>>, VerifyError> {
    let bytes = source.entries(size).map_err(VerifyError::Source)?;
    let mut lines = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 24));
    let mut rest = &bytes[..];
    while (lines.len() as u64) < size {
        let Some(newline) = rest.iter().position(|&byte| byte == b'\n') else {
            return Err(VerifyError::Entries(format!(
                "holds {} complete entries, but the latest checkpoint covers {size}",
                lines.len()
            )));
        };
        lines.push(rest[..newline].to_vec());
        rest = &rest[newline + 1..];
    }
    if !rest.is_empty() {
        return Err(VerifyError::Entries(format!(
            "{} bytes after entry {} are covered by no checkpoint (an unsigned tail)",
            rest.len(),
            size.saturating_sub(1)
        )));
    }
    Ok(lines)
}

/// Rebuilds the tree with `ct-merkle` and checks each checkpoint's root at its size.
fn check_tree(entries: Vec<Vec<u8>>, checkpoints: &[VerifiedCheckpoint]) -> Result<(), VerifyError> {
    let mut tree = MemoryBackedTree::<Sha256, Vec<u8>>::new();
    let mut entries = entries.into_iter();
    let mut previous = 0;
    for checkpoint in checkpoints {
        for _ in previous..checkpoint.size {
            // read_entries returned as many entries as the largest checkpoint's size.
            let Some(leaf) = entries.next() else { break };
            tree.push(leaf);
        }
        if tree.root().as_bytes().as_slice() != checkpoint.root {
            return Err(VerifyError::Root { first: previous, size: checkpoint.size });
        }
        previous = checkpoint.size;
    }
    Ok(())
}

/// Checks every replay file an entry names, and that the replay directory holds
/// nothing else. Returns the decoded logs by name.
fn check_replay_files(source: &Source, entries: &[Entry]) -> Result<BTreeMap<String, InputLog>, VerifyError> {
    let mut logs = BTreeMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let Entry::MatchResult { replay_sha256, input_log_sha256, .. } = entry else { continue };
        if replay_sha256.is_empty() {
            continue;
        }
        let file = format!("{REPLAYS_DIR}/{replay_sha256}{REPLAY_SUFFIX}");
        if !logs.contains_key(replay_sha256) {
            let bytes = read(source, &file)?
                .ok_or_else(|| entry_error(index, format!("names replay {file}, which is missing")))?;
            let replay_error = |reason: String| VerifyError::Replay { file: file.clone(), reason };
            let found = sha256_hex(&bytes);
            if found != *replay_sha256 {
                return Err(replay_error(format!("its SHA-256 is {found}, not its name")));
            }
            let log = InputLog::decode(&bytes).map_err(|err| replay_error(format!("not an input log: {err}")))?;
            logs.insert(replay_sha256.clone(), log);
        }
        let digest = hex::encode(logs[replay_sha256].digest());
        if digest != *input_log_sha256 {
            return Err(entry_error(
                index,
                format!("input_log_sha256 is {input_log_sha256:?}, but replay {file} holds the log of digest {digest}"),
            ));
        }
    }
    if let Some(names) = source.replay_names().map_err(VerifyError::Source)? {
        for name in names {
            let referenced =
                name.strip_suffix(REPLAY_SUFFIX).is_some_and(|hex| is_sha256_hex(hex) && logs.contains_key(hex));
            if !referenced {
                return Err(VerifyError::UnexpectedFile {
                    file: format!("{REPLAYS_DIR}/{name}"),
                    reason: "no entry names this replay file".to_owned(),
                });
            }
        }
    }
    Ok(logs)
}

/// One tournament as the verifier rebuilds it.
#[derive(Debug)]
struct Rebuilt {
    rules: rally_tournament::Rules,
    engine: Option<Tournament>,
    /// Games announced by `Paired` entries so far.
    paired: BTreeSet<GameKey>,
    finished: bool,
}

/// Rebuilds every tournament with the engine and checks each logged step against it.
/// Returns (tournaments, finished ones).
fn check_brackets(entries: &[Entry]) -> Result<(usize, usize), VerifyError> {
    let mut tournaments: BTreeMap<u64, Rebuilt> = BTreeMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let id = entry.tournament();
        if let Entry::TournamentCreated { rules, .. } = entry {
            if tournaments.contains_key(&id) {
                return Err(entry_error(index, format!("tournament {id} is created a second time")));
            }
            tournaments
                .insert(id, Rebuilt { rules: rules.clone(), engine: None, paired: BTreeSet::new(), finished: false });
            continue;
        }
        let Some(state) = tournaments.get_mut(&id) else {
            return Err(entry_error(index, format!("{} for tournament {id}, which was never created", entry.kind())));
        };
        if state.finished {
            return Err(entry_error(index, format!("{} for tournament {id} after its finished entry", entry.kind())));
        }
        if let Entry::EntrantsLocked { seeds, .. } = entry {
            if state.engine.is_some() {
                return Err(entry_error(index, format!("tournament {id}'s entrants are locked a second time")));
            }
            let engine = Tournament::new(state.rules.clone(), seeds.clone())
                .map_err(|err| entry_error(index, format!("the engine refuses tournament {id}: {err}")))?;
            if engine.seeds() != seeds.as_slice() {
                return Err(entry_error(index, format!("tournament {id}'s seeds are not in the engine's seed order")));
            }
            state.engine = Some(engine);
            continue;
        }
        let Some(engine) = state.engine.as_mut() else {
            return Err(entry_error(
                index,
                format!("{} for tournament {id} before its entrants were locked", entry.kind()),
            ));
        };
        let input = match entry {
            Entry::Paired { games, .. } => {
                let expected: Vec<_> =
                    engine.ready_games().into_iter().filter(|game| !state.paired.contains(&game.key)).collect();
                if *games != expected {
                    let keys = |games: &[rally_tournament::Game]| {
                        games
                            .iter()
                            .map(|game| format!("{} {}-{}", game.key, game.home, game.away))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(entry_error(
                        index,
                        format!("pairs [{}] but the engine made [{}] ready", keys(games), keys(&expected)),
                    ));
                }
                state.paired.extend(games.iter().map(|game| game.key));
                continue;
            }
            Entry::MatchResult { key, outcome, home, away, scores, .. } => {
                if !state.paired.contains(key) {
                    return Err(entry_error(index, format!("result for game {key}, which no paired entry announced")));
                }
                let game = engine.games().into_iter().map(|(game, _)| game).find(|game| game.key == *key);
                if let Some(game) = game
                    && (game.home, game.away) != (*home, *away)
                {
                    return Err(entry_error(
                        index,
                        format!(
                            "game {key} is {}-{} in the bracket, the result says {home}-{away}",
                            game.home, game.away
                        ),
                    ));
                }
                if let GameOutcome::Played { home_score, away_score } = outcome
                    && *scores != [*home_score, *away_score]
                {
                    return Err(entry_error(
                        index,
                        format!("outcome {home_score}-{away_score} but the match scores are {scores:?}"),
                    ));
                }
                Input::Result { key: *key, outcome: outcome.clone() }
            }
            Entry::Correction { key, outcome, reason, .. } => {
                Input::Correct { key: *key, outcome: outcome.clone(), reason: reason.clone() }
            }
            Entry::Withdrawal { entrant, .. } => Input::Withdraw { entrant: *entrant },
            Entry::Disqualification { entrant, reason, .. } => {
                Input::Disqualify { entrant: *entrant, reason: reason.clone() }
            }
            Entry::Finished { standings, champion, .. } => {
                if !engine.is_finished() {
                    return Err(entry_error(
                        index,
                        format!("tournament {id} finishes, but the engine has games to play"),
                    ));
                }
                if *standings != engine.standings() {
                    return Err(entry_error(index, format!("tournament {id}'s standings differ from the engine's")));
                }
                if *champion != engine.champion() {
                    return Err(entry_error(
                        index,
                        format!("champion {champion:?}, but the engine's is {:?}", engine.champion()),
                    ));
                }
                state.finished = true;
                continue;
            }
            Entry::TournamentCreated { .. } | Entry::EntrantsLocked { .. } => continue,
        };
        engine.apply(&input).map_err(|err| entry_error(index, format!("the engine refuses it: {err}")))?;
    }
    let finished = tournaments.values().filter(|state| state.finished).count();
    Ok((tournaments.len(), finished))
}

/// The snake_case name of an end reason, as results log it.
pub(crate) fn end_reason_name(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Score => "score",
        EndReason::Forfeit => "forfeit",
        EndReason::Abandoned => "abandoned",
        EndReason::TimeLimit => "time_limit",
    }
}

/// Re-simulates each match with a replay, on every core, and compares its result.
fn replay_matches(entries: &[Entry], logs: &BTreeMap<String, InputLog>) -> Result<usize, VerifyError> {
    let jobs: Vec<(usize, &Entry, &InputLog)> = entries
        .iter()
        .enumerate()
        .filter_map(|(index, entry)| match entry {
            Entry::MatchResult { replay_sha256, .. } if !replay_sha256.is_empty() => {
                logs.get(replay_sha256).map(|log| (index, entry, log))
            }
            _ => None,
        })
        .collect();
    let n_threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(jobs.len().max(1));
    let chunk = jobs.len().div_ceil(n_threads).max(1);
    let results: Vec<Result<(), VerifyError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || part.iter().try_for_each(|&(index, entry, log)| replay_one(index, entry, log)))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| Err(entry_error(0, "a replay thread panicked"))))
            .collect()
    });
    // The lowest failing entry, whichever thread found it.
    let mut failures: Vec<VerifyError> = results.into_iter().filter_map(Result::err).collect();
    failures.sort_by_key(|error| match error {
        VerifyError::Entry { index, .. } => *index,
        _ => u64::MAX,
    });
    match failures.into_iter().next() {
        Some(error) => Err(error),
        None => Ok(jobs.len()),
    }
}

fn replay_one(index: usize, entry: &Entry, log: &InputLog) -> Result<(), VerifyError> {
    let Entry::MatchResult { scores, winner_side, reason, .. } = entry else { return Ok(()) };
    let report = rally_sim::replay::replay::<PongWorld>(log)
        .map_err(|err| entry_error(index, format!("its replay does not run: {err}")))?;
    let Some(outcome) = report.outcome else {
        return Err(entry_error(index, "its replay ends before the match does"));
    };
    if outcome.scores != *scores {
        return Err(entry_error(index, format!("scores {scores:?}, but the replay ends {:?}", outcome.scores)));
    }
    if outcome.winner != *winner_side {
        return Err(entry_error(
            index,
            format!("winner side {winner_side:?}, but the replay's is {:?}", outcome.winner),
        ));
    }
    let replayed_reason = end_reason_name(outcome.reason);
    if replayed_reason != reason {
        return Err(entry_error(index, format!("end reason {reason:?}, but the replay ends by {replayed_reason:?}")));
    }
    Ok(())
}
