//! The Read Session fallback. Each registered session is checked on the
//! configured schedule until a callback for it is recorded, Klarna returns an
//! `authorization_token` (then it is recorded and forwarded exactly like a
//! callback, `source = "read_session"`, deduped by the same id), the order is
//! `complete`, the session is gone (404), or `give_up_after` passes.
//! Klarna's errors are logged (never the credentials) and retried on the
//! schedule; a 429's `Retry-After` defers the next check, by at most
//! `MAX_RETRY_AFTER`. Nothing here can stop the loop.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::Release;
use crate::config::{Config, OrderWatchConfig, ReconcileConfig};
use crate::delivery;
use crate::klarna::client::{ReadError, ReadSessionClient, SessionState};
use crate::klarna::health::{self, Health};
use crate::klarna::order_watch as ow;
use crate::ops::due::{self, DueLoop, Job};
use crate::ops::metrics::WatchOutcome;
use crate::ops::metrics::{CheckOutcome, KlarnaOperation, KlarnaPurpose, Metrics};
use crate::ops::shutdown::Stop;
use crate::route::ForwardFormat;
use crate::store::{
    CheckNext, Claim, Delivery, Filter, RegState, Registration, Source, Store, WatchNext,
    WatchState,
};
use crate::text::saturating_add_ms;
use crate::types::{unix_ms, AuthorizationToken, SessionId, MAX_FIELD};

/// What the Read Session loop needs, and nothing else.
pub(crate) struct Context {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub client: Arc<ReadSessionClient>,
    /// Whether Klarna answers, as every request to it finds it.
    pub health: Arc<Health>,
    pub config: ReconcileConfig,
    pub order_watch: OrderWatchConfig,
    /// A recovered delivery's deadline, from receipt.
    pub deadline: Duration,
    pub shutdown_grace: Duration,
    pub deliveries: delivery::Handle,
    /// The routes whose backend is told of a release (`json` and `form`:
    /// a stock plugin behind `original` would try to place the order with
    /// the cancelled token).
    pub release_notices: Vec<String>,
    /// Rung on a new registration, or a watch started.
    pub wake: Arc<Notify>,
}

/// Starts the loop: the due-work loop over registrations and order
/// watches, which share the cap on Read Session calls in flight and the
/// client. It runs until `stop`, then lets checks in flight end.
pub(crate) fn spawn(ctx: Context, stop: Stop) -> JoinHandle<()> {
    let app = Arc::new(ctx);
    let mut lanes = Vec::new();
    if app.config.enabled {
        let ctx = app.clone();
        lanes.push(due::lane(
            app.store.clone(),
            |s| s.checks(),
            "cannot read registrations; retrying",
            move |r| -> Option<Job> {
                let ctx = ctx.clone();
                Some(Box::pin(async move { check(&ctx, r).await }))
            },
        ));
    }
    if app.order_watch.enabled {
        let ctx = app.clone();
        lanes.push(due::lane(
            app.store.clone(),
            |s| s.watches(),
            "cannot read order watches; retrying",
            move |d| -> Option<Job> {
                let ctx = ctx.clone();
                Some(Box::pin(async move { watch(&ctx, d).await }))
            },
        ));
    }
    let spec = DueLoop {
        lanes,
        cap: MAX_CHECKS_IN_FLIGHT,
        wake: app.wake.clone(),
        poll: app.store.poll_interval(),
        began: Box::new(|| None),
        grace: app.shutdown_grace,
        // Checks in flight may still record an authorization: shutdown lets
        // the delivery worker stop only once they are done (within the
        // grace). Nothing queued is worked through: it stays in the store.
        drain: None,
        overrun: None,
    };
    tokio::spawn(due::run(spec, stop))
}

