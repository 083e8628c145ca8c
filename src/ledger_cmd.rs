//! `rally ledger`: the results log from the outside — `verify` a log (a data dir,
//! a ledger dir or an `http://` URL), print a match's `proof` (a receipt a player
//! keeps), and run a `witness` that follows a log and cosigns its checkpoints.
//!
//! Everything here is a thin shell over `rally_ledger`: the checks, the formats and
//! the witness's rules live there (and in `LEDGER.md`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rally_ledger::entry::Entry;
use rally_ledger::witness::{Witness, WitnessError, WitnessOutcome};
use rally_ledger::{CHECKPOINT_FILE, ENTRIES_FILE, Receipt, VKEY_FILE, VerifyOptions};

/// The ledger directory's name inside a data dir (`rally up --data-dir D` writes `D/ledger`).
pub const LEDGER_DIR: &str = "ledger";

/// `rally ledger` subcommands.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: LedgerCommand,
}

/// What `rally ledger` does.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Check a log: signatures, the tree, replay files, the brackets its results imply
    /// (and with --replay every match re-simulated). Exits non-zero naming the entry or file at fault.
    Verify(VerifyArgs),
    /// Print the receipt of a logged match: its entry, an inclusion proof and the signed checkpoint (JSON).
    Proof(ProofArgs),
    /// Follow a log, check each new checkpoint extends the last one seen, and cosign it;
    /// exits non-zero when the log shows two histories.
    Witness(WitnessArgs),
    /// Serve a log read-only over HTTP (the paths `rally ledger verify http://…` and witnesses read).
    /// It opens the log as its writer: not while `rally up` runs on it (that one serves --ledger-addr).
    Serve(ServeArgs),
}

/// `rally ledger serve` flags.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A data dir (its `ledger/` is served) or a ledger dir.
    pub source: PathBuf,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:7105")]
    pub listen: std::net::SocketAddr,
    /// The log's signing key [default: `ledger.key` beside the ledger dir, where `rally up` keeps it].
    #[arg(long)]
    pub key_file: Option<PathBuf>,
}

/// `rally ledger verify` flags.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// A data dir (its `ledger/` is read), a ledger dir, or an `http://` URL serving a log.
    pub source: String,
    /// Also re-simulate every logged match from its input log and compare scores, winner and end reason.
    #[arg(long)]
    pub replay: bool,
    /// The log's verifier key (C2SP vkey) to pin [default: the log's own log.vkey, which only
    /// proves the log is self-consistent].
    #[arg(long)]
    pub key: Option<String>,
}

/// `rally ledger proof` flags.
#[derive(Debug, Clone, Args)]
pub struct ProofArgs {
    /// A data dir (its `ledger/` is read) or a ledger dir.
    pub source: PathBuf,
    /// The match id whose result to prove.
    #[arg(long = "match", value_name = "ID", required_unless_present = "index", conflicts_with = "index")]
    pub match_id: Option<u64>,
    /// Prove the entry at this index instead.
    #[arg(long)]
    pub index: Option<u64>,
    /// The log's verifier key the receipt is checked against before printing [default: log.vkey].
    #[arg(long)]
    pub key: Option<String>,
}

/// `rally ledger witness` flags.
#[derive(Debug, Clone, Args)]
pub struct WitnessArgs {
    /// The log to follow: a data dir, a ledger dir, or an `http://` URL.
    #[arg(long)]
    pub log: String,
    /// The witness's own directory: its key, the pinned log key, every checkpoint it cosigned.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The log's verifier key, pinned on first use [default: the one pinned in --state-dir; on
    /// first use with a directory log, that log's log.vkey].
    #[arg(long)]
    pub key: Option<String>,
    /// The witness's name (its key name in cosignatures).
    #[arg(long, default_value = "rally-witness")]
    pub name: String,
    /// Seconds between looks at the log.
    #[arg(long, default_value_t = 5.0)]
    pub interval: f64,
    /// Look once, cosign if there is something new, and exit.
    #[arg(long)]
    pub once: bool,
}

