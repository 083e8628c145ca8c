//! The bracket engine: properties over every format (2..=128 entrants, random results from a
//! proptest-chosen seed) and worked examples of seeding, Berger tables, tie-breaks,
//! corrections, withdrawals and best-of series.
#![expect(clippy::unwrap_used, reason = "test helpers panic on a broken engine, which is the failure")]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rally_tournament::{
    ApplyError, Entrant, EntrantId, Format, Game, GameKey, GameOutcome, Input, Rules, RulesError, Seeding, Side, Stage,
    Tournament, replay,
};

/// A tiny xorshift generator: results in properties come from a seed proptest picks.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn entrants(n: usize) -> Vec<Entrant> {
    (0..n).map(|i| Entrant { id: 1000 + i as u64, name: format!("p{}", i + 1), rating: 2000 - i as i32 }).collect()
}

/// The id of seed `s` (1-based) for [`entrants`] with given seeding.
fn seed(s: u64) -> EntrantId {
    999 + s
}

fn one_stage(format: Format, best_of: u8) -> Rules {
    Rules { stages: vec![Stage { format, best_of, advance: None }], seeding: Seeding::Given }
}

fn played(home_score: u32, away_score: u32) -> GameOutcome {
    GameOutcome::Played { home_score, away_score }
}

fn result(key: GameKey, outcome: GameOutcome) -> Input {
    Input::Result { key, outcome }
}

/// A random outcome: mostly decisive games, some draws.
fn random_outcome(rng: &mut XorShift) -> GameOutcome {
    let home = rng.below(6) as u32;
    let away = if rng.below(8) == 0 { home } else { rng.below(6) as u32 };
    played(home, away)
}

/// Plays every ready game with random results until none is ready; returns the inputs.
fn play_out(tournament: &mut Tournament, rng: &mut XorShift) -> Vec<Input> {
    let mut inputs = Vec::new();
    for _ in 0..100_000 {
        let ready = tournament.ready_games();
        if ready.is_empty() {
            break;
        }
        for game in ready {
            let input = result(game.key, random_outcome(rng));
            tournament.apply(&input).expect("a ready game accepts a result");
            inputs.push(input);
        }
    }
    inputs
}

/// Series (stage, round, table) → (home, away, the outcomes of its games).
type SeriesMap = BTreeMap<(u8, u16, u16), (EntrantId, EntrantId, Vec<GameOutcome>)>;

fn series_of(tournament: &Tournament) -> SeriesMap {
    let mut series = SeriesMap::new();
    for (game, outcome) in tournament.games() {
        let entry = series.entry((game.key.stage, game.key.round, game.key.table)).or_insert((
            game.home,
            game.away,
            Vec::new(),
        ));
        entry.2.extend(outcome);
    }
    series
}

/// The winner and loser of a finished elimination series (draws replayed, majority wins).
fn series_winner(best_of: u8, home: EntrantId, away: EntrantId, games: &[GameOutcome]) -> (EntrantId, EntrantId) {
    let (mut home_wins, mut away_wins) = (0, 0);
    for outcome in games {
        match outcome {
            GameOutcome::Played { home_score, away_score } if home_score > away_score => home_wins += 1,
            GameOutcome::Played { home_score, away_score } if home_score < away_score => away_wins += 1,
            _ => {}
        }
    }
    let majority = best_of / 2 + 1;
    assert!(home_wins == majority || away_wins == majority, "series ended without a majority: {games:?}");
    if home_wins > away_wins { (home, away) } else { (away, home) }
}

fn check_ranks(tournament: &Tournament, n: usize) {
    let standings = tournament.standings();
    let ranks: Vec<u32> = standings.iter().map(|s| s.rank).collect();
    assert_eq!(ranks, (1..=n as u32).collect::<Vec<_>>());
    let ids: BTreeSet<EntrantId> = standings.iter().map(|s| s.entrant).collect();
    let expected: BTreeSet<EntrantId> = tournament.seeds().iter().map(|e| e.id).collect();
    assert_eq!(ids, expected, "standings are a permutation of the entrants");
    if let Some(champion) = tournament.champion() {
        assert_eq!(standings[0].entrant, champion);
    }
}

