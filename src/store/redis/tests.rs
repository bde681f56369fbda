//! What the conformance suite cannot see from outside the redis store: the
//! records' expiries against the order watch, the unconfirmed gauge once a
//! record expires, leases that run out, a redelivery asked for twice by two
//! replicas, and listing a filter that passes over many records.

use std::time::Duration;

use bytes::Bytes;
use redis::AsyncCommands;

use super::RedisStore;
use crate::store::api::Store;
use crate::store::model::{
    Attempt, AttemptOutcome, Cutoffs, Delivery, DeliveryState, Filter, Source, WatchNext,
    WatchState,
};
use crate::store::queue::{Attempted, Queues};
use crate::types::{unix_ms, AuthorizationToken, SessionId};

const HOUR: Duration = Duration::from_secs(3600);

/// An attempt log entry for `finish`; `n` tells entries apart.
fn attempt(n: u64) -> Attempt {
    Attempt {
        at: 1_000 + n,
        duration_ms: n,
        status: Some(503),
        error: Some(format!("attempt {n}")),
        retry_in_ms: Some(n * 10),
        redelivery: false,
        response: None,
    }
}
/// Everything pending is due by then (year 2096, in ms).
const FAR: u64 = 4_000_000_000_000;

/// A throwaway redis-server on a free port, stopped when the test ends.
struct Server {
    port: u16,
    child: std::process::Child,
}

impl Server {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (CI installs it; locally: apt-get install redis-server)");
        // Owned from here, so a server that never answers is stopped too.
        let server = Server { port, child };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn store(&self, ttl: Duration, lease: Duration) -> RedisStore {
        RedisStore::open(&self.url(), "t:", ttl, HOUR, lease)
            .await
            .expect("open")
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pending delivery of `session`, due now (shared with `tests_acks`).
pub(super) fn delivery(session: &str) -> Delivery {
    Delivery::new_pending(
        "default".into(),
        "ref".into(),
        SessionId::new(session),
        AuthorizationToken::new("t"),
        Source::Callback,
        Bytes::from_static(b"{}"),
        None,
        unix_ms(),
        Duration::from_secs(600),
    )
}

/// Claims `d` and delivers it, watched from `watch_from` when given.
async fn delivered(s: &RedisStore, d: &Delivery, watch_from: Option<u64>) {
    s.claim(d.clone()).await.expect("claim");
    s.deliveries().take(FAR, 1000).await.expect("take");
    let outcome = AttemptOutcome::Delivered {
        at: unix_ms(),
        watch_from,
    };
    s.deliveries()
        .finish(
            d.id,
            1,
            Attempted {
                outcome,
                log: attempt(1),
            },
        )
        .await
        .expect("finish");
}

/// Milliseconds until `d`'s record expires.
async fn pttl(server: &Server, d: &Delivery) -> i64 {
    let mut c = server.conn().await;
    c.pttl(format!("t:d:{}", d.id)).await.expect("pttl")
}

#[tokio::test]
async fn a_watched_record_does_not_expire_before_its_next_check() {
    let server = Server::start();
    let ttl = Duration::from_secs(5);
    let s = server.store(ttl, HOUR).await;
    let d = delivery("sess-long");
    let next = unix_ms() + 60_000;
    delivered(&s, &d, Some(next)).await;
    assert!(
        pttl(&server, &d).await > 60_000,
        "a delivered record lives `dedupe_ttl` past its next check"
    );
    s.watches().take(next, 10).await.expect("take");
    let (now, at) = (unix_ms(), unix_ms() + 120_000);
    s.watches()
        .finish(d.id, 1, WatchNext::Redeliver { now, at })
        .await
        .expect("redeliver");
    assert!(
        pttl(&server, &d).await > 120_000,
        "so does the redelivery, pending"
    );
    s.deliveries().take(FAR, 10).await.expect("take");
    let died = AttemptOutcome::Dead {
        error: "422".into(),
    };
    s.deliveries()
        .finish(
            d.id,
            2,
            Attempted {
                outcome: died,
                log: attempt(1),
            },
        )
        .await
        .expect("dead");
    assert!(pttl(&server, &d).await > 120_000, "and once it died");
    let dead = s.stats().await.expect("stats").dead;
    assert_eq!(dead, 1, "dead, with its watch going on");
    let due = s.watches().take(at, 10).await.expect("take");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].state, DeliveryState::Dead);
}

