//! The `file` store: SQLite in WAL mode with `synchronous = FULL`, so a
//! callback is on disk before its 204. This file owns the schema, opening,
//! and the in-process index the reads answer from. Once open it must never
//! write itself: every change goes through the writer thread (`writer`).

/// The columns of `deliveries` a claim writes, in the order
/// `row_to_delivery` reads them. Defined before `mod writer` so the
/// writer's statements share it.
macro_rules! columns {
    () => {
        "id, route, reference, session_id, authorization_token, source, received_at, payload, \
         arrival_uri, state, attempts, next_attempt_at, deadline_at, last_error, delivered_at"
    };
}

/// Every column `row_to_delivery` reads: the claimed ones, then the order
/// watch and the resolution, which only later changes write.
macro_rules! read_columns {
    () => {
        concat!(
            columns!(),
            ", watch_state, watch_started_at, watch_next_at, watch_checks, \
             watch_redelivered, watch_error, watch_klarna_failing_since, resolved_at, \
             resolve_note"
        )
    };
}

mod list;
mod probes;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::HashSet;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::dedupe::DedupeKeys;
use bytes::Bytes;
use rusqlite::{params, Connection, Row, TransactionBehavior};
use tokio::sync::oneshot;

use super::outbox::{listed, page, Outbox};
use super::probes::ProbeNonce;
use super::registrations::{CheckNext, RegIndex, RegState, Registration};
use super::watches::WatchIndex;
use crate::store::api::Store;
use crate::store::model::{
    ready, ArrivalUri, BoxFuture, Claim, Cursor, Cutoffs, Delivery, DeliveryState, Detail, Filter,
    Page, Replay, Resolution, Resolve, Source, Stats, StoreError, StoreKind, Watch, WatchNext,
    WatchState,
};
use crate::store::queue::{Attempted, Checks, Deliveries, Queue, Watches};
use crate::types::{unix_ms, AuthorizationToken, DeliveryId, SessionId};
use writer::Cmd;

/// The schema this build writes. Each step in `MIGRATIONS` moves one version up.
pub(crate) const SCHEMA_VERSION: i64 = 8;

const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE deliveries (
         seq INTEGER PRIMARY KEY,
         id BLOB NOT NULL UNIQUE,
         route TEXT NOT NULL,
         reference TEXT NOT NULL,
         session_id TEXT NOT NULL,
         authorization_token TEXT NOT NULL,
         source TEXT NOT NULL,
         received_at INTEGER NOT NULL,
         payload BLOB NOT NULL,
         arrival_uri TEXT,
         state INTEGER NOT NULL,
         attempts INTEGER NOT NULL,
         next_attempt_at INTEGER NOT NULL,
         deadline_at INTEGER NOT NULL,
         last_error TEXT,
         delivered_at INTEGER
     );
     CREATE INDEX deliveries_state_received ON deliveries (state, received_at);",
    // 1 -> 2: registrations for the Read Session fallback.
    "CREATE TABLE registrations (
         session_id TEXT PRIMARY KEY,
         route TEXT NOT NULL,
         reference TEXT NOT NULL,
         registered_at INTEGER NOT NULL,
         checks INTEGER NOT NULL,
         next_check_at INTEGER NOT NULL,
         state INTEGER NOT NULL,
         outcome TEXT,
         last_error TEXT
     );",
    // 2 -> 3: order watch. NULL columns mean "not watched", which is what
    // every delivery recorded before this version is.
    "ALTER TABLE deliveries ADD COLUMN watch_state INTEGER;
     ALTER TABLE deliveries ADD COLUMN watch_started_at INTEGER;
     ALTER TABLE deliveries ADD COLUMN watch_next_at INTEGER;
     ALTER TABLE deliveries ADD COLUMN watch_checks INTEGER;
     ALTER TABLE deliveries ADD COLUMN watch_redelivered INTEGER;
     ALTER TABLE deliveries ADD COLUMN watch_error TEXT;",
    // 3 -> 4: the attempt log (a JSON array, latest `ATTEMPTS_KEPT`), kept
    // in the row so it goes wherever the row goes (claimed again, pruned);
    // NULL is an empty log. The indexes serve the admin API's lookups of
    // one session or one merchant reference among delivered rows.
    "ALTER TABLE deliveries ADD COLUMN attempt_log TEXT;
     CREATE INDEX deliveries_session ON deliveries (session_id);
     CREATE INDEX deliveries_reference ON deliveries (reference);",
    // 4 -> 5: since when a running watch's checks have failed (unix ms);
    // NULL while Klarna answers, and for every watch before this version.
    "ALTER TABLE deliveries ADD COLUMN watch_klarna_failing_since INTEGER;",
    // 5 -> 6: the doctor's one-time probe nonces, each kept a minute.
    "CREATE TABLE probes (nonce BLOB PRIMARY KEY, expires_at INTEGER NOT NULL) WITHOUT ROWID;",
    // 6 -> 7: resolved deliveries (state 3): when and why an operator
    // closed a failure. Retention finds them by when they were resolved.
    "ALTER TABLE deliveries ADD COLUMN resolved_at INTEGER;
     ALTER TABLE deliveries ADD COLUMN resolve_note TEXT;
     CREATE INDEX deliveries_resolved ON deliveries (resolved_at) WHERE state = 3;",
    // 7 -> 8: the lookups by session and by reference (`list::finished`)
    // read their rows newest first straight from the index, so a reference
    // shared by many rows stops at a page instead of sorting them all. They
    // replace the single-column indexes, which they serve too, and are
    // built after those are dropped, on their freed pages. Building them
    // reads the table once, at the first start of this version.
    "DROP INDEX deliveries_session;
     DROP INDEX deliveries_reference;
     CREATE INDEX deliveries_session_received ON deliveries (session_id, received_at);
     CREATE INDEX deliveries_reference_received ON deliveries (reference, received_at);",
];

