//! The log engine's disk format: file headers and frames.
//!
//! **Stability warning:** this is a disk format. A change that old stores cannot read gets
//! new magic numbers. All integers are big-endian.
//!
//! ```text
//! file   := FILE_MAGIC (8) | file number u64 | salt u64 | frame*
//! frame  := header (24) | op headers | values
//! header := FRAME_MAGIC u32 | op count u32 | op headers length u32 | values length u64
//!         | CRC-32 u32 of the file's salt, the 20 bytes before it and the op headers
//! op     := kind u8 (1 put, 2 delete) | key length u16 | value length u32 | key
//! value  := CRC-32 u32 of the value | value        (one per put, in op order)
//! ```
//!
//! A frame is one atomic batch: on recovery it is applied whole or not at all. The header
//! checksum covers every length, so a torn or rotten header is always detected; each value
//! carries its own checksum so that it can be verified when it is read, without reading
//! every value of a large store at open. The salt (random per file) keeps bytes that
//! merely look like a frame (inside a payload, or left by an older file) from passing as
//! one: a hostile payload cannot make a torn tail look like damage in the middle of the log.

/// First bytes of every log file.
pub(super) const FILE_MAGIC: [u8; 8] = *b"IIOTOBX1";
/// Bytes of a file header.
pub(super) const FILE_HEADER: u64 = 24;
/// First bytes of every frame ("OBFR").
const FRAME_MAGIC: u32 = 0x4F42_4652;
/// Bytes of a frame header.
pub(super) const FRAME_HEADER: usize = 24;
/// Bytes of an op header before its key.
const OP_HEADER: usize = 1 + 2 + 4;
/// Bytes of the checksum before each value.
pub(super) const VALUE_CRC: u64 = 4;

const PUT: u8 = 1;
const DELETE: u8 = 2;

/// The header bytes of log file number `no` with frame checksums salted by `salt`.
pub(super) fn file_header(no: u64, salt: u64) -> [u8; FILE_HEADER as usize] {
    let mut h = [0u8; FILE_HEADER as usize];
    h[..8].copy_from_slice(&FILE_MAGIC);
    h[8..16].copy_from_slice(&no.to_be_bytes());
    h[16..].copy_from_slice(&salt.to_be_bytes());
    h
}

/// The salt in `buf` if it is the header of log file number `no`.
pub(super) fn parse_file_header(buf: &[u8], no: u64) -> Option<u64> {
    if buf.len() != FILE_HEADER as usize || buf[..8] != FILE_MAGIC || buf[8..16] != no.to_be_bytes()
    {
        return None;
    }
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&buf[16..]);
    Some(u64::from_be_bytes(salt))
}

/// One op of a frame being written.
pub(super) enum FrameOp<'a> {
    /// Insert or replace `key` with `value`, whose checksum is `crc`.
    Put {
        /// The key.
        key: &'a [u8],
        /// CRC-32 of `value` (copied verbatim when compaction moves a value, so that a
        /// value that rotted on disk stays detectably rotten).
        crc: u32,
        /// The value.
        value: &'a [u8],
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: &'a [u8],
    },
}

