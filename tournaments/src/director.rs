//! The tournament director: lifecycles, scheduling on shards, results, the
//! ledger projection. Transport-free: the gRPC service ([`mod@crate::service`])
//! and tests call it directly, with the time as an argument.
//!
//! - **Lifecycle** ([`TournamentDirector::tick`]): registration opens and
//!   closes by the clock; when the check-in window closes the checked-in
//!   entrants are seeded and locked (`EntrantsLocked`, `Paired`), or the
//!   tournament is cancelled with fewer than two.
//! - **Scheduling** (each tick): every ready game without a match gets one on
//!   the live, non-draining shard with the most free slots: a match row is
//!   written, a [`MatchRecord`] is reserved in the registry (no tickets; the
//!   two entrants' seats), and one connect token per seat is minted with a
//!   lifetime of the no-show window; watchers are told. A game with no shard
//!   free waits for the next tick.
//! - **Results** ([`TournamentDirector::handle_result`], fed by the bus
//!   consumer of group [`crate::config::RESULTS_GROUP`]): a result counts
//!   once per match id: the match row's status moves from `scheduled` to
//!   `counted` in the same transaction that appends the event, so a duplicate
//!   finds nothing to move and writes nothing. `Score`/`TimeLimit` → played
//!   with the scores; `Forfeit` → forfeit for the winner; `Abandoned` with one
//!   side present → forfeit for it, with nobody (or everyone gone) → double
//!   forfeit. A **lost shard** (`ShardShutdown`, the matchmaker's aborted
//!   result) reschedules the game once on another shard with a new match id;
//!   a second loss is a double forfeit.
//! - **Deadline**: a match without a result [`TournamentsConfig::match_deadline`]
//!   after its tokens were minted (its shard never created it) counts as a
//!   double forfeit and its reservation is released.
//! - **Withdrawals, disqualifications and corrections** are engine inputs; a
//!   scheduled match whose game is no longer ready with the same two entrants
//!   is void: its reservation is released and its result ignored.
//! - **Ledger**: each event's entry is appended to the ledger after the
//!   database commit, and its index recorded; on start the ledger is caught up
//!   (entries appended before a crash but not recorded are recognised by their
//!   bytes, not appended twice).
//!
//! Writes are serialised by one lock; one director per database.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rally_ledger::Ledger;
use rally_ledger::entry::{ENTRY_VERSION, Entry};
use rally_matchmaker::registry::{MatchRecord, Reservation, SeatRecord};
use rally_matchmaker::{
    ConsumerConfig, ConsumerHandle, MatchmakerError, RatingSource, ResultHandler, ResultsBus, SeatGrant, ShardRegistry,
    TokenMinter, run_consumer,
};
use rally_protocol::control::EndReason;
use rally_protocol::results::MatchResult;
use rally_protocol::{MatchId, PlayerId};
use rally_tournament::{ApplyError, Entrant, Game, GameKey, GameOutcome, Input, Rules, Side, Standing, Tournament};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::config::{RESULTS_GROUP, TournamentsConfig};
use crate::error::TournamentError;
use crate::store::{
    Appended, Changes, EntrantRecord, EntrantState, MatchRow, MatchStatus, NewEvent, NewTournament, Status, Store,
    TournamentRecord,
};

/// Longest tournament name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Longest reason for a correction or disqualification, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// Most entrants of a tournament (the engine's limit).
pub const MAX_ENTRANTS: u32 = 1024;

/// Events appended to the ledger in one batch.
const LEDGER_BATCH: u32 = 512;

/// What a new tournament is to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTournament {
    /// Its name (1 to [`MAX_NAME_CHARS`] characters).
    pub name: String,
    /// How it is played.
    pub rules: Rules,
    /// Game mode; empty for the default.
    pub mode: String,
    /// Most entrants, 2 to [`MAX_ENTRANTS`].
    pub max_entrants: u32,
    /// Lowest rating admitted.
    pub min_rating: Option<i32>,
    /// Highest rating admitted.
    pub max_rating: Option<i32>,
    /// When registration opens, Unix ms; 0 for now.
    pub registration_opens_at_ms: u64,
    /// When registration closes, Unix ms.
    pub registration_closes_at_ms: u64,
    /// When check-in opens; 0 for when registration opens.
    pub check_in_opens_at_ms: u64,
    /// When check-in closes and entrants are seeded; 0 for when registration closes.
    pub check_in_closes_at_ms: u64,
}

/// A tournament as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TournamentView {
    /// Its settings and status.
    pub record: TournamentRecord,
    /// Its entrants, in registration order, with their seed (1-based) once seeded.
    pub entrants: Vec<(EntrantRecord, Option<u32>)>,
    /// Every game created so far, with its outcome.
    pub games: Vec<(Game, Option<GameOutcome>)>,
    /// Its matches on shards (all attempts), in scheduling order.
    pub matches: Vec<MatchRow>,
    /// The ranking so far (empty before seeding).
    pub standings: Vec<Standing>,
    /// The bracket as plain text (empty before seeding).
    pub bracket_text: String,
    /// The champion, once finished.
    pub champion: Option<u64>,
}

impl TournamentView {
    /// The scheduled matches `player` is seated in.
    pub fn ready_for(&self, player: u64) -> impl Iterator<Item = &MatchRow> + '_ {
        self.matches
            .iter()
            .filter(move |row| row.status == MatchStatus::Scheduled && (row.home_id == player || row.away_id == player))
    }

    /// A player's display name (`player-N` when unknown).
    pub fn name_of(&self, player: u64) -> String {
        self.entrants
            .iter()
            .find(|(entrant, _)| entrant.player_id == player)
            .map_or_else(|| format!("player-{player}"), |(entrant, _)| entrant.display_name.clone())
    }
}

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickStats {
    /// Tournaments seeded.
    pub seeded: usize,
    /// Tournaments cancelled for want of entrants.
    pub cancelled: usize,
    /// Matches scheduled on shards.
    pub scheduled: usize,
    /// Ready games with no shard free.
    pub waiting: usize,
    /// Matches past their deadline, counted as double forfeits.
    pub expired: usize,
}

/// What became of one result from the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultOutcome {
    /// Not a tournament match.
    NotOurs,
    /// Counted for its game.
    Counted,
    /// Its match was already settled (a duplicate or a late result): ignored.
    Duplicate,
    /// Its shard was lost: the game is scheduled again.
    Rescheduled,
    /// Its game was decided otherwise: ignored.
    Void,
}

/// One tournament in memory: its record, and its engine once seeded.
#[derive(Debug, Clone)]
struct Live {
    record: TournamentRecord,
    rules: Rules,
    engine: Option<Tournament>,
    /// Keys of games announced by `Paired` entries.
    paired: BTreeSet<GameKey>,
}

/// One step of a commit: an engine input (if any) and its ledger entry.
struct Step {
    input: Option<Input>,
    entry: Entry,
    match_id: Option<u64>,
}

struct Inner {
    config: TournamentsConfig,
    store: Store,
    registry: Arc<dyn ShardRegistry>,
    bus: Arc<dyn ResultsBus>,
    ratings: Arc<dyn RatingSource>,
    minter: TokenMinter,
    ledger: Arc<Mutex<Ledger>>,
    /// Every write goes through this lock (and it holds the loaded tournaments).
    live: tokio::sync::Mutex<BTreeMap<u64, Live>>,
    /// Serialises ledger catch-ups.
    projecting: tokio::sync::Mutex<()>,
    /// Per tournament, a version bumped on every change.
    watchers: Mutex<HashMap<u64, watch::Sender<u64>>>,
}

/// The tournament director. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct TournamentDirector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TournamentDirector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TournamentDirector").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

