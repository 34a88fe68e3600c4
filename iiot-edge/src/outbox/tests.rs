//! Unit tests over an injected storage engine that can crash and fail, with an injected
//! clock: the model-based property test (against a `VecDeque` model) and I/O-failure tests.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use iiot_core::publish::OutboundMessage;
use iiot_core::types::{DataLossReason, DeviceId, Sequence};
use proptest::prelude::*;

use super::storage::{Op, Storage, StorageResult};
use super::*;

/// An in-memory engine: `apply` changes the live map, `flush` makes it durable, `crash`
/// forgets everything not flushed. Failures can be injected.
#[derive(Default)]
struct MemStorage {
    live: Mutex<BTreeMap<Vec<u8>, Bytes>>,
    durable: Mutex<BTreeMap<Vec<u8>, Bytes>>,
    fail_apply: AtomicBool,
    fail_flush: AtomicBool,
    flushes: std::sync::atomic::AtomicU64,
    slow_flush: AtomicBool,
    /// Most deletes in one `apply`.
    max_deletes: std::sync::atomic::AtomicUsize,
}

impl MemStorage {
    fn crash(&self) {
        let d = self.durable.lock().unwrap().clone();
        *self.live.lock().unwrap() = d;
    }
}

fn disk_full() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "injected: disk full")
}

impl Storage for MemStorage {
    fn get(&self, key: &[u8]) -> StorageResult<Option<Bytes>> {
        Ok(self.live.lock().unwrap().get(key).cloned())
    }
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> StorageResult<Vec<(Bytes, Bytes)>> {
        Ok(self
            .live
            .lock()
            .unwrap()
            .range(start.to_vec()..end.to_vec())
            .take(limit)
            .map(|(k, v)| (Bytes::copy_from_slice(k), v.clone()))
            .collect())
    }
    fn floor(&self, start: &[u8], at: &[u8]) -> StorageResult<Option<(Bytes, Bytes)>> {
        Ok(self
            .live
            .lock()
            .unwrap()
            .range(start.to_vec()..=at.to_vec())
            .next_back()
            .map(|(k, v)| (Bytes::copy_from_slice(k), v.clone())))
    }
    fn last(&self, start: &[u8], end: &[u8]) -> StorageResult<Option<(Bytes, Bytes)>> {
        Ok(self
            .live
            .lock()
            .unwrap()
            .range(start.to_vec()..end.to_vec())
            .next_back()
            .map(|(k, v)| (Bytes::copy_from_slice(k), v.clone())))
    }
    fn apply(&self, ops: Vec<Op>) -> StorageResult<()> {
        if self.fail_apply.swap(false, Ordering::SeqCst) {
            return Err(disk_full());
        }
        let deletes = ops.iter().filter(|o| matches!(o, Op::Delete(_))).count();
        self.max_deletes.fetch_max(deletes, Ordering::SeqCst);
        let mut live = self.live.lock().unwrap();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    live.insert(k, Bytes::from(v));
                }
                Op::Delete(k) => {
                    live.remove(&k);
                }
            }
        }
        Ok(())
    }
    fn flush(&self) -> StorageResult<()> {
        if self.fail_flush.swap(false, Ordering::SeqCst) {
            return Err(disk_full());
        }
        self.flushes.fetch_add(1, Ordering::SeqCst);
        if self.slow_flush.load(Ordering::SeqCst) {
            // Like a disk: a flush takes a while, so appends pile up behind it.
            std::thread::sleep(Duration::from_millis(2));
        }
        let live = self.live.lock().unwrap().clone();
        *self.durable.lock().unwrap() = live;
        Ok(())
    }
    fn is_empty(&self) -> bool {
        self.live.lock().unwrap().is_empty()
    }
}

fn nz(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap()
}

const TOPIC: &str = "t";

fn rec_len(payload: usize) -> usize {
    codec::RECORD_OVERHEAD + TOPIC.len() + payload
}

struct Harness {
    storage: Arc<MemStorage>,
    clock: Arc<AtomicI64>,
    config: OutboxConfig,
    ob: Option<Outbox>,
}

