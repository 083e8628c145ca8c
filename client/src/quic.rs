//! The QUIC driver around [`ClientSession`]: the handshake, then one task per
//! connection that moves control-stream bytes and datagrams between quinn and
//! the session ([`crate::driver::pump`] does the rest).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use rally_protocol::control::ClientHello;
use tokio::sync::mpsc;

use crate::connection::{ConnectConfig, ConnectError, Connection, TransportKind};
use crate::driver::{DriverHandle, DriverPorts, now, pump, wake_at};
use crate::session::{ClientEvent, ClientSession, ClientStats};

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

/// A failed QUIC handshake: a certificate the client does not trust is a TLS
/// error (QUIC carries TLS alerts as crypto error codes 0x100-0x1ff).
fn handshake_error(err: quinn::ConnectionError) -> ConnectError {
    if let quinn::ConnectionError::TransportError(transport) = &err
        && u64::from(transport.code) & !0xff == 0x100
    {
        return ConnectError::Tls(transport.to_string());
    }
    ConnectError::transport("QUIC handshake", err)
}

pub(crate) async fn connect(
    endpoint: &quinn::Endpoint,
    config: &ConnectConfig,
    credential: &ClientHello,
) -> Result<Connection, ConnectError> {
    let connecting = endpoint
        .connect(config.addr, &config.server_name)
        .map_err(|err| ConnectError::transport("starting the QUIC handshake", err))?;
    let connection = tokio::time::timeout(config.connect_timeout, connecting)
        .await
        .map_err(|_| ConnectError::Timeout("the QUIC handshake"))?
        .map_err(handshake_error)?;
    let (mut send, mut recv) =
        connection.open_bi().await.map_err(|err| ConnectError::transport("opening the control stream", err))?;
    let mut session = ClientSession::new(config.session.clone());
    send.write_all(&session.hello(now(), credential))
        .await
        .map_err(|err| ConnectError::transport("sending the hello", err))?;
    let mut buf = vec![0u8; 4096];
    let welcome = loop {
        let read = tokio::time::timeout(config.connect_timeout, recv.read(&mut buf))
            .await
            .map_err(|_| ConnectError::Timeout("the answer to hello"))?
            .map_err(|err| ConnectError::transport("reading the control stream", err))?;
        let Some(n) = read else { return Err(ConnectError::Closed) };
        session.handle_control(now(), &buf[..n])?;
        match session.poll_event() {
            Some(ClientEvent::Welcomed(welcome)) => break *welcome,
            Some(ClientEvent::Refused(refusal)) => return Err(ConnectError::Refused(refusal)),
            _ => {}
        }
    };
    let quic = connection.clone();
    let driver = DriverHandle::spawn(welcome, |ports, leave| drive(session, connection, send, recv, ports, leave));
    Ok(Connection::new(TransportKind::Quic, driver, Some(quic)))
}

async fn drive(
    mut session: ClientSession,
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ports: DriverPorts,
    mut leave: mpsc::UnboundedReceiver<()>,
) -> ClientStats {
    let mut buf = vec![0u8; 4096];
    let mut stream_open = true;
    loop {
        let wake = wake_at(&session, now());
        tokio::select! {
            datagram = connection.read_datagram() => {
                let Ok(bytes) = datagram else { break };
                session.handle_datagram(now(), &bytes);
            }
            chunk = recv.read(&mut buf), if stream_open => {
                match chunk {
                    Ok(Some(n)) => {
                        if session.handle_control(now(), &buf[..n]).is_err() {
                            break;
                        }
                    }
                    Ok(None) | Err(_) => stream_open = false,
                }
            }
            () = tokio::time::sleep_until(wake) => {}
            request = leave.recv() => {
                if request.is_some() {
                    let _ = send.write_all(&ClientSession::leave()).await;
                    let _ = send.finish();
                }
                break;
            }
        }
        pump(&mut session, now(), &ports, |datagram| {
            let _ = connection.send_datagram(Bytes::from(datagram));
        });
        // The match ended, or the shard finished the control stream: nothing more will come.
        if session.is_over() || !stream_open {
            break;
        }
    }
    connection.close(0u32.into(), b"bye");
    session.stats().clone()
}
