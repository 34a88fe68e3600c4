//! The log engine's files: names, creation, positional I/O.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::{frame, spare};

/// The path of log file `no` in `dir`.
pub(super) fn file_path(dir: &Path, no: u32) -> PathBuf {
    dir.join(format!("{no:08x}.log"))
}

/// The number of a log file name, if it is one.
pub(super) fn file_number(name: &str) -> Option<u32> {
    let hex = name.strip_suffix(".log")?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// Whether `dir` holds files of this engine.
pub(crate) fn holds_log_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_str().and_then(file_number).is_some())
    })
}

/// Whether the log file at `path` was created but never written: shorter than its
/// header, or a header of zeros (a preallocated file renamed into place).
pub(super) fn never_written(path: &Path) -> io::Result<bool> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    if len < frame::FILE_HEADER {
        return Ok(true);
    }
    let mut header = [0u8; frame::FILE_HEADER as usize];
    read_at(&f, &mut header, 0)?;
    Ok(header == [0; frame::FILE_HEADER as usize])
}

/// Syncs a directory, so that files created or removed in it stay so.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Where the blocks of a new log file come from.
pub(super) enum NewFile {
    /// A prepared spare (path, size): renamed into place.
    Spare(PathBuf, u64),
    /// Written full of zeros up to this size now.
    Zeroed(u64),
    /// None: the file grows as frames are written.
    Grow,
}

/// Creates log file `no` (empty but for its header, then zeros up to its preallocated
/// size) with a fresh salt. Returns the file, its salt and its preallocated size.
pub(super) fn create_file(
    dir: &Path,
    no: u32,
    how: NewFile,
) -> io::Result<(File, u64, Option<u64>)> {
    let path = file_path(dir, no);
    let fresh = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
    };
    let (mut f, size) = match how {
        NewFile::Spare(spare, size) => match std::fs::rename(&spare, &path) {
            Ok(()) => (
                OpenOptions::new().read(true).write(true).open(&path)?,
                Some(size),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "outbox log: cannot use the preallocated file");
                let _ = std::fs::remove_file(&spare);
                (fresh()?, None)
            }
        },
        NewFile::Zeroed(size) => (fresh()?, Some(size)),
        NewFile::Grow => (fresh()?, None),
    };
    let salt = rand::random::<u64>();
    write_at(&f, &frame::file_header(u64::from(no), salt), 0)?;
    if let Some(size) = size
        && f.metadata()?.len() < size
    {
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(frame::FILE_HEADER))?;
        spare::write_zeros(&mut f, size - frame::FILE_HEADER)?;
    }
    Ok((f, salt, size))
}

#[cfg(unix)]
pub(super) fn write_at(f: &File, buf: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, buf, at)
}

#[cfg(unix)]
pub(super) fn read_at(f: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, at)
}

#[cfg(windows)]
pub(super) fn write_at(f: &File, mut buf: &[u8], mut at: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_write(f, buf, at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(windows)]
pub(super) fn read_at(f: &File, mut buf: &mut [u8], mut at: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(f, buf, at) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
