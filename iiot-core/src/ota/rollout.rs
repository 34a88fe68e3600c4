//! Rollout waves and abort rules: pure functions the platform runs over its
//! fleet and the statuses devices report.
//!
//! A campaign rolls an update out in waves of growing percentage (say 1 %, 10 %,
//! 50 %, 100 %). A device's place is a stable hash of (campaign id, device id), so
//! every platform worker, every restart and every language that follows the rule
//! below picks the same devices, a device in the 1 % wave is also in every later
//! one, and different campaigns pick different first devices.
//!
//! The rule: `bucket = u32::from_be_bytes(SHA-256("iiot-wave\0" ‖ campaign ‖ "\0" ‖
//! device)[0..4]) % 10_000`; the device is in a wave of `p` percent when
//! `bucket < p × 100`.
//!
//! ```
//! use iiot_core::ota::rollout::{AbortRules, Tally, Verdict, in_wave};
//! use iiot_core::types::DeviceId;
//!
//! let fleet: Vec<DeviceId> = (0..1000).map(|i| DeviceId::new(format!("plc-{i:04}")).unwrap()).collect();
//! let wave: Vec<_> = fleet.iter().filter(|d| in_wave("fw-2.4.1", d, 10.0)).collect();
//! assert!((60..140).contains(&wave.len()), "about 10 %: {}", wave.len());
//!
//! // 100 devices in the wave, 3 rolled back: more than 5 %? not yet, go on waiting.
//! let mut t = Tally::new(100);
//! t.rolled_back = 3;
//! t.confirmed = 60;
//! assert_eq!(AbortRules::default().evaluate(&t), Verdict::Wait);
//! t.rolled_back = 6;
//! assert!(matches!(AbortRules::default().evaluate(&t), Verdict::Abort(_)));
//! ```

use std::collections::HashMap;

use sha2::{Digest as _, Sha256};

use crate::types::{DeviceId, OtaState, OtaStatus};

/// Basis points (0..10 000) of a device's place in a campaign's rollout.
pub fn wave_bucket(campaign: &str, device: &DeviceId) -> u32 {
    let mut h = Sha256::new();
    h.update(b"iiot-wave\0");
    h.update(campaign.as_bytes());
    h.update(b"\0");
    h.update(device.as_str().as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 10_000
}

/// Whether `device` is in the wave that covers `percent` % of the fleet (0 to
/// 100; values outside are clamped, NaN is 0). Waves nest: in at 10 % means in
/// at every larger percentage.
pub fn in_wave(campaign: &str, device: &DeviceId, percent: f64) -> bool {
    let p = if percent.is_nan() {
        0.0
    } else {
        percent.clamp(0.0, 100.0)
    };
    // Up to 10 000 basis points: exact in f64.
    f64::from(wave_bucket(campaign, device)) < p * 100.0
}

/// How the devices of one wave stand, counted from their reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Devices in the wave.
    pub targeted: u32,
    /// Confirmed the new version.
    pub confirmed: u32,
    /// Tried it and rolled back.
    pub rolled_back: u32,
    /// Rejected the manifest or image, or failed before a trial.
    pub failed: u32,
}

impl Tally {
    /// A wave of `targeted` devices with no reports yet.
    pub fn new(targeted: u32) -> Self {
        Self {
            targeted,
            ..Self::default()
        }
    }

    /// Counts the latest report (by time) of each device in `wave` about
    /// `firmware_id` at `version`; reports of other devices or other updates are
    /// ignored, and a device still on its way counts as unfinished.
    pub fn from_statuses<'a>(
        wave: &[DeviceId],
        firmware_id: &str,
        version: &str,
        statuses: impl IntoIterator<Item = &'a OtaStatus>,
    ) -> Self {
        let mut latest: HashMap<&DeviceId, &OtaStatus> = HashMap::new();
        for s in statuses {
            if s.firmware_id != firmware_id || s.version != version {
                continue;
            }
            let e = latest.entry(&s.device_id).or_insert(s);
            if s.time >= e.time {
                *e = s;
            }
        }
        let mut t = Self::new(wave.len() as u32);
        for d in wave {
            match latest.get(d).map(|s| s.state) {
                Some(OtaState::Confirmed) => t.confirmed += 1,
                Some(OtaState::RolledBack) => t.rolled_back += 1,
                Some(OtaState::Rejected | OtaState::Failed) => t.failed += 1,
                _ => {}
            }
        }
        t
    }

    /// Devices that reached an end (confirmed, rolled back or failed).
    pub fn finished(&self) -> u32 {
        self.confirmed + self.rolled_back + self.failed
    }
}

/// When a rollout stops. Rates are fractions of the wave's devices (0.95 = 95 %).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbortRules {
    /// Stop when confirmed devices can no longer reach this share of the wave.
    pub min_success: f64,
    /// Stop as soon as rolled-back devices exceed this share of the wave.
    pub max_rollback: f64,
}

impl Default for AbortRules {
    /// Stop below 95 % success or above 5 % rollbacks.
    fn default() -> Self {
        Self {
            min_success: 0.95,
            max_rollback: 0.05,
        }
    }
}

/// What to do with a wave.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not decided yet: devices are still updating.
    Wait,
    /// Every device finished within the rules: go on to the next wave.
    Advance,
    /// Stop the rollout.
    Abort(AbortCause),
}

