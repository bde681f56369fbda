//! The store conformance suite: every `Store` implementation must pass the
//! same properties. Each property is written once and run on every kind.

use std::sync::Arc;
use std::time::Duration;

use authback::store::memory::MemoryStore;
use authback::store::redis::RedisStore;
use authback::store::sqlite::SqliteStore;
use authback::store::{
    Attempt, AttemptOutcome, Attempted, CheckNext, Claim, Cursor, Cutoffs, Delivery, DeliveryState,
    Excerpt, Filter, RegState, Registration, Replay, Resolve, Source, Store, StoreError, WatchNext,
    WatchState,
};
use authback::types::{unix_ms, AuthorizationToken, DeliveryId, SessionId};
use bytes::Bytes;

use crate::common::{eventually, RedisServer, TempDir, ABSENCE};

const TTL: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Memory,
    File,
    Redis,
}

/// What a store needs to stay alive: its folder, and its server for Redis.
pub(crate) struct Env {
    dir: TempDir,
    pub(crate) redis: Option<RedisServer>,
}

impl Env {
    pub(crate) fn new(kind: Kind) -> Self {
        let dir = TempDir::new();
        let redis = matches!(kind, Kind::Redis).then(|| RedisServer::start(dir.path()));
        Env { dir, redis }
    }
}

/// A store of `kind` whose records live `keep_finished` and `keep_dead`:
/// Redis sets each record's expiry by them; the others keep records until
/// `prune` removes them.
async fn open_retaining(
    kind: Kind,
    env: &Env,
    ttl: Duration,
    keep_finished: Duration,
    keep_dead: Duration,
) -> Arc<dyn Store> {
    match kind {
        Kind::Redis => {
            let url = env.redis.as_ref().expect("redis").url();
            let lease = Duration::from_secs(30);
            Arc::new(
                RedisStore::open(&url, "t:", ttl, TTL, lease)
                    .await
                    .expect("open redis store")
                    .retaining(keep_finished, keep_dead),
            )
        }
        _ => open(kind, env, ttl).await,
    }
}

/// A store of `kind`; file and redis stores keep their data in `env`, so
/// opening again finds it.
pub(crate) async fn open(kind: Kind, env: &Env, ttl: Duration) -> Arc<dyn Store> {
    match kind {
        Kind::Memory => Arc::new(MemoryStore::new(ttl)),
        Kind::File => Arc::new(
            SqliteStore::open(&env.dir.path().join("authback.db"), ttl).expect("open file store"),
        ),
        Kind::Redis => {
            let url = env.redis.as_ref().expect("redis").url();
            let lease = Duration::from_secs(30);
            Arc::new(
                RedisStore::open(&url, "t:", ttl, TTL, lease)
                    .await
                    .expect("open redis store"),
            )
        }
    }
}

fn delivery(session: &str, token: &str) -> Delivery {
    let session_id = SessionId::new(session);
    let authorization_token = AuthorizationToken::new(token);
    let now = unix_ms();
    Delivery {
        id: DeliveryId::for_authorization(&session_id, &authorization_token),
        route: "klarna".into(),
        reference: format!("ref-{session}"),
        session_id,
        authorization_token,
        source: Source::Callback,
        received_at: now,
        payload: Bytes::from(format!(
            r#"{{"authorization_token":"{token}","session_id":"{session}"}}"#
        )),
        arrival_uri: None,
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: now,
        deadline_at: now + 3_600_000,
        last_error: None,
        delivered_at: None,
        watch: None,
        resolution: None,
    }
}

/// An attempt log entry for `finish`; `n` tells entries apart.
fn attempt(n: u64) -> Attempt {
    Attempt {
        at: 1_700_000_000_000 + n,
        duration_ms: n,
        status: (n % 2 == 0).then_some(503),
        error: Some(format!("attempt {n}")),
        retry_in_ms: Some(n * 10),
        redelivery: n % 5 == 0,
        // What the backend answered, where it did: text with a line break,
        // quotes and more than ASCII, or bytes kept as base64.
        response: (n % 2 == 0).then(|| Excerpt {
            content_type: Some("application/json; charset=utf-8".into()),
            body: if n % 4 == 0 {
                format!("{{\"error\":\"bad \\\"signature\\\" {n}\",\n\"é\":\"ü\"}}")
            } else {
                "/wAB".into()
            },
            base64: n % 4 != 0,
            truncated: n % 3 == 0,
        }),
    }
}

/// A time far ahead (year 2096, in ms): everything is due by then.
const FAR: u64 = 4_000_000_000_000;
/// After FAR plus any lease: a crashed holder's leases have expired.
const AFTER_LEASES: u64 = FAR + 3_600_000;

async fn claims_are_atomic_under_concurrency(kind: Kind) {
    let env = Env::new(kind);
    let s = open(kind, &env, TTL).await;
    let d = delivery("sess-c", "tok-c");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (s, d) = (s.clone(), d.clone());
        tasks.push(tokio::spawn(
            async move { s.claim(d).await.expect("claim") },
        ));
    }
    let mut recorded = 0;
    for t in tasks {
        if t.await.expect("task") == Claim::Recorded {
            recorded += 1;
        }
    }
    assert_eq!(recorded, 1, "{kind:?}: one of 32 concurrent claims records");
    for i in 0..20 {
        assert_eq!(
            s.claim(delivery(&format!("s-{i}"), "t"))
                .await
                .expect("claim"),
            Claim::Recorded
        );
    }
    assert_eq!(s.stats().await.expect("stats").pending, 21);
    assert_eq!(
        s.deliveries().take(FAR, 100).await.expect("take").len(),
        21,
        "every recorded claim is queued"
    );
}

async fn retry_then_delivered(kind: Kind) {
    let env = Env::new(kind);
    let s = open(kind, &env, TTL).await;
    let d = delivery("sess-r", "tok-r");
    assert_eq!(s.claim(d.clone()).await.expect("claim"), Claim::Recorded);
    let now = unix_ms();
    let got = s.deliveries().take(now + 1, 10).await.expect("take");
    assert_eq!(got.len(), 1);
    assert!(
        s.deliveries()
            .take(now + 1_000, 10)
            .await
            .expect("take")
            .is_empty(),
        "a leased delivery is not handed out twice"
    );
    let next_at = now + 60_000;
    s.deliveries()
        .finish(
            d.id,
            1,
            Attempted {
                outcome: AttemptOutcome::Retry {
                    next_at,
                    error: "503".into(),
                },
                log: attempt(1),
            },
        )
        .await
        .expect("finish");
    assert_eq!(s.deliveries().next_at().await.expect("next"), Some(next_at));
    assert!(
        s.deliveries()
            .take(now + 1, 10)
            .await
            .expect("take")
            .is_empty(),
        "not due yet"
    );
    let again = s.deliveries().take(next_at, 10).await.expect("take");
    assert_eq!(
        (
            again.len(),
            again[0].attempts,
            again[0].last_error.as_deref()
        ),
        (1, 1, Some("503"))
    );
    s.deliveries()
        .finish(
            d.id,
            2,
            Attempted {
                outcome: AttemptOutcome::Delivered {
                    at: unix_ms(),
                    watch_from: None,
                },
                log: attempt(1),
            },
        )
        .await
        .expect("finish");
    let st = s.stats().await.expect("stats");
    assert_eq!((st.pending, st.dead, st.oldest_pending_at), (0, 0, None));
    assert!(
        s.deliveries().take(FAR, 10).await.expect("take").is_empty(),
        "delivered is never handed out again"
    );
    assert_eq!(s.claim(d.clone()).await.expect("claim"), Claim::Duplicate);
    let delivered = s
        .list(Filter::state(DeliveryState::Delivered), None, 10)
        .await
        .expect("list")
        .deliveries;
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        (delivered[0].attempts, delivered[0].state),
        (2, DeliveryState::Delivered)
    );
    assert!(delivered[0].delivered_at.is_some());
    assert_eq!(
        s.replay(d.id, now, now + 1000).await.expect("replay"),
        Replay::NotDead(DeliveryState::Delivered)
    );
}