/// CRC-32 (IEEE) of `data`.
pub(super) fn crc(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// Why a frame could not be encoded.
#[derive(Debug)]
pub(super) struct TooLarge;

/// Encodes one frame for a file salted with `salt` into `out` (cleared first). Returns, per
/// op, the offset of its value's checksum from the start of the frame (`None` for deletes).
pub(super) fn encode(
    ops: &[FrameOp<'_>],
    salt: u64,
    out: &mut Vec<u8>,
) -> Result<Vec<Option<u64>>, TooLarge> {
    out.clear();
    let mut ops_len = 0usize;
    let mut values_len = 0u64;
    for op in ops {
        let (key, value) = match op {
            FrameOp::Put { key, value, .. } => (key, Some(value)),
            FrameOp::Delete { key } => (key, None),
        };
        if key.len() > usize::from(u16::MAX) {
            return Err(TooLarge);
        }
        ops_len += OP_HEADER + key.len();
        if let Some(v) = value {
            u32::try_from(v.len()).map_err(|_| TooLarge)?;
            values_len += VALUE_CRC + v.len() as u64;
        }
    }
    let count = u32::try_from(ops.len()).map_err(|_| TooLarge)?;
    let ops_len32 = u32::try_from(ops_len).map_err(|_| TooLarge)?;
    let total = FRAME_HEADER as u64 + ops_len as u64 + values_len;
    out.reserve(usize::try_from(total).map_err(|_| TooLarge)?);
    out.extend_from_slice(&FRAME_MAGIC.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&ops_len32.to_be_bytes());
    out.extend_from_slice(&values_len.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    for op in ops {
        match op {
            FrameOp::Put { key, value, .. } => {
                out.push(PUT);
                out.extend_from_slice(&(key.len() as u16).to_be_bytes());
                out.extend_from_slice(&(value.len() as u32).to_be_bytes());
                out.extend_from_slice(key);
            }
            FrameOp::Delete { key } => {
                out.push(DELETE);
                out.extend_from_slice(&(key.len() as u16).to_be_bytes());
                out.extend_from_slice(&0u32.to_be_bytes());
                out.extend_from_slice(key);
            }
        }
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_be_bytes());
    h.update(&out[..20]);
    h.update(&out[FRAME_HEADER..]);
    let hcrc = h.finalize();
    out[20..24].copy_from_slice(&hcrc.to_be_bytes());
    let mut offsets = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            FrameOp::Put { crc, value, .. } => {
                offsets.push(Some(out.len() as u64));
                out.extend_from_slice(&crc.to_be_bytes());
                out.extend_from_slice(value);
            }
            FrameOp::Delete { .. } => offsets.push(None),
        }
    }
    Ok(offsets)
}

/// A frame header read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    /// Number of ops.
    pub(super) count: u32,
    /// Length of the op headers.
    pub(super) ops_len: u32,
    /// Length of the values (with their checksums).
    pub(super) values_len: u64,
    crc: u32,
}

impl Header {
    /// Length of the whole frame.
    pub(super) fn frame_len(&self) -> u64 {
        FRAME_HEADER as u64 + u64::from(self.ops_len) + self.values_len
    }
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bad {
    /// Wrong magic number.
    Magic,
    /// The checksum does not match.
    Checksum,
    /// Lengths that contradict each other or the file.
    Length,
    /// An op of unknown kind.
    Kind,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Magic => "no frame magic",
            Self::Checksum => "checksum mismatch",
            Self::Length => "inconsistent lengths",
            Self::Kind => "unknown op kind",
        })
    }
}

/// Parses a frame header (not yet checked against its op headers).
pub(super) fn parse_header(buf: &[u8; FRAME_HEADER]) -> Result<Header, Bad> {
    let u32_at = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    if u32_at(0) != FRAME_MAGIC {
        return Err(Bad::Magic);
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&buf[12..20]);
    Ok(Header {
        count: u32_at(4),
        ops_len: u32_at(8),
        values_len: u64::from_be_bytes(v),
        crc: u32_at(20),
    })
}

/// One op read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ParsedOp {
    /// The key.
    pub(super) key: Vec<u8>,
    /// `Some(value length)` for a put, `None` for a delete.
    pub(super) put_len: Option<u32>,
}

