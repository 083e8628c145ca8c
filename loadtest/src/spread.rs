//! `connect --processes N`: one `connect` run spread over N child processes of
//! the harness binary, for machines with more cores than one generator can use.
//!
//! The parent owns the shard: it starts an embedded one (on its own core, as a
//! single-process run does, trusting an issuer key the parent made so the
//! children can mint tokens too) or points the children at a running one. It
//! then starts the children, `rally loadtest connect --shard …` each with its
//! share of the clients and of the ramp, a seed of its own (so match ids
//! differ) and a JSON report to write, each pinned to a core of its own where
//! there are enough. It waits for all of them, merges their reports with
//! [`Report::merge`], adds what only the shard's owner knows (the shard's CPU
//! over the measured window, its final match count and results), and judges
//! the thresholds on the merged figures.
//!
//! A child that fails fails the run, with its exit status and the tail of its
//! output; the other children are stopped then.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use ed25519_dalek::SigningKey;
use rally_client::TransportKind;
use rally_transport::unix_ms;

use crate::config::LoadConfig;
use crate::report::{Check, Report};
use crate::stack::{EmbeddedShard, EmbeddedShardConfig};
use crate::sys;

/// The environment variable a child reads its token signing key from
/// (`rally loadtest connect --token-key`), so it never shows in `ps`.
pub const TOKEN_KEY_ENV: &str = "RALLY_LOADTEST_TOKEN_KEY";

/// Key id of the issuer key the parent makes for an embedded shard (the one
/// [`EmbeddedShardConfig::token_key`] is trusted under).
const EMBEDDED_KEY_ID: u8 = 1;

/// Lines of each child's output kept for the error of a failed child.
const TAIL_LINES: usize = 20;

/// How often the parent reads the embedded shard's CPU time while it waits.
const CPU_SAMPLE_PERIOD: Duration = Duration::from_millis(100);

/// A shard someone else runs, as the children need to be told about it.
#[derive(Debug, Clone)]
pub struct SpreadRemote {
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its raw UDP address, for raw UDP runs.
    pub udp_addr: Option<SocketAddr>,
    /// SHA-256 of its certificate.
    pub fingerprint: String,
    /// Its metrics endpoint (tick figures need it).
    pub metrics: Option<SocketAddr>,
    /// Its name, as tokens must carry it.
    pub name: String,
    /// The issuer key it trusts, `KEY_ID:SEED_HEX` (handed to the children in [`TOKEN_KEY_ENV`]).
    pub token_key: String,
    /// Its process id when it runs on this machine: the parent reads its CPU
    /// time over the measured window (children loading a running shard cannot).
    pub pid: Option<u32>,
}

/// Which shard the children load.
#[derive(Debug, Clone)]
pub enum SpreadShard {
    /// One the parent starts on its own thread (pinned to the first core it may use).
    Embedded(EmbeddedShardConfig),
    /// A running one.
    Remote(SpreadRemote),
}

/// Settings of a spread `connect` run.
#[derive(Debug, Clone)]
pub struct SpreadConfig {
    /// The harness executable the children run (`rally`; `std::env::current_exe()` from the CLI).
    pub program: PathBuf,
    /// Child processes to spread the clients over.
    pub processes: usize,
    /// The whole run: all clients, the total ramp, the thresholds judged on the merged report.
    pub load: LoadConfig,
    /// The shard.
    pub shard: SpreadShard,
    /// Points a side needs to win.
    pub points_to_win: u8,
    /// Matches each pair plays back to back; `None`: until the run stops.
    pub rounds: Option<u32>,
    /// The transport clients play over.
    pub transport: TransportKind,
    /// More `rally loadtest connect` flags, given to every child as they are
    /// (e.g. `--driver sdk`).
    pub extra_args: Vec<String>,
}

