//! In-memory dedupe of `(device_id, message_id)` within a bounded window.
//!
//! This is the cheap first line: it suppresses redeliveries while they are
//! recent. The sink's idempotency is the guarantee (it also covers a restart,
//! which empties this window).

use std::num::NonZeroUsize;
use std::time::Duration;

use iiot_core::types::{DeviceId, MessageId, Timestamp};

use crate::recent::RecentSet;

/// Remembers recently seen message keys, bounded by age and by count: a
/// [`RecentSet`] of `(device_id, message_id)`.
#[derive(Debug)]
pub struct DedupeWindow {
    seen: RecentSet<(DeviceId, MessageId)>,
}

impl DedupeWindow {
    /// A window that forgets keys older than `window` and holds at most `capacity` keys
    /// (the oldest are forgotten first).
    pub fn new(window: Duration, capacity: NonZeroUsize) -> Self {
        Self {
            seen: RecentSet::new(capacity, Some(window)),
        }
    }

    /// Records the key seen at `now`. Returns `true` when it is new, `false` for a
    /// duplicate within the window (which does not extend its stay).
    pub fn insert(&mut self, device: &DeviceId, id: MessageId, now: Timestamp) -> bool {
        self.seen.insert((device.clone(), id), now)
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_unix_nanos(s * 1_000_000_000).unwrap()
    }

    #[test]
    fn suppresses_within_window_and_forgets_after() {
        let d = DeviceId::new("d").unwrap();
        let mut w = DedupeWindow::new(Duration::from_secs(10), NonZeroUsize::new(100).unwrap());
        let id = MessageId::from_u128(1);
        assert!(w.insert(&d, id, ts(0)));
        assert!(!w.insert(&d, id, ts(5)));
        assert!(
            w.insert(&DeviceId::new("e").unwrap(), id, ts(5)),
            "keyed by device too"
        );
        assert!(w.insert(&d, id, ts(11)), "forgotten after the window");
    }

    #[test]
    fn bounded_by_capacity() {
        let d = DeviceId::new("d").unwrap();
        let mut w = DedupeWindow::new(Duration::from_secs(3600), NonZeroUsize::new(3).unwrap());
        for i in 0..10 {
            assert!(w.insert(&d, MessageId::from_u128(i), ts(0)));
            assert!(w.len() <= 3);
        }
        assert!(!w.insert(&d, MessageId::from_u128(9), ts(0)));
        assert!(
            w.insert(&d, MessageId::from_u128(0), ts(0)),
            "oldest evicted first"
        );
    }
}
