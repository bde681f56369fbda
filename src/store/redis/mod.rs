//! The `redis` store: dedupe keys, the outbox and registrations shared by any
//! number of authback replicas through one Redis server.
//!
//! Every change is one Lua script, so it is atomic on the server: claiming a
//! callback and queueing it cannot be separated, two replicas racing on one
//! callback get one `Recorded`, and marking a delivery done releases its
//! lease in the same step. Due work is taken with a lease; a replica that
//! dies leaves its leases to expire, and another replica takes the work.
//!
//! Keys (under `key_prefix`): `d:{id}` hashes, `r:{session}` hashes, and the
//! sorted sets `due`, `leased`, `pending`, `dead_by_expiry`, `delivered`,
//! `resolved`, `released`, `rdue`, `rleased`, and for order watch `wdue`,
//! `wleased`, `unconfirmed`; for listing by session or reference, the
//! sorted sets `by_session:{id}` and `by_reference:{reference}`
//! (`lookup.lua`) and the string `lookups_since`; the doctor's probe nonces
//! are strings `p:{nonce}`, holding their expiry. Every hash and nonce has
//! an expiry; no KEYS or SCAN is ever used.
//! Redis Cluster is not supported (the scripts touch keys they compute).
//! The scripts live beside this file, one `.lua` file each.
//!
//! Redis is reached through `link` (a connection that follows the primary,
//! through the sentinels when there are some; `dial` opens it). With
//! `store.min_replicas_acked`, a claim and a delivery's outcome run on a
//! connection of their own and wait for the replicas there (`acks`).
//!
//! A dead record expires `dedupe_ttl` after it died, and Redis does not tell
//! the index. So `dead_by_expiry` is scored by the record's expiry (the very
//! number given to PEXPIREAT), and every script that counts or lists dead
//! deliveries first drops the ids at its front whose record is gone: the
//! gauge and the listing cannot include an expired record. Earlier versions
//! kept the index as `dead`, scored by receipt; those scripts move what is
//! left there into the new key and delete it. `unconfirmed` is kept the same
//! way (`index.lua`), and one function (`expire.lua`) sets every record's
//! expiry and those scores together; `resolved` too (scored by expiry,
//! trimmed as it is listed and by `prune`). A delivery's order watch lives in its
//! record (`w_*` fields), which lives at least `dedupe_ttl` past the watch's
//! next check, so it cannot expire while the watch runs.

mod acks;
mod decode;
pub mod dial;
mod link;
mod list;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_acks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::dedupe::DedupeKeys;
use redis::{AsyncCommands, Script, Value};

use super::probes::ProbeNonce;
use super::registrations::{CheckNext, Registration};
use super::replication::{AckOperation, Replication};
use crate::store::api::Store;
use crate::store::model::{
    AttemptOutcome, BoxFuture, Claim, Cursor, Cutoffs, Delivery, DeliveryState, Detail, Filter,
    Page, Replay, Resolve, Stats, StoreError, StoreKind, WatchNext, WatchState, ATTEMPTS_KEPT,
};
use crate::store::queue::{Attempted, Checks, Deliveries, Queue, Watches};
use crate::types::{unix_ms, DeliveryId, SessionId};
use acks::Acks;
use decode::{attempts_from, delivery_from, groups, registration_from, Fields};
use dial::{Dialer, RedisConnect};
use link::Link;

/// The index of dead deliveries, scored by when their record expires.
const DEAD: &str = "dead_by_expiry";
/// The index earlier versions kept (scored by receipt); drained into `DEAD`
/// by `trim_dead`, which reads it whatever its type. Claims and replays never
/// touch it (a WRONGTYPE there would refuse callbacks); the move skips ids
/// whose record is no longer dead, which is all they would have changed.
const LEGACY_DEAD: &str = "dead";

