//! Forwarder configuration.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which records go first after a reconnect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReplayOrder {
    /// Strict sequence order: the backlog (paced) and then new records. Nothing is lost and
    /// the broker sees records in order (a retried record may follow records confirmed
    /// after it was first sent, when more than one is in flight).
    #[default]
    InOrder,
    /// Records appended after the reconnect are sent as they come, unpaced; the backlog is
    /// replayed (paced) in the gaps. Nothing is lost; the consumer reorders by sequence.
    /// Acknowledgements to the outbox still move in sequence order, so a crash during replay
    /// re-sends the live records confirmed meanwhile (duplicates, never loss).
    LiveFirst,
}

/// Configuration of a [`Forwarder`](super::Forwarder).
///
/// ## Defaults
/// | field | default |
/// |---|---|
/// | `max_in_flight` | 32 unconfirmed publishes |
/// | `read_batch` | 256 records per outbox read |
/// | `read_max_bytes` | 1 MiB per outbox read |
/// | `backoff_initial` | 30 s (the field guide: min(30 s × 2ⁿ, 3600 s)) |
/// | `backoff_max` | 3600 s |
/// | `replay_rate` | 1000 records/s for the backlog after a (re)connect; `None`: unpaced |
/// | `order` | [`ReplayOrder::InOrder`] |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwarderConfig {
    /// Publishes awaiting confirmation at once.
    pub max_in_flight: NonZeroUsize,
    /// Records per outbox read.
    pub read_batch: NonZeroUsize,
    /// Bytes per outbox read (at least one record is always read).
    pub read_max_bytes: NonZeroUsize,
    /// First retry delay after a failed publish; doubles per consecutive failure.
    #[serde(with = "iiot_core::duration::human")]
    pub backoff_initial: Duration,
    /// Cap on the retry delay. Each delay is jittered to between half and all of it.
    #[serde(with = "iiot_core::duration::human")]
    pub backoff_max: Duration,
    /// Records per second for the backlog present at a (re)connect.
    pub replay_rate: Option<NonZeroU32>,
    /// Backlog or live records first.
    pub order: ReplayOrder,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            max_in_flight: NonZeroUsize::new(32).unwrap_or(NonZeroUsize::MIN),
            read_batch: NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
            read_max_bytes: NonZeroUsize::new(1 << 20).unwrap_or(NonZeroUsize::MIN),
            backoff_initial: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
            replay_rate: NonZeroU32::new(1000),
            order: ReplayOrder::InOrder,
        }
    }
}

impl ForwarderConfig {
    /// Sets the in-flight window.
    pub fn set_max_in_flight(&mut self, v: NonZeroUsize) -> &mut Self {
        self.max_in_flight = v;
        self
    }
    /// Sets records per read.
    pub fn set_read_batch(&mut self, v: NonZeroUsize) -> &mut Self {
        self.read_batch = v;
        self
    }
    /// Sets the backoff's first delay and cap.
    pub fn set_backoff(&mut self, initial: Duration, max: Duration) -> &mut Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }
    /// Sets the backlog replay rate (`None`: unpaced).
    pub fn set_replay_rate(&mut self, v: Option<NonZeroU32>) -> &mut Self {
        self.replay_rate = v;
        self
    }
    /// Sets the replay order.
    pub fn set_order(&mut self, v: ReplayOrder) -> &mut Self {
        self.order = v;
        self
    }

    /// The retry backoff: core's [`Backoff`](iiot_core::backoff::Backoff) from
    /// `backoff_initial` to `backoff_max`, retries counted from 0 (the field guide's
    /// `min(30 s × 2ⁿ, 3600 s)`, then jittered to between half and all of it).
    pub(crate) fn backoff(&self) -> iiot_core::backoff::Backoff {
        iiot_core::backoff::Backoff::new(self.backoff_initial, self.backoff_max)
    }
}

/// The old numeric keys of [`ForwarderConfig`] files (milliseconds), for
/// [`iiot_core::duration::legacy::upgrade_toml`].
pub const LEGACY_KEYS: &[iiot_core::duration::legacy::LegacyKey] = {
    use iiot_core::duration::legacy::{LegacyKey, LegacyUnit};
    &[
        LegacyKey::duration("backoff_initial", "backoff_initial", LegacyUnit::Millis),
        LegacyKey::duration("backoff_max", "backoff_max", LegacyUnit::Millis),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_field_guide() {
        let c = ForwarderConfig::default();
        let secs: Vec<u64> = (0..9).map(|n| c.backoff().ceiling(n).as_secs()).collect();
        assert_eq!(secs, vec![30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(c.backoff().ceiling(u32::MAX).as_secs(), 3600);
        // Jittered to between half and all of the ceiling.
        assert_eq!(c.backoff().delay(1, 0.0).as_secs(), 30);
        assert_eq!(c.backoff().delay(1, 1.0).as_secs(), 60);
    }

    #[test]
    fn config_is_serde_with_defaults() {
        let c: ForwarderConfig = serde_json::from_str(r#"{"order":"live_first"}"#).unwrap();
        assert_eq!(c.order, ReplayOrder::LiveFirst);
        assert_eq!(c.max_in_flight.get(), 32);
        assert!(serde_json::from_str::<ForwarderConfig>(r#"{"windw":1}"#).is_err());
    }
}
