//! The log on disk: appending, publishing checkpoints, recovering after a crash, and
//! the proofs and receipts it hands out.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2_011::{Digest, Sha256};

use crate::entry::{Entry, EntryError, is_sha256_hex};
use crate::note::{LogSigner, LogVerifier, hash_b64, parse_hash_b64};
use crate::tree::{Tree, check_inclusion};
use crate::{CHECKPOINT_FILE, CHECKPOINTS_DIR, ENTRIES_FILE, REPLAY_SUFFIX, REPLAYS_DIR, VKEY_FILE};

/// What went wrong with the log's files or a request to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The signing key (or its origin) is unusable.
    #[error("log key: {0}")]
    Key(String),
    /// The directory belongs to a log signed by another key.
    #[error("{path} names key {found:?} but this log signs with {expected:?}: open it with its own key")]
    KeyMismatch {
        /// The `log.vkey` file.
        path: String,
        /// Its key.
        found: String,
        /// The signer's.
        expected: String,
    },
    /// Published data does not match its signed checkpoint: never repaired, since
    /// the checkpoint may have been seen by others.
    #[error("the log in {dir} is corrupt: {reason}")]
    Corrupt {
        /// The ledger directory.
        dir: String,
        /// What does not match.
        reason: String,
    },
    /// An entry to append is not valid.
    #[error("entry {position} of the batch: {source}")]
    Entry {
        /// Its position in the batch.
        position: usize,
        /// Why.
        #[source]
        source: EntryError,
    },
    /// A request names leaves or sizes the log does not have.
    #[error("{0}")]
    Range(String),
}

/// A player's proof that an entry is in the log: verifiable offline with the log's
/// verifier key alone ([`verify_receipt`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The entry's leaf bytes (its canonical JSON) as a string.
    pub entry: String,
    /// Its index in the log.
    pub index: u64,
    /// The tree size of the checkpoint it is proven against.
    pub tree_size: u64,
    /// The RFC 6962 inclusion proof, leaf to root, each hash base64.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint note of `tree_size` leaves.
    pub checkpoint: String,
}

impl Receipt {
    /// The receipt as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a receipt's JSON.
    pub fn from_json(text: &str) -> Result<Self, ReceiptError> {
        serde_json::from_str(text).map_err(|err| ReceiptError::Malformed(err.to_string()))
    }
}

/// Why a receipt does not prove its entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The receipt is not well-formed JSON of a receipt.
    #[error("malformed receipt: {0}")]
    Malformed(String),
    /// The verifier key given is not a C2SP Ed25519 key.
    #[error("{0}")]
    Key(String),
    /// The checkpoint is not signed by the key, or not a checkpoint.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The checkpoint's size is not the receipt's `tree_size`.
    #[error("the checkpoint is of {checkpoint} leaves, the receipt claims {receipt}")]
    SizeMismatch {
        /// The checkpoint's size.
        checkpoint: u64,
        /// The receipt's.
        receipt: u64,
    },
    /// The inclusion proof does not lead from the entry to the checkpoint's root.
    #[error("entry {index} is not proven in the tree of {tree_size} leaves")]
    NotIncluded {
        /// The entry's index.
        index: u64,
        /// The tree size.
        tree_size: u64,
    },
    /// The entry is not a valid entry of this format.
    #[error("entry: {0}")]
    Entry(EntryError),
}

/// Checks a receipt offline against the log's verifier key: the checkpoint's
/// signature, then the inclusion proof of the entry's bytes. Returns the entry.
pub fn verify_receipt(receipt: &Receipt, vkey: &str) -> Result<Entry, ReceiptError> {
    let verifier = LogVerifier::new(vkey).map_err(ReceiptError::Key)?;
    let checkpoint = verifier.open(receipt.checkpoint.as_bytes()).map_err(ReceiptError::Checkpoint)?;
    if checkpoint.size != receipt.tree_size {
        return Err(ReceiptError::SizeMismatch { checkpoint: checkpoint.size, receipt: receipt.tree_size });
    }
    let proof = receipt
        .inclusion_proof
        .iter()
        .map(|hash| parse_hash_b64(hash))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ReceiptError::Malformed)?;
    if !check_inclusion(receipt.entry.as_bytes(), receipt.index, checkpoint.size, &checkpoint.root, &proof) {
        return Err(ReceiptError::NotIncluded { index: receipt.index, tree_size: receipt.tree_size });
    }
    Entry::decode(receipt.entry.as_bytes()).map_err(ReceiptError::Entry)
}

