//! The command issuer (issue 16, platform side): what it publishes (topic, QoS
//! 1, not retained, message expiry = TTL rounded up to whole seconds, a payload
//! that decodes to the returned command), what it refuses before publishing
//! anything, and what a failed publish gives back.

use std::sync::Mutex;
use std::time::Duration;

use iiot_core::codec::{Limits, protobuf};
use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError, PublishErrorKind, QoS};
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    Constraints, DeviceId, Expect, Interlock, Operation, TagPath, Timestamp, ValidationError, Value,
};
use iiot_ingest::commands::{CommandIssuer, CommandRequest, IssueError};

/// Records every message; fails with `fail` when set.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<OutboundMessage>>,
    fail: Option<PublishErrorKind>,
}

impl ConfirmedPublish for Recorder {
    async fn publish_confirmed(&self, message: OutboundMessage) -> Result<(), PublishError> {
        if let Some(kind) = &self.fail {
            return Err(PublishError {
                message,
                kind: kind.clone(),
            });
        }
        self.sent.lock().unwrap().push(message);
        Ok(())
    }
}

fn path() -> UnsPath {
    UnsPath::new(
        "acme",
        "plant1",
        "packaging",
        "line3",
        "plc",
        DeviceId::new("plc-01").unwrap(),
    )
    .unwrap()
}

fn request(op: Operation, ttl: Duration) -> CommandRequest {
    CommandRequest::new(path(), TagPath::new("tank1/setpoint").unwrap(), op, ttl)
}

fn sent(issuer: &CommandIssuer<Recorder>) -> Vec<OutboundMessage> {
    issuer.publisher().sent.lock().unwrap().clone()
}

#[tokio::test]
async fn publishes_qos1_not_retained_with_expiry_rounded_up() {
    let issuer = CommandIssuer::new(Recorder::default(), "ops");
    let cases = [
        (Duration::from_millis(1), 1),
        (Duration::from_millis(999), 1),
        (Duration::from_secs(1), 1),
        (Duration::from_millis(1500), 2),
        (Duration::from_secs(30), 30),
        (Duration::new(30, 1), 31),
    ];
    let mut ids = Vec::new();
    for (i, (ttl, expiry_s)) in cases.iter().enumerate() {
        let mut req = request(Operation::Set(Value::Double(80.0)), *ttl);
        req.set_reason(format!("case {i}"));
        let before = Timestamp::now();
        let c = issuer.issue(&req).await.unwrap();
        let after = Timestamp::now();
        let m = &sent(&issuer)[i];
        assert_eq!(m.topic, path().command(c.id).to_string());
        assert_eq!(
            m.topic,
            format!("acme/plant1/packaging/line3/plc/plc-01/commands/{}", c.id)
        );
        assert_eq!(m.qos, QoS::AtLeastOnce);
        assert!(!m.retain, "a retained command is never executed");
        assert_eq!(m.expiry, Some(Duration::from_secs(*expiry_s)), "{ttl:?}");
        // The payload is exactly the command returned.
        let decoded = protobuf::decode_command(&m.payload, &Limits::default()).unwrap();
        assert_eq!(decoded, c);
        assert_eq!(c.device_id.as_str(), "plc-01");
        assert_eq!(c.action, "write");
        assert_eq!(
            (c.issuer.as_str(), c.reason.as_str()),
            ("ops", &*format!("case {i}"))
        );
        assert!(before <= c.issued_at && c.issued_at <= after);
        assert_eq!(c.expires_at.duration_since(c.issued_at), *ttl);
        // The id is a ULID of this instant.
        let ms = u64::try_from(c.issued_at.unix_millis()).unwrap();
        assert!(
            c.id.timestamp_ms().abs_diff(ms) <= 1,
            "{} vs {ms}",
            c.id.timestamp_ms()
        );
        ids.push(c.id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), cases.len(), "a fresh id per command");
}