/// The index of deliveries whose order watch ended unconfirmed, scored by
/// when their record expires (as `DEAD`).
const UNCONFIRMED: &str = "unconfirmed";
/// The index of resolved deliveries, scored by when their record expires.
const RESOLVED: &str = "resolved";
/// Released deliveries, scored by expiry as `resolved` is.
pub(super) const RELEASED: &str = "released";
/// From when on (unix ms) every record is in the lookup indexes
/// (`list.rs`): an hour after the first replica that keeps them started.
const LOOKUPS_SINCE: &str = "lookups_since";
/// How long replicas of an earlier version, which keep no lookup indexes,
/// may go on claiming and delivering beside those of this one: a rolling
/// update's length, with room to spare.
const LOOKUPS_ROLLOUT_MS: u64 = 3_600_000;
/// How many ids `list` reads from an index at a time, at least: a filter
/// may pass over many.
const LIST_PAGE: usize = 200;
/// Most ids one `list` call reads from one index, so a filter that few
/// records pass cannot make one call read the whole store: the page then
/// ends early, with a cursor where the reading stopped.
const SCAN_BUDGET: usize = 5_000;

// The Lua scripts, one a file beside this one; each file's header names its
// KEYS and ARGV and what it guarantees. The functions some of them share
// (`index.lua`, `trim_dead.lua`, `lookup.lua`, `expire.lua`) are joined in
// front of them.
const CLAIM: &str = concat!(include_str!("lookup.lua"), include_str!("claim.lua"));
const TAKE: &str = include_str!("take.lua");
const FINISH: &str = concat!(
    include_str!("lookup.lua"),
    include_str!("expire.lua"),
    include_str!("finish.lua")
);
const REPLAY: &str = concat!(
    include_str!("lookup.lua"),
    include_str!("expire.lua"),
    include_str!("replay.lua")
);
const STATS: &str = concat!(
    include_str!("index.lua"),
    include_str!("trim_dead.lua"),
    include_str!("stats.lua")
);
const LIST_DEAD: &str = concat!(
    include_str!("index.lua"),
    include_str!("trim_dead.lua"),
    include_str!("list_dead.lua")
);
const LIST_UNCONFIRMED: &str = concat!(
    include_str!("index.lua"),
    include_str!("list_unconfirmed.lua")
);
const LIST_RESOLVED: &str = concat!(include_str!("index.lua"), include_str!("list_resolved.lua"));
const RESOLVE: &str = concat!(
    include_str!("lookup.lua"),
    include_str!("expire.lua"),
    include_str!("resolve.lua")
);
const REGISTER: &str = include_str!("register.lua");
const FINISH_CHECK: &str = include_str!("finish_check.lua");
const FINISH_WATCH: &str = concat!(
    include_str!("lookup.lua"),
    include_str!("expire.lua"),
    include_str!("finish_watch.lua")
);
const TAKE_PROBE: &str = include_str!("take_probe.lua");

/// The string the replicas' acknowledgement writes when a write it waits
/// for changed nothing (`acks.rs`), so its `WAIT` covers all before it.
const ACK_MARKER: &str = "ack_marker";
/// Each answer's limit on the connection most requests share.
const RESPONSE: Duration = Duration::from_secs(2);
/// Each step of connecting: TCP, TLS, asking a sentinel, the first answer.
const DIAL_STEP: Duration = Duration::from_secs(2);

/// Members of a sorted set with their scores.
type Scored = Vec<(String, f64)>;

/// Where one kind of leased work lives in Redis: its due and leased sets,
/// its records' key stem, and the record field and value that say an item
/// still wants work.
struct Leased {
    due: &'static str,
    leased: &'static str,
    record: &'static str,
    field: &'static str,
    wants: &'static str,
}

const DELIVERIES: Leased = Leased {
    due: "due",
    leased: "leased",
    record: "d:",
    field: "state",
    wants: "pending",
};

const CHECKS: Leased = Leased {
    due: "rdue",
    leased: "rleased",
    record: "r:",
    field: "state",
    wants: "active",
};

const WATCHES: Leased = Leased {
    due: "wdue",
    leased: "wleased",
    record: "d:",
    field: "w_state",
    // A release recorded before its DELETE is work too (sent again).
    wants: "watching|releasing",
};

struct Scripts {
    claim: Script,
    take: Script,
    finish: Script,
    replay: Script,
    stats: Script,
    list_dead: Script,
    list_unconfirmed: Script,
    list_resolved: Script,
    resolve: Script,
    register: Script,
    finish_check: Script,
    finish_watch: Script,
    take_probe: Script,
}

