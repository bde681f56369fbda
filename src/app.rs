//! The public listener's router: the head is checked and the path made
//! canonical, then a path that is a callback route goes to `callback`, a
//! forward path is refused, and everything else goes to `proxy`. Each of
//! those gets its own narrow context; the router holds them and the routes.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{json_error, Body};
use crate::callback::{self, route::PathMatch, route::Route};
use crate::net::{client_ip, IpNet};
use crate::proxy;

pub struct App {
    routes: Vec<Route>,
    trusted_proxies: Vec<IpNet>,
    callbacks: Arc<callback::Context>,
    proxy: proxy::Context,
}

impl App {
    pub fn new(
        routes: Vec<Route>,
        trusted_proxies: Vec<IpNet>,
        callbacks: Arc<callback::Context>,
        proxy: proxy::Context,
    ) -> Self {
        App {
            routes,
            trusted_proxies,
            callbacks,
            proxy,
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
        let query = req.uri().query();
        let path = crate::path::canonical(raw);
        // Decoding can make `%2%46` into `%2F`: the canonical path is read
        // for such spellings too.
        let canonical_differs = matches!(path, std::borrow::Cow::Owned(_));
        if crate::path::is_ambiguous(raw) || (canonical_differs && crate::path::is_ambiguous(&path))
        {
            let shielded = self.shields(&path, query)
                || self.shields(&crate::path::lenient(raw), query)
                || self.shields(&crate::path::lenient(&path), query);
            if shielded {
                let why = "an encoded slash or backslash, a backslash or a `;` parameter is not accepted on this path";
                return self.refuse(StatusCode::BAD_REQUEST, "bad_request", why, &req, peer);
            }
        }
        for route in &self.routes {
            let reference = match route.matches(&path, query) {
                PathMatch::No => continue,
                PathMatch::Yes(r) => Some(r.to_string()),
                PathMatch::BadReference => None,
            };
            if route.passes_through(&path, query) {
                // The plugin's own probe (Magento's `dryRun`), answered by
                // the backend before it does any work.
                break;
            }
            let path = path.into_owned();
            let xff = crate::net::forwarded_chain(req.headers());
            let ip = client_ip(peer.ip(), xff.as_deref(), &self.trusted_proxies);
            return callback::handle(&self.callbacks, route, reference.as_deref(), &path, req, ip)
                .await;
        }
        if self.is_forward_path(&path) {
            return self.refuse(StatusCode::NOT_FOUND, "not_found", "not found", &req, peer);
        }
        proxy::forward(&self.proxy, req, peer.ip(), tls).await
    }

    /// Whether a canonical path belongs to a callback route or is a
    /// forward path: such a path must never be proxied as it is.
    fn shields(&self, path: &str, query: Option<&str>) -> bool {
        self.is_forward_path(path)
            || self
                .routes
                .iter()
                .any(|r| r.matches(path, query) != PathMatch::No)
    }

    /// Whether a canonical path is where the upstream receives deliveries:
    /// only authback may send there.
    fn is_forward_path(&self, path: &str) -> bool {
        self.routes.iter().any(|r| {
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
        self.proxy.metrics.proxy_response(status.as_u16());
        tracing::info!(
            method = %req.method(), path = req.uri().path(), client = %peer.ip(),
            status = status.as_u16(), why, "request refused"
        );
        json_error(status, code, why)
    }
}
