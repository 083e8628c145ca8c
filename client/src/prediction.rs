//! Client-side prediction of the player's own part of the state, with
//! reconciliation against every authoritative snapshot.
//!
//! The game supplies a [`Predictor`]: how one tick of the local seat's input
//! changes the view. On each snapshot at tick `s`, the predicted view restarts
//! from the authoritative one and the player's own inputs for ticks `s+1 ..=
//! now` are applied again. If the shard applied every input on its tick, the
//! replayed prediction lands exactly where the earlier prediction was; the
//! difference is counted as a misprediction.

use std::collections::VecDeque;

use rally_protocol::{Input, Seat, Snapshot, Tick};

/// How the local seat's input changes the view, one tick at a time. Must
/// match the server's rules for the fields it touches.
pub trait Predictor: Send {
    /// Applies `input` of `seat` for one tick to `values` (a view in schema order).
    fn step(&self, values: &mut [i32], seat: Seat, input: Input);
    /// Fields this predictor owns; only these are compared for mispredictions.
    fn predicted_fields(&self) -> &[usize];
}

/// Inputs kept for replay after a snapshot.
const HISTORY: usize = 256;

/// The predicted local view.
#[derive(Debug)]
pub struct Prediction<P> {
    predictor: P,
    seat: Seat,
    inputs: VecDeque<(Tick, Input)>,
    /// Tick of the newest snapshot reconciled with.
    authoritative: Option<Tick>,
    predicted: Option<Snapshot>,
    /// Predicted values per tick for the owned fields, for misprediction checks.
    history: VecDeque<(Tick, Vec<i32>)>,
    mispredictions: u64,
    checks: u64,
}

impl<P: Predictor> Prediction<P> {
    /// Prediction for `seat` with the game's `predictor`.
    pub fn new(predictor: P, seat: Seat) -> Self {
        Self {
            predictor,
            seat,
            inputs: VecDeque::new(),
            authoritative: None,
            predicted: None,
            history: VecDeque::new(),
            mispredictions: 0,
            checks: 0,
        }
    }

    /// Records the local input for `tick` and advances the prediction to it.
    pub fn push_input(&mut self, tick: Tick, input: Input) {
        if self.inputs.back().is_some_and(|&(last, _)| last >= tick) {
            return;
        }
        if self.inputs.len() == HISTORY {
            self.inputs.pop_front();
        }
        self.inputs.push_back((tick, input));
        if let Some(predicted) = &mut self.predicted {
            while predicted.tick < tick {
                predicted.tick += 1;
                let input = input_at(&self.inputs, predicted.tick);
                self.predictor.step(&mut predicted.values, self.seat, input);
                record(&mut self.history, self.predictor.predicted_fields(), predicted);
            }
        }
    }

    /// Restarts from an authoritative snapshot and replays newer local inputs.
    pub fn reconcile(&mut self, snapshot: &Snapshot) {
        if let Some((_, expected)) = self.history.iter().find(|(tick, _)| *tick == snapshot.tick) {
            self.checks += 1;
            let fields = self.predictor.predicted_fields();
            if fields.iter().zip(expected).any(|(&field, &value)| snapshot.values[field] != value) {
                self.mispredictions += 1;
            }
        }
        let mut predicted = snapshot.clone();
        let newest = self.inputs.back().map_or(snapshot.tick, |&(tick, _)| tick);
        let mut replayed = Vec::new();
        while predicted.tick < newest {
            predicted.tick += 1;
            let input = input_at(&self.inputs, predicted.tick);
            self.predictor.step(&mut predicted.values, self.seat, input);
            replayed.push((predicted.tick, owned(self.predictor.predicted_fields(), &predicted)));
        }
        // Replayed predictions supersede the ones made before this snapshot.
        self.history.clear();
        self.history.extend(replayed);
        self.authoritative = Some(snapshot.tick);
        self.predicted = Some(predicted);
    }

    /// Tick of the newest snapshot reconciled with: the prediction starts there.
    pub fn authoritative_tick(&self) -> Option<Tick> {
        self.authoritative
    }

    /// The predicted view at the newest input tick.
    pub fn predicted(&self) -> Option<&Snapshot> {
        self.predicted.as_ref()
    }

    /// Snapshots whose owned fields differed from what had been predicted for their tick.
    pub fn mispredictions(&self) -> u64 {
        self.mispredictions
    }

    /// Snapshots compared against a prediction.
    pub fn checks(&self) -> u64 {
        self.checks
    }
}

fn owned(fields: &[usize], snapshot: &Snapshot) -> Vec<i32> {
    fields.iter().map(|&field| snapshot.values[field]).collect()
}

fn record(history: &mut VecDeque<(Tick, Vec<i32>)>, fields: &[usize], snapshot: &Snapshot) {
    if history.len() == HISTORY {
        history.pop_front();
    }
    history.push_back((snapshot.tick, owned(fields, snapshot)));
}

