//! Pass-through: every request that is not a callback goes to the upstream
//! unchanged in meaning. Bodies stream both ways, hop-by-hop headers are
//! dropped, `X-Forwarded-*` are set (believing only trusted proxies), `Host`
//! is kept, and upgrades (WebSocket only) are tunnelled. These are the
//! header rules; how the request reaches the upstream is `upstream`'s.

pub(crate) mod forms;

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::{json_error, Body};
use crate::net::{forwarded_for, IpNet};
use crate::ops::access_log::Tally;
use crate::ops::metrics::Metrics;
use crate::route::dialect::PathForm;
use crate::upstream::Upstream;

/// What the pass-through needs, and nothing else.
pub(crate) struct Context {
    pub upstream: Arc<Upstream>,
    pub trusted_proxies: Vec<IpNet>,
    /// Which path the backend is sent.
    pub path_form: PathForm,
    /// `X-Forwarded-Port` when no trusted proxy said it: `public_url`'s.
    pub public_port: u16,
    /// Parameter names a route matches in the query (`wc-api`): a form
    /// body that carries one is refused (see `forms`).
    pub routed_names: Arc<[String]>,
    pub metrics: Arc<Metrics>,
    /// `Strict-Transport-Security` for answers on the TLS listener that
    /// carry none of their own (`server.hsts`).
    pub hsts: Option<HeaderValue>,
}

/// `public_url`'s port, or its scheme's.
pub(crate) fn public_port(public_url: &str) -> u16 {
    public_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| {
            u.port_u16().or(match u.scheme_str() {
                Some("http") => Some(80),
                _ => Some(443),
            })
        })
        .unwrap_or(443)
}

/// Every name any route matches in a query.
pub(crate) fn routed_names(routes: &[crate::route::Route]) -> Arc<[String]> {
    let mut names: Vec<String> = routes
        .iter()
        .flat_map(|r| r.query_match.iter().map(|(k, _)| k.clone()))
        .collect();
    names.sort();
    names.dedup();
    names.into()
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Headers whose meaning authback sets: a client's own, and any name that
/// a backend reads as one of them (PHP and CGI read `X_Forwarded_For` and
/// `X.Forwarded.For` as `HTTP_X_FORWARDED_FOR`), never reach the backend
/// unless `kept` says a trusted proxy may send them.
const MANAGED: [&str; 8] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "forwarded",
    "x-real-ip",
    "x-forwarded-prefix",
    "idempotency-key",
];

/// Connection-level headers that never cross a proxy (RFC 9110 §7.6.1,
/// and HTTP2-Settings, which only an h2c upgrade carries).
/// A `static`, not a `const`: a `const` array is built and dropped anew at
/// every use, and this one is read for every message.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    HeaderName::from_static("http2-settings"),
];