fn check_determinism(rules: &Rules, n: usize, inputs: &[Input], tournament: &Tournament) {
    let again = replay(rules.clone(), entrants(n), inputs).expect("replay accepts the same inputs");
    assert_eq!(&again, tournament);
    assert_eq!(again.games(), tournament.games());
    assert_eq!(again.standings(), tournament.standings());
    assert_eq!(again.render(), tournament.render());
    let json = serde_json::to_string(tournament).expect("serializes");
    assert_eq!(json, serde_json::to_string(&again).expect("serializes"));
    let back: Tournament = serde_json::from_str(&json).expect("deserializes by replay");
    assert_eq!(&back, tournament);
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 40, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn single_elimination_plays_n_minus_1_series(n in 2usize..=128, third_place: bool, bo3: bool, rng_seed: u64) {
        let best_of = if bo3 { 3 } else { 1 };
        let rules = one_stage(Format::SingleElimination { third_place }, best_of);
        let mut tournament = Tournament::new(rules.clone(), entrants(n)).expect("valid rules");
        let mut rng = XorShift::new(rng_seed);
        let inputs = play_out(&mut tournament, &mut rng);
        prop_assert!(tournament.is_finished());
        let series = series_of(&tournament);
        let size = n.next_power_of_two();
        let final_round = size.trailing_zeros() as u16 - 1;
        let third_played = series.keys().any(|k| k.1 == final_round && k.2 == 1);
        prop_assert_eq!(series.len(), n - 1 + usize::from(third_played));
        // More than half the positions hold entrants, so both semi-finals are real series from 4 on.
        prop_assert_eq!(third_played, third_place && n >= 4);
        // Only the top seeds get byes: who does not play in round 1 is seeds 1..=size-n.
        let in_round_1: BTreeSet<EntrantId> =
            series.iter().filter(|(k, _)| k.1 == 0).flat_map(|(_, s)| [s.0, s.1]).collect();
        let byes: BTreeSet<EntrantId> = tournament.seeds().iter().map(|e| e.id).filter(|id| !in_round_1.contains(id)).collect();
        prop_assert_eq!(byes, (1..=(size - n) as u64).map(seed).collect::<BTreeSet<_>>());
        // Each entrant loses at most one series outside the third-place match; the champion none.
        let mut losses: BTreeMap<EntrantId, u32> = BTreeMap::new();
        for (key, (home, away, games)) in &series {
            let (_, loser) = series_winner(best_of, *home, *away, games);
            if !(key.1 == final_round && key.2 == 1) {
                *losses.entry(loser).or_default() += 1;
            }
        }
        prop_assert_eq!(losses.len(), n - 1);
        prop_assert!(losses.values().all(|&l| l == 1));
        prop_assert!(!losses.contains_key(&tournament.champion().expect("a champion")));
        check_ranks(&tournament, n);
        check_determinism(&rules, n, &inputs, &tournament);
    }

    #[test]
    fn double_elimination_routes_every_loser_twice(n in 2usize..=128, reset: bool, bo3: bool, rng_seed: u64) {
        let best_of = if bo3 { 3 } else { 1 };
        let rules = one_stage(Format::DoubleElimination { grand_final_reset: reset }, best_of);
        let mut tournament = Tournament::new(rules.clone(), entrants(n)).expect("valid rules");
        let mut rng = XorShift::new(rng_seed);
        let inputs = play_out(&mut tournament, &mut rng);
        prop_assert!(tournament.is_finished());
        let champion = tournament.champion().expect("a champion");
        let series = series_of(&tournament);
        let mut losses: BTreeMap<EntrantId, u32> = BTreeMap::new();
        for (home, away, games) in series.values() {
            let (_, loser) = series_winner(best_of, *home, *away, games);
            *losses.entry(loser).or_default() += 1;
        }
        let champion_losses = losses.get(&champion).copied().unwrap_or(0);
        prop_assert!(champion_losses <= 1);
        let runner_up = tournament.standings()[1].entrant;
        for entrant in tournament.seeds() {
            if entrant.id == champion {
                continue;
            }
            let lost = losses.get(&entrant.id).copied().unwrap_or(0);
            // Everyone but the champion goes out on their second loss. Without a reset the
            // runner-up can go out on a first loss: the grand final it lost from the winners side.
            if !reset && entrant.id == runner_up && champion_losses == 1 {
                prop_assert_eq!(lost, 1, "runner-up {}", entrant.id);
            } else {
                prop_assert_eq!(lost, 2, "entrant {}", entrant.id);
            }
        }
        let expected = if reset && champion_losses == 1 { 2 * n - 1 } else { 2 * n - 2 };
        prop_assert_eq!(series.len(), expected);
        check_ranks(&tournament, n);
        check_determinism(&rules, n, &inputs, &tournament);
    }

    #[test]
    fn round_robin_pairs_everyone_once(n in 2usize..=64, bo3: bool, rng_seed: u64) {
        let best_of = if bo3 { 3 } else { 1 };
        let rules = one_stage(Format::RoundRobin, best_of);
        let mut tournament = Tournament::new(rules.clone(), entrants(n)).expect("valid rules");
        let mut rng = XorShift::new(rng_seed);
        let inputs = play_out(&mut tournament, &mut rng);
        prop_assert!(tournament.is_finished());
        let series = series_of(&tournament);
        prop_assert_eq!(series.len(), n * (n - 1) / 2);
        let pairs: BTreeSet<(EntrantId, EntrantId)> =
            series.values().map(|(h, a, _)| (*h.min(a), *h.max(a))).collect();
        prop_assert_eq!(pairs.len(), n * (n - 1) / 2, "every pair meets exactly once");
        // Nobody plays twice in a round; with an odd count exactly one sits out each round.
        let mut per_round: BTreeMap<u16, Vec<EntrantId>> = BTreeMap::new();
        for (key, (home, away, _)) in &series {
            per_round.entry(key.1).or_default().extend([*home, *away]);
        }
        prop_assert_eq!(per_round.len(), n - 1 + n % 2);
        for players in per_round.values() {
            let distinct: BTreeSet<_> = players.iter().collect();
            prop_assert_eq!(distinct.len(), players.len());
            prop_assert_eq!(players.len(), n - n % 2);
        }
        check_ranks(&tournament, n);
        check_determinism(&rules, n, &inputs, &tournament);
    }

    #[test]
    fn swiss_pairs_fairly(n in 2usize..=128, rounds_pick in 1usize..=12, bo3: bool, rng_seed: u64) {
        let rounds = rounds_pick.min(n);
        let best_of = if bo3 { 3 } else { 1 };
        let rules = one_stage(Format::Swiss { rounds: rounds as u16 }, best_of);
        let mut tournament = Tournament::new(rules.clone(), entrants(n)).expect("valid rules");
        let mut rng = XorShift::new(rng_seed);
        let inputs = play_out(&mut tournament, &mut rng);
        prop_assert!(tournament.is_finished());
        let series = series_of(&tournament);
        prop_assert_eq!(series.len(), rounds * (n / 2));
        let mut byes: BTreeMap<EntrantId, u32> = BTreeMap::new();
        for round in 0..rounds as u16 {
            let playing: Vec<EntrantId> =
                series.iter().filter(|(k, _)| k.1 == round).flat_map(|(_, s)| [s.0, s.1]).collect();
            let distinct: BTreeSet<EntrantId> = playing.iter().copied().collect();
            prop_assert_eq!(distinct.len(), playing.len(), "nobody plays twice in round {}", round);
            for entrant in tournament.seeds() {
                if !distinct.contains(&entrant.id) {
                    *byes.entry(entrant.id).or_default() += 1;
                }
            }
        }
        prop_assert_eq!(byes.values().sum::<u32>() as usize, if n % 2 == 1 { rounds } else { 0 });
        prop_assert!(byes.values().all(|&b| b == 1), "nobody gets two byes: {:?}", byes);
        if n >= 8 && 2 * rounds < n {
            let pairs: BTreeSet<(EntrantId, EntrantId)> =
                series.values().map(|(h, a, _)| (*h.min(a), *h.max(a))).collect();
            prop_assert_eq!(pairs.len(), series.len(), "no rematch while avoidable");
        }
        let standings = tournament.standings();
        for pair in standings.windows(2) {
            prop_assert!(pair[0].points >= pair[1].points, "ranked by points first");
        }
        let points: u32 = standings.iter().map(|s| s.points).sum();
        prop_assert_eq!(points as usize, 2 * rounds * (n / 2) + 2 * (rounds * (n % 2)), "2 points per series or bye");
        check_ranks(&tournament, n);
        check_determinism(&rules, n, &inputs, &tournament);
    }
}

