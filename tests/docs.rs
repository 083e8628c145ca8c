//! The prose docs cannot drift from the code they name (README's commands are
//! checked in `tests/readme.rs`):
//!
//! - every metric name (`rally_…` in backticks) that ARCHITECTURE.md, README.md
//!   or BENCHMARKS.md cites is registered somewhere: it appears as a string
//!   literal in a crate's `src/` (where every `metrics::` call and every
//!   exporter table lives). A name ending in `_*` names a family by prefix;
//!   Prometheus' `_count`, `_sum` and `_bucket` suffixes of a histogram count
//!   as the histogram.
//! - every path ARCHITECTURE.md cites exists: a backticked token with a `/`
//!   relative to the repository root, a bare file name (`driver.rs`)
//!   somewhere in the repository.
//! - the operator's docs under `deploy/` cite only registered metrics and
//!   existing paths (relative to the root, or to a directory under `deploy/`:
//!   `overlays/prod/kustomization.yaml` in the Kubernetes section).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Crates whose `src/` may register metrics.
const CRATES: &[&str] = &[
    ".",
    "protocol",
    "sim",
    "transport",
    "server",
    "client",
    "lobby",
    "matchmaker",
    "tournament",
    "ledger",
    "tournaments",
    "agones",
    "bot",
    "loadtest",
];

/// The operator's docs: their metric names and paths are checked too.
const DEPLOY_DOCS: &[&str] = &["deploy/README.md", "deploy/CAPACITY.md"];

/// Files the docs cite that live beside the repository, not in it.
const OUTSIDE: &[&str] = &["DESIGN.md"];

/// File extensions a backticked token must end with to count as a path.
const PATH_EXTENSIONS: &[&str] =
    &[".rs", ".md", ".toml", ".proto", ".py", ".onnx", ".sql", ".yaml", ".yml", ".json", ".sh"];

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// Every file name in the repository outside build output and dependencies.
fn file_names(dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if matches!(name.as_str(), "target" | ".git" | ".venv" | "node_modules") {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            file_names(&path, out);
        }
        out.insert(name);
    }
}

/// The `rally_…` string literals in the crates' sources: the registered metric names.
fn registered_metrics() -> BTreeSet<String> {
    let mut files = Vec::new();
    for krate in CRATES {
        rust_files(&Path::new(ROOT).join(krate).join("src"), &mut files);
    }
    let mut names = BTreeSet::new();
    for file in files {
        let text = read(&file);
        for literal in text.split('"').skip(1).step_by(2) {
            if literal.starts_with("rally_")
                && literal.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                names.insert(literal.to_owned());
            }
        }
    }
    names
}

/// The backticked spans of a markdown text (inline code), with their line numbers.
fn code_spans(markdown: &str) -> Vec<(usize, String)> {
    let mut spans = Vec::new();
    let mut in_fence = false;
    for (idx, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        for span in line.split('`').skip(1).step_by(2) {
            spans.push((idx + 1, span.to_owned()));
        }
        if in_fence {
            spans.extend(line.split_whitespace().map(|word| (idx + 1, word.to_owned())));
        }
    }
    spans
}

/// The metric names a span cites: `rally_x_total{reason}` cites `rally_x_total`;
/// a span may list several separated by commas or spaces.
fn cited_metrics(span: &str) -> Vec<String> {
    span.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '*'))
        // `rally_<subsystem>_<name>`: a crate path (`rally_server::ops`) has no second part.
        .filter(|word| word.strip_prefix("rally_").is_some_and(|rest| rest.contains('_')))
        .map(str::to_owned)
        .collect()
}

fn is_registered(name: &str, registered: &BTreeSet<String>) -> bool {
    if let Some(prefix) = name.strip_suffix('*') {
        return registered.iter().any(|known| known.starts_with(prefix));
    }
    let base = ["_count", "_sum", "_bucket"].iter().find_map(|suffix| name.strip_suffix(suffix)).unwrap_or(name);
    registered.contains(name) || registered.contains(base)
}

/// Whether a span is a path: it ends with a known extension and has no spaces.
fn cited_path(span: &str) -> Option<&str> {
    let span = span.trim_end_matches([':', ',', '.', ')']);
    let path = span.split_once(':').map_or(span, |(path, _)| path);
    let is_path = !path.contains(char::is_whitespace)
        && !path.contains("://")
        && !path.contains('*')
        && !path.starts_with(['<', '.'])
        && PATH_EXTENSIONS.iter().any(|ext| path.ends_with(ext));
    is_path.then_some(path)
}

