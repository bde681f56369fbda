//! The file store's probe nonces: the `probes` table (schema version 6),
//! written by the writer thread like everything else. They touch no
//! in-process index, so one command (`Op`) carries both kinds of change.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::probes::ProbeNonce;

/// A change to the `probes` table.
pub(super) enum Op {
    Put {
        nonce: ProbeNonce,
        expires_at: u64,
        now: u64,
    },
    Take {
        nonce: ProbeNonce,
        now: u64,
    },
}

/// Runs `op`: a put answers `true`, a take whether it took the nonce.
pub(super) fn run(db: &Connection, op: &Op) -> rusqlite::Result<bool> {
    match op {
        Op::Put {
            nonce,
            expires_at,
            now,
        } => put(db, nonce, *expires_at, *now).map(|()| true),
        Op::Take { nonce, now } => take(db, nonce, *now),
    }
}

/// Keeps `nonce` until `expires_at`, and forgets the nonces expired by
/// `now`, so the table holds only the last minute's.
fn put(db: &Connection, nonce: &ProbeNonce, expires_at: u64, now: u64) -> rusqlite::Result<()> {
    db.prepare_cached("DELETE FROM probes WHERE expires_at <= ?1")?
        .execute(params![now as i64])?;
    db.prepare_cached(
        "INSERT INTO probes (nonce, expires_at) VALUES (?1, ?2)
         ON CONFLICT (nonce) DO UPDATE SET expires_at = excluded.expires_at",
    )?
    .execute(params![&nonce.bytes()[..], expires_at as i64])?;
    Ok(())
}

/// Removes `nonce` in one statement: whether it was there and alive at
/// `now`. An expired one goes too, and counts as absent.
fn take(db: &Connection, nonce: &ProbeNonce, now: u64) -> rusqlite::Result<bool> {
    let expires_at: Option<i64> = db
        .prepare_cached("DELETE FROM probes WHERE nonce = ?1 RETURNING expires_at")?
        .query_row(params![&nonce.bytes()[..]], |r| r.get(0))
        .optional()?;
    Ok(expires_at.is_some_and(|e| e > now as i64))
}
