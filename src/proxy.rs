//! Pass-through: every request that is not a callback goes to the upstream
//! unchanged in meaning. Bodies stream both ways, hop-by-hop headers are
//! dropped, `X-Forwarded-*` are set (believing only trusted proxies), `Host`
//! is kept, and upgrades (WebSocket) are tunnelled.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::app::App;
use crate::body::{json_error, Body};
use crate::config::UpstreamConfig;
use crate::net::forwarded_for;

pub type UpstreamClient = Client<HttpConnector, Body>;

/// A pooled keep-alive client: for the delivery worker, and for upgrades and
/// requests served off the connection workers (the workers' other requests
/// go through `upstream`).
pub fn client(cfg: &UpstreamConfig) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        // One pool per worker: cap what each keeps open to the backend.
        .pool_max_idle_per_host(256)
        .build(http)
}

/// `http://host:port` plus the upstream URL's base path, without a trailing slash.
pub fn upstream_base(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri.authority().map_or("", |a| a.as_str());
    let path = uri.path().trim_end_matches('/');
    format!("{scheme}://{authority}{path}")
}

/// Where pass-through requests go: the upstream URL's scheme and authority,
/// and its base path (without a trailing slash, empty when it has none).
pub struct Target {
    scheme: http::uri::Scheme,
    authority: Option<http::uri::Authority>,
    prefix: String,
}

