//! Commands and acks through the pipeline (issue 16, platform side): routed
//! into the sink and acknowledged to the source only after the commit, dead
//! letters for commands or acks that speak for another device or command, a
//! poison command isolated from its batch, and the periodic expiry sweep.

mod common;

use std::time::Duration;

use common::commands::{ack, set_command};
use common::sink::GatedSink;
use iiot_core::codec::protobuf;
use iiot_core::topic::UnsPath;
use iiot_core::types::{
    Command, CommandAck, CommandState, DeviceId, Sample, Sequence, TagPath, TelemetryBatch,
    Timestamp, Value,
};
use iiot_ingest::commands::TrackedState;
use iiot_ingest::record::{CommitBatch, CommitReport, DeadLetterReason, DeviceSequenceState};
use iiot_ingest::sink::memory::MemorySink;
use iiot_ingest::sink::{Sink, SinkError};
use iiot_ingest::source::memory::{MemoryFeed, MemorySource};
use iiot_ingest::{Pipeline, PipelineConfig, PipelineHandle, PipelineStats};
use tokio_util::sync::CancellationToken;

fn path(dev: &str) -> UnsPath {
    UnsPath::new("acme", "s1", "a1", "l1", "plc", DeviceId::new(dev).unwrap()).unwrap()
}

async fn send_command(feed: &MemoryFeed, c: &Command) {
    let topic = path(c.device_id.as_str()).command(c.id).to_string();
    feed.send(topic, protobuf::encode_command(c)).await.unwrap();
}

async fn send_ack(feed: &MemoryFeed, a: &CommandAck) {
    let topic = path(a.device_id.as_str())
        .command_ack(a.command_id)
        .to_string();
    feed.send(topic, protobuf::encode_command_ack(a))
        .await
        .unwrap();
}

async fn wait(
    handle: &mut PipelineHandle,
    pred: impl FnMut(&PipelineStats) -> bool,
) -> PipelineStats {
    match tokio::time::timeout(Duration::from_secs(60), handle.wait_for(pred)).await {
        Ok(s) => s,
        Err(e) => panic!("pipeline never got there ({e}): {:?}", handle.stats()),
    }
}

fn config() -> PipelineConfig {
    PipelineConfig {
        batch_max_delay: Duration::from_millis(50),
        retry_initial: Duration::from_millis(10),
        ..PipelineConfig::default()
    }
}

/// A command and its acks (one a duplicate) arrive through the pipeline: none
/// is acknowledged to the source before the sink committed them; then all are,
/// in delivery order, and the commands table holds the final state.
#[tokio::test(start_paused = true)]
async fn command_and_acks_are_committed_before_they_are_acknowledged() {
    let (source, feed) = MemorySource::new(16);
    let acked = source.acked();
    let inner = MemorySink::new();
    let sink = GatedSink::new(inner.clone());
    let mut commits_asked = sink.asked.subscribe();
    let (mut handle, pipeline) = Pipeline::new(source, sink.clone(), config());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));

    let cmd = set_command("plc-01", 1, "tank1/setpoint", Value::Double(80.0), 30);
    let mut completed = ack("plc-01", 1, CommandState::Completed, 3);
    completed.result = Some(Value::Double(80.0));
    let mut dup = completed.clone();
    dup.duplicate = true;
    send_command(&feed, &cmd).await;
    send_ack(&feed, &ack("plc-01", 1, CommandState::Delivered, 2)).await;
    send_ack(&feed, &completed).await;
    send_ack(&feed, &dup).await;

    // The commit waits at the gate: nothing is acknowledged.
    commits_asked.wait_for(|n| *n >= 1).await.unwrap();
    assert!(acked.lock().unwrap().is_empty(), "acked before the commit");
    assert!(inner.store().command_table.is_empty());

    sink.gate.add_permits(100);
    let stats = wait(&mut handle, |s| s.acked == 4).await;
    assert_eq!(*acked.lock().unwrap(), vec![0, 1, 2, 3], "delivery order");
    assert_eq!((stats.commands, stats.command_acks), (1, 3));
    assert_eq!(stats.dead_letter_total(), 0);
    {
        let store = inner.store();
        assert_eq!(store.commands.len(), 1);
        assert_eq!(store.commands[0].command, cmd);
        assert_eq!(
            store.command_acks.len(),
            3,
            "every ack is kept, duplicates too"
        );
        let row = store.command_table.get(&cmd.device_id, cmd.id).unwrap();
        assert_eq!(row.state, TrackedState::State(CommandState::Completed));
        assert_eq!(row.issuer.as_deref(), Some("ops-console"));
        assert_eq!(row.result, Some(Value::Double(80.0)));
        assert_eq!(row.delivered_at, Some(common::commands::at(2)));
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
}

