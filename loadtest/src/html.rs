//! The HTML report: one self-contained file (no scripts, no external assets)
//! with the verdict first, then the figures in tables with a sentence on what
//! each means, and inline SVG plots drawn with plotters: latency histograms,
//! clients and matches over time, shard tick duration over time, bandwidth per
//! client over time.

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::measure::{Histo, LATENCIES};
use crate::report::{Report, Sample};
use crate::sweep::SweepReport;

const WIDTH: u32 = 720;
const HEIGHT: u32 = 300;

/// Renders `report` as a complete HTML page.
pub fn render(report: &Report) -> String {
    let mut page = String::new();
    let title = format!("rally load test — {} over {}", report.scenario, report.transport());
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        escape(&title)
    );
    let _ = write!(page, "<h1>{}</h1>", escape(&title));
    verdict(&mut page, report);
    runs(&mut page, report);
    summary(&mut page, report);
    latencies(&mut page, report);
    shards(&mut page, report);
    plots(&mut page, report);
    errors_and_checks(&mut page, report);
    page.push_str("<h2>Raw data</h2><p>Every figure on this page, with the histograms' buckets, is in the JSON report written by the same run (<code>--json</code>); <code>rally loadtest merge</code> combines the JSON of several harness processes.</p>");
    page.push_str("</body></html>\n");
    page
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
th{background:#f3f3f3}td.l,th.l{text-align:left}.pass{color:#11772d;font-weight:bold}.fail{color:#b00020;font-weight:bold}\
.banner{padding:.8em 1em;border-radius:6px;margin:1em 0;font-size:1.1em}.ok{background:#e6f4ea}.bad{background:#fde7e9}\
figure{margin:1em 0}figcaption{color:#555;font-size:.9em;max-width:720px}p.note{color:#555;font-size:.9em}";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn fmt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |value| format!("{value:.digits$}"))
}

fn verdict(page: &mut String, report: &Report) {
    let failed_thresholds = report.failed_thresholds().len();
    let failed_checks = report.checks.iter().filter(|check| !check.passed).count();
    let errors = report.measures.total_errors();
    let ok = failed_thresholds == 0 && failed_checks == 0 && errors == 0;
    let _ = write!(
        page,
        "<div class=\"banner {}\">{} — {} of {} thresholds passed, {} errors, {} of {} cross-checks agree.</div>",
        if ok { "ok" } else { "bad" },
        if ok { "PASS" } else { "FAIL" },
        report.thresholds.len() - failed_thresholds,
        report.thresholds.len(),
        errors,
        report.checks.len() - failed_checks,
        report.checks.len(),
    );
    if !report.thresholds.is_empty() {
        page.push_str("<h2>Thresholds</h2><table><tr><th class=l>threshold</th><th>actual</th><th>result</th></tr>");
        for outcome in &report.thresholds {
            let _ = write!(
                page,
                "<tr><td class=l><code>{}</code></td><td>{}</td><td class=\"{}\">{}</td></tr>",
                escape(&outcome.threshold.expression),
                fmt(outcome.actual, 3),
                if outcome.passed { "pass" } else { "fail" },
                if outcome.passed {
                    "pass"
                } else if outcome.actual.is_none() {
                    "FAIL (no data)"
                } else {
                    "FAIL"
                },
            );
        }
        page.push_str("</table>");
    }
}

fn runs(page: &mut String, report: &Report) {
    page.push_str("<h2>What ran</h2><table><tr><th class=l>target</th><th>clients</th><th>ramp /s</th><th>hold s</th><th>wall s</th><th>seed</th><th class=l>link conditioner</th><th>pinned</th><th>harness CPU %</th><th class=l>settings</th></tr>");
    for run in &report.runs {
        let conditions = if run.conditions.is_perfect() {
            "none".to_owned()
        } else {
            format!(
                "loss {:.1}%, {:.0} ± {:.0} ms, dup {:.1}%, reorder {:.1}%",
                run.conditions.loss * 100.0,
                run.conditions.latency_ms,
                run.conditions.jitter_ms,
                run.conditions.duplicate * 100.0,
                run.conditions.reorder * 100.0
            )
        };
        let settings: Vec<String> = run.settings.iter().map(|(key, value)| format!("{key}={value}")).collect();
        let _ = write!(
            page,
            "<tr><td class=l>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.1}</td><td>{}</td><td class=l>{}</td><td>{}</td><td>{}</td><td class=l>{}</td></tr>",
            escape(&run.target),
            run.clients,
            run.ramp_per_sec,
            run.duration_s,
            run.wall_s,
            run.seed,
            escape(&conditions),
            if run.pinned { format!("yes ({} cores)", run.cores) } else { format!("no ({} cores)", run.cores) },
            fmt(run.harness_cpu_pct, 0),
            escape(&settings.join(", ")),
        );
    }
    page.push_str("</table>");
    page.push_str("<p class=note>Clients start at the ramp rate, then the load is held for the hold time; the shard's figures cover that hold window only.</p>");
}

fn summary(page: &mut String, report: &Report) {
    let counters = &report.measures.counters;
    let (bytes_in, bytes_out) = report.bytes_per_client();
    let loss = (counters.snapshots_expected > 0)
        .then(|| 100.0 * (1.0 - counters.snapshots as f64 / counters.snapshots_expected as f64));
    page.push_str("<h2>Clients</h2><table><tr><th class=l>figure</th><th>value</th><th class=l>meaning</th></tr>");
    let rows: Vec<(&str, String, &str)> = vec![
        ("clients started", counters.clients_started.to_string(), "clients the harness started"),
        ("clients connected", counters.clients_connected.to_string(), "clients that joined at least once"),
        ("clients failed", counters.clients_failed.to_string(), "clients that stopped on an error"),
        (
            "joins / failed joins",
            format!("{} / {}", counters.joins, counters.failed_joins),
            "connect + hello + welcome",
        ),
        ("matches started", counters.matches_started.to_string(), "counted once per match, by seat 0"),
        ("matches finished", counters.matches_finished.to_string(), "matches that ended on their own"),
        ("matches cut at the stop", counters.matches_cut.to_string(), "still running when the run ended; players left"),
        ("tickets / assigned", format!("{} / {}", counters.tickets, counters.tickets_assigned), "matchmaker tickets"),
        (
            "chat sent / received",
            format!("{} / {}", counters.chat_sent, counters.chat_received),
            "messages, received counted per subscriber",
        ),
        (
            "snapshots received / expected",
            format!("{} / {}", counters.snapshots, counters.snapshots_expected),
            "expected from the snapshot tick numbers",
        ),
        ("snapshot loss", fmt(loss, 4) + " %", "snapshots that never arrived"),
        (
            "bytes in per client",
            fmt(bytes_in, 0) + " B/s",
            "received by each connected client, IP and UDP headers included",
        ),
        (
            "bytes out per client",
            fmt(bytes_out, 0) + " B/s",
            "sent by each connected client, IP and UDP headers included",
        ),
        (
            "QUIC UDP packets per game datagram, up / down",
            format!(
                "{} / {}",
                fmt(counters.quic_packets_per_datagram_up(), 3),
                fmt(counters.quic_packets_per_datagram_down(), 3)
            ),
            "from the clients' quinn stats while playing: UDP packets per DATAGRAM frame, client → shard and shard → client; above 1 are ACK-only and control packets",
        ),
    ];
    for (name, value, meaning) in rows {
        let _ = write!(page, "<tr><td class=l>{name}</td><td>{}</td><td class=l>{meaning}</td></tr>", escape(&value));
    }
    page.push_str("</table>");
}

fn latencies(page: &mut String, report: &Report) {
    page.push_str("<h2>Latencies (ms)</h2><table><tr><th class=l>name</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th class=l>what it measures</th></tr>");
    for &(name, help) in LATENCIES {
        let Some(histo) = report.measures.latencies.get(name) else { continue };
        let _ = write!(
            page,
            "<tr><td class=l>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=l>{}</td></tr>",
            histo.count(),
            fmt(histo.quantile_ms(0.5), 3),
            fmt(histo.quantile_ms(0.9), 3),
            fmt(histo.quantile_ms(0.99), 3),
            fmt(histo.quantile_ms(0.999), 3),
            fmt(histo.max_ms(), 3),
            escape(help),
        );
    }
    page.push_str("</table>");
}

fn shards(page: &mut String, report: &Report) {
    if !report.shards.is_empty() {
        page.push_str("<h2>Shard (from its /metrics, over the hold window)</h2><table><tr><th class=l>source</th><th>tick p50 ms</th><th>tick p99 ms</th><th>tick p99.9 ms</th><th class=l>tick source</th><th>within 4 ms</th><th>ticks</th><th>late</th><th>dgram/s in</th><th>dgram/s out</th><th>dropped</th><th>reflect p99 ticks</th><th>CPU %</th><th>matches ended</th><th class=l>results</th></tr>");
        for shard in &report.shards {
            let reasons: Vec<String> =
                shard.results_by_reason.iter().map(|(reason, n)| format!("{reason} {n}")).collect();
            let _ = write!(
                page,
                "<tr><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=l>{}</td></tr>",
                escape(&shard.source),
                fmt(shard.tick_p50_ms, 3),
                fmt(shard.tick_p99_ms, 3),
                fmt(shard.tick_p999_ms, 3),
                escape(if shard.tick_source.is_empty() { "prometheus buckets" } else { &shard.tick_source }),
                shard.ticks_within_budget.map_or_else(|| "–".to_owned(), |f| format!("{:.2}%", f * 100.0)),
                shard.ticks,
                shard.late_ticks,
                shard.datagrams_in_per_s,
                shard.datagrams_out_per_s,
                shard.dropped,
                fmt(shard.input_reflect_p99_ticks, 2),
                fmt(shard.cpu_pct, 0),
                shard.matches_ended.map_or_else(|| "–".to_owned(), |n| n.to_string()),
                escape(&reasons.join(", ")),
            );
        }
        page.push_str("</table><p class=note>Tick percentiles come from the shard's own tick histogram (0.1% precision) when it ran in this process (tick source: exact histogram), else they are interpolated inside its Prometheus buckets (50 µs wide up to 1 ms, 0.25 ms to 5 ms); the fraction within 4 ms is exact either way. A late tick started more than one tick interval after its due time. Reflect: input received → first snapshot reflecting it sent, in ticks, as the shard measures it.</p>");
    }
    cost_model(page, report);
    if let Some(baseline) = &report.baseline {
        let _ = write!(
            page,
            "<h2>Against a bare {} ({})</h2><table><tr><th class=l>figure</th><th>echo</th><th>shard</th><th>ratio</th></tr>\
             <tr><td class=l>datagrams/s (in + out)</td><td>{:.0}</td><td>{:.0}</td><td>{}</td></tr>\
             <tr><td class=l>server CPU %</td><td>{}</td><td>{}</td><td></td></tr>\
             <tr><td class=l>datagrams per CPU-second</td><td colspan=2></td><td>{}</td></tr></table>\
             <p class=note>The echo ran first with the same {} connections, ramp and {} datagrams/s per connection each way. The per-CPU ratio estimates how close the shard comes to what a bare echo on that transport carries on the same core (1.0 = as cheap as an echo).</p>",
            if baseline.kind == "udp-echo" { "raw UDP echo" } else { "quinn echo" },
            escape(&baseline.kind),
            baseline.datagrams_per_s,
            baseline.shard_datagrams_per_s,
            fmt(baseline.rate_ratio, 3),
            fmt(baseline.cpu_pct, 0),
            fmt(report.shards.first().and_then(|shard| shard.cpu_pct), 0),
            fmt(baseline.efficiency_ratio, 3),
            baseline.connections,
            crate::baseline::ECHO_HZ,
        );
    }
}

fn cost_model(page: &mut String, report: &Report) {
    let cost = report.cost_model();
    if cost.shard_cores.is_none() {
        return;
    }
    page.push_str("<h2>Cost model</h2><table><tr><th class=l>figure</th><th>value</th><th class=l>how</th></tr>");
    let rows = [
        ("matches held", fmt(cost.matches, 1), "the shard's match gauge, averaged over the hold window's seconds"),
        ("shard CPU, cores", fmt(cost.shard_cores, 3), "shard CPU time over the window ÷ the window"),
        ("CPU-µs per match-second", fmt(cost.cpu_us_per_match_second, 1), "shard cores × 10⁶ ÷ matches"),
        (
            "CPU-µs per datagram",
            fmt(cost.cpu_us_per_datagram, 2),
            "shard cores × 10⁶ ÷ (datagrams in + out per second)",
        ),
        (
            "matches per core at 80%",
            fmt(cost.matches_per_core_at_80pct, 0),
            "0.8 ÷ (cores per match): the capacity of one core if cost stays linear in matches",
        ),
        (
            "RSS per connection",
            cost.rss_per_connection_bytes.map_or_else(
                || "– (not separable: the shard shares the harness's process)".to_owned(),
                |bytes| format!("{bytes:.0} B"),
            ),
            "a separate shard process's RSS growth from before the first client to the end of the ramp ÷ clients connected then",
        ),
    ];
    for (name, value, how) in rows {
        let _ = write!(page, "<tr><td class=l>{name}</td><td>{}</td><td class=l>{how}</td></tr>", escape(&value));
    }
    page.push_str("</table>");
}

/// Renders a capacity sweep as a complete HTML page: the table of points,
/// then matches against tick p99 and against shard CPU across the points.
pub fn render_sweep(sweep: &SweepReport) -> String {
    let mut page = String::new();
    let transport = sweep.points.first().map_or_else(|| "quic".to_owned(), Report::transport);
    let title = format!("rally capacity sweep over {transport}");
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        escape(&title)
    );
    let _ = write!(page, "<h1>{}</h1>", escape(&title));
    let verdict = sweep.max_passing_clients.map_or_else(
        || "no point passed".to_owned(),
        |clients| format!("most clients passing: {clients} ({} matches)", clients / 2),
    );
    let _ = write!(
        page,
        "<div class=\"banner {}\">{}</div>",
        if sweep.max_passing_clients.is_some() { "ok" } else { "bad" },
        escape(&verdict)
    );
    page.push_str("<table><tr><th>clients</th><th>matches</th><th>tick p50 ms</th><th>tick p99 ms</th><th>tick p99.9 ms</th><th>shard CPU %</th><th>generator CPU %</th><th>CPU-µs / match-s</th><th>CPU-µs / datagram</th><th>matches / core at 80%</th><th>QUIC pk/dgram up</th><th>down</th><th class=l>result</th></tr>");
    for report in &sweep.points {
        let cost = report.cost_model();
        let passed = report.failed_thresholds().is_empty();
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l {}\">{}</td></tr>",
            clients_of(report),
            fmt(cost.matches, 0),
            fmt(report.metric("tick_p50"), 3),
            fmt(report.metric("tick_p99"), 3),
            fmt(report.metric("tick_p999"), 3),
            fmt(cost.shard_cores.map(|cores| cores * 100.0), 0),
            fmt(report.runs.first().and_then(|run| run.harness_cpu_pct), 0),
            fmt(cost.cpu_us_per_match_second, 1),
            fmt(cost.cpu_us_per_datagram, 2),
            fmt(cost.matches_per_core_at_80pct, 0),
            fmt(report.metric("quic_packets_per_datagram_up"), 3),
            fmt(report.metric("quic_packets_per_datagram_down"), 3),
            if passed { "pass" } else { "fail" },
            if passed { "PASS" } else { "FAIL" },
        );
    }
    page.push_str("</table>");
    let (ticks, cpu) = sweep_series(sweep);
    figure(
        &mut page,
        xy_chart("Matches vs shard tick duration", "matches", "ms", &ticks, Some(("4 ms budget", 4.0))),
        "Tick p50 and p99 over each point's hold window against the matches the shard held.",
    );
    figure(
        &mut page,
        xy_chart("Matches vs shard CPU", "matches", "% of one core", &cpu, Some(("80% of a core", 80.0))),
        "Shard CPU (and the generator's, which must stay below its core) over each point's hold window against the matches held.",
    );
    page.push_str("</body></html>\n");
    page
}

