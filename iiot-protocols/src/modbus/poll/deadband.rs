//! Report by exception: a deadband filter per tag. No I/O.

use std::time::Duration;

use iiot_core::quality::Quality;
use iiot_core::types::Value;
use tokio::time::Instant;

use crate::modbus::map::Deadband;

/// Decides whether a reading is reported.
///
/// Without a deadband every poll is reported. With one, a reading is reported when it
/// is the first, its quality changed, its value moved by more than the deadband (absolute
/// units, or percent of the last reported value), a non-numeric value changed, or the
/// maximum report interval passed since the last report.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    deadband: Option<Deadband>,
    max_interval: Option<Duration>,
    last: Option<(Option<Value>, Quality, Instant)>,
}

impl Filter {
    pub(crate) fn new(deadband: Option<Deadband>, max_interval: Option<Duration>) -> Self {
        Self {
            deadband,
            max_interval,
            last: None,
        }
    }

    pub(crate) fn admit(&mut self, value: Option<&Value>, quality: Quality, now: Instant) -> bool {
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
        let mut f = Filter::new(Some(Deadband::Absolute(0.5)), Some(Duration::from_secs(10)));
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
        let mut f = Filter::new(Some(Deadband::Percent(10.0)), None);
        let t = Instant::now();
        assert!(f.admit(Some(&Value::Float(100.0)), Quality::GOOD, t));
        assert!(!f.admit(Some(&Value::Float(109.0)), Quality::GOOD, t));
        assert!(f.admit(Some(&Value::Float(111.0)), Quality::GOOD, t));
        assert!(f.admit(Some(&Value::Float(f32::NAN)), Quality::GOOD, t));
        assert!(!f.admit(Some(&Value::Float(f32::NAN)), Quality::GOOD, t));
    }

    #[test]
    fn no_deadband_reports_every_poll() {
        let mut f = Filter::new(None, None);
        let t = Instant::now();
        assert!(f.admit(Some(&Value::UInt(1)), Quality::GOOD, t));
        assert!(f.admit(Some(&Value::UInt(1)), Quality::GOOD, t));
    }
}
