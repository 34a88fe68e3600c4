//! The gateway runtime is source-agnostic (issue 14): fake sources that are not
//! Modbus go through the same report by exception, batching, sequence stamping
//! and forwarding; two sources share one sequence space; what the sources
//! produced before a stop is appended.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::gateway::{Recorder, path};
use iiot_core::codec::{Limits, protobuf};
use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError};
use iiot_core::quality::Quality;
use iiot_core::source::{Deadband, ReadingSink, ReportPolicy, Source, SourceInfo};
use iiot_core::types::{DeviceId, Sample, TagPath, TelemetryBatch, Timestamp, Value};
use iiot_edge::outbox::{Outbox, OutboxConfig};
use iiot_edge::runtime::{BatchConfig, GatewayBuilder};
use tokio_util::sync::CancellationToken;

/// Emits a fixed list of readings, then waits for the stop.
struct Script {
    name: &'static str,
    policies: Vec<(&'static str, ReportPolicy)>,
    readings: Vec<Sample>,
}

impl Source for Script {
    fn info(&self) -> SourceInfo {
        self.policies
            .iter()
            .fold(SourceInfo::new(self.name), |i, (t, p)| {
                i.with_tag(TagPath::new(*t).unwrap(), *p)
            })
    }

    async fn run<K: ReadingSink + 'static>(
        self,
        mut sink: K,
        stop: impl Future<Output = ()> + Send + 'static,
    ) {
        for r in self.readings {
            if sink.send(r).await.is_err() {
                return;
            }
        }
        stop.await;
    }
}

fn good(tag: &str, v: f64) -> Sample {
    Sample::good(TagPath::new(tag).unwrap(), v, Timestamp::now())
}

/// The device's outbox in `dir/name`.
async fn open(dir: &std::path::Path, name: &str, config: OutboxConfig) -> Outbox {
    Outbox::open(dir.join(name), DeviceId::new("dev-1").unwrap(), config)
        .await
        .unwrap()
}

async fn run(sources: Vec<Script>, max_samples: usize) -> (Vec<TelemetryBatch>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path(), "ob", OutboxConfig::default()).await;
    let recorder = Recorder::default();
    let mut batch = BatchConfig::default();
    batch
        .set_max_samples(NonZeroUsize::new(max_samples).unwrap())
        .set_max_delay(Duration::from_secs(3600));
    let mut builder = GatewayBuilder::new(path(), outbox, recorder.clone()).batch(batch);
    for s in sources {
        builder = builder.source(s);
    }
    let cancel = CancellationToken::new();
    let mut gw = builder.start(&cancel);
    gw.stop_producing().await;
    let samples = gw.counters().samples.load(Ordering::Relaxed);
    assert!(
        gw.shutdown(&cancel, Duration::from_secs(10)).await,
        "drained"
    );
    let topic = path().telemetry().to_string();
    let batches = recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m.topic, topic);
            protobuf::decode_telemetry(&m.payload, &Limits::default()).unwrap()
        })
        .collect();
    (batches, samples)
}

fn values(batches: &[TelemetryBatch], tag: &str) -> Vec<Option<Value>> {
    batches
        .iter()
        .flat_map(|b| b.samples.iter())
        .filter(|s| s.tag().as_str() == tag)
        .map(|s| s.value().cloned())
        .collect()
}

#[tokio::test]
async fn a_fake_source_gets_report_by_exception_batching_and_sequences() {
    let bad = Sample::without_value(
        TagPath::new("level").unwrap(),
        Quality::BAD_TIMEOUT,
        Timestamp::now(),
    );
    let script = Script {
        name: "fake",
        policies: vec![(
            "level",
            ReportPolicy::deadband(Deadband::Absolute(1.0), None),
        )],
        readings: vec![
            good("level", 10.0),
            good("count", 1.0),
            good("level", 10.5), // inside the deadband: not reported
            good("count", 1.0),  // no deadband declared: every reading
            good("level", 11.5),
            bad, // quality change: always reported
            good("level", 11.6),
        ],
    };
    let (batches, samples) = run(vec![script], 2).await;
    assert_eq!(
        values(&batches, "level"),
        vec![
            Some(Value::Double(10.0)),
            Some(Value::Double(11.5)),
            None,
            Some(Value::Double(11.6))
        ]
    );
    assert_eq!(values(&batches, "count").len(), 2);
    assert_eq!(samples, 6);
    // Batches of two, one sequence, unique message ids.
    let seqs: Vec<u64> = batches.iter().map(|b| b.seq.0).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert!(batches.iter().all(|b| b.samples.len() == 2));
    let ids: HashSet<_> = batches.iter().map(|b| b.message_id).collect();
    assert_eq!(ids.len(), 3);
}

