//! Order watch: proof that a delivered authorization became an order. A
//! backend's 2xx says it received the delivery, not that it placed the
//! order; Klarna's Read Session says `complete` once it has. So after the
//! backend accepts a delivery, its session is read on a schedule until then.
//! No order by `redeliver_after`: the backend gets it once more (the same
//! `Idempotency-Key`, and `Authback-Redelivery: order-not-placed`). None by
//! `unconfirmed_after`: the delivery is `unconfirmed`, the "charged but no
//! order" list an operator acts on.
//!
//! Both decisions need an answer from Klarna: while Read Session fails
//! (down, 5xx, 429, wrong credentials), not knowing is not "no order". The
//! watch then neither redelivers nor ends; it asks again every `every`
//! until a read succeeds (then the rules above apply, on their usual
//! clock), or until the session is certainly over (`SESSION_LIFE`), when
//! it ends `unconfirmed` with "Klarna unreachable since …" as its error.
//!
//! The checks run in the Read Session loop (`reconcile`), under its cap on
//! calls in flight and with its one Klarna client. Nothing here touches an
//! ack or a delivery attempt.

use std::time::Duration;

use crate::config::{OrderWatchConfig, Release, AUTHORIZATION_LIFE};
use crate::klarna::client::{Cancel, ReadError, SessionState};
use crate::ops::metrics::WatchOutcome;
use crate::store::{Delivery, DeliveryState, Watch, WatchNext};
use crate::text::{rfc3339, saturating_add_ms};
use crate::types::unix_ms;

/// The longest a 429's `Retry-After` can defer a check (Klarna's value
/// comes from the network and can be `u64::MAX` seconds).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How long a Klarna session lives at most: 48 h from its creation, which
/// came before the authorization, so before the watch started. Past this a
/// watch waiting for Klarna ends, since there is nothing left to read.
const SESSION_LIFE: Duration = Duration::from_secs(48 * 3600);

