//! `--baseline quinn-echo` / `udp-echo`: the same connection count, ramp and
//! datagram rate against a bare quinn (or raw UDP) datagram echo on the server
//! core, measured in the same run just before the scenario, so the shard can be
//! compared with the most a server on that transport could do on that core.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::Phase;
use crate::echo::{self, EchoCounters, EchoKind};
use crate::game::GameTarget;
use crate::report::BaselineFigures;
use crate::stack::EmbeddedEcho;
use crate::sys;

/// Echo datagrams per second per connection: the shard's snapshot rate.
pub const ECHO_HZ: u32 = 30;

/// Measures the `kind` echo with `connections` clients started at `ramp_per_sec`,
/// then held for `hold`. The shard fields of the result are left at zero.
pub async fn measure_echo(
    kind: EchoKind,
    connections: u64,
    ramp_per_sec: f64,
    hold: Duration,
    core: Option<usize>,
    n_endpoints: usize,
) -> anyhow::Result<BaselineFigures> {
    let server = EmbeddedEcho::start(kind, core)?;
    let endpoints: Vec<quinn::Endpoint> =
        if kind == EchoKind::Quinn { sys::client_endpoints(&server.fingerprint, n_endpoints)? } else { Vec::new() };
    let target = GameTarget { addr: server.addr, server_name: "localhost".into() };
    let counters = Arc::new(EchoCounters::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let start = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / ramp_per_sec.max(0.001));
    let mut tasks = Vec::with_capacity(connections as usize);
    if kind == EchoKind::Udp {
        // Every raw UDP client in one batched task, which ramps them itself.
        let clients =
            echo::udp_clients(server.addr, connections, ramp_per_sec, ECHO_HZ, counters.clone(), phase_rx.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(err) = clients.await {
                tracing::error!(%err, "the raw UDP echo's clients stopped");
            }
        }));
    }
    if kind == EchoKind::Quinn {
        for idx in 0..connections {
            tokio::time::sleep_until(start + period.mul_f64(idx as f64)).await;
            let endpoint = endpoints[idx as usize % endpoints.len()].clone();
            tasks.push(tokio::spawn(echo::client(
                endpoint,
                target.clone(),
                ECHO_HZ,
                counters.clone(),
                phase_rx.clone(),
            )));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while counters.settled() < connections && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (cpu_before, at_before) = (server.cpu(), Instant::now());
    let _ = phase_tx.send(Phase::Hold);
    tokio::time::sleep(hold).await;
    let (cpu_after, at_after) = (server.cpu(), Instant::now());
    let _ = phase_tx.send(Phase::Stop);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let window_s = at_after.duration_since(at_before).as_secs_f64().max(1e-9);
    let sent = counters.sent.load(Ordering::Relaxed);
    let echoed = counters.echoed.load(Ordering::Relaxed);
    Ok(BaselineFigures {
        kind: kind.name().to_owned(),
        connections,
        connected: counters.connected.load(Ordering::Relaxed),
        window_s,
        datagrams_per_s: (sent + echoed) as f64 / window_s,
        loss: if sent == 0 { 1.0 } else { 1.0 - echoed as f64 / sent as f64 },
        cpu_pct: cpu_before.zip(cpu_after).map(|(a, b)| 100.0 * b.saturating_sub(a).as_secs_f64() / window_s),
        ..BaselineFigures::default()
    })
}

/// Fills in the shard side of `baseline` and the two ratios.
pub fn compare(
    mut baseline: BaselineFigures,
    shard_datagrams_per_s: f64,
    shard_cpu_pct: Option<f64>,
) -> BaselineFigures {
    baseline.shard_datagrams_per_s = shard_datagrams_per_s;
    baseline.rate_ratio = (baseline.datagrams_per_s > 0.0).then(|| shard_datagrams_per_s / baseline.datagrams_per_s);
    baseline.efficiency_ratio = match (shard_cpu_pct, baseline.cpu_pct) {
        (Some(shard_cpu), Some(echo_cpu)) if shard_cpu > 0.0 && echo_cpu > 0.0 && baseline.datagrams_per_s > 0.0 => {
            Some((shard_datagrams_per_s / shard_cpu) / (baseline.datagrams_per_s / echo_cpu))
        }
        _ => None,
    };
    baseline
}
