//! The log engine: an append-only log of checksummed frames with an in-memory index.
//!
//! The store is a directory of numbered files (`00000001.log`, …). Every [`Storage::apply`]
//! appends one frame holding the whole batch with one positional `write`; every
//! [`Storage::flush`] is one `fdatasync` of the file being written. The current location of
//! each key is kept in memory ([`index::Index`], about 24 bytes per outbox segment); values
//! are read back with positional reads (from the page cache, usually), so memory does not
//! grow with the bytes stored.
//!
//! **Durability.** A frame is durable once a flush after it returned. Before a new file is
//! started, the current one is synced, and the directory is synced after the new file is
//! created, so only the newest file can end in a frame that was never flushed. Recovery
//! reads every frame header (checksummed) of every file and verifies every value of the
//! newest file; a torn frame at the end of the newest file (a crash or power cut during a
//! write that nobody was told had succeeded) is cut off. Any other damage (a bad frame
//! followed by a good one, a bad frame in an older file, a missing file) is reported as
//! corruption, so the outbox moves the store aside and announces the loss. A value whose
//! checksum fails when it is read later (the disk rotted) reads as empty, which the outbox
//! reports as an unreadable segment.
//!
//! **Space.** Files are removed oldest first once nothing in them is live. When the oldest
//! file holds no live outbox segment any more, its few other live values (the format marker,
//! data-loss events) are copied to the newest file first; segments are never copied, since
//! the outbox consumes them in order and they die where they are. Files are only ever
//! removed from the front, so a delete recorded in a newer file never loses its meaning.
//!
//! **Preallocation.** Frames are written into files whose blocks already exist (zeros
//! written ahead of need, see `spare.rs`), so an `fdatasync` commits data only, not a new
//! file size; the zeros after the last frame of a file are free space, not damage.
//!
//! After a failed `fdatasync` the engine refuses every further write until the store is
//! reopened: Linux may have dropped the pages that failed, so only re-reading the files
//! tells what is on disk.

mod files;
mod frame;
mod index;
mod recover;
mod spare;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::{Op, Storage, StorageResult};
pub(crate) use files::holds_log_files;
use files::{NewFile, create_file, file_number, file_path, read_at, sync_dir, write_at};
use frame::FrameOp;
use index::{Index, Loc};

/// A new file is started once the current one reaches this size.
const FILE_TARGET: u64 = 32 * 1024 * 1024;
/// Segment size the outbox should build on this engine.
const SEGMENT_BYTES: usize = 64 * 1024;
/// Size of the first file of a new store, written full of zeros when it is created (see
/// `spare.rs`); each later preallocated file is twice the size of the one before, up to
/// the file target.
const FIRST_FILE: u64 = 1024 * 1024;
/// Frame buffers larger than this are released after use (a huge record must not pin its
/// buffer for the life of the store).
const KEEP_BUFFER: usize = 8 * 1024 * 1024;
/// Name of the lock file held while the store is open.
const LOCK_FILE: &str = "LOCK";

/// Why a store could not be opened.
#[derive(Debug)]
pub(crate) enum LogOpenError {
    /// The files are damaged.
    Corrupt(String),
    /// An I/O error; the store may be fine (locked: `WouldBlock`; permissions).
    Io(io::Error),
}

impl From<io::Error> for LogOpenError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// One log file.
struct FileInfo {
    file: Arc<File>,
    /// Bytes written to it.
    size: u64,
    /// Bytes of live values in it (with their checksums).
    live_bytes: u64,
    /// Live values in it.
    live_count: u64,
    /// Live outbox segments in it (dense keys): consumed in order, so never worth moving.
    live_dense: u64,
}

/// The index and the files, behind one lock that readers hold only to look up locations.
struct State {
    index: Index,
    files: BTreeMap<u32, FileInfo>,
}

impl State {
    /// Points `key` at `loc` (or removes it) and keeps the per-file live counts.
    fn set(&mut self, key: &[u8], loc: Option<Loc>) {
        let dense = u64::from(self.index.is_dense(key));
        let old = match loc {
            Some(l) => {
                if let Some(f) = self.files.get_mut(&l.file) {
                    f.live_bytes += frame::VALUE_CRC + u64::from(l.len);
                    f.live_count += 1;
                    f.live_dense += dense;
                }
                self.index.insert(key, l)
            }
            None => self.index.remove(key),
        };
        if let Some(o) = old
            && let Some(f) = self.files.get_mut(&o.file)
        {
            f.live_bytes = f
                .live_bytes
                .saturating_sub(frame::VALUE_CRC + u64::from(o.len));
            f.live_count = f.live_count.saturating_sub(1);
            f.live_dense = f.live_dense.saturating_sub(dense);
        }
    }
}

