//! [`TournamentClient`]: a small wrapper over the generated client that sends
//! the caller's access token with every call, for the CLI and bots.

use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

use crate::proto::tournament::{self as pb, tournaments_client::TournamentsClient};

/// Why [`TournamentClient::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The endpoint is not a URL.
    #[error("{endpoint:?} is not a server address ({reason}); give http://host:port")]
    BadEndpoint {
        /// What was given.
        endpoint: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The server could not be reached.
    #[error("cannot reach the tournaments service at {endpoint}: {source}")]
    Transport {
        /// The URL tried.
        endpoint: String,
        /// The transport's error.
        #[source]
        source: tonic::transport::Error,
    },
}

/// A Tournaments client acting as one player.
#[derive(Debug, Clone)]
pub struct TournamentClient {
    inner: TournamentsClient<Channel>,
    access_token: String,
}

impl TournamentClient {
    /// Connects to `endpoint` (`http://host:port`, or `host:port`), acting
    /// with `access_token` (from Auth.Login).
    pub async fn connect(endpoint: &str, access_token: impl Into<String>) -> Result<Self, ConnectError> {
        let uri = if endpoint.contains("://") { endpoint.to_owned() } else { format!("http://{endpoint}") };
        let channel = Channel::from_shared(uri.clone())
            .map_err(|err| ConnectError::BadEndpoint { endpoint: endpoint.to_owned(), reason: err.to_string() })?
            .connect()
            .await
            .map_err(|source| ConnectError::Transport { endpoint: uri, source })?;
        Ok(Self::from_channel(channel, access_token))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel, access_token: impl Into<String>) -> Self {
        Self {
            inner: TournamentsClient::new(channel).max_decoding_message_size(16 * 1024 * 1024),
            access_token: access_token.into(),
        }
    }

    /// Replaces the access token (after Auth.Refresh).
    pub fn set_access_token(&mut self, access_token: impl Into<String>) {
        self.access_token = access_token.into();
    }

    /// `message` with the access token as `authorization: Bearer …` metadata.
    pub fn request<T>(&self, message: T) -> Result<Request<T>, Status> {
        let mut request = Request::new(message);
        let value = format!("Bearer {}", self.access_token)
            .parse()
            .map_err(|_| Status::invalid_argument("the access token is not ASCII"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }

    /// The generated client, for calls this wrapper does not cover (pass
    /// requests made with [`TournamentClient::request`]).
    pub fn raw(&mut self) -> &mut TournamentsClient<Channel> {
        &mut self.inner
    }

    /// Creates a tournament; the caller organises it.
    pub async fn create(&mut self, request: pb::CreateRequest) -> Result<pb::Tournament, Status> {
        let request = self.request(request)?;
        let response = self.inner.create(request).await?.into_inner();
        response.tournament.ok_or_else(|| Status::internal("Create answered without a tournament"))
    }

    /// One tournament with its entrants and bracket.
    pub async fn get(&mut self, tournament_id: u64) -> Result<pb::Tournament, Status> {
        let request = self.request(pb::GetRequest { tournament_id })?;
        let response = self.inner.get(request).await?.into_inner();
        response.tournament.ok_or_else(|| Status::internal("Get answered without a tournament"))
    }

    /// The first page of tournaments in `statuses` (all when empty), newest first.
    pub async fn list(&mut self, statuses: &[pb::TournamentStatus]) -> Result<pb::ListResponse, Status> {
        let statuses = statuses.iter().map(|&status| status as i32).collect();
        let request = self.request(pb::ListRequest { page_size: 0, page_token: String::new(), statuses })?;
        Ok(self.inner.list(request).await?.into_inner())
    }

    /// Registers the caller.
    pub async fn register(&mut self, tournament_id: u64) -> Result<pb::Entrant, Status> {
        let request = self.request(pb::RegisterRequest { tournament_id })?;
        let response = self.inner.register(request).await?.into_inner();
        response.entrant.ok_or_else(|| Status::internal("Register answered without an entrant"))
    }

    /// Checks the caller in.
    pub async fn check_in(&mut self, tournament_id: u64) -> Result<pb::Entrant, Status> {
        let request = self.request(pb::CheckInRequest { tournament_id })?;
        let response = self.inner.check_in(request).await?.into_inner();
        response.entrant.ok_or_else(|| Status::internal("CheckIn answered without an entrant"))
    }

    /// Withdraws the caller.
    pub async fn withdraw(&mut self, tournament_id: u64) -> Result<pb::Entrant, Status> {
        let request = self.request(pb::WithdrawRequest { tournament_id })?;
        let response = self.inner.withdraw(request).await?.into_inner();
        response.entrant.ok_or_else(|| Status::internal("Withdraw answered without an entrant"))
    }

    /// Streams the tournament: its state, then every change, with the
    /// caller's ready matches ([`pb::MatchReady`]).
    pub async fn watch(&mut self, tournament_id: u64) -> Result<Streaming<pb::TournamentUpdate>, Status> {
        let request = self.request(pb::WatchRequest { tournament_id })?;
        Ok(self.inner.watch(request).await?.into_inner())
    }

    /// The current ranking.
    pub async fn standings(&mut self, tournament_id: u64) -> Result<pb::StandingsResponse, Status> {
        let request = self.request(pb::StandingsRequest { tournament_id })?;
        Ok(self.inner.standings(request).await?.into_inner())
    }

    /// The ledger receipt of a counted match.
    pub async fn receipt(&mut self, tournament_id: u64, match_id: u64) -> Result<pb::GetReceiptResponse, Status> {
        let request = self.request(pb::GetReceiptRequest { tournament_id, match_id })?;
        Ok(self.inner.get_receipt(request).await?.into_inner())
    }
}
