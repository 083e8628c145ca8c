//! The thin quinn driver around [`ClientSession`]: one task per connection.
//!
//! The game sets its current intent with [`GameConnection::set_input`] at any
//! time; the driver samples it once per tick of the session's clock, sends
//! input datagrams when due, and forwards every [`ClientEvent`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use rally_protocol::Input;
use rally_protocol::control::{ClientHello, Refusal, Welcome};
use tokio::time::Instant;

use crate::driver::{DriverHandle, DriverPorts};
use crate::session::{ClientEvent, ClientSession, ClientStats, SessionConfig};

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct ConnectConfig {
    /// The shard's QUIC address.
    pub addr: SocketAddr,
    /// The name the certificate must be valid for (ignored when pinning by fingerprint).
    pub server_name: String,
    /// Session settings.
    pub session: SessionConfig,
    /// Give up if the handshake takes longer.
    pub connect_timeout: Duration,
}

impl ConnectConfig {
    /// Defaults for a shard at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            server_name: "localhost".into(),
            session: SessionConfig::default(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The shard refused the hello; the refusal says why and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the shard refused the connection ({}): {}", .0.reason.label(), .0.message)]
pub struct Refused(pub Refusal);

/// A client endpoint (one UDP socket) that many connections can share.
pub fn endpoint(client_config: quinn::ClientConfig) -> anyhow::Result<quinn::Endpoint> {
    let mut endpoint =
        quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).context("binding a client UDP socket")?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(Duration::from_secs(2)))
        .max_idle_timeout(Some(Duration::from_secs(10).try_into().context("idle timeout")?));
    let mut client_config = client_config;
    client_config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(client_config);
    Ok(endpoint)
}

/// A live connection to a shard seat.
#[derive(Debug)]
pub struct GameConnection {
    driver: DriverHandle,
    connection: quinn::Connection,
}

impl GameConnection {
    /// Connects, says hello with `credential`, and waits for the welcome.
    /// A refusal is an error carrying the shard's reason and message.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        config: &ConnectConfig,
        credential: &ClientHello,
    ) -> anyhow::Result<Self> {
        let connecting = endpoint.connect(config.addr, &config.server_name).context("starting the QUIC handshake")?;
        let connection = tokio::time::timeout(config.connect_timeout, connecting)
            .await
            .context("QUIC handshake timed out")?
            .context("QUIC handshake failed")?;
        let (mut send, mut recv) = connection.open_bi().await.context("opening the control stream")?;
        let mut session = ClientSession::new(config.session.clone());
        send.write_all(&session.hello(std::time::Instant::now(), credential)).await.context("sending hello")?;
        let mut buf = vec![0u8; 4096];
        let welcome = loop {
            let read = tokio::time::timeout(config.connect_timeout, recv.read(&mut buf))
                .await
                .context("no answer to hello")?
                .context("control stream failed")?;
            let Some(n) = read else { bail!("the shard closed the control stream without answering") };
            session.handle_control(std::time::Instant::now(), &buf[..n]).context("undecodable answer to hello")?;
            match session.poll_event() {
                Some(ClientEvent::Welcomed(welcome)) => break *welcome,
                Some(ClientEvent::Refused(refusal)) => return Err(Refused(refusal).into()),
                _ => {}
            }
        };
        let driver = DriverHandle::spawn(welcome, |ports| drive(session, connection.clone(), send, recv, ports));
        Ok(Self { driver, connection })
    }

    /// The shard's welcome (seat, tick rate, schema, resume secret).
    pub fn welcome(&self) -> &Welcome {
        self.driver.welcome()
    }

    /// The credential that takes this seat back after a dropped connection.
    pub fn resume_credential(&self) -> ClientHello {
        self.driver.resume_credential()
    }

    /// Sets the intent sent from the next tick on.
    pub fn set_input(&self, input: Input) {
        self.driver.set_input(input);
    }

    /// The next event; `None` once the connection is closed and all events are read.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.driver.next_event().await
    }

    /// Leaves the match for good.
    pub fn leave(&self) {
        self.driver.leave();
    }

    /// QUIC's current RTT estimate.
    pub fn rtt(&self) -> Duration {
        self.connection.rtt()
    }

    /// The underlying QUIC connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// Drops the connection abruptly, as a lost network would (no goodbye).
    pub fn abort(self) {
        self.driver.abort();
        self.connection.close(0u32.into(), b"aborted");
    }

    /// Waits for the driver to stop and returns its counters.
    pub async fn finish(self) -> ClientStats {
        self.driver.finish().await
    }
}

async fn drive(
    mut session: ClientSession,
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ports: DriverPorts,
) -> ClientStats {
    let DriverPorts { input, events, mut leave } = ports;
    let mut buf = vec![0u8; 4096];
    let mut stream_open = true;
    let mut last_input_tick = None;
    loop {
        let now = std::time::Instant::now();
        let next_tick = session
            .input_tick(now)
            .and_then(|tick| session.clock().map(|clock| clock.instant_of(tick + 1)))
            .unwrap_or(now + Duration::from_millis(16));
        let wake = session.poll_timeout().map_or(next_tick, |due| due.min(next_tick));
        tokio::select! {
            datagram = connection.read_datagram() => {
                let Ok(bytes) = datagram else { break };
                session.handle_datagram(std::time::Instant::now(), &bytes);
            }
            chunk = recv.read(&mut buf), if stream_open => {
                match chunk {
                    Ok(Some(n)) => {
                        if session.handle_control(std::time::Instant::now(), &buf[..n]).is_err() {
                            break;
                        }
                    }
                    Ok(None) | Err(_) => stream_open = false,
                }
            }
            _ = tokio::time::sleep_until(Instant::from_std(wake)) => {}
            request = leave.recv() => {
                if request.is_some() {
                    let _ = send.write_all(&ClientSession::leave()).await;
                    let _ = send.finish();
                }
                break;
            }
        }
        let now = std::time::Instant::now();
        let intent = input.load(Ordering::Relaxed);
        if let Some(tick) = session.set_input(now, intent)
            && last_input_tick.is_none_or(|last| tick > last)
        {
            last_input_tick = Some(tick);
            let _ = events.send(ClientEvent::InputRecorded { tick, input: intent });
        }
        while let Some(datagram) = session.poll_datagram(now) {
            let _ = connection.send_datagram(Bytes::from(datagram));
        }
        while let Some(event) = session.poll_event() {
            let _ = events.send(event);
        }
        // The match ended, or the shard finished the control stream: nothing more will come.
        if session.is_over() || !stream_open {
            break;
        }
    }
    connection.close(0u32.into(), b"bye");
    session.stats().clone()
}
