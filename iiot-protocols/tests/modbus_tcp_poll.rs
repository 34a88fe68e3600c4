//! The poller against our simulator over Modbus TCP on loopback: every type and order,
//! coalescing, faults giving Bad quality within the retry budget and clearing on
//! recovery, reconnect, adaptive splitting, writes (issue 6).
//!
//! These run in real time with short timeouts: with `time::pause()` tokio would
//! auto-advance past a timeout while the answer is still in the kernel's socket buffers.
//! No test sleeps to synchronise; each waits for a reading with a deadline.

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::modbus::{map, start_sim, wait_for};
use iiot_core::source::Link;
use iiot_core::types::Value;
use iiot_protocols::modbus::sim::Fault;
use iiot_protocols::modbus::{
    Area, ExceptionCode, Poller, PollerConfig, ReadFailure, TcpConnector, WriteError, WriteOutcome,
};
use tokio_util::sync::CancellationToken;

const TYPES_MAP: &str = r#"
[poll_groups.default]
interval = "50ms"

[[tags]]
name = "f32/abcd"
address = "40001"
type = "f32"
order = "ABCD"
[[tags]]
name = "f32/cdab"
address = "40003"
type = "f32"
order = "CDAB"
[[tags]]
name = "f32/badc"
address = "40005"
type = "f32"
order = "BADC"
[[tags]]
name = "f32/dcba"
address = "40007"
type = "f32"
order = "DCBA"
[[tags]]
name = "i64/hgfedcba"
address = "40011"
type = "i64"
order = "HGFEDCBA"
[[tags]]
name = "u32/cdab"
address = "30001"
type = "u32"
order = "CDAB"
[[tags]]
name = "text"
address = "40021"
type = "string"
length = 8
order = "BADC"
[[tags]]
name = "pump"
address = "00001"
type = "bool"
[[tags]]
name = "level"
area = "holding_register"
address = 30
type = "i16"
scale = 0.5
[[tags]]
name = "alarm"
area = "holding_register"
address = 31
type = "bit"
bit = 2
[[tags]]
name = "setpoint"
area = "holding_register"
address = 40
type = "f64"
order = "CDAB"
write_function = "multiple"
[[tags]]
name = "valve"
address = "00010"
type = "bool"
write_function = "multiple"
"#;

fn fast() -> PollerConfig {
    let mut c = PollerConfig::default();
    c.set_timeout(Duration::from_millis(150))
        .set_retries(3)
        .set_retry_backoff(Duration::from_millis(50));
    c
}

#[tokio::test]
async fn reads_every_order_and_type_from_the_simulator() {
    let m = map(TYPES_MAP);
    let s = start_sim(m.clone()).await;
    for t in ["f32/abcd", "f32/cdab", "f32/badc", "f32/dcba"] {
        s.sim.set_value(t, &Value::Float(-1234.5)).unwrap();
    }
    s.sim
        .set_value("i64/hgfedcba", &Value::Int(i64::MIN + 7))
        .unwrap();
    s.sim
        .set_value("u32/cdab", &Value::UInt(0xDEAD_BEEF))
        .unwrap();
    s.sim
        .set_value("text", &Value::String("PUMP-7".into()))
        .unwrap();
    s.sim.set_value("pump", &Value::Bool(true)).unwrap();
    s.sim.set_value("level", &Value::Double(-12.5)).unwrap();
    s.sim.set_value("alarm", &Value::Bool(true)).unwrap();

    let (_h, poller, mut rx) = Poller::new(fast(), m.clone(), TcpConnector::new(s.addr));
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    let mut got = std::collections::BTreeMap::new();
    while got.len() < m.tags().len() {
        let r = wait_for(&mut rx, Duration::from_secs(5), "all tags", |_| true).await;
        assert!(r.sample.quality().is_good(), "{r:?}");
        got.insert(
            r.sample.tag().to_string(),
            r.sample.value().cloned().unwrap(),
        );
    }
    for t in ["f32/abcd", "f32/cdab", "f32/badc", "f32/dcba"] {
        assert_eq!(got[t], Value::Float(-1234.5), "{t}");
    }
    assert_eq!(got["i64/hgfedcba"], Value::Int(i64::MIN + 7));
    assert_eq!(got["u32/cdab"], Value::UInt(0xDEAD_BEEF));
    assert_eq!(got["text"], Value::String("PUMP-7".into()));
    assert_eq!(got["pump"], Value::Bool(true));
    assert_eq!(got["level"], Value::Double(-12.5));
    assert_eq!(got["alarm"], Value::Bool(true));
}