/// What one Read Session call said about the order.
#[derive(Debug)]
pub(crate) enum Read {
    /// `status: complete`: an order was placed with the authorization.
    Placed,
    /// The session is there and incomplete.
    NotPlaced,
    /// 404: the session is gone; see `OrderWatchConfig::not_found_is_placed`.
    Gone,
    /// No answer worth reading (a 5xx, a timeout, a 401...): Klarna is
    /// failing, and the watch waits for it.
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
        Read::Failed { error, retry_after } => {
            return klarna_failing(cfg, w, now, error, retry_after)
        }
        Read::Gone => Some("Read Session: session not found (404)".to_string()),
        _ => None,
    };
    let unconfirmed_at = saturating_add_ms(w.started_at, cfg.unconfirmed_after);
    if now >= unconfirmed_at {
        // After waiting for Klarna, the incident tells what the read
        // found, not the failure that is over.
        let error = error.or_else(|| {
            w.klarna_failing_since
                .map(|_| "Read Session: no order placed (Klarna answered again)".to_string())
        });
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

/// A check at `now` that Klarna failed with `error`: ask again after
/// `every` (or the `Retry-After`, capped), neither redelivering nor ending
/// the watch, until the session is certainly over (or `unconfirmed_after`,
/// if that is later). The error says since when Klarna has failed.
fn klarna_failing(
    cfg: &OrderWatchConfig,
    w: &Watch,
    now: u64,
    error: String,
    retry_after: Option<Duration>,
) -> WatchNext {
    let since = w.klarna_failing_since.unwrap_or(now);
    let error = format!(
        "Klarna unreachable since {}: {error}",
        rfc3339(since / 1000)
    );
    let end = saturating_add_ms(w.started_at, SESSION_LIFE.max(cfg.unconfirmed_after));
    if now >= end {
        return WatchNext::Unconfirmed { error: Some(error) };
    }
    let mut at = saturating_add_ms(now, cfg.every);
    if let Some(wait) = retry_after {
        at = at.max(saturating_add_ms(now, wait.min(MAX_RETRY_AFTER)));
    }
    WatchNext::KlarnaFailing {
        at: at.min(end),
        since,
        error,
    }
}

/// The longest wait before a failed DELETE is sent again; never past the
/// authorization's life.
const RELEASE_RETRY: Duration = Duration::from_secs(30);

/// When the release decision is due for `d`: `release_after` from the
/// callback's arrival. `None` when release is off.
pub(crate) fn release_at(cfg: &OrderWatchConfig, d: &Delivery) -> Option<u64> {
    (cfg.release != Release::Off).then(|| saturating_add_ms(d.received_at, cfg.release_after))
}

/// When the authorization can no longer be cancelled (nor used).
pub(crate) fn expires_at(d: &Delivery) -> u64 {
    saturating_add_ms(d.received_at, AUTHORIZATION_LIFE)
}

/// A check that is to run again lands no later than the release point, so
/// the final Read Session is made on time.
pub(crate) fn on_release_clock(
    cfg: &OrderWatchConfig,
    d: &Delivery,
    now: u64,
    next: WatchNext,
) -> WatchNext {
    let Some(r) = release_at(cfg, d).filter(|r| *r > now) else {
        return next;
    };
    match next {
        WatchNext::Again { at, error } if at > r => WatchNext::Again { at: r, error },
        WatchNext::Redeliver { now, at } if at > r => WatchNext::Redeliver { now, at: r },
        other => other,
    }
}

/// Why a release must wait, from what the store holds of the session:
/// `None` when nothing stops it. The backend might still place the order
/// while any delivery of the session is pending (or in flight), or was
/// answered less than `release_after` ago.
pub(crate) fn release_blocked(
    cfg: &OrderWatchConfig,
    d: &Delivery,
    session: &[Delivery],
    now: u64,
) -> Option<&'static str> {
    // The backend's first acceptance of each delivery: a redelivery is
    // only a nudge of the same authorization, and counting from it would
    // put every redelivered one (at 10m) past the token's life.
    let answered_recently = |x: &Delivery| {
        x.watch
            .as_ref()
            .map(|w| w.started_at)
            .or(x.delivered_at)
            .is_some_and(|at| saturating_add_ms(at, cfg.release_after) > now)
    };
    if d.state == DeliveryState::Pending
        || session.iter().any(|x| x.state == DeliveryState::Pending)
    {
        return Some("a delivery of the session is pending");
    }
    if answered_recently(d) || session.iter().any(answered_recently) {
        return Some("a delivery of the session was answered less than release_after ago");
    }
    None
}

/// Whether a later authorization of the same session was delivered: then
/// `d` was superseded by a re-authorization. Which token Read Session
/// shows then is not documented, so a superseded one is listed, never
/// cancelled.
pub(crate) fn superseded(d: &Delivery, session: &[Delivery]) -> bool {
    session.iter().any(|x| {
        x.id != d.id
            && x.authorization_token != d.authorization_token
            && x.received_at > d.received_at
            && x.delivered_at.is_some()
    })
}

/// What a DELETE at `now` ended in; `resumed` when the release was
/// recorded before this job (a retry, or a restart while the DELETE was
/// in flight): then Klarna's 403/404 means the earlier DELETE went through.
pub(crate) fn after_cancel(
    d: &Delivery,
    r: Result<Cancel, ReadError>,
    resumed: bool,
    now: u64,
    every: Duration,
) -> WatchNext {
    match r {
        Ok(Cancel::Cancelled) => WatchNext::Released,
        Ok(Cancel::Refused(_)) if resumed => WatchNext::Released,
        Ok(Cancel::Refused(status)) => WatchNext::ReleaseFailed {
            error: format!(
                "Klarna refused to cancel the authorization ({status}): consumed, expired or unknown"
            ),
        },
        Err(e) => {
            let end = expires_at(d);
            let at = saturating_add_ms(now, every.min(RELEASE_RETRY)).min(end);
            if now >= end || at >= end {
                WatchNext::ReleaseFailed {
                    error: format!("cancel failed until the authorization expired: {e}"),
                }
            } else {
                WatchNext::Release { at }
            }
        }
    }
}