/// Rows of one kind removed per prune transaction, so acks are never held
/// long.
const PRUNE_CHUNK: usize = 5000;

const REGS_SQL: &str =
    "SELECT session_id, route, reference, registered_at, checks, next_check_at, state, \
     outcome, last_error FROM registrations WHERE state = 0";
/// What the index holds: pending and dead deliveries, and the watches still
/// running or ended unconfirmed (of a delivery pending, dead or delivered;
/// a resolved one has left both).
const LIVE_SQL: &str = concat!(
    "SELECT ",
    read_columns!(),
    " FROM deliveries WHERE state IN (0, 2, 4) OR (state = 1 AND watch_state IN (0, 2, 3))"
);

/// A delivery state as the `state` column holds it. The codes are the
/// schema's: a new state takes the next free one.
fn state_code(s: DeliveryState) -> i64 {
    match s {
        DeliveryState::Pending => 0,
        DeliveryState::Delivered => 1,
        DeliveryState::Dead => 2,
        DeliveryState::Resolved => 3,
        DeliveryState::Released => 4,
    }
}

fn state_from(code: i64) -> DeliveryState {
    match code {
        1 => DeliveryState::Delivered,
        2 => DeliveryState::Dead,
        3 => DeliveryState::Resolved,
        4 => DeliveryState::Released,
        _ => DeliveryState::Pending,
    }
}

fn watch_code(s: WatchState) -> i64 {
    match s {
        WatchState::Watching => 0,
        WatchState::Confirmed => 1,
        WatchState::Unconfirmed => 2,
        WatchState::Releasing => 3,
    }
}

fn watch_from_code(code: i64) -> Option<WatchState> {
    match code {
        0 => Some(WatchState::Watching),
        1 => Some(WatchState::Confirmed),
        2 => Some(WatchState::Unconfirmed),
        3 => Some(WatchState::Releasing),
        _ => None,
    }
}

/// What the writer and the async side share. Whoever needs both `index`
/// and `watches` locks them in that order.
struct Shared {
    index: Mutex<Outbox>,
    regs: Mutex<RegIndex>,
    /// Watching and unconfirmed deliveries: where order-watch checks are
    /// leased from, and the incident list.
    watches: Mutex<WatchIndex>,
    /// Ids known to be committed: duplicates stop here, off the disk.
    seen: DedupeKeys,
    /// Why the last write failed, until a write succeeds again.
    failure: Mutex<Option<String>>,
    /// How many delivered and resolved rows the file holds, as last counted
    /// off the writer (`count_stored`): what `stats` reports of them.
    stored: Stored,
}