/// HTTP/2 clients send each cookie as a field of its own; on HTTP/1.1 they
/// must travel as one `Cookie` line, joined with "; " (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Whether `n` is one of `HOP_BY_HOP` or `Upgrade`. Told by length first,
/// so that most names are ruled out without comparing a byte; every
/// request and response asks it of each of its header names.
fn is_hop_by_hop(n: &HeaderName) -> bool {
    let s = n.as_str();
    match s.len() {
        2 => s == "te",
        7 => s == "trailer" || s == "upgrade",
        10 => s == "connection" || s == "keep-alive",
        14 => s == "http2-settings",
        16 => s == "proxy-connection",
        17 => s == "transfer-encoding",
        18 => s == "proxy-authenticate",
        19 => s == "proxy-authorization",
        _ => false,
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// `Upgrade` is removed too unless `keep_upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the names instead of a
    // hashed removal for each.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(&name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Whether the request asks to switch to WebSocket, the one protocol
/// tunnelled: any other (h2c above all) would carry requests, callbacks
/// among them, that authback never sees. Other tokens are dropped with the
/// `Upgrade` header, and the request is served as plain HTTP/1.1.
fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().get_all(header::UPGRADE).iter().any(|v| {
            v.as_bytes()
                .split(|&c| c == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"websocket"))
        })
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Proxies one request. `canonical` is the path authback routed on when it
/// differs from the raw one; `tls` says which listener the request came in
/// on; `tally`, when the access log is on, is told the body bytes read and
/// the upstream's answer. An answer on the TLS listener gets `server.hsts`
/// unless it carries a `Strict-Transport-Security` of its own; one on a
/// plain listener never does.
pub(crate) async fn forward(
    ctx: &Context,
    req: Request<Incoming>,
    canonical: Option<String>,
    peer: IpAddr,
    tls: bool,
    tally: Option<Arc<Tally>>,
) -> Response<Body> {
    let mut resp = exchange(ctx, req, canonical, peer, tls, tally).await;
    if let (true, Some(hsts)) = (tls, &ctx.hsts) {
        if let header::Entry::Vacant(e) =
            resp.headers_mut().entry(header::STRICT_TRANSPORT_SECURITY)
        {
            e.insert(hsts.clone());
        }
    }
    resp
}

/// The exchange, in four named steps: the target the backend acts on, the
/// head it may see, the exchange, and the answer (or a tunnel).
async fn exchange(
    ctx: &Context,
    mut req: Request<Incoming>,
    canonical: Option<String>,
    peer: IpAddr,
    tls: bool,
    tally: Option<Arc<Tally>>,
) -> Response<Body> {
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let scan = forms::scanner(&req, &ctx.routed_names);

    let (mut parts, body) = req.into_parts();
    if rewrite_target(ctx, &mut parts, canonical).is_err() {
        ctx.metrics.proxy_response(400);
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "invalid request target",
        );
    }
    // For the log line of a failure: a clone shares the bytes, copies none.
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    rewrite_head(ctx, &mut parts, peer, tls, upgrade);
    // A body that has ended already has no bytes to count.
    let count = tally
        .as_ref()
        .filter(|_| !http_body::Body::is_end_stream(&body));
    let body = match (scan, count) {
        (scan, Some(tally)) => crate::body::Inspected::body(
            body,
            Counted {
                scan,
                tally: tally.clone(),
            },
        ),
        (Some(scanner), None) => crate::body::Inspected::body(body, scanner),
        (None, None) => Body::from(body),
    };
    let out = Request::from_parts(parts, body);

    let asked = tally.as_ref().map(|_| std::time::Instant::now());
    let sent = ctx.upstream.proxy(out, upgrade);
    let answer = tokio::time::timeout(ctx.upstream.timeout(), sent).await;
    if let (Some(t), Some(at)) = (&tally, asked) {
        let status = match &answer {
            Ok(Ok(r)) => Some(r.status().as_u16()),
            _ => None,
        };
        t.upstream(status, at.elapsed());
    }
    let resp = match answer {
        Err(_) => {
            ctx.metrics.proxy_response(504);
            tracing::warn!(%method, path = uri.path(), client = %peer, "upstream did not answer in time");
            return json_error(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream did not answer in time",
            );
        }
        Ok(Err(e)) => {
            // The path, never the query: a query may carry a token.
            tracing::warn!(%method, path = uri.path(), client = %peer, error = %e, "upstream request failed");
            return failure(ctx, &e);
        }
        Ok(Ok(r)) => r,
    };
    ctx.metrics.proxy_response(resp.status().as_u16());
    match client_upgrade {
        Some(client) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => tunnel(resp, client),
        _ => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, false);
            Response::from_parts(parts, body)
        }
    }
}

/// A proxied request body, counted for the access log as it streams, and
/// scanned as well when a scanner is due (`forms`).
struct Counted {
    scan: Option<forms::Scanner>,
    tally: Arc<Tally>,
}

impl crate::body::Inspect for Counted {
    fn feed(&mut self, data: &[u8]) -> bool {
        self.tally.read(data.len());
        self.scan.as_mut().is_none_or(|s| s.feed(data))
    }

    fn finish(&mut self) -> bool {
        self.scan.as_mut().is_none_or(|s| s.finish())
    }
}

/// Step 1: the backend acts on the path authback decided on, not on the
/// raw one it might read another way (`/a/b/..` is `/a/`).
fn rewrite_target(
    ctx: &Context,
    parts: &mut http::request::Parts,
    canonical: Option<String>,
) -> Result<(), ()> {
    let Some(path) = canonical.filter(|_| ctx.path_form == PathForm::Canonical) else {
        return Ok(());
    };
    let target = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let pq = target.parse::<http::uri::PathAndQuery>().map_err(|_| ())?;
    parts.uri = http::Uri::from(pq);
    Ok(())
}

