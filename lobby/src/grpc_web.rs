//! gRPC-Web and CORS for browsers (issue #20): the layers the lobby and the
//! matchmaker put in front of their gRPC services so a page can call them.
//!
//! [`tonic_web::GrpcWebLayer`] turns an HTTP/1.1 gRPC-Web request into a gRPC
//! one (and the reply back, trailers in a final frame), so the contract and
//! metrics layers behind it see ordinary gRPC. In front of it, [`cors_layer`]
//! answers preflights and adds CORS headers for the configured origins only: a
//! server with none configured sends no CORS headers at all, so browsers refuse
//! pages from any other origin.

use std::time::Duration;

use tonic::codegen::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers a gRPC-Web page may send: the gRPC-Web ones and the
/// metadata the services read (`authorization`, the access token; idempotency
/// keys travel in the request messages, not in metadata).
pub const ALLOWED_HEADERS: [&str; 5] = ["content-type", "authorization", "x-grpc-web", "x-user-agent", "grpc-timeout"];

/// Response headers a page may read: the status of a call that failed before
/// its body (a trailers-only reply puts them in the headers).
pub const EXPOSED_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer for `origins` (each `scheme://host[:port]`, exactly as a
/// browser sends `Origin`). Empty: the layer adds nothing, so cross-origin
/// pages are refused by their browsers. An origin that is not a valid header
/// value is an error that names it.
pub fn cors_layer(origins: &[String]) -> Result<CorsLayer, String> {
    let origins = origins
        .iter()
        .map(|origin| {
            let trimmed = origin.trim_end_matches('/');
            HeaderValue::from_str(trimmed)
                .map_err(|_| format!("web origin {origin:?} is not a valid Origin header value"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
        .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
        .max_age(PREFLIGHT_MAX_AGE))
}

/// The gRPC-Web translation layer.
pub fn grpc_web_layer() -> tonic_web::GrpcWebLayer {
    tonic_web::GrpcWebLayer::new()
}