/// The outcome label of `authback_order_watch_total` a decision counts as.
pub(crate) fn outcome(next: &WatchNext) -> Option<WatchOutcome> {
    match next {
        WatchNext::Confirmed => Some(WatchOutcome::Confirmed),
        WatchNext::Redeliver { .. } => Some(WatchOutcome::Redelivered),
        WatchNext::Unconfirmed { .. } => Some(WatchOutcome::Unconfirmed),
        WatchNext::Released => Some(WatchOutcome::Released),
        WatchNext::ReleaseFailed { .. } => Some(WatchOutcome::ReleaseFailed),
        WatchNext::Again { .. } | WatchNext::KlarnaFailing { .. } | WatchNext::Release { .. } => {
            None
        }
    }
}

/// Logs what a check decided for `d`; `klarna_failed` when the check got
/// no answer from Klarna. Klarna failing itself is logged once, by
/// `klarna::health`, not here for each watch.
pub(crate) fn log(d: &Delivery, next: &WatchNext, klarna_failed: bool) {
    let now = unix_ms();
    match next {
        WatchNext::Confirmed => {
            tracing::info!(id = %d.id, session_id = %d.session_id, reference = %d.reference, route = %d.route, "order placed: Klarna confirms it")
        }
        WatchNext::Redeliver { .. } => {
            tracing::warn!(id = %d.id, session_id = %d.session_id, reference = %d.reference, route = %d.route, "no order placed yet: delivering to the backend once more")
        }
        WatchNext::Unconfirmed { error: Some(error) } if klarna_failed => {
            tracing::warn!(id = %d.id, session_id = %d.session_id, reference = %d.reference, route = %d.route, %error, "Klarna failed until the session's end: unconfirmed (order unknown)")
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
        WatchNext::Release { .. } => {
            tracing::info!(id = %d.id, session_id = %d.session_id, reference = %d.reference, route = %d.route, "no order placed by release_after: cancelling the authorization at Klarna")
        }
        WatchNext::Released => {
            tracing::warn!(id = %d.id, session_id = %d.session_id, reference = %d.reference, route = %d.route, "authorization released: cancelled at Klarna, the customer is no longer charged")
        }
        WatchNext::ReleaseFailed { error } => {
            tracing::warn!(id = %d.id, session_id = %d.session_id, reference = %d.reference, route = %d.route, %error, "authorization not released: unconfirmed (charged, no order)")
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
            release: Release::Off,
            release_after: Duration::from_secs(55 * 60),
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

    /// A watch whose checks have failed since `since`.
    fn waiting(redelivered: bool, since: u64) -> Watch {
        Watch {
            klarna_failing_since: Some(since),
            last_error: Some("Klarna unreachable since …".into()),
            ..watch(redelivered)
        }
    }

    fn down() -> Read {
        Read::Failed {
            error: "cannot reach Klarna: connection refused".into(),
            retry_after: None,
        }
    }

    const HOUR: u64 = 60 * MIN;

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
            WatchNext::KlarnaFailing { at, .. } if at == 62 * MIN
        ));
        // An ordinary one is honoured, and none goes past the session's end.
        let failed = |secs| Read::Failed {
            error: "429".into(),
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert!(matches!(
            decide(&cfg(false, false), &watch(false), 2 * MIN, failed(300)),
            WatchNext::KlarnaFailing { at, .. } if at == 7 * MIN
        ));
        assert!(matches!(
            decide(&cfg(false, false), &watch(false), 47 * HOUR + 30 * MIN, failed(3600)),
            WatchNext::KlarnaFailing { at, .. } if at == 48 * HOUR
        ));
    }

    #[test]
    fn the_first_failure_starts_the_wait_and_says_since_when() {
        assert_eq!(
            decide(&cfg(true, false), &watch(false), 2 * MIN, down()),
            WatchNext::KlarnaFailing {
                at: 4 * MIN,
                since: 2 * MIN,
                error: "Klarna unreachable since 1970-01-01T00:02:00Z: cannot reach Klarna: connection refused".into(),
            }
        );
    }

    #[test]
    fn while_klarna_fails_the_watch_neither_redelivers_nor_ends() {
        let c = cfg(true, false);
        // Past redeliver_after: no redelivery on a guess.
        assert_eq!(
            decide(&c, &waiting(false, 4 * MIN), 10 * MIN, down()),
            WatchNext::KlarnaFailing {
                at: 12 * MIN,
                since: 4 * MIN,
                error: "Klarna unreachable since 1970-01-01T00:04:00Z: cannot reach Klarna: connection refused".into(),
            }
        );
        // Past unconfirmed_after: not "no order" either; the time it
        // started failing is kept.
        assert!(matches!(
            decide(&c, &waiting(true, 4 * MIN), 5 * HOUR, down()),
            WatchNext::KlarnaFailing { at, since, .. } if at == 5 * HOUR + 2 * MIN && since == 4 * MIN
        ));
        // Any failure counts: wrong credentials too.
        let refused = Read::Failed {
            error: "Klarna refused the credentials (401 Unauthorized)".into(),
            retry_after: None,
        };
        assert!(matches!(
            decide(&c, &watch(false), 2 * HOUR, refused),
            WatchNext::KlarnaFailing { since, .. } if since == 2 * HOUR
        ));
        // The check before the session's end lands on it.
        assert!(matches!(
            decide(&c, &waiting(false, MIN), 48 * HOUR - MIN, down()),
            WatchNext::KlarnaFailing { at, .. } if at == 48 * HOUR
        ));
    }

    #[test]
    fn klarna_failing_until_the_session_is_over_ends_unconfirmed_with_why() {
        let c = cfg(true, false);
        assert_eq!(
            decide(&c, &waiting(false, 4 * MIN), 48 * HOUR, down()),
            WatchNext::Unconfirmed {
                error: Some("Klarna unreachable since 1970-01-01T00:04:00Z: cannot reach Klarna: connection refused".into()),
            }
        );
        // An unconfirmed_after past 48 h is never cut short.
        let long = OrderWatchConfig {
            unconfirmed_after: Duration::from_secs(72 * 3600),
            ..c
        };
        assert!(matches!(
            decide(&long, &waiting(false, 4 * MIN), 48 * HOUR, down()),
            WatchNext::KlarnaFailing { at, .. } if at == 48 * HOUR + 2 * MIN
        ));
        assert!(matches!(
            decide(&long, &waiting(false, 4 * MIN), 72 * HOUR, down()),
            WatchNext::Unconfirmed { .. }
        ));
    }

    #[test]
    fn once_klarna_answers_the_usual_rules_apply_on_their_clock() {
        let c = cfg(true, false);
        // Before redeliver_after: check again; the wait's error is cleared.
        assert_eq!(
            decide(&c, &waiting(false, 4 * MIN), 6 * MIN, Read::NotPlaced),
            WatchNext::Again {
                at: 8 * MIN,
                error: None
            }
        );
        // Past it, not yet redelivered: the redelivery that waited.
        assert_eq!(
            decide(&c, &waiting(false, 4 * MIN), 30 * MIN, Read::NotPlaced),
            WatchNext::Redeliver {
                now: 30 * MIN,
                at: 32 * MIN
            }
        );
        assert_eq!(
            decide(&c, &waiting(false, 4 * MIN), 5 * HOUR, Read::Placed),
            WatchNext::Confirmed
        );
        // Past unconfirmed_after with no order: now it is known, and the
        // incident says the read found it, not that Klarna was failing.
        assert_eq!(
            decide(&c, &waiting(true, 4 * MIN), 5 * HOUR, Read::NotPlaced),
            WatchNext::Unconfirmed {
                error: Some("Read Session: no order placed (Klarna answered again)".into())
            }
        );
        assert_eq!(
            decide(&c, &watch(true), 5 * HOUR, Read::NotPlaced),
            WatchNext::Unconfirmed { error: None }
        );
        assert_eq!(
            decide(&c, &waiting(true, 4 * MIN), 5 * HOUR, Read::Gone),
            WatchNext::Unconfirmed {
                error: Some("Read Session: session not found (404)".into())
            }
        );
    }

    fn delivered(received_at: u64, token: &str, started_at: u64) -> Delivery {
        use crate::types::{AuthorizationToken, SessionId};
        let mut d = Delivery::new_pending(
            "klarna".into(),
            "cart-1".into(),
            SessionId::new("sess-1".to_string()),
            AuthorizationToken::new(token),
            crate::store::Source::Callback,
            bytes::Bytes::new(),
            None,
            received_at,
            Duration::from_secs(3600),
        );
        d.state = DeliveryState::Delivered;
        d.delivered_at = Some(started_at);
        d.watch = Some(Watch {
            started_at,
            ..watch(false)
        });
        d
    }

    #[test]
    fn release_waits_for_the_backend_and_never_cancels_a_superseded_one() {
        let c = OrderWatchConfig {
            release: Release::On,
            ..cfg(true, false)
        };
        let d = delivered(0, "tok-a", MIN);
        assert_eq!(release_at(&c, &d), Some(55 * MIN));
        assert_eq!(release_at(&cfg(true, false), &d), None, "off");
        assert_eq!(release_blocked(&c, &d, &[], 56 * MIN), None);
        // Accepted first at 3 min: not before 58 min.
        let late = delivered(0, "tok-a", 3 * MIN);
        assert!(release_blocked(&c, &late, &[], 56 * MIN).is_some());
        assert_eq!(release_blocked(&c, &late, &[], 58 * MIN), None);
        // A redelivery pending, or another delivery of the session pending.
        let mut pending = d.clone();
        pending.state = DeliveryState::Pending;
        assert!(release_blocked(&c, &pending, &[], 56 * MIN).is_some());
        assert!(release_blocked(&c, &d, &[pending], 56 * MIN).is_some());
        // A later authorization of the session supersedes this one.
        let later = delivered(MIN, "tok-b", 2 * MIN);
        assert!(superseded(&d, std::slice::from_ref(&later)));
        assert!(!superseded(&later, std::slice::from_ref(&d)));
        // The check before the release lands on it.
        assert_eq!(
            on_release_clock(
                &c,
                &d,
                54 * MIN,
                WatchNext::Again {
                    at: 56 * MIN,
                    error: None
                }
            ),
            WatchNext::Again {
                at: 55 * MIN,
                error: None
            }
        );
    }

    #[test]
    fn what_a_delete_ends_in() {
        use http::StatusCode;
        let d = delivered(0, "tok-a", MIN);
        let every = Duration::from_secs(120);
        assert_eq!(
            after_cancel(&d, Ok(Cancel::Cancelled), false, 55 * MIN, every),
            WatchNext::Released
        );
        // 403/404 at once: recorded, not retried; after a cut-off DELETE: released.
        assert!(matches!(
            after_cancel(
                &d,
                Ok(Cancel::Refused(StatusCode::FORBIDDEN)),
                false,
                55 * MIN,
                every
            ),
            WatchNext::ReleaseFailed { .. }
        ));
        assert_eq!(
            after_cancel(
                &d,
                Ok(Cancel::Refused(StatusCode::NOT_FOUND)),
                true,
                55 * MIN,
                every
            ),
            WatchNext::Released
        );
        // A 5xx is retried within the token's life, then given up.
        let e = || Err(ReadError::Status(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(
            after_cancel(&d, e(), false, 55 * MIN, every),
            WatchNext::Release {
                at: 55 * MIN + 30_000
            }
        );
        assert!(matches!(
            after_cancel(&d, e(), true, 60 * MIN - 10_000, every),
            WatchNext::ReleaseFailed { .. }
        ));
    }

    #[test]
    fn each_read_error_is_a_failure_that_waits() {
        use http::StatusCode;
        let c = cfg(true, false);
        for e in [
            ReadError::Auth(StatusCode::FORBIDDEN),
            ReadError::RateLimited(None),
            ReadError::Status(StatusCode::SERVICE_UNAVAILABLE),
            ReadError::Status(StatusCode::BAD_REQUEST),
            ReadError::Timeout(Duration::from_secs(10)),
            ReadError::Connect("dns error".into()),
            ReadError::Body,
        ] {
            let read = Read::of(Err(e));
            assert!(
                matches!(
                    decide(&c, &watch(false), 30 * MIN, read),
                    WatchNext::KlarnaFailing { .. }
                ),
                "not waiting"
            );
        }
    }
}