/// What one child is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildPlan {
    /// Its index, from 0.
    pub idx: usize,
    /// Clients it starts (an even number: whole matches).
    pub clients: u64,
    /// Clients it starts per second (its share of the total ramp).
    pub ramp_per_sec: f64,
    /// Its seed (the run's seed plus its index).
    pub seed: u64,
    /// Cores it is pinned to (`taskset -c`), empty when unpinned.
    pub cores: Vec<usize>,
}

/// Splits `clients` (rounded up to whole matches) over `processes` children,
/// pairs as evenly as possible, each ramping at its share of `ramp_per_sec`
/// so that all of them finish ramping together.
pub fn plan_children(clients: u64, ramp_per_sec: f64, seed: u64, processes: usize) -> anyhow::Result<Vec<ChildPlan>> {
    anyhow::ensure!(processes >= 1, "--processes must be at least 1");
    let pairs = clients.div_ceil(2);
    let children = processes as u64;
    anyhow::ensure!(
        pairs >= children,
        "{processes} processes need at least {} clients (one two-player match each)",
        2 * children
    );
    let total = 2 * pairs;
    Ok((0..children)
        .map(|idx| {
            let child_pairs = pairs / children + u64::from(idx < pairs % children);
            let child_clients = 2 * child_pairs;
            ChildPlan {
                idx: idx as usize,
                clients: child_clients,
                ramp_per_sec: ramp_per_sec * child_clients as f64 / total as f64,
                seed: seed.wrapping_add(idx),
                cores: Vec::new(),
            }
        })
        .collect())
}

/// Which cores go to the embedded shard and to each child, out of `allowed`
/// (the cores this process may run on): the shard takes the first, each child
/// one of the rest when there are enough, otherwise all children share the
/// rest; with a single core (or no pinning) nobody is pinned.
pub fn assign_cores(allowed: &[usize], embedded: bool, processes: usize) -> (Option<usize>, Vec<Vec<usize>>) {
    let (shard_core, rest) = match (embedded, allowed) {
        (true, [first, rest @ ..]) if !rest.is_empty() => (Some(*first), rest),
        (true, _) => return (None, vec![Vec::new(); processes]),
        (false, all) => (None, all),
    };
    let children = if rest.len() >= processes {
        rest.iter().take(processes).map(|core| vec![*core]).collect()
    } else {
        vec![rest.to_vec(); processes]
    };
    (shard_core, children)
}

/// The cores this process may run on (`Cpus_allowed_list` in `/proc/self/status`,
/// so a parent started under `taskset -c 8-15` spreads over cores 8–15);
/// every online core where that cannot be read.
pub fn allowed_cores() -> Vec<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let list = status.lines().find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?;
            parse_core_list(list.trim())
        })
        .filter(|cores| !cores.is_empty())
        .unwrap_or_else(|| (0..sys::cores()).collect())
}

/// Parses a kernel CPU list such as `0-3,8,10-11`; `None` if it is not one.
pub fn parse_core_list(list: &str) -> Option<Vec<usize>> {
    let mut cores = Vec::new();
    for part in list.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        match part.split_once('-') {
            Some((low, high)) => {
                let (low, high): (usize, usize) = (low.parse().ok()?, high.parse().ok()?);
                if low > high || high - low > 4096 {
                    return None;
                }
                cores.extend(low..=high);
            }
            None => cores.push(part.parse().ok()?),
        }
    }
    Some(cores)
}

