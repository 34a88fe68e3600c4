//! A small set of `u64` kept as sorted, disjoint, inclusive ranges.

/// Confirmed sequence numbers not yet acknowledged to the outbox. Confirmations arrive
/// mostly in order, so this holds a handful of ranges.
#[derive(Debug, Default)]
pub(crate) struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub(crate) fn contains(&self, v: u64) -> bool {
        let i = self.0.partition_point(|r| r.1 < v);
        self.0.get(i).is_some_and(|r| r.0 <= v)
    }

    pub(crate) fn insert(&mut self, v: u64) {
        let i = self.0.partition_point(|r| r.1.saturating_add(1) < v);
        match self.0.get_mut(i) {
            Some(r) if r.0 <= v.saturating_add(1) => {
                r.0 = r.0.min(v);
                r.1 = r.1.max(v);
                // Merge with the next range if they now touch.
                if let Some(&(n0, n1)) = self.0.get(i + 1)
                    && n0 <= self.0[i].1.saturating_add(1)
                {
                    self.0[i].1 = self.0[i].1.max(n1);
                    self.0.remove(i + 1);
                }
            }
            _ => self.0.insert(i, (v, v)),
        }
    }

    pub(crate) fn prune_below(&mut self, floor: u64) {
        self.0.retain(|r| r.1 >= floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_merge_and_prune() {
        let mut r = Ranges::default();
        for v in [5, 7, 6, 1, 2, 10] {
            r.insert(v);
        }
        assert_eq!(r.0, vec![(1, 2), (5, 7), (10, 10)]);
        assert!(r.contains(6) && r.contains(10) && !r.contains(3) && !r.contains(8));
        r.insert(9);
        r.insert(8);
        assert_eq!(r.0, vec![(1, 2), (5, 10)]);
        r.prune_below(3);
        assert_eq!(r.0, vec![(5, 10)]);
    }
}