/// The sweep's points as `(matches, value)` series: tick p50/p99, and shard/generator CPU.
type Series = Vec<(&'static str, Vec<(f64, f64)>)>;

fn sweep_series(sweep: &SweepReport) -> (Series, Series) {
    let mut tick_p50 = Vec::new();
    let mut tick_p99 = Vec::new();
    let mut shard_cpu = Vec::new();
    let mut generator_cpu = Vec::new();
    for report in &sweep.points {
        let matches = report.cost_model().matches.unwrap_or(clients_of(report) as f64 / 2.0);
        let push = |series: &mut Vec<(f64, f64)>, value: Option<f64>| {
            if let Some(value) = value {
                series.push((matches, value));
            }
        };
        push(&mut tick_p50, report.metric("tick_p50"));
        push(&mut tick_p99, report.metric("tick_p99"));
        push(&mut shard_cpu, report.cost_model().shard_cores.map(|cores| cores * 100.0));
        push(&mut generator_cpu, report.runs.first().and_then(|run| run.harness_cpu_pct));
    }
    for series in [&mut tick_p50, &mut tick_p99, &mut shard_cpu, &mut generator_cpu] {
        series.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    (
        vec![("tick p50", tick_p50), ("tick p99", tick_p99)],
        vec![("shard CPU", shard_cpu), ("generator CPU", generator_cpu)],
    )
}

fn clients_of(report: &Report) -> u64 {
    report.runs.iter().map(|run| run.clients).sum()
}

/// Which headers the byte counts include, per transport.
fn headers_counted(transport: &str) -> &'static str {
    match transport {
        "udp" => {
            "rally's 1-byte packet kind, UDP and IPv4 headers (raw UDP: no QUIC); over raw UDP, counted from the SDK's datagram counters at the end of each connection, so the control stream's few frames are left out"
        }
        "quic" => "QUIC, UDP and IPv4 headers",
        _ => "each transport's headers (QUIC or rally's packet kind), UDP and IPv4",
    }
}

fn errors_and_checks(page: &mut String, report: &Report) {
    page.push_str("<h2>Errors by kind</h2>");
    if report.measures.errors.is_empty() {
        page.push_str("<p>None.</p>");
    } else {
        page.push_str("<table><tr><th class=l>kind</th><th>count</th></tr>");
        for (kind, count) in &report.measures.errors {
            let _ = write!(page, "<tr><td class=l>{}</td><td>{count}</td></tr>", escape(kind));
        }
        page.push_str("</table>");
    }
    if !report.checks.is_empty() {
        page.push_str("<h2>Cross-checks</h2><table><tr><th class=l>check</th><th>clients</th><th>servers</th><th>result</th></tr>");
        for check in &report.checks {
            let _ = write!(
                page,
                "<tr><td class=l>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                escape(&check.name),
                check.clients,
                check.servers,
                if check.passed { "pass" } else { "fail" },
                if check.passed { "agree" } else { "MISMATCH" },
            );
        }
        page.push_str("</table>");
    }
}

fn plots(page: &mut String, report: &Report) {
    page.push_str("<h2>Over time</h2>");
    let timeline = &report.timeline;
    let series = |pick: fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        timeline.iter().filter_map(|sample| pick(sample).map(|value| (sample.t_s, value))).collect()
    };
    figure(
        page,
        line_chart(
            "Clients and matches",
            "clients / matches",
            &[
                ("clients connected", series(|s| Some(s.clients_active as f64))),
                ("matches running", series(|s| Some(s.matches_running as f64))),
                ("matches finished (total)", series(|s| Some(s.matches_finished as f64))),
                ("errors (total)", series(|s| Some(s.errors as f64))),
            ],
            None,
        ),
        "Clients connected now, matches running now and finished so far, by second since the first client started.",
    );
    let ticks = [("tick p50", series(|s| s.tick_p50_ms)), ("tick p99", series(|s| s.tick_p99_ms))];
    if ticks.iter().any(|(_, points)| !points.is_empty()) {
        figure(
            page,
            line_chart("Shard tick duration", "ms", &ticks, Some(("4 ms budget", 4.0))),
            "Tick duration percentiles over each second, read from the shard's /metrics; the dashed line is the 4 ms budget.",
        );
    }
    figure(
        page,
        line_chart(
            "Bandwidth per client",
            "bytes/s",
            &[("received", series(|s| s.bytes_in_per_client)), ("sent", series(|s| s.bytes_out_per_client))],
            None,
        ),
        &format!("Bytes per connected client per second, {} included.", headers_counted(&report.transport())),
    );
    let rtts = [
        ("RTT p99", series(|s| s.rtt_p99_ms)),
        ("server-added input latency p99", series(|s| s.server_added_p99_ms)),
        ("ticket assignment p99", series(|s| s.ticket_assign_p99_ms)),
        ("chat delivery p99", series(|s| s.chat_delivery_p99_ms)),
    ];
    if rtts.iter().any(|(_, points)| !points.is_empty()) {
        figure(page, line_chart("Latency over time", "ms", &rtts, None), "99th percentiles over each second.");
    }
    page.push_str("<h2>Latency histograms</h2>");
    for &(name, help) in LATENCIES {
        let Some(histo) = report.measures.latencies.get(name) else { continue };
        if histo.count() == 0 {
            continue;
        }
        figure(page, histogram_chart(name, histo), help);
    }
}

