//! The state every request handler shares, and the public listener's router:
//! a path that matches a callback route goes to `callback`, everything else
//! to `proxy`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::Notify;

use crate::body::{json_error, Body};
use crate::callback::{self, limit::IpLimiter};
use crate::callback::route::PathMatch;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::client_ip;
use crate::proxy::{self, UpstreamClient};
use crate::store::Store;

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// Wakes the delivery worker: new work, or a free slot.
    pub wake: Notify,
    /// Wakes the Read Session loop: a new registration, or a free slot.
    pub reconcile_wake: Notify,
    /// For the delivery worker, upgrades, and requests served off the
    /// workers (the workers keep their own connections, `upstream`).
    pub client: UpstreamClient,
    pub upstream_base: String,
    /// The same, split for building pass-through URIs.
    pub upstream_target: proxy::Target,
    /// Where the workers' own pass-through connections go.
    pub upstream_addr: Option<crate::upstream::Address>,
    pub failed_token_limiter: Option<IpLimiter>,
    pub callback_limiter: Option<IpLimiter>,
    /// Delivery attempts in flight.
    pub in_flight: AtomicU64,
    /// Listeners are bound and serving.
    pub ready: AtomicBool,
    /// A shutdown has begun: readiness goes false so traffic moves away.
    pub stopping: AtomicBool,
    /// When shutdown began: the delivery worker's drain ends `shutdown_grace`
    /// after it, however long the listeners took to drain.
    pub stop_began: std::sync::OnceLock<std::time::Instant>,
    /// Deliveries whose attempt is running here, sending or recording its
    /// outcome, with that attempt's number. A shared store may hand one out
    /// again when its lease runs out while the outcome still waits to be
    /// recorded; it is not sent twice.
    pub attempting: std::sync::Mutex<std::collections::HashMap<crate::types::DeliveryId, u32>>,
}

impl App {
    pub fn new(config: Config, store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        let client = proxy::client(&config.upstream);
        let upstream_base = proxy::upstream_base(&config.upstream.url);
        let upstream_target = proxy::Target::new(&config.upstream.url);
        let upstream_addr = crate::upstream::Address::new(&config.upstream.url);
        for r in &config.routes {
            metrics.declare_route(&r.name);
        }
        Self {
            failed_token_limiter: config.limits.failed_token_per_ip.and_then(IpLimiter::new),
            callback_limiter: config.limits.callback_per_ip.and_then(IpLimiter::new),
            config,
            store,
            metrics,
            wake: Notify::new(),
            reconcile_wake: Notify::new(),
            client,
            upstream_base,
            upstream_target,
            upstream_addr,
            in_flight: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            stop_began: std::sync::OnceLock::new(),
            attempting: std::sync::Mutex::default(),
        }
    }

    /// Routes one request that arrived on a public listener. The head is
    /// checked and the path made canonical first, so that no spelling of a
    /// callback route or a forward path gets around them (see `path`).
    pub async fn handle_public(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
    ) -> Response<Body> {
        if let Err(why) = crate::head::check(&req) {
            return self.refuse(StatusCode::BAD_REQUEST, "bad_request", why, &req, peer);
        }
        let raw = req.uri().path();
        let path = crate::path::canonical(raw);
        // Decoding can make `%2%46` into `%2F`: the canonical path is read
        // for such spellings too.
        if crate::path::is_ambiguous(raw) || crate::path::is_ambiguous(&path) {
            let shielded = self.shields(&path)
                || self.shields(&crate::path::lenient(raw))
                || self.shields(&crate::path::lenient(&path));
            if shielded {
                let why = "an encoded slash or backslash, a backslash or a `;` parameter is not accepted on this path";
                return self.refuse(StatusCode::BAD_REQUEST, "bad_request", why, &req, peer);
            }
        }
        for route in &self.config.routes {
            let reference = match route.path.matches(&path) {
                PathMatch::No => continue,
                PathMatch::Yes(r) => Some(r.to_string()),
                PathMatch::BadReference => None,
            };
            let path = path.into_owned();
            let xff = crate::net::forwarded_chain(req.headers());
            let ip = client_ip(
                peer.ip(),
                xff.as_deref(),
                &self.config.server.trusted_proxies,
            );
            return callback::handle(self, route, reference.as_deref(), &path, req, ip).await;
        }
        if self.is_forward_path(&path) {
            return self.refuse(StatusCode::NOT_FOUND, "not_found", "not found", &req, peer);
        }
        proxy::forward(self, req, peer.ip(), tls).await
    }

    /// Whether a canonical path belongs to a callback route or is a
    /// forward path: such a path must never be proxied as it is.
    fn shields(&self, path: &str) -> bool {
        self.is_forward_path(path)
            || self
                .config
                .routes
                .iter()
                .any(|r| r.path.matches(path) != PathMatch::No)
    }

    /// Whether a canonical path is where the upstream receives deliveries:
    /// only authback may send there.
    fn is_forward_path(&self, path: &str) -> bool {
        self.config.routes.iter().any(|r| {
            r.forward_path.as_deref().is_some_and(|fp| {
                let fp = fp.split('?').next().unwrap_or(fp);
                crate::path::canonical(fp) == path
            })
        })
    }

    /// Answers a public request that is not proxied, and says why in the log
    /// (the path without its query: a query may carry a token).
    fn refuse(
        &self,
        status: StatusCode,
        code: &str,
        why: &str,
        req: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        self.metrics.proxy_response(status.as_u16());
        tracing::info!(
            method = %req.method(), path = req.uri().path(), client = %peer.ip(),
            status = status.as_u16(), why, "request refused"
        );
        json_error(status, code, why)
    }
}
