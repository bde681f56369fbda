//! What the file store reads from disk for the admin API, and its attempt
//! logs: the delivered rows a listing wants (the index holds none of them),
//! one delivery with its log, and appending to a log. Runs on the writer
//! thread's connection, inside its transactions; it never changes a
//! delivery's state.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::{row_to_delivery, state_code, watch_code};
use crate::store::model::{push_attempt, Attempt, Cursor, Delivery, DeliveryState, Detail, Filter};
use crate::types::DeliveryId;

const ONE_SQL: &str = concat!(
    "SELECT ",
    read_columns!(),
    ", attempt_log FROM deliveries WHERE id = ?1"
);

/// Up to `limit` finished rows (delivered and resolved: the ones the index
/// does not hold) `filter` accepts after `after`, newest first.
pub(super) fn finished(
    db: &Connection,
    filter: &Filter,
    after: Option<Cursor>,
    limit: usize,
) -> rusqlite::Result<Vec<Delivery>> {
    let (sql, args) = finished_query(filter, after, limit);
    let mut stmt = db.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), row_to_delivery)?;
    rows.collect()
}

/// The index a listing of finished rows reads: by session, else by
/// reference, else by state and time. It is named in the statement
/// (`INDEXED BY`) because SQLite, left to choose, prefers the state and
/// time index for every filter (it spares the sort) and then walks every
/// finished row to find one session's; the schema guarantees each index.
fn finished_index(filter: &Filter) -> &'static str {
    if filter.session_id.is_some() {
        "deliveries_session_received"
    } else if filter.reference.is_some() {
        "deliveries_reference_received"
    } else {
        "deliveries_state_received"
    }
}

/// The statement `finished` runs, and its arguments. Only the conditions
/// given are in it.
pub(super) fn finished_query(
    filter: &Filter,
    after: Option<Cursor>,
    limit: usize,
) -> (String, Vec<Value>) {
    let mut sql = format!(
        concat!(
            "SELECT ",
            read_columns!(),
            " FROM deliveries INDEXED BY {} WHERE "
        ),
        finished_index(filter)
    );
    let mut args: Vec<Value> = Vec::new();
    let mut cond = |sql: &mut String, text: &str, v: Value| {
        args.push(v);
        sql.push_str(&text.replace('?', &format!("?{}", args.len())));
    };
    match filter.state {
        Some(s) => cond(&mut sql, "state = ?", Value::Integer(state_code(s))),
        None => sql.push_str(&format!(
            "state IN ({}, {})",
            state_code(DeliveryState::Delivered),
            state_code(DeliveryState::Resolved)
        )),
    }
    if filter.watch.is_some() {
        // Open order-watch cases only (`Filter::accepts`).
        cond(
            &mut sql,
            " AND state != ?",
            Value::Integer(state_code(DeliveryState::Resolved)),
        );
    }
    if let Some(w) = filter.watch {
        cond(
            &mut sql,
            " AND watch_state = ?",
            Value::Integer(watch_code(w)),
        );
    }
    if let Some(r) = &filter.route {
        cond(&mut sql, " AND route = ?", Value::Text(r.clone()));
    }
    if let Some(s) = &filter.session_id {
        cond(
            &mut sql,
            " AND session_id = ?",
            Value::Text(s.as_str().into()),
        );
    }
    if let Some(r) = &filter.reference {
        cond(&mut sql, " AND reference = ?", Value::Text(r.clone()));
    }
    if let Some(t) = filter.since {
        cond(
            &mut sql,
            " AND received_at >= ?",
            Value::Integer(sql_int(t)),
        );
    }
    if let Some(t) = filter.until {
        cond(&mut sql, " AND received_at < ?", Value::Integer(sql_int(t)));
    }
    if let Some(c) = after {
        let at = Value::Integer(sql_int(c.received_at));
        // The first term says no more than the second, but lets the index
        // start at the cursor instead of walking down to it from the top.
        cond(&mut sql, " AND received_at <= ?", at.clone());
        cond(&mut sql, " AND (received_at < ?", at.clone());
        cond(&mut sql, " OR (received_at = ?", at);
        // Ids are compared as blobs, byte by byte: the order `Cursor` uses.
        cond(
            &mut sql,
            " AND id > ?))",
            Value::Blob(c.id.bytes().to_vec()),
        );
    }
    cond(
        &mut sql,
        " ORDER BY received_at DESC, id ASC LIMIT ?",
        Value::Integer(sql_int(limit as u64)),
    );
    (sql, args)
}

/// Times past what SQLite's integers hold are as good as "never" here.
fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One delivery and its attempt log.
pub(super) fn one(db: &Connection, id: &DeliveryId) -> rusqlite::Result<Option<Detail>> {
    db.prepare_cached(ONE_SQL)?
        .query_row(params![&id.bytes()[..]], |r| {
            let delivery = row_to_delivery(r)?;
            let log: Option<String> = r.get("attempt_log")?;
            Ok(Detail {
                attempts: decode(log.as_deref(), &delivery.id),
                delivery,
            })
        })
        .optional()
}

/// Appends `a` to the log of `id`, keeping the latest `ATTEMPTS_KEPT`.
pub(super) fn append(db: &Connection, id: &DeliveryId, a: &Attempt) -> rusqlite::Result<()> {
    let key = &id.bytes()[..];
    let old: Option<Option<String>> = db
        .prepare_cached("SELECT attempt_log FROM deliveries WHERE id = ?1")?
        .query_row(params![key], |r| r.get(0))
        .optional()?;
    let Some(old) = old else { return Ok(()) };
    let mut log = decode(old.as_deref(), id);
    push_attempt(&mut log, a.clone());
    // Serializing plain numbers, strings and bools cannot fail; if it ever
    // did, the outcome must still be recorded, so the log is left as it was.
    let Ok(text) = serde_json::to_string(&log) else {
        return Ok(());
    };
    db.prepare_cached("UPDATE deliveries SET attempt_log = ?2 WHERE id = ?1")?
        .execute(params![key, text])?;
    Ok(())
}

/// A stored log. One that does not parse (written by hand, damaged) reads
/// as empty rather than failing: it is history, and the delivery itself
/// must stay readable and deliverable.
fn decode(text: Option<&str>, id: &DeliveryId) -> Vec<Attempt> {
    let Some(text) = text else { return Vec::new() };
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::warn!(%id, error = %e, "unreadable attempt log; starting it again");
        Vec::new()
    })
}
