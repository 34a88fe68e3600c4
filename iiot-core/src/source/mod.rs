//! Sources of readings: the contract between the drivers that read a plant (a
//! Modbus poller, an OPC-UA subscription, a user's own code) and the gateway
//! runtime in `iiot-edge` that turns readings into telemetry.
//!
//! A reading is a [`Sample`]: tag, value (none when it could not be read),
//! quality and source time. A driver emits every reading it makes; the runtime
//! owns report by exception (one deadband for the whole gateway, configured per
//! tag through [`ReportPolicy`]), so no driver filters twice. A driver whose
//! server filters for it (an OPC-UA DataChangeFilter) declares that tag with
//! [`ReportPolicy::ALL`] so the runtime passes it through.
//!
//! No I/O here: the traits are implemented by the drivers and driven by the
//! runtime.
//!
//! ```
//! use std::future::Future;
//! use iiot_core::source::{ReadingSink, ReportPolicy, Source, SourceInfo};
//! use iiot_core::types::{Sample, TagPath, Timestamp};
//!
//! /// A source that emits one reading and stops.
//! struct Once(Sample);
//!
//! impl Source for Once {
//!     fn info(&self) -> SourceInfo {
//!         SourceInfo::new("once").with_tag(self.0.tag().clone(), ReportPolicy::ALL)
//!     }
//!     async fn run<K: ReadingSink>(self, mut sink: K, _stop: impl Future<Output = ()> + Send) {
//!         let _ = sink.send(self.0).await;
//!     }
//! }
//! # let _ = Once(Sample::good(TagPath::new("t").unwrap(), 1.0, Timestamp::now()));
//! ```

use std::future::Future;
use std::time::{Duration, Instant};

use crate::quality::Quality;
use crate::types::{Sample, TagPath, Value};

/// Report-by-exception threshold of a numeric tag.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Deadband {
    /// Report when the value moved by more than this many engineering units.
    Absolute(f64),
    /// Report when the value moved by more than this percentage of the last reported value.
    Percent(f64),
}

/// When a tag's readings are reported.
///
/// Without a deadband every reading is reported. With one, a reading is reported
/// when it is the first, its quality changed, its value moved by more than the
/// deadband (absolute units, or percent of the last reported value), a
/// non-numeric value changed, or `max_interval` passed since the last report.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReportPolicy {
    /// The deadband; `None` reports every reading.
    pub deadband: Option<Deadband>,
    /// Report at least this often even when the value did not move (only with a deadband).
    pub max_interval: Option<Duration>,
}

impl ReportPolicy {
    /// Every reading is reported (no deadband).
    pub const ALL: Self = Self {
        deadband: None,
        max_interval: None,
    };

    /// A deadband with an optional maximum report interval.
    pub fn deadband(deadband: Deadband, max_interval: Option<Duration>) -> Self {
        Self {
            deadband: Some(deadband),
            max_interval,
        }
    }
}

/// What a source tells the runtime before it runs: its name (for metrics and
/// the status heartbeat) and the report policy of each tag it emits. Tags not
/// listed are reported without a deadband.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SourceInfo {
    /// A short name, unique within a gateway (`"modbus"`, `"opcua-line3"`).
    pub name: String,
    /// The policy of each tag.
    pub tags: Vec<(TagPath, ReportPolicy)>,
}

impl SourceInfo {
    /// A source named `name` with no tag policies yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            tags: Vec::new(),
        }
    }

    /// Adds the policy of one tag.
    #[must_use]
    pub fn with_tag(mut self, tag: TagPath, policy: ReportPolicy) -> Self {
        self.tags.push((tag, policy));
        self
    }
}

/// The runtime stopped taking readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the reading sink is closed")]
pub struct SinkClosed;

/// Whether a source can reach what it reads (the PLC's TCP connection, the serial
/// line, the OPC-UA session): the connectivity signal of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Link {
    /// Connected; readings come from the device.
    Up,
    /// Not connected; readings, if any, are Bad.
    Down {
        /// Why, as the transport said it (e.g. `Connection refused (os error 111)`).
        cause: String,
    },
}

impl Link {
    /// Whether this is [`Link::Up`].
    pub fn is_up(&self) -> bool {
        matches!(self, Self::Up)
    }
}

/// Where a source puts its readings; given to [`Source::run`] by the runtime.
pub trait ReadingSink: Send {
    /// Hands one reading to the runtime, waiting while its bounded queue is full
    /// (back-pressure: a slow outbox slows the source, nothing is dropped here).
    ///
    /// # Errors
    /// [`SinkClosed`] once the runtime stopped; the source should return.
    ///
    /// # Cancel safety
    /// Dropping the future before it resolves drops the reading.
    fn send(&mut self, reading: Sample) -> impl Future<Output = Result<(), SinkClosed>> + Send;

    /// Tells the runtime that the source's connection changed (it keeps the latest
    /// state per source for its metrics). A source calls it on every change; the
    /// default ignores it.
    fn link(&mut self, link: Link) {
        let _ = link;
    }
}

