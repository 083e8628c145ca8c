//! The leaves of the log: one [`Entry`] per tournament event, in one canonical encoding.
//!
//! A leaf's bytes are the compact JSON serde writes for the entry: the `"kind"` tag
//! first, then the variant's fields in declaration order (`"v"` first of them), no
//! whitespace, no floats, strings escaped as `serde_json` escapes them. [`Entry::decode`]
//! accepts exactly those bytes: anything that decodes but would encode differently
//! (another field order, spaces, an escaped character that need not be, an unknown
//! field) is refused, so each entry has one encoding and each encoding one hash.

use rally_tournament::{Entrant, Game, GameKey, GameOutcome, Rules, Standing};
use serde::{Deserialize, Serialize};

/// The entry format version this build writes and reads.
pub const ENTRY_VERSION: u8 = 1;

/// Every kind this build knows, in declaration order.
pub const ENTRY_KINDS: [&str; 8] = [
    "tournament_created",
    "entrants_locked",
    "paired",
    "match_result",
    "correction",
    "withdrawal",
    "disqualification",
    "finished",
];

/// One tournament event, as logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A tournament was created with these rules.
    TournamentCreated {
        /// Format version, [`ENTRY_VERSION`].
        v: u8,
        /// The tournament's id.
        tournament: u64,
        /// Its name.
        name: String,
        /// Its rules (stages, seeding).
        rules: Rules,
        /// When it was created, Unix milliseconds.
        created_at_ms: u64,
    },
    /// Registration closed; these entrants play, in seed order (seed 1 first).
    EntrantsLocked {
        /// Format version.
        v: u8,
        /// The tournament.
        tournament: u64,
        /// The seeds, as the engine ordered them.
        seeds: Vec<Entrant>,
    },
    /// Games that just became ready: the engine's new `ready_games()` since the last
    /// `Paired` of this tournament, in key order.
    Paired {
        /// Format version.
        v: u8,
        /// The tournament.
        tournament: u64,
        /// The new games.
        games: Vec<Game>,
    },
    /// A game's result, with the match that produced it.
    MatchResult {
        /// Format version.
        v: u8,
        /// The tournament.
        tournament: u64,
        /// The game.
        key: GameKey,
        /// The rally match id that played it (0 when no match ran, e.g. a no-show).
        match_id: u64,
        /// The outcome the bracket takes.
        outcome: GameOutcome,
        /// Entrant on the home side (side 0 of the match).
        home: u64,
        /// Entrant on the away side (side 1).
        away: u64,
        /// Points per side, as the match ended (empty when no match ran).
        scores: Vec<u32>,
        /// The winning side of the match, `None` for none.
        winner_side: Option<u8>,
        /// The match's end reason in snake_case (`score`, `forfeit`, `abandoned`,
        /// `time_limit`, `shard_shutdown`), or what the service decided (e.g. `no_show`).
        reason: String,
        /// The shard that ran the match.
        shard: String,
        /// When it ended, Unix milliseconds.
        ended_at_ms: u64,
        /// SHA-256 of the match's input log encoding, lowercase hex; "" if none.
        input_log_sha256: String,
        /// SHA-256 of the replay file under `replays/`, lowercase hex; "" if none.
        replay_sha256: String,
    },
    /// An operator corrected a game's result.
    Correction {
        /// Format version.
        v: u8,
        /// The tournament.
        tournament: u64,
        /// The game.
        key: GameKey,
        /// The outcome that replaces the logged one.
        outcome: GameOutcome,
        /// Why.
        reason: String,
        /// Who corrected it (a player id).
        by: u64,
    },
    /// An entrant withdrew.
    Withdrawal {
        /// Format version.
        v: u8,
        /// The tournament.
        tournament: u64,
        /// The entrant.
        entrant: u64,
    },
    /// An entrant was disqualified.
    Disqualification {
        /// Format version.
        v: u8,
        /// The tournament.
        tournament: u64,
        /// The entrant.
        entrant: u64,
        /// Why.
        reason: String,
    },
    /// The tournament is over.
    Finished {
        /// Format version.
        v: u8,
        /// The tournament.
        tournament: u64,
        /// The final standings, as the engine ranks them.
        standings: Vec<Standing>,
        /// The champion, if the format names one.
        champion: Option<u64>,
    },
}

