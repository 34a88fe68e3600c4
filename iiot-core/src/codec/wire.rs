//! A minimal Protobuf wire scanner: reads top-level fields without decoding them,
//! so the router can read `schema_version` first and count repeated fields before
//! anything is allocated.

/// What the scanner found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireError {
    /// The bytes end inside a field.
    Truncated,
    /// A varint longer than 10 bytes.
    VarintOverflow,
    /// Field number 0 or a wire type that is not 0, 1, 2 or 5 (groups included).
    BadTag,
}

impl WireError {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Truncated => "truncated field",
            Self::VarintOverflow => "varint longer than 10 bytes",
            Self::BadTag => "invalid field number or wire type",
        }
    }
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some(&b) = buf.get(*pos) else {
            return Err(WireError::Truncated);
        };
        *pos += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::VarintOverflow)
}

/// Summary of one message's top-level fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Scan {
    /// The last value of field 1 when it is a varint (protobuf's last-one-wins rule).
    pub(crate) field1_varint: Option<u64>,
    /// How many times `count_field` occurred.
    pub(crate) count: usize,
    /// How many times `count_field2` occurred.
    pub(crate) count2: usize,
}

/// Walks every top-level field of `buf`, stopping early once `count_field` has been
/// seen more than `stop_after` times.
pub(crate) fn scan(buf: &[u8], count_field: u32, stop_after: usize) -> Result<Scan, WireError> {
    scan2(buf, count_field, 0, stop_after)
}

/// Like [`scan`], also counting `count_field2`; stops once either count passes `stop_after`.
pub(crate) fn scan2(
    buf: &[u8],
    count_field: u32,
    count_field2: u32,
    stop_after: usize,
) -> Result<Scan, WireError> {
    let mut pos = 0usize;
    let mut out = Scan::default();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(WireError::BadTag);
        }
        match key & 7 {
            0 => {
                let v = varint(buf, &mut pos)?;
                if field == 1 {
                    out.field1_varint = Some(v);
                }
            }
            1 => pos = pos.checked_add(8).ok_or(WireError::Truncated)?,
            2 => {
                let len = varint(buf, &mut pos)?;
                let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
                pos = pos.checked_add(len).ok_or(WireError::Truncated)?;
            }
            5 => pos = pos.checked_add(4).ok_or(WireError::Truncated)?,
            _ => return Err(WireError::BadTag),
        }
        if pos > buf.len() {
            return Err(WireError::Truncated);
        }
        if field == u64::from(count_field) {
            out.count += 1;
        } else if field == u64::from(count_field2) {
            out.count2 += 1;
        }
        if out.count > stop_after || out.count2 > stop_after {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_version_and_counts() {
        // field 1 varint 1; field 6 len 0 twice; field 5 fixed64.
        let buf = [
            0x08, 0x01, 0x32, 0x00, 0x32, 0x00, 0x29, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        let s = scan(&buf, 6, usize::MAX).unwrap();
        assert_eq!(
            s,
            Scan {
                field1_varint: Some(1),
                count: 2,
                count2: 0,
            }
        );
        assert_eq!(scan(&buf, 6, 0).unwrap().count, 1);
        let s = scan2(&buf, 5, 6, usize::MAX).unwrap();
        assert_eq!((s.count, s.count2), (1, 2));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(scan(&[0x08], 6, 9), Err(WireError::Truncated));
        assert_eq!(scan(&[0x0b], 6, 9), Err(WireError::BadTag)); // group start
        assert_eq!(scan(&[0x00], 6, 9), Err(WireError::BadTag));
        assert_eq!(scan(&[0x32, 0x05, 0x00], 6, 9), Err(WireError::Truncated));
        assert_eq!(
            scan(
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
                ],
                6,
                9
            ),
            Err(WireError::VarintOverflow)
        );
        assert_eq!(
            scan(
                &[
                    0x32, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
                ],
                6,
                9
            ),
            Err(WireError::Truncated)
        );
    }
}
