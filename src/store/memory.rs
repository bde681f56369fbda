//! The `memory` store: TTL sets (`dedupe`) for dedupe keys and ended
//! registrations, an in-process outbox, and the finished records kept for
//! listing until retention. Fast, and honest about it: a crash loses
//! whatever was not yet delivered.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use super::dedupe::DedupeKeys;
use super::outbox::{listed, page, Outbox};
use super::probes::{ProbeNonce, ProbeSet};
use super::registrations::{CheckNext, RegIndex, Registration};
use super::watches::WatchIndex;
use crate::store::api::Store;
use crate::store::model::{
    push_attempt, ready, Attempt, AttemptOutcome, BoxFuture, Claim, Cursor, Cutoffs, Delivery,
    DeliveryState, Detail, Filter, Page, Replay, Resolution, Resolve, Stats, StoreError, StoreKind,
    WatchNext,
};
use crate::store::queue::{Attempted, Checks, Deliveries, Queue, Watches};
use crate::types::{DeliveryId, SessionId};

/// Most delivered records kept for `GET /v1/deliveries?state=delivered`
/// (retention may remove them sooner).
const DELIVERED_KEPT: usize = 10_000;

pub struct MemoryStore {
    seen: DedupeKeys,
    /// Sessions whose registration ended, so registering again is a no-op.
    /// Each is kept `dedupe_ttl` from its latest end (`insert` renews).
    ended: DedupeKeys<SessionId>,
    inner: Mutex<Inner>,
    probes: ProbeSet,
}

#[derive(Default)]
struct Inner {
    outbox: Outbox,
    regs: RegIndex,
    watches: WatchIndex,
    delivered: VecDeque<Delivery>,
    /// Resolved deliveries, until retention removes them: each still
    /// dedupes its authorization.
    resolved: HashMap<DeliveryId, Box<Delivery>>,
    /// The attempt log of each delivery held above, oldest first. Kept
    /// beside the deliveries, not in them, so the outbox and watch index
    /// copy no logs when they hand deliveries out.
    logs: HashMap<DeliveryId, Vec<Attempt>>,
}

impl Inner {
    /// Keeps a delivered record for listing, the oldest going first.
    fn keep_delivered(&mut self, d: Delivery) {
        self.delivered.push_back(d);
        if self.delivered.len() > DELIVERED_KEPT {
            if let Some(old) = self.delivered.pop_front() {
                self.forget_log(old.id);
            }
        }
    }

    /// Resolves the failure `id`, if it is one.
    fn resolve(&mut self, id: DeliveryId, at: u64, note: String) -> Resolve {
        let found = self
            .watches
            .get(&id)
            .or_else(|| self.outbox.get(&id))
            .or_else(|| self.resolved.get(&id).map(|d| &**d))
            .or_else(|| self.delivered.iter().rev().find(|d| d.id == id));
        let Some(d) = found else {
            return Resolve::NotFound;
        };
        if !d.resolvable() {
            return Resolve::NotResolvable {
                state: d.state,
                watch: d.watch.as_ref().map(|w| w.state),
            };
        }
        let from_outbox = self.outbox.remove(&id);
        let from_watches = self.watches.remove(&id);
        // The watch index's copy has the watch as it stands.
        let Some(mut d) = from_watches.or(from_outbox) else {
            return Resolve::NotFound;
        };
        d.state = DeliveryState::Resolved;
        d.resolution = Some(Resolution { at, note });
        self.resolved.insert(id, Box::new(d));
        Resolve::Resolved
    }

    /// Forgets what is past retention; returns how many records went.
    fn prune(&mut self, cutoffs: Cutoffs) -> u64 {
        let mut gone = self.watches.prune(cutoffs.dead);
        for id in self.outbox.prune_dead(cutoffs.dead) {
            // A dead redelivery may still have its ended watch here.
            self.watches.remove(&id);
            gone.push(id);
        }
        let finished = cutoffs.finished;
        let (kept, old): (VecDeque<Delivery>, VecDeque<Delivery>) =
            std::mem::take(&mut self.delivered)
                .into_iter()
                .partition(|d| d.received_at > finished);
        self.delivered = kept;
        gone.extend(old.iter().map(|d| d.id));
        self.resolved.retain(|id, d| {
            let keep = d.resolution.as_ref().is_some_and(|r| r.at > finished);
            if !keep {
                gone.push(*id);
            }
            keep
        });
        for id in &gone {
            self.forget_log(*id);
        }
        gone.len() as u64
    }

