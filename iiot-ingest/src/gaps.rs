//! Gap detection on the per-device sequence number.
//!
//! Every telemetry batch carries a per-device monotonic sequence. The tracker
//! keeps, per device, the highest sequence seen and the ranges still missing.
//! A jump opens a gap; a late arrival inside a gap narrows or closes it; a
//! `DataLoss` record from the gateway marks its range as announced (that data
//! will never come). Every change is returned as a [`GapChange`] so the sink can
//! store it in the same transaction as the rows.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;

use iiot_core::types::{DataLoss, DeviceId, Sequence, Timestamp};

use crate::record::{DeviceSequenceState, Gap, GapChange};

#[derive(Debug, Default)]
struct DeviceState {
    highest: Option<u64>,
    /// Open gaps by first sequence.
    open: BTreeMap<u64, Gap>,
}

/// Per-device sequence tracking. Memory: one entry per device plus at most
/// `max_open_gaps` gaps per device (past that, the oldest gaps are no longer
/// tracked in memory; they stay recorded in the sink).
#[derive(Debug)]
pub struct GapTracker {
    devices: HashMap<DeviceId, DeviceState>,
    max_open_gaps: NonZeroUsize,
    forgotten: u64,
}

fn gap(device: &DeviceId, first: u64, last: u64, first_seen: Timestamp, announced: bool) -> Gap {
    Gap {
        device_id: device.clone(),
        first: Sequence(first),
        last: Sequence(last),
        first_seen,
        announced,
    }
}

impl GapTracker {
    /// A tracker keeping at most `max_open_gaps` open gaps per device.
    pub fn new(max_open_gaps: NonZeroUsize) -> Self {
        Self {
            devices: HashMap::new(),
            max_open_gaps,
            forgotten: 0,
        }
    }

    /// Restores state read back from a sink after a restart.
    pub fn restore(&mut self, states: Vec<DeviceSequenceState>) {
        for s in states {
            let entry = self.devices.entry(s.device_id).or_default();
            entry.highest = Some(
                entry
                    .highest
                    .map_or(s.highest_seq.0, |h| h.max(s.highest_seq.0)),
            );
            for g in s.open_gaps {
                entry.open.insert(g.first.0, g);
            }
        }
    }

