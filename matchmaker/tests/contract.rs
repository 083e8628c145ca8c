//! The matchmaker answers the gRPC contract as the lobby does (the lobby's
//! `ContractLayer`): size and metadata limits as RESOURCE_EXHAUSTED naming
//! the limit, unknown methods named, and reflection in v1 and v1alpha.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::matchmaker;
use rally_lobby::{AccessSigningKey, AccessSigningKeys, AccessTokenIssuer};
use rally_matchmaker::config::MatchmakerConfig;
use rally_matchmaker::engine::unix_ms;
use rally_matchmaker::proto::matchmaker::{EnqueueRequest, matchmaker_client::MatchmakerClient};
use rally_matchmaker::{Backends, MatchmakerServer};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_reflection::pb::v1alpha;

fn keys() -> AccessSigningKeys {
    AccessSigningKeys::from(AccessSigningKey::from_seed([3; 32]))
}

fn authed<T>(message: T) -> tonic::Request<T> {
    let now = (unix_ms() / 1000) as i64;
    let token = AccessTokenIssuer::new(keys()).issue(1, "p", now).expect("token").0;
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request
}

async fn serve() -> (MatchmakerServer, Channel) {
    let mm = matchmaker(MatchmakerConfig::default(), Backends::in_memory(Duration::from_secs(60)), &[]);
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = rally_matchmaker::serve(listen, mm, keys().verifier()).await.expect("serves");
    let uri = format!("http://{}", server.local_addr());
    let channel = Channel::from_shared(uri).expect("uri").connect().await.expect("connects");
    (server, channel)
}

fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, needle: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(status.message().contains(needle), "{:?} lacks {needle:?}", status.message());
}

#[tokio::test]
async fn limits_unknown_methods_and_reflection_match_the_lobby() {
    let (server, channel) = serve().await;
    let mut client = MatchmakerClient::new(channel.clone());

    let huge =
        EnqueueRequest { mode: "pong".into(), party_access_tokens: vec!["x".repeat(70_000)], ..Default::default() };
    assert_status(client.enqueue(authed(huge)).await, Code::ResourceExhausted, "the limit is 65536 bytes");
    let mut padded = authed(EnqueueRequest { mode: "pong".into(), ..Default::default() });
    padded.metadata_mut().insert("x-padding", "p".repeat(64 * 1024).parse().expect("ascii"));
    assert_status(client.enqueue(padded).await, Code::ResourceExhausted, "request metadata is");

    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/rally.matchmaker.v1.Matchmaker/Foo");
    let answer = grpc.unary(tonic::Request::new(()), path, tonic_prost::ProstCodec::<(), ()>::default()).await;
    assert_status(answer, Code::Unimplemented, "unknown method rally.matchmaker.v1.Matchmaker/Foo; ");

    let mut reflection = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut answers =
        reflection.server_reflection_info(tokio_stream::iter([request])).await.expect("v1alpha is served").into_inner();
    let answer = answers.next().await.expect("an answer").expect("ok");
    let listed = format!("{:?}", answer.message_response);
    assert!(listed.contains("rally.matchmaker.v1.Matchmaker"), "{listed}");
    server.shutdown().await.expect("shutdown");
}