#[tokio::test]
async fn two_sources_share_one_contiguous_sequence() {
    let many = |name: &'static str, tag: &'static str| Script {
        name,
        policies: Vec::new(),
        readings: (0..50).map(|i| good(tag, f64::from(i))).collect(),
    };
    let (batches, samples) = run(vec![many("one", "a"), many("two", "b")], 7).await;
    assert_eq!(samples, 100);
    assert_eq!(values(&batches, "a").len(), 50);
    assert_eq!(values(&batches, "b").len(), 50);
    let seqs: Vec<u64> = batches.iter().map(|b| b.seq.0).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "contiguous from 1");
    // Each source's readings keep their order.
    let a: Vec<Option<Value>> = (0..50).map(|i| Some(Value::Double(f64::from(i)))).collect();
    assert_eq!(values(&batches, "a"), a);
}

/// Fails every publish while `down`, then confirms and records.
#[derive(Clone, Default)]
struct Switch {
    down: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<Mutex<Vec<OutboundMessage>>>,
}

impl ConfirmedPublish for Switch {
    async fn publish_confirmed(&self, m: OutboundMessage) -> Result<(), PublishError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PublishError {
                message: m,
                kind: iiot_core::publish::PublishErrorKind::ConnectionLost,
            });
        }
        self.seen.lock().unwrap().push(m);
        Ok(())
    }
}

/// Control-lane messages appended between telemetry batches take no telemetry
/// sequence numbers and go out ahead of a 10 000 batch telemetry backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_lane_goes_ahead_of_a_telemetry_backlog() {
    use iiot_edge::forwarder::ForwarderConfig;
    use iiot_edge::outbox::WhenFull;

    const BATCHES: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    // EveryWrite: one appender, one fdatasync per batch.
    let outbox = open(dir.path(), "telemetry", OutboxConfig::default()).await;
    let mut control_cfg = OutboxConfig::default();
    control_cfg.set_when_full(WhenFull::Block);
    let control = open(dir.path(), "control", control_cfg).await;
    let transport = Switch::default();
    transport.down.store(true, Ordering::SeqCst);
    let mut fc = ForwarderConfig::default();
    fc.set_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .set_max_in_flight(NonZeroUsize::new(16).unwrap());
    let mut batch = BatchConfig::default();
    batch.set_max_samples(NonZeroUsize::MIN);
    let script = Script {
        name: "many",
        policies: Vec::new(),
        readings: (0..BATCHES).map(|i| good("t", i as f64)).collect(),
    };
    let cancel = CancellationToken::new();
    let mut gw = GatewayBuilder::new(path(), outbox, transport.clone())
        .batch(batch)
        .forwarder(fc.clone())
        .control_lane(control, fc)
        .source(script)
        .start(&cancel);
    gw.stop_producing().await;
    assert_eq!(gw.counters().batches.load(Ordering::Relaxed), BATCHES);
    let ack_topic = format!("{}/commands/01J0000000000000000000000A/ack", path());
    for i in 0..3u8 {
        let seq = gw
            .control()
            .unwrap()
            .publish(OutboundMessage::new(ack_topic.clone(), vec![i]))
            .await
            .unwrap();
        assert_eq!(seq.0, u64::from(i) + 1, "the control lane's own numbering");
    }
    transport.down.store(false, Ordering::SeqCst);
    assert!(
        gw.shutdown(&cancel, Duration::from_secs(60)).await,
        "drained"
    );

    let seen = transport.seen.lock().unwrap().clone();
    let acks: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, m)| m.topic == ack_topic)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(acks.len(), 3, "each control message once");
    // At most the telemetry forwarder's window went out before them.
    assert!(
        acks.iter().all(|&i| i < 16 + 3),
        "control positions {acks:?}"
    );
    let telemetry = path().telemetry().to_string();
    let mut seqs: Vec<u64> = seen
        .iter()
        .filter(|m| m.topic == telemetry)
        .map(|m| {
            protobuf::decode_telemetry(&m.payload, &Limits::default())
                .unwrap()
                .seq
                .0
        })
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    let expected: Vec<u64> = (1..=BATCHES).collect();
    assert_eq!(
        seqs, expected,
        "telemetry contiguous, no number taken by the control lane"
    );
}

/// Hands every publish to a channel the test reads.
#[derive(Clone)]
struct Tap(tokio::sync::mpsc::Sender<OutboundMessage>);

