//! Chat fan-out latency: N subscribers on one public channel (default 1,000),
//! one sender; for every message and subscriber, the time from just before
//! `Send` to the subscriber's receipt of it. Subscribers are gRPC streams over
//! loopback in this same process (50 per HTTP/2 connection), so the clients'
//! decoding shares the cores with the server.
//!
//! ```sh
//! cargo run --release -p rally-lobby --example chat_fanout -- [subscribers] [messages] [interval ms]
//! ```
//!
//! `RALLY_BENCH_DATABASE_URL=postgres://…` runs it on PostgreSQL, in a fresh
//! schema dropped afterwards (default: a temporary SQLite file).
//!
//! `RALLY_BENCH_REDIS_URL=redis://…` measures fan-out *between replicas*:
//! two lobbies on the one database and that Redis (a fresh key prefix), the
//! sender on the first and every subscriber on the second, so each message
//! crosses the Redis pub/sub relay.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rally_lobby::limits::RateLimitConfig;
use rally_lobby::proto::chat::{self as pb, chat_client::ChatClient, join_request::Target};
use rally_lobby::{AccessSigningKeys, AccessTokenIssuer, LobbyConfig};
use tonic::transport::Channel;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const STREAMS_PER_CONNECTION: usize = 50;
const CHANNEL_ID: &str = "public:bench";