async fn dead_stays_dead_until_replayed(kind: Kind) {
    let env = Env::new(kind);
    let s = open(kind, &env, TTL).await;
    let d = delivery("sess-d", "tok-d");
    s.claim(d.clone()).await.expect("claim");
    s.deliveries().take(FAR, 10).await.expect("take");
    s.deliveries()
        .finish(
            d.id,
            1,
            Attempted {
                outcome: AttemptOutcome::Dead {
                    error: "422".into(),
                },
                log: attempt(1),
            },
        )
        .await
        .expect("finish");
    assert_eq!(s.stats().await.expect("stats").dead, 1);
    assert!(s.deliveries().take(FAR, 10).await.expect("take").is_empty());
    assert_eq!(
        s.claim(d.clone()).await.expect("claim"),
        Claim::Duplicate,
        "a dead delivery still dedupes"
    );
    let dead = s
        .list(Filter::state(DeliveryState::Dead), None, 10)
        .await
        .expect("list")
        .deliveries;
    assert_eq!(
        (dead.len(), dead[0].last_error.as_deref()),
        (1, Some("422"))
    );
    let now = unix_ms();
    assert_eq!(
        s.replay(d.id, now, now + 5000).await.expect("replay"),
        Replay::Queued
    );
    assert_eq!(
        s.replay(d.id, now, now + 5000).await.expect("replay"),
        Replay::NotDead(DeliveryState::Pending)
    );
    let unknown = DeliveryId::parse("00000000000000000000000000000000").expect("id");
    assert_eq!(
        s.replay(unknown, now, now).await.expect("replay"),
        Replay::NotFound
    );
    let got = s.deliveries().take(now, 10).await.expect("take");
    assert_eq!(
        (got.len(), got[0].attempts, got[0].deadline_at),
        (1, 1, now + 5000)
    );
}

async fn dedupe_keys_expire_after_the_ttl(kind: Kind) {
    let env = Env::new(kind);
    let s = open(kind, &env, Duration::from_millis(300)).await;
    let delivered = delivery("sess-t1", "tok-t1");
    let pending = delivery("sess-t2", "tok-t2");
    s.claim(delivered.clone()).await.expect("claim");
    s.claim(pending.clone()).await.expect("claim");
    let taken = s.deliveries().take(FAR, 10).await.expect("take");
    assert_eq!(taken.len(), 2);
    s.deliveries()
        .finish(
            delivered.id,
            1,
            Attempted {
                outcome: AttemptOutcome::Delivered {
                    at: unix_ms(),
                    watch_from: None,
                },
                log: attempt(1),
            },
        )
        .await
        .expect("finish");
    let mut fresh = delivered.clone();
    eventually!(
        {
            fresh.received_at = unix_ms();
            s.claim(fresh.clone()).await.expect("claim") == Claim::Recorded
        },
        "{kind:?}: the delivered key forgotten once its TTL passed"
    );
    let mut again = pending.clone();
    again.received_at = unix_ms();
    assert_eq!(
        s.claim(again).await.expect("claim"),
        Claim::Duplicate,
        "a live delivery always dedupes"
    );
}

async fn listing_is_newest_first_and_filtered(kind: Kind) {
    let env = Env::new(kind);
    let s = open(kind, &env, TTL).await;
    let mut ids = Vec::new();
    for i in 0..5u64 {
        let mut d = delivery(&format!("sess-l{i}"), "tok");
        d.received_at += i;
        ids.push(d.id);
        s.claim(d).await.expect("claim");
    }
    let all = s
        .list(Filter::default(), None, 10)
        .await
        .expect("list")
        .deliveries;
    let got: Vec<DeliveryId> = all.iter().map(|d| d.id).collect();
    let want: Vec<DeliveryId> = ids.iter().rev().copied().collect();
    assert_eq!(got, want);
    assert_eq!(
        s.list(Filter::default(), None, 2)
            .await
            .expect("list")
            .deliveries
            .len(),
        2
    );
    assert_eq!(
        s.list(Filter::state(DeliveryState::Pending), None, 10)
            .await
            .expect("list")
            .deliveries
            .len(),
        5
    );
    assert!(s
        .list(Filter::state(DeliveryState::Dead), None, 10)
        .await
        .expect("list")
        .deliveries
        .is_empty());
}

/// How many times `id` appears in `list`.
fn times_listed(list: &[Delivery], id: DeliveryId) -> usize {
    list.iter().filter(|d| d.id == id).count()
}

/// The dead gauge and the dead listing agree, including once a dead
/// delivery's record has expired. The redis store forgets a dead record
/// `dedupe_ttl` after it died (README, redis keys); the memory and file stores
/// keep it until replayed. A callback claimed again after its record went is
/// one delivery: counted once and listed once, also when it dies again.
async fn dead_count_and_listing_agree_after_the_record_expires(kind: Kind) {
    let env = Env::new(kind);
    let ttl = Duration::from_millis(800);
    let s = open(kind, &env, ttl).await;
    let d = delivery("sess-e", "tok-e");
    let make_dead = |attempts: u32| {
        let s = s.clone();
        async move {
            let taken = s.deliveries().take(FAR, 10).await.expect("take");
            assert_eq!(taken.len(), 1, "{kind:?}: one delivery is due");
            s.deliveries()
                .finish(
                    d.id,
                    attempts,
                    Attempted {
                        outcome: AttemptOutcome::Dead {
                            error: "422".into(),
                        },
                        log: attempt(1),
                    },
                )
                .await
                .expect("finish");
        }
    };
    assert_eq!(s.claim(d.clone()).await.expect("claim"), Claim::Recorded);
    make_dead(1).await;
    assert_eq!(s.stats().await.expect("stats").dead, 1);

    // Only a store that forgets dead records records the callback again.
    let forgets = matches!(kind, Kind::Redis);
    let dead_listed = || async {
        s.list(Filter::state(DeliveryState::Dead), None, 10)
            .await
            .expect("list")
            .deliveries
    };
    if forgets {
        eventually!(
            dead_listed().await.is_empty(),
            "{kind:?}: the dead record to expire"
        );
    } else {
        // Kept: still there once the TTL has passed.
        tokio::time::sleep(ttl + ABSENCE).await;
    }
    let dead = dead_listed().await;
    assert_eq!(
        s.stats().await.expect("stats").dead,
        dead.len() as u64,
        "{kind:?}: the dead gauge counts what the dead listing shows"
    );
    let mut again = delivery("sess-e", "tok-e");
    again.received_at = unix_ms();
    let claim = s.claim(again).await.expect("claim");
    assert_eq!(
        claim == Claim::Recorded,
        forgets,
        "{kind:?}: {claim:?} after the dedupe TTL"
    );
    if forgets {
        assert!(
            dead.is_empty(),
            "{kind:?}: an expired dead record is not listed"
        );
        let all = s
            .list(Filter::default(), None, 10)
            .await
            .expect("list")
            .deliveries;
        assert_eq!(
            (times_listed(&all, d.id), all.first().map(|x| x.state)),
            (1, Some(DeliveryState::Pending)),
            "{kind:?}: claimed again, it is one pending delivery"
        );
        let st = s.stats().await.expect("stats");
        assert_eq!((st.pending, st.dead), (1, 0), "{kind:?}");
        make_dead(1).await;
    }

    let dead = s
        .list(Filter::state(DeliveryState::Dead), None, 10)
        .await
        .expect("list")
        .deliveries;
    let all = s
        .list(Filter::default(), None, 10)
        .await
        .expect("list")
        .deliveries;
    let st = s.stats().await.expect("stats");
    assert_eq!(
        (st.dead, dead.len(), times_listed(&all, d.id), st.pending),
        (1, 1, 1, 0),
        "{kind:?}: (dead gauge, dead listed, listed in all, pending)"
    );
    assert_eq!(dead[0].state, DeliveryState::Dead);
}