pub struct RedisStore {
    conn: Link,
    /// Where claims and outcomes are written: `conn`, or with
    /// `min_replicas_acked` a connection of their own, where `acks` waits.
    lane: Link,
    acks: Acks,
    replication: Arc<Replication>,
    prefix: String,
    scripts: Scripts,
    seen: DedupeKeys,
    /// Lease tokens of the deliveries this replica holds.
    leases: Mutex<HashMap<DeliveryId, String>>,
    replica: String,
    ttl_ms: u64,
    /// `store.keep_finished` and `store.keep_dead`: how long finished and
    /// failed records live (`expire.lua`).
    keep_finished_ms: u64,
    keep_dead_ms: u64,
    registration_ttl_ms: u64,
    lease_ms: u64,
    failure: Arc<Mutex<Option<String>>>,
    active_regs: Arc<AtomicU64>,
    /// `LOOKUPS_SINCE`, as read at open.
    lookups_since: u64,
}

fn err(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

impl RedisStore {
    /// Connects to the one server at `url` (failing if it cannot be
    /// reached now), waiting for no replica; see `connect`.
    pub async fn open(
        url: &str,
        prefix: &str,
        dedupe_ttl: Duration,
        registration_ttl: Duration,
        lease: Duration,
    ) -> Result<Self, StoreError> {
        let to = RedisConnect::url(url);
        Self::connect(&to, prefix, dedupe_ttl, registration_ttl, lease).await
    }

    /// Connects to the primary `to` names (failing if it cannot be reached
    /// now) and starts a background probe that keeps readiness current.
    pub async fn connect(
        to: &RedisConnect,
        prefix: &str,
        dedupe_ttl: Duration,
        registration_ttl: Duration,
        lease: Duration,
    ) -> Result<Self, StoreError> {
        let dialer = Arc::new(Dialer::new(to, DIAL_STEP).map_err(StoreError::Open)?);
        let replication = Arc::new(Replication::default());
        let conn = Link::new(dialer.clone(), replication.clone(), RESPONSE);
        tokio::time::timeout(Duration::from_secs(10), conn.pinned())
            .await
            .map_err(|_| StoreError::Open("redis: no answer within 10s".into()))?
            .map_err(err)?;
        // The lane's answers include the replicas' wait.
        let lane = match to.min_replicas_acked {
            0 => conn.clone(),
            _ => Link::new(
                dialer,
                replication.clone(),
                RESPONSE + to.replica_ack_timeout,
            ),
        };
        let acks = Acks::start(
            lane.clone(),
            to.min_replicas_acked,
            to.replica_ack_timeout,
            format!("{prefix}{ACK_MARKER}"),
        );
        let lookups_since = lookups_since(conn.clone(), prefix).await?;
        let store = Self {
            conn,
            lane,
            acks,
            replication,
            prefix: prefix.to_string(),
            scripts: Scripts {
                claim: Script::new(CLAIM),
                take: Script::new(TAKE),
                finish: Script::new(FINISH),
                replay: Script::new(REPLAY),
                stats: Script::new(STATS),
                list_dead: Script::new(LIST_DEAD),
                list_unconfirmed: Script::new(LIST_UNCONFIRMED),
                list_resolved: Script::new(LIST_RESOLVED),
                resolve: Script::new(RESOLVE),
                register: Script::new(REGISTER),
                finish_check: Script::new(FINISH_CHECK),
                finish_watch: Script::new(FINISH_WATCH),
                take_probe: Script::new(TAKE_PROBE),
            },
            seen: DedupeKeys::new(dedupe_ttl),
            leases: Mutex::new(HashMap::new()),
            replica: format!("{:x}-{:x}", std::process::id(), unix_ms()),
            ttl_ms: dedupe_ttl.as_millis() as u64,
            keep_finished_ms: dedupe_ttl.as_millis() as u64,
            keep_dead_ms: dedupe_ttl.as_millis() as u64,
            registration_ttl_ms: registration_ttl.as_millis() as u64,
            lease_ms: lease.as_millis() as u64,
            failure: Arc::new(Mutex::new(None)),
            active_regs: Arc::new(AtomicU64::new(0)),
            lookups_since,
        };
        store.probe().await;
        if let Some(why) = store
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(StoreError::Open(why));
        }
        let (conn, failure, regs, rdue, rleased) = (
            store.conn.clone(),
            Arc::downgrade(&store.failure),
            Arc::downgrade(&store.active_regs),
            store.key("rdue"),
            store.key("rleased"),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let (Some(failure), Some(regs)) = (failure.upgrade(), regs.upgrade()) else {
                    return;
                };
                probe(conn.clone(), &failure, &regs, &rdue, &rleased).await;
            }
        });
        Ok(store)
    }

    /// Keeps finished records (delivered, resolved) `keep_finished` and
    /// failed ones (dead, unconfirmed) `keep_dead`, where `open` keeps
    /// both `dedupe_ttl`.
    pub fn retaining(mut self, keep_finished: Duration, keep_dead: Duration) -> Self {
        self.keep_finished_ms = u64::try_from(keep_finished.as_millis()).unwrap_or(u64::MAX);
        self.keep_dead_ms = u64::try_from(keep_dead.as_millis()).unwrap_or(u64::MAX);
        self
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn dkey(&self, id: &DeliveryId) -> String {
        format!("{}d:{id}", self.prefix)
    }

    fn rkey(&self, s: &SessionId) -> String {
        format!("{}r:{}", self.prefix, s.as_str())
    }

    async fn probe(&self) {
        probe(
            self.conn.clone(),
            &self.failure,
            &self.active_regs,
            &self.key("rdue"),
            &self.key("rleased"),
        )
        .await;
    }

    /// Records the result of an operation for readiness.
    fn track<T>(&self, r: redis::RedisResult<T>) -> Result<T, StoreError> {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(v) => {
                *f = None;
                Ok(v)
            }
            Err(e) => {
                let e = err(e);
                *f = Some(e.reason().to_string());
                Err(e)
            }
        }
    }

    /// Waits for the replicas to acknowledge a write of `operation` made
    /// on lane connection `generation` (`marker`: it may have changed
    /// nothing). A shortfall is counted, and refuses what depends on it;
    /// it is not the store failing (`health`), so it never takes a pod out
    /// of service, even with `server.ready_requires_store`.
    async fn acked(
        &self,
        operation: AckOperation,
        generation: u64,
        marker: bool,
    ) -> Result<(), StoreError> {
        match self.acks.confirm(generation, marker).await {
            Ok(()) => Ok(()),
            Err(why) => {
                self.replication.ack_failure(operation);
                Err(StoreError::Unavailable(format!("redis: {why}")))
            }
        }
    }

    /// The lowest score in either sorted set: when something is next due
    /// (an expired lease is due again).
    async fn earliest(&self, kind: &Leased) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<(Scored, Scored)> = redis::pipe()
            .zrange_withscores(self.key(kind.due), 0, 0)
            .zrange_withscores(self.key(kind.leased), 0, 0)
            .query_async(&mut conn)
            .await;
        let (a, b) = self.track(r)?;
        Ok(a.into_iter().chain(b).map(|(_, s)| s as u64).min())
    }

    /// Leases up to `limit` items of `kind` due at `now` (`take.lua`);
    /// leases that expired by `clock` are due again first. Each item comes
    /// as ([id, lease token], record fields).
    async fn take_leased(
        &self,
        kind: &Leased,
        now: u64,
        clock: u64,
        limit: usize,
        stem: &str,
    ) -> Result<Vec<(Vec<String>, Fields)>, StoreError> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<Value> = self
            .scripts
            .take
            .key(self.key(kind.due))
            .key(self.key(kind.leased))
            .arg(now)
            .arg(limit)
            .arg(clock + self.lease_ms)
            .arg(format!("{}{}", self.prefix, kind.record))
            .arg(clock)
            .arg(kind.field)
            .arg(kind.wants)
            .arg(stem)
            .invoke_async(&mut conn)
            .await;
        Ok(groups(self.track(r)?, 3))
    }

    async fn fetch(&self, ids: Vec<String>) -> Result<Vec<Delivery>, StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(format!("{}d:{id}", self.prefix));
        }
        let maps: Vec<Fields> = self.track(pipe.query_async(&mut conn).await)?;
        Ok(ids
            .iter()
            .zip(maps)
            .filter_map(|(id, m)| delivery_from(id, &m))
            .collect())
    }
}

