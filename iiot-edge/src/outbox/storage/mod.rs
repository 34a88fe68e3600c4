//! The small storage interface the outbox needs, and its two engines.
//!
//! The outbox only needs an ordered byte map with atomic multi-key batches, range scans
//! and an explicit durability point. Keeping the engine behind this trait lets it be
//! swapped (or a crashing backend injected in tests) without touching the outbox logic.
//!
//! * [`log::LogStorage`]: the default. An append-only log of checksummed frames in
//!   numbered files with an in-memory index; one `write` and one `fdatasync` per commit.
//! * `sled::SledStorage`: sled 0.34, the engine the outbox was first built on (cargo
//!   feature `sled`).

use std::io;

use bytes::Bytes;

pub(crate) mod log;
#[cfg(feature = "sled")]
pub(crate) mod sled;

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

/// Why an engine would not open a store.
#[derive(Debug)]
pub(crate) enum EngineOpenError {
    /// The files are damaged (or the engine panicked reading them).
    Corrupt(String),
    /// An I/O error; the store may be fine (locked, permissions).
    Io(io::Error),
    /// Anything else (unsupported version, bug): not treated as corruption, so data is kept.
    Other(String),
}

impl From<log::LogOpenError> for EngineOpenError {
    fn from(e: log::LogOpenError) -> Self {
        match e {
            log::LogOpenError::Corrupt(why) => Self::Corrupt(why),
            log::LogOpenError::Io(e) => Self::Io(e),
        }
    }
}

/// Segment size the outbox builds when the engine states no preference.
pub(crate) const DEFAULT_SEGMENT_BYTES: usize = 6 * 1024;

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
    /// The largest value the outbox should pack records into (one record may exceed it).
    fn segment_bytes(&self) -> usize {
        DEFAULT_SEGMENT_BYTES
    }
    /// How many segments to fetch per range query when scanning: about 512 KiB worth.
    fn scan_batch(&self) -> usize {
        (512 * 1024 / self.segment_bytes().max(1)).clamp(2, 64)
    }
}
