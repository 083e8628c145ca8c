//! Test scaffolding: a lobby on a fresh SQLite file or a fresh PostgreSQL
//! schema, served over loopback, and tonic clients for it.

#![expect(unreachable_pub, reason = "a module of each test binary, not a library")]
// Not `expect`: each test binary uses a different part of this module, so
// dead code is found in some binaries and not in others.
#![allow(dead_code, reason = "each test binary uses a different part of this module")]

use std::net::SocketAddr;

use rally_lobby::limits::LobbyLimitsConfig;
use rally_lobby::password::PasswordHashConfig;
use rally_lobby::proto::auth::{self as auth_pb, auth_client::AuthClient};
use rally_lobby::proto::chat::chat_client::ChatClient;
use rally_lobby::proto::profile::profile_client::ProfileClient;
use rally_lobby::{AccessSigningKey, AccessSigningKeys, LobbyConfig, LobbyHandle};
use tonic::transport::Channel;

/// Where a test's lobby keeps its data.
pub enum Backend {
    Sqlite { _dir: tempfile::TempDir, url: String },
    Postgres { admin: sqlx::PgPool, schema: String, url: String },
}

impl Backend {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("lobby.db").display());
        Self::Sqlite { _dir: dir, url }
    }

    /// A fresh schema on the server at `RALLY_TEST_DATABASE_URL`.
    pub async fn postgres() -> Self {
        let base = std::env::var("RALLY_TEST_DATABASE_URL").expect(
            "RALLY_TEST_DATABASE_URL is not set: the PostgreSQL half of the lobby suite needs a server, e.g. \
             export RALLY_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test",
        );
        let admin = sqlx::PgPool::connect(&base).await.expect("connect to RALLY_TEST_DATABASE_URL");
        let schema = format!("lobby_test_{:016x}", rand::random::<u64>());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .expect("create test schema");
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options[search_path]={schema}");
        Self::Postgres { admin, schema, url }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url, .. } => url,
        }
    }

    /// Drops the PostgreSQL schema (SQLite's temp dir goes with the value).
    pub async fn cleanup(self) {
        if let Self::Postgres { admin, schema, .. } = self {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&admin)
                .await
                .expect("drop test schema");
            admin.close().await;
        }
    }
}

pub fn secret() -> AccessSigningKeys {
    AccessSigningKeys::from(AccessSigningKey::from_seed([7; 32]))
}

pub fn config(backend: &Backend) -> LobbyConfig {
    let mut config = LobbyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), backend.url(), secret());
    // Cheap hashes keep the suite fast; the production costs are the defaults.
    config.password_hash = PasswordHashConfig { memory_kib: 1024, iterations: 1, max_concurrent: 2 };
    config.limits = LobbyLimitsConfig::default();
    config
}

pub async fn start(config: LobbyConfig) -> LobbyHandle {
    rally_lobby::serve(config).await.expect("lobby starts")
}

pub async fn channel(handle: &LobbyHandle) -> Channel {
    Channel::from_shared(format!("http://{}", handle.local_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect to lobby")
}

pub async fn auth_client(handle: &LobbyHandle) -> AuthClient<Channel> {
    AuthClient::new(channel(handle).await)
}

pub async fn profile_client(handle: &LobbyHandle) -> ProfileClient<Channel> {
    ProfileClient::new(channel(handle).await)
}

pub async fn chat_client(handle: &LobbyHandle) -> ChatClient<Channel> {
    ChatClient::new(channel(handle).await)
}

/// A request carrying `access_token` as a bearer token.
pub fn authed<T>(message: T, access_token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {access_token}").parse().expect("ascii token"));
    request
}

pub const PASSWORD: &str = "correct horse battery";

pub async fn register(client: &mut AuthClient<Channel>, username: &str) -> auth_pb::RegisterResponse {
    client
        .register(auth_pb::RegisterRequest {
            username: username.into(),
            password: PASSWORD.into(),
            idempotency_key: String::new(),
        })
        .await
        .expect("register")
        .into_inner()
}

/// Defines one `#[tokio::test]` per scenario and backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let backend = $crate::common::Backend::sqlite().await;
                    super::$scenario(&backend).await;
                    backend.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let backend = $crate::common::Backend::postgres().await;
                    super::$scenario(&backend).await;
                    backend.cleanup().await;
                }
            )*
        }
    };
}
