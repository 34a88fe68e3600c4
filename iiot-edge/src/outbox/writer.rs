//! The writer thread: the only code that mutates storage.
//!
//! It is the group-commit leader. Each round it takes everything queued (appends,
//! acknowledgements, loss acknowledgements), builds one atomic batch (new segments, removed
//! segments, data-loss events, the meta record), applies it and flushes once. Appends that
//! arrive during a flush wait for the next round, so concurrent appenders share flushes
//! without any added delay; under group commit the round additionally waits for the window.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iiot_core::types::{DataLoss, DataLossReason, MessageId, Sequence, Timestamp};

use super::codec::{self, Meta, SEG_PREFIX, decode_loss, encode_loss, index_segment, seg_key};
use super::config::{Durability, WhenFull};
use super::shared::{Pending, Shared, State};
use super::storage::Op;

/// Longest an acknowledgement waits for a commit when no append comes along.
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(50);
/// A group-commit window closes early once this much is pending.
pub(crate) const GROUP_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Bytes of records one round releases at most by acknowledgement or expiry; the rest
/// waits for the next round (immediately after). Bounds the memory of a round (removed
/// segments are kept until the flush succeeded, to undo the round if it fails), however
/// far one acknowledgement or one expiry reaches.
pub(crate) const ROUND_RELEASE_BYTES: u64 = 4 * 1024 * 1024;
/// Cap on stored data-loss events; beyond it the newest ones are merged.
pub(crate) const MAX_LOSS_EVENTS: u64 = 10_000;
/// Most times the writer yields for followers before an `EveryWrite` round (see `take`).
const MAX_YIELDS: usize = 8;
/// How long the writer polls for the next `EveryWrite` append after a round before it
/// sleeps (see `take`).
const SPIN: Duration = Duration::from_micros(50);
/// Longest the writer sleeps without checking the age bound.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Work taken from the shared state for one round.
struct Taken {
    pending: Vec<Pending>,
    ack_to: u64,
    loss_acks: Vec<(u64, MessageId)>,
    syncs: Vec<tokio::sync::oneshot::Sender<()>>,
    min_next_seq: u64,
    unflushed: bool,
    closing: bool,
}

/// Why the head moved.
#[derive(Clone, Copy)]
enum Advance {
    /// Acknowledged up to (exclusive).
    Ack(u64),
    /// Drop oldest until this many bytes are freed.
    Drop(u64),
    /// Expire records appended before this time (ns).
    Expire(i64),
}

/// The writes of one round and their inverse (to undo the round if its flush fails).
#[derive(Default)]
struct Batch {
    ops: Vec<Op>,
    undo: Vec<Op>,
    /// The round stopped releasing records at [`ROUND_RELEASE_BYTES`]: more to do.
    more: bool,
}

impl Batch {
    fn put_new(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.undo.push(Op::Delete(k.clone()));
        self.ops.push(Op::Put(k, v));
    }
    fn delete(&mut self, k: &[u8], old: &[u8]) {
        self.undo.push(Op::Put(k.to_vec(), old.to_vec()));
        self.ops.push(Op::Delete(k.to_vec()));
    }
}

/// Losses found during one round.
#[derive(Default)]
struct Losses {
    overflow: LossRange,
    expired: LossRange,
    unreadable: LossRange,
    changed: bool,
    count_after: u64,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A loss range found during one round.
#[derive(Default)]
struct LossRange {
    first: Option<u64>,
    last: u64,
    count: u64,
    bytes: u64,
}

impl LossRange {
    fn add(&mut self, seq: u64, count: u64, bytes: u64) {
        if self.first.is_none() {
            self.first = Some(seq);
        }
        self.last = seq.saturating_add(count.saturating_sub(1));
        self.count += count;
        self.bytes += bytes;
    }
}

pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
}