fn registration(session: &str, due_in_ms: u64) -> Registration {
    let now = unix_ms();
    Registration {
        session_id: SessionId::new(session),
        route: "klarna".into(),
        reference: "ref".into(),
        registered_at: now,
        checks: 0,
        next_check_at: now + due_in_ms,
        state: RegState::Active,
        outcome: None,
        last_error: None,
    }
}

async fn registrations_are_scheduled_and_end(kind: Kind) {
    let env = Env::new(kind);
    let s = open(kind, &env, TTL).await;
    assert!(s
        .register(registration("sess-a", 0))
        .await
        .expect("register"));
    assert!(
        !s.register(registration("sess-a", 0))
            .await
            .expect("register"),
        "idempotent"
    );
    assert!(s
        .register(registration("sess-b", 0))
        .await
        .expect("register"));
    assert!(s
        .register(registration("sess-later", 60_000))
        .await
        .expect("register"));
    assert_eq!(s.active_registrations(), 3);
    let now = unix_ms();
    let mut due = s.checks().take(now, 10).await.expect("due");
    due.sort_by_key(|r| r.session_id.as_str().to_string());
    let names: Vec<&str> = due.iter().map(|r| r.session_id.as_str()).collect();
    assert_eq!(names, ["sess-a", "sess-b"]);
    assert!(
        s.checks().take(now, 10).await.expect("due").is_empty(),
        "leased checks are not handed out twice"
    );
    s.checks()
        .finish(
            SessionId::new("sess-a"),
            1,
            CheckNext::Again {
                at: now + 5,
                error: Some("500".into()),
            },
        )
        .await
        .expect("finish");
    // A recorded callback for sess-b ends its registration while its check is leased.
    s.claim(delivery("sess-b", "tok-b")).await.expect("claim");
    s.checks()
        .finish(
            SessionId::new("sess-b"),
            1,
            CheckNext::Again {
                at: now + 5,
                error: None,
            },
        )
        .await
        .expect("finish");
    let again = s.checks().take(now + 10, 10).await.expect("due");
    let names: Vec<(&str, u32)> = again
        .iter()
        .map(|r| (r.session_id.as_str(), r.checks))
        .collect();
    assert_eq!(names, [("sess-a", 1)], "sess-b ended with its callback");
    assert!(
        !s.register(registration("sess-b", 0))
            .await
            .expect("register"),
        "a registration its callback ended stays ended"
    );
    s.checks()
        .finish(
            SessionId::new("sess-a"),
            2,
            CheckNext::Ended {
                outcome: "complete".into(),
            },
        )
        .await
        .expect("finish");
    assert_eq!(s.active_registrations(), 1, "only sess-later is left");
    assert!(
        !s.register(registration("sess-a", 0))
            .await
            .expect("register"),
        "an ended registration stays ended"
    );
    assert_eq!(
        s.checks().next_at().await.expect("next").map(|t| t > now),
        Some(true)
    );
}

/// Order watch: a delivery the backend accepted is watched from
/// `watch_from`; a check can ask again, redeliver once (pending again, with
/// its watch), confirm, or end unconfirmed (listed and counted).
async fn order_watches_are_scheduled_redelivered_and_end(kind: Kind) {
    let env = Env::new(kind);
    let s = open(kind, &env, TTL).await;
    let (kept, lost) = (delivery("sess-w1", "t"), delivery("sess-w2", "t"));
    for d in [&kept, &lost] {
        s.claim(d.clone()).await.expect("claim");
    }
    assert_eq!(s.deliveries().take(FAR, 10).await.expect("take").len(), 2);
    let now = unix_ms();
    for d in [&kept, &lost] {
        s.deliveries()
            .finish(
                d.id,
                1,
                Attempted {
                    outcome: AttemptOutcome::Delivered {
                        at: now,
                        watch_from: Some(now + 1_000),
                    },
                    log: attempt(1),
                },
            )
            .await
            .expect("finish");
    }
    assert_eq!(
        s.watches().next_at().await.expect("next"),
        Some(now + 1_000)
    );
    assert!(
        s.watches().take(now, 10).await.expect("take").is_empty(),
        "not due yet"
    );
    let due = s.watches().take(now + 1_000, 10).await.expect("take");
    assert_eq!(due.len(), 2);
    let w = due[0].watch.clone().expect("watched");
    assert_eq!(
        (w.state, w.started_at, w.checks, w.redelivered),
        (WatchState::Watching, now, 0, false)
    );
    assert!(
        s.watches().take(FAR, 10).await.expect("take").is_empty(),
        "a leased watch is not handed out twice"
    );
    s.watches()
        .finish(
            kept.id,
            1,
            WatchNext::Again {
                at: now + 2_000,
                error: Some("503".into()),
            },
        )
        .await
        .expect("again");
    s.watches()
        .finish(
            lost.id,
            1,
            WatchNext::Redeliver {
                now: now + 1_000,
                at: now + 3_000,
            },
        )
        .await
        .expect("redeliver");
    // The redelivery is pending again, due at once, with its watch.
    let again = s.deliveries().take(now + 1_000, 10).await.expect("take");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, lost.id);
    assert!(again[0].is_redelivery(), "{:?}", again[0].watch);
    assert_eq!(again[0].attempts, 1, "attempts keep counting");
    s.deliveries()
        .finish(
            lost.id,
            2,
            Attempted {
                outcome: AttemptOutcome::Delivered {
                    at: now + 1_500,
                    watch_from: Some(FAR),
                },
                log: attempt(1),
            },
        )
        .await
        .expect("delivered again");
    // Both are still watched, each at its own time; the redelivered one
    // keeps its watch (started at the first 2xx, redelivered once).
    let due = s.watches().take(now + 2_000, 10).await.expect("take");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, kept.id);
    assert_eq!(
        due[0]
            .watch
            .as_ref()
            .map(|w| (w.checks, w.last_error.clone())),
        Some((1, Some("503".into())))
    );
    s.watches()
        .finish(kept.id, 2, WatchNext::Confirmed)
        .await
        .expect("confirmed");
    let due = s.watches().take(now + 3_000, 10).await.expect("take");
    assert_eq!(due.len(), 1);
    let w = due[0].watch.clone().expect("watched");
    assert_eq!(
        (due[0].id, w.started_at, w.redelivered, due[0].attempts),
        (lost.id, now, true, 2)
    );
    s.watches()
        .finish(lost.id, 2, WatchNext::Unconfirmed { error: None })
        .await
        .expect("unconfirmed");
    assert!(
        s.watches().take(FAR, 10).await.expect("take").is_empty(),
        "both watches ended"
    );
    assert_eq!(s.watches().next_at().await.expect("next"), None);
    let st = s.stats().await.expect("stats");
    assert_eq!((st.pending, st.unconfirmed), (0, 1));
    let unconfirmed = s
        .list(
            Filter {
                state: None,
                watch: Some(WatchState::Unconfirmed),
                ..Filter::default()
            },
            None,
            10,
        )
        .await
        .expect("list")
        .deliveries;
    assert_eq!(unconfirmed.len(), 1);
    assert_eq!(unconfirmed[0].id, lost.id);
    assert_eq!(unconfirmed[0].state, DeliveryState::Delivered);
    let confirmed = s
        .list(
            Filter {
                state: None,
                watch: Some(WatchState::Confirmed),
                ..Filter::default()
            },
            None,
            10,
        )
        .await
        .expect("list")
        .deliveries;
    assert_eq!(confirmed.len(), 1);
    assert_eq!(confirmed[0].id, kept.id);
    let delivered = s
        .list(Filter::state(DeliveryState::Delivered), None, 10)
        .await
        .expect("list")
        .deliveries;
    assert_eq!(delivered.len(), 2, "each listed once");
}

