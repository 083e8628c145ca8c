//! Signed checkpoints: the log's Ed25519 key, C2SP verifier keys, and reading notes.
//!
//! The note and checkpoint formats are `signed_note` and `tlog_tiles` (Cloudflare's
//! ports of Go's `golang.org/x/mod/sumdb`); this module holds the key and the checks
//! this crate makes on top (one origin, the log's own signature, canonical bytes).

use std::io::Write;
use std::path::Path;

use ed25519_dalek::{Signer as _, SigningKey};
use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

use crate::LedgerError;

/// The C2SP signature algorithm byte of Ed25519, first in a verifier key's key data.
const ALG_ED25519: u8 = 1;

/// The log's signing key: an Ed25519 key whose C2SP key name is the log's origin.
pub struct LogSigner {
    origin: String,
    key: SigningKey,
    key_id: u32,
}

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("LogSigner")
            .field("origin", &self.origin)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish()
    }
}

impl LogSigner {
    /// A signer from a 32-byte Ed25519 seed, naming the log `origin` (a schema-less
    /// URL such as `rally.example/ledger`: non-empty, no spaces, no `+`).
    pub fn from_seed(seed: [u8; 32], origin: &str) -> Result<Self, LedgerError> {
        if !signed_note::is_key_name_valid(origin) {
            return Err(LedgerError::Key(format!(
                "origin {origin:?} is not a valid key name (it must be non-empty, without spaces or '+')"
            )));
        }
        let key = SigningKey::from_bytes(&seed);
        let key_id = signed_note::key_id(origin, &public_key_data(&key));
        Ok(Self { origin: origin.to_owned(), key, key_id })
    }

    /// Loads the key in `key_file` (64 hex digits: the Ed25519 seed), or creates the
    /// file (mode 0600, with its directory) with a new random key when it is missing.
    /// Keep it outside the ledger directory: that one is meant to be copied and served.
    pub fn load_or_create(key_file: &Path, origin: &str) -> Result<Self, LedgerError> {
        let file_error = |err: std::io::Error| LedgerError::Io { path: key_file.display().to_string(), source: err };
        match std::fs::read_to_string(key_file) {
            Ok(text) => {
                let seed: [u8; 32] = hex::decode(text.trim())
                    .ok()
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(|| LedgerError::Key(format!("{} does not hold 64 hex digits", key_file.display())))?;
                Self::from_seed(seed, origin)
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = key_file.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(file_error)?;
                }
                let key = SigningKey::generate(&mut rand::rngs::OsRng);
                let signer = Self::from_seed(key.to_bytes(), origin)?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(key_file).map_err(file_error)?;
                file.write_all(hex::encode(key.to_bytes()).as_bytes()).map_err(file_error)?;
                file.sync_all().map_err(file_error)?;
                Ok(signer)
            }
            Err(err) => Err(file_error(err)),
        }
    }

    /// The log's origin (also the key's name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The verifier key in the C2SP format: `<origin>+<key id hex>+<base64(0x01 || public key)>`.
    pub fn verifier_key(&self) -> String {
        signed_note::new_ed25519_verifier_key(&self.origin, &self.key.verifying_key())
    }

    /// Signs a checkpoint of `size` leaves with root `root`: the signed note's bytes.
    pub(crate) fn sign_checkpoint(&self, size: u64, root: [u8; 32]) -> Result<Vec<u8>, LedgerError> {
        let checkpoint = Checkpoint::new(&self.origin, size, Hash(root), "")
            .map_err(|_| LedgerError::Key(format!("origin {:?} cannot start a checkpoint", self.origin)))?;
        let mut note = Note::new(&checkpoint.to_bytes(), &[]).map_err(|err| LedgerError::Key(err.to_string()))?;
        note.add_sigs(&[self]).map_err(|err| LedgerError::Key(err.to_string()))?;
        Ok(note.to_bytes())
    }
}

