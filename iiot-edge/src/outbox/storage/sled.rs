//! The sled engine: one sled 0.34 tree.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{EngineOpenError, Op, Storage, StorageResult};

/// sled 0.34, one tree.
///
/// **Durability.** On Linux, sled 0.34's `flush()` ends with `sync_file_range`, which writes
/// the log to the device but neither flushes the device's volatile write cache nor commits
/// file metadata, and values in nodes too large for the log (more than about 128 KiB) go to
/// blob files that sled never syncs at all. Neither survives a power cut for certain. So
/// [`Storage::flush`] here is sled's flush followed by `fdatasync` of the log file and of any
/// new blob files (and their directory): that is the durability point. The outbox keeps
/// segments small (6 KiB, the trait's default segment size) so blobs normally never appear.
pub(crate) struct SledStorage {
    db: ::sled::Db,
    path: PathBuf,
    /// sled's log file, for `fdatasync`.
    log: std::fs::File,
    /// Highest blob (by its log sequence number name) already synced.
    synced_blob: std::sync::Mutex<u64>,
}

impl SledStorage {
    /// Opens (creating if needed) a sled store at `path`.
    pub(crate) fn open(path: &Path, cache_bytes: u64) -> Result<Self, EngineOpenError> {
        let cfg = ::sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            // We decide when to flush; a background flusher would only add fsyncs.
            .flush_every_ms(None);
        // sled may panic on some damaged files; that must not become a crash loop.
        let try_open = || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cfg.open()));
        // sled releases its file lock when its own background threads let go of the
        // last handle, a moment after the store that used it was closed: a lock still
        // held by a store of this process that is closing is waited for (up to 2 s),
        // not reported as another process's.
        let mut res = try_open();
        for _ in 0..40 {
            let locked = matches!(&res, Ok(Err(::sled::Error::Io(e)))
                if e.kind() == io::ErrorKind::WouldBlock || e.to_string().contains("lock"));
            if !locked {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            res = try_open();
        }
        match res {
            Ok(Ok(db)) => {
                let log = std::fs::File::open(path.join("db")).map_err(EngineOpenError::Io)?;
                Ok(Self {
                    db,
                    path: path.to_owned(),
                    log,
                    synced_blob: std::sync::Mutex::new(0),
                })
            }
            Ok(Err(::sled::Error::Corruption { at, .. })) => Err(EngineOpenError::Corrupt(
                format!("sled reports corruption at {at:?}"),
            )),
            Ok(Err(::sled::Error::Io(e))) => Err(EngineOpenError::Io(e)),
            Ok(Err(e)) => Err(EngineOpenError::Other(e.to_string())),
            Err(_) => Err(EngineOpenError::Corrupt(
                "sled panicked while opening".into(),
            )),
        }
    }

    /// Syncs blob files sled wrote since the last call, then the blob directory.
    fn sync_blobs(&self) -> io::Result<()> {
        let dir = self.path.join("blobs");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut synced = self
            .synced_blob
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut newest = *synced;
        let mut any = false;
        for e in entries {
            let e = e?;
            let Some(n) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if n > *synced {
                std::fs::File::open(e.path())?.sync_data()?;
                newest = newest.max(n);
                any = true;
            }
        }
        if any {
            std::fs::File::open(&dir)?.sync_all()?;
            *synced = newest;
        }
        Ok(())
    }
}

fn io_err(e: ::sled::Error) -> io::Error {
    match e {
        ::sled::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

fn kv(r: ::sled::Result<(::sled::IVec, ::sled::IVec)>) -> StorageResult<(Bytes, Bytes)> {
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
        let mut batch = ::sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(k, v) => batch.insert(k, v),
                Op::Delete(k) => batch.remove(k),
            }
        }
        self.db.apply_batch(batch).map_err(io_err)
    }

    fn flush(&self) -> StorageResult<()> {
        self.db.flush().map_err(io_err)?;
        self.sync_blobs()?;
        self.log.sync_data()
    }

    fn is_empty(&self) -> bool {
        self.db.is_empty()
    }
}
