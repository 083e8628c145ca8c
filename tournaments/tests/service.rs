//! The Tournaments service over real gRPC on loopback, on SQLite and
//! PostgreSQL: a cup from registration to champion (Watch, MatchReady tokens,
//! standings, receipts), refusals with their codes, and a restart mid-tournament
//! (with a crash between a ledger append and its record).

mod common;

use std::net::SocketAddr;

use common::{Database, FakeShard, Play, Rig, Shared, config, cup, eventually, ledger_dir, matches, seeded};
use rally_ledger::entry::Entry;
use rally_lobby::{AccessSigningKey, AccessSigningKeys, AccessTokenIssuer};
use rally_tournament::{Format, Rules, Seeding, Stage};
use rally_tournaments::TournamentClient;
use rally_tournaments::proto::tournament as pb;
use rally_tournaments::service::rules_to_wire;
use rally_tournaments::store::MatchStatus;
use tonic::Code;

fn now() -> u64 {
    rally_matchmaker::engine::unix_ms()
}

struct Served {
    issuer: AccessTokenIssuer,
    server: rally_tournaments::TournamentsServer,
}

impl Served {
    async fn start(rig: &Rig) -> Self {
        let issuer = AccessTokenIssuer::new(AccessSigningKeys::from(AccessSigningKey::from_seed([7; 32])));
        let server =
            rally_tournaments::serve(SocketAddr::from(([127, 0, 0, 1], 0)), rig.director.clone(), issuer.verifier())
                .await
                .expect("serve");
        Self { issuer, server }
    }

    fn token(&self, player: u64) -> String {
        let now_s = i64::try_from(now() / 1000).expect("seconds");
        self.issuer.issue(player, &format!("p{player}"), now_s).expect("token").0
    }

    async fn client(&self, player: u64) -> TournamentClient {
        TournamentClient::connect(&format!("http://{}", self.server.local_addr()), self.token(player))
            .await
            .expect("connect")
    }
}

fn create_request(rules: &Rules, max_entrants: u32, now_ms: u64) -> pb::CreateRequest {
    pb::CreateRequest {
        name: "Loopback Cup".into(),
        rules: Some(rules_to_wire(rules)),
        mode: String::new(),
        max_entrants,
        min_rating: None,
        max_rating: None,
        registration_opens_at_ms: 0,
        registration_closes_at_ms: i64::try_from(now_ms + 60_000).expect("ms"),
        check_in_opens_at_ms: 0,
        check_in_closes_at_ms: 0,
    }
}

