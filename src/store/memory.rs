//! The `memory` store: a moka TTL cache of dedupe keys and an in-process
//! outbox. Fast, and honest about it: a crash loses whatever was not yet
//! delivered.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use moka::sync::Cache;

use super::{
    AttemptOutcome, BoxFuture, Claim, Delivery, DeliveryState, Replay, Stats, Store, StoreError,
};
use crate::types::DeliveryId;

/// How many delivered records are kept for `GET /v1/deliveries?state=delivered`.
const DELIVERED_KEPT: usize = 10_000;

pub struct MemoryStore {
    seen: Cache<DeliveryId, ()>,
    outbox: Mutex<Outbox>,
}

#[derive(Default)]
struct Outbox {
    /// Pending (queued or leased) and dead deliveries.
    live: HashMap<DeliveryId, Delivery>,
    /// Pending deliveries that are not leased, by due time.
    queue: BTreeSet<(u64, DeliveryId)>,
    delivered: VecDeque<Delivery>,
}

impl MemoryStore {
    pub fn new(dedupe_ttl: Duration) -> Self {
        Self {
            seen: Cache::builder().time_to_live(dedupe_ttl).build(),
            outbox: Mutex::new(Outbox::default()),
        }
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // A panic while holding the lock cannot leave the outbox half-updated
        // in a way that matters more than stopping would: keep serving.
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn claim_now(&self, d: Delivery) -> Claim {
        let fresh = self.seen.entry(d.id).or_insert(()).is_fresh();
        if !fresh {
            return Claim::Duplicate;
        }
        let mut ob = self.outbox();
        if ob.live.contains_key(&d.id) {
            // The dedupe key expired while the delivery is still pending.
            return Claim::Duplicate;
        }
        ob.queue.insert((d.next_attempt_at, d.id));
        ob.live.insert(d.id, d);
        Claim::Recorded
    }

    fn take_due_now(&self, now: u64, limit: usize) -> Vec<Delivery> {
        let mut ob = self.outbox();
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(&(due, id)) = ob.queue.first() else {
                break;
            };
            if due > now {
                break;
            }
            ob.queue.pop_first();
            if let Some(d) = ob.live.get(&id) {
                out.push(d.clone());
            }
        }
        out
    }

    fn finish_now(&self, id: DeliveryId, attempts: u32, outcome: AttemptOutcome) {
        let mut ob = self.outbox();
        let Some(mut d) = ob.live.remove(&id) else {
            return;
        };
        d.attempts = attempts;
        match outcome {
            AttemptOutcome::Delivered { at } => {
                d.state = DeliveryState::Delivered;
                d.delivered_at = Some(at);
                d.last_error = None;
                if ob.delivered.len() >= DELIVERED_KEPT {
                    ob.delivered.pop_front();
                }
                ob.delivered.push_back(d);
            }
            AttemptOutcome::Retry { next_at, error } => {
                d.next_attempt_at = next_at;
                d.last_error = Some(error);
                ob.queue.insert((next_at, id));
                ob.live.insert(id, d);
            }
            AttemptOutcome::Dead { error } => {
                d.state = DeliveryState::Dead;
                d.last_error = Some(error);
                ob.live.insert(id, d);
            }
        }
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn claim(&self, d: Delivery) -> BoxFuture<'_, Result<Claim, StoreError>> {
        let r = self.claim_now(d);
        Box::pin(async move { Ok(r) })
    }

    fn take_due(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        let r = self.take_due_now(now, limit);
        Box::pin(async move { Ok(r) })
    }

    fn next_due_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        let r = self.outbox().queue.first().map(|(due, _)| *due);
        Box::pin(async move { Ok(r) })
    }

    fn finish(
        &self,
        id: DeliveryId,
        attempts: u32,
        outcome: AttemptOutcome,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.finish_now(id, attempts, outcome);
        Box::pin(async { Ok(()) })
    }

    fn list(
        &self,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        let ob = self.outbox();
        let mut out: Vec<Delivery> = ob
            .live
            .values()
            .chain(ob.delivered.iter())
            .filter(|d| state.is_none_or(|s| d.state == s))
            .cloned()
            .collect();
        drop(ob);
        out.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(a.id.cmp(&b.id)));
        out.truncate(limit);
        Box::pin(async move { Ok(out) })
    }

    fn replay(
        &self,
        id: DeliveryId,
        now: u64,
        deadline_at: u64,
    ) -> BoxFuture<'_, Result<Replay, StoreError>> {
        let mut guard = self.outbox();
        let ob = &mut *guard;
        let r = match ob.live.get_mut(&id) {
            Some(d) if d.state == DeliveryState::Dead => {
                d.state = DeliveryState::Pending;
                d.next_attempt_at = now;
                d.deadline_at = deadline_at;
                ob.queue.insert((now, id));
                Replay::Queued
            }
            Some(d) => Replay::NotDead(d.state),
            None if ob.delivered.iter().any(|d| d.id == id) => {
                Replay::NotDead(DeliveryState::Delivered)
            }
            None => Replay::NotFound,
        };
        drop(guard);
        Box::pin(async move { Ok(r) })
    }

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StoreError>> {
        let ob = self.outbox();
        let mut s = Stats::default();
        for d in ob.live.values() {
            match d.state {
                DeliveryState::Pending => {
                    s.pending += 1;
                    s.oldest_pending_at = Some(
                        s.oldest_pending_at
                            .map_or(d.received_at, |o| o.min(d.received_at)),
                    );
                }
                DeliveryState::Dead => s.dead += 1,
                DeliveryState::Delivered => {}
            }
        }
        drop(ob);
        Box::pin(async move { Ok(s) })
    }

    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}
