//! [`ContractLayer`]: the rules every rally gRPC server applies before a
//! request reaches a service, so a client author gets the same answer from
//! the lobby and the matchmaker and never tonic's or hyper's bare defaults:
//!
//! - A request message larger than [`MAX_REQUEST_BYTES`] is refused with
//!   `RESOURCE_EXHAUSTED` ("request message is N bytes; the limit is 65536
//!   bytes"), the same for every service.
//! - Request metadata (every header, as HTTP/2 counts it: name + value + 32
//!   bytes per entry) larger than [`MAX_METADATA_BYTES`] is refused with
//!   `RESOURCE_EXHAUSTED` naming the limit. The HTTP/2 layer itself takes
//!   header lists up to [`HTTP2_MAX_HEADER_LIST_BYTES`], so such a request is
//!   answered as a gRPC status on its own stream and other streams on the
//!   connection carry on. Only beyond that does HTTP/2 refuse the stream
//!   (HTTP 431), and a much larger header block (h2 allows about 1.25 times
//!   the limit in CONTINUATION frames) makes it close the connection.
//! - A method or service the server does not have is refused with
//!   `UNIMPLEMENTED` saying which, and what the server has instead.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use prost::Message as _;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Bytes, Service};

/// Largest request message accepted by every service, in bytes (encoded).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Largest request metadata (all headers together, counted as HTTP/2 does).
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// The HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` a rally server advertises and
/// enforces: well above [`MAX_METADATA_BYTES`], so that oversized metadata up
/// to this size gets a clear gRPC status instead of an HTTP error.
pub const HTTP2_MAX_HEADER_LIST_BYTES: u32 = 256 * 1024;

/// Fully-qualified service name → its method names, in declaration order, of
/// the services in `descriptor_sets` (encoded `FileDescriptorSet`s, as
/// tonic-build, tonic-health and tonic-reflection export them).
pub(crate) fn service_methods(descriptor_sets: &[&[u8]]) -> Result<BTreeMap<String, Vec<String>>, prost::DecodeError> {
    let mut services = BTreeMap::new();
    for encoded in descriptor_sets {
        let set = prost_types::FileDescriptorSet::decode(*encoded)?;
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let name = service.name.unwrap_or_default();
                let full_name = if package.is_empty() { name } else { format!("{package}.{name}") };
                let methods = service.method.into_iter().filter_map(|method| method.name).collect();
                services.insert(full_name, methods);
            }
        }
    }
    Ok(services)
}

/// The `(service, method)` a gRPC path `/<package>.<Service>/<Method>` names.
pub(crate) fn method_path(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix('/').and_then(|path| path.split_once('/'))
}

/// A tower layer applying the module's rules, for `Server::builder().layer(…)`.
#[derive(Debug, Clone)]
pub struct ContractLayer {
    /// Fully-qualified service name → its method names, in declaration order.
    services: Arc<BTreeMap<String, Vec<String>>>,
}

impl ContractLayer {
    /// A layer for a server that serves exactly the services in
    /// `descriptor_sets` (encoded `FileDescriptorSet`s, as tonic-build,
    /// tonic-health and tonic-reflection export them).
    pub fn new(descriptor_sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        Ok(Self { services: Arc::new(service_methods(descriptor_sets)?) })
    }

    /// The refusal for a request this server will not pass on, if any.
    fn refusal<B>(&self, request: &Request<B>) -> Option<Status> {
        let metadata_bytes: usize =
            request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 32).sum();
        if metadata_bytes > MAX_METADATA_BYTES {
            return Some(Status::resource_exhausted(format!(
                "request metadata is {metadata_bytes} bytes; the limit is {MAX_METADATA_BYTES} bytes \
                 (every header's name + value + 32, as HTTP/2 counts them)"
            )));
        }
        let path = request.uri().path();
        let Some((service, method)) = method_path(path) else {
            return Some(Status::unimplemented(format!(
                "{path:?} is not a gRPC method path (/<package>.<Service>/<Method>); this server has {}",
                self.service_list()
            )));
        };
        match self.services.get(service) {
            None => Some(Status::unimplemented(format!(
                "unknown service {service} (method {method}); this server has {}",
                self.service_list()
            ))),
            Some(methods) if !methods.iter().any(|known| known == method) => Some(Status::unimplemented(format!(
                "unknown method {service}/{method}; {service} has {}",
                methods.join(", ")
            ))),
            Some(_) => None,
        }
    }

    fn service_list(&self) -> String {
        self.services.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
    }
}