/// Durable stores only: a watch due before a restart is due after it.
async fn durable_store_resumes_order_watches(kind: Kind) {
    let env = Env::new(kind);
    let d = delivery("sess-wr", "t");
    let now = unix_ms();
    {
        let s = open(kind, &env, TTL).await;
        s.claim(d.clone()).await.expect("claim");
        s.deliveries().take(FAR, 10).await.expect("take");
        s.deliveries()
            .finish(
                d.id,
                1,
                Attempted {
                    outcome: AttemptOutcome::Delivered {
                        at: now,
                        watch_from: Some(now + 1_000),
                    },
                    log: attempt(1),
                },
            )
            .await
            .expect("finish");
        s.watches().take(now + 1_000, 10).await.expect("take");
        s.watches()
            .finish(
                d.id,
                1,
                WatchNext::Redeliver {
                    now: now + 1_000,
                    at: now + 2_000,
                },
            )
            .await
            .expect("redeliver");
        // The process "dies" with the redelivery pending and the next check due.
    }
    let s = open(kind, &env, TTL).await;
    let again = s.deliveries().take(AFTER_LEASES, 10).await.expect("take");
    assert_eq!(again.len(), 1);
    assert!(again[0].is_redelivery());
    let due = s.watches().take(AFTER_LEASES, 10).await.expect("take");
    assert_eq!(due.len(), 1);
    let w = due[0].watch.clone().expect("watched");
    assert_eq!((w.started_at, w.checks, w.redelivered), (now, 1, true));
}

/// A watch waiting for Klarna keeps since when its checks have failed,
/// through a restart for the durable kinds; a check that reads the session
/// clears it, and so does the end of the watch.
async fn a_watch_waiting_for_klarna_keeps_since_when(kind: Kind) {
    let env = Env::new(kind);
    let d = delivery("sess-kf", "t");
    let now = unix_ms();
    let failing = |at: u64| WatchNext::KlarnaFailing {
        at,
        since: now + 1_000,
        error: "Klarna unreachable since …: cannot reach Klarna".into(),
    };
    let s = open(kind, &env, TTL).await;
    s.claim(d.clone()).await.expect("claim");
    s.deliveries().take(FAR, 10).await.expect("take");
    let done = Attempted {
        outcome: AttemptOutcome::Delivered {
            at: now,
            watch_from: Some(now + 1_000),
        },
        log: attempt(1),
    };
    s.deliveries().finish(d.id, 1, done).await.expect("finish");
    s.watches().take(now + 1_000, 10).await.expect("take");
    s.watches()
        .finish(d.id, 1, failing(now + 2_000))
        .await
        .expect("klarna failing");
    // The durable kinds read it back as after a restart.
    let s = match kind {
        Kind::Memory => s,
        Kind::File | Kind::Redis => {
            drop(s);
            open(kind, &env, TTL).await
        }
    };
    let waiting = |s: Arc<dyn Store>, at: u64| async move {
        let due = s.watches().take(at, 10).await.expect("take");
        assert_eq!(due.len(), 1, "due again at {at}");
        due[0].watch.clone().expect("watched")
    };
    let w = waiting(s.clone(), AFTER_LEASES).await;
    assert_eq!(
        (w.state, w.checks, w.klarna_failing_since),
        (WatchState::Watching, 1, Some(now + 1_000))
    );
    assert_eq!(
        w.last_error.as_deref(),
        Some("Klarna unreachable since …: cannot reach Klarna")
    );
    let listed = s.list(Filter::default(), None, 10).await.expect("list");
    assert_eq!(
        listed.deliveries[0]
            .watch
            .as_ref()
            .and_then(|w| w.klarna_failing_since),
        Some(now + 1_000)
    );
    // Klarna answers: the wait is over.
    let again = WatchNext::Again {
        at: now + 3_000,
        error: None,
    };
    s.watches().finish(d.id, 2, again).await.expect("again");
    let w = waiting(s.clone(), FAR).await;
    assert_eq!((w.checks, w.klarna_failing_since), (2, None));
    // Failing again, then the watch ends: nothing waits any more.
    s.watches()
        .finish(d.id, 3, failing(now + 4_000))
        .await
        .expect("klarna failing");
    waiting(s.clone(), FAR).await;
    let end = WatchNext::Unconfirmed {
        error: Some("Klarna unreachable since …: cannot reach Klarna".into()),
    };
    s.watches().finish(d.id, 4, end).await.expect("unconfirmed");
    let gone = s.list(Filter::default(), None, 10).await.expect("list");
    let w = gone.deliveries[0].watch.clone().expect("watched");
    assert_eq!(
        (w.state, w.klarna_failing_since, w.last_error.as_deref()),
        (
            WatchState::Unconfirmed,
            None,
            Some("Klarna unreachable since …: cannot reach Klarna")
        )
    );
}

/// The attempt log: recorded with each outcome (retry, dead, delivered),
/// the latest 20 kept, oldest first; `get` returns it with the delivery,
/// and the durable kinds still have it after reopening.
async fn attempts_are_logged_with_their_outcomes(kind: Kind) {
    let env = Env::new(kind);
    let (busy, dead) = (delivery("sess-al", "t"), delivery("sess-ad", "t"));
    {
        let s = open(kind, &env, TTL).await;
        for d in [&busy, &dead] {
            s.claim(d.clone()).await.expect("claim");
        }
        let unknown = DeliveryId::parse("00000000000000000000000000000000").expect("id");
        assert!(s.get(unknown).await.expect("get").is_none());
        let fresh = s.get(busy.id).await.expect("get").expect("recorded");
        assert!(fresh.attempts.is_empty(), "{kind:?}: no attempt yet");
        for n in 1..=25u64 {
            let taken = s.deliveries().take(FAR, 10).await.expect("take");
            assert!(taken.iter().any(|d| d.id == busy.id), "{kind:?}: due again");
            let retry = AttemptOutcome::Retry {
                next_at: 0,
                error: format!("attempt {n}"),
            };
            s.deliveries()
                .finish(
                    busy.id,
                    n as u32,
                    Attempted {
                        outcome: retry,
                        log: attempt(n),
                    },
                )
                .await
                .expect("finish");
            if n == 1 {
                let died = AttemptOutcome::Dead {
                    error: "422".into(),
                };
                s.deliveries()
                    .finish(
                        dead.id,
                        1,
                        Attempted {
                            outcome: died,
                            log: attempt(100),
                        },
                    )
                    .await
                    .expect("finish");
            }
        }
        let got = s.get(busy.id).await.expect("get").expect("recorded");
        let want: Vec<Attempt> = (6..=25).map(attempt).collect();
        assert_eq!(got.attempts, want, "{kind:?}: the latest 20, oldest first");
        assert_eq!(
            (got.delivery.attempts, got.delivery.state),
            (25, DeliveryState::Pending)
        );
        s.deliveries().take(FAR, 10).await.expect("take");
        let delivered = AttemptOutcome::Delivered {
            at: unix_ms(),
            watch_from: None,
        };
        s.deliveries()
            .finish(
                busy.id,
                26,
                Attempted {
                    outcome: delivered,
                    log: attempt(26),
                },
            )
            .await
            .expect("finish");
        let got = s.get(busy.id).await.expect("get").expect("recorded");
        assert_eq!(got.delivery.state, DeliveryState::Delivered);
        assert_eq!(
            (got.attempts.len(), got.attempts.last()),
            (20, Some(&attempt(26)))
        );
        let got = s.get(dead.id).await.expect("get").expect("recorded");
        assert_eq!(got.delivery.state, DeliveryState::Dead);
        assert_eq!(got.attempts, [attempt(100)], "{kind:?}: logged as it died");
    }
    if matches!(kind, Kind::Memory) {
        return;
    }
    let s = open(kind, &env, TTL).await;
    let got = s.get(busy.id).await.expect("get").expect("kept");
    let mut want: Vec<Attempt> = (7..=26).map(attempt).collect();
    assert_eq!(got.attempts, want, "{kind:?}: the log survives reopening");
    // A replayed delivery keeps its log and goes on adding to it.
    let now = unix_ms();
    assert_eq!(
        s.replay(dead.id, now, now + 60_000).await.expect("replay"),
        Replay::Queued
    );
    s.deliveries().take(AFTER_LEASES, 10).await.expect("take");
    let delivered = AttemptOutcome::Delivered {
        at: now,
        watch_from: None,
    };
    s.deliveries()
        .finish(
            dead.id,
            2,
            Attempted {
                outcome: delivered,
                log: attempt(101),
            },
        )
        .await
        .expect("finish");
    let got = s.get(dead.id).await.expect("get").expect("kept");
    want = vec![attempt(100), attempt(101)];
    assert_eq!(got.attempts, want, "{kind:?}");
}