/// From when on every record is in the lookup indexes: set, by the first
/// replica that keeps them, to the end of a rolling update from now
/// (records an earlier version's replicas claim and deliver meanwhile are
/// in none). A value that is not a time (written by hand) reads as "never",
/// so every listing by session or reference also reads the state indexes:
/// slower, never short.
async fn lookups_since(mut conn: Link, prefix: &str) -> Result<u64, StoreError> {
    let key = format!("{prefix}{LOOKUPS_SINCE}");
    let r: redis::RedisResult<(Option<String>,)> = redis::pipe()
        .cmd("SET")
        .arg(&key)
        .arg(unix_ms() + LOOKUPS_ROLLOUT_MS)
        .arg("NX")
        .ignore()
        .get(&key)
        .query_async(&mut conn)
        .await;
    let (since,) = r.map_err(|e| StoreError::Open(format!("redis: {e}")))?;
    Ok(since.and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        tracing::warn!(
            key,
            "not a time: listing by session or reference reads every index"
        );
        u64::MAX
    }))
}

async fn probe(
    mut conn: Link,
    failure: &Mutex<Option<String>>,
    regs: &AtomicU64,
    rdue: &str,
    rleased: &str,
) {
    let r: redis::RedisResult<(u64, u64)> = redis::pipe()
        .zcard(rdue)
        .zcard(rleased)
        .query_async(&mut conn)
        .await;
    let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
    match r {
        Ok((a, b)) => {
            if f.take().is_some() {
                tracing::info!("redis reachable again");
            }
            regs.store(a + b, Ordering::Relaxed);
        }
        Err(e) => *f = Some(format!("redis: {e}")),
    }
}

