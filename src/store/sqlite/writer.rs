//! The writer thread of the `file` store: the one connection that writes,
//! the command channel into it, and group commit (whatever arrived while the
//! previous commit was syncing goes into one transaction, so concurrent
//! callbacks share one fsync).
//!
//! It applies a change to the in-process index only after its commit
//! returned, and must never do so before: the index never shows what the disk
//! does not hold, and a caller that goes away mid-claim cannot leave the two
//! apart.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use super::{
    heartbeat, list, probes, row_to_delivery, state_code, state_from, watch_from_code, Shared,
    PRUNE_CHUNK,
};
use crate::store::model::{
    resolvable, Attempt, AttemptOutcome, Claim, Cursor, Cutoffs, Delivery, Detail, Filter, Replay,
    Resolve, StoreError, WatchNext,
};
use crate::store::registrations::{CheckNext, Registration};
use crate::store::watches::WatchIndex;
use crate::types::{DeliveryId, SessionId};

/// Most commands committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Records a claim. A delivered record older than the dedupe TTL (?16) no
/// longer counts and is replaced; a pending or dead one always counts, and
/// so does one whose order watch is running or ended unconfirmed (the watch
/// index holds it until `prune` removes both).
const CLAIM_SQL: &str = concat!(
    "INSERT INTO deliveries (",
    columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
     ON CONFLICT (id) DO UPDATE SET
         route = excluded.route, reference = excluded.reference, source = excluded.source,
         received_at = excluded.received_at, payload = excluded.payload, arrival_uri = excluded.arrival_uri,
         state = excluded.state, attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,
         deadline_at = excluded.deadline_at, last_error = NULL, delivered_at = NULL,
         watch_state = NULL, watch_started_at = NULL, watch_next_at = NULL, watch_checks = NULL,
         watch_redelivered = NULL, watch_error = NULL, watch_klarna_failing_since = NULL,
         attempt_log = NULL
     WHERE deliveries.state = 1 AND deliveries.received_at <= ?16
         AND (deliveries.watch_state IS NULL OR deliveries.watch_state = 1)"
);
const ONE_SQL: &str = concat!("SELECT ", read_columns!(), " FROM deliveries WHERE id = ?1");
/// Starts the watch of a delivery that has none; a redelivery keeps its own.
const WATCH_START_SQL: &str =
    "UPDATE deliveries SET watch_state = 0, watch_started_at = ?2, watch_next_at = ?3, \
     watch_checks = 0, watch_redelivered = 0, watch_error = NULL, watch_klarna_failing_since = NULL \
     WHERE id = ?1 AND watch_state IS NULL";