/// Deliveries made for listing: three routes, references and sessions, in
/// all three states, received in pairs that share a millisecond (ties are
/// ordered by id). Returns them as the store should now have them.
async fn listing_fixture(s: &Arc<dyn Store>) -> Vec<Delivery> {
    let base = unix_ms() - 60_000;
    let mut all = Vec::new();
    for i in 0..24u64 {
        let mut d = delivery(&format!("sess-f{}", i % 5), &format!("tok-{i}"));
        d.route = ["klarna", "other"][(i % 2) as usize].into();
        d.reference = format!("cart-{}", i % 3);
        d.received_at = base + (i / 2) * 1_000;
        d.next_attempt_at = d.received_at;
        assert_eq!(s.claim(d.clone()).await.expect("claim"), Claim::Recorded);
        all.push(d);
    }
    assert_eq!(
        s.deliveries().take(FAR, 100).await.expect("take").len(),
        all.len()
    );
    for (i, d) in all.iter_mut().enumerate() {
        let outcome = match i % 3 {
            0 => AttemptOutcome::Delivered {
                at: unix_ms(),
                watch_from: None,
            },
            1 => AttemptOutcome::Dead {
                error: "422".into(),
            },
            _ => AttemptOutcome::Retry {
                next_at: FAR,
                error: "503".into(),
            },
        };
        d.state = match outcome {
            AttemptOutcome::Delivered { .. } => DeliveryState::Delivered,
            AttemptOutcome::Dead { .. } => DeliveryState::Dead,
            AttemptOutcome::Retry { .. } => DeliveryState::Pending,
        };
        s.deliveries()
            .finish(
                d.id,
                1,
                Attempted {
                    outcome,
                    log: attempt(i as u64),
                },
            )
            .await
            .expect("finish");
    }
    all
}

/// Every page of a listing, followed through its cursors.
async fn every_page(s: &Arc<dyn Store>, filter: &Filter, limit: usize) -> Vec<DeliveryId> {
    let (mut got, mut after) = (Vec::new(), None::<Cursor>);
    for _ in 0..100 {
        let page = s.list(filter.clone(), after, limit).await.expect("list");
        assert!(page.deliveries.len() <= limit, "{filter:?}: over the limit");
        got.extend(page.deliveries.iter().map(|d| d.id));
        match page.next {
            Some(next) => after = Some(next),
            None => return got,
        }
    }
    panic!("{filter:?}: the cursor never ends");
}

/// Each filter lists what it accepts, newest first by (received_at, id),
/// and paging through the cursors at any page size gives the same list:
/// nothing twice, nothing left out, also across ties.
async fn filters_and_cursor_pages(kind: Kind) {
    let env = Env::new(kind);
    let s = open(kind, &env, TTL).await;
    let all = listing_fixture(&s).await;
    let mid = all[10].received_at;
    let filters = [
        Filter::default(),
        Filter::state(DeliveryState::Pending),
        Filter::state(DeliveryState::Dead),
        Filter::state(DeliveryState::Delivered),
        Filter {
            route: Some("other".into()),
            ..Filter::default()
        },
        Filter {
            session_id: Some(SessionId::new("sess-f3")),
            ..Filter::default()
        },
        Filter {
            reference: Some("cart-1".into()),
            ..Filter::default()
        },
        Filter {
            since: Some(mid),
            ..Filter::default()
        },
        Filter {
            until: Some(mid),
            ..Filter::default()
        },
        Filter {
            state: Some(DeliveryState::Dead),
            route: Some("klarna".into()),
            since: Some(all[4].received_at),
            until: Some(all[20].received_at),
            ..Filter::default()
        },
        Filter {
            state: Some(DeliveryState::Delivered),
            reference: Some("cart-0".into()),
            until: Some(mid),
            ..Filter::default()
        },
        Filter {
            reference: Some("no-such-cart".into()),
            ..Filter::default()
        },
    ];
    for filter in filters {
        let mut want: Vec<&Delivery> = all.iter().filter(|d| filter.accepts(d)).collect();
        want.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(a.id.cmp(&b.id)));
        let want: Vec<DeliveryId> = want.iter().map(|d| d.id).collect();
        for limit in [1, 2, 5, 100] {
            let got = every_page(&s, &filter, limit).await;
            assert_eq!(got, want, "{kind:?} {filter:?} limit {limit}");
        }
        let first = s.list(filter.clone(), None, 100).await.expect("list");
        assert!(first.next.is_none(), "{kind:?}: all on one page, none next");
    }
    // A cursor names a place, not a delivery: one past every delivery
    // lists nothing, and one at the very top lists everything.
    let last = all.iter().map(|d| d.received_at).min().expect("some");
    let bottom = Cursor::end_of(last);
    let page = s
        .list(Filter::default(), Some(bottom), 10)
        .await
        .expect("list");
    assert!(page.deliveries.is_empty() && page.next.is_none());
    let top = Cursor::end_of(unix_ms() + 1);
    let page = s
        .list(Filter::default(), Some(top), 100)
        .await
        .expect("list");
    assert_eq!(page.deliveries.len(), all.len());
}

/// Takes every due delivery and finishes `d` with `outcome`.
async fn finish_as(s: &Arc<dyn Store>, d: &Delivery, outcome: AttemptOutcome) {
    s.deliveries().take(FAR, 100).await.expect("take");
    s.deliveries()
        .finish(
            d.id,
            1,
            Attempted {
                outcome,
                log: attempt(2),
            },
        )
        .await
        .expect("finish");
}

fn dead() -> AttemptOutcome {
    AttemptOutcome::Dead {
        error: "401".into(),
    }
}

fn delivered(watch_from: Option<u64>) -> AttemptOutcome {
    AttemptOutcome::Delivered {
        at: unix_ms(),
        watch_from,
    }
}

/// Makes `d` a delivered delivery whose order watch ended unconfirmed.
async fn unconfirmed(s: &Arc<dyn Store>, d: &Delivery) {
    finish_as(s, d, delivered(Some(unix_ms()))).await;
    let due = s.watches().take(FAR, 10).await.expect("take");
    assert!(due.iter().any(|w| w.id == d.id), "watched");
    let error = Some("no order".to_string());
    s.watches()
        .finish(d.id, 1, WatchNext::Unconfirmed { error })
        .await
        .expect("unconfirmed");
}