fn figure(page: &mut String, svg: Option<String>, caption: &str) {
    if let Some(svg) = svg {
        let _ = write!(page, "<figure>{svg}<figcaption>{}</figcaption></figure>", escape(caption));
    }
}

const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

/// Lines over time; `None` when there is nothing to draw.
fn line_chart(
    title: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    limit: Option<(&str, f64)>,
) -> Option<String> {
    xy_chart(title, "seconds", y_label, series, limit)
}

/// Lines of `y` against `x`, points marked; `None` when there is nothing to draw.
fn xy_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    limit: Option<(&str, f64)>,
) -> Option<String> {
    let points = series.iter().flat_map(|(_, points)| points.iter());
    let (mut max_x, mut max_y) = (1.0f64, 0.0f64);
    let mut any = false;
    for &(x, y) in points {
        any = true;
        max_x = max_x.max(x);
        max_y = max_y.max(y);
    }
    if !any {
        return None;
    }
    if let Some((_, limit)) = limit {
        max_y = max_y.max(limit * 1.1);
    }
    let max_y = if max_y <= 0.0 { 1.0 } else { max_y * 1.1 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..max_x, 0f64..max_y)
            .ok()?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).light_line_style(WHITE).draw().ok()?;
        for (idx, (label, points)) in series.iter().enumerate() {
            if points.is_empty() {
                continue;
            }
            let color = COLORS[idx % COLORS.len()];
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
                .ok()?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(points.iter().map(|&point| Circle::new(point, 3, color.filled()))).ok()?;
        }
        if let Some((label, limit)) = limit {
            chart
                .draw_series(DashedLineSeries::new(vec![(0.0, limit), (max_x, limit)], 6, 4, BLACK.stroke_width(1)))
                .ok()?
                .label(label)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .ok()?;
        root.present().ok()?;
    }
    Some(svg)
}