/// A command or ack whose device id is not its topic's, an ack on another
/// command's topic and an undecodable command are dead letters with their
/// bytes; none reaches the commands table, and all are acknowledged.
#[tokio::test(start_paused = true)]
async fn commands_and_acks_for_another_device_or_command_are_dead_letters() {
    let (source, feed) = MemorySource::new(16);
    let acked = source.acked();
    let sink = MemorySink::new();
    let (mut handle, pipeline) = Pipeline::new(source, sink.clone(), config());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));

    // A command for plc-02 published on plc-01's command topic.
    let other = set_command("plc-02", 1, "sp", Value::Double(1.0), 30);
    let on_wrong_device = path("plc-01").command(other.id).to_string();
    let command_bytes = protobuf::encode_command(&other);
    feed.send(on_wrong_device.clone(), command_bytes.clone())
        .await
        .unwrap();
    // plc-02's ack on plc-01's ack topic.
    let a = ack("plc-02", 1, CommandState::Completed, 2);
    let ack_bytes = protobuf::encode_command_ack(&a);
    feed.send(
        path("plc-01").command_ack(a.command_id).to_string(),
        ack_bytes.clone(),
    )
    .await
    .unwrap();
    // An ack of command 1 on the topic of command 2.
    let elsewhere = path("plc-02")
        .command_ack(common::commands::cid(2))
        .to_string();
    feed.send(elsewhere.clone(), ack_bytes.clone())
        .await
        .unwrap();
    // Garbage on a command topic.
    feed.send(
        path("plc-02").command(other.id).to_string(),
        vec![0xff, 0x01],
    )
    .await
    .unwrap();

    let stats = wait(&mut handle, |s| s.acked == 4).await;
    assert_eq!(stats.dead_letters.get("device_mismatch"), Some(&2));
    assert_eq!(stats.dead_letters.get("command_id_mismatch"), Some(&1));
    assert_eq!(
        stats.dead_letters.get("decode:malformed_protobuf"),
        Some(&1)
    );
    assert_eq!((stats.commands, stats.command_acks), (0, 0));
    {
        let store = sink.store();
        assert!(store.command_table.is_empty());
        assert!(store.commands.is_empty() && store.command_acks.is_empty());
        let mismatch = store
            .dead_letters
            .iter()
            .find(|d| d.topic == on_wrong_device)
            .unwrap();
        assert_eq!(mismatch.reason, DeadLetterReason::DeviceMismatch);
        assert_eq!(mismatch.payload, command_bytes, "original bytes kept");
        assert!(mismatch.detail.contains("plc-02"), "{}", mismatch.detail);
        let wrong_id = store
            .dead_letters
            .iter()
            .find(|d| d.topic == elsewhere)
            .unwrap();
        assert_eq!(wrong_id.reason, DeadLetterReason::CommandIdMismatch);
        assert_eq!(wrong_id.payload, ack_bytes);
    }
    assert_eq!(acked.lock().unwrap().len(), 4);
    cancel.cancel();
    task.await.unwrap().unwrap();
}

