//! Shared by the fixture generator (`examples/fixtures.rs`) and the fixture test
//! (`tests/fixtures.rs`): the fixture cases, and how a decoded value becomes the
//! language-neutral JSON the TypeScript client's tests compare with.

#![allow(dead_code)]

use rally_protocol::codec::{encode_frame, encode_hello_frame};
use rally_protocol::control::{
    ClientHello, ClientMessage, DisconnectReason, EndReason, MatchEnd, MatchPhase, Refusal, RefuseReason, ServerHello,
    ServerMessage, Welcome,
};
use rally_protocol::datagram::{Datagram, InputDatagram, SnapshotHeader};
use rally_protocol::{FieldSpec, MatchId, PlayerId, Schema, Snapshot};
use serde_json::{Value, json};

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex {text}");
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit")).collect()
}

/// Pong's two-seat schema, PROTOCOL.md section 10 (the same as `sim/src/pong/view.rs`).
pub(crate) fn pong_schema() -> Schema {
    Schema::new(vec![
        FieldSpec::unsigned("phase", 2),
        FieldSpec::unsigned("countdown", 8),
        FieldSpec::signed("ball_vx", 10),
        FieldSpec::signed("ball_vy", 10),
        FieldSpec::unsigned("ball_x", 13).predicted_by(2, 0),
        FieldSpec::unsigned("ball_y", 13).predicted_by(3, 0),
        FieldSpec::unsigned("paddle_y_0", 13).predicted_by(7, 0),
        FieldSpec::signed("paddle_vy_0", 8),
        FieldSpec::unsigned("paddle_y_1", 13).predicted_by(9, 0),
        FieldSpec::signed("paddle_vy_1", 8),
        FieldSpec::unsigned("score_0", 7),
        FieldSpec::unsigned("score_1", 7),
        FieldSpec::unsigned("seat", 3),
    ])
    .expect("pong schema")
}

/// The Pong-like view of PROTOCOL.md 8.5.
pub(crate) fn pong_like_schema() -> Schema {
    Schema::new(vec![
        FieldSpec::unsigned("phase", 3),
        FieldSpec::signed("ball_vx", 12),
        FieldSpec::signed("ball_vy", 12),
        FieldSpec::unsigned("ball_x", 13).predicted_by(1, 0),
        FieldSpec::unsigned("ball_y", 13).predicted_by(2, 0),
    ])
    .expect("pong-like schema")
}

pub(crate) fn schemas() -> Vec<(&'static str, Schema)> {
    vec![
        ("pong", pong_schema()),
        ("pong_like", pong_like_schema()),
        ("x_i16", Schema::new(vec![FieldSpec::signed("x", 16)]).expect("x_i16")),
        ("x_u4", Schema::new(vec![FieldSpec::unsigned("x", 4)]).expect("x_u4")),
        (
            "shifted",
            Schema::new(vec![FieldSpec::signed("vx", 8), FieldSpec::signed("x", 12).predicted_by(0, 2)])
                .expect("shifted"),
        ),
    ]
}

pub(crate) fn schema_named(name: &str) -> Schema {
    schemas().into_iter().find(|(n, _)| *n == name).map(|(_, s)| s).expect("known schema")
}

fn welcome(schema: Schema, seat: u8) -> Welcome {
    Welcome {
        game: "pong".into(),
        match_id: MatchId(7),
        player_id: PlayerId(42),
        seat,
        n_seats: 2,
        points_to_win: 5,
        tick_rate_hz: 60,
        snapshot_rate_hz: 30,
        server_tick: 1234,
        schema,
        resume_secret: [3; 32],
        resume_grace_ms: 10_000,
    }
}

/// A control case: (name, message type, whether it is a hello frame, the frame bytes, the value as JSON).
pub(crate) struct ControlCase {
    pub(crate) name: &'static str,
    pub(crate) ty: &'static str,
    pub(crate) hello: bool,
    pub(crate) frame: Vec<u8>,
    pub(crate) value: Value,
}

fn case<T: serde::Serialize>(name: &'static str, ty: &'static str, hello: bool, message: &T) -> ControlCase {
    let mut frame = Vec::new();
    if hello {
        encode_hello_frame(message, &mut frame)
    } else {
        encode_frame(message, &mut frame)
    }
    ControlCase { name, ty, hello, frame, value: serde_json::to_value(message).expect("json") }
}

