//! Scaffolding for the root package's tests that run the fleet as processes:
//! a PostgreSQL cluster and a `redis-server` of the test's own ([`postgres`],
//! [`redis`]), `rally` roles as child processes ([`process`]), free ports and
//! polling with a deadline.

#![expect(unreachable_pub, reason = "a module of each test binary, not a library")]
// Not `expect`: each test binary that includes this module uses a different part of it.
#![allow(dead_code, reason = "each test binary uses a different part of this module")]

pub mod postgres;
pub mod process;
pub mod redis;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A TCP port nothing listens on now (bound, then released), for a role that
/// must come back on the same port after a restart.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free TCP port")
        .port()
}

/// A UDP port nothing is bound to now (a shard's QUIC port).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").and_then(|socket| socket.local_addr()).expect("a free UDP port").port()
}

/// Unix milliseconds, the clock every role stamps its records with (one machine, one clock).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Polls `condition` every 50 ms until it holds and returns how long that
/// took, or fails naming `what` once `limit` has passed. For state reached
/// over the network or in other processes, which offers no signal to wait on.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if condition().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "never happened within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