fn poisoned<T>(err: std::sync::PoisonError<T>) -> T {
    err.into_inner()
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, TournamentError> {
    serde_json::to_string(value).map_err(TournamentError::internal)
}

/// A match id for a tournament match: random, non-zero, below 2^62 (it is
/// stored as a signed 64-bit integer).
fn new_match_id() -> u64 {
    (rand::random::<u64>() >> 2).max(1)
}

/// The snake_case name of an end reason, as ledger entries log it.
pub fn end_reason_name(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Score => "score",
        EndReason::Forfeit => "forfeit",
        EndReason::Abandoned => "abandoned",
        EndReason::ShardShutdown => "shard_shutdown",
        EndReason::TimeLimit => "time_limit",
    }
}

/// The game outcome a match result gives (home = side 0), or `None` for a
/// lost shard (`ShardShutdown`), which is not an outcome.
pub fn game_outcome(result: &MatchResult) -> Option<GameOutcome> {
    let side = |side: u8| if side == 0 { Side::Home } else { Side::Away };
    match result.reason {
        EndReason::ShardShutdown => None,
        EndReason::Score | EndReason::TimeLimit => Some(GameOutcome::Played {
            home_score: result.scores.first().copied().unwrap_or(0),
            away_score: result.scores.get(1).copied().unwrap_or(0),
        }),
        EndReason::Forfeit => Some(
            result.winner.map_or(GameOutcome::DoubleForfeit, |winner| GameOutcome::Forfeit { winner: side(winner) }),
        ),
        EndReason::Abandoned => {
            let present =
                |s: u8| result.seats.iter().any(|seat| seat.side == s && seat.player_id.is_some() && !seat.forfeited);
            Some(match (present(0), present(1)) {
                (true, false) => GameOutcome::Forfeit { winner: Side::Home },
                (false, true) => GameOutcome::Forfeit { winner: Side::Away },
                _ => GameOutcome::DoubleForfeit,
            })
        }
    }
}

/// The lifecycle status a not-yet-seeded tournament has at `now_ms`.
fn status_at(record: &TournamentRecord, now_ms: u64) -> Status {
    if now_ms >= record.check_in_opens_at_ms {
        Status::CheckIn
    } else if now_ms >= record.registration_opens_at_ms {
        Status::Registration
    } else {
        Status::Created
    }
}

fn apply_error(err: ApplyError) -> TournamentError {
    match err {
        ApplyError::NotReady { .. } | ApplyError::UnknownEntrant { .. } => TournamentError::NotFound(err.to_string()),
        _ => TournamentError::FailedPrecondition(err.to_string()),
    }
}

fn ratings_error(err: MatchmakerError) -> TournamentError {
    match err {
        MatchmakerError::Unauthenticated(message) => TournamentError::Unauthenticated(message),
        other => TournamentError::Ratings(other.to_string()),
    }
}

impl TournamentDirector {
    /// A director over `store`, scheduling on `registry`'s shards with tokens
    /// from `minter` (its lifetime is replaced by the no-show window), reading
    /// results from `bus`, rating registrants with `ratings`, and appending to
    /// `ledger`. Loads the unfinished tournaments and catches the ledger up.
    pub async fn open(
        config: TournamentsConfig,
        store: Store,
        registry: Arc<dyn ShardRegistry>,
        bus: Arc<dyn ResultsBus>,
        ratings: Arc<dyn RatingSource>,
        minter: TokenMinter,
        ledger: Arc<Mutex<Ledger>>,
    ) -> Result<Self, TournamentError> {
        if config.modes.is_empty() {
            return Err(TournamentError::invalid("modes", "give at least one game mode"));
        }
        let minter = minter.with_ttl_ms(config.no_show.as_millis() as u64);
        let director = Self {
            inner: Arc::new(Inner {
                config,
                store,
                registry,
                bus,
                ratings,
                minter,
                ledger,
                live: tokio::sync::Mutex::new(BTreeMap::new()),
                projecting: tokio::sync::Mutex::new(()),
                watchers: Mutex::new(HashMap::new()),
            }),
        };
        director.catch_up_ledger().await?;
        {
            let mut live = director.inner.live.lock().await;
            for record in director.inner.store.active().await? {
                let id = record.id;
                live.insert(id, director.load(record).await?);
            }
            tracing::info!(active = live.len(), "tournaments loaded");
        }
        Ok(director)
    }

