//! The admin listener: health, readiness, metrics and the `/v1` API. It is
//! bound to its own address and never served on the public port.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use tokio::sync::Notify;

use crate::admin::resolve;
use crate::admin::view::{
    AttemptView, DeliveryDetail, DeliveryView, ListedDelivery, ResolutionView, WatchView,
};
use crate::body::{json, json_error, text, Body};
use crate::config::Config;
use crate::delivery;
use crate::ops::metrics::{Gauges, Metrics};
use crate::ops::readiness::{Readiness, State};
use crate::store::{
    Attempt, Cursor, Delivery, DeliveryState, Filter, Replay, Store, StoreError, StoreKind,
    WatchState,
};
use crate::store::{ProbeNonce, PROBE_TTL};
use crate::text::{parse_duration, rfc3339};
use crate::types::{unix_ms, DeliveryId, SessionId};

/// What the admin listener reads and does.
pub(crate) struct Context {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub deliveries: delivery::Handle,
    /// Rung when a session is registered: the Read Session loop wakes.
    pub new_registration: Arc<Notify>,
    /// The last hour of samples, for the console's charts.
    pub history: crate::ops::history::History,
}

pub(crate) async fn handle(app: &Context, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, crate::admin::console::HISTORY_PATH) => {
            match super::guard::check(app.config.admin.token.as_ref(), &req) {
                Ok(()) => json(StatusCode::OK, &app.history.to_json()),
                Err(refused) => *refused,
            }
        }
        (m, p) if crate::admin::console::serves(&m, p) => crate::admin::console::handle(&req),
        (Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (Method::GET, "/readyz") => readyz(app),
        (Method::GET, "/readyz/store") => readyz_store(app),
        (Method::GET, "/metrics") => metrics(app).await,
        (_, p) if p.starts_with("/v1/") => {
            match super::guard::check(app.config.admin.token.as_ref(), &req) {
                Ok(()) => v1(app, req).await,
                Err(refused) => *refused,
            }
        }
        _ => json_error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
    }
}

fn readyz(app: &Context) -> Response<Body> {
    match app.readiness.get() {
        State::Draining => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: shutting down\n",
            )
        }
        State::Starting => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: listeners not bound yet\n",
            )
        }
        State::Serving => {}
    }
    // A pod that cannot record callbacks still serves the shop (its
    // callbacks get 503): the store's health is /readyz/store's, unless the
    // config asks for the stricter rule.
    if app.config.server.ready_requires_store {
        if let Err(why) = app.store.health() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: store: {why}\n"),
            );
        }
    }
    let note = if app.store.kind() == StoreKind::Memory {
        " (store: memory; queued deliveries are lost if the process crashes)"
    } else {
        ""
    };
    text(StatusCode::OK, format!("ready{note}\n"))
}

/// The store's health alone: 200 while it can record callbacks.
fn readyz_store(app: &Context) -> Response<Body> {
    match app.store.health() {
        Ok(()) => text(
            StatusCode::OK,
            format!("store ok: {}\n", app.store.kind().as_str()),
        ),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store not ready: {why}\n"),
        ),
    }
}

async fn metrics(app: &Context) -> Response<Body> {
    let mut g = Gauges {
        in_flight: app.deliveries.in_flight(),
        registrations_pending: app.store.active_registrations(),
        store_up: app.store.health().is_ok(),
        ready: app.readiness.get() == State::Serving
            && (!app.config.server.ready_requires_store || app.store.health().is_ok()),
        replication: app
            .store
            .replication()
            .map(|r| r.figures())
            .unwrap_or_default(),
        ..Gauges::default()
    };
    if let Ok(s) = app.store.stats().await {
        let now = unix_ms();
        let age = |at: Option<u64>| at.map_or(0.0, |at| now.saturating_sub(at) as f64 / 1000.0);
        g.queue_depth = s.pending;
        g.dead = s.dead;
        g.unconfirmed = s.unconfirmed;
        g.oldest_pending_seconds = age(s.oldest_pending_at);
        g.oldest_dead_seconds = age(s.oldest_dead_at);
        g.oldest_unconfirmed_seconds = age(s.oldest_unconfirmed_at);
        g.stored = [s.pending, s.delivered, s.dead, s.resolved];
    }
    let mut r = text(StatusCode::OK, app.metrics.render(&g));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    route: String,
    #[serde(default)]
    reference: String,
    ttl: Option<String>,
}

