//! Retention: finished records (delivered, resolved) leave the store after
//! `store.keep_finished`, failed ones (dead, unconfirmed) after
//! `store.keep_dead`, and ended registrations after `store.dedupe_ttl`.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::ops::shutdown::Stop;
use crate::store::{Cutoffs, Store, StoreConfig};
use crate::types::unix_ms;

/// Removes what is past retention, every minute until `stop`.
pub(crate) fn spawn(store: Arc<dyn Store>, config: &StoreConfig, stop: Stop) -> JoinHandle<()> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let (dedupe, finished, dead) = (
        ms(config.dedupe_ttl),
        ms(config.keep_finished),
        ms(config.keep_dead),
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = unix_ms();
                    let cutoffs = Cutoffs {
                        dedupe: now.saturating_sub(dedupe),
                        finished: now.saturating_sub(finished),
                        dead: now.saturating_sub(dead),
                    };
                    match store.prune(cutoffs).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(pruned = n, "records past retention removed"),
                        Err(e) => tracing::warn!(error = %e, "pruning records past retention failed; will retry"),
                    }
                }
                _ = stop.wait() => return,
            }
        }
    })
}
