//! Round-robin schedules from Berger tables.

/// One round of a schedule: pairs (home, away) of positions, and the position with a bye.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScheduledRound {
    pub(crate) pairs: Vec<(usize, usize)>,
    pub(crate) bye: Option<usize>,
}

/// The Berger table for `n` positions (0-based, in stage seed order).
///
/// With `m` = `n` rounded up to even, the table has `m - 1` rounds. Written 1-based, round 1
/// is `1–m, 2–(m−1), …, m/2–(m/2+1)`; each next round adds `m/2` to every number but `m`
/// (modulo `m − 1`, in `1..m`) and `m` changes side. For 6: round 2 is `6–4, 5–3, 1–2`.
/// With an odd `n` the number `m` is a dummy and whoever meets it has the bye.
pub(crate) fn berger(n: usize) -> Vec<ScheduledRound> {
    if n < 2 {
        return Vec::new();
    }
    let m = n + n % 2;
    let half = m / 2;
    let rotate = |number: usize, round: usize| (number - 1 + round * half) % (m - 1) + 1;
    let mut rounds = Vec::with_capacity(m - 1);
    for round in 0..m - 1 {
        let mut numbered = Vec::with_capacity(half);
        let other = rotate(1, round);
        numbered.push(if round % 2 == 0 { (other, m) } else { (m, other) });
        for i in 1..half {
            numbered.push((rotate(i + 1, round), rotate(m - i, round)));
        }
        let mut pairs = Vec::with_capacity(half);
        let mut bye = None;
        for (home, away) in numbered {
            if home > n {
                bye = Some(away - 1);
            } else if away > n {
                bye = Some(home - 1);
            } else {
                pairs.push((home - 1, away - 1));
            }
        }
        rounds.push(ScheduledRound { pairs, bye });
    }
    rounds
}
