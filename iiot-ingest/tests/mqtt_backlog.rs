//! Regression: MQTT source deadlock behind a backlog larger than
//! `channel_capacity` (found by the issue 7 end-to-end bench,
//! `benches/e2e_mosquitto.rs`).
//!
//! Mosquitto 2.0 does not hold its deliveries to a reconnecting MQTT 3.1.1
//! subscriber to `max_inflight_messages`: it streams its backlog. The source's
//! session task then waited on the full delivery channel, so nothing drained
//! rumqttc's request queue, so the pipeline's acks (which waited for a slot in
//! that queue) never returned, so the pipeline never took another delivery:
//! ingest stopped for good after a few hundred messages.
//!
//! Here a persistent session goes offline, a backlog of several hundred QoS 1
//! messages builds up, and the source (channel capacity 8) restarts behind it
//! with a slow sink. Every message must be committed once and acknowledged
//! within a deadline, and a later session must find nothing left un-acked.
#![cfg(feature = "mqtt")]

mod common;

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mosquitto::{Mosquitto, Publisher};
use iiot_core::codec::{json, protobuf};
use iiot_core::topic::UnsPath;
use iiot_core::types::{DeviceId, MessageId, Sample, Sequence, Status, TagPath, TelemetryBatch};
use iiot_ingest::record::{CommitBatch, CommitReport, DeviceSequenceState};
use iiot_ingest::sink::{Sink, SinkError};
use iiot_ingest::source::Source;
use iiot_ingest::source::mqtt::{MqttSource, MqttSourceConfig};
use iiot_ingest::{Pipeline, PipelineConfig, PipelineHandle, PipelineStats};
use iiot_protocols::mqtt::MqttVersion;
use tokio_util::sync::CancellationToken;

/// Messages in the backlog: far more than the channel, the broker's in-flight
/// window and rumqttc's request queue (64) together.
const BACKLOG: u64 = 600;

/// No progress for this long fails the test (the old code hung forever).
const DEADLINE: Duration = Duration::from_secs(30);

/// A slow sink that records the message id of every telemetry batch committed.
struct SlowSink {
    ids: Arc<Mutex<Vec<MessageId>>>,
    delay: Duration,
}

impl Sink for SlowSink {
    async fn commit(&mut self, batch: &CommitBatch) -> Result<CommitReport, SinkError> {
        // The sink's own work takes time; this is not synchronisation.
        tokio::time::sleep(self.delay).await;
        let mut ids = self.ids.lock().unwrap();
        ids.extend(batch.telemetry.iter().map(|b| b.batch.message_id));
        Ok(CommitReport {
            batches_written: batch.telemetry.len() as u64,
            batches_skipped: 0,
            rows_written: batch.sample_count() as u64,
        })
    }

    async fn load_sequence_state(&mut self) -> Result<Vec<DeviceSequenceState>, SinkError> {
        Ok(Vec::new())
    }
}

fn path(dev: &str) -> UnsPath {
    UnsPath::new(
        "backlog",
        "plant1",
        "area1",
        "line1",
        "plc",
        DeviceId::new(dev).unwrap(),
    )
    .unwrap()
}

fn source_config(
    broker: &Mosquitto,
    client_id: &str,
    filter: &str,
    protocol: MqttVersion,
) -> MqttSourceConfig {
    let mut c = MqttSourceConfig {
        url: broker.url(),
        protocol,
        client_id: client_id.to_owned(),
        channel_capacity: NonZeroUsize::new(8).unwrap(),
        reconnect_min: Duration::from_millis(100),
        ..MqttSourceConfig::default()
    };
    c.filters = vec![filter.to_owned(), "backlog/+/+/+/+/+/status".to_owned()];
    c
}

fn probe() -> (String, Vec<u8>) {
    (
        path("probe").status().to_string(),
        json::encode_status(&Status::birth(DeviceId::new("probe").unwrap())),
    )
}

/// Publishes status probes until `source` delivers one (acking it), returning
/// the telemetry topics delivered before it.
async fn until_probe(source: &mut MqttSource, publisher: &mut Publisher) -> Vec<String> {
    let (topic, payload) = probe();
    let mut before = Vec::new();
    for _ in 0..50 {
        publisher
            .publish_all(&[(topic.clone(), payload.clone())])
            .await;
        while let Ok(r) = tokio::time::timeout(Duration::from_millis(300), source.recv()).await {
            let d = r.unwrap().expect("source ended");
            let is_probe = d.topic == topic;
            if !is_probe {
                before.push(d.topic.clone());
            }
            source.ack(d.token).await.unwrap();
            if is_probe {
                return before;
            }
        }
    }
    panic!("the MQTT source never received a probe");
}

