//! Golden vectors for implementers in other languages: `tests/vectors/NAME.bin`
//! is the exact Protobuf encoding, `NAME.json` describes it (message type, notes,
//! hex, and the same message in the JSON form where one exists).
//!
//! The test re-encodes every vector from its definition here and compares bytes,
//! decodes every `.bin` and compares values, and decodes the JSON form to the
//! same value. Regenerate (after a deliberate, compatible change) with
//! `IIOT_UPDATE_VECTORS=1 cargo test -p iiot-core --test golden_vectors`.

use std::path::PathBuf;

use iiot_core::codec::{Limits, json, protobuf};
use iiot_core::quality::Quality;
use iiot_core::types::{
    BatchMetadata, DataLoss, DataLossReason, DeviceId, MessageId, Sample, Sequence, Status,
    TagPath, TelemetryBatch, Timestamp, Value,
};
use serde_json::json;

fn ts(ns: i64) -> Timestamp {
    Timestamp::from_unix_nanos(ns).unwrap()
}
fn tag(s: &str) -> TagPath {
    TagPath::new(s).unwrap()
}
const T0: i64 = 1_764_120_152_000_000_000; // 2025-11-26T01:22:32Z

enum Vector {
    Telemetry(TelemetryBatch),
    Status(Status),
    DataLoss(DataLoss),
}