fn any_format(pick: u8, n: usize) -> Format {
    match pick % 6 {
        0 => Format::SingleElimination { third_place: false },
        1 => Format::SingleElimination { third_place: true },
        2 => Format::DoubleElimination { grand_final_reset: false },
        3 => Format::DoubleElimination { grand_final_reset: true },
        4 => Format::Swiss { rounds: n.min(6) as u16 },
        _ => Format::RoundRobin,
    }
}

proptest! {
    #![proptest_config(config())]

    /// Forfeits, double forfeits, withdrawals, disqualifications, corrections and refused
    /// inputs in every format: the tournament still finishes, a refused input changes
    /// nothing, ranks stay total and the history replays to the same state.
    #[test]
    fn every_format_survives_forfeits_withdrawals_and_corrections(
        n in 2usize..=48,
        pick: u8,
        bo3: bool,
        rng_seed: u64,
    ) {
        let rules = one_stage(any_format(pick, n), if bo3 { 3 } else { 1 });
        let mut tournament = Tournament::new(rules.clone(), entrants(n)).expect("valid rules");
        let mut rng = XorShift::new(rng_seed);
        let mut inputs = Vec::new();
        let mut done: Vec<GameKey> = Vec::new();
        for _ in 0..100_000 {
            let ready = tournament.ready_games();
            if ready.is_empty() {
                break;
            }
            for game in ready {
                let input = match rng.below(40) {
                    0 => Input::Withdraw { entrant: seed(1 + rng.below(n as u64)) },
                    1 => Input::Disqualify { entrant: seed(1 + rng.below(n as u64)), reason: "test".into() },
                    2 => result(game.key, GameOutcome::DoubleForfeit),
                    3 | 4 => result(game.key, GameOutcome::Forfeit { winner: if rng.below(2) == 0 { Side::Home } else { Side::Away } }),
                    5 if !done.is_empty() => Input::Correct {
                        key: done[rng.below(done.len() as u64) as usize],
                        outcome: random_outcome(&mut rng),
                        reason: "test".into(),
                    },
                    6 if !done.is_empty() => result(done[rng.below(done.len() as u64) as usize], random_outcome(&mut rng)),
                    _ => result(game.key, random_outcome(&mut rng)),
                };
                let before = tournament.clone();
                match tournament.apply(&input) {
                    Ok(()) => {
                        if let Input::Result { key, .. } = &input {
                            done.push(*key);
                        }
                        inputs.push(input);
                    }
                    Err(_) => prop_assert_eq!(&tournament, &before, "a refused input changes nothing"),
                }
            }
        }
        prop_assert!(tournament.is_finished(), "{}", tournament.render());
        prop_assert!(tournament.ready_games().is_empty());
        check_ranks(&tournament, n);
        check_determinism(&rules, n, &inputs, &tournament);
    }
}

fn key(stage: u8, round: u16, table: u16, game: u8) -> GameKey {
    GameKey { stage, round, table, game }
}

/// The first-round pairs as 1-based seeds.
fn seed_pairs(games: &[Game]) -> Vec<(u64, u64)> {
    games.iter().map(|g| (g.home - 999, g.away - 999)).collect()
}

