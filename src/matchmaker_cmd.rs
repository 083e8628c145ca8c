//! `rally matchmaker`: the Matchmaker gRPC service, with its registry, ticket
//! store and results bus on Redis (`--redis-url`) or in memory. Ratings come
//! from its read model of the lobby's rating events on the same Redis; it
//! never opens the lobby's database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ed25519_dalek::SigningKey;
use rally_matchmaker::engine::Backends;
use rally_matchmaker::redis::{RedisRatingEvents, RedisRatingModel};
use rally_matchmaker::{
    BusRatings, Matchmaker, MatchmakerConfig, MemoryRatingModel, ModeConfig, RatingModel, RedisConnection, TokenMinter,
    WindowCurve, follow_ratings,
};

use crate::common::{
    DEV_ACCESS_TOKEN_KEYS_FILE, READY_JSON_HELP, ReadyLine, key_from_hex, resolve_access_token_keys, shutdown_signal,
};

/// `rally matchmaker` flags.
#[derive(Debug, Clone, Args)]
pub struct MatchmakerArgs {
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:50052", env = "RALLY_MATCHMAKER_LISTEN")]
    pub listen: SocketAddr,
    /// Directory for development keys.
    #[arg(long, default_value = "data", env = "RALLY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Shared registry, ticket store, results bus and ratings (the lobby's
    /// rating events). Without it everything is in this process: shards in
    /// other processes cannot register, and every player has the default rating.
    #[arg(long, env = "RALLY_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (shards must use the same).
    #[arg(long, default_value = "rally", env = "RALLY_REDIS_PREFIX")]
    pub redis_prefix: String,
    /// A public key of the lobby's, 64 hex digits, whose access tokens are
    /// accepted (the lobby prints it); repeat or comma-separate to trust the
    /// old and new keys of a rotation [default: the keys a development lobby
    /// wrote to <data-dir>/access_token_keys.pub]. Only public keys: the
    /// matchmaker cannot mint access tokens.
    #[arg(long = "access-token-key", value_name = "HEX", env = "RALLY_ACCESS_TOKEN_KEYS", value_delimiter = ',')]
    pub access_token_keys: Vec<String>,
    /// Ed25519 key that signs connect tokens: a file with 64 hex digits. Without
    /// it a development key is kept in the data dir.
    #[arg(long, env = "RALLY_TOKEN_SIGNING_KEY_FILE")]
    pub token_signing_key_file: Option<PathBuf>,
    /// Key id tokens carry (shards trust `--token-key ID:PUBLIC_HEX`).
    #[arg(long, default_value_t = 1)]
    pub token_key_id: u8,
    /// Seconds a connect token stays valid.
    #[arg(long, default_value_t = 60.0)]
    pub token_ttl: f64,
    /// Rating window by wait: `WAIT_SECONDS:WINDOW,…`, linear in between.
    #[arg(long, default_value = "0:100,10:300,30:1000")]
    pub rating_window: String,
    /// Seconds before a ticket's region preference is relaxed.
    #[arg(long, default_value_t = 10.0)]
    pub region_relax: f64,
    /// Seconds a ticket may wait before it expires.
    #[arg(long, default_value_t = 120.0)]
    pub ticket_ttl: f64,
    /// Points a side needs to win.
    #[arg(long, default_value_t = 5)]
    pub points_to_win: u8,
    /// Milliseconds between matching rounds.
    #[arg(long, default_value_t = 50)]
    pub round_ms: u64,
    /// Milliseconds a replica has between reserving a shard slot and claiming
    /// its tickets; past it, any replica's round settles the reservation (the
    /// replica that made it may have died mid-commit) and a late claim is refused.
    #[arg(long, default_value_t = 5_000, env = "RALLY_RESERVATION_CONFIRM_MS")]
    pub reservation_confirm_ms: u64,
    /// Prometheus metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9602", env = "RALLY_MATCHMAKER_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
    /// Development mode: generate missing keys in the data dir without warning.
    #[arg(long)]
    pub dev: bool,
    /// Print the machine-readable ready line instead of the banner.
    #[arg(long, help = READY_JSON_HELP)]
    pub ready_json: bool,
}

fn parse_signing_key(text: &str) -> anyhow::Result<SigningKey> {
    Ok(SigningKey::from_bytes(&key_from_hex("the token signing key", text.trim())?))
}

/// The connect-token signing key: from `--token-signing-key-file`, or a
/// development key kept (0600) at `<data-dir>/token_signing_key`.
fn resolve_signing_key(args: &MatchmakerArgs) -> anyhow::Result<SigningKey> {
    if let Some(path) = &args.token_signing_key_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return parse_signing_key(&text).with_context(|| path.display().to_string());
    }
    if !args.dev {
        tracing::warn!("no --token-signing-key-file; using the development key in the data dir");
    }
    load_or_create_dev_signing_key(&args.data_dir)
}

fn load_or_create_dev_signing_key(data_dir: &Path) -> anyhow::Result<SigningKey> {
    let path = data_dir.join("token_signing_key");
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_signing_key(&text).with_context(|| path.display().to_string()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let hex = hex::encode(key.to_bytes());
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&path).with_context(|| format!("creating {}", path.display()))?;
            std::io::Write::write_all(&mut file, hex.as_bytes())?;
            Ok(key)
        }
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

