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
        self.history.retain(|(tick, _)| *tick > snapshot.tick);
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
        self.predicted = Some(predicted);
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
