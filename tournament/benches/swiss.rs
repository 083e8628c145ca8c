//! Swiss pairing of 1,024 entrants in round 5 (target ≤ 100 ms): four rounds are played
//! with fixed results, then the time is that of the last round-4 result, which ranks the
//! field and pairs round 5 (a minimum-cost perfect matching over 1,024 players). Round 2
//! is measured too: the matching's cost depends on the score structure, and after one round
//! (three large score groups, one rematch to avoid per player) a cost term that favoured
//! repeating round 1's distances once made it five times slower.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rally_tournament::{Entrant, Format, GameOutcome, Input, Rules, Seeding, Stage, Tournament};

/// The tournament just before the last result of round `round` (1-based), and that result.
fn before_pairing(round: u16) -> (Tournament, Input) {
    let n = 1024;
    let entrants: Vec<Entrant> =
        (0..n).map(|i| Entrant { id: i as u64 + 1, name: format!("p{i}"), rating: 1500 + (i * 7919 % 1000) }).collect();
    let rules = Rules {
        stages: vec![Stage { format: Format::Swiss { rounds: 5 }, best_of: 1, advance: None }],
        seeding: Seeding::Rating,
    };
    let mut tournament = Tournament::new(rules, entrants).expect("valid rules");
    let mut counter = 0u32;
    loop {
        let ready = tournament.ready_games();
        let (last_game, others) = ready.split_last().expect("a round is paired only after the previous one is decided");
        for game in others {
            counter = counter.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let input = Input::Result {
                key: game.key,
                outcome: GameOutcome::Played { home_score: counter >> 30, away_score: (counter >> 28) & 3 },
            };
            tournament.apply(&input).expect("ready game");
        }
        let input = Input::Result { key: last_game.key, outcome: GameOutcome::Played { home_score: 1, away_score: 0 } };
        if last_game.key.round + 1 == round {
            return (tournament, input);
        }
        tournament.apply(&input).expect("ready game");
    }
}

fn swiss(c: &mut Criterion) {
    for round in [4, 1] {
        let (before, input) = before_pairing(round);
        c.bench_function(&format!("swiss_pair_round_{}_of_1024", round + 1), |b| {
            b.iter_batched(
                || before.clone(),
                |mut tournament| {
                    tournament.apply(&input).expect("ready game");
                    tournament
                },
                BatchSize::LargeInput,
            );
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = swiss
}
criterion_main!(benches);
