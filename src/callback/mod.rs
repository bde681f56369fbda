//! The intercepted route (`kind = "klarna_authorization"`): verify the URL
//! token, validate the body, record the authorization in the store, and
//! answer at once. It never talks to the upstream: the delivery worker does.
//!
//! Every answer and its status code live in `Outcome::response`.

pub(crate) mod limit;
pub mod mint;
pub(crate) mod probe;
pub mod token;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use tokio::sync::Notify;

use crate::body::{json_error, status, Body};
use crate::ops::access_log::Tally;
use crate::ops::metrics::{CallbackOutcome, Metrics};
use crate::route::{ForwardFormat, Route};
use crate::store::{ArrivalUri, Claim, Delivery, Source, Store};
use crate::text::query_decode;
use crate::types::{unix_ms, AuthorizationToken, DeliveryId, SessionId};
use limit::IpLimiter;
use token::TokenError;

/// Largest callback body accepted.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// What handling a callback needs, and nothing else: the callback handler
/// never sees the upstream or the delivery worker, only the store and a
/// doorbell that says there is new work.
pub(crate) struct Context {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// Rung when a callback is recorded: the delivery worker wakes.
    pub new_work: Arc<Notify>,
    pub failed_token_limiter: Option<IpLimiter>,
    pub callback_limiter: Option<IpLimiter>,
    /// How long a callback body may take to arrive.
    pub body_timeout: Duration,
    /// A delivery's deadline, from receipt.
    pub deadline: Duration,
    /// The doctor's probes, answered before a route's checks.
    pub probes: probe::Probes,
}

impl Context {
    /// Sweeps the limiters' idle addresses every minute until `stop`.
    pub(crate) fn spawn_sweeper(
        self: &Arc<Self>,
        stop: crate::ops::shutdown::Stop,
    ) -> tokio::task::JoinHandle<()> {
        let ctx = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        for l in [&ctx.failed_token_limiter, &ctx.callback_limiter].into_iter().flatten() {
                            l.sweep();
                        }
                        ctx.probes.sweep();
                    }
                    _ = stop.wait() => return,
                }
            }
        })
    }
}

/// What became of one callback.
#[derive(Debug)]
pub(crate) enum Outcome {
    Accepted(DeliveryId),
    Duplicate(DeliveryId),
    MethodNotAllowed,
    Forbidden,
    InvalidToken(TokenError),
    RateLimited(Duration),
    TooLarge,
    BadRequest(&'static str),
    Timeout,
    Unavailable,
}

impl Outcome {
    /// The `outcome` of `authback_callbacks_total` this answer counts as.
    pub(crate) fn kind(&self) -> CallbackOutcome {
        match self {
            Outcome::Accepted(_) => CallbackOutcome::Accepted,
            Outcome::Duplicate(_) => CallbackOutcome::Duplicate,
            Outcome::MethodNotAllowed => CallbackOutcome::MethodNotAllowed,
            Outcome::Forbidden => CallbackOutcome::Forbidden,
            Outcome::InvalidToken(_) => CallbackOutcome::InvalidToken,
            Outcome::RateLimited(_) => CallbackOutcome::RateLimited,
            Outcome::TooLarge => CallbackOutcome::TooLarge,
            Outcome::BadRequest(_) => CallbackOutcome::BadRequest,
            Outcome::Timeout => CallbackOutcome::Timeout,
            Outcome::Unavailable => CallbackOutcome::Unavailable,
        }
    }

    /// The `outcome` label, as the logs show it.
    pub(crate) fn label(&self) -> &'static str {
        self.kind().as_str()
    }

    /// What went wrong, in words, as the answer's `message` says it.
    pub(crate) fn message(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Outcome::Accepted(_) => "recorded".into(),
            Outcome::Duplicate(_) => "already recorded".into(),
            Outcome::MethodNotAllowed => "callbacks are POST".into(),
            Outcome::Forbidden => "source address not allowed".into(),
            Outcome::InvalidToken(e) => e.to_string().into(),
            Outcome::RateLimited(_) => "too many requests from this address".into(),
            Outcome::TooLarge => "body over 64 KiB".into(),
            Outcome::BadRequest(why) => (*why).into(),
            Outcome::Timeout => "body not received in time".into(),
            Outcome::Unavailable => "the callback could not be recorded; retry".into(),
        }
    }

    pub(crate) fn response(&self) -> Response<Body> {
        let message = self.message();
        match self {
            Outcome::Accepted(_) | Outcome::Duplicate(_) => status(StatusCode::NO_CONTENT),
            Outcome::MethodNotAllowed => {
                let mut r = json_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    &message,
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                r
            }
            Outcome::Forbidden => json_error(StatusCode::FORBIDDEN, "forbidden", &message),
            Outcome::InvalidToken(_) => {
                json_error(StatusCode::UNAUTHORIZED, "invalid_token", &message)
            }
            Outcome::RateLimited(wait) => {
                let mut r = json_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", &message);
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                r
            }
            Outcome::TooLarge => json_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", &message),
            Outcome::BadRequest(_) => json_error(StatusCode::BAD_REQUEST, "bad_request", &message),
            Outcome::Timeout => json_error(StatusCode::REQUEST_TIMEOUT, "timeout", &message),
            Outcome::Unavailable => {
                json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &message)
            }
        }
    }
}