/// Runs `rally ledger`.
pub fn run(args: LedgerArgs) -> anyhow::Result<()> {
    match args.command {
        LedgerCommand::Verify(args) => verify(&args),
        LedgerCommand::Proof(args) => proof(&args),
        LedgerCommand::Witness(args) => witness(&args),
        LedgerCommand::Serve(args) => serve(&args),
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let dir = resolve_dir(&args.source);
    // The origin is the verifier key's name (`<origin>+<key id>+<key>`): the signer must match it.
    let vkey = read_vkey(&dir).with_context(|| format!("{} holds no log to serve", dir.display()))?;
    let origin = vkey.split('+').next().unwrap_or_default().to_owned();
    let key_file = match &args.key_file {
        Some(path) => path.clone(),
        None => dir.parent().unwrap_or(Path::new(".")).join("ledger.key"),
    };
    if !key_file.exists() {
        bail!("no signing key at {} (pass --key-file)", key_file.display());
    }
    let signer = rally_ledger::LogSigner::load_or_create(&key_file, &origin)?;
    let ledger = rally_ledger::Ledger::open(&dir, signer).with_context(|| format!("opening {}", dir.display()))?;
    let size = ledger.size();
    let router = rally_ledger::router(std::sync::Arc::new(std::sync::Mutex::new(ledger)));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async move {
        let shutdown = crate::common::shutdown_signal()?;
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("serving {} ({size} entries) on http://{addr}: `rally ledger verify http://{addr}`", dir.display());
        axum::serve(listener, router).with_graceful_shutdown(shutdown).await.context("serving the ledger")
    })
}

/// Where the log of `source` is: a URL as given; a directory that holds a log
/// itself; else its `ledger/` subdirectory when there is one; else `source` (and
/// reading it says what is missing).
pub fn resolve_source(source: &str) -> String {
    if source.contains("://") {
        return source.to_owned();
    }
    resolve_dir(Path::new(source)).display().to_string()
}

fn resolve_dir(dir: &Path) -> PathBuf {
    let holds_log = |dir: &Path| [VKEY_FILE, CHECKPOINT_FILE, ENTRIES_FILE].iter().any(|name| dir.join(name).exists());
    let nested = dir.join(LEDGER_DIR);
    if !holds_log(dir) && nested.is_dir() { nested } else { dir.to_path_buf() }
}

fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let source = resolve_source(&args.source);
    let options = VerifyOptions { replay: args.replay, key: args.key.clone() };
    let report =
        rally_ledger::verify(&source, &options).map_err(|err| anyhow::anyhow!("{source} does not verify: {err}"))?;
    println!(
        "ok: {source}: log {} with {} entries, root {}, {} checkpoints",
        report.origin, report.size, report.root, report.checkpoints
    );
    let replayed = if args.replay {
        format!("{} matches re-simulated with the same result", report.replayed)
    } else {
        "no match re-simulated (--replay does)".to_owned()
    };
    println!(
        "    {} tournaments ({} finished) agree with their brackets; {} match results, {} replay files; {replayed}",
        report.tournaments, report.finished, report.match_results, report.replay_files
    );
    Ok(())
}

fn proof(args: &ProofArgs) -> anyhow::Result<()> {
    let dir = resolve_dir(&args.source);
    let receipt = receipt_in_dir(&dir, args.match_id, args.index)?;
    let vkey = match &args.key {
        Some(key) => key.trim().to_owned(),
        None => read_vkey(&dir)?,
    };
    // A receipt is only printed once it proves its entry, so a damaged log never hands one out.
    rally_ledger::verify_receipt(&receipt, &vkey).context("the receipt does not check against the log's key")?;
    println!("{}", receipt.to_json());
    Ok(())
}

fn read_vkey(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(VKEY_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim().to_owned())
}

