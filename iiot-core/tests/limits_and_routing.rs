//! Limits for untrusted input, version routing, dead-letter payloads, forward
//! compatibility.

use bytes::Bytes;
use iiot_core::codec::{DecodeError, LimitError, Limits, WireFormat, json, protobuf};
use iiot_core::proto::v1 as pb;
use iiot_core::quality::Quality;
use iiot_core::types::{
    DataLoss, DataLossReason, DeviceId, Sample, Sequence, Status, TagPath, TelemetryBatch,
    Timestamp, Value,
};
use iiot_core::version::{Message, MessageKind, Router};
use prost::Message as _;

fn ts(ns: i64) -> Timestamp {
    Timestamp::from_unix_nanos(ns).unwrap()
}

fn batch(n: usize) -> TelemetryBatch {
    let samples = (0..n)
        .map(|i| {
            Sample::good(
                TagPath::new(format!("t{i}")).unwrap(),
                i as f64,
                ts(1_000 + i as i64),
            )
        })
        .collect();
    let mut b = TelemetryBatch::new(DeviceId::new("plc-01").unwrap(), Sequence(9), samples);
    b.gateway_time = ts(1_000);
    b
}

#[test]
fn every_limit_has_its_own_error() {
    let l = Limits {
        max_payload_bytes: 10_000,
        max_samples_per_batch: 3,
        max_tag_len: 4,
        max_string_value_len: 5,
        max_bytes_value_len: 6,
        max_text_len: 8,
        max_map_entries: 1,
    };
    for (form, enc) in [
        (
            "pb",
            protobuf::encode_telemetry as fn(&TelemetryBatch) -> Vec<u8>,
        ),
        ("json", json::encode_telemetry),
    ] {
        let dec = |b: &[u8]| {
            if form == "pb" {
                protobuf::decode_telemetry(b, &l)
            } else {
                json::decode_telemetry(b, &l)
            }
        };
        assert!(
            matches!(
                dec(&enc(&batch(4))),
                Err(DecodeError::Limit(LimitError::TooManySamples {
                    limit: 3,
                    ..
                }))
            ),
            "{form}"
        );
        let mut b = batch(1);
        b.samples = vec![Sample::good(TagPath::new("toolong").unwrap(), 1i64, ts(1))];
        assert!(
            matches!(
                dec(&enc(&b)),
                Err(DecodeError::Limit(LimitError::TagTooLong {
                    index: 0,
                    len: 7,
                    limit: 4
                }))
            ),
            "{form}"
        );
        b.samples = vec![Sample::good(TagPath::new("t").unwrap(), "abcdef", ts(1))];
        assert!(
            matches!(
                dec(&enc(&b)),
                Err(DecodeError::Limit(LimitError::StringValueTooLong {
                    len: 6,
                    ..
                }))
            ),
            "{form}"
        );
        b.samples = vec![Sample::good(
            TagPath::new("t").unwrap(),
            vec![0u8; 7],
            ts(1),
        )];
        assert!(
            matches!(
                dec(&enc(&b)),
                Err(DecodeError::Limit(LimitError::BytesValueTooLong {
                    len: 7,
                    ..
                }))
            ),
            "{form}"
        );
        b.samples.clear();
        b.metadata.firmware_version = Some("1.2.3-rc.1".into());
        assert!(
            matches!(
                dec(&enc(&b)),
                Err(DecodeError::Limit(LimitError::TextTooLong {
                    field: "firmware_version",
                    ..
                }))
            ),
            "{form}"
        );
        b.metadata.firmware_version = None;
        b.device_id = DeviceId::new("a-long-device").unwrap();
        assert!(
            matches!(
                dec(&enc(&b)),
                Err(DecodeError::Limit(LimitError::TextTooLong {
                    field: "device_id",
                    ..
                }))
            ),
            "{form}"
        );
    }
    let small = Limits {
        max_payload_bytes: 10,
        ..Limits::default()
    };
    let bytes = protobuf::encode_telemetry(&batch(2));
    assert!(matches!(
        protobuf::decode_telemetry(&bytes, &small),
        Err(DecodeError::Limit(LimitError::PayloadTooLarge {
            limit: 10,
            ..
        }))
    ));
}

#[test]
fn sample_count_is_checked_before_decoding() {
    // 1 MiB of empty samples (2 bytes each) would become ~500k structs; the scan
    // refuses it after max_samples_per_batch + 1 tags without allocating them.
    let mut buf = vec![0x08, 0x01];
    for _ in 0..500_000 {
        buf.extend_from_slice(&[0x32, 0x00]);
    }
    let l = Limits {
        max_payload_bytes: 2 << 20,
        ..Limits::default()
    };
    assert!(matches!(
        protobuf::decode_telemetry(&buf, &l),
        Err(DecodeError::Limit(LimitError::TooManySamples {
            count: 10_001,
            limit: 10_000
        }))
    ));
}

