//! The public listener's router: the head is checked and the path made
//! canonical, then a path that is a callback route goes to `callback`, a
//! forward path is refused, and everything else goes to `proxy`. Each of
//! those gets its own narrow context; the router holds them and the routes.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{json_error, Body};
use crate::callback;
use crate::net::{client_ip, IpNet};
use crate::proxy;
use crate::route::dialect::Dialect;
use crate::route::{Route, RouteMatch};

pub(crate) struct App {
    routes: Vec<Route>,
    /// Each route's forward path, canonical and without its query.
    forward_paths: Vec<String>,
    trusted_proxies: Vec<IpNet>,
    dialect: Dialect,
    max_input_vars: usize,
    callbacks: Arc<callback::Context>,
    proxy: proxy::Context,
}

/// How the backend reads requests, as far as routing needs it.
pub(crate) struct Reading {
    pub dialect: Dialect,
    pub max_input_vars: usize,
}

/// The canonical path when it differs from the raw one (the backend is
/// then sent it); `None` when the raw path is canonical already.
fn owned(path: Cow<'_, str>) -> Option<String> {
    match path {
        Cow::Owned(p) => Some(p),
        Cow::Borrowed(_) => None,
    }
}

impl App {
    pub(crate) fn new(
        routes: Vec<Route>,
        trusted_proxies: Vec<IpNet>,
        reading: Reading,
        callbacks: Arc<callback::Context>,
        proxy: proxy::Context,
    ) -> Self {
        let forward_paths = routes
            .iter()
            .filter_map(|r| r.forward_path.as_deref())
            .map(|fp| {
                let fp = fp.split('?').next().unwrap_or(fp);
                crate::front::path::canonical(fp).into_owned()
            })
            .collect();
        App {
            routes,
            forward_paths,
            trusted_proxies,
            dialect: reading.dialect,
            max_input_vars: reading.max_input_vars,
            callbacks,
            proxy,
        }
    }

    /// Routes one request that arrived on a public listener. The head is
    /// checked and the path made canonical first, then read every way the
    /// backend might read it, so that no spelling of a callback route or a
    /// forward path gets around them. What is proxied carries the path
    /// authback routed on (`upstream.path_form`).
    pub(crate) async fn handle_public(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
    ) -> Response<Body> {
        if let Err(why) = crate::front::head::check(&req) {
            return self.refuse(StatusCode::BAD_REQUEST, "bad_request", why, &req, peer);
        }
        let raw = req.uri().path();
        let query = req.uri().query();
        let path = crate::front::path::canonical(raw);
        // Decoding can make `%2%46` into `%2F`: the canonical path is read
        // for such spellings too.
        let canonical_differs = matches!(path, Cow::Owned(_));
        if crate::front::path::is_ambiguous(raw)
            || (canonical_differs && crate::front::path::is_ambiguous(&path))
        {
            let shielded = self.shields(&path)
                || self.shields(&crate::front::path::lenient(raw))
                || self.shields(&crate::front::path::lenient(&path));
            if shielded {
                let why = "an encoded slash or backslash, a backslash or a `;` parameter is not accepted on this path";
                return self.refuse(StatusCode::BAD_REQUEST, "bad_request", why, &req, peer);
            }
        }
        let near = !self.routes.is_empty()
            && crate::front::path::any_reading(raw, &path, self.dialect, |p| {
                self.routes.iter().any(|r| r.near(p))
            });
        if let Some(q) = query {
            if let Err(why) = self.check_params(q, near) {
                return self.refuse(StatusCode::BAD_REQUEST, "bad_request", why, &req, peer);
            }
        }
        for route in &self.routes {
            let reference = match route.matches(&path, query) {
                RouteMatch::No => continue,
                RouteMatch::Yes(r) => Some(r),
                RouteMatch::BadReference => None,
            };
            let ip = {
                let xff = crate::net::forwarded_chain(req.headers());
                client_ip(peer.ip(), xff.as_deref(), &self.trusted_proxies)
            };
            // Owned: the probe may take the request.
            let (path, query) = (path.into_owned(), query.map(str::to_string));
            // The doctor's probe, before any check of the route; a request
            // that is not one comes back as it was.
            let req = match callback::answer_probe(&self.callbacks, route, req, ip).await {
                Ok(answered) => return answered,
                Err(req) => req,
            };
            if route.passes_through(&path, query.as_deref()) {
                // The plugin's own probe (Magento's `dryRun`), answered by
                // the backend before it does any work.
                let path = canonical_differs.then_some(path);
                return proxy::forward(&self.proxy, req, path, peer.ip(), tls).await;
            }
            return callback::handle(&self.callbacks, route, reference.as_deref(), &path, req, ip)
                .await;
        }
        if near {
            let why = "this spelling of a callback route is not one the route takes";
            return self.refuse(StatusCode::BAD_REQUEST, "bad_request", why, &req, peer);
        }
        if crate::front::path::any_reading(raw, &path, self.dialect, |p| self.near_forward_path(p))
        {
            return self.refuse(StatusCode::NOT_FOUND, "not_found", "not found", &req, peer);
        }
        let path = owned(path);
        proxy::forward(&self.proxy, req, path, peer.ip(), tls).await
    }

    /// The query's parameters, read as the backend reads them. Refused:
    /// a name the backend reads differently (`token%00`, ` dryRun`,
    /// `wc.api`) when one of its readings is a name a route decides on;
    /// and, near a route, more parameters than the backend reads
    /// (`upstream.max_input_vars`), since it would not see the last ones.
    fn check_params(&self, query: &str, near: bool) -> Result<(), &'static str> {
        if near && crate::route::dialect::count_params(query) > self.max_input_vars {
            return Err("more query parameters than the backend reads (upstream.max_input_vars)");
        }
        for p in crate::route::dialect::params(query, self.dialect) {
            if p.read.is_none() {
                continue;
            }
            let decided = self
                .routes
                .iter()
                .any(|r| r.query_match.iter().any(|(k, _)| p.is(k)) || (near && r.decides_on(&p)));
            if decided {
                return Err("a parameter name the backend reads as another is not accepted near a callback route");
            }
        }
        Ok(())
    }

    /// Whether any reading of a raw request path is near a callback route
    /// or a forward path: the redirect listener serves none of them.
    pub(crate) fn reserved(&self, raw: &str) -> bool {
        let path = crate::front::path::canonical(raw);
        crate::front::path::any_reading(raw, &path, self.dialect, |p| self.shields(p))
    }

    /// Whether a canonical path belongs to a callback route or is a
    /// forward path: such a path must never be proxied as it is.
    fn shields(&self, path: &str) -> bool {
        self.near_forward_path(path) || self.routes.iter().any(|r| r.near(path))
    }

    /// Whether a reading of a path is where the upstream receives
    /// deliveries, or below it, in any case: only authback may send there.
    fn near_forward_path(&self, path: &str) -> bool {
        self.forward_paths.iter().any(|fp| {
            let fp = fp.trim_end_matches('/');
            path.get(..fp.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(fp))
                && matches!(path.as_bytes().get(fp.len()), None | Some(b'/'))
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
        self.proxy.metrics.proxy_response(status.as_u16());
        tracing::info!(
            method = %req.method(), path = req.uri().path(), client = %peer.ip(),
            status = status.as_u16(), why, "request refused"
        );
        json_error(status, code, why)
    }
}