fn batch(dev: &str, seq: u64) -> TelemetryBatch {
    let t = Timestamp::from_unix_nanos(1_764_120_152_000_000_000 + seq as i64).unwrap();
    let s = Sample::good(TagPath::new("t").unwrap(), seq as f64, t);
    TelemetryBatch::new(DeviceId::new(dev).unwrap(), Sequence(seq), vec![s])
}

/// A command the sink refuses is isolated from the telemetry, commands and
/// acks committed with it, and dead-lettered with its bytes; the rest is
/// committed.
#[tokio::test(start_paused = true)]
async fn a_poison_command_is_isolated_and_dead_lettered() {
    let (source, feed) = MemorySource::new(32);
    let sink = MemorySink::new();
    sink.faults().reject_tag = Some("poison/target".into());
    let cfg = PipelineConfig {
        batch_max_delay: Duration::from_secs(5),
        idle_flush: Duration::from_secs(5),
        ..config()
    };
    let (mut handle, pipeline) = Pipeline::new(source, sink.clone(), cfg);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));
    let topic = path("plc-01").telemetry().to_string();
    for seq in 1..=3 {
        feed.send(
            topic.clone(),
            protobuf::encode_telemetry(&batch("plc-01", seq)),
        )
        .await
        .unwrap();
    }
    let good = set_command("plc-01", 1, "sp", Value::Double(1.0), 30);
    let poison = set_command("plc-01", 2, "poison/target", Value::Double(1.0), 30);
    let good2 = set_command("plc-01", 3, "sp", Value::Double(2.0), 30);
    send_command(&feed, &good).await;
    send_command(&feed, &poison).await;
    send_command(&feed, &good2).await;
    send_ack(&feed, &ack("plc-01", 1, CommandState::Completed, 2)).await;
    send_ack(&feed, &ack("plc-01", 2, CommandState::Rejected, 2)).await;

    let stats = wait(&mut handle, |s| s.acked == 8).await;
    assert_eq!(stats.poison_batches, 1);
    assert_eq!(stats.rows_written, 3);
    assert_eq!((stats.commands, stats.command_acks), (2, 2));
    {
        let store = sink.store();
        let dl: Vec<_> = store
            .dead_letters
            .iter()
            .filter(|d| d.reason == DeadLetterReason::Poison)
            .collect();
        assert_eq!(dl.len(), 1);
        assert_eq!(dl[0].payload, protobuf::encode_command(&poison));
        assert_eq!(dl[0].topic, path("plc-01").command(poison.id).to_string());
        let t = &store.command_table;
        assert_eq!(
            t.len(),
            3,
            "the two good commands and the ack of the poison one"
        );
        assert!(t.get(&good.device_id, good2.id).is_some());
        let orphan = t.get(&poison.device_id, poison.id).unwrap();
        assert_eq!(
            orphan.issued_at, None,
            "the refused command's columns are missing"
        );
        assert_eq!(orphan.state, TrackedState::State(CommandState::Rejected));
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
}

/// A sink whose sweep fails, to see that the pipeline keeps going.
#[derive(Clone)]
struct FailingSweep(MemorySink);

impl Sink for FailingSweep {
    async fn commit(&mut self, b: &CommitBatch) -> Result<CommitReport, SinkError> {
        self.0.commit(b).await
    }
    async fn load_sequence_state(&mut self) -> Result<Vec<DeviceSequenceState>, SinkError> {
        self.0.load_sequence_state().await
    }
    async fn expire_unconfirmed_commands(
        &mut self,
        _now: Timestamp,
        _grace: Duration,
    ) -> Result<u64, SinkError> {
        Err(SinkError::unavailable("injected"))
    }
}

