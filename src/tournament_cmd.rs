//! `rally tournament`: tournaments from the command line — `create` one, `list`
//! them, `show` one (its bracket drawn as text, and the standings), `join` one
//! (register, check in when the window opens, and follow it), `watch` one.
//!
//! Every command logs in at the lobby (`--username`, `--password`) and talks to
//! the `rally.tournament.v1.Tournaments` service; playing the matches is `rally
//! play --tournament ID` (a person) or `rally bot play --tournament ID` (bots).

use std::fmt::Write as _;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rally_matchmaker::player::{PlayerClient, channel};
use rally_tournament::{Format, Rules, Seeding, Stage};
use rally_tournaments::proto::tournament::tournaments_client::TournamentsClient;
use rally_tournaments::proto::tournament::{
    self as pb, CheckInRequest, CreateRequest, EntrantState, GameState, GetRequest, ListRequest, RegisterRequest,
    StandingsRequest, TournamentStatus, WatchRequest,
};
use tonic::transport::Channel;

/// `rally tournament` subcommands and the flags they share.
#[derive(Debug, Args)]
pub struct TournamentArgs {
    /// The lobby's gRPC address (Auth).
    #[arg(long, global = true, default_value = "http://127.0.0.1:7100", env = "RALLY_LOBBY")]
    pub lobby: String,
    /// The tournament service's gRPC address (`rally up` serves it on --tournaments-addr).
    #[arg(long, global = true, default_value = "http://127.0.0.1:7104", env = "RALLY_TOURNAMENTS")]
    pub tournaments: String,
    /// Your username.
    #[arg(long, global = true, env = "RALLY_USERNAME", default_value = "")]
    pub username: String,
    /// Your password.
    #[arg(long, global = true, env = "RALLY_PASSWORD", hide_env_values = true, default_value = "")]
    pub password: String,
    /// Create the account first when it does not exist.
    #[arg(long, global = true)]
    pub register: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: TournamentCommand,
}

/// What `rally tournament` does.
#[derive(Debug, Subcommand)]
pub enum TournamentCommand {
    /// Create a tournament (you organise it) and print its id.
    Create(CreateArgs),
    /// List tournaments, newest first.
    List(ListArgs),
    /// Show one tournament: its settings, the bracket and the standings.
    Show(ShowArgs),
    /// Register, check in when the window opens, and follow the tournament until it ends.
    Join(ShowArgs),
    /// Follow a tournament: print each change until it ends.
    Watch(ShowArgs),
}

/// `rally tournament create` flags.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Its name.
    #[arg(long)]
    pub name: String,
    /// A stage, in order: FORMAT[,rounds=N][,best-of=N][,advance=K][,third-place][,reset], FORMAT one of
    /// single-elimination (se), double-elimination (de), swiss, round-robin (rr); e.g.
    /// `--stage swiss,rounds=5,advance=8 --stage se`. Repeat for more stages.
    #[arg(long = "stage", default_value = "single-elimination")]
    pub stages: Vec<String>,
    /// Seeding: rating (highest first) or given (registration order).
    #[arg(long, default_value = "rating")]
    pub seeding: String,
    /// Most entrants.
    #[arg(long, default_value_t = 16)]
    pub max_entrants: u32,
    /// The game mode [default: the server's].
    #[arg(long, default_value = "")]
    pub mode: String,
    /// Lowest rating admitted.
    #[arg(long)]
    pub min_rating: Option<i32>,
    /// Highest rating admitted.
    #[arg(long)]
    pub max_rating: Option<i32>,
    /// Seconds from now until registration opens.
    #[arg(long, default_value_t = 0.0)]
    pub opens_in: f64,
    /// Seconds registration stays open.
    #[arg(long, default_value_t = 300.0)]
    pub registration: f64,
    /// Seconds of check-in before registration closes (0: check-in is open the whole registration).
    #[arg(long, default_value_t = 0.0)]
    pub check_in: f64,
}

/// `rally tournament list` flags.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only tournaments open to entrants (registration or check-in).
    #[arg(long)]
    pub open: bool,
}

/// The tournament a command is about.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The tournament's id (`rally tournament list` shows them).
    pub id: u64,
}

