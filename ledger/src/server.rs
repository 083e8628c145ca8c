//! The read-only HTTP face of a log. Paths mirror the directory layout where a file
//! exists (`/checkpoint`, `/checkpoints/<n>`, `/replays/<hex>.replay`, `/log.vkey`), so
//! a static mirror of the directory answers the same requests; the rest are computed.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::note::hash_b64;
use crate::{Ledger, LedgerError, REPLAY_SUFFIX};

/// The most entries one `GET /entries` returns.
pub const MAX_ENTRIES_PER_REQUEST: u64 = 10_000;

type Shared = Arc<Mutex<Ledger>>;

/// The JSON of `GET /proof/inclusion`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InclusionProofJson {
    pub(crate) index: u64,
    pub(crate) tree_size: u64,
    pub(crate) hashes: Vec<String>,
}

/// The JSON of `GET /proof/consistency`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ConsistencyProofJson {
    pub(crate) old_size: u64,
    pub(crate) new_size: u64,
    pub(crate) hashes: Vec<String>,
}

/// The read-only HTTP API of a log (paths in `LEDGER.md`):
/// `GET /checkpoint`, `/checkpoints` (the sizes, one per line), `/checkpoints/{size}`,
/// `/entries?start=&end=` (JSON lines, at most [`MAX_ENTRIES_PER_REQUEST`]),
/// `/proof/inclusion?index=&size=`, `/proof/consistency?old=&new=`,
/// `/receipt?index=`, `/replays/{hex}.replay`, `/log.vkey`.
/// Bad parameters get a 400 with a message, unknown things a 404.
pub fn router(ledger: Arc<Mutex<Ledger>>) -> Router {
    Router::new()
        .route("/checkpoint", get(checkpoint))
        .route("/checkpoints", get(checkpoint_list))
        .route("/checkpoints/{size}", get(checkpoint_at))
        .route("/entries", get(entries))
        .route("/proof/inclusion", get(inclusion))
        .route("/proof/consistency", get(consistency))
        .route("/receipt", get(receipt))
        .route("/replays/{file}", get(replay))
        .route("/log.vkey", get(vkey))
        .with_state(ledger)
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn bad_request(message: String) -> Response {
    text(StatusCode::BAD_REQUEST, format!("{message}\n"))
}

fn not_found(message: String) -> Response {
    text(StatusCode::NOT_FOUND, format!("{message}\n"))
}

fn json(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn failure(error: &LedgerError) -> Response {
    match error {
        LedgerError::Range(message) => bad_request(message.clone()),
        other => {
            tracing::warn!(error = %other, "ledger read failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{other}\n"))
        }
    }
}

/// Runs `read` on the locked ledger (a poisoned lock still holds a consistent log:
/// every write leaves it whole or rolls back).
fn with_ledger<T>(ledger: &Shared, read: impl FnOnce(&Ledger) -> T) -> T {
    let guard = ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    read(&guard)
}

/// The named integer parameters of a query string, each required once.
fn params<const N: usize>(query: Option<&str>, names: [&str; N]) -> Result<[u64; N], String> {
    let mut values = [None; N];
    for pair in query.unwrap_or_default().split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(slot) = names.iter().position(|known| *known == name) else {
            return Err(format!("unknown parameter {name:?} (expected {})", names.join(", ")));
        };
        if values[slot].is_some() {
            return Err(format!("parameter {name:?} given twice"));
        }
        let parsed = value.parse::<u64>().map_err(|_| format!("parameter {name:?} is {value:?}, not an integer"))?;
        values[slot] = Some(parsed);
    }
    let mut out = [0; N];
    for (slot, name) in names.iter().enumerate() {
        out[slot] = values[slot].ok_or_else(|| format!("missing parameter {name:?}"))?;
    }
    Ok(out)
}

async fn checkpoint(State(ledger): State<Shared>) -> Response {
    text(StatusCode::OK, with_ledger(&ledger, Ledger::checkpoint))
}