impl Harness {
    fn new(config: OutboxConfig) -> Self {
        let mut h = Self {
            storage: Arc::new(MemStorage::default()),
            clock: Arc::new(AtomicI64::new(1_000_000_000_000)),
            config,
            ob: None,
        };
        h.open();
        h
    }
    fn open(&mut self) {
        let c = Arc::clone(&self.clock);
        let ob = Outbox::open_with(
            &(Arc::clone(&self.storage) as Arc<dyn Storage>),
            DeviceId::new("dev-1").unwrap(),
            self.config.clone(),
            Arc::new(move || c.load(Ordering::SeqCst)),
        )
        .unwrap();
        self.ob = Some(ob);
    }
    fn ob(&self) -> &Outbox {
        self.ob.as_ref().unwrap()
    }
    async fn read_all(&self) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        let mut from = Sequence(0);
        loop {
            let b = self.ob().read(from, nz(7), nz(1 << 20)).await.unwrap();
            let Some(l) = b.last() else { break };
            from = Sequence(l.seq.0 + 1);
            out.extend(b);
        }
        out
    }
}

#[derive(Debug, Clone)]
enum Action {
    Append(usize),
    Read,
    Ack(usize),
    Reopen,
    Crash,
    Tick(u64),
    FailNextApply,
    FailNextFlush,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0usize..120).prop_map(Action::Append),
        2 => Just(Action::Read),
        2 => (0usize..6).prop_map(Action::Ack),
        1 => Just(Action::Reopen),
        1 => Just(Action::Crash),
        2 => (0u64..400).prop_map(Action::Tick),
        1 => Just(Action::FailNextApply),
        1 => Just(Action::FailNextFlush),
    ]
}

/// The model: what the outbox must hold.
#[derive(Default)]
struct Model {
    records: VecDeque<(u64, Vec<u8>, i64)>,
    next_seq: u64,
    dropped: Vec<u64>,
    expired: Vec<u64>,
}

impl Model {
    fn bytes(&self) -> usize {
        self.records.iter().map(|r| rec_len(r.1.len())).sum()
    }
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut p = seq.to_be_bytes().to_vec();
    p.resize(len.max(8), b'x');
    p
}