/// A write for the writer thread; each carries where its answer goes.
pub(super) enum Cmd {
    Claim {
        d: Delivery,
        cutoff: u64,
        reply: oneshot::Sender<Result<Claim, StoreError>>,
    },
    Finish {
        id: DeliveryId,
        attempts: u32,
        outcome: AttemptOutcome,
        attempt: Attempt,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Replay {
        id: DeliveryId,
        now: u64,
        deadline_at: u64,
        reply: oneshot::Sender<Result<Replay, StoreError>>,
    },
    /// Up to `finished` of the newest delivered and resolved deliveries
    /// `filter` accepts after `after`, and those of `reread` still recorded.
    List {
        finished: Option<usize>,
        filter: Filter,
        after: Option<Cursor>,
        reread: Vec<DeliveryId>,
        reply: oneshot::Sender<Result<Vec<Delivery>, StoreError>>,
    },
    /// One delivery with its attempt log.
    Get {
        id: DeliveryId,
        reply: oneshot::Sender<Result<Option<Detail>, StoreError>>,
    },
    FinishWatch {
        id: DeliveryId,
        checks: u32,
        next: WatchNext,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Register {
        r: Registration,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    FinishCheck {
        session: SessionId,
        checks: u32,
        next: CheckNext,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Resolve {
        id: DeliveryId,
        at: u64,
        note: String,
        reply: oneshot::Sender<Result<Resolve, StoreError>>,
    },
    /// One chunk of retention: how many rows went, and whether more may be
    /// left past it.
    Prune {
        cutoffs: Cutoffs,
        reply: oneshot::Sender<Result<(u64, bool), StoreError>>,
    },
    /// A probe nonce kept or taken (`probes::run`).
    Probe {
        op: probes::Op,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
}

/// The result of one command inside a transaction, before it is known whether
/// the transaction commits.
enum Done {
    Claim(Claim),
    Unit,
    Replay(Replay),
    List(Vec<Delivery>),
    /// Boxed: a whole delivery, where the other answers are a word or two.
    Got(Option<Box<Detail>>),
    Resolved(Resolve),
    /// How many rows went, whether more may be left, and the ids that
    /// leave the indexes (dead and unconfirmed ones).
    Pruned(u64, bool, Vec<DeliveryId>),
    Registered(bool),
    Probe(bool),
}

/// Starts the writer thread on `conn`, the store's only writing connection.
/// It runs until every sender of the returned channel is dropped.
pub(super) fn spawn(conn: Connection, shared: Arc<Shared>) -> std::io::Result<Sender<Cmd>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("authback-sqlite".into())
        .spawn(move || writer(conn, rx, shared))?;
    Ok(tx)
}

/// The writer thread: takes every command waiting, runs them in one
/// transaction (`run_batch`, which falls back to one transaction a command
/// when any fails), commits once, then applies and answers.
fn writer(mut conn: Connection, rx: Receiver<Cmd>, shared: Arc<Shared>) {
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => {
                // While writes fail, probe so readiness comes back by itself.
                let failing = shared
                    .failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_some();
                if failing && heartbeat(&mut conn).is_ok() {
                    tracing::info!("database writable again");
                    shared.set_failure(None);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, batch, &shared);
    }
}

fn run_batch(conn: &mut Connection, batch: Vec<Cmd>, shared: &Shared) {
    // Fast path: the whole batch in one transaction. If any command fails,
    // nothing of the batch is kept and each command is tried alone, so one
    // bad command cannot take the others down with it.
    let started = std::time::Instant::now();
    // Sessions this batch registers: not in the index until it commits.
    let registering: Vec<&SessionId> = batch
        .iter()
        .filter_map(|c| match c {
            Cmd::Register { r, .. } => Some(&r.session_id),
            _ => None,
        })
        .collect();
    let together = (|| -> rusqlite::Result<Vec<Done>> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done = batch
            .iter()
            .map(|cmd| execute(&tx, cmd, shared, &registering))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        tx.commit()?;
        Ok(done)
    })();
    match together {
        Ok(done) => {
            tracing::trace!(
                commands = batch.len(),
                commit_us = started.elapsed().as_micros() as u64,
                "committed"
            );
            shared.set_failure(None);
            for (cmd, d) in batch.into_iter().zip(done) {
                answer(cmd, Ok(d), shared);
            }
        }
        Err(_) if batch.len() > 1 => {
            for cmd in batch {
                run_batch(conn, vec![cmd], shared);
            }
        }
        Err(e) => {
            let why = format!("cannot write the database: {e}");
            tracing::error!(error = %why, "database write failed; nothing of it was recorded");
            shared.set_failure(Some(why.clone()));
            for cmd in batch {
                answer(cmd, Err(why.clone()), shared);
            }
        }
    }
}

fn execute(
    db: &Connection,
    cmd: &Cmd,
    shared: &Shared,
    registering: &[&SessionId],
) -> rusqlite::Result<Done> {
    match cmd {
        Cmd::Claim { d, cutoff, .. } => claim(db, d, cutoff, shared, registering),
        Cmd::Register { r, .. } => register(db, r),
        Cmd::FinishCheck {
            session,
            checks,
            next,
            ..
        } => finish_check(db, session, checks, next),
        Cmd::Finish {
            id: delivery,
            attempts,
            outcome,
            attempt,
            ..
        } => finish(db, delivery, attempts, outcome, attempt),
        Cmd::Replay {
            id,
            now,
            deadline_at,
            ..
        } => replay(db, id, now, deadline_at),
        Cmd::Get { id, .. } => Ok(Done::Got(list::one(db, id)?.map(Box::new))),
        Cmd::List {
            finished,
            filter,
            after,
            reread,
            ..
        } => list_some(db, finished, filter, after, reread),
        Cmd::FinishWatch {
            id, checks, next, ..
        } => finish_watch(db, id, checks, next),
        Cmd::Resolve { id, at, note, .. } => resolve(db, id, *at, note),
        Cmd::Prune { cutoffs, .. } => prune(db, cutoffs),
        Cmd::Probe { op, .. } => probes::run(db, op).map(Done::Probe),
    }
}

/// Records a new delivery unless its id is known; one recorded ends its
/// session's registration.
fn claim(
    db: &Connection,
    d: &Delivery,
    cutoff: &u64,
    shared: &Shared,
    registering: &[&SessionId],
) -> rusqlite::Result<Done> {
    let n = db.prepare_cached(CLAIM_SQL)?.execute(params![
        &d.id.bytes()[..],
        d.route,
        d.reference,
        d.session_id.as_str(),
        d.authorization_token.expose(),
        d.source.as_str(),
        d.received_at as i64,
        &d.payload[..],
        d.arrival_uri.as_ref().map(|u| u.0.as_str()),
        state_code(d.state),
        i64::from(d.attempts),
        d.next_attempt_at as i64,
        d.deadline_at as i64,
        d.last_error,
        d.delivered_at.map(|t| t as i64),
        *cutoff as i64,
    ])?;
    if n != 1 {
        return Ok(Done::Claim(Claim::Duplicate));
    }
    // Recorded: the session needs no more Read Session checks. The
    // index holds every active registration the disk does, so most
    // claims (sessions never registered) skip the statement.
    let registered = shared.regs().contains(&d.session_id) || registering.contains(&&d.session_id);
    if registered {
        db.prepare_cached(
            "UPDATE registrations SET state = 1, outcome = ?2 WHERE session_id = ?1 AND state = 0",
        )?
        .execute(params![d.session_id.as_str(), d.source.as_str()])?;
    }
    Ok(Done::Claim(Claim::Recorded))
}

/// Registers a session for Read Session checks, once.
fn register(db: &Connection, r: &Registration) -> rusqlite::Result<Done> {
    let n = db
        .prepare_cached(
            "INSERT INTO registrations (session_id, route, reference, registered_at, checks, next_check_at, state)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, 0) ON CONFLICT (session_id) DO NOTHING",
        )?
        .execute(params![
            r.session_id.as_str(),
            r.route,
            r.reference,
            r.registered_at as i64,
            r.next_check_at as i64
        ])?;
    Ok(Done::Registered(n == 1))
}

/// Records what a Read Session check decided.
fn finish_check(
    db: &Connection,
    session: &SessionId,
    checks: &u32,
    next: &CheckNext,
) -> rusqlite::Result<Done> {
    match next {
        CheckNext::Again { at, error } => db
            .prepare_cached("UPDATE registrations SET checks = ?2, next_check_at = ?3, last_error = ?4 WHERE session_id = ?1 AND state = 0")?
            .execute(params![session.as_str(), i64::from(*checks), *at as i64, error])?,
        CheckNext::Ended { outcome } => db
            .prepare_cached("UPDATE registrations SET checks = ?2, state = 1, outcome = ?3 WHERE session_id = ?1 AND state = 0")?
            .execute(params![session.as_str(), i64::from(*checks), outcome])?,
    };
    Ok(Done::Unit)
}

/// Records an attempt's outcome and, in the same transaction, its entry
/// in the attempt log.
fn finish(
    db: &Connection,
    delivery: &DeliveryId,
    attempts: &u32,
    outcome: &AttemptOutcome,
    attempt: &Attempt,
) -> rusqlite::Result<Done> {
    let id = &delivery.bytes()[..];
    let attempts = i64::from(*attempts);
    match outcome {
        AttemptOutcome::Delivered { at, watch_from } => {
            let n = db
                .prepare_cached("UPDATE deliveries SET state = 1, attempts = ?2, delivered_at = ?3, last_error = NULL WHERE id = ?1")?
                .execute(params![id, attempts, *at as i64])?;
            if let Some(first) = watch_from {
                db.prepare_cached(WATCH_START_SQL)?
                    .execute(params![id, *at as i64, *first as i64])?;
            }
            n
        }
        AttemptOutcome::Retry { next_at, error } => db
            .prepare_cached("UPDATE deliveries SET attempts = ?2, next_attempt_at = ?3, last_error = ?4 WHERE id = ?1")?
            .execute(params![id, attempts, *next_at as i64, error])?,
        AttemptOutcome::Dead { error } => db
            .prepare_cached("UPDATE deliveries SET state = 2, attempts = ?2, last_error = ?3 WHERE id = ?1")?
            .execute(params![id, attempts, error])?,
    };
    // In the outcome's transaction: the log never shows an attempt
    // whose outcome was not recorded, nor misses one that was.
    list::append(db, delivery, attempt)?;
    Ok(Done::Unit)
}

/// Queues a dead delivery again.
fn replay(
    db: &Connection,
    id: &DeliveryId,
    now: &u64,
    deadline_at: &u64,
) -> rusqlite::Result<Done> {
    let key = &id.bytes()[..];
    let n = db
        .prepare_cached("UPDATE deliveries SET state = 0, next_attempt_at = ?2, deadline_at = ?3 WHERE id = ?1 AND state = 2")?
        .execute(params![key, *now as i64, *deadline_at as i64])?;
    if n == 1 {
        return Ok(Done::Replay(Replay::Queued));
    }
    let state: Option<i64> = db
        .prepare_cached("SELECT state FROM deliveries WHERE id = ?1")?
        .query_row(params![key], |r| r.get(0))
        .optional()?;
    Ok(Done::Replay(state.map_or(Replay::NotFound, |s| {
        Replay::NotDead(state_from(s))
    })))
}

/// Delivered and resolved records from disk (when `finished` gives a page
/// size), and the live ones `reread` names as they are on disk now.
fn list_some(
    db: &Connection,
    finished: &Option<usize>,
    filter: &Filter,
    after: &Option<Cursor>,
    reread: &[DeliveryId],
) -> rusqlite::Result<Done> {
    let mut out = Vec::new();
    if let Some(limit) = finished {
        out.extend(list::finished(db, filter, *after, *limit)?);
    }
    for id in reread {
        let d = db
            .prepare_cached(ONE_SQL)?
            .query_row(params![&id.bytes()[..]], row_to_delivery)
            .optional()?;
        // Read by the delivered query too if it has since been delivered.
        out.extend(d.filter(|d| !out.iter().any(|o| o.id == d.id)));
    }
    Ok(Done::List(out))
}

/// Records what an order-watch check decided.
fn finish_watch(
    db: &Connection,
    id: &DeliveryId,
    checks: &u32,
    next: &WatchNext,
) -> rusqlite::Result<Done> {
    let id = &id.bytes()[..];
    let checks = i64::from(*checks);
    // Only a running watch changes: the index applies the same
    // decision only to the watches it holds, which are those. Every
    // decision but `KlarnaFailing` clears `watch_klarna_failing_since`.
    match next {
        WatchNext::Again { at, error } => db
            .prepare_cached("UPDATE deliveries SET watch_checks = ?2, watch_next_at = ?3, watch_error = ?4, watch_klarna_failing_since = NULL WHERE id = ?1 AND watch_state = 0")?
            .execute(params![id, checks, *at as i64, error])?,
        WatchNext::KlarnaFailing { at, since, error } => db
            .prepare_cached("UPDATE deliveries SET watch_checks = ?2, watch_next_at = ?3, watch_error = ?4, watch_klarna_failing_since = ?5 WHERE id = ?1 AND watch_state = 0")?
            .execute(params![id, checks, *at as i64, error, *since as i64])?,
        WatchNext::Confirmed => db
            .prepare_cached("UPDATE deliveries SET watch_checks = ?2, watch_state = 1, watch_error = NULL, watch_klarna_failing_since = NULL WHERE id = ?1 AND watch_state = 0")?
            .execute(params![id, checks])?,
        // With no new error, the last one says why it ended.
        WatchNext::Unconfirmed { error } => db
            .prepare_cached("UPDATE deliveries SET watch_checks = ?2, watch_state = 2, watch_error = COALESCE(?3, watch_error), watch_klarna_failing_since = NULL WHERE id = ?1 AND watch_state = 0")?
            .execute(params![id, checks, error])?,
        // Queued again in the same transaction, so a crash cannot
        // leave it marked redelivered but never sent.
        WatchNext::Redeliver { now, at } => db
            .prepare_cached("UPDATE deliveries SET watch_checks = ?2, watch_redelivered = 1, watch_next_at = ?3, state = 0, next_attempt_at = ?4, watch_klarna_failing_since = NULL WHERE id = ?1 AND watch_state = 0")?
            .execute(params![id, checks, *at as i64, *now as i64])?,
        // Recorded before the DELETE is sent: a restart sends it again.
        WatchNext::Release { at } => db
            .prepare_cached("UPDATE deliveries SET watch_checks = ?2, watch_state = 3, watch_next_at = ?3, watch_klarna_failing_since = NULL WHERE id = ?1 AND watch_state IN (0, 3)")?
            .execute(params![id, checks, *at as i64])?,
        WatchNext::Released => db
            .prepare_cached("UPDATE deliveries SET watch_checks = ?2, state = 4, watch_state = 2, watch_error = NULL WHERE id = ?1 AND watch_state = 3")?
            .execute(params![id, checks])?,
        WatchNext::ReleaseFailed { error } => db
            .prepare_cached("UPDATE deliveries SET watch_checks = ?2, watch_state = 2, watch_error = ?3, watch_klarna_failing_since = NULL WHERE id = ?1 AND watch_state IN (0, 3)")?
            .execute(params![id, checks, error])?,
    };
    Ok(Done::Unit)
}

/// Resolves a dead delivery, or a delivered one whose order watch ended
/// unconfirmed; otherwise says where it stands.
fn resolve(db: &Connection, id: &DeliveryId, at: u64, note: &str) -> rusqlite::Result<Done> {
    let key = &id.bytes()[..];
    let n = db
        .prepare_cached(
            "UPDATE deliveries SET state = 3, resolved_at = ?2, resolve_note = ?3 \
             WHERE id = ?1 AND (state IN (2, 4) OR (state = 1 AND watch_state = 2))",
        )?
        .execute(params![key, at as i64, note])?;
    if n == 1 {
        return Ok(Done::Resolved(Resolve::Resolved));
    }
    let now: Option<(i64, Option<i64>)> = db
        .prepare_cached("SELECT state, watch_state FROM deliveries WHERE id = ?1")?
        .query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(Done::Resolved(match now {
        None => Resolve::NotFound,
        Some((state, watch)) => {
            let (state, watch) = (state_from(state), watch.and_then(watch_from_code));
            // The statement above and `resolvable` say the same.
            debug_assert!(!resolvable(state, watch));
            Resolve::NotResolvable { state, watch }
        }
    }))
}

/// Removes what is past retention, a chunk of each kind at a time:
/// delivered and resolved rows (`cutoffs.finished`), dead and unconfirmed
/// ones (`cutoffs.dead`), and ended registrations (`cutoffs.dedupe`).
fn prune(db: &Connection, cutoffs: &Cutoffs) -> rusqlite::Result<Done> {
    let chunk = PRUNE_CHUNK as i64;
    // A running watch keeps its delivery; an unconfirmed one is kept as
    // long as a dead record.
    let delivered = db
        .prepare_cached(
            "DELETE FROM deliveries WHERE seq IN
             (SELECT seq FROM deliveries WHERE state = 1 AND received_at <= ?1
              AND (watch_state IS NULL OR watch_state = 1) LIMIT ?2)",
        )?
        .execute(params![cutoffs.finished as i64, chunk])?;
    let resolved = db
        .prepare_cached(
            "DELETE FROM deliveries WHERE seq IN
             (SELECT seq FROM deliveries WHERE state = 3 AND resolved_at <= ?1 LIMIT ?2)",
        )?
        .execute(params![cutoffs.finished as i64, chunk])?;
    // These are in the indexes, which drop the same ids once committed.
    // Unconfirmed ones are chosen exactly as `WatchIndex::prune` chooses
    // them, dead ones as `Outbox::prune_dead`.
    let mut gone = Vec::new();
    for sql in [
        "DELETE FROM deliveries WHERE seq IN
         (SELECT seq FROM deliveries WHERE state IN (2, 4) AND received_at < ?1 LIMIT ?2) RETURNING id",
        "DELETE FROM deliveries WHERE seq IN
         (SELECT seq FROM deliveries WHERE state = 1 AND watch_state = 2 AND received_at < ?1
          LIMIT ?2) RETURNING id",
    ] {
        let mut stmt = db.prepare_cached(sql)?;
        let ids = stmt.query_map(params![cutoffs.dead as i64, chunk], |r| {
            r.get::<_, Vec<u8>>(0)
        })?;
        for id in ids {
            gone.extend(DeliveryId::from_bytes(&id?));
        }
    }
    db.prepare_cached("DELETE FROM registrations WHERE state = 1 AND registered_at <= ?1")?
        .execute(params![cutoffs.dedupe as i64])?;
    let more = [delivered, resolved, gone.len()]
        .iter()
        .any(|n| *n >= PRUNE_CHUNK);
    Ok(Done::Pruned(
        (delivered + resolved + gone.len()) as u64,
        more,
        gone,
    ))
}

/// Applies a committed change to the index, then answers the caller.
fn answer(cmd: Cmd, r: Result<Done, String>, shared: &Shared) {
    match (cmd, r) {
        (Cmd::Claim { d, reply, .. }, Ok(Done::Claim(c))) => {
            if c == Claim::Recorded {
                shared.regs().end(&d.session_id);
                shared.index().insert(d);
            }
            let _ = reply.send(Ok(c));
        }
        (
            Cmd::Finish {
                id,
                attempts,
                outcome,
                reply,
                ..
            },
            Ok(_),
        ) => {
            finished(shared, id, attempts, outcome);
            let _ = reply.send(Ok(()));
        }
        (
            Cmd::FinishWatch {
                id,
                checks,
                next,
                reply,
            },
            Ok(_),
        ) => {
            let mut index = shared.index();
            let d = shared.watches().finish(id, checks, &next);
            if let (Some(d), WatchNext::Redeliver { .. }) = (d, &next) {
                index.insert(d);
            }
            drop(index);
            let _ = reply.send(Ok(()));
        }
        (
            Cmd::Replay {
                id,
                now,
                deadline_at,
                reply,
            },
            Ok(Done::Replay(r)),
        ) => {
            if r == Replay::Queued {
                let mut index = shared.index();
                index.replay(id, now, deadline_at);
                if let Some(d) = index.get(&id).cloned() {
                    follow(&mut shared.watches(), d);
                }
            }
            let _ = reply.send(Ok(r));
        }
        (Cmd::List { reply, .. }, Ok(Done::List(l))) => {
            let _ = reply.send(Ok(l));
        }
        (Cmd::Get { reply, .. }, Ok(Done::Got(d))) => {
            let _ = reply.send(Ok(d.map(|d| *d)));
        }
        (Cmd::Prune { reply, .. }, Ok(Done::Pruned(n, more, gone))) => {
            forget(shared, &gone);
            let _ = reply.send(Ok((n, more)));
        }
        (Cmd::Resolve { id, reply, .. }, Ok(Done::Resolved(r))) => {
            if r == Resolve::Resolved {
                forget(shared, &[id]);
            }
            let _ = reply.send(Ok(r));
        }
        (Cmd::Register { r, reply }, Ok(Done::Registered(new))) => {
            if new {
                shared.regs().insert(r);
            }
            let _ = reply.send(Ok(new));
        }
        (
            Cmd::FinishCheck {
                session,
                checks,
                next,
                reply,
            },
            Ok(_),
        ) => {
            shared.regs().finish(&session, checks, &next);
            let _ = reply.send(Ok(()));
        }
        (Cmd::Probe { reply, .. }, Ok(Done::Probe(b))) => drop(reply.send(Ok(b))),
        (cmd, Err(e)) => refuse(cmd, e),
        (cmd, Ok(_)) => refuse(cmd, "internal: mismatched result".to_string()),
    }
}

/// Applies a committed attempt outcome to the index and the watches.
fn finished(shared: &Shared, id: DeliveryId, attempts: u32, outcome: AttemptOutcome) {
    let mut index = shared.index();
    if let Some(d) = index.finish(id, attempts, &outcome) {
        let mut watches = shared.watches();
        match outcome {
            AttemptOutcome::Delivered { at, watch_from } => {
                watches.delivered(d, at, watch_from);
            }
            _ => follow(&mut watches, d),
        }
    }
}

/// Takes committed removals (resolved, pruned) out of the index and the
/// watches.
fn forget(shared: &Shared, ids: &[DeliveryId]) {
    let mut index = shared.index();
    let mut watches = shared.watches();
    for id in ids {
        index.remove(id);
        watches.remove(id);
    }
}

/// Answers the caller that its change was not recorded, and why.
fn refuse(cmd: Cmd, why: String) {
    let fail = StoreError::Unavailable(why);
    match cmd {
        Cmd::Claim { reply, .. } => drop(reply.send(Err(fail))),
        Cmd::Finish { reply, .. } => drop(reply.send(Err(fail))),
        Cmd::Replay { reply, .. } => drop(reply.send(Err(fail))),
        Cmd::List { reply, .. } => drop(reply.send(Err(fail))),
        Cmd::Get { reply, .. } => drop(reply.send(Err(fail))),
        Cmd::FinishWatch { reply, .. } => drop(reply.send(Err(fail))),
        Cmd::Prune { reply, .. } => drop(reply.send(Err(fail))),
        Cmd::Resolve { reply, .. } => drop(reply.send(Err(fail))),
        Cmd::Register { reply, .. } => drop(reply.send(Err(fail))),
        Cmd::FinishCheck { reply, .. } => drop(reply.send(Err(fail))),
        Cmd::Probe { reply, .. } => drop(reply.send(Err(fail))),
    }
}

/// A watched delivery that was retried, died or was replayed: the watch
/// index's copy takes its new state and keeps its own watch (the delivery's
/// copy of it is as old as the redelivery).
fn follow(watches: &mut WatchIndex, mut d: Delivery) {
    if let Some(w) = watches.get(&d.id).and_then(|e| e.watch.clone()) {
        d.watch = Some(w);
        watches.insert(d);
    }
}
