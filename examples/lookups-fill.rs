//! Fills a store with delivered records for `benches/lookups.sh`, through
//! the store's own claim path, so the records are exactly what authback
//! writes. Each record has its own session and reference, and the records
//! are received evenly over the `SPAN_MS` before now.
//!
//! ```text
//! lookups-fill file PATH N SAMPLE        # the file store at PATH
//! lookups-fill redis URL PREFIX N SAMPLE # a Redis store under PREFIX
//! lookups-fill memory                    # times the memory store in-process
//! ```
//!
//! SAMPLE gets 1,000 of the records, evenly spread, one a line:
//! `id session_id reference received_at`. The file store takes each record
//! as delivered in its claim; the Redis store claims, takes and delivers
//! it (its claim always writes a pending record). With Redis, the tool then
//! sets `lookups_since` to the oldest receipt: every record is in the lookup
//! indexes, as in a store that ran this version for `dedupe_ttl`.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authback::store::memory::MemoryStore;
use authback::store::redis::RedisStore;
use authback::store::sqlite::SqliteStore;
use authback::store::{
    Attempt, AttemptOutcome, Attempted, Delivery, DeliveryState, Filter, Source, Store,
};
use authback::types::{unix_ms, AuthorizationToken, DeliveryId, SessionId};
use bytes::Bytes;

/// How far back the records go: a week, as a shop keeping a week of
/// records has them.
const SPAN_MS: u64 = 7 * 24 * 3_600_000;
/// Long enough that nothing expires or is pruned during a run.
const TTL: Duration = Duration::from_secs(8 * 24 * 3600);
/// Claims in flight at once.
const CHUNK: u64 = 4_096;

type Failure = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or("missing argument: see the header")
    };
    match arg(0)?.as_str() {
        "file" => {
            let store = SqliteStore::open(std::path::Path::new(&arg(1)?), TTL)?;
            fill(Arc::new(store), arg(2)?.parse()?, &arg(3)?, false).await?;
            Ok(())
        }
        "redis" => {
            let (url, prefix) = (arg(1)?, arg(2)?);
            let lease = Duration::from_secs(600);
            let store = RedisStore::open(&url, &prefix, TTL, TTL, lease).await?;
            let n = arg(3)?.parse()?;
            let oldest = fill(Arc::new(store), n, &arg(4)?, true).await?;
            let mut c = redis::Client::open(url)?
                .get_multiplexed_async_connection()
                .await?;
            redis::cmd("SET")
                .arg(format!("{prefix}lookups_since"))
                .arg(oldest)
                .query_async::<()>(&mut c)
                .await?;
            Ok(())
        }
        "memory" => memory().await,
        other => Err(format!("unknown store {other:?}").into()),
    }
}

