//! Identifiers: device ids, tag paths, message ids, sequence numbers.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ValidationError;

/// Longest device id accepted anywhere (bytes). MQTT brokers commonly cap client ids
/// well above this; certificates' CN fields cap at 64 characters by RFC 5280's upper
/// bound, which is why [`DeviceId::MAX_LEN`] leaves room but is not unlimited.
const DEVICE_ID_MAX: usize = 128;
/// Longest tag path accepted anywhere (bytes).
const TAG_PATH_MAX: usize = 1024;

/// What is wrong with one topic segment or identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentProblem {
    /// The segment is empty.
    #[error("is empty")]
    Empty,
    /// The segment is longer than allowed.
    #[error("is {len} bytes long, more than {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// It contains a character that is never allowed (whitespace, control, `+`, `#`, `/`, NUL).
    #[error("contains forbidden character {ch:?} at byte {at}")]
    ForbiddenChar {
        /// The character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
}

/// Checks one UNS topic segment: not empty, at most `max` bytes, no whitespace, no
/// control characters, none of `+ # /`.
///
/// # Errors
/// The first [`SegmentProblem`] found.
pub fn check_segment(s: &str, max: usize) -> Result<(), SegmentProblem> {
    if s.is_empty() {
        return Err(SegmentProblem::Empty);
    }
    if s.len() > max {
        return Err(SegmentProblem::TooLong { len: s.len(), max });
    }
    // Fast path: pure ASCII (almost every real segment). ASCII whitespace and
    // control characters are exactly the bytes <= 0x20 and 0x7F.
    if s.is_ascii() {
        return match s
            .bytes()
            .position(|b| b <= 0x20 || b == 0x7f || matches!(b, b'+' | b'#' | b'/'))
        {
            Some(at) => Err(SegmentProblem::ForbiddenChar {
                ch: char::from(s.as_bytes()[at]),
                at,
            }),
            None => Ok(()),
        };
    }
    for (at, ch) in s.char_indices() {
        if ch.is_whitespace() || ch.is_control() || matches!(ch, '+' | '#' | '/') {
            return Err(SegmentProblem::ForbiddenChar { ch, at });
        }
    }
    Ok(())
}

/// The identity of a device. It equals the device's MQTT client id, the CN of its
/// certificate and the `{device_id}` segment of its UNS topics, so it obeys the
/// topic segment rules: 1 to 128 bytes, no whitespace, no control characters,
/// none of `+ # /`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(Arc<str>);

impl DeviceId {
    /// Longest accepted device id, in bytes.
    pub const MAX_LEN: usize = DEVICE_ID_MAX;

    /// Validates and wraps a device id.
    ///
    /// # Errors
    /// [`ValidationError::DeviceId`] naming the problem.
    pub fn new(id: impl Into<String>) -> Result<Self, ValidationError> {
        let id = id.into();
        match check_segment(&id, Self::MAX_LEN) {
            Ok(()) => Ok(Self(id.into())),
            Err(problem) => Err(ValidationError::DeviceId { value: id, problem }),
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A tag path names one measured or commanded point, e.g. `tank1/level`. It is 1 to
/// 1024 bytes of `/`-separated segments, each following the topic segment rules
/// (so a tag can be appended to a topic).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TagPath(Arc<str>);

impl TagPath {
    /// Longest accepted tag path, in bytes.
    pub const MAX_LEN: usize = TAG_PATH_MAX;

    /// Validates and wraps a tag path.
    ///
    /// # Errors
    /// [`ValidationError::TagPath`] naming the problem and the offending segment.
    pub fn new(path: impl Into<String>) -> Result<Self, ValidationError> {
        let path = path.into();
        if path.len() > Self::MAX_LEN {
            let len = path.len();
            return Err(ValidationError::TagPath {
                value: path,
                segment: String::new(),
                problem: SegmentProblem::TooLong {
                    len,
                    max: Self::MAX_LEN,
                },
            });
        }
        for segment in path.split('/') {
            if let Err(problem) = check_segment(segment, Self::MAX_LEN) {
                return Err(ValidationError::TagPath {
                    segment: segment.to_owned(),
                    value: path,
                    problem,
                });
            }
        }
        Ok(Self(path.into()))
    }

    /// The path as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A message or command identifier: a ULID (sortable by creation time, 16 bytes on
/// the wire, 26 Crockford base32 characters in text). With the device id it is the
/// consumer's dedupe key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(ulid::Ulid);

impl MessageId {
    /// A new id from the system clock and a random source.
    pub fn generate() -> Self {
        Self(ulid::Ulid::new())
    }

    /// An id from its 128-bit value.
    pub const fn from_u128(v: u128) -> Self {
        Self(ulid::Ulid(v))
    }

    /// An id from a millisecond timestamp and 80 bits of randomness (tests, replays).
    pub fn from_parts(unix_ms: u64, random: u128) -> Self {
        Self(ulid::Ulid::from_parts(unix_ms, random))
    }

    /// The 128-bit value.
    pub const fn to_u128(self) -> u128 {
        self.0.0
    }

    /// The 16 big-endian bytes carried on the wire.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// Reads the 16 wire bytes.
    ///
    /// # Errors
    /// [`ValidationError::MessageIdLength`] when `bytes` is not 16 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ValidationError> {
        let arr: [u8; 16] = bytes
            .try_into()
            .map_err(|_| ValidationError::MessageIdLength { len: bytes.len() })?;
        Ok(Self(ulid::Ulid::from_bytes(arr)))
    }

    /// Milliseconds since the Unix epoch encoded in the id.
    pub fn timestamp_ms(self) -> u64 {
        self.0.timestamp_ms()
    }
}

impl FromStr for MessageId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s)
            .map(Self)
            .map_err(|_| ValidationError::MessageIdText {
                value: s.to_owned(),
            })
    }
}

