//! `rally lobby`: the Auth, Profile and Chat gRPC services on SQLite or PostgreSQL,
//! with the ops endpoint (`/metrics`, `/healthz`, `/readyz`) on `--metrics-addr`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rally_lobby::{LobbyConfig, WordFilter};

use crate::common::{READY_JSON_HELP, ReadyLine, resolve_access_signing_keys, shutdown_signal};

/// `rally lobby` flags.
#[derive(Debug, Clone, Args)]
pub struct LobbyArgs {
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:50051", env = "RALLY_LOBBY_LISTEN")]
    pub listen: SocketAddr,
    /// Directory for the SQLite database and the development access-token keys.
    #[arg(long, default_value = "data", env = "RALLY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// `sqlite://<file>` or `postgres://…` [default: sqlite://<data-dir>/lobby.db].
    #[arg(long, env = "RALLY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// File of the Ed25519 keys that sign access tokens: one 32-byte seed as
    /// 64 hex digits a line (`openssl rand -hex 32`), oldest first. The last
    /// line signs; earlier ones still verify, so to rotate append a line and
    /// drop the oldest once its tokens have expired (15 minutes). Without it,
    /// development keys are kept in the data dir.
    #[arg(long, env = "RALLY_ACCESS_SIGNING_KEY_FILE")]
    pub access_signing_key_file: Option<PathBuf>,
    /// Development mode: without a key file, generate keys and keep them in the data dir (0600).
    #[arg(long)]
    pub dev: bool,
    /// File of words the chat masks with `*` (one a line, `#` comments) [default: none].
    #[arg(long, value_name = "FILE", env = "RALLY_CHAT_WORD_FILTER")]
    pub word_filter: Option<PathBuf>,
    /// Redis of a split deployment: consume match results from its stream and
    /// apply them to ratings (exactly once per match), and run as one of
    /// several lobby replicas on one database: live chat across replicas
    /// (pub/sub), presence, and per-account login and chat limits counted
    /// together. Without it, results reach ratings only in `rally up`'s
    /// in-process bus, and this lobby must be the database's only one.
    #[arg(long, env = "RALLY_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Key prefix on Redis, the same for every role of one deployment.
    #[arg(long, default_value = "rally", env = "RALLY_REDIS_PREFIX")]
    pub redis_prefix: String,
    /// Longest chat message, in characters.
    #[arg(long, default_value_t = 500, env = "RALLY_CHAT_MAX_MESSAGE_CHARS")]
    pub chat_max_message_chars: usize,
    /// Client networks exempt from the per-address sign-in limit (Register and
    /// Login), e.g. a bot farm's or a load generator's: CIDR (`10.0.0.0/8`,
    /// `fd00::/8`) or single addresses; repeat or comma-separate. The
    /// per-account login limit still applies [default: none].
    #[arg(long, value_name = "NETWORK", env = "RALLY_LOGIN_LIMIT_EXEMPT", value_delimiter = ',')]
    pub login_limit_exempt: Vec<rally_lobby::limits::IpNetwork>,
    /// An OpenID Connect provider players may log in with (repeatable):
    /// `NAME=ISSUER,CLIENT_ID[,OPTION=VALUE…]`. Options: `secret-file=PATH`
    /// (confidential clients; without it PKCE alone), `scopes=openid+profile`,
    /// `name-claim=CLAIM` (repeatable, first present names the account;
    /// default preferred_username, name, email), `redirect-uri=URI`
    /// (repeatable, at least one; `http://127.0.0.1/PATH` without a port
    /// allows any port, for `rally play`), `display-name=TEXT`. Endpoints and
    /// keys come from ISSUER/.well-known/openid-configuration; the device flow
    /// works when the provider has one. README "Identity providers".
    #[arg(long = "oidc", value_name = "SPEC", value_parser = rally_lobby::ProviderConfig::parse_oidc)]
    pub oidc: Vec<rally_lobby::ProviderConfig>,
    /// A plain OAuth2 provider with a userinfo endpoint (repeatable), e.g. the
    /// 42 intranet: `NAME=AUTHORIZATION_URL,TOKEN_URL,USERINFO_URL,CLIENT_ID[,OPTION=VALUE…]`.
    /// Options as --oidc, and `id-claim=PATH` (the person's stable id in the
    /// userinfo JSON, dotted; default `id`; `name-claim` defaults to `login`)
    /// and `device-url=URL` (its RFC 8628 device authorization endpoint).
    #[arg(long = "oauth2", value_name = "SPEC", value_parser = rally_lobby::ProviderConfig::parse_oauth2)]
    pub oauth2: Vec<rally_lobby::ProviderConfig>,
    /// A file of identity providers, one a line: `oidc SPEC` or `oauth2 SPEC`
    /// as the flags take them (`#` comments), added to --oidc and --oauth2.
    #[arg(long, value_name = "FILE", env = "RALLY_IDENTITY_PROVIDERS")]
    pub identity_providers: Option<PathBuf>,
    /// Clock skew allowed on ID tokens' expiry, in seconds.
    #[arg(long, default_value_t = 30, env = "RALLY_IDENTITY_CLOCK_SKEW_S")]
    pub identity_clock_skew_s: u64,
    /// Prometheus metrics (gRPC requests, results applied), /healthz and /readyz
    /// (503 once shutting down).
    #[arg(long, default_value = "127.0.0.1:9601", env = "RALLY_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
    /// Print the machine-readable ready line instead of the banner.
    #[arg(long, help = READY_JSON_HELP)]
    pub ready_json: bool,
}

