//! Listing deliveries for the admin API: which index each filter reads, and
//! paging through it, from a cursor, until enough records pass the filter or
//! the read budget is spent. It only reads (the listing scripts drop ids
//! whose record is gone, nothing more).
//!
//! `pending` and `delivered` are scored by receipt, so they are read by
//! score from the cursor down; the dead, unconfirmed and resolved indexes
//! are scored by expiry, so their scripts sort by receipt and start after
//! the cursor.
//!
//! A filter that names a session or a reference reads that session's or
//! reference's lookup index (`lookup.lua`), also scored by receipt: a few
//! ids, whatever the store holds. Records an earlier version wrote, received
//! before `lookups_since` (the end of the rolling update that brought the
//! indexes in), are in no lookup index until this version changes them, so
//! for that stretch of time the state indexes are read as well, as before:
//! `pending` and `delivered` by score (nothing to read once those records
//! are pruned), the dead and unconfirmed indexes only within `dedupe_ttl`
//! of `lookups_since` (a record there that this version never changed died
//! or ended before it, and has expired since).

use std::collections::HashSet;

use redis::AsyncCommands;

use super::{
    RedisStore, DEAD, LEGACY_DEAD, LIST_PAGE, RELEASED, RESOLVED, SCAN_BUDGET, UNCONFIRMED,
};
use crate::store::model::{Cursor, Delivery, DeliveryState, Filter, Page, StoreError, WatchState};
use crate::store::outbox::{listed, page};
use crate::types::{unix_ms, DeliveryId, SessionId};

/// An index `list` reads ids from.
#[derive(Debug, Clone)]
enum Index {
    /// `pending`, `delivered`, `dead_by_expiry` or `resolved`.
    State(DeliveryState),
    /// `unconfirmed`: far smaller than `delivered` for the same answer.
    Unconfirmed,
    /// One session's or reference's records, whatever their state (the
    /// key of a lookup index).
    Lookup(String),
}

/// What one index gave.
struct Scan {
    found: Vec<Delivery>,
    /// Where the index was read completely through (every delivery at or
    /// before it in listing order was seen); `None` once read to its end.
    through: Option<Cursor>,
}

/// Of two places in a listing, the one that comes first.
fn first(a: Cursor, b: Cursor) -> Cursor {
    if a.admits(b.received_at, &b.id) {
        a
    } else {
        b
    }
}

impl RedisStore {
    /// A page of the deliveries `filter` accepts after `after`, newest
    /// first, each once. Indexes are read separately, so the page holds
    /// only what lies before the place every index was read through; past
    /// it, one index may hold deliveries not yet seen.
    pub(super) async fn list_filtered(
        &self,
        filter: Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        // One more than a page: whether more are left.
        let want = limit.saturating_add(1);
        let mut out = Vec::new();
        let mut through: Option<Cursor> = None;
        for (index, filter) in self.reads(&filter) {
            let scan = match index {
                Index::State(s @ (DeliveryState::Pending | DeliveryState::Delivered)) => {
                    let key = self.key(s.as_str());
                    self.scan_by_receipt(key, Some(s), &filter, after, want)
                        .await?
                }
                Index::Lookup(key) => {
                    let scan = self.scan_by_receipt(key, None, &filter, after, want);
                    self.unpruned(scan.await?, &filter).await?
                }
                index => self.scan_sorted(index, &filter, after, want).await?,
            };
            out.extend(scan.found);
            if let Some(c) = scan.through {
                through = Some(through.map_or(c, |t| first(t, c)));
            }
        }
        // A delivery that changed state between two index reads was seen
        // in both: it is listed once.
        let mut seen = HashSet::new();
        out.retain(|d| seen.insert(d.id));
        if let Some(t) = through {
            out.retain(|d| !t.admits(d.received_at, &d.id));
        }
        let mut page = page(out, limit);
        if page.next.is_none() {
            page.next = through;
        }
        Ok(page)
    }

    /// The indexes a listing with `filter` reads, each with the filter to
    /// read it with.
    fn reads(&self, filter: &Filter) -> Vec<(Index, Filter)> {
        let by_state = |f: &Filter| -> Vec<(Index, Filter)> {
            let indexes = match (f.watch, f.state) {
                (Some(WatchState::Unconfirmed), _) => vec![Index::Unconfirmed],
                (_, Some(s)) => vec![Index::State(s)],
                (_, None) => [
                    DeliveryState::Pending,
                    DeliveryState::Dead,
                    DeliveryState::Delivered,
                    DeliveryState::Resolved,
                    DeliveryState::Released,
                ]
                .map(Index::State)
                .to_vec(),
            };
            indexes.into_iter().map(|i| (i, f.clone())).collect()
        };
        let lookup = match (&filter.session_id, filter.reference.as_deref()) {
            (Some(s), _) => format!("by_session:{}", s.as_str()),
            (None, Some(r)) if !r.is_empty() => format!("by_reference:{r}"),
            _ => return by_state(filter),
        };
        let mut reads = vec![(Index::Lookup(self.key(&lookup)), filter.clone())];
        let since = self.lookups_since;
        if filter.since.is_none_or(|t| t < since) {
            let older = Filter {
                until: Some(filter.until.map_or(since, |t| t.min(since))),
                ..filter.clone()
            };
            let recent = unix_ms() < since.saturating_add(self.ttl_ms);
            reads.extend(by_state(&older).into_iter().filter(|(index, _)| {
                recent
                    || matches!(
                        index,
                        Index::State(DeliveryState::Pending | DeliveryState::Delivered)
                    )
            }));
        }
        reads
    }