/// Checks the header checksum (salted with the file's `salt`) over `raw_header` and `ops`
/// and parses the op headers.
pub(super) fn parse_ops(
    raw_header: &[u8; FRAME_HEADER],
    header: &Header,
    ops: &[u8],
    salt: u64,
) -> Result<Vec<ParsedOp>, Bad> {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_be_bytes());
    h.update(&raw_header[..20]);
    h.update(ops);
    if h.finalize() != header.crc {
        return Err(Bad::Checksum);
    }
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut values = 0u64;
    for _ in 0..header.count {
        let hdr = ops.get(at..at + OP_HEADER).ok_or(Bad::Length)?;
        let kind = hdr[0];
        let key_len = usize::from(u16::from_be_bytes([hdr[1], hdr[2]]));
        let val_len = u32::from_be_bytes([hdr[3], hdr[4], hdr[5], hdr[6]]);
        at += OP_HEADER;
        let key = ops.get(at..at + key_len).ok_or(Bad::Length)?.to_vec();
        at += key_len;
        let put_len = match kind {
            PUT => {
                values += VALUE_CRC + u64::from(val_len);
                Some(val_len)
            }
            DELETE if val_len == 0 => None,
            DELETE => return Err(Bad::Length),
            _ => return Err(Bad::Kind),
        };
        out.push(ParsedOp { key, put_len });
    }
    if at != ops.len() || values != header.values_len {
        return Err(Bad::Length);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: u64 = 0x0102_0304_0506_0708;

    fn frame(ops: &[FrameOp<'_>]) -> (Vec<u8>, Vec<Option<u64>>) {
        let mut out = Vec::new();
        let offs = encode(ops, SALT, &mut out).unwrap();
        (out, offs)
    }

    fn split(buf: &[u8]) -> ([u8; FRAME_HEADER], Header, &[u8]) {
        let raw: [u8; FRAME_HEADER] = buf[..FRAME_HEADER].try_into().unwrap();
        let h = parse_header(&raw).unwrap();
        let ops = &buf[FRAME_HEADER..FRAME_HEADER + h.ops_len as usize];
        (raw, h, ops)
    }

    #[test]
    fn frame_bytes_are_exact() {
        let (buf, offs) = frame(&[
            FrameOp::Put {
                key: b"k",
                crc: crc(b"vv"),
                value: b"vv",
            },
            FrameOp::Delete { key: b"d" },
        ]);
        let c = crc(b"vv").to_be_bytes();
        let mut want = vec![
            0x4F, 0x42, 0x46, 0x52, // magic
            0, 0, 0, 2, // count
            0, 0, 0, 16, // ops length: 2 × (7 + 1)
            0, 0, 0, 0, 0, 0, 0, 6, // values: crc + "vv"
        ];
        let mut h = crc32fast::Hasher::new();
        h.update(&[1, 2, 3, 4, 5, 6, 7, 8]);
        h.update(&want);
        let ops = [1, 0, 1, 0, 0, 0, 2, b'k', 2, 0, 1, 0, 0, 0, 0, b'd'];
        h.update(&ops);
        want.extend_from_slice(&h.finalize().to_be_bytes());
        want.extend_from_slice(&ops);
        want.extend_from_slice(&c);
        want.extend_from_slice(b"vv");
        assert_eq!(buf, want);
        assert_eq!(offs, vec![Some(40), None]);
    }

    #[test]
    fn frames_round_trip() {
        let (buf, _) = frame(&[
            FrameOp::Put {
                key: b"alpha",
                crc: 7,
                value: &[1, 2, 3],
            },
            FrameOp::Delete { key: b"beta" },
        ]);
        let (raw, h, ops) = split(&buf);
        assert_eq!(h.frame_len(), buf.len() as u64);
        let parsed = parse_ops(&raw, &h, ops, SALT).unwrap();
        // The same bytes in a file with another salt are not a frame.
        assert_eq!(parse_ops(&raw, &h, ops, SALT + 1), Err(Bad::Checksum));
        assert_eq!(
            parsed,
            vec![
                ParsedOp {
                    key: b"alpha".to_vec(),
                    put_len: Some(3)
                },
                ParsedOp {
                    key: b"beta".to_vec(),
                    put_len: None
                },
            ]
        );
    }

    #[test]
    fn every_flipped_header_byte_is_detected() {
        let (buf, _) = frame(&[FrameOp::Put {
            key: b"key",
            crc: 1,
            value: b"value",
        }]);
        let hdr_end = FRAME_HEADER + OP_HEADER + 3;
        for i in 0..hdr_end {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                let raw: [u8; FRAME_HEADER] = b[..FRAME_HEADER].try_into().unwrap();
                let Ok(h) = parse_header(&raw) else { continue };
                let Some(ops) = b.get(FRAME_HEADER..FRAME_HEADER + h.ops_len as usize) else {
                    continue;
                };
                assert!(
                    parse_ops(&raw, &h, ops, SALT).is_err(),
                    "flip of bit {bit} in byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn file_headers_name_their_number_and_salt() {
        assert_eq!(parse_file_header(&file_header(7, 9), 7), Some(9));
        assert_eq!(parse_file_header(&file_header(7, 9), 8), None);
        assert_eq!(parse_file_header(&file_header(7, 9)[..23], 7), None);
        let mut h = file_header(7, 9);
        h[0] ^= 1;
        assert_eq!(parse_file_header(&h, 7), None);
    }
}
