//! Subscription filters: a builder over the UNS grammar and MQTT wildcard matching.

use std::fmt;
use std::str::FromStr;

use super::path::{TopicClass, UnsPath};
use super::{FilterProblem, Level, MAX_TOPIC_LEN, Segment, TopicError, segment_at};
use crate::types::{DeviceId, MessageId, TagPath};

const SHARE_PREFIX: &str = "$share/";

/// Which classes a filter selects (the levels after the device id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ClassFilter {
    /// Every class: `#`.
    #[default]
    Any,
    /// All telemetry, with and without sub-levels: `telemetry/#`.
    Telemetry,
    /// Telemetry of one tag and everything below it: `telemetry/{tag}/#`.
    TelemetryUnder(TagPath),
    /// `status`.
    Status,
    /// Every command (not the acks): `commands/+`.
    Commands,
    /// One command: `commands/{id}`.
    Command(MessageId),
    /// Every command ack: `commands/+/ack`.
    CommandAcks,
    /// The ack of one command: `commands/{id}/ack`.
    CommandAck(MessageId),
    /// Both config directions: `config/+`.
    Config,
    /// `config/desired`.
    ConfigDesired,
    /// `config/reported`.
    ConfigReported,
    /// Both OTA topics: `ota/+`.
    Ota,
    /// `ota/notification`.
    OtaNotification,
    /// `ota/status`.
    OtaStatus,
}

impl ClassFilter {
    /// The filter for the kind of `class`: every telemetry topic, every command,
    /// every ack, or the one fixed class (status, config/…, ota/…).
    pub fn kind_of(class: &TopicClass) -> Self {
        match class {
            TopicClass::Telemetry(_) => Self::Telemetry,
            TopicClass::Status => Self::Status,
            TopicClass::Command(_) => Self::Commands,
            TopicClass::CommandAck(_) => Self::CommandAcks,
            TopicClass::ConfigDesired => Self::ConfigDesired,
            TopicClass::ConfigReported => Self::ConfigReported,
            TopicClass::OtaNotification => Self::OtaNotification,
            TopicClass::OtaStatus => Self::OtaStatus,
        }
    }

    fn levels(&self) -> Vec<FilterLevel> {
        use FilterLevel::{Exact, One, Rest};
        let exact = |s: &str| Exact(s.to_owned());
        match self {
            Self::Any => vec![Rest],
            Self::Telemetry => vec![exact("telemetry"), Rest],
            Self::TelemetryUnder(tag) => {
                let mut v = vec![exact("telemetry")];
                v.extend(tag.as_str().split('/').map(exact));
                v.push(Rest);
                v
            }
            Self::Status => vec![exact("status")],
            Self::Commands => vec![exact("commands"), One],
            Self::Command(id) => vec![exact("commands"), Exact(id.to_string())],
            Self::CommandAcks => vec![exact("commands"), One, exact("ack")],
            Self::CommandAck(id) => vec![exact("commands"), Exact(id.to_string()), exact("ack")],
            Self::Config => vec![exact("config"), One],
            Self::ConfigDesired => vec![exact("config"), exact("desired")],
            Self::ConfigReported => vec![exact("config"), exact("reported")],
            Self::Ota => vec![exact("ota"), One],
            Self::OtaNotification => vec![exact("ota"), exact("notification")],
            Self::OtaStatus => vec![exact("ota"), exact("status")],
        }
    }
}

/// Builds a [`TopicFilter`] over the UNS layout: each of the six path levels is
/// `+` until pinned, and the class defaults to [`ClassFilter::Any`] (`#`).
///
/// ```
/// use iiot_core::topic::{ClassFilter, FilterBuilder};
/// use iiot_core::types::DeviceId;
///
/// let acks = FilterBuilder::new().class(ClassFilter::CommandAcks).build();
/// assert_eq!(acks.to_string(), "+/+/+/+/+/+/commands/+/ack");
/// let cmds = FilterBuilder::new()
///     .device_id(&DeviceId::new("dev1")?)
///     .class(ClassFilter::Commands)
///     .build();
/// assert_eq!(cmds.to_string(), "+/+/+/+/+/dev1/commands/+");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilterBuilder {
    path: [Option<String>; 6],
    class: ClassFilter,
}

impl FilterBuilder {
    /// Every level `+`, every class.
    pub fn new() -> Self {
        Self::default()
    }

    /// All six path levels pinned to `path` (one device), every class.
    pub fn for_path(path: &UnsPath) -> Self {
        Self {
            path: path.levels().map(|s| Some(s.to_owned())),
            class: ClassFilter::Any,
        }
    }

    fn pin(mut self, position: Level, index: usize, value: &str) -> Result<Self, TopicError> {
        let segment = segment_at(position, value)?;
        if position == Level::Enterprise && value.starts_with('$') {
            return Err(TopicError::Reserved {
                value: value.to_owned(),
            });
        }
        self.path[index] = Some(String::from(segment.as_str()));
        Ok(self)
    }

