//! Modbus RTU over an in-memory bus with two slaves: exact frames, CRC errors turning
//! into Bad quality without a panic, and a dead slave not stalling its neighbour thanks
//! to the circuit breaker and round-robin scheduling (issue 6). Time is paused.

mod common;

use std::time::Duration;

use common::modbus::{map, wait_for};
use common::modbus_rtu::{RtuBus, crc16};
use iiot_core::types::Value;
use iiot_protocols::modbus::sim::Simulator;
use iiot_protocols::modbus::{Poller, PollerConfig, ReadFailure, WriteOutcome};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const BUS_MAP: &str = r#"
[poll_groups.default]
interval = "100ms"
[[tags]]
name = "s1/temp"
unit_id = 1
address = "40001"
type = "f32"
order = "CDAB"
[[tags]]
name = "s1/run"
unit_id = 1
address = "00001"
type = "bool"
[[tags]]
name = "s2/flow"
unit_id = 2
address = "30001"
type = "u32"
order = "DCBA"
"#;

/// 9600 baud 8E1: 3.5 characters of 11 bits.
const INTER_FRAME: Duration = Duration::from_nanos(4_010_415);

fn cfg() -> PollerConfig {
    let mut c = PollerConfig::default();
    c.set_timeout(Duration::from_millis(50))
        .set_retries(3)
        .set_retry_backoff(Duration::from_millis(50));
    c
}

fn setup() -> (Simulator, RtuBus) {
    let sim = Simulator::new(map(BUS_MAP));
    sim.set_value("s1/temp", &Value::Float(21.25)).unwrap();
    sim.set_value("s1/run", &Value::Bool(true)).unwrap();
    sim.set_value("s2/flow", &Value::UInt(123_456)).unwrap();
    let bus = RtuBus::start(sim.clone());
    (sim, bus)
}

#[tokio::test(start_paused = true)]
async fn reads_both_slaves_with_exact_frames() {
    let (_sim, bus) = setup();
    let (h, poller, mut rx) = Poller::new(cfg(), map(BUS_MAP), bus.connector(INTER_FRAME));
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 3 {
        let r = wait_for(&mut rx, Duration::from_secs(5), "all tags", |_| true).await;
        assert!(r.sample.quality().is_good(), "{r:?}");
        seen.insert(
            r.sample.tag().to_string(),
            r.sample.value().cloned().unwrap(),
        );
    }
    assert_eq!(seen["s1/temp"], Value::Float(21.25));
    assert_eq!(seen["s1/run"], Value::Bool(true));
    assert_eq!(seen["s2/flow"], Value::UInt(123_456));
    let frames = bus.faults.lock().unwrap().frames.clone();
    // FC3, unit 1, address 0, 2 registers: 01 03 00 00 00 02 C4 0B.
    assert!(
        frames.contains(&vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x02, 0xC4, 0x0B]),
        "{frames:02X?}"
    );
    // FC4, unit 2, address 0, 2 registers, CRC computed independently.
    let mut fc4 = vec![0x02, 0x04, 0x00, 0x00, 0x00, 0x02];
    fc4.extend(crc16(&fc4).to_le_bytes());
    assert!(frames.contains(&fc4));
    // FC6 write over RTU.
    assert_eq!(
        h.write("s1/run", &Value::Bool(false)).await,
        Ok(WriteOutcome::Written)
    );
    let last = bus.faults.lock().unwrap().frames.last().cloned().unwrap();
    assert_eq!(&last[..6], &[0x01, 0x05, 0x00, 0x00, 0x00, 0x00]);
}