/// Step 2: the head the backend may see: no hop-by-hop headers, none of
/// authback's own or their look-alikes, `X-Forwarded-*` from authback or
/// a trusted proxy, a `Host`, and HTTP/1.1.
fn rewrite_head(
    ctx: &Context,
    parts: &mut http::request::Parts,
    peer: IpAddr,
    tls: bool,
    upgrade: bool,
) {
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let from_h2 = parts.version == Version::HTTP_2;
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    // One more pass over the names, for what a client may not pass on:
    // `Expect` (authback streams the body to the upstream at once, having
    // answered the client's `100-continue` itself: the upstream is not
    // asked again) and `Authback-*`.
    let (mut expect, mut ours) = (false, false);
    for n in headers.keys() {
        expect |= *n == header::EXPECT;
        ours |= is_ours(n) || is_managed(n);
    }
    if expect {
        headers.remove(header::EXPECT);
    }
    let trusted = ctx.trusted_proxies.iter().any(|n| n.contains(peer));
    if ours {
        strip_client_headers(headers, trusted);
    }
    if from_h2 {
        join_cookies(headers);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    // The chain a client sent counts only from a trusted proxy.
    let chain = if ctx.trusted_proxies.is_empty() {
        None
    } else {
        crate::net::forwarded_chain(headers)
    };
    let xff = forwarded_for(peer, chain.as_deref(), &ctx.trusted_proxies);
    // The string's buffer becomes the header's bytes, uncopied.
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    // An ingress in front says what the client used; otherwise authback
    // says what it knows.
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        );
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_PORT)) {
        headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(ctx.public_port));
    }
    if let Some(h) = host {
        if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
        headers.insert(header::HOST, h);
    } else if let Some(a) = ctx.upstream.authority() {
        // HTTP/1.0 may name no host; HTTP/1.1 to the upstream must.
        if let Ok(v) = HeaderValue::from_str(a.as_str()) {
            headers.insert(header::HOST, v);
        }
    }
}

/// Step 3, failed: what the client is told, and counted.
fn failure(ctx: &Context, e: &crate::upstream::Error) -> Response<Body> {
    let (status, code, msg) = if e.refused_body() {
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a form body may not carry a parameter a callback route matches",
        )
    } else if e.is_timeout() {
        (
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "connecting to the upstream timed out",
        )
    } else if matches!(e, crate::upstream::Error::Target) {
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            "invalid request target",
        )
    } else {
        (
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "the upstream is unreachable",
        )
    };
    ctx.metrics.proxy_response(status.as_u16());
    json_error(status, code, msg)
}

/// Step 4, for a WebSocket the upstream accepted: both upgraded
/// connections are joined, and the `101` goes back to the client.
fn tunnel(mut resp: Response<Body>, client: hyper::upgrade::OnUpgrade) -> Response<Body> {
    let upstream = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        match tokio::try_join!(client, upstream) {
            Ok((down, up)) => {
                let mut down = TokioIo::new(down);
                let mut up = TokioIo::new(up);
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    resp
}

/// `Authback-*` headers are authback's to send to the upstream (the
/// attempt number, the signature): a client's own never reach it, nor do
/// their look-alikes (`Authback_Attempt`), nor `Forwarded`, `X-Real-IP`,
/// `X-Forwarded-Prefix` and look-alikes of the headers authback sets.
/// `X-Forwarded-Proto`, `-Host` and `-Port` stay when a `trusted` proxy
/// sent them as written.
fn strip_client_headers(headers: &mut HeaderMap, trusted: bool) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_ours(n) || is_managed(n))
        .filter(|n| {
            let kept = [&X_FORWARDED_PROTO, &X_FORWARDED_HOST, &X_FORWARDED_PORT];
            !(trusted && kept.contains(n))
                && *n != X_FORWARDED_FOR
                && n.as_str() != "idempotency-key"
        })
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// Whether `n`, with `_` and `.` read as `-` (as PHP and CGI read them),
/// starts with `authback-`.
fn is_ours(n: &HeaderName) -> bool {
    let b = n.as_str().as_bytes();
    b.len() >= 9 && b[..8] == *b"authback" && matches!(b[8], b'-' | b'_' | b'.')
}

/// Whether `n` is, or reads as, one of the `MANAGED` headers.
fn is_managed(n: &HeaderName) -> bool {
    let s = n.as_str();
    match s.len() {
        9 | 10 | 14 | 15 | 16 | 17 | 18 => MANAGED.iter().any(|m| {
            m.len() == s.len()
                && m.bytes()
                    .zip(s.bytes())
                    .all(|(a, b)| a == b || (a == b'-' && matches!(b, b'_' | b'.')))
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_are_told_apart_by_length_then_bytes() {
        let mut hop: Vec<HeaderName> = HOP_BY_HOP.to_vec();
        hop.push(header::UPGRADE);
        for n in &hop {
            assert!(is_hop_by_hop(n), "{n}");
        }
        for n in [
            "host",
            "user-agent",
            "content-length",
            "content-type",
            "accept",
            "tf",
            "trailers",
            "upgrade-insecure-requests",
            "proxy-connectio",
            "x-keep-alive",
            "keep-alivf",
        ] {
            let n = HeaderName::from_static(n);
            assert_eq!(is_hop_by_hop(&n), hop.contains(&n), "{n}");
            assert!(!is_hop_by_hop(&n), "{n}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-end-to-end", HeaderValue::from_static("1"));
        let mut kept = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-end-to-end"));
        strip_hop_by_hop(&mut kept, true);
        assert!(kept.contains_key(header::UPGRADE));
    }
}
