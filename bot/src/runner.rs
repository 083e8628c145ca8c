//! Many bots in one process: a [`Decider`] batches every pending decision into one
//! [`Policy::decide`] call.
//!
//! Each bot's task sends its (handicapped) observation through a [`DeciderHandle`] and
//! awaits the action. The decider runs on its own thread: it blocks for the first
//! request, then keeps collecting until no request has arrived for
//! [`BatchWindow::gap`] or [`BatchWindow::max_wait`] has passed since the first (or the
//! batch is full), and decides the whole batch in one call. A shard sends all of a
//! tick's snapshots in one burst, so in steady play one call covers every bot that got
//! a view that tick.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::oneshot;

use crate::error::BotError;
use crate::obs::{Action, Observation};
use crate::policy::Policy;

/// How long the decider waits to fill a batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchWindow {
    /// Stop collecting once no request has come for this long.
    pub gap: Duration,
    /// Stop collecting this long after the batch's first request.
    pub max_wait: Duration,
    /// Most decisions in one call.
    pub max_batch: usize,
}

impl Default for BatchWindow {
    fn default() -> Self {
        Self { gap: Duration::from_micros(300), max_wait: Duration::from_millis(2), max_batch: 4096 }
    }
}

struct Request {
    obs: Observation,
    reply: oneshot::Sender<Result<Action, String>>,
}

/// Sends observations to a decider; cheap to clone, one per bot.
#[derive(Clone, Debug)]
pub struct DeciderHandle {
    tx: std_mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").finish_non_exhaustive()
    }
}

impl DeciderHandle {
    /// The action for `obs`, decided in the next batch.
    pub async fn decide(&self, obs: Observation) -> Result<Action, BotError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { obs, reply })
            .map_err(|_| BotError::Inference("the decider thread has stopped".into()))?;
        match answer.await {
            Ok(Ok(action)) => Ok(action),
            Ok(Err(message)) => Err(BotError::Inference(message)),
            Err(_) => Err(BotError::Inference("the decider thread stopped before answering".into())),
        }
    }
}

/// Counters of a decider, for reports.
#[derive(Debug, Clone)]
pub struct DeciderStats {
    /// The policy's name.
    pub policy: String,
    /// Decisions made.
    pub decisions: u64,
    /// `decide` calls made.
    pub calls: u64,
    /// Decisions per call.
    pub batch_sizes: Histogram<u64>,
    /// Duration of each `decide` call, in nanoseconds.
    pub call_ns: Histogram<u64>,
    /// Calls that failed.
    pub errors: u64,
}

impl DeciderStats {
    fn new(policy: String) -> Self {
        let histogram = || Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant, valid bounds");
        Self { policy, decisions: 0, calls: 0, batch_sizes: histogram(), call_ns: histogram(), errors: 0 }
    }
}

/// A thread that owns a policy and decides for many bots in batches.
#[derive(Debug)]
pub struct Decider {
    handle: DeciderHandle,
    thread: std::thread::JoinHandle<DeciderStats>,
}

impl Decider {
    /// Starts a decider thread for `policy`.
    pub fn spawn(policy: Box<dyn Policy>, window: BatchWindow) -> Self {
        let (tx, rx) = std_mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name(format!("decider-{}", policy.name()))
            .spawn(move || decide_loop(policy, window, &rx));
        let thread = match thread {
            Ok(thread) => thread,
            // Without a thread every request fails with "the decider thread has stopped".
            Err(_) => std::thread::spawn(|| DeciderStats::new("unavailable".into())),
        };
        Self { handle: DeciderHandle { tx }, thread }
    }

    /// A handle for one more bot.
    pub fn handle(&self) -> DeciderHandle {
        self.handle.clone()
    }

    /// Stops the decider once every handle is dropped, and returns its counters.
    pub fn finish(self) -> DeciderStats {
        drop(self.handle);
        self.thread.join().unwrap_or_else(|_| DeciderStats::new("panicked".into()))
    }
}

fn decide_loop(mut policy: Box<dyn Policy>, window: BatchWindow, rx: &std_mpsc::Receiver<Request>) -> DeciderStats {
    let mut stats = DeciderStats::new(policy.name().to_owned());
    let mut requests: Vec<Request> = Vec::new();
    let mut observations: Vec<Observation> = Vec::new();
    let mut actions = Vec::new();
    while let Ok(first) = rx.recv() {
        let started = Instant::now();
        requests.push(first);
        while requests.len() < window.max_batch {
            let left = window.max_wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left.min(window.gap)) {
                Ok(request) => requests.push(request),
                Err(_) => break,
            }
        }
        observations.clear();
        observations.extend(requests.iter().map(|request| request.obs));
        let call = Instant::now();
        let result = policy.decide(&observations, &mut actions);
        let _ = stats.call_ns.record(call.elapsed().as_nanos().max(1) as u64);
        stats.calls += 1;
        let _ = stats.batch_sizes.record(requests.len() as u64);
        match result {
            Ok(()) if actions.len() == requests.len() => {
                stats.decisions += requests.len() as u64;
                for (request, action) in requests.drain(..).zip(actions.iter()) {
                    let _ = request.reply.send(Ok(*action));
                }
            }
            Ok(()) => {
                stats.errors += 1;
                let message = format!("the policy gave {} actions for {} observations", actions.len(), requests.len());
                for request in requests.drain(..) {
                    let _ = request.reply.send(Err(message.clone()));
                }
            }
            Err(err) => {
                stats.errors += 1;
                let message = err.to_string();
                for request in requests.drain(..) {
                    let _ = request.reply.send(Err(message.clone()));
                }
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::TrackerPolicy;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_calls_and_get_their_own_answers() {
        let decider = Decider::spawn(
            Box::new(TrackerPolicy),
            BatchWindow { gap: Duration::from_millis(50), max_wait: Duration::from_millis(200), max_batch: 64 },
        );
        let mut tasks = tokio::task::JoinSet::new();
        for idx in 0..32 {
            let handle = decider.handle();
            // Ball coming at the bot, above or below its paddle.
            let y = if idx % 2 == 0 { -0.8 } else { 0.8 };
            tasks.spawn(async move { (idx, handle.decide([0.0, y, -0.5, 0.0, 0.0, 0.0]).await.unwrap()) });
        }
        for (idx, action) in tasks.join_all().await {
            assert_eq!(action, if idx % 2 == 0 { Action::Up } else { Action::Down });
        }
        let stats = decider.finish();
        assert_eq!(stats.decisions, 32);
        assert!(stats.calls < 32, "{} calls for 32 decisions: nothing was batched", stats.calls);
    }
}
