//! Login throughput with argon2id at the lobby's default costs, and the latency
//! of `Auth.Me` (a cheap, token-checked call) before and during a login storm.
//! Client and server share this process and the machine's cores.
//!
//! ```sh
//! cargo run --release -p rally-lobby --example login_storm -- [seconds] [concurrent logins] [lobbies]
//! ```
//!
//! With `lobbies` above 1, that many lobby servers (replicas: each its own
//! gRPC server, database pool and hashing pool) share one database, which
//! must then be PostgreSQL at `RALLY_BENCH_DATABASE_URL` (a fresh schema,
//! dropped afterwards); the login loops are spread over them round robin.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rally_lobby::limits::RateLimitConfig;
use rally_lobby::proto::auth::{self as pb, auth_client::AuthClient};
use rally_lobby::{AccessSigningKeys, LobbyConfig};
use tonic::transport::Channel;

const PASSWORD: &str = "storm-password-0123";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn connect(addr: SocketAddr) -> Result<AuthClient<Channel>, BoxError> {
    Ok(AuthClient::new(Channel::from_shared(format!("http://{addr}"))?.connect().await?))
}

fn authed<T>(message: T, token: &str) -> Result<tonic::Request<T>, BoxError> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

/// Calls `Me` back to back until `stop`, recording each call's latency in µs.
async fn me_loop(
    mut client: AuthClient<Channel>,
    token: String,
    stop: Arc<AtomicBool>,
) -> Result<Histogram<u64>, BoxError> {
    let mut latencies = Histogram::<u64>::new(3)?;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        client.me(authed(pb::MeRequest {}, &token)?).await?;
        latencies.record(started.elapsed().as_micros() as u64)?;
    }
    Ok(latencies)
}

fn row(label: &str, latencies: &Histogram<u64>) {
    println!(
        "| {label} | {} | {} | {} | {} | {} |",
        latencies.len(),
        latencies.value_at_quantile(0.50),
        latencies.value_at_quantile(0.99),
        latencies.value_at_quantile(0.999),
        latencies.max()
    );
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|arg| arg.parse()).transpose()?.unwrap_or(10);
    let n_clients: usize = args.next().map(|arg| arg.parse()).transpose()?.unwrap_or(32);
    let n_lobbies: usize = args.next().map(|arg| arg.parse()).transpose()?.unwrap_or(1).max(1);

    let dir = tempfile::tempdir()?;
    let (url, schema) = match std::env::var("RALLY_BENCH_DATABASE_URL") {
        Ok(base) => {
            let schema = format!("bench_{:08x}", rand::random::<u32>());
            let pool = sqlx::PgPool::connect(&base).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&pool).await?;
            let sep = if base.contains('?') { '&' } else { '?' };
            (format!("{base}{sep}options[search_path]={schema}"), Some((pool, schema)))
        }
        Err(_) if n_lobbies == 1 => (format!("sqlite://{}", dir.path().join("lobby.db").display()), None),
        Err(_) => return Err("several lobbies share one database: set RALLY_BENCH_DATABASE_URL to a PostgreSQL".into()),
    };
    let keys = AccessSigningKeys::generate();
    let mut lobbies = Vec::new();
    let mut hash = None;
    for _ in 0..n_lobbies {
        let mut config = LobbyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), url.clone(), keys.clone());
        // The storm comes from one IP and few accounts; lift those limits so the
        // hashing pool, not the rate limiter, is what bounds it.
        let unlimited = RateLimitConfig::new(NonZeroU32::MAX, Duration::from_nanos(1));
        config.limits.auth_per_ip = unlimited;
        config.limits.login_per_account = unlimited;
        hash = Some(config.password_hash);
        lobbies.push(rally_lobby::serve(config).await?);
    }
    let hash = hash.ok_or("no lobby")?;
    let addrs: Vec<SocketAddr> = lobbies.iter().map(|lobby| lobby.local_addr()).collect();
    let addr = addrs[0];
    println!(
        "argon2id: {} KiB, {} passes, 1 lane, at most {} hashes at once per lobby; {n_lobbies} lobbies, \
         {n_clients} concurrent login loops, {seconds} s",
        hash.memory_kib, hash.iterations, hash.max_concurrent
    );

    let mut client = connect(addr).await?;
    let mut usernames = Vec::new();
    let mut token = String::new();
    for idx in 0..n_clients {
        let username = format!("storm{idx}");
        let registered = client
            .register(pb::RegisterRequest {
                username: username.clone(),
                password: PASSWORD.into(),
                idempotency_key: String::new(),
            })
            .await?;
        token = registered.into_inner().tokens.ok_or("no tokens")?.access_token;
        usernames.push(username);
    }

    // Me alone.
    let stop = Arc::new(AtomicBool::new(false));
    let idle = tokio::spawn(me_loop(connect(addr).await?, token.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let idle = idle.await??;

    // Me during the storm.
    let stop = Arc::new(AtomicBool::new(false));
    let logins = Arc::new(AtomicU64::new(0));
    let mut stormers = Vec::new();
    for (idx, username) in usernames.into_iter().enumerate() {
        let mut client = connect(addrs[idx % addrs.len()]).await?;
        let (stop, logins) = (stop.clone(), logins.clone());
        stormers.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3)?;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                client.login(pb::LoginRequest { username: username.clone(), password: PASSWORD.into() }).await?;
                latencies.record(started.elapsed().as_micros() as u64)?;
                logins.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, BoxError>(latencies)
        }));
    }
    let during = tokio::spawn(me_loop(connect(addr).await?, token, stop.clone()));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let n_logins = logins.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let during = during.await??;
    let mut login_latencies = Histogram::<u64>::new(3)?;
    for stormer in stormers {
        login_latencies.add(stormer.await??)?;
    }

    println!();
    println!(
        "logins completed within the window: {n_logins} in {elapsed:.1} s = {:.1} logins/s",
        n_logins as f64 / elapsed
    );
    println!();
    println!("| call | count | p50 µs | p99 µs | p99.9 µs | max µs |");
    println!("|---|---|---|---|---|---|");
    row("`Me`, idle", &idle);
    row("`Me`, during the login storm", &during);
    row("`Login` (argon2id verify + session)", &login_latencies);
    for lobby in lobbies {
        lobby.shutdown().await?;
    }
    if let Some((pool, schema)) = schema {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&pool).await?;
    }
    Ok(())
}