#[tokio::test(start_paused = true)]
async fn crc_errors_are_bad_quality_and_clear() {
    let (_sim, bus) = setup();
    bus.faults.lock().unwrap().bad_crc.insert(2);
    let (_h, poller, mut rx) = Poller::new(cfg(), map(BUS_MAP), bus.connector(INTER_FRAME));
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    let bad = wait_for(&mut rx, Duration::from_secs(5), "bad s2", |r| {
        r.sample.tag().as_str() == "s2/flow"
    })
    .await;
    assert!(!bad.sample.quality().is_good());
    assert!(
        matches!(
            bad.failure,
            Some(ReadFailure::Timeout { .. } | ReadFailure::Protocol)
        ),
        "{bad:?}"
    );
    wait_for(&mut rx, Duration::from_secs(5), "good s1 meanwhile", |r| {
        r.sample.tag().as_str() == "s1/temp" && r.sample.quality().is_good()
    })
    .await;
    bus.faults.lock().unwrap().bad_crc.clear();
    // Recovers at the latest after the breaker's first open period (5 s) and a probe.
    wait_for(&mut rx, Duration::from_secs(10), "s2 recovers", |r| {
        r.sample.tag().as_str() == "s2/flow" && r.sample.quality().is_good()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_dead_slave_does_not_stall_its_neighbour() {
    let (_sim, bus) = setup();
    bus.faults.lock().unwrap().dead.insert(2);
    let (_h, poller, mut rx) = Poller::new(cfg(), map(BUS_MAP), bus.connector(INTER_FRAME));
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    let start = Instant::now();
    let window = Duration::from_secs(30);
    let (mut s1_good, mut s2_open, mut s2_timeout) = (0u32, 0u32, 0u32);
    while Instant::now() < start + window {
        let r = wait_for(&mut rx, Duration::from_secs(5), "readings", |_| true).await;
        match (r.sample.tag().as_str(), &r.failure) {
            ("s1/temp", None) => s1_good += 1,
            ("s2/flow", Some(ReadFailure::CircuitOpen)) => s2_open += 1,
            ("s2/flow", Some(ReadFailure::Timeout { .. })) => s2_timeout += 1,
            _ => {}
        }
    }
    // 30 s at 100 ms is 300 polls; the dead slave costs ~1 s before its breaker opens
    // and one 50 ms probe per open period after that.
    assert!(
        s1_good >= 270,
        "neighbour polled {s1_good} times in {window:?}"
    );
    assert!(
        s2_open > 200,
        "dead slave reported as not communicating: {s2_open}"
    );
    assert!((3..12).contains(&s2_timeout), "timeouts {s2_timeout}");
    let s2_frames = bus
        .faults
        .lock()
        .unwrap()
        .frames
        .iter()
        .filter(|f| f[0] == 2)
        .count();
    assert!(s2_frames < 30, "dead slave was asked {s2_frames} times");
}

#[tokio::test]
async fn a_missing_serial_port_is_bad_communication_not_a_panic() {
    use iiot_protocols::modbus::{RtuConfig, RtuConnector};
    let (_h, poller, mut rx) = Poller::new(
        cfg(),
        map(BUS_MAP),
        RtuConnector::new(RtuConfig::new("/nonexistent/ttyIIOT0", 9600)),
    );
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    let r = wait_for(&mut rx, Duration::from_secs(5), "bad", |_| true).await;
    assert!(
        matches!(r.failure, Some(ReadFailure::Connection { .. })),
        "{r:?}"
    );
    assert_eq!(r.sample.quality().status_code(), 0x8005_0000);
}

#[tokio::test]
async fn rtu_over_a_pseudo_terminal_pair() {
    use iiot_protocols::modbus::{BoxedConnect, FnConnector};
    let (master, slave) = match tokio_serial::SerialStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("skipping pty test: no pseudo-terminal pair here ({e})");
            return;
        }
    };
    let sim = Simulator::new(map(BUS_MAP));
    sim.set_value("s1/temp", &Value::Float(-3.75)).unwrap();
    sim.set_value("s2/flow", &Value::UInt(77)).unwrap();
    let faults = RtuBus::serve_on(sim, slave);
    let mut master = Some(master);
    let connector = FnConnector::bus(
        move || -> BoxedConnect {
            let m = master.take();
            Box::pin(async move {
                m.map(tokio_modbus::client::rtu::attach)
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
            })
        },
        INTER_FRAME,
    );
    let mut c = cfg();
    c.set_timeout(Duration::from_millis(500));
    let (_h, poller, mut rx) = Poller::new(c, map(BUS_MAP), connector);
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    tokio::spawn(poller.run(cancel));
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 3 {
        let r = wait_for(
            &mut rx,
            Duration::from_secs(10),
            "all tags over the pty",
            |_| true,
        )
        .await;
        assert!(r.sample.quality().is_good(), "{r:?}");
        seen.insert(
            r.sample.tag().to_string(),
            r.sample.value().cloned().unwrap(),
        );
    }
    assert_eq!(seen["s1/temp"], Value::Float(-3.75));
    assert_eq!(seen["s2/flow"], Value::UInt(77));
    assert!(!faults.lock().unwrap().frames.is_empty());
}