/// An open log directory, the only writer of it. See the crate docs and `LEDGER.md`.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    signer: LogSigner,
    entries: File,
    /// Byte offset just past each entry's newline.
    line_ends: Vec<u64>,
    tree: Tree,
    /// The latest signed checkpoint note.
    checkpoint: Vec<u8>,
    /// Every published checkpoint's size, ascending.
    checkpoint_sizes: Vec<u64>,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io { path: path.display().to_string(), source }
}

/// Makes a directory's entries (a created or renamed file) durable.
fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(io_error(dir))
}

/// Writes `bytes` to `path` atomically: a temporary file, fsynced, renamed over it.
/// The caller syncs the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LedgerError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// The sha256 of `bytes`, lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Parses a checkpoint file name: a tree size in canonical decimal.
pub(crate) fn parse_size_name(name: &str) -> Option<u64> {
    name.parse::<u64>().ok().filter(|size| size.to_string() == name)
}

impl Ledger {
    /// Opens the log in `dir`, creating it when empty, and recovers from a crash: a
    /// checkpoint written to `checkpoints/` but not yet to `checkpoint` is completed,
    /// and entries past the latest checkpoint (an append that never returned, or a torn
    /// last line) are truncated with a warning naming how many. Entries the checkpoint
    /// covers that do not hash to its root are a [`LedgerError::Corrupt`] error.
    pub fn open(dir: &Path, signer: LogSigner) -> Result<Self, LedgerError> {
        let created = !dir.exists();
        for sub in [dir.to_path_buf(), dir.join(CHECKPOINTS_DIR), dir.join(REPLAYS_DIR)] {
            std::fs::create_dir_all(&sub).map_err(io_error(&sub))?;
        }
        let corrupt = |reason: String| LedgerError::Corrupt { dir: dir.display().to_string(), reason };

        let vkey_path = dir.join(VKEY_FILE);
        let vkey = signer.verifier_key();
        match std::fs::read_to_string(&vkey_path) {
            Ok(found) if found.trim_end_matches('\n') == vkey => {}
            Ok(found) => {
                return Err(LedgerError::KeyMismatch {
                    path: vkey_path.display().to_string(),
                    found: found.trim().to_owned(),
                    expected: vkey,
                });
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(&vkey_path, format!("{vkey}\n").as_bytes())?;
            }
            Err(err) => return Err(io_error(&vkey_path)(err)),
        }
        let verifier = LogVerifier::new(&vkey).map_err(LedgerError::Key)?;

        // Leftover temporary files of an interrupted write.
        for sub in [dir.to_path_buf(), dir.join(CHECKPOINTS_DIR), dir.join(REPLAYS_DIR)] {
            for item in std::fs::read_dir(&sub).map_err(io_error(&sub))? {
                let path = item.map_err(io_error(&sub))?.path();
                if path.extension().is_some_and(|ext| ext == "tmp") {
                    tracing::warn!(path = %path.display(), "removing a temporary file left by an interrupted write");
                    std::fs::remove_file(&path).map_err(io_error(&path))?;
                }
            }
        }

        // Every published checkpoint, each opened with the log's key.
        let checkpoints_dir = dir.join(CHECKPOINTS_DIR);
        let mut checkpoint_sizes = vec![];
        for item in std::fs::read_dir(&checkpoints_dir).map_err(io_error(&checkpoints_dir))? {
            let name = item.map_err(io_error(&checkpoints_dir))?.file_name();
            let size = name.to_str().and_then(parse_size_name).ok_or_else(|| {
                corrupt(format!("{CHECKPOINTS_DIR}/{} is not named by a tree size", name.to_string_lossy()))
            })?;
            checkpoint_sizes.push(size);
        }
        checkpoint_sizes.sort_unstable();
        let checkpoint_path = dir.join(CHECKPOINT_FILE);
        let latest_note = match std::fs::read(&checkpoint_path) {
            Ok(bytes) => Some(bytes),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(io_error(&checkpoint_path)(err)),
        };
        let mut latest = match &latest_note {
            Some(bytes) => {
                Some(verifier.open(bytes).map_err(|reason| corrupt(format!("{CHECKPOINT_FILE}: {reason}")))?)
            }
            None => None,
        };
        if let Some(&newest) = checkpoint_sizes.last()
            && latest.as_ref().is_none_or(|latest| latest.size < newest)
        {
            // A publish stopped between its two renames: finish it, since the newer
            // note is signed and may have been served.
            let path = checkpoints_dir.join(newest.to_string());
            let bytes = std::fs::read(&path).map_err(io_error(&path))?;
            let newer =
                verifier.open(&bytes).map_err(|reason| corrupt(format!("{CHECKPOINTS_DIR}/{newest}: {reason}")))?;
            tracing::warn!(size = newest, "completing the publication of checkpoint {newest} interrupted by a crash");
            write_atomic(&checkpoint_path, &bytes)?;
            sync_dir(dir)?;
            latest = Some(newer);
        }
        if let Some(latest) = &latest
            && checkpoint_sizes.binary_search(&latest.size).is_err()
        {
            write_atomic(&checkpoints_dir.join(latest.size.to_string()), &latest.note)?;
            sync_dir(&checkpoints_dir)?;
            checkpoint_sizes.push(latest.size);
            checkpoint_sizes.sort_unstable();
        }

        // The entries: rebuild the tree, check it against the checkpoint, cut the tail.
        let entries_path = dir.join(ENTRIES_FILE);
        let mut entries = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&entries_path)
            .map_err(io_error(&entries_path))?;
        let mut bytes = vec![];
        entries.read_to_end(&mut bytes).map_err(io_error(&entries_path))?;
        if latest.is_none() && !bytes.is_empty() {
            // Checkpoint 0 is published before any entry is written: entries with no
            // checkpoint at all mean the checkpoints were lost, not a torn append.
            return Err(corrupt(format!("{ENTRIES_FILE} holds {} bytes but there is no checkpoint", bytes.len())));
        }
        let published = latest.as_ref().map_or(0, |latest| latest.size);
        let mut tree = Tree::default();
        let mut line_ends = vec![];
        let mut offset = 0usize;
        while (line_ends.len() as u64) < published {
            let Some(newline) = bytes[offset..].iter().position(|&byte| byte == b'\n') else {
                return Err(corrupt(format!(
                    "{ENTRIES_FILE} holds {} complete entries but checkpoint {published} covers {published}",
                    line_ends.len()
                )));
            };
            tree.push(&bytes[offset..offset + newline]);
            offset += newline + 1;
            line_ends.push(offset as u64);
        }
        if let Some(latest) = &latest
            && tree.root(published) != Some(latest.root)
        {
            return Err(corrupt(format!(
                "the first {published} entries of {ENTRIES_FILE} do not hash to the root of checkpoint {published}"
            )));
        }
        if offset < bytes.len() {
            let tail = &bytes[offset..];
            let complete = tail.iter().filter(|&&byte| byte == b'\n').count();
            let torn = tail.len() - tail.iter().rposition(|&byte| byte == b'\n').map_or(0, |last| last + 1);
            tracing::warn!(
                path = %entries_path.display(),
                bytes_dropped = tail.len(),
                unpublished_entries = complete,
                torn_bytes = torn,
                "truncating {} bytes past checkpoint {published}: {complete} entries never published and a torn line of {torn} bytes",
                tail.len()
            );
            entries.set_len(offset as u64).and_then(|()| entries.sync_all()).map_err(io_error(&entries_path))?;
        }
        if created {
            if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
            sync_dir(dir)?;
        }