#[test]
fn limits_config_rejects_unknown_keys_and_has_defaults() {
    let l: Limits = serde_json::from_str(r#"{"max_samples_per_batch": 5}"#).unwrap();
    assert_eq!(l.max_samples_per_batch, 5);
    assert_eq!(l.max_payload_bytes, Limits::default().max_payload_bytes);
    let err = serde_json::from_str::<Limits>(r#"{"max_sample": 5}"#).unwrap_err();
    assert!(err.to_string().contains("max_sample"), "{err}");
}

#[test]
fn router_rejects_with_reason_and_original_bytes() {
    let router = Router::default();
    let mut v2 = pb::TelemetryBatch::decode(&protobuf::encode_telemetry(&batch(1))[..]).unwrap();
    v2.schema_version = 2;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "empty"),
        (b"   ".to_vec(), "malformed_protobuf"),
        (v2.encode_to_vec(), "unsupported_version"),
        (
            br#"{"schema_version": 2, "whatever": true}"#.to_vec(),
            "unsupported_version",
        ),
        (br#"{"device_id": "x"}"#.to_vec(), "missing_version"),
        (vec![0x12, 0x00], "missing_version"),
        (vec![0xff, 0xff, 0xff], "malformed_protobuf"),
        (b"{not json".to_vec(), "malformed_json"),
        (b"\x08\x01\x1a\x03a b".to_vec(), "invalid"),
    ];
    for (bytes, label) in cases {
        let r = router
            .decode(MessageKind::Telemetry, Bytes::from(bytes.clone()))
            .unwrap_err();
        assert_eq!(r.reason.label(), label, "{bytes:?}: {r}");
        assert_eq!(&r.payload[..], &bytes[..]);
        assert_eq!(r.kind, MessageKind::Telemetry);
    }
    let r = router
        .decode(
            MessageKind::DataLoss,
            Bytes::from_static(br#"{"schema_version":1}"#),
        )
        .unwrap_err();
    assert_eq!(r.reason, DecodeError::NoJsonForm { kind: "data_loss" });
}

#[test]
fn status_and_data_loss_round_trip_through_router() {
    let router = Router::default();
    let mut st = Status::birth(DeviceId::new("plc-01").unwrap());
    st.time = ts(1_764_120_152_000_000_000);
    st.firmware_version = Some("2.1.0".into());
    st.start_time = Some(ts(1_764_120_000_000_000_000));
    for bytes in [protobuf::encode_status(&st), json::encode_status(&st)] {
        let d = router.decode(MessageKind::Status, bytes.into()).unwrap();
        assert_eq!(d.message, Message::Status(st.clone()));
    }
    let lwt = json::encode_status(&Status::offline(DeviceId::new("plc-01").unwrap(), None));
    assert!(
        std::str::from_utf8(&lwt)
            .unwrap()
            .contains(r#""online":false"#)
    );

    let mut loss = DataLoss::new(
        DeviceId::new("plc-01").unwrap(),
        Sequence(10),
        Sequence(19),
        10,
        DataLossReason::Overflow,
        ts(5),
    )
    .unwrap();
    loss.detail = Some("outbox full".into());
    loss.bytes = Some(2000);
    let d = router
        .decode(
            MessageKind::DataLoss,
            protobuf::encode_data_loss(&loss).into(),
        )
        .unwrap();
    assert_eq!(d.message, Message::DataLoss(loss.clone()));
    assert_eq!(d.format, WireFormat::Protobuf);

    // A reason from a newer sender is kept as Unknown: the loss is still recorded.
    let mut m = pb::DataLoss::decode(&protobuf::encode_data_loss(&loss)[..]).unwrap();
    m.reason = 42;
    let back = protobuf::decode_data_loss(&m.encode_to_vec(), &Limits::default()).unwrap();
    assert_eq!(back.reason, DataLossReason::Unknown);
    // An unknown count (0) is allowed; a new reason round-trips.
    let mut unknown = DataLoss::new(
        DeviceId::new("plc-01").unwrap(),
        Sequence(1),
        Sequence(99),
        0,
        DataLossReason::StoreCorrupt,
        ts(5),
    )
    .unwrap();
    unknown.message_id = loss.message_id;
    assert_eq!(
        protobuf::decode_data_loss(&protobuf::encode_data_loss(&unknown), &Limits::default())
            .unwrap()
            .count(),
        0
    );
    let wf = DataLoss::new(
        DeviceId::new("plc-01").unwrap(),
        Sequence(7),
        Sequence(7),
        1,
        DataLossReason::WriteFailed,
        ts(5),
    )
    .unwrap();
    assert_eq!(
        protobuf::decode_data_loss(&protobuf::encode_data_loss(&wf), &Limits::default())
            .unwrap()
            .reason,
        DataLossReason::WriteFailed
    );
    // An impossible range is refused.
    m.first_seq = 30;
    assert!(matches!(
        protobuf::decode_data_loss(&m.encode_to_vec(), &Limits::default()),
        Err(DecodeError::Invalid { .. })
    ));
}

#[test]
fn newer_fields_are_ignored_by_v1_decoders() {
    // A v1 message from a newer producer carries fields this build does not know
    // (numbers 40 and 41 here, a varint and a string). It must decode unchanged.
    let b = batch(2);
    let mut bytes = protobuf::encode_telemetry(&b);
    bytes.extend_from_slice(&[0xC0, 0x02, 0x05]); // field 40, varint 5
    bytes.extend_from_slice(&[0xCA, 0x02, 0x02, b'h', b'i']); // field 41, "hi"
    assert_eq!(
        protobuf::decode_telemetry(&bytes, &Limits::default()).unwrap(),
        b
    );
    // Same inside a sample: a new sample field 20.
    let mut m = pb::TelemetryBatch::decode(&protobuf::encode_telemetry(&b)[..]).unwrap();
    let mut s = m.samples[0].encode_to_vec();
    s.extend_from_slice(&[0xA0, 0x01, 0x07]);
    m.samples.clear();
    let mut bytes = m.encode_to_vec();
    for sample in [
        s,
        pb::TelemetryBatch::decode(&protobuf::encode_telemetry(&b)[..])
            .unwrap()
            .samples[1]
            .encode_to_vec(),
    ] {
        bytes.push(0x32);
        bytes.push(u8::try_from(sample.len()).unwrap());
        bytes.extend_from_slice(&sample);
    }
    assert_eq!(
        protobuf::decode_telemetry(&bytes, &Limits::default()).unwrap(),
        b
    );
    // JSON: unknown keys anywhere are ignored.
    let doc = br#"{"schema_version":1,"new_top":{"x":[1,2]},"msg_id":"01JDQ7Z3M4X5Y6Z7A8B9C0D1E2","device_id":"d","seq":1,"ts":0,"tags":{"a":{"v":1,"unit":"m"}}}"#;
    assert!(json::decode_telemetry(doc, &Limits::default()).is_ok());
}

#[test]
fn good_quality_without_value_is_invalid() {
    let mut m = pb::TelemetryBatch::decode(&protobuf::encode_telemetry(&batch(1))[..]).unwrap();
    m.samples[0].value = None;
    let err = protobuf::decode_telemetry(&m.encode_to_vec(), &Limits::default()).unwrap_err();
    assert!(
        matches!(err, DecodeError::Invalid { ref field, .. } if field == "samples[0]"),
        "{err}"
    );
    m.samples[0].quality = Quality::BAD.status_code();
    assert!(protobuf::decode_telemetry(&m.encode_to_vec(), &Limits::default()).is_ok());
}

#[test]
fn json_with_repeated_tags_uses_samples_array() {
    let t = TagPath::new("tank/level").unwrap();
    let mut b = batch(0);
    b.samples = vec![
        Sample::good(t.clone(), 1.0, ts(10)),
        Sample::good(TagPath::new("x").unwrap(), Value::Bool(true), ts(10)),
        Sample::good(t, 2.0, ts(20)),
    ];
    let text = String::from_utf8(json::encode_telemetry(&b)).unwrap();
    assert!(
        text.contains(r#""samples":["#) && !text.contains(r#""tags""#),
        "{text}"
    );
    assert_eq!(
        json::decode_telemetry(text.as_bytes(), &Limits::default()).unwrap(),
        b
    );
}

#[test]
fn source_time_offsets_are_checked() {
    let mut m = pb::TelemetryBatch::decode(&protobuf::encode_telemetry(&batch(1))[..]).unwrap();
    m.samples[0].source_time_offset_ns = -2_000;
    let err = protobuf::decode_telemetry(&m.encode_to_vec(), &Limits::default()).unwrap_err();
    assert!(
        matches!(err, DecodeError::Invalid { ref field, .. } if field == "samples[0].source_time_offset_ns")
    );
    m.samples[0].source_time_offset_ns = i64::MAX;
    assert!(protobuf::decode_telemetry(&m.encode_to_vec(), &Limits::default()).is_err());
}

#[test]
fn tag_table_is_used_for_repeated_tags_and_checked() {
    let mut b = batch(0);
    let level = TagPath::new("tank1/level").unwrap();
    for i in 0..10 {
        b.samples.push(Sample::good(
            level.clone(),
            f64::from(i),
            ts(1_000 + i64::from(i)),
        ));
        b.samples.push(Sample::good(
            TagPath::new("pump1/running").unwrap(),
            i % 2 == 0,
            ts(1_000),
        ));
    }
    let bytes = protobuf::encode_telemetry(&b);
    let m = pb::TelemetryBatch::decode(&bytes[..]).unwrap();
    assert_eq!(
        m.tag_table,
        vec!["tank1/level".to_owned(), "pump1/running".to_owned()]
    );
    assert!(m.samples.iter().all(|s| s.tag.is_empty()));
    assert_eq!(m.samples[3].tag_ref, 1);
    assert_eq!(
        protobuf::decode_telemetry(&bytes, &Limits::default()).unwrap(),
        b
    );
    // Inline tags are at least twice as large here.
    let mut inline = m.clone();
    inline.tag_table.clear();
    for (i, s) in inline.samples.iter_mut().enumerate() {
        s.tag = if i % 2 == 0 {
            "tank1/level".into()
        } else {
            "pump1/running".into()
        };
        s.tag_ref = 0;
    }
    assert_eq!(
        protobuf::decode_telemetry(&inline.encode_to_vec(), &Limits::default()).unwrap(),
        b
    );
    assert!(
        inline.encoded_len() > bytes.len() + 200,
        "{} vs {}",
        inline.encoded_len(),
        bytes.len()
    );

    // A reference outside the table is invalid, naming the sample.
    let mut bad = m.clone();
    bad.samples[5].tag_ref = 2;
    let err = protobuf::decode_telemetry(&bad.encode_to_vec(), &Limits::default()).unwrap_err();
    assert!(
        matches!(err, DecodeError::Invalid { ref field, .. } if field == "samples[5].tag_ref"),
        "{err}"
    );
    // Table entries obey the same rules and limits as inline tags.
    let mut bad = m.clone();
    bad.tag_table[1] = "pump 1".into();
    let err = protobuf::decode_telemetry(&bad.encode_to_vec(), &Limits::default()).unwrap_err();
    assert!(
        matches!(err, DecodeError::Invalid { ref field, .. } if field == "tag_table[1]"),
        "{err}"
    );
    let l = Limits {
        max_tag_len: 5,
        ..Limits::default()
    };
    assert!(matches!(
        protobuf::decode_telemetry(&bytes, &l),
        Err(DecodeError::Limit(LimitError::TagTooLong { .. }))
    ));
    // The table is counted before decoding, like samples.
    let mut big = m;
    big.tag_table = (0..20).map(|i| format!("t{i}")).collect();
    let l = Limits {
        max_samples_per_batch: 19,
        ..Limits::default()
    };
    assert!(matches!(
        protobuf::decode_telemetry(&big.encode_to_vec(), &l),
        Err(DecodeError::Limit(LimitError::TooManySamples { .. }))
    ));
}

#[test]
fn topics_map_to_message_kinds() {
    use iiot_core::topic::{Topic, UnsPath};
    use iiot_core::version::data_loss_topic;
    let p = UnsPath::new(
        "acme",
        "plant1",
        "packaging",
        "line3",
        "plc",
        DeviceId::new("plc-01").unwrap(),
    )
    .unwrap();
    let id = iiot_core::types::MessageId::from_u128(5);
    let cases = [
        (p.telemetry(), MessageKind::Telemetry),
        (
            p.telemetry_of(TagPath::new("tank1/level").unwrap()),
            MessageKind::Telemetry,
        ),
        (data_loss_topic(&p), MessageKind::DataLoss),
        (p.status(), MessageKind::Status),
        (p.command(id), MessageKind::Command),
        (p.command_ack(id), MessageKind::CommandAck),
        (p.config_desired(), MessageKind::ConfigDesired),
        (p.config_reported(), MessageKind::ConfigReported),
        (p.ota_notification(), MessageKind::OtaManifest),
        (p.ota_status(), MessageKind::OtaStatus),
    ];
    for (topic, kind) in cases {
        let parsed: Topic = topic.to_string().parse().unwrap();
        assert_eq!(MessageKind::of_topic(&parsed), kind, "{topic}");
    }
    assert_eq!(
        data_loss_topic(&p).to_string(),
        "acme/plant1/packaging/line3/plc/plc-01/telemetry/data-loss"
    );
    // The decoded message names its device, to compare with the topic's.
    let d = Router::default()
        .decode(
            MessageKind::Telemetry,
            protobuf::encode_telemetry(&batch(1)).into(),
        )
        .unwrap();
    assert_eq!(d.message.device_id(), Some(p.device_id()));
}