/// The registration `POST /v1/sessions` asks for, checked: the route must
/// exist and accept the reference, and must forward somewhere fixed.
pub(crate) fn registration(
    config: &Config,
    session_id: &str,
    route: &str,
    reference: String,
    now: u64,
) -> Result<Registration, String> {
    if session_id.is_empty() || session_id.len() > MAX_FIELD {
        return Err("session_id must be 1 to 1024 bytes".into());
    }
    let Some(route) = config.route(route) else {
        return Err(format!("no route named `{route}`"));
    };
    if !route.path.accepts(&reference) {
        return Err("reference must be 1-128 characters of A-Z a-z 0-9 . _ ~ - (or empty for a route without {reference})".into());
    }
    if route.forward_format == ForwardFormat::Original && route.forward_path.is_none() {
        return Err("this route forwards to the URL the callback arrives on; set its forward_path to recover through Read Session".into());
    }
    let first = step(&config.reconcile.schedule, 0);
    Ok(Registration {
        session_id: SessionId::new(session_id.to_string()),
        route: route.name.clone(),
        reference,
        registered_at: now,
        checks: 0,
        next_check_at: saturating_add_ms(now, first),
        state: RegState::Active,
        outcome: None,
        last_error: None,
    })
}

/// Read Session requests in flight at once.
const MAX_CHECKS_IN_FLIGHT: usize = 8;

/// The longest wait a 429's `Retry-After` can put before the next check.
/// Klarna's value comes from the network, possibly `u64::MAX` seconds; an
/// hour is far longer than any real rate limit and still short of the
/// session's life, so a later check can still recover the authorization.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The delay before the check after `checks_done` checks: the schedule's
/// step, the last one repeating.
pub(crate) fn step(schedule: &[Duration], checks_done: u32) -> Duration {
    let i = (checks_done as usize).min(schedule.len().saturating_sub(1));
    schedule.get(i).copied().unwrap_or(Duration::from_secs(60))
}

/// When to check again after a 429 at `now` (unix ms) that asked for
/// `wait`: not before the schedule's `again_at`, nor before `wait` (capped
/// at `MAX_RETRY_AFTER`) has passed, nor after `give_up_at`, where the check
/// due then ends the registration.
fn after_rate_limit(now: u64, again_at: u64, wait: Duration, give_up_at: u64) -> u64 {
    let asked = saturating_add_ms(now, wait.min(MAX_RETRY_AFTER));
    again_at.max(asked).min(give_up_at)
}

/// Reads one session for `purpose`: counts the request, and logs when
/// Klarna starts failing or answers again (never each failed request).
async fn read_session(
    app: &Context,
    purpose: KlarnaPurpose,
    session: &SessionId,
) -> Result<SessionState, ReadError> {
    let ticket = app.health.begin();
    let r = app.client.read_session(session).await;
    let outcome = crate::klarna::client::outcome(&r);
    app.metrics
        .klarna_request(KlarnaOperation::ReadSession, purpose, outcome);
    let change = app.health.observe(ticket, outcome, unix_ms());
    let error = r.as_ref().err().map(|e| e as &dyn std::fmt::Display);
    health::log(change, KlarnaOperation::ReadSession, purpose, error);
    r
}

