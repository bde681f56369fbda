//! The store trait: what the callback handler, the workers and the admin
//! API may ask of any store kind. None of them sees which kind it talks to.
//!
//! A store must never report `Claim::Recorded` for a delivery it has not
//! recorded (durably, for the durable kinds), and never hand out a delivered
//! delivery again.

use crate::store::model::{
    ready, BoxFuture, Claim, Cursor, Cutoffs, Delivery, Detail, Filter, Page, Replay, Resolve,
    Stats, StoreError, StoreKind,
};
use crate::store::probes::ProbeNonce;
use crate::store::queue::Queues;
use crate::store::registrations::Registration;
use crate::store::replication::Replication;
use crate::types::DeliveryId;

pub trait Store: Queues + Send + Sync + 'static {
    fn kind(&self) -> StoreKind;

    /// Whether what it recorded survives the process (`kill -9` included).
    fn durable(&self) -> bool;

    /// How often workers look for due work even when not woken: for a store
    /// shared with other processes, whose additions nobody here announces.
    fn poll_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Atomically: if `d.id` was seen within the dedupe TTL, `Duplicate`;
    /// otherwise record the key and queue `d`, then `Recorded`. Recording
    /// also ends an active registration of the same session (no more Read
    /// Session checks are needed).
    fn claim(&self, d: Delivery) -> BoxFuture<'_, Result<Claim, StoreError>>;

    /// Up to `limit` deliveries `filter` accepts, newest first (by
    /// `received_at` descending, then `id` ascending), after `after`.
    /// The listed deliveries' attempt logs are not read: see `get`.
    fn list(
        &self,
        filter: Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Page, StoreError>>;

    /// One delivery with its attempt log, if the store still has it.
    fn get(&self, id: DeliveryId) -> BoxFuture<'_, Result<Option<Detail>, StoreError>>;

    /// Queues a dead delivery again, due at `now`, with a new deadline.
    fn replay(
        &self,
        id: DeliveryId,
        now: u64,
        deadline_at: u64,
    ) -> BoxFuture<'_, Result<Replay, StoreError>>;

    /// Closes a failure by hand (`Delivery::resolvable`): it becomes
    /// `Resolved` at `at` with `note`, leaves the dead and unconfirmed
    /// lists and gauges, and keeps deduping until retention removes it.
    fn resolve(
        &self,
        id: DeliveryId,
        at: u64,
        note: String,
    ) -> BoxFuture<'_, Result<Resolve, StoreError>>;

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StoreError>>;

    /// Whether the store can record callbacks now; the reason if not.
    fn health(&self) -> Result<(), String>;

    /// The primary it writes to, its failovers and the writes its replicas
    /// did not acknowledge, for a store with a replicated server behind it;
    /// `None` for one that has none (memory, file).
    fn replication(&self) -> Option<&Replication> {
        None
    }

    /// Registers a session for the Read Session fallback. Idempotent:
    /// `Ok(false)` when it was already registered (active or ended).
    fn register(&self, r: Registration) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Registrations still being checked.
    fn active_registrations(&self) -> u64;

    /// Forgets what is past retention (`Cutoffs`): delivered, resolved,
    /// dead and unconfirmed records (and with them their dedupe keys), and
    /// ended registrations. Returns how many records went. Never touches
    /// pending ones, nor a running order watch.
    fn prune(&self, _cutoffs: Cutoffs) -> BoxFuture<'_, Result<u64, StoreError>> {
        ready(0)
    }

    /// Keeps a doctor's probe nonce until `expires_at` (unix ms).
    fn put_probe(
        &self,
        nonce: ProbeNonce,
        expires_at: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Atomically removes `nonce`: `true` if it was kept and had not
    /// expired by `now`. Any later take of it, on any replica, is `false`.
    fn take_probe(&self, nonce: ProbeNonce, now: u64) -> BoxFuture<'_, Result<bool, StoreError>>;
}