impl Store for RedisStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Redis
    }

    fn durable(&self) -> bool {
        true
    }

    fn poll_interval(&self) -> Option<Duration> {
        // Other replicas add work this one is not told about.
        Some(Duration::from_secs(1))
    }

    fn claim(&self, d: Delivery) -> BoxFuture<'_, Result<Claim, StoreError>> {
        Box::pin(async move {
            if self.seen.contains(&d.id) {
                return Ok(Claim::Duplicate);
            }
            let mut conn = self.track(self.lane.pinned().await)?;
            let id = d.id.to_string();
            let cutoff = d.received_at.saturating_sub(self.ttl_ms);
            let r: redis::RedisResult<i64> = self
                .scripts
                .claim
                .key(self.dkey(&d.id))
                .key(self.key("due"))
                .key(self.key("pending"))
                .key(self.rkey(&d.session_id))
                .key(self.key("rdue"))
                .key(self.key("rleased"))
                .key(self.key("delivered"))
                .key(self.key(DEAD))
                .key(self.key(UNCONFIRMED))
                .key(self.key("wdue"))
                .key(self.key("wleased"))
                .arg(&id)
                .arg(cutoff)
                .arg(d.deadline_at + self.ttl_ms)
                .arg(&d.route)
                .arg(&d.reference)
                .arg(d.session_id.as_str())
                .arg(d.authorization_token.expose())
                .arg(d.source.as_str())
                .arg(d.received_at)
                .arg(&d.payload[..])
                .arg(d.arrival_uri.as_ref().map_or("", |u| u.0.as_str()))
                .arg(d.next_attempt_at)
                .arg(d.deadline_at)
                .arg(d.received_at + self.ttl_ms)
                .invoke_async(&mut conn)
                .await;
            let n = self.track(r)?;
            // A duplicate waits too: its record may be one whose first
            // claim was answered 503 for want of the replicas.
            self.acked(AckOperation::Claim, conn.generation, n != 1)
                .await?;
            self.seen.insert_new(d.id);
            Ok(if n == 1 {
                Claim::Recorded
            } else {
                Claim::Duplicate
            })
        })
    }

    fn list(
        &self,
        filter: Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Page, StoreError>> {
        Box::pin(self.list_filtered(filter, after, limit))
    }

    fn get(&self, id: DeliveryId) -> BoxFuture<'_, Result<Option<Detail>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let r: redis::RedisResult<Fields> = conn.hgetall(self.dkey(&id)).await;
            let m = self.track(r)?;
            Ok(delivery_from(&id.to_string(), &m).map(|delivery| Detail {
                delivery,
                attempts: attempts_from(&m),
            }))
        })
    }

    fn replay(
        &self,
        id: DeliveryId,
        now: u64,
        deadline_at: u64,
    ) -> BoxFuture<'_, Result<Replay, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let r: redis::RedisResult<String> = self
                .scripts
                .replay
                .key(self.dkey(&id))
                .key(self.key("due"))
                .key(self.key("pending"))
                .key(self.key(DEAD))
                .key(self.key(UNCONFIRMED))
                .arg(id.to_string())
                .arg(now)
                .arg(deadline_at)
                .arg(self.ttl_ms)
                .arg(self.keep_finished_ms)
                .arg(self.keep_dead_ms)
                .invoke_async(&mut conn)
                .await;
            Ok(match self.track(r)?.as_str() {
                "queued" => Replay::Queued,
                "missing" => Replay::NotFound,
                other => {
                    Replay::NotDead(DeliveryState::parse(other).unwrap_or(DeliveryState::Pending))
                }
            })
        })
    }

    fn resolve(
        &self,
        id: DeliveryId,
        at: u64,
        note: String,
    ) -> BoxFuture<'_, Result<Resolve, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let r: redis::RedisResult<String> = self
                .scripts
                .resolve
                .key(self.dkey(&id))
                .key(self.key(DEAD))
                .key(self.key(UNCONFIRMED))
                .key(self.key(RESOLVED))
                .key(self.key("delivered"))
                .key(self.key(RELEASED))
                .arg(id.to_string())
                .arg(at)
                .arg(note)
                .arg(self.ttl_ms)
                .arg(self.keep_finished_ms)
                .arg(self.keep_dead_ms)
                .invoke_async(&mut conn)
                .await;
            let answer = self.track(r)?;
            Ok(match answer.as_str() {
                "resolved" => Resolve::Resolved,
                "missing" => Resolve::NotFound,
                other => {
                    let (state, watch) = other.split_once(':').unwrap_or((other, ""));
                    Resolve::NotResolvable {
                        state: DeliveryState::parse(state).unwrap_or(DeliveryState::Pending),
                        watch: WatchState::parse(watch),
                    }
                }
            })
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            type Counts = (
                u64,
                u64,
                u64,
                Option<String>,
                Option<String>,
                Option<String>,
            );
            let r: redis::RedisResult<Counts> = self
                .scripts
                .stats
                .key(self.key("pending"))
                .key(self.key(DEAD))
                .key(self.key(LEGACY_DEAD))
                .key(self.key(UNCONFIRMED))
                .arg(format!("{}d:", self.prefix))
                .arg(unix_ms())
                .invoke_async(&mut conn)
                .await;
            let (pending, dead, unconfirmed, oldest, oldest_dead, oldest_unconfirmed) =
                self.track(r)?;
            // What the finished indexes hold: pruning trims `delivered`, and
            // `resolved` is scored by expiry.
            let finished: redis::RedisResult<(u64, u64)> = redis::pipe()
                .zcard(self.key("delivered"))
                .zcard(self.key(RESOLVED))
                .query_async(&mut conn)
                .await;
            let (delivered, resolved) = self.track(finished)?;
            Ok(Stats {
                delivered,
                resolved,
                pending,
                dead,
                unconfirmed,
                // A score is a unix-ms number Redis prints as text.
                oldest_pending_at: oldest.and_then(|s| s.parse::<f64>().ok()).map(|s| s as u64),
                oldest_dead_at: oldest_dead.and_then(|s| s.parse().ok()),
                oldest_unconfirmed_at: oldest_unconfirmed.and_then(|s| s.parse().ok()),
            })
        })
    }

    fn replication(&self) -> Option<&Replication> {
        Some(&self.replication)
    }

    fn health(&self) -> Result<(), String> {
        match &*self.failure.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    fn register(&self, r: Registration) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let res: redis::RedisResult<i64> = self
                .scripts
                .register
                .key(self.rkey(&r.session_id))
                .key(self.key("rdue"))
                .arg(r.session_id.as_str())
                .arg(&r.route)
                .arg(&r.reference)
                .arg(r.registered_at)
                .arg(r.next_check_at)
                .arg(r.registered_at + self.registration_ttl_ms)
                .invoke_async(&mut conn)
                .await;
            let new = self.track(res)? == 1;
            if new {
                self.active_regs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(new)
        })
    }

    fn active_registrations(&self) -> u64 {
        self.active_regs.load(Ordering::Relaxed)
    }

    fn prune(&self, cutoffs: Cutoffs) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            // The hashes expire by themselves (`expire.lua`); the listing
            // indexes are trimmed: `delivered` by receipt, `resolved` by the
            // expiries it is scored by. The dead and unconfirmed indexes are
            // trimmed each time they are counted or listed.
            let mut conn = self.conn.clone();
            let r: redis::RedisResult<(u64, u64, u64)> = redis::pipe()
                .zrembyscore(self.key("delivered"), "-inf", cutoffs.finished)
                .zrembyscore(self.key(RESOLVED), "-inf", unix_ms())
                .zrembyscore(self.key(RELEASED), "-inf", unix_ms())
                .query_async(&mut conn)
                .await;
            let (delivered, resolved, released) = self.track(r)?;
            Ok(delivered + resolved + released)
        })
    }

    fn put_probe(
        &self,
        nonce: ProbeNonce,
        expires_at: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // The value is the expiry too, so a take can tell a nonce that
            // Redis has not yet expired from a live one.
            let key = self.key(&format!("p:{nonce}"));
            let mut conn = self.conn.clone();
            let r: redis::RedisResult<()> = redis::pipe()
                .atomic()
                .set(&key, expires_at)
                .ignore()
                .pexpire_at(&key, i64::try_from(expires_at).unwrap_or(i64::MAX))
                .ignore()
                .query_async(&mut conn)
                .await;
            self.track(r)
        })
    }

    fn take_probe(&self, nonce: ProbeNonce, now: u64) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let r: redis::RedisResult<i64> = self
                .scripts
                .take_probe
                .key(self.key(&format!("p:{nonce}")))
                .arg(now)
                .invoke_async(&mut conn)
                .await;
            Ok(self.track(r)? == 1)
        })
    }
}

