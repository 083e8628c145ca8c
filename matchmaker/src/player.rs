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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rally_lobby::proto::auth::{LoginRequest, MeRequest, RefreshRequest, RegisterRequest, auth_client::AuthClient};
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

/// A logged-in player.
#[derive(Clone, Debug)]
pub struct PlayerClient {
    lobby: Channel,
    matchmaker: Channel,
    player_id: u64,
    username: String,
    tokens: Arc<Mutex<Tokens>>,
    /// Held while refreshing, so clones refresh once.
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

impl PlayerClient {
    /// Logs in as `username`.
    pub async fn login(lobby: Channel, matchmaker: Channel, username: &str, password: &str) -> Result<Self, Status> {
        let mut auth = AuthClient::new(lobby.clone());
        let request = LoginRequest { username: username.to_owned(), password: password.to_owned() };
        let pair = auth.login(request).await?.into_inner();
        let me = auth.me(authorized(MeRequest {}, &pair.access_token)).await?.into_inner();
        Ok(Self {
            lobby,
            matchmaker,
            player_id: me.player_id,
            username: me.username,
            tokens: Arc::new(Mutex::new(Tokens {
                access_token: pair.access_token,
                access_expires_at_ms: pair.access_expires_at_ms,
                refresh_token: pair.refresh_token,
            })),
            refreshing: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Logs in as `username`, retrying refusals that say to retry later
    /// (the lobby's database down, a rate limit) as `policy` allows.
    pub async fn login_retrying(
        lobby: Channel,
        matchmaker: Channel,
        username: &str,
        password: &str,
        policy: RetryPolicy,
    ) -> Result<Self, Status> {
        retrying(policy, "log in", || Self::login(lobby.clone(), matchmaker.clone(), username, password)).await
    }

    /// [`PlayerClient::register_or_login`], retrying each step as `policy` allows.
    pub async fn register_or_login_retrying(
        lobby: Channel,
        matchmaker: Channel,
        username: &str,
        password: &str,
        policy: RetryPolicy,
    ) -> Result<Self, Status> {
        let register = || async {
            let request = RegisterRequest {
                username: username.to_owned(),
                password: password.to_owned(),
                idempotency_key: String::new(),
            };
            match AuthClient::new(lobby.clone()).register(request).await {
                Ok(_) => Ok(()),
                Err(status) if status.code() == Code::AlreadyExists => Ok(()),
                Err(status) => Err(status),
            }
        };
        retrying(policy, "register", register).await?;
        Self::login_retrying(lobby.clone(), matchmaker.clone(), username, password, policy).await
    }

    /// Registers `username` (unless it exists already) and logs in.
    pub async fn register_or_login(
        lobby: Channel,
        matchmaker: Channel,
        username: &str,
        password: &str,
    ) -> Result<Self, Status> {
        let request = RegisterRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            idempotency_key: String::new(),
        };
        match AuthClient::new(lobby.clone()).register(request).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::AlreadyExists => {}
            Err(status) => return Err(status),
        }
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

    /// The lobby channel (Auth, Profile, Chat).
    pub fn lobby(&self) -> &Channel {
        &self.lobby
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
        let pair = AuthClient::new(self.lobby.clone()).refresh(RefreshRequest { refresh_token }).await?.into_inner();
        *self.tokens() = Tokens {
            access_token: pair.access_token,
            access_expires_at_ms: pair.access_expires_at_ms,
            refresh_token: pair.refresh_token,
        };
        Ok(())
    }

    /// Queues for `mode`; returns the ticket id. A refusal that says to retry
    /// later is retried a few times ([`RetryPolicy::default`]).
    pub async fn enqueue(&mut self, mode: &str) -> Result<String, Status> {
        let this = self.clone();
        retrying(RetryPolicy::default(), "enqueue", || {
            let mut this = this.clone();
            async move {
                this.ensure_fresh().await?;
                let request = this.request(EnqueueRequest { mode: mode.to_owned(), ..Default::default() });
                Ok(MatchmakerClient::new(this.matchmaker.clone()).enqueue(request).await?.into_inner().ticket_id)
            }
        })
        .await
    }

    /// Takes a queued ticket out of the queue; returns its state after the call.
    pub async fn cancel(&mut self, ticket_id: &str) -> Result<TicketState, Status> {
        self.ensure_fresh().await?;
        let request = self.request(CancelRequest { ticket_id: ticket_id.to_owned() });
        Ok(MatchmakerClient::new(self.matchmaker.clone()).cancel(request).await?.into_inner().state())
    }

    /// Opens the ticket's update stream (WatchTicket).
    async fn subscribe(&mut self, ticket_id: &str) -> Result<Streaming<TicketUpdate>, Status> {
        self.ensure_fresh().await?;
        let request = self.request(WatchTicketRequest { ticket_id: ticket_id.to_owned() });
        Ok(MatchmakerClient::new(self.matchmaker.clone()).watch_ticket(request).await?.into_inner())
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

    /// Waits until the ticket is matched or ends.
    pub async fn outcome(&mut self) -> Result<QueueOutcome, Status> {
        let Some(updates) = self.updates.as_mut() else {
            return Err(Status::unavailable("the ticket stream is closed; enqueue again"));
        };
        while let Some(update) = updates.message().await? {
            match update.state() {
                TicketState::Matched => {
                    return update
                        .assignment
                        .map(QueueOutcome::Matched)
                        .ok_or_else(|| Status::internal("the matchmaker reported a match without an assignment"));
                }
                state @ (TicketState::Cancelled | TicketState::Expired | TicketState::Aborted) => {
                    self.updates = None;
                    return Ok(QueueOutcome::Ended { state, reason: update.reason });
                }
                TicketState::Queued | TicketState::Unspecified => {}
            }
        }
        self.updates = None;
        Err(Status::unavailable("the matchmaker closed the ticket stream before a match; enqueue again"))
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
