//! The `memory` store: TTL sets (`dedupe`) for dedupe keys and ended
//! registrations, and an in-process outbox. Fast, and honest about it: a
//! crash loses whatever was not yet delivered.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use super::dedupe::DedupeKeys;
use super::outbox::{newest_first, Outbox};
use super::registrations::{CheckNext, RegIndex, Registration};
use super::{
    ready, AttemptOutcome, BoxFuture, Claim, Delivery, DeliveryState, Replay, Stats, Store,
    StoreError,
};
use crate::types::{DeliveryId, SessionId};

/// How many delivered records are kept for `GET /v1/deliveries?state=delivered`.
const DELIVERED_KEPT: usize = 10_000;

pub struct MemoryStore {
    seen: DedupeKeys,
    /// Sessions whose registration ended, so registering again is a no-op.
    /// Each is kept `dedupe_ttl` from its latest end (`insert` renews).
    ended: DedupeKeys<SessionId>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    outbox: Outbox,
    regs: RegIndex,
    delivered: VecDeque<Delivery>,
}

impl MemoryStore {
    pub fn new(dedupe_ttl: Duration) -> Self {
        Self {
            seen: DedupeKeys::new(dedupe_ttl),
            ended: DedupeKeys::new(dedupe_ttl),
            inner: Mutex::new(Inner::default()),
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
        if inner.outbox.contains(&d.id) {
            // The dedupe key expired while the delivery is still live.
            return Claim::Duplicate;
        }
        if inner.regs.contains(&d.session_id) {
            inner.regs.end(&d.session_id);
            self.ended.insert(d.session_id.clone());
        }
        inner.outbox.insert(d);
        Claim::Recorded
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn durable(&self) -> bool {
        false
    }

    fn claim(&self, d: Delivery) -> BoxFuture<'_, Result<Claim, StoreError>> {
        ready(self.claim_now(d))
    }

    fn take_due(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        ready(self.inner().outbox.take_due(now, limit))
    }

    fn next_due_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        ready(self.inner().outbox.next_due())
    }

    fn finish(
        &self,
        id: DeliveryId,
        attempts: u32,
        outcome: AttemptOutcome,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut inner = self.inner();
        if let Some(d) = inner.outbox.finish(id, attempts, &outcome) {
            if d.state == DeliveryState::Delivered {
                if inner.delivered.len() >= DELIVERED_KEPT {
                    inner.delivered.pop_front();
                }
                inner.delivered.push_back(d);
            }
        }
        ready(())
    }

    fn list(
        &self,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        let inner = self.inner();
        let mut out = inner.outbox.list(state);
        if state.is_none_or(|s| s == DeliveryState::Delivered) {
            out.extend(inner.delivered.iter().cloned());
        }
        drop(inner);
        ready(newest_first(out, limit))
    }

    fn replay(
        &self,
        id: DeliveryId,
        now: u64,
        deadline_at: u64,
    ) -> BoxFuture<'_, Result<Replay, StoreError>> {
        let mut inner = self.inner();
        let r = match inner.outbox.replay(id, now, deadline_at) {
            Replay::NotFound if inner.delivered.iter().any(|d| d.id == id) => {
                Replay::NotDead(DeliveryState::Delivered)
            }
            r => r,
        };
        drop(inner);
        ready(r)
    }

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StoreError>> {
        ready(self.inner().outbox.stats())
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

    fn take_due_checks(
        &self,
        now: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Registration>, StoreError>> {
        ready(self.inner().regs.take_due(now, limit))
    }

    fn next_check_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        ready(self.inner().regs.next_due())
    }

    fn finish_check(
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

    fn active_registrations(&self) -> u64 {
        self.inner().regs.len() as u64
    }
}