    /// Drops the log of a delivery no longer held anywhere.
    fn forget_log(&mut self, id: DeliveryId) {
        let held = self.outbox.contains(&id)
            || self.watches.get(&id).is_some()
            || self.resolved.contains_key(&id)
            || self.delivered.iter().any(|d| d.id == id);
        if !held {
            self.logs.remove(&id);
        }
    }
}

impl MemoryStore {
    pub fn new(dedupe_ttl: Duration) -> Self {
        Self {
            seen: DedupeKeys::new(dedupe_ttl),
            ended: DedupeKeys::new(dedupe_ttl),
            inner: Mutex::new(Inner::default()),
            probes: ProbeSet::default(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the index half-updated
        // in a way that matters more than stopping would: keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn claim_now(&self, d: Delivery) -> Claim {
        if !self.seen.insert_new(d.id) {
            return Claim::Duplicate;
        }
        let mut inner = self.inner();
        if inner.outbox.contains(&d.id) || inner.resolved.contains_key(&d.id) {
            // The dedupe key expired while the delivery is still live, or
            // resolved: its record is its dedupe until retention removes it.
            return Claim::Duplicate;
        }
        if inner.regs.contains(&d.session_id) {
            inner.regs.end(&d.session_id);
            self.ended.insert(d.session_id.clone());
        }
        // Recorded anew (an old record's key expired): a fresh log.
        inner.logs.remove(&d.id);
        inner.outbox.insert(d);
        Claim::Recorded
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    fn durable(&self) -> bool {
        false
    }

    fn claim(&self, d: Delivery) -> BoxFuture<'_, Result<Claim, StoreError>> {
        ready(self.claim_now(d))
    }

    /// One pass over what the store holds (at most `DELIVERED_KEPT`
    /// delivered records, and the live ones), copying only what `filter`
    /// accepts, then a sort of those: linear for every filter, session and
    /// reference included. No index by session or reference: at this size
    /// the pass is a fraction of a millisecond (BENCHMARKS.md), and an
    /// index would be one more thing to keep in step.
    fn list(
        &self,
        filter: Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Page, StoreError>> {
        let inner = self.inner();
        // A watched delivery being redelivered is in both the outbox and the
        // watch index: the index has its watch as it stands.
        let mut out: Vec<Delivery> = inner
            .outbox
            .list(&filter, after)
            .into_iter()
            .filter(|d| inner.watches.get(&d.id).is_none())
            .collect();
        let kept = inner
            .watches
            .iter()
            .chain(inner.delivered.iter())
            .chain(inner.resolved.values().map(|d| &**d));
        out.extend(kept.filter(|d| listed(&filter, after, d)).cloned());
        drop(inner);
        ready(page(out, limit))
    }

    fn get(&self, id: DeliveryId) -> BoxFuture<'_, Result<Option<Detail>, StoreError>> {
        let inner = self.inner();
        // The watch index first, as `list` reads it; the newest delivered
        // copy last (an id claimed again may have an older one there).
        let d = inner
            .watches
            .get(&id)
            .or_else(|| inner.outbox.get(&id))
            .or_else(|| inner.resolved.get(&id).map(|d| &**d))
            .or_else(|| inner.delivered.iter().rev().find(|d| d.id == id))
            .cloned();
        let detail = d.map(|delivery| Detail {
            delivery,
            attempts: inner.logs.get(&id).cloned().unwrap_or_default(),
        });
        drop(inner);
        ready(detail)
    }

    fn replay(
        &self,
        id: DeliveryId,
        now: u64,
        deadline_at: u64,
    ) -> BoxFuture<'_, Result<Replay, StoreError>> {
        let mut inner = self.inner();
        let r = match inner.outbox.replay(id, now, deadline_at) {
            Replay::NotFound if inner.resolved.contains_key(&id) => {
                Replay::NotDead(DeliveryState::Resolved)
            }
            Replay::NotFound
                if inner.watches.get(&id).is_some()
                    || inner.delivered.iter().any(|d| d.id == id) =>
            {
                Replay::NotDead(DeliveryState::Delivered)
            }
            r => r,
        };
        drop(inner);
        ready(r)
    }

    fn resolve(
        &self,
        id: DeliveryId,
        at: u64,
        note: String,
    ) -> BoxFuture<'_, Result<Resolve, StoreError>> {
        ready(self.inner().resolve(id, at, note))
    }

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StoreError>> {
        let inner = self.inner();
        let mut s = inner.outbox.stats();
        s.unconfirmed = inner.watches.unconfirmed().count() as u64;
        s.oldest_unconfirmed_at = inner.watches.oldest_unconfirmed();
        let watched = inner
            .watches
            .iter()
            .filter(|d| d.state == DeliveryState::Delivered)
            .count();
        s.delivered = (inner.delivered.len() + watched) as u64;
        s.resolved = inner.resolved.len() as u64;
        ready(s)
    }

    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    fn register(&self, r: Registration) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut inner = self.inner();
        let new = !inner.regs.contains(&r.session_id) && !self.ended.contains(&r.session_id);
        if new {
            inner.regs.insert(r);
        }
        drop(inner);
        ready(new)
    }

    fn active_registrations(&self) -> u64 {
        self.inner().regs.len() as u64
    }

    fn prune(&self, cutoffs: Cutoffs) -> BoxFuture<'_, Result<u64, StoreError>> {
        ready(self.inner().prune(cutoffs))
    }

    fn put_probe(
        &self,
        nonce: ProbeNonce,
        expires_at: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.probes.put(nonce, expires_at, crate::types::unix_ms());
        ready(())
    }

    fn take_probe(&self, nonce: ProbeNonce, now: u64) -> BoxFuture<'_, Result<bool, StoreError>> {
        ready(self.probes.take(&nonce, now))
    }
}

