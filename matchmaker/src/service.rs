//! `rally.matchmaker.v1.Matchmaker` over tonic, with gRPC health and
//! reflection, and a handle to stop it. Every method needs an access token
//! from the lobby, checked in-process with `AccessTokenVerifier`.

use std::net::SocketAddr;

use anyhow::Context as _;
use rally_lobby::AccessTokenVerifier;
use rally_lobby::request_span::{record_player, request_span};
use rally_protocol::PlayerId;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::engine::{EnqueueRequest, Matchmaker, unix_ms};
use crate::error::MatchmakerError;
use crate::proto::{self, matchmaker as pb};
use crate::store::IdempotencyKey;
use crate::ticket::{TicketId, TicketState};

/// Largest request message accepted, in bytes: the same for every rally server.
pub const MAX_REQUEST_BYTES: usize = rally_lobby::contract::MAX_REQUEST_BYTES;

/// Most party members' tokens in one Enqueue.
const MAX_PARTY_TOKENS: usize = 16;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct MatchmakerService {
    matchmaker: Matchmaker,
    verifier: AccessTokenVerifier,
}

impl MatchmakerService {
    /// The service over `matchmaker`, trusting access tokens `verifier` accepts.
    pub fn new(matchmaker: Matchmaker, verifier: AccessTokenVerifier) -> Self {
        Self { matchmaker, verifier }
    }

    /// The player a token names, with the display name it carries.
    fn player(&self, token: &str) -> Result<(PlayerId, String), MatchmakerError> {
        let claims = self.verifier.verify(token)?;
        Ok((PlayerId(claims.player_id()?), claims.name))
    }

    /// The authenticated caller and their display name, recorded on the request's span.
    fn caller_named<T>(&self, request: &Request<T>) -> Result<(PlayerId, String), MatchmakerError> {
        let header = request.metadata().get("authorization").and_then(|value| value.to_str().ok()).unwrap_or("");
        let token = header.strip_prefix("Bearer ").unwrap_or("");
        let (player, name) = self.player(token.trim())?;
        record_player(player.0);
        Ok((player, name))
    }

    /// The authenticated caller, recorded on the request's span.
    fn caller<T>(&self, request: &Request<T>) -> Result<PlayerId, MatchmakerError> {
        self.caller_named(request).map(|(player, _)| player)
    }
}

fn parse_ticket_id(text: &str) -> Result<TicketId, MatchmakerError> {
    text.parse().map_err(|reason: String| MatchmakerError::invalid("ticket_id", reason))
}

fn wire_state(state: &TicketState) -> pb::TicketState {
    match state {
        TicketState::Queued => pb::TicketState::Queued,
        TicketState::Matched(_) => pb::TicketState::Matched,
        TicketState::Cancelled => pb::TicketState::Cancelled,
        TicketState::Expired => pb::TicketState::Expired,
        TicketState::Aborted { .. } => pb::TicketState::Aborted,
    }
}

#[tonic::async_trait]
impl pb::matchmaker_server::Matchmaker for MatchmakerService {
    async fn enqueue(&self, request: Request<pb::EnqueueRequest>) -> Result<Response<pb::EnqueueResponse>, Status> {
        let (leader, leader_name) = self.caller_named(&request)?;
        let request = request.into_inner();
        if request.party_access_tokens.len() > MAX_PARTY_TOKENS {
            return Err(MatchmakerError::invalid("party_access_tokens", format!("at most {MAX_PARTY_TOKENS}")).into());
        }
        let mut party = Vec::with_capacity(request.party_access_tokens.len());
        let mut display_names = vec![(leader, leader_name)];
        for (idx, token) in request.party_access_tokens.iter().enumerate() {
            let (member, name) = self.player(token).map_err(|err| {
                MatchmakerError::invalid("party_access_tokens", format!("party member #{}'s token: {err}", idx + 1))
            })?;
            party.push(member);
            display_names.push((member, name));
        }
        if request.latencies_ms.len() > 64 {
            return Err(MatchmakerError::invalid("latencies_ms", "at most 64 regions").into());
        }
        let mut latencies_ms: Vec<(String, u32)> = request.latencies_ms.into_iter().collect();
        latencies_ms.sort();
        let idempotency_key = match request.idempotency_key.as_str() {
            "" => None,
            key => {
                Some(IdempotencyKey::new(key).map_err(|reason| MatchmakerError::invalid("idempotency_key", reason))?)
            }
        };
        let enqueue = EnqueueRequest {
            mode: request.mode,
            party,
            region: Some(request.region).filter(|region| !region.is_empty()),
            latencies_ms,
            display_names,
            idempotency_key,
        };
        let ticket = self.matchmaker.enqueue(leader, enqueue, unix_ms()).await?;
        Ok(Response::new(pb::EnqueueResponse {
            ticket_id: ticket.id.to_string(),
            expires_at_ms: ticket.expires_at_ms as i64,
        }))
    }

