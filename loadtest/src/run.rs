//! The runner: starts a scenario's clients at the ramp rate, holds the load
//! for the duration, stops them, and meanwhile samples the timeline once a
//! second, shows live progress, and reads the shard's metrics endpoint at the
//! edges of the measured window (from the end of the ramp to the stop).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::measure::{Counters, Histo, Measures, Recorder};
use crate::prometheus::{self, MetricsSnapshot};
use crate::report::{IP_UDP_HEADER_BYTES, Sample, ShardFigures, SystemUdp, TICK_BUDGET_SECONDS};
use crate::scenario::{ClientSlot, Live, Scenario, StopSignal};
use crate::sys;

/// The schedule of a run.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Clients to start.
    pub clients: u64,
    /// Clients started per second.
    pub ramp_per_sec: f64,
    /// How long the load is held after the last client started (the run ends
    /// earlier if every client finishes its work).
    pub duration: Duration,
    /// How long clients get to finish after the stop before they are abandoned.
    pub grace: Duration,
    /// Draw live progress on the terminal.
    pub progress: bool,
}

/// What the runner watches besides the clients.
#[derive(Default)]
pub struct Observe {
    /// The shard's metrics endpoint.
    pub shard_metrics: Option<SocketAddr>,
    /// CPU time of the shard (its thread or process) so far.
    pub shard_cpu: Option<Box<dyn Fn() -> Option<Duration> + Send + Sync>>,
    /// CPU time of other servers in this process (to exclude from the harness's own).
    pub other_cpu: Vec<Box<dyn Fn() -> Option<Duration> + Send + Sync>>,
}

impl std::fmt::Debug for Observe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observe").field("shard_metrics", &self.shard_metrics).finish_non_exhaustive()
    }
}

/// Reads the embedded shard's exact tick-duration histogram (µs) recorded
/// since the last call, and starts it afresh: `ShardLive::take_tick_durations`.
pub type TickDurations = Box<dyn Fn() -> hdrhistogram::Histogram<u64> + Send + Sync>;

/// More of the shard to watch than [`Observe`] has (kept apart so that adding
/// one does not touch every caller of [`drive`]).
#[derive(Default)]
pub struct ShardProbes {
    /// The shard's own tick histogram (an embedded shard's `ShardLive`): the
    /// window's tick percentiles come from it exactly, not from buckets.
    pub tick_durations: Option<TickDurations>,
    /// The process id of a shard that runs as its own process on this machine:
    /// its RSS is read before the first client and after the ramp, for the
    /// memory per connection. Never the harness's own process (an embedded
    /// shard shares it with the clients, so its growth is not the shard's).
    pub shard_pid: Option<u32>,
}

impl std::fmt::Debug for ShardProbes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardProbes")
            .field("tick_durations", &self.tick_durations.is_some())
            .field("shard_pid", &self.shard_pid)
            .finish()
    }
}

/// Resident memory of process `pid` in bytes (`VmRSS` of `/proc/PID/status`, Linux).
pub fn process_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.trim_start_matches("VmRSS:").trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Everything the clients measured.
    pub measures: Measures,
    /// One sample a second.
    pub timeline: Vec<Sample>,
    /// The shard's figures over the window, when its metrics were readable.
    pub shard: Option<ShardFigures>,
    /// Seconds from the first client to the end.
    pub wall_s: f64,
    /// The measured window, s.
    pub window_s: f64,
    /// Harness CPU over the run, % of one core.
    pub harness_cpu_pct: Option<f64>,
    /// When the clients were told to stop, ms since the Unix epoch.
    pub stopped_unix_ms: u64,
    /// Matches the clients saw ending on their own, by id.
    pub finished_matches: std::collections::BTreeSet<u64>,
    /// The machine's UDP counters over the window, where readable.
    pub system_udp: Option<SystemUdp>,
}

/// Runs `scenario` on the current runtime according to `plan`.
pub async fn drive(scenario: Arc<dyn Scenario>, plan: &RunPlan, observe: Observe) -> RunOutput {
    drive_with(scenario, plan, observe, ShardProbes::default()).await
}

