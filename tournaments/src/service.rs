//! `rally.tournament.v1.Tournaments` over tonic, with gRPC health and
//! reflection, and a handle to stop it. Every method needs an access token
//! from the lobby, checked in-process with `AccessTokenVerifier`.
//!
//! [`service`] returns the bare tonic service, to mount beside others on one
//! server (the matchmaker's); [`serve`] runs it on a server of its own.

use std::net::SocketAddr;

use anyhow::Context as _;
use rally_lobby::AccessTokenVerifier;
use rally_lobby::request_span::{record_player, request_span};
use rally_tournament::{Format, GameKey, GameOutcome, Rules, Seeding, Side, Stage};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::director::{CreateTournament, TournamentDirector, TournamentView};
use crate::error::TournamentError;
use crate::proto::{self, tournament as pb};
use crate::store::{EntrantRecord, EntrantState, MatchRow, MatchStatus, Status as TournamentStatus, TournamentRecord};

/// Largest request message accepted, in bytes: the same for every rally server.
pub const MAX_REQUEST_BYTES: usize = rally_lobby::contract::MAX_REQUEST_BYTES;

/// Tournaments per List page unless asked otherwise, and at most.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// See [`DEFAULT_PAGE_SIZE`].
pub const MAX_PAGE_SIZE: u32 = 100;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct TournamentsService {
    director: TournamentDirector,
    verifier: AccessTokenVerifier,
}

impl TournamentsService {
    /// The service over `director`, trusting access tokens `verifier` accepts.
    pub fn new(director: TournamentDirector, verifier: AccessTokenVerifier) -> Self {
        Self { director, verifier }
    }

    /// The authenticated caller and their display name, recorded on the request's span.
    fn caller<T>(&self, request: &Request<T>) -> Result<(u64, String), TournamentError> {
        let header = request.metadata().get("authorization").and_then(|value| value.to_str().ok()).unwrap_or("");
        let token = header.strip_prefix("Bearer ").unwrap_or("");
        let claims = self.verifier.verify(token.trim())?;
        let player = claims.player_id()?;
        record_player(player);
        Ok((player, claims.name))
    }
}

