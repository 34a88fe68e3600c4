//! Round trips of arbitrary batches through both wire forms, and robustness of
//! every decoder against arbitrary bytes.

mod common;

use bytes::Bytes;
use iiot_core::codec::{Limits, WireFormat, json, protobuf};
use iiot_core::types::{Sample, TagPath, Value};
use iiot_core::version::{Message, MessageKind, Router};
use proptest::prelude::*;

const ALL_KINDS: [MessageKind; 9] = [
    MessageKind::Telemetry,
    MessageKind::Status,
    MessageKind::DataLoss,
    MessageKind::Command,
    MessageKind::CommandAck,
    MessageKind::OtaManifest,
    MessageKind::OtaStatus,
    MessageKind::ConfigDesired,
    MessageKind::ConfigReported,
];

fn big_limits() -> Limits {
    Limits {
        max_text_len: 4096,
        max_tag_len: 4096,
        ..Limits::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn protobuf_round_trip(batch in common::batch(20)) {
        let bytes = protobuf::encode_telemetry(&batch);
        prop_assert_eq!(WireFormat::sniff(&bytes), WireFormat::Protobuf);
        let back = protobuf::decode_telemetry(&bytes, &big_limits()).unwrap();
        prop_assert_eq!(back, batch);
    }

    #[test]
    fn json_round_trip(batch in common::batch(20)) {
        let bytes = json::encode_telemetry(&batch);
        prop_assert_eq!(WireFormat::sniff(&bytes), WireFormat::Json);
        let back = json::decode_telemetry(&bytes, &big_limits());
        prop_assert!(back.is_ok(), "{:?}\n{}", back, String::from_utf8_lossy(&bytes));
        prop_assert_eq!(back.unwrap(), batch);
    }

    #[test]
    fn protobuf_keeps_nan_payload_bits(bits in any::<u64>(), fbits in any::<u32>()) {
        let t = TagPath::new("x").unwrap();
        let ts = iiot_core::types::Timestamp::from_unix_nanos(1).unwrap();
        let mut batch = iiot_core::types::TelemetryBatch::new(
            iiot_core::types::DeviceId::new("d").unwrap(), iiot_core::types::Sequence(1),
            vec![Sample::good(t.clone(), f64::from_bits(bits), ts), Sample::good(t, f32::from_bits(fbits), ts)]);
        batch.gateway_time = ts;
        let back = protobuf::decode_telemetry(&protobuf::encode_telemetry(&batch), &Limits::default()).unwrap();
        prop_assert_eq!(back, batch);
    }

    #[test]
    fn router_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let router = Router::default();
        for kind in ALL_KINDS {
            if let Err(r) = router.decode(kind, Bytes::from(bytes.clone())) {
                prop_assert_eq!(&r.payload[..], &bytes[..]);
            }
        }
    }

    #[test]
    fn router_never_panics_on_mutated_valid_payloads(
        batch in common::batch(5),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        json_form in any::<bool>(),
    ) {
        let mut bytes = if json_form { json::encode_telemetry(&batch) } else { protobuf::encode_telemetry(&batch) };
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let router = Router::default();
        match router.decode(MessageKind::Telemetry, Bytes::from(bytes.clone())) {
            Ok(d) => prop_assert!(matches!(d.message, Message::Telemetry(_))),
            Err(r) => prop_assert_eq!(&r.payload[..], &bytes[..]),
        }
    }

    #[test]
    fn json_never_panics_on_arbitrary_text(text in "\\{.{0,200}") {
        let _ = json::decode_telemetry(text.as_bytes(), &Limits::default());
        let _ = json::decode_status(text.as_bytes(), &Limits::default());
    }
}

#[test]
fn json_value_inference_and_hints() {
    let doc =
        br#"{"schema_version":1,"msg_id":"01JDQ7Z3M4X5Y6Z7A8B9C0D1E2","device_id":"plc-01","seq":3,
        "ts":1764120152123,
        "tags":{"a":{"v":1},"b":{"v":1.5},"c":{"v":18446744073709551615},"d":{"v":"NaN","t":"f64"},
                "e":{"v":true},"f":{"v":"AQID","t":"bytes"},"g":{"v":"text"},"h":{"v":null,"q":0},
                "i":{"v":7,"t":"u64"},"j":{"v":0.1,"t":"f32"},"k":{"v":2}}}"#;
    let b = json::decode_telemetry(doc, &Limits::default()).unwrap();
    let vals: Vec<Option<Value>> = b.samples.iter().map(|s| s.value().cloned()).collect();
    assert_eq!(
        vals,
        vec![
            Some(Value::Int(1)),
            Some(Value::Double(1.5)),
            Some(Value::UInt(u64::MAX)),
            Some(Value::Double(f64::NAN)),
            Some(Value::Bool(true)),
            Some(Value::from(vec![1u8, 2, 3])),
            Some(Value::from("text")),
            None,
            Some(Value::UInt(7)),
            Some(Value::Float(0.1)),
            Some(Value::Int(2)),
        ]
    );
    assert_eq!(b.gateway_time.unix_millis(), 1_764_120_152_123);
    assert!(b.samples[0].quality().is_good(), "absent q means Good");
    assert!(
        b.samples[7].quality().status_code() >> 30 == 2,
        "q 0 is Bad"
    );
}

