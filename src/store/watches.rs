//! The in-process index of order watches: delivered authorizations whose
//! order is being watched, and unconfirmed ones kept for the incident list.
//! Shared by the stores that run in one process; like `Outbox`, it decides
//! nothing about durability: a store updates it only after its own record
//! of the change is safe.

use std::collections::HashMap;

use crate::store::due::Due;
use crate::store::model::{Delivery, DeliveryState, Watch, WatchNext, WatchState};
use crate::types::DeliveryId;

#[derive(Default)]
pub(crate) struct WatchIndex {
    /// Watching and unconfirmed deliveries, with their watch.
    entries: HashMap<DeliveryId, Box<Delivery>>,
    /// Watching deliveries that are not leased, by next check.
    due: Due<DeliveryId>,
}

impl WatchIndex {
    /// Adds (or replaces) a watched delivery; one still watching is due at
    /// its next check, unless it is being checked now (leased): then its
    /// `finish` queues it, so it is never handed out twice.
    pub(crate) fn insert(&mut self, d: Delivery) {
        let Some(w) = &d.watch else { return };
        let leased = match self.entries.get(&d.id).and_then(|o| o.watch.as_ref()) {
            Some(old) => !self.due.remove(old.next_check_at, &d.id) && old.state.is_due(),
            None => false,
        };
        if w.state == WatchState::Confirmed {
            self.entries.remove(&d.id);
            return;
        }
        if w.state.is_due() && !leased {
            self.due.insert(w.next_check_at, d.id);
        }
        self.entries.insert(d.id, Box::new(d));
    }

    pub(crate) fn get(&self, id: &DeliveryId) -> Option<&Delivery> {
        self.entries.get(id).map(|d| &**d)
    }

    /// The backend accepted a delivery: with order watch on, a delivery not
    /// yet watched starts its watch (first check due at `watch_from`); one
    /// already watched (a redelivery) keeps it. Returns the delivery as it
    /// now stands.
    pub(crate) fn delivered(
        &mut self,
        mut d: Delivery,
        at: u64,
        watch_from: Option<u64>,
    ) -> Delivery {
        if let Some(entry) = self.entries.get_mut(&d.id) {
            d.watch = entry.watch.clone();
            **entry = d.clone();
            return d;
        }
        if let (None, Some(first)) = (&d.watch, watch_from) {
            d.watch = Some(Watch {
                state: WatchState::Watching,
                started_at: at,
                next_check_at: first,
                checks: 0,
                redelivered: false,
                last_error: None,
                klarna_failing_since: None,
            });
            self.insert(d.clone());
        }
        d
    }

    /// Leases up to `limit` due watches until `finish`.
    pub(crate) fn take_due(&mut self, now: u64, limit: usize) -> Vec<Delivery> {
        let entries = &self.entries;
        self.due
            .take(now, limit, |id| entries.get(id).map(|d| Delivery::clone(d)))
    }

    pub(crate) fn next_due(&self) -> Option<u64> {
        self.due.next()
    }

    /// Applies what a check decided; returns the delivery as it now stands
    /// (for a redelivery: pending again, due at once, for the outbox).
    pub(crate) fn finish(
        &mut self,
        id: DeliveryId,
        checks: u32,
        next: &WatchNext,
    ) -> Option<Delivery> {
        let entry = self.entries.get_mut(&id)?;
        let w = entry.watch.as_mut()?;
        // What a finished check may still change: a running watch, or
        // one releasing (which only a release decision may change).
        let release = matches!(
            next,
            WatchNext::Release { .. } | WatchNext::Released | WatchNext::ReleaseFailed { .. }
        );
        match w.state {
            WatchState::Watching => {}
            WatchState::Releasing if release => {}
            _ => return Some((**entry).clone()),
        }
        self.due.remove(w.next_check_at, &id);
        w.checks = checks;
        w.klarna_failing_since = None;
        match next {
            WatchNext::Again { at, error } => {
                w.next_check_at = *at;
                w.last_error = error.clone();
                self.due.insert(*at, id);
            }
            WatchNext::Confirmed => {
                w.state = WatchState::Confirmed;
                w.last_error = None;
            }
            WatchNext::Unconfirmed { error } => {
                w.state = WatchState::Unconfirmed;
                w.last_error = error.clone().or_else(|| w.last_error.take());
            }
            WatchNext::Redeliver { now, at } => {
                w.redelivered = true;
                w.next_check_at = *at;
                self.due.insert(*at, id);
                entry.state = DeliveryState::Pending;
                entry.next_attempt_at = *now;
            }
            WatchNext::KlarnaFailing { at, since, error } => {
                w.next_check_at = *at;
                w.last_error = Some(error.clone());
                w.klarna_failing_since = Some(*since);
                self.due.insert(*at, id);
            }
            WatchNext::Release { at } => {
                w.state = WatchState::Releasing;
                w.next_check_at = *at;
                self.due.insert(*at, id);
            }
            WatchNext::Released => {
                w.state = WatchState::Unconfirmed;
                w.last_error = None;
                entry.state = DeliveryState::Released;
            }
            WatchNext::ReleaseFailed { error } => {
                w.state = WatchState::Unconfirmed;
                w.last_error = Some(error.clone());
            }
        }
        let d = (**entry).clone();
        if d.watch
            .as_ref()
            .is_some_and(|w| w.state == WatchState::Confirmed)
        {
            self.entries.remove(&id);
        }
        Some(d)
    }

    /// Unconfirmed deliveries: the incident list. A released one is not
    /// on it (the customer is no longer charged).
    pub(crate) fn unconfirmed(&self) -> impl Iterator<Item = &Delivery> {
        self.ended().filter(|d| d.state != DeliveryState::Released)
    }

    /// Deliveries whose watch ended with no order: unconfirmed or released.
    fn ended(&self) -> impl Iterator<Item = &Delivery> {
        self.entries
            .values()
            .filter(|d| {
                d.watch
                    .as_ref()
                    .is_some_and(|w| w.state == WatchState::Unconfirmed)
            })
            .map(|d| &**d)
    }

    /// The oldest unconfirmed delivery's `received_at`.
    pub(crate) fn oldest_unconfirmed(&self) -> Option<u64> {
        self.unconfirmed().map(|d| d.received_at).min()
    }

    /// Takes a delivery out (resolved, or past retention), whatever its
    /// watch's state; one being checked now is taken out too, and its
    /// `finish` then finds nothing.
    pub(crate) fn remove(&mut self, id: &DeliveryId) -> Option<Delivery> {
        let d = self.entries.remove(id)?;
        if let Some(w) = &d.watch {
            self.due.remove(w.next_check_at, id);
        }
        Some(*d)
    }

    /// Every entry, for listing.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Delivery> {
        self.entries.values().map(|d| &**d)
    }

    /// Forgets unconfirmed deliveries received before `cutoff`; returns
    /// their ids. One being redelivered is live, and stays.
    pub(crate) fn prune(&mut self, cutoff: u64) -> Vec<DeliveryId> {
        let old: Vec<DeliveryId> = self
            .ended()
            .filter(|d| {
                matches!(d.state, DeliveryState::Delivered | DeliveryState::Released)
                    && d.received_at < cutoff
            })
            .map(|d| d.id)
            .collect();
        for id in &old {
            self.entries.remove(id);
        }
        old
    }
}