async fn v1(app: &Context, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    match (method, segments.as_slice()) {
        (Method::POST, ["callback-urls"]) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let m: MintRequest = match serde_json::from_slice(&body) {
                Ok(m) => m,
                Err(e) => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        &format!("expected {{\"route\",\"reference\",\"ttl\"?}}: {e}"),
                    )
                }
            };
            let ttl = match m.ttl.as_deref().map(parse_duration).transpose() {
                Ok(t) => t.unwrap_or(DEFAULT_TTL),
                Err(e) => {
                    return json_error(StatusCode::BAD_REQUEST, "bad_request", &format!("ttl: {e}"))
                }
            };
            let now = unix_ms() / 1000;
            match crate::callback::mint::for_route(&app.config, &m.route, &m.reference, ttl, now) {
                Ok((url, exp)) => json(
                    StatusCode::OK,
                    &json!({ "url": url, "expires_at": rfc3339(exp) }),
                ),
                Err(e) => json_error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
            }
        }
        (Method::GET, ["deliveries"]) => list_deliveries(app, &query).await,
        (Method::GET, ["deliveries", id]) => delivery_detail(app, id).await,
        (Method::POST, ["deliveries", "replay"]) => match read_body(req).await {
            Ok(body) => replay_matching(app, &body).await,
            Err(r) => r,
        },
        (Method::POST, ["deliveries", "resolve"]) => match read_body(req).await {
            Ok(body) => resolve_matching(app, &body).await,
            Err(r) => r,
        },
        (Method::POST, ["deliveries", id, "resolve"]) => {
            let Some(id) = DeliveryId::parse(id) else {
                return json_error(StatusCode::NOT_FOUND, "not_found", "no such delivery");
            };
            match read_body(req).await.map(|b| resolve::note_of(&b)) {
                Ok(Ok(note)) => resolve::one(app.store.as_ref(), id, note).await,
                Ok(Err(why)) => bad_request(&why),
                Err(r) => r,
            }
        }
        (Method::POST, ["probes"]) => probe_nonce(app).await,
        (Method::POST, ["deliveries", id, "replay"]) => replay_one(app, id).await,
        (Method::POST, ["sessions"]) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            register(app, &body).await
        }
        (
            _,
            ["callback-urls"]
            | ["deliveries"]
            | ["deliveries", _]
            | ["deliveries", _, "replay"]
            | ["probes"]
            | ["deliveries", _, "resolve"]
            | ["sessions"],
        ) => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "wrong method for this endpoint",
        ),
        _ => json_error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
    }
}

/// `POST /v1/deliveries/{id}/replay`: queues a dead delivery again.
async fn replay_one(app: &Context, id: &str) -> Response<Body> {
    let Some(id) = DeliveryId::parse(id) else {
        return json_error(StatusCode::NOT_FOUND, "not_found", "no such delivery");
    };
    let now = unix_ms();
    let deadline = crate::text::saturating_add_ms(now, app.config.delivery.deadline);
    match app.store.replay(id, now, deadline).await {
        Ok(Replay::Queued) => {
            app.deliveries.wake();
            tracing::info!(%id, "dead delivery queued again by replay");
            json(
                StatusCode::ACCEPTED,
                &json!({ "id": id.to_string(), "state": "pending" }),
            )
        }
        Ok(Replay::NotFound) => json_error(StatusCode::NOT_FOUND, "not_found", "no such delivery"),
        Ok(Replay::NotDead(s)) => json_error(
            StatusCode::CONFLICT,
            "conflict",
            &format!(
                "only dead deliveries can be replayed; this one is {}",
                s.as_str()
            ),
        ),
        Err(e) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    session_id: String,
    route: String,
    #[serde(default)]
    reference: String,
}

/// `POST /v1/sessions`: the backend created a Klarna session; if its
/// callback never comes, recover the authorization through Read Session.
async fn register(app: &Context, body: &[u8]) -> Response<Body> {
    if !app.config.reconcile.enabled {
        return json_error(
            StatusCode::CONFLICT,
            "conflict",
            "the Read Session fallback is off (reconcile.enabled = false)",
        );
    }
    let r: RegisterRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("expected {{\"session_id\",\"route\",\"reference\"}}: {e}"),
            )
        }
    };
    let reg = match crate::klarna::reconcile::registration(
        &app.config,
        &r.session_id,
        &r.route,
        r.reference,
        unix_ms(),
    ) {
        Ok(reg) => reg,
        Err(why) => return json_error(StatusCode::BAD_REQUEST, "bad_request", &why),
    };
    let route = reg.route.clone();
    match app.store.register(reg).await {
        Ok(new) => {
            if new {
                app.new_registration.notify_one();
                tracing::info!(session_id = %r.session_id, %route, "session registered for the Read Session fallback");
            }
            json(
                StatusCode::ACCEPTED,
                &json!({ "session_id": r.session_id, "registered": new }),
            )
        }
        Err(e) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
    }
}

