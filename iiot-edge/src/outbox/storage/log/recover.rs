//! Rebuilding the index from the log files at open.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::frame::{self, Bad, FILE_HEADER, FRAME_HEADER, VALUE_CRC};
use super::index::Loc;
use super::{LogOpenError, State, file_path, read_at};

/// Read-ahead while replaying: frame headers are read and small values skipped in it.
const READ_AHEAD: usize = 256 * 1024;

/// Replays log file `no` into `state` (which already lists the file). In the newest file
/// every value is verified and a torn tail is cut off. Returns where the next frame goes
/// and the file's salt.
pub(super) fn replay(
    dir: &Path,
    no: u32,
    newest: bool,
    state: &mut State,
) -> Result<(u64, u64), LogOpenError> {
    let name = file_path(dir, no).display().to_string();
    let file = state
        .files
        .get(&no)
        .map(|f| std::sync::Arc::clone(&f.file))
        .ok_or_else(|| LogOpenError::Corrupt(format!("{name}: not listed")))?;
    let len = file.metadata()?.len();
    let mut header = [0u8; FILE_HEADER as usize];
    let short = len < FILE_HEADER;
    if !short {
        read_at(&file, &mut header, 0)?;
    }
    if short || (newest && header == [0; FILE_HEADER as usize]) {
        if !newest {
            return Err(LogOpenError::Corrupt(format!(
                "{name}: shorter than its header"
            )));
        }
        // Created but never written (a crash while starting the file): nothing in it was
        // ever flushed, so it starts over.
        let salt = rand::random::<u64>();
        file.set_len(0)?;
        super::write_at(&file, &frame::file_header(u64::from(no), salt), 0)?;
        file.sync_data()?;
        return Ok((FILE_HEADER, salt));
    }
    let Some(salt) = frame::parse_file_header(&header, u64::from(no)) else {
        return Err(LogOpenError::Corrupt(format!("{name}: bad file header")));
    };
    let mut r = BufReader::with_capacity(READ_AHEAD, &*file);
    r.seek_relative(FILE_HEADER as i64)?;
    let mut pos = FILE_HEADER;
    while pos < len {
        match read_frame(&mut r, pos, len, newest, salt)? {
            Ok((frame_len, ops)) => {
                for (key, loc) in ops {
                    state.set(
                        &key,
                        loc.map(|(offset, vlen)| Loc {
                            file: no,
                            len: vlen,
                            offset,
                        }),
                    );
                }
                pos += frame_len;
            }
            Err(why) => {
                if zeros_from(&file, pos, len)? {
                    // Preallocated space that was never written: the file ends here.
                    break;
                }
                if !newest {
                    return Err(LogOpenError::Corrupt(format!(
                        "{name}: frame at offset {pos}: {why}"
                    )));
                }
                if let Some(at) = next_good_frame(&file, pos + 1, len, salt)? {
                    return Err(LogOpenError::Corrupt(format!(
                        "{name}: frame at offset {pos}: {why}, but a good frame follows at {at}"
                    )));
                }
                tracing::warn!(file = %name, offset = pos, bytes = len - pos, %why,
                    "outbox log: cutting off a torn final frame (never acknowledged)");
                file.set_len(pos)?;
                file.sync_data()?;
                break;
            }
        }
    }
    Ok((pos, salt))
}

/// A frame's keys with `Some((value offset, value length))` for puts.
type FrameKeys = Vec<(Vec<u8>, Option<(u64, u32)>)>;