/// Counts of rows no index in memory holds, read on their own connection.
#[derive(Default)]
struct Stored {
    delivered: std::sync::atomic::AtomicU64,
    resolved: std::sync::atomic::AtomicU64,
}

/// How often the delivered and resolved rows are counted again.
const COUNT_EVERY: Duration = Duration::from_secs(30);

/// Counts the rows by state on `conn` (not the writer's: in WAL mode the
/// read blocks no commit) into `stored`.
fn count_stored(conn: &Connection, stored: &Stored) -> rusqlite::Result<()> {
    use std::sync::atomic::Ordering;
    let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM deliveries GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
    let (mut delivered, mut resolved) = (0, 0);
    for row in rows {
        let (state, n) = row?;
        match state_from(state) {
            DeliveryState::Delivered => delivered = n as u64,
            DeliveryState::Resolved => resolved = n as u64,
            _ => {}
        }
    }
    stored.delivered.store(delivered, Ordering::Relaxed);
    stored.resolved.store(resolved, Ordering::Relaxed);
    Ok(())
}

impl Shared {
    fn index(&self) -> MutexGuard<'_, Outbox> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn regs(&self) -> MutexGuard<'_, RegIndex> {
        self.regs.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn watches(&self) -> MutexGuard<'_, WatchIndex> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn set_failure(&self, f: Option<String>) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = f;
    }
}

pub struct SqliteStore {
    /// Dropped with the store, which ends the checkpoint thread.
    _stop_checkpoints: Mutex<Sender<()>>,
    /// Into the writer thread; dropped with the store, which ends it.
    tx: Mutex<Sender<Cmd>>,
    shared: Arc<Shared>,
    path: PathBuf,
    dedupe_ttl_ms: u64,
}