/// The receipt of the result of `match_id` (or of entry `index`) in the log at
/// `dir`, against its latest checkpoint, read from the files alone: no signing key,
/// so it works on a copy or while the log is being appended to.
fn receipt_in_dir(dir: &Path, match_id: Option<u64>, index: Option<u64>) -> anyhow::Result<Receipt> {
    let checkpoint_path = dir.join(CHECKPOINT_FILE);
    let checkpoint = std::fs::read_to_string(&checkpoint_path)
        .with_context(|| format!("reading {} (is {} a ledger?)", checkpoint_path.display(), dir.display()))?;
    // A C2SP checkpoint's body is `origin`, `size`, `root`: the size is line two.
    let size: u64 = checkpoint
        .lines()
        .nth(1)
        .and_then(|line| line.parse().ok())
        .with_context(|| format!("{} is not a checkpoint", checkpoint_path.display()))?;
    let entries_path = dir.join(ENTRIES_FILE);
    let bytes = std::fs::read(&entries_path).with_context(|| format!("reading {}", entries_path.display()))?;
    let leaves: Vec<&[u8]> = bytes.split(|&byte| byte == b'\n').take(usize::try_from(size)?).collect();
    if (leaves.len() as u64) < size {
        bail!("{} holds {} entries, the checkpoint covers {size}", entries_path.display(), leaves.len());
    }
    let index = match (match_id, index) {
        (_, Some(index)) => index,
        (Some(match_id), None) => leaves
            .iter()
            .position(|leaf| {
                matches!(Entry::decode(leaf), Ok(Entry::MatchResult { match_id: logged, .. }) if logged == match_id)
            })
            .with_context(|| format!("no result of match {match_id} in the {size} entries of {}", dir.display()))?
            as u64,
        (None, None) => bail!("name a match (--match ID) or an entry (--index N)"),
    };
    if index >= size {
        bail!("entry {index} is not in the log of {size} entries");
    }
    let mut tree = ct_merkle::mem_backed_tree::MemoryBackedTree::<sha2_011::Sha256, Vec<u8>>::new();
    for leaf in &leaves {
        tree.push(leaf.to_vec());
    }
    let proof = tree.prove_inclusion(usize::try_from(index)?);
    let inclusion_proof = proof
        .as_bytes()
        .chunks_exact(32)
        .map(|hash| {
            let hash: [u8; 32] = hash.try_into().unwrap_or_default();
            tlog_tiles::Hash(hash).to_string()
        })
        .collect();
    Ok(Receipt {
        entry: String::from_utf8_lossy(leaves[index as usize]).into_owned(),
        index,
        tree_size: size,
        inclusion_proof,
        checkpoint,
    })
}

