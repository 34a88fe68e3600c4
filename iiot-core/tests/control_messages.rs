//! Commands, acks, OTA manifests and status, configuration: round trips and
//! validation on the way in.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use iiot_core::codec::{DecodeError, LimitError, Limits, protobuf};
use iiot_core::proto::v1 as pb;
use iiot_core::types::{
    AckReason, Command, CommandAck, CommandState, ConfigDesired, ConfigReported, Constraints,
    DeviceId, Expect, Interlock, ManifestBody, ManifestSignature, MessageId, Operation, OtaReason,
    OtaState, OtaStatus, SignatureAlgorithm, SignedManifest, TagPath, Timestamp, Value,
};
use iiot_core::version::{Message, MessageKind, Router};
use proptest::prelude::*;
use prost::Message as _;

fn ts(ns: i64) -> Timestamp {
    Timestamp::from_unix_nanos(ns).unwrap()
}

fn command() -> Command {
    Command {
        id: MessageId::from_parts(1_764_120_152_000, 7),
        device_id: DeviceId::new("plc-01").unwrap(),
        action: "write".into(),
        target: TagPath::new("pump1/speed_setpoint").unwrap(),
        op: Operation::Set(Value::Double(80.0)),
        issued_at: ts(1_000),
        expires_at: ts(61_000),
        issuer: "operator@plant1".into(),
        reason: "raise flow".into(),
        constraints: Constraints {
            min: Some(0.0),
            max: Some(100.0),
            max_rate_per_s: Some(5.0),
            interlocks: vec![
                Interlock {
                    tag: TagPath::new("pump1/local_mode").unwrap(),
                    expect: Expect::Equals(Value::Bool(false)),
                },
                Interlock {
                    tag: TagPath::new("pump1/discharge_bar").unwrap(),
                    expect: Expect::Range {
                        min: None,
                        max: Some(6.5),
                    },
                },
            ],
        },
    }
}

proptest! {
    #[test]
    fn command_round_trip(v in common::value(), kind in 0u8..3, d in -1e9f64..1e9, min in -1e6f64..0.0, span in 0.0f64..1e6, ttl in 1i64..1_000_000) {
        let mut c = command();
        c.op = match kind {
            0 => Operation::Set(v),
            1 => Operation::Add(Value::Double(d)),
            _ => {
                c.action = "reset_alarm".into();
                Operation::Invoke
            }
        };
        c.constraints.min = Some(min);
        c.constraints.max = Some(min + span);
        c.expires_at = ts(1_000 + ttl);
        let back = protobuf::decode_command(&protobuf::encode_command(&c), &Limits::default()).unwrap();
        prop_assert_eq!(back, c);
    }

    #[test]
    fn config_round_trip(settings in prop::collection::btree_map("[a-z_]{1,12}", common::value(), 0..20), rev in any::<u64>()) {
        let d = ConfigDesired { device_id: DeviceId::new("plc-01").unwrap(), revision: rev, settings: settings.clone(), issued_at: ts(5) };
        prop_assert_eq!(protobuf::decode_config_desired(&protobuf::encode_config_desired(&d), &Limits::default()).unwrap(), d);
        let mut errors = BTreeMap::new();
        errors.insert("poll_ms".to_owned(), "below minimum 10".to_owned());
        let r = ConfigReported { device_id: DeviceId::new("plc-01").unwrap(), applied_revision: rev, settings, time: ts(6), errors };
        prop_assert_eq!(protobuf::decode_config_reported(&protobuf::encode_config_reported(&r), &Limits::default()).unwrap(), r);
    }
}

