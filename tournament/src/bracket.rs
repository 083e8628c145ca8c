//! Elimination brackets (single and double) as a graph of nodes fed by seeds or by the
//! winner or loser of earlier nodes. Nodes are stored in an order where every node comes
//! after the nodes it is fed by, so one pass in order resolves everything resolvable.

/// Where one side of a node comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A bracket position: an entrant (index in seed order), or `None` for a bye.
    Slot(Option<usize>),
    /// The winner of node `n`.
    Winner(usize),
    /// The loser of node `n`.
    Loser(usize),
}

/// Which part of the bracket a node belongs to, for rendering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Section {
    /// A single-elimination round other than the final.
    Main,
    /// The single-elimination final.
    Final,
    /// The third-place match.
    ThirdPlace,
    /// A winners-bracket round.
    Winners,
    /// A losers-bracket round.
    Losers,
    /// The grand final.
    GrandFinal,
    /// The grand final reset.
    Reset,
}

/// How a node ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) winner: Option<usize>,
    pub(crate) loser: Option<usize>,
    /// Both sides lost (double forfeit); they are out.
    pub(crate) double_loss: Option<(usize, usize)>,
    /// A series was played (not a walkover).
    pub(crate) played: bool,
    /// The away side won the series.
    pub(crate) away_won: bool,
    /// A grand final reset that was not needed.
    pub(crate) skipped: bool,
}

/// A node's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeState {
    /// Waiting for its sources.
    Waiting,
    /// Its series is being played.
    Playing,
    /// Decided.
    Done(Resolved),
}

/// One series slot of the bracket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) round: u16,
    pub(crate) table: u16,
    pub(crate) home: Source,
    pub(crate) away: Source,
    pub(crate) section: Section,
    /// Round number within its section, 0-based.
    pub(crate) section_round: u16,
    /// `Some(gf)`: a grand final reset, played only when the away side won node `gf`.
    pub(crate) reset_of: Option<usize>,
    /// Whether some node takes this node's loser.
    pub(crate) loser_routed: bool,
    /// Placement value of an entrant knocked out here (higher is better).
    pub(crate) loser_value: u32,
    /// Placement value of the winner when the winner goes no further but is not champion
    /// (the third-place match).
    pub(crate) winner_value: Option<u32>,
    pub(crate) state: NodeState,
}

/// A whole elimination bracket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bracket {
    pub(crate) nodes: Vec<Node>,
    /// The node whose winner is champion of the stage.
    pub(crate) final_node: usize,
    /// Whether this is a double-elimination bracket.
    pub(crate) double: bool,
}

/// The standard seed placement for a bracket of `size` (a power of two) positions: seed
/// order indices by position, so that seed 1 meets the last seed, and seeds 1 and 2 can
/// only meet in the final. For 8: 1, 8, 4, 5, 2, 7, 3, 6 (written 1-based).
pub(crate) fn placement(size: usize) -> Vec<usize> {
    let mut order = vec![0usize];
    while order.len() < size {
        let doubled = order.len() * 2;
        order = order.iter().flat_map(|&seed| [seed, doubled - 1 - seed]).collect();
    }
    order
}

/// The bracket size for `n` entrants: the next power of two, at least 2.
pub(crate) fn bracket_size(n: usize) -> usize {
    n.max(2).next_power_of_two()
}

fn node(round: u16, table: usize, home: Source, away: Source, section: Section, section_round: u16) -> Node {
    Node {
        round,
        table: u16::try_from(table).unwrap_or(u16::MAX),
        home,
        away,
        section,
        section_round,
        reset_of: None,
        loser_routed: false,
        loser_value: 4 * u32::from(round),
        winner_value: None,
        state: NodeState::Waiting,
    }
}

fn first_round_slots(players: &[usize], size: usize) -> Vec<Source> {
    placement(size).into_iter().map(|position| Source::Slot(players.get(position).copied())).collect()
}

fn mark_routed(nodes: &mut [Node]) {
    let consumed: Vec<usize> = nodes
        .iter()
        .flat_map(|n| [n.home, n.away])
        .filter_map(|source| match source {
            Source::Loser(index) => Some(index),
            _ => None,
        })
        .collect();
    for index in consumed {
        nodes[index].loser_routed = true;
    }
}

fn as_u16(value: usize) -> u16 {
    u16::try_from(value).unwrap_or(u16::MAX)
}

/// A single-elimination bracket over `players` (stage seed order).
pub(crate) fn single(players: &[usize], third_place: bool) -> Bracket {
    let size = bracket_size(players.len());
    let n_rounds = size.trailing_zeros() as usize;
    let mut nodes = Vec::new();
    let mut previous: Vec<usize> = Vec::new();
    let slots = first_round_slots(players, size);
    for round in 0..n_rounds {
        let n_tables = size >> (round + 1);
        let section = if round + 1 == n_rounds { Section::Final } else { Section::Main };
        let mut current = Vec::with_capacity(n_tables);
        for table in 0..n_tables {
            let (home, away) = if round == 0 {
                (slots[2 * table], slots[2 * table + 1])
            } else {
                (Source::Winner(previous[2 * table]), Source::Winner(previous[2 * table + 1]))
            };
            current.push(nodes.len());
            nodes.push(node(as_u16(round), table, home, away, section, as_u16(round)));
        }
        previous = current;
    }
    let final_node = nodes.len() - 1;
    if third_place && n_rounds >= 2 {
        // The semi-finals are the two nodes feeding the final.
        let (semi_a, semi_b) = match (nodes[final_node].home, nodes[final_node].away) {
            (Source::Winner(a), Source::Winner(b)) => (a, b),
            _ => (final_node, final_node),
        };
        let semi_round = nodes[semi_a].round;
        let mut third =
            node(as_u16(n_rounds - 1), 1, Source::Loser(semi_a), Source::Loser(semi_b), Section::ThirdPlace, 0);
        third.loser_value = 4 * u32::from(semi_round);
        third.winner_value = Some(4 * u32::from(semi_round) + 1);
        nodes.push(third);
    }
    mark_routed(&mut nodes);
    Bracket { nodes, final_node, double: false }
}

