//! Operations endpoints: Prometheus metrics, liveness and readiness over HTTP.
//!
//! One listener serves `/metrics` (Prometheus text format), `/healthz` (200
//! while the process runs) and `/readyz` (200 while accepting new matches, 503
//! while draining), so one address covers every role of a process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle.
/// Later calls (several roles in one process, tests) share the first one.
pub fn prometheus() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.033, 0.066, 0.1, 0.25, 0.5, 1.0],
                )
                // Ticks fall well under a millisecond at moderate load, where the
                // suffix buckets above jump 0.1 → 0.25 → 0.5 ms and a 10% change
                // in a 0.2–0.3 ms p99 disappears inside one bucket: 50 µs steps to
                // 1 ms, 0.25 ms steps to 5 ms (4 ms, the capacity budget, stays a
                // bound, so "within 4 ms" is counted exactly), then coarser to 100 ms.
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Full("rally_shard_tick_seconds".into()), &tick_buckets())
                })
                // Time in the queue runs to minutes (bots fill seats after 15 s), past the
                // tick-sized buckets above; a full name wins over a suffix.
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full("rally_matchmaker_wait_seconds".into()),
                        &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0],
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Suffix("_bytes".into()),
                        &[2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
                    )
                })
                .expect("bucket lists are non-empty");
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (an embedding application's): keep ours unattached.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// The bucket bounds of `rally_shard_tick_seconds`, in seconds (see [`prometheus`]).
/// Computed from whole microseconds so each bound is the double nearest its
/// decimal (`0.004` exactly what the harness compares with).
pub fn tick_buckets() -> Vec<f64> {
    let fine = (1..=20u32).map(|step| step * 50);
    let quarter_ms = (5..=20u32).map(|step| step * 250);
    let coarse = [7_500, 10_000, 16_000, 25_000, 33_000, 50_000, 66_000, 100_000];
    fine.chain(quarter_ms).chain(coarse).map(|micros| f64::from(micros) / 1e6).collect()
}

/// Readiness shared between a role and its ops endpoint.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    draining: Arc<AtomicBool>,
}

impl Readiness {
    /// Marks the role as no longer accepting new work.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether new work is accepted.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct OpsState {
    metrics: PrometheusHandle,
    readiness: Readiness,
}

/// Binds the ops listener and serves it until the runtime stops.
pub async fn serve(addr: SocketAddr, readiness: Readiness) -> anyhow::Result<SocketAddr> {
    let state = OpsState { metrics: prometheus(), readiness };
    let app = Router::new()
        .route("/metrics", get(|State(state): State<OpsState>| async move { state.metrics.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(state): State<OpsState>| async move {
                if state.readiness.is_ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                }
            }),
        )
        .with_state(state);
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the metrics address {addr}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "ops endpoint stopped");
        }
    });
    Ok(local)
}