impl signed_note::Signer for LogSigner {
    fn name(&self) -> &str {
        &self.origin
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

/// The key data a C2SP key id hashes: the algorithm byte, then the public key.
fn public_key_data(key: &SigningKey) -> Vec<u8> {
    [&[ALG_ED25519][..], key.verifying_key().as_bytes()].concat()
}

/// A checkpoint whose signature by the log was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// The origin line.
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The root hash.
    pub root: [u8; 32],
    /// The whole signed note, as read.
    pub note: Vec<u8>,
}

/// A parsed C2SP verifier key.
pub(crate) struct LogVerifier {
    vkey: String,
    verifier: StandardVerifier,
}

impl std::fmt::Debug for LogVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogVerifier").field("vkey", &self.vkey).finish()
    }
}

impl LogVerifier {
    /// Parses a verifier key line (surrounding whitespace ignored).
    pub(crate) fn new(vkey: &str) -> Result<Self, String> {
        let vkey = vkey.trim();
        let verifier =
            StandardVerifier::new(vkey).map_err(|err| format!("{vkey:?} is not a C2SP Ed25519 verifier key: {err}"))?;
        // The key line must be canonical, so a changed byte in log.vkey is always noticed.
        let canonical =
            format!("{}+{:08x}+", signed_note::Verifier::name(&verifier), signed_note::Verifier::key_id(&verifier));
        if !vkey.starts_with(&canonical) {
            return Err(format!("{vkey:?} is not in canonical form"));
        }
        Ok(Self { vkey: vkey.to_owned(), verifier })
    }

    /// The key's name: the origin it signs for.
    pub(crate) fn name(&self) -> &str {
        signed_note::Verifier::name(&self.verifier)
    }

    /// The key line.
    pub(crate) fn vkey(&self) -> &str {
        &self.vkey
    }

    /// Opens a checkpoint note: checks it is one, that this key signed it, that it
    /// names this key's origin and that its bytes are canonical. Other signatures
    /// (a witness's) are allowed and ignored.
    pub(crate) fn open(&self, bytes: &[u8]) -> Result<VerifiedCheckpoint, String> {
        let note = Note::from_bytes(bytes).map_err(|err| format!("not a signed note: {err}"))?;
        // Ed25519 signatures and base64 have one encoding each, but a note's
        // signature lines could repeat or reorder; the note must be as the log wrote it.
        if note.to_bytes() != bytes {
            return Err("the note is not in canonical form".to_owned());
        }
        let verifiers = VerifierList::new(vec![Box::new(self.verifier.clone())]);
        note.verify(&verifiers).map_err(|err| format!("signature check failed: {err}"))?;
        let checkpoint = Checkpoint::from_bytes(note.text()).map_err(|err| format!("not a checkpoint: {err}"))?;
        if checkpoint.origin() != self.name() {
            return Err(format!("origin {:?} is not the key's {:?}", checkpoint.origin(), self.name()));
        }
        if !checkpoint.extension().is_empty() {
            return Err("unexpected extension lines".to_owned());
        }
        if checkpoint.to_bytes() != note.text() {
            return Err("checkpoint text is not in canonical form".to_owned());
        }
        Ok(VerifiedCheckpoint {
            origin: checkpoint.origin().to_owned(),
            size: checkpoint.size(),
            root: checkpoint.hash().0,
            note: bytes.to_vec(),
        })
    }
}

/// The base64 text of a hash, as checkpoints and proofs write it.
pub(crate) fn hash_b64(hash: &[u8; 32]) -> String {
    Hash(*hash).to_string()
}

/// Parses the base64 text of a hash.
pub(crate) fn parse_hash_b64(text: &str) -> Result<[u8; 32], String> {
    let hash = Hash::parse_hash(text).map_err(|err| format!("{text:?} is not a base64 SHA-256 hash: {err}"))?;
    if hash.to_string() != text {
        return Err(format!("{text:?} is not canonical base64"));
    }
    Ok(hash.0)
}