impl Queue<Deliveries> for RedisStore {
    fn take(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        Box::pin(async move {
            let stem = format!("{}-{now}", self.replica);
            let taken = self
                .take_leased(&DELIVERIES, now, now, limit, &stem)
                .await?;
            let mut out = Vec::new();
            let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            for (head, map) in taken {
                if let Some(d) = delivery_from(&head[0], &map) {
                    leases.insert(d.id, head[1].clone());
                    out.push(d);
                }
            }
            Ok(out)
        })
    }

    fn next_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(self.earliest(&DELIVERIES))
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
        Box::pin(async move {
            // One line of JSON: serde escapes every newline inside strings.
            // Plain numbers, strings and bools cannot fail to serialize; if
            // it ever did, the outcome must still be recorded, so the log
            // gets an empty object.
            let line = serde_json::to_string(&attempt).unwrap_or_else(|_| "{}".into());
            let token = self
                .leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned()
                .unwrap_or_default();
            let now = unix_ms();
            let mut watch_from = None;
            let (kind, at, error) = match &outcome {
                AttemptOutcome::Delivered { at, watch_from: w } => {
                    watch_from = *w;
                    ("delivered", *at, String::new())
                }
                AttemptOutcome::Retry { next_at, error } => ("retry", *next_at, error.clone()),
                AttemptOutcome::Dead { error } => ("dead", now, error.clone()),
            };
            let mut conn = self.track(self.lane.pinned().await)?;
            let r: redis::RedisResult<i64> = self
                .scripts
                .finish
                .key(self.dkey(&id))
                .key(self.key("leased"))
                .key(self.key("due"))
                .key(self.key("pending"))
                .key(self.key(DEAD))
                .key(self.key("delivered"))
                .key(self.key(UNCONFIRMED))
                .key(self.key("wdue"))
                .arg(id.to_string())
                .arg(kind)
                .arg(attempts)
                .arg(at)
                .arg(error)
                .arg(self.ttl_ms)
                .arg(&token)
                .arg(watch_from.map_or(String::new(), |t| t.to_string()))
                .arg(line)
                .arg(ATTEMPTS_KEPT)
                .arg(self.keep_finished_ms)
                .arg(self.keep_dead_ms)
                .invoke_async(&mut conn)
                .await;
            let applied = self.track(r)? == 1;
            // The backend has answered: a shortfall cannot be undone, only
            // counted (a failover now could send the delivery again).
            if let Err(why) = self.acks.confirm(conn.generation, !applied).await {
                self.replication.ack_failure(AckOperation::Outcome);
                tracing::warn!(%id, outcome = kind, reason = %why, "delivery outcome recorded, not acknowledged by the replicas");
            }
            let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            // Not a lease taken since this call read its token.
            if leases.get(&id) == Some(&token) {
                leases.remove(&id);
            }
            Ok(())
        })
    }
}