        let mut ledger = Self {
            dir: dir.to_path_buf(),
            signer,
            entries,
            line_ends,
            tree,
            checkpoint: latest.map(|latest| latest.note).unwrap_or_default(),
            checkpoint_sizes,
        };
        if ledger.checkpoint.is_empty() {
            // An empty log still has a signed checkpoint, so readers always find one.
            ledger.publish()?;
        }
        Ok(ledger)
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log's C2SP verifier key (also in `log.vkey`).
    pub fn verifier_key(&self) -> String {
        self.signer.verifier_key()
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        self.signer.origin()
    }

    /// Appends entries: writes them, fsyncs, then publishes a signed checkpoint of the
    /// new size. Returns their indexes. An empty batch changes nothing. On an error
    /// nothing is appended (the written bytes are cut again).
    pub fn append(&mut self, entries: &[Entry]) -> Result<Range<u64>, LedgerError> {
        let start = self.size();
        if entries.is_empty() {
            return Ok(start..start);
        }
        let mut buffer = Vec::with_capacity(entries.len() * 256);
        let mut leaves = Vec::with_capacity(entries.len());
        for (position, entry) in entries.iter().enumerate() {
            entry.validate().map_err(|source| LedgerError::Entry { position, source })?;
            let from = buffer.len();
            buffer.extend_from_slice(&entry.encode());
            leaves.push(from..buffer.len());
            buffer.push(b'\n');
        }
        let old_len = self.line_ends.last().copied().unwrap_or(0);
        let path = self.dir.join(ENTRIES_FILE);
        let written = self.entries.write_all(&buffer).and_then(|()| self.entries.sync_data());
        if let Err(err) = written {
            // Best effort: the next open truncates the tail anyway.
            let _ = self.entries.set_len(old_len);
            return Err(io_error(&path)(err));
        }
        for leaf in leaves {
            self.tree.push(&buffer[leaf.clone()]);
            self.line_ends.push(old_len + leaf.end as u64 + 1);
        }
        if let Err(err) = self.publish() {
            self.tree.truncate(start);
            self.line_ends.truncate(start as usize);
            let _ = self.entries.set_len(old_len);
            return Err(err);
        }
        Ok(start..self.size())
    }

