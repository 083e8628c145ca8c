//! Plain-text rendering of brackets and standings tables for a terminal.

use std::fmt::Write as _;

use crate::bracket::{Bracket, NodeState, Section};
use crate::state::{StageKind, State};
use crate::types::{Entrant, Format, Rules};

fn format_name(format: &Format) -> String {
    match format {
        Format::SingleElimination { third_place: true } => "single elimination with third-place match".to_owned(),
        Format::SingleElimination { third_place: false } => "single elimination".to_owned(),
        Format::DoubleElimination { grand_final_reset: true } => "double elimination with grand final reset".to_owned(),
        Format::DoubleElimination { grand_final_reset: false } => "double elimination".to_owned(),
        Format::Swiss { rounds } => format!("Swiss, {rounds} rounds"),
        Format::RoundRobin => "round robin".to_owned(),
    }
}

/// `name (seed)`, the way every line shows an entrant.
fn label(seeds: &[Entrant], entrant: usize) -> String {
    format!("{} ({})", seeds[entrant].name, entrant + 1)
}

pub(crate) fn render(rules: &Rules, seeds: &[Entrant], state: &State) -> String {
    let mut out = String::new();
    for (position, stage) in state.stages.iter().enumerate() {
        let rule = &rules.stages[usize::from(stage.index)];
        let _ = writeln!(
            out,
            "Stage {} of {}: {}, best of {}{}",
            u32::from(stage.index) + 1,
            rules.stages.len(),
            format_name(&rule.format),
            rule.best_of,
            if stage.done { " (finished)" } else { "" }
        );
        match &stage.kind {
            StageKind::Bracket(bracket) => render_bracket(&mut out, seeds, state, stage.index, bracket),
            StageKind::Swiss(_) | StageKind::RoundRobin(_) => {
                render_rounds(&mut out, seeds, state, stage.index);
                render_table(&mut out, seeds, state, position);
            }
        }
        out.push('\n');
    }
    if state.finished {
        match state.champion() {
            Some(champion) => {
                let _ = writeln!(out, "Champion: {}", label(seeds, champion));
            }
            None => out.push_str("Finished with no champion (the final was forfeited by both sides)\n"),
        }
    }
    out
}

fn section_title(section: Section, round: u16, n_main_rounds: u16) -> String {
    let number = u32::from(round) + 1;
    match section {
        Section::Main if round + 2 == n_main_rounds => "Semi-finals".to_owned(),
        Section::Main if round + 3 == n_main_rounds => "Quarter-finals".to_owned(),
        Section::Main => format!("Round {number}"),
        Section::Final => "Final".to_owned(),
        Section::ThirdPlace => "Third place".to_owned(),
        Section::Winners => format!("Winners round {number}"),
        Section::Losers => format!("Losers round {number}"),
        Section::GrandFinal => "Grand final".to_owned(),
        Section::Reset => "Grand final reset".to_owned(),
    }
}

fn render_bracket(out: &mut String, seeds: &[Entrant], state: &State, stage: u8, bracket: &Bracket) {
    let n_main_rounds =
        bracket.nodes.iter().filter(|n| n.section == Section::Final).map(|n| n.round + 1).max().unwrap_or(0);
    let mut current_title = String::new();
    for node in &bracket.nodes {
        let title = section_title(node.section, node.section_round, n_main_rounds);
        if title != current_title {
            let _ = writeln!(out, "  {title}");
            current_title = title;
        }
        let side = |source| match bracket.resolve(source) {
            None => "(to be decided)".to_owned(),
            Some(None) => "(bye)".to_owned(),
            Some(Some(entrant)) => label(seeds, entrant),
        };
        let (home, away) = (side(node.home), side(node.away));
        let line = match node.state {
            NodeState::Done(resolved) if resolved.skipped => "not needed".to_owned(),
            NodeState::Done(resolved) if !resolved.played => match resolved.winner {
                Some(winner) => format!("{home} vs {away}: walkover, {} advances", seeds[winner].name),
                None => format!("{home} vs {away}: nobody advances"),
            },
            NodeState::Waiting => format!("{home} vs {away}"),
            NodeState::Playing | NodeState::Done(_) => {
                let series = state.series.get(&(stage, node.round, node.table));
                let (home_wins, away_wins, _) = series.map(|s| s.tally()).unwrap_or_default();
                let status = match node.state {
                    NodeState::Done(resolved) => match resolved.winner {
                        Some(winner) => format!("{} wins", seeds[winner].name),
                        None => "double forfeit, nobody advances".to_owned(),
                    },
                    _ => "playing".to_owned(),
                };
                format!("{home} {home_wins}-{away_wins} {away}: {status}")
            }
        };
        let _ = writeln!(out, "    t{} {line}", u32::from(node.table) + 1);
    }
}

fn render_rounds(out: &mut String, seeds: &[Entrant], state: &State, stage: u8) {
    let mut current_round = None;
    for (key, series) in state.series.range((stage, 0, 0)..=(stage, u16::MAX, u16::MAX)) {
        if current_round != Some(key.1) {
            let _ = writeln!(out, "  Round {}", u32::from(key.1) + 1);
            current_round = Some(key.1);
        }
        let (home_wins, away_wins, draws) = series.tally();
        let status = match series.result() {
            Some(_) if draws > 0 => format!("{home_wins}-{away_wins} ({draws} drawn)"),
            Some(_) => format!("{home_wins}-{away_wins}"),
            None => format!("{home_wins}-{away_wins}, playing"),
        };
        let _ = writeln!(
            out,
            "    t{} {} vs {}: {status}",
            u32::from(key.2) + 1,
            label(seeds, series.home),
            label(seeds, series.away)
        );
    }
}

fn render_table(out: &mut String, seeds: &[Entrant], state: &State, position: usize) {
    let stats = state.stats(Some(state.stages[position].index));
    let ranking = state.stage_ranking(position);
    let width = ranking.iter().map(|e| label(seeds, *e).chars().count()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "  {:>4}  {:<width$}  {:>3} {:>3} {:>3}  {:>4}  {:>4}  {:>6}",
        "Rank", "Name", "W", "D", "L", "Pts", "Buch", "Diff"
    );
    for (rank, entrant) in ranking.iter().enumerate() {
        let s = stats.get(entrant).cloned().unwrap_or_default();
        let mark = if state.out.contains_key(entrant) { " (out)" } else { "" };
        let _ = writeln!(
            out,
            "  {:>4}  {:<width$}  {:>3} {:>3} {:>3}  {:>4}  {:>4}  {:>+6}{mark}",
            rank + 1,
            label(seeds, *entrant),
            s.wins,
            s.draws,
            s.losses,
            s.points,
            s.buchholz,
            s.point_difference
        );
    }
}