/// `POST /v1/probes`: a one-time nonce for `authback doctor`'s probe
/// (`Authback-Probe`), kept in the store for `PROBE_TTL`, so whichever
/// replica the probe reaches can take it. Any body is ignored.
async fn probe_nonce(app: &Context) -> Response<Body> {
    let Some(nonce) = ProbeNonce::random() else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the system's randomness failed; no nonce made",
        );
    };
    let expires_at = unix_ms().saturating_add(PROBE_TTL.as_millis() as u64);
    match app.store.put_probe(nonce, expires_at).await {
        Ok(()) => json(
            StatusCode::OK,
            &json!({
                "nonce": nonce.to_string(),
                "header": "Authback-Probe",
                "expires_at": rfc3339_ms(expires_at),
            }),
        ),
        Err(e) => unavailable(&e),
    }
}

/// Minted URLs live 48 hours unless asked otherwise, as long as a session.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(48 * 3600);

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "body over 64 KiB",
        )),
    }
}

/// What the listing and the detail show of a delivery.
fn delivery_view(d: &Delivery) -> DeliveryView {
    DeliveryView {
        authorization_token: d.authorization_token.last4(),
        deadline_at: rfc3339(d.deadline_at / 1000),
        delivered_at: d.delivered_at.map(|t| rfc3339(t / 1000)),
        id: d.id.to_string(),
        last_error: d.last_error.clone(),
        next_attempt_at: (d.state == DeliveryState::Pending)
            .then(|| rfc3339(d.next_attempt_at / 1000)),
        order_watch: d.watch.as_ref().map(|w| WatchView {
            checks: w.checks,
            last_error: w.last_error.clone(),
            next_check_at: (w.state == WatchState::Watching)
                .then(|| rfc3339(w.next_check_at / 1000)),
            redelivered: w.redelivered,
            started_at: rfc3339(w.started_at / 1000),
            state: w.state.as_str().to_string(),
        }),
        received_at: rfc3339(d.received_at / 1000),
        reference: d.reference.clone(),
        resolution: d.resolution.as_ref().map(|r| ResolutionView {
            note: r.note.clone(),
            resolved_at: rfc3339(r.at / 1000),
        }),
        route: d.route.clone(),
        session_id: d.session_id.as_str().to_string(),
        source: d.source.as_str().to_string(),
        state: d.state.as_str().to_string(),
    }
}

/// A delivery as `GET /v1/deliveries` lists it.
fn listed(d: &Delivery) -> ListedDelivery {
    ListedDelivery {
        attempts: d.attempts,
        delivery: delivery_view(d),
    }
}

/// The attempt log's entries, as `GET /v1/deliveries/{id}` shows them.
fn attempt_view(a: &Attempt) -> AttemptView {
    let r = a.response.as_ref();
    AttemptView {
        at: rfc3339_ms(a.at),
        duration_ms: a.duration_ms,
        error: a.error.clone(),
        redelivery: a.redelivery,
        response_body: r.map(|r| r.body.clone()),
        response_body_base64: r.is_some_and(|r| r.base64),
        response_body_truncated: r.is_some_and(|r| r.truncated),
        response_content_type: r.and_then(|r| r.content_type.clone()),
        retry_in_ms: a.retry_in_ms,
        status: a.status,
    }
}

