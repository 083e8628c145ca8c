//! A player's side of the platform over gRPC: log in at the lobby (keeping the
//! access token fresh), queue at the matchmaker and wait for the assignment.
//! Bots, the load harness and `rally play` all join matches through this, the
//! same calls a game client makes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rally_lobby::proto::auth::{LoginRequest, MeRequest, RefreshRequest, RegisterRequest, auth_client::AuthClient};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::proto::matchmaker::{
    Assignment, CancelRequest, EnqueueRequest, SeatAssignment, TicketState, WatchTicketRequest,
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

    /// Registers `username` (unless it exists already) and logs in.
    pub async fn register_or_login(
        lobby: Channel,
        matchmaker: Channel,
        username: &str,
        password: &str,
    ) -> Result<Self, Status> {
        let request = RegisterRequest { username: username.to_owned(), password: password.to_owned() };
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

    /// Queues for `mode`; returns the ticket id.
    pub async fn enqueue(&mut self, mode: &str) -> Result<String, Status> {
        self.ensure_fresh().await?;
        let request = self.request(EnqueueRequest { mode: mode.to_owned(), ..Default::default() });
        Ok(MatchmakerClient::new(self.matchmaker.clone()).enqueue(request).await?.into_inner().ticket_id)
    }

    /// Takes a queued ticket out of the queue; returns its state after the call.
    pub async fn cancel(&mut self, ticket_id: &str) -> Result<TicketState, Status> {
        self.ensure_fresh().await?;
        let request = self.request(CancelRequest { ticket_id: ticket_id.to_owned() });
        Ok(MatchmakerClient::new(self.matchmaker.clone()).cancel(request).await?.into_inner().state())
    }

    /// Waits on a ticket until it is matched or ends.
    pub async fn wait(&mut self, ticket_id: &str) -> Result<QueueOutcome, Status> {
        self.ensure_fresh().await?;
        let request = self.request(WatchTicketRequest { ticket_id: ticket_id.to_owned() });
        let mut updates = MatchmakerClient::new(self.matchmaker.clone()).watch_ticket(request).await?.into_inner();
        while let Some(update) = updates.message().await? {
            match update.state() {
                TicketState::Matched => {
                    return update
                        .assignment
                        .map(QueueOutcome::Matched)
                        .ok_or_else(|| Status::internal("the matchmaker reported a match without an assignment"));
                }
                state @ (TicketState::Cancelled | TicketState::Expired | TicketState::Aborted) => {
                    return Ok(QueueOutcome::Ended { state, reason: update.reason });
                }
                TicketState::Queued | TicketState::Unspecified => {}
            }
        }
        Err(Status::unavailable("the matchmaker closed the ticket stream before a match; enqueue again"))
    }

    /// Enqueues for `mode` and waits for the outcome.
    pub async fn queue(&mut self, mode: &str) -> Result<QueueOutcome, Status> {
        let ticket = self.enqueue(mode).await?;
        self.wait(&ticket).await
    }
}

/// The seat of `player_id` in `assignment`.
pub fn seat_of(assignment: &Assignment, player_id: u64) -> Option<&SeatAssignment> {
    assignment.seats.iter().find(|seat| seat.player_id == player_id)
}