impl SqliteStore {
    /// Opens (creating or migrating) the database and loads the live
    /// deliveries. Fails if the file cannot be opened, read or written.
    pub fn open(path: &Path, dedupe_ttl: Duration) -> Result<Self, StoreError> {
        let err = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Open(format!("{}: {what}: {e}", path.display()))
        };
        // The file holds full authorization tokens and callback URLs: it
        // is the user's alone. A folder made for it is too (0700); one
        // that exists is left as it is. The file is made 0600 before
        // SQLite opens it, whatever the umask, and SQLite gives the -wal
        // and -shm files beside it the database file's mode.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| err("cannot create its folder", &e))?;
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| err("cannot create", &e))?;
        let mut conn = Connection::open(path).map_err(|e| err("cannot open", &e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| err("cannot read the database", &e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(err("cannot switch to WAL mode", &mode));
        }
        // Checkpoints mostly run on their own connection (`checkpointer`), so
        // a commit rarely waits for one; the writer's own automatic
        // checkpoint stays as a backstop that bounds the WAL under
        // sustained load.
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; \
             PRAGMA wal_autocheckpoint = 10000; PRAGMA journal_size_limit = 67108864;",
        )
        .map_err(|e| err("cannot configure", &e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| err("cannot configure", &e))?;
        migrate(&mut conn).map_err(|e| err("cannot migrate the schema", &e))?;
        heartbeat(&mut conn).map_err(|e| err("cannot write", &e))?;

        let mut index = Outbox::default();
        // Leases live in this process only: after a restart every watch
        // still running is due again at its next check.
        let mut watches = WatchIndex::default();
        {
            let mut stmt = conn.prepare(LIVE_SQL).map_err(|e| err("cannot read", &e))?;
            let rows = stmt
                .query_map([], row_to_delivery)
                .map_err(|e| err("cannot read", &e))?;
            for row in rows {
                let d = row.map_err(|e| err("cannot read a delivery", &e))?;
                if d.state != DeliveryState::Delivered {
                    index.insert(d.clone());
                }
                // Ignores the unwatched and the confirmed.
                watches.insert(d);
            }
        }
        let mut regs = RegIndex::default();
        {
            let mut stmt = conn.prepare(REGS_SQL).map_err(|e| err("cannot read", &e))?;
            let rows = stmt
                .query_map([], row_to_registration)
                .map_err(|e| err("cannot read", &e))?;
            for row in rows {
                regs.insert(row.map_err(|e| err("cannot read a registration", &e))?);
            }
        }
        let shared = Arc::new(Shared {
            index: Mutex::new(index),
            regs: Mutex::new(regs),
            watches: Mutex::new(watches),
            seen: DedupeKeys::new(dedupe_ttl),
            failure: Mutex::new(None),
            stored: Stored::default(),
        });
        // Counted once before serving, so a restart reports the truth.
        count_stored(&conn, &shared.stored).map_err(|e| err("cannot count the deliveries", &e))?;
        let tx = writer::spawn(conn, shared.clone())
            .map_err(|e| err("cannot start the writer thread", &e))?;
        let checkpoint_conn = Connection::open(path).map_err(|e| err("cannot open", &e))?;
        let (stop_checkpoints, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("authback-ckpt".into())
            .spawn({
                let shared = shared.clone();
                move || checkpointer(checkpoint_conn, stopped, &shared.stored)
            })
            .map_err(|e| err("cannot start the checkpoint thread", &e))?;
        Ok(Self {
            _stop_checkpoints: Mutex::new(stop_checkpoints),
            tx: Mutex::new(tx),
            shared,
            path: path.to_path_buf(),
            dedupe_ttl_ms: dedupe_ttl.as_millis() as u64,
        })
    }

    /// The pending and dead deliveries a listing with `filter` after
    /// `after` shows, as the index holds them, and the ids among them to
    /// read again from disk. Each watched one is taken from the watch
    /// index, whose copy follows its watch; the outbox's copy keeps the
    /// watch as it was when the delivery was queued again, so one whose
    /// watch has since ended (confirmed, and so out of the watch index) is
    /// read again. Also every watching and unconfirmed delivery, whatever
    /// its state. The watch part of `filter` is left for the caller, which
    /// applies it once the reread copies are in.
    fn listed_in_memory(
        &self,
        filter: &Filter,
        after: Option<Cursor>,
    ) -> (Vec<Delivery>, Vec<DeliveryId>) {
        let unwatched = Filter {
            watch: None,
            ..filter.clone()
        };
        let index = self.shared.index();
        let watches = self.shared.watches();
        let mut reread = Vec::new();
        let mut out: Vec<Delivery> = index
            .list(&unwatched, after)
            .into_iter()
            .filter(|d| {
                let ended = d.watch.is_some() && watches.get(&d.id).is_none();
                if ended {
                    reread.push(d.id);
                }
                d.watch.is_none()
            })
            .collect();
        out.extend(
            watches
                .iter()
                .filter(|d| listed(&unwatched, after, d))
                .cloned(),
        );
        (out, reread)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Cmd,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(make(reply));
        let stopped = || {
            // Nothing will clear this: readiness says so until a restart.
            let why = "the database writer has stopped".to_string();
            self.shared.set_failure(Some(why.clone()));
            StoreError::Unavailable(why)
        };
        if sent.is_err() {
            return Err(stopped());
        }
        rx.await.map_err(|_| stopped())?
    }
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "schema version {version} was written by a newer authback (this one knows {SCHEMA_VERSION}); upgrade, or restore a backup"
        )));
    }
    for (from, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn heartbeat(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('heartbeat', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![unix_ms().to_string()],
    )?;
    tx.commit()
}

fn row_to_registration(r: &Row<'_>) -> rusqlite::Result<Registration> {
    Ok(Registration {
        session_id: SessionId::new(r.get::<_, String>(0)?),
        route: r.get(1)?,
        reference: r.get(2)?,
        registered_at: r.get::<_, i64>(3)? as u64,
        checks: r.get::<_, i64>(4)? as u32,
        next_check_at: r.get::<_, i64>(5)? as u64,
        state: if r.get::<_, i64>(6)? == 0 {
            RegState::Active
        } else {
            RegState::Ended
        },
        outcome: r.get(7)?,
        last_error: r.get(8)?,
    })
}

fn row_to_delivery(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    let id: Vec<u8> = r.get(0)?;
    let bad = |i: usize, what: &str| {
        rusqlite::Error::InvalidColumnType(i, what.into(), rusqlite::types::Type::Blob)
    };
    let source: String = r.get(5)?;
    let payload: Vec<u8> = r.get(7)?;
    // A watch's other columns are written with its state, so a row with a
    // state and a NULL among them is damaged: reading it fails.
    let watch = match r.get::<_, Option<i64>>(15)? {
        None => None,
        Some(code) => Some(Watch {
            state: watch_from_code(code).ok_or_else(|| bad(15, "watch_state"))?,
            started_at: r.get::<_, i64>(16)? as u64,
            next_check_at: r.get::<_, i64>(17)? as u64,
            checks: r.get::<_, i64>(18)? as u32,
            redelivered: r.get::<_, i64>(19)? != 0,
            last_error: r.get(20)?,
            klarna_failing_since: r.get::<_, Option<i64>>(21)?.map(|t| t as u64),
        }),
    };
    Ok(Delivery {
        id: DeliveryId::from_bytes(&id).ok_or_else(|| bad(0, "id"))?,
        route: r.get(1)?,
        reference: r.get(2)?,
        session_id: SessionId::new(r.get::<_, String>(3)?),
        authorization_token: AuthorizationToken::new(r.get::<_, String>(4)?),
        source: Source::parse(&source).ok_or_else(|| bad(5, "source"))?,
        received_at: r.get::<_, i64>(6)? as u64,
        payload: Bytes::from(payload),
        arrival_uri: r.get::<_, Option<String>>(8)?.map(ArrivalUri),
        state: state_from(r.get(9)?),
        attempts: r.get::<_, i64>(10)? as u32,
        next_attempt_at: r.get::<_, i64>(11)? as u64,
        deadline_at: r.get::<_, i64>(12)? as u64,
        last_error: r.get(13)?,
        delivered_at: r.get::<_, Option<i64>>(14)?.map(|t| t as u64),
        watch,
        resolution: match r.get::<_, Option<i64>>(22)? {
            None => None,
            Some(at) => Some(Resolution {
                at: at as u64,
                note: r.get::<_, Option<String>>(23)?.unwrap_or_default(),
            }),
        },
    })
}

/// Copies committed WAL pages into the database a few times a second,
/// beside the writer rather than inside its commits. Runs until the store is
/// dropped.
fn checkpointer(conn: Connection, stop: Receiver<()>, stored: &Stored) {
    let mut counted = std::time::Instant::now();
    loop {
        match stop.recv_timeout(Duration::from_millis(250)) {
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "background checkpoint failed; the writer's own checkpoint remains");
                }
                if counted.elapsed() >= COUNT_EVERY {
                    counted = std::time::Instant::now();
                    if let Err(e) = count_stored(&conn, stored) {
                        tracing::debug!(error = %e, "counting stored deliveries failed; the last count stays");
                    }
                }
            }
            _ => return,
        }
    }
}

