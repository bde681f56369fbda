//! The delivery worker: takes due deliveries from the store, sends each one
//! normalized request to the upstream, and records the outcome. Exponential
//! backoff with full jitter, `Retry-After` (honoured up to the deadline), a
//! per-attempt timeout and a deadline after which a delivery is dead (kept,
//! listed, replayable).
//!
//! This is the only code that talks to the upstream about callbacks; what
//! it sends for each authorization is rendered in `render`. Others see the
//! worker through a `Handle`: wake it, count its attempts in flight.

pub(crate) mod excerpt;
pub mod render;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use http::{header, HeaderValue, Request, StatusCode};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::DeliveryConfig;
use crate::ops::due::{self, Drain, DueLoop, Job};
use crate::ops::metrics::{DeliveryOutcome, Metrics};
use crate::ops::shutdown::Stop;
use crate::route::{AnswerRule, Means, Route};
use crate::store::{Attempt, AttemptOutcome, Attempted, Delivery, Excerpt, Store};
use crate::text::{hex, saturating_add_ms};
use crate::types::{unix_ms, DeliveryId, Secret};
use crate::upstream::Upstream;

/// What the rest of authback may do with the delivery worker: wake it for
/// new work, and read how many attempts it has in flight.
#[derive(Clone, Default)]
pub(crate) struct Handle(Arc<Shared>);

#[derive(Default)]
struct Shared {
    /// New work, or a replayed delivery.
    wake: Arc<Notify>,
    in_flight: AtomicU64,
    /// When shutdown began: the drain ends `shutdown_grace` after it,
    /// however long the listeners took to drain.
    stop_began: OnceLock<Instant>,
    /// Deliveries whose attempt is running here, sending or recording its
    /// outcome, with that attempt's number. A shared store may hand one out
    /// again when its lease runs out while the outcome still waits to be
    /// recorded; it is not sent twice.
    attempting: Mutex<HashMap<DeliveryId, u32>>,
}

impl Handle {
    /// Tells the worker there is work: a callback recorded or replayed.
    pub(crate) fn wake(&self) {
        self.0.wake.notify_one();
    }

    /// The worker's doorbell, for those that must not import this module.
    pub(crate) fn doorbell(&self) -> Arc<Notify> {
        self.0.wake.clone()
    }

    /// Attempts running now.
    pub(crate) fn in_flight(&self) -> u64 {
        self.0.in_flight.load(Ordering::Relaxed)
    }

    /// Shutdown began now: the drain is measured from here.
    pub(crate) fn shutdown_began(&self) {
        let _ = self.0.stop_began.set(Instant::now());
    }

