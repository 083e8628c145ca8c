//! A witness: an independent process that follows a log, checks that each new
//! checkpoint extends the last one it saw, and cosigns it. A log that shows two
//! histories (to the witness over time, or to it and to anyone holding an earlier
//! cosigned checkpoint) is caught: no consistency proof can join them.
//!
//! The witness's state directory holds `witness.key` (its Ed25519 seed, hex, 0600),
//! `log.vkey` (the log key it follows, pinned on first use), `checkpoint` (the last
//! checkpoint it cosigned) and `cosigned/<size>` (every checkpoint it cosigned). A
//! cosignature is one more signed-note signature line by the witness's key, an
//! Ed25519 C2SP signature (algorithm 0x01) over the same checkpoint text.

use std::path::{Path, PathBuf};

use signed_note::Note;

use crate::note::{LogSigner, LogVerifier, VerifiedCheckpoint, hash_b64};
use crate::source::Source;
use crate::tree::check_consistency;
use crate::{CHECKPOINT_FILE, LedgerError, VKEY_FILE};

/// The witness's key file in its state directory.
pub const WITNESS_KEY_FILE: &str = "witness.key";
/// The directory of every cosigned checkpoint in the witness's state directory.
pub const COSIGNED_DIR: &str = "cosigned";

/// Why the witness refused a checkpoint, or could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// The state directory or the witness key could not be used.
    #[error("witness state: {0}")]
    State(#[from] LedgerError),
    /// The log could not be read.
    #[error("reading the log: {0}")]
    Source(String),
    /// The log's checkpoint is not signed by the key the witness follows.
    #[error("the log's checkpoint: {0}")]
    Checkpoint(String),
    /// The new checkpoint is not an extension of the last one seen: the log shows
    /// two histories (or went back in time).
    #[error(
        "the log forked: checkpoint {new_size} (root {new_root}) is not consistent with checkpoint {old_size} (root {old_root}) seen before: {reason}"
    )]
    Fork {
        /// The size of the checkpoint seen before.
        old_size: u64,
        /// Its root, base64.
        old_root: String,
        /// The size of the new one.
        new_size: u64,
        /// Its root, base64.
        new_root: String,
        /// Why they cannot both be true.
        reason: String,
    },
}

/// What one [`Witness::poll`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WitnessOutcome {
    /// The log's checkpoint is the one already cosigned.
    Unchanged {
        /// Its size.
        size: u64,
    },
    /// A new checkpoint was checked and cosigned.
    Cosigned {
        /// Its size.
        size: u64,
        /// The note with the log's and the witness's signatures.
        note: String,
    },
}

/// A witness following one log. See the module docs.
#[derive(Debug)]
pub struct Witness {
    state_dir: PathBuf,
    signer: LogSigner,
    log: LogVerifier,
    last: Option<VerifiedCheckpoint>,
}

fn state_error(path: &Path) -> impl Fn(std::io::Error) -> WitnessError + '_ {
    move |source| WitnessError::State(LedgerError::Io { path: path.display().to_string(), source })
}