impl Store for SqliteStore {
    fn kind(&self) -> StoreKind {
        StoreKind::File
    }

    fn durable(&self) -> bool {
        true
    }

    fn claim(&self, d: Delivery) -> BoxFuture<'_, Result<Claim, StoreError>> {
        Box::pin(async move {
            if self.shared.seen.contains(&d.id) {
                return Ok(Claim::Duplicate);
            }
            let cutoff = d.received_at.saturating_sub(self.dedupe_ttl_ms);
            let id = d.id;
            let claim = self.call(|reply| Cmd::Claim { d, cutoff, reply }).await?;
            // Only an optimisation (the database dedupes), so it is kept off
            // the writer thread, whose time every waiting callback shares.
            self.shared.seen.insert_new(id);
            Ok(claim)
        })
    }

    fn list(
        &self,
        filter: Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Page, StoreError>> {
        Box::pin(async move {
            let (mut out, reread) = self.listed_in_memory(&filter, after);
            // Watching and unconfirmed ones are all in memory; delivered
            // and resolved ones otherwise only on disk.
            let on_disk = filter
                .state
                .is_none_or(|s| matches!(s, DeliveryState::Delivered | DeliveryState::Resolved))
                && !matches!(
                    filter.watch,
                    Some(WatchState::Watching | WatchState::Unconfirmed)
                );
            if on_disk || !reread.is_empty() {
                // One more than a page: whether more are left.
                let finished = on_disk.then_some(limit.saturating_add(1));
                let query = filter.clone();
                let disk = self
                    .call(|reply| Cmd::List {
                        finished,
                        filter: query,
                        after,
                        reread,
                        reply,
                    })
                    .await?;
                // Read after the memory snapshot, so the newer of the two.
                let fresh: HashSet<DeliveryId> = disk.iter().map(|d| d.id).collect();
                out.retain(|d| !fresh.contains(&d.id));
                out.extend(disk);
            }
            out.retain(|d| listed(&filter, after, d));
            Ok(page(out, limit))
        })
    }

    fn get(&self, id: DeliveryId) -> BoxFuture<'_, Result<Option<Detail>, StoreError>> {
        // From disk: the index holds no logs, and the disk is never behind
        // it (the index changes only after a commit).
        Box::pin(self.call(move |reply| Cmd::Get { id, reply }))
    }

    fn replay(
        &self,
        id: DeliveryId,
        now: u64,
        deadline_at: u64,
    ) -> BoxFuture<'_, Result<Replay, StoreError>> {
        Box::pin(self.call(move |reply| Cmd::Replay {
            id,
            now,
            deadline_at,
            reply,
        }))
    }

    fn resolve(
        &self,
        id: DeliveryId,
        at: u64,
        note: String,
    ) -> BoxFuture<'_, Result<Resolve, StoreError>> {
        Box::pin(self.call(move |reply| Cmd::Resolve {
            id,
            at,
            note,
            reply,
        }))
    }

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StoreError>> {
        let mut s = self.shared.index().stats();
        let watches = self.shared.watches();
        s.unconfirmed = watches.unconfirmed().count() as u64;
        s.oldest_unconfirmed_at = watches.oldest_unconfirmed();
        drop(watches);
        let stored = &self.shared.stored;
        s.delivered = stored.delivered.load(std::sync::atomic::Ordering::Relaxed);
        s.resolved = stored.resolved.load(std::sync::atomic::Ordering::Relaxed);
        ready(s)
    }

    fn health(&self) -> Result<(), String> {
        match &*self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            Some(why) => Err(format!("{}: {why}", self.path.display())),
            None => Ok(()),
        }
    }

    fn register(&self, r: Registration) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.call(move |reply| Cmd::Register { r, reply }))
    }

    fn active_registrations(&self) -> u64 {
        self.shared.regs().len() as u64
    }

    fn prune(&self, cutoffs: Cutoffs) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut total = 0;
            loop {
                let (n, more) = self.call(|reply| Cmd::Prune { cutoffs, reply }).await?;
                total += n;
                if !more {
                    return Ok(total);
                }
            }
        })
    }

    fn put_probe(
        &self,
        nonce: ProbeNonce,
        expires_at: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let op = probes::Op::Put {
            nonce,
            expires_at,
            now: unix_ms(),
        };
        Box::pin(async move {
            self.call(|reply| Cmd::Probe { op, reply })
                .await
                .map(|_| ())
        })
    }

    fn take_probe(&self, nonce: ProbeNonce, now: u64) -> BoxFuture<'_, Result<bool, StoreError>> {
        let op = probes::Op::Take { nonce, now };
        Box::pin(self.call(move |reply| Cmd::Probe { op, reply }))
    }
}

impl Queue<Deliveries> for SqliteStore {
    fn take(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        ready(self.shared.index().take_due(now, limit))
    }

    fn next_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        ready(self.shared.index().next_due())
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
        Box::pin(self.call(move |reply| Cmd::Finish {
            id,
            attempts,
            outcome,
            attempt,
            reply,
        }))
    }
}

impl Queue<Checks> for SqliteStore {
    fn take(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Registration>, StoreError>> {
        ready(self.shared.regs().take_due(now, limit))
    }

    fn next_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        ready(self.shared.regs().next_due())
    }

    fn finish(
        &self,
        session: SessionId,
        checks: u32,
        next: CheckNext,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.call(move |reply| Cmd::FinishCheck {
            session,
            checks,
            next,
            reply,
        }))
    }
}

impl Queue<Watches> for SqliteStore {
    fn take(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        ready(self.shared.watches().take_due(now, limit))
    }

    fn next_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        ready(self.shared.watches().next_due())
    }

    fn finish(
        &self,
        id: DeliveryId,
        checks: u32,
        next: WatchNext,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.call(move |reply| Cmd::FinishWatch {
            id,
            checks,
            next,
            reply,
        }))
    }
}
