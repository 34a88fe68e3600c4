//! UNS paths, topic classes and topics: building, rendering, parsing.

use std::fmt;
use std::str::FromStr;

use super::{Level, MAX_TOPIC_LEN, Segment, TopicError, segment_at};
use crate::types::{DeviceId, MessageId, TagPath, ValidationError, check_segment};

/// The six path levels of a UNS topic, each validated:
/// `{enterprise}/{site}/{area}/{line}/{device_type}/{device_id}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnsPath {
    enterprise: Segment,
    site: Segment,
    area: Segment,
    line: Segment,
    device_type: Segment,
    device_id: DeviceId,
}

impl UnsPath {
    /// Validates and assembles a path.
    ///
    /// # Errors
    /// [`TopicError::InvalidSegment`] naming the first level at fault, or
    /// [`TopicError::Reserved`] when the enterprise starts with `$`.
    pub fn new(
        enterprise: &str,
        site: &str,
        area: &str,
        line: &str,
        device_type: &str,
        device_id: DeviceId,
    ) -> Result<Self, TopicError> {
        Ok(Self {
            enterprise: enterprise_segment(enterprise)?,
            site: segment_at(Level::Site, site)?,
            area: segment_at(Level::Area, area)?,
            line: segment_at(Level::Line, line)?,
            device_type: segment_at(Level::DeviceType, device_type)?,
            device_id,
        })
    }

    /// Level 1, the enterprise.
    pub fn enterprise(&self) -> &Segment {
        &self.enterprise
    }
    /// Level 2, the site.
    pub fn site(&self) -> &Segment {
        &self.site
    }
    /// Level 3, the area.
    pub fn area(&self) -> &Segment {
        &self.area
    }
    /// Level 4, the line.
    pub fn line(&self) -> &Segment {
        &self.line
    }
    /// Level 5, the device type.
    pub fn device_type(&self) -> &Segment {
        &self.device_type
    }
    /// Level 6, the device id (also the MQTT client id and certificate CN).
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// The six levels as string slices, in topic order.
    pub fn levels(&self) -> [&str; 6] {
        [
            self.enterprise.as_str(),
            self.site.as_str(),
            self.area.as_str(),
            self.line.as_str(),
            self.device_type.as_str(),
            self.device_id.as_str(),
        ]
    }

    /// The topic of this path with `class`.
    pub fn topic(&self, class: TopicClass) -> Topic {
        Topic {
            path: self.clone(),
            class,
        }
    }
    /// `…/telemetry`.
    pub fn telemetry(&self) -> Topic {
        self.topic(TopicClass::Telemetry(None))
    }
    /// `…/telemetry/{tag}`, e.g. `…/telemetry/tank1/level`.
    pub fn telemetry_of(&self, tag: TagPath) -> Topic {
        self.topic(TopicClass::Telemetry(Some(tag)))
    }
    /// `…/status`.
    pub fn status(&self) -> Topic {
        self.topic(TopicClass::Status)
    }
    /// `…/commands/{id}`.
    pub fn command(&self, id: MessageId) -> Topic {
        self.topic(TopicClass::Command(id))
    }
    /// `…/commands/{id}/ack`.
    pub fn command_ack(&self, id: MessageId) -> Topic {
        self.topic(TopicClass::CommandAck(id))
    }
    /// `…/config/desired`.
    pub fn config_desired(&self) -> Topic {
        self.topic(TopicClass::ConfigDesired)
    }
    /// `…/config/reported`.
    pub fn config_reported(&self) -> Topic {
        self.topic(TopicClass::ConfigReported)
    }
    /// `…/ota/notification`.
    pub fn ota_notification(&self) -> Topic {
        self.topic(TopicClass::OtaNotification)
    }
    /// `…/ota/status`.
    pub fn ota_status(&self) -> Topic {
        self.topic(TopicClass::OtaStatus)
    }
}

impl fmt::Display for UnsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, level) in self.levels().iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(level)?;
        }
        Ok(())
    }
}