async fn ids_listed(s: &Arc<dyn Store>, filter: Filter) -> Vec<DeliveryId> {
    let mut ids: Vec<DeliveryId> = s
        .list(filter, None, 100)
        .await
        .expect("list")
        .deliveries
        .iter()
        .map(|d| d.id)
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<DeliveryId>) -> Vec<DeliveryId> {
    ids.sort();
    ids
}

/// Resolving closes a dead delivery, or a delivered one whose order watch
/// ended unconfirmed, and nothing else: it leaves the dead and unconfirmed
/// lists and gauges, is listed as resolved with its note, keeps its attempt
/// log and watch, and still dedupes (after reopening, too).
async fn resolving_closes_a_failure_and_keeps_it_as_the_dedupe(kind: Kind) {
    let env = Env::new(kind);
    let (failed, charged, busy, fine) = (
        delivery("sess-rs-dead", "t"),
        delivery("sess-rs-uncf", "t"),
        delivery("sess-rs-pend", "t"),
        delivery("sess-rs-ok", "t"),
    );
    let at = unix_ms();
    {
        let s = open(kind, &env, TTL).await;
        for d in [&failed, &charged, &busy, &fine] {
            assert_eq!(s.claim(d.clone()).await.expect("claim"), Claim::Recorded);
        }
        finish_as(&s, &failed, dead()).await;
        finish_as(&s, &fine, delivered(None)).await;
        unconfirmed(&s, &charged).await;
        let st = s.stats().await.expect("stats");
        assert_eq!(
            (
                st.dead,
                st.unconfirmed,
                st.oldest_dead_at,
                st.oldest_unconfirmed_at
            ),
            (1, 1, Some(failed.received_at), Some(charged.received_at)),
            "{kind:?}"
        );
        let unknown = DeliveryId::parse("00000000000000000000000000000000").expect("id");
        let resolve = |id: DeliveryId| s.resolve(id, at, format!("handled {id}"));
        assert_eq!(resolve(unknown).await.expect("resolve"), Resolve::NotFound);
        assert_eq!(
            resolve(busy.id).await.expect("resolve"),
            Resolve::NotResolvable {
                state: DeliveryState::Pending,
                watch: None
            }
        );
        assert_eq!(
            resolve(fine.id).await.expect("resolve"),
            Resolve::NotResolvable {
                state: DeliveryState::Delivered,
                watch: None
            }
        );
        for d in [&failed, &charged] {
            assert_eq!(
                resolve(d.id).await.expect("resolve"),
                Resolve::Resolved,
                "{kind:?}"
            );
        }
        assert_eq!(
            resolve(failed.id).await.expect("resolve"),
            Resolve::NotResolvable {
                state: DeliveryState::Resolved,
                watch: None
            },
            "{kind:?}: once"
        );
        check_resolved(kind, &s, &failed, &charged, at).await;
    }
    if matches!(kind, Kind::Memory) {
        return;
    }
    // Durable stores have it all after reopening.
    let s = open(kind, &env, TTL).await;
    check_resolved(kind, &s, &failed, &charged, at).await;
}

async fn check_resolved(
    kind: Kind,
    s: &Arc<dyn Store>,
    failed: &Delivery,
    charged: &Delivery,
    at: u64,
) {
    let st = s.stats().await.expect("stats");
    assert_eq!(
        (
            st.dead,
            st.unconfirmed,
            st.oldest_dead_at,
            st.oldest_unconfirmed_at
        ),
        (0, 0, None, None),
        "{kind:?}: resolved ones leave the gauges"
    );
    let both = sorted(vec![failed.id, charged.id]);
    assert_eq!(
        ids_listed(s, Filter::state(DeliveryState::Resolved)).await,
        both,
        "{kind:?}"
    );
    assert!(ids_listed(s, Filter::state(DeliveryState::Dead))
        .await
        .is_empty());
    let incidents = Filter {
        watch: Some(WatchState::Unconfirmed),
        ..Filter::default()
    };
    assert!(ids_listed(s, incidents).await.is_empty(), "{kind:?}");
    let all = s.list(Filter::default(), None, 100).await.expect("list");
    for d in [failed, charged] {
        assert_eq!(times_listed(&all.deliveries, d.id), 1, "{kind:?}");
        let got = s.get(d.id).await.expect("get").expect("kept");
        assert_eq!(got.delivery.state, DeliveryState::Resolved);
        let r = got.delivery.resolution.expect("a resolution");
        assert_eq!(
            (r.at, r.note),
            (at, format!("handled {}", d.id)),
            "{kind:?}"
        );
        assert!(!got.attempts.is_empty(), "{kind:?}: the log stays");
        let mut again = d.clone();
        again.received_at = unix_ms();
        assert_eq!(
            s.claim(again).await.expect("claim"),
            Claim::Duplicate,
            "{kind:?}: a resolved record still dedupes"
        );
        let now = unix_ms();
        assert_eq!(
            s.replay(d.id, now, now + 1000).await.expect("replay"),
            Replay::NotDead(DeliveryState::Resolved)
        );
    }
    let got = s.get(charged.id).await.expect("get").expect("kept");
    assert_eq!(
        got.delivery.watch.map(|w| w.state),
        Some(WatchState::Unconfirmed),
        "{kind:?}: the watch it ended with"
    );
    assert!(
        s.watches().take(FAR, 10).await.expect("take").is_empty(),
        "{kind:?}: nothing left to watch"
    );
}

/// How long the Redis key `key` has left to live, in ms.
async fn redis_pttl(env: &Env, key: &str) -> i64 {
    let url = env.redis.as_ref().expect("redis").url();
    let mut c = ::redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    ::redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut c)
        .await
        .expect("PTTL")
}

