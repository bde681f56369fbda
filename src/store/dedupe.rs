//! The in-memory dedupe keys: a set of delivery ids, each forgotten a fixed
//! TTL after it was added. Because the TTL is the same for every key, keys
//! expire in the order they were added, so a queue per shard is the whole
//! expiry index: about 50–100 bytes a key, where a general cache (moka) took
//! about 300 with its per-entry bookkeeping. Sixteen shards, picked by the
//! id's first byte (the ids are SHA-256 output), keep the locks short and
//! rarely shared.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::types::DeliveryId;

const SHARDS: usize = 16;

pub struct DedupeKeys {
    ttl_ms: u64,
    epoch: Instant,
    shards: [Mutex<Shard>; SHARDS],
}

#[derive(Default)]
struct Shard {
    set: HashSet<DeliveryId>,
    /// (expiry in milliseconds since `epoch`, id), oldest first.
    order: VecDeque<(u64, DeliveryId)>,
}

impl Shard {
    fn expire(&mut self, now: u64) {
        while let Some(&(at, id)) = self.order.front() {
            if at > now {
                break;
            }
            self.order.pop_front();
            self.set.remove(&id);
        }
        // Give memory back after a burst has expired.
        if self.order.capacity() > 1024 && self.order.len() < self.order.capacity() / 4 {
            self.order.shrink_to(self.order.len() * 2);
            self.set.shrink_to(self.set.len() * 2);
        }
    }
}

impl DedupeKeys {
    pub fn new(ttl: Duration) -> Self {
        DedupeKeys {
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
            shards: Default::default(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn shard(&self, id: &DeliveryId) -> std::sync::MutexGuard<'_, Shard> {
        let i = usize::from(id.bytes()[0]) % SHARDS;
        // A panic while holding the lock leaves a consistent set: keep going.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `id`; false if it was already there (a duplicate).
    pub fn insert_new(&self, id: DeliveryId) -> bool {
        let now = self.now();
        let mut s = self.shard(&id);
        s.expire(now);
        if !s.set.insert(id) {
            return false;
        }
        s.order.push_back((now.saturating_add(self.ttl_ms), id));
        true
    }

    pub fn contains(&self, id: &DeliveryId) -> bool {
        let now = self.now();
        let mut s = self.shard(id);
        s.expire(now);
        s.set.contains(id)
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).set.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
}