/// The backlog: one device, sequences 1..=BACKLOG, one sample each.
fn backlog() -> (Vec<(String, Vec<u8>)>, BTreeSet<MessageId>) {
    let topic = path("dev0").telemetry().to_string();
    let mut ids = BTreeSet::new();
    let msgs = (1..=BACKLOG)
        .map(|seq| {
            let t = iiot_core::types::Timestamp::from_unix_nanos(
                1_767_225_600_000_000_000 + seq as i64 * 1_000_000,
            )
            .unwrap();
            let sample = Sample::good(TagPath::new("t").unwrap(), seq as f64, t);
            let mut b =
                TelemetryBatch::new(DeviceId::new("dev0").unwrap(), Sequence(seq), vec![sample]);
            b.message_id = MessageId::generate();
            ids.insert(b.message_id);
            (topic.clone(), protobuf::encode_telemetry(&b))
        })
        .collect();
    (msgs, ids)
}

async fn wait_all(
    handle: &mut PipelineHandle,
    committed: &Arc<Mutex<Vec<MessageId>>>,
) -> PipelineStats {
    let done = |s: &PipelineStats| s.rows_written >= BACKLOG && s.acked == s.received;
    match tokio::time::timeout(DEADLINE, handle.wait_for(done)).await {
        Ok(s) => s,
        Err(elapsed) => panic!(
            "stalled behind the backlog (the channel_capacity deadlock, {elapsed}): {} of \
             {BACKLOG} committed after {DEADLINE:?}: {:?}",
            committed.lock().unwrap().len(),
            handle.stats()
        ),
    }
}

/// Offline backlog of [`BACKLOG`] messages, channel capacity 8, a slow sink:
/// all committed exactly once and acknowledged, nothing left at the broker.
async fn drains_backlog(broker: &Mosquitto, filter: &str, client_id: &str, protocol: MqttVersion) {
    let mut publisher = Publisher::connect(broker.port(), &format!("{client_id}-pub")).await;
    let cfg = source_config(broker, client_id, filter, protocol);

    // 1. Create the persistent session, then take the source offline.
    let mut source = MqttSource::start(&cfg).unwrap();
    until_probe(&mut source, &mut publisher).await;
    drop(source);
    assert!(
        broker
            .wait_departures(client_id, 1, Duration::from_secs(10))
            .await,
        "the source did not leave: {}",
        broker.log()
    );

    // 2. The backlog builds up while it is offline.
    let (msgs, expected) = backlog();
    publisher.publish_all(&msgs).await;

    // 3. Restart behind it with a slow sink.
    let committed = Arc::new(Mutex::new(Vec::new()));
    let sink = SlowSink {
        ids: Arc::clone(&committed),
        delay: Duration::from_millis(20),
    };
    let pcfg = PipelineConfig {
        batch_max_rows: NonZeroUsize::new(100).unwrap(),
        retry_initial: Duration::from_millis(20),
        ..PipelineConfig::default()
    };
    let (mut handle, pipeline) = Pipeline::new(MqttSource::start(&cfg).unwrap(), sink, pcfg);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));
    wait_all(&mut handle, &committed).await;
    cancel.cancel();
    let stats = task.await.unwrap().unwrap();

    let got = committed.lock().unwrap().clone();
    let unique: BTreeSet<MessageId> = got.iter().copied().collect();
    assert_eq!(unique, expected, "every backlog message committed");
    assert_eq!(
        got.len() as u64,
        BACKLOG,
        "each committed once (no reconnect, no redelivery): {stats:?}"
    );
    assert_eq!(stats.duplicates_suppressed + stats.duplicates_at_sink, 0);
    assert_eq!(stats.acked, stats.received, "{stats:?}");

    // 4. Every ack reached the broker: a new session gets nothing back before a
    // fresh probe.
    assert!(
        broker
            .wait_departures(client_id, 2, Duration::from_secs(10))
            .await,
        "the pipeline's source did not leave: {}",
        broker.log()
    );
    let mut source = MqttSource::start(&cfg).unwrap();
    let redelivered = until_probe(&mut source, &mut publisher).await;
    assert!(
        redelivered.is_empty(),
        "{} messages were left un-acknowledged at the broker",
        redelivered.len()
    );
    drop(source);
    publisher.disconnect().await;
}

fn broker() -> Option<Mosquitto> {
    // The broker's defaults for in flight (20), and room for the whole backlog.
    Mosquitto::start("max_inflight_messages 20\nmax_queued_messages 100000\nmax_queued_bytes 0")
}

/// Plain subscription, MQTT 5 (Receive Maximum = channel capacity; the
/// connection keeps being read while the sink is slow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_larger_than_channel_capacity_drains() {
    let Some(broker) = broker() else {
        return;
    };
    drains_backlog(
        &broker,
        "backlog/+/+/+/+/+/telemetry/#",
        "ingest-plain",
        MqttVersion::V5,
    )
    .await;
}

/// Plain subscription, MQTT 3.1.1 (the broker streams its backlog; acks are
/// written while the session does not read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_larger_than_channel_capacity_drains_mqtt311() {
    let Some(broker) = broker() else {
        return;
    };
    drains_backlog(
        &broker,
        "backlog/+/+/+/+/+/telemetry/#",
        "ingest-plain-311",
        MqttVersion::V311,
    )
    .await;
}
