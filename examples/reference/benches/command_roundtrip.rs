//! Command round trip (issue 16): issue → Completed ack stored, through the machine's
//! Mosquitto to a simulated PLC, one command at a time per device, and its parts
//! measured in the same run:
//!
//! - **mqtt echo**: a publish and a subscriber's echo back (two broker hops, as a
//!   command and its ack make);
//! - **executor**: one command through the gateway's executor with a handler that
//!   does nothing (the ledger's three durable writes and the ack's durable append
//!   to the control lane);
//! - **modbus write**: one FC16 write to the simulator through the poller;
//! - **sink commit**: one ack committed to SQLite.
//!
//! Goal: the round trip's p50 at most 1.2× the sum of the parts' p50s.
//!
//! Run: `cargo bench -p iiot-reference --bench command_roundtrip`. Uses
//! `IIOT_MQTT_URL` (default mqtt://127.0.0.1:1883); `IIOT_BENCH_COMMANDS` (default
//! 300) per measurement.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use iiot_core::codec::protobuf;
use iiot_core::command::{Action, CommandHandler, HandlerError, Target, ValueKind};
use iiot_core::publish::{OutboundMessage, QoS};
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    CommandAck, CommandState, Constraints, DeviceId, MessageId, Operation, TagPath, Timestamp,
    Value,
};
use iiot_edge::commands::{ChannelInbox, CommandConfig, Ledger, LedgerConfig};
use iiot_edge::forwarder::ForwarderConfig;
use iiot_edge::outbox::{Outbox, OutboxConfig, WhenFull};
use iiot_edge::runtime::GatewayBuilder;
use iiot_ingest::commands::{CommandIssuer, CommandRequest};
use iiot_ingest::record::{AcceptedAck, CommitBatch};
use iiot_ingest::sink::Sink;
use iiot_ingest::sink::sqlite::{SqliteConfig, SqliteSink};
use iiot_ingest::source::mqtt::{MqttSource, MqttSourceConfig};
use iiot_ingest::{Pipeline, PipelineConfig};
use iiot_protocols::modbus::sim::Simulator;
use iiot_protocols::modbus::{Poller, PollerConfig, RegisterMap, TcpConnector};
use iiot_protocols::mqtt::{InboundDeliveries, MqttConfig, Session, SessionHandle};
use tokio_util::sync::CancellationToken;

const MAP: &str = r#"
[poll_groups.default]
interval = "1s"

[[tags]]
name = "pump1/speed_setpoint"
address = "40001"
type = "f32"
"#;