impl Writer {
    /// Runs until the outbox is closed and drained.
    pub(crate) fn run(self) {
        let mut last_round = 0;
        loop {
            let Some(taken) = self.take(last_round) else {
                break;
            };
            last_round = taken.pending.len();
            let closing = taken.closing;
            self.round(taken);
            if closing {
                let st = self.shared.lock();
                if st.pending.is_empty() {
                    break;
                }
            }
        }
        tracing::debug!("outbox writer stopped");
    }

    /// Waits for work (or the age bound), honouring the group-commit window.
    ///
    /// Under `EveryWrite`, when the last round carried more records than are pending now,
    /// the appenders it answered are most likely re-appending at this moment: the writer
    /// yields the CPU a few times (no timer, microseconds) while their records arrive, so
    /// they share this flush instead of forming a round of one or two followed by the rest.
    /// A single appender never waits.
    fn take(&self, last_round: usize) -> Option<Taken> {
        let cfg = &self.shared.config;
        let since_round = Instant::now();
        let mut st = self.shared.lock();
        loop {
            let now = Instant::now();
            // Acknowledgements alone wait up to ACK_DELAY, so a forwarder acknowledging
            // record by record does not cost a flush each; they ride along with appends.
            let ack_deadline =
                (st.ack_to > st.meta.head).then(|| st.ack_since.map_or(now, |t| t + ACK_DELAY));
            let ack_due = ack_deadline.is_some_and(|d| st.closed || d <= now);
            let has_work = !st.pending.is_empty()
                || ack_due
                || !st.loss_acks.is_empty()
                || !st.syncs.is_empty()
                || st.min_next_seq > st.meta.next_seq
                || st.unflushed;
            let expiry = self.expiry_wait(&st);
            if let Durability::GroupCommit { window } = cfg.durability
                && !st.closed
                && st.loss_acks.is_empty()
                && st.syncs.is_empty()
                && let Some(since) = st.pending_since
            {
                let deadline = since + window;
                if now < deadline && st.pending_bytes < GROUP_MAX_BYTES {
                    st = self.wait(st, deadline - now);
                    continue;
                }
            }
            let expire_now = expiry == Some(Duration::ZERO);
            if st.closed && !has_work {
                return None;
            }
            if has_work || expire_now {
                if cfg.durability == Durability::EveryWrite && !st.closed {
                    for _ in 0..MAX_YIELDS {
                        if st.pending.is_empty() || st.pending.len() >= last_round {
                            break;
                        }
                        drop(st);
                        std::thread::yield_now();
                        st = self.shared.lock();
                    }
                }
                let pending = std::mem::take(&mut st.pending);
                st.pending_bytes = 0;
                st.pending_since = None;
                st.ack_since = None;
                return Some(Taken {
                    pending,
                    ack_to: st.ack_to,
                    loss_acks: std::mem::take(&mut st.loss_acks),
                    syncs: std::mem::take(&mut st.syncs),
                    min_next_seq: st.min_next_seq,
                    unflushed: st.unflushed,
                    closing: st.closed,
                });
            }
            // Right after an `EveryWrite` round its appenders are usually about to append
            // again: poll for a few microseconds before sleeping, which saves the wake-up
            // latency of a sleeping thread on every record of a single appender.
            if cfg.durability == Durability::EveryWrite
                && last_round > 0
                && now.saturating_duration_since(since_round) < SPIN
            {
                drop(st);
                std::thread::yield_now();
                st = self.shared.lock();
                continue;
            }
            let mut sleep = expiry.unwrap_or(MAX_IDLE).min(MAX_IDLE);
            if let Some(d) = ack_deadline {
                sleep = sleep.min(d.saturating_duration_since(now));
            }
            st = self.wait(st, sleep);
        }
    }

