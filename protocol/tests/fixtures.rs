//! Every case in `protocol/fixtures/*.json` (shared with the TypeScript client's
//! tests in web/test) decodes with this crate to the fixture's value and
//! re-encodes to the fixture's bytes; and the files hold exactly what the
//! generator (`cargo run -p rally-protocol --example fixtures`) writes.

mod support;

use rally_protocol::codec::{FrameReader, Hello, decode_payload};
use rally_protocol::control::{ClientHello, ClientMessage, ServerHello, ServerMessage};
use rally_protocol::datagram::Datagram;
use rally_protocol::{PROTOCOL_VERSION, Snapshot};
use serde_json::Value;
use support::*;

fn load(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

fn decode_value(ty: &str, body: &[u8]) -> Value {
    fn go<T: serde::de::DeserializeOwned + serde::Serialize>(body: &[u8]) -> Value {
        serde_json::to_value(decode_payload::<T>(body).expect("fixture decodes")).expect("json")
    }
    match ty {
        "ClientHello" => go::<ClientHello>(body),
        "ServerHello" => go::<ServerHello>(body),
        "ClientMessage" => go::<ClientMessage>(body),
        "ServerMessage" => go::<ServerMessage>(body),
        other => panic!("unknown type {other}"),
    }
}

#[test]
fn control_fixtures_match_the_codec() {
    let file = load(include_str!("../fixtures/control.json"));
    let cases = file["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), control_cases().len());
    for (case, expected) in cases.iter().zip(control_cases()) {
        let name = case["name"].as_str().expect("name");
        let frame = unhex(case["hex"].as_str().expect("hex"));
        let mut reader = FrameReader::new();
        reader.push(&frame);
        let payload = reader.poll_frame().expect("frame").expect("a whole frame");
        assert_eq!(reader.buffered(), 0, "{name}: one frame");
        let body = if case["hello"].as_bool().expect("hello") {
            let hello = Hello::parse(&payload).expect("hello");
            assert_eq!(hello.version, PROTOCOL_VERSION, "{name}");
            hello.body.to_vec()
        } else {
            payload
        };
        let ty = case["type"].as_str().expect("type");
        assert_eq!(decode_value(ty, &body), case["value"], "{name}: decoded value");
        assert_eq!(name, expected.name);
        assert_eq!(frame, expected.frame, "{name}: re-encoded bytes");
        assert_eq!(case["value"], expected.value, "{name}");
    }
}

#[test]
fn datagram_fixtures_match_the_codec() {
    let file = load(include_str!("../fixtures/datagram.json"));
    for case in file["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let bytes = unhex(case["hex"].as_str().expect("hex"));
        let decoded = Datagram::decode(&bytes).expect("fixture decodes");
        assert_eq!(datagram_json(&decoded), case["value"], "{name}");
        assert_eq!(encode_datagram(&decoded), bytes, "{name}: re-encoded");
    }
}

#[test]
fn snapshot_fixtures_match_the_codec() {
    let file = load(include_str!("../fixtures/snapshot.json"));
    for (name, schema) in schemas() {
        assert_eq!(file["schemas"][name], schema_json(&schema), "schema {name}");
    }
    for case in file["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let schema = schema_named(case["schema"].as_str().expect("schema"));
        let body = unhex(case["hex"].as_str().expect("hex"));
        let expected: Snapshot = serde_json::from_value(case["snapshot"].clone()).expect("snapshot");
        let decoded = match case["baseline"].clone() {
            Value::Null => {
                let decoded = schema.decode_full(expected.tick, &body).expect("full body decodes");
                let mut out = Vec::new();
                schema.encode_full(&decoded, &mut out);
                assert_eq!(out, body, "{name}: re-encoded");
                decoded
            }
            baseline => {
                let baseline: Snapshot = serde_json::from_value(baseline).expect("baseline");
                let decoded = schema.decode_delta(&baseline, expected.tick, &body).expect("delta decodes");
                let mut out = Vec::new();
                schema.encode_delta(&baseline, &decoded, &mut out);
                assert_eq!(out, body, "{name}: re-encoded");
                decoded
            }
        };
        assert_eq!(decoded, expected, "{name}");
    }
}

#[test]
fn varint_fixtures_match_the_codec() {
    let file = load(include_str!("../fixtures/varint.json"));
    for case in file["leb128"].as_array().expect("leb128") {
        let value = u32::try_from(case["value"].as_u64().expect("value")).expect("u32");
        assert_eq!(hex(&leb128(value)), case["hex"].as_str().expect("hex"), "leb128 {value}");
    }
    for case in file["bincode"].as_array().expect("bincode") {
        let value = case["value"].as_u64().expect("value");
        let bytes = unhex(case["hex"].as_str().expect("hex"));
        assert_eq!(decode_payload::<u64>(&bytes).expect("decodes"), value);
        assert_eq!(bincode_u64(value), bytes, "bincode {value}");
    }
}