/// Why bytes are not an entry of this format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The bytes are not JSON of any known entry kind (the message names the problem,
    /// e.g. an unknown `kind` or a missing field).
    #[error("not a ledger entry: {0}")]
    Malformed(String),
    /// A well-formed entry of a version this build does not read.
    #[error("{kind} entry of version {found}; this build reads version {ENTRY_VERSION}")]
    Version {
        /// The entry's kind.
        kind: &'static str,
        /// The version found.
        found: u8,
    },
    /// The entry decodes but is not in its canonical encoding (field order, spacing,
    /// escapes or an unknown field differ), so its hash would not be the one logged.
    #[error("entry is not in canonical form (expected {expected} bytes, found {found})")]
    NotCanonical {
        /// Length of the canonical encoding.
        expected: usize,
        /// Length of the bytes given.
        found: usize,
    },
    /// A digest field is neither empty nor 64 lowercase hex digits.
    #[error("{field} is {value:?}, expected \"\" or 64 lowercase hex digits")]
    BadDigest {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
}

impl Entry {
    /// The entry's kind, as its `"kind"` tag spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TournamentCreated { .. } => ENTRY_KINDS[0],
            Self::EntrantsLocked { .. } => ENTRY_KINDS[1],
            Self::Paired { .. } => ENTRY_KINDS[2],
            Self::MatchResult { .. } => ENTRY_KINDS[3],
            Self::Correction { .. } => ENTRY_KINDS[4],
            Self::Withdrawal { .. } => ENTRY_KINDS[5],
            Self::Disqualification { .. } => ENTRY_KINDS[6],
            Self::Finished { .. } => ENTRY_KINDS[7],
        }
    }

    /// The entry's format version.
    pub fn version(&self) -> u8 {
        match self {
            Self::TournamentCreated { v, .. }
            | Self::EntrantsLocked { v, .. }
            | Self::Paired { v, .. }
            | Self::MatchResult { v, .. }
            | Self::Correction { v, .. }
            | Self::Withdrawal { v, .. }
            | Self::Disqualification { v, .. }
            | Self::Finished { v, .. } => *v,
        }
    }

    /// The tournament the entry belongs to.
    pub fn tournament(&self) -> u64 {
        match self {
            Self::TournamentCreated { tournament, .. }
            | Self::EntrantsLocked { tournament, .. }
            | Self::Paired { tournament, .. }
            | Self::MatchResult { tournament, .. }
            | Self::Correction { tournament, .. }
            | Self::Withdrawal { tournament, .. }
            | Self::Disqualification { tournament, .. }
            | Self::Finished { tournament, .. } => *tournament,
        }
    }

    /// The canonical encoding: the leaf's bytes (no newline).
    pub fn encode(&self) -> Vec<u8> {
        // Every field is an integer, a string, a vector, an option or a struct of them,
        // and serde_json cannot fail on those; an empty vector would only hide a bug.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks what the type cannot say: the version, and the digest fields' syntax.
    pub fn validate(&self) -> Result<(), EntryError> {
        if self.version() != ENTRY_VERSION {
            return Err(EntryError::Version { kind: self.kind(), found: self.version() });
        }
        if let Self::MatchResult { input_log_sha256, replay_sha256, .. } = self {
            for (field, value) in [("input_log_sha256", input_log_sha256), ("replay_sha256", replay_sha256)] {
                if !value.is_empty() && !is_sha256_hex(value) {
                    return Err(EntryError::BadDigest { field, value: value.clone() });
                }
            }
        }
        Ok(())
    }

    /// Decodes a leaf from untrusted bytes: never panics, and accepts only the
    /// canonical encoding of a valid entry of [`ENTRY_VERSION`].
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        let entry: Self = serde_json::from_slice(bytes).map_err(|error| explain(bytes, &error))?;
        entry.validate()?;
        let canonical = entry.encode();
        if canonical != bytes {
            return Err(EntryError::NotCanonical { expected: canonical.len(), found: bytes.len() });
        }
        Ok(entry)
    }
}

/// Names what is wrong with bytes serde refused: an unknown kind or version when the
/// JSON says so (a later format may add fields this build cannot read), else serde's
/// own message.
fn explain(bytes: &[u8], error: &serde_json::Error) -> EntryError {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return EntryError::Malformed(error.to_string());
    };
    let kind = value.get("kind").and_then(serde_json::Value::as_str);
    match kind.and_then(|kind| ENTRY_KINDS.iter().find(|known| **known == kind)) {
        None => match kind {
            Some(kind) => {
                EntryError::Malformed(format!("unknown kind {kind:?} (this build knows {})", ENTRY_KINDS.join(", ")))
            }
            None => EntryError::Malformed(error.to_string()),
        },
        Some(known) => match value.get("v").and_then(serde_json::Value::as_u64) {
            Some(found) if found != u64::from(ENTRY_VERSION) => {
                EntryError::Version { kind: known, found: u8::try_from(found).unwrap_or(u8::MAX) }
            }
            _ => EntryError::Malformed(error.to_string()),
        },
    }
}