#[allow(clippy::too_many_lines)] // one match arm per model action reads best in one place
async fn run_model(actions: Vec<Action>, max_bytes: usize, max_age_ms: u64) {
    let mut cfg = OutboxConfig::default();
    cfg.set_max_bytes(nz(max_bytes))
        .set_max_age(Some(Duration::from_millis(max_age_ms)))
        .set_when_full(WhenFull::DropOldest);
    let mut h = Harness::new(cfg);
    let mut m = Model {
        next_seq: 1,
        ..Model::default()
    };
    let age_ns = (max_age_ms * 1_000_000) as i64;
    for a in actions {
        match a {
            Action::Append(len) => {
                let seq = m.next_seq;
                let p = payload(seq, len);
                let res = h.ob().append(OutboundMessage::new(TOPIC, p.clone())).await;
                m.next_seq += 1;
                assert_eq!(res.unwrap().seq(), Sequence(seq));
                let now = h.clock.load(Ordering::SeqCst);
                // Drop oldest to fit, then append, then expire (the writer's order).
                let len = rec_len(p.len());
                while !m.records.is_empty() && m.bytes() + len > max_bytes {
                    m.dropped.push(m.records.pop_front().unwrap().0);
                }
                if m.bytes() + len > max_bytes {
                    m.dropped.push(seq);
                } else {
                    m.records.push_back((seq, p, now));
                }
                expire(&mut m, now - age_ns);
            }
            Action::Read => {}
            Action::Ack(k) => {
                if let Some(&(seq, _, _)) = m.records.get(k) {
                    h.ob().ack(Sequence(seq));
                    for _ in 0..=k {
                        m.records.pop_front();
                    }
                }
            }
            Action::Reopen => {
                h.ob.take().unwrap().close().await;
                h.open();
            }
            Action::Crash => {
                // Acknowledgements are persisted by the next commit; sync first so the
                // model stays exact, then lose everything unflushed.
                h.ob().sync().await;
                h.storage.crash();
                h.ob.take().unwrap().close().await;
                h.storage.crash();
                h.open();
            }
            Action::Tick(ms) => {
                let now = h.clock.fetch_add((ms * 1_000_000) as i64, Ordering::SeqCst)
                    + (ms * 1_000_000) as i64;
                h.ob().sync().await;
                expire(&mut m, now - age_ns);
            }
            Action::FailNextApply | Action::FailNextFlush => {
                h.ob().sync().await;
                if matches!(a, Action::FailNextApply) {
                    h.storage.fail_apply.store(true, Ordering::SeqCst);
                } else {
                    h.storage.fail_flush.store(true, Ordering::SeqCst);
                }
                // The next operation must be the failing append.
                let seq = m.next_seq;
                let res = h
                    .ob()
                    .append(OutboundMessage::new(TOPIC, payload(seq, 10)))
                    .await;
                m.next_seq += 1;
                match res {
                    Err(AppendError::Io {
                        seq: s,
                        message,
                        source,
                    }) => {
                        assert_eq!(s, Sequence(seq));
                        assert_eq!(message.payload.as_ref(), payload(seq, 10).as_slice());
                        assert_eq!(source.kind(), io::ErrorKind::StorageFull);
                    }
                    other => panic!("expected an I/O error, got {other:?}"),
                }
            }
        }
        let got = h.read_all().await;
        let want: Vec<(u64, &[u8])> = m.records.iter().map(|r| (r.0, r.1.as_slice())).collect();
        let got_v: Vec<(u64, &[u8])> = got
            .iter()
            .map(|r| (r.seq.0, r.message.payload.as_ref()))
            .collect();
        assert_eq!(got_v, want, "after {a:?}");
        h.ob().sync().await;
        let s = h.ob().stats();
        assert_eq!(s.backlog_records, m.records.len() as u64, "after {a:?}");
        assert_eq!(s.backlog_bytes, m.bytes() as u64, "after {a:?}");
        assert_eq!(s.dropped_records, m.dropped.len() as u64, "after {a:?}");
        assert_eq!(s.expired_records, m.expired.len() as u64, "after {a:?}");
        assert_eq!(s.next_seq, Sequence(m.next_seq));
    }
    // Every dropped or expired record is covered by a data-loss event with the right reason,
    // and the counts add up: loss is never silent.
    let losses = h.ob().losses(nz(100_000)).await.unwrap();
    for (lost, reason) in [
        (&m.dropped, DataLossReason::Overflow),
        (&m.expired, DataLossReason::Expired),
    ] {
        let evs: Vec<_> = losses.iter().filter(|l| l.loss.reason == reason).collect();
        assert_eq!(
            evs.iter().map(|e| e.loss.count()).sum::<u64>(),
            lost.len() as u64
        );
        for seq in lost {
            assert!(
                evs.iter()
                    .any(|e| e.loss.first_seq().0 <= *seq && *seq <= e.loss.last_seq().0),
                "lost {seq} not reported"
            );
        }
    }
    // Acknowledged loss events go away.
    for l in &losses {
        h.ob().ack_loss(l);
    }
    h.ob().sync().await;
    assert_eq!(h.ob().stats().pending_losses, 0);
    assert!(h.ob().losses(nz(10)).await.unwrap().is_empty());
    h.ob.take().unwrap().close().await;
}