/// Why a rollout stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum AbortCause {
    /// Rollbacks exceed [`AbortRules::max_rollback`] (the share reached).
    Rollbacks(f64),
    /// Success can no longer reach [`AbortRules::min_success`] (the best share
    /// still possible).
    Success(f64),
}

impl AbortRules {
    /// Judges a wave as soon as its outcome is certain: it aborts the moment the
    /// rollbacks exceed their limit or the devices that did not confirm make the
    /// success rate unreachable, even with devices still updating; it advances
    /// only when every device finished within both limits. An empty wave advances.
    pub fn evaluate(&self, t: &Tally) -> Verdict {
        if t.targeted == 0 {
            return Verdict::Advance;
        }
        let n = f64::from(t.targeted);
        let rollback = f64::from(t.rolled_back) / n;
        if rollback > self.max_rollback {
            return Verdict::Abort(AbortCause::Rollbacks(rollback));
        }
        let best = f64::from(t.targeted.saturating_sub(t.rolled_back + t.failed)) / n;
        if best < self.min_success {
            return Verdict::Abort(AbortCause::Success(best));
        }
        if t.finished() >= t.targeted {
            Verdict::Advance
        } else {
            Verdict::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Timestamp;
    use proptest::prelude::*;

    fn dev(i: u32) -> DeviceId {
        DeviceId::new(format!("dev-{i}")).unwrap()
    }

    #[test]
    fn bucket_is_stable_across_builds() {
        // Pinned: another implementation of the documented rule must agree.
        assert_eq!(wave_bucket("c1", &DeviceId::new("plc-01").unwrap()), {
            let d = Sha256::digest(b"iiot-wave\0c1\0plc-01");
            u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 10_000
        });
    }

    #[test]
    fn waves_are_about_their_percentage_and_differ_per_campaign() {
        let fleet: Vec<_> = (0..10_000).map(dev).collect();
        for p in [1.0, 10.0, 50.0] {
            let n = fleet.iter().filter(|d| in_wave("camp-a", d, p)).count() as f64;
            let want = p * 100.0;
            assert!((n - want).abs() < want * 0.25 + 10.0, "{p} %: {n}");
        }
        let a: Vec<_> = fleet.iter().filter(|d| in_wave("camp-a", d, 1.0)).collect();
        let b: Vec<_> = fleet.iter().filter(|d| in_wave("camp-b", d, 1.0)).collect();
        assert_ne!(a, b);
        assert!(fleet.iter().all(|d| in_wave("x", d, 100.0)));
        assert!(
            !fleet
                .iter()
                .any(|d| in_wave("x", d, 0.0) || in_wave("x", d, f64::NAN))
        );
    }

    proptest! {
        #[test]
        fn waves_nest(campaign in "[a-z0-9-]{1,12}", i in 0u32..100_000, p in 0.0f64..100.0, q in 0.0f64..100.0) {
            let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
            let d = dev(i);
            prop_assert!(!in_wave(&campaign, &d, lo) || in_wave(&campaign, &d, hi));
        }

        #[test]
        fn verdict_is_certain(
            (targeted, c, r, f, more_c) in (1u32..200).prop_flat_map(|t| (Just(t), 0..=t, 0..=t, 0..=t, 0..=t))
        ) {
            // Whatever the unfinished devices do next, an Abort never turns into an
            // Advance, and an Advance has everything finished within the limits.
            let r = r.min(targeted - c);
            let f = f.min(targeted - c - r);
            let rules = AbortRules::default();
            let t = Tally { targeted, confirmed: c, rolled_back: r, failed: f };
            let later = Tally { confirmed: c + more_c.min(targeted - c - r - f), ..t };
            match rules.evaluate(&t) {
                Verdict::Abort(_) => prop_assert!(matches!(rules.evaluate(&later), Verdict::Abort(_))),
                Verdict::Advance => {
                    prop_assert_eq!(t.finished(), targeted);
                    prop_assert!(f64::from(c) / f64::from(targeted) >= rules.min_success);
                    prop_assert!(f64::from(r) / f64::from(targeted) <= rules.max_rollback);
                }
                Verdict::Wait => prop_assert!(t.finished() < targeted),
            }
        }
    }

    #[test]
    fn tally_counts_the_latest_report_of_each_device_in_the_wave() {
        let wave = vec![dev(1), dev(2), dev(3), dev(4)];
        let s = |d: u32, state, t: i64| OtaStatus {
            device_id: dev(d),
            firmware_id: "fw".into(),
            version: "2.0.0".into(),
            state,
            time: Timestamp::from_unix_nanos(t).unwrap(),
            detail: None,
            bytes_done: None,
            reason: None,
            running_version: None,
        };
        let mut other = s(4, OtaState::Confirmed, 9);
        other.version = "1.9.0".into();
        let reports = [
            s(1, OtaState::TrialBoot, 1),
            s(1, OtaState::Confirmed, 2),
            s(2, OtaState::RolledBack, 5),
            s(2, OtaState::TrialBoot, 4),
            s(3, OtaState::Downloading, 1),
            s(9, OtaState::Confirmed, 1),
            other,
        ];
        let t = Tally::from_statuses(&wave, "fw", "2.0.0", &reports);
        assert_eq!(
            t,
            Tally {
                targeted: 4,
                confirmed: 1,
                rolled_back: 1,
                failed: 0
            }
        );
        assert!(matches!(
            AbortRules::default().evaluate(&t),
            Verdict::Abort(AbortCause::Rollbacks(_))
        ));
    }
}