#[tokio::test]
async fn every_operation_and_constraints_survive_the_wire() {
    let issuer = CommandIssuer::new(Recorder::default(), "ops");
    let mut add = request(Operation::Add(Value::Int(5)), Duration::from_secs(10));
    add.set_constraints(Constraints {
        min: Some(0.0),
        max: Some(100.0),
        max_rate_per_s: Some(2.5),
        interlocks: vec![
            Interlock {
                tag: TagPath::new("pump/running").unwrap(),
                expect: Expect::Equals(Value::Bool(false)),
            },
            Interlock {
                tag: TagPath::new("tank1/pressure").unwrap(),
                expect: Expect::Range {
                    min: None,
                    max: Some(3.0),
                },
            },
        ],
    })
    .set_issuer("alice@ops");
    let mut invoke = request(Operation::Invoke, Duration::from_secs(10));
    invoke.set_action("reset_alarm");
    for req in [add, invoke] {
        let c = issuer.issue(&req).await.unwrap();
        assert_eq!(c.op, req.op);
        assert_eq!(c.constraints, req.constraints);
        assert_eq!(c.action, req.action);
        let m = sent(&issuer).pop().unwrap();
        assert_eq!(
            protobuf::decode_command(&m.payload, &Limits::default()).unwrap(),
            c
        );
    }
    assert_eq!(
        issuer
            .build(
                &request(Operation::Add(Value::Int(1)), Duration::from_secs(1)),
                Timestamp::UNIX_EPOCH
            )
            .unwrap()
            .issuer,
        "ops",
        "the issuer's name unless the request names another"
    );
    assert_eq!(sent(&issuer).len(), 2);
}

#[tokio::test]
async fn refuses_zero_ttl_and_invalid_commands_before_publishing() {
    let issuer = CommandIssuer::new(Recorder::default(), "ops");
    let zero = request(Operation::Set(Value::Double(1.0)), Duration::ZERO);
    assert!(matches!(
        issuer.issue(&zero).await,
        Err(IssueError::ZeroTtl)
    ));

    let ttl = Duration::from_secs(10);
    let mut inverted = request(Operation::Set(Value::Double(1.0)), ttl);
    inverted.set_constraints(Constraints {
        min: Some(10.0),
        max: Some(1.0),
        ..Constraints::default()
    });
    let mut nan = request(Operation::Set(Value::Double(1.0)), ttl);
    nan.set_constraints(Constraints {
        max_rate_per_s: Some(f64::NAN),
        ..Constraints::default()
    });
    let mut open_range = request(Operation::Set(Value::Double(1.0)), ttl);
    open_range.set_constraints(Constraints {
        interlocks: vec![Interlock {
            tag: TagPath::new("x").unwrap(),
            expect: Expect::Range {
                min: None,
                max: None,
            },
        }],
        ..Constraints::default()
    });
    let bool_delta = request(Operation::Add(Value::Bool(true)), ttl);
    let unnamed_invoke = request(Operation::Invoke, ttl);
    let mut no_action = request(Operation::Set(Value::Int(1)), ttl);
    no_action.set_action("");
    for (req, field) in [
        (inverted, "constraints"),
        (nan, "constraints.max_rate_per_s"),
        (open_range, "constraints.interlocks"),
        (bool_delta, "delta"),
        (unnamed_invoke, "value"),
        (no_action, "action"),
    ] {
        match issuer.issue(&req).await {
            Err(IssueError::Invalid(
                ValidationError::Field { field: f, .. } | ValidationError::Missing { field: f },
            )) => assert_eq!(f, field, "{req:?}"),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(sent(&issuer).is_empty(), "nothing published");
    let e = issuer.issue(&zero).await.unwrap_err();
    assert_eq!(e.to_string(), "command TTL is zero");
}

#[tokio::test]
async fn a_failed_publish_gives_the_command_back() {
    let issuer = CommandIssuer::new(
        Recorder {
            fail: Some(PublishErrorKind::NotConnected),
            ..Recorder::default()
        },
        "ops",
    );
    let req = request(Operation::Set(Value::Double(1.0)), Duration::from_secs(5));
    match issuer.issue(&req).await {
        Err(IssueError::Publish { command, source }) => {
            assert_eq!(source.kind, PublishErrorKind::NotConnected);
            assert_eq!(source.message.topic, path().command(command.id).to_string());
            assert_eq!(
                protobuf::decode_command(&source.message.payload, &Limits::default()).unwrap(),
                *command
            );
            // Retrying the same command (same id) is what the caller does next.
            let ok = CommandIssuer::new(Recorder::default(), "ops");
            let again = ok
                .publish(&req.path, *command.clone(), req.ttl)
                .await
                .unwrap();
            assert_eq!(again.id, command.id);
            assert_eq!(sent(&ok)[0].expiry, Some(Duration::from_secs(5)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn build_uses_the_given_clock() {
    let issuer = CommandIssuer::new(Recorder::default(), "ops");
    let now = Timestamp::from_unix_millis(1_767_225_600_000).unwrap();
    let c = issuer
        .build(
            &request(Operation::Set(Value::Int(1)), Duration::from_millis(2500)),
            now,
        )
        .unwrap();
    assert_eq!(c.issued_at, now);
    assert_eq!(
        c.expires_at,
        now.saturating_add(Duration::from_millis(2500))
    );
    assert!(sent(&issuer).is_empty());
}