fn mqtt_url() -> String {
    std::env::var("IIOT_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_owned())
}

fn n() -> usize {
    std::env::var("IIOT_BENCH_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", MessageId::generate())
}

/// p50 and p99 of `v`, in microseconds.
fn pct(v: &mut [Duration]) -> (f64, f64) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

fn report(name: &str, v: &mut [Duration]) -> f64 {
    let (p50, p99) = pct(v);
    println!(
        "{name:<34} p50 {p50:>9.0} µs   p99 {p99:>9.0} µs   (n = {})",
        v.len()
    );
    p50
}

async fn platform(
    id: &str,
) -> (
    SessionHandle,
    iiot_protocols::mqtt::Inbound,
    CancellationToken,
) {
    let mut cfg = MqttConfig::platform(mqtt_url(), id);
    cfg.set_clean_session(true);
    let (h, s, inbound) = Session::new(&cfg).unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(s.run(cancel.clone()));
    assert!(
        h.wait_connected(Duration::from_secs(10)).await,
        "no broker at {}",
        mqtt_url()
    );
    (h, inbound, cancel)
}

async fn mqtt_echo(count: usize) -> Vec<Duration> {
    let tag = unique("echo");
    let (a, mut a_in, ca) = platform(&format!("{tag}-a")).await;
    let (b, mut b_in, cb) = platform(&format!("{tag}-b")).await;
    let req = format!("bench/{tag}/req");
    let resp = format!("bench/{tag}/resp");
    b.subscribe(req.clone(), QoS::AtLeastOnce).await.unwrap();
    a.subscribe(resp.clone(), QoS::AtLeastOnce).await.unwrap();
    let echo = tokio::spawn(async move {
        while let Some(m) = b_in.recv().await {
            let _ = b
                .publish(OutboundMessage::new(resp.clone(), m.payload))
                .await;
        }
    });
    let mut out = Vec::with_capacity(count);
    for i in 0..count + 10 {
        let t = Instant::now();
        // The echo is the answer; the PUBACK is not waited for.
        drop(
            a.publish(OutboundMessage::new(req.clone(), vec![0u8; 120]))
                .await
                .unwrap(),
        );
        a_in.recv().await.unwrap();
        if i >= 10 {
            out.push(t.elapsed());
        }
    }
    ca.cancel();
    cb.cancel();
    echo.abort();
    out
}

/// A handler that does nothing.
struct Nothing;

impl CommandHandler for Nothing {
    fn target(&self, _tag: &TagPath) -> Option<Target> {
        Some(Target::writable(ValueKind::Number))
    }
    async fn execute(&self, _a: Action) -> Result<Option<Value>, HandlerError> {
        Ok(None)
    }
}

#[derive(Clone)]
struct Null;

impl iiot_core::publish::ConfirmedPublish for Null {
    async fn publish_confirmed(
        &self,
        _m: OutboundMessage,
    ) -> Result<(), iiot_core::publish::PublishError> {
        Ok(())
    }
}

fn command(path: &UnsPath, i: u64) -> iiot_core::types::Command {
    let now = Timestamp::now();
    iiot_core::types::Command {
        id: MessageId::generate(),
        device_id: path.device_id().clone(),
        action: "write".into(),
        target: TagPath::new("pump1/speed_setpoint").unwrap(),
        op: Operation::Set(Value::Double((i % 100) as f64)),
        issued_at: now,
        expires_at: now.saturating_add(Duration::from_secs(60)),
        issuer: "bench".into(),
        reason: String::new(),
        constraints: Constraints::default(),
    }
}

async fn open_lanes(dir: &std::path::Path, device: &DeviceId) -> (Outbox, Outbox) {
    let telemetry = Outbox::open(dir.join("outbox"), device.clone(), OutboxConfig::default())
        .await
        .unwrap();
    let mut cc = OutboxConfig::default();
    cc.set_when_full(WhenFull::Block);
    let control = Outbox::open(dir.join("control"), device.clone(), cc)
        .await
        .unwrap();
    (telemetry, control)
}

fn no_limit() -> CommandConfig {
    CommandConfig {
        rate_limit: None,
        ..CommandConfig::default()
    }
}

async fn executor_alone(count: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceId::new("bench-exec").unwrap();
    let path = UnsPath::new("bench", "s", "a", "l", "plc", device.clone()).unwrap();
    let (telemetry, control) = open_lanes(dir.path(), &device).await;
    let ledger = Ledger::open(dir.path().join("ledger"), LedgerConfig::default()).unwrap();
    let (sender, inbox) = ChannelInbox::new(16);
    let cancel = CancellationToken::new();
    let gw = GatewayBuilder::new(path.clone(), telemetry, Null)
        .control_lane(control.clone(), ForwarderConfig::default())
        .commands(inbox, ledger.clone(), Nothing, no_limit())
        .unwrap()
        .start(&cancel);
    let mut out = Vec::with_capacity(count);
    for i in 0..count as u64 + 10 {
        let c = command(&path, i);
        let before = control.stats().next_seq;
        let t = Instant::now();
        sender
            .deliver(
                path.command(c.id).to_string(),
                protobuf::encode_command(&c),
                false,
            )
            .await
            .unwrap();
        // Done when the ack is durable on the control lane.
        while control.stats().next_seq == before {
            tokio::task::yield_now().await;
        }
        if i >= 10 {
            out.push(t.elapsed());
        }
    }
    gw.shutdown(&cancel, Duration::from_secs(1)).await;
    out
}

async fn modbus_write(count: usize) -> Vec<Duration> {
    let map = RegisterMap::from_toml_str(MAP).unwrap();
    let sim = Simulator::new(map.clone());
    let server = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(server.run(cancel.clone()));
    let (h, poller, _rx) = Poller::new(PollerConfig::default(), map, TcpConnector::new(addr));
    tokio::spawn(poller.run(cancel.clone()));
    let mut out = Vec::with_capacity(count);
    for i in 0..count + 10 {
        let t = Instant::now();
        h.write("pump1/speed_setpoint", &Value::Double(i as f64))
            .await
            .unwrap();
        if i >= 10 {
            out.push(t.elapsed());
        }
    }
    cancel.cancel();
    out
}

async fn sink_commit(count: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SqliteSink::open(SqliteConfig::new(dir.path().join("b.sqlite3")))
        .await
        .unwrap();
    let device = DeviceId::new("bench-sink").unwrap();
    let path = UnsPath::new("bench", "s", "a", "l", "plc", device.clone()).unwrap();
    let mut out = Vec::with_capacity(count);
    for i in 0..count + 10 {
        let id = MessageId::generate();
        let ack = CommandAck {
            command_id: id,
            device_id: device.clone(),
            state: CommandState::Completed,
            time: Timestamp::now(),
            detail: None,
            result: Some(Value::Double(1.0)),
            duplicate: false,
            reason: None,
            received_at: Some(Timestamp::now()),
        };
        let batch = CommitBatch {
            command_acks: vec![AcceptedAck {
                ack,
                topic: path.command_ack(id).to_string(),
                received_at: Timestamp::now(),
            }],
            ..CommitBatch::default()
        };
        let t = Instant::now();
        sink.commit(&batch).await.unwrap();
        if i >= 10 {
            out.push(t.elapsed());
        }
    }
    out
}

async fn round_trip(count: usize) -> (Vec<Duration>, f64) {
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceId::new(unique("bench-plc")).unwrap();
    let path = UnsPath::new("bench", "s", "a", "l", "plc", device.clone()).unwrap();
    let cancel = CancellationToken::new();
    // The PLC.
    let map = RegisterMap::from_toml_str(MAP).unwrap();
    let sim = Simulator::new(map.clone());
    let server = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run(cancel.clone()));
    // Ingest: the device's acks into SQLite.
    let sc = MqttSourceConfig {
        url: mqtt_url(),
        client_id: unique("bench-ingest"),
        filters: vec![format!("{path}/commands/+/ack")],
        ..MqttSourceConfig::default()
    };
    let source = MqttSource::start(&sc).unwrap();
    let sink = SqliteSink::open(SqliteConfig::new(dir.path().join("i.sqlite3")))
        .await
        .unwrap();
    let (mut ingest, pipeline) = Pipeline::new(source, sink, PipelineConfig::default());
    tokio::spawn(pipeline.run(cancel.clone()));
    // The gateway.
    let (telemetry, control) = open_lanes(dir.path(), &device).await;
    let mut mc = MqttConfig::new(mqtt_url(), device.as_str(), path.to_string());
    mc.set_inbound_acks(iiot_protocols::mqtt::InboundAcks::Manual);
    let (gh, mut gs, inbound) = Session::new(&mc).unwrap();
    gs.subscribe_on_connect(&[format!("{path}/commands/+")], QoS::AtLeastOnce)
        .unwrap();
    let (writes, poller, readings) =
        Poller::new(PollerConfig::default(), map, TcpConnector::new(addr));
    let ledger = Ledger::open(dir.path().join("ledger"), LedgerConfig::default()).unwrap();
    let gw = GatewayBuilder::new(path.clone(), telemetry, gh.clone())
        .source(poller.into_source(readings, "modbus"))
        .control_lane(control, ForwarderConfig::default())
        .commands(
            InboundDeliveries::new(gh.clone(), inbound),
            ledger,
            writes,
            no_limit(),
        )
        .unwrap()
        .task(move |c| gs.run(c))
        .start(&cancel);
    assert!(gh.wait_connected(Duration::from_secs(10)).await);
    // The issuer.
    let (ih, _iin, ic) = platform(&unique("bench-issuer")).await;
    let issuer = CommandIssuer::new(ih, "bench");
    let request = || {
        CommandRequest::new(
            path.clone(),
            TagPath::new("pump1/speed_setpoint").unwrap(),
            Operation::Set(Value::Double(42.0)),
            Duration::from_secs(60),
        )
    };
    // Until the gateway's subscription is in place, commands find no session.
    loop {
        let before = ingest.stats().command_acks;
        issuer.issue(&request()).await.unwrap();
        if tokio::time::timeout(
            Duration::from_secs(2),
            ingest.wait_for(|s| s.command_acks > before),
        )
        .await
        .is_ok()
        {
            break;
        }
    }
    let mut out = Vec::with_capacity(count);
    let start = Instant::now();
    for _ in 0..count {
        let before = ingest.stats().command_acks;
        let t = Instant::now();
        issuer.issue(&request()).await.unwrap();
        ingest.wait_for(|s| s.command_acks > before).await;
        out.push(t.elapsed());
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    ic.cancel();
    gw.shutdown(&cancel, Duration::from_secs(1)).await;
    cancel.cancel();
    (out, rate)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let count = n();
        println!(
            "command round trip, {count} commands per measurement, Mosquitto at {}",
            mqtt_url()
        );
        let echo = report("mqtt echo (publish + echo)", &mut mqtt_echo(count).await);
        let exec = report(
            "executor (ledger + control lane)",
            &mut executor_alone(count).await,
        );
        let modbus = report(
            "modbus write (FC16 to the sim)",
            &mut modbus_write(count).await,
        );
        let sink = report(
            "sink commit (one ack, SQLite)",
            &mut sink_commit(count).await,
        );
        let (mut rt_v, rate) = round_trip(count).await;
        let whole = report("round trip (issue → ack stored)", &mut rt_v);
        let parts = echo + exec + modbus + sink;
        println!("sum of the parts' p50            {parts:>9.0} µs");
        println!(
            "round trip p50 / sum of parts    {:>9.2}x   (goal ≤ 1.2x)",
            whole / parts
        );
        println!("sustained, one device            {rate:>9.0} commands/s");
    });
}
