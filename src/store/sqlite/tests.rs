//! What the conformance suite cannot see from outside the file store: a
//! database of the previous schema, and order-watch cases whose index and
//! disk must agree (prune, leases, a watch that ends mid-redelivery).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{params, Connection};

use super::{SqliteStore, MIGRATIONS, SCHEMA_VERSION};
use crate::store::api::Store;
use crate::store::model::Cursor;
use crate::store::model::{
    Attempt, AttemptOutcome, Cutoffs, Delivery, DeliveryState, Filter, Source, WatchNext,
    WatchState,
};
use crate::store::queue::{Attempted, Queues};
use crate::types::{AuthorizationToken, SessionId};

const TTL: Duration = Duration::from_secs(3600);

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
const FAR: u64 = u64::MAX / 4;

/// A folder of its own, removed when the test ends.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!(
            "authback-sqlite-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }
    fn db(&self) -> PathBuf {
        self.0.join("authback.db")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn delivery(session: &str, now: u64) -> Delivery {
    Delivery::new_pending(
        "default".into(),
        "ref".into(),
        SessionId::new(session),
        AuthorizationToken::new("t"),
        Source::Callback,
        Bytes::from_static(b"{}"),
        None,
        now,
        Duration::from_secs(600),
    )
}

/// Claims `d`, and delivers it with its first watch check due at `now`.
async fn watched(s: &SqliteStore, d: &Delivery, now: u64) {
    s.claim(d.clone()).await.expect("claim");
    s.deliveries().take(FAR, 10).await.expect("take");
    let outcome = AttemptOutcome::Delivered {
        at: now,
        watch_from: Some(now),
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

#[tokio::test]
async fn a_version_2_database_migrates_and_keeps_its_deliveries() {
    let dir = Dir::new("v2");
    let (pending, delivered) = (delivery("sess-p", 1_000), delivery("sess-d", 2_000));
    {
        let mut conn = Connection::open(dir.db()).expect("open");
        let tx = conn.transaction().expect("tx");
        for sql in &MIGRATIONS[..2] {
            tx.execute_batch(sql).expect("old schema");
        }
        tx.pragma_update(None, "user_version", 2).expect("version");
        for (d, state) in [(&pending, 0), (&delivered, 1)] {
            tx.execute(
                concat!(
                    "INSERT INTO deliveries (",
                    columns!(),
                    ") VALUES (?1, 'default', 'ref', ?2, 't', 'callback', ?3, x'7b7d', NULL, ?4, 0, ?3, ?5, NULL, NULL)"
                ),
                params![
                    &d.id.bytes()[..],
                    d.session_id.as_str(),
                    d.received_at as i64,
                    state,
                    d.deadline_at as i64
                ],
            )
            .expect("old row");
        }
        tx.commit().expect("commit");
    }
    let s = SqliteStore::open(&dir.db(), TTL).expect("migrates");
    let listed = s
        .list(Filter::default(), None, 10)
        .await
        .expect("list")
        .deliveries;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|d| d.watch.is_none()), "{listed:?}");
    // The migrated rows take watches like new ones.
    watched(&s, &pending, 5_000).await;
    let due = s.watches().take(5_000, 10).await.expect("take");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, pending.id);
    // And an attempt log, which rows from before version 4 start empty.
    let log = |id| {
        let s = &s;
        async move { s.get(id).await.expect("get").expect("kept").attempts }
    };
    assert_eq!(log(pending.id).await, [attempt(1)]);
    assert!(log(delivered.id).await.is_empty());
    drop(s);
    let conn = Connection::open(dir.db()).expect("open");
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(v, SCHEMA_VERSION);
    let mut indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'deliveries_%'")
        .expect("indexes")
        .query_map([], |r| r.get(0))
        .expect("indexes")
        .collect::<rusqlite::Result<_>>()
        .expect("index");
    indexes.sort();
    assert_eq!(
        indexes,
        [
            "deliveries_reference_received",
            "deliveries_resolved",
            "deliveries_session_received",
            "deliveries_state_received"
        ]
    );
}

