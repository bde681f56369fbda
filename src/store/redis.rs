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
//! `rdue`, `rleased`. Every hash has an expiry; no KEYS or SCAN is ever used.
//! Redis Cluster is not supported (the scripts touch keys they compute).
//!
//! A dead record expires `dedupe_ttl` after it died, and Redis does not tell
//! the index. So `dead_by_expiry` is scored by the record's expiry (the very
//! number given to PEXPIREAT), and every script that counts or lists dead
//! deliveries first drops the ids at its front whose record is gone: the
//! gauge and the listing cannot include an expired record. Earlier versions
//! kept the index as `dead`, scored by receipt; those scripts move what is
//! left there into the new key and delete it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::dedupe::DedupeKeys;
use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value};

use super::registrations::{CheckNext, RegState, Registration};
use super::{
    ArrivalUri, AttemptOutcome, BoxFuture, Claim, Delivery, DeliveryState, Replay, Source, Stats,
    Store, StoreError,
};
use crate::types::{unix_ms, AuthorizationToken, DeliveryId, SessionId};

/// The index of dead deliveries, scored by when their record expires.
const DEAD: &str = "dead_by_expiry";
/// The index earlier versions kept (scored by receipt); drained into `DEAD`
/// by `trim_dead`, which reads it whatever its type. Claims and replays never
/// touch it (a WRONGTYPE there would refuse callbacks); the move skips ids
/// whose record is no longer dead, which is all they would have changed.
const LEGACY_DEAD: &str = "dead";

/// Lua shared by the scripts that count or list dead deliveries:
/// `trim_dead(dead, legacy, hash_prefix, now_ms)`. It moves the legacy
/// index into `dead`, then drops ids from the front of `dead` while their
/// record is gone (expired) or no longer dead. Scores are the records'
/// expiries, so once the front's record is alive, every later one is too.
macro_rules! trim_dead_lua {
    () => {
        r#"
local function trim_dead(dead, legacy, prefix, now)
  local kind = redis.call('TYPE', legacy)['ok']
  if kind == 'zset' or kind == 'set' then
    local ids
    if kind == 'zset' then ids = redis.call('ZRANGE', legacy, 0, -1) else ids = redis.call('SMEMBERS', legacy) end
    for _, id in ipairs(ids) do
      local key = prefix .. id
      if redis.call('HGET', key, 'state') == 'dead' then
        local left = redis.call('PTTL', key)
        if left >= 0 then
          redis.call('ZADD', dead, tonumber(now) + left, id)
        else
          redis.call('ZADD', dead, '+inf', id)
        end
      end
    end
    redis.call('DEL', legacy)
  end
  while true do
    local first = redis.call('ZRANGE', dead, 0, 0)[1]
    if not first or redis.call('HGET', prefix .. first, 'state') == 'dead' then return end
    redis.call('ZREM', dead, first)
  end
end
"#
    };
}

/// Recording (first time, or again once the old record is gone) also takes
/// the id out of the dead and delivered indexes: an expired record may have
/// left it there, and it must not be listed twice.
const CLAIM: &str = r#"
local st = redis.call('HGET', KEYS[1], 'state')
if st then
  if st ~= 'delivered' then return 0 end
  if tonumber(redis.call('HGET', KEYS[1], 'received_at')) > tonumber(ARGV[2]) then return 0 end
  redis.call('DEL', KEYS[1])
end
redis.call('ZREM', KEYS[7], ARGV[1])
redis.call('ZREM', KEYS[8], ARGV[1])
redis.call('HSET', KEYS[1], 'route', ARGV[4], 'reference', ARGV[5], 'session_id', ARGV[6], 'token', ARGV[7],
  'source', ARGV[8], 'received_at', ARGV[9], 'payload', ARGV[10], 'arrival_uri', ARGV[11], 'state', 'pending',
  'attempts', 0, 'next_at', ARGV[12], 'deadline_at', ARGV[13])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[12], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[9], ARGV[1])
if redis.call('HGET', KEYS[4], 'state') == 'active' then
  redis.call('HSET', KEYS[4], 'state', 'ended', 'outcome', ARGV[8])
  redis.call('ZREM', KEYS[5], ARGV[6])
  redis.call('ZREM', KEYS[6], ARGV[6])
  redis.call('PEXPIREAT', KEYS[4], ARGV[14])