impl Queue<Deliveries> for MemoryStore {
    fn take(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        ready(self.inner().outbox.take_due(now, limit))
    }

    fn next_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        ready(self.inner().outbox.next_due())
    }

    fn finish(
        &self,
        id: DeliveryId,
        attempts: u32,
        next: Attempted,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let Attempted {
            outcome,
            log: attempt,
        } = next;
        let mut inner = self.inner();
        if let Some(mut d) = inner.outbox.finish(id, attempts, &outcome) {
            push_attempt(inner.logs.entry(id).or_default(), attempt);
            if let AttemptOutcome::Delivered { at, watch_from } = outcome {
                d = inner.watches.delivered(d, at, watch_from);
            } else if let Some(w) = inner.watches.get(&id).and_then(|e| e.watch.clone()) {
                // A redelivery that failed: the watch goes on.
                d.watch = Some(w);
                inner.watches.insert(d.clone());
            }
            if d.state == DeliveryState::Delivered && inner.watches.get(&id).is_none() {
                inner.keep_delivered(d);
            }
        }
        ready(())
    }
}

impl Queue<Checks> for MemoryStore {
    fn take(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Registration>, StoreError>> {
        ready(self.inner().regs.take_due(now, limit))
    }

    fn next_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        ready(self.inner().regs.next_due())
    }

    fn finish(
        &self,
        session: SessionId,
        checks: u32,
        next: CheckNext,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        if matches!(next, CheckNext::Ended { .. }) {
            self.ended.insert(session.clone());
        }
        self.inner().regs.finish(&session, checks, &next);
        ready(())
    }
}

impl Queue<Watches> for MemoryStore {
    fn take(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        ready(self.inner().watches.take_due(now, limit))
    }

    fn next_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        ready(self.inner().watches.next_due())
    }

    fn finish(
        &self,
        id: DeliveryId,
        checks: u32,
        next: WatchNext,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut inner = self.inner();
        if let Some(d) = inner.watches.finish(id, checks, &next) {
            match next {
                WatchNext::Redeliver { .. } => inner.outbox.insert(d),
                WatchNext::Confirmed if d.state == DeliveryState::Delivered => {
                    inner.keep_delivered(d)
                }
                _ => {}
            }
        }
        ready(())
    }
}