fn vectors() -> Vec<(&'static str, &'static str, Vector)> {
    let id = MessageId::from_parts(1_764_120_152_000, 0x0123_4567_89AB_CDEF_0123);
    let dev = DeviceId::new("plc-01").unwrap();
    let basic = TelemetryBatch {
        message_id: id,
        device_id: dev.clone(),
        seq: Sequence(42),
        gateway_time: ts(T0),
        samples: vec![
            Sample::good(tag("tank1/level"), 42.5, ts(T0 - 250_000_000)),
            Sample::good(tag("pump1/running"), true, ts(T0)),
            Sample::without_value(
                tag("pump1/flow"),
                Quality::from_status_code(0x800A_0000),
                ts(T0),
            ),
        ],
        metadata: BatchMetadata::default(),
    };
    let all_types = TelemetryBatch {
        message_id: id,
        device_id: dev.clone(),
        seq: Sequence(u64::MAX),
        gateway_time: ts(T0),
        samples: vec![
            Sample::good(tag("f64"), -0.0f64, ts(T0)),
            Sample::good(tag("f64/nan"), f64::NAN, ts(T0)),
            Sample::good(tag("f32"), 0.1f32, ts(T0 + 1)),
            Sample::good(tag("i64"), i64::MIN, ts(T0)),
            Sample::good(tag("u64"), u64::MAX, ts(T0)),
            Sample::good(tag("bool"), false, ts(T0)),
            Sample::good(tag("string"), "Grüße", ts(T0)),
            Sample::good(tag("bytes"), vec![0u8, 1, 254, 255], ts(T0)),
            Sample::new(
                tag("uncertain"),
                Some(Value::Double(7.0)),
                Quality::from_da(68),
                ts(T0),
            )
            .unwrap(),
        ],
        metadata: BatchMetadata {
            firmware_version: Some("2.4.1".into()),
            gateway_id: Some("gw-7".into()),
        },
    };
    let mut birth = Status::birth(dev.clone());
    birth.time = ts(T0);
    birth.firmware_version = Some("2.4.1".into());
    birth.gateway_id = Some("gw-7".into());
    birth.start_time = Some(ts(T0 - 60_000_000_000));
    let mut lwt = Status::offline(dev.clone(), None);
    lwt.time = Timestamp::UNIX_EPOCH;
    let mut loss = DataLoss::new(
        dev,
        Sequence(100),
        Sequence(149),
        50,
        DataLossReason::Overflow,
        ts(T0),
    )
    .unwrap();
    loss.message_id = id;
    loss.detail = Some("outbox full, drop-oldest".into());
    loss.bytes = Some(10_000);
    vec![
        (
            "telemetry_basic",
            "Three samples: a double with a source time 250 ms before the batch time, a bool, and a Bad_Timeout sample without a value.",
            Vector::Telemetry(basic),
        ),
        (
            "telemetry_all_types",
            "Every value type, edge values (-0.0, NaN, i64::MIN, u64::MAX), an Uncertain (DA 68) sample, and metadata.",
            Vector::Telemetry(all_types),
        ),
        (
            "status_birth",
            "Retained birth published after CONNACK.",
            Vector::Status(birth),
        ),
        (
            "status_last_will",
            "Last will registered at connect: online = false, time 0.",
            Vector::Status(lwt),
        ),
        (
            "data_loss_overflow",
            "50 records 100..=149 dropped by the drop-oldest policy.",
            Vector::DataLoss(loss),
        ),
    ]
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

#[test]
fn golden_vectors_match() {
    let update = std::env::var_os("IIOT_UPDATE_VECTORS").is_some();
    let l = Limits::default();
    for (name, notes, v) in vectors() {
        let (message, bin, json_form) = match &v {
            Vector::Telemetry(b) => (
                "iiot.v1.TelemetryBatch",
                protobuf::encode_telemetry(b),
                Some(json::encode_telemetry(b)),
            ),
            Vector::Status(s) => (
                "iiot.v1.Status",
                protobuf::encode_status(s),
                Some(json::encode_status(s)),
            ),
            Vector::DataLoss(d) => ("iiot.v1.DataLoss", protobuf::encode_data_loss(d), None),
        };
        let bin_path = dir().join(format!("{name}.bin"));
        let json_path = dir().join(format!("{name}.json"));
        if update {
            let desc = json!({
                "message": message,
                "notes": notes,
                "hex": hex(&bin),
                "json_form": json_form.as_ref().map(|j| serde_json::from_slice::<serde_json::Value>(j).unwrap()),
            });
            std::fs::write(&bin_path, &bin).unwrap();
            std::fs::write(
                &json_path,
                serde_json::to_string_pretty(&desc).unwrap() + "\n",
            )
            .unwrap();
        }
        let stored =
            std::fs::read(&bin_path).unwrap_or_else(|e| panic!("{}: {e}", bin_path.display()));
        assert_eq!(hex(&stored), hex(&bin), "{name}: encoding changed");
        let desc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
        assert_eq!(
            desc["hex"],
            hex(&stored),
            "{name}: description hex out of date"
        );
        assert_eq!(desc["message"], message);
        match v {
            Vector::Telemetry(b) => {
                assert_eq!(
                    protobuf::decode_telemetry(&stored, &l).unwrap(),
                    b,
                    "{name}"
                );
                let j = serde_json::to_vec(&desc["json_form"]).unwrap();
                assert_eq!(
                    json::decode_telemetry(&j, &l).unwrap(),
                    b,
                    "{name} JSON form"
                );
            }
            Vector::Status(s) => {
                assert_eq!(protobuf::decode_status(&stored, &l).unwrap(), s, "{name}");
                let j = serde_json::to_vec(&desc["json_form"]).unwrap();
                assert_eq!(json::decode_status(&j, &l).unwrap(), s, "{name} JSON form");
            }
            Vector::DataLoss(d) => assert_eq!(
                protobuf::decode_data_loss(&stored, &l).unwrap(),
                d,
                "{name}"
            ),
        }
    }
}

/// Byte-exact check of the smallest interesting batch, written out by hand from
/// the .proto so that the field numbers and wire types are pinned independently
/// of prost.
#[test]
fn hand_encoded_batch() {
    let b = TelemetryBatch {
        message_id: MessageId::from_u128(1),
        device_id: DeviceId::new("d").unwrap(),
        seq: Sequence(1),
        gateway_time: ts(1),
        samples: vec![Sample::good(tag("t"), 1i64, ts(0))],
        metadata: BatchMetadata::default(),
    };
    let mut want = vec![0x08, 0x01]; // schema_version = 1
    want.extend([0x12, 0x10]); // message_id, 16 bytes
    want.extend([0u8; 15]);
    want.push(1);
    want.extend([0x1a, 0x01, b'd']); // device_id
    want.extend([0x20, 0x01]); // seq = 1
    want.extend([0x29, 1, 0, 0, 0, 0, 0, 0, 0]); // gateway_time sfixed64 = 1
    // samples: tag "t", int_value sint64 1 (zigzag 2), source offset -1 (zigzag 1)
    want.extend([0x32, 0x07, 0x0a, 0x01, b't', 0x20, 0x02, 0x50, 0x01]);
    assert_eq!(hex(&protobuf::encode_telemetry(&b)), hex(&want));
}