/// A driver that produces readings.
pub trait Source: Send + 'static {
    /// Its name and tag policies; called once, before [`Source::run`].
    fn info(&self) -> SourceInfo;

    /// Emits readings into `sink` until `stop` resolves (or the sink closes),
    /// then returns. Every reading emitted before it returns is batched: the
    /// runtime drains the sink after the last source returned.
    fn run<K: ReadingSink + 'static>(
        self,
        sink: K,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send;
}

/// Report by exception for one tag: decides whether a reading is reported. No I/O;
/// the caller passes the time (a `tokio::time::Instant` converts with `into_std`).
///
/// Without a deadband every poll is reported. With one, a reading is reported when it
/// is the first, its quality changed, its value moved by more than the deadband (absolute
/// units, or percent of the last reported value), a non-numeric value changed, or the
/// maximum report interval passed since the last report.
#[derive(Debug, Clone)]
pub struct ReportFilter {
    deadband: Option<Deadband>,
    max_interval: Option<Duration>,
    last: Option<(Option<Value>, Quality, Instant)>,
}

impl ReportFilter {
    /// A filter applying `policy`, with nothing reported yet.
    pub fn new(policy: ReportPolicy) -> Self {
        Self {
            deadband: policy.deadband,
            max_interval: policy.max_interval,
            last: None,
        }
    }

    /// Whether a reading with `value` and `quality` at `now` is reported; a
    /// reported reading becomes the one later readings are compared with.
    pub fn admit(&mut self, value: Option<&Value>, quality: Quality, now: Instant) -> bool {
        let report = match (&self.last, self.deadband) {
            (_, None) | (None, _) => true,
            (Some((last_v, last_q, last_at)), Some(db)) => {
                *last_q != quality
                    || self
                        .max_interval
                        .is_some_and(|m| now.duration_since(*last_at) >= m)
                    || moved(last_v.as_ref(), value, db)
            }
        };
        if report {
            self.last = Some((value.cloned(), quality, now));
        }
        report
    }
}

fn moved(last: Option<&Value>, now: Option<&Value>, db: Deadband) -> bool {
    match (last, now) {
        (None, None) => false,
        (Some(before), Some(after)) => match (before.as_f64(), after.as_f64()) {
            (Some(old), Some(new)) if old.is_finite() && new.is_finite() => {
                let threshold = match db {
                    Deadband::Absolute(abs) => abs,
                    Deadband::Percent(pct) => old.abs() * pct / 100.0,
                };
                (new - old).abs() > threshold || (threshold == 0.0 && before != after)
            }
            _ => before != after,
        },
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: Quality = Quality::from_status_code(0x800A_0000);

    #[test]
    fn absolute_deadband_with_max_interval() {
        let mut f = ReportFilter::new(ReportPolicy::deadband(
            Deadband::Absolute(0.5),
            Some(Duration::from_secs(10)),
        ));
        let t = Instant::now();
        let v = |x: f64| Value::Double(x);
        assert!(f.admit(Some(&v(10.0)), Quality::GOOD, t));
        assert!(!f.admit(Some(&v(10.4)), Quality::GOOD, t + Duration::from_secs(1)));
        assert!(f.admit(Some(&v(10.6)), Quality::GOOD, t + Duration::from_secs(2)));
        assert!(!f.admit(Some(&v(10.6)), Quality::GOOD, t + Duration::from_secs(11)));
        assert!(f.admit(Some(&v(10.6)), Quality::GOOD, t + Duration::from_secs(12)));
        // Quality change always reports, repeated Bad does not.
        assert!(f.admit(None, BAD, t + Duration::from_secs(13)));
        assert!(!f.admit(None, BAD, t + Duration::from_secs(14)));
        assert!(f.admit(Some(&v(10.6)), Quality::GOOD, t + Duration::from_secs(15)));
    }

    #[test]
    fn percent_deadband_and_nan() {
        let mut f = ReportFilter::new(ReportPolicy::deadband(Deadband::Percent(10.0), None));
        let t = Instant::now();
        assert!(f.admit(Some(&Value::Float(100.0)), Quality::GOOD, t));
        assert!(!f.admit(Some(&Value::Float(109.0)), Quality::GOOD, t));
        assert!(f.admit(Some(&Value::Float(111.0)), Quality::GOOD, t));
        assert!(f.admit(Some(&Value::Float(f32::NAN)), Quality::GOOD, t));
        assert!(!f.admit(Some(&Value::Float(f32::NAN)), Quality::GOOD, t));
    }

    #[test]
    fn no_deadband_reports_every_poll() {
        let mut f = ReportFilter::new(ReportPolicy::ALL);
        let t = Instant::now();
        assert!(f.admit(Some(&Value::UInt(1)), Quality::GOOD, t));
        assert!(f.admit(Some(&Value::UInt(1)), Quality::GOOD, t));
    }
}
