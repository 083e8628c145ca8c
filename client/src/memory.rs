//! The in-memory driver around [`ClientSession`]: a client in the same
//! process as the shard, no sockets. The link itself (its messages, the
//! dialer trait, the conditioned links) is `rally_transport::memory`; this
//! module only moves bytes between it and the session.

use rally_protocol::control::ClientHello;
use rally_transport::memory::{ClientToShard, ConditionedLinks, MemoryEnds, MemoryTransport, ShardToClient};
use tokio::sync::mpsc;

use crate::connection::{ConnectConfig, ConnectError, Connection, TransportKind};
use crate::driver::{DriverHandle, DriverPorts, now, pump, wake_at};
use crate::session::{ClientEvent, ClientSession, ClientStats};

/// Dials, says hello with `credential`, and waits for the welcome (up to
/// `config.connect_timeout`; `config.addr` is ignored).
pub(crate) async fn connect(
    transport: &MemoryTransport,
    config: &ConnectConfig,
    credential: &ClientHello,
) -> Result<Connection, ConnectError> {
    let MemoryEnds { to_shard, mut from_shard } =
        transport.dialer.dial().map_err(|err| ConnectError::transport("dialing the shard in memory", err))?;
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let mut session = ClientSession::new(config.session.clone());
    let mut links =
        ConditionedLinks::new(transport.conditions, transport.seed.wrapping_add(rand::random::<u32>().into()));
    // The hello goes as control, reliably (and as late as the link makes it:
    // its round trip seeds the session's clock); the answer comes the same way.
    let start = now();
    links.control_up.push(start, session.hello(start, credential));
    let mut early_datagrams = Vec::new();
    // The shard closed its end; its last frames (a refusal) may still be in the conditioner.
    let mut closed = false;
    let welcome = 'welcome: loop {
        let wake = links.next_delivery().map_or(deadline, |due| tokio::time::Instant::from_std(due).min(deadline));
        tokio::select! {
            message = from_shard.recv(), if !closed => closed = !links.push_down(now(), message),
            () = tokio::time::sleep_until(wake) => {}
        }
        let now = now();
        closed |= !links.deliver_up(now, &to_shard);
        while let Some(bytes) = links.down.poll(now) {
            early_datagrams.push(bytes);
        }
        while let Some(bytes) = links.control_down.poll(now) {
            session.handle_control(now, &bytes)?;
            match session.poll_event() {
                Some(ClientEvent::Welcomed(welcome)) => break 'welcome *welcome,
                Some(ClientEvent::Refused(refusal)) => return Err(ConnectError::Refused(refusal)),
                _ => {}
            }
        }
        if closed && links.control_down.next_delivery().is_none() {
            return Err(ConnectError::Closed);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ConnectError::Timeout("the answer to hello in memory"));
        }
    };
    let now = now();
    for datagram in early_datagrams {
        session.handle_datagram(now, &datagram);
    }
    let driver = DriverHandle::spawn(welcome, |ports, leave| drive(session, links, to_shard, from_shard, ports, leave));
    Ok(Connection::new(TransportKind::Memory, driver, None))
}

async fn drive(
    mut session: ClientSession,
    mut links: ConditionedLinks,
    to_shard: mpsc::UnboundedSender<ClientToShard>,
    mut from_shard: mpsc::UnboundedReceiver<ShardToClient>,
    ports: DriverPorts,
    mut leave: mpsc::UnboundedReceiver<()>,
) -> ClientStats {
    let mut closed_by_shard = false;
    loop {
        let mut wake = wake_at(&session, now());
        if let Some(due) = links.next_delivery() {
            wake = wake.min(tokio::time::Instant::from_std(due));
        }
        tokio::select! {
            message = from_shard.recv(), if !closed_by_shard => closed_by_shard = !links.push_down(now(), message),
            () = tokio::time::sleep_until(wake) => {}
            request = leave.recv() => {
                if request.is_some() {
                    let _ = to_shard.send(ClientToShard::Control(ClientSession::leave()));
                }
                break;
            }
        }
        let now = now();
        while let Some(bytes) = links.down.poll(now) {
            session.handle_datagram(now, &bytes);
        }
        let mut broken = false;
        while let Some(bytes) = links.control_down.poll(now) {
            broken |= session.handle_control(now, &bytes).is_err();
        }
        pump(&mut session, now, &ports, |datagram| links.up.push(now, datagram));
        links.deliver_up(now, &to_shard);
        // The shard's last frames still in the conditioner are read before closing.
        let drained = links.control_down.next_delivery().is_none();
        if broken || session.is_over() || (closed_by_shard && drained) {
            break;
        }
    }
    session.stats().clone()
}
