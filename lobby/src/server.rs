//! Wiring: one tonic server with Auth, Profile, Chat, health and reflection (v1
//! and v1alpha) behind the [`ContractLayer`] (size, metadata and method rules)
//! and the [`GrpcMetricsLayer`] (request counts and latency), and a handle to
//! stop it. `rally lobby` and `rally up` call [`serve`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;

use crate::auth::AuthService;
use crate::chat::{ChatConfig, ChatService, ChatStore};
use crate::contract::{ContractLayer, HTTP2_MAX_HEADER_LIST_BYTES};
use crate::db::Db;
use crate::error::LobbyError;
use crate::grpc_metrics::GrpcMetricsLayer;
use crate::identity::IdentityConfig;
use crate::limits::LobbyLimitsConfig;
use crate::password::{PasswordHashConfig, PasswordHasherPool};
use crate::profile::{ProfileService, ProfileStore};
use crate::proto::{
    self, auth::auth_server::AuthServer, chat::chat_server::ChatServer, profile::profile_server::ProfileServer,
};
use crate::replicas::{LobbyRedisConfig, RedisLink};
use crate::request_span::request_span;
use crate::tokens::{AccessSigningKeys, AccessTokenIssuer, AccessTokenVerifier, TokenInterceptor};

pub use crate::contract::MAX_REQUEST_BYTES;

/// Everything [`serve`] needs.
#[derive(Debug, Clone)]
pub struct LobbyConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// `sqlite://<file>` or `postgres://…`.
    pub database_url: String,
    /// The access-token signing keys (the newest signs; all verify).
    pub access_keys: AccessSigningKeys,
    /// Rate limits.
    pub limits: LobbyLimitsConfig,
    /// argon2id costs.
    pub password_hash: PasswordHashConfig,
    /// Upper bound on any request's handling time (clients' own deadlines apply
    /// too); a Subscribe stream is bounded only until it starts streaming.
    pub request_timeout: Duration,
    /// Chat limits, moderators, word filter and presence.
    pub chat: ChatConfig,
    /// The Redis shared by this database's lobby replicas: live chat,
    /// presence and per-account limits across them ([`crate::replicas`]).
    /// None: one process, all of that in memory.
    pub redis: Option<LobbyRedisConfig>,
    /// External identity providers (OpenID Connect, OAuth2) and their checks.
    pub identity: IdentityConfig,
    /// Origins (`http://127.0.0.1:8080`) whose pages may call this lobby over
    /// gRPC-Web; empty sends no CORS headers ([`crate::grpc_web`]).
    pub web_origins: Vec<String>,
}

impl LobbyConfig {
    /// A config with default limits and hashing costs.
    pub fn new(listen: SocketAddr, database_url: impl Into<String>, access_keys: AccessSigningKeys) -> Self {
        Self {
            listen,
            database_url: database_url.into(),
            access_keys,
            limits: LobbyLimitsConfig::default(),
            password_hash: PasswordHashConfig::default(),
            request_timeout: Duration::from_secs(30),
            chat: ChatConfig::default(),
            redis: None,
            identity: IdentityConfig::default(),
            web_origins: Vec::new(),
        }
    }
}

/// A running lobby.
#[derive(Debug)]
pub struct LobbyHandle {
    local_addr: SocketAddr,
    db: Db,
    profiles: ProfileStore,
    chat: ChatStore,
    verifier: AccessTokenVerifier,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl LobbyHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The consumer of finished matches (ratings and history).
    pub fn profiles(&self) -> &ProfileStore {
        &self.profiles
    }

    /// Chat, for in-process callers (the matchmaker opens match channels here).
    pub fn chat(&self) -> &ChatStore {
        &self.chat
    }

    /// Verifies access tokens this lobby issued, without a network hop; it
    /// holds the public keys only, so whoever gets it cannot mint tokens.
    pub fn verifier(&self) -> &AccessTokenVerifier {
        &self.verifier
    }