#[test]
fn command_validation_on_decode() {
    let l = Limits::default();
    let mut c = command();
    c.expires_at = c.issued_at;
    assert!(matches!(
        protobuf::decode_command(&protobuf::encode_command(&c), &l),
        Err(DecodeError::Invalid { .. })
    ));
    let mut c = command();
    c.constraints.min = Some(10.0);
    c.constraints.max = Some(1.0);
    assert!(matches!(
        protobuf::decode_command(&protobuf::encode_command(&c), &l),
        Err(DecodeError::Invalid { .. })
    ));
    let mut c = command();
    c.constraints.max_rate_per_s = Some(f64::NAN);
    assert!(protobuf::decode_command(&protobuf::encode_command(&c), &l).is_err());
    // A write without a value or a delta is refused; a named action needs none.
    let mut m = pb::Command::decode(&protobuf::encode_command(&command())[..]).unwrap();
    m.value = None;
    assert!(
        matches!(protobuf::decode_command(&m.encode_to_vec(), &l), Err(DecodeError::Invalid { ref field, .. }) if field == "command"),
    );
    m.action = "reset_alarm".into();
    assert_eq!(
        protobuf::decode_command(&m.encode_to_vec(), &l).unwrap().op,
        Operation::Invoke
    );
    // A value and a delta together are refused; a boolean delta is refused.
    let mut m = pb::Command::decode(&protobuf::encode_command(&command())[..]).unwrap();
    m.delta = m.value.clone();
    assert!(protobuf::decode_command(&m.encode_to_vec(), &l).is_err());
    let mut c = command();
    c.op = Operation::Add(Value::Bool(true));
    assert!(protobuf::decode_command(&protobuf::encode_command(&c), &l).is_err());
    // An interlock with both a value and a range, or with neither, is refused.
    let mut m = pb::Command::decode(&protobuf::encode_command(&command())[..]).unwrap();
    m.constraints.as_mut().unwrap().interlocks[1].equals =
        Some(protobuf::value_to_wire(&Value::Int(1)));
    assert!(protobuf::decode_command(&m.encode_to_vec(), &l).is_err());
    m.constraints.as_mut().unwrap().interlocks[1].equals = None;
    m.constraints.as_mut().unwrap().interlocks[1].max = None;
    assert!(protobuf::decode_command(&m.encode_to_vec(), &l).is_err());
    // The legacy single interlock: old field pair mirrored by the writer, read when the
    // list is absent; a tag without a value is refused.
    let m = pb::Command::decode(&protobuf::encode_command(&command())[..]).unwrap();
    let k = m.constraints.clone().unwrap();
    assert_eq!(k.interlock_tag.as_deref(), Some("pump1/local_mode"));
    let mut old = m.clone();
    old.constraints.as_mut().unwrap().interlocks.clear();
    let back = protobuf::decode_command(&old.encode_to_vec(), &l).unwrap();
    assert_eq!(
        back.constraints.interlocks,
        command().constraints.interlocks[..1]
    );
    old.constraints.as_mut().unwrap().interlock_value = None;
    assert!(protobuf::decode_command(&old.encode_to_vec(), &l).is_err());
    assert!(command().is_expired(ts(61_000)));
    assert!(!command().is_expired(ts(60_999)));
}

#[test]
fn command_ack_round_trip_and_unknown_state() {
    let a = CommandAck {
        command_id: command().id,
        device_id: DeviceId::new("plc-01").unwrap(),
        state: CommandState::Completed,
        time: ts(9),
        detail: None,
        result: Some(Value::Double(80.0)),
        duplicate: true,
        reason: None,
        received_at: Some(ts(7)),
    };
    let bytes = protobuf::encode_command_ack(&a);
    let d = Router::default()
        .decode(MessageKind::CommandAck, Bytes::from(bytes.clone()))
        .unwrap();
    assert_eq!(d.message, Message::CommandAck(a));
    let mut m = pb::CommandAck::decode(&bytes[..]).unwrap();
    m.state = 99;
    assert!(protobuf::decode_command_ack(&m.encode_to_vec(), &Limits::default()).is_err());
    // A reason from a newer device decodes as unknown, not as an error.
    let mut m = pb::CommandAck::decode(&bytes[..]).unwrap();
    m.state = pb::CommandState::Rejected as i32;
    m.reason = 77;
    let back = protobuf::decode_command_ack(&m.encode_to_vec(), &Limits::default()).unwrap();
    assert_eq!(back.reason, Some(AckReason::Unknown(77)));
    m.reason = AckReason::AboveMax.to_wire();
    let back = protobuf::decode_command_ack(&m.encode_to_vec(), &Limits::default()).unwrap();
    assert_eq!(back.reason, Some(AckReason::AboveMax));
}