/// Runs `rally tournament`.
pub fn run(args: TournamentArgs) -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting tokio")?;
    runtime.block_on(async move {
        let mut session = Session::login(&args).await?;
        match &args.command {
            TournamentCommand::Create(create) => {
                let tournament = session.create(create).await?;
                println!("created tournament {}: {}", tournament.tournament_id, summary(&tournament));
                println!(
                    "join it with `rally tournament join {}` or `rally play --tournament {}`",
                    tournament.tournament_id, tournament.tournament_id
                );
            }
            TournamentCommand::List(list) => print!("{}", list_text(&session.list(list.open).await?)),
            TournamentCommand::Show(show) => {
                let tournament = session.get(show.id).await?;
                let standings = session.standings(show.id).await?;
                print!("{}", show_text(&tournament, &standings));
            }
            TournamentCommand::Join(show) => {
                let entrant = session.register(show.id).await?;
                println!(
                    "registered in tournament {} as {} ({})",
                    show.id,
                    entrant.display_name,
                    state_name(entrant.state())
                );
                session.follow(show.id, true).await?;
            }
            TournamentCommand::Watch(show) => session.follow(show.id, false).await?,
        }
        Ok(())
    })
}

/// A logged-in player and the tournament service.
#[derive(Debug)]
pub struct Session {
    player: PlayerClient,
    client: TournamentsClient<Channel>,
}

macro_rules! call {
    ($session:expr, $method:ident, $message:expr) => {{
        $session.player.ensure_fresh().await.map_err(status_error)?;
        let request = $session.player.request($message);
        $session.client.$method(request).await.map(tonic::Response::into_inner).map_err(status_error)
    }};
}

/// A refusal as an error a person can act on (its message, without tonic's framing).
fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

impl Session {
    /// Logs in (registering first with `--register`).
    pub async fn login(args: &TournamentArgs) -> anyhow::Result<Self> {
        if args.username.is_empty() || args.password.is_empty() {
            bail!("log in with --username and --password (or RALLY_USERNAME and RALLY_PASSWORD)");
        }
        let lobby = channel(&args.lobby).await?;
        let tournaments = channel(&args.tournaments).await?;
        let player = if args.register {
            PlayerClient::register_or_login(lobby, tournaments.clone(), &args.username, &args.password).await
        } else {
            PlayerClient::login(lobby, tournaments.clone(), &args.username, &args.password).await
        }
        .map_err(|status| anyhow::anyhow!("logging in as {}: {}", args.username, status.message()))?;
        Ok(Self::new(player, tournaments))
    }

    /// A session of `player` with the tournament service on `channel`.
    pub fn new(player: PlayerClient, channel: Channel) -> Self {
        Self { player, client: TournamentsClient::new(channel).max_decoding_message_size(16 * 1024 * 1024) }
    }

    /// The logged-in player.
    pub fn player(&self) -> &PlayerClient {
        &self.player
    }

    async fn create(&mut self, args: &CreateArgs) -> anyhow::Result<pb::Tournament> {
        let rules = parse_rules(&args.stages, &args.seeding)?;
        let now = rally_matchmaker::engine::unix_ms() as f64;
        let opens = now + args.opens_in.max(0.0) * 1000.0;
        let closes = opens + args.registration.max(1.0) * 1000.0;
        let check_in_opens = if args.check_in > 0.0 { (closes - args.check_in * 1000.0).max(opens) } else { 0.0 };
        let request = CreateRequest {
            name: args.name.clone(),
            rules: Some(rally_tournaments::service::rules_to_wire(&rules)),
            mode: args.mode.clone(),
            max_entrants: args.max_entrants,
            min_rating: args.min_rating,
            max_rating: args.max_rating,
            registration_opens_at_ms: if args.opens_in > 0.0 { opens as i64 } else { 0 },
            registration_closes_at_ms: closes as i64,
            check_in_opens_at_ms: check_in_opens as i64,
            check_in_closes_at_ms: 0,
        };
        call!(self, create, request)?.tournament.context("the service answered without a tournament")
    }

    /// Tournaments, newest first (only those open to entrants with `open`).
    pub async fn list(&mut self, open: bool) -> anyhow::Result<Vec<pb::Tournament>> {
        let statuses = if open {
            vec![TournamentStatus::Registration as i32, TournamentStatus::CheckIn as i32]
        } else {
            Vec::new()
        };
        let request = ListRequest { page_size: 50, page_token: String::new(), statuses };
        Ok(call!(self, list, request)?.tournaments)
    }