    async fn cancel(&self, request: Request<pb::CancelRequest>) -> Result<Response<pb::CancelResponse>, Status> {
        let player = self.caller(&request)?;
        let id = parse_ticket_id(&request.get_ref().ticket_id)?;
        let state = self.matchmaker.cancel(player, id).await?;
        Ok(Response::new(pb::CancelResponse { state: wire_state(&state) as i32 }))
    }

    type WatchTicketStream = ReceiverStream<Result<pb::TicketUpdate, Status>>;

    async fn watch_ticket(
        &self,
        request: Request<pb::WatchTicketRequest>,
    ) -> Result<Response<Self::WatchTicketStream>, Status> {
        let player = self.caller(&request)?;
        let id = parse_ticket_id(&request.get_ref().ticket_id)?;
        let (ticket, mut states) = self.matchmaker.watch(player, id).await?;
        let (updates, stream) = mpsc::channel(4);
        let watch = async move {
            let mut last: Option<TicketState> = None;
            loop {
                let state = states.borrow_and_update().clone();
                if let Some(state) = state
                    && last.as_ref() != Some(&state)
                {
                    let update = state.to_update(id, ticket.enqueued_at_ms, unix_ms());
                    if updates.send(Ok(update)).await.is_err() {
                        return;
                    }
                    let done = state.is_final();
                    last = Some(state);
                    if done {
                        return;
                    }
                }
                tokio::select! {
                    changed = states.changed() => if changed.is_err() { return },
                    () = updates.closed() => return,
                }
            }
        };
        tokio::spawn(watch.instrument(tracing::Span::current()));
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// A running matchmaker gRPC server.
#[derive(Debug)]
pub struct MatchmakerServer {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl MatchmakerServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and lets in-flight calls finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        (&mut self.task).await.context("server task")?.context("server")
    }

    /// Waits until the server stops on its own (an error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("server task")?.context("server")
    }
}

/// Binds `listen` and serves the Matchmaker service (plus health and
/// reflection) in a task. The engine's rounds are not started here: call
/// [`Matchmaker::start`].
pub async fn serve(
    listen: SocketAddr,
    matchmaker: Matchmaker,
    verifier: AccessTokenVerifier,
) -> anyhow::Result<MatchmakerServer> {
    let service = pb::matchmaker_server::MatchmakerServer::new(MatchmakerService::new(matchmaker, verifier))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<pb::matchmaker_server::MatchmakerServer<MatchmakerService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("reflection")?;
    // grpcurl and grpcio-reflection still ask v1alpha.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("reflection")?;
    // The lobby's rules for sizes, metadata and unknown methods, so both servers answer alike.
    let descriptors = [
        proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let contract = rally_lobby::contract::ContractLayer::new(&descriptors).context("descriptors")?;
    // Request counts and latency per method and status code, as the lobby's.
    let grpc_metrics = rally_lobby::grpc_metrics::GrpcMetricsLayer::new(&descriptors).context("descriptors")?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let local_addr = listener.local_addr().context("local address")?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .trace_fn(request_span)
        .http2_max_header_list_size(rally_lobby::contract::HTTP2_MAX_HEADER_LIST_BYTES)
        .layer(grpc_metrics)
        .layer(contract)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(service);
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = shutdown_rx.await;
    }));
    tracing::info!(%local_addr, "matchmaker listening");
    Ok(MatchmakerServer { local_addr, shutdown: Some(shutdown_tx), task })
}
