//! The log engine's in-memory index: where the current value of every key is.
//!
//! Keys of the outbox's segments (one prefix byte and a big-endian `u64`) are by far the
//! most numerous and arrive in increasing order, so they live in a sorted `VecDeque` of
//! 24-byte entries; every other key lives in a `BTreeMap`. Together they behave as one
//! ordered map of byte strings.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

/// Where a value is: the file, the offset of its checksum, and the value's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loc {
    /// Log file number.
    pub(super) file: u32,
    /// Length of the value (its checksum comes first and is not counted).
    pub(super) len: u32,
    /// Offset of the value's checksum in the file.
    pub(super) offset: u64,
}

/// An ordered map from keys to locations.
pub(super) struct Index {
    /// The prefix of dense keys (`prefix` + u64 BE).
    prefix: u8,
    dense: VecDeque<(u64, Loc)>,
    other: BTreeMap<Vec<u8>, Loc>,
}

impl Index {
    /// An empty index whose dense keys start with `prefix`.
    pub(super) fn new(prefix: u8) -> Self {
        Self {
            prefix,
            dense: VecDeque::new(),
            other: BTreeMap::new(),
        }
    }

    fn dense_number(&self, key: &[u8]) -> Option<u64> {
        if key.len() == 9 && key[0] == self.prefix {
            let mut n = [0u8; 8];
            n.copy_from_slice(&key[1..]);
            Some(u64::from_be_bytes(n))
        } else {
            None
        }
    }

    fn dense_key(&self, n: u64) -> [u8; 9] {
        let mut k = [0u8; 9];
        k[0] = self.prefix;
        k[1..].copy_from_slice(&n.to_be_bytes());
        k
    }

    /// Whether `key` is a dense key (kept in the compact part).
    pub(super) fn is_dense(&self, key: &[u8]) -> bool {
        self.dense_number(key).is_some()
    }

    /// Number of keys.
    pub(super) fn len(&self) -> usize {
        self.dense.len() + self.other.len()
    }

    /// The location of `key`.
    pub(super) fn get(&self, key: &[u8]) -> Option<Loc> {
        match self.dense_number(key) {
            Some(n) => self
                .dense
                .binary_search_by_key(&n, |e| e.0)
                .ok()
                .map(|i| self.dense[i].1),
            None => self.other.get(key).copied(),
        }
    }

    /// Sets `key` to `loc`; returns the location it replaced.
    pub(super) fn insert(&mut self, key: &[u8], loc: Loc) -> Option<Loc> {
        let Some(n) = self.dense_number(key) else {
            return self.other.insert(key.to_vec(), loc);
        };
        if self.dense.back().is_none_or(|b| b.0 < n) {
            self.dense.push_back((n, loc));
            return None;
        }
        match self.dense.binary_search_by_key(&n, |e| e.0) {
            Ok(i) => Some(std::mem::replace(&mut self.dense[i].1, loc)),
            Err(i) => {
                self.dense.insert(i, (n, loc));
                None
            }
        }
    }

    /// Removes `key`; returns its location.
    pub(super) fn remove(&mut self, key: &[u8]) -> Option<Loc> {
        let Some(n) = self.dense_number(key) else {
            return self.other.remove(key);
        };
        if self.dense.front().is_some_and(|f| f.0 == n) {
            return self.dense.pop_front().map(|e| e.1);
        }
        let i = self.dense.binary_search_by_key(&n, |e| e.0).ok()?;
        self.dense.remove(i).map(|e| e.1)
    }