/// Runs the lobby until Ctrl-C / SIGTERM.
pub fn run(args: LobbyArgs) -> anyhow::Result<()> {
    let keys = resolve_access_signing_keys(args.access_signing_key_file.as_deref(), args.dev, &args.data_dir)?;
    let public_keys: Vec<String> = keys.public_keys().iter().map(|key| key.to_hex()).collect();
    let database_url = match &args.database_url {
        Some(url) => url.clone(),
        None => {
            std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
            format!("sqlite://{}", args.data_dir.join("lobby.db").display())
        }
    };
    let mut config = LobbyConfig::new(args.listen, database_url, keys);
    anyhow::ensure!(args.chat_max_message_chars >= 1, "--chat-max-message-chars must be at least 1");
    config.chat.max_message_chars = args.chat_max_message_chars;
    config.limits.auth_per_ip_exempt.clone_from(&args.login_limit_exempt);
    config.redis = args.redis_url.as_ref().map(|url| rally_lobby::LobbyRedisConfig::new(url, &args.redis_prefix));
    config.identity.providers = args.oidc.iter().chain(&args.oauth2).cloned().collect();
    if let Some(path) = &args.identity_providers {
        config.identity.providers.extend(rally_lobby::ProviderConfig::parse_file(path)?);
    }
    config.identity.clock_skew = std::time::Duration::from_secs(args.identity_clock_skew_s);
    for provider in &config.identity.providers {
        tracing::info!(provider = %provider.name, "identity provider configured");
    }
    if let Some(path) = &args.word_filter {
        let words =
            std::fs::read_to_string(path).with_context(|| format!("reading --word-filter {}", path.display()))?;
        config.chat.word_filter = WordFilter::from_list(&words);
        tracing::info!(n_words = config.chat.word_filter.len(), "chat word filter loaded");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    // Before any series is made, so none goes to the no-op recorder.
    rally_server::ops::prometheus();
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        let mut handle = rally_lobby::serve(config).await.context("starting the lobby")?;
        let readiness = rally_server::ops::Readiness::default();
        let metrics = rally_server::ops::serve(args.metrics_addr, readiness.clone()).await?;
        if !args.ready_json {
            println!(
                "lobby listening on {} (gRPC), metrics on http://{metrics}/metrics; the matchmaker needs \
                 --access-token-key {}",
                handle.local_addr(),
                public_keys.join(" --access-token-key ")
            );
        }
        let consumer = match &args.redis_url {
            Some(url) => {
                let redis =
                    rally_matchmaker::RedisConnection::connect_lazy(url, &args.redis_prefix).context("--redis-url")?;
                let redis = redis.with_role("the lobby");
                let bus = std::sync::Arc::new(rally_matchmaker::redis::RedisBus::new(redis.clone()));
                let events = std::sync::Arc::new(rally_matchmaker::redis::RedisMatchEvents::new(redis.clone()));
                // New ratings go out as events for the matchmakers' read model.
                let ratings = std::sync::Arc::new(rally_matchmaker::redis::RedisRatingEvents::new(redis));
                // The consumer name must differ between replicas: in a container every
                // process is PID 1, so the host name (the pod's or compose's) comes first.
                let host = std::env::var("HOSTNAME").ok().filter(|host| !host.is_empty());
                let name = format!("lobby-{}-{}", host.as_deref().unwrap_or("local"), std::process::id());
                let (consumer, _, channels) = rally_matchmaker::lobby_results::consume_into_lobby_publishing_ratings(
                    bus,
                    events,
                    ratings,
                    handle.profiles().clone(),
                    handle.chat().clone(),
                    &name,
                );
                if !args.ready_json {
                    println!(
                        "applying match results from {url} to ratings and opening match chat channels (consumer {name})"
                    );
                }
                Some((consumer, channels))
            }
            None => None,
        };
        if args.ready_json {
            ReadyLine {
                lobby: Some(handle.local_addr()),
                metrics: Some(metrics),
                access_token_keys: public_keys,
                ..ReadyLine::new("lobby")
            }
            .print()?;
        }
        tokio::select! {
            served = handle.wait() => return served.context("lobby stopped"),
            () = shutdown => {}
        }
        tracing::info!("shutting down the lobby");
        // Load balancers stop sending new calls while the running ones finish.
        readiness.set_draining();
        if let Some((consumer, channels)) = consumer {
            channels.stop().await;
            consumer.stop().await;
        }
        handle.shutdown().await.context("shutting down")
    })
}
