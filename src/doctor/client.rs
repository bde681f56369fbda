//! The doctor's one-shot HTTP/1.1 client: one request per connection, every
//! step under its own limit (`STEP`), only the start of a body kept. Its
//! answers come from anything on the network (a WAF, a CDN, a stranger), so
//! nothing in them is trusted beyond being shown, redacted, to the operator.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::STEP;
use crate::net::HostPort;

/// Enough of a body to show its first 200 characters.
const KEEP: usize = 4096;

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// At most `KEEP` bytes of the body.
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why no answer came.
#[derive(Debug)]
pub enum Failure {
    /// DNS, or the TCP connection.
    Connect(String),
    /// The handshake, the certificate included.
    Tls(String),
    Timeout(&'static str, Duration),
    /// The peer does not speak HTTP/1.1, or closed mid-answer.
    Http(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            Failure::Timeout(step, d) => {
                write!(f, "no {step} within {}", crate::text::format_duration(*d))
            }
            Failure::Http(e) => write!(f, "no HTTP answer: {e}"),
        }
    }
}

/// Trusts the built-in Mozilla roots, as Klarna's own client does, plus
/// the certificates in `extra` (PEM).
pub fn tls(extra: Option<&Path>) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra {
        let bad = |e: &dyn fmt::Display| format!("{}: {e}", path.display());
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"no PEM certificate in the file"));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(&e))?;
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// Resolves and connects, trying each address, within `limit`.
pub async fn connect(target: &HostPort, limit: Duration) -> Result<TcpStream, Failure> {
    match tokio::time::timeout(limit, TcpStream::connect((target.host(), target.port()))).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) => Err(Failure::Connect(e.to_string())),
        Err(_) => Err(Failure::Timeout("connection", limit)),
    }
}

/// One request to `target` over TLS (`tls` given) or plain TCP.
pub async fn send(
    target: &HostPort,
    tls: Option<&TlsConnector>,
    req: Request<Full<Bytes>>,
) -> Result<Answer, Failure> {
    let tcp = connect(target, STEP).await?;
    let Some(tls) = tls else {
        return exchange(tcp, req).await;
    };
    let name =
        ServerName::try_from(target.host().to_string()).map_err(|e| Failure::Tls(e.to_string()))?;
    let stream = match tokio::time::timeout(STEP, tls.connect(name, tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Failure::Tls(e.to_string())),
        Err(_) => return Err(Failure::Timeout("TLS handshake", STEP)),
    };
    exchange(stream, req).await
}

/// Sends `req` on `io` and reads the answer: its head within `STEP`, then
/// up to `KEEP` bytes of its body within another `STEP`.
pub async fn exchange<T>(io: T, req: Request<Full<Bytes>>) -> Result<Answer, Failure>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = match tokio::time::timeout(
        STEP,
        hyper::client::conn::http1::handshake(TokioIo::new(io)),
    )
    .await
    {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(Failure::Http(e.to_string())),
        Err(_) => return Err(Failure::Timeout("HTTP handshake", STEP)),
    };
    // Aborted below: a peer that keeps the connection open must not keep
    // the doctor waiting.
    let conn = tokio::spawn(conn);
    let answer = async {
        let resp = match tokio::time::timeout(STEP, sender.send_request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(Failure::Http(e.to_string())),
            Err(_) => return Err(Failure::Timeout("answer", STEP)),
        };
        let (parts, mut body) = resp.into_parts();
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
        // A body slower than `STEP` is shown as far as it came.
        let _ = tokio::time::timeout(STEP, read).await;
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: kept.freeze(),
        })
    }
    .await;
    conn.abort();
    answer
}

/// A request for `path` with the headers every doctor request carries.
pub fn request(target: &HostPort, method: Method, path: &str, body: Bytes) -> Request<Full<Bytes>> {
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

pub fn get(target: &HostPort, path: &str) -> Request<Full<Bytes>> {
    request(target, Method::GET, path, Bytes::new())
}

/// The first 200 characters of `body` on one line, with every string of
/// `hide` replaced by its last four characters: a WAF's page may echo the
/// URL it refused, token included.
pub fn excerpt(body: &[u8], hide: &[&str]) -> String {
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