fn expire(m: &mut Model, cutoff: i64) {
    while m.records.front().is_some_and(|r| r.2 < cutoff) {
        m.expired.push(m.records.pop_front().unwrap().0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Model check (issue 4): append, read, ack, reopen, crash, overflow, expiry and injected
    /// disk-full errors against a `VecDeque` model.
    #[test]
    fn outbox_matches_model(
        actions in proptest::collection::vec(action(), 1..60),
        max_bytes in 200usize..2000,
        max_age_ms in 100u64..1000,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_model(actions, max_bytes, max_age_ms));
    }
}

#[tokio::test]
async fn flush_failure_returns_payload_and_keeps_stored_records() {
    let mut h = Harness::new(OutboxConfig::default());
    h.ob()
        .append(OutboundMessage::new(TOPIC, "a"))
        .await
        .unwrap();
    h.storage.fail_flush.store(true, Ordering::SeqCst);
    let err = h
        .ob()
        .append(OutboundMessage::new(TOPIC, "b"))
        .await
        .unwrap_err();
    match err {
        AppendError::Io {
            seq,
            source,
            message,
        } => {
            assert_eq!(seq, Sequence(2));
            assert_eq!(source.kind(), io::ErrorKind::StorageFull);
            assert_eq!(message.payload.as_ref(), b"b");
        }
        other => panic!("{other:?}"),
    }
    // The failed sequence is not reused; the store keeps working.
    assert_eq!(
        h.ob()
            .append(OutboundMessage::new(TOPIC, "c"))
            .await
            .unwrap()
            .seq(),
        Sequence(3)
    );
    let got: Vec<_> = h.read_all().await.iter().map(|r| r.seq.0).collect();
    assert_eq!(got, vec![1, 3]);
    h.ob.take().unwrap().close().await;
    h.storage.crash();
    h.open();
    let got: Vec<_> = h.read_all().await.iter().map(|r| r.seq.0).collect();
    assert_eq!(got, vec![1, 3]);
}

/// Acknowledging or expiring a large backlog at once is released in rounds of bounded
/// size (a round keeps what it removes until its flush succeeded), and `sync` waits for
/// all of them.
#[tokio::test]
async fn large_acknowledgements_and_expiry_are_released_in_bounded_rounds() {
    let n = 12_000u64;
    // Most segments one round may remove: ROUND_RELEASE_BYTES of segments (six of these
    // records fit the default 6 KiB), plus the one it starts in and the one it ends in.
    let per_round = writer::ROUND_RELEASE_BYTES as usize / (6 * rec_len(1000)) + 2;
    for expire in [false, true] {
        let mut cfg = OutboxConfig::default();
        cfg.set_durability(Durability::GroupCommit {
            window: Duration::from_millis(5),
        })
        .set_max_age(Some(Duration::from_secs(60)))
        .set_max_bytes(nz(64 << 20));
        let h = Harness::new(cfg);
        let mut last = None;
        for _ in 0..n {
            last = Some(
                h.ob()
                    .append(OutboundMessage::new(TOPIC, vec![7u8; 1000]))
                    .await
                    .unwrap(),
            );
        }
        let last = last.unwrap().durable().await.unwrap();
        let before = h.storage.flushes.load(Ordering::SeqCst);
        h.storage.max_deletes.store(0, Ordering::SeqCst);
        if expire {
            h.clock.fetch_add(61_000_000_000, Ordering::SeqCst);
        } else {
            h.ob().ack(last);
        }
        h.ob().sync().await;
        let s = h.ob().stats();
        assert_eq!(s.backlog_records, 0, "expire {expire}");
        assert_eq!(s.backlog_bytes, 0, "expire {expire}");
        assert_eq!(s.expired_records, if expire { n } else { 0 });
        let rounds = h.storage.flushes.load(Ordering::SeqCst) - before;
        assert!(rounds >= 3, "12 MB released in {rounds} rounds");
        let most = h.storage.max_deletes.load(Ordering::SeqCst);
        assert!(most <= per_round, "one round removed {most} segments");
        assert!(h.read_all().await.is_empty());
        if expire {
            // One announced loss covers the whole backlog, whatever the number of rounds.
            let l = h.ob().losses(nz(10)).await.unwrap();
            assert_eq!(l.len(), 1);
            assert_eq!(
                (
                    l[0].loss.first_seq(),
                    l[0].loss.last_seq(),
                    l[0].loss.count()
                ),
                (Sequence(1), last, n)
            );
        }
    }
}

#[tokio::test]
async fn expiry_happens_without_appends() {
    let mut cfg = OutboxConfig::default();
    cfg.set_max_age(Some(Duration::from_secs(1)));
    let h = Harness::new(cfg);
    for _ in 0..3 {
        h.ob()
            .append(OutboundMessage::new(TOPIC, "x"))
            .await
            .unwrap();
    }
    h.clock.fetch_add(2_000_000_000, Ordering::SeqCst);
    // The writer wakes on its own when the oldest record expires.
    h.ob().sync().await;
    let s = h.ob().stats();
    assert_eq!(s.expired_records, 3);
    let l = h.ob().losses(nz(10)).await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].loss.reason, DataLossReason::Expired);
    assert_eq!(
        (
            l[0].loss.first_seq(),
            l[0].loss.last_seq(),
            l[0].loss.count()
        ),
        (Sequence(1), Sequence(3), 3)
    );
}