/// Retention: finished records (delivered from receipt, resolved from
/// their resolution) go after `keep_finished`, failed ones (dead) after
/// `keep_dead`, pending ones never. The memory and file stores remove them
/// when pruned; Redis lets each record expire at its time, which `prune`
/// then trims from the indexes.
async fn retention_keeps_each_kind_its_own_time(kind: Kind) {
    let env = Env::new(kind);
    let (keep_finished, keep_dead) = (Duration::from_millis(1_500), Duration::from_secs(3_600));
    let s = open_retaining(
        kind,
        &env,
        Duration::from_millis(500),
        keep_finished,
        keep_dead,
    )
    .await;
    let (ok, failed, closed, busy) = (
        delivery("sess-rt-ok", "t"),
        delivery("sess-rt-dead", "t"),
        delivery("sess-rt-res", "t"),
        delivery("sess-rt-pend", "t"),
    );
    for d in [&ok, &failed, &closed, &busy] {
        s.claim(d.clone()).await.expect("claim");
    }
    finish_as(&s, &ok, delivered(None)).await;
    finish_as(&s, &failed, dead()).await;
    finish_as(&s, &closed, dead()).await;
    let resolved_at = unix_ms();
    let note = "refunded".to_string();
    assert_eq!(
        s.resolve(closed.id, resolved_at, note)
            .await
            .expect("resolve"),
        Resolve::Resolved
    );
    let ms = |d: Duration| d.as_millis() as u64;
    let prune = || {
        let now = unix_ms();
        s.prune(Cutoffs {
            dedupe: now - 500,
            finished: now - ms(keep_finished),
            dead: now - ms(keep_dead),
        })
    };
    // Nothing is old enough yet.
    prune().await.expect("prune");
    assert_eq!(
        ids_listed(&s, Filter::default()).await,
        sorted(vec![ok.id, failed.id, closed.id, busy.id]),
        "{kind:?}"
    );
    let mut left;
    eventually!(
        {
            prune().await.expect("prune");
            left = ids_listed(&s, Filter::default()).await;
            left == sorted(vec![failed.id, busy.id])
        },
        "{kind:?}: the finished records to go, the dead and pending to stay; left {left:?}"
    );
    for d in [&ok, &closed] {
        assert!(s.get(d.id).await.expect("get").is_none(), "{kind:?}");
        let mut again = d.clone();
        again.received_at = unix_ms();
        assert_eq!(
            s.claim(again).await.expect("claim"),
            Claim::Recorded,
            "{kind:?}: its dedupe went with it"
        );
    }
    assert_eq!(s.stats().await.expect("stats").dead, 1);
    if let Kind::Redis = kind {
        // Redis keeps the dead record until its own expiry, `keep_dead`
        // after receipt.
        let left = redis_pttl(&env, &format!("t:d:{}", failed.id)).await;
        assert!(
            left > ms(keep_finished) as i64 && left <= ms(keep_dead) as i64,
            "dead record expires in {left} ms"
        );
        return;
    }
    // Once past keep_dead, the dead record goes too: the file store kept
    // every dead record forever before. Pending ones (the two claimed
    // again above among them) stay.
    let pending = sorted(vec![ok.id, closed.id, busy.id]);
    s.prune(Cutoffs::all(unix_ms() + ms(keep_dead)))
        .await
        .expect("prune");
    assert_eq!(ids_listed(&s, Filter::default()).await, pending);
    let st = s.stats().await.expect("stats");
    assert_eq!((st.dead, st.pending), (0, 3), "{kind:?}");
    if let Kind::File = kind {
        drop(s);
        let s = open(kind, &env, TTL).await;
        assert_eq!(ids_listed(&s, Filter::default()).await, pending);
        assert_eq!(s.stats().await.expect("stats").dead, 0);
    }
}

/// Every delivery the unfiltered listing shows, newest first.
async fn listed_all(s: &Arc<dyn Store>) -> Vec<Delivery> {
    let (mut got, mut after) = (Vec::new(), None::<Cursor>);
    for _ in 0..100 {
        let page = s.list(Filter::default(), after, 7).await.expect("list");
        got.extend(page.deliveries);
        match page.next {
            Some(next) => after = Some(next),
            None => return got,
        }
    }
    panic!("the cursor never ends");
}

/// Listing by session or by reference (the lookups each store indexes)
/// gives exactly the deliveries the filter accepts, in order, at any page
/// size; and once `prune` has taken delivered records out of the listing,
/// exactly those of the unfiltered listing the filter accepts.
async fn lookups_list_what_the_filter_accepts(kind: Kind) {
    let env = Env::new(kind);
    let s = open(kind, &env, TTL).await;
    let all = listing_fixture(&s).await;
    let mid = all[12].received_at;
    let session = |n: u64| Some(SessionId::new(format!("sess-f{n}")));
    let mut filters: Vec<Filter> = (0..5)
        .map(|n| Filter {
            session_id: session(n),
            ..Filter::default()
        })
        .chain((0..3).map(|n| Filter {
            reference: Some(format!("cart-{n}")),
            ..Filter::default()
        }))
        .collect();
    filters.extend([
        Filter {
            session_id: session(1),
            ..Filter::state(DeliveryState::Dead)
        },
        Filter {
            reference: Some("cart-2".into()),
            ..Filter::state(DeliveryState::Pending)
        },
        Filter {
            reference: Some("cart-0".into()),
            since: Some(mid),
            ..Filter::default()
        },
        Filter {
            session_id: session(2),
            until: Some(mid),
            ..Filter::default()
        },
        Filter {
            session_id: session(3),
            reference: Some("cart-0".into()),
            ..Filter::default()
        },
        Filter {
            session_id: session(4),
            route: Some("other".into()),
            ..Filter::default()
        },
        Filter {
            session_id: Some(SessionId::new("sess-none")),
            ..Filter::default()
        },
    ]);
    let check = |filter: &Filter, from: &[Delivery]| {
        let mut want: Vec<&Delivery> = from.iter().filter(|d| filter.accepts(d)).collect();
        want.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(a.id.cmp(&b.id)));
        want.iter().map(|d| d.id).collect::<Vec<_>>()
    };
    for filter in &filters {
        let want = check(filter, &all);
        for limit in [1, 3, 100] {
            let got = every_page(&s, filter, limit).await;
            assert_eq!(got, want, "{kind:?} {filter:?} limit {limit}");
        }
    }
    let pruned = s.prune(Cutoffs::all(mid)).await.expect("prune");
    if !matches!(kind, Kind::Memory) {
        assert!(pruned > 0, "{kind:?}: some delivered records were pruned");
    }
    let left = listed_all(&s).await;
    assert!(left.len() + pruned as usize == all.len(), "{kind:?}");
    for filter in &filters {
        let got = every_page(&s, filter, 3).await;
        assert_eq!(got, check(filter, &left), "{kind:?} {filter:?} after prune");
    }
}

macro_rules! conformance {
    ($($property:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $property() { super::$property(super::Kind::Memory).await })*
        }
        mod file {
            $(#[tokio::test] async fn $property() { super::$property(super::Kind::File).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $property() { super::$property(super::Kind::Redis).await })*
        }
    };
}

/// `stats` reports what the store holds by state, and a store opened again
/// (for the durable kinds) reports the same: the console's and the gauge's
/// figures do not start from zero after a restart.
async fn stats_count_what_is_stored_across_a_reopen(kind: Kind) {
    let env = Env::new(kind);
    let (ok, dead_one, waiting) = (
        delivery("sess-st-ok", "tok-st-1"),
        delivery("sess-st-dead", "tok-st-2"),
        delivery("sess-st-wait", "tok-st-3"),
    );
    {
        let s = open(kind, &env, TTL).await;
        for d in [&ok, &dead_one, &waiting] {
            s.claim(d.clone()).await.expect("claim");
        }
        s.deliveries().take(FAR, 10).await.expect("take");
        finish_as(&s, &ok, delivered(None)).await;
        finish_as(&s, &dead_one, dead()).await;
        let st = s.stats().await.expect("stats");
        assert_eq!((st.pending, st.dead), (1, 1), "{st:?}");
        if !matches!(kind, Kind::File) {
            // The file store counts delivered rows off the writer, at open
            // and every 30 s; the others know at once.
            assert_eq!(st.delivered, 1, "{st:?}");
        }
    }
    if matches!(kind, Kind::Memory) {
        return;
    }
    let s = open(kind, &env, TTL).await;
    let st = s.stats().await.expect("stats");
    assert_eq!(
        (st.pending, st.dead, st.delivered, st.resolved),
        (1, 1, 1, 0),
        "{st:?}"
    );
}

conformance!(
    stats_count_what_is_stored_across_a_reopen,
    claims_are_atomic_under_concurrency,
    retry_then_delivered,
    dead_stays_dead_until_replayed,
    dedupe_keys_expire_after_the_ttl,
    listing_is_newest_first_and_filtered,
    registrations_are_scheduled_and_end,
    dead_count_and_listing_agree_after_the_record_expires,
    order_watches_are_scheduled_redelivered_and_end,
    a_watch_waiting_for_klarna_keeps_since_when,
    attempts_are_logged_with_their_outcomes,
    filters_and_cursor_pages,
    resolving_closes_a_failure_and_keeps_it_as_the_dedupe,
    retention_keeps_each_kind_its_own_time,
    lookups_list_what_the_filter_accepts,
);

