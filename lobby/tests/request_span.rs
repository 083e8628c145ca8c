//! Every gRPC request runs in a `grpc` span with its method, the peer's
//! address and, once the access token is checked, the player id; what a
//! handler logs is inside that span.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::{Backend, auth_client, authed, config, register, start};
use rally_lobby::proto::auth as pb;
use serde_json::Value;
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
        String::from_utf8(bytes)
            .expect("utf-8 log")
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON log line"))
            .collect()
    }

    /// The fields of the closed `grpc` span of `method`, once it has closed.
    async fn closed_span(&self, method: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Registered before looking, so a write in between is not missed.
            let written = self.1.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            let found = self.lines().into_iter().find(|line| {
                line["fields"]["message"] == "close"
                    && line["span"]["name"] == "grpc"
                    && line["span"]["method"] == method
            });
            if let Some(line) = found {
                return line["span"].clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "no closed span for {method}: {:#?}", self.lines());
            let _ = tokio::time::timeout_at(deadline, written).await;
        }
    }
}

fn assert_loopback_peer(span: &Value) {
    let peer = span["peer"].as_str().unwrap_or_else(|| panic!("no peer in {span}"));
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
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

    let backend = Backend::sqlite().await;
    let lobby = start(config(&backend)).await;
    let mut auth = auth_client(&lobby).await;
    let registered = register(&mut auth, "alice").await;
    let player_id = registered.account.expect("account").player_id;
    let tokens = registered.tokens.expect("tokens");
    auth.me(authed(pb::MeRequest {}, &tokens.access_token)).await.expect("me");
    let refresh = || pb::RefreshRequest { refresh_token: tokens.refresh_token.clone() };
    auth.refresh(refresh()).await.expect("first refresh");
    auth.refresh(refresh()).await.expect_err("the reuse is refused");

    let register_span = captured.closed_span("/rally.auth.v1.Auth/Register").await;
    assert_loopback_peer(&register_span);
    assert!(register_span.get("player_id").is_none(), "no token, no player: {register_span}");

    let me_span = captured.closed_span("/rally.auth.v1.Auth/Me").await;
    assert_loopback_peer(&me_span);
    assert_eq!(me_span["player_id"], player_id, "{me_span}");

    // The handler's warning about the reused refresh token is inside its request's span.
    captured.closed_span("/rally.auth.v1.Auth/Refresh").await;
    let warning = captured
        .lines()
        .into_iter()
        .find(|line| line["fields"]["message"] == "refresh token reuse; family revoked")
        .expect("the reuse is logged");
    assert_eq!(warning["span"]["method"], "/rally.auth.v1.Auth/Refresh", "{warning}");
    assert_loopback_peer(&warning["span"]);

    drop(auth);
    lobby.shutdown().await.expect("shutdown");
    backend.cleanup().await;
}