/// RFC 3339 with milliseconds (`2026-11-30T06:00:00.250Z`).
fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = rfc3339(unix_ms / 1000);
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), unix_ms % 1000)
}

fn bad_request(message: &str) -> Response<Body> {
    json_error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn unavailable(e: &StoreError) -> Response<Body> {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        &e.to_string(),
    )
}

/// Most deliveries one listing page holds, and how many it holds unless
/// asked otherwise.
const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;

/// The parameters `GET /v1/deliveries` reads.
const LIST_PARAMS: [&str; 8] = [
    "state",
    "route",
    "session_id",
    "reference",
    "since",
    "until",
    "limit",
    "cursor",
];

/// `GET /v1/deliveries`: a page of the deliveries the query's filters
/// accept, newest first, and `Next-Cursor` when more may remain.
async fn list_deliveries(app: &Context, query: &str) -> Response<Body> {
    let (filter, limit, cursor) = match list_query(query) {
        Ok(q) => q,
        Err(why) => return bad_request(&why),
    };
    let page = match app.store.list(filter, cursor, limit).await {
        Ok(p) => p,
        Err(e) => return unavailable(&e),
    };
    let list: Vec<ListedDelivery> = page.deliveries.iter().map(listed).collect();
    let mut r = json(StatusCode::OK, &list);
    if let Some(next) = page.next {
        // Digits, a dash and hex: always a valid header value.
        if let Ok(v) = header::HeaderValue::from_str(&next.to_string()) {
            r.headers_mut().insert("next-cursor", v);
        }
    }
    r
}

/// Reads the listing query. Each parameter may come once: a repeated one
/// could be read two ways, and an unknown one is most likely a misspelt
/// filter, which would list (or replay) far more than meant. An empty value
/// is the same as none, as an HTML form sends an empty field.
fn list_query(query: &str) -> Result<(Filter, usize, Option<Cursor>), String> {
    let mut given: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if !LIST_PARAMS.contains(&k.as_ref()) {
            return Err(format!("unknown parameter `{k}`"));
        }
        if given.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("{k}: given more than once"));
        }
        given.push((k.into_owned(), v.into_owned()));
    }
    let get = |name: &str| {
        given
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    let mut filter = filter_from(
        get("route"),
        get("session_id"),
        get("reference"),
        get("since").map(|s| ("since", s)),
        get("until").map(|s| ("until", s)),
    )?;
    match get("state") {
        None => {}
        Some("unconfirmed") => filter.watch = Some(WatchState::Unconfirmed),
        Some(s) => {
            filter.state = Some(DeliveryState::parse(s).ok_or(
                "state: one of pending, dead, delivered, unconfirmed, resolved".to_string(),
            )?)
        }
    }
    let limit = match get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(0) | Err(_) => return Err(format!("limit: a number from 1 to {MAX_LIMIT}")),
            Ok(n) => n.min(MAX_LIMIT),
        },
    };
    let cursor = match get("cursor") {
        None => None,
        Some(c) => Some(
            Cursor::parse(c).ok_or("cursor: not a Next-Cursor this API gave out".to_string())?,
        ),
    };
    Ok((filter, limit, cursor))
}

/// The filters `GET /v1/deliveries` and the bulk replay share; `since` and
/// `until` come with their parameter's name, for the error.
fn filter_from(
    route: Option<&str>,
    session_id: Option<&str>,
    reference: Option<&str>,
    since: Option<(&str, &str)>,
    until: Option<(&str, &str)>,
) -> Result<Filter, String> {
    let time = |t: Option<(&str, &str)>| {
        t.map(|(name, v)| {
            parse_time(v).ok_or(format!(
                "{name}: an RFC 3339 time (2026-11-30T06:00:00Z) or unix seconds"
            ))
        })
        .transpose()
    };
    let nonempty = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_string);
    Ok(Filter {
        route: nonempty(route),
        session_id: nonempty(session_id).map(SessionId::new),
        reference: nonempty(reference),
        since: time(since)?,
        until: time(until)?,
        ..Filter::default()
    })
}