async fn check(app: &Context, r: Registration) {
    let cfg = &app.config;
    let checks = r.checks + 1;
    let now = unix_ms();
    let give_up_at = saturating_add_ms(r.registered_at, cfg.give_up_after);
    let next = if now >= give_up_at {
        app.metrics.reconcile_check(CheckOutcome::GaveUp);
        tracing::warn!(session_id = %r.session_id, checks = r.checks, "no authorization found for the session before give_up_after; checks stop");
        CheckNext::Ended {
            outcome: "gave_up".into(),
        }
    } else {
        let again_at = saturating_add_ms(now, step(&cfg.schedule, checks)).min(give_up_at);
        match read_session(app, KlarnaPurpose::Reconcile, &r.session_id).await {
            Ok(SessionState::Authorized(token)) => recover(app, &r, token, again_at).await,
            Ok(SessionState::Incomplete) => {
                app.metrics.reconcile_check(CheckOutcome::Incomplete);
                CheckNext::Again {
                    at: again_at,
                    error: None,
                }
            }
            Ok(SessionState::Complete) => {
                app.metrics.reconcile_check(CheckOutcome::Complete);
                tracing::info!(session_id = %r.session_id, "session complete (order placed); checks stop");
                CheckNext::Ended {
                    outcome: "complete".into(),
                }
            }
            Ok(SessionState::NotFound) => {
                app.metrics.reconcile_check(CheckOutcome::Expired);
                tracing::info!(session_id = %r.session_id, "session unknown or expired at Klarna (404); checks stop");
                CheckNext::Ended {
                    outcome: "expired".into(),
                }
            }
            Err(e) => {
                app.metrics.reconcile_check(e.check_outcome());
                let at = match &e {
                    ReadError::RateLimited(Some(wait)) => {
                        after_rate_limit(now, again_at, *wait, give_up_at)
                    }
                    _ => again_at,
                };
                // Klarna failing and answering again are logged once each,
                // by `read_session`: not once per session checked.
                tracing::debug!(session_id = %r.session_id, error = %e, retry_in_ms = at.saturating_sub(now), "Read Session check failed; will retry");
                CheckNext::Again {
                    at,
                    error: Some(e.to_string()),
                }
            }
        }
    };
    if let Err(e) = app
        .store
        .checks()
        .finish(r.session_id.clone(), checks, next)
        .await
    {
        tracing::error!(session_id = %r.session_id, error = %e, "cannot record a Read Session check; it will be repeated");
    }
}

/// One order-watch check of a delivered authorization.
async fn watch(app: &Context, d: Delivery) {
    let Some(w) = d.watch.clone() else { return };
    if w.state == WatchState::Releasing {
        // The DELETE was recorded before it was sent, and may have reached
        // Klarna: send it again, and read a 403/404 as released.
        return cancel(app, &d, w.checks, true).await;
    }
    let read = ow::Read::of(read_session(app, KlarnaPurpose::OrderWatch, &d.session_id).await);
    let failed = matches!(read, ow::Read::Failed { .. });
    let not_placed = matches!(read, ow::Read::NotPlaced);
    let now = unix_ms();
    let mut next = ow::decide(&app.order_watch, &w, now, read);
    // Superseded authorizations are looked for only with release on (or
    // dry_run): they are what release must never cancel.
    let release_at = ow::release_at(&app.order_watch, &d);
    let release_due = release_at.is_some_and(|r| now >= r);
    let confirmed_here = matches!(next, WatchNext::Confirmed) && release_at.is_some();
    if confirmed_here || (not_placed && release_due) {
        next = match session_of(app, &d).await {
            Ok(session) if matches!(next, WatchNext::Confirmed) => confirmed(app, &d, &session),
            Ok(session) => release(app, &d, &session, now),
            Err(e) => WatchNext::Again {
                at: saturating_add_ms(now, app.order_watch.every),
                error: Some(format!("cannot read the session's deliveries: {e}")),
            },
        };
    }
    let next = ow::on_release_clock(&app.order_watch, &d, now, next);
    let go = matches!(next, WatchNext::Release { .. });
    if !record(app, &d, w.checks + 1, next, failed).await {
        return;
    }
    if go {
        cancel(app, &d, w.checks + 1, false).await;
    }
}

/// Records what a check decided, logs and counts it. False when the store
/// did not take it: the check is then repeated.
async fn record(app: &Context, d: &Delivery, checks: u32, next: WatchNext, failed: bool) -> bool {
    ow::log(d, &next, failed);
    if let Err(e) = app.store.watches().finish(d.id, checks, next.clone()).await {
        tracing::error!(id = %d.id, error = %e, "cannot record an order-watch check; it will be repeated");
        return false;
    }
    if let Some(outcome) = ow::outcome(&next) {
        app.metrics.order_watch(outcome);
    }
    if matches!(next, WatchNext::Redeliver { .. }) {
        app.deliveries.wake();
    }
    true
}