    /// What a lookup index found, less the delivered records `prune` took
    /// out of `delivered`: the record may outlive its place there, and a
    /// listing by state no longer shows it. One that ended unconfirmed
    /// stays listed as unconfirmed, as the `unconfirmed` index keeps it.
    async fn unpruned(&self, mut scan: Scan, filter: &Filter) -> Result<Scan, StoreError> {
        if filter.watch == Some(WatchState::Unconfirmed) {
            return Ok(scan);
        }
        let delivered: Vec<DeliveryId> = scan
            .found
            .iter()
            .filter(|d| d.state == DeliveryState::Delivered)
            .map(|d| d.id)
            .collect();
        if delivered.is_empty() {
            return Ok(scan);
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for id in &delivered {
            pipe.zscore(self.key(DeliveryState::Delivered.as_str()), id.to_string());
        }
        let r: redis::RedisResult<Vec<Option<f64>>> = pipe.query_async(&mut conn).await;
        let pruned: HashSet<DeliveryId> = delivered
            .into_iter()
            .zip(self.track(r)?)
            .filter_map(|(id, score)| score.is_none().then_some(id))
            .collect();
        scan.found.retain(|d| !pruned.contains(&d.id));
        Ok(scan)
    }

    /// Reads an index scored by `received_at` (`pending`, `delivered`, a
    /// lookup index) from the cursor down, within `since`/`until`, keeping
    /// the records in `state` (any state `filter` accepts when `None`).
    /// Ties share a score and are read in Redis's order, not the
    /// listing's, so the index is read through whole milliseconds before
    /// it stops.
    async fn scan_by_receipt(
        &self,
        key: String,
        state: Option<DeliveryState>,
        filter: &Filter,
        after: Option<Cursor>,
        want: usize,
    ) -> Result<Scan, StoreError> {
        let mut top = after.map(|c| c.received_at);
        if let Some(until) = filter.until {
            let Some(last) = until.checked_sub(1) else {
                return Ok(Scan {
                    found: Vec::new(),
                    through: None,
                });
            };
            top = Some(top.map_or(last, |t| t.min(last)));
        }
        let bottom = filter.since.map_or("-inf".to_string(), |t| t.to_string());
        let (mut found, mut read) = (Vec::new(), 0usize);
        // Ids already read at the score the next read starts from.
        let mut skip = 0usize;
        // The highest score read: the budget lets the read stop only below it.
        let mut highest = None;
        loop {
            let mut conn = self.conn.clone();
            let max = top.map_or("+inf".to_string(), |t| t.to_string());
            let r: redis::RedisResult<Vec<(String, f64)>> = conn
                .zrevrangebyscore_limit_withscores(
                    &key,
                    max,
                    &bottom,
                    skip as isize,
                    LIST_PAGE as isize,
                )
                .await;
            let ids = self.track(r)?;
            let Some(last) = ids.last().map(|(_, s)| *s as u64) else {
                return Ok(Scan {
                    found,
                    through: None,
                });
            };
            let exhausted = ids.len() < LIST_PAGE;
            read += ids.len();
            let highest = *highest.get_or_insert(ids[0].1 as u64);
            for (_, score) in &ids {
                let score = *score as u64;
                if Some(score) == top {
                    skip += 1;
                } else {
                    (top, skip) = (Some(score), 1);
                }
            }
            let ids: Vec<String> = ids.into_iter().map(|(id, _)| id).collect();
            let candidates = self.prefilter(ids, state, filter, after).await?;
            found.extend(
                self.fetch(candidates)
                    .await?
                    .into_iter()
                    .filter(|d| state.is_none_or(|s| d.state == s) && listed(filter, after, d)),
            );
            if exhausted {
                return Ok(Scan {
                    found,
                    through: None,
                });
            }
            // Complete through every millisecond above `last`; the ones at
            // `last` may not all be read yet.
            let through = Some(Cursor::end_of(last.saturating_add(1)));
            let enough = found
                .get(want.saturating_sub(1))
                .is_some_and(|d| d.received_at > last);
            // Past the budget, stop once at least one whole millisecond is
            // read, so the next page starts further down.
            if enough || (read >= SCAN_BUDGET && last < highest) {
                return Ok(Scan { found, through });
            }
        }
    }

    /// Of `ids`, the ones whose fields pass `filter` after `after`, read
    /// without their payloads: most of a filtered read is passed over.
    async fn prefilter(
        &self,
        ids: Vec<String>,
        state: Option<DeliveryState>,
        filter: &Filter,
        after: Option<Cursor>,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(
                format!("{}d:{id}", self.prefix),
                &["state", "route", "session_id", "reference", "received_at"],
            );
        }
        let r: redis::RedisResult<Vec<Vec<Option<String>>>> = pipe.query_async(&mut conn).await;
        let rows = self.track(r)?;
        Ok(ids
            .into_iter()
            .zip(rows)
            .filter(|(id, f)| {
                let get = |i: usize| f.get(i).cloned().flatten().unwrap_or_default();
                let at = get(4).parse().unwrap_or(0);
                let place =
                    DeliveryId::parse(id).is_some_and(|id| after.is_none_or(|c| c.admits(at, &id)));
                let st = get(0);
                let state_fits = match state {
                    Some(s) => st == s.as_str(),
                    // Any state, in a record that is still there.
                    None => !st.is_empty() && filter.state.is_none_or(|s| st == s.as_str()),
                };
                state_fits
                    && place
                    && filter.fields_accept(&get(1), &SessionId::new(get(2)), &get(3), at)
            })
            .map(|(id, _)| id)
            .collect())
    }

