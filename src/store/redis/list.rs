//! Listing deliveries for the admin API: which index each filter reads, and
//! paging through it until enough records pass the filter. It only reads
//! (the listing scripts drop ids whose record is gone, nothing more).

use std::collections::HashSet;

use redis::AsyncCommands;

use super::{RedisStore, DEAD, LEGACY_DEAD, LIST_PAGE, UNCONFIRMED};
use crate::store::outbox::newest_first;
use crate::store::{Delivery, DeliveryState, Filter, StoreError, WatchState};
use crate::types::unix_ms;

/// An index `list` reads ids from, newest received first.
#[derive(Debug, Clone, Copy)]
enum Index {
    /// `pending`, `delivered` or `dead_by_expiry`.
    State(DeliveryState),
    /// `unconfirmed`: far smaller than `delivered` for the same answer.
    Unconfirmed,
}

impl RedisStore {
    /// Up to `limit` deliveries `filter` accepts, newest first, each once.
    pub(super) async fn list_filtered(
        &self,
        filter: Filter,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let indexes = match (filter.watch, filter.state) {
            (Some(WatchState::Unconfirmed), _) => vec![Index::Unconfirmed],
            (_, Some(s)) => vec![Index::State(s)],
            (_, None) => [
                DeliveryState::Pending,
                DeliveryState::Dead,
                DeliveryState::Delivered,
            ]
            .map(Index::State)
            .to_vec(),
        };
        let mut out = Vec::new();
        for index in indexes {
            out.extend(self.list_from(index, filter, limit).await?);
        }
        Ok(newest_first(out, limit))
    }

    /// Up to `limit` deliveries of one index that `filter` accepts. An index
    /// may still name a record that is gone or has moved on (claimed again
    /// after it expired, redelivered): a state index lists only records in
    /// its state, so each delivery is listed once. Pages may shift while
    /// read (a newer delivery arrives): ids already seen are skipped.
    async fn list_from(
        &self,
        index: Index,
        filter: Filter,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let count = limit.max(LIST_PAGE);
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut offset = 0;
        while out.len() < limit {
            let ids = self.page(index, offset, count).await?;
            let last = ids.len() < count;
            out.extend(self.fetch(ids).await?.into_iter().filter(|d| {
                let here = match index {
                    Index::State(s) => d.state == s,
                    Index::Unconfirmed => true,
                };
                here && filter.accepts(d) && seen.insert(d.id)
            }));
            if last {
                break;
            }
            offset += count;
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Ids `offset..offset + count` of `index`, newest received first.
    async fn page(
        &self,
        index: Index,
        offset: usize,
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let prefix = format!("{}d:", self.prefix);
        let r: redis::RedisResult<Vec<String>> = match index {
            Index::Unconfirmed => {
                self.scripts
                    .list_unconfirmed
                    .key(self.key(UNCONFIRMED))
                    .arg(prefix)
                    .arg(count)
                    .arg(offset)
                    .invoke_async(&mut conn)
                    .await
            }
            Index::State(DeliveryState::Dead) => {
                self.scripts
                    .list_dead
                    .key(self.key(DEAD))
                    .key(self.key(LEGACY_DEAD))
                    .arg(prefix)
                    .arg(unix_ms())
                    .arg(count)
                    .arg(offset)
                    .invoke_async(&mut conn)
                    .await
            }
            Index::State(s) => {
                let (start, stop) = (offset as isize, (offset + count - 1) as isize);
                conn.zrevrange(self.key(s.as_str()), start, stop).await
            }
        };
        self.track(r)
    }
}
