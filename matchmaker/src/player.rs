//! A player's side of the platform over gRPC: log in at the lobby (keeping the
//! access token fresh), queue at the matchmaker and wait for the assignment.
//! Bots, the load harness and `rally play` all join matches through this, the
//! same calls a game client makes.
//!
//! Calls the services refuse with "retry later" (`UNAVAILABLE`, or
//! `RESOURCE_EXHAUSTED` from a rate limit) are retried with exponential
//! backoff and jitter, honouring the lobby's `retry-after-ms` hint
//! ([`RetryPolicy`], [`retry_hint`]). A matched ticket stays watched
//! ([`TicketWatch::aborted`]), so a client hears at once when the matchmaker
//! gives up on its shard and can queue again.
//!
//! **Failover.** Each service may run as several replicas ([`Endpoints`]: a
//! comma-separated list of URLs, or one DNS name with several addresses).
//! A [`PlayerClient`] talks to one replica of each ([`Replicas`]) and moves
//! to the next when a call finds its replica gone (`UNAVAILABLE`, or the
//! connection failing). Idempotent calls (Login, Me, Cancel, WatchTicket,
//! and any call through [`PlayerClient::lobby_call`]) are simply made again
//! there; the others carry an idempotency key, the same on every retry, so a
//! retry of a call whose answer was lost cannot act twice: Enqueue (the same
//! ticket), chat Send ([`PlayerClient::send_chat`]: the same message) and
//! Register (the same account). Refresh rotates the refresh token, so it is
//! moved to another replica only when the first one was never reached. A
//! ticket's update stream that breaks with its replica is opened again on
//! another, which reads the same ticket from the shared store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rally_lobby::proto::auth::{
    Account, LoginRequest, MeRequest, RefreshRequest, RegisterRequest, TokenPair, auth_client::AuthClient,
};
use rally_lobby::proto::chat::{ChatMessage, SendRequest, chat_client::ChatClient};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

use crate::proto::matchmaker::{
    Assignment, CancelRequest, EnqueueRequest, SeatAssignment, TicketState, TicketUpdate, WatchTicketRequest,
    matchmaker_client::MatchmakerClient,
};

/// Refresh the access token when it has less than this left (milliseconds).
const REFRESH_MARGIN_MS: i64 = 60_000;

/// Opens a gRPC channel to `url` (`http://host:port`), with a message that
/// says what to check when it fails.
pub async fn channel(url: &str) -> anyhow::Result<Channel> {
    use anyhow::Context as _;
    Channel::from_shared(url.to_owned())
        .with_context(|| format!("{url:?} is not a valid URL (expected e.g. http://127.0.0.1:7100)"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach {url}; is the service (or `rally up`) running?"))
}

/// A channel to `url` that connects on first use, and again after a failure:
/// for clients that outlive outages (a service not up yet is then a call
/// refused with `UNAVAILABLE`, to retry, not a client that gives up).
pub fn lazy_channel(url: &str) -> anyhow::Result<Channel> {
    use anyhow::Context as _;
    Ok(Channel::from_shared(url.to_owned())
        .with_context(|| format!("{url:?} is not a valid URL (expected e.g. http://127.0.0.1:7100)"))?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy())
}

/// The replicas of one service: `http://host:port` URLs. Parsed from a
/// comma-separated list (`http://a:7100,http://b:7100`); one URL is the
/// single-replica form. A URL whose host is a DNS name with several
/// addresses stands for all of them once [`Endpoints::resolve`]d.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints(Vec<String>);

impl Endpoints {
    /// Endpoints from a comma-separated list of URLs (blanks ignored).
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let urls: Vec<String> =
            spec.split(',').map(str::trim).filter(|url| !url.is_empty()).map(str::to_owned).collect();
        Self::new(urls)
    }

    /// Endpoints from URLs; at least one, each a valid URL.
    pub fn new(urls: Vec<String>) -> anyhow::Result<Self> {
        if urls.is_empty() {
            anyhow::bail!("no endpoint given (expected e.g. http://127.0.0.1:7100, or several, comma-separated)");
        }
        for url in &urls {
            url.parse::<tonic::transport::Uri>()
                .ok()
                .filter(|uri| uri.host().is_some())
                .ok_or_else(|| anyhow::anyhow!("{url:?} is not a valid URL (expected e.g. http://127.0.0.1:7100)"))?;
        }
        Ok(Self(urls))
    }

    /// The URLs, in the order given.
    pub fn urls(&self) -> &[String] {
        &self.0
    }

    /// One channel per URL, each connecting on first use and again after a
    /// failure ([`lazy_channel`]); DNS names are resolved by each connection.
    pub fn lazy(&self) -> anyhow::Result<Replicas> {
        let channels = self.0.iter().map(|url| lazy_channel(url)).collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Replicas::from_channels(channels, self.0.clone()))
    }

    /// [`Endpoints::lazy`], with each DNS name resolved now into one replica
    /// per address (one DNS name for a whole service, as a Kubernetes
    /// headless Service gives). A name that does not resolve yet is kept as
    /// it is, for its connection to resolve later.
    pub async fn resolve(&self) -> anyhow::Result<Replicas> {
        let mut channels = Vec::new();
        let mut urls = Vec::new();
        for url in &self.0 {
            let uri: tonic::transport::Uri = url.parse()?;
            let (Some(host), Some(port)) = (uri.host(), uri.port_u16().or(Some(80))) else { continue };
            let addresses: Vec<std::net::SocketAddr> = match host.parse::<std::net::IpAddr>() {
                Ok(_) => Vec::new(),
                Err(_) => tokio::net::lookup_host((host, port)).await.map(Iterator::collect).unwrap_or_default(),
            };
            if addresses.len() < 2 {
                channels.push(lazy_channel(url)?);
                urls.push(url.clone());
                continue;
            }
            let scheme = uri.scheme_str().unwrap_or("http");
            for address in addresses {
                let direct = format!("{scheme}://{address}");
                // The address is dialled; the name stays the request's authority.
                let endpoint = tonic::transport::Endpoint::from_shared(direct.clone())?
                    .origin(uri.clone())
                    .connect_timeout(Duration::from_secs(5));
                channels.push(endpoint.connect_lazy());
                urls.push(direct);
            }
        }
        Ok(Replicas::from_channels(channels, urls))
    }
}

