//! A PostgreSQL outage under a running lobby and matchmaker: Auth and chat
//! Send fail fast with UNAVAILABLE and a retry hint instead of blocking, and
//! recover by themselves when the database is back. Enqueue goes on working:
//! the matchmaker reads ratings from its read model of the lobby's rating
//! events and never opens the lobby's database.
//!
//! The test runs a PostgreSQL cluster of its own (`initdb`/`pg_ctl` as the
//! `postgres` user, in a temporary directory, on a free port), never the
//! machine's shared server, and stops it with `pg_ctl stop -m immediate`.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rally_lobby::error::RETRY_AFTER_MS_METADATA;
use rally_lobby::password::PasswordHashConfig;
use rally_lobby::proto::auth::{LoginRequest, RegisterRequest, auth_client::AuthClient};
use rally_lobby::proto::chat::{JoinRequest, SendRequest, chat_client::ChatClient, join_request};
use rally_lobby::{AccessSigningKey, AccessSigningKeys, LobbyConfig};
use rally_matchmaker::config::MatchmakerConfig;
use rally_matchmaker::player::{PlayerClient, RetryPolicy, authorized};
use rally_matchmaker::proto::matchmaker::{EnqueueRequest, matchmaker_client::MatchmakerClient};
use rally_matchmaker::{Backends, BusRatings, Matchmaker, MemoryRatingModel};
use tonic::Code;
use tonic::transport::Channel;

/// A call that does not answer within this long is hanging.
const ANSWER_BOUND: Duration = Duration::from_secs(8);

/// A PostgreSQL cluster of the test's own.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `initdb` into a fresh temporary directory, on a free port.
    fn create() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The server runs as `postgres`, which must reach the directory.
        chmod(dir.path(), 0o777);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cluster = Self { dir, port };
        as_postgres(&["initdb", "-D", path_str(&cluster.data()), "-A", "trust", "-U", "postgres", "--no-sync"]);
        cluster
    }

    fn start(&self) {
        let options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, path_str(self.dir.path()));
        let log = self.dir.path().join("log");
        as_postgres(&["pg_ctl", "-D", path_str(&self.data()), "-o", &options, "-l", path_str(&log), "-w", "start"]);
    }

    fn stop_immediately(&self) {
        as_postgres(&["pg_ctl", "-D", path_str(&self.data()), "-m", "immediate", "-w", "stop"]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", "pg_ctl", "-D", path_str(&self.data()), "-m", "immediate", "stop"])
            .output();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs a PostgreSQL tool as the `postgres` user (they refuse to run as root).
fn as_postgres(args: &[&str]) {
    let output = Command::new("runuser").args(["-u", "postgres", "--"]).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn keys() -> AccessSigningKeys {
    AccessSigningKeys::from(AccessSigningKey::from_seed([9; 32]))
}

/// The call answers within [`ANSWER_BOUND`] with UNAVAILABLE and a retry hint.
async fn unavailable_at_once<T: std::fmt::Debug>(
    what: &str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) {
    let answer = tokio::time::timeout(ANSWER_BOUND, call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {ANSWER_BOUND:?} while the database was down"));
    let status = answer.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    assert!(status.message().contains("retry"), "{what} says to retry: {}", status.message());
    let hint = status.metadata().get(RETRY_AFTER_MS_METADATA).and_then(|value| value.to_str().ok());
    assert!(hint.is_some_and(|ms| ms.parse::<u64>().is_ok_and(|ms| ms >= 1)), "{what}: {hint:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_fast_while_postgres_is_down_and_recover_when_it_returns() {
    let cluster = Cluster::create();
    cluster.start();

    let mut config = LobbyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), cluster.url(), keys());
    config.password_hash = PasswordHashConfig { memory_kib: 1024, iterations: 1, max_concurrent: 2 };
    let lobby = rally_lobby::serve(config).await.unwrap();
    let ratings = Arc::new(BusRatings::new(Arc::new(MemoryRatingModel::new())));
    let matchmaker = Matchmaker::new(
        MatchmakerConfig::default(),
        Backends::in_memory(Duration::from_secs(60)),
        ratings,
        common::minter(),
    )
    .unwrap();
    let mm_server =
        rally_matchmaker::serve(SocketAddr::from(([127, 0, 0, 1], 0)), matchmaker, keys().verifier()).await.unwrap();
    let lobby_channel =
        Channel::from_shared(format!("http://{}", lobby.local_addr())).unwrap().connect().await.unwrap();
    let mm_channel =
        Channel::from_shared(format!("http://{}", mm_server.local_addr())).unwrap().connect().await.unwrap();

    let password = "a long enough passphrase";
    let player = PlayerClient::register_or_login(lobby_channel.clone(), mm_channel.clone(), "outage-human", password)
        .await
        .unwrap();
    let mut chat = ChatClient::new(lobby_channel.clone());
    let join = JoinRequest { target: Some(join_request::Target::PublicName("lobby".into())) };
    let channel_id = chat.join(player.request(join)).await.unwrap().into_inner().channel_id;
    let send = |body: &str| {
        player.request(SendRequest {
            channel_id: channel_id.clone(),
            body: body.to_owned(),
            idempotency_key: String::new(),
        })
    };
    chat.send(send("before")).await.unwrap();

    cluster.stop_immediately();

    let mut auth = AuthClient::new(lobby_channel.clone());
    let login = LoginRequest { username: "outage-human".into(), password: password.into() };
    unavailable_at_once("Auth.Login", auth.login(login.clone())).await;
    let register = RegisterRequest {
        username: "outage-newcomer".into(),
        password: password.into(),
        idempotency_key: String::new(),
    };
    unavailable_at_once("Auth.Register", auth.register(register)).await;
    unavailable_at_once("Chat.Send", chat.send(send("during"))).await;
    let mut enqueue = MatchmakerClient::new(mm_channel.clone());
    let pong = EnqueueRequest { mode: "pong".into(), ..EnqueueRequest::default() };
    let access_token =
        player.request(()).metadata().get("authorization").unwrap().to_str().unwrap()["Bearer ".len()..].to_owned();
    let queued = tokio::time::timeout(ANSWER_BOUND, enqueue.enqueue(authorized(pong, &access_token)))
        .await
        .expect("Enqueue answers while the lobby's database is down");
    queued.expect("the matchmaker does not depend on the lobby's database");

    // Back up: a client that retries gets in, with nothing restarted.
    cluster.start();
    let retry = RetryPolicy { max_attempts: Some(20), ..RetryPolicy::default() };
    let again = tokio::time::timeout(
        Duration::from_secs(60),
        PlayerClient::login_retrying(lobby_channel.clone(), mm_channel.clone(), "outage-human", password, retry),
    )
    .await
    .expect("logging in again does not hang")
    .expect("the lobby recovers by itself");
    assert_eq!(again.player_id(), player.player_id());
    chat.send(again.request(SendRequest {
        channel_id: channel_id.clone(),
        body: "after".into(),
        idempotency_key: String::new(),
    }))
    .await
    .unwrap();

    mm_server.shutdown().await.unwrap();
    lobby.shutdown().await.unwrap();
}