/// A time the API accepts, as unix ms: unix seconds, or RFC 3339.
fn parse_time(v: &str) -> Option<u64> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().ok()?.checked_mul(1000);
    }
    parse_rfc3339(v)
}

/// Unix ms of an RFC 3339 date-time (`2026-11-30T06:00:00Z`, with an
/// optional fraction, cut to milliseconds, and a `Z` or `±hh:mm` offset).
/// `time` takes any one character between the date and the time; RFC 3339's
/// grammar has only `T` (either case), and so does this.
fn parse_rfc3339(s: &str) -> Option<u64> {
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't')) {
        return None;
    }
    let at = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp())
        .ok()?
        .checked_mul(1000)?
        .checked_add(u64::from(at.millisecond()))
}

/// `GET /v1/deliveries/{id}`: one delivery with its attempt log. There,
/// `attempts` is the log (its latest entries) and `attempt_count` the count
/// the listing calls `attempts`.
async fn delivery_detail(app: &Context, id: &str) -> Response<Body> {
    let Some(id) = DeliveryId::parse(id) else {
        return json_error(StatusCode::NOT_FOUND, "not_found", "no such delivery");
    };
    match app.store.get(id).await {
        Ok(Some(detail)) => json(
            StatusCode::OK,
            &DeliveryDetail {
                attempt_count: detail.delivery.attempts,
                attempts: detail.attempts.iter().map(attempt_view).collect(),
                delivery: delivery_view(&detail.delivery),
            },
        ),
        Ok(None) => json_error(StatusCode::NOT_FOUND, "not_found", "no such delivery"),
        Err(e) => unavailable(&e),
    }
}