impl std::str::FromStr for Endpoints {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> anyhow::Result<Self> {
        Self::parse(spec)
    }
}

impl std::fmt::Display for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// Channels to the replicas of one service. Calls go to the current one; a
/// call that finds it gone moves every clone on to the next ([`Replicas::call`]).
#[derive(Clone, Debug)]
pub struct Replicas {
    channels: Arc<[Channel]>,
    urls: Arc<[String]>,
    current: Arc<AtomicUsize>,
}

impl Replicas {
    fn from_channels(channels: Vec<Channel>, urls: Vec<String>) -> Self {
        Self { channels: channels.into(), urls: urls.into(), current: Arc::new(AtomicUsize::new(0)) }
    }

    /// Replicas over `channels`, tried in order; `None` when empty.
    pub fn new(channels: Vec<Channel>) -> Option<Self> {
        if channels.is_empty() {
            return None;
        }
        let urls = (0..channels.len()).map(|idx| format!("replica #{idx}")).collect();
        Some(Self::from_channels(channels, urls))
    }

    /// The same replicas with calls going to replica `start` first (modulo
    /// their number): to spread clients over replicas.
    pub fn starting_at(self, start: usize) -> Self {
        let current = Arc::new(AtomicUsize::new(start % self.channels.len()));
        Self { current, ..self }
    }

    /// How many replicas there are.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Never: there is always at least one replica.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The channel calls go to now.
    pub fn channel(&self) -> &Channel {
        &self.channels[self.current.load(Ordering::Relaxed) % self.channels.len()]
    }

    /// The URL calls go to now (for logs and tests).
    pub fn url(&self) -> &str {
        &self.urls[self.current.load(Ordering::Relaxed) % self.urls.len()]
    }

    fn pick(&self) -> (usize, Channel) {
        let idx = self.current.load(Ordering::Relaxed) % self.channels.len();
        (idx, self.channels[idx].clone())
    }

