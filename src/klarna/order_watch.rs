//! Order watch: proof that a delivered authorization became an order. A
//! backend's 2xx says it received the delivery, not that it placed the
//! order; Klarna's Read Session says `complete` once it has. So after the
//! backend accepts a delivery, its session is read on a schedule until then.
//! No order by `redeliver_after`: the backend gets it once more (the same
//! `Idempotency-Key`, and `Authback-Redelivery: order-not-placed`). None by
//! `unconfirmed_after`: the delivery is `unconfirmed`, the "charged but no
//! order" list an operator acts on.
//!
//! The checks run in the Read Session loop (`reconcile`), under its cap on
//! calls in flight and with its one Klarna client. Nothing here touches an
//! ack or a delivery attempt.

use std::time::Duration;

use crate::config::OrderWatchConfig;
use crate::klarna::client::{ReadError, SessionState};
use crate::ops::metrics::WatchOutcome;
use crate::store::{Delivery, Watch, WatchNext};
use crate::text::saturating_add_ms;
use crate::types::unix_ms;

/// The longest a 429's `Retry-After` can defer a check (Klarna's value
/// comes from the network and can be `u64::MAX` seconds).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What one Read Session call said about the order.
#[derive(Debug)]
pub(crate) enum Read {
    /// `status: complete`: an order was placed with the authorization.
    Placed,
    /// The session is there and incomplete.
    NotPlaced,
    /// 404: the session is gone; see `OrderWatchConfig::not_found_is_placed`.
    Gone,
    /// No answer worth reading (a 5xx, a timeout, a 401...): ask again.
    Failed {
        error: String,
        retry_after: Option<Duration>,
    },
}

impl Read {
    pub(crate) fn of(r: Result<SessionState, ReadError>) -> Self {
        match r {
            Ok(SessionState::Complete) => Read::Placed,
            Ok(SessionState::Incomplete | SessionState::Authorized(_)) => Read::NotPlaced,
            Ok(SessionState::NotFound) => Read::Gone,
            Err(e) => Read::Failed {
                retry_after: match &e {
                    ReadError::RateLimited(wait) => *wait,
                    _ => None,
                },
                error: e.to_string(),
            },
        }
    }
}

/// What to do after a check at `now` that read `read`.
pub(crate) fn decide(cfg: &OrderWatchConfig, w: &Watch, now: u64, read: Read) -> WatchNext {
    let gone = matches!(read, Read::Gone);
    if matches!(read, Read::Placed) || (gone && cfg.not_found_is_placed) {
        return WatchNext::Confirmed;
    }
    let error = match read {
        Read::Gone => Some("Read Session: session not found (404)".to_string()),
        Read::Failed { ref error, .. } => Some(error.clone()),
        _ => None,
    };
    let unconfirmed_at = saturating_add_ms(w.started_at, cfg.unconfirmed_after);
    if now >= unconfirmed_at {
        return WatchNext::Unconfirmed { error };
    }
    let redeliver_at = cfg
        .redeliver_after
        .filter(|_| !w.redelivered)
        .map(|d| saturating_add_ms(w.started_at, d));
    // A session that is gone stays gone: no point asking before the next
    // decision (redelivery, or the end of the watch).
    let mut at = if gone {
        u64::MAX
    } else {
        saturating_add_ms(now, cfg.every)
    };
    if let Read::Failed {
        retry_after: Some(wait),
        ..
    } = read
    {
        at = at.max(saturating_add_ms(now, wait.min(MAX_RETRY_AFTER)));
    }
    match redeliver_at {
        Some(r) if now >= r => {
            return WatchNext::Redeliver {
                now,
                at: at.min(unconfirmed_at),
            }
        }
        Some(r) => at = at.min(r),
        None => {}
    }
    WatchNext::Again {
        at: at.min(unconfirmed_at),
        error,
    }
}

/// The outcome label of `authback_order_watch_total` a decision counts as.
pub(crate) fn outcome(next: &WatchNext) -> Option<WatchOutcome> {
    match next {
        WatchNext::Confirmed => Some(WatchOutcome::Confirmed),
        WatchNext::Redeliver { .. } => Some(WatchOutcome::Redelivered),
        WatchNext::Unconfirmed { .. } => Some(WatchOutcome::Unconfirmed),
        WatchNext::Again { .. } | WatchNext::KlarnaFailing { .. } => None,
    }
}