    /// One tournament with its entrants and games.
    pub async fn get(&mut self, id: u64) -> anyhow::Result<pb::Tournament> {
        call!(self, get, GetRequest { tournament_id: id })?
            .tournament
            .context("the service answered without a tournament")
    }

    /// Its standings.
    pub async fn standings(&mut self, id: u64) -> anyhow::Result<pb::StandingsResponse> {
        call!(self, standings, StandingsRequest { tournament_id: id })
    }

    /// Registers the player.
    pub async fn register(&mut self, id: u64) -> anyhow::Result<pb::Entrant> {
        call!(self, register, RegisterRequest { tournament_id: id })?
            .entrant
            .context("the service answered without an entrant")
    }

    /// Checks the player in.
    pub async fn check_in(&mut self, id: u64) -> anyhow::Result<pb::Entrant> {
        call!(self, check_in, CheckInRequest { tournament_id: id })?
            .entrant
            .context("the service answered without an entrant")
    }

    /// The Watch stream of a tournament.
    pub async fn watch(&mut self, id: u64) -> anyhow::Result<tonic::Streaming<pb::TournamentUpdate>> {
        call!(self, watch, WatchRequest { tournament_id: id })
    }

    /// Prints each change of tournament `id` until it ends; with `check_in`, checks
    /// the player in once the window opens and says when a match of theirs is ready.
    async fn follow(&mut self, id: u64, check_in: bool) -> anyhow::Result<()> {
        let mut stream = self.watch(id).await?;
        let me = self.player.player_id();
        let mut last = String::new();
        let mut announced = std::collections::BTreeSet::new();
        while let Some(update) = stream.message().await.map_err(status_error)? {
            let Some(tournament) = update.tournament else { continue };
            let line = progress_line(&tournament);
            if line != last {
                println!("{line}");
                last = line;
            }
            let mine =
                tournament.entrants.iter().find(|entrant| entrant.player_id == me).map(|entrant| entrant.state());
            if check_in && tournament.status() == TournamentStatus::CheckIn && mine == Some(EntrantState::Registered) {
                let entrant = self.check_in(id).await?;
                println!("checked in ({})", state_name(entrant.state()));
            }
            for ready in &update.ready {
                if announced.insert(ready.match_id) {
                    println!(
                        "your match {} against {} is ready on {} (connect before {}): play it with `rally play --tournament {id}`",
                        ready.key.as_ref().map_or("", |key| key.label.as_str()),
                        ready.opponent_name,
                        ready.shard_address,
                        clock(ready.token_expires_at_ms),
                    );
                }
            }
            if matches!(tournament.status(), TournamentStatus::Finished | TournamentStatus::Cancelled) {
                let standings = self.standings(id).await?;
                print!("{}", show_text(&tournament, &standings));
                return Ok(());
            }
        }
        println!("the service closed the stream");
        Ok(())
    }
}

/// Parses `--stage` specs and `--seeding` into rules (checked by the service).
pub fn parse_rules(stages: &[String], seeding: &str) -> anyhow::Result<Rules> {
    let seeding = match seeding {
        "rating" => Seeding::Rating,
        "given" => Seeding::Given,
        other => bail!("unknown seeding {other:?}: rating or given"),
    };
    let stages = stages.iter().map(|spec| parse_stage(spec)).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Rules { stages, seeding })
}

fn parse_stage(spec: &str) -> anyhow::Result<Stage> {
    let mut parts = spec.split(',').map(str::trim);
    let format = parts.next().unwrap_or_default();
    let (mut rounds, mut best_of, mut advance, mut third_place, mut reset) = (None, 1u8, None, false, false);
    for part in parts {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let number =
            |what: &str| value.parse::<u16>().with_context(|| format!("--stage {spec:?}: {what} needs a number"));
        match key {
            "rounds" => rounds = Some(number("rounds")?),
            "best-of" | "bo" => best_of = u8::try_from(number("best-of")?).context("best-of is 1, 3, 5 or 7")?,
            "advance" | "top" => advance = Some(number("advance")?),
            "third-place" => third_place = true,
            "reset" | "grand-final-reset" => reset = true,
            other => {
                bail!("--stage {spec:?}: unknown option {other:?} (rounds=, best-of=, advance=, third-place, reset)")
            }
        }
    }
    let format = match format {
        "single-elimination" | "se" => Format::SingleElimination { third_place },
        "double-elimination" | "de" => Format::DoubleElimination { grand_final_reset: reset },
        "swiss" => Format::Swiss { rounds: rounds.context("a Swiss stage needs rounds=N")? },
        "round-robin" | "rr" => Format::RoundRobin,
        other => bail!(
            "--stage {spec:?}: unknown format {other:?} (single-elimination, double-elimination, swiss, round-robin)"
        ),
    };
    Ok(Stage { format, best_of, advance })
}

