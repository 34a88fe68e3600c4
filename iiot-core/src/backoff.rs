//! Exponential backoff with jitter: the one rule every retry loop of iiot-rs uses.
//!
//! [`Backoff`] is pure arithmetic (no clock, no random source, no I/O): the caller
//! counts attempts, draws the jitter and sleeps. The MQTT session's reconnects, the
//! outbox forwarder's retries and the ingest pipeline's sink retries all compute their
//! delays here.
//!
//! ```
//! use std::time::Duration;
//! use iiot_core::backoff::Backoff;
//!
//! let b = Backoff::new(Duration::from_secs(30), Duration::from_secs(3600));
//! // The ceiling doubles per attempt (counted from 0) up to the cap.
//! assert_eq!(b.ceiling(0), Duration::from_secs(30));
//! assert_eq!(b.ceiling(3), Duration::from_secs(240));
//! assert_eq!(b.ceiling(10), Duration::from_secs(3600));
//! // The jitter picks a delay between half the ceiling and all of it.
//! assert_eq!(b.delay(1, 0.0), Duration::from_secs(30));
//! assert_eq!(b.delay(1, 0.5), Duration::from_secs(45));
//! assert_eq!(b.delay(1, 1.0), Duration::from_secs(60));
//! ```

use std::time::Duration;