/// The file being appended to; only the outbox's writer thread uses it.
struct WriteSide {
    active: u32,
    file: Arc<File>,
    /// The next file is started once `end` reaches this: the active file's preallocated
    /// size, or the file target when it grows.
    capacity: u64,
    /// The active file's salt.
    salt: u64,
    /// Where the next frame goes.
    end: u64,
    /// Written since the last successful `fdatasync`.
    dirty: bool,
    buf: Vec<u8>,
    /// Set when a sync failed or a partial frame could not be cut off: no more writes.
    poisoned: Option<String>,
}

/// The log engine. See the module docs.
pub(crate) struct LogStorage {
    dir: PathBuf,
    /// A new file is started once the current one reaches this size.
    file_target: u64,
    state: Mutex<State>,
    write: Mutex<WriteSide>,
    /// The next file, preallocated. Dropped (its thread joined) before the lock.
    spares: spare::Spares,
    /// Held (with an exclusive lock) while the store is open.
    _lock: File,
}

impl LogStorage {
    /// Opens (creating if needed) the store in directory `dir`. `dense_prefix` is the first
    /// byte of the outbox's segment keys (kept in the compact part of the index).
    pub(crate) fn open(dir: &Path, dense_prefix: u8) -> Result<Self, LogOpenError> {
        Self::open_with_target(dir, dense_prefix, FILE_TARGET)
    }

