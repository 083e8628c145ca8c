//! Policies: what turns a batch of observations into a batch of actions.
//!
//! A [`Policy`] is stateless between calls and batched: the runner gathers every
//! bot's observation of a tick and calls [`Policy::decide`] once. Per-bot state
//! (reaction delay, aim error) lives in [`Handicap`](crate::difficulty::Handicap), which
//! works the same in front of any policy.
//!
//! The scripted policies read the observation back into wire units ([`WireState`]):
//! - [`TrackerPolicy`] follows the ball's height while it comes, and waits in the middle;
//! - [`PredictorPolicy`] goes to where the ball will cross its paddle's line, reflecting
//!   off the walls;
//! - [`ExpertPolicy`] predicts the same way and also picks the contact point on its
//!   paddle that sends the ball furthest from the opponent's reach. It is the teacher
//!   the ONNX model imitates (see `bot/train/`).

use crate::error::BotError;
use crate::obs::{Action, Observation, WireState, wire};

/// Something that decides for many bots at once.
pub trait Policy: Send {
    /// A short name for reports.
    fn name(&self) -> &str;

    /// Decides one action per observation: `actions` is cleared and refilled with
    /// `observations.len()` entries, in order.
    fn decide(&mut self, observations: &[Observation], actions: &mut Vec<Action>) -> Result<(), BotError>;
}

impl<P: Policy + ?Sized> Policy for Box<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn decide(&mut self, observations: &[Observation], actions: &mut Vec<Action>) -> Result<(), BotError> {
        (**self).decide(observations, actions)
    }
}

/// Half-width of the band around the target where a scripted paddle holds still: a
/// decision holds for a snapshot interval (two ticks of 96 units), so a narrower band
/// would only make it oscillate.
pub const DEAD_ZONE: f32 = 96.0;

/// The action that moves a paddle at `paddle_y` toward `target`.
pub fn steer(paddle_y: f32, target: f32, dead_zone: f32) -> Action {
    let target = target.clamp(wire::PADDLE_Y.0, wire::PADDLE_Y.1);
    let gap = target - paddle_y;
    if gap.abs() <= dead_zone {
        Action::Stop
    } else if gap < 0.0 {
        Action::Up
    } else {
        Action::Down
    }
}

/// Reflects an unbounded straight-line height into `low..=high`, as the walls do.
pub fn fold(y: f32, low: f32, high: f32) -> f32 {
    let span = high - low;
    if span <= 0.0 {
        return low;
    }
    let phase = (y - low).rem_euclid(2.0 * span);
    if phase <= span { low + phase } else { low + 2.0 * span - phase }
}

/// Where and when an incoming ball crosses the bot's contact line: `(ticks, y)`.
pub fn intercept(state: &WireState) -> Option<(f32, f32)> {
    if state.vx >= 0.0 {
        return None;
    }
    let ticks = ((state.x - wire::CONTACT_X) / -state.vx).max(0.0);
    Some((ticks, fold(state.y + state.vy * ticks, wire::BALL_Y.0, wire::BALL_Y.1)))
}

const CENTRE: f32 = crate::obs::HEIGHT_WIRE / 2.0;

/// Follows the ball's height while it comes; waits in the middle otherwise.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrackerPolicy;

impl TrackerPolicy {
    /// The tracker's action for one observation.
    pub fn act(obs: &Observation) -> Action {
        let state = WireState::of(obs);
        let target = if state.vx < 0.0 { state.y } else { CENTRE };
        steer(state.own_y, target, DEAD_ZONE)
    }
}

impl Policy for TrackerPolicy {
    fn name(&self) -> &str {
        "tracker"
    }

    fn decide(&mut self, observations: &[Observation], actions: &mut Vec<Action>) -> Result<(), BotError> {
        actions.clear();
        actions.extend(observations.iter().map(Self::act));
        Ok(())
    }
}

/// Goes to where the incoming ball will cross its paddle's line; waits in the middle.
#[derive(Clone, Copy, Debug, Default)]
pub struct PredictorPolicy;

impl PredictorPolicy {
    /// The predictor's action for one observation.
    pub fn act(obs: &Observation) -> Action {
        let state = WireState::of(obs);
        let target = intercept(&state).map_or(CENTRE, |(_, y)| y);
        steer(state.own_y, target, DEAD_ZONE)
    }
}

impl Policy for PredictorPolicy {
    fn name(&self) -> &str {
        "predictor"
    }

    fn decide(&mut self, observations: &[Observation], actions: &mut Vec<Action>) -> Result<(), BotError> {
        actions.clear();
        actions.extend(observations.iter().map(Self::act));
        Ok(())
    }
}

