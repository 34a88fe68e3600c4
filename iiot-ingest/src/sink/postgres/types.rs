//! PostgreSQL binary encodings of the two types the schema needs beyond what
//! postgres-types offers: `numeric(20,0)` for `u64` (so values above `i64::MAX`
//! are kept exactly) and `timestamptz` from a nanosecond [`Timestamp`].
//!
//! The same functions feed both statement parameters ([`ToSql`]) and the binary
//! COPY stream, so a value is encoded one way only. [`PgU64`] and [`PgTime`] are
//! public so that code reading the sink's tables with tokio-postgres can decode
//! those columns exactly.

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use iiot_core::types::Timestamp;
use postgres_types::{FromSql, IsNull, ToSql, Type, accepts, to_sql_checked};

type BoxError = Box<dyn StdError + Sync + Send>;

/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01T00:00:00Z).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// `numeric` sign word of a positive number.
const NUMERIC_POS: u16 = 0x0000;

/// Encoded length of a `timestamptz`.
pub(crate) const TIMESTAMP_LEN: i32 = 8;

/// `ts` as PostgreSQL microseconds since 2000-01-01. PostgreSQL keeps
/// microseconds: the sub-microsecond part is dropped (rounded down; timestamps are
/// never negative, so this is a floor).
pub(crate) fn pg_micros(ts: Timestamp) -> i64 {
    ts.unix_nanos() / 1_000 - PG_EPOCH_OFFSET_US
}

/// The inverse of [`pg_micros`].
///
/// # Errors
/// When the value lies before 1970 or past the [`Timestamp`] range (including
/// PostgreSQL's `infinity`).
pub(crate) fn from_pg_micros(us: i64) -> Result<Timestamp, BoxError> {
    let ns = us
        .checked_add(PG_EPOCH_OFFSET_US)
        .and_then(|u| u.checked_mul(1_000))
        .ok_or("timestamptz outside the Timestamp range")?;
    Ok(Timestamp::from_unix_nanos(ns)?)
}

/// Base-10000 digits of `v`, most significant first, without trailing zero
/// groups, and the weight of the first digit (PostgreSQL's `numeric` layout).
fn numeric_digits(mut v: u64) -> ([u16; 5], usize, i16) {
    // u64::MAX has 20 decimal digits: 5 groups of 4.
    let mut rev = [0u16; 5];
    let mut n = 0;
    while v > 0 {
        rev[n] = (v % 10_000) as u16; // < 10000: fits u16
        v /= 10_000;
        n += 1;
    }
    let weight = n as i16 - 1; // n <= 5
    let mut digits = [0u16; 5];
    for i in 0..n {
        digits[i] = rev[n - 1 - i];
    }
    let mut len = n;
    while len > 0 && digits[len - 1] == 0 {
        len -= 1;
    }
    (digits, len, weight)
}

/// Encoded length of `v` as `numeric`.
pub(crate) fn numeric_len(v: u64) -> i32 {
    let (_, len, _) = numeric_digits(v);
    8 + 2 * len as i32
}

/// Writes `v` as a binary `numeric` (without the length prefix).
pub(crate) fn put_numeric(out: &mut BytesMut, v: u64) {
    let (digits, len, weight) = numeric_digits(v);
    out.put_i16(len as i16);
    out.put_i16(if len == 0 { 0 } else { weight });
    out.put_u16(NUMERIC_POS);
    out.put_i16(0); // dscale: an integer
    for d in &digits[..len] {
        out.put_u16(*d);
    }
}

/// Reads a binary `numeric` that holds a non-negative integer fitting `u64`.
///
/// # Errors
/// When the bytes are malformed, negative, NaN, fractional or too large.
pub(crate) fn get_numeric(raw: &[u8]) -> Result<u64, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(2)? as i16);
    let sign = word(4)?;
    if sign != NUMERIC_POS {
        return Err("numeric is negative or not a number".into());
    }
    let mut v: u64 = 0;
    for i in 0..ndigits {
        let d = u64::from(word(8 + 2 * i)?);
        let exp = weight - i as i32;
        if exp < 0 {
            if d != 0 {
                return Err("numeric has a fraction".into());
            }
            continue;
        }
        let scale = 10_000u64
            .checked_pow(exp as u32)
            .ok_or("numeric out of u64 range")?;
        v = d
            .checked_mul(scale)
            .and_then(|x| v.checked_add(x))
            .ok_or("numeric out of u64 range")?;
    }
    Ok(v)
}