    /// Reads the dead, unconfirmed or resolved index, whose script sorts it by
    /// receipt and starts after the cursor: each read goes on from the
    /// last one.
    async fn scan_sorted(
        &self,
        index: Index,
        filter: &Filter,
        after: Option<Cursor>,
        want: usize,
    ) -> Result<Scan, StoreError> {
        let count = want.max(LIST_PAGE);
        let (mut found, mut read) = (Vec::new(), 0usize);
        let mut from = after;
        loop {
            let rows = self.sorted_page(&index, from, count).await?;
            let exhausted = rows.len() < count;
            read += rows.len();
            let Some(last) = rows.last().copied() else {
                return Ok(Scan {
                    found,
                    through: None,
                });
            };
            let ids = rows.iter().map(|c| c.id.to_string()).collect();
            found.extend(self.fetch(ids).await?.into_iter().filter(|d| {
                let here = match &index {
                    Index::State(s) => d.state == *s,
                    Index::Unconfirmed | Index::Lookup(_) => true,
                };
                here && listed(filter, after, d)
            }));
            if exhausted {
                return Ok(Scan {
                    found,
                    through: None,
                });
            }
            if found.len() >= want || read >= SCAN_BUDGET {
                return Ok(Scan {
                    found,
                    through: Some(last),
                });
            }
            from = Some(last);
        }
    }

    /// Up to `count` places of the dead, unconfirmed or resolved index after
    /// `from`, in listing order.
    async fn sorted_page(
        &self,
        index: &Index,
        from: Option<Cursor>,
        count: usize,
    ) -> Result<Vec<Cursor>, StoreError> {
        let mut conn = self.conn.clone();
        let prefix = format!("{}d:", self.prefix);
        let (at, id) = from.map_or((String::new(), String::new()), |c| {
            (c.received_at.to_string(), c.id.to_string())
        });
        let r: redis::RedisResult<Vec<String>> = match index {
            Index::Unconfirmed => {
                self.scripts
                    .list_unconfirmed
                    .key(self.key(UNCONFIRMED))
                    .arg(prefix)
                    .arg(count)
                    .arg(at)
                    .arg(id)
                    .invoke_async(&mut conn)
                    .await
            }
            Index::State(s @ (DeliveryState::Resolved | DeliveryState::Released)) => {
                let name = if *s == DeliveryState::Resolved {
                    RESOLVED
                } else {
                    RELEASED
                };
                self.scripts
                    .list_resolved
                    .key(self.key(name))
                    .arg(prefix)
                    .arg(count)
                    .arg(at)
                    .arg(id)
                    .arg(s.as_str())
                    .invoke_async(&mut conn)
                    .await
            }
            // Read by score, never here.
            Index::Lookup(_) => Ok(Vec::new()),
            Index::State(_) => {
                self.scripts
                    .list_dead
                    .key(self.key(DEAD))
                    .key(self.key(LEGACY_DEAD))
                    .arg(prefix)
                    .arg(unix_ms())
                    .arg(count)
                    .arg(at)
                    .arg(id)
                    .invoke_async(&mut conn)
                    .await
            }
        };
        // The script answers id, received_at, id, received_at...
        Ok(self
            .track(r)?
            .chunks(2)
            .filter_map(|pair| {
                Some(Cursor {
                    id: DeliveryId::parse(pair.first()?)?,
                    received_at: pair.get(1)?.parse().ok()?,
                })
            })
            .collect())
    }
}