    /// Signs and publishes the checkpoint of the current tree.
    fn publish(&mut self) -> Result<(), LedgerError> {
        let size = self.tree.size();
        let root = self.tree.root(size).unwrap_or_default();
        let note = self.signer.sign_checkpoint(size, root)?;
        let checkpoints_dir = self.dir.join(CHECKPOINTS_DIR);
        write_atomic(&checkpoints_dir.join(size.to_string()), &note)?;
        sync_dir(&checkpoints_dir)?;
        write_atomic(&self.dir.join(CHECKPOINT_FILE), &note)?;
        sync_dir(&self.dir)?;
        self.checkpoint = note;
        if self.checkpoint_sizes.last() != Some(&size) {
            self.checkpoint_sizes.push(size);
        }
        Ok(())
    }

    /// Stores a replay file as `replays/<sha256 hex>.replay` (fsynced) and returns the
    /// hex; storing the same bytes again is a no-op.
    pub fn put_replay(&mut self, bytes: &[u8]) -> Result<String, LedgerError> {
        let hex = sha256_hex(bytes);
        let replays = self.dir.join(REPLAYS_DIR);
        let path = replays.join(format!("{hex}{REPLAY_SUFFIX}"));
        if std::fs::read(&path).is_ok_and(|existing| existing == bytes) {
            return Ok(hex);
        }
        write_atomic(&path, bytes)?;
        sync_dir(&replays)?;
        Ok(hex)
    }