pub(crate) fn control_cases() -> Vec<ControlCase> {
    let big_welcome = Welcome {
        match_id: MatchId(1 << 40),
        player_id: PlayerId(70_000),
        tick_rate_hz: 300,
        ..welcome(pong_like_schema(), 0)
    };
    vec![
        case("connect", "ClientHello", true, &ClientHello::Connect { token: vec![0xab, 0xcd] }),
        case("resume", "ClientHello", true, &ClientHello::Resume { match_id: MatchId(300), seat: 1, secret: [7; 32] }),
        case(
            "welcome_one_field",
            "ServerHello",
            true,
            &ServerHello::Welcome(Box::new(welcome(Schema::new(vec![FieldSpec::unsigned("x", 13)]).expect("x"), 1))),
        ),
        case("welcome_pong", "ServerHello", true, &ServerHello::Welcome(Box::new(welcome(pong_schema(), 0)))),
        case("welcome_spectator", "ServerHello", true, &ServerHello::Welcome(Box::new(welcome(pong_schema(), 255)))),
        case("welcome_big_numbers", "ServerHello", true, &ServerHello::Welcome(Box::new(big_welcome))),
        case(
            "refused_token_expired",
            "ServerHello",
            true,
            &ServerHello::Refused(Refusal { reason: RefuseReason::TokenExpired, message: "x".into() }),
        ),
        case(
            "refused_shard_full",
            "ServerHello",
            true,
            &ServerHello::Refused(Refusal {
                reason: RefuseReason::ShardFull,
                message: "the shard is full: ask the matchmaker again".into(),
            }),
        ),
        case("ping", "ClientMessage", false, &ClientMessage::Ping { client_time_us: 1_000_000 }),
        case("leave", "ClientMessage", false, &ClientMessage::Leave),
        case("pong", "ServerMessage", false, &ServerMessage::Pong { client_time_us: 1, server_tick: 2 }),
        case("phase_playing", "ServerMessage", false, &ServerMessage::Phase { tick: 3, phase: MatchPhase::Playing }),
        case(
            "phase_countdown",
            "ServerMessage",
            false,
            &ServerMessage::Phase { tick: 70_000, phase: MatchPhase::Countdown },
        ),
        case(
            "point_scored",
            "ServerMessage",
            false,
            &ServerMessage::PointScored { tick: 3, side: 1, scores: vec![0, 1] },
        ),
        case("seat_presence", "ServerMessage", false, &ServerMessage::SeatPresence { seat: 1, connected: false }),
        case(
            "match_ended_score",
            "ServerMessage",
            false,
            &ServerMessage::MatchEnded(MatchEnd {
                tick: 9,
                scores: vec![5, 2],
                winner: Some(0),
                reason: EndReason::Score,
                forfeited: vec![],
            }),
        ),
        case(
            "match_ended_shutdown",
            "ServerMessage",
            false,
            &ServerMessage::MatchEnded(MatchEnd {
                tick: 70_000,
                scores: vec![3, 1],
                winner: None,
                reason: EndReason::ShardShutdown,
                forfeited: vec![1],
            }),
        ),
        case(
            "match_ended_time_limit",
            "ServerMessage",
            false,
            &ServerMessage::MatchEnded(MatchEnd {
                tick: 9,
                scores: vec![1, 1],
                winner: None,
                reason: EndReason::TimeLimit,
                forfeited: vec![],
            }),
        ),
        case(
            "disconnect_idle",
            "ServerMessage",
            false,
            &ServerMessage::Disconnect { reason: DisconnectReason::Idle, message: String::new() },
        ),
        case(
            "disconnect_replaced",
            "ServerMessage",
            false,
            &ServerMessage::Disconnect { reason: DisconnectReason::Replaced, message: "replaced".into() },
        ),
    ]
}

pub(crate) fn datagram_json(datagram: &Datagram<'_>) -> Value {
    match datagram {
        Datagram::Input(d) => json!({"kind": "input", "newest_tick": d.newest_tick, "ack": d.ack, "inputs": d.inputs}),
        Datagram::Snapshot(h, body) => json!({
            "kind": "snapshot", "tick": h.tick, "baseline": h.baseline, "input_lead": h.input_lead, "body": hex(body)
        }),
    }
}

pub(crate) fn encode_datagram(datagram: &Datagram<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match datagram {
        Datagram::Input(d) => d.encode(&mut out),
        Datagram::Snapshot(h, body) => {
            h.encode(&mut out);
            out.extend_from_slice(body);
        }
    }
    out
}

pub(crate) fn datagram_cases() -> Vec<(&'static str, Vec<u8>)> {
    let input = |newest_tick, ack, inputs: &[u8]| {
        let mut out = Vec::new();
        InputDatagram { newest_tick, ack, inputs: inputs.to_vec() }.encode(&mut out);
        out
    };
    let snapshot = |tick, baseline, input_lead, body: &[u8]| {
        let mut out = Vec::new();
        SnapshotHeader { tick, baseline, input_lead }.encode(&mut out);
        out.extend_from_slice(body);
        out
    };
    vec![
        ("input_with_ack", input(300, Some(298), &[1, 1, 0])),
        ("input_without_ack", input(5, None, &[2])),
        ("input_ack_ahead", input(1000, Some(1003), &[2, 2, 2, 2, 0, 0, 0, 1])),
        ("input_32_inputs", input(u32::MAX, Some(u32::MAX - 40), &[1; 32])),
        ("input_tick_0_ack_0", input(0, Some(0), &[0])),
        ("snapshot_delta_header", snapshot(1000, Some(996), -3, &[0xaa, 0xbb])),
        ("snapshot_full_header", snapshot(10, None, 0, &[0xf2, 0x80, 0xfc, 0x47, 0x1f, 0xd0, 0x07])),
        ("snapshot_lead_positive_big", snapshot(70_000, Some(69_745), 100_000, &[])),
    ]
}

