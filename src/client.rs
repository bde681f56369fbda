//! The one outbound HTTP/1.1 client for what authback asks of others than
//! the upstream: Klarna's Read Session API (`klarna::client`), the doctor's
//! checks (`doctor::client`) and the `deliveries` CLI (`admin::console::cli`).
//! The upstream keeps its own pooled client (`upstream::client`).
//!
//! It is hyper-util's client over a small connector of its own: TCP, then
//! TLS for an `https` URI, each step under its own optional limit and
//! failing with its own [`Failure`], so a caller can still tell a refused
//! connection from a refused certificate from a peer that never answers.
//! Nothing is pooled: these requests are minutes apart or one-shot, so each
//! gets a fresh connection, closed once its answer is read.
//!
//! [`tls`] is the one rustls client configuration, for Klarna and the doctor.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy;
use hyper_util::client::legacy::connect::{capture_connection, Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::net::HostPort;

/// The client side of TLS.
pub(crate) struct Tls {
    pub config: Arc<rustls::ClientConfig>,
    /// How many certificates the `extra` file added.
    pub extra_roots: usize,
}

/// aws-lc-rs, TLS 1.3 and 1.2, HTTP/1.1 by ALPN, trusting the built-in
/// Mozilla roots plus every certificate in the PEM file `extra` (a private
/// or test CA). Errors name the file: `{path}: {why}`.
pub(crate) fn tls(extra: Option<&Path>) -> Result<Tls, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut extra_roots = 0;
    if let Some(path) = extra {
        let bad = |e: &dyn fmt::Display| format!("{}: {e}", path.display());
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        for c in certs {
            roots.add(c).map_err(|e| bad(&e))?;
            extra_roots += 1;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        extra_roots,
    })
}

/// Why no answer came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// DNS, or the TCP connection.
    Connect(String),
    /// The handshake, the certificate included.
    Tls(String),
    /// The step (`connection`, `TLS handshake`, `answer`) that took longer
    /// than its limit.
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

impl std::error::Error for Failure {}

impl Failure {
    /// The cause alone, for a caller that says in its own words which
    /// exchange failed (`cannot reach Klarna: {cause}`).
    pub(crate) fn cause(&self) -> String {
        match self {
            Failure::Connect(e) | Failure::Tls(e) | Failure::Http(e) => e.clone(),
            Failure::Timeout(..) => self.to_string(),
        }
    }

    /// The connector's own failure when it is the one, else hyper's cause:
    /// hyper-util's error only names its kind (`client error (Connect)`).
    fn of(e: &legacy::Error) -> Self {
        let cause = std::error::Error::source(e);
        if let Some(f) = cause.and_then(|c| c.downcast_ref::<Failure>()) {
            return f.clone();
        }
        Failure::Http(cause.map_or_else(|| e.to_string(), |c| c.to_string()))
    }
}

/// The limit of each step; `None` leaves it to the caller's overall one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Resolving and the TCP connection.
    pub connect: Option<Duration>,
    /// The TLS handshake.
    pub tls: Option<Duration>,
    /// The head of the answer, counted from the connection being ready.
    pub answer: Option<Duration>,
}

/// `scheme://host:port`, the port always written out: the start of an
/// absolute URI for [`Client::send`].
pub(crate) fn origin(secure: bool, target: &HostPort) -> String {
    let scheme = if secure { "https" } else { "http" };
    if target.host().contains(':') {
        format!("{scheme}://[{}]:{}", target.host(), target.port())
    } else {
        format!("{scheme}://{}:{}", target.host(), target.port())
    }
}

#[derive(Clone)]
pub(crate) struct Client {
    inner: legacy::Client<Connector, Full<Bytes>>,
    answer: Option<Duration>,
}

impl Client {
    /// `tls` for `https` URIs; without it only `http` ones are reached.
    pub(crate) fn new(tls: Option<Arc<rustls::ClientConfig>>, limits: Limits) -> Self {
        let connector = Connector {
            tls: tls.map(TlsConnector::from),
            limits,
        };
        let inner = legacy::Client::builder(TokioExecutor::new())
            // No idle connection is kept: a fresh one per request.
            .pool_max_idle_per_host(0)
            // Never sent twice: the doctor's probe is a POST.
            .retry_canceled_requests(false)
            .build(connector);
        Client {
            inner,
            answer: limits.answer,
        }
    }

    /// Sends `req`, whose URI is absolute (`http://` or `https://`), and
    /// returns the head of the answer with its body still to read. A `Host`
    /// header already set is kept.
    pub(crate) async fn send(
        &self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, Failure> {
        let Some(limit) = self.answer else {
            return self.inner.request(req).await.map_err(|e| Failure::of(&e));
        };
        let mut connected = capture_connection(&mut req);
        let answer = self.inner.request(req);
        tokio::pin!(answer);
        // The connector keeps the limits of connecting; the answer's starts
        // once the connection is ready.
        let ready = async { connected.wait_for_connection_metadata().await.is_some() };
        tokio::select! {
            biased;
            r = &mut answer => return r.map_err(|e| Failure::of(&e)),
            _ = ready => {}
        }
        match tokio::time::timeout(limit, answer).await {
            Ok(r) => r.map_err(|e| Failure::of(&e)),
            Err(_) => Err(Failure::Timeout("answer", limit)),
        }
    }
}

/// TCP, then TLS for `https`, each within its limit.
#[derive(Clone)]
struct Connector {
    tls: Option<TlsConnector>,
    limits: Limits,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = Failure;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Failure>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(&dst).await.map(TokioIo::new) })
    }
}