impl Witness {
    /// Opens (or creates) the witness state in `state_dir`, naming the witness `name`
    /// (its key name). `log_vkey` is the log's verifier key; `None` reuses the one
    /// pinned in the state directory (an error when there is none).
    pub fn open(state_dir: &Path, name: &str, log_vkey: Option<&str>) -> Result<Self, WitnessError> {
        std::fs::create_dir_all(state_dir.join(COSIGNED_DIR)).map_err(state_error(state_dir))?;
        let signer = LogSigner::load_or_create(&state_dir.join(WITNESS_KEY_FILE), name)?;
        let pinned_path = state_dir.join(VKEY_FILE);
        let pinned = match std::fs::read_to_string(&pinned_path) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(state_error(&pinned_path)(err)),
        };
        let vkey = match (log_vkey.map(str::trim), pinned) {
            (Some(given), Some(pinned)) if given != pinned => {
                return Err(WitnessError::State(LedgerError::Key(format!(
                    "this witness follows {pinned:?}, not {given:?}: use another state directory"
                ))));
            }
            (_, Some(pinned)) => pinned,
            (Some(given), None) => {
                std::fs::write(&pinned_path, format!("{given}\n")).map_err(state_error(&pinned_path))?;
                given.to_owned()
            }
            (None, None) => {
                return Err(WitnessError::State(LedgerError::Key("no log key given or pinned".to_owned())));
            }
        };
        let log = LogVerifier::new(&vkey).map_err(|reason| WitnessError::State(LedgerError::Key(reason)))?;
        let last_path = state_dir.join(CHECKPOINT_FILE);
        let last = match std::fs::read(&last_path) {
            Ok(bytes) => Some(
                log.open(&bytes)
                    .map_err(|reason| WitnessError::Checkpoint(format!("{}: {reason}", last_path.display())))?,
            ),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(state_error(&last_path)(err)),
        };
        Ok(Self { state_dir: state_dir.to_path_buf(), signer, log, last })
    }

    /// The witness's own C2SP verifier key, for whoever checks its cosignatures.
    pub fn verifier_key(&self) -> String {
        self.signer.verifier_key()
    }

    /// The size and root of the last checkpoint cosigned.
    pub fn last_seen(&self) -> Option<(u64, [u8; 32])> {
        self.last.as_ref().map(|last| (last.size, last.root))
    }

    /// Reads the log's latest checkpoint at `source` (a directory or `http://` URL),
    /// and if it is new, checks it extends the last one seen and cosigns it.
    pub fn poll(&mut self, source: &str) -> Result<WitnessOutcome, WitnessError> {
        let source = Source::parse(source).map_err(WitnessError::Source)?;
        let bytes = source
            .read(CHECKPOINT_FILE)
            .map_err(WitnessError::Source)?
            .ok_or_else(|| WitnessError::Source("the log has no checkpoint".to_owned()))?;
        // Only the log's signature counts; other witnesses' lines are dropped below.
        let new = self.log.open(&bytes).map_err(WitnessError::Checkpoint)?;
        if let Some(old) = &self.last {
            let fork = |reason: String| WitnessError::Fork {
                old_size: old.size,
                old_root: hash_b64(&old.root),
                new_size: new.size,
                new_root: hash_b64(&new.root),
                reason,
            };
            if new.size < old.size {
                return Err(fork("the log went back to a smaller tree".to_owned()));
            }
            if new.size == old.size {
                if new.root != old.root {
                    return Err(fork("two different roots for one size".to_owned()));
                }
                return Ok(WitnessOutcome::Unchanged { size: new.size });
            }
            if old.size > 0 {
                let proof = source.consistency_proof(old.size, new.size).map_err(WitnessError::Source)?;
                if !check_consistency(old.size, &old.root, new.size, &new.root, &proof) {
                    return Err(fork("the log's consistency proof does not join them".to_owned()));
                }
            }
        }
        let note = self.cosign(&new)?;
        Ok(WitnessOutcome::Cosigned { size: new.size, note })
    }

    /// Adds the witness's signature to the log-signed note and saves it.
    fn cosign(&mut self, checkpoint: &VerifiedCheckpoint) -> Result<String, WitnessError> {
        let parsed = Note::from_bytes(&checkpoint.note).map_err(|err| WitnessError::Checkpoint(err.to_string()))?;
        // Keep the log's signature only, then add ours.
        let log_sigs: Vec<_> = parsed
            .verify(&signed_note::VerifierList::new(vec![Box::new(
                signed_note::StandardVerifier::new(self.log.vkey())
                    .map_err(|err| WitnessError::Checkpoint(err.to_string()))?,
            )]))
            .map_err(|err| WitnessError::Checkpoint(err.to_string()))?
            .0;
        let mut note = Note::new(parsed.text(), &log_sigs).map_err(|err| WitnessError::Checkpoint(err.to_string()))?;
        note.add_sigs(&[&self.signer]).map_err(|err| WitnessError::Checkpoint(err.to_string()))?;
        let bytes = note.to_bytes();
        let cosigned = self.state_dir.join(COSIGNED_DIR).join(checkpoint.size.to_string());
        write_synced(&cosigned, &bytes)?;
        write_synced(&self.state_dir.join(CHECKPOINT_FILE), &bytes)?;
        self.last = Some(VerifiedCheckpoint { note: bytes.clone(), ..checkpoint.clone() });
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Writes a state file through a temporary file and a rename, fsynced.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), WitnessError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all())
        .map_err(state_error(path))
}
