//! [`GrpcMetricsLayer`]: Prometheus metrics of every gRPC request a rally
//! server answers (lobby, matchmaker, tournaments), through the `metrics`
//! facade, so whichever recorder the process installed (the ops endpoint's)
//! exports them:
//!
//! - `rally_grpc_server_requests_total{service,method,code}`: requests
//!   answered, by gRPC status code (`OK`, `Unauthenticated`, ... as
//!   go-grpc-prometheus names them).
//! - `rally_grpc_server_request_seconds{service,method,code}`: time from the
//!   request to its response headers. For a unary call that is the handler's
//!   whole time (tonic sends the headers with the answer); for a streaming
//!   call it is the time to open the stream, not its life.
//!
//! The code comes from `grpc-status`: in the response headers when the
//! answer is a status alone (an error before any message, or the
//! [`ContractLayer`](crate::contract::ContractLayer)'s refusals), else in the
//! trailers that end the body. A request is counted once its code is known:
//! a unary call at once, a stream when it ends. A stream or call dropped
//! before its status (the client went away, or a deadline cut it) counts as
//! `Canceled`, or `DeadlineExceeded` when its deadline (the server's
//! `timeout` or the client's `grpc-timeout`) had passed.
//!
//! `service` and `method` are the path's parts when the server has that
//! method (from its descriptor sets) and `unknown` otherwise, so a scanner
//! trying random paths cannot grow the number of series.
//!
//! Put it outermost (`Server::builder().layer(metrics).layer(contract)`), so
//! it also counts what the contract layer refuses.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Once};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Bytes, Service};

/// Requests answered, by service, method and status code.
pub const REQUESTS_TOTAL: &str = "rally_grpc_server_requests_total";
/// Time to the response headers, by service, method and status code.
pub const REQUEST_SECONDS: &str = "rally_grpc_server_request_seconds";

/// The label value of a path this server does not serve.
const UNKNOWN: &str = "unknown";

/// A tower layer recording [`REQUESTS_TOTAL`] and [`REQUEST_SECONDS`], for
/// `Server::builder().layer(…)`.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    /// Fully-qualified service name → its method names.
    methods: Arc<BTreeMap<String, Vec<String>>>,
    /// The server's own timeout (`Server::timeout`), if any.
    timeout: Option<Duration>,
}

impl GrpcMetricsLayer {
    /// A layer for a server that serves exactly the services in
    /// `descriptor_sets` (encoded `FileDescriptorSet`s, as for the contract layer).
    pub fn new(descriptor_sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        describe();
        let methods = crate::contract::service_methods(descriptor_sets)?;
        Ok(Self { methods: Arc::new(methods), timeout: None })
    }

    /// Tells the layer the server's `timeout`, so calls it cuts count as
    /// `DeadlineExceeded` rather than `Canceled` (tonic applies it outside the layers).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The `(service, method)` labels of a request path.
    fn labels(&self, path: &str) -> (String, String) {
        let known = crate::contract::method_path(path).filter(|(service, method)| {
            self.methods.get(*service).is_some_and(|methods| methods.iter().any(|known| known == method))
        });
        match known {
            Some((service, method)) => (service.to_owned(), method.to_owned()),
            None => (UNKNOWN.to_owned(), UNKNOWN.to_owned()),
        }
    }
}

/// Describes the layer's metrics to the installed recorder (once per process).
pub fn describe() {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(
            REQUESTS_TOTAL,
            "gRPC requests answered, by service, method and status code (streams count when they end)"
        );
        metrics::describe_histogram!(
            REQUEST_SECONDS,
            metrics::Unit::Seconds,
            "gRPC time from request to response headers (a unary call's handling; a stream's opening)"
        );
    });
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService { inner, layer: self.clone() }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    layer: GrpcMetricsLayer,
}

impl<S, B> Service<Request<Body>> for GrpcMetricsService<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (service, method) = self.layer.labels(request.uri().path());
        let deadline = [self.layer.timeout, grpc_timeout(request.headers())].into_iter().flatten().min();
        let mut call = Call { service, method, started: Instant::now(), deadline, to_headers: None, done: false };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            match response {
                Ok(response) => {
                    call.to_headers = Some(call.started.elapsed());
                    if let Some(code) = status_in(response.headers()) {
                        call.finish(code);
                    }
                    Ok(response.map(|body| Body::new(MetricsBody { inner: body, call })))
                }
                Err(err) => {
                    call.finish(Code::Unknown);
                    Err(err)
                }
            }
        })
    }
}