    /// The settings.
    pub fn config(&self) -> &TournamentsConfig {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Rebuilds a tournament from its events.
    async fn load(&self, record: TournamentRecord) -> Result<Live, TournamentError> {
        let rules: Rules = serde_json::from_str(&record.rules_json)?;
        let events = self.inner.store.events(record.id).await?;
        let mut paired = BTreeSet::new();
        let mut inputs = Vec::new();
        for event in &events {
            if let Some(input) = &event.input_json {
                inputs.push(serde_json::from_str::<Input>(input)?);
            }
            if let Ok(Entry::Paired { games, .. }) = serde_json::from_str::<Entry>(&event.entry_json) {
                paired.extend(games.iter().map(|game| game.key));
            }
        }
        let engine = match &record.seeds_json {
            Some(seeds) => {
                let seeds: Vec<Entrant> = serde_json::from_str(seeds)?;
                let engine = rally_tournament::replay(rules.clone(), seeds, &inputs).map_err(|err| {
                    TournamentError::Internal(format!("tournament {} does not replay: {err}", record.id))
                })?;
                Some(engine)
            }
            None => None,
        };
        Ok(Live { record, rules, engine, paired })
    }

    /// The loaded tournament `id`, loading it (a finished one) if need be.
    async fn live_mut<'a>(&self, live: &'a mut BTreeMap<u64, Live>, id: u64) -> Result<&'a mut Live, TournamentError> {
        if let std::collections::btree_map::Entry::Vacant(slot) = live.entry(id) {
            let record = self.inner.store.tournament(id).await?.ok_or_else(|| not_found(id))?;
            slot.insert(self.load(record).await?);
        }
        live.get_mut(&id).ok_or_else(|| not_found(id))
    }

    // ------------------------------------------------------------ changes

    /// Appends `steps` (applied to `base`, the engine before them) with
    /// `changes`, the `Paired` of newly ready games and, if the tournament
    /// just ended, its `Finished`; then updates `live`. An input the engine
    /// refuses changes nothing.
    async fn commit(
        &self,
        live: &mut Live,
        base: Tournament,
        steps: Vec<Step>,
        mut changes: Changes,
        now_ms: u64,
    ) -> Result<Appended, TournamentError> {
        let id = live.record.id;
        let mut engine = base;
        let mut events = Vec::with_capacity(steps.len() + 2);
        for step in steps {
            if let Some(input) = &step.input {
                engine.apply(input).map_err(apply_error)?;
            }
            events.push(NewEvent {
                input_json: step.input.as_ref().map(to_json).transpose()?,
                entry_json: to_json(&step.entry)?,
                match_id: step.match_id,
            });
        }
        let fresh: Vec<Game> =
            engine.ready_games().into_iter().filter(|game| !live.paired.contains(&game.key)).collect();
        if !fresh.is_empty() {
            let entry = Entry::Paired { v: ENTRY_VERSION, tournament: id, games: fresh.clone() };
            events.push(NewEvent { input_json: None, entry_json: to_json(&entry)?, match_id: None });
        }
        let finishing = engine.is_finished() && !live.record.status.is_over();
        if finishing {
            let entry = Entry::Finished {
                v: ENTRY_VERSION,
                tournament: id,
                standings: engine.standings(),
                champion: engine.champion(),
            };
            events.push(NewEvent { input_json: None, entry_json: to_json(&entry)?, match_id: None });
            changes.status = Some(Status::Finished);
        }
        let appended = self.inner.store.append(id, &events, &changes, now_ms).await?;
        if appended == Appended::Stale {
            return Ok(appended);
        }
        live.paired.extend(fresh.iter().map(|game| game.key));
        live.engine = Some(engine);
        if let Some(status) = changes.status {
            live.record.status = status;
        }
        if let Some(seeds) = changes.seeds_json {
            live.record.seeds_json = Some(seeds);
        }
        if finishing {
            tracing::info!(tournament = id, champion = ?live.engine.as_ref().and_then(Tournament::champion), "tournament finished");
        }
        Ok(appended)
    }

    /// After a change: the ledger catches up and watchers are told.
    async fn changed(&self, tournament: u64) {
        if let Err(err) = self.catch_up_ledger().await {
            tracing::warn!(%err, "appending to the ledger failed; retried on the next change or tick");
        }
        self.notify(tournament);
    }

    fn notify(&self, tournament: u64) {
        let watchers = self.inner.watchers.lock().unwrap_or_else(poisoned);
        if let Some(sender) = watchers.get(&tournament) {
            sender.send_modify(|version| *version += 1);
        }
    }

    /// A receiver that changes whenever tournament `id` does.
    pub fn subscribe(&self, id: u64) -> watch::Receiver<u64> {
        let mut watchers = self.inner.watchers.lock().unwrap_or_else(poisoned);
        watchers.retain(|_, sender| sender.receiver_count() > 0);
        watchers.entry(id).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    fn is_organiser(&self, record: &TournamentRecord, player: u64) -> bool {
        record.organiser_id == player || self.inner.config.operators.contains(&player)
    }

    fn require_organiser(&self, record: &TournamentRecord, player: u64, what: &str) -> Result<(), TournamentError> {
        if self.is_organiser(record, player) {
            return Ok(());
        }
        Err(TournamentError::PermissionDenied(format!(
            "only tournament {}'s organiser (player {}) or an operator may {what}",
            record.id, record.organiser_id
        )))
    }

    // ------------------------------------------------------------ requests

    /// Creates a tournament organised by `organiser`.
    pub async fn create(
        &self,
        organiser: u64,
        request: CreateTournament,
        now_ms: u64,
    ) -> Result<TournamentView, TournamentError> {
        let name = request.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(TournamentError::invalid("name", format!("1 to {MAX_NAME_CHARS} characters")));
        }
        if !(2..=MAX_ENTRANTS).contains(&request.max_entrants) {
            return Err(TournamentError::invalid(
                "max_entrants",
                format!("{} is not 2 to {MAX_ENTRANTS}", request.max_entrants),
            ));
        }
        let mode = self.inner.config.mode(&request.mode).ok_or_else(|| {
            let known: Vec<&str> = self.inner.config.modes.iter().map(|mode| mode.name.as_str()).collect();
            TournamentError::invalid("mode", format!("unknown game mode {:?}; this server has {known:?}", request.mode))
        })?;
        if let (Some(min), Some(max)) = (request.min_rating, request.max_rating)
            && min > max
        {
            return Err(TournamentError::invalid("min_rating", format!("{min} is above max_rating {max}")));
        }
        // The rules must make a bracket of the largest field; a smaller one is
        // checked again at seeding.
        let dummies: Vec<Entrant> =
            (1..=u64::from(request.max_entrants)).map(|id| Entrant { id, name: String::new(), rating: 0 }).collect();
        Tournament::new(request.rules.clone(), dummies).map_err(|err| TournamentError::Rules(err.to_string()))?;
        let registration_opens_at_ms =
            if request.registration_opens_at_ms == 0 { now_ms } else { request.registration_opens_at_ms };
        let registration_closes_at_ms = request.registration_closes_at_ms;
        let check_in_opens_at_ms =
            if request.check_in_opens_at_ms == 0 { registration_opens_at_ms } else { request.check_in_opens_at_ms };
        let check_in_closes_at_ms =
            if request.check_in_closes_at_ms == 0 { registration_closes_at_ms } else { request.check_in_closes_at_ms };
        if registration_closes_at_ms <= registration_opens_at_ms.max(now_ms) {
            return Err(TournamentError::invalid(
                "registration_closes_at_ms",
                format!(
                    "{registration_closes_at_ms} must be after registration opens ({registration_opens_at_ms}) and \
                     after now ({now_ms})"
                ),
            ));
        }
        if check_in_opens_at_ms < registration_opens_at_ms {
            return Err(TournamentError::invalid(
                "check_in_opens_at_ms",
                format!("{check_in_opens_at_ms} is before registration opens ({registration_opens_at_ms})"),
            ));
        }
        if check_in_closes_at_ms < registration_closes_at_ms || check_in_opens_at_ms >= check_in_closes_at_ms {
            return Err(TournamentError::invalid(
                "check_in_closes_at_ms",
                format!(
                    "the check-in window [{check_in_opens_at_ms}, {check_in_closes_at_ms}) must be non-empty and \
                     close no earlier than registration ({registration_closes_at_ms})"
                ),
            ));
        }
        let mut new = NewTournament {
            name: name.clone(),
            rules_json: to_json(&request.rules)?,
            mode: mode.name.clone(),
            max_entrants: request.max_entrants,
            min_rating: request.min_rating,
            max_rating: request.max_rating,
            registration_opens_at_ms,
            registration_closes_at_ms,
            check_in_opens_at_ms,
            check_in_closes_at_ms,
            status: Status::Created,
            organiser_id: organiser,
            created_at_ms: now_ms,
        };
        let probe = TournamentRecord {
            id: 0,
            name: String::new(),
            rules_json: String::new(),
            mode: String::new(),
            max_entrants: 0,
            min_rating: None,
            max_rating: None,
            registration_opens_at_ms,
            registration_closes_at_ms,
            check_in_opens_at_ms,
            check_in_closes_at_ms,
            status: Status::Created,
            organiser_id: organiser,
            created_at_ms: now_ms,
            seeds_json: None,
        };
        new.status = status_at(&probe, now_ms);
        let mut live = self.inner.live.lock().await;
        let rules = request.rules.clone();
        let id = self
            .inner
            .store
            .create(&new, |id| {
                to_json(&Entry::TournamentCreated {
                    v: ENTRY_VERSION,
                    tournament: id,
                    name: name.clone(),
                    rules: rules.clone(),
                    created_at_ms: now_ms,
                })
            })
            .await?;
        let record = self.inner.store.tournament(id).await?.ok_or_else(|| not_found(id))?;
        live.insert(id, Live { record, rules: request.rules, engine: None, paired: BTreeSet::new() });
        drop(live);
        tracing::info!(tournament = id, %name, organiser, "tournament created");
        self.changed(id).await;
        self.view(id).await
    }

    /// Registers `player` (shown as `display_name`).
    pub async fn register(
        &self,
        tournament: u64,
        player: u64,
        display_name: &str,
        now_ms: u64,
    ) -> Result<EntrantRecord, TournamentError> {
        let mut live = self.inner.live.lock().await;
        let current = self.live_mut(&mut live, tournament).await?;
        let record = current.record.clone();
        let entrants = self.inner.store.entrants(tournament).await?;
        if let Some(existing) = entrants.iter().find(|entrant| entrant.player_id == player) {
            if existing.state.holds_place() {
                return Ok(existing.clone());
            }
            if existing.state == EntrantState::Disqualified {
                return Err(TournamentError::PermissionDenied(format!(
                    "you were disqualified from tournament {tournament} and may not register again"
                )));
            }
        }
        if record.status.is_over() || record.status == Status::Running {
            return Err(TournamentError::RegistrationClosed(format!(
                "registration for tournament {tournament} closed at {} (it is {}); watch it, or join another",
                record.registration_closes_at_ms,
                record.status.as_str()
            )));
        }
        if now_ms < record.registration_opens_at_ms {
            return Err(TournamentError::RegistrationClosed(format!(
                "registration for tournament {tournament} opens at {} (in {} s)",
                record.registration_opens_at_ms,
                (record.registration_opens_at_ms - now_ms).div_ceil(1000)
            )));
        }
        if now_ms >= record.registration_closes_at_ms {
            return Err(TournamentError::RegistrationClosed(format!(
                "registration for tournament {tournament} closed at {}; watch it, or join another",
                record.registration_closes_at_ms
            )));
        }
        let rating = self
            .inner
            .ratings
            .rating(PlayerId(player))
            .await
            .map_err(ratings_error)?
            .map_or(self.inner.config.default_rating, |rating| rating.round().clamp(-1e9, 1e9) as i32);
        if record.min_rating.is_some_and(|min| rating < min) || record.max_rating.is_some_and(|max| rating > max) {
            return Err(TournamentError::RatingOutOfBounds {
                tournament,
                rating,
                min: record.min_rating,
                max: record.max_rating,
            });
        }
        let entrant = EntrantRecord {
            player_id: player,
            display_name: display_name.to_owned(),
            rating,
            state: EntrantState::Registered,
            registered_at_ms: now_ms,
        };
        if !self.inner.store.register(tournament, record.max_entrants, &entrant).await? {
            return Err(TournamentError::Full { tournament, max_entrants: record.max_entrants });
        }
        drop(live);
        tracing::info!(tournament, player, rating, "registered");
        self.notify(tournament);
        Ok(entrant)
    }

    /// Checks `player` in.
    pub async fn check_in(&self, tournament: u64, player: u64, now_ms: u64) -> Result<EntrantRecord, TournamentError> {
        let mut live = self.inner.live.lock().await;
        let record = self.live_mut(&mut live, tournament).await?.record.clone();
        let entrant = self.entrant(tournament, player).await?;
        match entrant.state {
            EntrantState::CheckedIn => return Ok(entrant),
            EntrantState::Registered => {}
            EntrantState::NotCheckedIn => {
                return Err(TournamentError::NotCheckedIn(format!(
                    "check-in for tournament {tournament} closed at {} without you: you are not in the bracket",
                    record.check_in_closes_at_ms
                )));
            }
            EntrantState::Withdrawn | EntrantState::Disqualified => {
                return Err(not_registered(tournament, player));
            }
        }
        if now_ms < record.check_in_opens_at_ms {
            return Err(TournamentError::FailedPrecondition(format!(
                "check-in for tournament {tournament} opens at {} (in {} s)",
                record.check_in_opens_at_ms,
                (record.check_in_opens_at_ms - now_ms).div_ceil(1000)
            )));
        }
        if now_ms >= record.check_in_closes_at_ms || record.engine_started() {
            return Err(TournamentError::NotCheckedIn(format!(
                "check-in for tournament {tournament} closed at {}: you are not in the bracket",
                record.check_in_closes_at_ms
            )));
        }
        self.inner.store.set_entrant_state(tournament, player, EntrantState::CheckedIn).await?;
        drop(live);
        self.notify(tournament);
        Ok(EntrantRecord { state: EntrantState::CheckedIn, ..entrant })
    }

    async fn entrant(&self, tournament: u64, player: u64) -> Result<EntrantRecord, TournamentError> {
        self.inner
            .store
            .entrants(tournament)
            .await?
            .into_iter()
            .find(|entrant| entrant.player_id == player)
            .ok_or_else(|| not_registered(tournament, player))
    }

    /// Withdraws `player`: before seeding the place is freed; after, they
    /// forfeit the rest (logged).
    pub async fn withdraw(&self, tournament: u64, player: u64, now_ms: u64) -> Result<EntrantRecord, TournamentError> {
        self.leave(tournament, player, None, now_ms).await
    }

    /// Disqualifies `player` on behalf of `by` (an organiser).
    pub async fn disqualify(
        &self,
        tournament: u64,
        by: u64,
        player: u64,
        reason: &str,
        now_ms: u64,
    ) -> Result<EntrantRecord, TournamentError> {
        let reason = check_reason(reason)?;
        {
            let mut live = self.inner.live.lock().await;
            let record = &self.live_mut(&mut live, tournament).await?.record;
            self.require_organiser(record, by, "disqualify entrants")?;
        }
        let entrant = self.leave(tournament, player, Some(reason.clone()), now_ms).await?;
        tracing::info!(tournament, by, player, %reason, "disqualified");
        Ok(entrant)
    }

    async fn leave(
        &self,
        tournament: u64,
        player: u64,
        disqualified: Option<String>,
        now_ms: u64,
    ) -> Result<EntrantRecord, TournamentError> {
        let mut live = self.inner.live.lock().await;
        let current = self.live_mut(&mut live, tournament).await?;
        let entrant = self.entrant(tournament, player).await?;
        let state = if disqualified.is_some() { EntrantState::Disqualified } else { EntrantState::Withdrawn };
        if matches!(entrant.state, EntrantState::Withdrawn | EntrantState::Disqualified) {
            if entrant.state == state {
                return Ok(entrant);
            }
            return Err(not_registered(tournament, player));
        }
        if current.record.status.is_over() {
            return Err(TournamentError::FailedPrecondition(format!(
                "tournament {tournament} is {}; nobody can leave it now",
                current.record.status.as_str()
            )));
        }
        match current.engine.clone() {
            None => {
                self.inner.store.set_entrant_state(tournament, player, state).await?;
            }
            Some(engine) => {
                if !engine.seeds().iter().any(|seed| seed.id == player) {
                    return Err(TournamentError::NotCheckedIn(format!(
                        "player {player} did not check in to tournament {tournament}, so is not in its bracket"
                    )));
                }
                let (input, entry) = match &disqualified {
                    Some(reason) => (
                        Input::Disqualify { entrant: player, reason: reason.clone() },
                        Entry::Disqualification {
                            v: ENTRY_VERSION,
                            tournament,
                            entrant: player,
                            reason: reason.clone(),
                        },
                    ),
                    None => (
                        Input::Withdraw { entrant: player },
                        Entry::Withdrawal { v: ENTRY_VERSION, tournament, entrant: player },
                    ),
                };
                let step = Step { input: Some(input), entry, match_id: None };
                let changes = Changes { entrants: vec![(player, state)], ..Changes::default() };
                self.commit(current, engine, vec![step], changes, now_ms).await?;
                self.void_stale_matches(current).await?;
            }
        }
        drop(live);
        tracing::info!(tournament, player, state = state.as_str(), "left");
        self.changed(tournament).await;
        Ok(EntrantRecord { state, ..entrant })
    }

    /// Replaces a game's outcome on behalf of `by` (an organiser), appending
    /// a correction.
    pub async fn correct(
        &self,
        tournament: u64,
        by: u64,
        key: GameKey,
        outcome: GameOutcome,
        reason: &str,
        now_ms: u64,
    ) -> Result<TournamentView, TournamentError> {
        let reason = check_reason(reason)?;
        {
            let mut live = self.inner.live.lock().await;
            let current = self.live_mut(&mut live, tournament).await?;
            self.require_organiser(&current.record, by, "correct results")?;
            if current.record.status.is_over() {
                return Err(TournamentError::FailedPrecondition(format!(
                    "tournament {tournament} is {}: its results are final and logged as such",
                    current.record.status.as_str()
                )));
            }
            let Some(engine) = current.engine.clone() else {
                return Err(TournamentError::FailedPrecondition(format!(
                    "tournament {tournament} has not started: there is no result to correct"
                )));
            };
            let step = Step {
                input: Some(Input::Correct { key, outcome: outcome.clone(), reason: reason.clone() }),
                entry: Entry::Correction { v: ENTRY_VERSION, tournament, key, outcome, reason: reason.clone(), by },
                match_id: None,
            };
            self.commit(current, engine, vec![step], Changes::default(), now_ms).await?;
            self.void_stale_matches(current).await?;
        }
        tracing::info!(tournament, by, %key, %reason, "result corrected");
        self.changed(tournament).await;
        self.view(tournament).await
    }

    // ------------------------------------------------------------ reading

    /// One tournament as readers see it.
    pub async fn view(&self, id: u64) -> Result<TournamentView, TournamentError> {
        let current = {
            let mut live = self.inner.live.lock().await;
            self.live_mut(&mut live, id).await?.clone()
        };
        let entrants = self.inner.store.entrants(id).await?;
        let matches = self.inner.store.matches(id).await?;
        let seeds: Vec<u64> = current
            .engine
            .as_ref()
            .map(|engine| engine.seeds().iter().map(|seed| seed.id).collect())
            .unwrap_or_default();
        let entrants = entrants
            .into_iter()
            .map(|entrant| {
                let seed = seeds.iter().position(|&id| id == entrant.player_id).map(|idx| idx as u32 + 1);
                (entrant, seed)
            })
            .collect();
        let (games, standings, bracket_text, champion) = match &current.engine {
            Some(engine) => (engine.games(), engine.standings(), engine.render(), engine.champion()),
            None => (Vec::new(), Vec::new(), String::new(), None),
        };
        Ok(TournamentView { record: current.record, entrants, games, matches, standings, bracket_text, champion })
    }

    /// Tournaments newest first, below id `before`, in `statuses` (all when empty).
    pub async fn list(
        &self,
        before: Option<u64>,
        statuses: &[Status],
        limit: u32,
    ) -> Result<Vec<(TournamentRecord, u32, u32)>, TournamentError> {
        let records = self.inner.store.list(before, statuses, limit).await?;
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let entrants = self.inner.store.entrants(record.id).await?;
            let registered = entrants.iter().filter(|entrant| entrant.state.holds_place()).count() as u32;
            let checked_in = entrants.iter().filter(|entrant| entrant.state == EntrantState::CheckedIn).count() as u32;
            out.push((record, registered, checked_in));
        }
        Ok(out)
    }

    /// The ledger receipt of match `match_id` of `tournament`.
    pub async fn receipt(&self, tournament: u64, match_id: u64) -> Result<rally_ledger::Receipt, TournamentError> {
        let missing = || {
            TournamentError::NotFound(format!(
                "match {match_id} has no counted result in tournament {tournament} (yet); a match rescheduled after a \
                 lost shard, or one whose game was decided otherwise, has none"
            ))
        };
        let (owner, index) = self.inner.store.result_ledger_index(match_id).await?.ok_or_else(missing)?;
        if owner != tournament {
            return Err(missing());
        }
        let index = match index {
            Some(index) => index,
            None => {
                self.catch_up_ledger().await?;
                self.inner.store.result_ledger_index(match_id).await?.and_then(|(_, index)| index).ok_or_else(|| {
                    TournamentError::Ledger(format!("match {match_id}'s result is not in the ledger yet; retry"))
                })?
            }
        };
        let ledger = self.inner.ledger.clone();
        tokio::task::spawn_blocking(move || ledger.lock().unwrap_or_else(poisoned).receipt(index))
            .await
            .map_err(TournamentError::internal)?
            .map_err(|err| TournamentError::Ledger(err.to_string()))
    }

    // ------------------------------------------------------------ the clock

    /// Advances every unfinished tournament to `now_ms`: opens and closes
    /// windows, seeds, expires matches past their deadline and schedules
    /// ready games on shards.
    pub async fn tick(&self, now_ms: u64) -> Result<TickStats, TournamentError> {
        let mut stats = TickStats::default();
        let mut changed = Vec::new();
        {
            let mut live = self.inner.live.lock().await;
            let ids: Vec<u64> =
                live.iter().filter(|(_, live)| !live.record.status.is_over()).map(|(&id, _)| id).collect();
            for id in ids {
                let Some(current) = live.get_mut(&id) else { continue };
                if self.advance(current, now_ms, &mut stats).await? {
                    changed.push(id);
                }
            }
            live.retain(|_, live| !live.record.status.is_over());
        }
        for id in changed {
            self.changed(id).await;
        }
        if let Err(err) = self.catch_up_ledger().await {
            tracing::warn!(%err, "appending to the ledger failed; retried on the next tick");
        }
        Ok(stats)
    }

    /// One tournament's tick; whether it changed.
    async fn advance(&self, live: &mut Live, now_ms: u64, stats: &mut TickStats) -> Result<bool, TournamentError> {
        let id = live.record.id;
        if live.engine.is_none() {
            if now_ms >= live.record.check_in_closes_at_ms {
                return self.seed(live, now_ms, stats).await.map(|()| true);
            }
            let status = status_at(&live.record, now_ms);
            if status != live.record.status {
                self.inner.store.set_status(id, status).await?;
                live.record.status = status;
                return Ok(true);
            }
            return Ok(false);
        }
        let mut changed = self.expire_matches(live, now_ms, stats).await?;
        changed |= self.void_stale_matches(live).await?;
        changed |= self.schedule(live, now_ms, stats).await?;
        Ok(changed)
    }

    /// Locks the checked-in entrants and pairs the first round, or cancels.
    async fn seed(&self, live: &mut Live, now_ms: u64, stats: &mut TickStats) -> Result<(), TournamentError> {
        let id = live.record.id;
        let entrants = self.inner.store.entrants(id).await?;
        let late: Vec<(u64, EntrantState)> = entrants
            .iter()
            .filter(|entrant| entrant.state == EntrantState::Registered)
            .map(|entrant| (entrant.player_id, EntrantState::NotCheckedIn))
            .collect();
        let players: Vec<Entrant> = entrants
            .iter()
            .filter(|entrant| entrant.state == EntrantState::CheckedIn)
            .map(|entrant| Entrant {
                id: entrant.player_id,
                name: entrant.display_name.clone(),
                rating: entrant.rating,
            })
            .collect();
        let n_players = players.len();
        let engine = match Tournament::new(live.rules.clone(), players) {
            Ok(engine) => engine,
            Err(err) => {
                tracing::warn!(tournament = id, n_players, %err, "tournament cancelled at seeding");
                let changes = Changes { status: Some(Status::Cancelled), entrants: late, ..Changes::default() };
                self.inner.store.append(id, &[], &changes, now_ms).await?;
                live.record.status = Status::Cancelled;
                stats.cancelled += 1;
                return Ok(());
            }
        };
        let seeds = engine.seeds().to_vec();
        let step = Step {
            input: None,
            entry: Entry::EntrantsLocked { v: ENTRY_VERSION, tournament: id, seeds: seeds.clone() },
            match_id: None,
        };
        let changes = Changes {
            status: Some(Status::Running),
            seeds_json: Some(to_json(&seeds)?),
            entrants: late,
            ..Changes::default()
        };
        self.commit(live, engine, vec![step], changes, now_ms).await?;
        stats.seeded += 1;
        tracing::info!(tournament = id, n_players, "entrants locked; rounds begin");
        Ok(())
    }

    /// Matches past their deadline: double forfeits, reservations released.
    async fn expire_matches(
        &self,
        live: &mut Live,
        now_ms: u64,
        stats: &mut TickStats,
    ) -> Result<bool, TournamentError> {
        let id = live.record.id;
        let mut changed = false;
        for row in self.inner.store.matches(id).await? {
            if row.status != MatchStatus::Scheduled || row.deadline_ms > now_ms {
                continue;
            }
            let _ = self.inner.registry.release(&row.shard, MatchId(row.match_id)).await;
            let key: GameKey = serde_json::from_str(&row.game_key_json)?;
            let Some(engine) = live.engine.clone() else { continue };
            let entry = Entry::MatchResult {
                v: ENTRY_VERSION,
                tournament: id,
                key,
                match_id: row.match_id,
                outcome: GameOutcome::DoubleForfeit,
                home: row.home_id,
                away: row.away_id,
                scores: Vec::new(),
                winner_side: None,
                reason: "no_result".into(),
                shard: row.shard.clone(),
                ended_at_ms: now_ms,
                input_log_sha256: String::new(),
                replay_sha256: String::new(),
            };
            let step = Step {
                input: Some(Input::Result { key, outcome: GameOutcome::DoubleForfeit }),
                entry,
                match_id: Some(row.match_id),
            };
            let changes = Changes {
                guard: Some((row.match_id, MatchStatus::Scheduled, MatchStatus::Expired)),
                ..Changes::default()
            };
            tracing::warn!(tournament = id, match_id = row.match_id, shard = %row.shard, %key,
                "no result by the match's deadline: a double forfeit");
            if self.commit(live, engine, vec![step], changes, now_ms).await? != Appended::Stale {
                metrics::counter!("rally_tournaments_matches_expired_total").increment(1);
                stats.expired += 1;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Voids scheduled matches whose game is no longer ready with the same
    /// two entrants (decided by a withdrawal, disqualification or correction).
    async fn void_stale_matches(&self, live: &Live) -> Result<bool, TournamentError> {
        let Some(engine) = &live.engine else { return Ok(false) };
        let ready: BTreeMap<GameKey, (u64, u64)> =
            engine.ready_games().into_iter().map(|game| (game.key, (game.home, game.away))).collect();
        let mut changed = false;
        for row in self.inner.store.matches(live.record.id).await? {
            if row.status != MatchStatus::Scheduled {
                continue;
            }
            let key: GameKey = serde_json::from_str(&row.game_key_json)?;
            if ready.get(&key) == Some(&(row.home_id, row.away_id)) {
                continue;
            }
            if self.inner.store.set_match_status(row.match_id, MatchStatus::Scheduled, MatchStatus::Void).await? {
                let _ = self.inner.registry.release(&row.shard, MatchId(row.match_id)).await;
                tracing::info!(match_id = row.match_id, %key, "match void: its game was decided otherwise");
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Puts every ready game without a match on a shard.
    async fn schedule(&self, live: &Live, now_ms: u64, stats: &mut TickStats) -> Result<bool, TournamentError> {
        let Some(engine) = &live.engine else { return Ok(false) };
        let id = live.record.id;
        let matches = self.inner.store.matches(id).await?;
        // A game's attempt counts its matches lost with their shard.
        let mut lost: HashMap<GameKey, Vec<String>> = HashMap::new();
        let mut scheduled: BTreeSet<GameKey> = BTreeSet::new();
        for row in &matches {
            let key: GameKey = serde_json::from_str(&row.game_key_json)?;
            match row.status {
                MatchStatus::Scheduled => {
                    scheduled.insert(key);
                }
                MatchStatus::Lost => lost.entry(key).or_default().push(row.shard.clone()),
                _ => {}
            }
        }
        let waiting: Vec<Game> =
            engine.ready_games().into_iter().filter(|game| !scheduled.contains(&game.key)).collect();
        if waiting.is_empty() {
            return Ok(false);
        }
        let mut shards: Vec<_> = self
            .inner
            .registry
            .shards(now_ms)
            .await?
            .into_iter()
            .filter(|shard| !shard.draining)
            .map(|shard| {
                let free = shard.free();
                (shard, free)
            })
            .collect();
        let mode = self.inner.config.mode(&live.record.mode).cloned().unwrap_or_else(|| {
            self.inner
                .config
                .modes
                .first()
                .cloned()
                .unwrap_or(crate::config::TournamentMode { name: live.record.mode.clone(), points_to_win: 5 })
        });
        let deadline = self.inner.config.match_deadline().as_millis() as u64;
        let mut changed = false;
        'games: for game in waiting {
            let lost_on = lost.get(&game.key).map(Vec::as_slice).unwrap_or_default();
            let attempt = lost_on.len() as u32 + 1;
            loop {
                // The most free slots; a shard that lost this game only when no other has room.
                let Some(idx) = shards
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, free))| *free > 0)
                    .max_by(|(_, (a, free_a)), (_, (b, free_b))| {
                        let fresh =
                            |entry: &rally_matchmaker::registry::ShardEntry| !lost_on.contains(&entry.info.name);
                        fresh(a).cmp(&fresh(b)).then(free_a.cmp(free_b)).then_with(|| b.info.name.cmp(&a.info.name))
                    })
                    .map(|(idx, _)| idx)
                else {
                    stats.waiting += 1;
                    continue 'games;
                };
                let shard = shards[idx].0.info.clone();
                shards[idx].1 -= 1;
                let match_id = new_match_id();
                let grant = |player: u64, seat: u8| SeatGrant {
                    player_id: PlayerId(player),
                    match_id: MatchId(match_id),
                    seat,
                    n_seats: 2,
                    points_to_win: mode.points_to_win,
                    shard: shard.name.clone(),
                };
                let (home_token, expires) = self
                    .inner
                    .minter
                    .mint(&grant(game.home, 0), now_ms)
                    .map_err(|err| TournamentError::Internal(format!("minting a connect token: {err}")))?;
                let (away_token, _) = self
                    .inner
                    .minter
                    .mint(&grant(game.away, 1), now_ms)
                    .map_err(|err| TournamentError::Internal(format!("minting a connect token: {err}")))?;
                let row = MatchRow {
                    match_id,
                    tournament_id: id,
                    game_key_json: to_json(&game.key)?,
                    attempt,
                    shard: shard.name.clone(),
                    shard_address: shard.address.clone(),
                    certificate_sha256: shard.certificate_sha256.clone(),
                    home_id: game.home,
                    away_id: game.away,
                    home_token,
                    away_token,
                    issued_at_ms: now_ms,
                    token_expires_at_ms: expires,
                    deadline_ms: now_ms.saturating_add(deadline),
                    status: MatchStatus::Scheduled,
                };
                // The row first: a crash after the reservation then leaves a
                // match the deadline releases, never a reservation nobody knows.
                self.inner.store.insert_match(&row).await?;
                let record = MatchRecord {
                    match_id: MatchId(match_id),
                    mode: mode.name.clone(),
                    shard: shard.name.clone(),
                    tickets: Vec::new(),
                    seats: vec![
                        SeatRecord { seat: 0, side: 0, player_id: PlayerId(game.home), bot: false },
                        SeatRecord { seat: 1, side: 1, player_id: PlayerId(game.away), bot: false },
                    ],
                    n_sides: 2,
                    reserved_at_ms: now_ms,
                };
                match self.inner.registry.reserve(&shard.name, &record, now_ms).await {
                    Ok(Reservation::Reserved) => {
                        tracing::info!(tournament = id, match_id, key = %game.key, shard = %shard.name, attempt,
                            home = game.home, away = game.away, "match scheduled");
                        metrics::counter!("rally_tournaments_matches_scheduled_total").increment(1);
                        stats.scheduled += 1;
                        changed = true;
                        continue 'games;
                    }
                    Ok(_) => {
                        self.inner.store.delete_match(match_id).await?;
                        shards[idx].1 = 0;
                    }
                    Err(err) => {
                        self.inner.store.delete_match(match_id).await?;
                        return Err(err.into());
                    }
                }
            }
        }
        Ok(changed)
    }

    // ------------------------------------------------------------ results

    /// Applies one result from the bus (idempotent by match id).
    pub async fn handle_result(&self, result: &MatchResult) -> Result<ResultOutcome, TournamentError> {
        let Some(row) = self.inner.store.match_row(result.match_id.0).await? else {
            return Ok(ResultOutcome::NotOurs);
        };
        if row.status != MatchStatus::Scheduled {
            metrics::counter!("rally_tournaments_results_ignored_total").increment(1);
            return Ok(ResultOutcome::Duplicate);
        }
        let tournament = row.tournament_id;
        let key: GameKey = serde_json::from_str(&row.game_key_json)?;
        // Before taking the lock: the copy may wait a moment for the file.
        let counts = game_outcome(result).is_some() || row.attempt >= 2;
        let replay_sha256 = if counts { self.copy_replay(result.match_id).await } else { String::new() };
        let outcome = {
            let mut live = self.inner.live.lock().await;
            let current = self.live_mut(&mut live, tournament).await?;
            self.count(current, &row, key, result, replay_sha256.clone()).await?
        };
        if outcome != ResultOutcome::Counted && !replay_sha256.is_empty() {
            self.discard_replay(replay_sha256).await;
        }
        if outcome != ResultOutcome::Duplicate {
            // The shard frees its slot when it publishes; this covers a fake or lost one.
            let _ = self.inner.registry.release(&row.shard, result.match_id).await;
            self.changed(tournament).await;
        }
        Ok(outcome)
    }

    async fn count(
        &self,
        live: &mut Live,
        row: &MatchRow,
        key: GameKey,
        result: &MatchResult,
        replay_sha256: String,
    ) -> Result<ResultOutcome, TournamentError> {
        let id = live.record.id;
        let Some(engine) = live.engine.clone() else {
            return Err(TournamentError::Internal(format!("tournament {id} has a match but no bracket")));
        };
        let still_ready = engine
            .ready_games()
            .iter()
            .any(|game| game.key == key && (game.home, game.away) == (row.home_id, row.away_id));
        if !still_ready {
            let voided =
                self.inner.store.set_match_status(row.match_id, MatchStatus::Scheduled, MatchStatus::Void).await?;
            return Ok(if voided { ResultOutcome::Void } else { ResultOutcome::Duplicate });
        }
        let outcome = match game_outcome(result) {
            Some(outcome) => outcome,
            None if row.attempt < 2 => {
                let lost =
                    self.inner.store.set_match_status(row.match_id, MatchStatus::Scheduled, MatchStatus::Lost).await?;
                if !lost {
                    return Ok(ResultOutcome::Duplicate);
                }
                tracing::warn!(tournament = id, match_id = row.match_id, shard = %row.shard, %key,
                    "the match's shard was lost; the game is scheduled again on another shard");
                metrics::counter!("rally_tournaments_matches_lost_total").increment(1);
                return Ok(ResultOutcome::Rescheduled);
            }
            None => {
                tracing::warn!(tournament = id, match_id = row.match_id, shard = %row.shard, %key,
                    "the game's second shard was lost too: a double forfeit");
                GameOutcome::DoubleForfeit
            }
        };
        let entry = Entry::MatchResult {
            v: ENTRY_VERSION,
            tournament: id,
            key,
            match_id: row.match_id,
            outcome: outcome.clone(),
            home: row.home_id,
            away: row.away_id,
            scores: result.scores.clone(),
            winner_side: result.winner,
            reason: end_reason_name(result.reason).to_owned(),
            shard: result.shard.clone(),
            ended_at_ms: result.ended_at_ms,
            input_log_sha256: result.input_log_digest.clone(),
            replay_sha256,
        };
        let step = Step { input: Some(Input::Result { key, outcome }), entry, match_id: Some(row.match_id) };
        let changes =
            Changes { guard: Some((row.match_id, MatchStatus::Scheduled, MatchStatus::Counted)), ..Changes::default() };
        match self.commit(live, engine, vec![step], changes, result.ended_at_ms.max(1)).await? {
            Appended::Stale => Ok(ResultOutcome::Duplicate),
            Appended::Written(_) => {
                tracing::info!(tournament = id, match_id = row.match_id, %key, scores = ?result.scores, "result counted");
                metrics::counter!("rally_tournaments_results_counted_total").increment(1);
                Ok(ResultOutcome::Counted)
            }
        }
    }

    /// Copies `<replay dir>/<match id>.replay` into the ledger; its SHA-256
    /// hex, or "" (with a warning) when there is none.
    async fn copy_replay(&self, match_id: MatchId) -> String {
        let Some(dir) = self.inner.config.replay_dir.clone() else { return String::new() };
        let path = dir.join(format!("{match_id}.replay"));
        // The shard writes the file as it publishes the result: give it a moment.
        let mut bytes = None;
        for _ in 0..20 {
            if let Ok(read) = tokio::fs::read(&path).await {
                bytes = Some(read);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Some(bytes) = bytes else {
            tracing::warn!(path = %path.display(), %match_id, "no replay file for the match; logged without one");
            return String::new();
        };
        let ledger = self.inner.ledger.clone();
        let stored =
            tokio::task::spawn_blocking(move || ledger.lock().unwrap_or_else(poisoned).put_replay(&bytes)).await;
        match stored {
            Ok(Ok(hex)) => hex,
            Ok(Err(err)) => {
                tracing::warn!(%err, %match_id, "could not store the replay in the ledger; logged without one");
                String::new()
            }
            Err(err) => {
                tracing::warn!(%err, %match_id, "storing the replay failed");
                String::new()
            }
        }
    }

    /// Removes a replay copied for a result that was not counted after all
    /// (verify refuses replay files no entry names). The ledger is caught up
    /// first, so an entry committed but not yet appended still protects its file.
    async fn discard_replay(&self, hex: String) {
        if let Err(err) = self.catch_up_ledger().await {
            tracing::warn!(%err, replay = %hex, "keeping a replay copied for an uncounted result: the ledger is behind");
            return;
        }
        let ledger = self.inner.ledger.clone();
        let discarded =
            tokio::task::spawn_blocking(move || ledger.lock().unwrap_or_else(poisoned).discard_replay(&hex)).await;
        if let Ok(Err(err)) = discarded {
            tracing::warn!(%err, "could not remove a replay copied for an uncounted result");
        }
    }

    // ------------------------------------------------------------ ledger

    /// Appends every event not yet in the ledger, recording where each went.
    /// Entries the ledger already has past what the database recorded (a
    /// crash between the append and the record) are matched byte for byte
    /// and recorded, not appended again.
    pub async fn catch_up_ledger(&self) -> Result<u64, TournamentError> {
        let _projecting = self.inner.projecting.lock().await;
        let store = &self.inner.store;
        let mut appended = 0;
        let mut logged = store.logged_count().await?;
        let size = {
            let ledger = self.inner.ledger.clone();
            tokio::task::spawn_blocking(move || ledger.lock().unwrap_or_else(poisoned).size())
                .await
                .map_err(TournamentError::internal)?
        };
        if size > logged {
            let extra = size - logged;
            let pending = store.unlogged(u32::try_from(extra).unwrap_or(u32::MAX)).await?;
            let ledger = self.inner.ledger.clone();
            let range = logged..logged + pending.len() as u64;
            let have = tokio::task::spawn_blocking(move || ledger.lock().unwrap_or_else(poisoned).entries(range))
                .await
                .map_err(TournamentError::internal)?
                .map_err(|err| TournamentError::Ledger(err.to_string()))?;
            if pending.len() as u64 != extra
                || have.iter().zip(&pending).any(|(bytes, event)| bytes.as_slice() != event.entry_json.as_bytes())
            {
                return Err(TournamentError::Ledger(format!(
                    "the ledger holds {size} entries but the database logged {logged}, and the {extra} extra entries \
                     are not the database's next events: the ledger directory belongs to another database"
                )));
            }
            let placed: Vec<(i64, u64)> =
                pending.iter().enumerate().map(|(idx, event)| (event.id, logged + idx as u64)).collect();
            store.set_logged(&placed).await?;
            tracing::warn!(entries = extra, "the ledger had entries the database had not recorded (a crash); recorded");
            logged = size;
        } else if size < logged {
            return Err(TournamentError::Ledger(format!(
                "the ledger holds {size} entries but the database logged {logged}: the ledger directory was replaced \
                 or truncated"
            )));
        }
        loop {
            let pending = store.unlogged(LEDGER_BATCH).await?;
            if pending.is_empty() {
                return Ok(appended);
            }
            let entries = pending
                .iter()
                .map(|event| serde_json::from_str::<Entry>(&event.entry_json))
                .collect::<Result<Vec<_>, _>>()?;
            let ledger = self.inner.ledger.clone();
            let range = tokio::task::spawn_blocking(move || ledger.lock().unwrap_or_else(poisoned).append(&entries))
                .await
                .map_err(TournamentError::internal)?
                .map_err(|err| TournamentError::Ledger(err.to_string()))?;
            if range.start != logged || range.end - range.start != pending.len() as u64 {
                return Err(TournamentError::Ledger(format!(
                    "the ledger placed {} entries at {range:?}, expected at {logged}",
                    pending.len()
                )));
            }
            let placed: Vec<(i64, u64)> =
                pending.iter().enumerate().map(|(idx, event)| (event.id, range.start + idx as u64)).collect();
            store.set_logged(&placed).await?;
            logged = range.end;
            appended += pending.len() as u64;
        }
    }

    // ------------------------------------------------------------ running

    /// Starts the background work: a tick every [`TournamentsConfig::tick_interval`]
    /// and the results consumer (group [`RESULTS_GROUP`]).
    pub fn start(&self) -> DirectorHandle {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let this = self.clone();
        let ticks = tokio::spawn(
            async move {
                let mut ticker = tokio::time::interval(this.inner.config.tick_interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut failing = false;
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = stop_rx.changed() => return,
                    }
                    match this.tick(rally_matchmaker::engine::unix_ms()).await {
                        Ok(_) if failing => {
                            failing = false;
                            tracing::info!("tournament ticks recovered");
                        }
                        Ok(_) => {}
                        Err(err) => {
                            if !failing {
                                tracing::warn!(%err, "tournament tick failed; retrying every tick");
                            }
                            failing = true;
                        }
                    }
                }
            }
            .instrument(tracing::info_span!("tournament_ticks")),
        );
        DirectorHandle { stop: stop_tx, ticks: Some(ticks), consumer: Some(self.start_results()) }
    }

    /// Starts only the results consumer (group [`RESULTS_GROUP`], consumer
    /// [`TournamentsConfig::consumer`]), for callers that drive
    /// [`TournamentDirector::tick`] themselves (tests in virtual time).
    pub fn start_results(&self) -> ConsumerHandle {
        run_consumer(
            self.inner.bus.clone(),
            ConsumerConfig::new(RESULTS_GROUP, self.inner.config.consumer.clone()),
            Arc::new(ResultsFeed { director: self.clone() }),
        )
    }
}

impl TournamentRecord {
    /// Whether entrants are locked (the bracket exists).
    fn engine_started(&self) -> bool {
        self.seeds_json.is_some()
    }
}

fn not_found(id: u64) -> TournamentError {
    TournamentError::NotFound(format!("no tournament {id}; List shows the tournaments there are"))
}

fn not_registered(tournament: u64, player: u64) -> TournamentError {
    TournamentError::NotRegistered(format!(
        "player {player} is not registered in tournament {tournament}; Register first"
    ))
}

fn check_reason(reason: &str) -> Result<String, TournamentError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(TournamentError::invalid("reason", format!("say why, in 1 to {MAX_REASON_CHARS} characters")));
    }
    Ok(reason.to_owned())
}