/// A snapshot body case: schema name, baseline (for a delta), the snapshot.
pub(crate) struct SnapshotCase {
    pub(crate) name: &'static str,
    pub(crate) schema: &'static str,
    pub(crate) baseline: Option<Snapshot>,
    pub(crate) snapshot: Snapshot,
}

pub(crate) fn snapshot_cases() -> Vec<SnapshotCase> {
    let snap = |tick, values: &[i32]| Snapshot { tick, values: values.to_vec() };
    let pong_a = snap(100, &[2, 0, 64, -32, 4096, 3072, 3072, 0, 3000, -48, 1, 2, 0]);
    vec![
        SnapshotCase {
            name: "pong_like_full",
            schema: "pong_like",
            baseline: None,
            snapshot: snap(10, &[2, 30, -7, 1000, 2000]),
        },
        SnapshotCase {
            name: "pong_like_straight_flight",
            schema: "pong_like",
            baseline: Some(snap(10, &[2, 30, -7, 1000, 2000])),
            snapshot: snap(12, &[2, 30, -7, 1060, 1986]),
        },
        SnapshotCase {
            name: "pong_like_bounce",
            schema: "pong_like",
            baseline: Some(snap(10, &[2, 30, -7, 1000, 2000])),
            snapshot: snap(12, &[2, -30, -7, 1061, 1986]),
        },
        SnapshotCase { name: "tier4", schema: "x_i16", baseline: Some(snap(1, &[0])), snapshot: snap(2, &[1]) },
        SnapshotCase { name: "tier8", schema: "x_i16", baseline: Some(snap(1, &[0])), snapshot: snap(2, &[-9]) },
        SnapshotCase { name: "tier12", schema: "x_i16", baseline: Some(snap(1, &[0])), snapshot: snap(2, &[200]) },
        SnapshotCase { name: "escape", schema: "x_i16", baseline: Some(snap(1, &[0])), snapshot: snap(2, &[10000]) },
        SnapshotCase { name: "narrow_escape", schema: "x_u4", baseline: Some(snap(1, &[0])), snapshot: snap(2, &[15]) },
        SnapshotCase {
            name: "shifted_prediction",
            schema: "shifted",
            baseline: Some(snap(5, &[-3, 100])),
            snapshot: snap(8, &[-3, 97]),
        },
        SnapshotCase { name: "pong_full", schema: "pong", baseline: None, snapshot: pong_a.clone() },
        SnapshotCase {
            name: "pong_full_extremes",
            schema: "pong",
            baseline: None,
            snapshot: snap(7, &[3, 255, -512, 511, 8191, 0, 8191, -128, 0, 127, 127, 0, 7]),
        },
        SnapshotCase {
            name: "pong_delta_flight",
            schema: "pong",
            baseline: Some(pong_a.clone()),
            snapshot: snap(102, &[2, 0, 64, -32, 4224, 3008, 3072, 0, 2904, -48, 1, 2, 0]),
        },
        SnapshotCase {
            name: "pong_delta_bounce_and_point",
            schema: "pong",
            baseline: Some(pong_a),
            snapshot: snap(104, &[1, 120, -64, -32, 4096, 3072, 3100, 16, 2808, -48, 2, 2, 0]),
        },
    ]
}

pub(crate) fn leb128_values() -> Vec<u32> {
    vec![0, 1, 127, 128, 300, 1000, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455, 268_435_456, u32::MAX]
}

pub(crate) fn bincode_values() -> Vec<u64> {
    vec![
        0,
        5,
        250,
        251,
        300,
        1234,
        10_000,
        65_535,
        65_536,
        70_000,
        u64::from(u32::MAX),
        1 << 32,
        1 << 40,
        (1 << 53) - 1,
    ]
}

/// LEB128 bytes of `value`, from the datagram encoder (the varint module is private).
pub(crate) fn leb128(value: u32) -> Vec<u8> {
    let mut out = Vec::new();
    SnapshotHeader { tick: value, baseline: None, input_lead: 0 }.encode(&mut out);
    out[1..out.len() - 2].to_vec()
}

/// bincode varint bytes of `value`.
pub(crate) fn bincode_u64(value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&value, &mut out);
    out[4..].to_vec()
}

pub(crate) fn schema_json(schema: &Schema) -> Value {
    serde_json::to_value(schema).expect("schema json")
}

pub(crate) fn snapshot_body(schema: &Schema, case: &SnapshotCase) -> Vec<u8> {
    let mut out = Vec::new();
    match &case.baseline {
        None => schema.encode_full(&case.snapshot, &mut out),
        Some(base) => schema.encode_delta(base, &case.snapshot, &mut out),
    }
    out
}
