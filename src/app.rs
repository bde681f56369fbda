//! The state every request handler shares, and the public listener's router:
//! a path that matches a callback route goes to `callback`, everything else
//! to `proxy`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::Notify;

use crate::body::Body;
use crate::callback::{self, limit::IpLimiter};
use crate::config::{Config, PathMatch};
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

    /// Routes one request that arrived on a public listener.
    pub async fn handle_public(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
    ) -> Response<Body> {
        let path = req.uri().path();
        for route in &self.config.routes {
            let reference = match route.path.matches(path) {
                PathMatch::No => continue,
                PathMatch::Yes(r) => Some(r.to_string()),
                PathMatch::BadReference => None,
            };
            let xff = crate::net::forwarded_chain(req.headers());
            let ip = client_ip(
                peer.ip(),
                xff.as_deref(),
                &self.config.server.trusted_proxies,
            );
            return callback::handle(self, route, reference.as_deref(), req, ip).await;
        }
        proxy::forward(self, req, peer.ip(), tls).await
    }
}