/// Most deliveries one bulk replay (or bulk resolve) takes.
const REPLAY_CAP: usize = 10_000;
/// Replays sent to the store at once: enough for the file store to commit
/// them in shared transactions, few enough not to crowd out callbacks.
const REPLAY_BATCH: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    state: Option<String>,
    route: Option<String>,
    session_id: Option<String>,
    reference: Option<String>,
    since: Option<serde_json::Value>,
    until: Option<serde_json::Value>,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /v1/deliveries/replay`: queues again every dead delivery the
/// filters accept (at most `REPLAY_CAP`), each exactly as a single replay
/// does; with `dry_run`, only counts them.
async fn replay_matching(app: &Context, body: &[u8]) -> Response<Body> {
    let r: ReplayRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(&format!(
                "expected {{\"state\"?: \"dead\", \"route\"?, \"session_id\"?, \"reference\"?, \"since\"?, \"until\"?, \"dry_run\"?}}: {e}"
            ))
        }
    };
    let filter = match replay_filter(&r) {
        Ok(f) => f,
        Err(why) => return bad_request(&why),
    };
    let (ids, capped) = match matching_ids(app, filter).await {
        Ok(found) => found,
        Err(e) => return unavailable(&e),
    };
    let matched = ids.len();
    let mut replayed = 0;
    if !r.dry_run {
        replayed = match replay_ids(app, &ids).await {
            Ok(n) => n,
            Err((why, replayed)) => {
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    &format!("{why} (replayed {replayed} of {matched} before stopping)"),
                )
            }
        };
        tracing::info!(
            matched,
            replayed,
            capped,
            "dead deliveries queued again by bulk replay"
        );
    }
    json(
        StatusCode::OK,
        &json!({ "matched": matched, "replayed": replayed, "dry_run": r.dry_run, "capped": capped }),
    )
}

/// The dead deliveries a bulk replay asks for, or why the ask is wrong.
fn replay_filter(r: &ReplayRequest) -> Result<Filter, String> {
    if r.state.as_deref().is_some_and(|s| s != "dead") {
        return Err("state: only dead deliveries can be replayed".into());
    }
    let filter = body_filter(
        r.route.as_deref(),
        r.session_id.as_deref(),
        r.reference.as_deref(),
        &r.since,
        &r.until,
    )?;
    Ok(Filter {
        state: Some(DeliveryState::Dead),
        ..filter
    })
}

/// The filters of a bulk request's JSON body (bulk replay, bulk resolve):
/// as the listing's, a time as RFC 3339 or unix seconds (a number or a
/// string of digits).
fn body_filter(
    route: Option<&str>,
    session_id: Option<&str>,
    reference: Option<&str>,
    since: &Option<serde_json::Value>,
    until: &Option<serde_json::Value>,
) -> Result<Filter, String> {
    let time = |v: &Option<serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    };
    let (Ok(since), Ok(until)) = (time(since), time(until)) else {
        return Err("since, until: an RFC 3339 time or unix seconds".into());
    };
    filter_from(
        route,
        session_id,
        reference,
        since
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| ("since", s)),
        until
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| ("until", s)),
    )
}

/// The ids `filter` matches, at most `REPLAY_CAP` (and whether it capped
/// them). Every match is read before any is replayed, so the pages do not
/// shift under the reading.
async fn matching_ids(
    app: &Context,
    filter: Filter,
) -> Result<(Vec<DeliveryId>, bool), StoreError> {
    let (mut ids, mut cursor, mut capped) = (Vec::new(), None, false);
    loop {
        let page = app.store.list(filter.clone(), cursor, MAX_LIMIT).await?;
        ids.extend(page.deliveries.iter().map(|d| d.id));
        if ids.len() > REPLAY_CAP {
            ids.truncate(REPLAY_CAP);
            capped = true;
            break;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok((ids, capped))
}

/// `POST /v1/deliveries/resolve`: resolves every dead (or unconfirmed)
/// delivery the filters accept, at most `REPLAY_CAP`, each as a single
/// resolve does; with `dry_run`, only counts them.
async fn resolve_matching(app: &Context, body: &[u8]) -> Response<Body> {
    let r = match resolve::Bulk::parse(body) {
        Ok(r) => r,
        Err(why) => return bad_request(&why),
    };
    let filter = body_filter(
        r.route.as_deref(),
        r.session_id.as_deref(),
        r.reference.as_deref(),
        &r.since,
        &r.until,
    );
    let filter = match filter.and_then(|f| r.narrow(f)) {
        Ok(f) => f,
        Err(why) => return bad_request(&why),
    };
    match matching_ids(app, filter).await {
        Ok((ids, capped)) => r.run(&app.store, &ids, capped).await,
        Err(e) => unavailable(&e),
    }
}

/// Queues `ids` again, a batch at a time: how many were replayed, or the
/// error that stopped it and how many were replayed before.
async fn replay_ids(app: &Context, ids: &[DeliveryId]) -> Result<usize, (String, usize)> {
    let matched = ids.len();
    let mut replayed = 0;
    let now = unix_ms();
    let deadline = crate::text::saturating_add_ms(now, app.config.delivery.deadline);
    for batch in ids.chunks(REPLAY_BATCH) {
        let mut running = tokio::task::JoinSet::new();
        for &id in batch {
            let store = app.store.clone();
            running.spawn(async move { store.replay(id, now, deadline).await });
        }
        let mut failed = None;
        while let Some(done) = running.join_next().await {
            match done {
                Ok(Ok(Replay::Queued)) => {
                    replayed += 1;
                    app.deliveries.wake();
                }
                // Replayed, delivered or gone since it was listed.
                Ok(Ok(Replay::NotDead(_) | Replay::NotFound)) => {}
                Ok(Err(e)) => failed = Some(e.to_string()),
                Err(e) => failed = Some(format!("replay task failed: {e}")),
            }
        }
        if let Some(why) = failed {
            tracing::warn!(matched, replayed, error = %why, "bulk replay stopped");
            return Err((why, replayed));
        }
    }
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Source, Watch};
    use crate::types::AuthorizationToken;

    /// A pending delivery that failed once, and a delivered one under an
    /// order watch.
    fn samples() -> (Delivery, Delivery) {
        let mut pending = Delivery::new_pending(
            "klarna".into(),
            "cart-\"1\"\n".into(),
            SessionId::new("sess-1"),
            AuthorizationToken::new("tok-abcdef0001"),
            Source::Callback,
            Bytes::from_static(b"{}"),
            None,
            1_795_932_000_250,
            Duration::from_secs(3600),
        );
        pending.attempts = 2;
        pending.next_attempt_at = 1_795_932_001_999;
        pending.last_error = Some("upstream answered 503 Service Unavailable".into());
        let mut delivered = Delivery::new_pending(
            "shop".into(),
            String::new(),
            SessionId::new("sess-2"),
            AuthorizationToken::new("tok-2222"),
            Source::ReadSession,
            Bytes::from_static(b"{}"),
            None,
            1_795_932_000_000,
            Duration::from_secs(3600),
        );
        delivered.state = DeliveryState::Delivered;
        delivered.attempts = 35;
        delivered.delivered_at = Some(1_795_932_003_000);
        delivered.watch = Some(Watch {
            state: WatchState::Watching,
            started_at: 1_795_932_003_000,
            next_check_at: 1_795_932_063_000,
            checks: 3,
            redelivered: true,
            last_error: Some("Read Session: timeout".into()),
            klarna_failing_since: None,
        });
        (pending, delivered)
    }

    fn attempts() -> Vec<Attempt> {
        vec![
            Attempt {
                at: 1_795_932_000_120,
                duration_ms: 31,
                status: Some(503),
                error: Some("upstream answered 503".into()),
                retry_in_ms: Some(180),
                redelivery: false,
                response: Some(crate::store::Excerpt {
                    content_type: Some("application/json".into()),
                    body: r#"{"error":"busy"}"#.into(),
                    base64: false,
                    truncated: false,
                }),
            },
            Attempt {
                at: 1_795_932_001_000,
                duration_ms: 30000,
                status: None,
                error: None,
                retry_in_ms: None,
                redelivery: true,
                response: None,
            },
        ]
    }

    const NOV_30: u64 = 1_796_018_400_000; // 2026-11-30T06:00:00Z

    #[test]
    fn times_are_unix_seconds_or_rfc_3339() {
        for (given, want) in [
            ("1796018400", NOV_30),
            ("0", 0),
            ("2026-11-30T06:00:00Z", NOV_30),
            ("2026-11-30t06:00:00z", NOV_30),
            ("2026-11-30T06:00:00.25Z", NOV_30 + 250),
            ("2026-11-30T06:00:00.123456789Z", NOV_30 + 123),
            ("2026-11-30T06:00:00.0009Z", NOV_30),
            ("2026-11-30T08:00:00+02:00", NOV_30),
            ("2026-11-30T01:30:00-04:30", NOV_30),
            ("2026-11-30T06:00:00-00:00", NOV_30),
            ("2026-11-30T06:00:00.5+00:00", NOV_30 + 500),
            ("1970-01-01T00:00:00Z", 0),
            ("1970-01-01T01:00:00+01:00", 0),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
        ] {
            assert_eq!(parse_time(given), Some(want), "{given}");
        }
    }

    #[test]
    fn a_time_that_is_not_one_is_refused() {
        for given in [
            "",
            "yesterday",
            "-1",
            "1e9",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-30T24:00:00Z",
            "2026-11-30T06:60:00Z",
            "2026-11-30T06:00:61Z",
            "2026-11-30 06:00:00Z",
            "2026-11-30X06:00:00Z",
            "2026-11-30T06:00:00",
            "2026-11-30T06:00:00.Z",
            "2026-11-30T06:00:00+0200",
            "2026-11-30T06:00:00+2:00",
            "2026-11-30T06:00:00+02:00:00",
            "2026-11-30T06:00:00Z ",
            " 2026-11-30T06:00:00Z",
            "2026-1-30T06:00:00Z",
            "+2026-11-30T06:00:00Z",
            "26-11-30T06:00:00Z",
            "2026-11-30",
            "2026-11-30T06:00Z",
            "２０２６-11-30T06:00:00Z",
            "1969-12-31T23:59:59Z",
            "1969-12-31T23:59:59.999Z",
            "1970-01-01T00:59:59+01:00",
            // Not RFC 3339, though the hand-written parser took them: an
            // offset's hour is 00-23, its minute 00-59.
            "2026-11-30T06:00:00+24:00",
            "2026-11-30T06:00:00+05:75",
            // A leap second only ends a month (UTC).
            "2026-11-30T06:59:60Z",
        ] {
            assert_eq!(parse_time(given), None, "{given}");
        }
    }

    #[test]
    fn a_leap_second_is_the_last_millisecond_before_it() {
        // 2017-01-01T00:00:00Z is 1483228800: RFC 3339 allows second 60
        // at a month's end, which the hand-written parser refused.
        assert_eq!(
            parse_time("2016-12-31T23:59:60Z"),
            Some(1_483_228_800_000 - 1)
        );
    }

    /// The JSON is exactly what the API answered when it was built by
    /// hand, with the fields added since: keys sorted, absent values `null`.
    #[test]
    fn a_delivery_is_shown_as_it_always_was() {
        let (pending, delivered) = samples();
        let list = serde_json::to_string(&[listed(&pending)]).expect("json");
        assert_eq!(
            list,
            r#"[{"attempts":2,"authorization_token":"0001","deadline_at":"2026-11-29T07:00:00Z","delivered_at":null,"id":"a19b859e7b76456e7986ff521f311b53","last_error":"upstream answered 503 Service Unavailable","next_attempt_at":"2026-11-29T06:00:01Z","order_watch":null,"received_at":"2026-11-29T06:00:00Z","reference":"cart-\"1\"\n","resolution":null,"route":"klarna","session_id":"sess-1","source":"callback","state":"pending"}]"#
        );
        let detail = DeliveryDetail {
            attempt_count: delivered.attempts,
            attempts: attempts().iter().map(attempt_view).collect(),
            delivery: delivery_view(&delivered),
        };
        let shown = serde_json::to_string(&detail).expect("json");
        assert_eq!(
            shown,
            r#"{"attempt_count":35,"attempts":[{"at":"2026-11-29T06:00:00.120Z","duration_ms":31,"error":"upstream answered 503","redelivery":false,"response_body":"{\"error\":\"busy\"}","response_body_base64":false,"response_body_truncated":false,"response_content_type":"application/json","retry_in_ms":180,"status":503},{"at":"2026-11-29T06:00:01.000Z","duration_ms":30000,"error":null,"redelivery":true,"response_body":null,"response_body_base64":false,"response_body_truncated":false,"response_content_type":null,"retry_in_ms":null,"status":null}],"authorization_token":"2222","deadline_at":"2026-11-29T07:00:00Z","delivered_at":"2026-11-29T06:00:03Z","id":"def0d8405955fed19ff29d2aa0e09f35","last_error":null,"next_attempt_at":null,"order_watch":{"checks":3,"last_error":"Read Session: timeout","next_check_at":"2026-11-29T06:01:03Z","redelivered":true,"started_at":"2026-11-29T06:00:03Z","state":"watching"},"received_at":"2026-11-29T06:00:00Z","reference":"","resolution":null,"route":"shop","session_id":"sess-2","source":"read_session","state":"delivered"}"#
        );
        // What the CLI reads back is what was sent.
        let read: DeliveryDetail = serde_json::from_str(&shown).expect("read back");
        assert_eq!(read, detail);
        let read: Vec<ListedDelivery> = serde_json::from_str(&list).expect("read back");
        assert_eq!(read, [listed(&pending)]);
        // A resolved one says when and why.
        let mut resolved = pending;
        resolved.state = DeliveryState::Resolved;
        resolved.resolution = Some(crate::store::Resolution {
            at: NOV_30,
            note: "refunded by hand".into(),
        });
        let shown = serde_json::to_string(&listed(&resolved)).expect("json");
        assert!(
            shown.contains(
                r#""resolution":{"note":"refunded by hand","resolved_at":"2026-11-30T06:00:00Z"}"#
            ) && shown.contains(r#""state":"resolved""#),
            "{shown}"
        );
    }
}
