//! Pruning: delivered records leave the store once their dedupe keys have
//! served their time.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::ops::shutdown::Stop;
use crate::store::Store;
use crate::types::unix_ms;

/// Removes delivered records and their dedupe keys once `dedupe_ttl` has
/// passed, every minute until `stop`.
pub(crate) fn spawn(store: Arc<dyn Store>, dedupe_ttl: Duration, stop: Stop) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        let ttl_ms = u64::try_from(dedupe_ttl.as_millis()).unwrap_or(u64::MAX);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match store.prune(unix_ms().saturating_sub(ttl_ms)).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(pruned = n, "delivered records past dedupe_ttl removed"),
                        Err(e) => tracing::warn!(error = %e, "pruning delivered records failed; will retry"),
                    }
                }
                _ = stop.wait() => return,
            }
        }
    })
}
