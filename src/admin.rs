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

use crate::body::{json, json_error, text, Body};
use crate::config::Config;
use crate::delivery;
use crate::metrics::{Gauges, Metrics};
use crate::readiness::{Readiness, State};
use crate::store::{Delivery, DeliveryState, Filter, Replay, Store, WatchState};
use crate::text::{parse_duration, query_param, rfc3339};
use crate::types::{ct_eq, unix_ms, DeliveryId};

/// What the admin listener reads and does.
pub struct Context {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub deliveries: delivery::Handle,
    /// Rung when a session is registered: the Read Session loop wakes.
    pub new_registration: Arc<Notify>,
}

pub async fn handle(app: &Context, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (Method::GET, "/readyz") => readyz(app),
        (Method::GET, "/metrics") => metrics(app).await,
        (_, p) if p.starts_with("/v1/") => {
            if let Some(token) = &app.config.admin.token {
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("");
                if !ct_eq(given.as_bytes(), token.expose()) {
                    let mut r = json_error(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "a valid bearer token is required",
                    );
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Bearer"),
                    );
                    return r;
                }
            }
            v1(app, req).await
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
    if let Err(why) = app.store.health() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: store: {why}\n"),
        );
    }
    let note = if app.store.kind() == "memory" {
        " (store: memory; queued deliveries are lost if the process crashes)"
    } else {
        ""
    };
    text(StatusCode::OK, format!("ready{note}\n"))
}

async fn metrics(app: &Context) -> Response<Body> {
    let mut g = Gauges {
        in_flight: app.deliveries.in_flight(),
        registrations_pending: app.store.active_registrations(),
        ready: app.readiness.get() == State::Serving && app.store.health().is_ok(),
        ..Gauges::default()
    };
    if let Ok(s) = app.store.stats().await {
        g.queue_depth = s.pending;
        g.dead = s.dead;
        g.unconfirmed = s.unconfirmed;
        g.oldest_pending_seconds = s
            .oldest_pending_at
            .map_or(0.0, |at| unix_ms().saturating_sub(at) as f64 / 1000.0);
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
            match app
                .config
                .mint_url(&m.route, &m.reference, ttl, unix_ms() / 1000)
            {
                Ok((url, exp)) => json(
                    StatusCode::OK,
                    &json!({ "url": url, "expires_at": rfc3339(exp) }),
                ),
                Err(e) => json_error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
            }
        }
        (Method::GET, ["deliveries"]) => {
            let state = match query_param(&query, "state") {
                None => None,
                Some(s) if s == "unconfirmed" => Some(Filter {
                    state: None,
                    watch: Some(WatchState::Unconfirmed),
                }),
                Some(s) => match DeliveryState::parse(&s) {
                    Some(st) => Some(Filter::state(st)),
                    None => {
                        return json_error(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            "state is one of pending, dead, delivered, unconfirmed",
                        )
                    }
                },
            };
            let limit = query_param(&query, "limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(100)
                .min(1000);
            match app.store.list(state.unwrap_or_default(), limit).await {
                Ok(list) => json(
                    StatusCode::OK,
                    &json!(list.iter().map(delivery_json).collect::<Vec<_>>()),
                ),
                Err(e) => json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    &e.to_string(),
                ),
            }
        }
        (Method::POST, ["deliveries", id, "replay"]) => {
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
                Ok(Replay::NotFound) => {
                    json_error(StatusCode::NOT_FOUND, "not_found", "no such delivery")
                }
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
        (Method::POST, ["sessions"]) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            register(app, &body).await
        }
        (_, ["callback-urls"] | ["deliveries"] | ["deliveries", _, "replay"] | ["sessions"]) => {
            json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "wrong method for this endpoint",
            )
        }
        _ => json_error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
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
    let reg = match crate::reconcile::registration(
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

/// Minted URLs live 48 hours unless asked otherwise, as long as a session.
pub const DEFAULT_TTL: Duration = Duration::from_secs(48 * 3600);

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

fn delivery_json(d: &Delivery) -> serde_json::Value {
    json!({
        "id": d.id.to_string(),
        "route": d.route,
        "reference": d.reference,
        "session_id": d.session_id.as_str(),
        "authorization_token": d.authorization_token.last4(),
        "source": d.source.as_str(),
        "state": d.state.as_str(),
        "attempts": d.attempts,
        "received_at": rfc3339(d.received_at / 1000),
        "next_attempt_at": (d.state == DeliveryState::Pending).then(|| rfc3339(d.next_attempt_at / 1000)),
        "deadline_at": rfc3339(d.deadline_at / 1000),
        "delivered_at": d.delivered_at.map(|t| rfc3339(t / 1000)),
        "last_error": d.last_error,
        "order_watch": d.watch.as_ref().map(|w| json!({
            "state": w.state.as_str(),
            "started_at": rfc3339(w.started_at / 1000),
            "next_check_at": (w.state == WatchState::Watching).then(|| rfc3339(w.next_check_at / 1000)),
            "checks": w.checks,
            "redelivered": w.redelivered,
            "last_error": w.last_error,
        })),
    })
}