/// What a topic carries: the levels after the device id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum TopicClass {
    /// `telemetry`, optionally followed by a tag path (`telemetry/tank1/level`).
    Telemetry(Option<TagPath>),
    /// `status`: birth and last will (`{online: …}`).
    Status,
    /// `commands/{id}`: a command to the device.
    Command(MessageId),
    /// `commands/{id}/ack`: the device's acknowledgement of a command.
    CommandAck(MessageId),
    /// `config/desired`: configuration the platform wants.
    ConfigDesired,
    /// `config/reported`: configuration the device runs.
    ConfigReported,
    /// `ota/notification`: a firmware campaign for the device.
    OtaNotification,
    /// `ota/status`: the device's OTA progress.
    OtaStatus,
}

impl fmt::Display for TopicClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Telemetry(None) => f.write_str("telemetry"),
            Self::Telemetry(Some(tag)) => write!(f, "telemetry/{tag}"),
            Self::Status => f.write_str("status"),
            Self::Command(id) => write!(f, "commands/{id}"),
            Self::CommandAck(id) => write!(f, "commands/{id}/ack"),
            Self::ConfigDesired => f.write_str("config/desired"),
            Self::ConfigReported => f.write_str("config/reported"),
            Self::OtaNotification => f.write_str("ota/notification"),
            Self::OtaStatus => f.write_str("ota/status"),
        }
    }
}

/// A complete UNS topic: a path and a class. Renders with `Display`, parses with
/// [`Topic::parse`] or `FromStr`; `Topic::parse(&t.to_string()) == Ok(t)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Topic {
    /// The six path levels.
    pub path: UnsPath,
    /// The class and what follows it.
    pub class: TopicClass,
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.path, self.class)
    }
}

impl FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Topic {
    /// Parses a topic name (no wildcards).
    ///
    /// Checks, in order: not empty, at most [`MAX_TOPIC_LEN`] bytes, not starting
    /// with `$`, at least 7 levels, each path level, then the class and what follows
    /// it. Command ids are canonical ULID text (26 Crockford base32 characters,
    /// either case).
    ///
    /// # Errors
    /// A [`TopicError`] that names the level at fault.
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        if s.is_empty() {
            return Err(TopicError::Empty);
        }
        if s.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong {
                len: s.len(),
                max: MAX_TOPIC_LEN,
            });
        }
        let levels: Vec<&str> = s.split('/').collect();
        if s.starts_with('$') {
            return Err(TopicError::Reserved {
                value: levels.first().copied().unwrap_or_default().to_owned(),
            });
        }
        let [
            enterprise,
            site,
            area,
            line,
            device_type,
            device_id,
            class,
            rest @ ..,
        ] = levels.as_slice()
        else {
            return Err(TopicError::TooFewLevels {
                found: levels.len(),
            });
        };
        let path = UnsPath {
            enterprise: segment_at(Level::Enterprise, enterprise)?,
            site: segment_at(Level::Site, site)?,
            area: segment_at(Level::Area, area)?,
            line: segment_at(Level::Line, line)?,
            device_type: segment_at(Level::DeviceType, device_type)?,
            device_id: device_id_at(device_id)?,
        };
        let class = parse_class(class, rest)?;
        Ok(Self { path, class })
    }
}

fn enterprise_segment(value: &str) -> Result<Segment, TopicError> {
    let segment = segment_at(Level::Enterprise, value)?;
    if value.starts_with('$') {
        return Err(TopicError::Reserved {
            value: value.to_owned(),
        });
    }
    Ok(segment)
}

pub(super) fn device_id_at(value: &str) -> Result<DeviceId, TopicError> {
    match DeviceId::new(value) {
        Ok(id) => Ok(id),
        Err(ValidationError::DeviceId { value, problem }) => Err(TopicError::InvalidSegment {
            position: Level::DeviceId,
            value,
            problem,
        }),
        Err(other) => Err(TopicError::Validation(other)),
    }
}