async fn a_cup_runs_from_registration_to_champion(db: &Database) {
    let data = tempfile::tempdir().expect("temp dir");
    let shared = Shared::memory();
    let replays = data.path().join("replays");
    let config = rally_tournaments::TournamentsConfig { replay_dir: Some(replays.clone()), ..config() };
    let rig = Rig::open(db.url(), &ledger_dir(&data), &shared, config).await;
    let served = Served::start(&rig).await;
    let t0 = now();
    let shard = FakeShard::start(&shared, "shard-a", 8, t0).await;
    let mut organiser = served.client(100).await;
    let created = organiser.create(create_request(&cup(), 8, t0)).await.expect("create");
    let id = created.tournament_id;
    assert_eq!(created.status, pb::TournamentStatus::CheckIn as i32, "check-in opens with registration");
    assert_eq!(created.organiser_id, 100);
    let mut players = Vec::new();
    for player in 1..=4 {
        let mut client = served.client(player).await;
        let entrant = client.register(id).await.expect("register");
        assert_eq!((entrant.player_id, entrant.rating), (player, 2000 - 10 * player as i32));
        assert_eq!(client.register(id).await.expect("register again").state, pb::EntrantState::Registered as i32);
        let checked = client.check_in(id).await.expect("check in");
        assert_eq!(checked.state, pb::EntrantState::CheckedIn as i32);
        players.push(client);
    }
    let mut watch = players[0].watch(id).await.expect("watch");
    let first = watch.message().await.expect("stream").expect("first update");
    let tournament = first.tournament.expect("tournament");
    assert_eq!((tournament.n_registered, tournament.n_checked_in), (4, 4));
    assert!(first.ready.is_empty());

    rig.director.tick(t0 + 60_000).await.expect("seed");
    rig.director.tick(t0 + 60_001).await.expect("schedule");
    // Player 1 (seed 1) hears of their semi-final with a token for the shard.
    let ready = loop {
        let update = watch.message().await.expect("stream").expect("an update");
        if let Some(ready) = update.ready.first() {
            break ready.clone();
        }
    };
    assert_eq!((ready.shard_name.as_str(), ready.seat, ready.side, ready.attempt), ("shard-a", 0, 0, 1));
    assert_eq!((ready.opponent_id, ready.opponent_name.as_str()), (4, "p4"), "seed 1 meets seed 4");
    let semis = matches(&rig.director, id, MatchStatus::Scheduled).await;
    let semi = semis.iter().find(|row| row.match_id == ready.match_id).expect("the announced match");
    assert_eq!(ready.connect_token, semi.home_token);
    let got = organiser.get(id).await.expect("get");
    assert_eq!(got.status, pb::TournamentStatus::Running as i32);
    assert_eq!(got.games.iter().filter(|game| game.state == pb::GameState::Scheduled as i32).count(), 2);
    assert!(got.bracket_text.contains("p1"), "{}", got.bracket_text);

    // The semis are played for real (home wins), their replays written where the shard writes them.
    for row in &semis {
        shard.finish(&shard.replayed(row, 0, &replays, t0 + 61_000)).await;
    }
    eventually("both semis counted", || async {
        (matches(&rig.director, id, MatchStatus::Counted).await.len() == 2).then_some(())
    })
    .await;
    rig.director.tick(t0 + 80_000).await.expect("schedule the final");
    let finals = matches(&rig.director, id, MatchStatus::Scheduled).await;
    assert_eq!((finals[0].home_id, finals[0].away_id), (1, 2));
    shard.finish(&shard.result(&finals[0], Play::Score(5, 4), t0 + 81_000)).await;
    // The stream runs to FINISHED, then ends.
    let mut last = None;
    while let Some(update) = watch.message().await.expect("stream") {
        last = Some(update);
    }
    let last = last.expect("updates").tournament.expect("tournament");
    assert_eq!((last.status, last.champion_id), (pb::TournamentStatus::Finished as i32, Some(1)));
    let standings = players[1].standings(id).await.expect("standings");
    assert_eq!(standings.champion_id, Some(1));
    assert_eq!(standings.standings.iter().map(|standing| standing.player_id).take(2).collect::<Vec<_>>(), [1, 2]);

    // The final's receipt proves its entry against a signed checkpoint.
    let receipt = players[1].receipt(id, finals[0].match_id).await.expect("receipt");
    let direct = rig.director.receipt(id, finals[0].match_id).await.expect("receipt");
    assert_eq!((receipt.entry.clone(), receipt.leaf_index), (direct.entry.clone().into_bytes(), direct.index));
    assert_eq!(receipt.inclusion_proof.len(), direct.inclusion_proof.len());
    assert!(receipt.inclusion_proof.iter().all(|hash| hash.len() == 32));
    match rally_ledger::verify_receipt(&direct, &common::ledger_vkey()).expect("the receipt verifies") {
        Entry::MatchResult { match_id, scores, replay_sha256, .. } => {
            assert_eq!((match_id, scores), (finals[0].match_id, vec![5, 4]));
            assert_eq!(replay_sha256, "", "the final left no replay: logged without one");
        }
        other => panic!("the receipt is for {other:?}"),
    }
    let missing = players[1].receipt(id, 12345).await.expect_err("no such match");
    assert_eq!(missing.code(), Code::NotFound);
    let report = rig.verify(&ledger_dir(&data), true).await;
    assert_eq!((report.tournaments, report.finished, report.match_results), (1, 1, 3));
    assert_eq!((report.replay_files, report.replayed), (2, 2), "both semis' replays copied and re-simulated");
    served.server.shutdown().await.expect("shutdown");
    rig.close().await;
}

