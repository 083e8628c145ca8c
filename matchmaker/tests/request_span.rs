//! Every gRPC request runs in a `grpc` span with its method, the peer's
//! address and the authenticated player's id.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::{matchmaker, within};
use rally_lobby::{AccessSigningKey, AccessSigningKeys, AccessTokenIssuer};
use rally_matchmaker::Backends;
use rally_matchmaker::config::MatchmakerConfig;
use rally_matchmaker::engine::unix_ms;
use rally_matchmaker::proto::matchmaker::{EnqueueRequest, WatchTicketRequest, matchmaker_client::MatchmakerClient};
use serde_json::Value;
use tonic::transport::Channel;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;

/// The JSON lines the subscriber writes, and a signal for each write.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>, Arc<tokio::sync::Notify>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
        self.1.notify_waiters();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
        String::from_utf8(bytes).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    /// The fields of the `n` closed `grpc` spans of `method`, once they have closed.
    async fn closed_spans(&self, method: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Registered before looking, so a write in between is not missed.
            let written = self.1.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            let spans: Vec<Value> = self
                .lines()
                .into_iter()
                .filter(|line| {
                    line["fields"]["message"] == "close"
                        && line["span"]["name"] == "grpc"
                        && line["span"]["method"] == method
                })
                .map(|line| line["span"].clone())
                .collect();
            if spans.len() >= n {
                return spans;
            }
            assert!(tokio::time::Instant::now() < deadline, "{n} spans of {method} never closed: {:#?}", self.lines());
            let _ = tokio::time::timeout_at(deadline, written).await;
        }
    }
}

fn assert_loopback_peer(span: &Value) {
    let peer = span["peer"].as_str().unwrap_or_else(|| panic!("no peer in {span}"));
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
}

fn authed<T>(message: T, access_token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {access_token}").parse().unwrap());
    request
}

// A current-thread runtime, so the server's tasks run on this thread, under
// the subscriber set here.
#[tokio::test]
async fn each_request_has_a_span_with_method_peer_and_player() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(captured.clone())
        .with_span_events(FmtSpan::CLOSE)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let secret = AccessSigningKeys::from(AccessSigningKey::from_seed([3; 32]));
    let token = AccessTokenIssuer::new(secret.clone()).issue(7, "p", (unix_ms() / 1000) as i64).unwrap().0;
    let mm = matchmaker(MatchmakerConfig::default(), Backends::in_memory(Duration::from_secs(60)), &[]);
    let server = rally_matchmaker::serve(SocketAddr::from(([127, 0, 0, 1], 0)), mm, secret.verifier()).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", server.local_addr())).unwrap().connect().await.unwrap();
    let mut client = MatchmakerClient::new(channel);

    let enqueue = EnqueueRequest { mode: "pong".into(), ..EnqueueRequest::default() };
    let ticket = client.enqueue(authed(enqueue, &token)).await.unwrap().into_inner();
    let watch = WatchTicketRequest { ticket_id: ticket.ticket_id };
    let mut updates = client.watch_ticket(authed(watch, &token)).await.unwrap().into_inner();
    within(updates.message()).await.unwrap().expect("the ticket's first state");
    drop(updates);
    client.enqueue(EnqueueRequest::default()).await.expect_err("no token");

    let enqueues = captured.closed_spans("/rally.matchmaker.v1.Matchmaker/Enqueue", 2).await;
    enqueues.iter().for_each(assert_loopback_peer);
    let players: Vec<&Value> = enqueues.iter().map(|span| &span["player_id"]).collect();
    assert_eq!(players, [&Value::from(7), &Value::Null], "only the authenticated Enqueue names its player");
    let watches = captured.closed_spans("/rally.matchmaker.v1.Matchmaker/WatchTicket", 1).await;
    assert_loopback_peer(&watches[0]);
    assert_eq!(watches[0]["player_id"], 7, "{}", watches[0]);

    drop(client);
    server.shutdown().await.unwrap();
}