    /// Stops accepting, ends Subscribe streams (UNAVAILABLE, so clients
    /// resume elsewhere), withdraws this process's players from presence,
    /// lets in-flight calls finish, and closes the database.
    pub async fn shutdown(mut self) -> Result<(), LobbyError> {
        self.chat.close().await;
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let served = (&mut self.task).await;
        self.db.close().await;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(LobbyError::Internal(format!("server: {err}"))),
            Err(err) => Err(LobbyError::Internal(format!("server task: {err}"))),
        }
    }

    /// Waits until the server stops on its own (an error), for `rally lobby`.
    pub async fn wait(&mut self) -> Result<(), LobbyError> {
        match (&mut self.task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(LobbyError::Internal(format!("server: {err}"))),
            Err(err) => Err(LobbyError::Internal(format!("server task: {err}"))),
        }
    }
}

/// Connects the database (running migrations), binds, and serves in a task.
pub async fn serve(config: LobbyConfig) -> Result<LobbyHandle, LobbyError> {
    let db = Db::connect(&config.database_url).await?;
    let issuer = AccessTokenIssuer::new(config.access_keys.clone());
    let verifier = issuer.verifier();
    let hasher = PasswordHasherPool::new(config.password_hash)?;
    let profiles = ProfileStore::new(db.clone());
    let redis = config.redis.as_ref().map(RedisLink::connect_lazy).transpose()?;

    let auth = AuthService::new(
        db.clone(),
        hasher,
        issuer,
        profiles.clone(),
        &config.limits,
        redis.as_ref(),
        &config.identity,
    )?;
    let auth = tonic::service::interceptor::InterceptedService::new(
        AuthServer::new(auth).max_decoding_message_size(MAX_REQUEST_BYTES),
        TokenInterceptor::new(verifier.clone(), false),
    );
    let profile = tonic::service::interceptor::InterceptedService::new(
        ProfileServer::new(ProfileService::new(profiles.clone())).max_decoding_message_size(MAX_REQUEST_BYTES),
        TokenInterceptor::new(verifier.clone(), true),
    );
    let chat = ChatStore::new(db.clone(), profiles.clone(), config.chat.clone(), &config.limits, redis.as_ref());
    let chat_service = tonic::service::interceptor::InterceptedService::new(
        ChatServer::new(ChatService::new(chat.clone())).max_decoding_message_size(MAX_REQUEST_BYTES),
        TokenInterceptor::new(verifier.clone(), true),
    );

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<AuthServer<AuthService>>().await;
    health_reporter.set_serving::<ProfileServer<ProfileService>>().await;
    health_reporter.set_serving::<ChatServer<ChatService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|err| LobbyError::Internal(format!("reflection: {err}")))?;
    // grpcurl and grpcio-reflection still ask v1alpha.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|err| LobbyError::Internal(format!("reflection: {err}")))?;
    let descriptors = [
        proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let contract =
        ContractLayer::new(&descriptors).map_err(|err| LobbyError::Internal(format!("descriptors: {err}")))?;
    let grpc_metrics = GrpcMetricsLayer::new(&descriptors)
        .map_err(|err| LobbyError::Internal(format!("descriptors: {err}")))?
        .with_timeout(config.request_timeout);

    let cors = crate::grpc_web::cors_layer(&config.web_origins).map_err(LobbyError::Internal)?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|err| LobbyError::Internal(format!("binding {}: {err}", config.listen)))?;
    let local_addr = listener.local_addr().map_err(|err| LobbyError::Internal(format!("local address: {err}")))?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    // Browsers speak gRPC-Web over HTTP/1.1: CORS answers their preflights,
    // then gRPC-Web becomes gRPC before the metrics and contract layers, so
    // they count and check those calls like any other.
    let router = Server::builder()
        .accept_http1(true)
        .trace_fn(request_span)
        .timeout(config.request_timeout)
        .http2_max_header_list_size(HTTP2_MAX_HEADER_LIST_BYTES)
        .layer(cors)
        .layer(crate::grpc_web::grpc_web_layer())
        .layer(grpc_metrics)
        .layer(contract)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(auth)
        .add_service(profile)
        .add_service(chat_service);
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = shutdown_rx.await;
    }));
    tracing::info!(%local_addr, "lobby listening");
    Ok(LobbyHandle { local_addr, db, profiles, chat, verifier, shutdown: Some(shutdown_tx), task })
}
