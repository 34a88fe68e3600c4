//! JSON renderings of the message kinds that have no JSON form in core.

use iiot_core::types::{
    Command, CommandAck, ConfigDesired, ConfigReported, DataLoss, Expect, Operation, OtaStatus,
    SignedManifest, Value,
};
use iiot_core::version::Message;
use serde_json::{Map, json};

/// A value as JSON: numbers, booleans and text as themselves; NaN and infinities as
/// text; bytes as lower-case hex.
pub(super) fn value(v: &Value) -> serde_json::Value {
    let float = |f: f64| {
        serde_json::Number::from_f64(f)
            .map_or_else(|| json!(f.to_string()), serde_json::Value::Number)
    };
    match v {
        Value::Double(f) => float(*f),
        Value::Float(f) => float(f64::from(*f)),
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        Value::Bool(b) => json!(b),
        Value::String(s) => json!(s),
        Value::Bytes(b) => json!(hex(b)),
        // `Value` is non-exhaustive; a newer variant prints by its text form.
        other => json!(other.to_string()),
    }
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn settings(m: &std::collections::BTreeMap<String, Value>) -> serde_json::Value {
    serde_json::Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect::<Map<_, _>>(),
    )
}

fn data_loss(d: &DataLoss) -> serde_json::Value {
    json!({
        "kind": "data_loss",
        "message_id": d.message_id,
        "device_id": d.device_id,
        "first_seq": d.first_seq(),
        "last_seq": d.last_seq(),
        "count": d.count(),
        "reason": d.reason,
        "detected_at": d.detected_at,
        "detail": d.detail,
        "bytes": d.bytes,
    })
}

fn command(c: &Command) -> serde_json::Value {
    let interlocks: Vec<_> = c
        .constraints
        .interlocks
        .iter()
        .map(|i| match &i.expect {
            Expect::Equals(v) => json!({ "tag": i.tag, "equals": value(v) }),
            Expect::Range { min, max } => json!({ "tag": i.tag, "min": min, "max": max }),
        })
        .collect();
    let (op, v) = match &c.op {
        Operation::Set(v) => ("set", Some(value(v))),
        Operation::Add(v) => ("add", Some(value(v))),
        Operation::Invoke => ("invoke", None),
    };
    json!({
        "kind": "command",
        "id": c.id,
        "device_id": c.device_id,
        "action": c.action,
        "target": c.target,
        "op": op,
        "value": v,
        "issued_at": c.issued_at,
        "expires_at": c.expires_at,
        "issuer": c.issuer,
        "reason": c.reason,
        "constraints": {
            "min": c.constraints.min,
            "max": c.constraints.max,
            "max_rate_per_s": c.constraints.max_rate_per_s,
            "interlocks": interlocks,
        },
    })
}

fn command_ack(a: &CommandAck) -> serde_json::Value {
    json!({
        "kind": "command_ack",
        "command_id": a.command_id,
        "device_id": a.device_id,
        "state": a.state,
        "time": a.time,
        "detail": a.detail,
        "result": a.result.as_ref().map(value),
        "duplicate": a.duplicate,
        "reason": a.reason.map(|r| r.to_string()),
        "received_at": a.received_at,
    })
}

fn config_desired(c: &ConfigDesired) -> serde_json::Value {
    json!({
        "kind": "config_desired",
        "device_id": c.device_id,
        "revision": c.revision,
        "settings": settings(&c.settings),
        "issued_at": c.issued_at,
    })
}

fn config_reported(c: &ConfigReported) -> serde_json::Value {
    json!({
        "kind": "config_reported",
        "device_id": c.device_id,
        "applied_revision": c.applied_revision,
        "settings": settings(&c.settings),
        "time": c.time,
        "errors": c.errors,
    })
}

fn ota_status(s: &OtaStatus) -> serde_json::Value {
    json!({
        "kind": "ota_status",
        "device_id": s.device_id,
        "firmware_id": s.firmware_id,
        "version": s.version,
        "state": s.state,
        "time": s.time,
        "detail": s.detail,
        "bytes_done": s.bytes_done,
    })
}

fn manifest(m: &SignedManifest) -> serde_json::Value {
    let signatures: Vec<_> = m
        .signatures
        .iter()
        .map(|s| json!({ "key_id": s.key_id, "algorithm": s.algorithm, "signature_hex": hex(&s.signature) }))
        .collect();
    json!({
        "kind": "ota_manifest",
        "verified": false,
        "body_hex": hex(&m.body),
        "signatures": signatures,
    })
}

/// The rendering of `message`; telemetry and status are handled by the caller with
/// core's JSON form, but render here too (by their kind only) so nothing panics.
pub(super) fn render(message: &Message) -> serde_json::Value {
    match message {
        Message::DataLoss(d) => data_loss(d),
        Message::Command(c) => command(c),
        Message::CommandAck(a) => command_ack(a),
        Message::ConfigDesired(c) => config_desired(c),
        Message::ConfigReported(c) => config_reported(c),
        Message::OtaStatus(s) => ota_status(s),
        Message::OtaManifest(m) => manifest(m),
        other => json!({ "kind": "unrendered", "device_id": other.device_id() }),
    }
}