impl Queue<Checks> for RedisStore {
    fn take(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Registration>, StoreError>> {
        Box::pin(async move {
            let taken = self.take_leased(&CHECKS, now, now, limit, "").await?;
            Ok(taken
                .into_iter()
                .map(|(head, map)| registration_from(&head[0], &map))
                .collect())
        })
    }

    fn next_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(self.earliest(&CHECKS))
    }

    fn finish(
        &self,
        session: SessionId,
        checks: u32,
        next: CheckNext,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (kind, at, text) = match &next {
                CheckNext::Again { at, error } => ("again", *at, error.clone().unwrap_or_default()),
                CheckNext::Ended { outcome } => ("ended", 0, outcome.clone()),
            };
            let mut conn = self.conn.clone();
            let r: redis::RedisResult<i64> = self
                .scripts
                .finish_check
                .key(self.rkey(&session))
                .key(self.key("rdue"))
                .key(self.key("rleased"))
                .arg(session.as_str())
                .arg(kind)
                .arg(checks)
                .arg(at)
                .arg(text)
                .arg(unix_ms() + self.ttl_ms)
                .invoke_async(&mut conn)
                .await;
            self.track(r)?;
            self.probe().await;
            Ok(())
        })
    }
}

impl Queue<Watches> for RedisStore {
    fn take(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        Box::pin(async move {
            // A lease measures whether its holder is alive, so it runs on
            // the clock, whatever time `now` asks about: a check leased
            // here is not handed out again by a call asking further ahead.
            let taken = self
                .take_leased(&WATCHES, now, unix_ms(), limit, "")
                .await?;
            Ok(taken
                .into_iter()
                .filter_map(|(head, map)| delivery_from(&head[0], &map))
                .collect())
        })
    }

