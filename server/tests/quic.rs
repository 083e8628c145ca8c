//! QUIC-specific checks of the shard: an old client is told its version is
//! wrong, and a frame pipelined with the hello is read at once. The
//! behaviours every transport shares are smoke-tested per transport in
//! `conformance.rs` and tested in virtual time in `stepper.rs`.

#![expect(clippy::unwrap_used, reason = "tests unwrap what must be there")]

mod common;

use rally_client::quic::endpoint;
use rally_client::tls::{ServerTrust, client_config};
use std::time::Duration;

use rally_protocol::codec::{
    FrameReader, Hello, decode_payload, encode_frame, encode_hello_frame, encode_hello_frame_with_version,
};
use rally_protocol::control::{ClientHello, ClientMessage, RefuseReason, ServerHello, ServerMessage};
use rally_server::ServeConfig;
use rally_server::ShardHandle;
use rally_server::start;
use rally_sim::pong::PongWorld;
use tokio::sync::mpsc;

const SHARD: &str = "shard-test";

struct TestShard {
    handle: ShardHandle,
    client: quinn::Endpoint,
    _dir: tempfile::TempDir,
}

async fn start_shard() -> TestShard {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::local(dir.path().to_owned(), vec![(1, common::issuer().verifying_key())]);
    config.shard.name = SHARD.into();
    let (results_tx, _results) = mpsc::unbounded_channel();
    let handle = start::<PongWorld>(config, results_tx).await.unwrap();
    let client = endpoint(client_config(&ServerTrust::Fingerprint(handle.fingerprint.clone())).unwrap()).unwrap();
    TestShard { handle, client, _dir: dir }
}

#[tokio::test]
async fn an_old_client_is_told_its_version_is_wrong() {
    let shard = start_shard().await;
    let connection = shard.client.connect(shard.handle.local_addr, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let mut hello = Vec::new();
    encode_hello_frame_with_version(0, &ClientHello::Connect { token: vec![] }, &mut hello);
    send.write_all(&hello).await.unwrap();
    let mut reader = FrameReader::new();
    let frame = loop {
        if let Some(frame) = reader.poll_frame().unwrap() {
            break frame;
        }
        let chunk = recv.read_chunk(4096, true).await.unwrap().expect("an answer before the stream ends");
        reader.push(&chunk.bytes);
    };
    let hello = Hello::parse(&frame).unwrap();
    assert_eq!(hello.version, rally_protocol::PROTOCOL_VERSION);
    match hello.decode::<ServerHello>().unwrap() {
        ServerHello::Refused(refusal) => {
            assert_eq!(refusal.reason, RefuseReason::VersionMismatch);
            assert!(refusal.message.contains("version 0"), "{}", refusal.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_frame_pipelined_with_the_hello_is_answered_without_more_bytes() {
    let shard = start_shard().await;
    let connection = shard.client.connect(shard.handle.local_addr, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    // The hello and a ping in one write: the shard must not wait for more bytes
    // before it reads the ping it already holds.
    let token = common::token(SHARD, 1, 0, 10, rally_transport::unix_ms());
    let mut bytes = Vec::new();
    encode_hello_frame(&ClientHello::Connect { token }, &mut bytes);
    encode_frame(&ClientMessage::Ping { client_time_us: 4242 }, &mut bytes);
    send.write_all(&bytes).await.unwrap();
    let mut reader = FrameReader::new();
    let mut frames = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            while let Some(frame) = reader.poll_frame().unwrap() {
                frames.push(frame);
            }
            if frames.len() >= 2 {
                return;
            }
            let chunk = recv.read_chunk(4096, true).await.unwrap().expect("the stream stays open");
            reader.push(&chunk.bytes);
        }
    })
    .await;
    assert!(answered.is_ok(), "only {} frame(s) came back: the ping waited for more bytes", frames.len());
    let welcome = Hello::parse(&frames[0]).unwrap().decode::<ServerHello>().unwrap();
    assert!(matches!(welcome, ServerHello::Welcome(_)), "{welcome:?}");
    let pong = (1..frames.len())
        .map(|idx| decode_payload::<ServerMessage>(&frames[idx]).unwrap())
        .find(|message| matches!(message, ServerMessage::Pong { .. }));
    assert!(
        matches!(pong, Some(ServerMessage::Pong { client_time_us: 4242, .. })),
        "the pipelined ping is answered: {pong:?}"
    );
}
