//! Leased work. Three kinds of work wait in the store until they are due:
//! deliveries (an attempt), registrations (a Read Session check) and order
//! watches (a Read Session check of a delivered authorization). Each kind
//! is one `Queue`: take what is due under a lease, ask when the next is due,
//! and finish what was taken with what the work decided. One loop drives
//! all three (`ops::due`).

use crate::store::model::{Attempt, AttemptOutcome, BoxFuture, Delivery, StoreError, WatchNext};
use crate::store::registrations::{CheckNext, Registration};
use crate::types::{DeliveryId, SessionId};

/// A kind of leased work: what a queue hands out, what names an item when
/// it is finished, and what the work decided.
pub trait Work: 'static {
    type Item: Send + 'static;
    type Key: Send + 'static;
    type Next: Send + 'static;
}

/// Deliveries due for an attempt; finished with the attempt's outcome and
/// its entry in the attempt log.
pub enum Deliveries {}

impl Work for Deliveries {
    type Item = Delivery;
    type Key = DeliveryId;
    type Next = Attempted;
}

/// Registrations due for a Read Session check.
pub enum Checks {}

impl Work for Checks {
    type Item = Registration;
    type Key = SessionId;
    type Next = CheckNext;
}

/// Watched deliveries due for an order-watch check.
pub enum Watches {}

impl Work for Watches {
    type Item = Delivery;
    type Key = DeliveryId;
    type Next = WatchNext;
}

/// What one delivery attempt ended in, and the attempt log's entry for it:
/// the store records both in one step.
#[derive(Debug, Clone)]
pub struct Attempted {
    pub outcome: AttemptOutcome,
    pub log: Attempt,
}

/// One kind of work in the store.
pub trait Queue<W: Work>: Send + Sync {
    /// Leases up to `limit` items due at `now`. A leased item is not handed
    /// out again until `finish`, a restart, or, in a store shared by
    /// replicas, its lease's expiry (its holder died).
    fn take(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<W::Item>, StoreError>>;

    /// When the earliest unleased item is due.
    fn next_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>>;

    /// Records what the work on the leased item `key` decided, after `n`
    /// tries in all (attempts, checks), releasing its lease. What is not
    /// applied (the item is gone, or another replica holds it now) leaves
    /// no trace.
    fn finish(&self, key: W::Key, n: u32, next: W::Next) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// The three queues of one store. Every type that is a queue of each kind
/// hands them out as itself: a store implements `Queue` three times and
/// gets these for nothing.
pub trait Queues {
    /// Deliveries due for an attempt.
    fn deliveries(&self) -> &dyn Queue<Deliveries>;
    /// Registrations due for a Read Session check.
    fn checks(&self) -> &dyn Queue<Checks>;
    /// Watched deliveries due for an order-watch check.
    fn watches(&self) -> &dyn Queue<Watches>;
}

impl<T: Queue<Deliveries> + Queue<Checks> + Queue<Watches>> Queues for T {
    fn deliveries(&self) -> &dyn Queue<Deliveries> {
        self
    }

    fn checks(&self) -> &dyn Queue<Checks> {
        self
    }

    fn watches(&self) -> &dyn Queue<Watches> {
        self
    }
}
