//! `rally health`, the image's HEALTHCHECK, against real endpoints: a split
//! `rally lobby` + `rally matchmaker` (their grpc.health.v1 services and the
//! matchmaker's ops endpoint), an ops endpoint that drains, a health service
//! that reports NOT_SERVING, and endpoints that refuse, stay silent or are
//! not what the probe expects. Each probe is the real binary, judged by its
//! exit status and its one line of output.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};

use rally::common::ReadyLine;
use tonic_health::ServingStatus;

fn rally() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rally"));
    command.env_remove("RALLY_HEALTH_URL").env_remove("RUST_LOG");
    command
}

/// A child process killed when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `command` with `--ready-json` and reads its ready line.
fn start(command: &mut Command) -> (Running, ReadyLine) {
    let mut child = command.arg("--ready-json").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    (Running(child), ReadyLine::parse(&line).unwrap())
}

/// Runs `rally health ARGS…`.
fn probe(args: &[&str]) -> Output {
    rally().arg("health").args(args).output().unwrap()
}

/// Asserts the probe exited 0 and said so in one stdout line containing `says`.
fn assert_healthy(args: &[&str], says: &str) {
    let output = probe(args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?} failed: {stderr}");
    assert_eq!(stdout.lines().count(), 1, "{args:?}: {stdout}");
    assert!(stdout.contains("is healthy") && stdout.contains(says), "{args:?}: {stdout}");
}

/// Asserts the probe exited 1 with one stderr line containing `says`.
fn assert_unhealthy(args: &[&str], says: &str) {
    let output = probe(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(output.stdout.is_empty(), "{args:?} printed {:?}", String::from_utf8_lossy(&output.stdout));
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains(says), "{args:?}: {stderr}");
}

/// An address nothing listens on (bound, then released).
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[test]
fn a_split_lobby_and_matchmaker_are_healthy_and_wrong_questions_are_not() {
    let lobby_dir = tempfile::tempdir().unwrap();
    let (_lobby, lobby_ready) = start(
        rally()
            .args(["lobby", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--dev", "--data-dir"])
            .arg(lobby_dir.path()),
    );
    let lobby = format!("grpc://{}", lobby_ready.lobby.unwrap());
    assert_healthy(&[&lobby], "SERVING");
    assert_healthy(&[&lobby, "--service", "rally.auth.v1.Auth"], "SERVING");
    assert_unhealthy(&[&lobby, "--service", "rally.no.v1.Such"], "NotFound");
    // The gRPC port speaks HTTP/2 only: an HTTP/1 GET there is no health answer.
    assert_unhealthy(&[&format!("http://{}/readyz", lobby_ready.lobby.unwrap())], "is unhealthy");
    // Its ops endpoint, as every role's: ready until it shuts down.
    assert_healthy(&[&format!("http://{}/readyz", lobby_ready.metrics.unwrap())], "HTTP 200");

    let [public_key] = <[String; 1]>::try_from(lobby_ready.access_token_keys).unwrap();
    let matchmaker_dir = tempfile::tempdir().unwrap();
    let (_matchmaker, matchmaker_ready) = start(
        rally()
            .args(["matchmaker", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--dev"])
            .args(["--access-token-key", &public_key, "--data-dir"])
            .arg(matchmaker_dir.path()),
    );
    assert_healthy(&[&format!("grpc://{}", matchmaker_ready.matchmaker.unwrap())], "SERVING");
    let ops = matchmaker_ready.metrics.unwrap();
    assert_healthy(&[&format!("http://{ops}/readyz")], "HTTP 200");
    assert_healthy(&[&format!("http://{ops}/healthz"), "--timeout", "10"], "HTTP 200");
    assert_unhealthy(&[&format!("http://{ops}/no-such-page")], "HTTP 404");
    // The ops endpoint is HTTP/1 only: no gRPC health service there.
    assert_unhealthy(&[&format!("grpc://{ops}")], "is unhealthy");
}

#[test]
fn a_draining_ops_endpoint_and_a_not_serving_health_service_are_unhealthy() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let readiness = rally_server::ops::Readiness::default();
    let ops = runtime.block_on(rally_server::ops::serve("127.0.0.1:0".parse().unwrap(), readiness.clone())).unwrap();
    let readyz = format!("http://{ops}/readyz");
    assert_healthy(&[&readyz], "HTTP 200");
    readiness.set_draining();
    assert_unhealthy(&[&readyz], "HTTP 503");
    // Draining is not dead: liveness still answers.
    assert_healthy(&[&format!("http://{ops}/healthz")], "HTTP 200");

    let (reporter, health) = tonic_health::server::health_reporter();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let grpc = format!("grpc://{}", listener.local_addr().unwrap());
    runtime.block_on(reporter.set_service_status("", ServingStatus::NotServing));
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    assert_unhealthy(&[&grpc], "NOT_SERVING");
    runtime.block_on(reporter.set_service_status("", ServingStatus::Serving));
    assert_healthy(&[&grpc], "SERVING");
}

#[test]
fn refused_silent_and_malformed_targets_fail_with_one_clear_line() {
    let closed = closed_port();
    assert_unhealthy(&[&format!("http://{closed}/readyz")], &format!("connecting to {closed}"));
    assert_unhealthy(&[&format!("grpc://{closed}")], &format!("connecting to {closed}"));

    // Accepts connections (the kernel's backlog does) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    assert_unhealthy(&[&format!("http://{silent_addr}/readyz"), "--timeout", "0.5"], "no answer within 0.5 s");
    assert_unhealthy(&[&format!("grpc://{silent_addr}"), "--timeout", "0.5"], "is unhealthy");

    // An answer that is not HTTP at all.
    let garbage = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage_addr = garbage.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let (mut stream, _) = garbage.accept().unwrap();
        let mut request = [0u8; 512];
        let _ = stream.read(&mut request);
        stream.write_all(b"\x00\xffSSH-2.0-not-http\r\n").unwrap();
    });
    assert_unhealthy(&[&format!("http://{garbage_addr}/readyz")], "not HTTP/1");
    server.join().unwrap();

    assert_unhealthy(&["ftp://127.0.0.1:21/"], "speaks http://");
    assert_unhealthy(&["http://127.0.0.1/readyz"], "names no port");
    // The default target is the image's: the ops endpoint on 9600, or RALLY_HEALTH_URL.
    let output = rally()
        .args(["health", "--timeout", "2"])
        .env("RALLY_HEALTH_URL", format!("grpc://{closed}"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("grpc://{closed} is unhealthy")));
    // A timeout that is no duration is refused before anything is asked.
    let output = probe(&["http://127.0.0.1:9600/readyz", "--timeout", "0"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--timeout"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