/// A per-device, monotonic sequence number. Consecutive batches of one device carry
/// consecutive numbers; a gap means lost batches.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Sequence(pub u64);

impl Sequence {
    /// The next number.
    ///
    /// # Panics
    /// Never in practice: at one batch per nanosecond it takes 584 years to overflow;
    /// it saturates rather than wrap.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

macro_rules! string_like {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl FromStr for $t {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
        impl TryFrom<String> for $t {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }
        impl TryFrom<&str> for $t {
            type Error = ValidationError;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0.as_ref().to_owned()
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}
string_like!(DeviceId);
string_like!(TagPath);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_rules() {
        assert!(DeviceId::new("plc-01").is_ok());
        assert!(DeviceId::new("ÜberPLC_7").is_ok());
        for bad in [
            "",
            "a b",
            "a/b",
            "a+b",
            "a#b",
            "a\tb",
            "a\0b",
            &"x".repeat(129),
        ] {
            assert!(DeviceId::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tag_path_names_bad_segment() {
        assert!(TagPath::new("tank1/level").is_ok());
        let err = TagPath::new("tank1//level").unwrap_err();
        assert!(
            matches!(err, ValidationError::TagPath { ref segment, problem: SegmentProblem::Empty, .. } if segment.is_empty())
        );
        let err = TagPath::new("tank1/lev el").unwrap_err();
        assert!(matches!(err, ValidationError::TagPath { ref segment, .. } if segment == "lev el"));
        assert!(TagPath::new("/x").is_err());
        assert!(TagPath::new("x/").is_err());
    }

    proptest::proptest! {
        /// The ASCII fast path of `check_segment` agrees with the char-by-char rule.
        #[test]
        fn ascii_fast_path_agrees(s in "[\\x00-\\x7f]{0,12}", max in 1usize..16) {
            let slow = if s.is_empty() {
                Err(SegmentProblem::Empty)
            } else if s.len() > max {
                Err(SegmentProblem::TooLong { len: s.len(), max })
            } else {
                s.char_indices()
                    .find(|&(_, ch)| ch.is_whitespace() || ch.is_control() || matches!(ch, '+' | '#' | '/'))
                    .map_or(Ok(()), |(at, ch)| Err(SegmentProblem::ForbiddenChar { ch, at }))
            };
            proptest::prop_assert_eq!(check_segment(&s, max), slow);
        }
    }

    #[test]
    fn message_id_bytes_and_text() {
        let id = MessageId::from_parts(1_700_000_000_000, 42);
        assert_eq!(MessageId::from_slice(&id.to_bytes()).unwrap(), id);
        assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
        assert_eq!(id.timestamp_ms(), 1_700_000_000_000);
        assert!(MessageId::from_slice(&[0; 15]).is_err());
        assert!("not-a-ulid".parse::<MessageId>().is_err());
    }
}
