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
use crate::front::server::TlsVersion;
use crate::net::{client_ip, IpNet};
use crate::ops::access_log::{AccessLog, Entry};
use crate::proxy;
use crate::route::dialect::Dialect;
use crate::route::{Route, RouteMatch};

pub(crate) struct App {
    routes: Vec<Route>,
    /// Each route's name and path pattern, as the access log writes them.
    log_names: Vec<(Arc<str>, Arc<str>)>,
    access_log: Option<Arc<AccessLog>>,
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
        access_log: Option<Arc<AccessLog>>,
    ) -> Self {
        let log_names = routes
            .iter()
            .map(|r| (Arc::from(r.name.as_str()), Arc::from(r.path.to_string())))
            .collect();
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
            log_names,
            access_log,
            forward_paths,
            trusted_proxies,
            dialect: reading.dialect,
            max_input_vars: reading.max_input_vars,
            callbacks,
            proxy,
        }
    }

    /// Answers one request that arrived on a public listener and, with the
    /// access log on, writes its line once the answer is sent: under the
    /// path it was routed on, without the query, or for a callback route's
    /// request (or a refused spelling of one) under the route's pattern.
    pub(crate) async fn handle_public(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
    ) -> Response<Body> {
        let Some(log) = &self.access_log else {
            return self.dispatch(req, peer, tls, None).await;
        };
        let client = {
            // As allow_ips reads it: the chain counts only from a trusted peer.
            let xff = (!self.trusted_proxies.is_empty())
                .then(|| crate::net::forwarded_chain(req.headers()))
                .flatten();
            client_ip(peer.ip(), xff.as_deref(), &self.trusted_proxies)
        };
        let version = req.extensions().get::<TlsVersion>().map(|v| v.0);
        let mut entry = log.begin(req.method(), req.headers(), client, version);
        let resp = self.dispatch(req, peer, tls, Some(&mut entry)).await;
        let (parts, body) = resp.into_parts();
        let body = entry.answered(parts.status.as_u16(), body);
        Response::from_parts(parts, Body::Logged(Box::new(body)))
    }

    /// Routes one request. The head is checked and the path made canonical
    /// first, then read every way the backend might read it, so that no
    /// spelling of a callback route or a forward path gets around them.
    /// What is proxied carries the path authback routed on
    /// (`upstream.path_form`). `entry` is told what the request was.
    async fn dispatch(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
        mut entry: Option<&mut Entry>,
    ) -> Response<Body> {
        let tally = entry.as_ref().map(|e| e.tally().clone());
        if let Err(why) = crate::front::head::check(&req) {
            if let Some(e) = entry {
                let raw = req.uri().path();
                self.note_refused(e, raw, &crate::front::path::canonical(raw));
            }
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
                if let Some(e) = entry {
                    self.note_refused(e, raw, &path);
                }
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
                if let Some(e) = entry {
                    self.note_refused(e, raw, &path);
                }
                return self.refuse(StatusCode::BAD_REQUEST, "bad_request", why, &req, peer);
            }
        }
        for (route, (name, pattern)) in self.routes.iter().zip(&self.log_names) {
            let reference = match route.matches(&path, query) {
                RouteMatch::No => continue,
                RouteMatch::Yes(r) => Some(r),
                RouteMatch::BadReference => None,
            };
            if let Some(e) = entry.as_deref_mut() {
                e.route(name, pattern);
            }
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
                return proxy::forward(&self.proxy, req, path, peer.ip(), tls, tally).await;
            }
            let reference = reference.as_deref();
            let tally = tally.as_deref();
            return callback::handle(&self.callbacks, route, reference, &path, req, ip, tally)
                .await;
        }
        if near {
            if let Some(e) = entry {
                self.note_refused(e, raw, &path);
            }
            let why = "this spelling of a callback route is not one the route takes";
            return self.refuse(StatusCode::BAD_REQUEST, "bad_request", why, &req, peer);
        }
        if let Some(e) = entry {
            e.path(&path);
        }
        if crate::front::path::any_reading(raw, &path, self.dialect, |p| self.near_forward_path(p))
        {
            return self.refuse(StatusCode::NOT_FOUND, "not_found", "not found", &req, peer);
        }
        let path = owned(path);
        proxy::forward(&self.proxy, req, path, peer.ip(), tls, tally).await
    }

    /// Tells the access log about a refused request: under the pattern of
    /// the route it is a spelling of, in any reading (its path may carry a
    /// plugin's token), or else under its canonical path.
    fn note_refused(&self, entry: &mut Entry, raw: &str, canonical: &str) {
        match self.near_route(raw, canonical) {
            Some((name, pattern)) => entry.route(name, pattern),
            None => entry.path(canonical),
        }
    }

    /// A refused request's path as logs write it, as the access log does: a
    /// spelling of a callback route under the route's pattern (a plugin may
    /// carry a token in the path), anything else canonical; never the query.
    pub(crate) fn logged_path<'a>(&self, raw: &'a str) -> Cow<'a, str> {
        let canonical = crate::front::path::canonical(raw);
        match self.near_route(raw, &canonical) {
            Some((_, pattern)) => Cow::Owned(pattern.to_string()),
            None => canonical,
        }
    }

    /// The name and pattern of the route `raw` is a spelling of, in any
    /// reading.
    fn near_route(&self, raw: &str, canonical: &str) -> Option<&(Arc<str>, Arc<str>)> {
        let near = self.routes.iter().position(|r| {
            crate::front::path::any_reading(raw, canonical, self.dialect, |p| r.near(p))
        });
        near.and_then(|i| self.log_names.get(i))
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
        let path = self.logged_path(req.uri().path());
        tracing::info!(
            method = %req.method(), path = %path, client = %peer.ip(),
            status = status.as_u16(), why, "request refused"
        );
        json_error(status, code, why)
    }
}
