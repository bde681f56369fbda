//! The in-process index of live deliveries (pending and dead) and of which
//! pending ones are due, shared by the stores that run in one process. It
//! decides nothing about durability: a store updates it only after its own
//! record of the change is safe.

use std::collections::HashMap;

use crate::store::due::Due;
use crate::store::model::{
    AttemptOutcome, Cursor, Delivery, DeliveryState, Filter, Page, Replay, Stats,
};
use crate::types::DeliveryId;

#[derive(Default)]
pub(crate) struct Outbox {
    /// Pending (queued or leased) and dead deliveries. Boxed: when the map
    /// grows it moves pointers, not whole deliveries, so an ack waiting on
    /// the lock does not wait for tens of megabytes to be copied.
    live: HashMap<DeliveryId, Box<Delivery>>,
    /// Pending deliveries that are not leased, by due time.
    queue: Due<DeliveryId>,
}

impl Outbox {
    pub(crate) fn contains(&self, id: &DeliveryId) -> bool {
        self.live.contains_key(id)
    }

    pub(crate) fn get(&self, id: &DeliveryId) -> Option<&Delivery> {
        self.live.get(id).map(|d| &**d)
    }

    /// Adds a pending delivery (queued) or a dead one (kept for listing).
    pub(crate) fn insert(&mut self, d: Delivery) {
        if d.state == DeliveryState::Pending {
            self.queue.insert(d.next_attempt_at, d.id);
        }
        if matches!(d.state, DeliveryState::Pending | DeliveryState::Dead) {
            self.live.insert(d.id, Box::new(d));
        }
    }

    /// Takes a delivery out (resolved, or past retention); one leased now
    /// is taken out too, and its `finish` then finds nothing.
    pub(crate) fn remove(&mut self, id: &DeliveryId) -> Option<Delivery> {
        let d = self.live.remove(id)?;
        if d.state == DeliveryState::Pending {
            self.queue.remove(d.next_attempt_at, id);
        }
        Some(*d)
    }

    /// Takes out the dead deliveries received before `cutoff`; returns
    /// their ids.
    pub(crate) fn prune_dead(&mut self, cutoff: u64) -> Vec<DeliveryId> {
        let old: Vec<DeliveryId> = self
            .live
            .values()
            .filter(|d| d.state == DeliveryState::Dead && d.received_at < cutoff)
            .map(|d| d.id)
            .collect();
        for id in &old {
            self.live.remove(id);
        }
        old
    }

    /// Leases up to `limit` due deliveries: they leave the queue until `finish`.
    pub(crate) fn take_due(&mut self, now: u64, limit: usize) -> Vec<Delivery> {
        let live = &self.live;
        self.queue
            .take(now, limit, |id| live.get(id).map(|d| Delivery::clone(d)))
    }

    pub(crate) fn next_due(&self) -> Option<u64> {
        self.queue.next()
    }

    /// Applies an attempt's outcome; returns the delivery as it now stands.
    pub(crate) fn finish(
        &mut self,
        id: DeliveryId,
        attempts: u32,
        outcome: &AttemptOutcome,
    ) -> Option<Delivery> {
        let mut d = self.live.remove(&id)?;
        apply(&mut d, attempts, outcome);
        if d.state == DeliveryState::Delivered {
            return Some(*d);
        }
        let now = Delivery::clone(&d);
        if d.state == DeliveryState::Pending {
            self.queue.insert(d.next_attempt_at, d.id);
        }
        self.live.insert(d.id, d);
        Some(now)
    }

    pub(crate) fn replay(&mut self, id: DeliveryId, now: u64, deadline_at: u64) -> Replay {
        match self.live.get_mut(&id) {
            Some(d) if d.state == DeliveryState::Dead => {
                d.state = DeliveryState::Pending;
                d.next_attempt_at = now;
                d.deadline_at = deadline_at;
                self.queue.insert(now, id);
                Replay::Queued
            }
            Some(d) => Replay::NotDead(d.state),
            None => Replay::NotFound,
        }
    }

    /// The deliveries `filter` accepts after `after`, in no order. Filtered
    /// before they are copied: most of a large outbox is not wanted.
    pub(crate) fn list(&self, filter: &Filter, after: Option<Cursor>) -> Vec<Delivery> {
        self.live
            .values()
            .filter(|d| listed(filter, after, d))
            .map(|d| Delivery::clone(d))
            .collect()
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for d in self.live.values() {
            match d.state {
                DeliveryState::Pending => {
                    s.pending += 1;
                    s.oldest_pending_at = Some(
                        s.oldest_pending_at
                            .map_or(d.received_at, |o| o.min(d.received_at)),
                    );
                }
                DeliveryState::Dead => {
                    s.dead += 1;
                    s.oldest_dead_at = Some(
                        s.oldest_dead_at
                            .map_or(d.received_at, |o| o.min(d.received_at)),
                    );
                }
                DeliveryState::Delivered | DeliveryState::Resolved | DeliveryState::Released => {}
            }
        }
        s
    }
}

/// What an attempt's outcome does to a delivery: the one definition both the
/// index and the durable stores follow.
pub(crate) fn apply(d: &mut Delivery, attempts: u32, outcome: &AttemptOutcome) {
    d.attempts = attempts;
    match outcome {
        AttemptOutcome::Delivered { at, .. } => {
            d.state = DeliveryState::Delivered;
            d.delivered_at = Some(*at);
            d.last_error = None;
        }
        AttemptOutcome::Retry { next_at, error } => {
            d.next_attempt_at = *next_at;
            d.last_error = Some(error.clone());
        }
        AttemptOutcome::Dead { error } => {
            d.state = DeliveryState::Dead;
            d.last_error = Some(error.clone());
        }
    }
}

/// Whether a listing with `filter`, continued after `after`, shows `d`.
pub(crate) fn listed(filter: &Filter, after: Option<Cursor>, d: &Delivery) -> bool {
    after.is_none_or(|c| c.admits(d.received_at, &d.id)) && filter.accepts(d)
}

/// Newest first, then by id, at most `limit`.
pub(crate) fn newest_first(mut list: Vec<Delivery>, limit: usize) -> Vec<Delivery> {
    list.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(a.id.cmp(&b.id)));
    list.truncate(limit);
    list
}

/// The first page of `list` (every candidate there is, in any order):
/// `limit` of them newest first, and a `next` when more are left.
pub(crate) fn page(list: Vec<Delivery>, limit: usize) -> Page {
    let more = list.len() > limit;
    let deliveries = newest_first(list, limit);
    let next = if more {
        deliveries.last().map(Cursor::of)
    } else {
        None
    };
    Page { deliveries, next }
}
