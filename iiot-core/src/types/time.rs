//! Timestamps.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ValidationError;

/// An instant in UTC with nanosecond resolution, from 1970-01-01 to 2262-04-11.
///
/// The range is that of non-negative `i64` nanoseconds, which makes the
/// difference of any two timestamps fit an `i64` (the telemetry wire format sends
/// sample times as offsets from the batch time). Clocks before 1970 are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Self = Self(0);
    /// The latest representable instant.
    pub const MAX: Self = Self(i64::MAX);

    /// From nanoseconds since the Unix epoch.
    ///
    /// # Errors
    /// [`ValidationError::Timestamp`] when `ns` is negative.
    pub const fn from_unix_nanos(ns: i64) -> Result<Self, ValidationError> {
        if ns < 0 {
            Err(ValidationError::Timestamp { unix_ns: ns })
        } else {
            Ok(Self(ns))
        }
    }

    /// From milliseconds since the Unix epoch, saturating at [`Timestamp::MAX`].
    ///
    /// # Errors
    /// [`ValidationError::Timestamp`] when `ms` is negative.
    pub const fn from_unix_millis(ms: i64) -> Result<Self, ValidationError> {
        if ms < 0 {
            return Err(ValidationError::Timestamp { unix_ns: ms });
        }
        Ok(Self(ms.saturating_mul(1_000_000)))
    }

    /// Nanoseconds since the Unix epoch (never negative).
    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// Milliseconds since the Unix epoch, rounded down.
    pub const fn unix_millis(self) -> i64 {
        self.0 / 1_000_000
    }

    /// The system clock now (saturating at the ends of the range).
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// `self + d`, saturating at [`Timestamp::MAX`].
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        let ns = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(ns))
    }

    /// `self - d`, saturating at the epoch.
    #[must_use]
    pub fn saturating_sub(self, d: Duration) -> Self {
        let ns = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(ns).max(0))
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn duration_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// Signed offset in ns from `base` to `self` (always fits: both are non-negative).
    pub const fn offset_from(self, base: Self) -> i64 {
        self.0 - base.0
    }

    /// `base + offset_ns`.
    ///
    /// # Errors
    /// [`ValidationError::Timestamp`] when the result falls outside the range.
    pub fn from_offset(base: Self, offset_ns: i64) -> Result<Self, ValidationError> {
        match base.0.checked_add(offset_ns) {
            Some(ns) => Self::from_unix_nanos(ns),
            None => Err(ValidationError::Timestamp { unix_ns: i64::MAX }),
        }
    }

    /// RFC 3339 in UTC with as many fractional digits as needed, e.g.
    /// `2026-11-26T01:22:32.5Z`.
    pub fn to_rfc3339(self) -> String {
        let odt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        odt.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| self.0.to_string())
    }

    /// Parses RFC 3339 with any UTC offset, e.g. `2026-11-26T02:22:32.123+01:00`.
    ///
    /// # Errors
    /// [`ValidationError::TimestampText`] when the text is not RFC 3339 or lies
    /// outside the range.
    pub fn parse_rfc3339(s: &str) -> Result<Self, ValidationError> {
        let odt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|_| ValidationError::TimestampText {
                value: s.to_owned(),
            })?;
        let ns = i64::try_from(odt.unix_timestamp_nanos()).map_err(|_| {
            ValidationError::TimestampText {
                value: s.to_owned(),
            }
        })?;
        Self::from_unix_nanos(ns).map_err(|_| ValidationError::TimestampText {
            value: s.to_owned(),
        })
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            Err(_) => Self::UNIX_EPOCH,
        }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        UNIX_EPOCH + Duration::from_nanos(t.0.unsigned_abs())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_and_offsets() {
        let t = Timestamp::from_unix_nanos(1_764_120_152_123_456_789).unwrap();
        let s = t.to_rfc3339();
        assert_eq!(s, "2025-11-26T01:22:32.123456789Z");
        assert_eq!(Timestamp::parse_rfc3339(&s).unwrap(), t);
        let plus1 = Timestamp::parse_rfc3339("2025-11-26T02:22:32.123456789+01:00").unwrap();
        assert_eq!(plus1, t);
        assert!(Timestamp::parse_rfc3339("1969-12-31T23:59:59Z").is_err());
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert!(Timestamp::from_unix_nanos(-1).is_err());
    }

    #[test]
    fn offsets_are_checked() {
        let base = Timestamp::from_unix_nanos(10).unwrap();
        assert_eq!(
            Timestamp::from_offset(base, -10).unwrap(),
            Timestamp::UNIX_EPOCH
        );
        assert!(Timestamp::from_offset(base, -11).is_err());
        assert!(Timestamp::from_offset(Timestamp::MAX, 1).is_err());
        assert_eq!(Timestamp::MAX.offset_from(Timestamp::UNIX_EPOCH), i64::MAX);
    }
}