fn now_ms() -> u64 {
    rally_matchmaker::engine::unix_ms()
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_ms(field: &'static str, value: i64) -> Result<u64, TournamentError> {
    u64::try_from(value).map_err(|_| TournamentError::invalid(field, "must not be negative (Unix milliseconds)"))
}

// ---------------------------------------------------------------- conversions

/// Rules from the wire.
pub fn rules_from_wire(rules: Option<pb::Rules>) -> Result<Rules, TournamentError> {
    let rules = rules.ok_or_else(|| TournamentError::invalid("rules", "required: give at least one stage"))?;
    let stages = rules
        .stages
        .into_iter()
        .enumerate()
        .map(|(idx, stage)| {
            let format = match stage.format {
                Some(pb::stage::Format::SingleElimination(se)) => {
                    Format::SingleElimination { third_place: se.third_place }
                }
                Some(pb::stage::Format::DoubleElimination(de)) => {
                    Format::DoubleElimination { grand_final_reset: de.grand_final_reset }
                }
                Some(pb::stage::Format::Swiss(swiss)) => Format::Swiss {
                    rounds: u16::try_from(swiss.rounds).map_err(|_| {
                        TournamentError::Rules(format!("stage {}: {} Swiss rounds is too many", idx + 1, swiss.rounds))
                    })?,
                },
                Some(pb::stage::Format::RoundRobin(_)) => Format::RoundRobin,
                None => {
                    return Err(TournamentError::Rules(format!(
                        "stage {}: no format; set single_elimination, double_elimination, swiss or round_robin",
                        idx + 1
                    )));
                }
            };
            let best_of = u8::try_from(stage.best_of).unwrap_or(u8::MAX);
            let advance = stage
                .advance
                .map(|advance| {
                    u16::try_from(advance).map_err(|_| {
                        TournamentError::Rules(format!("stage {}: advance {advance} is too large", idx + 1))
                    })
                })
                .transpose()?;
            Ok(Stage { format, best_of, advance })
        })
        .collect::<Result<Vec<_>, TournamentError>>()?;
    let seeding = match pb::Seeding::try_from(rules.seeding).unwrap_or(pb::Seeding::Unspecified) {
        pb::Seeding::Given => Seeding::Given,
        pb::Seeding::Rating | pb::Seeding::Unspecified => Seeding::Rating,
    };
    Ok(Rules { stages, seeding })
}

/// Rules for the wire.
pub fn rules_to_wire(rules: &Rules) -> pb::Rules {
    pb::Rules {
        stages: rules
            .stages
            .iter()
            .map(|stage| pb::Stage {
                format: Some(match &stage.format {
                    Format::SingleElimination { third_place } => {
                        pb::stage::Format::SingleElimination(pb::SingleElimination { third_place: *third_place })
                    }
                    Format::DoubleElimination { grand_final_reset } => {
                        pb::stage::Format::DoubleElimination(pb::DoubleElimination {
                            grand_final_reset: *grand_final_reset,
                        })
                    }
                    Format::Swiss { rounds } => pb::stage::Format::Swiss(pb::Swiss { rounds: u32::from(*rounds) }),
                    Format::RoundRobin => pb::stage::Format::RoundRobin(pb::RoundRobin {}),
                }),
                best_of: u32::from(stage.best_of),
                advance: stage.advance.map(u32::from),
            })
            .collect(),
        seeding: match rules.seeding {
            Seeding::Rating => pb::Seeding::Rating,
            Seeding::Given => pb::Seeding::Given,
        } as i32,
    }
}

/// A game key from the wire.
pub fn key_from_wire(key: Option<pb::GameKey>) -> Result<GameKey, TournamentError> {
    let key = key.ok_or_else(|| TournamentError::invalid("key", "required"))?;
    let too_big = |what: &str| TournamentError::invalid("key", format!("{what} is out of range"));
    Ok(GameKey {
        stage: u8::try_from(key.stage).map_err(|_| too_big("stage"))?,
        round: u16::try_from(key.round).map_err(|_| too_big("round"))?,
        table: u16::try_from(key.table).map_err(|_| too_big("table"))?,
        game: u8::try_from(key.game).map_err(|_| too_big("game"))?,
    })
}

/// A game key for the wire.
pub fn key_to_wire(key: &GameKey) -> pb::GameKey {
    pb::GameKey {
        stage: u32::from(key.stage),
        round: u32::from(key.round),
        table: u32::from(key.table),
        game: u32::from(key.game),
        label: key.to_string(),
    }
}

/// An outcome from the wire.
pub fn outcome_from_wire(outcome: Option<pb::GameOutcome>) -> Result<GameOutcome, TournamentError> {
    match outcome.and_then(|outcome| outcome.outcome) {
        Some(pb::game_outcome::Outcome::Played(played)) => {
            Ok(GameOutcome::Played { home_score: played.home_score, away_score: played.away_score })
        }
        Some(pb::game_outcome::Outcome::Forfeit(forfeit)) => match pb::Side::try_from(forfeit.winner) {
            Ok(pb::Side::Home) => Ok(GameOutcome::Forfeit { winner: Side::Home }),
            Ok(pb::Side::Away) => Ok(GameOutcome::Forfeit { winner: Side::Away }),
            _ => Err(TournamentError::invalid("outcome", "a forfeit names its winner: SIDE_HOME or SIDE_AWAY")),
        },
        Some(pb::game_outcome::Outcome::DoubleForfeit(_)) => Ok(GameOutcome::DoubleForfeit),
        None => Err(TournamentError::invalid("outcome", "required: played, forfeit or double_forfeit")),
    }
}

/// An outcome for the wire.
pub fn outcome_to_wire(outcome: &GameOutcome) -> pb::GameOutcome {
    let outcome = match outcome {
        GameOutcome::Played { home_score, away_score } => {
            pb::game_outcome::Outcome::Played(pb::Played { home_score: *home_score, away_score: *away_score })
        }
        GameOutcome::Forfeit { winner } => pb::game_outcome::Outcome::Forfeit(pb::Forfeit {
            winner: match winner {
                Side::Home => pb::Side::Home,
                Side::Away => pb::Side::Away,
            } as i32,
        }),
        GameOutcome::DoubleForfeit => pb::game_outcome::Outcome::DoubleForfeit(pb::DoubleForfeit {}),
    };
    pb::GameOutcome { outcome: Some(outcome) }
}

fn status_to_wire(status: TournamentStatus) -> pb::TournamentStatus {
    match status {
        TournamentStatus::Created => pb::TournamentStatus::Created,
        TournamentStatus::Registration => pb::TournamentStatus::Registration,
        TournamentStatus::CheckIn => pb::TournamentStatus::CheckIn,
        TournamentStatus::Running => pb::TournamentStatus::Running,
        TournamentStatus::Finished => pb::TournamentStatus::Finished,
        TournamentStatus::Cancelled => pb::TournamentStatus::Cancelled,
    }
}

fn status_from_wire(status: i32) -> Result<TournamentStatus, TournamentError> {
    Ok(match pb::TournamentStatus::try_from(status) {
        Ok(pb::TournamentStatus::Created) => TournamentStatus::Created,
        Ok(pb::TournamentStatus::Registration) => TournamentStatus::Registration,
        Ok(pb::TournamentStatus::CheckIn) => TournamentStatus::CheckIn,
        Ok(pb::TournamentStatus::Running) => TournamentStatus::Running,
        Ok(pb::TournamentStatus::Finished) => TournamentStatus::Finished,
        Ok(pb::TournamentStatus::Cancelled) => TournamentStatus::Cancelled,
        _ => return Err(TournamentError::invalid("statuses", format!("{status} is not a tournament status"))),
    })
}

fn entrant_to_wire(entrant: &EntrantRecord, seed: Option<u32>) -> pb::Entrant {
    let state = match entrant.state {
        EntrantState::Registered => pb::EntrantState::Registered,
        EntrantState::CheckedIn => pb::EntrantState::CheckedIn,
        EntrantState::Withdrawn => pb::EntrantState::Withdrawn,
        EntrantState::Disqualified => pb::EntrantState::Disqualified,
        EntrantState::NotCheckedIn => pb::EntrantState::NotCheckedIn,
    };
    pb::Entrant {
        player_id: entrant.player_id,
        display_name: entrant.display_name.clone(),
        rating: entrant.rating,
        state: state as i32,
        seed: seed.unwrap_or(0),
        registered_at_ms: ms(entrant.registered_at_ms),
    }
}

fn summary_to_wire(record: &TournamentRecord, n_registered: u32, n_checked_in: u32) -> pb::Tournament {
    pb::Tournament {
        tournament_id: record.id,
        name: record.name.clone(),
        rules: serde_json::from_str::<Rules>(&record.rules_json).ok().map(|rules| rules_to_wire(&rules)),
        mode: record.mode.clone(),
        max_entrants: record.max_entrants,
        min_rating: record.min_rating,
        max_rating: record.max_rating,
        registration_opens_at_ms: ms(record.registration_opens_at_ms),
        registration_closes_at_ms: ms(record.registration_closes_at_ms),
        check_in_opens_at_ms: ms(record.check_in_opens_at_ms),
        check_in_closes_at_ms: ms(record.check_in_closes_at_ms),
        status: status_to_wire(record.status) as i32,
        organiser_id: record.organiser_id,
        created_at_ms: ms(record.created_at_ms),
        n_registered,
        n_checked_in,
        entrants: Vec::new(),
        games: Vec::new(),
        bracket_text: String::new(),
        champion_id: None,
    }
}

/// A tournament for the wire, entrants and bracket included.
pub fn view_to_wire(view: &TournamentView) -> pb::Tournament {
    let n_registered = view.entrants.iter().filter(|(entrant, _)| entrant.state.holds_place()).count() as u32;
    let n_checked_in =
        view.entrants.iter().filter(|(entrant, _)| entrant.state == EntrantState::CheckedIn).count() as u32;
    let mut tournament = summary_to_wire(&view.record, n_registered, n_checked_in);
    tournament.entrants = view.entrants.iter().map(|(entrant, seed)| entrant_to_wire(entrant, *seed)).collect();
    tournament.games = view
        .games
        .iter()
        .map(|(game, outcome)| {
            let key_json = serde_json::to_string(&game.key).unwrap_or_default();
            // The match counted for it, or the one playing it, or the latest.
            let row = view.matches.iter().rev().filter(|row| row.game_key_json == key_json).max_by_key(|row| match row
                .status
            {
                MatchStatus::Counted | MatchStatus::Expired => 3,
                MatchStatus::Scheduled => 2,
                _ => 1,
            });
            let state = match (outcome, row) {
                (Some(_), _) => pb::GameState::Done,
                (None, Some(row)) if row.status == MatchStatus::Scheduled => pb::GameState::Scheduled,
                (None, _) => pb::GameState::Waiting,
            };
            pb::Game {
                key: Some(key_to_wire(&game.key)),
                home_id: game.home,
                away_id: game.away,
                home_name: view.name_of(game.home),
                away_name: view.name_of(game.away),
                state: state as i32,
                outcome: outcome.as_ref().map(outcome_to_wire),
                match_id: row.map_or(0, |row| row.match_id),
                shard_name: row.map(|row| row.shard.clone()).unwrap_or_default(),
                attempt: row.map_or(0, |row| row.attempt),
            }
        })
        .collect();
    tournament.bracket_text = view.bracket_text.clone();
    tournament.champion_id = view.champion;
    tournament
}

/// The "your match is ready" message of `row` for `player`.
pub fn match_ready(view: &TournamentView, row: &MatchRow, player: u64) -> pb::MatchReady {
    let home = row.home_id == player;
    let opponent = if home { row.away_id } else { row.home_id };
    let key = serde_json::from_str::<GameKey>(&row.game_key_json).ok();
    pb::MatchReady {
        tournament_id: row.tournament_id,
        key: key.as_ref().map(key_to_wire),
        match_id: row.match_id,
        shard_name: row.shard.clone(),
        shard_address: row.shard_address.clone(),
        certificate_sha256: row.certificate_sha256.clone(),
        mode: view.record.mode.clone(),
        seat: if home { 0 } else { 1 },
        side: if home { 0 } else { 1 },
        connect_token: if home { row.home_token.clone() } else { row.away_token.clone() },
        token_expires_at_ms: ms(row.token_expires_at_ms),
        opponent_id: opponent,
        opponent_name: view.name_of(opponent),
        attempt: row.attempt,
    }
}

fn update_for(view: &TournamentView, player: u64) -> pb::TournamentUpdate {
    pb::TournamentUpdate {
        tournament: Some(view_to_wire(view)),
        ready: view.ready_for(player).map(|row| match_ready(view, row, player)).collect(),
    }
}

// ---------------------------------------------------------------- page tokens

const PAGE_TOKEN_VERSION: u8 = 1;

fn page_scope(statuses: &[TournamentStatus]) -> [u8; 8] {
    let mut names: Vec<&str> = statuses.iter().map(|status| status.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let digest = Sha256::digest(format!("tournaments.list:{}", names.join(",")).as_bytes());
    let mut scope = [0_u8; 8];
    scope.copy_from_slice(&digest[..8]);
    scope
}

/// The lobby's page-token shape: hex of a version byte, 8 bytes of the
/// query's scope digest, then the cursor (the last tournament id) big-endian.
fn encode_page_token(statuses: &[TournamentStatus], last_id: u64) -> String {
    let mut bytes = vec![PAGE_TOKEN_VERSION];
    bytes.extend_from_slice(&page_scope(statuses));
    bytes.extend_from_slice(&last_id.to_be_bytes());
    hex::encode(bytes)
}

fn decode_page_token(token: &str, statuses: &[TournamentStatus]) -> Result<Option<u64>, TournamentError> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || {
        TournamentError::invalid(
            "page_token",
            "is not a token this server issued; pass the next_page_token of the previous page, or empty for the first",
        )
    };
    let bytes = hex::decode(token).map_err(|_| malformed())?;
    if bytes.len() != 17 || bytes[0] != PAGE_TOKEN_VERSION {
        return Err(malformed());
    }
    if bytes[1..9] != page_scope(statuses) {
        return Err(TournamentError::invalid(
            "page_token",
            "page token belongs to a different query; pass a next_page_token this query returned, or empty to start over",
        ));
    }
    let mut cursor = [0_u8; 8];
    cursor.copy_from_slice(&bytes[9..]);
    Ok(Some(u64::from_be_bytes(cursor)))
}

// ---------------------------------------------------------------- the service

#[tonic::async_trait]
impl pb::tournaments_server::Tournaments for TournamentsService {
    async fn create(&self, request: Request<pb::CreateRequest>) -> Result<Response<pb::CreateResponse>, Status> {
        let (player, _) = self.caller(&request)?;
        let request = request.into_inner();
        let create = CreateTournament {
            name: request.name,
            rules: rules_from_wire(request.rules)?,
            mode: request.mode,
            max_entrants: request.max_entrants,
            min_rating: request.min_rating,
            max_rating: request.max_rating,
            registration_opens_at_ms: from_ms("registration_opens_at_ms", request.registration_opens_at_ms)?,
            registration_closes_at_ms: from_ms("registration_closes_at_ms", request.registration_closes_at_ms)?,
            check_in_opens_at_ms: from_ms("check_in_opens_at_ms", request.check_in_opens_at_ms)?,
            check_in_closes_at_ms: from_ms("check_in_closes_at_ms", request.check_in_closes_at_ms)?,
        };
        let view = self.director.create(player, create, now_ms()).await?;
        Ok(Response::new(pb::CreateResponse { tournament: Some(view_to_wire(&view)) }))
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        self.caller(&request)?;
        let view = self.director.view(request.get_ref().tournament_id).await?;
        Ok(Response::new(pb::GetResponse { tournament: Some(view_to_wire(&view)) }))
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        self.caller(&request)?;
        let request = request.into_inner();
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size <= MAX_PAGE_SIZE => size,
            size => {
                return Err(TournamentError::invalid("page_size", format!("{size} is above {MAX_PAGE_SIZE}")).into());
            }
        };
        if request.statuses.len() > 16 {
            return Err(TournamentError::invalid("statuses", "at most 16").into());
        }
        let statuses =
            request.statuses.iter().map(|&status| status_from_wire(status)).collect::<Result<Vec<_>, _>>()?;
        let before = decode_page_token(&request.page_token, &statuses)?;
        let rows = self.director.list(before, &statuses, page_size + 1).await?;
        let more = rows.len() > page_size as usize;
        let page: Vec<_> = rows.into_iter().take(page_size as usize).collect();
        let next_page_token = match page.last() {
            Some((record, _, _)) if more => encode_page_token(&statuses, record.id),
            _ => String::new(),
        };
        let tournaments = page
            .iter()
            .map(|(record, n_registered, n_checked_in)| summary_to_wire(record, *n_registered, *n_checked_in))
            .collect();
        Ok(Response::new(pb::ListResponse { tournaments, next_page_token }))
    }

    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let (player, name) = self.caller(&request)?;
        let entrant = self.director.register(request.get_ref().tournament_id, player, &name, now_ms()).await?;
        Ok(Response::new(pb::RegisterResponse { entrant: Some(entrant_to_wire(&entrant, None)) }))
    }

    async fn withdraw(&self, request: Request<pb::WithdrawRequest>) -> Result<Response<pb::WithdrawResponse>, Status> {
        let (player, _) = self.caller(&request)?;
        let entrant = self.director.withdraw(request.get_ref().tournament_id, player, now_ms()).await?;
        Ok(Response::new(pb::WithdrawResponse { entrant: Some(entrant_to_wire(&entrant, None)) }))
    }

    async fn check_in(&self, request: Request<pb::CheckInRequest>) -> Result<Response<pb::CheckInResponse>, Status> {
        let (player, _) = self.caller(&request)?;
        let entrant = self.director.check_in(request.get_ref().tournament_id, player, now_ms()).await?;
        Ok(Response::new(pb::CheckInResponse { entrant: Some(entrant_to_wire(&entrant, None)) }))
    }

    type WatchStream = ReceiverStream<Result<pb::TournamentUpdate, Status>>;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let (player, _) = self.caller(&request)?;
        let id = request.get_ref().tournament_id;
        let mut changes = self.director.subscribe(id);
        // Read after subscribing: a change made after this read still arrives.
        let first = self.director.view(id).await?;
        let (updates, stream) = mpsc::channel(4);
        let director = self.director.clone();
        let watch = async move {
            let mut view = first;
            let mut last: Option<pb::TournamentUpdate> = None;
            loop {
                let update = update_for(&view, player);
                if last.as_ref() != Some(&update) {
                    if updates.send(Ok(update.clone())).await.is_err() {
                        return;
                    }
                    last = Some(update);
                }
                if view.record.status.is_over() {
                    return;
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    () = updates.closed() => return,
                }
                changes.borrow_and_update();
                view = match director.view(id).await {
                    Ok(view) => view,
                    Err(err) => {
                        let _ = updates.send(Err(err.into())).await;
                        return;
                    }
                };
            }
        };
        tokio::spawn(watch.instrument(tracing::Span::current()));
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn standings(
        &self,
        request: Request<pb::StandingsRequest>,
    ) -> Result<Response<pb::StandingsResponse>, Status> {
        self.caller(&request)?;
        let view = self.director.view(request.get_ref().tournament_id).await?;
        let standings = view
            .standings
            .iter()
            .map(|standing| pb::Standing {
                rank: standing.rank,
                player_id: standing.entrant,
                display_name: view.name_of(standing.entrant),
                wins: standing.wins,
                losses: standing.losses,
                draws: standing.draws,
                points: standing.points,
                buchholz: standing.buchholz,
                point_difference: standing.point_difference,
                eliminated: standing.eliminated,
            })
            .collect();
        Ok(Response::new(pb::StandingsResponse {
            standings,
            status: status_to_wire(view.record.status) as i32,
            champion_id: view.champion,
        }))
    }

    async fn correct(&self, request: Request<pb::CorrectRequest>) -> Result<Response<pb::CorrectResponse>, Status> {
        let (player, _) = self.caller(&request)?;
        let request = request.into_inner();
        let key = key_from_wire(request.key)?;
        let outcome = outcome_from_wire(request.outcome)?;
        let view =
            self.director.correct(request.tournament_id, player, key, outcome, &request.reason, now_ms()).await?;
        Ok(Response::new(pb::CorrectResponse { tournament: Some(view_to_wire(&view)) }))
    }

    async fn disqualify(
        &self,
        request: Request<pb::DisqualifyRequest>,
    ) -> Result<Response<pb::DisqualifyResponse>, Status> {
        let (by, _) = self.caller(&request)?;
        let request = request.into_inner();
        let entrant =
            self.director.disqualify(request.tournament_id, by, request.player_id, &request.reason, now_ms()).await?;
        Ok(Response::new(pb::DisqualifyResponse { entrant: Some(entrant_to_wire(&entrant, None)) }))
    }

    async fn get_receipt(
        &self,
        request: Request<pb::GetReceiptRequest>,
    ) -> Result<Response<pb::GetReceiptResponse>, Status> {
        self.caller(&request)?;
        let request = request.into_inner();
        let receipt = self.director.receipt(request.tournament_id, request.match_id).await?;
        let inclusion_proof = receipt
            .inclusion_proof
            .iter()
            .map(|hash| base64_decode(hash))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| TournamentError::Ledger("the ledger's proof is not base64".into()))?;
        Ok(Response::new(pb::GetReceiptResponse {
            leaf_index: receipt.index,
            entry: receipt.entry.into_bytes(),
            tree_size: receipt.tree_size,
            inclusion_proof,
            checkpoint: receipt.checkpoint,
        }))
    }
}