/// The 1-based level number of `rest[i]` (the class is level 7).
const fn level_no(i: usize) -> usize {
    8 + i
}

fn no_more(class: &'static str, rest: &[&str], from: usize) -> Result<(), TopicError> {
    match rest.get(from) {
        None => Ok(()),
        Some(extra) => Err(TopicError::UnexpectedLevel {
            class,
            index: level_no(from),
            value: (*extra).to_owned(),
        }),
    }
}

fn parse_class(class: &str, rest: &[&str]) -> Result<TopicClass, TopicError> {
    match class {
        "telemetry" => {
            if rest.is_empty() {
                return Ok(TopicClass::Telemetry(None));
            }
            for level in rest {
                if let Err(problem) = check_segment(level, TagPath::MAX_LEN) {
                    return Err(TopicError::InvalidSegment {
                        position: Level::SubLevel,
                        value: (*level).to_owned(),
                        problem,
                    });
                }
            }
            let joined = rest.join("/");
            match TagPath::new(joined) {
                Ok(tag) => Ok(TopicClass::Telemetry(Some(tag))),
                Err(ValidationError::TagPath { value, problem, .. }) => {
                    Err(TopicError::InvalidSegment {
                        position: Level::SubLevel,
                        value,
                        problem,
                    })
                }
                Err(other) => Err(TopicError::Validation(other)),
            }
        }
        "status" => no_more("status", rest, 0).map(|()| TopicClass::Status),
        "commands" => {
            let Some(id_text) = rest.first() else {
                return Err(TopicError::MissingLevel {
                    position: Level::CommandId,
                });
            };
            let id = parse_command_id(id_text)?;
            match rest.get(1) {
                None => Ok(TopicClass::Command(id)),
                Some(&"ack") => {
                    no_more("commands/{id}/ack", rest, 2).map(|()| TopicClass::CommandAck(id))
                }
                Some(other) => Err(TopicError::UnexpectedLevel {
                    class: "commands/{id}",
                    index: level_no(1),
                    value: (*other).to_owned(),
                }),
            }
        }
        "config" | "ota" => {
            let sub = rest.first().copied();
            let found = match (class, sub) {
                ("config", Some("desired")) => TopicClass::ConfigDesired,
                ("config", Some("reported")) => TopicClass::ConfigReported,
                ("ota", Some("notification")) => TopicClass::OtaNotification,
                ("ota", Some("status")) => TopicClass::OtaStatus,
                (_, Some(sub)) => {
                    return Err(TopicError::UnknownClass {
                        class: format!("{class}/{sub}"),
                    });
                }
                (_, None) => {
                    return Err(TopicError::MissingLevel {
                        position: Level::Class,
                    });
                }
            };
            let name = match found {
                TopicClass::ConfigDesired => "config/desired",
                TopicClass::ConfigReported => "config/reported",
                TopicClass::OtaNotification => "ota/notification",
                _ => "ota/status",
            };
            no_more(name, rest, 1).map(|()| found)
        }
        other => match check_segment(other, Segment::MAX_LEN) {
            Err(problem) => Err(TopicError::InvalidSegment {
                position: Level::Class,
                value: other.to_owned(),
                problem,
            }),
            Ok(()) => Err(TopicError::UnknownClass {
                class: other.to_owned(),
            }),
        },
    }
}

/// A command id level: a ULID in canonical text (either case). Non-canonical text
/// that the ULID decoder would still accept (a first character above `7`, which
/// overflows 128 bits) is refused, so one id has one topic.
pub(super) fn parse_command_id(text: &str) -> Result<MessageId, TopicError> {
    let bad = || TopicError::BadCommandId {
        value: text.to_owned(),
    };
    if text.len() != 26 || !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad());
    }
    let id: MessageId = text.parse().map_err(|_| bad())?;
    if id.to_string().eq_ignore_ascii_case(text) {
        Ok(id)
    } else {
        Err(bad())
    }
}