    fn next_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(self.earliest(&WATCHES))
    }

    fn finish(
        &self,
        id: DeliveryId,
        checks: u32,
        next: WatchNext,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // (kind, next check at, the check's error, when a redelivery is
            // due or since when Klarna has failed)
            let (kind, at, error, now) = match next {
                WatchNext::Again { at, error } => ("again", at, error, 0),
                WatchNext::Confirmed => ("confirmed", 0, None, 0),
                WatchNext::Unconfirmed { error } => ("unconfirmed", 0, error, 0),
                WatchNext::Redeliver { now, at } => ("redeliver", at, None, now),
                WatchNext::KlarnaFailing { at, since, error } => {
                    ("klarna_failing", at, Some(error), since)
                }
                WatchNext::Release { at } => ("release", at, None, 0),
                WatchNext::Released => ("released", 0, None, 0),
                WatchNext::ReleaseFailed { error } => ("release_failed", 0, Some(error), 0),
            };
            let mut conn = self.conn.clone();
            let r: redis::RedisResult<i64> = self
                .scripts
                .finish_watch
                .key(self.dkey(&id))
                .key(self.key("wdue"))
                .key(self.key("wleased"))
                .key(self.key(UNCONFIRMED))
                .key(self.key("due"))
                .key(self.key("pending"))
                .key(self.key("delivered"))
                .key(self.key(DEAD))
                .key(self.key(RELEASED))
                .arg(id.to_string())
                .arg(kind)
                .arg(checks)
                .arg(at)
                .arg(error.unwrap_or_default())
                .arg(now)
                .arg(self.ttl_ms)
                .arg(self.keep_finished_ms)
                .arg(self.keep_dead_ms)
                .invoke_async(&mut conn)
                .await;
            self.track(r)?;
            Ok(())
        })
    }
}
