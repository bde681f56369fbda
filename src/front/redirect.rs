//! The redirect listener (`server.listen_redirect`): plain HTTP answered
//! with `308` to the same path and query over https, at a host the config
//! names, so that no request can send a client anywhere else. ACME HTTP-01
//! challenges pass through to `server.acme_upstream`. A callback route or a
//! forward path gets `404` here: neither is ever served over plain HTTP.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{json_error, Body};
use crate::front::router::App;
use crate::front::sni::CertResolver;
use crate::proxy;

/// Where the ACME client answers HTTP-01 challenges (RFC 8555 §8.3).
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// The longest host name (RFC 1035, without the trailing dot).
const MAX_HOST: usize = 253;

pub(crate) struct Redirect {
    /// The public listeners' router: what is a callback route or a forward
    /// path, read every way it is there.
    app: Arc<App>,
    /// The pass-through to `server.acme_upstream`.
    acme: proxy::Context,
    /// `public_url`'s scheme, host (lower-case) and `:port` if it has one.
    scheme: String,
    public_host: String,
    port: String,
    /// The certificate served, for the names it is for.
    certs: Option<Arc<CertResolver>>,
}

impl Redirect {
    pub(crate) fn new(
        app: Arc<App>,
        acme: proxy::Context,
        public_url: &str,
        certs: Option<Arc<CertResolver>>,
    ) -> Self {
        let uri = public_url.parse::<http::Uri>().ok();
        let part = |f: fn(&http::Uri) -> Option<&str>| {
            uri.as_ref().and_then(f).unwrap_or_default().to_string()
        };
        Redirect {
            app,
            acme,
            scheme: part(http::Uri::scheme_str),
            public_host: part(http::Uri::host).to_ascii_lowercase(),
            port: uri
                .as_ref()
                .and_then(http::Uri::port_u16)
                .map_or_else(String::new, |p| format!(":{p}")),
            certs,
        }
    }

    /// Answers one request on the redirect listener.
    pub(crate) async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        if let Err(why) = crate::front::head::check(&req) {
            return self.refuse(StatusCode::BAD_REQUEST, "bad_request", why, &req, peer);
        }
        let raw = req.uri().path();
        if self.app.reserved(raw) {
            let why = "a callback route or a forward path is not served over plain HTTP";
            return self.refuse(StatusCode::NOT_FOUND, "not_found", why, &req, peer);
        }
        let path = crate::front::path::canonical(raw);
        if path.starts_with(ACME_CHALLENGE) && !crate::front::path::is_ambiguous(raw) {
            let path = match path {
                Cow::Owned(p) => Some(p),
                Cow::Borrowed(_) => None,
            };
            return proxy::forward(&self.acme, req, path, peer.ip(), false, None).await;
        }
        let names = configured_host_names(&self.public_host, self.certs.as_deref());
        match self.location(&req, &names) {
            Some(to) => {
                self.acme.metrics.proxy_response(308);
                let mut resp = crate::body::status(StatusCode::PERMANENT_REDIRECT);
                resp.headers_mut().insert(header::LOCATION, to);
                resp
            }
            None => {
                let why = "the request target is not a path";
                self.refuse(StatusCode::BAD_REQUEST, "bad_request", why, &req, peer)
            }
        }
    }

    /// `public_url`'s scheme and port, the host the request asked for when
    /// it is one of `names` (else `public_url`'s), and the path and query
    /// as the request spelled them: the https listener decides on them.
    /// Only names from the config are ever written: a `Host` no
    /// certificate names gets `public_url`'s.
    fn location<B>(&self, req: &Request<B>, names: &[String]) -> Option<HeaderValue> {
        let target = req.uri().path_and_query()?.as_str();
        if !target.starts_with('/') {
            return None;
        }
        let asked = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .and_then(host_name);
        let host = asked
            .and_then(|a| names.iter().find(|n| **n == a))
            .unwrap_or(&self.public_host);
        let to = format!("{}://{host}{}{target}", self.scheme, self.port);
        HeaderValue::from_str(&to).ok()
    }

    fn refuse(
        &self,
        status: StatusCode,
        code: &str,
        why: &str,
        req: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        self.acme.metrics.proxy_response(status.as_u16());
        let path = self.app.logged_path(req.uri().path());
        tracing::info!(
            method = %req.method(), path = %path, client = %peer.ip(),
            status = status.as_u16(), why, "request refused on the redirect listener"
        );
        json_error(status, code, why)
    }
}

/// A `Host` (`name[:port]`) as a name to look up: without its port and one
/// trailing dot, in lower case. An IP literal, or a name too long to be
/// one, is none.
fn host_name(host: &str) -> Option<String> {
    let name = host.split(':').next().unwrap_or(host);
    let name = name.strip_suffix('.').unwrap_or(name);
    let plausible = !name.is_empty()
        && name.len() <= MAX_HOST
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    plausible.then(|| name.to_ascii_lowercase())
}

/// The host names this deployment answers for, lower-case: `public_url`'s
/// host and the names of the certificates served now (each
/// `[[server.tls.certificates]]` entry's `names`, or the single
/// certificate's DNS names, as last reloaded); a wildcard is left out,
/// since it would let a client choose the host. A redirect only ever goes
/// to one of these.
pub(crate) fn configured_host_names(
    public_host: &str,
    certs: Option<&CertResolver>,
) -> Vec<String> {
    let mut names = vec![public_host.to_ascii_lowercase()];
    let Some(certs) = certs else { return names };
    for n in certs.host_names().as_slice() {
        let n = n.trim_end_matches('.').to_ascii_lowercase();
        if !n.starts_with('*') && !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_looked_up_without_its_port_case_or_trailing_dot() {
        assert_eq!(
            host_name("Shop.Example:80").as_deref(),
            Some("shop.example")
        );
        assert_eq!(host_name("shop.example.").as_deref(), Some("shop.example"));
        assert_eq!(host_name("[::1]:80"), None);
        assert_eq!(host_name("shop.example@evil"), None);
        assert_eq!(host_name(""), None);
        assert_eq!(host_name(&"a".repeat(254)), None);
    }

    #[test]
    fn the_names_are_public_urls_host_and_the_certificates_but_no_wildcard() {
        let names = ["www.shop.example", "*.shop.example", "other.example"];
        let pair = crate::front::certs::self_signed(names.map(String::from).to_vec())
            .expect("certificate");
        let served = crate::front::sni::Served {
            key: Arc::new(pair),
            names: crate::config::HostNames::new(names.map(String::from).to_vec()),
        };
        let certs = CertResolver::new(vec![served], false);
        assert_eq!(
            configured_host_names("Shop.Example", Some(&certs)),
            ["shop.example", "www.shop.example", "other.example"]
        );
        assert_eq!(
            configured_host_names("shop.example", None),
            ["shop.example"]
        );
    }
}