/// [`drive`], also reading what `probes` reach: the shard's exact tick
/// histogram, and a separate shard process's RSS.
pub async fn drive_with(
    scenario: Arc<dyn Scenario>,
    plan: &RunPlan,
    observe: Observe,
    probes: ShardProbes,
) -> RunOutput {
    let ShardProbes { tick_durations, shard_pid } = probes;
    let rss_before = shard_pid.and_then(process_rss_bytes);
    let recorder = Arc::new(Recorder::default());
    let live = Arc::new(Live::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = progress_bar(plan);
    let observe = Arc::new(observe);
    let cpu_start = cpu_mark(&observe);
    let start = Instant::now();

    let (sampler_stop_tx, sampler_stop_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample_timeline(
        recorder.clone(),
        live.clone(),
        observe.shard_metrics,
        progress.clone(),
        plan.clients,
        start,
        sampler_stop_rx,
    ));

    let mut tasks = JoinSet::new();
    let period = Duration::from_secs_f64(1.0 / plan.ramp_per_sec.max(0.001));
    for idx in 0..plan.clients {
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + period.mul_f64(idx as f64))).await;
        recorder.count(|counters| counters.clients_started += 1);
        let slot =
            ClientSlot { idx, recorder: recorder.clone(), live: live.clone(), stop: StopSignal(stop_rx.clone()) };
        tasks.spawn(scenario.clone().client(slot));
    }

    let window_start = Instant::now();
    let rss_after_ramp = shard_pid.and_then(process_rss_bytes);
    let connections_after_ramp = live.clients_active.load(Ordering::Relaxed);
    let udp_before = sys::UdpCounters::read();
    let metrics_before = scrape_optional(observe.shard_metrics).await;
    let shard_cpu_before = observe.shard_cpu.as_ref().and_then(|cpu| cpu());
    // The ramp's ticks are dropped: the exact histogram covers the window only.
    if let Some(take) = &tick_durations {
        take();
    }
    let hold = tokio::time::sleep(plan.duration);
    tokio::pin!(hold);
    loop {
        tokio::select! {
            () = &mut hold => break,
            next = tasks.join_next() => if next.is_none() { break },
        }
    }
    let window_end = Instant::now();
    let metrics_after = scrape_optional(observe.shard_metrics).await;
    let shard_cpu_after = observe.shard_cpu.as_ref().and_then(|cpu| cpu());
    let window_ticks = tick_durations.as_ref().map(|take| Histo::from_micros(&take()));
    let window_s = window_end.duration_since(window_start).as_secs_f64().max(1e-9);
    let system_udp = sys::UdpCounters::read().since(&udp_before, window_s);

    let stopped_unix_ms = rally_transport::unix_ms();
    let _ = stop_tx.send(true);
    let grace = tokio::time::sleep(plan.grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            () = &mut grace => {
                let stuck = tasks.len() as u64;
                if stuck > 0 {
                    recorder.lock().errors.insert("client_stuck_at_stop".into(), stuck);
                }
                tasks.abort_all();
                break;
            }
            next = tasks.join_next() => if next.is_none() { break },
        }
    }
    let _ = sampler_stop_tx.send(true);
    let timeline = sampler.await.unwrap_or_default();
    let wall_s = start.elapsed().as_secs_f64();
    let cpu_end = cpu_mark(&observe);
    let harness_cpu_pct = match (cpu_start, cpu_end) {
        (Some(before), Some(after)) => Some(100.0 * after.saturating_sub(before).as_secs_f64() / wall_s.max(1e-9)),
        _ => None,
    };
    progress.finish_and_clear();

    let shard = match (metrics_before, metrics_after, observe.shard_metrics) {
        (Some(before), Some(after), Some(addr)) => {
            let cpu_pct = match (shard_cpu_before, shard_cpu_after) {
                (Some(a), Some(b)) => Some(100.0 * b.saturating_sub(a).as_secs_f64() / window_s),
                _ => None,
            };
            let mut figures = shard_figures(addr.to_string(), &before, &after, window_s, cpu_pct);
            if let Some(exact) = window_ticks {
                with_exact_ticks(&mut figures, exact);
            }
            if let (Some(before), Some(after)) = (rss_before, rss_after_ramp) {
                figures.rss_before_bytes = Some(before);
                figures.rss_after_ramp_bytes = Some(after);
                figures.connections_after_ramp = Some(connections_after_ramp);
            }
            Some(figures)
        }
        _ => None,
    };
    RunOutput {
        measures: recorder.snapshot(),
        timeline,
        shard,
        wall_s,
        window_s,
        harness_cpu_pct,
        stopped_unix_ms,
        finished_matches: recorder.finished_matches(),
        system_udp,
    }
}

