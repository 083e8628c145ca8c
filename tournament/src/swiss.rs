//! Swiss pairing: a minimum-cost perfect matching (the blossom algorithm of
//! `integer-blossom`, a maximum-weight matching underneath) over the players to pair.

use std::collections::{BTreeMap, BTreeSet};

/// Cost of a rematch: above the sum of every other cost term over a whole round, so the
/// matching first minimizes rematches.
const REMATCH_COST: i64 = 1 << 52;
/// Cost per squared point difference: above the sum of every half-group term over a round, so
/// the matching next keeps players within their score group.
const SCORE_COST: i64 = 1 << 20;

/// One player to pair.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    /// Entrant index in seed order.
    pub(crate) entrant: usize,
    /// Stage points so far.
    pub(crate) points: u32,
}

/// Picks the bye and pairs the rest.
///
/// `ranked` are the players still in, best first. With an odd count the bye goes to the
/// lowest-ranked player who has not had one (the lowest-ranked player when all have).
/// The others are paired by minimum total cost, where a pair costs, in order of priority:
/// a rematch; the square of its point difference; and, within one score group, both players
/// being in the same half of it (so the top half of a group meets its bottom half). Pairs come out
/// ordered by their better player's rank; home is whoever has been home less often in the
/// stage, the better-ranked player on equal counts.
pub(crate) fn pair(
    ranked: &[Candidate],
    had_bye: &BTreeSet<usize>,
    played: &BTreeSet<(usize, usize)>,
    home_games: &BTreeMap<usize, u32>,
) -> (Vec<(usize, usize)>, Option<usize>) {
    let mut players: Vec<Candidate> = ranked.to_vec();
    let mut bye = None;
    if players.len() % 2 == 1 {
        let position = players.iter().rposition(|c| !had_bye.contains(&c.entrant)).unwrap_or(players.len() - 1);
        bye = Some(players.remove(position).entrant);
    }
    let n = players.len();
    if n == 0 {
        return (Vec::new(), bye);
    }
    let mut group_size: BTreeMap<u32, usize> = BTreeMap::new();
    for candidate in &players {
        *group_size.entry(candidate.points).or_default() += 1;
    }
    // Players come ranked, so each score group is a contiguous run.
    let mut in_top_half = Vec::with_capacity(n);
    let mut seen_in_group: BTreeMap<u32, usize> = BTreeMap::new();
    for candidate in &players {
        let seen = seen_in_group.entry(candidate.points).or_default();
        in_top_half.push(*seen < group_size.get(&candidate.points).copied().unwrap_or(0) / 2);
        *seen += 1;
    }
    // Who met whom, by position in `players`: one lookup per pair played, not per cell.
    let position: BTreeMap<usize, usize> = players.iter().enumerate().map(|(i, c)| (c.entrant, i)).collect();
    let mut met = vec![false; n * n];
    for (a, b) in played {
        if let (Some(&i), Some(&j)) = (position.get(a), position.get(b)) {
            met[i.min(j) * n + i.max(j)] = true;
        }
    }
    let mut cost = vec![0i64; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let (a, b) = (players[i], players[j]);
            let rematch = if met[i * n + j] { REMATCH_COST } else { 0 };
            let diff = i64::from(a.points) - i64::from(b.points);
            // Within a score group, top half against bottom half costs nothing and any other
            // pair 1. (Asking for an exact distance of g/2 instead made round 2 of 1,024 five
            // times slower: it favours repeating round 1's pairs, which are rematches.)
            let spread = if diff == 0 && in_top_half[i] == in_top_half[j] { 1 } else { 0 };
            cost[i * n + j] = rematch + SCORE_COST * diff * diff + spread;
        }
    }
    // `integer-blossom` keeps its working buffers in a thread-local pool for the next call
    // (about 75 MB once it has paired 1,024 players): see "Memory" in the crate docs.
    let mate = integer_blossom::min_weight_perfect_matching(&cost, n);
    let mut pairs = Vec::with_capacity(n / 2);
    for (i, &j) in mate.iter().enumerate() {
        if i < j {
            let (better, worse) = (players[i].entrant, players[j].entrant);
            let home_of = |e: usize| home_games.get(&e).copied().unwrap_or(0);
            if home_of(worse) < home_of(better) {
                pairs.push((worse, better));
            } else {
                pairs.push((better, worse));
            }
        }
    }
    (pairs, bye)
}