/// A Unix-milliseconds time as `HH:MM:SS` UTC.
fn clock(ms: i64) -> String {
    let seconds = ms.max(0) / 1000;
    format!("{:02}:{:02}:{:02} UTC", (seconds / 3600) % 24, (seconds / 60) % 60, seconds % 60)
}

/// The status's name for people.
pub fn status_name(status: TournamentStatus) -> &'static str {
    match status {
        TournamentStatus::Unspecified => "unknown",
        TournamentStatus::Created => "created",
        TournamentStatus::Registration => "registration",
        TournamentStatus::CheckIn => "check-in",
        TournamentStatus::Running => "running",
        TournamentStatus::Finished => "finished",
        TournamentStatus::Cancelled => "cancelled",
    }
}

fn state_name(state: EntrantState) -> &'static str {
    match state {
        EntrantState::Unspecified => "unknown",
        EntrantState::Registered => "registered",
        EntrantState::CheckedIn => "checked in",
        EntrantState::Withdrawn => "withdrawn",
        EntrantState::Disqualified => "disqualified",
        EntrantState::NotCheckedIn => "not checked in",
    }
}

/// The rules in a few words, e.g. `swiss 5 rounds (top 8) → single elimination, best of 1`.
pub fn rules_text(rules: Option<&pb::Rules>) -> String {
    let Some(rules) = rules else { return "no rules".to_owned() };
    rules
        .stages
        .iter()
        .map(|stage| {
            let mut text = match &stage.format {
                Some(pb::stage::Format::SingleElimination(se)) if se.third_place => {
                    "single elimination with a third-place match".to_owned()
                }
                Some(pb::stage::Format::SingleElimination(_)) => "single elimination".to_owned(),
                Some(pb::stage::Format::DoubleElimination(de)) if de.grand_final_reset => {
                    "double elimination with a grand-final reset".to_owned()
                }
                Some(pb::stage::Format::DoubleElimination(_)) => "double elimination".to_owned(),
                Some(pb::stage::Format::Swiss(swiss)) => format!("swiss {} rounds", swiss.rounds),
                Some(pb::stage::Format::RoundRobin(_)) => "round robin".to_owned(),
                None => "?".to_owned(),
            };
            let _ = write!(text, ", best of {}", stage.best_of);
            if let Some(advance) = stage.advance {
                let _ = write!(text, " (top {advance} go on)");
            }
            text
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// One line about a tournament: name, status, rules, entrants.
pub fn summary(tournament: &pb::Tournament) -> String {
    format!(
        "{:?} — {}, {}; {} registered ({} checked in) of {}; mode {}",
        tournament.name,
        status_name(tournament.status()),
        rules_text(tournament.rules.as_ref()),
        tournament.n_registered,
        tournament.n_checked_in,
        tournament.max_entrants,
        tournament.mode,
    )
}

/// How far a tournament is: `tournament 3: running, round 2, 5 of 7 games done`.
pub fn progress_line(tournament: &pb::Tournament) -> String {
    let id = tournament.tournament_id;
    let status = tournament.status();
    match status {
        TournamentStatus::Running | TournamentStatus::Finished => {
            let done = tournament.games.iter().filter(|game| game.state() == GameState::Done).count();
            let current = tournament
                .games
                .iter()
                .filter(|game| game.state() != GameState::Done)
                .chain(tournament.games.last())
                .filter_map(|game| game.key.as_ref())
                .map(|key| (key.stage, key.round))
                .min()
                .unwrap_or_default();
            let mut line = format!(
                "tournament {id}: {}, stage {} round {}, {done} of {} games done",
                status_name(status),
                current.0 + 1,
                current.1 + 1,
                tournament.games.len()
            );
            if let Some(champion) = tournament.champion_id {
                let _ = write!(line, "; champion {}", display_name(tournament, champion));
            }
            line
        }
        _ => format!(
            "tournament {id}: {}, {} registered, {} checked in (of {})",
            status_name(status),
            tournament.n_registered,
            tournament.n_checked_in,
            tournament.max_entrants
        ),
    }
}

fn display_name(tournament: &pb::Tournament, player: u64) -> String {
    tournament
        .entrants
        .iter()
        .find(|entrant| entrant.player_id == player)
        .map_or_else(|| format!("player {player}"), |entrant| entrant.display_name.clone())
}

/// `rally tournament list`'s table.
pub fn list_text(tournaments: &[pb::Tournament]) -> String {
    if tournaments.is_empty() {
        return "no tournaments\n".to_owned();
    }
    let mut out = format!("{:>6}  {:<24} {:<12} {:>9}  rules\n", "id", "name", "status", "entrants");
    for tournament in tournaments {
        let _ = writeln!(
            out,
            "{:>6}  {:<24} {:<12} {:>4}/{:<4}  {}",
            tournament.tournament_id,
            tournament.name,
            status_name(tournament.status()),
            tournament.n_registered,
            tournament.max_entrants,
            rules_text(tournament.rules.as_ref()),
        );
    }
    out
}

/// `rally tournament show`'s text: the summary, the bracket and the standings.
pub fn show_text(tournament: &pb::Tournament, standings: &pb::StandingsResponse) -> String {
    let mut out = format!("tournament {}: {}\n", tournament.tournament_id, summary(tournament));
    let _ = writeln!(
        out,
        "registration {} – {}, check-in {} – {}",
        clock(tournament.registration_opens_at_ms),
        clock(tournament.registration_closes_at_ms),
        clock(tournament.check_in_opens_at_ms),
        clock(tournament.check_in_closes_at_ms)
    );
    if tournament.bracket_text.is_empty() {
        out.push_str("\n(no bracket yet: entrants are seeded when check-in closes)\n");
    } else {
        out.push('\n');
        out.push_str(&tournament.bracket_text);
        if !tournament.bracket_text.ends_with('\n') {
            out.push('\n');
        }
    }
    if !standings.standings.is_empty() {
        let _ = writeln!(
            out,
            "\nstandings:\n{:>4}  {:<20} {:>3} {:>3} {:>3} {:>4} {:>8} {:>6}",
            "rank", "player", "W", "L", "D", "pts", "buchholz", "diff"
        );
        for standing in &standings.standings {
            let _ = writeln!(
                out,
                "{:>4}  {:<20} {:>3} {:>3} {:>3} {:>4} {:>8} {:>6}{}",
                standing.rank,
                standing.display_name,
                standing.wins,
                standing.losses,
                standing.draws,
                standing.points,
                standing.buchholz,
                standing.point_difference,
                if standing.eliminated { "  out" } else { "" }
            );
        }
    }
    if let Some(champion) = standings.champion_id.or(tournament.champion_id) {
        let _ = writeln!(out, "champion: {}", display_name(tournament, champion));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_specs_parse_into_rules_and_bad_ones_say_why() {
        let rules = parse_rules(&["swiss,rounds=5,advance=8".into(), "se,best-of=3,third-place".into()], "rating")
            .expect("two stages");
        assert_eq!(
            rules,
            Rules {
                stages: vec![
                    Stage { format: Format::Swiss { rounds: 5 }, best_of: 1, advance: Some(8) },
                    Stage { format: Format::SingleElimination { third_place: true }, best_of: 3, advance: None },
                ],
                seeding: Seeding::Rating,
            }
        );
        let wire = rally_tournaments::service::rules_to_wire(&rules);
        assert_eq!(
            rules_text(Some(&wire)),
            "swiss 5 rounds, best of 1 (top 8 go on) → single elimination with a third-place match, best of 3"
        );
        for (spec, says) in [
            ("swiss", "needs rounds"),
            ("ladder", "unknown format"),
            ("se,bestof=3", "unknown option"),
            ("se,best-of=x", "needs a number"),
        ] {
            let err = parse_rules(&[spec.to_owned()], "rating").expect_err(spec);
            assert!(format!("{err:#}").contains(says), "{spec}: {err:#}");
        }
        assert!(parse_rules(&["se".into()], "random").is_err());
    }

    #[test]
    fn clock_reads_utc() {
        assert_eq!(clock(0), "00:00:00 UTC");
        assert_eq!(clock((13 * 3600 + 5 * 60 + 9) * 1000 + 999), "13:05:09 UTC");
    }
}