    fn attempting(&self) -> MutexGuard<'_, HashMap<DeliveryId, u32>> {
        self.0.attempting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Everything the worker needs, and nothing else.
pub(crate) struct Worker {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub upstream: Arc<Upstream>,
    pub routes: Vec<Route>,
    pub config: DeliveryConfig,
    pub signing_secret: Option<Secret>,
    /// What an attempt log must not keep of the backend's answers.
    pub redactor: excerpt::Redactor,
    pub shutdown_grace: Duration,
    /// With order watch on: how long after the backend's 2xx the first
    /// Read Session check is due.
    pub watch_after: Option<Duration>,
    /// Rung when a watch starts: the Read Session loop wakes to schedule it.
    pub watch_doorbell: Arc<Notify>,
    pub handle: Handle,
}

impl Worker {
    fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// Starts the worker: the due-work loop over the outbox. It runs until
/// `stop`; with a store that does not survive the process, it then keeps
/// delivering what is queued for up to `shutdown_grace`.
pub(crate) fn spawn(worker: Worker, stop: Stop) -> JoinHandle<()> {
    let app = Arc::new(worker);
    let store = app.store.clone();
    let drain = (!store.durable()).then(|| {
        let store = store.clone();
        Drain {
            queued: Box::new(move || {
                let store = store.clone();
                Box::pin(async move { store.stats().await.map(|s| s.pending).unwrap_or(0) })
            }),
            lost: "memory store: pending deliveries are lost at exit",
        }
    });
    let handle = app.handle.clone();
    let worker = app.clone();
    let spec = DueLoop {
        lanes: vec![due::lane(
            store.clone(),
            |s| s.deliveries(),
            "cannot read the outbox; retrying in 1s",
            move |d| Running::start(&worker, &d).map(|running| -> Job {
                Box::pin(async move {
                    attempt(&running.app, d).await;
                    drop(running);
                })
            }),
        )],
        cap: app.config.max_in_flight,
        wake: app.handle.0.wake.clone(),
        poll: store.poll_interval(),
        began: Box::new(move || handle.0.stop_began.get().copied()),
        grace: app.shutdown_grace,
        drain,
        overrun: Some("shutdown grace over with delivery attempts in flight; a durable store sends them again after restart"),
    };
    tokio::spawn(due::run(spec, stop))
}

/// How much of an answer's body a route's `body_contains` rules read.
const RULES_READ: usize = 64 * 1024;

/// How an attempt failed.
#[derive(Debug)]
enum Failure {
    /// Worth another attempt (connection error, timeout, 408, 425, 429, 5xx).
    Transient {
        error: String,
        retry_after: Option<Duration>,
    },
    /// The upstream refused it for good (other 4xx): dead at once.
    Permanent(String),
}

async fn attempt(app: &Worker, d: Delivery) {
    let n = d.attempts + 1;
    let (started_at, clock) = (unix_ms(), Instant::now());
    let (answer, result) = match app.route(&d.route) {
        Some(route) => send(app, &d, route, n).await,
        None => (
            None,
            Err(Failure::Permanent(format!(
                "route `{}` is no longer configured",
                d.route
            ))),
        ),
    };
    let now = unix_ms();
    // The attempt log's entry; the outcome below fills in its error and
    // retry, and the store records both in one step.
    let mut record = Attempt {
        at: started_at,
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        status: answer.as_ref().map(|a| a.status),
        error: None,
        retry_in_ms: None,
        redelivery: d.is_redelivery(),
        response: answer.map(|a| a.excerpt),
    };
    let outcome = match result {
        Ok(()) => {
            app.metrics.delivery(&d.route, DeliveryOutcome::Delivered);
            app.metrics
                .delivery_latency(Duration::from_millis(now.saturating_sub(d.received_at)));
            tracing::info!(id = %d.id, route = %d.route, reference = %d.reference, session_id = %d.session_id, attempt = n, "delivered");
            AttemptOutcome::Delivered {
                at: now,
                // A release notice's authorization is cancelled: no order
                // to watch for.
                watch_from: app
                    .watch_after
                    .filter(|_| !d.is_release_notice())
                    .map(|a| saturating_add_ms(now, a)),
            }
        }
        Err(Failure::Permanent(error)) => {
            app.metrics.delivery(&d.route, DeliveryOutcome::Dead);
            tracing::error!(id = %d.id, route = %d.route, session_id = %d.session_id, attempt = n, %error, "delivery refused by the upstream; dead until replayed");
            record.error = Some(error.clone());
            AttemptOutcome::Dead { error }
        }
        Err(Failure::Transient { error, .. }) if now >= d.deadline_at => {
            app.metrics.delivery(&d.route, DeliveryOutcome::Dead);
            tracing::error!(id = %d.id, route = %d.route, session_id = %d.session_id, attempt = n, %error, "delivery deadline passed; dead until replayed");
            record.error = Some(error.clone());
            AttemptOutcome::Dead {
                error: format!("deadline passed; last error: {error}"),
            }
        }
        Err(Failure::Transient { error, retry_after }) => {
            app.metrics.delivery(&d.route, DeliveryOutcome::Retry);
            let delay = backoff(app.config.initial_backoff, app.config.max_backoff, n);
            let delay = retry_after.map_or(delay, |r| r.max(delay));
            let next_at = retry_at(now, delay, d.deadline_at);
            tracing::warn!(id = %d.id, route = %d.route, session_id = %d.session_id, attempt = n, %error, retry_in_ms = next_at.saturating_sub(now), "delivery failed; will retry");
            record.error = Some(error.clone());
            record.retry_in_ms = Some(next_at.saturating_sub(now));
            AttemptOutcome::Retry { next_at, error }
        }
    };
    record_outcome(
        app,
        d.id,
        n,
        Attempted {
            outcome,
            log: record,
        },
    )
    .await;
}

/// Records an attempt's outcome. Recording is retried until it holds,
/// however long the store is down: giving up after a 2xx would send the
/// authorization again, and giving up after a failure would leave the
/// delivery leased and never retried. Only the process stopping ends it
/// (then, after a restart, the delivery is sent again with the same
/// Idempotency-Key).
async fn record_outcome(app: &Worker, id: DeliveryId, n: u32, done: Attempted) {
    let watch_starts = matches!(
        done.outcome,
        AttemptOutcome::Delivered {
            watch_from: Some(_),
            ..
        }
    );
    let mut pause = Duration::from_millis(100);
    loop {
        match app.store.deliveries().finish(id, n, done.clone()).await {
            Ok(()) => {
                if watch_starts {
                    app.watch_doorbell.notify_one();
                }
                return;
            }
            Err(e) => {
                tracing::error!(%id, error = %e, "cannot record the delivery outcome; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One attempt running: while it lives, its delivery id is known to be in
/// progress here and it counts as in flight.
struct Running {
    app: Arc<Worker>,
    id: DeliveryId,
    n: u32,
}

impl Running {
    /// The attempt now due for `d`, unless one is running here already.
    fn start(app: &Arc<Worker>, d: &Delivery) -> Option<Self> {
        let n = d.attempts + 1;
        let mut running = app.handle.attempting();
        // Handed out again before the store has the outcome of the attempt
        // still running here (a shared store's lease ran out while that
        // outcome waited to be recorded): that attempt settles it; it is not
        // sent again. Once the store has the outcome, the delivery carries
        // its count and this is simply the next attempt.
        if running.get(&d.id).is_some_and(|r| d.attempts < *r) {
            tracing::warn!(id = %d.id, "delivery handed out again while its outcome is being recorded here; not sent twice");
            return None;
        }
        running.insert(d.id, n);
        drop(running);
        app.handle.0.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Running {
            app: app.clone(),
            id: d.id,
            n,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        {
            let mut running = self.app.handle.attempting();
            // A later attempt of the same delivery may have started already.
            if running.get(&self.id) == Some(&self.n) {
                running.remove(&self.id);
            }
        }
        self.app.handle.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The backend's answer to one attempt: its status, and what the attempt
/// log keeps of it.
struct Answer {
    status: u16,
    excerpt: Excerpt,
}

/// Sends one attempt: the backend's answer, when it answered, and what the
/// answer means.
async fn send(
    app: &Worker,
    d: &Delivery,
    route: &Route,
    n: u32,
) -> (Option<Answer>, Result<(), Failure>) {
    let rendered = render::render(d, route);
    let req = match request(app, d, n, &rendered) {
        Ok(req) => req,
        Err(failure) => return (None, Err(failure)),
    };
    let timeout = app.config.attempt_timeout;
    let exchange = async {
        let resp = app
            .upstream
            .deliver(req, &rendered.path_and_query)
            .await
            .map_err(|e| Failure::Transient {
                error: format!("upstream unreachable: {e}"),
                retry_after: None,
            })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::text::parse_retry_after(v, unix_ms() / 1000));
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        // Read only as much of the answer as is kept (secrets redacted
        // first), or as a route's answer rules read.
        let token = d.authorization_token.expose().as_bytes();
        let rules = route.answers.iter().any(|r| r.body_contains.is_some());
        let cap = app
            .redactor
            .reach(token)
            .max(if rules { RULES_READ } else { 0 });
        let (body, whole) = excerpt::read_prefix(resp.into_body(), cap).await;
        let excerpt = app.redactor.excerpt(
            content_type.as_ref().map(|v| v.as_bytes()),
            &body,
            whole,
            token,
        );
        Ok((status, retry_after, body, excerpt))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((status, retry_after, body, excerpt))) => (
            Some(Answer {
                status: status.as_u16(),
                excerpt,
            }),
            classify(status, retry_after, &route.answers, &body),
        ),
        Ok(Err(failure)) => (None, Err(failure)),
        Err(_) => (
            None,
            Err(Failure::Transient {
                error: format!("no answer within {}", crate::text::format_duration(timeout)),
                retry_after: None,
            }),
        ),
    }
}

/// The request for attempt `n` of `d`: the rendered body, the
/// `Idempotency-Key`, and the signature when the upstream wants one.
fn request(
    app: &Worker,
    d: &Delivery,
    n: u32,
    rendered: &render::Rendered,
) -> Result<Request<crate::body::Body>, Failure> {
    // A release notice has a key of its own, so a backend that dedupes on
    // the authorization's key still sees it.
    let key = if d.is_release_notice() {
        format!("{}:released", d.authorization_id())
    } else {
        d.id.to_string()
    };
    let mut req = Request::post("/")
        .header(header::CONTENT_TYPE, rendered.content_type)
        .header("idempotency-key", key)
        .header("authback-attempt", n.to_string());
    if d.is_release_notice() {
        req = req.header("authback-released", "authorization-cancelled");
    }
    if d.is_redelivery() {
        // The backend accepted this once and Klarna still has no order: the
        // same Idempotency-Key, and a word on why it comes again.
        req = req.header("authback-redelivery", "order-not-placed");
    }
    if let Some(secret) = &app.signing_secret {
        req = req.header(
            "authback-signature",
            signature(secret.expose(), unix_ms() / 1000, &rendered.body),
        );
    }
    req.body(crate::body::Body::from(rendered.body.clone()))
        .map_err(|e| Failure::Permanent(format!("cannot build the request: {e}")))
}

/// What the backend's answer means: the route's first rule that applies,
/// or else 2xx delivered; 408, 425, 429 and 5xx worth a retry; the rest
/// dead at once.
fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    rules: &[AnswerRule],
    body: &[u8],
) -> Result<(), Failure> {
    let error = format!("upstream answered {status}");
    let means = rules
        .iter()
        .find(|r| r.applies(status.as_u16(), body))
        .map(|r| r.means);
    match means {
        Some(Means::Delivered) => Ok(()),
        Some(Means::Retry) => Err(Failure::Transient { error, retry_after }),
        Some(Means::Dead) => Err(Failure::Permanent(error)),
        None if status.is_success() => Ok(()),
        None => match status.as_u16() {
            408 | 425 | 429 | 500..=599 => Err(Failure::Transient { error, retry_after }),
            _ => Err(Failure::Permanent(error)),
        },
    }
}

/// `Authback-Signature: t={unix},v1={hex HMAC-SHA256(secret, t + "." + body)}`.
pub(crate) fn signature(secret: &[u8], t: u64, body: &[u8]) -> HeaderValue {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let v = format!("t={t},v1={}", hex(ctx.sign().as_ref()));
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// When to try again after a transient failure at `now` (unix ms): `delay`
/// later, but not past the deadline. The delay may be the upstream's
/// `Retry-After`, up to `u64::MAX` seconds, so the sum saturates: a wrapped
/// one would be due at once, again and again. Waiting past the deadline is
/// pointless; the attempt at the deadline, if it fails too, makes the
/// delivery dead.
fn retry_at(now: u64, delay: Duration, deadline_at: u64) -> u64 {
    saturating_add_ms(now, delay).min(deadline_at)
}

/// Full jitter: a random delay in [0, min(max, initial * 2^(attempt-1))].
pub(crate) fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = initial.saturating_mul(
        1u32.checked_shl(attempt.saturating_sub(1).min(30))
            .unwrap_or(u32::MAX),
    );
    let cap = exp.min(max).as_millis() as u64;
    Duration::from_millis(random_below(cap + 1))
}

/// A number in [0, n), or 0 when n is 0, from `fastrand`'s per-thread
/// generator: jitter needs nothing cryptographic.
fn random_below(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        fastrand::u64(..n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_retry_after(v: &str) -> Option<Duration> {
        crate::text::parse_retry_after(v, unix_ms() / 1000)
    }

    #[test]
    fn classification() {
        assert!(classify(StatusCode::OK, None, &[], b"").is_ok());
        assert!(classify(StatusCode::NO_CONTENT, None, &[], b"").is_ok());
        for s in [408, 425, 429, 500, 502, 503, 504] {
            let st = StatusCode::from_u16(s).expect("status");
            assert!(
                matches!(classify(st, None, &[], b""), Err(Failure::Transient { .. })),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 409, 422, 301] {
            let st = StatusCode::from_u16(s).expect("status");
            assert!(
                matches!(classify(st, None, &[], b""), Err(Failure::Permanent(_))),
                "{s}"
            );
        }
    }

    #[test]
    fn a_routes_answer_rules_come_first() {
        let rules = [
            AnswerRule {
                status: 400,
                body_contains: Some("is not active".into()),
                means: Means::Delivered,
            },
            AnswerRule {
                status: 400,
                body_contains: Some("still in progress".into()),
                means: Means::Retry,
            },
            AnswerRule {
                status: 200,
                body_contains: Some("failure".into()),
                means: Means::Retry,
            },
        ];
        let bad = StatusCode::BAD_REQUEST;
        assert!(classify(
            bad,
            None,
            &rules,
            br#"{"error":"cartId = 7 is not active."}"#
        )
        .is_ok());
        assert!(matches!(
            classify(
                bad,
                None,
                &rules,
                br#"{"error":"Another authorization callback workflow is still in progress."}"#
            ),
            Err(Failure::Transient { .. })
        ));
        // A real failure is still dead.
        assert!(matches!(
            classify(bad, None, &rules, br#"{"error":"Invalid value"}"#),
            Err(Failure::Permanent(_))
        ));
        assert!(matches!(
            classify(StatusCode::OK, None, &rules, b"failure: payment not found"),
            Err(Failure::Transient { .. })
        ));
        assert!(classify(StatusCode::OK, None, &rules, b"success").is_ok());
    }

    #[test]
    fn backoff_is_bounded_full_jitter() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 1..40 {
            let cap = (100u64 << (attempt - 1).min(20)).min(1000);
            for _ in 0..50 {
                assert!(backoff(i, m, attempt) <= Duration::from_millis(cap));
            }
        }
    }

    #[test]
    fn random_below_stays_below_and_varies() {
        assert_eq!(random_below(0), 0);
        assert_eq!(random_below(1), 0);
        let draws: Vec<u64> = (0..1000).map(|_| random_below(10)).collect();
        assert!(draws.iter().all(|&d| d < 10));
        assert!(draws.iter().any(|&d| d != draws[0]), "{draws:?}");
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("later"), None);
    }

    #[test]
    fn a_hostile_retry_after_waits_until_the_deadline_not_around_it() {
        let now = 1_700_000_000_000;
        let deadline = now + 3_600_000;
        let hostile = parse_retry_after("18446744073709551615").expect("u64::MAX seconds");
        assert_eq!(retry_at(now, hostile, deadline), deadline);
        assert_eq!(retry_at(now, Duration::MAX, deadline), deadline);
        let far = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT").expect("a date");
        assert_eq!(retry_at(now, far, deadline), deadline);
        assert_eq!(retry_at(u64::MAX - 1, hostile, u64::MAX), u64::MAX);
        assert_eq!(retry_at(now, Duration::from_secs(2), deadline), now + 2000);
    }

    #[test]
    fn signature_format() {
        let v = signature(b"s3cret", 1_700_000_000, b"{}");
        let s = v.to_str().expect("ascii");
        assert!(s.starts_with("t=1700000000,v1="));
        assert_eq!(s.len(), "t=1700000000,v1=".len() + 64);
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"s3cret");
        let tag = hmac::sign(&key, b"1700000000.{}");
        assert!(s.ends_with(&hex(tag.as_ref())));
        // The vector README gives backends.
        assert!(s.ends_with("97926816e98fbb41ccb1673225ff29a2f35369099990e1b1561651e7bd097ebf"));
    }
}