fn core_list(cores: &[usize]) -> String {
    cores.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

fn seed_hex(seed: &[u8; 32]) -> String {
    seed.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Seconds as `rally loadtest`'s duration parser reads them.
fn seconds(duration: Duration) -> String {
    format!("{}", duration.as_secs_f64())
}

/// Where the children send and how they prove their seats.
struct Target {
    addr: SocketAddr,
    udp_addr: Option<SocketAddr>,
    fingerprint: String,
    metrics: Option<SocketAddr>,
    name: String,
    token_key: String,
}

/// The arguments of one child after the program name.
fn child_args(config: &SpreadConfig, target: &Target, plan: &ChildPlan, json: &Path) -> Vec<String> {
    let load = &config.load;
    let conditions = &load.conditions;
    let mut args: Vec<String> = vec![
        "loadtest".into(),
        "connect".into(),
        "--shard".into(),
        target.addr.to_string(),
        "--fingerprint".into(),
        target.fingerprint.clone(),
        "--shard-name".into(),
        target.name.clone(),
        "--transport".into(),
        config.transport.name().to_owned(),
        "--clients".into(),
        plan.clients.to_string(),
        "--ramp".into(),
        plan.ramp_per_sec.to_string(),
        "--duration".into(),
        seconds(load.duration),
        "--seed".into(),
        plan.seed.to_string(),
        "--loss".into(),
        conditions.loss.to_string(),
        "--latency".into(),
        seconds(conditions.latency),
        "--jitter".into(),
        seconds(conditions.jitter),
        "--duplicate".into(),
        conditions.duplicate.to_string(),
        "--reorder".into(),
        conditions.reorder.to_string(),
        "--endpoints".into(),
        load.endpoints.max(1).to_string(),
        "--points-to-win".into(),
        config.points_to_win.to_string(),
        "--json".into(),
        json.display().to_string(),
        "--no-progress".into(),
        // The parent pins each child with taskset; the child must not move itself to core 1.
        "--no-pin".into(),
    ];
    if let Some(udp_addr) = target.udp_addr {
        args.extend(["--shard-udp".into(), udp_addr.to_string()]);
    }
    if let Some(metrics) = target.metrics {
        args.extend(["--shard-metrics".into(), metrics.to_string()]);
    }
    if let Some(rounds) = config.rounds {
        args.extend(["--rounds".into(), rounds.to_string()]);
    }
    args.extend(config.extra_args.iter().cloned());
    args
}

/// A running child and what it has said so far.
struct Running {
    plan: ChildPlan,
    child: Child,
    json: PathBuf,
    tail: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

/// Copies a child's output line by line: stderr to ours with a `[child N]`
/// prefix, and both into the tail kept for its error.
fn forward_lines(
    idx: usize,
    stream: impl Read + Send + 'static,
    echo: bool,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("spread-child-{idx}")).spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if echo {
                eprintln!("[child {idx}] {line}");
            }
            let Ok(mut tail) = tail.lock() else { break };
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    })
}

fn spawn_child(
    config: &SpreadConfig,
    target: &Target,
    plan: ChildPlan,
    dir: &Path,
    taskset: bool,
) -> anyhow::Result<Running> {
    let json = dir.join(format!("child-{}.json", plan.idx));
    let args = child_args(config, target, &plan, &json);
    let mut command = if taskset && !plan.cores.is_empty() {
        let mut command = Command::new("taskset");
        command.arg("-c").arg(core_list(&plan.cores)).arg(&config.program);
        command
    } else {
        Command::new(&config.program)
    };
    command
        .args(&args)
        .env(TOKEN_KEY_ENV, &target.token_key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child =
        command.spawn().with_context(|| format!("starting child {} ({})", plan.idx, config.program.display()))?;
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let mut readers = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        readers.push(forward_lines(plan.idx, stderr, true, tail.clone())?);
    }
    if let Some(stdout) = child.stdout.take() {
        // Its summary is for the merged report, not for the terminal; kept for errors.
        readers.push(forward_lines(plan.idx, stdout, false, tail.clone())?);
    }
    Ok(Running { plan, child, json, tail, readers, status: None })
}

/// CPU time of the embedded shard's thread, sampled against the wall clock.
#[derive(Debug, Default)]
struct CpuSamples(Vec<(u64, Duration)>);

impl CpuSamples {
    fn sample(&mut self, cpu: Option<Duration>) {
        if let Some(cpu) = cpu {
            self.0.push((unix_ms(), cpu));
        }
    }