    /// Removes a replay file that no logged entry names (one stored for a result that
    /// will not be appended after all: verify refuses unreferenced replay files).
    /// Returns whether a file was removed; a referenced one is kept.
    pub fn discard_replay(&mut self, hex: &str) -> Result<bool, LedgerError> {
        if !is_sha256_hex(hex) {
            return Ok(false);
        }
        let entries_path = self.dir.join(ENTRIES_FILE);
        let bytes = std::fs::read(&entries_path).map_err(io_error(&entries_path))?;
        let published = &bytes[..self.line_ends.last().copied().unwrap_or(0) as usize];
        let needle = format!("\"replay_sha256\":\"{hex}\"");
        if published.windows(needle.len()).any(|window| window == needle.as_bytes()) {
            return Ok(false);
        }
        let replays = self.dir.join(REPLAYS_DIR);
        let path = replays.join(format!("{hex}{REPLAY_SUFFIX}"));
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&replays)?;
                Ok(true)
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(io_error(&path)(err)),
        }
    }

    /// A stored replay file by its hex name; `None` when there is none (or the name
    /// is not a SHA-256 hex).
    pub fn replay(&self, hex: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        if !is_sha256_hex(hex) {
            return Ok(None);
        }
        let path = self.dir.join(REPLAYS_DIR).join(format!("{hex}{REPLAY_SUFFIX}"));
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_error(&path)(err)),
        }
    }

    /// The number of entries (every one is covered by the latest checkpoint).
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The root hash of the current tree.
    pub fn root(&self) -> [u8; 32] {
        self.tree.root(self.size()).unwrap_or_default()
    }

    /// The latest signed checkpoint note.
    pub fn checkpoint(&self) -> String {
        String::from_utf8_lossy(&self.checkpoint).into_owned()
    }

    /// The sizes of every published checkpoint, ascending.
    pub fn checkpoint_sizes(&self) -> &[u64] {
        &self.checkpoint_sizes
    }

    /// The published checkpoint of `size` leaves, if there is one.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<String>, LedgerError> {
        if self.checkpoint_sizes.binary_search(&size).is_err() {
            return Ok(None);
        }
        let path = self.dir.join(CHECKPOINTS_DIR).join(size.to_string());
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// The leaf bytes of entries `range` (no newlines).
    pub fn entries(&self, range: Range<u64>) -> Result<Vec<Vec<u8>>, LedgerError> {
        if range.start > range.end || range.end > self.size() {
            return Err(LedgerError::Range(format!(
                "entries {}..{} are not in a log of {} entries",
                range.start,
                range.end,
                self.size()
            )));
        }
        if range.is_empty() {
            return Ok(vec![]);
        }
        let offset_of = |index: u64| if index == 0 { 0 } else { self.line_ends[index as usize - 1] };
        let (from, to) = (offset_of(range.start), offset_of(range.end));
        let path = self.dir.join(ENTRIES_FILE);
        let mut file = File::open(&path).map_err(io_error(&path))?;
        let mut bytes = vec![0; (to - from) as usize];
        file.seek(SeekFrom::Start(from)).and_then(|_| file.read_exact(&mut bytes)).map_err(io_error(&path))?;
        Ok(bytes.split(|&byte| byte == b'\n').take((range.end - range.start) as usize).map(<[u8]>::to_vec).collect())
    }

    fn check_size(&self, size: u64) -> Result<(), LedgerError> {
        if size > self.size() {
            return Err(LedgerError::Range(format!("tree size {size} is past the log's {}", self.size())));
        }
        Ok(())
    }

    /// The inclusion proof of entry `index` in the tree of `size` leaves (any size
    /// up to the current one), leaf to root.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<[u8; 32]>, LedgerError> {
        self.check_size(size)?;
        self.tree
            .inclusion_proof(index, size)
            .ok_or_else(|| LedgerError::Range(format!("entry {index} is not in the tree of {size} entries")))
    }

    /// The consistency proof from the tree of `old` leaves to the tree of `new`
    /// (`1 <= old <= new <= size`).
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<[u8; 32]>, LedgerError> {
        self.check_size(new)?;
        self.tree.consistency_proof(old, new).ok_or_else(|| {
            LedgerError::Range(format!("no consistency proof from {old} to {new} entries: it needs 1 <= old <= new"))
        })
    }

    /// A receipt for entry `index` against the latest checkpoint.
    pub fn receipt(&self, index: u64) -> Result<Receipt, LedgerError> {
        let size = self.size();
        let proof = self.inclusion_proof(index, size)?;
        let entry = self.entries(index..index + 1)?.pop().unwrap_or_default();
        Ok(Receipt {
            entry: String::from_utf8_lossy(&entry).into_owned(),
            index,
            tree_size: size,
            inclusion_proof: proof.iter().map(hash_b64).collect(),
            checkpoint: self.checkpoint(),
        })
    }
}