#[test]
fn eight_entrants_are_placed_so_seed_1_meets_seed_8() {
    let tournament =
        Tournament::new(one_stage(Format::SingleElimination { third_place: false }, 1), entrants(8)).unwrap();
    // 1 and 2 are in different halves, so they can only meet in the final.
    assert_eq!(seed_pairs(&tournament.ready_games()), vec![(1, 8), (4, 5), (2, 7), (3, 6)]);
    let tables: Vec<u16> = tournament.ready_games().iter().map(|g| g.key.table).collect();
    assert_eq!(tables, vec![0, 1, 2, 3]);
}

#[test]
fn six_entrants_give_the_top_two_seeds_byes() {
    let mut tournament =
        Tournament::new(one_stage(Format::SingleElimination { third_place: false }, 1), entrants(6)).unwrap();
    let ready = tournament.ready_games();
    assert_eq!(seed_pairs(&ready), vec![(4, 5), (3, 6)]);
    assert_eq!(ready[0].key, key(0, 0, 1, 0));
    assert_eq!(ready[1].key, key(0, 0, 3, 0));
    // Seed 5 beats 4 and meets seed 1, who had the bye.
    tournament.apply(&result(ready[0].key, played(0, 3))).unwrap();
    let ready = tournament.ready_games();
    assert_eq!(seed_pairs(&ready), vec![(3, 6), (1, 5)], "key order: round 1 before round 2");
    assert_eq!(ready[1].key, key(0, 1, 0, 0));
}

#[test]
fn rating_seeding_sorts_by_rating_then_id() {
    let given = vec![
        Entrant { id: 7, name: "low".into(), rating: 1200 },
        Entrant { id: 9, name: "tie-b".into(), rating: 1800 },
        Entrant { id: 3, name: "tie-a".into(), rating: 1800 },
        Entrant { id: 1, name: "top".into(), rating: 2100 },
    ];
    let rules = Rules { seeding: Seeding::Rating, ..one_stage(Format::RoundRobin, 1) };
    let tournament = Tournament::new(rules, given.clone()).unwrap();
    let order: Vec<u64> = tournament.seeds().iter().map(|e| e.id).collect();
    assert_eq!(order, vec![1, 3, 9, 7]);
    let rules = one_stage(Format::RoundRobin, 1);
    let tournament = Tournament::new(rules, given).unwrap();
    let order: Vec<u64> = tournament.seeds().iter().map(|e| e.id).collect();
    assert_eq!(order, vec![7, 9, 3, 1], "given order is kept");
}

#[test]
fn round_robin_follows_the_berger_table_for_six() {
    let mut tournament = Tournament::new(one_stage(Format::RoundRobin, 1), entrants(6)).unwrap();
    let expected = [
        vec![(1, 6), (2, 5), (3, 4)],
        vec![(6, 4), (5, 3), (1, 2)],
        vec![(2, 6), (3, 1), (4, 5)],
        vec![(6, 5), (1, 4), (2, 3)],
        vec![(3, 6), (4, 2), (5, 1)],
    ];
    for (round, pairs) in expected.iter().enumerate() {
        let ready = tournament.ready_games();
        assert_eq!(&seed_pairs(&ready), pairs, "round {}", round + 1);
        assert!(ready.iter().all(|g| g.key.round == round as u16));
        for game in ready {
            tournament.apply(&result(game.key, played(1, 0))).unwrap();
        }
    }
    assert!(tournament.is_finished());
}

#[test]
fn round_robin_with_five_gives_one_bye_per_round() {
    let mut tournament = Tournament::new(one_stage(Format::RoundRobin, 1), entrants(5)).unwrap();
    // Seed 6 is the dummy of the six-table: whoever meets it sits out.
    let expected =
        [vec![(2, 5), (3, 4)], vec![(5, 3), (1, 2)], vec![(3, 1), (4, 5)], vec![(1, 4), (2, 3)], vec![(4, 2), (5, 1)]];
    for pairs in expected {
        let ready = tournament.ready_games();
        assert_eq!(seed_pairs(&ready), pairs);
        assert_eq!(ready[0].key.table, 0, "tables are numbered over real games only");
        for game in ready {
            tournament.apply(&result(game.key, played(2, 1))).unwrap();
        }
    }
    assert!(tournament.is_finished());
}

/// Plays a round-robin of four (seeds A=1..D=4) with scripted results.
/// (home seed, away seed) and their scores.
type Scripted = ((u64, u64), (u32, u32));

fn scripted_round_robin(results: &[Scripted]) -> Tournament {
    let mut tournament = Tournament::new(one_stage(Format::RoundRobin, 1), entrants(4)).unwrap();
    while !tournament.is_finished() {
        for game in tournament.ready_games() {
            let (home, away) = (game.home - 999, game.away - 999);
            let score = results
                .iter()
                .find_map(|&((a, b), (sa, sb))| {
                    if (a, b) == (home, away) {
                        Some((sa, sb))
                    } else if (b, a) == (home, away) {
                        Some((sb, sa))
                    } else {
                        None
                    }
                })
                .expect("every pair is scripted");
            tournament.apply(&result(game.key, played(score.0, score.1))).unwrap();
        }
    }
    tournament
}

