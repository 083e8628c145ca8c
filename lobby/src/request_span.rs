//! One tracing span per gRPC request, named `grpc`, with the `method` (the
//! request path, `/package.Service/Method`), the `peer` address and, once the
//! access token is checked, the `player_id`.
//!
//! The lobby and the matchmaker both serve with
//! `Server::builder().trace_fn(request_span)`: tonic makes the span when the
//! request arrives and enters it each time it polls the request's future,
//! never across an `.await`, so whatever a handler (or an interceptor) logs
//! carries these fields. A task a handler spawns (a Subscribe or
//! WatchTicket stream) is spawned with `.instrument(Span::current())`.

use tonic::codegen::http;
use tonic::transport::server::TcpConnectInfo;
use tracing::field::{Empty, display};

/// The span of one request (for `Server::builder().trace_fn`).
pub fn request_span(request: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!("grpc", method = %request.uri().path(), peer = Empty, player_id = Empty);
    if let Some(peer) = request.extensions().get::<TcpConnectInfo>().and_then(TcpConnectInfo::remote_addr) {
        span.record("peer", display(peer));
    }
    span
}

/// Records the authenticated caller on the current request's span.
pub fn record_player(player_id: u64) {
    tracing::Span::current().record("player_id", player_id);
}
