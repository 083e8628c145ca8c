//! The results log of rally tournaments: an append-only Merkle log in the shape of
//! Certificate Transparency (RFC 6962 / RFC 9162), kept as plain files.
//!
//! What it does:
//! - defines the log's leaves, [`entry::Entry`]: one canonical compact-JSON encoding
//!   per tournament event (created, entrants locked, paired, match result, correction,
//!   withdrawal, disqualification, finished);
//! - stores them in a directory anyone can copy, mirror or serve statically
//!   ([`Ledger`]): `entries.jsonl`, the latest signed checkpoint and every earlier one,
//!   the replay files results name, and the log's verifier key; appends are fsynced
//!   before a checkpoint is published, and a torn tail after a crash is truncated with a
//!   warning, never silently;
//! - signs checkpoints with Ed25519 in the C2SP signed-note / tlog-checkpoint format
//!   ([`LogSigner`]) and proves inclusion ([`Receipt`], [`verify_receipt`]) and
//!   consistency between any two tree sizes;
//! - serves all of it read-only over HTTP ([`router`]);
//! - verifies a whole log from a directory or a URL ([`verify()`]): signatures, the
//!   tree, the layout, every replay file, the bracket each tournament's results imply
//!   (rebuilt with `rally_tournament`), and optionally every match re-simulated from
//!   its input log;
//! - follows a log as an independent witness that cosigns consistent checkpoints and
//!   catches a log showing two histories ([`witness::Witness`]).
//!
//! What it does not do:
//! - no consensus network: one operator signs; witnesses and verifiers keep it honest;
//! - no async: every call is blocking `std::fs` work; async callers wrap the
//!   [`Ledger`] in a mutex and call it from `spawn_blocking`;
//! - no TLS client: a URL source must be `http://` (serve it behind a TLS proxy for
//!   the public, verify through plain HTTP or a copied directory);
//! - no CLI: `rally ledger ...` lives in the binary.
//!
//! The math is borrowed: `tlog_tiles` (Go's `sumdb/tlog`, ported by Cloudflare) keeps
//! the tree and makes proofs at any size, `ct-merkle` checks every proof and root
//! independently, `signed_note` writes and opens the notes. `LEDGER.md` at the
//! repository root describes the files and formats byte by byte.

mod http_get;
mod note;
mod server;
mod source;
mod store;
mod tree;
mod verify;

pub mod entry;
pub mod witness;

pub use note::{LogSigner, VerifiedCheckpoint};
pub use server::{MAX_ENTRIES_PER_REQUEST, router};
pub use store::{Ledger, LedgerError, LogReader, Receipt, ReceiptError, verify_receipt};
pub use tree::{check_consistency, check_inclusion};
pub use verify::{VerifyError, VerifyOptions, VerifyReport, verify};

/// The file of entries, one per line, under the ledger directory.
pub const ENTRIES_FILE: &str = "entries.jsonl";
/// The latest signed checkpoint.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// The directory of every published checkpoint, each named by its tree size.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The directory of replay files, each named `<sha256 hex>.replay`.
pub const REPLAYS_DIR: &str = "replays";
/// The log's verifier key, one line.
pub const VKEY_FILE: &str = "log.vkey";
/// The suffix of a replay file.
pub const REPLAY_SUFFIX: &str = ".replay";
