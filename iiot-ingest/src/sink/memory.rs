//! An in-memory sink with the same idempotency as the database sinks, and fault
//! injection. For tests, demos and as the reference model of sink behaviour.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use iiot_core::quality::Quality;
use iiot_core::types::{DataLoss, DeviceId, MessageId, Sequence, TagPath, Timestamp, Value};

use super::{Sink, SinkError};
use crate::commands::CommandTable;
use crate::record::{
    AcceptedAck, AcceptedCommand, CommitBatch, CommitReport, DeadLetter, DeviceSequenceState, Gap,
    GapChange,
};

/// One stored sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Device.
    pub device_id: DeviceId,
    /// Batch it came in.
    pub message_id: MessageId,
    /// The batch's sequence number.
    pub seq: Sequence,
    /// Tag.
    pub tag: TagPath,
    /// Value, if any.
    pub value: Option<Value>,
    /// Quality.
    pub quality: Quality,
    /// Source time.
    pub time: Timestamp,
}

/// Everything the sink holds.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Keys of stored batches.
    pub messages: HashSet<(DeviceId, MessageId)>,
    /// Stored rows, in commit order.
    pub rows: Vec<Row>,
    /// Stored data-loss announcements.
    pub data_loss: Vec<DataLoss>,
    /// Open gaps by (device, first).
    pub gaps: BTreeMap<(DeviceId, u64), Gap>,
    /// Dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// Every command committed, in commit order (re-deliveries included).
    pub commands: Vec<AcceptedCommand>,
    /// Every command ack committed, in commit order (duplicates and
    /// re-deliveries included).
    pub command_acks: Vec<AcceptedAck>,
    /// The commands table, by the same rules as the database sinks'.
    pub command_table: CommandTable,
    /// Successful commits.
    pub commits: u64,
}

/// Faults to inject.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fail this many next commits with [`SinkError::Unavailable`].
    pub unavailable: u32,
    /// Reject (as a poison record would) any commit containing a sample of this
    /// tag or a command targeting it.
    pub reject_tag: Option<String>,
}

/// The in-memory sink. Clones share the same store.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    store: Arc<Mutex<MemoryStore>>,
    faults: Arc<Mutex<Faults>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks and returns the store for inspection.
    pub fn store(&self) -> MutexGuard<'_, MemoryStore> {
        lock(&self.store)
    }

    /// Locks and returns the fault settings.
    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }
}

impl Sink for MemorySink {
    async fn commit(&mut self, batch: &CommitBatch) -> Result<CommitReport, SinkError> {
        {
            let mut f = lock(&self.faults);
            if f.unavailable > 0 {
                f.unavailable -= 1;
                return Err(SinkError::unavailable("injected"));
            }
            if let Some(tag) = &f.reject_tag
                && batch
                    .telemetry
                    .iter()
                    .any(|b| b.batch.samples.iter().any(|s| s.tag().as_str() == tag))
            {
                return Err(SinkError::rejected(format!("injected: tag {tag}")));
            }
            if let Some(tag) = &f.reject_tag
                && batch
                    .commands
                    .iter()
                    .any(|c| c.command.target.as_str() == tag)
            {
                return Err(SinkError::rejected(format!(
                    "injected: command target {tag}"
                )));
            }
        }
        let mut s = lock(&self.store);
        let mut report = CommitReport::default();
        for b in &batch.telemetry {
            let key = (b.batch.device_id.clone(), b.batch.message_id);
            if !s.messages.insert(key) {
                report.batches_skipped += 1;
                continue;
            }
            report.batches_written += 1;
            for sample in &b.batch.samples {
                s.rows.push(Row {
                    device_id: b.batch.device_id.clone(),
                    message_id: b.batch.message_id,
                    seq: b.batch.seq,
                    tag: sample.tag().clone(),
                    value: sample.value().cloned(),
                    quality: sample.quality(),
                    time: sample.source_time(),
                });
                report.rows_written += 1;
            }
        }
        s.data_loss.extend(batch.data_loss.iter().cloned());
        for change in &batch.gaps {
            match change {
                GapChange::Opened(g) => {
                    s.gaps.insert((g.device_id.clone(), g.first.0), g.clone());
                }
                GapChange::Narrowed {
                    device_id,
                    first,
                    remaining,
                    ..
                } => {
                    s.gaps.remove(&(device_id.clone(), first.0));
                    for g in remaining {
                        s.gaps.insert((g.device_id.clone(), g.first.0), g.clone());
                    }
                }
            }
        }
        for c in &batch.commands {
            s.command_table.apply_command(&c.command, c.received_at);
        }
        for a in &batch.command_acks {
            s.command_table.apply_ack(&a.ack, a.received_at);
        }
        s.commands.extend(batch.commands.iter().cloned());
        s.command_acks.extend(batch.command_acks.iter().cloned());
        s.dead_letters.extend(batch.dead_letters.iter().cloned());
        s.commits += 1;
        Ok(report)
    }

    /// Applies the sweep to the store's [`CommandTable`]; injected faults do not
    /// apply to it.
    async fn expire_unconfirmed_commands(
        &mut self,
        now: Timestamp,
        grace: Duration,
    ) -> Result<u64, SinkError> {
        Ok(lock(&self.store)
            .command_table
            .expire_unconfirmed(now, grace))
    }

    async fn load_sequence_state(&mut self) -> Result<Vec<DeviceSequenceState>, SinkError> {
        let s = lock(&self.store);
        let mut by_device: BTreeMap<DeviceId, DeviceSequenceState> = BTreeMap::new();
        for r in &s.rows {
            let e = by_device
                .entry(r.device_id.clone())
                .or_insert_with(|| DeviceSequenceState {
                    device_id: r.device_id.clone(),
                    highest_seq: r.seq,
                    open_gaps: Vec::new(),
                });
            e.highest_seq = e.highest_seq.max(r.seq);
        }
        for g in s.gaps.values() {
            let e = by_device
                .entry(g.device_id.clone())
                .or_insert_with(|| DeviceSequenceState {
                    device_id: g.device_id.clone(),
                    highest_seq: g.last,
                    open_gaps: Vec::new(),
                });
            e.highest_seq = e.highest_seq.max(g.last);
            e.open_gaps.push(g.clone());
        }
        Ok(by_device.into_values().collect())
    }
}