#[tokio::test]
async fn prune_keeps_running_watches_and_drops_old_unconfirmed_ones() {
    let dir = Dir::new("prune");
    let s = SqliteStore::open(&dir.db(), TTL).expect("open");
    let (watching, confirmed, unconfirmed) = (
        delivery("sess-w", 1_000),
        delivery("sess-c", 1_000),
        delivery("sess-u", 1_000),
    );
    for d in [&watching, &confirmed, &unconfirmed] {
        watched(&s, d, 2_000).await;
    }
    assert_eq!(s.watches().take(2_000, 10).await.expect("take").len(), 3);
    s.watches()
        .finish(confirmed.id, 1, WatchNext::Confirmed)
        .await
        .expect("confirmed");
    let error = Some("no order".to_string());
    s.watches()
        .finish(unconfirmed.id, 1, WatchNext::Unconfirmed { error })
        .await
        .expect("unconfirmed");
    let again = WatchNext::Again {
        at: 3_000,
        error: None,
    };
    s.watches()
        .finish(watching.id, 1, again)
        .await
        .expect("again");
    assert_eq!(s.stats().await.expect("stats").unconfirmed, 1);
    assert_eq!(s.prune(Cutoffs::all(FAR)).await.expect("prune"), 2);
    assert_eq!(s.stats().await.expect("stats").unconfirmed, 0);
    drop(s);
    let s = SqliteStore::open(&dir.db(), TTL).expect("reopen");
    let listed = s
        .list(Filter::default(), None, 10)
        .await
        .expect("list")
        .deliveries;
    let ids: Vec<_> = listed.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![watching.id], "only the running watch stays");
    assert_eq!(s.watches().take(3_000, 10).await.expect("take").len(), 1);
}

#[tokio::test]
async fn a_retried_redelivery_does_not_release_its_leased_watch() {
    let dir = Dir::new("lease");
    let s = SqliteStore::open(&dir.db(), TTL).expect("open");
    let d = delivery("sess-l", 1_000);
    watched(&s, &d, 2_000).await;
    s.watches().take(2_000, 10).await.expect("take");
    let redeliver = WatchNext::Redeliver {
        now: 2_000,
        at: 3_000,
    };
    s.watches()
        .finish(d.id, 1, redeliver)
        .await
        .expect("redeliver");
    assert_eq!(s.deliveries().take(2_000, 10).await.expect("take").len(), 1);
    // The next check is leased while the redelivery fails.
    assert_eq!(s.watches().take(3_000, 10).await.expect("take").len(), 1);
    let retry = AttemptOutcome::Retry {
        next_at: 4_000,
        error: "503".into(),
    };
    s.deliveries()
        .finish(
            d.id,
            2,
            Attempted {
                outcome: retry,
                log: attempt(1),
            },
        )
        .await
        .expect("retry");
    assert!(s.watches().take(FAR, 10).await.expect("take").is_empty());
    let again = WatchNext::Again {
        at: 5_000,
        error: None,
    };
    s.watches().finish(d.id, 2, again).await.expect("again");
    let due = s.watches().take(5_000, 10).await.expect("take");
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].state, due[0].attempts), (DeliveryState::Pending, 2));
}

#[tokio::test]
async fn a_watch_confirmed_mid_redelivery_is_listed_confirmed_once() {
    let dir = Dir::new("confirmed");
    let s = SqliteStore::open(&dir.db(), TTL).expect("open");
    let d = delivery("sess-m", 1_000);
    watched(&s, &d, 2_000).await;
    s.watches().take(2_000, 10).await.expect("take");
    let redeliver = WatchNext::Redeliver {
        now: 2_000,
        at: 3_000,
    };
    s.watches()
        .finish(d.id, 1, redeliver)
        .await
        .expect("redeliver");
    s.watches().take(3_000, 10).await.expect("take");
    s.watches()
        .finish(d.id, 2, WatchNext::Confirmed)
        .await
        .expect("confirmed");
    let confirmed = Filter {
        state: None,
        watch: Some(WatchState::Confirmed),
        ..Filter::default()
    };
    let listed = s.list(confirmed, None, 10).await.expect("list").deliveries;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, DeliveryState::Pending);
    let all = s
        .list(Filter::default(), None, 10)
        .await
        .expect("list")
        .deliveries;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        all[0].watch.as_ref().map(|w| (w.state, w.checks)),
        Some((WatchState::Confirmed, 2))
    );
}