/// One request on its way: recorded exactly once, when its code is known or
/// when it is dropped unanswered.
struct Call {
    service: String,
    method: String,
    started: Instant,
    /// The earliest deadline that applies to it.
    deadline: Option<Duration>,
    /// Time to the response headers, once they came.
    to_headers: Option<Duration>,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let code = code_label(code);
        let seconds = self.to_headers.unwrap_or_else(|| self.started.elapsed()).as_secs_f64();
        let labels = [("service", self.service.clone()), ("method", self.method.clone()), ("code", code.to_owned())];
        metrics::counter!(REQUESTS_TOTAL, &labels).increment(1);
        metrics::histogram!(REQUEST_SECONDS, &labels).record(seconds);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done {
            let past_deadline = self.deadline.is_some_and(|deadline| self.started.elapsed() >= deadline);
            self.finish(if past_deadline { Code::DeadlineExceeded } else { Code::Cancelled });
        }
    }
}

/// The response body, watched for the trailers' `grpc-status`.
struct MetricsBody<B> {
    inner: B,
    call: Call,
}

impl<B> http_body::Body for MetricsBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in) {
                    this.call.finish(code);
                }
            }
            // The stream broke: hyper resets it, the client sees no status.
            Some(Err(_)) => this.call.finish(Code::Unknown),
            // Ended without trailers: not a valid gRPC answer.
            None => this.call.finish(Code::Unknown),
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

/// The `grpc-status` in `headers`, if there is one (an unreadable one is `Unknown`).
fn status_in(headers: &HeaderMap) -> Option<Code> {
    headers.get("grpc-status").map(|value| Code::from_bytes(value.as_bytes()))
}

