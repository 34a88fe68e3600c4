//! End to end against the real services: Mosquitto (`IIOT_MQTT_URL`) into
//! PostgreSQL (`IIOT_PG_URL`) through the MQTT source, the pipeline and the
//! PostgreSQL sink. Also the crash between commit and broker ack.
#![cfg(all(feature = "mqtt", feature = "postgres"))]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::pg::PgEnv;
use common::services::missing;
use iiot_core::codec::protobuf;
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    DeviceId, MessageId, Sample, Sequence, Status, TagPath, TelemetryBatch, Timestamp,
};
use iiot_ingest::record::{CommitBatch, CommitReport, DeviceSequenceState};
use iiot_ingest::sink::postgres::PostgresSink;
use iiot_ingest::sink::{Sink, SinkError};
use iiot_ingest::source::mqtt::{MqttSource, MqttSourceConfig};
use iiot_ingest::{Pipeline, PipelineConfig, PipelineHandle, PipelineStats};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

fn mqtt_url() -> String {
    std::env::var("IIOT_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_owned())
}

fn host_port() -> (String, u16) {
    let url = mqtt_url();
    let rest = url.trim_start_matches("mqtt://");
    let (h, p) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    (h.to_owned(), p.parse().unwrap_or(1883))
}

/// A QoS 1 publisher whose `publish` returns after the broker's PUBACK; `None`
/// (after reporting) when Mosquitto is unreachable.
struct Publisher {
    client: AsyncClient,
    acks: tokio::sync::mpsc::Receiver<()>,
}

impl Publisher {
    async fn connect(id: &str) -> Option<Self> {
        let (h, p) = host_port();
        let mut o = MqttOptions::new(id, h, p);
        o.set_keep_alive(Duration::from_secs(10))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut ev) = AsyncClient::new(o, 1000);
        let (tx, mut rx) = tokio::sync::mpsc::channel(10_000);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        if tx.send(()).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(Err(e.to_string()));
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(5), ready_rx).await {
            Ok(Ok(Ok(()))) => {
                while rx.try_recv().is_ok() {}
                Some(Self { client, acks: rx })
            }
            other => {
                missing("Mosquitto", &format!("{}: {other:?}", mqtt_url()));
                None
            }
        }
    }

    async fn publish(&mut self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.acks.recv())
            .await
            .unwrap()
            .unwrap();
    }
}

static N: AtomicU32 = AtomicU32::new(0);

fn unique(name: &str) -> String {
    format!(
        "{name}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn path(ent: &str, dev: &str) -> UnsPath {
    UnsPath::new(
        ent,
        "plant1",
        "area1",
        "line1",
        "plc",
        DeviceId::new(dev).unwrap(),
    )
    .unwrap()
}

fn batch(dev: &str, seq: u64, n: usize) -> TelemetryBatch {
    let t = Timestamp::from_unix_nanos(1_764_120_152_000_000_000 + seq as i64 * 1_000_000).unwrap();
    let samples = (0..n)
        .map(|i| {
            Sample::good(
                TagPath::new(format!("t{i}")).unwrap(),
                seq as f64 + i as f64,
                t,
            )
        })
        .collect();
    let mut b = TelemetryBatch::new(DeviceId::new(dev).unwrap(), Sequence(seq), samples);
    b.message_id = MessageId::generate();
    b
}

fn source(ent: &str, client_id: &str) -> MqttSource {
    let mut c = MqttSourceConfig {
        url: mqtt_url(),
        client_id: client_id.to_owned(),
        ..MqttSourceConfig::default()
    };
    c.filters = vec![
        format!("$share/{client_id}/{ent}/+/+/+/+/+/telemetry/#"),
        format!("{ent}/+/+/+/+/+/status"),
    ];
    MqttSource::start(&c).unwrap()
}

fn config() -> PipelineConfig {
    PipelineConfig {
        retry_initial: Duration::from_millis(20),
        ..PipelineConfig::default()
    }
}

async fn wait(
    handle: &mut PipelineHandle,
    what: &str,
    pred: impl FnMut(&PipelineStats) -> bool,
) -> PipelineStats {
    match tokio::time::timeout(Duration::from_secs(60), handle.wait_for(pred)).await {
        Ok(s) => s,
        Err(e) => panic!("{what} ({e}): {:?}", handle.stats()),
    }
}

/// Publishes status probes until the pipeline has seen one: the subscription is live.
async fn until_subscribed(publisher: &mut Publisher, handle: &mut PipelineHandle, ent: &str) {
    let status = path(ent, "probe").status().to_string();
    let payload =
        iiot_core::codec::json::encode_status(&Status::birth(DeviceId::new("probe").unwrap()));
    for _ in 0..100 {
        let before = handle.stats().acked;
        publisher.publish(&status, payload.clone()).await;
        if tokio::time::timeout(
            Duration::from_millis(300),
            handle.wait_for(|s| s.acked > before),
        )
        .await
        .is_ok()
        {
            return;
        }
    }
    panic!("the MQTT source never received a probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_to_postgres_exact_rows_dead_letters_and_gaps() {
    let Some(mut publisher) = Publisher::connect(&unique("pub")).await else {
        return;
    };
    let Some(env) = PgEnv::new("mqtt_ingest_exact").await else {
        return;
    };
    let ent = unique("ent");
    let client_id = unique("ingest");
    let sink = env.sink().await;
    let (mut handle, pipeline) = Pipeline::new(source(&ent, &client_id), sink, config());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));
    until_subscribed(&mut publisher, &mut handle, &ent).await;
    let base = handle.stats().acked;

    let mut sent_count = 0u64;
    let mut sent_batches = Vec::new();
    for d in 0..3 {
        let dev = format!("dev{d}");
        for seq in 1..=20u64 {
            if d == 0 && seq == 10 {
                continue; // a gap
            }
            let b = batch(&dev, seq, 5);
            let bytes = protobuf::encode_telemetry(&b);
            publisher
                .publish(&path(&ent, &dev).telemetry().to_string(), bytes.clone())
                .await;
            sent_count += 1;
            sent_batches.push((dev.clone(), bytes));
        }
    }
    // Five duplicates (a gateway resending after a lost PUBACK).
    for (dev, bytes) in sent_batches.iter().take(5) {
        publisher
            .publish(&path(&ent, dev).telemetry().to_string(), bytes.clone())
            .await;
        sent_count += 1;
    }
    let topic = path(&ent, "dev1").telemetry().to_string();
    publisher
        .publish(&topic, br#"{"schema_version": 3, "msg_id": "x"}"#.to_vec())
        .await;
    publisher
        .publish(&topic, vec![0xde, 0xad, 0xbe, 0xef])
        .await;
    sent_count += 2;

    let stats = wait(&mut handle, "all acknowledged", |s| {
        s.acked >= base + sent_count
    })
    .await;
    assert_eq!(stats.rows_written, 59 * 5, "{stats:?}");
    assert_eq!(stats.duplicates_suppressed + stats.duplicates_at_sink, 5);
    assert_eq!(env.count("samples").await, 59 * 5);
    assert_eq!(env.count("messages").await, 59);
    assert_eq!(env.count("dead_letter").await, 2);
    let gaps = env
        .client
        .query(
            &format!(
                "SELECT device_id, first_seq::text, last_seq::text FROM {}",
                env.table("gaps")
            ),
            &[],
        )
        .await
        .unwrap();
    let gaps: Vec<(String, String, String)> = gaps
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        gaps,
        vec![("dev0".to_owned(), "10".to_owned(), "10".to_owned())]
    );
    let reasons = env
        .client
        .query(
            &format!(
                "SELECT reason FROM {} ORDER BY reason",
                env.table("dead_letter")
            ),
            &[],
        )
        .await
        .unwrap();
    let reasons: Vec<String> = reasons.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        reasons,
        vec!["decode:malformed_protobuf", "decode:unsupported_version"]
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}

