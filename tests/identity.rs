//! Identity across processes: a `rally lobby` signs access tokens with a key
//! only it holds, and a separate `rally matchmaker` trusts them through the
//! public key alone, refusing tokens signed by any other key.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use rally::common::ReadyLine;
use rally_lobby::proto::auth::{RegisterRequest, auth_client::AuthClient};
use rally_lobby::{AccessSigningKeys, AccessTokenIssuer};
use rally_matchmaker::proto::matchmaker::{EnqueueRequest, matchmaker_client::MatchmakerClient};
use tonic::Code;

fn rally() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rally"))
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

fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[test]
fn a_split_matchmaker_trusts_the_lobbys_public_key_and_nothing_else() {
    let lobby_dir = tempfile::tempdir().unwrap();
    let (_lobby, lobby_ready) = start(
        rally()
            .args(["lobby", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--dev", "--data-dir"])
            .arg(lobby_dir.path()),
    );
    let [public_key] = <[String; 1]>::try_from(lobby_ready.access_token_keys.clone()).unwrap();
    let written = std::fs::read_to_string(lobby_dir.path().join("access_token_keys.pub")).unwrap();
    assert_eq!(written.trim(), public_key);

    // The matchmaker runs from a data dir of its own: all it has is the public key.
    let matchmaker_dir = tempfile::tempdir().unwrap();
    let (_matchmaker, matchmaker_ready) = start(
        rally()
            .args(["matchmaker", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--dev"])
            .args(["--access-token-key", &public_key, "--data-dir"])
            .arg(matchmaker_dir.path()),
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut auth = AuthClient::connect(format!("http://{}", lobby_ready.lobby.unwrap())).await.unwrap();
        let request = RegisterRequest {
            username: "split_sam".into(),
            password: "correct horse battery".into(),
            idempotency_key: String::new(),
        };
        let registered = auth.register(request).await.unwrap().into_inner();
        let token = registered.tokens.unwrap().access_token;
        let player_id = registered.account.unwrap().player_id;
        let mut matchmaker =
            MatchmakerClient::connect(format!("http://{}", matchmaker_ready.matchmaker.unwrap())).await.unwrap();
        let pong = || EnqueueRequest { mode: "pong".into(), ..EnqueueRequest::default() };
        matchmaker.enqueue(authed(pong(), &token)).await.expect("the lobby's token is trusted");

        // Anyone else's key, even with the player's real id and name, is refused.
        let now = i64::try_from(rally_transport::unix_ms() / 1000).unwrap();
        let forged =
            AccessTokenIssuer::new(AccessSigningKeys::generate()).issue(player_id, "split_sam", now).unwrap().0;
        let refused = matchmaker.enqueue(authed(pong(), &forged)).await.expect_err("a forged token");
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert!(refused.message().contains("does not trust"), "{}", refused.message());
    });
}

#[test]
fn a_matchmaker_without_the_lobbys_public_key_says_where_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = rally()
        .args(["matchmaker", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pass the public key the lobby prints"), "{stderr}");
    // The shared secret and the name-based moderators are gone from the command line.
    for argv in [
        &["matchmaker", "--jwt-secret-file", "jwt.key"][..],
        &["lobby", "--jwt-secret", "0123456789abcdef0123456789abcdef"][..],
        &["lobby", "--moderator", "mia"][..],
    ] {
        let output = rally().args(argv).output().unwrap();
        assert!(!output.status.success(), "{argv:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("unexpected argument"), "{argv:?}");
    }
}