#[tokio::test]
async fn the_unconfirmed_gauge_and_listing_forget_an_expired_record() {
    let server = Server::start();
    let ttl = Duration::from_millis(400);
    let s = server.store(ttl, HOUR).await;
    let d = delivery("sess-gone");
    let now = unix_ms();
    delivered(&s, &d, Some(now)).await;
    assert_eq!(s.watches().take(now, 10).await.expect("take").len(), 1);
    let error = Some("no order".to_string());
    s.watches()
        .finish(d.id, 1, WatchNext::Unconfirmed { error })
        .await
        .expect("unconfirmed");
    let unconfirmed = Filter {
        state: None,
        watch: Some(WatchState::Unconfirmed),
        ..Filter::default()
    };
    let listed = s
        .list(unconfirmed.clone(), None, 10)
        .await
        .expect("list")
        .deliveries;
    assert_eq!(s.stats().await.expect("stats").unconfirmed, 1);
    assert_eq!(listed.len(), 1);
    let w = listed[0].watch.clone().expect("watch");
    assert_eq!(w.last_error.as_deref(), Some("no order"));

    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    assert_eq!(s.stats().await.expect("stats").unconfirmed, 0);
    assert!(s
        .list(unconfirmed, None, 10)
        .await
        .expect("list")
        .deliveries
        .is_empty());
    let mut c = server.conn().await;
    let left: u64 = c.zcard("t:unconfirmed").await.expect("zcard");
    assert_eq!(left, 0, "the index does not keep the expired id");
}

#[tokio::test]
async fn an_expired_watch_lease_is_taken_again() {
    let server = Server::start();
    let lease = Duration::from_millis(200);
    let s = server.store(HOUR, lease).await;
    let d = delivery("sess-lease");
    let now = unix_ms();
    delivered(&s, &d, Some(now)).await;
    assert_eq!(s.watches().take(FAR, 10).await.expect("take").len(), 1);
    assert!(s.watches().take(FAR, 10).await.expect("take").is_empty());
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let again = s.watches().take(FAR, 10).await.expect("take");
    assert_eq!(again.len(), 1, "its holder died: another replica checks it");
}

#[tokio::test]
async fn a_redelivery_asked_twice_is_queued_once() {
    let server = Server::start();
    let s = server.store(HOUR, HOUR).await;
    let d = delivery("sess-twice");
    let now = unix_ms();
    delivered(&s, &d, Some(now)).await;
    s.watches().take(now, 10).await.expect("take");
    // Two replicas decided on one check (the first one's lease had expired).
    for checks in [1, 1] {
        let next = WatchNext::Redeliver { now, at: now + 5 };
        s.watches()
            .finish(d.id, checks, next)
            .await
            .expect("redeliver");
    }
    let again = s.deliveries().take(FAR, 10).await.expect("take");
    assert_eq!(again.len(), 1);
    let outcome = AttemptOutcome::Delivered {
        at: now,
        watch_from: None,
    };
    s.deliveries()
        .finish(
            d.id,
            2,
            Attempted {
                outcome,
                log: attempt(1),
            },
        )
        .await
        .expect("delivered");
    s.watches().take(now + 5, 10).await.expect("take");
    let next = WatchNext::Redeliver { now, at: now + 9 };
    s.watches().finish(d.id, 2, next).await.expect("redeliver");
    assert!(
        s.deliveries().take(FAR, 10).await.expect("take").is_empty(),
        "redelivered once only"
    );
    let st = s.stats().await.expect("stats");
    assert_eq!(st.pending, 0);
    assert_eq!(s.watches().next_at().await.expect("next"), Some(now + 9));
}

