//! The command executor from outside (issue 16): duplicates, order, expiry, bad
//! input, restarts.

#![allow(clippy::many_single_char_names, clippy::similar_names)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::commands::{Handler, command, rig};
use common::gateway::path;
use iiot_core::codec::protobuf;
use iiot_core::command::ActionKind;
use iiot_core::proto::v1 as pb;
use iiot_core::types::{AckReason, CommandState, MessageId, Operation, Value};
use iiot_edge::commands::{CommandConfig, LedgerConfig};
use prost::Message as _;
use tokio::sync::Semaphore;

const MIN: Duration = Duration::from_secs(60);

fn no_limit() -> CommandConfig {
    CommandConfig {
        rate_limit: None,
        ..CommandConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_delivered_1000_times_runs_once_and_gets_1000_identical_acks() {
    let dir = tempfile::tempdir().unwrap();
    let h = Handler::default();
    let mut r = rig(dir.path(), h.clone(), no_limit(), LedgerConfig::default()).await;
    let c = command(1, "t0", 42.0, Duration::ZERO, MIN);
    for _ in 0..1000 {
        r.send(&c).await;
    }
    let mut acks = Vec::new();
    for _ in 0..1000 {
        acks.push(r.ack().await);
    }
    assert_eq!(h.calls.lock().unwrap().len(), 1, "exactly one handler call");
    assert!(acks.iter().all(|a| a.command_id == c.id
        && a.state == CommandState::Completed
        && a.result == Some(Value::Double(42.0))));
    assert_eq!(acks.iter().filter(|a| a.duplicate).count(), 999);
    let counters = r.gateway.commands().unwrap().counters();
    assert_eq!(
        counters
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed),
        999
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_of_a_running_command_wait_for_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let h = Handler {
        gate: Some(gate.clone()),
        ..Handler::default()
    };
    let mut r = rig(dir.path(), h.clone(), no_limit(), LedgerConfig::default()).await;
    let c = command(1, "t0", 7.0, Duration::ZERO, MIN);
    for _ in 0..3 {
        r.send(&c).await;
    }
    // Recorded before the transport was acknowledged.
    assert!(r.ledger.state_of(c.id).unwrap().is_some());
    assert!(r.acks.try_recv().is_err(), "no ack before the outcome");
    gate.add_permits(1);
    let acks = [r.ack().await, r.ack().await, r.ack().await];
    assert!(acks.iter().all(|a| a.state == CommandState::Completed));
    assert_eq!(acks.iter().filter(|a| a.duplicate).count(), 2);
    assert_eq!(h.calls.lock().unwrap().len(), 1);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_target_runs_in_issue_order_and_an_older_command_is_superseded() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let h = Handler {
        gate: Some(gate.clone()),
        ..Handler::default()
    };
    let mut r = rig(dir.path(), h.clone(), no_limit(), LedgerConfig::default()).await;
    // t1 blocks the executor while t0's commands arrive newest first.
    let block = command(1, "t1", 1.0, Duration::ZERO, MIN);
    let older = command(2, "t0", 10.0, Duration::from_secs(3), MIN);
    let newer = command(3, "t0", 20.0, Duration::from_secs(1), MIN);
    let other = command(4, "t2", 5.0, Duration::from_secs(5), MIN);
    r.send(&block).await;
    r.send(&newer).await;
    r.send(&other).await;
    r.send(&older).await;
    gate.add_permits(10);
    for _ in 0..4 {
        assert_eq!(r.ack().await.state, CommandState::Completed);
    }
    let order: Vec<_> = h.calls.lock().unwrap().iter().map(|a| a.command).collect();
    // Same target: issue order. Different targets: arrival order.
    assert_eq!(order, vec![block.id, older.id, newer.id, other.id]);
    // A command older than the last one run on t0 arrives late: superseded.
    let late = command(5, "t0", 15.0, Duration::from_secs(2), MIN);
    r.send(&late).await;
    let a = r.ack().await;
    assert_eq!(
        (a.state, a.reason),
        (CommandState::Rejected, Some(AckReason::Superseded))
    );
    assert_eq!(h.calls.lock().unwrap().len(), 4);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_typed_rejection_or_a_dead_letter_never_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let h = Handler::default();
    let config = CommandConfig {
        max_payload_bytes: 2048,
        ..no_limit()
    };
    let mut r = rig(dir.path(), h.clone(), config, LedgerConfig::default()).await;
    let topic = |id: MessageId| path().command(id).to_string();
    let mut n = 100;
    let mut next = || {
        n += 1;
        command(n, "t0", 1.0, Duration::ZERO, MIN)
    };
    let mut cases: Vec<(String, Vec<u8>, bool, CommandState, AckReason)> = Vec::new();
    let c = next();
    cases.push((
        topic(c.id),
        b"\xff\xfe not protobuf".to_vec(),
        false,
        CommandState::Rejected,
        AckReason::Malformed,
    ));
    let c = next();
    cases.push((
        topic(c.id),
        vec![0u8; 4096],
        false,
        CommandState::Rejected,
        AckReason::TooLarge,
    ));
    let mut c = next();
    c.target = common::commands::target("nope");
    cases.push((
        topic(c.id),
        protobuf::encode_command(&c),
        false,
        CommandState::Rejected,
        AckReason::UnknownTarget,
    ));
    let mut c = next();
    c.op = Operation::Set(Value::String("fast".into()));
    cases.push((
        topic(c.id),
        protobuf::encode_command(&c),
        false,
        CommandState::Rejected,
        AckReason::WrongType,
    ));
    let c = next();
    let mut m = pb::Command::decode(&protobuf::encode_command(&c)[..]).unwrap();
    m.expires_at_unix_ns = m.issued_at_unix_ns - 1;
    cases.push((
        topic(c.id),
        m.encode_to_vec(),
        false,
        CommandState::Rejected,
        AckReason::Malformed,
    ));
    let mut c = next();
    c.device_id = iiot_core::types::DeviceId::new("dev-2").unwrap();
    cases.push((
        topic(c.id),
        protobuf::encode_command(&c),
        false,
        CommandState::Rejected,
        AckReason::WrongDevice,
    ));
    let c = next();
    cases.push((
        topic(c.id),
        protobuf::encode_command(&c),
        true,
        CommandState::Rejected,
        AckReason::Retained,
    ));
    let c = next();
    let d = next();
    cases.push((
        topic(d.id),
        protobuf::encode_command(&c),
        false,
        CommandState::Rejected,
        AckReason::Malformed,
    ));
    let c = command(200, "t0", 1.0, Duration::from_secs(120), MIN);
    cases.push((
        topic(c.id),
        protobuf::encode_command(&c),
        false,
        CommandState::Expired,
        AckReason::Expired,
    ));
    let c = command(201, "t0", 1.0, Duration::ZERO, MIN);
    let mut c2 = c.clone();
    c2.issued_at = c.issued_at.saturating_add(Duration::from_secs(60));
    c2.expires_at = c2.issued_at.saturating_add(MIN);
    cases.push((
        topic(c2.id),
        protobuf::encode_command(&c2),
        false,
        CommandState::Rejected,
        AckReason::IssuedInFuture,
    ));
    let c = command(
        202,
        "t0",
        1.0,
        Duration::from_secs(8 * 24 * 3600),
        Duration::from_secs(9 * 24 * 3600),
    );
    cases.push((
        topic(c.id),
        protobuf::encode_command(&c),
        false,
        CommandState::Rejected,
        AckReason::TooOld,
    ));
    let mut c = command(203, "t0", 150.0, Duration::ZERO, MIN);
    c.constraints.max = Some(100.0);
    cases.push((
        topic(c.id),
        protobuf::encode_command(&c),
        false,
        CommandState::Rejected,
        AckReason::AboveMax,
    ));
    let mut c = command(204, "t0", 1.0, Duration::ZERO, MIN);
    c.op = Operation::Add(Value::Double(1.0));
    cases.push((
        topic(c.id),
        protobuf::encode_command(&c),
        false,
        CommandState::Rejected,
        AckReason::StaleValue,
    ));
    for (i, (topic, payload, retain, state, reason)) in cases.into_iter().enumerate() {
        r.send_raw(&topic, payload.clone(), retain).await;
        let a = r.ack().await;
        assert_eq!(
            (a.state, a.reason),
            (state, Some(reason)),
            "case {i}: {:?}",
            a.detail
        );
        assert!(a.detail.is_some(), "case {i} says why");
        // Its id is now known: the same delivery again is answered from the ledger
        // (also a payload without a readable issue time, kept by its receipt time).
        // (A too-old command is not kept: it is older than the window.)
        if reason != AckReason::TooOld {
            r.send_raw(&topic, payload, retain).await;
            let again = r.ack().await;
            assert!(again.duplicate, "case {i}: {again:?}");
            assert_eq!(
                (again.state, again.reason),
                (state, Some(reason)),
                "case {i}"
            );
        }
    }
    // A topic without a command id: a dead letter, acknowledged, no ack.
    r.send_raw(&format!("{}/commands", path()), b"x".to_vec(), false)
        .await;
    r.send_raw("not/a/uns/topic", b"x".to_vec(), false).await;
    let counters = r.gateway.commands().unwrap().counters();
    assert_eq!(
        counters
            .dead_letters
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert!(h.calls.lock().unwrap().is_empty(), "nothing ran");
    // The executor still works.
    let ok = command(300, "flag", 0.0, Duration::ZERO, MIN);
    let mut ok = ok;
    ok.op = Operation::Invoke;
    ok.action = "reset".into();
    r.send(&ok).await;
    assert_eq!(r.ack().await.state, CommandState::Completed);
    assert_eq!(
        h.calls.lock().unwrap()[0].kind,
        ActionKind::Invoke("reset".into())
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_rate_limit_and_restart_keep_every_id_at_most_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = Handler {
        fail_on: Some(13.0),
        ..Handler::default()
    };
    let config = CommandConfig {
        rate_limit: Some(iiot_edge::commands::RateLimit {
            commands: 2,
            per: Duration::from_secs(3600),
        }),
        ..CommandConfig::default()
    };
    let mut r = rig(
        dir.path(),
        h.clone(),
        config.clone(),
        LedgerConfig::default(),
    )
    .await;
    let fail = command(1, "t0", 13.0, Duration::ZERO, MIN);
    let ok = command(2, "t1", 1.0, Duration::ZERO, MIN);
    let limited = command(3, "t2", 1.0, Duration::ZERO, MIN);
    for c in [&fail, &ok, &limited] {
        r.send(c).await;
    }
    let a = r.ack().await;
    assert_eq!(
        (a.state, a.reason),
        (CommandState::Failed, Some(AckReason::HandlerFailed))
    );
    assert_eq!(r.ack().await.state, CommandState::Completed);
    let a = r.ack().await;
    assert_eq!(
        (a.state, a.reason),
        (CommandState::Rejected, Some(AckReason::RateLimited))
    );
    r.stop().await;
    // After a restart every id is still known: each is answered, none runs again.
    // The clean stop drained the control lane, so no ack of the first run comes
    // again: the first ack of each delivery is its duplicate.
    let mut r = rig(dir.path(), h.clone(), config, LedgerConfig::default()).await;
    for c in [&fail, &ok, &limited] {
        r.send(c).await;
        let a = r.ack().await;
        assert!(a.duplicate, "{a:?}");
        assert_eq!(a.command_id, c.id);
    }
    assert_eq!(h.calls.lock().unwrap().len(), 2);
    r.stop().await;
}