/// 36 characters that look like Klarna's ids, different for each `i` and
/// `salt`.
fn uuid(i: u64, salt: u64) -> String {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt;
    let mut next = || {
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 29;
        x
    };
    let (a, b) = (next(), next());
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// Record `i` of `n`, received at `base + i * SPAN_MS / n`.
fn record(i: u64, n: u64, base: u64) -> Delivery {
    let session_id = SessionId::new(uuid(i, 1));
    let token = AuthorizationToken::new(uuid(i, 2));
    let received_at = base + i * SPAN_MS / n.max(1);
    Delivery {
        id: DeliveryId::for_authorization(&session_id, &token),
        route: "klarna".into(),
        reference: format!("order-{}", 10_000_000 + i),
        payload: Bytes::from(format!(
            r#"{{"authorization_token":"{}","session_id":"{}"}}"#,
            token.expose(),
            session_id.as_str()
        )),
        session_id,
        authorization_token: token,
        source: Source::Callback,
        received_at,
        arrival_uri: None,
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: received_at,
        deadline_at: received_at + 3_600_000,
        last_error: None,
        delivered_at: None,
        watch: None,
        resolution: None,
    }
}

/// Records `n` deliveries, `CHUNK` at a time, writes the sample, and
/// returns the oldest receipt. With `deliver`, each chunk is claimed
/// pending, taken and delivered; without, claimed delivered.
async fn fill(store: Arc<dyn Store>, n: u64, sample: &str, deliver: bool) -> Result<u64, Failure> {
    let base = unix_ms() - SPAN_MS;
    let started = Instant::now();
    let mut out = std::io::BufWriter::new(std::fs::File::create(sample)?);
    let every = (n / 1000).max(1);
    for start in (0..n).step_by(CHUNK as usize) {
        let mut tasks = tokio::task::JoinSet::new();
        for i in start..(start + CHUNK).min(n) {
            let mut d = record(i, n, base);
            if i % every == 0 {
                let (id, s, r, at) = (d.id, d.session_id.as_str(), &d.reference, d.received_at);
                writeln!(out, "{id} {s} {r} {at}")?;
            }
            if !deliver {
                d.state = DeliveryState::Delivered;
                d.attempts = 1;
                d.delivered_at = Some(d.received_at + 50);
            }
            let store = store.clone();
            tasks.spawn(async move { store.claim(d).await });
        }
        while let Some(claimed) = tasks.join_next().await {
            claimed??;
        }
        if deliver {
            deliver_all(&store, CHUNK as usize).await?;
        }
        if start % (CHUNK * 64) == 0 {
            let rate = (start + CHUNK) as f64 / started.elapsed().as_secs_f64();
            eprintln!("{} of {n} records, {rate:.0}/s", start + CHUNK);
        }
    }
    out.flush()?;
    eprintln!("{n} records in {:.1} s", started.elapsed().as_secs_f64());
    Ok(base)
}

/// Takes every due delivery (up to `limit`) and records it delivered, as
/// the delivery worker does after a 2xx.
async fn deliver_all(store: &Arc<dyn Store>, limit: usize) -> Result<(), Failure> {
    let due = store.deliveries().take(u64::MAX / 4, limit).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for d in due {
        let store = store.clone();
        tasks.spawn(async move {
            let at = d.received_at + 50;
            let outcome = AttemptOutcome::Delivered {
                at,
                watch_from: None,
            };
            let log = Attempt {
                at: d.received_at,
                duration_ms: 50,
                status: Some(200),
                error: None,
                retry_in_ms: None,
                redelivery: false,
                response: None,
            };
            let next = Attempted { outcome, log };
            store.deliveries().finish(d.id, 1, next).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// The memory store keeps at most 10,000 delivered records and lists them
/// by one pass: times a listing by session, by reference and by a time
/// window when it is full.
async fn memory() -> Result<(), Failure> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(TTL));
    let n = 10_000;
    let base = unix_ms() - SPAN_MS;
    for start in (0..n).step_by(1_000) {
        for i in start..start + 1_000 {
            let mut d = record(i, n, base);
            d.next_attempt_at = 0;
            store.claim(d).await?;
        }
        deliver_all(&store, 1_000).await?;
    }
    let one = record(n / 2, n, base);
    let filters = [
        (
            "session_id",
            Filter {
                session_id: Some(one.session_id.clone()),
                ..Filter::default()
            },
        ),
        (
            "reference",
            Filter {
                reference: Some(one.reference.clone()),
                ..Filter::default()
            },
        ),
        (
            "state+time",
            Filter {
                since: Some(one.received_at),
                until: Some(one.received_at + 3_600_000),
                ..Filter::state(DeliveryState::Delivered)
            },
        ),
    ];
    for (name, filter) in filters {
        let mut took = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let page = store.list(filter.clone(), None, 100).await?;
            took.push(t.elapsed());
            assert!(!page.deliveries.is_empty(), "{name}: found");
        }
        took.sort();
        println!(
            "memory {name}: median {:.3} ms, p99 {:.3} ms ({n} delivered records)",
            took[100].as_secs_f64() * 1e3,
            took[197].as_secs_f64() * 1e3
        );
    }
    Ok(())
}
