//! The in-memory TTL set: keys (delivery ids for dedupe, session ids for
//! ended registrations), each forgotten a fixed TTL after it was added.
//! Because the TTL is the same for every key, keys expire in the order they
//! were added, so a queue per shard is the whole expiry index: about 50–100
//! bytes a key, where a general cache (moka) took about 300 with its
//! per-entry bookkeeping. Sixteen shards keep the locks short and rarely
//! shared. It must never hold a key past its TTL nor forget one before.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::types::{DeliveryId, SessionId};

const SHARDS: usize = 16;

/// A key the set can hold, and which shard it lives in.
pub trait Key: Eq + Hash + Clone {
    /// Any number; the set takes it modulo its shard count.
    fn shard(&self) -> usize;
}

impl Key for DeliveryId {
    fn shard(&self) -> usize {
        // SHA-256 output: its first byte is already uniform, and cheaper than
        // hashing on the callback path.
        usize::from(self.bytes()[0])
    }
}

impl Key for SessionId {
    fn shard(&self) -> usize {
        // Only spreads the locks: the sets themselves hash with a random key.
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish() as usize
    }
}

pub(crate) struct DedupeKeys<K: Key = DeliveryId> {
    ttl_ms: u64,
    epoch: Instant,
    shards: [Mutex<Shard<K>>; SHARDS],
}

struct Shard<K> {
    set: HashSet<K>,
    /// (expiry in milliseconds since `epoch`, key), oldest first.
    order: VecDeque<(u64, K)>,
    /// Keys `insert` renewed while present: how many of their older entries
    /// in `order` must pass without removing them. Empty unless `insert` is
    /// used, so the dedupe path pays nothing for it.
    renewed: HashMap<K, u32>,
}

impl<K> Default for Shard<K> {
    fn default() -> Self {
        Shard {
            set: HashSet::new(),
            order: VecDeque::new(),
            renewed: HashMap::new(),
        }
    }
}

impl<K: Key> Shard<K> {
    fn expire(&mut self, now: u64) {
        while self.order.front().is_some_and(|&(at, _)| at <= now) {
            let Some((_, key)) = self.order.pop_front() else {
                break;
            };
            // A renewed key has a later entry still queued: this one passes.
            if !self.renewed.is_empty() {
                if let Some(n) = self.renewed.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        self.renewed.remove(&key);
                    }
                    continue;
                }
            }
            self.set.remove(&key);
        }
        // Give memory back after a burst has expired.
        if self.order.capacity() > 1024 && self.order.len() < self.order.capacity() / 4 {
            self.order.shrink_to(self.order.len() * 2);
            self.set.shrink_to(self.set.len() * 2);
        }
    }
}

impl<K: Key> DedupeKeys<K> {
    pub(crate) fn new(ttl: Duration) -> Self {
        DedupeKeys {
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
            shards: Default::default(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn shard(&self, key: &K) -> std::sync::MutexGuard<'_, Shard<K>> {
        let i = key.shard() % SHARDS;
        // A panic while holding the lock leaves a consistent set: keep going.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `key`; false if it was already there (a duplicate), whose TTL
    /// still runs from when it was first added.
    pub(crate) fn insert_new(&self, key: K) -> bool {
        let now = self.now();
        let mut s = self.shard(&key);
        s.expire(now);
        if !s.set.insert(key.clone()) {
            return false;
        }
        s.order.push_back((now.saturating_add(self.ttl_ms), key));
        true
    }

    /// Adds `key`, or renews it: either way it is kept a full TTL from now.
    pub(crate) fn insert(&self, key: K) {
        let now = self.now();
        let mut s = self.shard(&key);
        s.expire(now);
        if !s.set.insert(key.clone()) {
            *s.renewed.entry(key.clone()).or_default() += 1;
        }
        s.order.push_back((now.saturating_add(self.ttl_ms), key));
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        let now = self.now();
        let mut s = self.shard(key);
        s.expire(now);
        s.set.contains(key)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).set.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> DeliveryId {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&n.to_be_bytes());
        b[15] = (n % 251) as u8;
        DeliveryId::from_bytes(&b).expect("16 bytes")
    }

    #[test]
    fn a_key_is_new_once() {
        let k = DedupeKeys::new(Duration::from_secs(60));
        assert!(k.insert_new(id(1)));
        assert!(!k.insert_new(id(1)));
        assert!(k.contains(&id(1)));
        assert!(!k.contains(&id(2)));
        assert!(k.insert_new(id(2)));
        assert_eq!(k.len(), 2);
    }

    #[test]
    fn keys_expire_in_order_after_the_ttl() {
        let k = DedupeKeys::new(Duration::from_millis(200));
        for n in 0..3000 {
            assert!(k.insert_new(id(n)));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(!k.contains(&id(7)), "expired");
        assert!(k.insert_new(id(7)), "new again once expired");
        assert_eq!(k.len(), 1, "every other key went with it");
    }

    #[test]
    fn insert_renews_a_present_key() {
        let k = DedupeKeys::new(Duration::from_millis(1000));
        let s = SessionId::new("s1");
        k.insert(s.clone());
        std::thread::sleep(Duration::from_millis(600));
        k.insert(s.clone());
        std::thread::sleep(Duration::from_millis(600));
        assert!(
            k.contains(&s),
            "renewed: the first entry's expiry passed without it"
        );
        std::thread::sleep(Duration::from_millis(600));
        assert!(!k.contains(&s), "gone a TTL after the renewal");
        k.insert(s.clone());
        assert!(k.contains(&s), "added again once gone");
        assert_eq!(k.len(), 1);
    }

    #[test]
    fn insert_new_does_not_renew() {
        let k = DedupeKeys::new(Duration::from_millis(1000));
        let s = SessionId::new("s1");
        assert!(k.insert_new(s.clone()));
        std::thread::sleep(Duration::from_millis(600));
        assert!(!k.insert_new(s.clone()));
        std::thread::sleep(Duration::from_millis(600));
        assert!(!k.contains(&s), "a TTL after it was first added");
    }
}
