//! The game's side of a connection driver, the same on every transport: the
//! welcome, the intent the driver samples each tick, the events it forwards,
//! and the task itself; and [`pump`], the session work every driver does
//! after its IO. [`crate::Connection`] holds one; each transport's driver
//! task is only its IO.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use rally_protocol::Input;
use rally_protocol::control::{ClientHello, Welcome};
use tokio::sync::mpsc;

use crate::session::{ClientEvent, ClientSession, ClientStats};

/// How long a driver sleeps when the session has no deadline (handshake, end).
const IDLE_WAKE: Duration = Duration::from_millis(50);

/// The drivers' clock: tokio's, so a test under a paused runtime drives the
/// session, the conditioner and the timers in virtual time.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// When a driver must wake next for `session`.
pub(crate) fn wake_at(session: &ClientSession, now: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(session.poll_timeout().unwrap_or(now + IDLE_WAKE))
}

/// Stamps the game's intent, hands every datagram due to `send`, and forwards
/// the session's events: what each driver does after its IO, at every wake-up.
pub(crate) fn pump(session: &mut ClientSession, now: Instant, ports: &DriverPorts, mut send: impl FnMut(Vec<u8>)) {
    session.set_input(now, ports.input.load(Ordering::Relaxed));
    while let Some(datagram) = session.poll_datagram(now) {
        send(datagram);
    }
    while let Some(event) = session.poll_event() {
        let _ = ports.events.send(event);
    }
}

/// What a driver task gets: the intent to sample and where to send events.
pub(crate) struct DriverPorts {
    pub(crate) input: Arc<AtomicU8>,
    pub(crate) events: mpsc::UnboundedSender<ClientEvent>,
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
    /// `drive` also gets the game's request to leave.
    pub(crate) fn spawn<F, Fut>(welcome: Welcome, drive: F) -> Self
    where
        F: FnOnce(DriverPorts, mpsc::UnboundedReceiver<()>) -> Fut,
        Fut: Future<Output = ClientStats> + Send + 'static,
    {
        let input = Arc::new(AtomicU8::new(0));
        let (events_tx, events) = mpsc::unbounded_channel();
        let (leave, leave_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(DriverPorts { input: input.clone(), events: events_tx }, leave_rx));
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