/// The client's deadline from `grpc-timeout` (digits and a unit, per the gRPC HTTP/2 spec).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (amount, unit) = value.split_at(value.len() - 1);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The `code` label: the status code's name as go-grpc-prometheus and most
/// dashboards write it.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Future;
    use std::sync::Mutex;

    use http_body::Body as _;
    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
    use tonic::codegen::http::HeaderValue;
    use tower_layer::Layer as _;

    use super::*;

    /// A recorder that keeps every counter increment and histogram sample by key.
    #[derive(Default, Clone)]
    struct Capture {
        events: Arc<Mutex<Vec<(String, f64)>>>,
    }

    struct Sink {
        key: String,
        events: Arc<Mutex<Vec<(String, f64)>>>,
    }

    impl metrics::CounterFn for Sink {
        fn increment(&self, value: u64) {
            self.events.lock().expect("events").push((self.key.clone(), value as f64));
        }
        fn absolute(&self, _: u64) {}
    }

    impl metrics::HistogramFn for Sink {
        fn record(&self, value: f64) {
            self.events.lock().expect("events").push((self.key.clone(), value));
        }
    }

    fn key_text(key: &Key) -> String {
        let labels: Vec<String> = key.labels().map(|label| format!("{}={}", label.key(), label.value())).collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Sink { key: key_text(key), events: self.events.clone() }))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(Arc::new(Sink { key: key_text(key), events: self.events.clone() }))
        }
    }

    impl Capture {
        fn taken(&self) -> Vec<(String, f64)> {
            std::mem::take(&mut *self.events.lock().expect("events"))
        }
    }

    fn layer() -> GrpcMetricsLayer {
        GrpcMetricsLayer::new(&[crate::proto::FILE_DESCRIPTOR_SET]).expect("descriptors")
    }

    fn request(path: &str) -> Request<Body> {
        Request::builder().uri(path).body(Body::empty()).expect("request")
    }

    /// Polls a future that is ready without waiting (the test services are).
    fn now<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        match future.as_mut().poll(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("the future was not ready"),
        }
    }

    /// Reads the body to its end, frame by frame.
    fn drain(mut body: Body) {
        while let Poll::Ready(Some(frame)) =
            Pin::new(&mut body).poll_frame(&mut Context::from_waker(std::task::Waker::noop()))
        {
            frame.expect("frame");
        }
    }

    /// A route answering with `response()`.
    fn route(
        response: impl Fn() -> Response<Body>,
    ) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static> {
        tower_service_fn(move |_request| {
            let response = response();
            async move { Ok::<_, Infallible>(response) }
        })
    }

    fn tower_service_fn<F, Fut>(f: F) -> ServiceFn<F>
    where
        F: FnMut(Request<Body>) -> Fut,
    {
        ServiceFn(f)
    }

    struct ServiceFn<F>(F);

    impl<F, Fut> Service<Request<Body>> for ServiceFn<F>
    where
        F: FnMut(Request<Body>) -> Fut,
        Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = Fut;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, request: Request<Body>) -> Fut {
            (self.0)(request)
        }
    }

    /// A body of one message and then trailers with `code`.
    fn message_then_trailers(code: Code) -> Body {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from(code as i32));
        let frames = vec![
            Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        Body::new(http_body_util_stream(frames))
    }

    /// A body yielding `frames` in order.
    fn http_body_util_stream(frames: Vec<Result<http_body::Frame<Bytes>, Infallible>>) -> FramesBody {
        FramesBody { frames: frames.into() }
    }

    struct FramesBody {
        frames: std::collections::VecDeque<Result<http_body::Frame<Bytes>, Infallible>>,
    }

    impl http_body::Body for FramesBody {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.get_mut().frames.pop_front())
        }
    }

    fn names(events: &[(String, f64)]) -> Vec<&str> {
        events.iter().map(|(key, _)| key.as_str()).collect()
    }

    #[test]
    fn the_status_is_read_from_the_trailers_of_a_normal_answer() {
        let capture = Capture::default();
        metrics::with_local_recorder(&capture, || {
            let mut service = layer().layer(route(|| Response::new(message_then_trailers(Code::NotFound))));
            let response = now(service.call(request("/rally.profile.v1.Profile/GetProfile"))).expect("answer");
            assert!(capture.taken().is_empty(), "nothing is counted before the status is known");
            drain(response.into_body());
            let events = capture.taken();
            let key = "{service=rally.profile.v1.Profile,method=GetProfile,code=NotFound}";
            assert_eq!(
                names(&events),
                [format!("{REQUESTS_TOTAL}{key}"), format!("{REQUEST_SECONDS}{key}")],
                "{events:?}"
            );
            assert_eq!(events[0].1, 1.0);
        });
    }

    #[test]
    fn a_status_in_the_headers_is_counted_at_once_and_unknown_paths_share_one_label() {
        let capture = Capture::default();
        metrics::with_local_recorder(&capture, || {
            let mut service = layer().layer(route(|| tonic::Status::unauthenticated("no token").into_http::<Body>()));
            let response = now(service.call(request("/rally.chat.v1.Chat/Send"))).expect("answer");
            let events = capture.taken();
            assert_eq!(
                names(&events)[0],
                format!("{REQUESTS_TOTAL}{{service=rally.chat.v1.Chat,method=Send,code=Unauthenticated}}"),
            );
            // Reading the (empty) body after does not count it again.
            drain(response.into_body());
            assert!(capture.taken().is_empty());

            for path in ["/rally.chat.v1.Chat/Sned", "/no.Such/Thing", "/nonsense", "/"] {
                let response = now(service.call(request(path))).expect("answer");
                drop(response);
                let events = capture.taken();
                assert_eq!(
                    names(&events)[0],
                    format!("{REQUESTS_TOTAL}{{service=unknown,method=unknown,code=Unauthenticated}}"),
                    "{path:?}"
                );
            }
        });
    }

    #[test]
    fn a_stream_dropped_before_its_status_is_canceled_or_past_its_deadline() {
        let capture = Capture::default();
        metrics::with_local_recorder(&capture, || {
            let mut service = layer().layer(route(|| Response::new(message_then_trailers(Code::Ok))));
            let response = now(service.call(request("/rally.chat.v1.Chat/Subscribe"))).expect("answer");
            drop(response);
            let events = capture.taken();
            assert_eq!(
                names(&events)[0],
                format!("{REQUESTS_TOTAL}{{service=rally.chat.v1.Chat,method=Subscribe,code=Canceled}}")
            );

            let mut service =
                layer().with_timeout(Duration::ZERO).layer(route(|| Response::new(message_then_trailers(Code::Ok))));
            drop(now(service.call(request("/rally.chat.v1.Chat/Subscribe"))).expect("answer"));
            let events = capture.taken();
            assert!(events[0].0.ends_with("code=DeadlineExceeded}"), "{events:?}");
        });
    }

    #[test]
    fn grpc_timeouts_parse_and_bad_ones_are_ignored() {
        let headers = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", HeaderValue::from_static(value));
            headers
        };
        assert_eq!(grpc_timeout(&headers("250m")), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(&headers("2H")), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout(&headers("3n")), Some(Duration::from_nanos(3)));
        for bad in ["", "m", "12", "1x", "-1S", "1234567890S"] {
            assert_eq!(grpc_timeout(&headers(bad)), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }
}