/// A double-elimination bracket over `players` (stage seed order).
///
/// Rounds are numbered: winners rounds `0..k`, then losers rounds `k..3k-2`, then the grand
/// final `3k-2` and its reset `3k-1`, where the bracket has `2^k` positions.
pub(crate) fn double(players: &[usize], grand_final_reset: bool) -> Bracket {
    let size = bracket_size(players.len());
    let k = size.trailing_zeros() as usize;
    let mut nodes = Vec::new();
    let slots = first_round_slots(players, size);
    let mut winners: Vec<Vec<usize>> = Vec::new();
    for round in 0..k {
        let n_tables = size >> (round + 1);
        let mut current = Vec::with_capacity(n_tables);
        for table in 0..n_tables {
            let (home, away) = if round == 0 {
                (slots[2 * table], slots[2 * table + 1])
            } else {
                let previous = &winners[round - 1];
                (Source::Winner(previous[2 * table]), Source::Winner(previous[2 * table + 1]))
            };
            current.push(nodes.len());
            nodes.push(node(as_u16(round), table, home, away, Section::Winners, as_u16(round)));
        }
        winners.push(current);
    }
    let winners_final = winners[k - 1][0];
    // The losers-bracket champion, as a source for the grand final.
    let mut losers_champion = Source::Loser(winners_final);
    if k >= 2 {
        let mut losers_round = 0usize;
        let push_round = |nodes: &mut Vec<Node>, pairs: Vec<(Source, Source)>, losers_round: usize| {
            let mut current = Vec::with_capacity(pairs.len());
            for (table, (home, away)) in pairs.into_iter().enumerate() {
                current.push(nodes.len());
                nodes.push(node(as_u16(k + losers_round), table, home, away, Section::Losers, as_u16(losers_round)));
            }
            current
        };
        // Losers round 0: the losers of winners round 0, in pairs.
        let first = &winners[0];
        let pairs = (0..first.len() / 2)
            .map(|table| (Source::Loser(first[2 * table]), Source::Loser(first[2 * table + 1])))
            .collect();
        let mut previous = push_round(&mut nodes, pairs, losers_round);
        losers_round += 1;
        for (wround, dropping) in winners.iter().enumerate().skip(1) {
            // Drop-in round: survivors meet the losers of winners round `wround`, in reverse
            // order every other round so that early rematches are avoided.
            let n_tables = previous.len();
            let pairs = (0..n_tables)
                .map(|table| {
                    let from = if wround % 2 == 1 { n_tables - 1 - table } else { table };
                    (Source::Winner(previous[table]), Source::Loser(dropping[from]))
                })
                .collect();
            previous = push_round(&mut nodes, pairs, losers_round);
            losers_round += 1;
            if wround + 1 < k {
                // Consolidation round: survivors in pairs.
                let pairs = (0..previous.len() / 2)
                    .map(|table| (Source::Winner(previous[2 * table]), Source::Winner(previous[2 * table + 1])))
                    .collect();
                previous = push_round(&mut nodes, pairs, losers_round);
                losers_round += 1;
            }
        }
        losers_champion = Source::Winner(previous[0]);
    }
    let grand_round = as_u16(3 * k - 2);
    let grand_final = nodes.len();
    nodes.push(node(grand_round, 0, Source::Winner(winners_final), losers_champion, Section::GrandFinal, 0));
    let mut final_node = grand_final;
    if grand_final_reset {
        let mut reset =
            node(grand_round + 1, 0, Source::Loser(grand_final), Source::Winner(grand_final), Section::Reset, 0);
        reset.reset_of = Some(grand_final);
        final_node = nodes.len();
        nodes.push(reset);
    }
    mark_routed(&mut nodes);
    Bracket { nodes, final_node, double: true }
}

impl Bracket {
    /// What a source currently names: `None` while unresolved, `Some(None)` for nobody.
    pub(crate) fn resolve(&self, source: Source) -> Option<Option<usize>> {
        match source {
            Source::Slot(entrant) => Some(entrant),
            Source::Winner(index) => match self.nodes[index].state {
                NodeState::Done(resolved) => Some(resolved.winner),
                _ => None,
            },
            Source::Loser(index) => match self.nodes[index].state {
                NodeState::Done(resolved) => Some(resolved.loser),
                _ => None,
            },
        }
    }

    /// Whether every node is decided.
    pub(crate) fn is_done(&self) -> bool {
        self.nodes.iter().all(|n| matches!(n.state, NodeState::Done(_)))
    }

    /// Whether the loser of node `index` is out: nothing takes it (a skipped reset takes nothing).
    pub(crate) fn loser_is_out(&self, index: usize) -> bool {
        if !self.nodes[index].loser_routed {
            return true;
        }
        self.nodes
            .iter()
            .any(|n| n.reset_of == Some(index) && matches!(n.state, NodeState::Done(Resolved { skipped: true, .. })))
    }

    /// The stage champion, once the final node is decided.
    pub(crate) fn champion(&self) -> Option<usize> {
        match self.nodes[self.final_node].state {
            NodeState::Done(resolved) => resolved.winner,
            _ => None,
        }
    }
}
