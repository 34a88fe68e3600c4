//! The small storage interface the outbox needs, and its sled implementation.
//!
//! The outbox only needs an ordered byte map with atomic multi-key batches, range scans
//! and an explicit durability point. Keeping sled behind this trait lets the engine be
//! swapped (or a crashing backend injected) without touching the outbox logic.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// One write in an atomic batch.
#[derive(Debug)]
pub(crate) enum Op {
    /// Insert or replace.
    Put(Vec<u8>, Vec<u8>),
    /// Remove (absent keys are fine).
    Delete(Vec<u8>),
}

/// A storage failure. `io::Error` keeps the kind (disk full, permission) for callers.
pub(crate) type StorageResult<T> = Result<T, io::Error>;

/// An ordered, crash-consistent byte map.
pub(crate) trait Storage: Send + Sync + 'static {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> StorageResult<Option<Bytes>>;
    /// Up to `limit` entries with `start <= key < end`, ascending.
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> StorageResult<Vec<(Bytes, Bytes)>>;
    /// The greatest entry with `start <= key <= at`.
    fn floor(&self, start: &[u8], at: &[u8]) -> StorageResult<Option<(Bytes, Bytes)>>;
    /// The greatest entry with `start <= key < end`.
    fn last(&self, start: &[u8], end: &[u8]) -> StorageResult<Option<(Bytes, Bytes)>>;
    /// Applies all ops atomically (all or none after a crash).
    fn apply(&self, ops: Vec<Op>) -> StorageResult<()>;
    /// Makes everything applied so far durable. The durability point.
    fn flush(&self) -> StorageResult<()>;
    /// Whether no key exists at all.
    fn is_empty(&self) -> bool;
}

/// sled 0.34, one tree.
pub(crate) struct SledStorage {
    db: sled::Db,
    path: PathBuf,
}

/// Why sled would not open a store.
#[derive(Debug)]
pub(crate) enum SledOpenError {
    /// The files are damaged (or sled panicked reading them).
    Corrupt(String),
    /// An I/O error; the store may be fine (locked, permissions).
    Io(io::Error),
    /// Anything else (unsupported version, bug): not treated as corruption, so data is kept.
    Other(String),
}

impl SledStorage {
    /// Opens (creating if needed) a sled store at `path`.
    pub(crate) fn open(path: &Path, cache_bytes: u64) -> Result<Self, SledOpenError> {
        let cfg = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            // We decide when to flush; a background flusher would only add fsyncs.
            .flush_every_ms(None);
        // sled may panic on some damaged files; that must not become a crash loop.
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cfg.open()));
        match res {
            Ok(Ok(db)) => Ok(Self {
                db,
                path: path.to_owned(),
            }),
            Ok(Err(sled::Error::Corruption { at, .. })) => Err(SledOpenError::Corrupt(format!(
                "sled reports corruption at {at:?}"
            ))),
            Ok(Err(sled::Error::Io(e))) => Err(SledOpenError::Io(e)),
            Ok(Err(e)) => Err(SledOpenError::Other(e.to_string())),
            Err(_) => Err(SledOpenError::Corrupt("sled panicked while opening".into())),
        }
    }

    /// The directory of the store.
    #[allow(dead_code)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

fn io_err(e: sled::Error) -> io::Error {
    match e {
        sled::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

fn kv(r: sled::Result<(sled::IVec, sled::IVec)>) -> StorageResult<(Bytes, Bytes)> {
    let (k, v) = r.map_err(io_err)?;
    // Share sled's buffer instead of copying record payloads.
    Ok((Bytes::from_owner(k), Bytes::from_owner(v)))
}

impl Storage for SledStorage {
    fn get(&self, key: &[u8]) -> StorageResult<Option<Bytes>> {
        Ok(self.db.get(key).map_err(io_err)?.map(Bytes::from_owner))
    }

    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> StorageResult<Vec<(Bytes, Bytes)>> {
        self.db.range(start..end).take(limit).map(kv).collect()
    }

    fn floor(&self, start: &[u8], at: &[u8]) -> StorageResult<Option<(Bytes, Bytes)>> {
        self.db.range(start..=at).next_back().map(kv).transpose()
    }

    fn last(&self, start: &[u8], end: &[u8]) -> StorageResult<Option<(Bytes, Bytes)>> {
        self.db.range(start..end).next_back().map(kv).transpose()
    }

    fn apply(&self, ops: Vec<Op>) -> StorageResult<()> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(k, v) => batch.insert(k, v),
                Op::Delete(k) => batch.remove(k),
            }
        }
        self.db.apply_batch(batch).map_err(io_err)
    }

    fn flush(&self) -> StorageResult<()> {
        self.db.flush().map(|_| ()).map_err(io_err)
    }

    fn is_empty(&self) -> bool {
        self.db.is_empty()
    }
}