#[test]
fn head_to_head_beats_point_difference_for_a_tied_pair() {
    // A and B both have 4 points and equal Buchholz; B has the better point difference but A
    // beat B. C and D both have 2; C has the better difference but D beat C.
    let tournament = scripted_round_robin(&[
        ((1, 2), (1, 0)),
        ((3, 4), (0, 1)),
        ((1, 3), (0, 1)),
        ((2, 4), (10, 0)),
        ((1, 4), (1, 0)),
        ((2, 3), (1, 0)),
    ]);
    let standings = tournament.standings();
    let order: Vec<u64> = standings.iter().map(|s| s.entrant - 999).collect();
    assert_eq!(order, vec![1, 2, 4, 3]);
    assert_eq!((standings[0].points, standings[1].points), (4, 4));
    assert_eq!((standings[0].buchholz, standings[1].buchholz), (8, 8));
    assert_eq!((standings[0].point_difference, standings[1].point_difference), (1, 10));
    assert_eq!(tournament.champion(), Some(seed(1)));
}

#[test]
fn point_difference_then_seed_break_remaining_ties() {
    // Every game drawn except where noted: all level on points and Buchholz, no head-to-head.
    let tournament = scripted_round_robin(&[
        ((1, 2), (0, 0)),
        ((3, 4), (0, 0)),
        ((1, 3), (0, 0)),
        ((2, 4), (0, 0)),
        ((1, 4), (0, 0)),
        ((2, 3), (0, 0)),
    ]);
    let order: Vec<u64> = tournament.standings().iter().map(|s| s.entrant - 999).collect();
    assert_eq!(order, vec![1, 2, 3, 4], "all level: seed order");
    // A three-way tie (a cycle: 1 beats 2, 2 beats 3, 3 beats 1) skips head-to-head: point
    // difference decides, then seed.
    let tournament = scripted_round_robin(&[
        ((1, 2), (1, 0)),
        ((2, 3), (5, 0)),
        ((3, 1), (3, 0)),
        ((4, 1), (0, 1)),
        ((4, 2), (0, 1)),
        ((4, 3), (0, 1)),
    ]);
    // 1, 2 and 3 each have 4 points and Buchholz 8; differences 2: +5, 1: -1, 3: -1.
    let standings = tournament.standings();
    let order: Vec<u64> = standings.iter().map(|s| s.entrant - 999).collect();
    let differences: Vec<i64> = standings.iter().map(|s| s.point_difference).collect();
    assert_eq!(order, vec![2, 1, 3, 4]);
    assert_eq!(differences, vec![5, -1, -1, -3]);
}

#[test]
fn buchholz_comes_before_point_difference_and_seed() {
    let mut tournament = Tournament::new(one_stage(Format::Swiss { rounds: 2 }, 1), entrants(4)).unwrap();
    let round_1 = tournament.ready_games();
    // The top half of the score group meets the bottom half.
    assert_eq!(seed_pairs(&round_1), vec![(1, 3), (2, 4)]);
    tournament.apply(&result(round_1[0].key, played(10, 0))).unwrap();
    tournament.apply(&result(round_1[1].key, played(1, 0))).unwrap();
    let round_2 = tournament.ready_games();
    assert_eq!(
        round_2.iter().map(|g| (g.home.min(g.away) - 999, g.home.max(g.away) - 999)).collect::<Vec<_>>(),
        vec![(1, 2), (3, 4)]
    );
    tournament.apply(&result(round_2[0].key, played(2, 2))).unwrap();
    let (home, _) = (round_2[1].home - 999, round_2[1].away - 999);
    let four_wins = if home == 4 { played(1, 0) } else { played(0, 1) };
    tournament.apply(&result(round_2[1].key, four_wins)).unwrap();
    assert!(tournament.is_finished());
    let standings = tournament.standings();
    // 1 and 2 have 3 points; 1 has the better difference and seed, but 2 met stronger
    // opponents (Buchholz 5 against 3).
    assert_eq!(standings.iter().map(|s| s.entrant - 999).collect::<Vec<_>>(), vec![2, 1, 4, 3]);
    assert_eq!((standings[0].buchholz, standings[1].buchholz), (5, 3));
    assert!(standings[1].point_difference > standings[0].point_difference);
    assert_eq!(tournament.champion(), Some(seed(2)));
}

#[test]
fn best_of_three_readies_one_game_at_a_time() {
    let mut tournament =
        Tournament::new(one_stage(Format::SingleElimination { third_place: false }, 3), entrants(2)).unwrap();
    assert_eq!(tournament.ready_games().iter().map(|g| g.key).collect::<Vec<_>>(), vec![key(0, 0, 0, 0)]);
    assert_eq!(
        tournament.apply(&result(key(0, 0, 0, 1), played(1, 0))),
        Err(ApplyError::NotReady { key: key(0, 0, 0, 1) })
    );
    tournament.apply(&result(key(0, 0, 0, 0), played(3, 1))).unwrap();
    assert_eq!(
        tournament.apply(&result(key(0, 0, 0, 0), played(3, 1))),
        Err(ApplyError::AlreadyHasResult { key: key(0, 0, 0, 0) }),
        "a duplicate delivery is refused"
    );
    // A drawn elimination game is followed by another game.
    tournament.apply(&result(key(0, 0, 0, 1), played(2, 2))).unwrap();
    tournament.apply(&result(key(0, 0, 0, 2), played(0, 1))).unwrap();
    assert!(!tournament.is_finished());
    tournament.apply(&result(key(0, 0, 0, 3), played(5, 0))).unwrap();
    assert!(tournament.is_finished());
    assert_eq!(tournament.champion(), Some(seed(1)));
    assert_eq!(
        tournament.apply(&result(key(0, 0, 0, 4), played(1, 0))),
        Err(ApplyError::SeriesFinished { key: key(0, 0, 0, 4) })
    );
    assert_eq!(tournament.games().len(), 4);
    let standings = tournament.standings();
    assert_eq!((standings[0].wins, standings[0].losses, standings[0].point_difference), (1, 0, 6));
    assert!(tournament.render().contains("p1 (1) 2-1 p2 (2): p1 wins"), "{}", tournament.render());
}