#[test]
fn json_rejections_name_the_field() {
    let cases: &[(&[u8], &str)] = &[
        (br#"{"schema_version":1,"msg_id":"bad","device_id":"d","seq":1,"ts":0}"#, "msg_id"),
        (br#"{"schema_version":1,"msg_id":"01JDQ7Z3M4X5Y6Z7A8B9C0D1E2","device_id":"a b","seq":1,"ts":0}"#, "device_id"),
        (br#"{"schema_version":1,"msg_id":"01JDQ7Z3M4X5Y6Z7A8B9C0D1E2","device_id":"d","seq":1,"ts":"noon"}"#, "ts"),
        (br#"{"schema_version":1,"msg_id":"01JDQ7Z3M4X5Y6Z7A8B9C0D1E2","device_id":"d","seq":1,"ts":0,"tags":{"a":{"v":[1]}}}"#, "samples[0].v"),
        (br#"{"schema_version":1,"msg_id":"01JDQ7Z3M4X5Y6Z7A8B9C0D1E2","device_id":"d","seq":1,"ts":0,"tags":{"a":{"v":1,"t":"u128"}}}"#, "samples[0].v"),
        (br#"{"schema_version":1,"msg_id":"01JDQ7Z3M4X5Y6Z7A8B9C0D1E2","device_id":"d","seq":1,"ts":0,"tags":{"a b":{"v":1}}}"#, "samples[0].tag"),
        (br#"{"schema_version":1,"msg_id":"01JDQ7Z3M4X5Y6Z7A8B9C0D1E2","device_id":"d","seq":1,"ts":0,"tags":{"a":{"q":192}}}"#, "samples[0]"),
    ];
    for (doc, field) in cases {
        match json::decode_telemetry(doc, &Limits::default()) {
            Err(iiot_core::codec::DecodeError::Invalid { field: f, .. }) => {
                assert_eq!(&f, field, "{}", String::from_utf8_lossy(doc));
            }
            other => panic!(
                "{}: expected Invalid({field}), got {other:?}",
                String::from_utf8_lossy(doc)
            ),
        }
    }
}

/// The gateway heartbeat (issue 14): a status with the outbox backlog and each
/// source's last good read survives both wire forms; birth-style statuses stay
/// byte-for-byte as before (no new keys, no new fields).
#[test]
fn heartbeat_status_round_trips_in_both_forms() {
    use iiot_core::types::{Backlog, DeviceId, SourceHealth, Status, Timestamp};
    let mut s = Status::birth(DeviceId::new("plc-01").unwrap());
    s.time = Timestamp::from_unix_nanos(1_767_225_600_123_456_789).unwrap();
    s.backlog = Some(Backlog {
        records: 12,
        bytes: 3456,
        oldest_age: Some(std::time::Duration::from_millis(4_200)),
    });
    s.sources = vec![
        SourceHealth {
            name: "modbus".into(),
            last_good: Some(Timestamp::from_unix_nanos(1_767_225_599_000_000_000).unwrap()),
            connected: Some(false),
        },
        SourceHealth {
            name: "opcua".into(),
            last_good: None,
            connected: None,
        },
    ];
    let limits = Limits::default();
    assert_eq!(
        protobuf::decode_status(&protobuf::encode_status(&s), &limits).unwrap(),
        s
    );
    let text = json::encode_status(&s);
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(v["backlog"]["records"], 12);
    assert_eq!(v["backlog"]["oldest_age_ms"], 4200);
    assert_eq!(v["sources"][0]["name"], "modbus");
    assert!(v["sources"][1].get("last_good").is_none());
    assert_eq!(v["sources"][0]["connected"], false);
    assert!(v["sources"][1].get("connected").is_none());
    // JSON carries RFC 3339 times (microseconds): compare at that resolution.
    let back = json::decode_status(&text, &limits).unwrap();
    assert_eq!(back.backlog, s.backlog);
    assert_eq!(back.sources.len(), 2);
    assert_eq!(back.sources[1], s.sources[1]);

    let birth = Status::birth(DeviceId::new("plc-01").unwrap());
    let text = String::from_utf8(json::encode_status(&birth)).unwrap();
    assert!(
        !text.contains("backlog") && !text.contains("sources"),
        "{text}"
    );

    // Too many sources is a typed limit error, in both forms.
    let mut many = s.clone();
    many.sources = (0..=limits.max_map_entries)
        .map(|i| SourceHealth {
            name: format!("s{i}"),
            last_good: None,
            connected: None,
        })
        .collect();
    assert!(protobuf::decode_status(&protobuf::encode_status(&many), &limits).is_err());
    assert!(json::decode_status(&json::encode_status(&many), &limits).is_err());
}