/// Logs what a check decided for `d`.
pub(crate) fn log(d: &Delivery, next: &WatchNext) {
    let now = unix_ms();
    match next {
        WatchNext::Confirmed => {
            tracing::info!(id = %d.id, session_id = %d.session_id, reference = %d.reference, route = %d.route, "order placed: Klarna confirms it")
        }
        WatchNext::Redeliver { .. } => {
            tracing::warn!(id = %d.id, session_id = %d.session_id, reference = %d.reference, route = %d.route, "no order placed yet: delivering to the backend once more")
        }
        WatchNext::Unconfirmed { error } => {
            tracing::warn!(id = %d.id, session_id = %d.session_id, reference = %d.reference, route = %d.route, error = error.as_deref().unwrap_or(""), "no order placed for a delivered authorization: unconfirmed (charged, no order)")
        }
        WatchNext::Again {
            at,
            error: Some(error),
        } => {
            tracing::debug!(id = %d.id, session_id = %d.session_id, %error, check_in_ms = at.saturating_sub(now), "order watch check failed; will check again")
        }
        WatchNext::KlarnaFailing { at, error, .. } => {
            tracing::debug!(id = %d.id, session_id = %d.session_id, %error, check_in_ms = at.saturating_sub(now), "order watch waits for Klarna; will check again")
        }
        WatchNext::Again { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WatchState;

    const MIN: u64 = 60_000;

    fn cfg(redeliver: bool, not_found_is_placed: bool) -> OrderWatchConfig {
        OrderWatchConfig {
            enabled: true,
            after: Duration::from_secs(120),
            every: Duration::from_secs(120),
            redeliver_after: redeliver.then_some(Duration::from_secs(600)),
            unconfirmed_after: Duration::from_secs(3600),
            not_found_is_placed,
        }
    }

    fn watch(redelivered: bool) -> Watch {
        Watch {
            state: WatchState::Watching,
            started_at: 0,
            next_check_at: 2 * MIN,
            checks: 0,
            redelivered,
            last_error: None,
            klarna_failing_since: None,
        }
    }

    #[test]
    fn complete_confirms_and_incomplete_checks_again() {
        let c = cfg(true, false);
        assert_eq!(
            decide(&c, &watch(false), 2 * MIN, Read::Placed),
            WatchNext::Confirmed
        );
        assert_eq!(
            decide(&c, &watch(false), 2 * MIN, Read::NotPlaced),
            WatchNext::Again {
                at: 4 * MIN,
                error: None
            }
        );
        // The next check never lands past the redelivery point.
        assert_eq!(
            decide(&c, &watch(false), 9 * MIN, Read::NotPlaced),
            WatchNext::Again {
                at: 10 * MIN,
                error: None
            }
        );
    }

    #[test]
    fn no_order_by_redeliver_after_redelivers_once_then_unconfirmed() {
        let c = cfg(true, false);
        assert_eq!(
            decide(&c, &watch(false), 10 * MIN, Read::NotPlaced),
            WatchNext::Redeliver {
                now: 10 * MIN,
                at: 12 * MIN
            }
        );
        assert_eq!(
            decide(&c, &watch(true), 10 * MIN, Read::NotPlaced),
            WatchNext::Again {
                at: 12 * MIN,
                error: None
            }
        );
        assert!(matches!(
            decide(&c, &watch(true), 60 * MIN, Read::NotPlaced),
            WatchNext::Unconfirmed { .. }
        ));
        let off = cfg(false, false);
        assert_eq!(
            decide(&off, &watch(false), 10 * MIN, Read::NotPlaced),
            WatchNext::Again {
                at: 12 * MIN,
                error: None
            }
        );
    }

    #[test]
    fn a_404_reads_as_configured() {
        assert_eq!(
            decide(&cfg(true, true), &watch(false), 2 * MIN, Read::Gone),
            WatchNext::Confirmed
        );
        // Read as "not known": no more calls until the next decision.
        assert!(matches!(
            decide(&cfg(true, false), &watch(false), 2 * MIN, Read::Gone),
            WatchNext::Again { at, .. } if at == 10 * MIN
        ));
        assert!(matches!(
            decide(&cfg(true, false), &watch(true), 11 * MIN, Read::Gone),
            WatchNext::Again { at, .. } if at == 60 * MIN
        ));
    }

    #[test]
    fn a_hostile_retry_after_is_capped() {
        let failed = Read::Failed {
            error: "429".into(),
            retry_after: Some(Duration::from_secs(u64::MAX)),
        };
        assert!(matches!(
            decide(&cfg(false, false), &watch(false), 2 * MIN, failed),
            WatchNext::Again { at, .. } if at == 60 * MIN
        ));
    }
}