    /// [`open`](Self::open) with another file size target (tests use small files).
    pub(crate) fn open_with_target(
        dir: &Path,
        dense_prefix: u8,
        file_target: u64,
    ) -> Result<Self, LogOpenError> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LogOpenError::Io(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the store is locked by another handle",
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LogOpenError::Io(e)),
        }
        let mut numbers = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if let Some(n) = e.file_name().to_str().and_then(file_number) {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        // A newest file that was created but never written (a crash, or a full disk,
        // while starting it) holds nothing: remove it, so that the file before it, which
        // may have been written on after a failed start, is recovered as the newest.
        while numbers.len() > 1
            && let Some(&last) = numbers.last()
            && files::never_written(&file_path(dir, last))?
        {
            tracing::warn!(
                file = last,
                "outbox log: removing a log file that was never written"
            );
            std::fs::remove_file(file_path(dir, last))?;
            sync_dir(dir)?;
            numbers.pop();
        }
        if numbers.is_empty() {
            create_file(dir, 1, NewFile::Zeroed(FIRST_FILE.min(file_target)))?
                .0
                .sync_all()?;
            sync_dir(dir)?;
            numbers.push(1);
        }
        for pair in numbers.windows(2) {
            if pair[1] != pair[0] + 1 {
                return Err(LogOpenError::Corrupt(format!(
                    "log file {:08x}.log is missing",
                    pair[0] + 1
                )));
            }
        }
        let mut state = State {
            index: Index::new(dense_prefix),
            files: BTreeMap::new(),
        };
        let last = numbers.last().copied().unwrap_or(1);
        let mut end = frame::FILE_HEADER;
        let mut salt = 0;
        for &no in &numbers {
            let newest = no == last;
            let file = OpenOptions::new()
                .read(true)
                .write(newest)
                .open(file_path(dir, no))?;
            state.files.insert(
                no,
                FileInfo {
                    file: Arc::new(file),
                    size: 0,
                    live_bytes: 0,
                    live_count: 0,
                    live_dense: 0,
                },
            );
            (end, salt) = recover::replay(dir, no, newest, &mut state)?;
            if let Some(f) = state.files.get_mut(&no) {
                f.size = end;
            }
        }
        let file = state
            .files
            .get(&last)
            .map(|f| Arc::clone(&f.file))
            .ok_or_else(|| LogOpenError::Corrupt("no log file".into()))?;
        // Zeros after the end are preallocated space: the file is full at its length.
        let len = file.metadata()?.len();
        let capacity = if len > end { len } else { file_target };
        Ok(Self {
            dir: dir.to_owned(),
            file_target,
            state: Mutex::new(state),
            write: Mutex::new(WriteSide {
                active: last,
                file,
                capacity,
                salt,
                end,
                dirty: false,
                buf: Vec::new(),
                poisoned: None,
            }),
            spares: spare::Spares::new(dir),
            _lock: lock,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self) -> MutexGuard<'_, WriteSide> {
        self.write.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a new file after syncing the current one.
    fn roll(&self, w: &mut WriteSide) -> io::Result<()> {
        self.sync(w)?;
        let no = w
            .active
            .checked_add(1)
            .ok_or_else(|| io::Error::other("log file numbers exhausted"))?;
        let how = match self.spares.take_ready() {
            Some((path, size)) => NewFile::Spare(path, size),
            None => NewFile::Grow,
        };
        let created = create_file(&self.dir, no, how).and_then(|f| sync_dir(&self.dir).map(|()| f));
        let (file, salt, size) = match created {
            Ok(f) => f,
            Err(e) => {
                // Leave no half-made file behind: the current file stays the newest (and
                // is written on), so nothing may look newer after a crash.
                let _ = std::fs::remove_file(file_path(&self.dir, no));
                return Err(e);
            }
        };
        let file = Arc::new(file);
        self.state().files.insert(
            no,
            FileInfo {
                file: Arc::clone(&file),
                size: frame::FILE_HEADER,
                live_bytes: 0,
                live_count: 0,
                live_dense: 0,
            },
        );
        w.active = no;
        w.file = file;
        w.capacity = size.unwrap_or(self.file_target);
        w.salt = salt;
        w.end = frame::FILE_HEADER;
        w.dirty = true;
        Ok(())
    }

    /// `fdatasync` of the active file; a failure poisons the engine.
    fn sync(&self, w: &mut WriteSide) -> io::Result<()> {
        if let Some(why) = &w.poisoned {
            return Err(poisoned(why));
        }
        if !w.dirty {
            return Ok(());
        }
        if let Err(e) = w.file.sync_data() {
            tracing::error!(error = %e, dir = %self.dir.display(),
                "outbox log: fdatasync failed; no more writes until the store is reopened");
            w.poisoned = Some(format!("fdatasync failed: {e}"));
            return Err(e);
        }
        w.dirty = false;
        Ok(())
    }

    /// Appends one frame and points its keys at it.
    fn write_frame(&self, w: &mut WriteSide, ops: &[FrameOp<'_>]) -> io::Result<()> {
        if let Some(why) = &w.poisoned {
            return Err(poisoned(why));
        }
        if w.end >= w.capacity
            && let Err(e) = self.roll(w)
        {
            if w.poisoned.is_some() {
                return Err(e);
            }
            // A larger file is harmless; keep writing to the current one.
            tracing::warn!(error = %e, "outbox log: could not start a new file");
        }
        let mut buf = std::mem::take(&mut w.buf);
        let offsets = frame::encode(ops, w.salt, &mut buf).map_err(|frame::TooLarge| {
            io::Error::new(io::ErrorKind::InvalidInput, "batch too large for one frame")
        })?;
        let at = w.end;
        let written = write_at(&w.file, &buf, at);
        let len = buf.len() as u64;
        if buf.capacity() <= KEEP_BUFFER {
            w.buf = buf;
        }
        if let Err(e) = written {
            // Later frames must follow good data: cut the partial frame off.
            if let Err(e2) = w.file.set_len(at) {
                w.poisoned = Some(format!("a partial frame could not be removed: {e2}"));
            }
            return Err(e);
        }
        w.end = at + len;
        w.dirty = true;
        if w.end >= w.capacity / 2 {
            self.spares
                .prepare(w.capacity.saturating_mul(2).min(self.file_target));
        }
        let mut st = self.state();
        if let Some(f) = st.files.get_mut(&w.active) {
            f.size = w.end;
        }
        for (op, off) in ops.iter().zip(offsets) {
            match (op, off) {
                (FrameOp::Put { key, value, .. }, Some(off)) => {
                    let loc = Loc {
                        file: w.active,
                        // Checked by `encode`.
                        len: value.len() as u32,
                        offset: at + off,
                    };
                    st.set(key, Some(loc));
                }
                (FrameOp::Put { key, .. } | FrameOp::Delete { key }, _) => st.set(key, None),
            }
        }
        Ok(())
    }

    /// Removes dead files from the front. When the oldest file holds no live segment, its
    /// few other live values (format marker, meta, data-loss events) are moved to the
    /// active file first; a file that still holds segments waits for them to be
    /// acknowledged (they are consumed in order, so moving them would only write them
    /// twice). Runs after a successful sync; failures are logged only.
    fn reclaim(&self, w: &mut WriteSide) {
        loop {
            let (no, dead, movable) = {
                let st = self.state();
                let Some((&no, f)) = st.files.first_key_value() else {
                    return;
                };
                if no == w.active {
                    return;
                }
                (no, f.live_count == 0, f.live_dense == 0)
            };
            if dead {
                self.state().files.remove(&no);
                let path = file_path(&self.dir, no);
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "outbox log: cannot remove a dead file");
                } else if let Err(e) = sync_dir(&self.dir) {
                    tracing::warn!(error = %e, "outbox log: cannot sync the store directory");
                }
                continue;
            }
            if !movable {
                return;
            }
            if let Err(e) = self.move_forward(w, no) {
                tracing::warn!(file = no, error = %e, "outbox log: cannot compact the oldest file");
                return;
            }
        }
    }

    /// Copies every live value of file `no` (checksums verbatim) into the active file and
    /// syncs it, so that `no` holds nothing live.
    fn move_forward(&self, w: &mut WriteSide, no: u32) -> io::Result<()> {
        let (entries, file) = {
            let st = self.state();
            let file = st
                .files
                .get(&no)
                .map(|f| Arc::clone(&f.file))
                .ok_or_else(|| io::Error::other("file vanished"))?;
            (st.index.in_file(no), file)
        };
        let mut raw = Vec::with_capacity(entries.len());
        for (key, loc) in entries {
            let mut buf = vec![0u8; frame::VALUE_CRC as usize + loc.len as usize];
            read_at(&file, &mut buf, loc.offset)?;
            raw.push((key, buf));
        }
        let ops: Vec<FrameOp<'_>> = raw
            .iter()
            .map(|(key, buf)| FrameOp::Put {
                key,
                crc: u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]),
                value: &buf[frame::VALUE_CRC as usize..],
            })
            .collect();
        self.write_frame(w, &ops)?;
        self.sync(w)
    }

    /// Looks up `pick(index)` and reads those values.
    fn fetch(
        &self,
        pick: impl FnOnce(&Index) -> Vec<(Vec<u8>, Loc)>,
    ) -> StorageResult<Vec<(Bytes, Bytes)>> {
        let found: Vec<(Vec<u8>, Loc, Arc<File>)> = {
            let st = self.state();
            pick(&st.index)
                .into_iter()
                .filter_map(|(k, loc)| {
                    let f = st.files.get(&loc.file)?;
                    Some((k, loc, Arc::clone(&f.file)))
                })
                .collect()
        };
        found
            .into_iter()
            .map(|(k, loc, file)| Ok((Bytes::from(k), self.read_value(&file, loc)?)))
            .collect()
    }

    /// Reads one value; a value that fails its checksum reads as empty.
    fn read_value(&self, file: &File, loc: Loc) -> io::Result<Bytes> {
        let mut buf = vec![0u8; frame::VALUE_CRC as usize + loc.len as usize];
        read_at(file, &mut buf, loc.offset)?;
        let stored = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let value = Bytes::from(buf).slice(frame::VALUE_CRC as usize..);
        if frame::crc(&value) != stored {
            tracing::error!(dir = %self.dir.display(), file = loc.file, offset = loc.offset,
                "outbox log: a stored value fails its checksum (disk damage); it reads as unreadable");
            return Ok(Bytes::new());
        }
        Ok(value)
    }
}

