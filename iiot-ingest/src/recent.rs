//! A bounded set of recently seen keys.
//!
//! [`RecentSet`] remembers at most `capacity` keys and, optionally, only those
//! seen within `max_age` of the latest time given to it. The pipeline's
//! [`DedupeWindow`](crate::dedupe::DedupeWindow) (by count and age) and the
//! Kafka sink's memory of acknowledged keys (by count) are both one of these.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::time::Duration;

use iiot_core::types::Timestamp;

/// Remembers the most recently inserted keys, oldest forgotten first.
///
/// - **Capacity:** at most `capacity` keys; inserting a new key into a full set
///   forgets the key inserted first.
/// - **Age** (optional): [`insert`](Self::insert) first forgets keys inserted
///   more than `max_age` before the time it is given. Times come from the
///   caller (a receive time, say), so the set never reads a clock; they should
///   not go backwards: a key is forgotten by age only after every key inserted
///   before it.
/// - A key already remembered is not refreshed by inserting it again: it keeps
///   its place and its time. So the set holds exactly the last `capacity` keys
///   whose [`insert`](Self::insert) returned `true` (less those past `max_age`).
///
/// ```
/// use std::num::NonZeroUsize;
/// use iiot_core::types::Timestamp;
/// use iiot_ingest::recent::RecentSet;
///
/// let mut recent = RecentSet::new(NonZeroUsize::new(2).unwrap(), None);
/// let t = Timestamp::UNIX_EPOCH;
/// assert!(recent.insert("a", t));
/// assert!(!recent.insert("a", t), "already remembered");
/// assert!(recent.insert("b", t));
/// assert!(recent.insert("c", t)); // forgets "a"
/// assert!(!recent.contains(&"a"));
/// assert_eq!(recent.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct RecentSet<K> {
    capacity: NonZeroUsize,
    max_age: Option<Duration>,
    set: HashSet<K>,
    /// Keys in insertion order, with the time each was inserted at.
    order: VecDeque<(Timestamp, K)>,
}

impl<K: Eq + Hash + Clone> RecentSet<K> {
    /// An empty set of at most `capacity` keys, forgetting keys older than
    /// `max_age` (`None`: bounded by count only).
    pub fn new(capacity: NonZeroUsize, max_age: Option<Duration>) -> Self {
        Self {
            capacity,
            max_age,
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `key`, seen at `now`, after forgetting keys older than
    /// `max_age`. Returns `true` when it was not remembered (it now is, and the
    /// oldest key was forgotten if the set was full), `false` when it was (the
    /// set is unchanged but for the keys forgotten by age).
    pub fn insert(&mut self, key: K, now: Timestamp) -> bool {
        self.expire(now);
        if self.set.contains(&key) {
            return false;
        }
        if self.order.len() >= self.capacity.get()
            && let Some((_, oldest)) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.set.insert(key.clone());
        self.order.push_back((now, key));
        true
    }

    /// Whether `key` is remembered (as of the last [`insert`](Self::insert):
    /// this does not forget by age).
    pub fn contains(&self, key: &K) -> bool {
        self.set.contains(key)
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The most keys remembered at once.
    pub fn capacity(&self) -> NonZeroUsize {
        self.capacity
    }

    /// How long a key is remembered, if the set is bounded by age.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// The remembered keys, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.order.iter().map(|(_, k)| k)
    }

    /// Forgets keys inserted before `now - max_age`.
    fn expire(&mut self, now: Timestamp) {
        let Some(max_age) = self.max_age else {
            return;
        };
        let cutoff = now.saturating_sub(max_age);
        while self.order.front().is_some_and(|(t, _)| *t < cutoff) {
            if let Some((_, k)) = self.order.pop_front() {
                self.set.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_unix_nanos(s * 1_000_000_000).unwrap()
    }

    fn cap(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn forgets_by_age_then_by_count() {
        let mut r = RecentSet::new(cap(3), Some(Duration::from_secs(10)));
        assert!(r.insert(1, ts(0)));
        assert!(r.insert(2, ts(5)));
        assert!(
            !r.insert(1, ts(10)),
            "exactly max_age old is still remembered"
        );
        assert!(r.insert(3, ts(11)), "1 is forgotten by age first");
        assert!(!r.contains(&1));
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [2, 3]);
        assert!(r.insert(4, ts(12)));
        assert!(r.insert(5, ts(12)), "full: 2 is forgotten by count");
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!((r.len(), r.capacity().get()), (3, 3));
    }

    #[test]
    fn a_repeat_is_not_refreshed() {
        let mut r = RecentSet::new(cap(2), None);
        let t = Timestamp::UNIX_EPOCH;
        assert!(r.insert('a', t));
        assert!(r.insert('b', t));
        assert!(!r.insert('a', t));
        assert!(r.insert('c', t));
        assert!(!r.contains(&'a'), "a kept its place, so it went first");
        assert!(r.contains(&'b') && r.contains(&'c'));
    }

    /// The model: the same rules over a plain `VecDeque` of `(time, key)`.
    fn model_insert(
        m: &mut VecDeque<(Timestamp, u8)>,
        cap: usize,
        max_age: Option<Duration>,
        key: u8,
        now: Timestamp,
    ) -> bool {
        if let Some(age) = max_age {
            m.retain(|(t, _)| *t >= now.saturating_sub(age));
        }
        if m.iter().any(|(_, k)| *k == key) {
            return false;
        }
        if m.len() == cap {
            m.pop_front();
        }
        m.push_back((now, key));
        true
    }

    proptest! {
        /// Never more than `capacity` keys, and without an age bound exactly
        /// the last `capacity` keys that were new when inserted.
        #[test]
        fn holds_the_last_capacity_new_keys(
            capacity in 1usize..8,
            keys in proptest::collection::vec(0u8..16, 0..200),
        ) {
            let mut r = RecentSet::new(cap(capacity), None);
            let mut new_keys = Vec::new();
            for k in keys {
                if r.insert(k, Timestamp::UNIX_EPOCH) {
                    new_keys.push(k);
                }
                prop_assert!(r.len() <= capacity);
                let tail = &new_keys[new_keys.len().saturating_sub(capacity)..];
                prop_assert_eq!(r.iter().copied().collect::<Vec<_>>(), tail);
                for k in 0..16 {
                    prop_assert_eq!(r.contains(&k), tail.contains(&k));
                }
            }
        }

        /// With an age bound and times that do not go backwards, the set does
        /// what the `VecDeque` model does, insert by insert.
        #[test]
        fn matches_the_vecdeque_model(
            capacity in 1usize..8,
            max_age in 0u64..6,
            steps in proptest::collection::vec((0u8..16, 0i64..3), 0..200),
        ) {
            let max_age = Some(Duration::from_secs(max_age));
            let mut r = RecentSet::new(cap(capacity), max_age);
            let mut model = VecDeque::new();
            let mut now = 0;
            for (k, dt) in steps {
                now += dt;
                let got = r.insert(k, ts(now));
                let want = model_insert(&mut model, capacity, max_age, k, ts(now));
                prop_assert_eq!(got, want);
                prop_assert!(r.len() <= capacity);
                prop_assert_eq!(
                    r.iter().copied().collect::<Vec<_>>(),
                    model.iter().map(|(_, k)| *k).collect::<Vec<_>>()
                );
                for k in 0..16 {
                    prop_assert_eq!(r.contains(&k), model.iter().any(|(_, m)| *m == k));
                }
            }
        }
    }
}