/// Handles one request on a callback route. `path` is the request's
/// canonical path; `reference` is `None` when its reference segment is
/// invalid; `tally`, when the access log is on, counts the body bytes read.
pub(crate) async fn handle(
    ctx: &Context,
    route: &Route,
    reference: Option<&str>,
    path: &str,
    req: Request<Incoming>,
    client_ip: IpAddr,
    tally: Option<&Tally>,
) -> Response<Body> {
    let started = Instant::now();
    let outcome = decide(ctx, route, reference, path, req, client_ip, tally).await;
    let elapsed = started.elapsed();
    ctx.metrics.callback(&route.name, outcome.kind());
    ctx.metrics.ack_duration(elapsed);
    let reference = reference.unwrap_or("");
    match &outcome {
        Outcome::Accepted(id) | Outcome::Duplicate(id) => tracing::info!(
            route = %route.name, reference, %id, client_ip = %client_ip, outcome = outcome.label(),
            ack_us = elapsed.as_micros() as u64, "callback"
        ),
        Outcome::Unavailable => tracing::error!(
            route = %route.name, reference, client_ip = %client_ip, outcome = outcome.label(), "callback not recorded"
        ),
        other => tracing::warn!(
            route = %route.name, reference, client_ip = %client_ip, outcome = other.label(), detail = %other.message(), "callback refused"
        ),
    }
    outcome.response()
}

async fn decide(
    ctx: &Context,
    route: &Route,
    reference: Option<&str>,
    path: &str,
    req: Request<Incoming>,
    client_ip: IpAddr,
    tally: Option<&Tally>,
) -> Outcome {
    let limit = ctx.body_timeout;
    if req.method() != Method::POST {
        return refused(req, limit, Outcome::MethodNotAllowed);
    }
    if !route.ip_allowed(client_ip) {
        return refused(req, limit, Outcome::Forbidden);
    }
    if let Some(limiter) = &ctx.callback_limiter {
        if let Err(wait) = limiter.check(client_ip) {
            return refused(req, limit, Outcome::RateLimited(wait));
        }
    }
    let Some(reference) = reference else {
        let why = "reference in the path must be 1-128 characters of A-Z a-z 0-9 . _ ~ -";
        return refused(req, limit, Outcome::BadRequest(why));
    };
    if let Err(e) = verify(route, reference, req.uri().query()) {
        // Throttle guessing, but never a caller with a valid token.
        if let Some(limiter) = &ctx.failed_token_limiter {
            if let Err(wait) = limiter.check(client_ip) {
                return refused(req, limit, Outcome::RateLimited(wait));
            }
        }
        return refused(req, limit, Outcome::InvalidToken(e));
    }
    // The backend gets the canonical path, the one authback matched.
    let arrival_uri = (route.forward_format == ForwardFormat::Original
        && route.forward_path.is_none())
    .then(|| {
        ArrivalUri(match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        })
    });
    let body = match read_body(req, limit, tally).await {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let (session_id, authorization_token) = match parse_body(&body) {
        Ok(fields) => fields,
        Err(why) => return Outcome::BadRequest(why),
    };
    let delivery = Delivery::new_pending(
        route.name.clone(),
        reference.to_string(),
        session_id,
        authorization_token,
        Source::Callback,
        body,
        arrival_uri,
        unix_ms(),
        ctx.deadline,
    );
    let id = delivery.id;
    match ctx.store.claim(delivery).await {
        Ok(Claim::Recorded) => {
            ctx.new_work.notify_one();
            Outcome::Accepted(id)
        }
        Ok(Claim::Duplicate) => Outcome::Duplicate(id),
        Err(e) => {
            tracing::error!(error = %e, "store cannot record a callback");
            Outcome::Unavailable
        }
    }
}

