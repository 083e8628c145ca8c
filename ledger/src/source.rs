//! Where a verifier or witness reads a log from: a directory, or an `http://` URL
//! served by [`crate::router`]. Both give the same files under the same names.

use std::path::PathBuf;

use crate::http_get::HttpBase;
use crate::note::parse_hash_b64;
use crate::server::MAX_ENTRIES_PER_REQUEST;
use crate::tree::Tree;
use crate::{CHECKPOINTS_DIR, ENTRIES_FILE, REPLAYS_DIR};

/// A log to read.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A ledger directory.
    Dir(PathBuf),
    /// A log served over HTTP.
    Http(HttpBase),
}

impl Source {
    /// A URL (`http://...`; other schemes are refused) or else a directory path.
    pub(crate) fn parse(source: &str) -> Result<Self, String> {
        if source.contains("://") {
            return HttpBase::parse(source).map(Self::Http);
        }
        Ok(Self::Dir(PathBuf::from(source)))
    }

    /// Reads one file of the layout (`checkpoint`, `log.vkey`, `checkpoints/<n>`,
    /// `replays/<hex>.replay`); `None` when it does not exist.
    pub(crate) fn read(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            Self::Dir(dir) => {
                let path = dir.join(name);
                match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(err) => Err(format!("{}: {err}", path.display())),
                }
            }
            Self::Http(base) => base.get(name),
        }
    }

    /// The names in `checkpoints/` (a directory listing, or `GET /checkpoints`).
    pub(crate) fn checkpoint_names(&self) -> Result<Vec<String>, String> {
        match self {
            Self::Dir(dir) => list(&dir.join(CHECKPOINTS_DIR)),
            Self::Http(base) => {
                let body = base.get(CHECKPOINTS_DIR)?.ok_or("the server has no /checkpoints listing")?;
                let text = String::from_utf8(body).map_err(|_| "the /checkpoints listing is not text")?;
                Ok(text.lines().map(str::to_owned).collect())
            }
        }
    }

    /// The names in `replays/`, where they can be listed (a directory; not over HTTP).
    pub(crate) fn replay_names(&self) -> Result<Option<Vec<String>>, String> {
        match self {
            Self::Dir(dir) => list(&dir.join(REPLAYS_DIR)).map(Some),
            Self::Http(_) => Ok(None),
        }
    }

    /// The bytes of the entries file up to the first `size` entries at least
    /// (a directory gives the whole file, tail and all).
    pub(crate) fn entries(&self, size: u64) -> Result<Vec<u8>, String> {
        match self {
            Self::Dir(dir) => {
                let path = dir.join(ENTRIES_FILE);
                std::fs::read(&path).map_err(|err| format!("{}: {err}", path.display()))
            }
            Self::Http(base) => {
                let mut bytes = vec![];
                let mut start = 0;
                while start < size {
                    let end = size.min(start + MAX_ENTRIES_PER_REQUEST);
                    let page =
                        base.get(&format!("entries?start={start}&end={end}"))?.ok_or("the server has no /entries")?;
                    bytes.extend_from_slice(&page);
                    start = end;
                }
                Ok(bytes)
            }
        }
    }

    /// A consistency proof from `old` to `new` leaves: computed from the entries of a
    /// directory, or asked of the server. Either way the caller checks it against
    /// signed roots, so the source is not trusted.
    pub(crate) fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<[u8; 32]>, String> {
        match self {
            Self::Dir(_) => {
                let bytes = self.entries(new)?;
                let mut tree = Tree::default();
                for line in bytes.split_inclusive(|&byte| byte == b'\n').take(new as usize) {
                    let Some(leaf) = line.strip_suffix(b"\n") else { break };
                    tree.push(leaf);
                }
                tree.consistency_proof(old, new)
                    .ok_or_else(|| format!("{ENTRIES_FILE} holds {} entries, fewer than {new}", tree.size()))
            }
            Self::Http(base) => {
                let body = base
                    .get(&format!("proof/consistency?old={old}&new={new}"))?
                    .ok_or("the server has no /proof/consistency")?;
                let proof: crate::server::ConsistencyProofJson =
                    serde_json::from_slice(&body).map_err(|err| format!("bad consistency proof: {err}"))?;
                proof.hashes.iter().map(|hash| parse_hash_b64(hash)).collect()
            }
        }
    }
}

fn list(dir: &std::path::Path) -> Result<Vec<String>, String> {
    let mut names = vec![];
    let items = match std::fs::read_dir(dir) {
        Ok(items) => items,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(err) => return Err(format!("{}: {err}", dir.display())),
    };
    for item in items {
        let item = item.map_err(|err| format!("{}: {err}", dir.display()))?;
        names.push(item.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}