    /// CPU time at `at_ms`, interpolated between the samples around it.
    fn at(&self, at_ms: f64) -> Option<f64> {
        let after = self.0.iter().position(|(ms, _)| *ms as f64 >= at_ms)?;
        let (ms_b, cpu_b) = self.0[after];
        if after == 0 {
            return (ms_b as f64 == at_ms).then_some(cpu_b.as_secs_f64());
        }
        let (ms_a, cpu_a) = self.0[after - 1];
        let span = (ms_b - ms_a) as f64;
        let share = if span > 0.0 { (at_ms - ms_a as f64) / span } else { 1.0 };
        Some(cpu_a.as_secs_f64() + share * (cpu_b.as_secs_f64() - cpu_a.as_secs_f64()))
    }

    /// The shard's CPU over `[start_ms, end_ms]`, % of one core.
    fn pct(&self, start_ms: f64, end_ms: f64) -> Option<f64> {
        let (start, end) = (self.at(start_ms)?, self.at(end_ms)?);
        (end_ms > start_ms).then(|| 100.0 * (end - start) / ((end_ms - start_ms) / 1e3))
    }
}

/// A directory for the children's reports, removed on drop.
struct ReportDir(PathBuf);

impl ReportDir {
    fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "rally-loadtest-spread-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for ReportDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the spread: shard, children, merge. Thresholds are evaluated on the merged report.
pub fn run(config: &SpreadConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(
        matches!(config.transport, TransportKind::Quic | TransportKind::Udp),
        "the connect scenario plays over a shard's sockets: quic or udp, not {}",
        config.transport
    );
    let load = &config.load;
    let mut plans = plan_children(load.clients, load.ramp_per_sec, load.seed, config.processes)?;
    let pin = load.effective_pin();
    let allowed = allowed_cores();
    let embedded = matches!(config.shard, SpreadShard::Embedded(_));
    let (shard_core, child_cores) =
        if pin { assign_cores(&allowed, embedded, config.processes) } else { (None, vec![Vec::new(); plans.len()]) };
    for (plan, cores) in plans.iter_mut().zip(child_cores) {
        plan.cores = cores;
    }
    if pin
        && let Some(first) = plans.first()
        && plans.len() > 1
        && plans[1..].iter().any(|plan| plan.cores == first.cores)
    {
        tracing::warn!(
            cores = allowed.len(),
            processes = config.processes,
            "not enough cores for one per child: the children share {}",
            core_list(&first.cores)
        );
    }

    let (shard, target) = match &config.shard {
        SpreadShard::Embedded(shard_config) => {
            let seed: [u8; 32] = rand::random();
            let key = SigningKey::from_bytes(&seed);
            let shard = EmbeddedShard::start(&EmbeddedShardConfig {
                core: shard_core,
                udp: config.transport == TransportKind::Udp,
                token_key: Some(key.verifying_key()),
                ..shard_config.clone()
            })?;
            let target = Target {
                addr: shard.addr,
                udp_addr: shard.udp_addr,
                fingerprint: shard.fingerprint.clone(),
                metrics: Some(shard.metrics),
                name: shard.name.clone(),
                token_key: format!("{EMBEDDED_KEY_ID}:{}", seed_hex(&seed)),
            };
            (Some(shard), target)
        }
        SpreadShard::Remote(remote) => {
            anyhow::ensure!(
                config.transport != TransportKind::Udp || remote.udp_addr.is_some(),
                "a raw UDP run against a running shard needs its raw UDP address (--shard-udp)"
            );
            let target = Target {
                addr: remote.addr,
                udp_addr: remote.udp_addr,
                fingerprint: remote.fingerprint.clone(),
                metrics: remote.metrics,
                name: remote.name.clone(),
                token_key: remote.token_key.clone(),
            };
            (None, target)
        }
    };
    let dir = ReportDir::new().context("creating a directory for the children's reports")?;
    let started = Instant::now();
    let remote_pid = match &config.shard {
        SpreadShard::Remote(remote) => remote.pid,
        SpreadShard::Embedded(_) => None,
    };
    // The shard's CPU time so far: its thread here, or its process on this machine.
    let shard_cpu = || match (&shard, remote_pid) {
        (Some(shard), _) => shard.cpu(),
        (None, Some(pid)) => sys::process_cpu(pid),
        (None, None) => None,
    };
    let mut cpu = CpuSamples::default();
    cpu.sample(shard_cpu());
    let mut children = Vec::with_capacity(plans.len());
    for plan in plans {
        match spawn_child(config, &target, plan, &dir.0, pin) {
            Ok(running) => children.push(running),
            Err(err) => {
                stop_all(&mut children);
                return Err(err);
            }
        }
    }
    tracing::info!(processes = children.len(), shard = %target.addr, "spread: children started");

    // Wait for every child; the first failure stops the others.
    let failure = loop {
        let mut failure = None;
        for running in children.iter_mut().filter(|running| running.status.is_none()) {
            match running.child.try_wait() {
                Ok(Some(status)) => {
                    running.status = Some(status);
                    if !status.success() {
                        failure = Some(running.plan.idx);
                    }
                }
                Ok(None) => {}
                Err(err) => return Err(err).context("waiting for a child"),
            }
        }
        if failure.is_some() || children.iter().all(|running| running.status.is_some()) {
            break failure;
        }
        cpu.sample(shard_cpu());
        std::thread::sleep(CPU_SAMPLE_PERIOD);
    };
    cpu.sample(shard_cpu());
    if let Some(idx) = failure {
        stop_all(&mut children);
        let running = &children[idx];
        let status = running.status.map_or_else(|| "unknown".to_owned(), |status| status.to_string());
        let tail = running.tail.lock().map(|tail| tail.iter().cloned().collect::<Vec<_>>().join("\n"));
        anyhow::bail!("child {idx} of the spread failed ({status}); its last output:\n{}", tail.unwrap_or_default());
    }
    for running in &mut children {
        for reader in running.readers.drain(..) {
            let _ = reader.join();
        }
    }
    let wall_s = started.elapsed().as_secs_f64();

    let mut reports = Vec::with_capacity(children.len());
    for running in &children {
        let bytes = std::fs::read(&running.json)
            .with_context(|| format!("child {} wrote no report at {}", running.plan.idx, running.json.display()))?;
        let mut report: Report = serde_json::from_slice(&bytes)
            .with_context(|| format!("child {}'s report is not a rally loadtest JSON report", running.plan.idx))?;
        for run in &mut report.runs {
            run.settings.insert("spread".into(), format!("child {} of {}", running.plan.idx, children.len()));
            run.settings.insert(
                "spread_cores".into(),
                if running.plan.cores.is_empty() { "unpinned".into() } else { core_list(&running.plan.cores) },
            );
            run.pinned = !running.plan.cores.is_empty() && (shard_core.is_some() || !embedded);
        }
        reports.push(report);
    }
    // The shard figures the merge keeps (the longest look) and when that window was.
    let window = reports
        .iter()
        .filter_map(|report| {
            let figures = report.shards.first()?;
            let run = report.runs.first()?;
            let ramp_s = run.clients.saturating_sub(1) as f64 / run.ramp_per_sec.max(1e-9);
            let start_ms = run.started_unix_ms as f64 + ramp_s * 1e3;
            Some((figures.window_s, start_ms, start_ms + figures.window_s * 1e3))
        })
        .fold(None, |best: Option<(f64, f64, f64)>, this| match best {
            Some(best) if best.0 >= this.0 => Some(best),
            _ => Some(this),
        });
    let mut merged = Report::merge(reports, &[])?;

    let source = target.metrics.map(|metrics| metrics.to_string());
    if let Some(figures) = merged.shards.iter_mut().find(|figures| source.as_deref() == Some(figures.source.as_str()))
        && figures.cpu_pct.is_none()
    {
        figures.cpu_pct = window.and_then(|(_, start_ms, end_ms)| cpu.pct(start_ms, end_ms));
    }
    if let Some(shard) = shard {
        let shard_report = shard.stop()?;
        let counters = &merged.measures.counters;
        merged.checks.push(Check {
            name: "matches started (clients, all processes) = match results the shard emitted".into(),
            clients: counters.matches_started as f64,
            servers: shard_report.results.len() as f64,
            passed: counters.matches_started == shard_report.results.len() as u64,
        });
        if let Some(figures) =
            merged.shards.iter_mut().find(|figures| source.as_deref() == Some(figures.source.as_str()))
        {
            figures.matches_ended = Some(shard_report.shard.stats.matches_ended);
            let mut by_reason = BTreeMap::new();
            for result in &shard_report.results {
                *by_reason.entry(format!("{:?}", result.reason).to_lowercase()).or_insert(0u64) += 1;
            }
            figures.results_by_reason = by_reason;
        }
    }
    for run in &mut merged.runs {
        run.settings.insert("spread_wall_s".into(), format!("{wall_s:.1}"));
    }
    merged.evaluate(&load.thresholds);
    Ok(merged)
}

/// Kills the children still running (they are ours) and reaps them.
fn stop_all(children: &mut [Running]) {
    for running in children.iter_mut().filter(|running| running.status.is_none()) {
        let _ = running.child.kill();
        running.status = running.child.wait().ok();
    }
    for running in children.iter_mut() {
        for reader in running.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_split_into_whole_matches_and_ramp_together() {
        let plans = plan_children(11, 60.0, 7, 3).unwrap();
        let clients: Vec<u64> = plans.iter().map(|plan| plan.clients).collect();
        assert_eq!(clients, [4, 4, 4], "11 clients round up to 6 matches, 2 each");
        let seeds: Vec<u64> = plans.iter().map(|plan| plan.seed).collect();
        assert_eq!(seeds, [7, 8, 9]);
        let ramp: f64 = plans.iter().map(|plan| plan.ramp_per_sec).sum();
        assert!((ramp - 60.0).abs() < 1e-9);
        let plans = plan_children(10, 10.0, 0, 2).unwrap();
        assert_eq!(plans.iter().map(|plan| plan.clients).collect::<Vec<_>>(), [6, 4]);
        assert!((plans[0].ramp_per_sec - 6.0).abs() < 1e-9);
        assert!(plan_children(2, 1.0, 0, 2).is_err(), "two processes need two matches");
        assert!(plan_children(4, 1.0, 0, 0).is_err());
    }

    #[test]
    fn cores_go_to_the_shard_first_then_one_per_child() {
        assert_eq!(assign_cores(&[0, 1, 2, 3], true, 3), (Some(0), vec![vec![1], vec![2], vec![3]]));
        assert_eq!(assign_cores(&[0, 1], true, 2), (Some(0), vec![vec![1], vec![1]]));
        assert_eq!(assign_cores(&[0], true, 2), (None, vec![vec![], vec![]]));
        assert_eq!(assign_cores(&[8, 9, 10], false, 2), (None, vec![vec![8], vec![9]]));
    }

    #[test]
    fn core_lists_parse() {
        assert_eq!(parse_core_list("0-3,8,10-11"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(parse_core_list("5"), Some(vec![5]));
        assert_eq!(parse_core_list("3-1"), None);
        assert_eq!(parse_core_list("x"), None);
    }

    #[test]
    fn shard_cpu_is_interpolated_over_the_window() {
        let samples = CpuSamples(vec![
            (1_000, Duration::from_millis(0)),
            (2_000, Duration::from_millis(500)),
            (3_000, Duration::from_millis(1_000)),
        ]);
        let pct = samples.pct(1_500.0, 2_500.0).unwrap();
        assert!((pct - 50.0).abs() < 1e-9, "{pct}");
        assert_eq!(samples.pct(500.0, 2_000.0), None, "before the first sample");
        assert_eq!(samples.pct(1_000.0, 3_500.0), None, "after the last sample");
    }
}
