//! State shared between outbox handles and the writer thread.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use iiot_core::publish::OutboundMessage;
use iiot_core::types::{DeviceId, MessageId};
use tokio::sync::{Notify, oneshot, watch};

use super::codec::Meta;
use super::config::OutboxConfig;
use super::storage::Storage;

/// What the writer tells one appender.
pub(crate) type Reply = Result<(), (Option<io::Error>, OutboundMessage)>;

/// A record accepted but not yet written.
pub(crate) struct Pending {
    pub(crate) seq: u64,
    pub(crate) at: i64,
    pub(crate) len: usize,
    pub(crate) message: OutboundMessage,
    pub(crate) done: oneshot::Sender<Reply>,
}

/// Mutable state, behind one short-held mutex.
pub(crate) struct State {
    /// Next sequence to hand out.
    pub(crate) next_seq: u64,
    /// Accepted, not yet written, in sequence order.
    pub(crate) pending: Vec<Pending>,
    /// Sum of `len` over `pending`.
    pub(crate) pending_bytes: usize,
    /// When the oldest pending record arrived (group-commit window start).
    pub(crate) pending_since: Option<Instant>,
    /// Requested head: acknowledged up to (exclusive).
    pub(crate) ack_to: u64,
    /// When the oldest not-yet-committed acknowledgement arrived.
    pub(crate) ack_since: Option<Instant>,
    /// Data-loss events acknowledged by the forwarder.
    pub(crate) loss_acks: Vec<(u64, MessageId)>,
    /// Persistent cursors and counters as of the last commit.
    pub(crate) meta: Meta,
    /// One past the last durable sequence; readers see nothing at or beyond it.
    pub(crate) durable_end: u64,
    /// Appended-at (ns) of the oldest live record.
    pub(crate) oldest_at: Option<i64>,
    /// Stored data-loss events not yet acknowledged.
    pub(crate) loss_count: u64,
    /// Sequence numbers below this were handed out (some to failed appends) and must not be
    /// reused; the writer persists it.
    pub(crate) min_next_seq: u64,
    /// A commit failed: the next round must write and flush even if nothing else changed.
    pub(crate) unflushed: bool,
    /// Callers of `sync()` waiting for the next commit.
    pub(crate) syncs: Vec<oneshot::Sender<()>>,
    /// No more appends; the writer drains and exits.
    pub(crate) closed: bool,
}

/// Everything the handles and the writer share.
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Wakes the writer.
    pub(crate) wake: Condvar,
    /// Signalled when space was freed (for blocked appenders).
    pub(crate) space: Notify,
    /// `durable_end`, for readers waiting for new records.
    pub(crate) durable: watch::Sender<u64>,
    /// Bumped whenever the set of stored data-loss events changes.
    pub(crate) losses: watch::Sender<u64>,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) config: OutboxConfig,
    pub(crate) device: DeviceId,
    /// Wall clock in ns since the epoch (injectable for tests of the age bound).
    pub(crate) clock: Clock,
}

/// A wall clock: ns since the Unix epoch.
pub(crate) type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub(crate) fn system_clock() -> Clock {
    Arc::new(|| iiot_core::types::Timestamp::now().unix_nanos())
}

impl Shared {
    /// Locks the state; a panic elsewhere never wedges the outbox.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Now, in ns since the epoch.
    pub(crate) fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Bytes counted against the byte bound: stored plus accepted.
    pub(crate) fn used_bytes(st: &State) -> usize {
        (st.meta.backlog_bytes as usize).saturating_add(st.pending_bytes)
    }
}