fn authed<T>(message: T, token: &str) -> Result<tonic::Request<T>, BoxError> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let n_subscribers: usize = args.next().map(|arg| arg.parse()).transpose()?.unwrap_or(1000);
    let n_messages: usize = args.next().map(|arg| arg.parse()).transpose()?.unwrap_or(200);
    let interval = Duration::from_millis(args.next().map(|arg| arg.parse()).transpose()?.unwrap_or(20));

    let dir = tempfile::tempdir()?;
    let mut postgres = None;
    let url = match std::env::var("RALLY_BENCH_DATABASE_URL") {
        Ok(base) if base.starts_with("postgres") => {
            let admin = sqlx::PgPool::connect(&base).await?;
            let schema = format!("lobby_bench_{:016x}", rand::random::<u64>());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await?;
            let separator = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{separator}options[search_path]={schema}");
            postgres = Some((admin, schema));
            url
        }
        _ => format!("sqlite://{}", dir.path().join("lobby.db").display()),
    };
    let secret = AccessSigningKeys::generate();
    let mut config = LobbyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), url.clone(), secret.clone());
    config.limits.chat_send_per_account = RateLimitConfig::new(NonZeroU32::MAX, Duration::from_nanos(1));
    let redis_url = std::env::var("RALLY_BENCH_REDIS_URL").ok().filter(|url| !url.is_empty());
    if let Some(url) = &redis_url {
        let prefix = format!("lobby-bench-{:016x}", rand::random::<u64>());
        config.redis = Some(rally_lobby::LobbyRedisConfig::new(url, prefix));
    }
    let lobby = rally_lobby::serve(config.clone()).await?;
    let endpoint = format!("http://{}", lobby.local_addr());
    // With Redis, subscribers are on a second replica: each message crosses the relay.
    let replica = match &redis_url {
        Some(_) => {
            let replica = rally_lobby::serve(config).await?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while lobby.chat().stats().relay_connects == 0 || replica.chat().stats().relay_connects == 0 {
                if Instant::now() > deadline {
                    return Err("the replicas' relays did not subscribe to Redis within 10 s".into());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Some(replica)
        }
        None => None,
    };
    let subscriber_endpoint =
        replica.as_ref().map_or(endpoint.clone(), |replica| format!("http://{}", replica.local_addr()));
    // Chat reads no accounts: tokens for made-up player ids are enough.
    let issuer = AccessTokenIssuer::new(secret.clone());
    let token = |player_id: u64| issuer.issue(player_id, &format!("p{player_id}"), now_s()).map(|(token, _)| token);

    let base = Instant::now();
    let mut readers = Vec::with_capacity(n_subscribers);
    let mut connection = None;
    for idx in 0..n_subscribers {
        if idx % STREAMS_PER_CONNECTION == 0 {
            connection = Some(Channel::from_shared(subscriber_endpoint.clone())?.connect().await?);
        }
        let mut chat = ChatClient::new(connection.clone().ok_or("no connection")?);
        let token = token(idx as u64 + 1)?;
        chat.join(authed(pb::JoinRequest { target: Some(Target::PublicName("bench".into())) }, &token)?).await?;
        let request = pb::SubscribeRequest { channel_id: CHANNEL_ID.into(), after_id: None };
        let mut stream = chat.subscribe(authed(request, &token)?).await?.into_inner();
        readers.push(tokio::spawn(async move {
            // Latency per message index, in µs.
            let mut latencies = vec![0_u64; n_messages];
            for _ in 0..n_messages {
                let message = stream.message().await?.ok_or("stream ended early")?;
                let received = base.elapsed().as_nanos() as u64;
                let (idx, sent) = message.body.split_once(' ').ok_or("bad body")?;
                let (idx, sent): (usize, u64) = (idx.parse()?, sent.parse()?);
                latencies[idx] = received.saturating_sub(sent) / 1000;
            }
            Ok::<_, BoxError>(latencies)
        }));
    }
    println!(
        "{n_subscribers} subscribers on {CHANNEL_ID} ({}{}), {n_messages} messages, one every {interval:?}",
        if url.starts_with("sqlite:") { "SQLite" } else { "PostgreSQL" },
        if replica.is_some() { "; sender on replica A, subscribers on replica B, relayed over Redis" } else { "" }
    );

    let sender_token = token(n_subscribers as u64 + 1)?;
    let mut sender = ChatClient::new(Channel::from_shared(endpoint)?.connect().await?);
    sender.join(authed(pb::JoinRequest { target: Some(Target::PublicName("bench".into())) }, &sender_token)?).await?;
    let mut acks = Histogram::<u64>::new(3)?;
    let mut ticker = tokio::time::interval(interval);
    for idx in 0..n_messages {
        ticker.tick().await;
        let sent = base.elapsed().as_nanos() as u64;
        let body = format!("{idx} {sent}");
        sender
            .send(authed(
                pb::SendRequest { channel_id: CHANNEL_ID.into(), body, idempotency_key: String::new() },
                &sender_token,
            )?)
            .await?;
        acks.record((base.elapsed().as_nanos() as u64).saturating_sub(sent) / 1000)?;
    }

    let mut deliveries = Histogram::<u64>::new(3)?;
    // Per message: when its last subscriber had it.
    let mut last_delivery = vec![0_u64; n_messages];
    for reader in readers {
        let latencies = tokio::time::timeout(Duration::from_secs(60), reader).await???;
        for (idx, latency) in latencies.into_iter().enumerate() {
            deliveries.record(latency)?;
            last_delivery[idx] = last_delivery[idx].max(latency);
        }
    }
    let mut complete = Histogram::<u64>::new(3)?;
    for latency in last_delivery {
        complete.record(latency)?;
    }

    println!();
    println!("| latency (µs) | count | p50 | p90 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|---|---|");
    for (label, histogram) in [
        ("`Send` acknowledged (stored)", &acks),
        ("Send → one subscriber's receipt", &deliveries),
        ("Send → the last of the subscribers' receipt", &complete),
    ] {
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            histogram.len(),
            histogram.value_at_quantile(0.50),
            histogram.value_at_quantile(0.90),
            histogram.value_at_quantile(0.99),
            histogram.value_at_quantile(0.999),
            histogram.max()
        );
    }
    let stats = replica.as_ref().map_or(lobby.chat().stats(), |replica| replica.chat().stats());
    println!(
        "\nsubscribers that fell behind and caught up from the database: {} (gaps refilled: {}, resyncs: {}, \
         relay connects: {})",
        stats.lag_refills, stats.gap_refills, stats.resync_refills, stats.relay_connects
    );
    lobby.shutdown().await?;
    if let Some(replica) = replica {
        replica.shutdown().await?;
    }
    if let Some((admin, schema)) = postgres {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&admin).await?;
    }
    Ok(())
}