fn witness(args: &WitnessArgs) -> anyhow::Result<()> {
    let source = resolve_source(&args.log);
    let pinned = args.state_dir.join(VKEY_FILE).exists();
    let key = match (&args.key, pinned, source.contains("://")) {
        (Some(key), _, _) => Some(key.trim().to_owned()),
        (None, true, _) => None,
        (None, false, false) => {
            let key = read_vkey(Path::new(&source))?;
            println!("witness: pinning the log key {key} found in {source} (pass --key to pin one you trust)");
            Some(key)
        }
        (None, false, true) => bail!("pass --key: the log's verifier key (its GET /log.vkey), pinned on first use"),
    };
    let mut witness = Witness::open(&args.state_dir, &args.name, key.as_deref())
        .with_context(|| format!("opening the witness state in {}", args.state_dir.display()))?;
    println!("witness {} following {source}", witness.verifier_key());
    let interval = Duration::from_secs_f64(args.interval.max(0.05));
    loop {
        match witness.poll(&source) {
            Ok(WitnessOutcome::Cosigned { size, .. }) => println!("cosigned checkpoint of {size} entries"),
            Ok(WitnessOutcome::Unchanged { size }) => tracing::debug!(size, "checkpoint unchanged"),
            Err(err @ (WitnessError::Fork { .. } | WitnessError::Checkpoint(_))) => {
                eprintln!("WITNESS ALARM: {err}");
                return Err(anyhow::Error::from(err).context(format!("the log at {source} cannot be trusted")));
            }
            // The log may be restarting or unreachable for a moment: look again later.
            Err(err) if !args.once => tracing::warn!(error = %err, "witness: the log could not be read; retrying"),
            Err(err) => return Err(err.into()),
        }
        if args.once {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use rally_ledger::entry::ENTRY_VERSION;
    use rally_ledger::{Ledger, LogSigner};

    use super::*;

    fn result(match_id: u64) -> Entry {
        Entry::MatchResult {
            v: ENTRY_VERSION,
            tournament: 1,
            key: rally_tournament::GameKey { stage: 0, round: 0, table: 0, game: 0 },
            match_id,
            outcome: rally_tournament::GameOutcome::Played { home_score: 2, away_score: 1 },
            home: 10,
            away: 11,
            scores: vec![2, 1],
            winner_side: Some(0),
            reason: "score".to_owned(),
            shard: "up-1".to_owned(),
            ended_at_ms: 1,
            input_log_sha256: String::new(),
            replay_sha256: String::new(),
        }
    }

    #[test]
    fn receipts_from_the_files_alone_equal_the_ledgers_own_and_name_missing_matches() {
        let data = tempfile::tempdir().expect("temp dir");
        let dir = data.path().join(LEDGER_DIR);
        let signer = LogSigner::load_or_create(&data.path().join("ledger.key"), "rally.test/ledger").expect("key");
        let mut ledger = Ledger::open(&dir, signer).expect("open");
        ledger.append(&[Entry::Withdrawal { v: ENTRY_VERSION, tournament: 1, entrant: 3 }]).expect("append");
        ledger.append(&[result(41), result(42), result(43)]).expect("append");
        // A data dir resolves to its ledger; a ledger dir to itself.
        assert_eq!(resolve_dir(data.path()), dir);
        assert_eq!(resolve_dir(&dir), dir);
        for (match_id, index) in [(41, 1), (42, 2), (43, 3)] {
            let mine = receipt_in_dir(&dir, Some(match_id), None).expect("receipt");
            assert_eq!(mine, ledger.receipt(index).expect("the ledger's receipt"), "match {match_id}");
            let entry = rally_ledger::verify_receipt(&mine, &ledger.verifier_key()).expect("proves");
            assert_eq!(entry, result(match_id));
        }
        assert_eq!(receipt_in_dir(&dir, None, Some(0)).expect("by index"), ledger.receipt(0).expect("receipt"));
        let err = receipt_in_dir(&dir, Some(44), None).expect_err("no such match");
        assert!(format!("{err:#}").contains("no result of match 44"), "{err:#}");
        assert!(receipt_in_dir(&dir, None, Some(4)).is_err(), "past the end");
    }

    #[test]
    fn the_witness_cosigns_a_growing_log_once_per_checkpoint() {
        let data = tempfile::tempdir().expect("temp dir");
        let dir = data.path().join(LEDGER_DIR);
        let signer = LogSigner::load_or_create(&data.path().join("ledger.key"), "rally.test/ledger").expect("key");
        let mut ledger = Ledger::open(&dir, signer).expect("open");
        ledger.append(&[result(1)]).expect("append");
        let state = data.path().join("witness");
        let args = WitnessArgs {
            log: data.path().display().to_string(),
            state_dir: state.clone(),
            key: None,
            name: "test-witness".to_owned(),
            interval: 1.0,
            once: true,
        };
        witness(&args).expect("first look pins the key and cosigns");
        ledger.append(&[result(2)]).expect("append");
        witness(&args).expect("second look");
        let cosigned = std::fs::read_dir(state.join(rally_ledger::witness::COSIGNED_DIR)).expect("cosigned").count();
        assert_eq!(cosigned, 2, "one cosignature per new checkpoint");
        // Another log in the same place (a fork: a new key, or another history) is refused.
        let other = tempfile::tempdir().expect("temp dir");
        let forked = LogSigner::load_or_create(&other.path().join("ledger.key"), "rally.test/ledger").expect("key");
        let mut fork = Ledger::open(&other.path().join(LEDGER_DIR), forked).expect("open");
        fork.append(&[result(9)]).expect("append");
        let refused = WitnessArgs { log: other.path().display().to_string(), ..args };
        assert!(witness(&refused).is_err(), "a log under another key is not the one followed");
    }
}
