//! Results in virtual time, with a fake shard that turns scheduled matches
//! into results on the bus: exactly once under duplicate and reordered
//! delivery (in memory and on Redis), no-shows, silent matches past their
//! deadline, and lost shards (reported by the real matchmaker's reaping).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{FakeShard, Play, Rig, Shared, config, cup, eventually, ledger_dir, matches, seeded};
use rally_ledger::entry::Entry;
use rally_matchmaker::match_events::MemoryMatchEvents;
use rally_matchmaker::{Backends, Matchmaker, MatchmakerConfig, MemoryTickets};
use rally_tournament::{GameOutcome, Side};
use rally_tournaments::TournamentDirector;
use rally_tournaments::store::MatchStatus;

fn now() -> u64 {
    rally_matchmaker::engine::unix_ms()
}

/// The ledger's match results, in order: (match id, outcome, reason).
async fn logged_results(rig: &Rig) -> Vec<(u64, GameOutcome, String)> {
    rig.entries()
        .await
        .into_iter()
        .filter_map(|entry| match entry {
            Entry::MatchResult { match_id, outcome, reason, .. } => Some((match_id, outcome, reason)),
            _ => None,
        })
        .collect()
}

async fn wait_counted(director: &TournamentDirector, id: u64, n: usize) {
    eventually(&format!("{n} counted matches"), || async {
        let done = director
            .store()
            .matches(id)
            .await
            .expect("matches")
            .iter()
            .filter(|row| matches!(row.status, MatchStatus::Counted | MatchStatus::Expired))
            .count();
        (done >= n).then_some(())
    })
    .await;
}