fn poisoned(why: &str) -> io::Error {
    io::Error::other(format!("outbox log refuses writes until reopened: {why}"))
}

impl Storage for LogStorage {
    fn get(&self, key: &[u8]) -> StorageResult<Option<Bytes>> {
        let mut v = self.fetch(|idx| {
            idx.get(key)
                .map(|l| (key.to_vec(), l))
                .into_iter()
                .collect()
        })?;
        Ok(v.pop().map(|(_, v)| v))
    }

    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> StorageResult<Vec<(Bytes, Bytes)>> {
        self.fetch(|idx| idx.range(Bound::Included(start), Bound::Excluded(end), limit))
    }

    fn floor(&self, start: &[u8], at: &[u8]) -> StorageResult<Option<(Bytes, Bytes)>> {
        Ok(self
            .fetch(|idx| idx.range_rev(Bound::Included(start), Bound::Included(at), 1))?
            .pop())
    }

    fn last(&self, start: &[u8], end: &[u8]) -> StorageResult<Option<(Bytes, Bytes)>> {
        Ok(self
            .fetch(|idx| idx.range_rev(Bound::Included(start), Bound::Excluded(end), 1))?
            .pop())
    }

    fn apply(&self, ops: Vec<Op>) -> StorageResult<()> {
        let frame_ops: Vec<FrameOp<'_>> = ops
            .iter()
            .map(|op| match op {
                Op::Put(key, value) => FrameOp::Put {
                    key,
                    crc: frame::crc(value),
                    value,
                },
                Op::Delete(key) => FrameOp::Delete { key },
            })
            .collect();
        let mut w = self.writer();
        self.write_frame(&mut w, &frame_ops)
    }

    fn flush(&self) -> StorageResult<()> {
        let mut w = self.writer();
        self.sync(&mut w)?;
        self.reclaim(&mut w);
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.state().index.len() == 0
    }

    fn segment_bytes(&self) -> usize {
        SEGMENT_BYTES
    }
}

#[cfg(test)]
mod tests;