    /// Gaps dropped from memory because a device had too many open.
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Open gaps of `device`, in order.
    pub fn open_gaps(&self, device: &DeviceId) -> Vec<Gap> {
        self.devices
            .get(device)
            .map(|d| d.open.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The highest sequence seen from `device`.
    pub fn highest(&self, device: &DeviceId) -> Option<Sequence> {
        self.devices
            .get(device)
            .and_then(|d| d.highest)
            .map(Sequence)
    }

    /// Records that `seq` of `device` arrived at `now`.
    pub fn observe(&mut self, device: &DeviceId, seq: Sequence, now: Timestamp) -> Vec<GapChange> {
        let max = self.max_open_gaps.get();
        let state = self.devices.entry(device.clone()).or_default();
        let seq = seq.0;
        let mut changes = Vec::new();
        match state.highest {
            None => state.highest = Some(seq),
            Some(h) if seq > h => {
                if seq > h + 1 {
                    let g = gap(device, h + 1, seq - 1, now, false);
                    state.open.insert(h + 1, g.clone());
                    changes.push(GapChange::Opened(g));
                }
                state.highest = Some(seq);
            }
            Some(_) => {
                // Late arrival (or a duplicate sequence): fill it if it is in a gap.
                if let Some((&first, g)) = state.open.range(..=seq).next_back()
                    && g.last.0 >= seq
                {
                    let old = g.clone();
                    state.open.remove(&first);
                    let mut remaining = Vec::new();
                    if seq > old.first.0 {
                        remaining.push(gap(
                            device,
                            old.first.0,
                            seq - 1,
                            old.first_seen,
                            old.announced,
                        ));
                    }
                    if seq < old.last.0 {
                        remaining.push(gap(
                            device,
                            seq + 1,
                            old.last.0,
                            old.first_seen,
                            old.announced,
                        ));
                    }
                    for g in &remaining {
                        state.open.insert(g.first.0, g.clone());
                    }
                    changes.push(GapChange::Narrowed {
                        device_id: device.clone(),
                        first: Sequence(first),
                        remaining,
                        at: now,
                    });
                }
            }
        }
        self.forgotten += trim(state, max);
        changes
    }

    /// Records a gateway's announcement that `loss.first_seq..=loss.last_seq` is lost.
    pub fn announce(&mut self, loss: &DataLoss, now: Timestamp) -> Vec<GapChange> {
        let max = self.max_open_gaps.get();
        let device = &loss.device_id;
        let (a, b) = (loss.first_seq().0, loss.last_seq().0);
        let state = self.devices.entry(device.clone()).or_default();
        let mut changes = Vec::new();
        // Mark the overlapping parts of open gaps as announced.
        let overlapping: Vec<u64> = state
            .open
            .range(..=b)
            .filter(|(_, g)| g.last.0 >= a && !g.announced)
            .map(|(&f, _)| f)
            .collect();
        for first in overlapping {
            let Some(old) = state.open.remove(&first) else {
                continue;
            };
            let mut remaining = Vec::new();
            let (lo, hi) = (old.first.0.max(a), old.last.0.min(b));
            if old.first.0 < lo {
                remaining.push(gap(device, old.first.0, lo - 1, old.first_seen, false));
            }
            remaining.push(gap(device, lo, hi, old.first_seen, true));
            if hi < old.last.0 {
                remaining.push(gap(device, hi + 1, old.last.0, old.first_seen, false));
            }
            for g in &remaining {
                state.open.insert(g.first.0, g.clone());
            }
            changes.push(GapChange::Narrowed {
                device_id: device.clone(),
                first: Sequence(first),
                remaining,
                at: now,
            });
        }
        // The part beyond everything seen so far opens as announced (and anything
        // between the highest seen and the announcement as an ordinary gap).
        let h = state.highest;
        let start = h.map_or(a, |h| (h + 1).max(a));
        if h.is_none_or(|h| b > h) {
            if let Some(h) = h
                && a > h + 1
            {
                let g = gap(device, h + 1, a - 1, now, false);
                state.open.insert(g.first.0, g.clone());
                changes.push(GapChange::Opened(g));
            }
            let g = gap(device, start, b, now, true);
            state.open.insert(g.first.0, g.clone());
            changes.push(GapChange::Opened(g));
            state.highest = Some(b);
        }
        self.forgotten += trim(state, max);
        changes
    }
}

fn trim(state: &mut DeviceState, max: usize) -> u64 {
    let mut n = 0;
    while state.open.len() > max {
        state.open.pop_first();
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use iiot_core::types::DataLossReason;
    use proptest::prelude::*;

    fn t() -> Timestamp {
        Timestamp::from_unix_nanos(1).unwrap()
    }
    fn dev() -> DeviceId {
        DeviceId::new("d").unwrap()
    }
    fn ranges(tr: &GapTracker) -> Vec<(u64, u64, bool)> {
        tr.open_gaps(&dev())
            .iter()
            .map(|g| (g.first.0, g.last.0, g.announced))
            .collect()
    }

    #[test]
    fn jump_opens_late_arrival_narrows_and_closes() {
        let mut tr = GapTracker::new(NonZeroUsize::new(100).unwrap());
        assert!(tr.observe(&dev(), Sequence(1), t()).is_empty());
        assert!(tr.observe(&dev(), Sequence(2), t()).is_empty());
        let c = tr.observe(&dev(), Sequence(6), t());
        assert!(matches!(&c[..], [GapChange::Opened(g)] if g.first.0 == 3 && g.last.0 == 5));
        tr.observe(&dev(), Sequence(4), t());
        assert_eq!(ranges(&tr), vec![(3, 3, false), (5, 5, false)]);
        tr.observe(&dev(), Sequence(3), t());
        let c = tr.observe(&dev(), Sequence(5), t());
        assert!(
            matches!(&c[..], [GapChange::Narrowed { first: Sequence(5), remaining, .. }] if remaining.is_empty())
        );
        assert_eq!(ranges(&tr), vec![]);
        // A duplicate sequence outside any gap changes nothing.
        assert!(tr.observe(&dev(), Sequence(2), t()).is_empty());
    }

    #[test]
    fn announced_loss_is_marked() {
        let mut tr = GapTracker::new(NonZeroUsize::new(100).unwrap());
        tr.observe(&dev(), Sequence(1), t());
        tr.observe(&dev(), Sequence(10), t()); // gap 2..=9
        let loss = DataLoss::new(
            dev(),
            Sequence(4),
            Sequence(6),
            3,
            DataLossReason::Overflow,
            t(),
        )
        .unwrap();
        tr.announce(&loss, t());
        assert_eq!(
            ranges(&tr),
            vec![(2, 3, false), (4, 6, true), (7, 9, false)]
        );
        // An announcement ahead of the data opens an announced gap and moves the high mark.
        let loss = DataLoss::new(
            dev(),
            Sequence(13),
            Sequence(20),
            8,
            DataLossReason::Expired,
            t(),
        )
        .unwrap();
        tr.announce(&loss, t());
        assert_eq!(
            ranges(&tr),
            vec![
                (2, 3, false),
                (4, 6, true),
                (7, 9, false),
                (11, 12, false),
                (13, 20, true)
            ]
        );
        assert!(tr.observe(&dev(), Sequence(21), t()).is_empty());
    }

    #[test]
    fn open_gaps_are_bounded() {
        let mut tr = GapTracker::new(NonZeroUsize::new(3).unwrap());
        for s in (0..20).map(|i| i * 2) {
            tr.observe(&dev(), Sequence(s), t());
        }
        assert_eq!(tr.open_gaps(&dev()).len(), 3);
        assert_eq!(tr.forgotten(), 16, "19 gaps opened, 3 kept");
    }

    proptest! {
        /// Against a model (the set of all numbers up to the highest seen, minus
        /// those received): the open gaps are exactly the missing numbers.
        #[test]
        fn open_gaps_equal_missing_numbers(seqs in prop::collection::vec(0u64..60, 1..80)) {
            let mut tr = GapTracker::new(NonZeroUsize::new(1000).unwrap());
            let mut got = std::collections::BTreeSet::new();
            for &s in &seqs {
                tr.observe(&dev(), Sequence(s), t());
                got.insert(s);
            }
            let first = seqs[0];
            let hi = *got.iter().max().unwrap();
            let missing: Vec<u64> = (first..=hi).filter(|s| !got.contains(s)).collect();
            let from_gaps: Vec<u64> = tr.open_gaps(&dev()).iter().flat_map(|g| g.first.0..=g.last.0).collect();
            prop_assert_eq!(from_gaps, missing);
        }
    }
}