end
return 1
"#;

/// Moves expired leases back to `due`, then leases up to ARGV[2] due items.
/// Returns [id, token, {hash}...] triples.
const TAKE_DUE: &str = r#"
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], ARGV[1], id)
end
local out = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for i, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[4] .. id
  if redis.call('HGET', key, 'state') == 'pending' then
    local token = ARGV[5] .. ':' .. i
    redis.call('HSET', key, 'lease', token)
    redis.call('ZADD', KEYS[2], ARGV[3], id)
    table.insert(out, id)
    table.insert(out, token)
    table.insert(out, redis.call('HGETALL', key))
  end
end
return out
"#;

/// A delivered outcome applies whoever holds the lease (the upstream took
/// it); a retry or dead outcome only from the lease holder.
const FINISH: &str = r#"
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'pending' then redis.call('ZREM', KEYS[2], ARGV[1]); return 0 end
local mine = redis.call('HGET', KEYS[1], 'lease') == ARGV[7]
if ARGV[2] ~= 'delivered' and not mine then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], 'lease')
if ARGV[2] == 'delivered' then
  redis.call('HSET', KEYS[1], 'state', 'delivered', 'attempts', ARGV[3], 'delivered_at', ARGV[4], 'last_error', '')
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  local rec = redis.call('HGET', KEYS[1], 'received_at')
  redis.call('ZADD', KEYS[6], rec, ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], tonumber(rec) + tonumber(ARGV[6]))
elseif ARGV[2] == 'retry' then
  redis.call('HSET', KEYS[1], 'attempts', ARGV[3], 'next_at', ARGV[4], 'last_error', ARGV[5])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
else
  redis.call('HSET', KEYS[1], 'state', 'dead', 'attempts', ARGV[3], 'last_error', ARGV[5])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  -- The same number for the score and the expiry: the index knows when the record goes.
  local expires = tonumber(ARGV[4]) + tonumber(ARGV[6])
  redis.call('ZADD', KEYS[5], expires, ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], expires)
end
return 1
"#;

const REPLAY: &str = r#"
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st ~= 'dead' then return st end
redis.call('HSET', KEYS[1], 'state', 'pending', 'next_at', ARGV[2], 'deadline_at', ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[1], 'received_at'), ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 'queued'
"#;

/// [pending count, dead count, oldest pending score or nil].
const STATS: &str = concat!(
    trim_dead_lua!(),
    r#"
trim_dead(KEYS[2], KEYS[3], ARGV[1], ARGV[2])
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), oldest[2] or false}
"#
);

