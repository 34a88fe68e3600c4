//! The pipeline over an in-memory source and sink: exact outcomes for mixed
//! input, ack-after-commit, retries, poison isolation, back-pressure, restart.

mod common;

use std::num::NonZeroUsize;
use std::time::Duration;

use common::sink::GatedSink;
use iiot_core::codec::{DecodeError, json, protobuf};
use iiot_core::quality::Quality;
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    DataLoss, DataLossReason, DeviceId, MessageId, Sample, Sequence, TagPath, TelemetryBatch,
    Timestamp,
};
use iiot_core::version::data_loss_topic;
use iiot_ingest::record::DeadLetterReason;
use iiot_ingest::sink::memory::MemorySink;
use iiot_ingest::source::memory::{MemoryFeed, MemorySource};
use iiot_ingest::{Pipeline, PipelineConfig, PipelineStats};
use tokio_util::sync::CancellationToken;

fn path(dev: &str) -> UnsPath {
    UnsPath::new(
        "acme",
        "plant1",
        "area1",
        "line1",
        "plc",
        DeviceId::new(dev).unwrap(),
    )
    .unwrap()
}

fn batch(dev: &str, seq: u64, n: usize) -> TelemetryBatch {
    let t = Timestamp::from_unix_nanos(1_764_120_152_000_000_000 + seq as i64).unwrap();
    let samples = (0..n)
        .map(|i| {
            Sample::good(
                TagPath::new(format!("tag{i}")).unwrap(),
                (seq * 100 + i as u64) as f64,
                t,
            )
        })
        .collect();
    let mut b = TelemetryBatch::new(DeviceId::new(dev).unwrap(), Sequence(seq), samples);
    b.message_id = MessageId::from_parts(
        1_764_120_152_000,
        u128::from(seq) | (dev.len() as u128) << 64,
    );
    b
}

async fn send(feed: &MemoryFeed, b: &TelemetryBatch) {
    let topic = path(b.device_id.as_str()).telemetry().to_string();
    feed.send(topic, protobuf::encode_telemetry(b))
        .await
        .unwrap();
}

/// Waits for the pipeline's counters to satisfy `pred`, failing the test (with
/// the counters) instead of hanging when they never do.
async fn wait(
    handle: &mut iiot_ingest::PipelineHandle,
    pred: impl FnMut(&PipelineStats) -> bool,
) -> PipelineStats {
    match tokio::time::timeout(Duration::from_secs(60), handle.wait_for(pred)).await {
        Ok(s) => s,
        Err(elapsed) => panic!(
            "pipeline never reached the expected state ({elapsed}): {:?}",
            handle.stats()
        ),
    }
}