/// Hands each result on the bus to [`TournamentDirector::handle_result`].
struct ResultsFeed {
    director: TournamentDirector,
}

#[tonic::async_trait]
impl ResultHandler for ResultsFeed {
    async fn handle(&self, result: &MatchResult) -> Result<(), String> {
        self.director.handle_result(result).await.map(|_| ()).map_err(|err| err.to_string())
    }
}

/// The director's background work.
#[derive(Debug)]
pub struct DirectorHandle {
    stop: watch::Sender<bool>,
    ticks: Option<JoinHandle<()>>,
    consumer: Option<ConsumerHandle>,
}

impl DirectorHandle {
    /// Stops ticking and consuming, and waits for both.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(ticks) = self.ticks.take() {
            let _ = ticks.await;
        }
        if let Some(consumer) = self.consumer.take() {
            consumer.stop().await;
        }
    }
}

/// Opens the ledger at `dir` with its key in `key_file` (made if missing),
/// for [`TournamentDirector::open`] and the ledger's HTTP router.
pub fn open_ledger(dir: &Path, key_file: &Path, origin: &str) -> Result<Arc<Mutex<Ledger>>, TournamentError> {
    let signer = rally_ledger::LogSigner::load_or_create(key_file, origin)
        .map_err(|err| TournamentError::Ledger(err.to_string()))?;
    let ledger = Ledger::open(dir, signer).map_err(|err| TournamentError::Ledger(err.to_string()))?;
    Ok(Arc::new(Mutex::new(ledger)))
}