/// Commits, then never returns: the process "dies" between commit and ack.
struct DieAfterCommit {
    inner: PostgresSink,
    died: Arc<tokio::sync::Notify>,
}

impl Sink for DieAfterCommit {
    async fn commit(&mut self, batch: &CommitBatch) -> Result<CommitReport, SinkError> {
        let report = self.inner.commit(batch).await?;
        if report.rows_written > 0 {
            self.died.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(report)
    }
    async fn load_sequence_state(&mut self) -> Result<Vec<DeviceSequenceState>, SinkError> {
        self.inner.load_sequence_state().await
    }
}

/// Regression for the at-least-once contract (issue #7): the worker dies after
/// its commit and before its acks; the broker redelivers to the restarted worker
/// and the row count does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_commit_and_ack_writes_no_duplicate_rows() {
    let Some(mut publisher) = Publisher::connect(&unique("pub")).await else {
        return;
    };
    let Some(env) = PgEnv::new("mqtt_ingest_crash").await else {
        return;
    };
    let ent = unique("ent");
    let client_id = unique("ingest");

    let died = Arc::new(tokio::sync::Notify::new());
    let sink = DieAfterCommit {
        inner: env.sink().await,
        died: Arc::clone(&died),
    };
    let cfg = PipelineConfig {
        idle_flush: Duration::from_millis(300),
        ..config()
    };
    let (mut handle, pipeline) = Pipeline::new(source(&ent, &client_id), sink, cfg);
    let task = tokio::spawn(pipeline.run(CancellationToken::new()));
    until_subscribed(&mut publisher, &mut handle, &ent).await;

    for seq in 1..=30u64 {
        let b = batch("dev0", seq, 4);
        publisher
            .publish(
                &path(&ent, "dev0").telemetry().to_string(),
                protobuf::encode_telemetry(&b),
            )
            .await;
    }
    tokio::time::timeout(Duration::from_secs(30), died.notified())
        .await
        .unwrap();
    let committed_before_crash = env.count("samples").await;
    assert!(committed_before_crash > 0);
    task.abort();
    let _ = task.await;
    // The broker saw no PUBACK for anything of the dead worker's last commit.

    let (mut handle, pipeline) =
        Pipeline::new(source(&ent, &client_id), env.sink().await, config());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));
    // Every batch of the dead worker's commit was left un-acknowledged, so all of
    // them come back: the new worker writes exactly the rest and skips those.
    let before = u64::try_from(committed_before_crash).unwrap();
    let stats = wait(&mut handle, "all 30 batches stored", |s| {
        s.rows_written == 30 * 4 - before && s.duplicates_at_sink == before / 4
    })
    .await;
    assert_eq!(env.count("samples").await, 30 * 4, "{stats:?}");
    assert_eq!(env.count("messages").await, 30);
    assert!(
        stats.duplicates_at_sink > 0,
        "the redelivered, already committed batches were skipped: {stats:?}"
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}