/// A read-only view of a log directory, for receipts and lookups without the signing
/// key (a copy, a mirror, or a log another process is appending to). It trusts
/// nothing it cannot prove: its receipts are checked with [`verify_receipt`].
#[derive(Debug)]
pub struct LogReader {
    checkpoint: String,
    leaves: Vec<Vec<u8>>,
    tree: Tree,
}

impl LogReader {
    /// Reads `dir`'s latest checkpoint and the entries it covers (a tail past them is
    /// ignored). The checkpoint's signature is not checked here.
    pub fn open(dir: &Path) -> Result<Self, LedgerError> {
        let corrupt = |reason: String| LedgerError::Corrupt { dir: dir.display().to_string(), reason };
        let checkpoint_path = dir.join(CHECKPOINT_FILE);
        let note = std::fs::read(&checkpoint_path).map_err(io_error(&checkpoint_path))?;
        let parsed = signed_note::Note::from_bytes(&note)
            .map_err(|err| corrupt(format!("{CHECKPOINT_FILE} is not a signed note: {err}")))?;
        let size = tlog_tiles::Checkpoint::from_bytes(parsed.text())
            .map_err(|err| corrupt(format!("{CHECKPOINT_FILE} is not a checkpoint: {err}")))?
            .size();
        let entries_path = dir.join(ENTRIES_FILE);
        let bytes = std::fs::read(&entries_path).map_err(io_error(&entries_path))?;
        let mut leaves = vec![];
        let mut tree = Tree::default();
        for line in bytes.split_inclusive(|&byte| byte == b'\n') {
            if leaves.len() as u64 == size {
                break;
            }
            let Some(leaf) = line.strip_suffix(b"\n") else { break };
            tree.push(leaf);
            leaves.push(leaf.to_vec());
        }
        if (leaves.len() as u64) < size {
            return Err(corrupt(format!(
                "{ENTRIES_FILE} holds {} entries, the checkpoint covers {size}",
                leaves.len()
            )));
        }
        Ok(Self { checkpoint: String::from_utf8_lossy(&note).into_owned(), leaves, tree })
    }

    /// Entries covered by the checkpoint read.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The checkpoint note read.
    pub fn checkpoint(&self) -> &str {
        &self.checkpoint
    }

    /// The leaf bytes of entry `index`.
    pub fn entry(&self, index: u64) -> Option<&[u8]> {
        usize::try_from(index).ok().and_then(|index| self.leaves.get(index)).map(Vec::as_slice)
    }

    /// The index of the result of match `match_id`, if one is logged.
    pub fn find_match_result(&self, match_id: u64) -> Option<u64> {
        self.leaves
            .iter()
            .position(|leaf| {
                matches!(Entry::decode(leaf), Ok(Entry::MatchResult { match_id: logged, .. }) if logged == match_id)
            })
            .map(|index| index as u64)
    }

    /// A receipt for entry `index` against the checkpoint read.
    pub fn receipt(&self, index: u64) -> Result<Receipt, LedgerError> {
        let size = self.size();
        let proof = self
            .tree
            .inclusion_proof(index, size)
            .ok_or_else(|| LedgerError::Range(format!("entry {index} is not in the log of {size} entries")))?;
        Ok(Receipt {
            entry: String::from_utf8_lossy(self.entry(index).unwrap_or_default()).into_owned(),
            index,
            tree_size: size,
            inclusion_proof: proof.iter().map(hash_b64).collect(),
            checkpoint: self.checkpoint.clone(),
        })
    }
}