#[cfg(test)]
mod tests {
    use rally_protocol::results::SeatResult;

    use super::*;

    fn result(reason: EndReason, scores: Vec<u32>, winner: Option<u8>, present: [bool; 2]) -> MatchResult {
        MatchResult {
            match_id: MatchId(1),
            game: "pong".into(),
            shard: "shard-a".into(),
            seats: (0..2_u8)
                .map(|seat| SeatResult {
                    seat,
                    player_id: present[usize::from(seat)].then_some(PlayerId(10 + u64::from(seat))),
                    side: seat,
                    forfeited: !present[usize::from(seat)],
                })
                .collect(),
            scores,
            winner,
            reason,
            duration_ticks: 0,
            tick_rate_hz: 60,
            started_at_ms: 0,
            ended_at_ms: 0,
            input_log_digest: String::new(),
        }
    }

    #[test]
    fn results_map_to_outcomes_with_home_on_side_0() {
        let played = |home_score, away_score| Some(GameOutcome::Played { home_score, away_score });
        assert_eq!(game_outcome(&result(EndReason::Score, vec![5, 3], Some(0), [true; 2])), played(5, 3));
        assert_eq!(game_outcome(&result(EndReason::TimeLimit, vec![2, 2], None, [true; 2])), played(2, 2));
        assert_eq!(
            game_outcome(&result(EndReason::Forfeit, vec![0, 1], Some(1), [false, true])),
            Some(GameOutcome::Forfeit { winner: Side::Away })
        );
        assert_eq!(
            game_outcome(&result(EndReason::Abandoned, vec![0, 0], None, [true, false])),
            Some(GameOutcome::Forfeit { winner: Side::Home })
        );
        assert_eq!(
            game_outcome(&result(EndReason::Abandoned, vec![0, 0], None, [false, false])),
            Some(GameOutcome::DoubleForfeit)
        );
        assert_eq!(game_outcome(&result(EndReason::ShardShutdown, vec![0, 0], None, [true; 2])), None);
    }

    #[test]
    fn match_ids_fit_the_tables() {
        for _ in 0..1000 {
            let id = new_match_id();
            assert!(id > 0 && i64::try_from(id).is_ok());
        }
    }
}