/// The input in effect at `tick`: the newest recorded at or before it (inputs repeat).
fn input_at(inputs: &VecDeque<(Tick, Input)>, tick: Tick) -> Input {
    let idx = inputs.partition_point(|&(at, _)| at <= tick);
    if idx == 0 { 0 } else { inputs[idx - 1].1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy game: field 0 moves by the input each tick, field 1 is a clock the
    /// predictor does not own.
    #[derive(Debug)]
    struct Walker;

    impl Predictor for Walker {
        fn step(&self, values: &mut [i32], _seat: Seat, input: Input) {
            values[0] += i32::from(input);
        }

        fn predicted_fields(&self) -> &[usize] {
            &[0]
        }
    }

    /// Plays `ticks` ticks: the client sends its input for tick `t` `lead` ticks early,
    /// the server applies it on tick `t` unless `t` is in `missed` (then it repeats the
    /// input it applied before), and a snapshot taken every other tick reaches the client
    /// `lead` ticks later. Returns the prediction and the server's state per tick.
    fn play(ticks: Tick, lead: Tick, missed: &[Tick]) -> (Prediction<Walker>, Vec<Snapshot>) {
        let mut prediction = Prediction::new(Walker, 0);
        let mut server = vec![Snapshot { tick: 0, values: vec![0, 0] }];
        let mut applied = 0;
        for now in 1..=ticks {
            prediction.push_input(now + lead, input_for(now + lead));
            let mut state = server[now as usize - 1].clone();
            if !missed.contains(&now) {
                applied = input_for(now);
            }
            state.tick = now;
            state.values[0] += i32::from(applied);
            state.values[1] += 7;
            server.push(state);
            if now > lead && now % 2 == 0 {
                prediction.reconcile(&server[(now - lead) as usize]);
            }
        }
        (prediction, server)
    }

    /// The client's input for `tick`: runs of 0, 1 and 2, five ticks each.
    fn input_for(tick: Tick) -> Input {
        (tick / 5 % 3) as Input
    }

    /// Where the newest snapshot plus the client's inputs after it put field 0.
    fn replayed(server: &[Snapshot], from: Tick, to: Tick) -> i32 {
        server[from as usize].values[0] + (from + 1..=to).map(|tick| i32::from(input_for(tick))).sum::<i32>()
    }

    #[test]
    fn a_server_that_applies_every_input_is_never_mispredicted() {
        let (prediction, server) = play(200, 3, &[]);
        assert_eq!(prediction.mispredictions(), 0);
        assert!(prediction.checks() > 90, "{} checks", prediction.checks());
        // The prediction runs from the newest snapshot (tick 197, received at 200) to
        // the newest input (203); the unowned clock stays at the snapshot's value.
        assert_eq!(prediction.authoritative_tick(), Some(197));
        let predicted = prediction.predicted().unwrap();
        assert_eq!(predicted.tick, 203);
        assert_eq!(predicted.values[0], replayed(&server, 197, 203));
        assert_eq!(predicted.values[1], server[197].values[1]);
        // With no input missed, that is exactly where the server goes.
        assert_eq!(server[200].values[0], replayed(&server, 197, 200));
    }

    #[test]
    fn a_missed_input_is_mispredicted_once_and_then_healed() {
        // Tick 15's input is 0, the one before it 2: the server repeats 2.
        let (prediction, server) = play(200, 3, &[15]);
        assert_eq!(prediction.mispredictions(), 1);
        assert_eq!(prediction.predicted().unwrap().values[0], replayed(&server, 197, 203));
        // A missed tick whose input equals the one before changes nothing.
        let (prediction, _) = play(200, 3, &[16]);
        assert_eq!(prediction.mispredictions(), 0);
    }

    #[test]
    fn inputs_for_ticks_the_snapshot_covers_are_not_replayed() {
        let mut prediction = Prediction::new(Walker, 0);
        for tick in 1..=10 {
            prediction.push_input(tick, 1);
        }
        assert_eq!(prediction.predicted(), None, "nothing to predict from before a snapshot");
        prediction.reconcile(&Snapshot { tick: 6, values: vec![100, 0] });
        assert_eq!(prediction.predicted(), Some(&Snapshot { tick: 10, values: vec![104, 0] }));
        // An input for a tick already set is ignored, like the session ignores it.
        prediction.push_input(10, 2);
        prediction.push_input(12, 2);
        assert_eq!(prediction.predicted(), Some(&Snapshot { tick: 12, values: vec![107, 0] }));
        prediction.reconcile(&Snapshot { tick: 8, values: vec![102, 5] });
        assert_eq!((prediction.checks(), prediction.mispredictions()), (1, 0));
        assert_eq!(prediction.predicted(), Some(&Snapshot { tick: 12, values: vec![107, 5] }));
    }
}
