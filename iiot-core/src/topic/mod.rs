//! UNS topics: the grammar, a builder and parser, and subscription filters.
//!
//! Every iiot-rs topic follows the ISA-95 / Unified Namespace layout
//!
//! ```text
//! {enterprise}/{site}/{area}/{line}/{device_type}/{device_id}/{class}[/...]
//! ```
//!
//! with one of these classes:
//!
//! | class | topic tail | [`TopicClass`] |
//! |---|---|---|
//! | telemetry | `telemetry` or `telemetry/{tag path}` | [`TopicClass::Telemetry`] |
//! | status | `status` | [`TopicClass::Status`] |
//! | command | `commands/{ULID}` | [`TopicClass::Command`] |
//! | command ack | `commands/{ULID}/ack` | [`TopicClass::CommandAck`] |
//! | config | `config/desired`, `config/reported` | [`TopicClass::ConfigDesired`], [`TopicClass::ConfigReported`] |
//! | OTA | `ota/notification`, `ota/status` | [`TopicClass::OtaNotification`], [`TopicClass::OtaStatus`] |
//!
//! Each of the six path levels is a [`Segment`]: 1 to 128 bytes, no whitespace, no
//! control characters, none of `+ # /` (the rules of
//! [`check_segment`]); the device id is a
//! [`DeviceId`](crate::types::DeviceId) and the enterprise may not start with `$`
//! (MQTT reserves such topics for the broker). A whole topic is at most 65535 bytes,
//! the MQTT limit.
//!
//! [`Topic`] renders with `Display` and parses with [`Topic::parse`] / `FromStr`;
//! a parse error ([`TopicError`]) names the [`Level`] at fault. [`FilterBuilder`]
//! builds subscription filters ([`TopicFilter`]) with every level `+` unless
//! pinned, and [`TopicFilter::matches`] implements MQTT wildcard matching.
//!
//! ```
//! use iiot_core::topic::{ClassFilter, FilterBuilder, Topic, TopicClass, UnsPath};
//! use iiot_core::types::{DeviceId, MessageId, TagPath};
//!
//! // Build and render.
//! let path = UnsPath::new("acme", "plant1", "packaging", "line3", "plc", DeviceId::new("plc-01")?)?;
//! let topic = path.telemetry_of(TagPath::new("tank1/level")?);
//! assert_eq!(topic.to_string(), "acme/plant1/packaging/line3/plc/plc-01/telemetry/tank1/level");
//!
//! // Parse.
//! let id: MessageId = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse()?;
//! let parsed = Topic::parse("acme/plant1/packaging/line3/plc/plc-01/commands/01ARZ3NDEKTSV4RRFFQ69G5FAV/ack")?;
//! assert_eq!(parsed, path.command_ack(id));
//! assert_eq!(parsed.class, TopicClass::CommandAck(id));
//!
//! // Filter: all telemetry of one site, shared among ingest workers.
//! let filter = FilterBuilder::new()
//!     .enterprise("acme")?
//!     .site("plant1")?
//!     .class(ClassFilter::Telemetry)
//!     .build();
//! assert_eq!(filter.to_string(), "acme/plant1/+/+/+/+/telemetry/#");
//! assert!(filter.matches(&topic.to_string()));
//! assert!(filter.matches("acme/plant1/a/l/plc/dev9/telemetry"));
//! assert!(!filter.matches(&path.status().to_string()));
//! let shared = filter.shared("ingest")?;
//! assert_eq!(shared.to_string(), "$share/ingest/acme/plant1/+/+/+/+/telemetry/#");
//! assert!(shared.matches(&topic.to_string()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use crate::types::{SegmentProblem, ValidationError, check_segment};

mod filter;
mod path;

pub use filter::{ClassFilter, FilterBuilder, TopicFilter};
pub use path::{Topic, TopicClass, UnsPath};

/// Longest topic or filter, in bytes (the MQTT UTF-8 string limit).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// One validated level of a UNS path: 1 to [`Segment::MAX_LEN`] bytes, no
/// whitespace, no control characters, none of `+ # /`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment(String);

impl Segment {
    /// Longest accepted segment, in bytes (the same bound as a device id).
    pub const MAX_LEN: usize = crate::types::DeviceId::MAX_LEN;

    /// Validates and wraps one segment.
    ///
    /// # Errors
    /// The [`SegmentProblem`] found.
    pub fn new(s: impl Into<String>) -> Result<Self, SegmentProblem> {
        let s = s.into();
        check_segment(&s, Self::MAX_LEN)?;
        Ok(Self(s))
    }