/// Durable stores only: what was recorded is there after reopening.
async fn durable_store_resumes_after_reopen(kind: Kind) {
    let env = Env::new(kind);
    let (pending, retried, dead, delivered) = (
        delivery("sess-p", "t"),
        delivery("sess-r", "t"),
        delivery("sess-x", "t"),
        delivery("sess-ok", "t"),
    );
    {
        let s = open(kind, &env, TTL).await;
        // A registered session whose callback is recorded ends on disk too;
        // one with no callback stays.
        for session in ["sess-p", "sess-waiting"] {
            assert!(s
                .register(registration(session, 60_000))
                .await
                .expect("register"));
        }
        for d in [&pending, &retried, &dead, &delivered] {
            s.claim(d.clone()).await.expect("claim");
        }
        s.deliveries().take(FAR, 10).await.expect("take");
        s.deliveries()
            .finish(
                retried.id,
                3,
                Attempted {
                    outcome: AttemptOutcome::Retry {
                        next_at: 1,
                        error: "timeout".into(),
                    },
                    log: attempt(1),
                },
            )
            .await
            .expect("finish");
        s.deliveries()
            .finish(
                dead.id,
                1,
                Attempted {
                    outcome: AttemptOutcome::Dead {
                        error: "404".into(),
                    },
                    log: attempt(1),
                },
            )
            .await
            .expect("finish");
        s.deliveries()
            .finish(
                delivered.id,
                1,
                Attempted {
                    outcome: AttemptOutcome::Delivered {
                        at: unix_ms(),
                        watch_from: None,
                    },
                    log: attempt(1),
                },
            )
            .await
            .expect("finish");
        // `pending` stays leased: the process "dies" with it in flight.
    }
    let s = open(kind, &env, TTL).await;
    assert_eq!(
        s.active_registrations(),
        1,
        "the registration ended by its callback stays ended after reopen"
    );
    let mut resumed = s.deliveries().take(AFTER_LEASES, 10).await.expect("take");
    resumed.sort_by_key(|d| d.session_id.as_str().to_string());
    let got: Vec<(&str, u32)> = resumed
        .iter()
        .map(|d| (d.session_id.as_str(), d.attempts))
        .collect();
    assert_eq!(
        got,
        [("sess-p", 0), ("sess-r", 3)],
        "pending deliveries resume with their attempt counts"
    );
    assert_eq!(resumed[0].payload, pending.payload);
    assert_eq!(resumed[0].authorization_token, pending.authorization_token);
    let st = s.stats().await.expect("stats");
    assert_eq!((st.pending, st.dead), (2, 1));
    for d in [&pending, &retried, &dead, &delivered] {
        assert_eq!(
            s.claim(d.clone()).await.expect("claim"),
            Claim::Duplicate,
            "{:?} dedupes after reopen",
            d.session_id
        );
    }
    assert_eq!(
        s.list(Filter::state(DeliveryState::Delivered), None, 10)
            .await
            .expect("list")
            .deliveries
            .len(),
        1
    );
}

async fn durable_store_prunes_delivered_records_past_the_ttl(kind: Kind) {
    let env = Env::new(kind);
    let s = open(kind, &env, TTL).await;
    let (old, live) = (delivery("sess-old", "t"), delivery("sess-live", "t"));
    s.claim(old.clone()).await.expect("claim");
    s.claim(live.clone()).await.expect("claim");
    s.deliveries().take(FAR, 10).await.expect("take");
    s.deliveries()
        .finish(
            old.id,
            1,
            Attempted {
                outcome: AttemptOutcome::Delivered {
                    at: unix_ms(),
                    watch_from: None,
                },
                log: attempt(1),
            },
        )
        .await
        .expect("finish");
    assert_eq!(
        s.prune(Cutoffs::all(unix_ms() + 1)).await.expect("prune"),
        1,
        "only the delivered record goes"
    );
    assert!(s
        .list(Filter::state(DeliveryState::Delivered), None, 10)
        .await
        .expect("list")
        .deliveries
        .is_empty());
    assert_eq!(s.stats().await.expect("stats").pending, 1);
}

#[tokio::test]
async fn file_store_resumes_after_reopen() {
    durable_store_resumes_after_reopen(Kind::File).await
}

#[tokio::test]
async fn redis_store_resumes_after_reopen() {
    durable_store_resumes_after_reopen(Kind::Redis).await
}

#[tokio::test]
async fn file_store_resumes_order_watches() {
    durable_store_resumes_order_watches(Kind::File).await
}

#[tokio::test]
async fn redis_store_resumes_order_watches() {
    durable_store_resumes_order_watches(Kind::Redis).await
}

#[tokio::test]
async fn file_store_prunes_delivered_records_past_the_ttl() {
    durable_store_prunes_delivered_records_past_the_ttl(Kind::File).await
}

#[tokio::test]
async fn redis_store_prunes_delivered_records_past_the_ttl() {
    durable_store_prunes_delivered_records_past_the_ttl(Kind::Redis).await
}

/// Redis only: a replica upgraded from a version that kept the dead index as
/// `dead` (scored by receipt) moves what is there into `dead_by_expiry`,
/// scored by the record's expiry, and drops ids whose record is gone, so
/// the gauge and the listing agree from the first read.
#[tokio::test]
async fn redis_store_moves_the_legacy_dead_index() {
    let env = Env::new(Kind::Redis);
    let s = open(Kind::Redis, &env, TTL).await;
    let (kept, gone) = (delivery("sess-legacy", "t"), delivery("sess-gone", "t"));
    s.claim(kept.clone()).await.expect("claim");
    s.deliveries().take(FAR, 10).await.expect("take");
    s.deliveries()
        .finish(
            kept.id,
            1,
            Attempted {
                outcome: AttemptOutcome::Dead {
                    error: "422".into(),
                },
                log: attempt(1),
            },
        )
        .await
        .expect("finish");
    let url = env.redis.as_ref().expect("redis").url();
    let mut c = ::redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    // The keys as the earlier version left them: `gone` has no record.
    let () = ::redis::pipe()
        .del("t:dead_by_expiry")
        .ignore()
        .zadd("t:dead", kept.id.to_string(), kept.received_at)
        .ignore()
        .zadd("t:dead", gone.id.to_string(), gone.received_at)
        .ignore()
        .query_async(&mut c)
        .await
        .expect("legacy keys");
    let st = s.stats().await.expect("stats");
    let dead = s
        .list(Filter::state(DeliveryState::Dead), None, 10)
        .await
        .expect("list")
        .deliveries;
    let ids: Vec<DeliveryId> = dead.iter().map(|d| d.id).collect();
    assert_eq!((st.dead, ids), (1, vec![kept.id]));
    let (legacy, score): (String, Option<f64>) = ::redis::pipe()
        .cmd("TYPE")
        .arg("t:dead")
        .zscore("t:dead_by_expiry", kept.id.to_string())
        .query_async(&mut c)
        .await
        .expect("read keys");
    assert_eq!(legacy, "none", "the legacy index is gone");
    let expiry = score.expect("moved") as u64;
    assert!(
        expiry > unix_ms() + TTL.as_millis() as u64 - 60_000,
        "scored by the record's expiry, not its receipt: {expiry}"
    );
    let now = unix_ms();
    assert_eq!(
        s.replay(kept.id, now, now + 5000).await.expect("replay"),
        Replay::Queued
    );
    assert_eq!(s.stats().await.expect("stats").dead, 0);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = TempDir::new();
    let path = dir.path().join("authback.db");
    drop(SqliteStore::open(&path, TTL).expect("create"));
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.pragma_update(None, "user_version", 99).expect("bump");
    drop(conn);
    let err = SqliteStore::open(&path, TTL).err().expect("refused");
    assert!(
        matches!(&err, StoreError::Open(why) if why.contains("newer")),
        "{err}"
    );
}