async fn checkpoint_list(State(ledger): State<Shared>) -> Response {
    let sizes =
        with_ledger(&ledger, |ledger| ledger.checkpoint_sizes().iter().map(|size| format!("{size}\n")).collect());
    text(StatusCode::OK, sizes)
}

async fn checkpoint_at(State(ledger): State<Shared>, Path(size): Path<String>) -> Response {
    let Some(size) = crate::store::parse_size_name(&size) else {
        return bad_request(format!("{size:?} is not a tree size"));
    };
    match with_ledger(&ledger, |ledger| ledger.checkpoint_at(size)) {
        Ok(Some(note)) => text(StatusCode::OK, note),
        Ok(None) => not_found(format!("no checkpoint of size {size} was published")),
        Err(error) => failure(&error),
    }
}

async fn entries(State(ledger): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let [start, end] = match params(query.as_deref(), ["start", "end"]) {
        Ok(values) => values,
        Err(message) => return bad_request(message),
    };
    if end < start || end - start > MAX_ENTRIES_PER_REQUEST {
        return bad_request(format!(
            "start={start}&end={end}: ask for 0 to {MAX_ENTRIES_PER_REQUEST} entries, start <= end"
        ));
    }
    match with_ledger(&ledger, |ledger| ledger.entries(start..end)) {
        Ok(lines) => {
            let mut body = Vec::with_capacity(lines.iter().map(|line| line.len() + 1).sum());
            for line in lines {
                body.extend_from_slice(&line);
                body.push(b'\n');
            }
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/jsonl")], body).into_response()
        }
        Err(error) => failure(&error),
    }
}

async fn inclusion(State(ledger): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let [index, size] = match params(query.as_deref(), ["index", "size"]) {
        Ok(values) => values,
        Err(message) => return bad_request(message),
    };
    match with_ledger(&ledger, |ledger| ledger.inclusion_proof(index, size)) {
        Ok(proof) => json(
            serde_json::to_string(&InclusionProofJson {
                index,
                tree_size: size,
                hashes: proof.iter().map(hash_b64).collect(),
            })
            .unwrap_or_default(),
        ),
        Err(error) => failure(&error),
    }
}

async fn consistency(State(ledger): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let [old, new] = match params(query.as_deref(), ["old", "new"]) {
        Ok(values) => values,
        Err(message) => return bad_request(message),
    };
    match with_ledger(&ledger, |ledger| ledger.consistency_proof(old, new)) {
        Ok(proof) => json(
            serde_json::to_string(&ConsistencyProofJson {
                old_size: old,
                new_size: new,
                hashes: proof.iter().map(hash_b64).collect(),
            })
            .unwrap_or_default(),
        ),
        Err(error) => failure(&error),
    }
}

async fn receipt(State(ledger): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let [index] = match params(query.as_deref(), ["index"]) {
        Ok(values) => values,
        Err(message) => return bad_request(message),
    };
    match with_ledger(&ledger, |ledger| ledger.receipt(index)) {
        Ok(receipt) => json(receipt.to_json()),
        Err(error) => failure(&error),
    }
}

async fn replay(State(ledger): State<Shared>, Path(file): Path<String>) -> Response {
    let Some(hex) = file.strip_suffix(REPLAY_SUFFIX).filter(|hex| crate::entry::is_sha256_hex(hex)) else {
        return bad_request(format!("{file:?} is not <64 lowercase hex digits>{REPLAY_SUFFIX}"));
    };
    match with_ledger(&ledger, |ledger| ledger.replay(hex)) {
        Ok(Some(bytes)) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(None) => not_found(format!("no replay {file}")),
        Err(error) => failure(&error),
    }
}

async fn vkey(State(ledger): State<Shared>) -> Response {
    text(StatusCode::OK, format!("{}\n", with_ledger(&ledger, Ledger::verifier_key)))
}