/// This process's CPU time minus the servers it hosts.
fn cpu_mark(observe: &Observe) -> Option<Duration> {
    let own = sys::process_cpu(std::process::id())?;
    let servers: Duration = observe.shard_cpu.iter().chain(observe.other_cpu.iter()).filter_map(|cpu| cpu()).sum();
    Some(own.saturating_sub(servers))
}

fn progress_bar(plan: &RunPlan) -> ProgressBar {
    if !plan.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(plan.clients), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} clients started  {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Reads the metrics endpoint; a failure is logged and the figures left out.
pub async fn scrape_optional(addr: Option<SocketAddr>) -> Option<MetricsSnapshot> {
    match prometheus::scrape(addr?).await {
        Ok(snapshot) => Some(snapshot),
        Err(err) => {
            tracing::warn!(%err, "could not read the shard's metrics");
            None
        }
    }
}

/// The shard's figures between two scrapes.
pub fn shard_figures(
    source: String,
    before: &MetricsSnapshot,
    after: &MetricsSnapshot,
    window_s: f64,
    cpu_pct: Option<f64>,
) -> ShardFigures {
    let delta = |name: &str| (after.value(name) - before.value(name)).max(0.0);
    let tick_buckets = prometheus::bucket_delta(
        &before.buckets("rally_shard_tick_seconds"),
        &after.buckets("rally_shard_tick_seconds"),
    );
    // A histogram when the exporter has buckets for it, a rolling-window summary otherwise.
    let reflect = prometheus::bucket_delta(
        &before.buckets("rally_shard_input_reflect_ticks"),
        &after.buckets("rally_shard_input_reflect_ticks"),
    );
    let reflect_p99 = prometheus::quantile(&reflect, 0.99)
        .or_else(|| after.summary_quantile("rally_shard_input_reflect_ticks", "0.99"));
    ShardFigures {
        source,
        window_s,
        tick_p50_ms: prometheus::quantile(&tick_buckets, 0.5).map(|s| s * 1e3),
        tick_p99_ms: prometheus::quantile(&tick_buckets, 0.99).map(|s| s * 1e3),
        ticks_within_budget: prometheus::fraction_at_most(&tick_buckets, TICK_BUDGET_SECONDS),
        ticks: tick_buckets.last().map_or(0, |(_, count)| *count as u64),
        tick_buckets,
        late_ticks: delta("rally_shard_late_ticks_total") as u64,
        datagrams_in_per_s: delta("rally_shard_datagrams_in_total") / window_s,
        datagrams_out_per_s: delta("rally_shard_datagrams_out_total") / window_s,
        dropped: (delta("rally_shard_datagrams_dropped_total")
            + delta("rally_shard_inbound_dropped_total")
            + delta("rally_shard_rate_limited_datagrams_total")) as u64,
        input_reflect_p99_ticks: reflect_p99,
        cpu_pct,
        tick_source: "prometheus buckets".to_owned(),
        ..ShardFigures::default()
    }
}

/// Replaces the bucket-interpolated tick percentiles of `figures` with those
/// of the shard's own histogram over the same window.
pub fn with_exact_ticks(figures: &mut ShardFigures, exact: Histo) {
    if exact.count() == 0 {
        return;
    }
    figures.tick_p50_ms = exact.quantile_ms(0.5);
    figures.tick_p99_ms = exact.quantile_ms(0.99);
    figures.tick_p999_ms = exact.quantile_ms(0.999);
    figures.tick_exact = Some(exact);
    figures.tick_source = "exact histogram".to_owned();
}

async fn sample_timeline(
    recorder: Arc<Recorder>,
    live: Arc<Live>,
    metrics: Option<SocketAddr>,
    progress: ProgressBar,
    clients: u64,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) -> Vec<Sample> {
    let mut timeline = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut previous_counters = Counters::default();
    let mut previous_metrics = scrape_optional(metrics).await;
    let mut previous_at = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        let now = Instant::now();
        let elapsed = now.duration_since(previous_at).as_secs_f64().max(1e-9);
        previous_at = now;
        let (counters, errors) = recorder.totals();
        let recent = recorder.take_recent();
        let active = live.clients_active.load(Ordering::Relaxed);
        let per_client = |bytes: u64, datagrams: u64| {
            (active > 0).then(|| (bytes + datagrams * IP_UDP_HEADER_BYTES) as f64 / elapsed / active as f64)
        };
        let mut sample = Sample {
            t_s: now.duration_since(start).as_secs_f64(),
            clients_started: counters.clients_started,
            clients_active: active,
            matches_running: counters
                .matches_started
                .saturating_sub(counters.matches_finished)
                .saturating_sub(counters.matches_cut),
            matches_finished: counters.matches_finished,
            errors,
            rtt_p99_ms: recent.get("rtt").and_then(|h| h.quantile_ms(0.99)),
            server_added_p99_ms: recent.get("server_added").and_then(|h| h.quantile_ms(0.99)),
            ticket_assign_p99_ms: recent.get("ticket_assign").and_then(|h| h.quantile_ms(0.99)),
            chat_delivery_p99_ms: recent.get("chat_delivery").and_then(|h| h.quantile_ms(0.99)),
            bytes_in_per_client: per_client(
                counters.udp_bytes_in - previous_counters.udp_bytes_in,
                counters.udp_datagrams_in - previous_counters.udp_datagrams_in,
            ),
            bytes_out_per_client: per_client(
                counters.udp_bytes_out - previous_counters.udp_bytes_out,
                counters.udp_datagrams_out - previous_counters.udp_datagrams_out,
            ),
            ..Sample::default()
        };
        if counters.tickets > 0 {
            sample
                .extra
                .insert("tickets_waiting".into(), counters.tickets.saturating_sub(counters.tickets_assigned) as f64);
        }
        if counters.chat_received > 0 || counters.chat_sent > 0 {
            sample.extra.insert(
                "chat_received_per_s".into(),
                (counters.chat_received - previous_counters.chat_received) as f64 / elapsed,
            );
        }
        if let Some(addr) = metrics {
            let scraped = scrape_optional(Some(addr)).await;
            if let (Some(before), Some(after)) = (&previous_metrics, &scraped) {
                let buckets = prometheus::bucket_delta(
                    &before.buckets("rally_shard_tick_seconds"),
                    &after.buckets("rally_shard_tick_seconds"),
                );
                sample.tick_p50_ms = prometheus::quantile(&buckets, 0.5).map(|s| s * 1e3);
                sample.tick_p99_ms = prometheus::quantile(&buckets, 0.99).map(|s| s * 1e3);
                sample.late_ticks = Some(
                    (after.value("rally_shard_late_ticks_total") - before.value("rally_shard_late_ticks_total"))
                        .max(0.0) as u64,
                );
                sample.shard_matches = Some(after.value("rally_shard_matches").max(0.0) as u64);
            }
            if scraped.is_some() {
                previous_metrics = scraped;
            }
        }
        progress.set_position(counters.clients_started.min(clients));
        progress.set_message(format!(
            "connected {} | matches {} running, {} finished | errors {} | rtt p99 {} | tick p99 {}{}",
            active,
            sample.matches_running,
            sample.matches_finished,
            errors,
            sample.rtt_p99_ms.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms")),
            sample.tick_p99_ms.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms")),
            sample.late_ticks.map_or_else(String::new, |late| format!(", {late} late")),
        ));
        previous_counters = counters;
        timeline.push(sample);
    }
    timeline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_proc_status() {
        let status = "Name:\trally\nVmPeak:\t  2000 kB\nVmRSS:\t  1234 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: lots\n"), None);
        assert_eq!(parse_vm_rss(""), None);
        if cfg!(target_os = "linux") {
            assert!(process_rss_bytes(std::process::id()).is_some_and(|rss| rss > 0));
        }
    }

    #[test]
    fn exact_ticks_replace_the_bucket_percentiles() {
        let mut figures = ShardFigures {
            tick_p99_ms: Some(2.0),
            tick_source: "prometheus buckets".into(),
            ..ShardFigures::default()
        };
        let mut exact = Histo::new();
        for micros in 1..=1000 {
            exact.record_us(micros);
        }
        with_exact_ticks(&mut figures, exact);
        assert_eq!(figures.tick_source, "exact histogram");
        let p99 = figures.tick_p99_ms.unwrap();
        assert!((0.989..=0.991).contains(&p99), "{p99}");
        assert!(figures.tick_p999_ms.unwrap() > p99);
        // An empty histogram (no tick ran) leaves the buckets' figures.
        let mut untouched = ShardFigures { tick_p99_ms: Some(2.0), ..ShardFigures::default() };
        with_exact_ticks(&mut untouched, Histo::new());
        assert_eq!(untouched.tick_p99_ms, Some(2.0));
    }
}
