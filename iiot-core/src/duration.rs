//! Durations in config files, written the one way every crate of iiot-rs reads them:
//! human strings such as `"30s"`, `"500ms"`, `"1m 30s"` or `"7days"` (the
//! [`humantime`] grammar).
//!
//! A bare number is refused, because its unit would be a guess:
//!
//! ```
//! use std::time::Duration;
//!
//! #[derive(serde::Deserialize)]
//! struct Poll {
//!     #[serde(with = "iiot_core::duration::human")]
//!     timeout: Duration,
//! }
//!
//! let p: Poll = serde_json::from_str(r#"{"timeout": "1s 500ms"}"#).unwrap();
//! assert_eq!(p.timeout, Duration::from_millis(1500));
//!
//! let e = serde_json::from_str::<Poll>(r#"{"timeout": 1500}"#).err().unwrap();
//! assert!(e.to_string().contains("needs a unit"), "{e}");
//! ```
//!
//! Files written before this convention used numbers under keys that named their unit
//! (`keepalive_s`, `connect_timeout_ms`) or only a comment did (`timeout = 1000 # ms`).
//! [`legacy::upgrade_toml`] rewrites those forms in the text of a TOML file, line for
//! line, from a table of [`legacy::LegacyKey`]s that each crate publishes for its own
//! config types, and reports each rewrite as a [`legacy::Deprecation`] for the loader
//! to warn about with the file name.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// A string that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a duration ({reason}); write it with a unit, e.g. \"30s\", \"500ms\", \"7days\""
)]
pub struct DurationError {
    /// The text as given.
    pub text: String,
    /// What the parser said.
    pub reason: String,
}

/// Parses a human duration: `"30s"`, `"500ms"`, `"1m 30s"`, `"7days"`, `"250us"`.
///
/// # Errors
/// [`DurationError`] when `text` is not a duration with units.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text.trim()).map_err(|e| DurationError {
        text: text.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes `d` in the form [`parse`] reads back exactly, e.g. `"1s 500ms"`.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

struct HumanVisitor;

impl Visitor<'_> for HumanVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration with a unit, e.g. \"30s\" or \"500ms\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(E::custom(format_args!(
            "a duration needs a unit: write \"{v}ms\" or \"{v}s\", not {v}"
        )))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(E::custom(format_args!(
            "a duration needs a unit (and cannot be negative), not {v}"
        )))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::custom(format_args!(
            "a duration needs a unit: write e.g. \"{v}s\" as \"1s 500ms\", not {v}"
        )))
    }
}

/// `#[serde(with = "iiot_core::duration::human")]` for a [`Duration`] field.
pub mod human {
    use super::{Deserializer, Duration, HumanVisitor, Serializer, format};

    /// Writes the duration as a human string.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// Reads a human string; a bare number is refused with a hint.
    ///
    /// # Errors
    /// A custom error naming what was wrong.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(HumanVisitor)
    }

    /// `#[serde(with = "iiot_core::duration::human::option")]` for an
    /// `Option<Duration>` field (absent or `null`: `None`).
    pub mod option {
        use std::fmt;

        use serde::de::{self, Visitor};

        use super::{Deserializer, Duration, HumanVisitor, Serializer, format};

        /// Writes `Some` as a human string, `None` as none.
        ///
        /// # Errors
        /// The serializer's.
        #[allow(clippy::ref_option)]
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&format(*d)),
                None => s.serialize_none(),
            }
        }

        /// Reads an optional human string.
        ///
        /// # Errors
        /// A custom error naming what was wrong.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            struct OptVisitor;
            impl<'de> Visitor<'de> for OptVisitor {
                type Value = Option<Duration>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a duration with a unit, or nothing")
                }
                fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                    Ok(None)
                }
                fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                    Ok(None)
                }
                fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                    d.deserialize_any(HumanVisitor).map(Some)
                }
            }
            d.deserialize_option(OptVisitor)
        }
    }
}

pub mod legacy;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_the_common_forms() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("7days").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
        let e = parse("30").unwrap_err();
        assert!(e.to_string().contains("with a unit"), "{e}");
        assert!(parse("fast").is_err());
    }

    proptest! {
        #[test]
        fn format_parses_back(nanos in 0u64..u64::MAX / 4) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse(&format(d)).unwrap(), d);
        }
    }
}
