//! The upstream (the merchant backend) and the two ways authback reaches it:
//! each connection worker's own keep-alive connections (`pool`), and one
//! pooled client (`client`) for deliveries, upgrades and requests served
//! off the workers. Why an exchange failed is told by error type, never by
//! its text.

mod client;
mod pool;

use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};

use crate::body::Body;
use crate::config::UpstreamConfig;
use crate::net::HostPort;

/// Why a request did not reach the upstream, or got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    #[error("cannot connect to the upstream: {0}")]
    Connect(std::io::Error),
    #[error("{}", error_chain(.0))]
    Http(hyper::Error),
    #[error("{}", error_chain(.0))]
    Client(hyper_util::client::legacy::Error),
    #[error("invalid request target")]
    Target,
}

impl Error {
    /// Whether the exchange failed for lack of time (a 504, not a 502).
    pub(crate) fn is_timeout(&self) -> bool {
        match self {
            Error::ConnectTimeout => true,
            Error::Client(e) => caused_by_timeout(e),
            Error::Http(e) => e.is_timeout() || caused_by_timeout(e),
            Error::Connect(e) => e.kind() == std::io::ErrorKind::TimedOut,
            Error::Target => false,
        }
    }

    /// Whether the request was cut off because its form body carried a
    /// name a callback route matches (`forms`): the client's fault, a 400.
    pub(crate) fn refused_body(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = match self {
            Error::Http(e) => Some(e),
            Error::Client(e) => Some(e),
            _ => None,
        };
        while let Some(s) = source {
            if matches!(
                s.downcast_ref::<crate::body::BodyError>(),
                Some(crate::body::BodyError::Refused)
            ) {
                return true;
            }
            source = s.source();
        }
        false
    }
}

/// Whether an `io::Error` of kind `TimedOut` is among `e`'s causes.
fn caused_by_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// An error and its causes on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

/// The one upstream: where it is, and the clients that reach it.
pub(crate) struct Upstream {
    scheme: Scheme,
    authority: Option<Authority>,
    /// The upstream URL's base path, without a trailing slash (empty when
    /// it has none); every path sent is prefixed with it.
    prefix: String,
    address: Option<HostPort>,
    client: client::Pooled,
    connect_timeout: Duration,
    timeout: Duration,
}

impl Upstream {
    pub(crate) fn new(cfg: &UpstreamConfig) -> Self {
        let uri = &cfg.url;
        Upstream {
            scheme: uri.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: uri.authority().cloned(),
            prefix: uri.path().trim_end_matches('/').to_string(),
            address: HostPort::of(uri, 80),
            client: client::pooled(cfg.connect_timeout),
            connect_timeout: cfg.connect_timeout,
            timeout: cfg.timeout,
        }
    }

    /// How long a proxied request may wait for the response head.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The upstream's authority (`host:port`), for a request that names none.
    pub(crate) fn authority(&self) -> Option<&Authority> {
        self.authority.as_ref()
    }

    /// `scheme://authority/prefix`: what a log line calls the upstream.
    pub(crate) fn base(&self) -> String {
        let authority = self.authority.as_ref().map_or("", |a| a.as_str());
        format!("{}://{authority}{}", self.scheme, self.prefix)
    }

    /// The upstream path and query for a request's. Without a base path the
    /// parsed request target is reused as is, not printed and parsed again.
    fn path_and_query(&self, path: Option<&PathAndQuery>) -> Option<PathAndQuery> {
        match (self.prefix.is_empty(), path) {
            (true, Some(p)) => Some(p.clone()),
            (_, p) => {
                let p = p.map_or("/", |p| p.as_str());
                format!("{}{p}", self.prefix).parse().ok()
            }
        }
    }

    /// The absolute URI of `path` on the upstream, for the pooled client.
    fn absolute(&self, path: Option<&PathAndQuery>) -> Option<Uri> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = self.authority.clone();
        parts.path_and_query = Some(self.path_and_query(path)?);
        Uri::from_parts(parts).ok()
    }

    /// Sends a proxied request (its URI still the client's target). On a
    /// connection worker it goes on the worker's own connections unless it
    /// is an `upgrade`; otherwise through the pooled client.
    pub(crate) async fn proxy(
        &self,
        mut req: Request<Body>,
        upgrade: bool,
    ) -> Result<Response<Body>, Error> {
        let own = match &self.address {
            Some(addr) if !upgrade && crate::front::workers::current().is_some() => Some(addr),
            _ => None,
        };
        let path = req.uri().path_and_query();
        match own {
            Some(addr) => {
                let target = self.path_and_query(path).ok_or(Error::Target)?;
                *req.uri_mut() = Uri::from(target);
                pool::send(addr, self.connect_timeout, req)
                    .await
                    .map(|r| r.map(Body::from))
            }
            None => {
                *req.uri_mut() = self.absolute(path).ok_or(Error::Target)?;
                self.client
                    .request(req)
                    .await
                    .map(|r| r.map(Body::from))
                    .map_err(Error::Client)
            }
        }
    }

    /// Sends one delivery: `path_and_query` is a route's forward path.
    pub(crate) async fn deliver(
        &self,
        mut req: Request<Body>,
        path_and_query: &str,
    ) -> Result<Response<Body>, Error> {
        let path = path_and_query
            .parse::<PathAndQuery>()
            .map_err(|_| Error::Target)?;
        *req.uri_mut() = self.absolute(Some(&path)).ok_or(Error::Target)?;
        self.client
            .request(req)
            .await
            .map(|r| r.map(Body::from))
            .map_err(Error::Client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        Upstream::new(&UpstreamConfig {
            url: url.parse().expect("uri"),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            signing_secret: None,
            path_form: Default::default(),
            dialect: Default::default(),
            max_input_vars: 1000,
        })
    }

    #[tokio::test]
    async fn targets_join_the_base_path_and_the_request_target() {
        let pq = |p: &str| p.parse::<PathAndQuery>().expect("path");
        let plain = upstream("http://127.0.0.1:8080");
        assert_eq!(
            plain
                .absolute(Some(&pq("/a/b?x=1&y")))
                .map(|u| u.to_string()),
            Some("http://127.0.0.1:8080/a/b?x=1&y".to_string())
        );
        assert_eq!(
            plain.absolute(None).map(|u| u.to_string()),
            Some("http://127.0.0.1:8080/".to_string())
        );
        assert_eq!(plain.base(), "http://127.0.0.1:8080");
        let shop = upstream("http://app:80/shop/");
        assert_eq!(
            shop.absolute(Some(&pq("/cart?id=7")))
                .map(|u| u.to_string()),
            Some("http://app:80/shop/cart?id=7".to_string())
        );
        assert_eq!(shop.base(), "http://app:80/shop");
    }

    #[test]
    fn a_timeout_is_told_by_its_type() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert!(Error::Connect(io).is_timeout());
        assert!(Error::ConnectTimeout.is_timeout());
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "no");
        assert!(!Error::Connect(refused).is_timeout());
        assert!(!Error::Target.is_timeout());
    }
}