#[test]
fn best_of_three_in_swiss_can_end_drawn() {
    let mut tournament = Tournament::new(one_stage(Format::Swiss { rounds: 1 }, 3), entrants(2)).unwrap();
    for game in 0..3 {
        let outcome = if game == 1 {
            played(0, 0)
        } else if game == 0 {
            played(1, 0)
        } else {
            played(0, 1)
        };
        tournament.apply(&result(key(0, 0, 0, game), outcome)).unwrap();
    }
    assert!(tournament.is_finished());
    let standings = tournament.standings();
    assert!(standings.iter().all(|s| s.draws == 1 && s.points == 1));
}

/// A four-player single elimination with semis 1–4 and 2–3.
fn four_player_cup() -> Tournament {
    Tournament::new(one_stage(Format::SingleElimination { third_place: true }, 1), entrants(4)).unwrap()
}

#[test]
fn corrections_repair_the_bracket_until_a_dependent_game_has_a_result() {
    let mut tournament = four_player_cup();
    let (semi_1, semi_2, final_game) = (key(0, 0, 0, 0), key(0, 0, 1, 0), key(0, 1, 0, 0));
    assert_eq!(
        tournament.apply(&Input::Correct { key: semi_1, outcome: played(0, 1), reason: "typo".into() }),
        Err(ApplyError::NoResultToCorrect { key: semi_1 })
    );
    tournament.apply(&result(semi_1, played(2, 0))).unwrap();
    tournament.apply(&result(semi_2, played(2, 0))).unwrap();
    assert_eq!(seed_pairs(&tournament.ready_games()), vec![(1, 2), (4, 3)]);
    // The final and third-place match are ready but unplayed: the correction re-pairs them.
    let fix = Input::Correct { key: semi_1, outcome: played(0, 2), reason: "scores swapped".into() };
    tournament.apply(&fix).unwrap();
    assert_eq!(seed_pairs(&tournament.ready_games()), vec![(4, 2), (1, 3)]);
    assert_eq!(
        tournament.apply(&fix),
        Err(ApplyError::CorrectionUnchanged { key: semi_1 }),
        "the same correction twice changes nothing"
    );
    tournament.apply(&result(final_game, played(1, 0))).unwrap();
    let before = tournament.clone();
    let late = Input::Correct { key: semi_1, outcome: played(2, 0), reason: "again".into() };
    assert_eq!(tournament.apply(&late), Err(ApplyError::CorrectionTooLate { key: semi_1, dependent: final_game }));
    assert_eq!(tournament, before, "a refused input changes nothing");
    // The final itself can still be corrected; it changes the champion.
    tournament.apply(&result(key(0, 1, 1, 0), played(1, 0))).unwrap();
    assert!(tournament.is_finished());
    assert_eq!(tournament.champion(), Some(seed(4)));
    tournament.apply(&Input::Correct { key: final_game, outcome: played(0, 1), reason: "cheat".into() }).unwrap();
    assert_eq!(tournament.champion(), Some(seed(2)));
    let order: Vec<u64> = tournament.standings().iter().map(|s| s.entrant - 999).collect();
    assert_eq!(order, vec![2, 4, 1, 3], "third-place winner is third");
    // The whole history, corrections included, replays to the same state.
    let inputs: Vec<Input> =
        serde_json::from_value(serde_json::to_value(&tournament).unwrap()["inputs"].clone()).unwrap();
    assert_eq!(inputs.len(), 6);
    assert_eq!(replay(tournament.rules().clone(), entrants(4), &inputs).unwrap(), tournament);
}

#[test]
fn a_swiss_correction_is_too_late_once_the_next_round_has_a_result() {
    let mut tournament = Tournament::new(one_stage(Format::Swiss { rounds: 2 }, 1), entrants(4)).unwrap();
    for game in tournament.ready_games() {
        tournament.apply(&result(game.key, played(1, 0))).unwrap();
    }
    let round_2 = tournament.ready_games();
    let fix = Input::Correct { key: key(0, 0, 0, 0), outcome: played(0, 1), reason: "swap".into() };
    // Round 2 is paired but unplayed: the correction re-pairs it.
    tournament.apply(&fix).unwrap();
    let repaired = tournament.ready_games();
    assert_ne!(repaired, round_2);
    tournament.apply(&result(repaired[0].key, played(1, 0))).unwrap();
    let back = Input::Correct { key: key(0, 0, 0, 0), outcome: played(1, 0), reason: "undo".into() };
    assert_eq!(
        tournament.apply(&back),
        Err(ApplyError::CorrectionTooLate { key: key(0, 0, 0, 0), dependent: repaired[0].key })
    );
}