async fn duplicates_and_reordering_count_each_game_once(shared: &Shared) {
    let data = tempfile::tempdir().expect("temp dir");
    let db = common::Database::sqlite().await;
    let rig = Rig::open(db.url(), &ledger_dir(&data), shared, config()).await;
    let t0 = now();
    let shard = FakeShard::start(shared, "shard-a", 8, t0).await;
    let id = seeded(&rig.director, cup(), &[1, 2, 3, 4], t0).await;
    let stats = rig.director.tick(t0 + 60_001).await.expect("tick");
    assert_eq!(stats.scheduled, 2, "both semi-finals go to the shard");
    let semis = matches(&rig.director, id, MatchStatus::Scheduled).await;
    let results: Vec<_> = semis.iter().map(|row| shard.result(row, Play::Score(5, 2), t0 + 61_000)).collect();

    // Duplicates and reordering: the second semi first, each one three times.
    let bus = shared.bus();
    for result in [&results[1], &results[0], &results[1], &results[0]] {
        bus.publish(result).await.expect("publish");
    }
    shard.finish(&results[0]).await;
    wait_counted(&rig.director, id, 2).await;
    rig.director.tick(t0 + 80_000).await.expect("tick");
    let finals = matches(&rig.director, id, MatchStatus::Scheduled).await;
    assert_eq!(finals.len(), 1, "the final is scheduled once");
    // A stale duplicate of a semi arrives after the final was paired: ignored.
    bus.publish(&results[1]).await.expect("publish");
    let final_result = shard.result(&finals[0], Play::Score(3, 5), t0 + 81_000);
    shard.finish(&final_result).await;
    bus.publish(&final_result).await.expect("publish");
    wait_counted(&rig.director, id, 3).await;
    eventually("the tournament to finish", || async {
        let view = rig.director.view(id).await.expect("view");
        (view.champion.is_some()).then_some(())
    })
    .await;
    // Every delivery handled, none counted twice.
    let consumer = rig.consumer.as_ref().expect("consumer");
    eventually("every delivery to be handled", || async { (consumer.stats().handled >= 8).then_some(()) }).await;
    let view = rig.director.view(id).await.expect("view");
    assert_eq!(view.champion, Some(finals[0].away_id), "the away side won the final 5-3");
    let logged = logged_results(&rig).await;
    assert_eq!(logged.len(), 3, "three games, three results: {logged:?}");
    let mut ids: Vec<u64> = logged.iter().map(|(match_id, _, _)| *match_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each match logged once");
    let report = rig.verify(&ledger_dir(&data), false).await;
    assert_eq!((report.tournaments, report.finished, report.match_results), (1, 1, 3), "{report:?}");
    rig.close().await;
    db.cleanup().await;
}

async fn no_shows_forfeit_and_silent_matches_expire(shared: &Shared) {
    let data = tempfile::tempdir().expect("temp dir");
    let db = common::Database::sqlite().await;
    let rig = Rig::open(db.url(), &ledger_dir(&data), shared, config()).await;
    let t0 = now();
    let shard = FakeShard::start(shared, "shard-a", 8, t0).await;
    let id = seeded(&rig.director, cup(), &[1, 2, 3, 4, 5, 6, 7, 8], t0).await;
    let start = t0 + 60_001;
    assert_eq!(rig.director.tick(start).await.expect("tick").scheduled, 4);
    let round: Vec<_> = matches(&rig.director, id, MatchStatus::Scheduled).await;
    let registry = shared.registry();
    assert_eq!(registry.shards(start).await.expect("shards")[0].reserved, 4, "four slots reserved");
    // One away player never connects; nobody joins the second; the third is
    // played; the fourth never reaches the shard at all.
    shard.finish(&shard.result(&round[0], Play::NoShow { absent_seat: 1 }, start)).await;
    shard.finish(&shard.result(&round[1], Play::Empty, start)).await;
    shard.finish(&shard.result(&round[2], Play::Score(2, 5), start)).await;
    wait_counted(&rig.director, id, 3).await;
    let deadline = config().match_deadline().as_millis() as u64;
    let early = rig.director.tick(start + deadline - 1).await.expect("tick");
    assert_eq!(early.expired, 0, "not before its deadline");
    let late = rig.director.tick(start + deadline).await.expect("tick");
    assert_eq!(late.expired, 1, "the silent match counts as a double forfeit");
    assert_eq!(
        registry.shards(start + deadline).await.expect("shards")[0].reserved,
        u32::try_from(matches(&rig.director, id, MatchStatus::Scheduled).await.len()).expect("few"),
        "the silent match's slot is released; only newly scheduled matches hold slots"
    );
    let view = rig.director.view(id).await.expect("view");
    let outcome_of = |match_id: u64| {
        let key = &round.iter().find(|row| row.match_id == match_id).expect("row").game_key_json;
        view.games
            .iter()
            .find(|(game, _)| serde_json::to_string(&game.key).expect("json") == *key)
            .and_then(|(_, outcome)| outcome.clone())
    };
    assert_eq!(outcome_of(round[0].match_id), Some(GameOutcome::Forfeit { winner: Side::Home }));
    assert_eq!(outcome_of(round[1].match_id), Some(GameOutcome::DoubleForfeit));
    assert_eq!(outcome_of(round[2].match_id), Some(GameOutcome::Played { home_score: 2, away_score: 5 }));
    assert_eq!(outcome_of(round[3].match_id), Some(GameOutcome::DoubleForfeit));
    let reasons: Vec<String> = logged_results(&rig).await.into_iter().map(|(_, _, reason)| reason).collect();
    assert_eq!(reasons, ["forfeit", "abandoned", "score", "no_result"]);
    // A result that turns up after the deadline changes nothing.
    shard.finish(&shard.result(&round[3], Play::Score(5, 0), start)).await;
    let consumer = rig.consumer.as_ref().expect("consumer");
    eventually("the late result to be handled", || async { (consumer.stats().handled >= 4).then_some(()) }).await;
    assert_eq!(logged_results(&rig).await.len(), 4, "the late result is not logged");
    rig.verify(&ledger_dir(&data), false).await;
    rig.close().await;
    db.cleanup().await;
}

async fn a_lost_shard_reschedules_once_then_double_forfeits(shared: &Shared) {
    let data = tempfile::tempdir().expect("temp dir");
    let db = common::Database::sqlite().await;
    let rig = Rig::open(db.url(), &ledger_dir(&data), shared, config()).await;
    let t0 = now();
    // Shard a has the most room, so it gets the match; its lease is short.
    let shard_a = FakeShard::start(shared, "shard-a", 4, t0).await;
    let shard_b = FakeShard::start(shared, "shard-b", 2, t0).await;
    let matchmaker = Matchmaker::new(
        MatchmakerConfig::default(),
        Backends {
            tickets: Arc::new(MemoryTickets::new(Duration::from_secs(600))),
            registry: shared.registry(),
            bus: shared.bus(),
            events: Arc::new(MemoryMatchEvents::new()),
        },
        Arc::new(common::ratings()),
        common::minter(),
    )
    .expect("matchmaker");
    let id = seeded(&rig.director, cup(), &[1, 2], t0).await;
    let s = t0 + 60_000;
    let renewed = shard_a.registry.heartbeat("shard-a", shard_a.info.incarnation, Default::default(), 1_000, s);
    assert_eq!(renewed.await.expect("heartbeat"), rally_matchmaker::registry::Heartbeat::Alive);
    rig.director.tick(s + 1).await.expect("tick");
    let first = matches(&rig.director, id, MatchStatus::Scheduled).await;
    assert_eq!((first.len(), first[0].shard.as_str(), first[0].attempt), (1, "shard-a", 1));

    // Shard a stops heartbeating: the matchmaker reaps it and reports its match aborted.
    let stats = matchmaker.run_round(s + 1_001).await.expect("round");
    assert_eq!(stats.aborted_matches, 1);
    eventually("the match to be lost", || async {
        (!matches(&rig.director, id, MatchStatus::Lost).await.is_empty()).then_some(())
    })
    .await;
    // Shard a comes back, empty and roomier than b: the game still goes to another shard.
    let back =
        rally_matchmaker::registry::ShardInfo { incarnation: shard_a.info.incarnation + 1, ..shard_a.info.clone() };
    shared.registry().register(&back, common::SHARD_TTL_MS, s + 1_001).await.expect("shard a again");
    rig.director.tick(s + 1_002).await.expect("tick");
    let second = matches(&rig.director, id, MatchStatus::Scheduled).await;
    assert_eq!(second.len(), 1, "rescheduled once");
    assert_ne!(second[0].match_id, first[0].match_id, "with a new match id");
    assert_eq!((second[0].shard.as_str(), second[0].attempt), ("shard-b", 2));

    // The aborted result delivered again changes nothing.
    let aborted = rally_matchmaker::engine::aborted_result(
        &rally_matchmaker::registry::MatchRecord {
            match_id: rally_protocol::MatchId(first[0].match_id),
            mode: "pong".into(),
            shard: "shard-a".into(),
            tickets: Vec::new(),
            seats: Vec::new(),
            n_sides: 2,
            reserved_at_ms: t0,
        },
        s + 1_003,
    );
    shared.bus().publish(&aborted).await.expect("publish");

    // Shard b restarts (a new incarnation): the second loss is a double forfeit.
    let restarted =
        rally_matchmaker::registry::ShardInfo { incarnation: shard_b.info.incarnation + 1, ..shard_b.info.clone() };
    shared.registry().register(&restarted, common::SHARD_TTL_MS, s + 2_000).await.expect("re-register");
    assert_eq!(matchmaker.run_round(s + 2_001).await.expect("round").aborted_matches, 1);
    wait_counted(&rig.director, id, 1).await;
    let view = rig.director.view(id).await.expect("view");
    assert_eq!(view.games.len(), 1);
    assert_eq!(view.games[0].1, Some(GameOutcome::DoubleForfeit));
    let logged = logged_results(&rig).await;
    assert_eq!(logged.len(), 1, "the game is logged once, with its counted match: {logged:?}");
    assert_eq!((logged[0].0, logged[0].2.as_str()), (second[0].match_id, "shard_shutdown"));
    rig.director.tick(s + 2_002).await.expect("tick");
    assert!(matches(&rig.director, id, MatchStatus::Scheduled).await.is_empty(), "not scheduled a third time");
    rig.verify(&ledger_dir(&data), false).await;
    rig.close().await;
    db.cleanup().await;
}

async fn withdrawals_corrections_and_disqualifications_void_their_matches(shared: &Shared) {
    let data = tempfile::tempdir().expect("temp dir");
    let db = common::Database::sqlite().await;
    let replays = data.path().join("replays");
    let config =
        rally_tournaments::TournamentsConfig { operators: vec![200], replay_dir: Some(replays.clone()), ..config() };
    let rig = Rig::open(db.url(), &ledger_dir(&data), shared, config).await;
    let t0 = now();
    let shard = FakeShard::start(shared, "shard-a", 8, t0).await;
    let registry = shared.registry();
    let id = seeded(&rig.director, cup(), &[1, 2, 3, 4], t0).await;
    let s = t0 + 60_001;
    rig.director.tick(s).await.expect("tick");
    let semis = matches(&rig.director, id, MatchStatus::Scheduled).await;
    let semi_of = |player: u64| semis.iter().find(|row| row.home_id == player || row.away_id == player).expect("semi");
    let (semi_a, semi_b) = (semi_of(4).clone(), semi_of(3).clone());

    // Player 4 withdraws: their semi is a forfeit, its match void and its slot free.
    rig.director.withdraw(id, 4, s + 1).await.expect("withdraw");
    assert_eq!(matches(&rig.director, id, MatchStatus::Void).await[0].match_id, semi_a.match_id);
    assert_eq!(registry.shards(s + 1).await.expect("shards")[0].reserved, 1);
    // The void match's result, should the shard still send one, counts for nothing.
    // Its replay is never copied: verify refuses replay files no entry names.
    shard.finish(&shard.replayed(&semi_a, 1, &replays, s + 2)).await;
    shard.finish(&shard.result(&semi_b, Play::Score(5, 0), s + 2)).await;
    wait_counted(&rig.director, id, 1).await;
    rig.director.tick(s + 3).await.expect("tick");
    let final_1 = matches(&rig.director, id, MatchStatus::Scheduled).await;
    assert_eq!(final_1.iter().map(|row| (row.home_id, row.away_id)).collect::<Vec<_>>(), [(1, semi_b.home_id)]);

    // Only organisers correct; a correction of semi b re-pairs the final.
    let key: rally_tournament::GameKey = serde_json::from_str(&semi_b.game_key_json).expect("key");
    let winner_b = GameOutcome::Forfeit { winner: Side::Away };
    let refused = rig.director.correct(id, 1, key, winner_b.clone(), "no", s + 4).await.expect_err("a player");
    assert!(matches!(refused, rally_tournaments::TournamentError::PermissionDenied(_)), "{refused}");
    rig.director
        .correct(id, 100, key, winner_b, "the home player used a second account", s + 4)
        .await
        .expect("correct");
    assert_eq!(matches(&rig.director, id, MatchStatus::Void).await.len(), 2, "the old final is void");
    rig.director.tick(s + 5).await.expect("tick");
    let final_2 = matches(&rig.director, id, MatchStatus::Scheduled).await;
    assert_eq!(final_2.iter().map(|row| (row.home_id, row.away_id)).collect::<Vec<_>>(), [(1, semi_b.away_id)]);

    // An operator disqualifies the finalist: the final is a forfeit, the cup over.
    rig.director.disqualify(id, 200, semi_b.away_id, "abuse in chat", s + 6).await.expect("disqualify");
    let view = rig.director.view(id).await.expect("view");
    assert_eq!(view.champion, Some(1));
    assert_eq!(view.record.status, rally_tournaments::store::Status::Finished);
    assert_eq!(registry.shards(s + 6).await.expect("shards")[0].reserved, 0, "every slot is free");
    let kinds: Vec<&str> = rig.entries().await.iter().map(Entry::kind).collect();
    for kind in ["withdrawal", "match_result", "correction", "disqualification", "finished"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert_eq!(logged_results(&rig).await.len(), 1, "only semi b was played");
    let kept = std::fs::read_dir(ledger_dir(&data).join("replays")).map_or(0, |dir| dir.count());
    assert_eq!(kept, 0, "the void match's replay is not in the ledger");
    let late = rig.director.correct(id, 100, key, GameOutcome::DoubleForfeit, "too late", s + 7).await;
    assert!(matches!(late, Err(rally_tournaments::TournamentError::FailedPrecondition(_))), "{late:?}");
    rig.verify(&ledger_dir(&data), false).await;
    rig.close().await;
    db.cleanup().await;
}

mod memory {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn withdrawals_corrections_and_disqualifications_void_their_matches() {
        let shared = super::Shared::memory();
        super::withdrawals_corrections_and_disqualifications_void_their_matches(&shared).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn duplicates_and_reordering_count_each_game_once() {
        let shared = super::Shared::memory();
        super::duplicates_and_reordering_count_each_game_once(&shared).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_shows_forfeit_and_silent_matches_expire() {
        let shared = super::Shared::memory();
        super::no_shows_forfeit_and_silent_matches_expire(&shared).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_shard_reschedules_once_then_double_forfeits() {
        let shared = super::Shared::memory();
        super::a_lost_shard_reschedules_once_then_double_forfeits(&shared).await;
    }
}

mod redis {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn duplicates_and_reordering_count_each_game_once() {
        let shared = super::Shared::redis().await;
        super::duplicates_and_reordering_count_each_game_once(&shared).await;
        shared.cleanup().await;
    }
}