impl Connector {
    async fn connect(&self, dst: &Uri) -> Result<Stream, Failure> {
        let secure = dst.scheme_str() == Some("https");
        let target = HostPort::of(dst, if secure { 443 } else { 80 })
            .ok_or_else(|| Failure::Connect(format!("{dst} has no host")))?;
        let tcp = within(
            self.limits.connect,
            "connection",
            TcpStream::connect((target.host(), target.port())),
        )
        .await?
        .map_err(|e| Failure::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        if !secure {
            return Ok(Stream::Plain(tcp));
        }
        let Some(tls) = &self.tls else {
            return Err(Failure::Tls("this client has no TLS configuration".into()));
        };
        let name = ServerName::try_from(target.host().to_string())
            .map_err(|e| Failure::Tls(e.to_string()))?;
        let stream = within(self.limits.tls, "TLS handshake", tls.connect(name, tcp))
            .await?
            .map_err(|e| Failure::Tls(e.to_string()))?;
        Ok(Stream::Tls(Box::new(stream)))
    }
}

/// `step` within `limit`, if there is one.
async fn within<F: Future>(
    limit: Option<Duration>,
    step: &'static str,
    f: F,
) -> Result<F::Output, Failure> {
    match limit {
        None => Ok(f.await),
        Some(d) => tokio::time::timeout(d, f)
            .await
            .map_err(|_| Failure::Timeout(step, d)),
    }
}

/// A connection, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const SHORT: Duration = Duration::from_millis(300);

    fn limits() -> Limits {
        Limits {
            connect: Some(SHORT),
            tls: Some(SHORT),
            answer: Some(SHORT),
        }
    }

    fn get(url: &str) -> Request<Full<Bytes>> {
        Request::get(url).body(Full::default()).expect("request")
    }

    /// A listener that runs `serve` on each connection it accepts.
    async fn server<F, Fut>(serve: F) -> String
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp));
            }
        });
        format!("127.0.0.1:{}", addr.port())
    }

    #[tokio::test]
    async fn each_step_fails_as_itself() {
        // Nobody listening: the connection.
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let client = Client::new(None, limits());
        let e = client
            .send(get(&format!("http://127.0.0.1:{port}/")))
            .await
            .expect_err("refused");
        assert!(matches!(e, Failure::Connect(_)), "{e:?}");

        // Accepts, reads, never answers: the answer.
        let silent = server(|mut tcp| async move {
            let mut buf = [0u8; 1024];
            while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        let e = client
            .send(get(&format!("http://{silent}/")))
            .await
            .expect_err("silent");
        assert_eq!(e, Failure::Timeout("answer", SHORT));
        assert_eq!(e.to_string(), "no answer within 300ms");

        // Not TLS: the handshake, within its limit or refused.
        let tls = tls(None).expect("tls").config;
        let client = Client::new(Some(tls), limits());
        let e = client
            .send(get(&format!("https://{silent}/")))
            .await
            .expect_err("no handshake");
        assert_eq!(e, Failure::Timeout("TLS handshake", SHORT));
        let garbage = server(|mut tcp| async move {
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        })
        .await;
        let e = client
            .send(get(&format!("https://{garbage}/")))
            .await
            .expect_err("not TLS");
        assert!(matches!(e, Failure::Tls(_)), "{e:?}");

        // Closes without a word: no HTTP answer.
        let client = Client::new(None, limits());
        let rude = server(|mut tcp| async move {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
        })
        .await;
        let e = client
            .send(get(&format!("http://{rude}/")))
            .await
            .expect_err("closed");
        assert!(matches!(e, Failure::Http(_)), "{e:?}");
        assert!(!e.cause().contains("client error"), "{e:?}");
    }

    #[tokio::test]
    async fn an_answer_keeps_the_host_it_was_given() {
        let echo = server(|mut tcp| async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let body = String::from_utf8_lossy(&head).into_owned();
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(answer.as_bytes()).await;
        })
        .await;
        let mut req = get(&format!("http://{echo}/x?y=1"));
        req.headers_mut()
            .insert(http::header::HOST, "example.test".parse().expect("host"));
        let resp = Client::new(None, limits()).send(req).await.expect("answer");
        assert_eq!(resp.status(), 200);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body")
            .to_bytes();
        let head = String::from_utf8_lossy(&body).to_lowercase();
        assert!(head.starts_with("get /x?y=1 http/1.1\r\n"), "{head}");
        assert!(head.contains("host: example.test\r\n"), "{head}");
    }

    #[test]
    fn origins_write_the_port_and_bracket_ipv6() {
        let hp = |u: &str, d| HostPort::of(&u.parse().expect("uri"), d).expect("host");
        assert_eq!(
            origin(true, &hp("https://api.klarna.com", 443)),
            "https://api.klarna.com:443"
        );
        assert_eq!(
            origin(false, &hp("http://[::1]:9901", 80)),
            "http://[::1]:9901"
        );
    }

    #[test]
    fn an_extra_ca_file_is_counted_and_named_in_errors() {
        let dir = std::env::temp_dir().join(format!("authback-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, cert.cert.pem()).expect("write");
        assert_eq!(tls(Some(&pem)).expect("tls").extra_roots, 1);
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        assert_eq!(tls(Some(&empty)).expect("tls").extra_roots, 0);
        let missing = dir.join("missing.pem");
        let e = tls(Some(&missing)).err().expect("missing");
        assert!(e.starts_with(&format!("{}: ", missing.display())), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