/// Decodes standard base64 (with padding), as the ledger writes hashes.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0_u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = ALPHABET.iter().position(|&c| c == byte)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The tonic service, to add to a server that also serves others (e.g. the
/// matchmaker's): add [`proto::FILE_DESCRIPTOR_SET`] to that server's
/// reflection and contract layer too.
pub fn service(
    director: TournamentDirector,
    verifier: AccessTokenVerifier,
) -> pb::tournaments_server::TournamentsServer<TournamentsService> {
    pb::tournaments_server::TournamentsServer::new(TournamentsService::new(director, verifier))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
}

/// A running tournaments gRPC server.
#[derive(Debug)]
pub struct TournamentsServer {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TournamentsServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and lets in-flight calls finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        (&mut self.task).await.context("server task")?.context("server")
    }
}

/// Binds `listen` and serves the Tournaments service (plus health and
/// reflection) in a task. The director's ticks and results consumer are not
/// started here: call [`TournamentDirector::start`].
pub async fn serve(
    listen: SocketAddr,
    director: TournamentDirector,
    verifier: AccessTokenVerifier,
) -> anyhow::Result<TournamentsServer> {
    let service = service(director, verifier);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<pb::tournaments_server::TournamentsServer<TournamentsService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("reflection")?;
    // grpcurl and grpcio-reflection still ask v1alpha.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("reflection")?;
    // The lobby's rules for sizes, metadata and unknown methods, so every server answers alike.
    let descriptors = [
        proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let contract = rally_lobby::contract::ContractLayer::new(&descriptors).context("descriptors")?;
    // Request counts and latency per method and status code, as the lobby's.
    let grpc_metrics = rally_lobby::grpc_metrics::GrpcMetricsLayer::new(&descriptors).context("descriptors")?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let local_addr = listener.local_addr().context("local address")?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .trace_fn(request_span)
        .http2_max_header_list_size(rally_lobby::contract::HTTP2_MAX_HEADER_LIST_BYTES)
        .layer(grpc_metrics)
        .layer(contract)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(service);
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = shutdown_rx.await;
    }));
    tracing::info!(%local_addr, "tournaments listening");
    Ok(TournamentsServer { local_addr, shutdown: Some(shutdown_tx), task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_within_their_query_only() {
        let statuses = [TournamentStatus::Running, TournamentStatus::Registration];
        let token = encode_page_token(&statuses, 42);
        assert_eq!(
            decode_page_token(&token, &[TournamentStatus::Registration, TournamentStatus::Running]).ok(),
            Some(Some(42))
        );
        assert!(decode_page_token(&token, &[]).is_err());
        assert!(decode_page_token("zz", &statuses).is_err());
        assert_eq!(decode_page_token("", &statuses).ok(), Some(None));
    }

    #[test]
    fn base64_hashes_decode() {
        assert_eq!(base64_decode("AAECAw==").as_deref(), Some(&[0_u8, 1, 2, 3][..]));
        assert_eq!(base64_decode("////").as_deref(), Some(&[255_u8, 255, 255][..]));
        assert_eq!(base64_decode("a*b"), None);
    }

    #[test]
    fn rules_round_trip_through_the_wire() {
        let rules = Rules {
            stages: vec![
                Stage { format: Format::Swiss { rounds: 5 }, best_of: 1, advance: Some(8) },
                Stage { format: Format::SingleElimination { third_place: true }, best_of: 3, advance: None },
            ],
            seeding: Seeding::Given,
        };
        assert_eq!(rules_from_wire(Some(rules_to_wire(&rules))).ok(), Some(rules));
        assert!(rules_from_wire(Some(pb::Rules { stages: vec![pb::Stage::default()], seeding: 0 })).is_err());
    }
}