/// Every `command_sweep_interval` the pipeline marks commands past their
/// deadline plus grace (by the wall clock) `expired_unconfirmed`, and only
/// those; a failing sweep is counted and the pipeline goes on.
#[tokio::test(start_paused = true)]
async fn the_pipeline_sweeps_overdue_commands_periodically() {
    let (source, feed) = MemorySource::new(16);
    let sink = MemorySink::new();
    let cfg = PipelineConfig {
        command_sweep_interval: Duration::from_secs(1),
        command_grace: Duration::from_secs(5),
        ..config()
    };
    let (mut handle, pipeline) = Pipeline::new(source, sink.clone(), cfg.clone());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));

    let now = Timestamp::now();
    let mut overdue = set_command("plc-01", 1, "sp", Value::Double(1.0), 30);
    overdue.issued_at = now.saturating_sub(Duration::from_secs(60));
    overdue.expires_at = now.saturating_sub(Duration::from_secs(30));
    let mut valid = overdue.clone();
    valid.id = common::commands::cid(2);
    valid.expires_at = now.saturating_add(Duration::from_secs(3600));
    let mut done = overdue.clone();
    done.id = common::commands::cid(3);
    send_command(&feed, &overdue).await;
    send_command(&feed, &valid).await;
    send_command(&feed, &done).await;
    send_ack(&feed, &ack("plc-01", 3, CommandState::Completed, 2)).await;

    let stats = wait(&mut handle, |s| s.commands_expired_unconfirmed >= 1).await;
    assert_eq!(stats.commands_expired_unconfirmed, 1);
    {
        let store = sink.store();
        let state_of = |id| {
            store
                .command_table
                .get(&overdue.device_id, id)
                .unwrap()
                .state
        };
        assert_eq!(state_of(overdue.id), TrackedState::ExpiredUnconfirmed);
        assert_eq!(
            state_of(valid.id),
            TrackedState::State(CommandState::Queued)
        );
        assert_eq!(
            state_of(done.id),
            TrackedState::State(CommandState::Completed)
        );
    }
    cancel.cancel();
    task.await.unwrap().unwrap();

    // The same with a sink whose sweep fails: counted, and ingest goes on.
    let (source, feed) = MemorySource::new(16);
    let inner = MemorySink::new();
    let (mut handle, pipeline) = Pipeline::new(source, FailingSweep(inner.clone()), cfg);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));
    wait(&mut handle, |s| s.command_sweep_errors >= 2).await;
    send_command(&feed, &overdue).await;
    let stats = wait(&mut handle, |s| s.acked == 1).await;
    assert_eq!(stats.commands, 1);
    assert_eq!(stats.commands_expired_unconfirmed, 0);
    cancel.cancel();
    task.await.unwrap().unwrap();
}

/// An ack is committed at once, with whatever telemetry waits in the batch: the
/// issuer waiting for it never waits for the telemetry batching delay (virtual
/// time: a telemetry-only batch waits its full delay).
#[tokio::test(start_paused = true)]
async fn an_ack_does_not_wait_for_the_batching_delay() {
    let (source, feed) = MemorySource::new(16);
    let sink = MemorySink::new();
    let cfg = PipelineConfig {
        batch_max_delay: Duration::from_secs(30),
        idle_flush: Duration::from_secs(30),
        command_sweep_interval: Duration::ZERO,
        ..PipelineConfig::default()
    };
    let (mut handle, pipeline) = Pipeline::new(source, sink.clone(), cfg);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(cancel.clone()));
    let t0 = tokio::time::Instant::now();
    let b = batch("plc-01", 1);
    feed.send(
        path("plc-01").telemetry().to_string(),
        protobuf::encode_telemetry(&b),
    )
    .await
    .unwrap();
    wait(&mut handle, |s| s.acked == 1).await;
    assert!(
        t0.elapsed() >= Duration::from_secs(30),
        "telemetry alone waits its delay"
    );
    let t1 = tokio::time::Instant::now();
    feed.send(
        path("plc-01").telemetry().to_string(),
        protobuf::encode_telemetry(&batch("plc-01", 2)),
    )
    .await
    .unwrap();
    send_ack(&feed, &ack("plc-01", 1, CommandState::Completed, 3)).await;
    wait(&mut handle, |s| s.acked == 3).await;
    assert!(
        t1.elapsed() < Duration::from_secs(1),
        "the ack (and the batch before it) committed at once: {:?}",
        t1.elapsed()
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
}