/// Bars of a latency distribution up to its 99.9th percentile (the tail beyond is noted in the title).
fn histogram_chart(name: &str, histo: &Histo) -> Option<String> {
    let recorded = histo.recorded();
    let top_ms = histo.quantile_ms(0.999)?.max(histo.quantile_ms(0.0)? + 0.001);
    let bottom_ms = histo.min_ms()?;
    const BINS: usize = 40;
    let width = ((top_ms - bottom_ms) / BINS as f64).max(1e-6);
    let mut counts = [0u64; BINS];
    let mut beyond = 0u64;
    for (value_us, count) in recorded {
        let value_ms = value_us as f64 / 1e3;
        if value_ms > top_ms {
            beyond += count;
            continue;
        }
        let bin = (((value_ms - bottom_ms) / width) as usize).min(BINS - 1);
        counts[bin] += count;
    }
    let max_count = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let title = format!(
        "{name}: {} samples, p50 {:.3} ms, p99 {:.3} ms{}",
        histo.count(),
        histo.quantile_ms(0.5)?,
        histo.quantile_ms(0.99)?,
        if beyond > 0 {
            format!(", {beyond} beyond p99.9 not drawn (max {:.3} ms)", histo.max_ms()?)
        } else {
            String::new()
        }
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 240)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(bottom_ms..(bottom_ms + width * BINS as f64), 0f64..max_count * 1.1)
            .ok()?;
        chart.configure_mesh().x_desc("ms").y_desc("count").light_line_style(WHITE).draw().ok()?;
        chart
            .draw_series(counts.iter().enumerate().filter(|(_, count)| **count > 0).map(|(bin, count)| {
                let x0 = bottom_ms + width * bin as f64;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, *count as f64)], COLORS[0].filled())
            }))
            .ok()?;
        root.present().ok()?;
    }
    Some(svg)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::{REPORT_VERSION, RunInfo};

    #[test]
    fn a_report_renders_into_a_page_with_plots() {
        let mut measures = crate::measure::Measures::default();
        for ms in 1..200u64 {
            measures.latency("rtt", Duration::from_micros(ms * 37));
        }
        measures.error("connect_timeout");
        let report = Report {
            version: REPORT_VERSION,
            scenario: "connect <&>".into(),
            runs: vec![RunInfo::default()],
            measures,
            shards: Vec::new(),
            baseline: None,
            checks: Vec::new(),
            timeline: (0..5)
                .map(|t| Sample {
                    t_s: f64::from(t),
                    clients_active: u64::from(t as u32) * 10,
                    tick_p99_ms: Some(1.0 + f64::from(t)),
                    ..Sample::default()
                })
                .collect(),
            thresholds: Vec::new(),
        };
        let page = render(&report);
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("connect &lt;&amp;&gt;"), "titles are escaped");
        assert!(page.matches("<svg").count() >= 3, "clients, ticks and the rtt histogram are plotted");
        assert!(page.contains("connect_timeout"));
        assert!(page.contains("FAIL"), "an error makes the run fail");
    }
}
