//! What both kinds of probe share: how the doctor reaches `public_url`,
//! the path a probe goes to, and how an answer that is not authback's own
//! reads.

use std::sync::Arc;

use http::header;

use super::client::{self, Answer, Failure};
use super::report::Check;
use crate::net::HostPort;
use crate::route::Route;

pub(super) const NAME: &str = "probe";

/// How the doctor reaches `public_url`.
pub(super) struct Way {
    pub target: HostPort,
    pub scheme: &'static str,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `public_url`'s own path, if any, without its trailing `/`.
    pub base: String,
    pub ca_file: bool,
}

/// One path of one route, as a probe is sent to it.
pub(super) struct Aim<'a> {
    pub index: usize,
    pub route: &'a Route,
    pub reference: &'static str,
    /// The path sent, `public_url`'s own path included.
    pub path: String,
}

impl Way {
    /// `POST https://host[:port]/path`, as the checklist shows a probe.
    pub(super) fn shown(&self, path: &str) -> String {
        format!("POST {}://{}{path}", self.scheme, self.target.header())
    }
}

/// What to do when a probe got no HTTP answer.
pub(super) fn unreachable_fix(e: &Failure, way: &Way) -> String {
    let target = &way.target;
    match e {
        Failure::Tls(_) => format!(
            "serve a certificate for {} from a public CA (Klarna trusts no other); for a private or test CA here, pass --ca-file",
            target.host()
        ),
        Failure::Connect(_) | Failure::Timeout("connection", _) => format!(
            "open {}:{} to the internet and route it to authback (firewall, load balancer, Service), and check that authback runs",
            target.host(),
            target.port()
        ),
        Failure::Timeout("TLS handshake", _) => format!(
            "serve HTTPS on {}:{}: something there accepts connections but does not speak TLS",
            target.host(),
            target.port()
        ),
        Failure::Http(_) | Failure::Timeout(..) => format!(
            "make {}://{} forward requests to authback: it accepted the request but gave no answer",
            way.scheme,
            target.header()
        ),
    }
}

/// The fix for an answer that did not come from authback.
pub(super) fn through(path: &str) -> String {
    format!("allow POST to {path} through your WAF/CDN/ingress, unchanged; see docs/operations.md")
}

/// The failure for an answer that is not authback's.
pub(super) fn not_authback(answer: &Answer, shown: &str, path: &str, hide: &[&str]) -> Check {
    let location = answer
        .header(header::LOCATION)
        .map(|l| format!(" to {}", client::excerpt(l.as_bytes(), hide)))
        .unwrap_or_default();
    Check::fail(
        NAME,
        format!(
            "{shown} answered {}{location}, not authback: \"{}\"",
            answer.status,
            client::excerpt(&answer.body, hide)
        ),
        through(path),
    )
}

/// `(error, message)` when the answer is one of authback's JSON errors.
pub(super) fn authback_error(answer: &Answer) -> Option<(String, String)> {
    let obj = json_object(answer)?;
    if obj.len() != 2 {
        return None;
    }
    let field = |k: &str| obj.get(k).and_then(|s| s.as_str()).map(String::from);
    Some((field("error")?, field("message")?))
}

/// The answer's body, when it is a JSON object sent as JSON.
pub(super) fn json_object(answer: &Answer) -> Option<serde_json::Map<String, serde_json::Value>> {
    let json = answer
        .header(header::CONTENT_TYPE)
        .is_some_and(|t| t.starts_with("application/json"));
    if !json {
        return None;
    }
    match serde_json::from_slice(&answer.body).ok()? {
        serde_json::Value::Object(obj) => Some(obj),
        _ => None,
    }
}