impl<S> tower_layer::Layer<S> for ContractLayer {
    type Service = ContractService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ContractService { inner, contract: self.clone() }
    }
}

/// The service [`ContractLayer`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct ContractService<S> {
    inner: S,
    contract: ContractLayer,
}

impl<S, B> Service<Request<Body>> for ContractService<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if let Some(status) = self.contract.refusal(&request) {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let request = request.map(|body| Body::new(LimitedBody::new(body)));
        let answer = self.inner.call(request);
        Box::pin(async move { answer.await.map(|response| response.map(Body::new)) })
    }
}

/// A request body that fails with `RESOURCE_EXHAUSTED` as soon as a gRPC
/// message header announces more than [`MAX_REQUEST_BYTES`], before the
/// message itself is read.
struct LimitedBody {
    inner: Body,
    /// The 5-byte gRPC message prefix being read (flag, big-endian length).
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to pass.
    remaining: usize,
}

impl LimitedBody {
    fn new(inner: Body) -> Self {
        Self { inner, prefix: [0; 5], prefix_len: 0, remaining: 0 }
    }

    fn scan(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n_bytes = self.remaining.min(data.len());
                self.remaining -= n_bytes;
                data = &data[n_bytes..];
                continue;
            }
            let n_bytes = (self.prefix.len() - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n_bytes].copy_from_slice(&data[..n_bytes]);
            self.prefix_len += n_bytes;
            data = &data[n_bytes..];
            if self.prefix_len == self.prefix.len() {
                self.prefix_len = 0;
                let [_, b1, b2, b3, b4] = self.prefix;
                let len = u32::from_be_bytes([b1, b2, b3, b4]) as usize;
                if len > MAX_REQUEST_BYTES {
                    return Err(Status::resource_exhausted(format!(
                        "request message is {len} bytes; the limit is {MAX_REQUEST_BYTES} bytes"
                    )));
                }
                self.remaining = len;
            }
        }
        Ok(())
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && let Err(status) = this.scan(data)
        {
            return Poll::Ready(Some(Err(status)));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_prefixes_split_across_chunks_are_read() {
        let mut body = LimitedBody::new(Body::empty());
        let mut small = vec![0_u8];
        small.extend_from_slice(&10_u32.to_be_bytes());
        small.extend_from_slice(&[7; 10]);
        let mut large = vec![0_u8];
        large.extend_from_slice(&(MAX_REQUEST_BYTES as u32 + 1).to_be_bytes());
        let stream: Vec<u8> = small.iter().chain(large.iter()).copied().collect();
        // One byte at a time: the small message passes, the large prefix fails.
        let mut failed = None;
        for (idx, byte) in stream.iter().enumerate() {
            if let Err(status) = body.scan(std::slice::from_ref(byte)) {
                failed = Some((idx, status));
                break;
            }
        }
        let (idx, status) = failed.expect("the large message is refused");
        assert_eq!(idx, stream.len() - 1);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("the limit is 65536 bytes"), "{}", status.message());
    }

    #[test]
    fn services_and_methods_come_from_the_descriptors() {
        let layer = ContractLayer::new(&[crate::proto::FILE_DESCRIPTOR_SET]).expect("descriptors");
        let request = |path: &str| Request::builder().uri(path).body(()).expect("request");
        assert!(layer.refusal(&request("/rally.chat.v1.Chat/Send")).is_none());
        let status = layer.refusal(&request("/rally.chat.v1.Chat/Sned")).expect("unknown method");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(status.message().starts_with("unknown method rally.chat.v1.Chat/Sned; rally.chat.v1.Chat has Join"));
        let status = layer.refusal(&request("/x.Y/Z")).expect("unknown service");
        assert!(status.message().contains("rally.profile.v1.Profile"), "{}", status.message());
        assert!(layer.refusal(&request("/nonsense")).is_some());
    }
}