    /// Pins the enterprise.
    ///
    /// # Errors
    /// [`TopicError::InvalidSegment`] or [`TopicError::Reserved`] (leading `$`).
    pub fn enterprise(self, value: &str) -> Result<Self, TopicError> {
        self.pin(Level::Enterprise, 0, value)
    }
    /// Pins the site.
    ///
    /// # Errors
    /// [`TopicError::InvalidSegment`].
    pub fn site(self, value: &str) -> Result<Self, TopicError> {
        self.pin(Level::Site, 1, value)
    }
    /// Pins the area.
    ///
    /// # Errors
    /// [`TopicError::InvalidSegment`].
    pub fn area(self, value: &str) -> Result<Self, TopicError> {
        self.pin(Level::Area, 2, value)
    }
    /// Pins the line.
    ///
    /// # Errors
    /// [`TopicError::InvalidSegment`].
    pub fn line(self, value: &str) -> Result<Self, TopicError> {
        self.pin(Level::Line, 3, value)
    }
    /// Pins the device type.
    ///
    /// # Errors
    /// [`TopicError::InvalidSegment`].
    pub fn device_type(self, value: &str) -> Result<Self, TopicError> {
        self.pin(Level::DeviceType, 4, value)
    }
    /// Pins the device id.
    #[must_use]
    pub fn device_id(mut self, id: &DeviceId) -> Self {
        self.path[5] = Some(id.as_str().to_owned());
        self
    }
    /// Chooses the classes.
    #[must_use]
    pub fn class(mut self, class: ClassFilter) -> Self {
        self.class = class;
        self
    }

    /// The filter.
    pub fn build(&self) -> TopicFilter {
        let mut levels: Vec<FilterLevel> = self
            .path
            .iter()
            .map(|p| p.clone().map_or(FilterLevel::One, FilterLevel::Exact))
            .collect();
        levels.extend(self.class.levels());
        TopicFilter {
            share: None,
            levels,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FilterLevel {
    Exact(String),
    /// `+`
    One,
    /// `#`
    Rest,
}

/// An MQTT subscription filter, optionally shared (`$share/{group}/{filter}`).
///
/// Built with [`FilterBuilder`] or parsed from any MQTT filter string with
/// [`TopicFilter::parse`]. [`matches`](Self::matches) implements MQTT matching: `+`
/// matches exactly one level, `#` (last) zero or more trailing levels — so `a/#`
/// also matches `a` — and a topic starting with `$` is never matched by a wildcard
/// in the first level. The share group plays no part in matching.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter {
    share: Option<Segment>,
    levels: Vec<FilterLevel>,
}

impl TopicFilter {
    /// Parses an MQTT topic filter: not empty, at most [`MAX_TOPIC_LEN`] bytes, no
    /// NUL, `+` and `#` alone in their level, `#` only last; `$share/{group}/…`
    /// needs a group that is a valid [`Segment`] and a filter after it.
    ///
    /// # Errors
    /// [`TopicError::InvalidFilter`] with the [`FilterProblem`].
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        let invalid = |reason| TopicError::InvalidFilter { reason };
        if s.is_empty() {
            return Err(invalid(FilterProblem::Empty));
        }
        if s.len() > MAX_TOPIC_LEN {
            return Err(invalid(FilterProblem::TooLong {
                len: s.len(),
                max: MAX_TOPIC_LEN,
            }));
        }
        if s.contains('\0') {
            return Err(invalid(FilterProblem::Nul));
        }
        let (share, filter) = match s.strip_prefix(SHARE_PREFIX) {
            Some(rest) => {
                let Some((group, filter)) = rest.split_once('/') else {
                    return Err(invalid(FilterProblem::BadShare));
                };
                let group = Segment::new(group).map_err(|_| invalid(FilterProblem::BadShare))?;
                if filter.is_empty() {
                    return Err(invalid(FilterProblem::BadShare));
                }
                (Some(group), filter)
            }
            None => (None, s),
        };
        let parts: Vec<&str> = filter.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let index = i + 1;
            let level = match *part {
                "#" if index == parts.len() => FilterLevel::Rest,
                "#" => return Err(invalid(FilterProblem::MultiLevelNotLast { index })),
                "+" => FilterLevel::One,
                p if p.contains(['+', '#']) => {
                    return Err(invalid(FilterProblem::WildcardInLevel { index }));
                }
                p => FilterLevel::Exact(p.to_owned()),
            };
            levels.push(level);
        }
        Ok(Self { share, levels })
    }

    /// The same filter as a shared subscription, `$share/{group}/{filter}`.
    ///
    /// # Errors
    /// [`TopicError::InvalidSegment`] at [`Level::ShareGroup`] when `group` breaks
    /// the segment rules.
    pub fn shared(mut self, group: &str) -> Result<Self, TopicError> {
        self.share = Some(segment_at(Level::ShareGroup, group)?);
        Ok(self)
    }

    /// The share group, when this is a shared subscription.
    pub fn share_group(&self) -> Option<&str> {
        self.share.as_ref().map(Segment::as_str)
    }

    /// Whether `topic` (a topic name, without wildcards) matches this filter.
    /// Anything that is not a valid topic name (empty, too long, containing `+`,
    /// `#` or NUL) matches nothing.
    pub fn matches(&self, topic: &str) -> bool {
        if topic.is_empty() || topic.len() > MAX_TOPIC_LEN || topic.contains(['+', '#', '\0']) {
            return false;
        }
        if topic.starts_with('$')
            && matches!(
                self.levels.first(),
                Some(FilterLevel::One | FilterLevel::Rest)
            )
        {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for level in &self.levels {
            match level {
                FilterLevel::Rest => return true,
                FilterLevel::One => {
                    if topic_levels.next().is_none() {
                        return false;
                    }
                }
                FilterLevel::Exact(want) => {
                    if topic_levels.next() != Some(want.as_str()) {
                        return false;
                    }
                }
            }
        }
        topic_levels.next().is_none()
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(group) = &self.share {
            write!(f, "{SHARE_PREFIX}{group}/")?;
        }
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            match level {
                FilterLevel::Exact(s) => f.write_str(s)?,
                FilterLevel::One => f.write_str("+")?,
                FilterLevel::Rest => f.write_str("#")?,
            }
        }
        Ok(())
    }
}

impl FromStr for TopicFilter {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
