//! The game's side of a connection driver, the same on every transport: the
//! welcome, the intent the driver samples each tick, the events it forwards,
//! and the task itself. Each transport's connection type wraps one.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use rally_protocol::Input;
use rally_protocol::control::{ClientHello, Welcome};
use tokio::sync::mpsc;

use crate::session::{ClientEvent, ClientStats};

/// What a driver task gets: the intent to sample, where to send events, and
/// the game's request to leave.
pub(crate) struct DriverPorts {
    pub(crate) input: Arc<AtomicU8>,
    pub(crate) events: mpsc::UnboundedSender<ClientEvent>,
    pub(crate) leave: mpsc::UnboundedReceiver<()>,
}

/// A running driver as the game holds it.
#[derive(Debug)]
pub(crate) struct DriverHandle {
    welcome: Welcome,
    input: Arc<AtomicU8>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    task: tokio::task::JoinHandle<ClientStats>,
    leave: mpsc::UnboundedSender<()>,
}

impl DriverHandle {
    /// Spawns the driver `drive` makes from its ports, for the seat `welcome` gave.
    pub(crate) fn spawn<F, Fut>(welcome: Welcome, drive: F) -> Self
    where
        F: FnOnce(DriverPorts) -> Fut,
        Fut: Future<Output = ClientStats> + Send + 'static,
    {
        let input = Arc::new(AtomicU8::new(0));
        let (events_tx, events) = mpsc::unbounded_channel();
        let (leave, leave_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(DriverPorts { input: input.clone(), events: events_tx, leave: leave_rx }));
        Self { welcome, input, events, task, leave }
    }

    pub(crate) fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    pub(crate) fn resume_credential(&self) -> ClientHello {
        ClientHello::Resume {
            match_id: self.welcome.match_id,
            seat: self.welcome.seat,
            secret: self.welcome.resume_secret,
        }
    }

    pub(crate) fn set_input(&self, input: Input) {
        self.input.store(input, Ordering::Relaxed);
    }

    pub(crate) async fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    pub(crate) fn leave(&self) {
        let _ = self.leave.send(());
    }

    pub(crate) fn abort(self) {
        self.task.abort();
    }

    pub(crate) async fn finish(self) -> ClientStats {
        self.task.await.unwrap_or_default()
    }
}