async fn refusals_have_the_right_codes(db: &Database) {
    let data = tempfile::tempdir().expect("temp dir");
    let shared = Shared::memory();
    let rig = Rig::open(db.url(), &ledger_dir(&data), &shared, config()).await;
    let served = Served::start(&rig).await;
    let t0 = now();
    let mut organiser = served.client(100).await;

    let mut anonymous = served.client(100).await;
    anonymous.set_access_token("");
    assert_eq!(anonymous.get(1).await.expect_err("no token").code(), Code::Unauthenticated);
    let unknown = organiser.get(999).await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("no tournament 999"), "{}", unknown.message());

    let bad_rules = Rules {
        stages: vec![Stage { format: Format::SingleElimination { third_place: false }, best_of: 2, advance: None }],
        seeding: Seeding::Rating,
    };
    let refused = organiser.create(create_request(&bad_rules, 8, t0)).await.expect_err("best of 2");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("best_of"), "{}", refused.message());
    let mut no_window = create_request(&cup(), 8, t0);
    no_window.registration_closes_at_ms = 0;
    assert_eq!(organiser.create(no_window).await.expect_err("no window").code(), Code::InvalidArgument);

    // Two places, ratings 1950..=1990: players 1 (1990) and 2 (1980) fit.
    let mut small = create_request(&cup(), 2, t0);
    small.min_rating = Some(1950);
    small.max_rating = Some(1990);
    let id = organiser.create(small).await.expect("create").tournament_id;
    served.client(1).await.register(id).await.expect("register 1");
    served.client(2).await.register(id).await.expect("register 2");
    let full = served.client(3).await.register(id).await.expect_err("full");
    assert_eq!(full.code(), Code::ResourceExhausted);
    assert!(full.message().contains("all 2 places"), "{}", full.message());
    let low = served.client(8).await.register(id).await.expect_err("rating too low");
    assert_eq!(low.code(), Code::FailedPrecondition);
    assert!(low.message().contains("1920") && low.message().contains("1950 to 1990"), "{}", low.message());
    let stranger = served.client(5).await.check_in(id).await.expect_err("not registered");
    assert_eq!(stranger.code(), Code::FailedPrecondition);
    assert!(stranger.message().contains("Register first"), "{}", stranger.message());
    let correct = pb::CorrectRequest {
        tournament_id: id,
        key: Some(pb::GameKey::default()),
        outcome: Some(pb::GameOutcome {
            outcome: Some(pb::game_outcome::Outcome::DoubleForfeit(pb::DoubleForfeit {})),
        }),
        reason: "because".into(),
    };
    let mut player = served.client(1).await;
    let request = player.request(correct.clone()).expect("request");
    let denied = player.raw().correct(request).await.expect_err("not the organiser");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("organiser (player 100)"), "{}", denied.message());
    let request = player.request(pb::DisqualifyRequest { tournament_id: id, player_id: 2, reason: "x".into() });
    let denied = player.raw().disqualify(request.expect("request")).await.expect_err("not the organiser");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Registration not open yet, and closed once seeded.
    let mut later = create_request(&cup(), 8, t0 + 3_600_000);
    later.registration_opens_at_ms = i64::try_from(t0 + 3_600_000).expect("ms");
    let later_id = organiser.create(later).await.expect("create").tournament_id;
    let early = served.client(1).await.register(later_id).await.expect_err("not open");
    assert_eq!(early.code(), Code::FailedPrecondition);
    assert!(early.message().contains("opens at"), "{}", early.message());
    served.client(1).await.check_in(id).await.expect("check in");
    rig.director.tick(t0 + 60_000).await.expect("seed");
    let closed = served.client(4).await.register(id).await.expect_err("closed");
    assert_eq!(closed.code(), Code::FailedPrecondition);
    assert!(closed.message().contains("closed"), "{}", closed.message());
    let late = served.client(2).await.check_in(id).await.expect_err("check-in closed");
    assert_eq!(late.code(), Code::FailedPrecondition, "{}", late.message());
    // Only player 1 checked in: no tournament of one.
    assert_eq!(organiser.get(id).await.expect("get").status, pb::TournamentStatus::Cancelled as i32);

    // List: newest first, a page at a time, tokens bound to their query.
    let request = organiser.request(pb::ListRequest { page_size: 1, page_token: String::new(), statuses: vec![] });
    let page = organiser.raw().list(request.expect("request")).await.expect("list").into_inner();
    assert_eq!(page.tournaments.iter().map(|t| t.tournament_id).collect::<Vec<_>>(), [later_id]);
    let request =
        organiser.request(pb::ListRequest { page_size: 1, page_token: page.next_page_token.clone(), statuses: vec![] });
    let next = organiser.raw().list(request.expect("request")).await.expect("list").into_inner();
    assert_eq!(next.tournaments.iter().map(|t| t.tournament_id).collect::<Vec<_>>(), [id]);
    let request = organiser.request(pb::ListRequest {
        page_size: 1,
        page_token: page.next_page_token,
        statuses: vec![pb::TournamentStatus::Running as i32],
    });
    let wrong = organiser.raw().list(request.expect("request")).await.expect_err("another query's token");
    assert_eq!(wrong.code(), Code::InvalidArgument);
    let open = organiser.list(&[pb::TournamentStatus::CheckIn, pb::TournamentStatus::Created]).await.expect("list");
    assert_eq!(open.tournaments.iter().map(|t| t.tournament_id).collect::<Vec<_>>(), [later_id]);
    served.server.shutdown().await.expect("shutdown");
    rig.close().await;
}