impl Target {
    pub fn new(uri: &http::Uri) -> Self {
        Target {
            scheme: uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP),
            authority: uri.authority().cloned(),
            prefix: uri.path().trim_end_matches('/').to_string(),
        }
    }

    /// The upstream path and query for a request's. Without a base path the
    /// parsed request target is reused as is, not printed and parsed again.
    fn path_and_query(
        &self,
        path: Option<&http::uri::PathAndQuery>,
    ) -> Option<http::uri::PathAndQuery> {
        match (self.prefix.is_empty(), path) {
            (true, Some(p)) => Some(p.clone()),
            (_, p) => {
                let p = p.map_or("/", |p| p.as_str());
                format!("{}{p}", self.prefix).parse().ok()
            }
        }
    }

    /// The absolute upstream URI, for the pooled client.
    fn uri(&self, path: Option<&http::uri::PathAndQuery>) -> Option<http::Uri> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = self.authority.clone();
        parts.path_and_query = Some(self.path_and_query(path)?);
        http::Uri::from_parts(parts).ok()
    }

    /// The origin-form target (`/path?query`), for a worker's own connections.
    fn origin(&self, path: Option<&http::uri::PathAndQuery>) -> Option<http::Uri> {
        Some(http::Uri::from(self.path_and_query(path)?))
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Connection-level headers that never cross a proxy (RFC 9110 §7.6.1,
/// and HTTP2-Settings, which only an h2c upgrade carries).
const HOP_BY_HOP: [HeaderName; 9] = [
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

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// `Upgrade` is removed too unless `keep_upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
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

/// Proxies one request. `tls` says which listener it came in on.
pub async fn forward(
    app: &App,
    mut req: Request<Incoming>,
    peer: IpAddr,
    tls: bool,
) -> Response<Body> {
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    // A worker proxies on connections of its own; an upgrade, or a request
    // served off the workers, goes through the pooled client.
    let own = match &app.upstream_addr {
        Some(addr) if !upgrade && crate::workers::current().is_some() => Some(addr),
        _ => None,
    };
    let target = &app.upstream_target;
    let uri = match if own.is_some() {
        target.origin(parts.uri.path_and_query())
    } else {
        target.uri(parts.uri.path_and_query())
    } {
        Some(u) => u,
        None => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "invalid request target",
            )
        }
    };
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let from_h2 = parts.version == Version::HTTP_2;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    // authback streams the body to the upstream at once, having answered
    // the client's `100-continue` itself: the upstream is not asked again.
    headers.remove(header::EXPECT);
    if from_h2 {
        join_cookies(headers);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    strip_authback_headers(headers);
    let xff = forwarded_for(
        peer,
        crate::net::forwarded_chain(headers).as_deref(),
        &app.config.server.trusted_proxies,
    );
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(h) = host {
        headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        headers.insert(header::HOST, h);
    } else if let Some(a) = target.authority.as_ref().filter(|_| own.is_some()) {
        // The pooled client names the upstream when the client named no
        // host; an own connection must too (HTTP/1.1 requires Host).
        if let Ok(v) = HeaderValue::from_str(a.as_str()) {
            headers.insert(header::HOST, v);
        }
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let out = Request::from_parts(parts, Body::from(body));

    let sent = async {
        match own {
            Some(addr) => crate::upstream::send(addr, app.config.upstream.connect_timeout, out)
                .await
                .map(|r| r.map(Body::from))
                .map_err(|e| {
                    let timed_out = matches!(e, crate::upstream::Error::ConnectTimeout);
                    (timed_out, e.to_string())
                }),
            None => app
                .client
                .request(out)
                .await
                .map(|r| r.map(Body::from))
                .map_err(|e| (is_timeout(&e), error_chain(&e))),
        }
    };
    let resp = match tokio::time::timeout(app.config.upstream.timeout, sent).await {
        Err(_) => {
            app.metrics.proxy_response(504);
            return json_error(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream did not answer in time",
            );
        }
        Ok(Err((timed_out, error))) => {
            tracing::warn!(%error, "upstream request failed");
            let (status, code, msg) = if timed_out {
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "connecting to the upstream timed out",
                )
            } else {
                (
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "the upstream is unreachable",
                )
            };
            app.metrics.proxy_response(status.as_u16());
            return json_error(status, code, msg);
        }
        Ok(Ok(r)) => r,
    };
    app.metrics.proxy_response(resp.status().as_u16());

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let mut resp = resp;
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((down, up)) => {
                        let mut down = TokioIo::new(down);
                        let mut up = TokioIo::new(up);
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
            return resp;
        }
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, body)
}

/// `Authback-*` headers are authback's to send to the upstream (the
/// attempt number, the signature): a client's own never reach it.
fn strip_authback_headers(headers: &mut HeaderMap) {
    let ours = |n: &HeaderName| n.as_str().starts_with("authback-");
    if headers.keys().any(ours) {
        let names: Vec<HeaderName> = headers.keys().filter(|n| ours(n)).cloned().collect();
        for n in names {
            headers.remove(n);
        }
    }
}

fn is_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if s.to_string().contains("timed out") {
            return true;
        }
        source = s.source();
    }
    false
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn target_joins_the_base_path_and_the_request_target() {
        let uri = |u: &str| u.parse::<http::Uri>().expect("uri");
        let pq = |p: &str| p.parse::<http::uri::PathAndQuery>().expect("path");
        let plain = Target::new(&uri("http://127.0.0.1:8080"));
        assert_eq!(
            plain.uri(Some(&pq("/a/b?x=1&y"))).map(|u| u.to_string()),
            Some("http://127.0.0.1:8080/a/b?x=1&y".to_string())
        );
        assert_eq!(
            plain.uri(None).map(|u| u.to_string()),
            Some("http://127.0.0.1:8080/".to_string())
        );
        let shop = Target::new(&uri("http://app:80/shop/"));
        assert_eq!(
            shop.uri(Some(&pq("/cart?id=7"))).map(|u| u.to_string()),
            Some("http://app:80/shop/cart?id=7".to_string())
        );
        assert_eq!(
            shop.uri(None).map(|u| u.to_string()),
            Some("http://app:80/shop/".to_string())
        );
    }

    #[test]
    fn base_keeps_a_path_prefix() {
        assert_eq!(
            upstream_base(&"http://127.0.0.1:8080".parse().expect("uri")),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            upstream_base(&"http://app:80/shop/".parse().expect("uri")),
            "http://app:80/shop"
        );
    }
}