/// Contact offsets the expert considers, as fractions of the paddle's reach.
const EXPERT_OFFSETS: [f32; 13] =
    [-0.75, -0.625, -0.5, -0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75];
/// Ticks of slack the expert keeps when it checks it can still reach a contact point.
const EXPERT_SLACK_TICKS: f32 = 4.0;

/// A predictor that also aims: it meets the ball off-centre so that the return lands
/// as far as possible from where the opponent's paddle can get to.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExpertPolicy;

impl ExpertPolicy {
    /// The expert's target paddle height for one observation.
    pub fn target(state: &WireState) -> f32 {
        let Some((ticks, y_hit)) = intercept(state) else {
            return CENTRE;
        };
        let speed = (-state.vx + 4.0).min(crate::obs::SPEED_WIRE);
        let return_ticks = (wire::OPP_CONTACT_X - wire::CONTACT_X) / speed;
        let reachable = (ticks - EXPERT_SLACK_TICKS).max(0.0) * wire::PADDLE_STEP;
        let mut best = (f32::NEG_INFINITY, y_hit);
        for fraction in EXPERT_OFFSETS {
            let offset = fraction * wire::REACH;
            let paddle_at = (y_hit - offset).clamp(wire::PADDLE_Y.0, wire::PADDLE_Y.1);
            if (paddle_at - y_hit).abs() > wire::REACH * 0.8 {
                continue; // a clamped paddle would not meet the ball at this offset
            }
            if fraction != 0.0 && (paddle_at - state.own_y).abs() > reachable {
                continue;
            }
            // Deflection as the sim computes it: linear in the offset, at most 3/4 of the speed.
            let vy = speed * 0.75 * (y_hit - paddle_at) / wire::REACH;
            let lands = fold(y_hit + vy * return_ticks, wire::BALL_Y.0, wire::BALL_Y.1);
            let margin = (lands - state.opp_y).abs() - wire::PADDLE_STEP * return_ticks;
            if margin > best.0 {
                best = (margin, paddle_at);
            }
        }
        best.1
    }

    /// The expert's action for one observation.
    pub fn act(obs: &Observation) -> Action {
        let state = WireState::of(obs);
        steer(state.own_y, Self::target(&state), DEAD_ZONE)
    }
}

impl Policy for ExpertPolicy {
    fn name(&self) -> &str {
        "expert"
    }

    fn decide(&mut self, observations: &[Observation], actions: &mut Vec<Action>) -> Result<(), BotError> {
        actions.clear();
        actions.extend(observations.iter().map(Self::act));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::normalize;

    #[test]
    fn fold_reflects_off_both_walls() {
        assert_eq!(fold(50.0, 0.0, 100.0), 50.0);
        assert_eq!(fold(130.0, 0.0, 100.0), 70.0);
        assert_eq!(fold(-30.0, 0.0, 100.0), 30.0);
        assert_eq!(fold(250.0, 0.0, 100.0), 50.0);
    }

    #[test]
    fn the_predictor_goes_where_the_ball_will_be_and_the_tracker_where_it_is() {
        // Ball high, coming down steeply: it will arrive low.
        let obs = normalize(4000.0, 500.0, -100.0, 100.0, 3072.0, 3072.0);
        assert_eq!(TrackerPolicy::act(&obs), Action::Up);
        let (_, y) = intercept(&WireState::of(&obs)).unwrap();
        assert!(y > 3072.0 + DEAD_ZONE, "{y}");
        assert_eq!(PredictorPolicy::act(&obs), Action::Down);
        // Ball leaving: both wait in the middle.
        let away = normalize(4000.0, 500.0, 100.0, 0.0, 1000.0, 3072.0);
        assert_eq!(TrackerPolicy::act(&away), Action::Down);
        assert_eq!(PredictorPolicy::act(&away), Action::Down);
    }

    #[test]
    fn the_expert_aims_away_from_the_opponent() {
        // Plenty of time, ball arriving mid-field, opponent high: hit it downward
        // (meet it with the paddle's upper half, so the paddle sits above the ball).
        let state = WireState::of(&normalize(6000.0, 3072.0, -64.0, 0.0, 3072.0, 800.0));
        let (_, y_hit) = intercept(&state).unwrap();
        let target = ExpertPolicy::target(&state);
        assert!(target < y_hit, "paddle at {target} for a ball at {y_hit}");
        assert!((y_hit - target).abs() <= wire::REACH);
    }
}
