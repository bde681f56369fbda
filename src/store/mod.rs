//! The store: dedupe keys, the outbox of deliveries, Read Session
//! registrations and order watches. Everything that must survive between
//! receiving a callback and the backend accepting it lives here.
//!
//! - `api`: the `Store` trait; `queue`: the three kinds of leased work;
//!   `model`: what is recorded.
//! - The kinds: `memory`, `sqlite` (the file store) and `redis`.
//! - `outbox`, `registrations`, `watches`, `due` and `dedupe`: the
//!   in-process indexes the memory and file stores keep.
//! - `probes`: the doctor's one-time probe nonces.
//! - `replication`: the primary a store writes to, its failovers, and
//!   writes its replicas did not acknowledge (redis).

pub(crate) mod api;
pub(crate) mod dedupe;
pub(crate) mod due;
pub mod memory;
pub(crate) mod model;
pub(crate) mod outbox;
pub(crate) mod probes;
pub(crate) mod queue;
pub mod redis;
pub(crate) mod registrations;
pub(crate) mod replication;
pub mod sqlite;
pub(crate) mod watches;

pub use api::Store;
pub use model::{
    push_attempt, ready, ArrivalUri, Attempt, AttemptOutcome, BoxFuture, Claim, Cursor, Cutoffs,
    Delivery, DeliveryState, Detail, Excerpt, Filter, Page, Replay, Resolution, Resolve, Source,
    Stats, StoreError, StoreKind, Watch, WatchNext, WatchState, ATTEMPTS_KEPT, BODY_KEPT,
    RESOLVE_NOTE_MAX,
};
pub use probes::{ProbeNonce, PROBE_TTL};
pub use queue::{Attempted, Checks, Deliveries, Queue, Queues, Watches};
pub use registrations::{CheckNext, RegState, Registration};

/// The `[store]` section, validated.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub path: Option<std::path::PathBuf>,
    /// How to reach Redis (`url` or `sentinels`, credentials, TLS) and how
    /// many replicas must acknowledge a write; secrets never printed.
    pub redis: redis::dial::RedisConnect,
    pub key_prefix: String,
    pub dedupe_ttl: std::time::Duration,
    /// How long delivered records (from receipt) and resolved ones (from
    /// their resolution) are kept; at least `dedupe_ttl`.
    pub keep_finished: std::time::Duration,
    /// How long dead and unconfirmed records are kept, from receipt; at
    /// least `dedupe_ttl`.
    pub keep_dead: std::time::Duration,
}

/// Opens the store `s` names: the memory store, the SQLite file, or a
/// connection to Redis (which must answer now). With Redis, `lease` is how
/// long a replica may hold a delivery it took, and `registration_ttl` how
/// long a Read Session registration is kept.
pub(crate) async fn open(
    s: &StoreConfig,
    lease: std::time::Duration,
    registration_ttl: std::time::Duration,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(match s.kind {
        StoreKind::Memory => std::sync::Arc::new(memory::MemoryStore::new(s.dedupe_ttl)),
        StoreKind::File => {
            let path = s
                .path
                .as_deref()
                .ok_or_else(|| StoreError::Open("store.path is not set".into()))?;
            let store = sqlite::SqliteStore::open(path, s.dedupe_ttl)?;
            tracing::info!(path = %path.display(), "file store open: every callback answered 2xx is on disk first, and survives a crash");
            std::sync::Arc::new(store)
        }
        StoreKind::Redis => {
            let store = redis::RedisStore::connect(
                &s.redis,
                &s.key_prefix,
                s.dedupe_ttl,
                registration_ttl,
                lease,
            )
            .await?
            .retaining(s.keep_finished, s.keep_dead);
            let primary = store
                .replication()
                .and_then(|r| r.figures().primary)
                .unwrap_or_default();
            tracing::info!(prefix = %s.key_prefix, %primary, sentinels = s.redis.sentinels.len(), min_replicas_acked = s.redis.min_replicas_acked, "redis store connected");
            std::sync::Arc::new(store)
        }
    })
}
