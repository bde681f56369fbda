//! The doctor's one-shot requests, on the shared outbound client
//! (`crate::client`): one request per connection, every step under its own
//! limit (`STEP`), only the start of a body kept. Its answers come from
//! anything on the network (a WAF, a CDN, a stranger), so nothing in them
//! is trusted beyond being shown, redacted, to the operator.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use super::report::STEP;
pub(crate) use crate::client::Failure;
use crate::client::{origin, Client, Limits};
use crate::net::HostPort;

/// Enough of a body to show its first 200 characters.
const KEEP: usize = 4096;

pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// At most `KEEP` bytes of the body.
    pub body: Bytes,
}

impl Answer {
    pub(crate) fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Trusts the built-in Mozilla roots, as Klarna's own client does, plus
/// the certificates in `extra` (PEM), of which there must be one at least.
pub(crate) fn tls(extra: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let tls = crate::client::tls(extra)?;
    match extra {
        Some(path) if tls.extra_roots == 0 => Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        )),
        _ => Ok(tls.config),
    }
}

/// One request to `target` over TLS (`tls` given) or plain TCP, through
/// the shared outbound client: the connection within `connect`, the TLS
/// handshake and the head of the answer each within `STEP`, then up to
/// `KEEP` bytes of its body within another `STEP`. `req` is in origin
/// form, as `request` makes it.
pub(crate) async fn send(
    target: &HostPort,
    tls: Option<&Arc<rustls::ClientConfig>>,
    connect: Duration,
    mut req: Request<Full<Bytes>>,
) -> Result<Answer, Failure> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = format!("{}{path}", origin(tls.is_some(), target))
        .parse()
        .map_err(|e| Failure::Http(format!("invalid request target: {e}")))?;
    let client = Client::new(
        tls.cloned(),
        Limits {
            connect: Some(connect),
            tls: Some(STEP),
            answer: Some(STEP),
        },
    );
    let (parts, mut body) = client.send(req).await?.into_parts();
    let mut kept = BytesMut::new();
    let read = async {
        while kept.len() < KEEP {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = KEEP - kept.len();
                        kept.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                // A body cut short still shows what came of it.
                Some(Err(_)) | None => return,
            }
        }
    };
    // A body slower than `STEP` is shown as far as it came; dropping the
    // rest closes the connection, which the doctor never waits for: a peer
    // that keeps it open must not keep the doctor waiting.
    let _ = tokio::time::timeout(STEP, read).await;
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: kept.freeze(),
    })
}

/// A request for `path` with the headers every doctor request carries.
pub(crate) fn request(
    target: &HostPort,
    method: Method,
    path: &str,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    // A path from the config is already a valid URI path; a bad one falls
    // back to `/` rather than panic, and the check shows what was asked.
    *req.uri_mut() = path.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
    let headers = req.headers_mut();
    if let Ok(host) = target.header().parse() {
        headers.insert(header::HOST, host);
    }
    headers.insert(
        header::USER_AGENT,
        header::HeaderValue::from_static(concat!("authback-doctor/", env!("CARGO_PKG_VERSION"))),
    );
    req
}

pub(crate) fn get(target: &HostPort, path: &str) -> Request<Full<Bytes>> {
    request(target, Method::GET, path, Bytes::new())
}

/// The first 200 characters of `body` on one line, with every string of
/// `hide` replaced by its last four characters: a WAF's page may echo the
/// URL it refused, token included.
pub(crate) fn excerpt(body: &[u8], hide: &[&str]) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    for h in hide.iter().filter(|h| !h.is_empty()) {
        text = text.replace(h, &crate::text::redact(h));
    }
    let one_line = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut cut: String = one_line.chars().take(200).collect();
    if cut.len() < one_line.len() {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_hide_tokens_and_stay_short() {
        let token = "v1.1790000000.abcdefghijklmnop";
        let page = format!("<h1>Blocked</h1>\n\tPOST /k/x?token={token}\r\n");
        let e = excerpt(page.as_bytes(), &[token, "abcdefghijklmnop"]);
        assert_eq!(e, "<h1>Blocked</h1> POST /k/x?token=…mnop");
        let long = "x".repeat(500);
        assert_eq!(excerpt(long.as_bytes(), &[]).chars().count(), 201);
    }
}