/// Every delivery the store holds for `d`'s session, `d` left out.
async fn session_of(
    app: &Context,
    d: &Delivery,
) -> Result<Vec<Delivery>, crate::store::StoreError> {
    let filter = Filter {
        session_id: Some(d.session_id.clone()),
        ..Filter::default()
    };
    let page = app.store.list(filter, None, 100).await?;
    Ok(page
        .deliveries
        .into_iter()
        .filter(|x| x.id != d.id && !x.is_release_notice())
        .collect())
}

/// Klarna says `complete`: a delivery a later authorization of the same
/// session superseded is listed (unconfirmed, with why), never cancelled:
/// which token Read Session shows after a re-authorization is not
/// documented, so `complete` may be the later token's order.
fn confirmed(app: &Context, d: &Delivery, session: &[Delivery]) -> WatchNext {
    if !ow::superseded(d, session) {
        return WatchNext::Confirmed;
    }
    app.metrics.order_watch(WatchOutcome::Superseded);
    tracing::warn!(id = %d.id, session_id = %d.session_id, reference = %d.reference, route = %d.route, "authorization superseded by a later one of the same session: listed, not cancelled");
    WatchNext::Unconfirmed {
        error: Some(SUPERSEDED.into()),
    }
}

/// The error a superseded authorization is listed with.
pub(crate) const SUPERSEDED: &str =
    "superseded: a later authorization of the session was delivered and the session is complete; not cancelled automatically";

/// The final Read Session found no order at `release_after`: release,
/// unless the backend might still place it, the authorization is past its
/// life, or it was superseded.
fn release(app: &Context, d: &Delivery, session: &[Delivery], now: u64) -> WatchNext {
    let cfg = &app.order_watch;
    if now >= ow::expires_at(d) {
        return WatchNext::ReleaseFailed {
            error: "expired: the authorization was past its 60 minutes at release_after; no cancel sent".into(),
        };
    }
    if ow::superseded(d, session) {
        app.metrics.order_watch(WatchOutcome::Superseded);
        return WatchNext::Unconfirmed {
            error: Some("superseded: a later authorization of the session was delivered; not cancelled automatically".into()),
        };
    }
    if let Some(why) = ow::release_blocked(cfg, d, session, now) {
        tracing::debug!(id = %d.id, session_id = %d.session_id, why, "release waits");
        return WatchNext::Again {
            at: saturating_add_ms(now, cfg.every.min(Duration::from_secs(30)))
                .min(ow::expires_at(d)),
            error: None,
        };
    }
    if cfg.release == Release::DryRun {
        tracing::warn!(id = %d.id, session_id = %d.session_id, reference = %d.reference, route = %d.route, "dry_run: would release the authorization (no order placed by release_after)");
        return WatchNext::Unconfirmed {
            error: Some(DRY_RUN.into()),
        };
    }
    WatchNext::Release {
        at: saturating_add_ms(now, Duration::from_secs(30).min(cfg.every)),
    }
}

/// The error a `dry_run` release lists its authorization with.
pub(crate) const DRY_RUN: &str =
    "dry_run: would have released the authorization (no order placed by release_after)";

/// Sends the DELETE of a release already recorded, and records what
/// Klarna said.
async fn cancel(app: &Context, d: &Delivery, checks: u32, resumed: bool) {
    let ticket = app.health.begin();
    let r = app
        .client
        .cancel_authorization(&d.authorization_token)
        .await;
    let outcome = crate::klarna::client::cancel_outcome(&r);
    app.metrics.klarna_request(
        KlarnaOperation::CancelAuthorization,
        KlarnaPurpose::Release,
        outcome,
    );
    let change = app.health.observe(ticket, outcome, unix_ms());
    let error = r.as_ref().err().map(|e| e as &dyn std::fmt::Display);
    health::log(
        change,
        KlarnaOperation::CancelAuthorization,
        KlarnaPurpose::Release,
        error,
    );
    let next = ow::after_cancel(d, r, resumed, unix_ms(), app.order_watch.every);
    // The notice is recorded before the release: if it cannot be, the
    // release stays recorded as under way, and the DELETE is sent again
    // (Klarna's 403 then reads as released) until the notice is stored.
    if matches!(next, WatchNext::Released) && !notice(app, d).await {
        return;
    }
    record(app, d, checks, next, false).await;
}

