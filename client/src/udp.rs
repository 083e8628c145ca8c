//! The raw UDP driver around [`ClientSession`]: the cookie handshake, then
//! one task per connection that carries game datagrams and the control stream
//! (on a [`ReliableChannel`]) over one UDP socket. The wire format, the
//! channel and the threat model are in `rally_transport::udp`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rally_protocol::control::ClientHello;
use rally_transport::udp::ReliableChannel;
use rally_transport::udp::wire::{self, Packet};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::connection::{ConnectConfig, ConnectError, Connection, TransportKind};
use crate::driver::{DriverHandle, DriverPorts, now, pump, wake_at};
use crate::session::{ClientEvent, ClientSession, ClientStats};

/// Sent when nothing else went out for this long.
const KEEPALIVE_AFTER: Duration = Duration::from_millis(500);
/// The link is dead after this long without a packet.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshake packets are sent again after this long without an answer.
const HANDSHAKE_RESEND: Duration = Duration::from_millis(200);

/// Proves the address with a cookie, says hello with `credential`, and waits
/// for the welcome. `config.addr` is the shard's raw UDP address;
/// `config.server_name` is ignored.
pub(crate) async fn connect(config: &ConnectConfig, credential: &ClientHello) -> Result<Connection, ConnectError> {
    let bind = if config.addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let socket =
        UdpSocket::bind(bind).await.map_err(|err| ConnectError::transport("binding a client UDP socket", err))?;
    socket.connect(config.addr).await.map_err(|err| ConnectError::transport("connecting the UDP socket", err))?;
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let mut buf = vec![0u8; 2048];
    let request = wire::request();
    let (bucket, cookie) = loop {
        let _ = socket.send(&request).await;
        let wait = tokio::time::Instant::now() + HANDSHAKE_RESEND;
        let answer = loop {
            match tokio::time::timeout_at(wait.min(deadline), socket.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    if let Ok(Packet::Challenge { bucket, cookie }) = Packet::parse(&buf[..n]) {
                        break Some((bucket, cookie));
                    }
                }
                Ok(Err(_)) | Err(_) => break None,
            }
        };
        if let Some(challenge) = answer {
            break challenge;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ConnectError::Timeout("the raw UDP cookie request (is raw UDP enabled on the shard?)"));
        }
    };
    let mut session = ClientSession::new(config.session.clone());
    let connect = wire::connect(bucket, &cookie, &session.hello(now(), credential));
    let mut channel = ReliableChannel::new();
    let mut early_datagrams = Vec::new();
    let welcome = 'welcome: loop {
        let _ = socket.send(&connect).await;
        let wait = tokio::time::Instant::now() + HANDSHAKE_RESEND;
        loop {
            let n = match tokio::time::timeout_at(wait.min(deadline), socket.recv(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) | Err(_) => break,
            };
            let packet = &buf[..n];
            match Packet::parse(packet) {
                Ok(Packet::Segment { .. } | Packet::Ack { .. }) => {
                    let now = now();
                    let bytes = channel.handle(now, packet);
                    while let Some(ack) = channel.poll_transmit(now) {
                        let _ = socket.send(&ack).await;
                    }
                    session.handle_control(now, &bytes)?;
                    match session.poll_event() {
                        Some(ClientEvent::Welcomed(welcome)) => break 'welcome *welcome,
                        Some(ClientEvent::Refused(refusal)) => return Err(ConnectError::Refused(refusal)),
                        _ => {}
                    }
                }
                Ok(Packet::Datagram(datagram)) => early_datagrams.push(datagram.to_vec()),
                Ok(Packet::Disconnect { .. }) => return Err(ConnectError::Closed),
                _ => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ConnectError::Timeout("the answer to hello over raw UDP"));
        }
    };
    let now = now();
    for datagram in early_datagrams {
        session.handle_datagram(now, &datagram);
    }
    let driver = DriverHandle::spawn(welcome, |ports, leave| drive(session, channel, socket, ports, leave));
    Ok(Connection::new(TransportKind::Udp, driver, None))
}

async fn drive(
    mut session: ClientSession,
    mut channel: ReliableChannel,
    socket: UdpSocket,
    ports: DriverPorts,
    mut leave: mpsc::UnboundedReceiver<()>,
) -> ClientStats {
    let mut buf = vec![0u8; 2048];
    let mut last_heard = now();
    let mut last_sent = now();
    let mut leaving: Option<Instant> = None;
    let mut closed_by_shard = false;
    loop {
        let mut wake = wake_at(&session, now());
        if let Some(resend) = channel.poll_timeout() {
            wake = wake.min(tokio::time::Instant::from_std(resend));
        }
        wake = wake.min(tokio::time::Instant::from_std(last_sent + KEEPALIVE_AFTER));
        tokio::select! {
            received = socket.recv(&mut buf) => {
                let Ok(n) = received else { break };
                let now = now();
                last_heard = now;
                let packet = &buf[..n];
                match Packet::parse(packet) {
                    Ok(Packet::Datagram(datagram)) => session.handle_datagram(now, datagram),
                    Ok(Packet::Segment { .. } | Packet::Ack { .. }) => {
                        let bytes = channel.handle(now, packet);
                        if !bytes.is_empty() && session.handle_control(now, &bytes).is_err() {
                            break;
                        }
                    }
                    Ok(Packet::Disconnect { .. }) => closed_by_shard = true,
                    _ => {}
                }
            }
            () = tokio::time::sleep_until(wake) => {}
            request = leave.recv(), if leaving.is_none() => {
                if request.is_some() {
                    channel.send(&ClientSession::leave());
                }
                leaving = Some(now() + Duration::from_secs(2));
            }
        }
        let now = now();
        if leaving.is_none() {
            pump(&mut session, now, &ports, |datagram| {
                let _ = socket.try_send(&wire::datagram(&datagram));
                last_sent = now;
            });
        } else {
            while let Some(event) = session.poll_event() {
                let _ = ports.events.send(event);
            }
        }
        while let Some(packet) = channel.poll_transmit(now) {
            let _ = socket.try_send(&packet);
            last_sent = now;
        }
        if now >= last_sent + KEEPALIVE_AFTER {
            let _ = socket.try_send(&wire::keepalive());
            last_sent = now;
        }
        if closed_by_shard || session.is_over() || now >= last_heard + IDLE_TIMEOUT {
            break;
        }
        if leaving.is_some_and(|deadline| channel.is_idle() || now >= deadline) {
            break;
        }
    }
    if !closed_by_shard {
        let _ = socket.try_send(&wire::disconnect(0));
    }
    session.stats().clone()
}
