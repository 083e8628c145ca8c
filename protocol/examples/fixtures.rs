//! Writes `protocol/fixtures/*.json`, the golden bytes shared with the TypeScript
//! client (web/test). Every byte comes from this crate's encoders; the cases are
//! in `tests/support/mod.rs`. `cargo test -p rally-protocol --test fixtures`
//! checks the files against the codec.
//!
//! `cargo run -p rally-protocol --example fixtures`

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::{Value, json};
use support::*;

fn write(name: &str, value: Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name);
    let text = serde_json::to_string_pretty(&value).expect("json") + "\n";
    std::fs::write(&path, text).expect("write fixture");
    println!("wrote {}", path.display());
}

fn main() {
    let control: Vec<Value> = control_cases()
        .into_iter()
        .map(|c| json!({"name": c.name, "type": c.ty, "hello": c.hello, "value": c.value, "hex": hex(&c.frame)}))
        .collect();
    write("control.json", json!({"protocol_version": rally_protocol::PROTOCOL_VERSION, "cases": control}));

    let datagrams: Vec<Value> = datagram_cases()
        .into_iter()
        .map(|(name, bytes)| {
            let decoded = rally_protocol::datagram::Datagram::decode(&bytes).expect("own datagram decodes");
            json!({"name": name, "value": datagram_json(&decoded), "hex": hex(&bytes)})
        })
        .collect();
    write("datagram.json", json!({"cases": datagrams}));

    let schemas: serde_json::Map<String, Value> =
        schemas().into_iter().map(|(name, schema)| (name.to_string(), schema_json(&schema))).collect();
    let snapshots: Vec<Value> = snapshot_cases()
        .iter()
        .map(|case| {
            let schema = schema_named(case.schema);
            json!({
                "name": case.name,
                "schema": case.schema,
                "baseline": case.baseline,
                "snapshot": case.snapshot,
                "hex": hex(&snapshot_body(&schema, case)),
            })
        })
        .collect();
    write("snapshot.json", json!({"schemas": schemas, "cases": snapshots}));

    let leb: Vec<Value> = leb128_values().into_iter().map(|v| json!({"value": v, "hex": hex(&leb128(v))})).collect();
    let bin: Vec<Value> =
        bincode_values().into_iter().map(|v| json!({"value": v, "hex": hex(&bincode_u64(v))})).collect();
    write("varint.json", json!({"leb128": leb, "bincode": bin}));
}