fn config() -> PipelineConfig {
    PipelineConfig {
        batch_max_delay: Duration::from_millis(50),
        retry_initial: Duration::from_millis(10),
        ..PipelineConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn mixed_input_gives_exact_rows_dead_letters_and_gaps() {
    let (source, feed) = MemorySource::new(64);
    let acked = source.acked();
    let sink = MemorySink::new();
    let (mut handle, pipeline) = Pipeline::new(source, sink.clone(), config());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));

    for seq in [1, 2, 3, 5, 6] {
        send(&feed, &batch("plc-01", seq, 4)).await; // seq 4 missing: a gap
    }
    send(&feed, &batch("plc-01", 2, 4)).await; // duplicate
    send(&feed, &batch("plc-02", 1, 3)).await;
    // The JSON form of a batch from a brownfield device.
    let topic = path("plc-02").telemetry().to_string();
    feed.send(
        topic.clone(),
        json::encode_telemetry(&batch("plc-02", 2, 3)),
    )
    .await
    .unwrap();
    // Unknown version, garbage, bad topic, device mismatch.
    feed.send(
        topic.clone(),
        br#"{"schema_version": 7, "future": true}"#.to_vec(),
    )
    .await
    .unwrap();
    feed.send(topic.clone(), vec![0xff, 0x00, 0x13])
        .await
        .unwrap();
    feed.send(
        "not/a/uns/topic",
        protobuf::encode_telemetry(&batch("plc-03", 1, 1)),
    )
    .await
    .unwrap();
    feed.send(topic, protobuf::encode_telemetry(&batch("plc-09", 1, 1)))
        .await
        .unwrap();
    // An announced loss on plc-02: 3..=9.
    let loss = DataLoss::new(
        DeviceId::new("plc-02").unwrap(),
        Sequence(3),
        Sequence(9),
        7,
        DataLossReason::Overflow,
        Timestamp::now(),
    )
    .unwrap();
    feed.send(
        data_loss_topic(&path("plc-02")).to_string(),
        protobuf::encode_data_loss(&loss),
    )
    .await
    .unwrap();

    let stats = wait(&mut handle, |s| s.acked == 13).await;
    assert_eq!(stats.received, 13);
    assert_eq!(stats.rows_written, 5 * 4 + 2 * 3);
    assert_eq!(stats.duplicates_suppressed, 1);
    assert_eq!(stats.dead_letter_total(), 4);
    assert_eq!(
        stats.dead_letters.get("decode:unsupported_version"),
        Some(&1)
    );
    assert_eq!(
        stats.dead_letters.get("decode:malformed_protobuf"),
        Some(&1)
    );
    assert_eq!(stats.dead_letters.get("bad_topic"), Some(&1));
    assert_eq!(stats.dead_letters.get("device_mismatch"), Some(&1));
    {
        let store = sink.store();
        assert_eq!(store.rows.len(), 26);
        assert_eq!(store.messages.len(), 7);
        assert_eq!(store.data_loss, vec![loss]);
        let gaps: Vec<(String, u64, u64, bool)> = store
            .gaps
            .values()
            .map(|g| (g.device_id.to_string(), g.first.0, g.last.0, g.announced))
            .collect();
        assert_eq!(
            gaps,
            vec![
                ("plc-01".into(), 4, 4, false),
                ("plc-02".into(), 3, 9, true)
            ]
        );
        let garbage = store
            .dead_letters
            .iter()
            .find(|d| {
                matches!(
                    d.reason,
                    DeadLetterReason::Decode(DecodeError::Protobuf { .. })
                )
            })
            .unwrap();
        assert_eq!(garbage.reason.label(), "decode:malformed_protobuf");
        assert_eq!(
            &garbage.payload[..],
            &[0xff, 0x00, 0x13],
            "dead letters keep the original bytes"
        );
    }
    // The late batch fills the gap.
    send(&feed, &batch("plc-01", 4, 4)).await;
    wait(&mut handle, |s| s.acked == 14).await;
    assert!(
        sink.store()
            .gaps
            .keys()
            .all(|(d, _)| d.as_str() != "plc-01")
    );
    cancel.cancel();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(stats.rows_written, 30);
    assert_eq!(acked.lock().unwrap().len(), 14);
}