/// Reads the frame at `pos` (the reader is positioned there). The outer `Result` is an I/O
/// error; the inner one a frame that is not valid. `verify`: check every value's checksum.
fn read_frame(
    r: &mut BufReader<&File>,
    pos: u64,
    len: u64,
    verify: bool,
    salt: u64,
) -> io::Result<Result<(u64, FrameKeys), Bad>> {
    let left = len - pos;
    if left < FRAME_HEADER as u64 {
        return Ok(Err(Bad::Length));
    }
    let mut raw = [0u8; FRAME_HEADER];
    r.read_exact(&mut raw)?;
    let header = match frame::parse_header(&raw) {
        Ok(h) => h,
        Err(b) => return Ok(Err(b)),
    };
    if header.frame_len() > left {
        return Ok(Err(Bad::Length));
    }
    let mut ops = vec![0u8; header.ops_len as usize];
    r.read_exact(&mut ops)?;
    let parsed = match frame::parse_ops(&raw, &header, &ops, salt) {
        Ok(p) => p,
        Err(b) => return Ok(Err(b)),
    };
    let mut at = pos + FRAME_HEADER as u64 + u64::from(header.ops_len);
    let mut keys = Vec::with_capacity(parsed.len());
    let mut scratch = Vec::new();
    for op in parsed {
        match op.put_len {
            Some(vlen) => {
                if verify {
                    if !value_ok(r, vlen, &mut scratch)? {
                        return Ok(Err(Bad::Checksum));
                    }
                } else {
                    r.seek_relative((VALUE_CRC + u64::from(vlen)) as i64)?;
                }
                keys.push((op.key, Some((at, vlen))));
                at += VALUE_CRC + u64::from(vlen);
            }
            None => keys.push((op.key, None)),
        }
    }
    Ok(Ok((header.frame_len(), keys)))
}

/// Reads one checksummed value (in chunks, so memory stays small) and checks it.
fn value_ok(r: &mut BufReader<&File>, vlen: u32, scratch: &mut Vec<u8>) -> io::Result<bool> {
    let mut c = [0u8; VALUE_CRC as usize];
    r.read_exact(&mut c)?;
    let mut h = crc32fast::Hasher::new();
    let mut left = vlen as usize;
    scratch.resize(left.min(READ_AHEAD), 0);
    while left > 0 {
        let n = left.min(scratch.len());
        r.read_exact(&mut scratch[..n])?;
        h.update(&scratch[..n]);
        left -= n;
    }
    Ok(h.finalize() == u32::from_be_bytes(c))
}

/// Whether every byte from `from` to `len` is zero.
fn zeros_from(file: &File, from: u64, len: u64) -> io::Result<bool> {
    const CHUNK: u64 = 1024 * 1024;
    let mut buf = Vec::new();
    let mut at = from;
    while at < len {
        let n = (len - at).min(CHUNK);
        buf.resize(n as usize, 0);
        read_at(file, &mut buf, at)?;
        if buf.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n;
    }
    Ok(true)
}

/// The offset of the first valid frame header at or after `from`, if any: tells a torn tail
/// (nothing valid follows) from damage in the middle of the log.
fn next_good_frame(file: &File, from: u64, len: u64, salt: u64) -> io::Result<Option<u64>> {
    const CHUNK: u64 = 1024 * 1024;
    let mut start = from;
    let mut buf = Vec::new();
    while start + FRAME_HEADER as u64 <= len {
        let n = (len - start).min(CHUNK + FRAME_HEADER as u64);
        buf.resize(n as usize, 0);
        read_at(file, &mut buf, start)?;
        for i in 0..buf.len().saturating_sub(FRAME_HEADER - 1) {
            let Ok(raw) = <[u8; FRAME_HEADER]>::try_from(&buf[i..i + FRAME_HEADER]) else {
                continue;
            };
            let Ok(h) = frame::parse_header(&raw) else {
                continue;
            };
            let at = start + i as u64;
            if h.frame_len() > len - at {
                continue;
            }
            let mut ops = vec![0u8; h.ops_len as usize];
            read_at(file, &mut ops, at + FRAME_HEADER as u64)?;
            if frame::parse_ops(&raw, &h, &ops, salt).is_ok() {
                return Ok(Some(at));
            }
        }
        start += CHUNK;
    }
    Ok(None)
}
