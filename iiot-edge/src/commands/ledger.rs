//! The command ledger: what the device knows of every command id it was given, on the
//! outbox's log engine (checksummed frames, one `fdatasync` per durable write, the
//! same SIGKILL and power-cut discipline).
//!
//! Keys: `c` + the 16 bytes of a command id → its [`Entry`]; `t` + a target tag → the
//! (issued_at, id) of the newest command that started executing on it; `m` → the
//! pruning watermark (the newest `issued_at` ever pruned: a command issued at or
//! before it is refused as too old, so pruning never lets an id run twice).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use iiot_core::types::{CommandState, MessageId, Timestamp};

use crate::outbox::storage::log::{LogOpenError, LogStorage};
use crate::outbox::storage::{Op, Storage};

const ENTRY: u8 = b'c';
const TARGET: u8 = b't';
const META: &[u8] = b"m";
/// Ledger files are small: every live value is copied forward when the oldest file is
/// reclaimed, so the target stays well above the bounded live size.
const FILE_TARGET: u64 = 8 * 1024 * 1024;
const FORMAT: u8 = 1;

/// How long and how many entries the ledger keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Entries older than this (by `issued_at`) are pruned, and commands issued
    /// earlier are refused as too old. Default 7 days.
    pub retention: Duration,
    /// At most this many finished entries are kept; the oldest go first. Default
    /// 10 000.
    pub max_entries: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            max_entries: 10_000,
        }
    }
}

/// Why the ledger could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The files are damaged: the ledger is not opened (a command history that may
    /// be missing entries could let a command run twice). Move the directory aside
    /// to start empty, accepting that risk for commands still in flight.
    #[error("command ledger at {path}: damaged: {why}")]
    Corrupt {
        /// The ledger directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// An entry of a format this build does not know.
    #[error("command ledger at {path}: unreadable entry: {why}")]
    Format {
        /// The ledger directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// An I/O error (locked by another process, permissions, disk full).
    #[error("command ledger at {path}: {source}")]
    Io {
        /// The ledger directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What the ledger holds for one command id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub state: CommandState,
    /// `issued_at` of the command, Unix ns (its receipt time when it could not be
    /// read, so that its id is kept for the window like any other).
    pub issued_at: i64,
    /// When the device first received it, Unix ns.
    pub received_at: i64,
    /// Deliveries of the id beyond the first, seen before it finished: each gets its
    /// duplicate ack when it does.
    pub dups: u32,
    /// Whether the final ack (and its duplicates) reached the control lane.
    pub ack_queued: bool,
    /// The encoded command while it has not finished (to queue it again after a
    /// restart); empty afterwards.
    pub command: Vec<u8>,
    /// The encoded final ack (Protobuf `CommandAck`); empty until final.
    pub ack: Vec<u8>,
}

fn state_code(s: CommandState) -> u8 {
    match s {
        CommandState::Pending => 1,
        CommandState::Queued => 2,
        CommandState::Validating => 4,
        CommandState::Executing => 5,
        CommandState::Completed => 6,
        CommandState::Rejected => 7,
        CommandState::Failed => 8,
        CommandState::Expired => 9,
        CommandState::Interrupted => 10,
        // `Delivered`, and any state added later (`CommandState` is non_exhaustive):
        // a restart queues it again for the checks.
        _ => 3,
    }
}

fn state_of(code: u8) -> Option<CommandState> {
    Some(match code {
        1 => CommandState::Pending,
        2 => CommandState::Queued,
        3 => CommandState::Delivered,
        4 => CommandState::Validating,
        5 => CommandState::Executing,
        6 => CommandState::Completed,
        7 => CommandState::Rejected,
        8 => CommandState::Failed,
        9 => CommandState::Expired,
        10 => CommandState::Interrupted,
        _ => return None,
    })
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32 + self.command.len() + self.ack.len());
        b.push(FORMAT);
        b.push(state_code(self.state));
        b.push(u8::from(self.ack_queued));
        b.extend_from_slice(&self.issued_at.to_be_bytes());
        b.extend_from_slice(&self.received_at.to_be_bytes());
        b.extend_from_slice(&self.dups.to_be_bytes());
        for part in [&self.command, &self.ack] {
            b.extend_from_slice(&(part.len() as u32).to_be_bytes());
            b.extend_from_slice(part);
        }
        b
    }

    fn decode(b: &[u8]) -> Result<Self, String> {
        let mut r = Reader(b);
        if r.take(1)? != [FORMAT] {
            return Err("unknown entry format".into());
        }
        let state = state_of(r.u8()?).ok_or("unknown state")?;
        let ack_queued = r.u8()? != 0;
        let issued_at = i64::from_be_bytes(r.array()?);
        let received_at = i64::from_be_bytes(r.array()?);
        let dups = u32::from_be_bytes(r.array()?);
        let command = r.part()?;
        let ack = r.part()?;
        Ok(Self {
            state,
            issued_at,
            received_at,
            dups,
            ack_queued,
            command,
            ack,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("entry truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn part(&mut self) -> Result<Vec<u8>, String> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        Ok(self.take(n)?.to_vec())
    }
}

fn entry_key(id: MessageId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(ENTRY);
    k.extend_from_slice(&id.to_bytes());
    k
}

fn target_key(target: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + target.len());
    k.push(TARGET);
    k.extend_from_slice(target.as_bytes());
    k
}

/// The newest command that started executing on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Executed {
    /// Its `issued_at`, Unix ns.
    pub issued_at: i64,
    /// Its id.
    pub id: MessageId,
    /// When it started, Unix ns on the device clock.
    pub started_at: i64,
}

impl Executed {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(40);
        b.extend_from_slice(&self.issued_at.to_be_bytes());
        b.extend_from_slice(&self.id.to_bytes());
        b.extend_from_slice(&self.started_at.to_be_bytes());
        b
    }
    fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader(b);
        Some(Self {
            issued_at: i64::from_be_bytes(r.array().ok()?),
            id: MessageId::from_slice(r.take(16).ok()?).ok()?,
            started_at: i64::from_be_bytes(r.array().ok()?),
        })
    }
}