/// Queues the notice that tells the backend `d` was released, on routes
/// that get one. False when the store did not take it.
async fn notice(app: &Context, d: &Delivery) -> bool {
    if !app.release_notices.contains(&d.route) {
        return true;
    }
    match app
        .store
        .claim(d.release_notice(unix_ms(), app.deadline))
        .await
    {
        Ok(_) => {
            app.deliveries.wake();
            true
        }
        Err(e) => {
            tracing::error!(id = %d.id, error = %e, "cannot record the release notice for the backend; the release is repeated");
            false
        }
    }
}

/// Records a token found through Read Session exactly as a callback would
/// be, so a callback before or after gives no second forward.
async fn recover(
    app: &Context,
    r: &Registration,
    token: AuthorizationToken,
    again_at: u64,
) -> CheckNext {
    let now = unix_ms();
    let body = serde_json::json!({
        "authorization_token": token.expose(),
        "session_id": r.session_id.as_str(),
    })
    .to_string();
    let d = Delivery::new_pending(
        r.route.clone(),
        r.reference.clone(),
        r.session_id.clone(),
        token,
        Source::ReadSession,
        Bytes::from(body),
        None,
        now,
        app.deadline,
    );
    let id = d.id;
    match app.store.claim(d).await {
        Ok(Claim::Recorded) => {
            app.deliveries.wake();
            app.metrics.reconcile_check(CheckOutcome::Recovered);
            app.metrics.recovered();
            tracing::info!(session_id = %r.session_id, %id, route = %r.route, reference = %r.reference, "authorization recovered through Read Session");
            CheckNext::Ended {
                outcome: "read_session".into(),
            }
        }
        Ok(Claim::Duplicate) => {
            app.metrics.reconcile_check(CheckOutcome::AlreadyRecorded);
            CheckNext::Ended {
                outcome: "callback".into(),
            }
        }
        Err(e) => {
            app.metrics.reconcile_check(CheckOutcome::StoreError);
            tracing::error!(session_id = %r.session_id, error = %e, "cannot record a recovered authorization; will check again");
            CheckNext::Again {
                at: again_at,
                error: Some(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_step_repeats() {
        let s = [
            Duration::from_secs(60),
            Duration::from_secs(120),
            Duration::from_secs(300),
        ];
        assert_eq!(step(&s, 0), Duration::from_secs(60));
        assert_eq!(step(&s, 1), Duration::from_secs(120));
        assert_eq!(step(&s, 2), Duration::from_secs(300));
        assert_eq!(step(&s, 50), Duration::from_secs(300));
    }

    #[test]
    fn a_hostile_retry_after_is_capped_at_an_hour_and_at_give_up() {
        let now = 1_700_000_000_000;
        let again = now + 60_000;
        let day = now + 86_400_000;
        let hostile = Duration::from_secs(u64::MAX);
        assert_eq!(after_rate_limit(now, again, hostile, day), now + 3_600_000);
        assert_eq!(
            after_rate_limit(now, again, Duration::MAX, day),
            now + 3_600_000
        );
        // Never past give_up_after: the check then ends the registration.
        assert_eq!(
            after_rate_limit(now, again, hostile, now + 5_000),
            now + 5_000
        );
        // An ordinary Retry-After is honoured; a short one defers to the schedule.
        let two_min = Duration::from_secs(120);
        assert_eq!(after_rate_limit(now, again, two_min, day), now + 120_000);
        assert_eq!(
            after_rate_limit(now, again, Duration::from_secs(1), day),
            again
        );
        // No overflow at the end of time.
        assert_eq!(
            after_rate_limit(u64::MAX - 1, u64::MAX - 1, hostile, u64::MAX),
            u64::MAX
        );
    }
}
