//! The doctor's probe on a callback route (answered by `answer_probe` in
//! this module's parent): a request carrying
//! `Authback-Probe: <nonce>`, a nonce the admin API handed out
//! (`POST /v1/probes`). If the store still holds the nonce, it is taken
//! (once, on any replica) and authback answers the request itself, naming
//! the deployment and this replica: so the doctor knows the way through
//! `public_url` reaches this authback, whatever the route's `allow_ips`
//! or tokens would say to the doctor's address.
//!
//! Such an answer is all the nonce buys. The request is never forwarded,
//! recorded or counted as a callback. A header that is not one live nonce
//! (unknown, used, expired, malformed, repeated) changes nothing: the
//! request goes on to the route's checks as if it were absent, and the
//! pass-through never forwards an `Authback-*` header. A client address
//! may have the store asked about at most `LOOKUPS_PER_MINUTE` nonces; past
//! that its headers are ignored without asking.

use std::net::IpAddr;
use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

use super::limit::IpLimiter;
use crate::body::{json, Body};
use crate::store::ProbeNonce;
use crate::text::Rate;

/// The request header that carries a probe nonce.
pub(crate) const HEADER: &str = "authback-probe";

/// Nonces one client address may have looked up per minute: far more than
/// a doctor sends (one per route path), few enough that guessing cannot
/// load the store.
const LOOKUPS_PER_MINUTE: u32 = 60;

/// What answering probes needs besides the store.
pub(crate) struct Probes {
    /// `public_url`'s `host[:port]`: the deployment an answer names.
    deployment: String,
    lookups: Option<IpLimiter>,
}

impl Probes {
    pub(crate) fn new(public_url: &str) -> Self {
        let deployment = public_url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| {
                let port = if u.scheme_str() == Some("http") {
                    80
                } else {
                    443
                };
                crate::net::HostPort::of(&u, port)
            })
            .map_or_else(|| public_url.to_string(), |t| t.header());
        Probes {
            deployment,
            lookups: IpLimiter::new(Rate {
                count: LOOKUPS_PER_MINUTE,
                per: Duration::from_secs(60),
            }),
        }
    }

    /// Forgets addresses whose lookups have refilled.
    pub(crate) fn sweep(&self) {
        if let Some(l) = &self.lookups {
            l.sweep();
        }
    }
}

/// The nonce a request carries: exactly one `Authback-Probe` header, in
/// the nonce's exact form. Anything else is no probe.
fn carried(headers: &http::HeaderMap) -> Option<ProbeNonce> {
    let mut values = headers.get_all(HEADER).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => ProbeNonce::parse(v.to_str().ok()?),
        _ => None,
    }
}

impl Probes {
    /// The nonce `headers` carry, if any, and if `client_ip` may still
    /// have one looked up this minute (each call takes one lookup).
    pub(crate) fn admitted(
        &self,
        headers: &http::HeaderMap,
        client_ip: IpAddr,
    ) -> Option<ProbeNonce> {
        let nonce = carried(headers)?;
        match &self.lookups {
            Some(l) if l.check(client_ip).is_err() => None,
            _ => Some(nonce),
        }
    }

    /// The answer to a probe whose nonce was taken, on route `route`.
    pub(crate) fn answer(&self, route: &str) -> Response<Body> {
        let mut r = json(
            StatusCode::OK,
            &json!({
                "authback": "probe",
                "deployment": self.deployment,
                "replica": crate::types::replica_id(),
                "route": route,
                "version": env!("CARGO_PKG_VERSION"),
            }),
        );
        // A cache in front must never serve the answer to anyone else.
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_is_one_header_of_the_nonces_form() {
        let n = ProbeNonce::random().expect("nonce").to_string();
        let mut h = http::HeaderMap::new();
        assert_eq!(carried(&h), None);
        h.insert(HEADER, HeaderValue::from_str(&n).expect("value"));
        assert_eq!(carried(&h).map(|c| c.to_string()), Some(n.clone()));
        h.append(HEADER, HeaderValue::from_str(&n).expect("value"));
        assert_eq!(carried(&h), None, "a repeated header is no probe");
        for bad in [
            n.to_uppercase(),
            format!("{n} "),
            format!("{n},{n}"),
            "1".into(),
        ] {
            let mut h = http::HeaderMap::new();
            h.insert(HEADER, HeaderValue::from_str(&bad).expect("value"));
            assert_eq!(carried(&h), None, "{bad}");
        }
        // Look-alikes are not the header (and the pass-through drops them).
        let mut h = http::HeaderMap::new();
        h.insert("authback_probe", HeaderValue::from_str(&n).expect("value"));
        assert_eq!(carried(&h), None);
    }

    #[test]
    fn the_deployment_is_public_urls_host_and_port() {
        for (url, want) in [
            ("https://shop.example.com", "shop.example.com"),
            ("https://shop.example.com:8443", "shop.example.com:8443"),
            ("https://shop.example.com/base", "shop.example.com"),
            ("http://localhost:8080", "localhost:8080"),
        ] {
            assert_eq!(Probes::new(url).deployment, want, "{url}");
        }
    }
}
