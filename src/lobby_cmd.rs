//! `rally lobby`: the Auth and Profile gRPC services on SQLite or PostgreSQL.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rally_lobby::{JwtSecret, LobbyConfig};

/// `rally lobby` flags.
#[derive(Debug, Clone, Args)]
pub struct LobbyArgs {
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:50051", env = "RALLY_LOBBY_LISTEN")]
    pub listen: SocketAddr,
    /// Directory for the SQLite database and the development JWT key.
    #[arg(long, default_value = "data", env = "RALLY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// `sqlite://<file>` or `postgres://…` [default: sqlite://<data-dir>/lobby.db].
    #[arg(long, env = "RALLY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// File holding the access-token signing key (at least 32 bytes).
    #[arg(long, env = "RALLY_JWT_SECRET_FILE", conflicts_with = "jwt_secret")]
    pub jwt_secret_file: Option<PathBuf>,
    /// The access-token signing key itself (at least 32 bytes); prefer the file.
    #[arg(long, env = "RALLY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Development mode: without a key, generate one and keep it in the data dir (0600).
    #[arg(long)]
    pub dev: bool,
}

fn resolve_secret(args: &LobbyArgs) -> anyhow::Result<JwtSecret> {
    if let Some(path) = &args.jwt_secret_file {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let trimmed = String::from_utf8(bytes.clone()).map(|text| text.trim().as_bytes().to_vec()).unwrap_or(bytes);
        return JwtSecret::new(trimmed).map_err(anyhow::Error::msg).context("--jwt-secret-file");
    }
    if let Some(secret) = &args.jwt_secret {
        return JwtSecret::new(secret.as_bytes().to_vec()).map_err(anyhow::Error::msg).context("RALLY_JWT_SECRET");
    }
    if !args.dev {
        tracing::warn!("no JWT key given; using a generated development key from the data dir (pass --dev to silence)");
    }
    rally_lobby::load_or_create_dev_secret(&args.data_dir)
        .with_context(|| format!("development JWT key in {}", args.data_dir.display()))
}

/// Runs the lobby until Ctrl-C / SIGTERM.
pub fn run(args: LobbyArgs) -> anyhow::Result<()> {
    let secret = resolve_secret(&args)?;
    let database_url = match &args.database_url {
        Some(url) => url.clone(),
        None => {
            std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
            format!("sqlite://{}", args.data_dir.join("lobby.db").display())
        }
    };
    let config = LobbyConfig::new(args.listen, database_url, secret);
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    runtime.block_on(async move {
        let shutdown = crate::shard_cmd::shutdown_signal()?;
        let mut handle = rally_lobby::serve(config).await.context("starting the lobby")?;
        println!("lobby listening on {}", handle.local_addr());
        tokio::select! {
            served = handle.wait() => return served.context("lobby stopped"),
            () = shutdown => {}
        }
        tracing::info!("shutting down the lobby");
        handle.shutdown().await.context("shutting down")
    })
}