/// Answers `req` on `route` as the doctor's probe (`probe`) when it
/// carries a live nonce, taking the nonce; otherwise gives `req` back
/// untouched, for the route's usual checks. Runs before `allow_ips` and
/// every other check of the route, and counts as no callback.
pub(crate) async fn answer_probe(
    ctx: &Context,
    route: &Route,
    req: Request<Incoming>,
    client_ip: IpAddr,
) -> Result<Response<Body>, Request<Incoming>> {
    let Some(nonce) = ctx.probes.admitted(req.headers(), client_ip) else {
        return Err(req);
    };
    match ctx.store.take_probe(nonce, unix_ms()).await {
        Ok(true) => {}
        Ok(false) => return Err(req),
        Err(e) => {
            // Read as no probe: the route's checks decide.
            tracing::warn!(error = %e, "store cannot check a probe nonce");
            return Err(req);
        }
    }
    tracing::info!(route = %route.name, client_ip = %client_ip, "probe answered");
    let waits = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !waits {
        linger(req.into_body(), ctx.body_timeout, MAX_BODY);
    }
    Ok(ctx.probes.answer(&route.name))
}

/// Reads a callback's body, within `limit` and `MAX_BODY`, counting what
/// it reads in `tally`.
async fn read_body(
    req: Request<Incoming>,
    limit: Duration,
    tally: Option<&Tally>,
) -> Result<Bytes, Outcome> {
    let too_long = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY as u64);
    if too_long {
        return Err(refused(req, limit, Outcome::TooLarge));
    }
    let mut incoming = req.into_body();
    let read = async {
        let mut buf = BytesMut::new();
        loop {
            match incoming.frame().await {
                None => return Ok(Some(buf.freeze())),
                Some(Err(e)) => return Err(e),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if let Some(t) = tally {
                            t.read(data.len());
                        }
                        if buf.len() + data.len() > MAX_BODY {
                            return Ok(None);
                        }
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
    };
    match tokio::time::timeout(limit, read).await {
        Err(_) => Err(Outcome::Timeout),
        Ok(Err(_)) => Err(Outcome::BadRequest("body could not be read")),
        Ok(Ok(None)) => {
            linger(incoming, limit, LINGER_BYTES);
            Err(Outcome::TooLarge)
        }
        Ok(Ok(Some(body))) => Ok(body),
    }
}

/// How much of a refused body is read and thrown away.
const LINGER_BYTES: usize = 1024 * 1024;

/// Answers `outcome` before the body was read, reading the body meanwhile
/// (see `linger`): an HTTP/1 connection stays usable, and an HTTP/2 client
/// still sending gets the answer rather than a reset stream. A client
/// waiting for `100 Continue` sends no body, and is not invited to.
fn refused(req: Request<Incoming>, limit: Duration, outcome: Outcome) -> Outcome {
    let waits = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !waits {
        // A callback body is at most MAX_BODY: a larger one is only read
        // through when it was refused for its size.
        let bytes = if matches!(outcome, Outcome::TooLarge) {
            LINGER_BYTES
        } else {
            MAX_BODY
        };
        linger(req.into_body(), limit, bytes);
    }
    outcome
}

/// Reads and discards the rest of a refused request's body, up to
/// `bytes` and within `limit`, while the answer goes out: a client
/// still sending then reads the answer instead of a connection reset.
fn linger(mut body: Incoming, limit: Duration, bytes: usize) {
    tokio::spawn(async move {
        let drain = async {
            let mut left = bytes;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(d) = frame.data_ref() {
                    if d.len() >= left {
                        return;
                    }
                    left -= d.len();
                }
            }
        };
        let _ = tokio::time::timeout(limit, drain).await;
    });
}

fn verify(route: &Route, reference: &str, query: Option<&str>) -> Result<(), TokenError> {
    // Even a backend's own token may not be repeated: authback forwards the
    // query as it came, and the backend would read one of them.
    let token = the_token(query.unwrap_or(""))?;
    if route.unverified {
        return Ok(());
    }
    let token = token.ok_or(TokenError::Missing)?;
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token::is_v1(&token) && !route.secrets.is_empty() {
        let now = unix_ms() / 1000;
        match token::verify(&token, &route.secrets, &route.name, reference, now) {
            Ok(()) => return Ok(()),
            Err(e) if route.static_tokens.is_empty() => return Err(e),
            Err(_) => {}
        }
    }
    if route.static_tokens.is_empty() {
        return Err(TokenError::Malformed);
    }
    token::verify_static(&token, &route.static_tokens)
}

/// The `token` query parameter. A repeated one is refused: authback would
/// check one value while a backend behind an `original` route reads
/// another (PHP reads the last). Names are compared decoded, and PHP's
/// `token[...]` counts as the same parameter.
fn the_token(query: &str) -> Result<Option<String>, TokenError> {
    let mut found = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let name = if k.contains(['%', '+']) {
            query_decode(k).unwrap_or_default()
        } else {
            k.to_string()
        };
        if name == "token" || name.starts_with("token[") {
            if found.is_some() {
                return Err(TokenError::Repeated);
            }
            found = Some(query_decode(v).ok_or(TokenError::Malformed)?);
        }
    }
    Ok(found)
}