    /// Index range of dense entries whose keys lie in `(lo, hi)`.
    fn dense_span(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> (usize, usize) {
        let first = match lo {
            Bound::Included(s) => self.dense.partition_point(|e| self.dense_key(e.0)[..] < *s),
            Bound::Excluded(s) => self
                .dense
                .partition_point(|e| self.dense_key(e.0)[..] <= *s),
            Bound::Unbounded => 0,
        };
        let end = match hi {
            Bound::Included(s) => self
                .dense
                .partition_point(|e| self.dense_key(e.0)[..] <= *s),
            Bound::Excluded(s) => self.dense.partition_point(|e| self.dense_key(e.0)[..] < *s),
            Bound::Unbounded => self.dense.len(),
        };
        (first, end.max(first))
    }

    /// Up to `limit` entries with keys in `(lo, hi)`, ascending.
    pub(super) fn range(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Loc)> {
        self.scan(lo, hi, limit, false)
    }

    /// Up to `limit` entries with keys in `(lo, hi)`, descending.
    pub(super) fn range_rev(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Loc)> {
        self.scan(lo, hi, limit, true)
    }

    /// The first `limit` entries of both parts in `(lo, hi)`, merged in key order
    /// (descending when `rev`).
    fn scan(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        limit: usize,
        rev: bool,
    ) -> Vec<(Vec<u8>, Loc)> {
        if !valid(lo, hi) {
            return Vec::new();
        }
        let (a, b) = self.dense_span(lo, hi);
        let dense = self
            .dense
            .range(a..b)
            .map(|&(n, loc)| (self.dense_key(n).to_vec(), loc));
        let other = self
            .other
            .range::<[u8], _>((lo, hi))
            .map(|(k, &loc)| (k.clone(), loc));
        let mut out: Vec<_> = if rev {
            dense
                .rev()
                .take(limit)
                .chain(other.rev().take(limit))
                .collect()
        } else {
            dense.take(limit).chain(other.take(limit)).collect()
        };
        if rev {
            out.sort_by(|x, y| y.0.cmp(&x.0));
        } else {
            out.sort_by(|x, y| x.0.cmp(&y.0));
        }
        out.truncate(limit);
        out
    }

    /// Every key whose value lives in `file`, with its location.
    pub(super) fn in_file(&self, file: u32) -> Vec<(Vec<u8>, Loc)> {
        let dense = self
            .dense
            .iter()
            .filter(|e| e.1.file == file)
            .map(|&(n, loc)| (self.dense_key(n).to_vec(), loc));
        let other = self
            .other
            .iter()
            .filter(|e| e.1.file == file)
            .map(|(k, &loc)| (k.clone(), loc));
        dense.chain(other).collect()
    }
}

/// Whether `(lo, hi)` is a range `BTreeMap::range` accepts (it panics on the others).
fn valid(lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    match (lo, hi) {
        (Bound::Excluded(a), Bound::Excluded(b)) => a < b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            a <= b
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn loc(n: u32) -> Loc {
        Loc {
            file: n,
            len: n,
            offset: u64::from(n),
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Insert(Vec<u8>, u32),
        Remove(Vec<u8>),
        Range(Vec<u8>, Vec<u8>, usize),
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            // Dense keys, mostly ascending small numbers.
            (0u64..40).prop_map(|n| {
                let mut k = vec![b's'];
                k.extend_from_slice(&n.to_be_bytes());
                k
            }),
            // Keys that look almost dense, and others around them.
            proptest::collection::vec(prop_oneof![Just(b's'), Just(b'm'), any::<u8>()], 0..10),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (key(), any::<u32>()).prop_map(|(k, v)| Step::Insert(k, v)),
            2 => key().prop_map(Step::Remove),
            2 => (key(), key(), 0usize..8).prop_map(|(a, b, l)| Step::Range(a, b, l)),
        ]
    }

    proptest! {
        /// The split index behaves exactly like one ordered map of byte strings.
        #[test]
        fn index_matches_a_btreemap(steps in proptest::collection::vec(step(), 0..200)) {
            let mut idx = Index::new(b's');
            let mut model: BTreeMap<Vec<u8>, Loc> = BTreeMap::new();
            for s in steps {
                match s {
                    Step::Insert(k, v) => {
                        prop_assert_eq!(idx.insert(&k, loc(v)), model.insert(k, loc(v)));
                    }
                    Step::Remove(k) => prop_assert_eq!(idx.remove(&k), model.remove(&k)),
                    Step::Range(a, b, limit) => {
                        // Reversed bounds are empty, never a panic.
                        prop_assert!(idx.range(Bound::Included(&a), Bound::Excluded(&b), 9)
                            .len() <= 9);
                        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                        let want: Vec<_> = model
                            .range(lo.clone()..hi.clone())
                            .take(limit)
                            .map(|(k, l)| (k.clone(), *l))
                            .collect();
                        let got = idx.range(Bound::Included(&lo), Bound::Excluded(&hi), limit);
                        prop_assert_eq!(got, want);
                        let want_rev: Vec<_> = model
                            .range(lo.clone()..=hi.clone())
                            .rev()
                            .take(limit)
                            .map(|(k, l)| (k.clone(), *l))
                            .collect();
                        let got_rev =
                            idx.range_rev(Bound::Included(&lo), Bound::Included(&hi), limit);
                        prop_assert_eq!(got_rev, want_rev);
                    }
                }
                prop_assert_eq!(idx.len(), model.len());
                for (k, l) in &model {
                    prop_assert_eq!(idx.get(k), Some(*l));
                }
            }
        }
    }
}