struct Inner {
    dir: PathBuf,
    storage: LogStorage,
    config: LedgerConfig,
    /// Finished entries by (issued_at, id): the pruning order.
    finished: BTreeSet<(i64, MessageId)>,
    /// Entries not finished yet (Delivered, Executing).
    open: usize,
    executed: HashMap<String, Executed>,
    watermark: i64,
    /// A write failed: nothing more is written until the ledger is reopened (the
    /// engine refuses too; this makes the error say so).
    failed: bool,
}

/// What a command ledger holds, for observers and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LedgerStats {
    /// Finished entries kept (their stored acks answer duplicates).
    pub finished: usize,
    /// Entries received but not finished.
    pub open: usize,
    /// Commands issued at or before this instant are refused as too old (the newest
    /// `issued_at` ever pruned), Unix ns; 0 before the first pruning.
    pub watermark_unix_ns: i64,
}

/// The durable command ledger: every command id a device was given and what became
/// of it. Open it once per device directory and give it to the executor
/// ([`super::Executor`]). Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (creating if needed) the ledger in `dir`.
    ///
    /// # Errors
    /// [`LedgerError`]: damaged files are not repaired silently.
    pub fn open(dir: impl AsRef<Path>, config: LedgerConfig) -> Result<Self, LedgerError> {
        let dir = dir.as_ref().to_path_buf();
        let storage = LogStorage::open_with_target(&dir, 0, FILE_TARGET).map_err(|e| match e {
            LogOpenError::Corrupt(why) => LedgerError::Corrupt {
                path: dir.clone(),
                why,
            },
            LogOpenError::Io(source) => LedgerError::Io {
                path: dir.clone(),
                source,
            },
        })?;
        let io = |source| LedgerError::Io {
            path: dir.clone(),
            source,
        };
        let format = |why: String| LedgerError::Format {
            path: dir.clone(),
            why,
        };
        let mut inner = Inner {
            dir: dir.clone(),
            storage,
            config,
            finished: BTreeSet::new(),
            open: 0,
            executed: HashMap::new(),
            watermark: 0,
            failed: false,
        };
        if let Some(m) = inner.storage.get(META).map_err(io)? {
            let b: [u8; 8] = m[..].try_into().map_err(|_| format("watermark".into()))?;
            inner.watermark = i64::from_be_bytes(b);
        }
        for (k, v) in inner.scan(ENTRY).map_err(io)? {
            let id = MessageId::from_slice(&k[1..]).map_err(|e| format(e.to_string()))?;
            let e = Entry::decode(&v).map_err(|why| format(format!("{id}: {why}")))?;
            if e.state.is_terminal() {
                inner.finished.insert((e.issued_at, id));
            } else {
                inner.open += 1;
            }
        }
        for (k, v) in inner.scan(TARGET).map_err(io)? {
            let target = String::from_utf8_lossy(&k[1..]).into_owned();
            let x = Executed::decode(&v).ok_or_else(|| format(format!("target {target}")))?;
            inner.executed.insert(target, x);
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts and the pruning watermark.
    pub fn stats(&self) -> LedgerStats {
        let g = self.lock();
        LedgerStats {
            finished: g.finished.len(),
            open: g.open,
            watermark_unix_ns: g.watermark,
        }
    }

    /// The state recorded for `id`, if the ledger holds it.
    ///
    /// # Errors
    /// [`LedgerError::Io`] or [`LedgerError::Format`].
    pub fn state_of(&self, id: MessageId) -> Result<Option<CommandState>, LedgerError> {
        Ok(self.get(id)?.map(|e| e.state))
    }

    /// The directory the ledger lives in.
    pub fn path(&self) -> PathBuf {
        self.lock().dir.clone()
    }

    pub(crate) fn get(&self, id: MessageId) -> Result<Option<Entry>, LedgerError> {
        let g = self.lock();
        let v = g.storage.get(&entry_key(id)).map_err(|e| g.io(e))?;
        v.map(|v| {
            Entry::decode(&v).map_err(|why| LedgerError::Format {
                path: g.dir.clone(),
                why: format!("{id}: {why}"),
            })
        })
        .transpose()
    }

    /// Every entry (for recovery after a restart), in key order.
    pub(crate) fn entries(&self) -> Result<Vec<(MessageId, Entry)>, LedgerError> {
        let g = self.lock();
        let rows = g.scan(ENTRY).map_err(|e| g.io(e))?;
        rows.into_iter()
            .map(|(k, v)| {
                let id = MessageId::from_slice(&k[1..]).map_err(|e| g.format(e.to_string()))?;
                let e = Entry::decode(&v).map_err(|why| g.format(format!("{id}: {why}")))?;
                Ok((id, e))
            })
            .collect()
    }

    pub(crate) fn executed(&self, target: &str) -> Option<Executed> {
        self.lock().executed.get(target).copied()
    }

    pub(crate) fn watermark(&self) -> i64 {
        self.lock().watermark
    }

    pub(crate) fn retention(&self) -> Duration {
        self.lock().config.retention
    }

    /// Writes `entry` for `id` (with `executed` for its target, atomically), and
    /// makes it durable when `durable`. Blocking: call from a blocking context.
    pub(crate) fn put(
        &self,
        id: MessageId,
        entry: &Entry,
        executed: Option<(&str, Executed)>,
        durable: bool,
    ) -> Result<(), LedgerError> {
        let mut g = self.lock();
        if g.failed {
            return Err(g.io(std::io::Error::other(
                "an earlier write failed; reopen the ledger",
            )));
        }
        let key = entry_key(id);
        let before = g
            .storage
            .get(&key)
            .map_err(|e| g.io(e))?
            .and_then(|v| Entry::decode(&v).ok());
        let mut ops = vec![Op::Put(key, entry.encode())];
        if let Some((t, x)) = executed {
            ops.push(Op::Put(target_key(t), x.encode()));
        }
        let r = g
            .storage
            .apply(ops)
            .and_then(|()| if durable { g.storage.flush() } else { Ok(()) });
        if let Err(e) = r {
            g.failed = true;
            return Err(g.io(e));
        }
        if let Some((t, x)) = executed {
            g.executed.insert(t.to_owned(), x);
        }
        match before {
            Some(b) if b.state.is_terminal() => {
                g.finished.remove(&(b.issued_at, id));
            }
            Some(_) => g.open = g.open.saturating_sub(1),
            None => {}
        }
        if entry.state.is_terminal() {
            g.finished.insert((entry.issued_at, id));
        } else {
            g.open += 1;
        }
        Ok(())
    }

    /// Removes finished entries past the retention (by `issued_at`, against `now`)
    /// or beyond the count, oldest first, raising the watermark to the newest
    /// `issued_at` removed (durably, in the same write). Returns how many went.
    /// Blocking.
    pub(crate) fn prune(&self, now: Timestamp) -> Result<usize, LedgerError> {
        let mut g = self.lock();
        if g.failed {
            return Ok(0);
        }
        let cutoff = now.saturating_sub(g.config.retention).unix_nanos();
        let mut gone = Vec::new();
        let over = g.finished.len().saturating_sub(g.config.max_entries);
        for (i, &(issued, id)) in g.finished.iter().enumerate() {
            if i < over || issued < cutoff {
                gone.push((issued, id));
            } else {
                break;
            }
        }
        if gone.is_empty() {
            return Ok(0);
        }
        let watermark = gone
            .iter()
            .map(|&(t, _)| t)
            .max()
            .unwrap_or(0)
            .max(g.watermark);
        let mut ops: Vec<Op> = gone
            .iter()
            .map(|&(_, id)| Op::Delete(entry_key(id)))
            .collect();
        ops.push(Op::Put(META.to_vec(), watermark.to_be_bytes().to_vec()));
        if let Err(e) = g.storage.apply(ops).and_then(|()| g.storage.flush()) {
            g.failed = true;
            return Err(g.io(e));
        }
        for k in &gone {
            g.finished.remove(k);
        }
        g.watermark = watermark;
        Ok(gone.len())
    }
}

impl Inner {
    fn io(&self, source: std::io::Error) -> LedgerError {
        LedgerError::Io {
            path: self.dir.clone(),
            source,
        }
    }

    fn format(&self, why: String) -> LedgerError {
        LedgerError::Format {
            path: self.dir.clone(),
            why,
        }
    }

    fn scan(&self, prefix: u8) -> std::io::Result<Vec<(bytes::Bytes, bytes::Bytes)>> {
        let mut out = Vec::new();
        let mut start = vec![prefix];
        let end = vec![prefix + 1];
        loop {
            let page = self.storage.range(&start, &end, 1024)?;
            let Some((last, _)) = page.last() else {
                return Ok(out);
            };
            start = last.to_vec();
            start.push(0);
            let full = page.len() == 1024;
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: CommandState, issued_at: i64) -> Entry {
        Entry {
            state,
            issued_at,
            received_at: issued_at + 1,
            dups: 2,
            ack_queued: true,
            command: vec![1, 2, 3],
            ack: vec![9; 40],
        }
    }

    #[test]
    fn entries_round_trip_and_refuse_garbage() {
        let e = entry(CommandState::Executing, 77);
        assert_eq!(Entry::decode(&e.encode()), Ok(e.clone()));
        let b = e.encode();
        for n in 0..b.len() {
            assert!(Entry::decode(&b[..n]).is_err(), "truncated at {n}");
        }
        let mut bad = b.clone();
        bad[1] = 99;
        assert!(Entry::decode(&bad).is_err());
    }

    #[test]
    fn survives_reopen_and_prunes_by_count_and_age_raising_the_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LedgerConfig {
            retention: Duration::from_secs(100),
            max_entries: 3,
        };
        let l = Ledger::open(dir.path(), cfg).unwrap();
        let base = 1_000_000_000_000i64;
        for i in 0..5 {
            let id = MessageId::from_parts(1, i);
            l.put(
                id,
                &entry(CommandState::Completed, base + i as i64),
                None,
                true,
            )
            .unwrap();
        }
        let open = MessageId::from_parts(1, 99);
        let x = Executed {
            issued_at: base,
            id: open,
            started_at: base,
        };
        l.put(
            open,
            &entry(CommandState::Executing, base - 5),
            Some(("a/b", x)),
            true,
        )
        .unwrap();
        drop(l);
        let l = Ledger::open(dir.path(), cfg).unwrap();
        assert_eq!(l.stats().finished, 5);
        assert_eq!(l.stats().open, 1);
        assert_eq!(l.executed("a/b"), Some(x));
        let now = Timestamp::from_unix_nanos(base + 10).unwrap();
        assert_eq!(l.prune(now).unwrap(), 2, "two over the count");
        assert_eq!(l.stats().watermark_unix_ns, base + 1);
        assert_eq!(l.state_of(MessageId::from_parts(1, 0)).unwrap(), None);
        let later = now.saturating_add(Duration::from_secs(1000));
        assert_eq!(
            l.prune(later).unwrap(),
            3,
            "the rest are past the retention"
        );
        assert_eq!(l.stats().watermark_unix_ns, base + 4);
        // The open entry is never pruned.
        assert_eq!(l.state_of(open).unwrap(), Some(CommandState::Executing));
        drop(l);
        let l = Ledger::open(dir.path(), cfg).unwrap();
        assert_eq!(l.stats().watermark_unix_ns, base + 4);
        assert_eq!(l.stats().finished, 0);
    }
}