/// Whether `text` is 64 lowercase hex digits (a SHA-256 as this crate writes it).
pub(crate) fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use rally_tournament::{Format, Seeding, Side, Stage};

    use super::*;

    fn key() -> GameKey {
        GameKey { stage: 0, round: 1, table: 2, game: 0 }
    }

    fn result() -> Entry {
        Entry::MatchResult {
            v: 1,
            tournament: 3,
            key: key(),
            match_id: 44,
            outcome: GameOutcome::Played { home_score: 5, away_score: 2 },
            home: 10,
            away: 11,
            scores: vec![5, 2],
            winner_side: Some(0),
            reason: "score".to_owned(),
            shard: "shard-1".to_owned(),
            ended_at_ms: 1_700_000_000_123,
            input_log_sha256: "ab".repeat(32),
            replay_sha256: String::new(),
        }
    }

    /// The leaf bytes are the format: pinned, so a change to a field or to an engine
    /// type's serde shape fails here first.
    #[test]
    fn golden_leaf_bytes() {
        let created = Entry::TournamentCreated {
            v: 1,
            tournament: 3,
            name: "Cup é \"1\"".to_owned(),
            rules: Rules {
                stages: vec![Stage {
                    format: Format::SingleElimination { third_place: true },
                    best_of: 3,
                    advance: None,
                }],
                seeding: Seeding::Rating,
            },
            created_at_ms: 1_700_000_000_000,
        };
        assert_eq!(
            String::from_utf8(created.encode()).unwrap(),
            r#"{"kind":"tournament_created","v":1,"tournament":3,"name":"Cup é \"1\"","rules":{"stages":[{"format":{"type":"single_elimination","third_place":true},"best_of":3,"advance":null}],"seeding":"rating"},"created_at_ms":1700000000000}"#
        );
        assert_eq!(
            String::from_utf8(result().encode()).unwrap(),
            format!(
                r#"{{"kind":"match_result","v":1,"tournament":3,"key":{{"stage":0,"round":1,"table":2,"game":0}},"match_id":44,"outcome":{{"type":"played","home_score":5,"away_score":2}},"home":10,"away":11,"scores":[5,2],"winner_side":0,"reason":"score","shard":"shard-1","ended_at_ms":1700000000123,"input_log_sha256":"{}","replay_sha256":""}}"#,
                "ab".repeat(32)
            )
        );
        let correction = Entry::Correction {
            v: 1,
            tournament: 3,
            key: key(),
            outcome: GameOutcome::Forfeit { winner: Side::Away },
            reason: "r".to_owned(),
            by: 1,
        };
        assert_eq!(
            String::from_utf8(correction.encode()).unwrap(),
            r#"{"kind":"correction","v":1,"tournament":3,"key":{"stage":0,"round":1,"table":2,"game":0},"outcome":{"type":"forfeit","winner":"away"},"reason":"r","by":1}"#
        );
        for entry in [created, result(), correction] {
            assert_eq!(Entry::decode(&entry.encode()).unwrap(), entry);
        }
    }

    #[test]
    fn decode_refuses_other_kinds_versions_and_encodings() {
        let bytes = String::from_utf8(result().encode()).unwrap();
        let unknown = bytes.replace("match_result", "match_replayed");
        assert!(
            matches!(Entry::decode(unknown.as_bytes()), Err(EntryError::Malformed(message)) if message.contains("unknown kind \"match_replayed\""))
        );
        let v2 = bytes.replace("\"v\":1", "\"v\":2");
        assert_eq!(Entry::decode(v2.as_bytes()), Err(EntryError::Version { kind: "match_result", found: 2 }));
        let v2_with_new_field = bytes.replace("\"v\":1", "\"v\":2,\"extra\":[1]");
        assert!(matches!(Entry::decode(v2_with_new_field.as_bytes()), Err(EntryError::Version { found: 2, .. })));
        for not_canonical in [
            bytes.replace(",\"home\":10", ", \"home\":10"),
            bytes.replace("shard-1", "shard\\u002d1"),
            bytes.replace("\"match_id\":44,", "").replace("\"key\":", "\"match_id\":44,\"key\":"),
            bytes.replace("\"shard\":\"shard-1\"", "\"shard\":\"shard-1\",\"shard\":\"shard-1\""),
            format!("{bytes}\n"),
        ] {
            assert!(Entry::decode(not_canonical.as_bytes()).is_err(), "{not_canonical}");
        }
        let bad_digest = bytes.replace(&"ab".repeat(32), &"AB".repeat(32));
        assert!(matches!(
            Entry::decode(bad_digest.as_bytes()),
            Err(EntryError::BadDigest { field: "input_log_sha256", .. })
        ));
        for garbage in [&b""[..], b"{", b"[]", b"\xff\xfe", b"{\"kind\":7}", b"null"] {
            assert!(Entry::decode(garbage).is_err());
        }
    }
}
