//! `Due`: the in-process schedule of one kind of work, which the memory and
//! file stores keep for each `Queue`.

use std::collections::BTreeSet;

/// An in-process schedule of unleased items by due time. Taking an item
/// leases it: it leaves the schedule until its owner puts it back.
#[derive(Debug)]
pub(crate) struct Due<K> {
    by_time: BTreeSet<(u64, K)>,
}

impl<K> Default for Due<K> {
    fn default() -> Self {
        Due {
            by_time: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone> Due<K> {
    pub(crate) fn insert(&mut self, at: u64, key: K) {
        self.by_time.insert((at, key));
    }

    /// Whether it was scheduled (so not leased).
    pub(crate) fn remove(&mut self, at: u64, key: &K) -> bool {
        self.by_time.remove(&(at, key.clone()))
    }

    /// Takes up to `limit` keys due at `now`, earliest first, for which
    /// `get` finds an item; a key whose item is gone is dropped.
    pub(crate) fn take<T>(
        &mut self,
        now: u64,
        limit: usize,
        mut get: impl FnMut(&K) -> Option<T>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        while out.len() < limit {
            match self.by_time.first() {
                Some((at, _)) if *at <= now => {}
                _ => break,
            }
            if let Some((_, key)) = self.by_time.pop_first() {
                out.extend(get(&key));
            }
        }
        out
    }

    pub(crate) fn next(&self) -> Option<u64> {
        self.by_time.first().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_is_due_earliest_first_and_drops_what_is_gone() {
        let mut due = Due::default();
        due.insert(30, "c");
        due.insert(10, "a");
        due.insert(20, "gone");
        due.insert(40, "later");
        let got = due.take(30, 10, |k| (*k != "gone").then_some(*k));
        assert_eq!(got, vec!["a", "c"]);
        assert_eq!(due.next(), Some(40));
        assert!(
            !due.remove(10, &"a"),
            "a taken item is leased, not scheduled"
        );
        assert!(due.remove(40, &"later"));
        assert_eq!(due.next(), None);
    }

    #[test]
    fn takes_no_more_than_the_limit() {
        let mut due = Due::default();
        for i in 0..5u64 {
            due.insert(i, i);
        }
        assert_eq!(due.take(10, 2, |k| Some(*k)), vec![0, 1]);
        assert_eq!(due.next(), Some(2));
    }
}