impl MatchmakerArgs {
    /// The engine settings these flags describe.
    pub fn config(&self) -> anyhow::Result<MatchmakerConfig> {
        let window = WindowCurve::parse(&self.rating_window).context("--rating-window")?;
        let secs_ms = |seconds: f64| (seconds.max(0.0) * 1000.0) as u64;
        let tuned = |mode: ModeConfig| ModeConfig {
            window: window.clone(),
            region_relax_after_ms: secs_ms(self.region_relax),
            ticket_ttl_ms: secs_ms(self.ticket_ttl).max(1),
            points_to_win: self.points_to_win,
            ..mode
        };
        let config = MatchmakerConfig {
            modes: vec![tuned(ModeConfig::one_vs_one("pong")), tuned(ModeConfig::two_vs_two("pong-doubles"))],
            round_interval: Duration::from_millis(self.round_ms.max(1)),
            reservation_confirm_ms: self.reservation_confirm_ms,
            ..MatchmakerConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

/// Runs the matchmaker until SIGTERM/SIGINT.
pub fn run(args: MatchmakerArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let access_keys =
        resolve_access_token_keys(&args.access_token_keys, &args.data_dir.join(DEV_ACCESS_TOKEN_KEYS_FILE))?;
    let minter = TokenMinter::new(resolve_signing_key(&args)?, args.token_key_id)
        .with_ttl_ms((args.token_ttl.max(1.0) * 1000.0) as u64);
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    rally_server::ops::prometheus();
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        let retention = Duration::from_millis(config.ticket_retention_ms);
        let (backends, rating_model, rating_follower) = match &args.redis_url {
            Some(url) => {
                let redis = RedisConnection::connect_lazy(url, &args.redis_prefix)?;
                let model: Arc<dyn RatingModel> = Arc::new(RedisRatingModel::new(redis.clone()));
                let follower = follow_ratings(Arc::new(RedisRatingEvents::new(redis.clone())), model.clone());
                (Backends::redis(&redis, retention), model, Some(follower))
            }
            None => {
                tracing::warn!(
                    "no --redis-url: registry and bus are in memory, so no shard process can register and no \
                     lobby's ratings arrive (every player has the default rating)"
                );
                let model: Arc<dyn RatingModel> = Arc::new(MemoryRatingModel::new());
                (Backends::in_memory(retention), model, None)
            }
        };
        let ratings = BusRatings::new(rating_model);
        let matchmaker = Matchmaker::new(config, backends, Arc::new(ratings), minter.clone())?;
        let engine = matchmaker.start();
        let verifier = rally_lobby::AccessTokenVerifier::new(access_keys);
        let mut server = rally_matchmaker::serve(args.listen, matchmaker, verifier).await?;
        let readiness = rally_server::ops::Readiness::default();
        let metrics = rally_server::ops::serve(args.metrics_addr, readiness).await?;
        if args.ready_json {
            ReadyLine {
                matchmaker: Some(server.local_addr()),
                metrics: Some(metrics),
                token_key: Some(minter.public_key_spec()),
                ..ReadyLine::new("matchmaker")
            }
            .print()?;
        } else {
            println!(
                "matchmaker listening on {} (gRPC), metrics on http://{metrics}/metrics; shards need --token-key {}",
                server.local_addr(),
                minter.public_key_spec()
            );
        }
        tokio::select! {
            served = server.wait() => return served.context("matchmaker stopped"),
            () = shutdown => {}
        }
        tracing::info!("shutting down the matchmaker");
        engine.stop().await;
        if let Some(follower) = rating_follower {
            follower.stop().await;
        }
        server.shutdown().await
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(extra: &[&str]) -> MatchmakerArgs {
        let argv = [&["rally", "matchmaker"][..], extra].concat();
        match Cli::try_parse_from(argv).expect("valid flags").command {
            Command::Matchmaker(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_become_the_engine_config() {
        let config = args(&["--rating-window", "0:50,20:500", "--region-relax", "3", "--points-to-win", "2"])
            .config()
            .expect("valid config");
        let pong = config.mode("pong").expect("pong");
        assert_eq!((pong.window.window(10_000), pong.region_relax_after_ms, pong.points_to_win), (275.0, 3_000, 2));
        assert!(config.mode("pong-doubles").is_some());
        let err = args(&["--rating-window", "0:500,10:100"]).config().expect_err("a shrinking window");
        assert!(format!("{err:#}").contains("rating window"), "{err:#}");
    }

    #[test]
    fn the_dev_signing_key_is_kept_and_keys_parse_from_hex() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = load_or_create_dev_signing_key(dir.path()).expect("created");
        let again = load_or_create_dev_signing_key(dir.path()).expect("loaded");
        assert_eq!(first.to_bytes(), again.to_bytes());
        let hex = "11".repeat(32);
        assert_eq!(parse_signing_key(&format!("{hex}\n")).expect("hex key").to_bytes(), [0x11; 32]);
        assert!(parse_signing_key("abcd").is_err());
        assert!(parse_signing_key(&"zz".repeat(32)).is_err());
    }
}