/// Exponential backoff: each retry waits up to twice as long as the one before, never
/// more than a cap, with "equal jitter" so that many clients that failed together do not
/// retry together.
///
/// ## The rule
///
/// For retry number `attempt` (counted from 0: the first retry is attempt 0):
///
/// * **Doubling.** The *ceiling* is `initial · 2^attempt`.
/// * **Cap.** The ceiling is capped at `max`; a product that overflows (`attempt` of 32 or
///   more, or a `Duration` overflow) counts as `max`. So the ceiling never decreases with
///   `attempt` and never exceeds `max`. An `initial` of zero gives zero delays; an
///   `initial` above `max` gives `max` from the first retry.
/// * **Jitter.** The delay is `ceiling / 2 + (ceiling − ceiling / 2) · jitter_unit`, with
///   `jitter_unit` a draw from `0.0..=1.0` (uniform, for the usual spread): half the
///   ceiling at 0, the whole ceiling at 1. A unit outside `0..=1` is clamped into it and
///   NaN counts as 1, so the delay always lies between half the ceiling and the ceiling.
///   A caller that wants no jitter passes 1.0.
///
/// Consequences the tests check: the delay never exceeds `max`, and it never decreases
/// when `max` grows or when `attempt` grows (for the same `jitter_unit`).
///
/// ## Defaults
///
/// None: each user states its own (`ForwarderConfig`: 30 s to 1 h, the field guide's
/// `min(30 s × 2ⁿ, 3600 s)`; the MQTT session's reconnect settings; the ingest pipeline's
/// `retry_initial` and `retry_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backoff {
    /// The ceiling of the first retry (attempt 0).
    pub initial: Duration,
    /// The cap: no ceiling (and so no delay) exceeds it.
    pub max: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The ceiling of retry `attempt` (counted from 0), before jitter:
    /// `min(initial · 2^attempt, max)`, an overflow counting as `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        if self.initial.is_zero() {
            return Duration::ZERO;
        }
        1u32.checked_shl(attempt)
            .and_then(|factor| self.initial.checked_mul(factor))
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The delay before retry `attempt` (counted from 0): between half the
    /// [`ceiling`](Self::ceiling) (`jitter_unit` 0) and the whole ceiling (`jitter_unit` 1),
    /// linearly. `jitter_unit` outside `0..=1` is clamped; NaN counts as 1.
    pub fn delay(&self, attempt: u32, jitter_unit: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        // `half` is at most `ceiling`, so this never saturates.
        let span = ceiling.saturating_sub(half);
        let unit = if jitter_unit.is_nan() {
            1.0
        } else {
            jitter_unit.clamp(0.0, 1.0)
        };
        // Through f64 a long span may round up by a few nanoseconds: never past the span.
        let extra = Duration::try_from_secs_f64(span.as_secs_f64() * unit)
            .unwrap_or(span)
            .min(span);
        half + extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceiling_doubles_from_attempt_zero_and_caps() {
        let b = Backoff::new(Duration::from_secs(30), Duration::from_secs(3600));
        let secs: Vec<u64> = (0..9).map(|n| b.ceiling(n).as_secs()).collect();
        assert_eq!(secs, vec![30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(b.ceiling(31), Duration::from_secs(3600));
        assert_eq!(b.ceiling(32), Duration::from_secs(3600));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_spans_half_to_whole_ceiling() {
        let b = Backoff::new(100 * MS, Duration::from_secs(2));
        assert_eq!(b.delay(0, 1.0), 100 * MS);
        assert_eq!(b.delay(0, 0.0), 50 * MS);
        assert_eq!(b.delay(0, 0.5), 75 * MS);
        assert_eq!(b.delay(2, 1.0), 400 * MS);
        assert_eq!(b.delay(29, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn out_of_range_units_are_clamped_and_nan_is_one() {
        let b = Backoff::new(100 * MS, Duration::from_secs(2));
        assert_eq!(b.delay(0, -3.0), 50 * MS);
        assert_eq!(b.delay(0, 7.0), 100 * MS);
        assert_eq!(b.delay(0, f64::NAN), 100 * MS);
        assert_eq!(b.delay(0, f64::INFINITY), 100 * MS);
        assert_eq!(b.delay(0, f64::NEG_INFINITY), 50 * MS);
    }

    #[test]
    fn edge_values() {
        // Zero initial: no delay, however many attempts.
        let zero = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(zero.delay(40, 1.0), Duration::ZERO);
        // Initial above the cap: the cap.
        let over = Backoff::new(Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(over.ceiling(0), Duration::from_secs(1));
        // Huge durations neither panic nor pass the cap.
        let huge = Backoff::new(Duration::MAX / 3, Duration::MAX);
        assert_eq!(huge.ceiling(1), (Duration::MAX / 3) * 2);
        assert_eq!(huge.ceiling(2), Duration::MAX);
        assert_eq!(huge.delay(2, 1.0), Duration::MAX);
        assert!(huge.delay(2, 0.999) <= Duration::MAX);
        // An odd number of nanoseconds: the whole ceiling at 1.
        let odd = Backoff::new(Duration::from_nanos(3), Duration::from_secs(1));
        assert_eq!(odd.delay(0, 1.0), Duration::from_nanos(3));
        assert_eq!(odd.delay(0, 0.0), Duration::from_nanos(1));
    }

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (0u64..10_000_000_000).prop_map(Duration::from_nanos),
            (0u64..=u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        ]
    }

    proptest! {
        #[test]
        fn never_exceeds_max_nor_falls_below_half_the_ceiling(
            initial in duration(),
            max in duration(),
            attempt in 0u32..80,
            unit in proptest::num::f64::ANY,
        ) {
            let b = Backoff::new(initial, max);
            let d = b.delay(attempt, unit);
            prop_assert!(d <= max, "{d:?} > {max:?}");
            prop_assert!(d <= b.ceiling(attempt));
            prop_assert!(d >= b.ceiling(attempt) / 2);
        }

        #[test]
        fn monotone_in_the_cap(
            initial in duration(),
            max_a in duration(),
            max_b in duration(),
            attempt in 0u32..80,
            unit in 0.0f64..=1.0,
        ) {
            let (lo, hi) = if max_a <= max_b { (max_a, max_b) } else { (max_b, max_a) };
            let small = Backoff::new(initial, lo);
            let large = Backoff::new(initial, hi);
            prop_assert!(small.ceiling(attempt) <= large.ceiling(attempt));
            prop_assert!(small.delay(attempt, unit) <= large.delay(attempt, unit));
        }

        #[test]
        fn monotone_in_the_attempt(
            initial in duration(),
            max in duration(),
            attempt in 0u32..80,
            unit in 0.0f64..=1.0,
        ) {
            let b = Backoff::new(initial, max);
            prop_assert!(b.ceiling(attempt) <= b.ceiling(attempt + 1));
            prop_assert!(b.delay(attempt, unit) <= b.delay(attempt + 1, unit));
        }
    }
}