#[tokio::test]
async fn coalesced_plan_sends_one_request_per_unit_and_area() {
    let m = map(TYPES_MAP);
    let s = start_sim(m.clone()).await;
    let (h, poller, mut rx) = Poller::new(fast(), m, TcpConnector::new(s.addr));
    let planned = poller.plan().requests().len();
    // 40001..40048 in one (gaps ≤ 8), 30001 one, coils 1 and 10 one.
    assert_eq!(planned, 3, "{:?}", poller.plan().requests());
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    wait_for(&mut rx, Duration::from_secs(5), "first reading", |_| true).await;
    while h.stats().cycles < 4 {
        wait_for(&mut rx, Duration::from_secs(5), "cycles", |_| true).await;
    }
    let st = h.stats();
    let per_cycle = st.requests as f64 / st.cycles as f64;
    assert!((per_cycle - 3.0).abs() < 1.0, "{st:?}");
}

#[tokio::test]
async fn exception_gives_bad_with_the_code_and_clears_on_recovery() {
    let m = map(TYPES_MAP);
    let s = start_sim(m.clone()).await;
    let (_h, poller, mut rx) = Poller::new(fast(), m, TcpConnector::new(s.addr));
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    wait_for(&mut rx, Duration::from_secs(5), "good", |r| {
        r.sample.quality().is_good()
    })
    .await;
    s.sim
        .set_fault(1, Some(Fault::Exception(ExceptionCode::ServerDeviceBusy)));
    let bad = wait_for(&mut rx, Duration::from_secs(5), "bad", |r| {
        !r.sample.quality().is_good()
    })
    .await;
    assert_eq!(
        bad.failure,
        Some(ReadFailure::Exception(ExceptionCode::ServerDeviceBusy))
    );
    assert_eq!(bad.sample.quality().status_code(), 0x808B_0000);
    assert!(bad.sample.value().is_none());
    s.sim.set_fault(1, None);
    wait_for(&mut rx, Duration::from_secs(5), "recovery", |r| {
        r.sample.quality().is_good()
    })
    .await;
}

#[tokio::test]
async fn silent_device_is_bad_timeout_within_the_retry_budget() {
    let m = map(TYPES_MAP);
    let s = start_sim(m.clone()).await;
    let cfg = fast();
    // 4 attempts × 150 ms + 3 × 50 ms backoff, plus one poll interval and slack.
    let budget = cfg.timeout * 4 + cfg.retry_backoff * 3 + Duration::from_millis(50);
    let (_h, poller, mut rx) = Poller::new(cfg, m, TcpConnector::new(s.addr));
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    wait_for(&mut rx, Duration::from_secs(5), "good", |r| {
        r.sample.quality().is_good()
    })
    .await;
    while rx.try_recv().is_ok() {}
    s.sim.set_fault(1, Some(Fault::NoResponse));
    let t0 = Instant::now();
    let bad = wait_for(&mut rx, budget * 3, "timeout", |r| {
        !r.sample.quality().is_good()
    })
    .await;
    let took = t0.elapsed();
    assert_eq!(bad.failure, Some(ReadFailure::Timeout { attempts: 4 }));
    assert_eq!(bad.sample.quality().status_code(), 0x800A_0000);
    assert!(took <= budget * 2, "Bad after {took:?}, budget {budget:?}");
    s.sim.set_fault(1, None);
    wait_for(&mut rx, Duration::from_secs(15), "recovery", |r| {
        r.sample.quality().is_good()
    })
    .await;
}

#[tokio::test]
async fn dropped_connection_is_bad_then_reconnects() {
    let m = map(TYPES_MAP);
    let s = start_sim(m.clone()).await;
    let mut cfg = fast();
    cfg.set_retries(0);
    let (_h, poller, mut rx) = Poller::new(cfg, m, TcpConnector::new(s.addr));
    let mut link = poller.link();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    wait_for(&mut rx, Duration::from_secs(5), "good", |r| {
        r.sample.quality().is_good()
    })
    .await;
    assert_eq!(*link.borrow_and_update(), Some(Link::Up));
    s.sim.set_fault_all(Some(Fault::DropConnection));
    let bad = wait_for(&mut rx, Duration::from_secs(5), "bad", |r| {
        !r.sample.quality().is_good()
    })
    .await;
    assert!(
        matches!(bad.failure, Some(ReadFailure::Connection { .. })),
        "{bad:?}"
    );
    assert_eq!(bad.sample.quality().status_code(), 0x8005_0000);
    // The connectivity signal: down with the transport's cause, then up again.
    let down = tokio::time::timeout(
        Duration::from_secs(5),
        link.wait_for(|l| matches!(l, Some(Link::Down { .. }))),
    )
    .await
    .expect("link down")
    .unwrap()
    .clone();
    assert!(matches!(down, Some(Link::Down { cause }) if !cause.is_empty()));
    s.sim.set_fault_all(None);
    wait_for(&mut rx, Duration::from_secs(5), "reconnected", |r| {
        r.sample.quality().is_good()
    })
    .await;
    assert_eq!(*link.borrow(), Some(Link::Up));
}