/// The callback body: a JSON object with non-empty string fields
/// `authorization_token` and `session_id` of at most 1 KiB, free of control
/// characters (two authorizations could otherwise share one dedupe id, and a
/// log line could be forged). A repeated key, at any depth, is refused: the
/// backend might read the other one. Klarna does not document its content
/// type, so the header is not consulted.
pub fn parse_body(body: &Bytes) -> Result<(SessionId, AuthorizationToken), &'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "body is not JSON")?;
    let obj = value.as_object().ok_or("body is not a JSON object")?;
    serde_json::from_slice::<UniqueKeys>(body).map_err(|_| "a key appears twice in the body")?;
    let field = |name: &str| -> Result<String, &'static str> {
        match obj.get(name) {
            Some(serde_json::Value::String(s)) if s.is_empty() => Err("a required field is empty"),
            Some(serde_json::Value::String(s)) if s.len() > crate::types::MAX_FIELD => {
                Err("a field is over 1 KiB")
            }
            Some(serde_json::Value::String(s)) if s.chars().any(|c| c.is_ascii_control()) => {
                Err("authorization_token and session_id must not hold control characters")
            }
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err("authorization_token and session_id must be strings"),
            None => Err("authorization_token and session_id are required"),
        }
    };
    let token = field("authorization_token")?;
    let session = field("session_id")?;
    Ok((SessionId::new(session), AuthorizationToken::new(token)))
}

/// A JSON value in which no object repeats a key (compared after escapes
/// are decoded, so `"a"` and `"\u0061"` are the same key).
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("a key appears twice"));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_rules() {
        let ok = Bytes::from_static(br#"{"authorization_token":"a","session_id":"s","x":1}"#);
        let (s, t) = parse_body(&ok).expect("valid");
        assert_eq!((s.as_str(), t.expose()), ("s", "a"));
        let nested =
            br#"{"authorization_token":"a","session_id":"s","x":{"k":[1,{"k":2}],"j":null}}"#;
        assert!(parse_body(&Bytes::from_static(nested)).is_ok());
        for bad in [
            "",
            "[]",
            "\"x\"",
            "{not json",
            r#"{"session_id":"s"}"#,
            r#"{"authorization_token":"","session_id":"s"}"#,
            r#"{"authorization_token":1,"session_id":"s"}"#,
            r#"{"authorization_token":"a","session_id":null}"#,
            "{\"authorization_token\":\"z\",\"session_id\":\"sx\\ny\"}",
            "{\"authorization_token\":\"y\\u007fz\",\"session_id\":\"sx\"}",
            r#"{"authorization_token":"a","session_id":"s","session_id":"t"}"#,
            r#"{"authorization_token":"a","session_id":"s","session\u005fid":"t"}"#,
            r#"{"authorization_token":"a","session_id":"s","x":{"k":1,"k":2}}"#,
            r#"{"authorization_token":"a","session_id":"s","x":[{"k":1,"k":2}]}"#,
        ] {
            assert!(parse_body(&Bytes::from(bad)).is_err(), "{bad}");
        }
        let long = format!(
            r#"{{"authorization_token":"{}","session_id":"s"}}"#,
            "a".repeat(1025)
        );
        assert_eq!(parse_body(&Bytes::from(long)), Err("a field is over 1 KiB"));
    }

    #[test]
    fn one_token_parameter() {
        assert_eq!(the_token("a=1&token=v1.x"), Ok(Some("v1.x".into())));
        assert_eq!(the_token("a=1"), Ok(None));
        for q in [
            "token=a&token=b",
            "token=a&%74oken=b",
            "token=a&token[]=b",
            "token=a&token%5B%5D=b",
        ] {
            assert_eq!(the_token(q), Err(TokenError::Repeated), "{q}");
        }
    }

    #[test]
    fn statuses() {
        let id = DeliveryId::parse("5051a647229ad6abd4e7a7db65ad80d0").expect("id");
        assert_eq!(Outcome::Accepted(id).response().status(), 204);
        assert_eq!(Outcome::Duplicate(id).response().status(), 204);
        let r = Outcome::MethodNotAllowed.response();
        assert_eq!(
            (r.status().as_u16(), r.headers()["allow"].to_str().ok()),
            (405, Some("POST"))
        );
        assert_eq!(
            Outcome::InvalidToken(TokenError::Expired)
                .response()
                .status(),
            401
        );
        assert_eq!(Outcome::Forbidden.response().status(), 403);
        assert_eq!(Outcome::TooLarge.response().status(), 413);
        assert_eq!(Outcome::BadRequest("x").response().status(), 400);
        let r = Outcome::RateLimited(Duration::from_millis(1500)).response();
        assert_eq!(
            (
                r.status().as_u16(),
                r.headers()["retry-after"].to_str().ok()
            ),
            (429, Some("2"))
        );
        assert_eq!(Outcome::Unavailable.response().status(), 503);
    }
}