/// The file holds full authorization tokens and callback URLs: the
/// database and the -wal and -shm files SQLite puts beside it are the
/// user's alone (0600), and so is a folder created for them (0700),
/// whatever the umask. A folder that exists keeps its mode.
#[tokio::test]
async fn the_database_its_journals_and_a_new_folder_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let files = |db: &std::path::Path| {
        ["", "-wal", "-shm"].map(|suffix| {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        })
    };
    let dir = Dir::new("modes");

    let db = dir.0.join("state/authback/authback.db");
    let s = SqliteStore::open(&db, TTL).expect("opens");
    s.claim(delivery("sess-mode", 1_000)).await.expect("claim");
    for folder in ["state", "state/authback"] {
        assert_eq!(mode(&dir.0.join(folder)), 0o700, "{folder}");
    }
    // Checked while the store is open: SQLite removes -wal and -shm when
    // the last connection closes.
    for f in files(&db) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    drop(s);

    let shared = dir.0.join("shared");
    std::fs::create_dir(&shared).expect("dir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let db = shared.join("authback.db");
    let s = SqliteStore::open(&db, TTL).expect("opens");
    s.claim(delivery("sess-mode", 1_000)).await.expect("claim");
    assert_eq!(mode(&shared), 0o755, "an existing folder is left as it is");
    for f in files(&db) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    drop(s);
    // Opened again, the file keeps its records: it is never truncated.
    let s = SqliteStore::open(&db, TTL).expect("opens again");
    let listed = s.list(Filter::default(), None, 10).await.expect("list");
    assert_eq!(listed.deliveries.len(), 1);
}

/// What SQLite plans for the delivered rows a listing with `filter` (after
/// `after`) reads: one line per step of `EXPLAIN QUERY PLAN`.
fn delivered_plan(db: &Connection, filter: &Filter, after: Option<Cursor>) -> Vec<String> {
    let (sql, args) = super::list::finished_query(filter, after, 101);
    let mut stmt = db
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("plan");
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
        .expect("plan rows");
    rows.collect::<rusqlite::Result<_>>().expect("plan row")
}

/// Each lookup the console makes reads the index made for it, whatever
/// the planner's statistics say: left to itself, SQLite walks the state and
/// time index for a session (it spares a sort) and reads every delivered
/// row. The statistics written here make that walk look cheap and the
/// session and reference indexes useless; the plans must not move.
#[test]
fn each_listing_filter_reads_its_own_index() {
    let mut db = Connection::open_in_memory().expect("open");
    super::migrate(&mut db).expect("migrate");
    let session = Filter {
        session_id: Some(SessionId::new("sess-1")),
        ..Filter::default()
    };
    let reference = Filter {
        reference: Some("order-1".into()),
        ..Filter::default()
    };
    let window = Filter {
        since: Some(1_000),
        until: Some(2_000),
        ..Filter::state(DeliveryState::Delivered)
    };
    let cursor = Some(Cursor {
        received_at: 1_500,
        id: crate::types::DeliveryId::from_bytes(&[7; 16]).expect("id"),
    });
    let both = Filter {
        reference: Some("order-1".into()),
        ..session.clone()
    };
    let within = Filter {
        since: Some(1_000),
        ..session.clone()
    };
    let cases = [
        (&session, None, "deliveries_session_received (session_id=?)"),
        (
            &session,
            cursor,
            "deliveries_session_received (session_id=? AND received_at<?)",
        ),
        (
            &within,
            None,
            "deliveries_session_received (session_id=? AND received_at>?)",
        ),
        (&both, None, "deliveries_session_received (session_id=?)"),
        (
            &reference,
            None,
            "deliveries_reference_received (reference=?)",
        ),
        (
            &reference,
            cursor,
            "deliveries_reference_received (reference=? AND received_at<?)",
        ),
        (
            &window,
            None,
            "deliveries_state_received (state=? AND received_at>? AND received_at<?)",
        ),
        (
            &window,
            cursor,
            "deliveries_state_received (state=? AND received_at>? AND received_at<?)",
        ),
        (
            &Filter::default(),
            None,
            "deliveries_state_received (state=?)",
        ),
        (
            &Filter::default(),
            cursor,
            "deliveries_state_received (state=? AND received_at<?)",
        ),
    ];
    let check = |db: &Connection, stats: &str| {
        for (filter, after, index) in &cases {
            let plan = delivered_plan(db, filter, *after);
            let search = format!("SEARCH deliveries USING INDEX {index}");
            assert_eq!(
                plan[0], search,
                "{stats}: {filter:?} after {after:?}: {plan:?}"
            );
            assert!(
                plan.iter().all(|step| !step.starts_with("SCAN")),
                "{stats}: {filter:?}: {plan:?}"
            );
        }
    };
    check(&db, "no statistics");
    db.execute_batch(
        "ANALYZE;
         DELETE FROM sqlite_stat1;
         INSERT INTO sqlite_stat1 VALUES
             ('deliveries', 'deliveries_state_received', '5000000 2 1'),
             ('deliveries', 'deliveries_session_received', '5000000 2500000 2500000'),
             ('deliveries', 'deliveries_reference_received', '5000000 2500000 2500000');
         ANALYZE sqlite_schema;",
    )
    .expect("statistics");
    check(&db, "misleading statistics");
}