#[tokio::test(start_paused = true)]
async fn acks_only_after_commit_and_stops_pulling_at_max_in_flight() {
    let (source, feed) = MemorySource::new(5);
    let acked = source.acked();
    let inner = MemorySink::new();
    let sink = GatedSink::new(inner.clone());
    let cfg = PipelineConfig {
        max_in_flight: NonZeroUsize::new(10).unwrap(),
        batch_max_delay: Duration::from_secs(10),
        idle_flush: Duration::from_secs(10),
        ..config()
    };
    let (mut handle, pipeline) = Pipeline::new(source, sink.clone(), cfg);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));

    // 10 in flight + 5 in the channel, then the feed is refused: the pipeline stopped pulling.
    let mut sent = 0;
    for seq in 1..=100 {
        let b = batch("plc-01", seq, 2);
        if feed
            .try_send(
                path("plc-01").telemetry().to_string(),
                protobuf::encode_telemetry(&b),
            )
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if feed
                .try_send(
                    path("plc-01").telemetry().to_string(),
                    protobuf::encode_telemetry(&b),
                )
                .is_err()
            {
                break;
            }
        }
        sent += 1;
    }
    assert_eq!(sent, 15, "10 held by the pipeline + 5 queued");
    assert!(
        acked.lock().unwrap().is_empty(),
        "nothing acked before the commit"
    );
    assert_eq!(inner.store().rows.len(), 0);
    sink.gate.add_permits(1000);
    let stats = wait(&mut handle, |s| s.acked == 15).await;
    assert_eq!(stats.rows_written, 30);
    assert_eq!(
        *acked.lock().unwrap(),
        (0..15).collect::<Vec<u64>>(),
        "acked in delivery order"
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn transient_failures_retry_the_same_batch_without_loss() {
    let (source, feed) = MemorySource::new(64);
    let sink = MemorySink::new();
    sink.faults().unavailable = 5;
    let (mut handle, pipeline) = Pipeline::new(source, sink.clone(), config());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));
    for seq in 1..=20 {
        send(&feed, &batch("plc-01", seq, 3)).await;
    }
    let stats = wait(&mut handle, |s| s.acked == 20).await;
    assert_eq!(stats.rows_written, 60);
    assert!(stats.commit_retries >= 5, "{stats:?}");
    assert_eq!(sink.store().rows.len(), 60);
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_poison_batch_is_isolated_and_dead_lettered() {
    let (source, feed) = MemorySource::new(64);
    let sink = MemorySink::new();
    sink.faults().reject_tag = Some("poison".into());
    let cfg = PipelineConfig {
        batch_max_delay: Duration::from_secs(5),
        idle_flush: Duration::from_secs(5),
        ..config()
    };
    let (mut handle, pipeline) = Pipeline::new(source, sink.clone(), cfg);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));
    let mut poison = batch("plc-01", 4, 2);
    poison.samples.push(Sample::without_value(
        TagPath::new("poison").unwrap(),
        Quality::BAD,
        poison.gateway_time,
    ));
    for seq in 1..=9 {
        if seq == 4 {
            send(&feed, &poison).await;
        } else {
            send(&feed, &batch("plc-01", seq, 2)).await;
        }
    }
    let stats = wait(&mut handle, |s| s.acked == 9).await;
    assert_eq!(stats.poison_batches, 1);
    assert_eq!(stats.rows_written, 16);
    {
        let store = sink.store();
        let dl: Vec<_> = store
            .dead_letters
            .iter()
            .filter(|d| d.reason == DeadLetterReason::Poison)
            .collect();
        assert_eq!(dl.len(), 1);
        assert_eq!(
            dl[0].payload,
            protobuf::encode_telemetry(&poison),
            "original bytes kept"
        );
        assert!(
            store.gaps.is_empty(),
            "the poison batch still counts as received"
        );
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn restart_redelivery_writes_no_duplicates_and_gap_tracking_resumes() {
    let sink = MemorySink::new();
    let run = |sink: MemorySink, batches: Vec<TelemetryBatch>| async move {
        let (source, feed) = MemorySource::new(64);
        let (mut handle, pipeline) = Pipeline::new(source, sink, config());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(pipeline.run(cancel.clone()));
        let n = batches.len() as u64;
        for b in &batches {
            send(&feed, b).await;
        }
        wait(&mut handle, |s| s.acked == n).await;
        cancel.cancel();
        task.await.unwrap().unwrap()
    };
    let first: PipelineStats = run(
        sink.clone(),
        (1..=10).map(|s| batch("plc-01", s, 2)).collect(),
    )
    .await;
    assert_eq!(first.rows_written, 20);
    // A new process (empty memory) gets 5..=10 redelivered, then 13.
    let mut again: Vec<_> = (5..=10).map(|s| batch("plc-01", s, 2)).collect();
    again.push(batch("plc-01", 13, 2));
    let second = run(sink.clone(), again).await;
    assert_eq!(second.duplicates_at_sink, 6);
    assert_eq!(second.rows_written, 2);
    assert_eq!(sink.store().rows.len(), 22);
    let gaps: Vec<(u64, u64)> = sink
        .store()
        .gaps
        .values()
        .map(|g| (g.first.0, g.last.0))
        .collect();
    assert_eq!(
        gaps,
        vec![(11, 12)],
        "the restored high mark (10) makes 13 open 11..=12"
    );
}