#[tokio::test]
async fn a_dead_unit_does_not_stop_the_others() {
    let m = map(r#"
        [poll_groups.default]
        interval = "50ms"
        [[tags]]
        name = "u1"
        address = "40001"
        type = "u16"
        [[tags]]
        name = "u2"
        unit_id = 2
        address = "40001"
        type = "u16"
        "#);
    let s = start_sim(m.clone()).await;
    s.sim.set_fault(2, Some(Fault::NoResponse));
    let mut cfg = fast();
    cfg.set_timeout(Duration::from_millis(60)).set_retries(1);
    let tcp = TcpConnector::new(s.addr);
    let (_h, poller, mut rx) = Poller::new(cfg, m, tcp);
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    let mut good_u1 = 0;
    let mut bad_u2 = 0;
    while good_u1 < 5 || bad_u2 < 1 {
        let r = wait_for(&mut rx, Duration::from_secs(10), "both units", |_| true).await;
        match (r.sample.tag().as_str(), r.sample.quality().is_good()) {
            ("u1", true) => good_u1 += 1,
            ("u2", false) => bad_u2 += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn refused_coalesced_read_is_split_and_remembered() {
    let mut toml = String::from("[poll_groups.default]\ninterval = \"50ms\"\n");
    for i in 0..8 {
        writeln!(
            toml,
            "[[tags]]\nname = \"t{i}\"\narea = \"holding_register\"\naddress = {}\ntype = \"u32\"",
            i * 6
        )
        .unwrap();
    }
    let m = map(&toml);
    let s = start_sim(m.clone()).await;
    s.sim.set_max_read(Some(16));
    for i in 0..8 {
        s.sim
            .set_value(&format!("t{i}"), &Value::UInt(i * 1000))
            .unwrap();
    }
    let (h, poller, mut rx) = Poller::new(fast(), m, TcpConnector::new(s.addr));
    assert_eq!(poller.plan().requests().len(), 1);
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 8 {
        let r = wait_for(&mut rx, Duration::from_secs(5), "all tags good", |_| true).await;
        assert!(
            r.sample.quality().is_good(),
            "no Bad while splitting: {r:?}"
        );
        seen.insert(r.sample.tag().to_string());
    }
    // Once learned, a cycle costs the split plan only: no more refused requests.
    let before = (h.stats(), s.sim.requests());
    while h.stats().cycles < before.0.cycles + 3 {
        wait_for(&mut rx, Duration::from_secs(5), "cycles", |_| true).await;
    }
    let after = h.stats();
    let per_cycle =
        (after.requests - before.0.requests) as f64 / (after.cycles - before.0.cycles) as f64;
    assert!(
        per_cycle <= 4.0,
        "{per_cycle} requests per cycle after learning"
    );
}

#[tokio::test]
async fn writes_go_through_the_map_with_fc5_fc6_fc15_fc16() {
    let m = map(TYPES_MAP);
    let s = start_sim(m.clone()).await;
    let (h, poller, _rx) = Poller::new(fast(), m, TcpConnector::new(s.addr));
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    // FC5
    assert_eq!(
        h.write("pump", &Value::Bool(true)).await,
        Ok(WriteOutcome::Written)
    );
    assert_eq!(s.sim.value("pump"), Some(Value::Bool(true)));
    // FC15
    assert_eq!(
        h.write("valve", &Value::Bool(true)).await,
        Ok(WriteOutcome::Written)
    );
    assert_eq!(s.sim.value("valve"), Some(Value::Bool(true)));
    // FC6 with scale: 21.5 / 0.5 = 43
    assert_eq!(
        h.write("level", &Value::Double(21.5)).await,
        Ok(WriteOutcome::Written)
    );
    assert_eq!(s.sim.value("level"), Some(Value::Double(21.5)));
    // FC16 (f32, two registers, word swapped)
    assert_eq!(
        h.write("f32/cdab", &Value::Float(f32::NEG_INFINITY)).await,
        Ok(WriteOutcome::Written)
    );
    assert_eq!(
        s.sim.value("f32/cdab"),
        Some(Value::Float(f32::NEG_INFINITY))
    );
    // FC16 forced, f64
    assert_eq!(
        h.write("setpoint", &Value::Double(-0.0)).await,
        Ok(WriteOutcome::Written)
    );
    assert_eq!(s.sim.value("setpoint"), Some(Value::Double(-0.0)));
    // Bit: read-modify-write keeps the other bits.
    s.sim.set_value("level", &Value::Double(1.0)).unwrap();
    assert_eq!(
        h.write("alarm", &Value::Bool(true)).await,
        Ok(WriteOutcome::Written)
    );
    assert_eq!(s.sim.value("alarm"), Some(Value::Bool(true)));
    assert_eq!(
        h.write("text", &Value::String("OK".into())).await,
        Ok(WriteOutcome::Written)
    );
    assert_eq!(s.sim.value("text"), Some(Value::String("OK".into())));
    // Refusals are values, bad input is an error before any I/O.
    s.sim
        .set_fault(1, Some(Fault::Exception(ExceptionCode::IllegalDataValue)));
    assert_eq!(
        h.write("pump", &Value::Bool(false)).await,
        Ok(WriteOutcome::Refused(ExceptionCode::IllegalDataValue))
    );
    s.sim.set_fault(1, None);
    assert!(matches!(
        h.write("u32/cdab", &Value::UInt(1)).await,
        Err(WriteError::ReadOnly {
            area: Area::InputRegister,
            ..
        })
    ));
    assert!(matches!(
        h.write("nope", &Value::UInt(1)).await,
        Err(WriteError::UnknownTag { .. })
    ));
    assert!(matches!(
        h.write("level", &Value::Double(1e9)).await,
        Err(WriteError::Encode { .. })
    ));
    s.sim.set_fault(1, Some(Fault::NoResponse));
    assert!(matches!(
        h.write("pump", &Value::Bool(true)).await,
        Err(WriteError::Failed {
            failure: ReadFailure::Timeout { attempts: 1 },
            ..
        })
    ));
}

/// The poller as the command executor's handler (issue 16): targets and value kinds
/// from the map, writes through it, each write error mapped to refused or failed.
#[tokio::test]
async fn the_poller_is_a_command_handler_over_its_map() {
    use iiot_core::command::{Action, ActionKind, CommandHandler, HandlerErrorKind, ValueKind};
    use iiot_core::types::{AckReason, MessageId, TagPath};
    let m = map(TYPES_MAP);
    let s = start_sim(m.clone()).await;
    let (h, poller, _rx) = Poller::new(fast(), m, TcpConnector::new(s.addr));
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    let tag = |n: &str| TagPath::new(n).unwrap();
    let kind = |n: &str| h.target(&tag(n)).and_then(|t| t.writes);
    assert_eq!(kind("pump"), Some(ValueKind::Bool));
    assert_eq!(kind("level"), Some(ValueKind::Number), "scaled register");
    assert_eq!(kind("setpoint"), Some(ValueKind::Number));
    assert_eq!(kind("text"), Some(ValueKind::Text));
    assert!(
        h.target(&tag("u32/cdab")).is_none(),
        "input registers are no target"
    );
    assert!(h.target(&tag("nope")).is_none());
    let act = |n: &str, kind: ActionKind| Action {
        command: MessageId::generate(),
        target: tag(n),
        kind,
    };
    assert_eq!(
        h.execute(act("level", ActionKind::Write(Value::Double(21.5))))
            .await,
        Ok(Some(Value::Double(21.5)))
    );
    assert_eq!(s.sim.value("level"), Some(Value::Double(21.5)));
    let refused = h
        .execute(act("level", ActionKind::Write(Value::Double(1e9))))
        .await
        .unwrap_err();
    assert_eq!(
        refused.kind,
        HandlerErrorKind::Refused(AckReason::WrongType)
    );
    let invoke = h
        .execute(act("pump", ActionKind::Invoke("reset".into())))
        .await
        .unwrap_err();
    assert_eq!(
        invoke.kind,
        HandlerErrorKind::Refused(AckReason::Unsupported)
    );
    s.sim
        .set_fault(1, Some(Fault::Exception(ExceptionCode::IllegalDataValue)));
    let exc = h
        .execute(act("pump", ActionKind::Write(Value::Bool(true))))
        .await
        .unwrap_err();
    assert!(
        matches!(exc.kind, HandlerErrorKind::Refused(_)),
        "nothing was written"
    );
    s.sim.set_fault(1, Some(Fault::NoResponse));
    let lost = h
        .execute(act("pump", ActionKind::Write(Value::Bool(true))))
        .await
        .unwrap_err();
    assert_eq!(lost.kind, HandlerErrorKind::Failed, "outcome unknown");
}

#[tokio::test]
async fn a_slow_answer_within_the_timeout_stays_good() {
    let m = map(TYPES_MAP);
    let s = start_sim(m.clone()).await;
    s.sim
        .set_fault_all(Some(Fault::Delay(Duration::from_millis(20))));
    let (_h, poller, mut rx) = Poller::new(fast(), m, TcpConnector::new(s.addr));
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    for _ in 0..20 {
        let r = wait_for(&mut rx, Duration::from_secs(5), "readings", |_| true).await;
        assert!(r.sample.quality().is_good(), "{r:?}");
    }
    // Slower than the timeout: Bad_Timeout.
    s.sim
        .set_fault_all(Some(Fault::Delay(Duration::from_millis(400))));
    let bad = wait_for(&mut rx, Duration::from_secs(5), "timeout", |r| {
        r.failure.is_some()
    })
    .await;
    assert!(
        matches!(bad.failure, Some(ReadFailure::Timeout { .. })),
        "{bad:?}"
    );
}

#[tokio::test]
async fn deadband_holds_back_unchanged_values_until_the_max_interval() {
    let m = map(r#"
        [poll_groups.default]
        interval = "20ms"
        [[tags]]
        name = "level"
        address = "40001"
        type = "f32"
        deadband = { absolute = 1.0 }
        max_report_interval = "300ms"
        "#);
    let s = start_sim(m.clone()).await;
    s.sim.set_value("level", &Value::Float(10.0)).unwrap();
    let (h, poller, mut rx) = Poller::new(fast(), m, TcpConnector::new(s.addr));
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    wait_for(&mut rx, Duration::from_secs(5), "first", |_| true).await;
    let t0 = Instant::now();
    let cycles0 = h.stats().cycles;
    // A move inside the deadband is not reported; the max interval forces a report.
    s.sim.set_value("level", &Value::Float(10.5)).unwrap();
    let r = wait_for(&mut rx, Duration::from_secs(5), "periodic report", |_| true).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    assert!(h.stats().cycles - cycles0 >= 5, "polled meanwhile");
    assert_eq!(r.sample.value(), Some(&Value::Float(10.5)));
    // A move beyond the deadband is reported at the next poll.
    let t1 = Instant::now();
    s.sim.set_value("level", &Value::Float(12.0)).unwrap();
    let r = wait_for(&mut rx, Duration::from_secs(5), "change", |_| true).await;
    assert_eq!(r.sample.value(), Some(&Value::Float(12.0)));
    assert!(
        t1.elapsed() < Duration::from_millis(250),
        "{:?}",
        t1.elapsed()
    );
}

#[tokio::test]
async fn generators_drive_the_simulated_values() {
    use iiot_protocols::modbus::sim::Generator;
    let m = map(r#"
        [poll_groups.default]
        interval = "20ms"
        [[tags]]
        name = "ramp"
        address = "40001"
        type = "f64"
        "#);
    let sim = iiot_protocols::modbus::sim::Simulator::new(m.clone());
    let mut server = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    server.set_tick(Duration::from_millis(10));
    let addr = server.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(server.run(cancel.clone()));
    sim.set_generator(
        "ramp",
        Generator::Ramp {
            start: 0.0,
            step: 1.0,
            min: 0.0,
            max: 1000.0,
        },
    )
    .unwrap();
    let (_h, poller, mut rx) = Poller::new(fast(), m, TcpConnector::new(addr));
    tokio::spawn(poller.run(cancel));
    let first = wait_for(&mut rx, Duration::from_secs(5), "first", |_| true).await;
    let v0 = first.sample.value().and_then(Value::as_f64).unwrap();
    wait_for(&mut rx, Duration::from_secs(5), "ramp moves", |r| {
        r.sample.value().and_then(Value::as_f64).unwrap() > v0
    })
    .await;
}

#[tokio::test]
async fn holes_a_sparse_device_refuses_are_learned_not_bridged() {
    // Two blocks of adjacent tags with an unmapped hole between them that the default
    // gap rule (8) would bridge.
    let m = map(r#"
        [poll_groups.default]
        interval = "30ms"
        [[tags]]
        name = "a0"
        address = "40001"
        type = "u32"
        [[tags]]
        name = "a1"
        address = "40003"
        type = "u16"
        [[tags]]
        name = "b0"
        address = "40010"
        type = "u16"
        [[tags]]
        name = "b1"
        address = "40011"
        type = "f32"
        "#);
    let s = start_sim(m.clone()).await;
    s.sim.set_strict(true);
    s.sim.set_value("b1", &Value::Float(2.5)).unwrap();
    let (h, poller, mut rx) = Poller::new(fast(), m, TcpConnector::new(s.addr));
    assert_eq!(poller.plan().requests().len(), 1);
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 4 {
        let r = wait_for(&mut rx, Duration::from_secs(5), "all tags", |_| true).await;
        assert!(r.sample.quality().is_good(), "{r:?}");
        seen.insert(r.sample.tag().to_string());
    }
    let c0 = h.stats();
    while h.stats().cycles < c0.cycles + 3 {
        wait_for(&mut rx, Duration::from_secs(5), "cycles", |_| true).await;
    }
    let c1 = h.stats();
    // Two requests per cycle (one per block), no more refusals.
    let per_cycle = (c1.requests - c0.requests) as f64 / (c1.cycles - c0.cycles) as f64;
    assert!((per_cycle - 2.0).abs() < 0.5, "{per_cycle}");
}

#[tokio::test]
async fn nobody_listening_is_bad_communication() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_h, poller, mut rx) = Poller::new(fast(), map(TYPES_MAP), TcpConnector::new(port));
    let link = poller.link();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    let r = wait_for(&mut rx, Duration::from_secs(5), "bad", |_| true).await;
    // Never connected: down, with the OS's words for it.
    match &*link.borrow() {
        Some(Link::Down { cause }) => {
            assert!(cause.to_lowercase().contains("refused"), "{cause}");
        }
        other => panic!("link {other:?}"),
    }
    assert_eq!(
        r.failure,
        Some(ReadFailure::Connection {
            kind: std::io::ErrorKind::ConnectionRefused
        })
    );
    let sample: iiot_core::types::Sample = r.into();
    assert_eq!(sample.quality().status_code(), 0x8005_0000);
}

#[tokio::test]
async fn write_many_merges_adjacent_tags_into_fc15_and_fc16() {
    // One poll at start (one request per area), then nothing for an hour: every other
    // request the simulator serves is a write.
    let m = map(r#"
        [poll_groups.default]
        interval = "1h"
        [[tags]]
        name = "a"
        address = "40001"
        type = "u16"
        [[tags]]
        name = "b"
        address = "40002"
        type = "f32"
        order = "DCBA"
        [[tags]]
        name = "c"
        address = "00005"
        type = "bool"
        [[tags]]
        name = "d"
        address = "00006"
        type = "bool"
        "#);
    let s = start_sim(m.clone()).await;
    let (h, poller, mut rx) = Poller::new(fast(), m, TcpConnector::new(s.addr));
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    for _ in 0..4 {
        wait_for(&mut rx, Duration::from_secs(5), "first poll", |_| true).await;
    }
    assert_eq!(s.sim.requests(), 2);
    let results = h
        .write_many(&[
            ("d", Value::Bool(true)),
            ("a", Value::UInt(1)),
            ("b", Value::Float(-2.5)),
            ("c", Value::Bool(true)),
        ])
        .await
        .unwrap();
    assert_eq!(results, vec![Ok(WriteOutcome::Written); 4]);
    assert_eq!(s.sim.requests(), 4, "one FC16 and one FC15");
    assert_eq!(s.sim.value("a"), Some(Value::UInt(1)));
    assert_eq!(s.sim.value("b"), Some(Value::Float(-2.5)));
    assert_eq!(s.sim.value("c"), Some(Value::Bool(true)));
    assert_eq!(s.sim.value("d"), Some(Value::Bool(true)));
    // A refusal applies to every tag of the merged request.
    s.sim
        .set_fault(1, Some(Fault::Exception(ExceptionCode::IllegalDataAddress)));
    let results = h
        .write_many(&[("a", Value::UInt(5)), ("b", Value::Float(0.0))])
        .await
        .unwrap();
    assert_eq!(
        results,
        vec![Ok(WriteOutcome::Refused(ExceptionCode::IllegalDataAddress)); 2]
    );
}