    /// Replica `idx` failed: move on, unless another call already did.
    fn failed(&self, idx: usize) {
        let next = (idx + 1) % self.channels.len();
        if self.current.compare_exchange(idx, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() && next != idx {
            tracing::debug!(from = %self.urls[idx], to = %self.urls[next], "replica unreachable; failing over");
        }
    }

    /// Makes a call that is safe to repeat, moving to the next replica when
    /// one fails ([`replica_failed`]) and retrying refusals that say to retry
    /// later as `policy` allows. Each replica is tried at once before waiting.
    pub async fn call<T, F, Fut>(&self, policy: RetryPolicy, what: &str, call: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        self.call_failing_over(policy, what, replica_failed, call).await
    }

    /// [`Replicas::call`], moving to another replica only on the failures
    /// `fails_over` picks out.
    async fn call_failing_over<T, F, Fut>(
        &self,
        policy: RetryPolicy,
        what: &str,
        fails_over: fn(&Status) -> bool,
        mut call: F,
    ) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut backoff = Backoff::new(policy);
        let mut attempt = 1_u32;
        let mut tried_at_once = 1_usize;
        loop {
            let (idx, channel) = self.pick();
            let status = match call(channel).await {
                Ok(value) => return Ok(value),
                Err(status) => status,
            };
            let failed = fails_over(&status);
            let hint = if failed { Some(hinted_wait(&status).unwrap_or(Duration::ZERO)) } else { retry_hint(&status) };
            let hint = match hint {
                Some(hint) if status.code() != Code::Unavailable || failed => hint,
                _ => return Err(status),
            };
            if policy.max_attempts.is_some_and(|max| attempt >= max) {
                return Err(status);
            }
            attempt += 1;
            if failed {
                self.failed(idx);
                if tried_at_once < self.len() {
                    tried_at_once += 1;
                    tracing::debug!(what, attempt, message = status.message(), "retrying on another replica");
                    continue;
                }
            }
            tried_at_once = 1;
            let delay = backoff.next_delay(Some(hint));
            tracing::debug!(what, attempt, code = ?status.code(), message = status.message(), ?delay, "retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

impl From<Channel> for Replicas {
    fn from(channel: Channel) -> Self {
        Self::from_channels(vec![channel], vec!["the service".to_owned()])
    }
}

/// Whether a refusal means the replica is gone or unreachable (try another):
/// `UNAVAILABLE` (the connection failed, the server is shutting down, or its
/// backend is down), or a transport failure mid-call.
pub fn replica_failed(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Cancelled | Code::Internal => {
            let message = status.message().to_ascii_lowercase();
            ["transport", "connection", "broken pipe", "h2 protocol", "stream closed", "error reading"]
                .iter()
                .any(|needle| message.contains(needle))
        }
        _ => false,
    }
}

/// Whether a call failed before reaching any server (its connection could
/// not be made): safe to retry elsewhere even when the call is not idempotent.
pub fn never_reached(status: &Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::TimedOut
            )
        {
            return true;
        }
        source = err.source();
    }
    let message = status.message().to_ascii_lowercase();
    message.contains("tcp connect error") || message.contains("error trying to connect")
}

/// A fresh idempotency key: 32 hex digits, random.
pub fn new_idempotency_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The policy of a single call: each replica once, no waiting.
fn each_replica_once(replicas: &Replicas) -> RetryPolicy {
    RetryPolicy { max_attempts: Some(u32::try_from(replicas.len()).unwrap_or(u32::MAX)), ..RetryPolicy::default() }
}

/// `message` with `authorization: Bearer <token>` metadata.
pub fn authorized<T>(message: T, access_token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = MetadataValue::try_from(format!("Bearer {access_token}")) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The current token pair; clones of a client share it, so a rotation by one
/// is seen by all (presenting a rotated refresh token would revoke the login).
#[derive(Debug)]
struct Tokens {
    access_token: String,
    /// Unix milliseconds.
    access_expires_at_ms: i64,
    refresh_token: String,
}

/// How a queued ticket ended.
#[derive(Clone, Debug, PartialEq)]
pub enum QueueOutcome {
    /// Matched: connect with the seat's token.
    Matched(Assignment),
    /// Cancelled, expired or aborted before a match, with the matchmaker's reason.
    Ended { state: TicketState, reason: String },
}

/// A logged-in player, with the lobby's and the matchmaker's replicas.
#[derive(Clone, Debug)]
pub struct PlayerClient {
    lobby: Replicas,
    matchmaker: Replicas,
    player_id: u64,
    username: String,
    tokens: Arc<Mutex<Tokens>>,
    /// Held while refreshing, so clones refresh once.
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

impl PlayerClient {
    /// Logs in as `username` at the first lobby replica that answers. The
    /// lobby and the matchmaker are each a [`Channel`] or [`Replicas`].
    pub async fn login(
        lobby: impl Into<Replicas>,
        matchmaker: impl Into<Replicas>,
        username: &str,
        password: &str,
    ) -> Result<Self, Status> {
        let (lobby, matchmaker) = (lobby.into(), matchmaker.into());
        let request = LoginRequest { username: username.to_owned(), password: password.to_owned() };
        let once = each_replica_once(&lobby);
        let pair = lobby
            .call(once, "log in", |channel| {
                let request = request.clone();
                async move { Ok(AuthClient::new(channel).login(request).await?.into_inner()) }
            })
            .await?;
        let me = lobby
            .call(once, "me", |channel| {
                let request = authorized(MeRequest {}, &pair.access_token);
                async move { Ok(AuthClient::new(channel).me(request).await?.into_inner()) }
            })
            .await?;
        Ok(Self::from_tokens(lobby, matchmaker, me, pair))
    }

    /// A client for `account`, logged in with `tokens` that a login other
    /// than a password's returned (an identity provider's, a guest's: their
    /// `LoginResponse`). The access token is refreshed as after [`PlayerClient::login`].
    pub fn from_tokens(
        lobby: impl Into<Replicas>,
        matchmaker: impl Into<Replicas>,
        account: Account,
        tokens: TokenPair,
    ) -> Self {
        Self {
            lobby: lobby.into(),
            matchmaker: matchmaker.into(),
            player_id: account.player_id,
            username: account.username,
            tokens: Arc::new(Mutex::new(Tokens {
                access_token: tokens.access_token,
                access_expires_at_ms: tokens.access_expires_at_ms,
                refresh_token: tokens.refresh_token,
            })),
            refreshing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Logs in as `username`, retrying refusals that say to retry later
    /// (the lobby's database down, a rate limit) as `policy` allows.
    pub async fn login_retrying(
        lobby: impl Into<Replicas>,
        matchmaker: impl Into<Replicas>,
        username: &str,
        password: &str,
        policy: RetryPolicy,
    ) -> Result<Self, Status> {
        let (lobby, matchmaker) = (lobby.into(), matchmaker.into());
        retrying(policy, "log in", || Self::login(lobby.clone(), matchmaker.clone(), username, password)).await
    }

    /// [`PlayerClient::register_or_login`], retrying each step as `policy` allows.
    pub async fn register_or_login_retrying(
        lobby: impl Into<Replicas>,
        matchmaker: impl Into<Replicas>,
        username: &str,
        password: &str,
        policy: RetryPolicy,
    ) -> Result<Self, Status> {
        let (lobby, matchmaker) = (lobby.into(), matchmaker.into());
        register(&lobby, username, password, policy).await?;
        Self::login_retrying(lobby.clone(), matchmaker.clone(), username, password, policy).await
    }

    /// Registers `username` (unless it exists already) and logs in. The
    /// registration carries an idempotency key, so its retry on another
    /// replica after a lost answer cannot fail as a duplicate.
    pub async fn register_or_login(
        lobby: impl Into<Replicas>,
        matchmaker: impl Into<Replicas>,
        username: &str,
        password: &str,
    ) -> Result<Self, Status> {
        let (lobby, matchmaker) = (lobby.into(), matchmaker.into());
        register(&lobby, username, password, each_replica_once(&lobby)).await?;
        Self::login(lobby, matchmaker, username, password).await
    }

    /// The account's player id.
    pub fn player_id(&self) -> u64 {
        self.player_id
    }

    /// The account's username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The lobby replica calls go to now (Auth, Profile, Chat). For a call
    /// that should fail over, use [`PlayerClient::lobby_call`].
    pub fn lobby(&self) -> &Channel {
        self.lobby.channel()
    }

    /// The lobby's replicas.
    pub fn lobby_replicas(&self) -> &Replicas {
        &self.lobby
    }

    /// The matchmaker's replicas.
    pub fn matchmaker_replicas(&self) -> &Replicas {
        &self.matchmaker
    }

    /// Makes an idempotent lobby call (Profile, chat History, Join…) with a
    /// fresh access token, on another replica if this one is gone, retrying
    /// as [`RetryPolicy::default`] allows. `call` builds the request each
    /// time from the channel and the current access token.
    pub async fn lobby_call<T, F, Fut>(&mut self, what: &str, mut call: F) -> Result<T, Status>
    where
        F: FnMut(Channel, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        self.ensure_fresh().await?;
        let access_token = self.tokens().access_token.clone();
        self.lobby.call(RetryPolicy::default(), what, |channel| call(channel, access_token.clone())).await
    }

    /// Sends a chat message, with an idempotency key: retried on another
    /// lobby replica when the answer is lost, it is stored once.
    pub async fn send_chat(&mut self, channel_id: &str, body: &str) -> Result<ChatMessage, Status> {
        let idempotency_key = new_idempotency_key();
        let (channel_id, body) = (channel_id.to_owned(), body.to_owned());
        self.lobby_call("chat send", |channel, token| {
            let request = SendRequest {
                channel_id: channel_id.clone(),
                body: body.clone(),
                idempotency_key: idempotency_key.clone(),
            };
            async move { Ok(ChatClient::new(channel).send(authorized(request, &token)).await?.into_inner()) }
        })
        .await
    }

    /// `message` carrying the current access token.
    pub fn request<T>(&self, message: T) -> Request<T> {
        authorized(message, &self.tokens().access_token)
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_fresh(&self) -> bool {
        self.tokens().access_expires_at_ms - i64::try_from(rally_transport::unix_ms()).unwrap_or(i64::MAX)
            > REFRESH_MARGIN_MS
    }

    /// Swaps the refresh token for a new pair when the access token is about to expire.
    pub async fn ensure_fresh(&mut self) -> Result<(), Status> {
        if self.is_fresh() {
            return Ok(());
        }
        let _refreshing = self.refreshing.lock().await;
        // Another clone may have refreshed while this one waited.
        if self.is_fresh() {
            return Ok(());
        }
        let refresh_token = self.tokens().refresh_token.clone();
        // Refresh rotates the token: a retry after a lost answer would present
        // a rotated one (and revoke the login), so only an unreached replica
        // is left for another.
        let once = each_replica_once(&self.lobby);
        let pair = self
            .lobby
            .call_failing_over(once, "refresh", never_reached, |channel| {
                let request = RefreshRequest { refresh_token: refresh_token.clone() };
                async move { Ok(AuthClient::new(channel).refresh(request).await?.into_inner()) }
            })
            .await?;
        *self.tokens() = Tokens {
            access_token: pair.access_token,
            access_expires_at_ms: pair.access_expires_at_ms,
            refresh_token: pair.refresh_token,
        };
        Ok(())
    }

    /// Queues for `mode`; returns the ticket id. A refusal that says to retry
    /// later is retried a few times ([`RetryPolicy::default`]), on another
    /// replica when one is gone, always with the same idempotency key: one
    /// ticket however many tries it takes.
    pub async fn enqueue(&mut self, mode: &str) -> Result<String, Status> {
        self.enqueue_request(EnqueueRequest { mode: mode.to_owned(), ..Default::default() }).await
    }

    /// [`PlayerClient::enqueue`] with a request of the caller's (a party,
    /// a region); an empty `idempotency_key` gets a fresh one.
    pub async fn enqueue_request(&mut self, mut request: EnqueueRequest) -> Result<String, Status> {
        if request.idempotency_key.is_empty() {
            request.idempotency_key = new_idempotency_key();
        }
        self.ensure_fresh().await?;
        let this = self.clone();
        self.matchmaker
            .call(RetryPolicy::default(), "enqueue", |channel| {
                let (mut this, request) = (this.clone(), request.clone());
                async move {
                    this.ensure_fresh().await?;
                    let request = this.request(request);
                    Ok(MatchmakerClient::new(channel).enqueue(request).await?.into_inner().ticket_id)
                }
            })
            .await
    }

    /// Takes a queued ticket out of the queue; returns its state after the call.
    pub async fn cancel(&mut self, ticket_id: &str) -> Result<TicketState, Status> {
        self.ensure_fresh().await?;
        let request = CancelRequest { ticket_id: ticket_id.to_owned() };
        let access_token = self.tokens().access_token.clone();
        self.matchmaker
            .call(each_replica_once(&self.matchmaker), "cancel", |channel| {
                let request = authorized(request.clone(), &access_token);
                async move { Ok(MatchmakerClient::new(channel).cancel(request).await?.into_inner().state()) }
            })
            .await
    }

    /// Opens the ticket's update stream (WatchTicket), on another replica
    /// if this one is gone.
    async fn subscribe(&mut self, ticket_id: &str) -> Result<Streaming<TicketUpdate>, Status> {
        self.ensure_fresh().await?;
        let request = WatchTicketRequest { ticket_id: ticket_id.to_owned() };
        let access_token = self.tokens().access_token.clone();
        self.matchmaker
            .call(each_replica_once(&self.matchmaker), "watch ticket", |channel| {
                let request = authorized(request.clone(), &access_token);
                async move { Ok(MatchmakerClient::new(channel).watch_ticket(request).await?.into_inner()) }
            })
            .await
    }

    /// Starts watching a ticket: [`TicketWatch::outcome`] waits for the match,
    /// then [`TicketWatch::aborted`] for the match to be lost.
    pub async fn watch(&mut self, ticket_id: &str) -> Result<TicketWatch, Status> {
        let updates = self.subscribe(ticket_id).await?;
        Ok(TicketWatch { client: self.clone(), ticket_id: ticket_id.to_owned(), updates: Some(updates) })
    }

    /// Waits on a ticket until it is matched or ends (and stops watching it).
    pub async fn wait(&mut self, ticket_id: &str) -> Result<QueueOutcome, Status> {
        self.watch(ticket_id).await?.outcome().await
    }

    /// Enqueues for `mode` and waits for the outcome.
    pub async fn queue(&mut self, mode: &str) -> Result<QueueOutcome, Status> {
        let ticket = self.enqueue(mode).await?;
        self.wait(&ticket).await
    }

    /// Enqueues for `mode` and waits for the outcome, keeping the ticket
    /// watched: after a match, [`TicketWatch::aborted`] says when it is lost.
    pub async fn queue_watched(&mut self, mode: &str) -> Result<(QueueOutcome, TicketWatch), Status> {
        let ticket = self.enqueue(mode).await?;
        let mut watch = self.watch(&ticket).await?;
        let outcome = watch.outcome().await?;
        Ok((outcome, watch))
    }
}

/// A watched ticket. The matchmaker keeps the stream open after MATCHED, so
/// an ABORTED (the shard was lost) can follow; drop the watch once the match
/// is over.
#[derive(Debug)]
pub struct TicketWatch {
    client: PlayerClient,
    ticket_id: String,
    /// `None` after the stream broke, until it is opened again.
    updates: Option<Streaming<TicketUpdate>>,
}

impl TicketWatch {
    /// The ticket.
    pub fn ticket_id(&self) -> &str {
        &self.ticket_id
    }

    /// Waits until the ticket is matched or ends. A stream that breaks (its
    /// matchmaker replica stopped) is opened again, on another replica if
    /// need be, a few times ([`RetryPolicy::default`]); every replica reads
    /// the ticket from the shared store, so nothing is missed.
    pub async fn outcome(&mut self) -> Result<QueueOutcome, Status> {
        let policy = RetryPolicy::default();
        let mut backoff = Backoff::new(policy);
        let mut breaks = 0_u32;
        loop {
            let updates = match self.updates.as_mut() {
                Some(updates) => updates,
                None => {
                    let updates = self.client.subscribe(&self.ticket_id).await?;
                    self.updates.insert(updates)
                }
            };
            let broke = match updates.message().await {
                Ok(Some(update)) => match self.handle(update) {
                    Some(outcome) => return outcome,
                    None => {
                        breaks = 0;
                        backoff.reset();
                        continue;
                    }
                },
                Ok(None) => Status::unavailable("the matchmaker closed the ticket stream before a match"),
                Err(status) => status,
            };
            self.updates = None;
            breaks += 1;
            if policy.max_attempts.is_some_and(|max| breaks >= max) {
                return Err(Status::new(broke.code(), format!("{}; enqueue again", broke.message())));
            }
            tracing::debug!(ticket = %self.ticket_id, message = broke.message(), "ticket stream broke; opening it again");
            tokio::time::sleep(backoff.next_delay(None)).await;
        }
    }

    /// What an update means for [`TicketWatch::outcome`]: `None` to keep waiting.
    fn handle(&mut self, update: TicketUpdate) -> Option<Result<QueueOutcome, Status>> {
        {
            match update.state() {
                TicketState::Matched => Some(
                    update
                        .assignment
                        .map(QueueOutcome::Matched)
                        .ok_or_else(|| Status::internal("the matchmaker reported a match without an assignment")),
                ),
                state @ (TicketState::Cancelled | TicketState::Expired | TicketState::Aborted) => {
                    self.updates = None;
                    Some(Ok(QueueOutcome::Ended { state, reason: update.reason }))
                }
                TicketState::Queued | TicketState::Unspecified => None,
            }
        }
    }

    /// Waits until the matched ticket is ABORTED (the matchmaker gave up on
    /// its shard) and returns the matchmaker's reason. While the match is
    /// fine this never returns: a broken stream (a matchmaker restart) is
    /// opened again with backoff, and a ticket that is gone or ended some
    /// other way leaves nothing to wait for. Race it against the match.
    pub async fn aborted(&mut self) -> String {
        let mut backoff = Backoff::new(RetryPolicy::default());
        loop {
            let updates = match self.updates.as_mut() {
                Some(updates) => updates,
                None => match self.client.subscribe(&self.ticket_id).await {
                    Ok(updates) => {
                        backoff.reset();
                        self.updates.insert(updates)
                    }
                    Err(status) if matches!(status.code(), Code::NotFound | Code::PermissionDenied) => {
                        tracing::debug!(ticket = %self.ticket_id, message = status.message(), "ticket gone");
                        return std::future::pending().await;
                    }
                    Err(status) => {
                        tokio::time::sleep(backoff.next_delay(retry_hint(&status))).await;
                        continue;
                    }
                },
            };
            match updates.message().await {
                Ok(Some(update)) => match update.state() {
                    TicketState::Aborted => {
                        self.updates = None;
                        return update.reason;
                    }
                    TicketState::Cancelled | TicketState::Expired => {
                        self.updates = None;
                        return std::future::pending().await;
                    }
                    TicketState::Matched | TicketState::Queued | TicketState::Unspecified => {}
                },
                Ok(None) | Err(_) => {
                    self.updates = None;
                    tokio::time::sleep(backoff.next_delay(None)).await;
                }
            }
        }
    }
}

/// How a client retries refusals that say to retry later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; `None` retries until it works.
    pub max_attempts: Option<u32>,
    /// The wait before the first retry, doubled after each (plus jitter).
    pub first_backoff: Duration,
    /// The longest wait between attempts (a longer `retry-after-ms` hint wins).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, 250 ms doubling up to 4 s: a few seconds of an outage.
    fn default() -> Self {
        Self { max_attempts: Some(4), first_backoff: Duration::from_millis(250), max_backoff: Duration::from_secs(4) }
    }
}

impl RetryPolicy {
    /// Retries until the call works, as a bot or an unattended client does.
    pub fn forever() -> Self {
        Self { max_attempts: None, max_backoff: Duration::from_secs(10), ..Self::default() }
    }
}

/// Exponential backoff with jitter: each delay is drawn from the upper half
/// of the doubled window, so clients refused together do not return together.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
}

impl Backoff {
    /// A backoff at its first delay.
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy, attempt: 0 }
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next wait: the service's hint if it gave one (plus up to 20 %
    /// jitter), else (`None` or zero) the doubled window with jitter.
    pub fn next_delay(&mut self, hint: Option<Duration>) -> Duration {
        let window = self
            .policy
            .first_backoff
            .saturating_mul(1_u32.checked_shl(self.attempt.min(16)).unwrap_or(u32::MAX))
            .min(self.policy.max_backoff)
            .max(Duration::from_millis(1));
        self.attempt = self.attempt.saturating_add(1);
        let jitter = |span: Duration| span.mul_f64(rand::random::<f64>());
        match hint.filter(|hint| !hint.is_zero()) {
            Some(hint) => hint + jitter(hint / 5),
            None => window / 2 + jitter(window / 2),
        }
    }
}

/// Registers `username` with an idempotency key kept across retries; an
/// account that exists already is fine (the caller logs in next).
async fn register(lobby: &Replicas, username: &str, password: &str, policy: RetryPolicy) -> Result<(), Status> {
    let request = RegisterRequest {
        username: username.to_owned(),
        password: password.to_owned(),
        idempotency_key: new_idempotency_key(),
    };
    lobby
        .call(policy, "register", |channel| {
            let request = request.clone();
            async move {
                match AuthClient::new(channel).register(request).await {
                    Ok(_) => Ok(()),
                    Err(status) if status.code() == Code::AlreadyExists => Ok(()),
                    Err(status) => Err(status),
                }
            }
        })
        .await
}

/// Whether a refusal says to retry later, and the wait it names:
/// `UNAVAILABLE` always, `RESOURCE_EXHAUSTED` only when it names a wait (in
/// `retry-after-ms` metadata, or "retry after N ms" in the message). `None`:
/// do not retry; `Some(Duration::ZERO)`: retry after a backoff of your own.
pub fn retry_hint(status: &Status) -> Option<Duration> {
    match status.code() {
        Code::Unavailable => Some(hinted_wait(status).unwrap_or(Duration::ZERO)),
        Code::ResourceExhausted => hinted_wait(status),
        _ => None,
    }
}

/// The wait a refusal names, from metadata or its message.
fn hinted_wait(status: &Status) -> Option<Duration> {
    let from_metadata = status
        .metadata()
        .get(rally_lobby::error::RETRY_AFTER_MS_METADATA)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok());
    let from_message = || {
        let (_, rest) = status.message().split_once("retry after ")?;
        rest.split_once(" ms")?.0.trim().parse::<u64>().ok()
    };
    from_metadata.or_else(from_message).map(|millis| Duration::from_millis(millis.max(1)))
}

/// Runs `call` until it succeeds, fails with a refusal that is not to be
/// retried, or `policy` runs out of attempts (the last refusal is returned).
pub async fn retrying<T, F, Fut>(policy: RetryPolicy, what: &str, mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let mut backoff = Backoff::new(policy);
    let mut attempt = 1_u32;
    loop {
        let status = match call().await {
            Ok(value) => return Ok(value),
            Err(status) => status,
        };
        let Some(hint) = retry_hint(&status) else { return Err(status) };
        if policy.max_attempts.is_some_and(|max| attempt >= max) {
            return Err(status);
        }
        let delay = backoff.next_delay(Some(hint));
        tracing::debug!(what, attempt, code = ?status.code(), message = status.message(), ?delay, "retrying");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// The seat of `player_id` in `assignment`.
pub fn seat_of(assignment: &Assignment, player_id: u64) -> Option<&SeatAssignment> {
    assignment.seats.iter().find(|seat| seat.player_id == player_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_that_say_to_retry_are_retried_after_the_wait_they_name() {
        let mut limited = Status::resource_exhausted("rate limit exceeded for this IP's sign-ins; retry after 1200 ms");
        assert_eq!(retry_hint(&limited), Some(Duration::from_millis(1200)));
        limited.metadata_mut().insert(rally_lobby::error::RETRY_AFTER_MS_METADATA, MetadataValue::from_static("700"));
        assert_eq!(retry_hint(&limited), Some(Duration::from_millis(700)), "metadata wins over the text");
        let zero = Status::resource_exhausted("rate limit exceeded; retry after 0 ms");
        assert_eq!(retry_hint(&zero), Some(Duration::from_millis(1)), "never a zero wait");
        assert_eq!(retry_hint(&Status::unavailable("down")), Some(Duration::ZERO));
        assert_eq!(retry_hint(&Status::resource_exhausted("message too large")), None);
        assert_eq!(retry_hint(&Status::invalid_argument("bad")), None);
    }

    #[test]
    fn endpoints_are_one_url_or_several_comma_separated() {
        let one = Endpoints::parse("http://127.0.0.1:7100").unwrap();
        assert_eq!(one.urls(), ["http://127.0.0.1:7100"]);
        let several = Endpoints::parse(" http://a:7100 , http://b:7100,").unwrap();
        assert_eq!(several.urls(), ["http://a:7100", "http://b:7100"]);
        assert_eq!(several.to_string().parse::<Endpoints>().unwrap(), several);
        for bad in ["", " , ", "not a url", "http://a:7100,::"] {
            assert!(Endpoints::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_name_resolves_into_one_replica_per_address_and_addresses_stay_as_given() {
        let resolved =
            Endpoints::parse("http://127.0.0.1:7100,http://localhost:7101").unwrap().resolve().await.unwrap();
        let addresses: Vec<std::net::SocketAddr> =
            tokio::net::lookup_host(("localhost", 7101)).await.unwrap().collect();
        assert_eq!(resolved.len(), 1 + addresses.len());
        assert_eq!(resolved.url(), "http://127.0.0.1:7100");
        if addresses.len() > 1 {
            // Each address dialled directly.
            assert!(resolved.urls.iter().skip(1).all(|url| !url.contains("localhost")), "{:?}", resolved.urls);
        }
        let unresolvable = Endpoints::parse("http://no-such-host.invalid:1").unwrap().resolve().await.unwrap();
        assert_eq!(unresolvable.url(), "http://no-such-host.invalid:1", "kept for its connection to resolve later");
    }

    #[tokio::test]
    async fn replicas_move_on_after_a_failure_and_can_start_anywhere() {
        let replicas = Endpoints::parse("http://127.0.0.1:1,http://127.0.0.1:2").unwrap().lazy().unwrap();
        assert_eq!((replicas.len(), replicas.url()), (2, "http://127.0.0.1:1"));
        assert_eq!(replicas.clone().starting_at(3).url(), "http://127.0.0.1:2");
        let quick = RetryPolicy {
            max_attempts: Some(3),
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        };
        let mut seen = Vec::new();
        let answer = replicas
            .call(quick, "test", |_channel| {
                seen.push(replicas.url().to_owned());
                let n = seen.len();
                async move { if n == 1 { Err(Status::unavailable("tcp connect error")) } else { Ok(n) } }
            })
            .await;
        assert_eq!(answer.unwrap(), 2);
        assert_eq!(seen, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert_eq!(replicas.url(), "http://127.0.0.1:2", "clones share the move");
        // A refusal that is the caller's fault is not retried anywhere.
        let mut calls = 0;
        let refused: Result<(), Status> = replicas
            .call(quick, "test", |_channel| {
                calls += 1;
                async { Err(Status::failed_precondition("no")) }
            })
            .await;
        assert_eq!((refused.unwrap_err().code(), calls), (Code::FailedPrecondition, 1));
        assert!(replica_failed(&Status::unknown("transport error")));
        assert!(!replica_failed(&Status::unknown("a bug")));
        assert!(never_reached(&Status::unavailable("tcp connect error")));
        assert!(!never_reached(&Status::unavailable("the database is unavailable")));
    }

    #[test]
    fn backoff_doubles_within_its_bounds_and_honours_hints() {
        let policy = RetryPolicy {
            max_attempts: None,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
        };
        let mut backoff = Backoff::new(policy);
        for window_ms in [100, 200, 400, 400, 400] {
            let delay = backoff.next_delay(None);
            let window = Duration::from_millis(window_ms);
            assert!(delay >= window / 2 && delay <= window, "{delay:?} within the upper half of {window:?}");
        }
        let hinted = backoff.next_delay(Some(Duration::from_secs(2)));
        assert!(hinted >= Duration::from_secs(2) && hinted <= Duration::from_millis(2400), "{hinted:?}");
        backoff.reset();
        assert!(backoff.next_delay(None) <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn retrying_stops_at_success_at_a_final_refusal_or_when_attempts_run_out() {
        let quick = RetryPolicy {
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..RetryPolicy::default()
        };
        let mut calls = 0;
        let result = retrying(RetryPolicy { max_attempts: None, ..quick }, "test", || {
            calls += 1;
            let n = calls;
            async move { if n < 5 { Err(Status::resource_exhausted("retry after 1 ms")) } else { Ok(n) } }
        })
        .await;
        assert_eq!(result.unwrap(), 5);

        let mut calls = 0;
        let result: Result<(), Status> = retrying(quick, "test", || {
            calls += 1;
            async { Err(Status::unavailable("the database is unavailable; retry in a few seconds")) }
        })
        .await;
        assert_eq!((result.unwrap_err().code(), calls), (Code::Unavailable, 4));

        let mut calls = 0;
        let result: Result<(), Status> = retrying(quick, "test", || {
            calls += 1;
            async { Err(Status::permission_denied("no")) }
        })
        .await;
        assert_eq!((result.unwrap_err().code(), calls), (Code::PermissionDenied, 1));
    }
}
