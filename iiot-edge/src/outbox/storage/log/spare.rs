//! Preallocated log files.
//!
//! `fdatasync` of a file that grows must also commit its new size (a file-system journal
//! commit on ext4), which costs about as much again as the data. So, like database
//! write-ahead logs, the engine writes into files whose blocks already exist: the first
//! file of a new store is written full of zeros (small: 1 MiB) when it is created, and
//! once the active file is half full a background thread prepares the next one ("spare",
//! twice the size, up to the file target) and syncs it; the next roll renames it into
//! place. Frames then overwrite zeros, and recovery reads an all-zero remainder as free
//! space. If no spare is ready at a roll (or preparing one failed, e.g. for lack of
//! space), the new file simply grows.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

const PREFIX: &str = "spare-";
const SUFFIX: &str = ".tmp";

/// A prepared spare: its path and size.
type Ready = Option<(PathBuf, u64)>;

/// The spare file of one store: at most one, prepared or being prepared.
pub(super) struct Spares {
    dir: PathBuf,
    job: Mutex<Option<JoinHandle<Ready>>>,
}

impl Spares {
    /// Spares in `dir`; spares left by an earlier run (possibly written only in part) are
    /// removed.
    pub(super) fn new(dir: &Path) -> Self {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(PREFIX) && name.ends_with(SUFFIX) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Self {
            dir: dir.to_owned(),
            job: Mutex::new(None),
        }
    }

    /// Starts preparing a spare of `size` bytes unless one is prepared or being prepared.
    pub(super) fn prepare(&self, size: u64) {
        let mut job = self.job.lock().unwrap_or_else(PoisonError::into_inner);
        if job.is_some() {
            return;
        }
        let path = self
            .dir
            .join(format!("{PREFIX}{:016x}{SUFFIX}", rand::random::<u64>()));
        let spawned = std::thread::Builder::new()
            .name("iiot-outbox-spare".into())
            .spawn(move || match zero_fill(&path, size) {
                Ok(()) => Some((path, size)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e,
                        "outbox log: cannot preallocate the next file; it will grow instead");
                    let _ = std::fs::remove_file(&path);
                    None
                }
            });
        match spawned {
            Ok(h) => *job = Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "outbox log: cannot start the preallocation thread");
            }
        }
    }

    /// A prepared spare (path and size), if one is ready now (never waits).
    pub(super) fn take_ready(&self) -> Ready {
        let mut job = self.job.lock().unwrap_or_else(PoisonError::into_inner);
        if !job.as_ref().is_some_and(JoinHandle::is_finished) {
            return None;
        }
        job.take().and_then(|h| h.join().ok().flatten())
    }
}

impl Drop for Spares {
    /// Waits for a preparation in progress (it must not outlive the store's lock) and
    /// removes an unused spare.
    fn drop(&mut self) {
        let job = self
            .job
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((path, _)) = job.and_then(|h| h.join().ok().flatten()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes `size` zero bytes to a new file at `path` and syncs it.
fn zero_fill(path: &Path, size: u64) -> io::Result<()> {
    let mut f: File = OpenOptions::new().write(true).create_new(true).open(path)?;
    write_zeros(&mut f, size)?;
    f.sync_all()
}

/// Writes `n` zero bytes at the file's current position.
pub(super) fn write_zeros(f: &mut File, n: u64) -> io::Result<()> {
    let chunk = vec![0u8; n.min(1024 * 1024) as usize];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..k])?;
        left -= k as u64;
    }
    Ok(())
}