#[test]
fn manifest_round_trip_and_checks() {
    let body = ManifestBody {
        firmware_id: "pump-ctrl".into(),
        version: semver::Version::parse("2.4.1-rc.1").unwrap(),
        device_type: "pump-controller".into(),
        min_hw_revision: 3,
        size: 1_048_576,
        sha256: [7; 32],
        published_at: ts(1),
        expires_at: ts(2),
        url: "https://fw.example.invalid/pump-ctrl-2.4.1.bin".into(),
    };
    let l = Limits::default();
    let body_bytes = Bytes::from(protobuf::encode_manifest_body(&body));
    assert_eq!(
        protobuf::decode_manifest_body(&body_bytes, &l).unwrap(),
        body
    );
    let signed = SignedManifest {
        body: body_bytes.clone(),
        signatures: vec![ManifestSignature {
            key_id: "k1".into(),
            algorithm: SignatureAlgorithm::Ed25519,
            signature: Bytes::from(vec![1u8; 64]),
        }],
    };
    let bytes = protobuf::encode_signed_manifest(&signed);
    let d = Router::default()
        .decode(MessageKind::OtaManifest, Bytes::from(bytes.clone()))
        .unwrap();
    assert_eq!(d.message, Message::OtaManifest(signed.clone()));
    // Signatures cover the exact body bytes, which survive decoding unchanged.
    if let Message::OtaManifest(m) = d.message {
        assert_eq!(m.body, body_bytes);
    }
    // Unknown algorithms are skipped; none left is invalid.
    let mut m = pb::SignedManifest::decode(&bytes[..]).unwrap();
    m.signatures[0].algorithm = 77;
    assert!(matches!(
        protobuf::decode_signed_manifest(&m.encode_to_vec(), &l),
        Err(DecodeError::Invalid { .. })
    ));
    // Too many signatures are refused before decoding.
    let mut m = pb::SignedManifest::decode(&bytes[..]).unwrap();
    m.signatures = vec![m.signatures[0].clone(); 9];
    assert!(matches!(
        protobuf::decode_signed_manifest(&m.encode_to_vec(), &l),
        Err(DecodeError::Limit(LimitError::TooManyEntries { .. }))
    ));
    // A bad version or hash length is invalid.
    let mut b = pb::ManifestBody::decode(&body_bytes[..]).unwrap();
    b.version = "two".into();
    assert!(
        matches!(protobuf::decode_manifest_body(&b.encode_to_vec(), &l), Err(DecodeError::Invalid { ref field, .. }) if field == "version")
    );
    let mut b = pb::ManifestBody::decode(&body_bytes[..]).unwrap();
    b.sha256 = Bytes::from_static(&[1, 2, 3]);
    assert!(
        matches!(protobuf::decode_manifest_body(&b.encode_to_vec(), &l), Err(DecodeError::Invalid { ref field, .. }) if field == "sha256")
    );
}

#[test]
fn ota_status_round_trip() {
    let s = OtaStatus {
        device_id: DeviceId::new("plc-01").unwrap(),
        firmware_id: "pump-ctrl".into(),
        version: "2.4.1".into(),
        state: OtaState::RolledBack,
        time: ts(3),
        detail: Some("health check failed: modbus poll".into()),
        bytes_done: Some(1_048_576),
        reason: Some(OtaReason::HealthCheckFailed),
        running_version: Some("2.4.0".into()),
    };
    assert_eq!(
        protobuf::decode_ota_status(&protobuf::encode_ota_status(&s), &Limits::default()).unwrap(),
        s
    );
}

#[test]
fn config_map_entries_are_counted_before_decoding() {
    let settings: BTreeMap<String, Value> =
        (0..50).map(|i| (format!("k{i}"), Value::Int(i))).collect();
    let d = ConfigDesired {
        device_id: DeviceId::new("plc-01").unwrap(),
        revision: 1,
        settings,
        issued_at: ts(5),
    };
    let l = Limits {
        max_map_entries: 10,
        ..Limits::default()
    };
    assert!(matches!(
        protobuf::decode_config_desired(&protobuf::encode_config_desired(&d), &l),
        Err(DecodeError::Limit(LimitError::TooManyEntries {
            count: 11,
            limit: 10,
            ..
        }))
    ));
}