#[test]
fn every_metric_the_docs_cite_is_registered() {
    let registered = registered_metrics();
    assert!(registered.contains("rally_shard_inputs_on_time_total"), "the scan finds the exporter's names");
    let mut missing = Vec::new();
    for doc in ["ARCHITECTURE.md", "README.md", "BENCHMARKS.md"].iter().chain(DEPLOY_DOCS) {
        for (line, span) in code_spans(&read(&Path::new(ROOT).join(doc))) {
            for name in cited_metrics(&span) {
                if !is_registered(&name, &registered) {
                    missing.push(format!("{doc}:{line}: `{name}`"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "metrics the docs cite but no crate registers:\n{}", missing.join("\n"));
}

#[test]
fn every_path_architecture_cites_exists() {
    let mut names = BTreeSet::new();
    file_names(Path::new(ROOT), &mut names);
    let mut missing = Vec::new();
    for (line, span) in code_spans(&read(&Path::new(ROOT).join("ARCHITECTURE.md"))) {
        let Some(path) = cited_path(&span) else { continue };
        // A crate's section may cite paths inside the crate (`models/pong-v1.onnx`).
        let exists = if path.contains('/') {
            CRATES.iter().any(|krate| Path::new(ROOT).join(krate).join(path).exists())
        } else {
            names.contains(path) || OUTSIDE.contains(&path)
        };
        if !exists {
            missing.push(format!("ARCHITECTURE.md:{line}: `{path}`"));
        }
    }
    assert!(missing.is_empty(), "paths ARCHITECTURE.md cites that do not exist:\n{}", missing.join("\n"));
}

#[test]
fn every_path_the_deploy_docs_cite_exists() {
    let mut deploy_files = Vec::new();
    all_files(&Path::new(ROOT).join("deploy"), &mut deploy_files);
    let mut missing = Vec::new();
    for doc in DEPLOY_DOCS {
        // Backticked spans only: a command in a fenced block names files it writes.
        let prose = without_fences(&read(&Path::new(ROOT).join(doc)));
        for (line, span) in code_spans(&prose) {
            let Some(path) = cited_path(&span) else { continue };
            let suffix = format!("/{path}");
            let exists = Path::new(ROOT).join(path).exists()
                || deploy_files.iter().any(|file| file.to_string_lossy().ends_with(&suffix));
            if !exists {
                missing.push(format!("{doc}:{line}: `{path}`"));
            }
        }
    }
    assert!(!deploy_files.is_empty(), "the scan finds deploy/'s files");
    assert!(missing.is_empty(), "paths the deploy docs cite that do not exist:\n{}", missing.join("\n"));
}

/// `text` with the lines of its fenced code blocks blanked (line numbers kept).
fn without_fences(text: &str) -> String {
    let mut in_fence = false;
    let mut out = String::new();
    for line in text.lines() {
        let fence = line.trim_start().starts_with("```");
        if !(fence || in_fence) {
            out.push_str(line);
        }
        out.push('\n');
        in_fence ^= fence;
    }
    out
}

/// Every file under `dir`, recursively.
fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn the_checks_tell_names_and_paths_apart() {
    let registered: BTreeSet<String> = ["rally_shard_tick_seconds".to_owned()].into();
    assert!(is_registered("rally_shard_tick_seconds_bucket", &registered));
    assert!(is_registered("rally_shard_tick_*", &registered));
    assert!(!is_registered("rally_shard_ticks_total", &registered));
    assert_eq!(cited_metrics("rally_a_total{reason}, rally_b_c"), ["rally_a_total", "rally_b_c"]);
    assert!(cited_metrics("rally_server::ops::prometheus").is_empty(), "a crate path is not a metric");
    assert_eq!(cited_path("server/src/driver.rs"), Some("server/src/driver.rs"));
    assert_eq!(cited_path("server/src/driver.rs:120"), Some("server/src/driver.rs"));
    assert_eq!(cited_path("driver.rs"), Some("driver.rs"));
    assert_eq!(cited_path("cargo run -p rally"), None);
    assert_eq!(cited_path("Shard::tick"), None);
    assert_eq!(cited_path(".proto"), None);
    assert_eq!(
        code_spans("a `b` c `d`\n```sh\nx y\n```"),
        [(1, "b".into()), (1, "d".into()), (3, "x".into()), (3, "y".into())]
    );
}