/// Issue 4: concurrent `EveryWrite` appenders share flushes (group commit without added
/// delay), and each append still returns only after a flush that covers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_every_write_appends_share_flushes() {
    let h = Harness::new(OutboxConfig::default());
    h.storage.slow_flush.store(true, Ordering::SeqCst);
    let before = h.storage.flushes.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for t in 0..8u8 {
        let ob = h.ob().clone();
        let storage = Arc::clone(&h.storage);
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let a = ob
                    .append(OutboundMessage::new(TOPIC, vec![t]))
                    .await
                    .unwrap();
                // Returned only once durable: the record is in the flushed map.
                let key = codec::seg_key(a.seq().0);
                let durable = storage.durable.lock().unwrap();
                assert!(
                    durable
                        .range(..=key.to_vec())
                        .next_back()
                        .is_some_and(|(k, v)| {
                            let first = codec::key_number(k).unwrap();
                            codec::index_segment(v).unwrap().end() > a.seq().0 && first <= a.seq().0
                        }),
                    "record {} returned before it was flushed",
                    a.seq().0
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let flushes = h.storage.flushes.load(Ordering::SeqCst) - before;
    assert!(
        flushes < 100,
        "200 appends took {flushes} flushes: flushes are not shared"
    );
}

#[tokio::test]
async fn group_commit_durable_error_returns_the_message() {
    let mut cfg = OutboxConfig::default();
    cfg.set_durability(Durability::GroupCommit {
        window: Duration::from_millis(1),
    });
    let h = Harness::new(cfg);
    h.storage.fail_flush.store(true, Ordering::SeqCst);
    let a = h
        .ob()
        .append(OutboundMessage::new(TOPIC, "lost?"))
        .await
        .unwrap();
    let e = a.durable().await.unwrap_err();
    assert_eq!(e.seq, Sequence(1));
    assert_eq!(e.message.payload.as_ref(), b"lost?");
    assert_eq!(e.source.unwrap().kind(), io::ErrorKind::StorageFull);
    let b = h
        .ob()
        .append(OutboundMessage::new(TOPIC, "kept"))
        .await
        .unwrap();
    assert_eq!(b.durable().await.unwrap(), Sequence(2));
}

/// Bad bytes on disk never wedge the outbox: an unreadable data-loss event is dropped (and
/// logged) instead of blocking the loss queue, and an unreadable segment is skipped by
/// readers and reported as `Unreadable` data loss when the head passes it.
#[tokio::test]
async fn unreadable_entries_are_skipped_and_reported() {
    let mut h = Harness::new(OutboxConfig::default());
    for i in 0..3u8 {
        h.ob()
            .append(OutboundMessage::new(TOPIC, vec![i]))
            .await
            .unwrap();
    }
    h.ob.take().unwrap().close().await;
    {
        let mut live = h.storage.live.lock().unwrap();
        live.insert(
            codec::loss_key(7).to_vec(),
            Bytes::from_static(b"\x01garbage"),
        );
        live.insert(
            codec::seg_key(2).to_vec(),
            Bytes::from_static(b"\x01\x00rotten"),
        );
    }
    h.open();
    // Segment 2 is unreadable: readers skip it.
    let got: Vec<u64> = h.read_all().await.iter().map(|r| r.seq.0).collect();
    assert_eq!(got, vec![1, 3]);
    // The garbage loss event is dropped, not returned and not kept.
    assert!(h.ob().losses(nz(10)).await.unwrap().is_empty());
    h.ob().sync().await;
    assert_eq!(h.ob().stats().pending_losses, 0);
    // Acknowledging past the rotten segment reports it as data loss.
    h.ob().ack(Sequence(3));
    h.ob().sync().await;
    let l = h.ob().losses(nz(10)).await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].loss.reason, DataLossReason::Unreadable);
    assert_eq!(
        (l[0].loss.first_seq(), l[0].loss.last_seq()),
        (Sequence(2), Sequence(2))
    );
    assert_eq!(h.ob().stats().backlog_records, 0);
}
