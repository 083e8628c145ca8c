//! The shipped observability files against the real things: promtool checks
//! deploy/prometheus (config, rules, the alerts' unit tests); every metric a
//! dashboard or an alert names is on the `/metrics` of a running `rally up`,
//! described; and a real Prometheus, started here with the shipped
//! prometheus.yml (its file-based discovery pointed at this `rally up`),
//! scrapes it and answers the Shards dashboard's tick-p99 query with a sample.
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool`; `make debs`).

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rally::common::ReadyLine;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(name: &str) -> Command {
    let path = Path::new("/usr/bin").join(name);
    assert!(path.exists(), "{} is missing: `make debs` installs Debian's prometheus package", path.display());
    Command::new(path)
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{command:?} failed: {said}");
    said
}

/// One HTTP/1.0 GET (no chunked answers): the status line's code and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((code, body))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Every PromQL expression of the dashboards, as (dashboard file, panel title, refId, expr).
fn dashboard_exprs() -> Vec<(String, String, String, String)> {
    let mut exprs = Vec::new();
    for name in ["shards", "services", "players"] {
        let path = deploy().join("grafana/dashboards").join(format!("{name}.json"));
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let panels = dashboard["panels"].as_array().unwrap_or_else(|| panic!("{} has no panels", path.display()));
        for panel in panels {
            let title = panel["title"].as_str().unwrap().to_owned();
            let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {title:?} has no targets"));
            assert!(!targets.is_empty(), "panel {title:?} has no targets");
            for target in targets {
                let expr = target["expr"].as_str().unwrap_or_else(|| panic!("a target of {title:?} has no expr"));
                let ref_id = target["refId"].as_str().unwrap_or_default().to_owned();
                exprs.push((name.to_owned(), title.clone(), ref_id, expr.to_owned()));
            }
        }
    }
    exprs
}

/// Every alert's `expr` in rules.yml: a one-line value, or a `|` block (the
/// lines indented deeper than the key). Checked against the number of alerts,
/// so a rule whose expression this reader missed fails the test.
fn rule_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(deploy().join("prometheus/rules.yml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut exprs = Vec::new();
    for (idx, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else { continue };
        let indent = line.len() - line.trim_start().len();
        let value = value.trim();
        if value == "|" || value == ">" || value == "|-" || value == ">-" {
            let block: Vec<&str> = lines[idx + 1..]
                .iter()
                .take_while(|next| next.trim().is_empty() || next.len() - next.trim_start().len() > indent)
                .map(|next| next.trim())
                .collect();
            exprs.push(block.join(" "));
        } else {
            exprs.push(value.to_owned());
        }
    }
    let alerts = lines.iter().filter(|line| line.trim_start().starts_with("- alert:")).count();
    assert_eq!(exprs.len(), alerts, "every alert has one expr: {exprs:?}");
    exprs
}

/// The rally metric names (`rally_…`) an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("rally_") {
        let preceded_by_name = rest[..start].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        if !preceded_by_name {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Whether a Prometheus text page has a sample of `name`.
fn has_sample(page: &str, name: &str) -> bool {
    page.lines().any(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
}

/// The family a sample name belongs to (a histogram's `_bucket` is its `_seconds`).
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| name.strip_suffix(suffix)).unwrap_or(name)
}

struct Up {
    _child: Running,
    metrics: SocketAddr,
}

/// Starts `rally up` as tests/up.rs does (ephemeral ports, its own data dir,
/// the ready line), with scripted bots so no ONNX Runtime is needed.
fn start_up(data_dir: &Path) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rally"))
        .args(["up", "--bots", "2", "--bot-policy", "tracker", "--bot-difficulty", "easy", "--points-to-win", "1"])
        .args(["--lobby-addr", "127.0.0.1:0", "--matchmaker-addr", "127.0.0.1:0", "--shard-addr", "127.0.0.1:0"])
        .args(["--udp-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--no-tournament"])
        .args(["--status-interval", "0", "--ready-json", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let child = Running(child);
    let ready = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "rally up ended before its ready line");
        if line.starts_with('{') {
            break ReadyLine::parse(&line).unwrap();
        }
    };
    // Keep reading so rally up never blocks on a full pipe.
    std::thread::spawn(move || for _ in stdout.lines() {});
    Up { _child: child, metrics: ready.metrics.unwrap() }
}

/// Polls `probe` every 200 ms until it gives a value or `seconds` pass.
fn wait_for<T>(seconds: u64, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::park_timeout(Duration::from_millis(200));
    }
}

#[test]
fn promtool_passes_the_config_the_rules_and_the_alerts_unit_tests() {
    let dir = deploy().join("prometheus");
    let said = run_ok(tool("promtool").arg("check").arg("config").arg(dir.join("prometheus.yml")));
    assert!(said.contains("1 rule files found"), "{said}");
    let said = run_ok(tool("promtool").arg("check").arg("rules").arg(dir.join("rules.yml")));
    assert!(said.contains(&format!("{} rules found", rule_exprs().len())), "{said}");
    // Relative to the tests file, as promtool resolves rule_files.
    let said = run_ok(tool("promtool").current_dir(&dir).args(["test", "rules", "rules_test.yml"]));
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn dashboards_and_alerts_read_live_metrics_and_prometheus_scrapes_rally_up() {
    let exprs: Vec<String> = dashboard_exprs().into_iter().map(|(_, _, _, expr)| expr).chain(rule_exprs()).collect();
    let names: BTreeSet<String> = exprs.iter().flat_map(|expr| metric_names(expr)).collect();
    assert!(names.len() >= 20, "the dashboards and rules name few metrics: {names:?}");
    for expr in &exprs {
        assert!(!metric_names(expr).is_empty() || expr.contains("up{"), "{expr:?} reads no rally metric");
    }

    let dir = tempfile::tempdir().unwrap();
    let up = start_up(&dir.path().join("up"));

    // (a) Every name shows on /metrics once the bots have played a match; each family is described.
    let page = wait_for(60, || {
        let (_, page) = http_get(up.metrics, "/metrics").ok()?;
        names.iter().all(|name| has_sample(&page, name)).then_some(page)
    });
    let page = page.unwrap_or_else(|| {
        let (_, page) = http_get(up.metrics, "/metrics").unwrap();
        let missing: Vec<&String> = names.iter().filter(|name| !has_sample(&page, name)).collect();
        panic!("not on rally up's /metrics within 60 s: {missing:?}\n{page}")
    });
    for name in &names {
        assert!(page.contains(&format!("# HELP {} ", family(name))), "{} is not described:\n{page}", family(name));
    }

    // (b) A real Prometheus with the shipped scrape config; its file discovery gets one more file.
    let config_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(config_dir.join("targets")).unwrap();
    for file in ["prometheus.yml", "rules.yml"] {
        std::fs::copy(deploy().join("prometheus").join(file), config_dir.join(file)).unwrap();
    }
    std::fs::write(
        config_dir.join("targets/rally-up.yml"),
        format!("- targets: [\"{}\"]\n  labels:\n    role: up\n", up.metrics),
    )
    .unwrap();
    run_ok(tool("promtool").arg("check").arg("config").arg(config_dir.join("prometheus.yml")));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let web = SocketAddr::from(([127, 0, 0, 1], port));
    let log_path = dir.path().join("prometheus.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _prometheus = Running(
        tool("prometheus")
            .arg(format!("--config.file={}", config_dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_for(30, || http_get(web, "/-/ready").ok().filter(|(code, _)| *code == 200)).is_some(),
        "Prometheus was not ready within 30 s:\n{}",
        log()
    );

    // The Shards dashboard's tick-p99 query, as Grafana sends it with $__rate_interval at 1m.
    let (_, title, _, p99) = dashboard_exprs()
        .into_iter()
        .find(|(file, title, ref_id, _)| file == "shards" && title.starts_with("Tick time") && ref_id == "p99")
        .expect("the Shards dashboard has a tick-time panel with a p99 query");
    let query = p99.replace("$__rate_interval", "1m");
    let path = format!("/api/v1/query?query={}", percent_encode(&query));
    let sample = wait_for(60, || {
        let (code, body) = http_get(web, &path).ok()?;
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        assert_eq!(code, 200, "Prometheus refused the {title:?} query: {body}");
        let value = answer["data"]["result"].as_array()?.first()?["value"][1].as_str()?.parse::<f64>().ok()?;
        value.is_finite().then_some(value)
    });
    let Some(seconds) = sample else {
        let targets = http_get(web, "/api/v1/targets").map(|(_, body)| body).unwrap_or_default();
        panic!("no tick p99 sample from Prometheus within 60 s; targets: {targets}\n{}", log());
    };
    assert!(seconds > 0.0 && seconds < 1.0, "tick p99 of {seconds} s");
}

#[test]
fn rally_lobby_serves_its_grpc_metrics_on_metrics_addr() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rally"))
        .args(["lobby", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--dev", "--ready-json"])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _lobby = Running(child);
    let ready = ReadyLine::parse(&line).unwrap();
    let (lobby, metrics) = (ready.lobby.unwrap(), ready.metrics.expect("the ready line names the ops endpoint"));
    assert_eq!(http_get(metrics, "/readyz").unwrap().0, 200);

    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use rally_lobby::proto::auth::{LoginRequest, RegisterRequest, auth_client::AuthClient};
        let mut auth = AuthClient::connect(format!("http://{lobby}")).await.unwrap();
        let register = RegisterRequest {
            username: "metered_mo".into(),
            password: "correct horse battery".into(),
            idempotency_key: String::new(),
        };
        auth.register(register).await.unwrap();
        let wrong = LoginRequest { username: "metered_mo".into(), password: "not the password".into() };
        auth.login(wrong).await.expect_err("a wrong password");
    });
    let (_, page) = http_get(metrics, "/metrics").unwrap();
    for series in [
        r#"rally_grpc_server_requests_total{service="rally.auth.v1.Auth",method="Register",code="OK"} 1"#,
        r#"rally_grpc_server_requests_total{service="rally.auth.v1.Auth",method="Login",code="Unauthenticated"} 1"#,
        r#"rally_grpc_server_request_seconds_count{service="rally.auth.v1.Auth",method="Register",code="OK"} 1"#,
    ] {
        assert!(page.lines().any(|line| line == series), "no {series} on the lobby's /metrics:\n{page}");
    }
}

#[test]
fn metric_names_are_read_from_expressions() {
    assert_eq!(
        metric_names("sum by (le) (rate(rally_a_bucket{x=\"rally.v1\"}[1m])) / rally_b > 0 and xrally_c"),
        ["rally_a_bucket", "rally_b"]
    );
    assert!(has_sample("# HELP rally_a x\nrally_a{k=\"v\"} 1\n", "rally_a"));
    assert!(!has_sample("rally_ab 1\n", "rally_a"));
    assert_eq!(family("rally_x_seconds_bucket"), "rally_x_seconds");
}