/// A `u64` as PostgreSQL `numeric` (exact for the whole range). Reading fails
/// for a negative, fractional or too large `numeric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgU64(pub u64);

impl ToSql for PgU64 {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        put_numeric(out, self.0);
        Ok(IsNull::No)
    }
    accepts!(NUMERIC);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgU64 {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        get_numeric(raw).map(PgU64)
    }
    accepts!(NUMERIC);
}

/// A [`Timestamp`] as PostgreSQL `timestamptz` (microsecond resolution: writing
/// drops the sub-microsecond part). Reading fails for times before 1970 and
/// `infinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgTime(pub Timestamp);

impl ToSql for PgTime {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.put_i64(pg_micros(self.0));
        Ok(IsNull::No)
    }
    accepts!(TIMESTAMPTZ, TIMESTAMP);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgTime {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let arr: [u8; 8] = raw.try_into().map_err(|_| "timestamptz is not 8 bytes")?;
        from_pg_micros(i64::from_be_bytes(arr)).map(PgTime)
    }
    accepts!(TIMESTAMPTZ, TIMESTAMP);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_numeric(&mut b, v);
        assert_eq!(b.len() as i32, numeric_len(v));
        b.to_vec()
    }

    #[test]
    fn numeric_vectors_match_postgres_layout() {
        // 0: no digits.
        assert_eq!(enc(0), [0, 0, 0, 0, 0, 0, 0, 0]);
        // 10000 = 1 * 10000^1: one digit, weight 1 (trailing zero group dropped).
        assert_eq!(enc(10_000), [0, 1, 0, 1, 0, 0, 0, 0, 0, 1]);
        // 12345 = 1 | 2345
        assert_eq!(enc(12_345), [0, 2, 0, 1, 0, 0, 0, 0, 0, 1, 0x09, 0x29]);
        // u64::MAX = 1844 6744 0737 0955 1615
        assert_eq!(
            enc(u64::MAX),
            [
                0, 5, 0, 4, 0, 0, 0, 0, 0x07, 0x34, 0x1a, 0x58, 0x02, 0xe1, 0x03, 0xbb, 0x06, 0x4f
            ]
        );
    }

    #[test]
    fn numeric_round_trips() {
        for v in [
            0,
            1,
            9_999,
            10_000,
            100_000_000,
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(get_numeric(&enc(v)).unwrap(), v, "{v}");
        }
        // A numeric with a zero fraction group is still an integer.
        assert_eq!(
            get_numeric(&[0, 2, 0, 0, 0, 0, 0, 4, 0, 7, 0, 0]).unwrap(),
            7
        );
        assert!(get_numeric(&[0, 2, 0, 0, 0, 0, 0, 4, 0, 7, 0, 1]).is_err());
        assert!(get_numeric(&[0, 0, 0, 0, 0x40, 0, 0, 0]).is_err());
        assert!(
            get_numeric(&[0, 6, 0, 5, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err()
        );
    }

    #[test]
    fn timestamps_keep_microseconds() {
        let t = Timestamp::from_unix_nanos(946_684_800_000_001_999).unwrap();
        assert_eq!(pg_micros(t), 1);
        let back = from_pg_micros(1).unwrap();
        assert_eq!(back.unix_nanos(), 946_684_800_000_001_000);
        assert_eq!(pg_micros(Timestamp::UNIX_EPOCH), -PG_EPOCH_OFFSET_US);
        assert!(from_pg_micros(i64::MAX).is_err());
        assert!(from_pg_micros(-PG_EPOCH_OFFSET_US - 1).is_err());
    }
}