#[test]
fn a_withdrawal_forfeits_pending_and_future_games() {
    let mut tournament = four_player_cup();
    tournament.apply(&Input::Withdraw { entrant: seed(4) }).unwrap();
    // Semi 1 (1–4) is forfeited at once; only semi 2 is ready.
    assert_eq!(seed_pairs(&tournament.ready_games()), vec![(2, 3)]);
    let games = tournament.games();
    assert_eq!(games[0].1, Some(GameOutcome::Forfeit { winner: Side::Home }));
    assert_eq!(
        tournament.apply(&Input::Correct { key: key(0, 0, 0, 0), outcome: played(1, 0), reason: "no".into() }),
        Err(ApplyError::CorrectionOfWithdrawal { key: key(0, 0, 0, 0) })
    );
    assert_eq!(
        tournament.apply(&Input::Withdraw { entrant: seed(4) }),
        Err(ApplyError::AlreadyOut { entrant: seed(4) })
    );
    assert_eq!(tournament.apply(&Input::Withdraw { entrant: 5 }), Err(ApplyError::UnknownEntrant { entrant: 5 }));
    // Seed 3 is disqualified mid-series of nothing: its semi is forfeited, then the
    // third-place match (4 against 3, both out) is a double forfeit.
    tournament.apply(&Input::Disqualify { entrant: seed(3), reason: "cheating".into() }).unwrap();
    let games = tournament.games();
    assert_eq!(games[1].1, Some(GameOutcome::Forfeit { winner: Side::Home }));
    assert_eq!(games.last().unwrap().1, Some(GameOutcome::DoubleForfeit));
    assert_eq!(seed_pairs(&tournament.ready_games()), vec![(1, 2)]);
    let standings = tournament.standings();
    assert!(standings.iter().filter(|s| s.entrant == seed(3) || s.entrant == seed(4)).all(|s| s.eliminated));
}

#[test]
fn a_withdrawn_swiss_player_is_no_longer_paired() {
    let mut tournament = Tournament::new(one_stage(Format::Swiss { rounds: 3 }, 1), entrants(6)).unwrap();
    for game in tournament.ready_games() {
        tournament.apply(&result(game.key, played(1, 0))).unwrap();
    }
    tournament.apply(&Input::Withdraw { entrant: seed(2) }).unwrap();
    while !tournament.is_finished() {
        let ready = tournament.ready_games();
        assert!(!ready.is_empty());
        assert!(ready.iter().all(|g| g.home != seed(2) && g.away != seed(2)));
        assert_eq!(ready.len(), 2, "five players: two games and a bye");
        for game in ready {
            tournament.apply(&result(game.key, played(0, 1))).unwrap();
        }
    }
    assert_eq!(tournament.apply(&Input::Withdraw { entrant: seed(1) }), Err(ApplyError::Finished));
}

#[test]
fn a_double_forfeit_gives_the_next_opponent_a_walkover() {
    let mut tournament =
        Tournament::new(one_stage(Format::SingleElimination { third_place: false }, 1), entrants(4)).unwrap();
    tournament.apply(&result(key(0, 0, 0, 0), GameOutcome::DoubleForfeit)).unwrap();
    tournament.apply(&result(key(0, 0, 1, 0), played(0, 3))).unwrap();
    assert!(tournament.is_finished(), "the final is a walkover");
    assert_eq!(tournament.champion(), Some(seed(3)));
    assert_eq!(tournament.games().len(), 2);
    let standings = tournament.standings();
    let one = standings.iter().find(|s| s.entrant == seed(1)).unwrap();
    assert_eq!((one.losses, one.eliminated), (1, true));
    assert!(tournament.render().contains("walkover"), "{}", tournament.render());
}

#[test]
fn double_elimination_plays_a_reset_when_the_losers_side_wins() {
    let rules = one_stage(Format::DoubleElimination { grand_final_reset: true }, 1);
    let mut tournament = Tournament::new(rules, entrants(4)).unwrap();
    // The home side wins everything except the grand final.
    let mut grand_finals = 0;
    while !tournament.is_finished() {
        for game in tournament.ready_games() {
            // Grand final is round 3k-2 = 4 for a bracket of 4, its reset 5.
            let outcome = if game.key.round == 4 { played(0, 1) } else { played(1, 0) };
            grand_finals += usize::from(game.key.round >= 4);
            tournament.apply(&result(game.key, outcome)).unwrap();
        }
    }
    assert_eq!(grand_finals, 2);
    assert_eq!(tournament.games().len(), 2 * 4 - 1);
    // Winners: 1 beats 4, 2 beats 3, 1 beats 2. Losers: 4 beats 3, 4 beats 2. Grand final:
    // 4 (away) beats 1; reset: 1 (home, the winners-bracket side) beats 4.
    assert_eq!(tournament.champion(), Some(seed(1)));
    let order: Vec<u64> = tournament.standings().iter().map(|s| s.entrant - 999).collect();
    assert_eq!(order, vec![1, 4, 2, 3]);
    let text = tournament.render();
    assert!(text.contains("Grand final reset") && text.contains("Losers round 2"), "{text}");
}