    /// The segment as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Segment {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A level of a UNS topic, as named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Level {
    /// Level 1, `{enterprise}`.
    Enterprise,
    /// Level 2, `{site}`.
    Site,
    /// Level 3, `{area}`.
    Area,
    /// Level 4, `{line}`.
    Line,
    /// Level 5, `{device_type}`.
    DeviceType,
    /// Level 6, `{device_id}`.
    DeviceId,
    /// Level 7, the class (`telemetry`, `status`, `commands`, `config`, `ota`).
    Class,
    /// The `{id}` after `commands`.
    CommandId,
    /// A level after `telemetry`.
    SubLevel,
    /// The group of a `$share/{group}/…` shared subscription.
    ShareGroup,
}

impl Level {
    /// The six path levels, in topic order.
    pub const PATH: [Self; 6] = [
        Self::Enterprise,
        Self::Site,
        Self::Area,
        Self::Line,
        Self::DeviceType,
        Self::DeviceId,
    ];
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enterprise => "enterprise",
            Self::Site => "site",
            Self::Area => "area",
            Self::Line => "line",
            Self::DeviceType => "device type",
            Self::DeviceId => "device id",
            Self::Class => "class",
            Self::CommandId => "command id",
            Self::SubLevel => "telemetry sub-level",
            Self::ShareGroup => "share group",
        })
    }
}

/// A topic, path or filter that breaks the UNS grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic is the empty string.
    #[error("topic is empty")]
    Empty,
    /// The topic is longer than MQTT allows.
    #[error("topic is {len} bytes long, more than {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum ([`MAX_TOPIC_LEN`]).
        max: usize,
    },
    /// The topic (its enterprise level) starts with `$`, which MQTT reserves for the
    /// broker (`$SYS/…`) and for shared subscriptions.
    #[error("topic level {value:?} starts with '$', reserved by MQTT")]
    Reserved {
        /// The first level.
        value: String,
    },
    /// One level breaks the segment rules.
    #[error("{position} {value:?} {problem}")]
    InvalidSegment {
        /// Which level.
        position: Level,
        /// The rejected text.
        value: String,
        /// What is wrong with it.
        problem: SegmentProblem,
    },
    /// Fewer levels than `{6 path levels}/{class}`.
    #[error("topic has {found} levels, a UNS topic needs at least 7")]
    TooFewLevels {
        /// How many levels the topic has.
        found: usize,
    },
    /// The class level(s) name no known class.
    #[error("unknown topic class {class:?}")]
    UnknownClass {
        /// The class text, e.g. `"metrics"` or `"config/other"`.
        class: String,
    },
    /// A class that needs another level ends early (e.g. `commands` without an id).
    #[error("topic ends before its {position}")]
    MissingLevel {
        /// The level that is missing.
        position: Level,
    },
    /// The level after `commands` is not a canonical ULID.
    #[error("command id {value:?} is not a ULID")]
    BadCommandId {
        /// The rejected text.
        value: String,
    },
    /// A level where the class allows none (e.g. `status/extra`).
    #[error("unexpected level {value:?} at level {index} (1-based) after class {class}")]
    UnexpectedLevel {
        /// The class it follows.
        class: &'static str,
        /// Its 1-based level number.
        index: usize,
        /// Its text.
        value: String,
    },
    /// A subscription filter string that breaks the MQTT filter rules.
    #[error("invalid topic filter: {reason}")]
    InvalidFilter {
        /// What is wrong.
        reason: FilterProblem,
    },
    /// A domain value (device id, tag path) rejected by [`crate::types`].
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

/// What is wrong with an MQTT topic filter string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterProblem {
    /// The filter is empty.
    #[error("it is empty")]
    Empty,
    /// Longer than [`MAX_TOPIC_LEN`].
    #[error("it is {len} bytes long, more than {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// It contains a NUL character.
    #[error("it contains NUL")]
    Nul,
    /// A `+` or `#` shares a level with other characters.
    #[error("level {index} (1-based) mixes a wildcard with other characters")]
    WildcardInLevel {
        /// The 1-based level number.
        index: usize,
    },
    /// A `#` that is not the last level.
    #[error("'#' at level {index} (1-based) is not the last level")]
    MultiLevelNotLast {
        /// The 1-based level number.
        index: usize,
    },
    /// `$share/` without a valid group and filter after it.
    #[error("shared subscription needs $share/{{group}}/{{filter}} with a valid group")]
    BadShare,
}

pub(crate) fn segment_at(position: Level, value: &str) -> Result<Segment, TopicError> {
    match Segment::new(value) {
        Ok(s) => Ok(s),
        Err(problem) => Err(TopicError::InvalidSegment {
            position,
            value: value.to_owned(),
            problem,
        }),
    }
}

#[cfg(test)]
mod tests;