/// The ids of up to ARGV[3] dead deliveries, newest received first (then by
/// id, as `newest_first`). The index is ordered by expiry, not receipt, so
/// this reads every live dead record's `received_at`: O(dead), like the
/// in-process stores' listing.
const LIST_DEAD: &str = concat!(
    trim_dead_lua!(),
    r#"
trim_dead(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
local rows = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', ARGV[1] .. id, 'state', 'received_at')
  if f[1] == 'dead' then
    table.insert(rows, {tonumber(f[2]) or 0, id})
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
table.sort(rows, function(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  return a[2] < b[2]
end)
local out = {}
for i = 1, math.min(#rows, tonumber(ARGV[3])) do out[i] = rows[i][2] end
return out
"#
);

const REGISTER: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'route', ARGV[2], 'reference', ARGV[3], 'registered_at', ARGV[4], 'checks', 0,
  'next_at', ARGV[5], 'state', 'active')
redis.call('PEXPIREAT', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
return 1
"#;

/// Like TAKE_DUE, for registrations; returns [session, {hash}] pairs.
const TAKE_CHECKS: &str = r#"
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, s in ipairs(expired) do
  redis.call('ZREM', KEYS[2], s)
  redis.call('ZADD', KEYS[1], ARGV[1], s)
end
local out = {}
local ss = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, s in ipairs(ss) do
  redis.call('ZREM', KEYS[1], s)
  local key = ARGV[4] .. s
  if redis.call('HGET', key, 'state') == 'active' then
    redis.call('ZADD', KEYS[2], ARGV[3], s)
    table.insert(out, s)
    table.insert(out, redis.call('HGETALL', key))
  end
end
return out
"#;

const FINISH_CHECK: &str = r#"
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then return 0 end
if ARGV[2] == 'again' then
  redis.call('HSET', KEYS[1], 'checks', ARGV[3], 'next_at', ARGV[4], 'last_error', ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
else
  redis.call('HSET', KEYS[1], 'checks', ARGV[3], 'state', 'ended', 'outcome', ARGV[5])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[6])
end
return 1
"#;

/// A hash as read back: field name to raw value.
type Fields = HashMap<String, Vec<u8>>;
/// Members of a sorted set with their scores.
type Scored = Vec<(String, f64)>;

struct Scripts {
    claim: Script,
    take_due: Script,
    finish: Script,
    replay: Script,
    stats: Script,
    list_dead: Script,
    register: Script,
    take_checks: Script,
    finish_check: Script,
}

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    scripts: Scripts,
    seen: DedupeKeys,
    /// Lease tokens of the deliveries this replica holds.
    leases: Mutex<HashMap<DeliveryId, String>>,
    replica: String,
    ttl_ms: u64,
    registration_ttl_ms: u64,
    lease_ms: u64,
    failure: Arc<Mutex<Option<String>>>,
    active_regs: Arc<AtomicU64>,
}

fn err(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

impl RedisStore {
    /// Connects (failing if Redis cannot be reached now) and starts a
    /// background probe that keeps readiness current.
    pub async fn open(
        url: &str,
        prefix: &str,
        dedupe_ttl: Duration,
        registration_ttl: Duration,
        lease: Duration,
    ) -> Result<Self, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Open(format!("store.url: {e}")))?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(2)
            .set_max_delay(1000);
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_connection_manager_with_config(cfg),
        )
        .await
        .map_err(|_| StoreError::Open("redis: no answer within 5s".into()))?
        .map_err(err)?;
        let store = Self {
            conn,
            prefix: prefix.to_string(),
            scripts: Scripts {
                claim: Script::new(CLAIM),
                take_due: Script::new(TAKE_DUE),
                finish: Script::new(FINISH),
                replay: Script::new(REPLAY),
                stats: Script::new(STATS),
                list_dead: Script::new(LIST_DEAD),
                register: Script::new(REGISTER),
                take_checks: Script::new(TAKE_CHECKS),
                finish_check: Script::new(FINISH_CHECK),
            },
            seen: DedupeKeys::new(dedupe_ttl),
            leases: Mutex::new(HashMap::new()),
            replica: format!("{:x}-{:x}", std::process::id(), unix_ms()),
            ttl_ms: dedupe_ttl.as_millis() as u64,
            registration_ttl_ms: registration_ttl.as_millis() as u64,
            lease_ms: lease.as_millis() as u64,
            failure: Arc::new(Mutex::new(None)),
            active_regs: Arc::new(AtomicU64::new(0)),
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

    /// The lowest score in either sorted set: when something is next due
    /// (an expired lease is due again).
    async fn earliest(&self, due: &str, leased: &str) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<(Scored, Scored)> = redis::pipe()
            .zrange_withscores(self.key(due), 0, 0)
            .zrange_withscores(self.key(leased), 0, 0)
            .query_async(&mut conn)
            .await;
        let (a, b) = self.track(r)?;
        Ok(a.into_iter().chain(b).map(|(_, s)| s as u64).min())
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

async fn probe(
    mut conn: ConnectionManager,
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

fn field<'a>(m: &'a Fields, k: &str) -> Option<&'a [u8]> {
    m.get(k).map(|v| v.as_slice())
}

fn text(m: &Fields, k: &str) -> String {
    field(m, k)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

fn num(m: &Fields, k: &str) -> u64 {
    text(m, k).parse().unwrap_or(0)
}

fn delivery_from(id: &str, m: &Fields) -> Option<Delivery> {
    if m.is_empty() {
        return None;
    }
    let state = match text(m, "state").as_str() {
        "delivered" => DeliveryState::Delivered,
        "dead" => DeliveryState::Dead,
        _ => DeliveryState::Pending,
    };
    let opt = |k: &str| Some(text(m, k)).filter(|s| !s.is_empty());
    Some(Delivery {
        id: DeliveryId::parse(id)?,
        route: text(m, "route"),
        reference: text(m, "reference"),
        session_id: SessionId::new(text(m, "session_id")),
        authorization_token: AuthorizationToken::new(text(m, "token")),
        source: Source::parse(&text(m, "source")).unwrap_or(Source::Callback),
        received_at: num(m, "received_at"),
        payload: Bytes::from(field(m, "payload").unwrap_or_default().to_vec()),
        arrival_uri: opt("arrival_uri").map(ArrivalUri),
        state,
        attempts: num(m, "attempts") as u32,
        next_attempt_at: num(m, "next_at"),
        deadline_at: num(m, "deadline_at"),
        last_error: opt("last_error"),
        delivered_at: opt("delivered_at").and_then(|s| s.parse().ok()),
    })
}

fn registration_from(session: &str, m: &Fields) -> Registration {
    Registration {
        session_id: SessionId::new(session),
        route: text(m, "route"),
        reference: text(m, "reference"),
        registered_at: num(m, "registered_at"),
        checks: num(m, "checks") as u32,
        next_check_at: num(m, "next_at"),
        state: if text(m, "state") == "active" {
            RegState::Active
        } else {
            RegState::Ended
        },
        outcome: Some(text(m, "outcome")).filter(|s| !s.is_empty()),
        last_error: Some(text(m, "last_error")).filter(|s| !s.is_empty()),
    }
}

/// Reads a script's flat `[a, {hash}, a, {hash}...]` (or with `extra` more
/// plain items between) answer.
fn groups(v: Value, width: usize) -> Vec<(Vec<String>, Fields)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut it = items.into_iter();
    'outer: loop {
        let mut head = Vec::new();
        for _ in 0..width - 1 {
            match it.next() {
                Some(x) => head.push(redis::from_redis_value::<String>(&x).unwrap_or_default()),
                None => break 'outer,
            }
        }
        let Some(hash) = it.next() else { break };
        let map: Fields = match hash {
            Value::Array(kv) => kv
                .chunks(2)
                .filter_map(|c| {
                    let k = redis::from_redis_value::<String>(c.first()?).ok()?;
                    let v = redis::from_redis_value::<Vec<u8>>(c.get(1)?).ok()?;
                    Some((k, v))
                })
                .collect(),
            _ => HashMap::new(),
        };
        out.push((head, map));
    }
    out
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
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
            let mut conn = self.conn.clone();
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
            self.seen.insert_new(d.id);
            Ok(if n == 1 {
                Claim::Recorded
            } else {
                Claim::Duplicate
            })
        })
    }

    fn take_due(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let r: redis::RedisResult<Value> = self
                .scripts
                .take_due
                .key(self.key("due"))
                .key(self.key("leased"))
                .arg(now)
                .arg(limit)
                .arg(now + self.lease_ms)
                .arg(format!("{}d:", self.prefix))
                .arg(format!("{}-{now}", self.replica))
                .invoke_async(&mut conn)
                .await;
            let v = self.track(r)?;
            let mut out = Vec::new();
            let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            for (head, map) in groups(v, 3) {
                if let Some(d) = delivery_from(&head[0], &map) {
                    leases.insert(d.id, head[1].clone());
                    out.push(d);
                }
            }
            Ok(out)
        })
    }

    fn next_due_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(self.earliest("due", "leased"))
    }

    fn finish(
        &self,
        id: DeliveryId,
        attempts: u32,
        outcome: AttemptOutcome,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let token = self
                .leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned()
                .unwrap_or_default();
            let now = unix_ms();
            let (kind, at, error) = match &outcome {
                AttemptOutcome::Delivered { at } => ("delivered", *at, String::new()),
                AttemptOutcome::Retry { next_at, error } => ("retry", *next_at, error.clone()),
                AttemptOutcome::Dead { error } => ("dead", now, error.clone()),
            };
            let mut conn = self.conn.clone();
            let r: redis::RedisResult<i64> = self
                .scripts
                .finish
                .key(self.dkey(&id))
                .key(self.key("leased"))
                .key(self.key("due"))
                .key(self.key("pending"))
                .key(self.key(DEAD))
                .key(self.key("delivered"))
                .arg(id.to_string())
                .arg(kind)
                .arg(attempts)
                .arg(at)
                .arg(error)
                .arg(self.ttl_ms)
                .arg(&token)
                .invoke_async(&mut conn)
                .await;
            self.track(r)?;
            let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            // Not a lease taken since this call read its token.
            if leases.get(&id) == Some(&token) {
                leases.remove(&id);
            }
            Ok(())
        })
    }

    fn list(
        &self,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        Box::pin(async move {
            let states = match state {
                Some(s) => vec![s],
                None => vec![
                    DeliveryState::Pending,
                    DeliveryState::Dead,
                    DeliveryState::Delivered,
                ],
            };
            let mut out = Vec::new();
            let mut conn = self.conn.clone();
            for want in states {
                let r: redis::RedisResult<Vec<String>> = match want {
                    DeliveryState::Dead => {
                        self.scripts
                            .list_dead
                            .key(self.key(DEAD))
                            .key(self.key(LEGACY_DEAD))
                            .arg(format!("{}d:", self.prefix))
                            .arg(unix_ms())
                            .arg(limit)
                            .invoke_async(&mut conn)
                            .await
                    }
                    DeliveryState::Pending | DeliveryState::Delivered => {
                        conn.zrevrange(self.key(want.as_str()), 0, limit.saturating_sub(1) as isize)
                            .await
                    }
                };
                let ids = self.track(r)?;
                // An index may still name a record that is gone or has moved
                // on (claimed again after it expired): each delivery is
                // listed once, under the state its record has.
                out.extend(
                    self.fetch(ids)
                        .await?
                        .into_iter()
                        .filter(|d| d.state == want),
                );
            }
            Ok(super::outbox::newest_first(out, limit))
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
                .arg(id.to_string())
                .arg(now)
                .arg(deadline_at)
                .arg(deadline_at + self.ttl_ms)
                .invoke_async(&mut conn)
                .await;
            Ok(match self.track(r)?.as_str() {
                "queued" => Replay::Queued,
                "missing" => Replay::NotFound,
                "delivered" => Replay::NotDead(DeliveryState::Delivered),
                _ => Replay::NotDead(DeliveryState::Pending),
            })
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let r: redis::RedisResult<(u64, u64, Option<String>)> = self
                .scripts
                .stats
                .key(self.key("pending"))
                .key(self.key(DEAD))
                .key(self.key(LEGACY_DEAD))
                .arg(format!("{}d:", self.prefix))
                .arg(unix_ms())
                .invoke_async(&mut conn)
                .await;
            let (pending, dead, oldest) = self.track(r)?;
            Ok(Stats {
                pending,
                dead,
                // A score is a unix-ms number Redis prints as text.
                oldest_pending_at: oldest.and_then(|s| s.parse::<f64>().ok()).map(|s| s as u64),
            })
        })
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

    fn take_due_checks(
        &self,
        now: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Registration>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let r: redis::RedisResult<Value> = self
                .scripts
                .take_checks
                .key(self.key("rdue"))
                .key(self.key("rleased"))
                .arg(now)
                .arg(limit)
                .arg(now + self.lease_ms)
                .arg(format!("{}r:", self.prefix))
                .invoke_async(&mut conn)
                .await;
            let v = self.track(r)?;
            Ok(groups(v, 2)
                .into_iter()
                .map(|(head, map)| registration_from(&head[0], &map))
                .collect())
        })
    }

    fn next_check_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(self.earliest("rdue", "rleased"))
    }

    fn finish_check(
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

    fn active_registrations(&self) -> u64 {
        self.active_regs.load(Ordering::Relaxed)
    }

    fn prune(&self, cutoff: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            // The hashes expire by themselves; the listing index is trimmed.
            let mut conn = self.conn.clone();
            let r: redis::RedisResult<u64> = conn
                .zrembyscore(self.key("delivered"), "-inf", cutoff)
                .await;
            self.track(r)
        })
    }
}