#[test]
fn swiss_then_top_eight_single_elimination() {
    let rules = Rules {
        stages: vec![
            Stage { format: Format::Swiss { rounds: 5 }, best_of: 1, advance: Some(8) },
            Stage { format: Format::SingleElimination { third_place: false }, best_of: 3, advance: None },
        ],
        seeding: Seeding::Rating,
    };
    let mut tournament = Tournament::new(rules, entrants(16)).unwrap();
    let mut rng = XorShift::new(42);
    play_out(&mut tournament, &mut rng);
    assert!(tournament.is_finished());
    let games = tournament.games();
    let swiss_series: BTreeSet<_> =
        games.iter().filter(|(g, _)| g.key.stage == 0).map(|(g, _)| (g.key.round, g.key.table)).collect();
    let cup_series: BTreeSet<_> =
        games.iter().filter(|(g, _)| g.key.stage == 1).map(|(g, _)| (g.key.round, g.key.table)).collect();
    assert_eq!((swiss_series.len(), cup_series.len()), (5 * 8, 7));
    // The cup's first round pairs Swiss rank 1 with rank 8.
    let champion = tournament.champion().unwrap();
    let standings = tournament.standings();
    assert_eq!(standings[0].entrant, champion);
    assert!(standings[8..].iter().all(|s| s.eliminated), "those who did not advance are out");
    let text = tournament.render();
    assert!(
        text.contains("Stage 1 of 2: Swiss, 5 rounds") && text.contains("Stage 2 of 2") && text.contains("Champion"),
        "{text}"
    );
}

#[test]
fn bad_rules_are_refused_with_reasons() {
    let stage = |format, best_of, advance| Stage { format, best_of, advance };
    let rules = |stages| Rules { stages, seeding: Seeding::Given };
    let cases = [
        (rules(vec![]), 4, RulesError::NoStages),
        (one_stage(Format::RoundRobin, 2), 4, RulesError::BestOf { stage: 1, best_of: 2 }),
        (one_stage(Format::RoundRobin, 1), 1, RulesError::EntrantCount { count: 1 }),
        (one_stage(Format::Swiss { rounds: 5 }, 1), 4, RulesError::SwissRounds { stage: 1, rounds: 5, entrants: 4 }),
        (rules(vec![stage(Format::RoundRobin, 1, Some(2))]), 4, RulesError::AdvanceMissing { stage: 1 }),
        (
            rules(vec![stage(Format::RoundRobin, 1, Some(5)), stage(Format::RoundRobin, 1, None)]),
            4,
            RulesError::AdvanceOutOfRange { stage: 1, advance: 5, entrants: 4 },
        ),
    ];
    for (rules, n, expected) in cases {
        assert_eq!(Tournament::new(rules, entrants(n)), Err(expected));
    }
    let mut twins = entrants(3);
    twins[2].id = twins[0].id;
    assert_eq!(
        Tournament::new(one_stage(Format::RoundRobin, 1), twins),
        Err(RulesError::DuplicateEntrant { id: 1000 })
    );
    assert!(RulesError::SwissRounds { stage: 1, rounds: 5, entrants: 4 }.to_string().contains("1 to 4 rounds"));
}

#[test]
fn serde_shapes_and_key_text_are_stable() {
    let json = |value: serde_json::Value| value.to_string();
    assert_eq!(
        json(serde_json::to_value(Format::SingleElimination { third_place: true }).unwrap()),
        r#"{"third_place":true,"type":"single_elimination"}"#
    );
    assert_eq!(json(serde_json::to_value(Format::RoundRobin).unwrap()), r#"{"type":"round_robin"}"#);
    assert_eq!(
        serde_json::to_string(&Input::Result {
            key: key(0, 1, 2, 0),
            outcome: GameOutcome::Forfeit { winner: Side::Away }
        })
        .unwrap(),
        r#"{"type":"result","key":{"stage":0,"round":1,"table":2,"game":0},"outcome":{"type":"forfeit","winner":"away"}}"#
    );
    assert_eq!(serde_json::to_string(&Seeding::Rating).unwrap(), r#""rating""#);
    assert_eq!(key(0, 1, 2, 0).to_string(), "s1-r2-t3-g1");
    assert_eq!("s1-r2-t3-g1".parse::<GameKey>(), Ok(key(0, 1, 2, 0)));
    for bad in ["s0-r1-t1-g1", "s1-r2-t3", "s1-r2-t3-g1-x", "r1-s1-t1-g1", "s1-r+2-t3-g1", "s999-r1-t1-g1"] {
        assert!(bad.parse::<GameKey>().is_err(), "{bad}");
    }
}

#[test]
fn the_swiss_bye_goes_to_the_lowest_ranked_player_without_one_and_counts_as_a_win() {
    let mut tournament = Tournament::new(one_stage(Format::Swiss { rounds: 2 }, 1), entrants(5)).unwrap();
    let round_1 = tournament.ready_games();
    assert!(round_1.iter().all(|g| g.home != seed(5) && g.away != seed(5)), "the last seed has round 1's bye");
    for game in round_1 {
        tournament.apply(&result(game.key, played(1, 0))).unwrap();
    }
    let standings = tournament.standings();
    let five = standings.iter().find(|s| s.entrant == seed(5)).unwrap();
    assert_eq!((five.wins, five.points, five.buchholz, five.point_difference), (1, 2, 0, 0));
    // After round 1, seeds 1, 2 and 5 have 2 points; 3 and 4 have none, equal Buchholz (2)
    // and point difference (-1), so seed puts 4 lowest.
    let round_2 = tournament.ready_games();
    assert_eq!(round_2.len(), 2);
    let playing: BTreeSet<EntrantId> = round_2.iter().flat_map(|g| [g.home, g.away]).collect();
    assert!(playing.contains(&seed(5)), "nobody gets a second bye");
    assert!(!playing.contains(&seed(4)), "the bye goes to seed 4");
    let four = tournament.standings().into_iter().find(|s| s.entrant == seed(4)).unwrap();
    assert_eq!((four.wins, four.losses, four.points), (1, 1, 2), "the bye is a won series from its pairing on");
}