#[tokio::test]
async fn a_watch_filter_finds_what_is_past_the_first_page() {
    let server = Server::start();
    let s = server.store(HOUR, HOUR).await;
    let watched = delivery("sess-watched");
    delivered(&s, &watched, Some(FAR)).await;
    for i in 0..super::LIST_PAGE + 10 {
        delivered(&s, &delivery(&format!("sess-{i}")), None).await;
    }
    let watching = Filter {
        state: Some(DeliveryState::Delivered),
        watch: Some(WatchState::Watching),
        ..Filter::default()
    };
    let listed = s.list(watching, None, 1).await.expect("list").deliveries;
    let ids: Vec<_> = listed.iter().map(|d| d.id).collect();
    assert_eq!(ids, [watched.id]);
    let all = s
        .list(Filter::default(), None, 1000)
        .await
        .expect("list")
        .deliveries;
    assert_eq!(all.len(), super::LIST_PAGE + 11, "each listed once");
}

/// Pending and delivered deliveries are read by score (receipt), and ties
/// come back in Redis's order, not the listing's: many sharing one
/// millisecond, past a read's page, still page through whole and in order.
#[tokio::test]
async fn ties_across_read_pages_are_listed_once_and_in_order() {
    let server = Server::start();
    let s = server.store(HOUR, HOUR).await;
    let at = unix_ms();
    let mut want = Vec::new();
    for i in 0..super::LIST_PAGE * 2 + 50 {
        let mut d = delivery(&format!("sess-tie-{i}"));
        d.received_at = at;
        want.push(d.id);
        s.claim(d).await.expect("claim");
    }
    want.sort();
    let (mut got, mut after) = (Vec::new(), None);
    loop {
        let page = s.list(Filter::default(), after, 7).await.expect("list");
        got.extend(page.deliveries.iter().map(|d| d.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(got, want);
}

/// A filter few records pass does not make one call read the whole index:
/// a call stops after `SCAN_BUDGET` ids with a short page and a cursor
/// where it stopped, and following the cursors finds what is further down.
/// (A route has no lookup index of its own.)
#[tokio::test]
async fn a_listing_call_reads_a_bounded_share_of_an_index() {
    let server = Server::start();
    let s = server.store(HOUR, HOUR).await;
    let base = unix_ms() - 3_600_000;
    let mut needle = delivery("sess-needle");
    needle.route = "rare".into();
    needle.received_at = base;
    s.claim(needle.clone()).await.expect("claim");
    for i in 0..super::SCAN_BUDGET as u64 + 300 {
        let mut d = delivery(&format!("sess-hay-{i}"));
        d.received_at = base + 1 + i;
        s.claim(d).await.expect("claim");
    }
    let filter = Filter {
        route: Some("rare".into()),
        ..Filter::default()
    };
    let (mut found, mut after, mut calls) = (Vec::new(), None, 0);
    loop {
        calls += 1;
        let page = s.list(filter.clone(), after, 10).await.expect("list");
        found.extend(page.deliveries.iter().map(|d| d.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(found, [needle.id]);
    assert!(calls >= 2, "the first call stopped at its budget");
}

/// Every page of a listing, followed through its cursors, and how many
/// calls it took.
async fn every_page(s: &RedisStore, filter: &Filter) -> (Vec<Delivery>, usize) {
    let (mut found, mut after, mut calls) = (Vec::new(), None, 0);
    loop {
        calls += 1;
        let page = s.list(filter.clone(), after, 10).await.expect("list");
        found.extend(page.deliveries);
        match page.next {
            Some(next) => after = Some(next),
            None => return (found, calls),
        }
    }
}

fn ids(list: &[Delivery]) -> Vec<crate::types::DeliveryId> {
    list.iter().map(|d| d.id).collect()
}

/// Listing by session or reference reads that session's or reference's
/// lookup index, not the store: one call finds the oldest of more records
/// than a call may read (`SCAN_BUDGET`), which a scan would take several
/// calls to reach. Once pruned, it is no longer listed, as by state.
#[tokio::test]
async fn a_lookup_reads_its_own_index_not_the_store() {
    let server = Server::start();
    let base = unix_ms();
    // Every record from `base` on is in the lookup indexes: they alone are
    // read.
    let mut c = server.conn().await;
    let () = c.set("t:lookups_since", base).await.expect("set");
    let s = server.store(HOUR, HOUR).await;
    let mut needle = delivery("sess-needle");
    needle.reference = "order-needle".into();
    needle.received_at = base;
    s.claim(needle.clone()).await.expect("claim");
    for i in 0..super::SCAN_BUDGET as u64 + 300 {
        let mut d = delivery(&format!("sess-hay-{i}"));
        d.received_at = base + 1 + i;
        s.claim(d).await.expect("claim");
    }
    let by_session = Filter {
        session_id: Some(SessionId::new("sess-needle")),
        ..Filter::default()
    };
    let by_reference = Filter {
        reference: Some("order-needle".into()),
        ..Filter::default()
    };
    for filter in [&by_session, &by_reference] {
        let (found, calls) = every_page(&s, filter).await;
        assert_eq!(ids(&found), [needle.id], "{filter:?}");
        assert_eq!(calls, 1, "{filter:?}: found in one call");
    }
    s.deliveries().take(FAR, 1).await.expect("take");
    let outcome = AttemptOutcome::Delivered {
        at: unix_ms(),
        watch_from: None,
    };
    let next = Attempted {
        outcome,
        log: attempt(1),
    };
    s.deliveries()
        .finish(needle.id, 1, next)
        .await
        .expect("finish");
    assert_eq!(
        every_page(&s, &by_session).await.0[0].state,
        DeliveryState::Delivered
    );
    assert_eq!(s.prune(Cutoffs::all(base)).await.expect("prune"), 1);
    assert!(
        pttl(&server, &needle).await > 0,
        "the record outlives its place"
    );
    for filter in [&by_session, &by_reference] {
        let (found, _) = every_page(&s, filter).await;
        assert!(found.is_empty(), "{filter:?}: pruned, as by state");
    }
}

/// Three deliveries received `base` on, of two sessions and two
/// references: one delivered, one dead, one pending.
async fn three_of_two_sessions(s: &RedisStore, base: u64) -> Vec<Delivery> {
    let mut made = Vec::new();
    for (i, (session, reference)) in [
        ("sess-a", "cart-1"),
        ("sess-a", "cart-2"),
        ("sess-b", "cart-1"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut d = delivery(session);
        d.authorization_token = AuthorizationToken::new(format!("t{i}"));
        d.id = crate::types::DeliveryId::for_authorization(&d.session_id, &d.authorization_token);
        d.reference = reference.into();
        d.received_at = base + i as u64;
        s.claim(d.clone()).await.expect("claim");
        made.push(d);
    }
    s.deliveries().take(FAR, 10).await.expect("take");
    let outcomes = [
        AttemptOutcome::Delivered {
            at: unix_ms(),
            watch_from: None,
        },
        AttemptOutcome::Dead {
            error: "422".into(),
        },
    ];
    for (d, outcome) in made.iter_mut().zip(outcomes) {
        d.state = match outcome {
            AttemptOutcome::Delivered { .. } => DeliveryState::Delivered,
            _ => DeliveryState::Dead,
        };
        let log = attempt(1);
        let next = Attempted { outcome, log };
        s.deliveries().finish(d.id, 1, next).await.expect("finish");
    }
    made
}

/// Records written before the lookup indexes began (by an earlier
/// version) are in none of them: they are found by reading the state
/// indexes for that stretch of time, as before, in every state. A record
/// this version changes joins its indexes.
#[tokio::test]
async fn records_written_without_lookup_indexes_are_still_found() {
    let server = Server::start();
    let old = server.store(HOUR, HOUR).await;
    let base = unix_ms() - 600_000;
    let made = three_of_two_sessions(&old, base).await;
    // As an earlier version left them: no lookup indexes, and a time from
    // which on they are kept.
    let mut c = server.conn().await;
    let keys: Vec<String> = c.keys("t:by_*").await.expect("keys");
    assert_eq!(keys.len(), 4, "{keys:?}");
    let () = c.del(&keys).await.expect("del");
    let () = c.set("t:lookups_since", base + 10).await.expect("set");
    let s = server.store(HOUR, HOUR).await;
    let filters = [
        Filter {
            session_id: Some(SessionId::new("sess-a")),
            ..Filter::default()
        },
        Filter {
            reference: Some("cart-1".into()),
            ..Filter::default()
        },
        Filter {
            session_id: Some(SessionId::new("sess-a")),
            ..Filter::state(DeliveryState::Dead)
        },
        Filter {
            reference: Some("cart-1".into()),
            ..Filter::state(DeliveryState::Pending)
        },
    ];
    for filter in &filters {
        let mut want: Vec<&Delivery> = made.iter().filter(|d| filter.accepts(d)).collect();
        want.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(a.id.cmp(&b.id)));
        let (found, _) = every_page(&s, filter).await;
        assert_eq!(
            ids(&found),
            ids(&want.into_iter().cloned().collect::<Vec<_>>())
        );
    }
    // The pending one is delivered by this version: it joins its indexes.
    s.deliveries().take(FAR, 10).await.expect("take");
    let delivered = AttemptOutcome::Delivered {
        at: unix_ms(),
        watch_from: None,
    };
    let next = Attempted {
        outcome: delivered,
        log: attempt(2),
    };
    s.deliveries()
        .finish(made[2].id, 2, next)
        .await
        .expect("finish");
    let members: Vec<String> = c
        .zrange("t:by_session:sess-b", 0, -1)
        .await
        .expect("zrange");
    assert_eq!(members, [made[2].id.to_string()]);
    let members: Vec<String> = c
        .zrange("t:by_reference:cart-1", 0, -1)
        .await
        .expect("zrange");
    assert_eq!(members, [made[2].id.to_string()]);
}

/// A lookup index lives as long as the longest-lived record it holds (an
/// order watch keeps one longer), and sheds the ids of expired records as
/// new ones are claimed, so one every record shares does not grow forever.
/// An expired record is never listed.
#[tokio::test]
async fn lookup_indexes_outlive_their_records_and_shed_expired_ids() {
    let server = Server::start();
    let ttl = Duration::from_millis(400);
    let s = server.store(ttl, HOUR).await;
    let mut c = server.conn().await;
    let mut shared = Vec::new();
    for i in 0..3 {
        let mut d = delivery(&format!("sess-shared-{i}"));
        d.reference = "shared".into();
        delivered(&s, &d, None).await;
        shared.push(d);
    }
    let mut watched = delivery("sess-watched");
    watched.reference = "watched".into();
    delivered(&s, &watched, Some(unix_ms() + 60_000)).await;
    for key in ["t:by_session:sess-watched", "t:by_reference:watched"] {
        let left: i64 = c.pttl(key).await.expect("pttl");
        assert!(left >= pttl(&server, &watched).await, "{key}");
    }
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let by_shared = Filter {
        reference: Some("shared".into()),
        ..Filter::default()
    };
    assert!(every_page(&s, &by_shared).await.0.is_empty(), "expired");
    let mut late = delivery("sess-late");
    late.reference = "shared".into();
    s.claim(late.clone()).await.expect("claim");
    let members: Vec<String> = c
        .zrange("t:by_reference:shared", 0, -1)
        .await
        .expect("zrange");
    assert_eq!(members, [late.id.to_string()], "the expired ids are gone");
    assert_eq!(ids(&every_page(&s, &by_shared).await.0), [late.id]);
    let by_watched = Filter {
        session_id: Some(SessionId::new("sess-watched")),
        ..Filter::default()
    };
    assert_eq!(ids(&every_page(&s, &by_watched).await.0), [watched.id]);
}