    fn wait<'a>(
        &'a self,
        st: std::sync::MutexGuard<'a, State>,
        d: Duration,
    ) -> std::sync::MutexGuard<'a, State> {
        self.shared
            .wake
            .wait_timeout(st, d)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }

    /// How long until the oldest live record passes the age bound (`ZERO`: now).
    fn expiry_wait(&self, st: &State) -> Option<Duration> {
        let max_age = self.shared.config.max_age?;
        let oldest = st.oldest_at?;
        let expires_ns = oldest.saturating_add(nanos(max_age));
        let wait = expires_ns.saturating_sub(self.shared.now());
        Some(Duration::from_nanos(u64::try_from(wait).unwrap_or(0)))
    }

    /// One commit group: build, apply, flush, reply.
    fn round(&self, taken: Taken) {
        let (before, cached_oldest) = {
            let st = self.shared.lock();
            (st.meta, st.oldest_at)
        };
        let mut meta = before;
        let mut losses = Losses::default();
        let mut ops = Batch::default();
        let built = self.build(&taken, &mut meta, &mut ops, &mut losses, cached_oldest);
        let more = ops.more;

        // `applied`: what the store holds in memory now; `result`: whether it is durable.
        let (applied, result) = match built {
            Err(e) => (before, Err(e)),
            Ok(())
                if ops.ops.len() == 1
                    && meta == before
                    && taken.pending.is_empty()
                    && !taken.unflushed =>
            {
                (before, Ok(()))
            }
            Ok(()) => match self.shared.storage.apply(ops.ops) {
                Err(e) => (before, Err(e)),
                Ok(()) => match self.shared.storage.flush() {
                    Ok(()) => (meta, Ok(())),
                    Err(e) => {
                        // Undo the whole round in memory so the store matches what callers
                        // were told; it becomes durable with the next successful flush.
                        ops.undo.reverse();
                        if let Err(e2) = self.shared.storage.apply(ops.undo) {
                            tracing::error!(error = %e2, "outbox: could not undo a failed commit");
                        }
                        (before, Err(e))
                    }
                },
            },
        };

        let oldest =
            if result.is_ok() && (applied.head != before.head || before.backlog_records == 0) {
                self.oldest_at(&applied)
            } else {
                cached_oldest
            };
        // Acknowledgements or expiry stopped at the round's limit: `sync` waits for the rest.
        let requeue = more && result.is_ok();
        let mut st = self.shared.lock();
        st.meta = applied;
        match result {
            Ok(()) => {
                st.unflushed = false;
                st.durable_end = applied.next_seq;
                st.oldest_at = oldest;
                st.loss_count = losses.count_after;
                let durable_end = st.durable_end;
                drop(st);
                metrics::counter!("iiot_outbox_appended_total")
                    .increment(taken.pending.len() as u64);
                for p in taken.pending {
                    let _ = p.done.send(Ok(()));
                }
                self.shared.durable.send_replace(durable_end);
                if losses.changed {
                    self.shared.losses.send_modify(|v| *v = v.wrapping_add(1));
                }
                self.publish_metrics(&applied, oldest, &losses);
            }
            Err(e) => {
                tracing::error!(error = %e, records = taken.pending.len(),
                    "outbox commit failed; appenders get their messages back");
                st.loss_acks.extend(taken.loss_acks);
                st.unflushed = true;
                if let Some(last) = taken.pending.last() {
                    st.min_next_seq = st.min_next_seq.max(last.seq + 1);
                }
                drop(st);
                for p in taken.pending {
                    let err = io::Error::new(e.kind(), e.to_string());
                    let _ = p.done.send(Err((Some(err), p.message)));
                }
                // Do not spin on a disk that keeps failing.
                if taken.unflushed {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        self.shared.space.notify_waiters();
        if requeue {
            self.shared.lock().syncs.extend(taken.syncs);
        } else {
            for s in taken.syncs {
                let _ = s.send(());
            }
        }
    }

    /// Builds the batch of one round into `ops`. Returns the keys of new segments.
    fn build(
        &self,
        taken: &Taken,
        meta: &mut Meta,
        ops: &mut Batch,
        losses: &mut Losses,
        cached_oldest: Option<i64>,
    ) -> io::Result<()> {
        let cfg = &self.shared.config;
        let before_meta = *meta;
        // 1. Acknowledgements (never beyond what was written).
        let ack_to = taken.ack_to.min(meta.next_seq);
        if ack_to > meta.head {
            let mut acked = LossRange::default();
            self.advance(
                meta,
                ops,
                Advance::Ack(ack_to),
                &mut acked,
                &mut losses.unreadable,
            )?;
        }
        // 2. Drop oldest to fit the new records.
        let mut pending = &taken.pending[..];
        let new_bytes: u64 = pending.iter().map(|p| p.len as u64).sum();
        let max = cfg.max_bytes.get() as u64;
        if cfg.when_full == WhenFull::DropOldest && meta.backlog_bytes + new_bytes > max {
            let need = meta.backlog_bytes + new_bytes - max;
            let freed = self.advance(
                meta,
                ops,
                Advance::Drop(need),
                &mut losses.overflow,
                &mut losses.unreadable,
            )?;
            let mut still = need.saturating_sub(freed);
            // The backlog alone was not enough: drop the oldest of the new records too.
            while still > 0 && !pending.is_empty() {
                let p = &pending[0];
                losses.overflow.add(p.seq, 1, p.len as u64);
                still = still.saturating_sub(p.len as u64);
                meta.head = meta.head.max(p.seq + 1);
                meta.appended += 1;
                pending = &pending[1..];
            }
            meta.dropped_records += losses.overflow.count;
            meta.dropped_bytes += losses.overflow.bytes;
        }
        // 3. New records, chunked into segments.
        let was_empty = meta.backlog_records == 0;
        let seg_max = self.shared.storage.segment_bytes();
        let mut start = 0;
        while start < pending.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < pending.len() && (end == start || bytes + pending[end].len <= seg_max) {
                bytes += pending[end].len;
                end += 1;
            }
            let chunk = &pending[start..end];
            let first = chunk[0].seq;
            let value =
                codec::encode_segment(first, chunk.iter().map(|p| (p.at, &p.message)), bytes);
            ops.put_new(seg_key(first).to_vec(), value);
            meta.backlog_records += chunk.len() as u64;
            meta.backlog_bytes += bytes as u64;
            meta.appended += chunk.len() as u64;
            start = end;
        }
        if let Some(first) = pending.first()
            && was_empty
        {
            // Sequence numbers of failed writes leave gaps; the head skips them.
            meta.head = meta.head.max(first.seq);
        }
        if let Some(last) = taken.pending.last() {
            meta.next_seq = meta.next_seq.max(last.seq + 1);
        }
        // Sequence numbers of earlier failed appends are never handed out again.
        meta.next_seq = meta.next_seq.max(taken.min_next_seq);
        // 4. Age bound (only read the store when the oldest record may have expired).
        if let Some(age) = cfg.max_age {
            let cutoff = self.shared.now().saturating_sub(nanos(age));
            // The head only moves forward, so a cached oldest time is a lower bound.
            let maybe =
                meta.backlog_records > 0 && !was_empty && cached_oldest.is_none_or(|o| o < cutoff);
            if maybe {
                self.advance(
                    meta,
                    ops,
                    Advance::Expire(cutoff),
                    &mut losses.expired,
                    &mut losses.unreadable,
                )?;
                meta.expired_records += losses.expired.count;
                meta.expired_bytes += losses.expired.bytes;
            }
        }
        self.record_losses(taken, meta, ops, losses)?;
        ops.ops
            .push(Op::Put(codec::META_STATE.to_vec(), meta.encode()));
        ops.undo
            .push(Op::Put(codec::META_STATE.to_vec(), before_meta.encode()));
        Ok(())
    }

    /// Step 5 of a round: data-loss events and their acknowledgements.
    fn record_losses(
        &self,
        taken: &Taken,
        meta: &mut Meta,
        ops: &mut Batch,
        losses: &mut Losses,
    ) -> io::Result<()> {
        let mut loss_count = self.shared.lock().loss_count;
        for (key, id) in &taken.loss_acks {
            let k = codec::loss_key(*key);
            if let Some(v) = self.shared.storage.get(&k)? {
                // A merged event got a new id; acknowledging the old id keeps it.
                if decode_loss(&v).map_or(true, |l| l.message_id == *id) {
                    ops.delete(&k, &v);
                    loss_count = loss_count.saturating_sub(1);
                    losses.changed = true;
                }
            }
        }
        for (range, reason) in [
            (&losses.overflow, DataLossReason::Overflow),
            (&losses.expired, DataLossReason::Expired),
            (&losses.unreadable, DataLossReason::Unreadable),
        ] {
            if let Some(first) = range.first {
                self.push_loss(meta, ops, &mut loss_count, first, range, reason)?;
                losses.changed = true;
            }
        }
        meta.unreadable_records += losses.unreadable.count;
        losses.count_after = loss_count;
        Ok(())
    }

    fn push_loss(
        &self,
        meta: &mut Meta,
        ops: &mut Batch,
        loss_count: &mut u64,
        first: u64,
        range: &LossRange,
        reason: DataLossReason,
    ) -> io::Result<()> {
        let count = range.count.max(1).min(range.last - first + 1);
        let Ok(mut loss) = DataLoss::new(
            self.shared.device.clone(),
            Sequence(first),
            Sequence(range.last),
            count,
            reason,
            Timestamp::now(),
        ) else {
            return Ok(());
        };
        loss.bytes = Some(range.bytes);
        tracing::warn!(first, last = range.last, count, ?reason, "outbox data loss");
        // Extend the newest event when this loss continues it (same reason, next sequence);
        // past the event cap, merge into it regardless. The merged event gets a new id, so an
        // in-flight copy of the old one does not acknowledge the extended range.
        let lo = codec::loss_key(0);
        let hi = [codec::LOSS_PREFIX + 1];
        if let Some((k, v)) = self.shared.storage.last(&lo, &hi)?
            && let Ok(prev) = decode_loss(&v)
        {
            let continues =
                prev.reason == reason && prev.last_seq().0.checked_add(1) == Some(first);
            if continues || *loss_count >= MAX_LOSS_EVENTS {
                let f = prev.first_seq().min(loss.first_seq());
                let l = prev.last_seq().max(loss.last_seq());
                let c = (prev.count() + count).min(l.0 - f.0 + 1);
                let why = if continues {
                    reason
                } else {
                    DataLossReason::Unknown
                };
                if let Ok(mut merged) =
                    DataLoss::new(self.shared.device.clone(), f, l, c, why, Timestamp::now())
                {
                    merged.bytes = Some(prev.bytes.unwrap_or(0) + range.bytes);
                    merged.detail = if continues {
                        prev.detail
                    } else {
                        Some("several losses merged: data-loss event cap reached".into())
                    };
                    ops.ops.push(Op::Put(k.to_vec(), encode_loss(&merged)));
                    ops.undo.push(Op::Put(k.to_vec(), v.to_vec()));
                    return Ok(());
                }
            }
        }
        ops.put_new(
            codec::loss_key(meta.next_loss_id).to_vec(),
            encode_loss(&loss),
        );
        meta.next_loss_id += 1;
        *loss_count += 1;
        Ok(())
    }

    /// Moves the head forward. Returns the bytes freed. Segments wholly below the new head
    /// are removed; unreadable segments are removed and reported in `unreadable`.
    fn advance(
        &self,
        meta: &mut Meta,
        ops: &mut Batch,
        how: Advance,
        lost: &mut LossRange,
        unreadable: &mut LossRange,
    ) -> io::Result<u64> {
        let storage = &self.shared.storage;
        let lo = seg_key(0);
        let hi = [SEG_PREFIX + 1];
        let mut cursor = match storage.floor(&lo, &seg_key(meta.head))? {
            Some((k, _)) => k.to_vec(),
            None => seg_key(meta.head).to_vec(),
        };
        let mut freed = 0u64;
        let mut budget_hit = false;
        'outer: loop {
            let batch = storage.range(&cursor, &hi, storage.scan_batch())?;
            if batch.is_empty() {
                break;
            }
            for (i, (k, v)) in batch.iter().enumerate() {
                let first = codec::key_number(k).unwrap_or(meta.head);
                let Ok(idx) = index_segment(v) else {
                    // Unreadable: its range ends where the next segment starts.
                    let end = match batch.get(i + 1) {
                        Some((nk, _)) => codec::key_number(nk).unwrap_or(meta.next_seq),
                        None => storage
                            .range(&[k.as_ref(), &[0]].concat(), &hi, 1)?
                            .first()
                            .and_then(|(nk, _)| codec::key_number(nk).ok())
                            .unwrap_or(meta.next_seq),
                    };
                    let from = first.max(meta.head);
                    if end > from {
                        unreadable.add(from, end - from, v.len() as u64);
                        meta.backlog_records = meta.backlog_records.saturating_sub(end - from);
                        meta.backlog_bytes = meta.backlog_bytes.saturating_sub(v.len() as u64);
                        meta.head = end;
                    }
                    tracing::error!(segment = first, "outbox: unreadable segment removed");
                    ops.delete(k, v);
                    continue;
                };
                // Dropping for space must free what the new records need (bounded by them);
                // acknowledgements and expiry continue in the next round.
                if freed >= ROUND_RELEASE_BYTES && !matches!(how, Advance::Drop(_)) {
                    budget_hit = true;
                    ops.more = true;
                    break 'outer;
                }
                for (seq, &(at, len)) in (idx.first..).zip(idx.records.iter()) {
                    if seq >= meta.head {
                        let take = match how {
                            Advance::Ack(to) => seq < to,
                            Advance::Drop(need) => freed < need,
                            Advance::Expire(cutoff) => at < cutoff,
                        };
                        if !take {
                            break 'outer;
                        }
                        lost.add(seq, 1, len as u64);
                        freed += len as u64;
                        meta.backlog_records = meta.backlog_records.saturating_sub(1);
                        meta.backlog_bytes = meta.backlog_bytes.saturating_sub(len as u64);
                        meta.head = seq + 1;
                    }
                }
                ops.delete(k, v);
            }
            let Some((last_key, _)) = batch.last() else {
                break;
            };
            cursor = [last_key.as_ref(), &[0]].concat();
        }
        if let Advance::Ack(to) = how
            && !budget_hit
        {
            meta.head = meta.head.max(to);
        }
        Ok(freed)
    }

    /// Appended-at of the first live record.
    fn oldest_at(&self, meta: &Meta) -> Option<i64> {
        super::open::first_live_at(&self.shared.storage, meta)
            .ok()
            .flatten()
    }

    fn publish_metrics(&self, meta: &Meta, oldest: Option<i64>, losses: &Losses) {
        let (overflow, expired) = (&losses.overflow, &losses.expired);
        metrics::gauge!("iiot_outbox_backlog_records").set(meta.backlog_records as f64);
        metrics::gauge!("iiot_outbox_backlog_bytes").set(meta.backlog_bytes as f64);
        let age = oldest.map_or(0.0, |at| {
            (self.shared.now().saturating_sub(at)).max(0) as f64 / 1e9
        });
        metrics::gauge!("iiot_outbox_oldest_age_seconds").set(age);
        if overflow.count > 0 {
            metrics::counter!("iiot_outbox_dropped_records_total", "reason" => "overflow")
                .increment(overflow.count);
        }
        if expired.count > 0 {
            metrics::counter!("iiot_outbox_dropped_records_total", "reason" => "expired")
                .increment(expired.count);
        }
    }
}
