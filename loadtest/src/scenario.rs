//! What a scenario is: a recipe for one simulated client, run once per client
//! by the harness's runner ([`crate::run`]).
//!
//! The runner owns the schedule (ramp, duration, stop) and the measurement
//! plumbing; a scenario only says what one client does, using the client SDK
//! and the services' public APIs exactly as a game would, and records what it
//! sees into the shared [`Recorder`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::measure::Recorder;

/// A boxed client future.
pub type ClientFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A load scenario: what each simulated client does.
pub trait Scenario: Send + Sync + std::fmt::Debug + 'static {
    /// Its name in reports (`connect`, `chat`, …).
    fn name(&self) -> &'static str;

    /// Runs client `client.idx` until its work is done or `client.stop` fires,
    /// recording everything it measures (errors included) into `client.recorder`.
    fn client(self: Arc<Self>, client: ClientSlot) -> ClientFuture;
}

/// What the runner hands each client.
#[derive(Debug, Clone)]
pub struct ClientSlot {
    /// The client's number, from 0, in start order.
    pub idx: u64,
    /// Where its measures go.
    pub recorder: Arc<Recorder>,
    /// Live gauges for progress and the timeline.
    pub live: Arc<Live>,
    /// Becomes true when the run's time is up: finish politely and return.
    pub stop: StopSignal,
}

/// The run's stop flag, as each client sees it.
#[derive(Debug, Clone)]
pub struct StopSignal(pub(crate) watch::Receiver<bool>);

impl StopSignal {
    /// Whether the run is stopping.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the run is stopping (at once if it already is).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Gauges that go up and down while a run progresses.
#[derive(Debug, Default)]
pub struct Live {
    /// Clients connected right now (to a shard, or holding a session).
    pub clients_active: AtomicU64,
}

impl Live {
    /// One more client is connected; the returned guard counts it down when dropped.
    pub fn connected(self: &Arc<Self>) -> ActiveGuard {
        self.clients_active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }
}

/// Counts a connected client until dropped.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Live>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.clients_active.fetch_sub(1, Ordering::Relaxed);
    }
}