impl ConfirmedPublish for Tap {
    async fn publish_confirmed(&self, m: OutboundMessage) -> Result<(), PublishError> {
        let _ = self.0.send(m).await;
        Ok(())
    }
}

/// The periodic heartbeat (issue 14): the retained status carries the outbox
/// backlog and each source's last good read, in the JSON status form.
#[tokio::test]
async fn heartbeat_carries_backlog_and_last_good_read() {
    use iiot_core::codec::json;
    let dir = tempfile::tempdir().unwrap();
    let outbox = open(dir.path(), "ob", OutboxConfig::default()).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let t = Timestamp::from_unix_nanos(1_767_225_600_000_000_000).unwrap();
    let script = Script {
        name: "plc",
        policies: Vec::new(),
        readings: vec![
            Sample::good(TagPath::new("x").unwrap(), 1.0, t),
            Sample::without_value(
                TagPath::new("x").unwrap(),
                Quality::BAD_TIMEOUT,
                Timestamp::now(),
            ),
        ],
    };
    let cancel = CancellationToken::new();
    let mut batch = BatchConfig::default();
    batch.set_max_samples(NonZeroUsize::new(2).unwrap());
    let gw = GatewayBuilder::new(path(), outbox, Tap(tx))
        .batch(batch)
        .heartbeat(Duration::from_millis(20))
        .source(script)
        .start(&cancel);
    let status_topic = path().status().to_string();
    let status = loop {
        let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a heartbeat in time")
            .unwrap();
        if m.topic != status_topic {
            continue;
        }
        assert!(m.retain);
        let s = json::decode_status(&m.payload, &Limits::default()).unwrap();
        // Wait for the one that saw the good read.
        if s.sources.first().and_then(|h| h.last_good).is_some() {
            break s;
        }
    };
    assert!(status.online);
    assert!(status.backlog.is_some());
    assert_eq!(status.sources.len(), 1);
    assert_eq!(status.sources[0].name, "plc");
    assert_eq!(
        status.sources[0].last_good,
        Some(t),
        "the Bad read does not count"
    );
    assert!(gw.shutdown(&cancel, Duration::from_secs(10)).await);
}

/// A transport that confirms only what a test lets through (a permit per message).
#[derive(Clone)]
struct Gated(Arc<tokio::sync::Semaphore>, Recorder);

impl ConfirmedPublish for Gated {
    async fn publish_confirmed(&self, m: OutboundMessage) -> Result<(), PublishError> {
        self.0.acquire().await.unwrap().forget();
        self.1.publish_confirmed(m).await
    }
}

/// A clean shutdown drains the control lane too: an ack the broker has not
/// confirmed makes `shutdown` wait (and report `false` when its drain time runs
/// out); once confirmed, `shutdown` reports it empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_control_lane() {
    async fn start(
        dir: &std::path::Path,
        gate: &Gated,
    ) -> (iiot_edge::runtime::Gateway, CancellationToken) {
        let device = DeviceId::new("dev-1").unwrap();
        let telemetry = Outbox::open(dir.join("t"), device.clone(), OutboxConfig::default())
            .await
            .unwrap();
        let control = Outbox::open(dir.join("c"), device, OutboxConfig::default())
            .await
            .unwrap();
        let cancel = CancellationToken::new();
        let gw = GatewayBuilder::new(path(), telemetry, gate.clone())
            .control_lane(control, iiot_edge::forwarder::ForwarderConfig::default())
            .start(&cancel);
        (gw, cancel)
    }
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::default();
    let gate = Gated(Arc::new(tokio::sync::Semaphore::new(0)), recorder.clone());
    let ack = OutboundMessage::new(format!("{}/commands/x/ack", path()), "ack");
    // Never confirmed: the drain time runs out and shutdown says so.
    let (gw, cancel) = start(dir.path(), &gate).await;
    gw.control().unwrap().publish(ack.clone()).await.unwrap();
    assert!(
        !gw.shutdown(&cancel, Duration::from_millis(300)).await,
        "the ack is still waiting"
    );
    assert!(recorder.0.lock().unwrap().is_empty());
    // Next run: the broker confirms; shutdown waits for it and reports empty.
    let (gw, cancel) = start(dir.path(), &gate).await;
    gate.0.add_permits(10);
    assert!(gw.shutdown(&cancel, Duration::from_secs(10)).await);
    assert_eq!(
        recorder.0.lock().unwrap().len(),
        1,
        "the ack left before the stop"
    );
}