/// Takes the newest `n` events' ledger indices back, as if the process died
/// after appending them to the ledger and before recording it.
async fn forget_ledger_indices(url: &str, n: i64) {
    const FORGET: &str = "UPDATE events SET ledger_index = NULL WHERE id IN \
         (SELECT id FROM events WHERE ledger_index IS NOT NULL ORDER BY id DESC LIMIT $1)";
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite");
        sqlx::query(FORGET).bind(n).execute(&pool).await.expect("forget");
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("postgres");
        sqlx::query(FORGET).bind(n).execute(&pool).await.expect("forget");
        pool.close().await;
    }
}

async fn a_restart_mid_tournament_resumes(db: &Database) {
    let data = tempfile::tempdir().expect("temp dir");
    let shared = Shared::memory();
    let t0 = now();
    let shard = FakeShard::start(&shared, "shard-a", 8, t0).await;
    let rig = Rig::open(db.url(), &ledger_dir(&data), &shared, config()).await;
    let id = seeded(&rig.director, cup(), &[1, 2, 3, 4], t0).await;
    rig.director.tick(t0 + 60_001).await.expect("schedule");
    let semis = matches(&rig.director, id, MatchStatus::Scheduled).await;
    assert_eq!(semis.len(), 2);
    shard.finish(&shard.result(&semis[0], Play::Score(5, 0), t0 + 61_000)).await;
    eventually("the first semi counted", || async {
        (matches(&rig.director, id, MatchStatus::Counted).await.len() == 1).then_some(())
    })
    .await;
    rig.caught_up().await;
    let logged = rig.ledger.lock().expect("ledger").size();
    rig.close().await;
    forget_ledger_indices(db.url(), 2).await;

    let rig = Rig::open(db.url(), &ledger_dir(&data), &shared, config()).await;
    assert_eq!(rig.ledger.lock().expect("ledger").size(), logged, "the catch-up appends nothing twice");
    let view = rig.director.view(id).await.expect("view");
    assert_eq!(view.games.iter().filter(|(_, outcome)| outcome.is_some()).count(), 1, "the counted semi is kept");
    let stats = rig.director.tick(t0 + 62_000).await.expect("tick");
    assert_eq!(stats.scheduled, 0, "the other semi keeps its match");
    let still = matches(&rig.director, id, MatchStatus::Scheduled).await;
    assert_eq!(still.iter().map(|row| row.match_id).collect::<Vec<_>>(), [semis[1].match_id]);
    shard.finish(&shard.result(&semis[1], Play::Score(1, 5), t0 + 63_000)).await;
    eventually("the second semi counted", || async {
        (matches(&rig.director, id, MatchStatus::Counted).await.len() == 2).then_some(())
    })
    .await;
    rig.director.tick(t0 + 64_000).await.expect("schedule the final");
    let finals = matches(&rig.director, id, MatchStatus::Scheduled).await;
    assert_eq!(finals.len(), 1);
    shard.finish(&shard.result(&finals[0], Play::Score(5, 3), t0 + 65_000)).await;
    eventually("the tournament to finish", || async {
        rig.director.view(id).await.expect("view").champion.map(|_| ())
    })
    .await;
    let report = rig.verify(&ledger_dir(&data), false).await;
    assert_eq!((report.tournaments, report.finished, report.match_results), (1, 1, 3));
    rig.close().await;
}

macro_rules! on_both_databases {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = super::Database::sqlite().await;
                    super::$scenario(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = super::Database::postgres().await;
                    super::$scenario(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

on_both_databases!(
    a_cup_runs_from_registration_to_champion,
    refusals_have_the_right_codes,
    a_restart_mid_tournament_resumes
);
