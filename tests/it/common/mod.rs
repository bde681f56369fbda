//! Test harness shared by every integration test: certificates, a
//! programmable upstream that records what it receives, authback itself on
//! ephemeral ports, HTTPS clients, and a Klarna simulator that calls back the
//! way Klarna does (2 s connect + 2 s read timeout, 3 attempts, backoff 1 s).

#![allow(dead_code)]

mod shop;
pub use shop::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};

pub const SECRET: &str = "integration-test-secret-0123456789";
pub const SIGNING_SECRET: &str = "integration-signing-secret-abcdef";
pub const OLD_SECRET: &str = "old-secret-still-verifies-0123456789";

// ---------------------------------------------------------------------------
// The secrets audit: with AUTHBACK_TEST_TRACE set to a file, every test logs
// at trace level into it, the harness lists each secret and token it uses in
// `<file>.secrets`, and the real binary's logs are kept in `<file>.d/`.
// `scripts/secrets-audit.sh` runs the suite so and searches the logs.

fn trace_file() -> Option<PathBuf> {
    std::env::var_os("AUTHBACK_TEST_TRACE").map(PathBuf::from)
}

/// Installs the trace-level subscriber once, when the audit asks for it.
pub fn init_trace() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Some(path) = trace_file() else { return };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("trace file");
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_ansi(false)
            .with_writer(Mutex::new(file))
            .try_init();
    });
}

/// Notes a value that must never appear in any log.
pub fn sensitive(value: &str) {
    let Some(path) = trace_file() else { return };
    static LIST: Mutex<Option<std::fs::File>> = Mutex::new(None);
    let mut list = LIST.lock().expect("lock");
    if list.is_none() {
        let mut p = path.into_os_string();
        p.push(".secrets");
        *list = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok();
    }
    if let Some(f) = list.as_mut() {
        use std::io::Write;
        let _ = writeln!(f, "{value}");
    }
}

// ---------------------------------------------------------------------------
// Temporary folders and certificates.

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        init_trace();
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "authback-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(trace) = trace_file() {
            // Keep the binary's logs for the secrets audit.
            let mut keep = trace.into_os_string();
            keep.push(".d");
            let keep = PathBuf::from(keep);
            let _ = std::fs::create_dir_all(&keep);
            let name = self
                .0
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    let file = p
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    let _ = std::fs::copy(&p, keep.join(format!("{name}-{file}")));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `localhost` written as PEM files.
pub struct Cert {
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn make_cert() -> Cert {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    Cert {
        der: c.cert.der().clone(),
        cert_pem: c.cert.pem(),
        key_pem: c.key_pair.serialize_pem(),
    }
}

pub fn write_cert(dir: &Path, cert: &Cert) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&c, &cert.cert_pem).expect("write cert");
    std::fs::write(&k, &cert.key_pem).expect("write key");
    (c, k)
}

// ---------------------------------------------------------------------------
// The upstream: records every request; answers as told.

#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200, echoing the request body.
    Ok,
    /// Answer `status` this many times, then behave as `Ok`.
    Fail { times: u32, status: u16 },
    /// Never answer.
    Hang,
    /// Always answer this status.
    Status(u16),
    /// Answer after a delay.
    Slow(Duration),
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the upstream answered with (0 when it hung).
    pub answered: u16,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream got JSON")
    }
}

#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    changed: Arc<Notify>,
}

impl Upstream {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr")).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        init_trace();
        let listener = TcpListener::bind(addr).await.expect("bind upstream");
        let up = Upstream {
            addr: listener.local_addr().expect("addr"),
            requests: Arc::default(),
            behaviour: Arc::new(Mutex::new(Behaviour::Ok)),
            changed: Arc::new(Notify::new()),
        };
        let u = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let u = u.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let u = u.clone();
                        async move { Ok::<_, std::convert::Infallible>(u.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        up
    }

    pub fn set(&self, b: Behaviour) {
        *self.behaviour.lock().expect("lock") = b;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn answer(&self, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.headers().contains_key("upgrade") {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let (mut r, mut w) = tokio::io::split(&mut io);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            return Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(Full::new(Bytes::new()))
                .expect("response");
        }
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let behaviour = {
            let mut b = self.behaviour.lock().expect("lock");
            let now = b.clone();
            if let Behaviour::Fail { times, status } = &mut *b {
                if *times <= 1 {
                    let s = *status;
                    *b = Behaviour::Ok;
                    Behaviour::Status(s)
                } else {
                    *times -= 1;
                    Behaviour::Status(*status)
                }
            } else {
                now
            }
        };
        // Recorded with the answer it is about to get (0: none, it hangs).
        let answered = match &behaviour {
            Behaviour::Ok | Behaviour::Slow(_) => 200,
            Behaviour::Status(s) => *s,
            Behaviour::Hang | Behaviour::Fail { .. } => 0,
        };
        let rec = Recorded {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body: body.clone(),
            answered,
        };
        self.requests.lock().expect("lock").push(rec);
        self.changed.notify_waiters();
        match behaviour {
            Behaviour::Ok => {}
            Behaviour::Fail { .. } => unreachable!("resolved above"),
            Behaviour::Hang => std::future::pending::<()>().await,
            Behaviour::Status(s) => {
                return Response::builder()
                    .status(s)
                    .body(Full::new(Bytes::from_static(b"no")))
                    .expect("response")
            }
            Behaviour::Slow(d) => tokio::time::sleep(d).await,
        }
        let mut resp = Response::builder()
            .status(200)
            .header("x-upstream", "yes")
            .header("connection", "x-upstream-hop")
            .header("x-upstream-hop", "must-not-cross");
        if let Some(ct) = parts.headers.get("content-type") {
            resp = resp.header("content-type", ct);
        }
        resp.body(Full::new(body)).expect("response")
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    /// Requests to `path` (without query) seen so far.
    pub fn to_path(&self, path: &str) -> Vec<Recorded> {
        self.recorded()
            .into_iter()
            .filter(|r| r.uri.split('?').next() == Some(path))
            .collect()
    }

    /// Waits until at least `n` requests reached `path`, up to `limit`.
    pub async fn wait_for(&self, path: &str, n: usize, limit: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let got = self.to_path(path);
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), self.changed.notified()).await;
        }
    }
}

// ---------------------------------------------------------------------------
// authback, in process, on ephemeral ports.

pub struct Authback {
    pub public: SocketAddr,
    pub plain: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub ca: CertificateDer<'static>,
    pub dir: TempDir,
    pub config: authback::Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), authback::RunError>>>,
}

/// The config every test starts from; `extra` is appended (more routes,
/// sections). `{upstream}`, `{cert}` and `{key}` are filled in.
pub fn base_config(upstream: &str, cert: &Path, key: &Path, extra: &str) -> String {
    for s in [SECRET, SIGNING_SECRET, OLD_SECRET] {
        sensitive(s);
    }
    format!(
        r#"
[server]
listen = "127.0.0.1:1"
public_url = "https://localhost"
shutdown_grace = "5s"
[server.tls]
cert = "{cert}"
key = "{key}"
reload_interval = "100ms"
[admin]
listen = "127.0.0.1:2"
[upstream]
url = "{upstream}"
connect_timeout = "500ms"
timeout = "2s"
signing_secret = "{SIGNING_SECRET}"
[delivery]
initial_backoff = "20ms"
max_backoff = "100ms"
attempt_timeout = "500ms"
deadline = "60m"
[[routes]]
name = "klarna"
kind = "klarna_authorization"
path = "/klarna/authorization/{{reference}}"
forward_path = "/klarna/authorized"
secrets = ["{SECRET}", "{OLD_SECRET}"]
{extra}
"#,
        cert = cert.display(),
        key = key.display(),
    )
}

impl Authback {
    pub async fn start(upstream: &Upstream) -> Self {
        Self::start_with(upstream, "", false).await
    }

    pub async fn start_with(upstream: &Upstream, extra: &str, plain: bool) -> Self {
        let dir = TempDir::new();
        let cert = make_cert();
        let (c, k) = write_cert(dir.path(), &cert);
        let text = base_config(&upstream.url(), &c, &k, extra);
        Self::start_text(dir, cert.der, &text, plain).await
    }

    /// Starts authback on the base config for `upstream_url`, as changed by `edit`.
    pub async fn start_edited(
        upstream_url: &str,
        edit: impl FnOnce(String) -> String,
        plain: bool,
    ) -> Self {
        let dir = TempDir::new();
        let cert = make_cert();
        let (c, k) = write_cert(dir.path(), &cert);
        let text = edit(base_config(upstream_url, &c, &k, ""));
        Self::start_text(dir, cert.der, &text, plain).await
    }

    pub async fn start_text(
        dir: TempDir,
        ca: CertificateDer<'static>,
        text: &str,
        plain: bool,
    ) -> Self {
        let config =
            authback::Config::parse(text, dir.path()).unwrap_or_else(|e| panic!("config: {e:?}"));
        // As `authback run` binds them: each worker then listens on the
        // same port with a socket of its own.
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let listeners = authback::Listeners {
            public: authback::listen(any, config.server.reuse_port).expect("bind"),
            plain: plain.then(|| authback::listen(any, config.server.reuse_port).expect("bind")),
            admin: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        };
        let public = listeners.public.local_addr().expect("addr");
        let plain = listeners
            .plain
            .as_ref()
            .map(|l| l.local_addr().expect("addr"));
        let admin = listeners.admin.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(authback::run(config.clone(), listeners, async {
            let _ = rx.await;
        }));
        let a = Authback {
            public,
            plain,
            admin,
            ca,
            dir,
            config,
            stop: Some(tx),
            task: Some(task),
        };
        // Ready once the admin listener says so.
        for _ in 0..200 {
            if let Ok((200, _)) = a.admin_get("/readyz").await {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("authback did not become ready");
    }

    /// Waits up to 10 s for `/readyz` to answer 200.
    pub async fn wait_ready(&self) -> bool {
        for _ in 0..100 {
            if self.admin_get("/readyz").await.map(|r| r.0) == Ok(200) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Begins a graceful shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), authback::RunError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await.expect("run task"),
            None => Ok(()),
        }
    }

    /// A callback path and query for route `klarna`, valid for an hour.
    pub fn mint(&self, reference: &str) -> String {
        self.mint_for("klarna", reference)
    }

    pub fn mint_for(&self, route: &str, reference: &str) -> String {
        mint_path(&self.config, route, reference)
    }

    pub async fn admin_request(
        &self,
        method: &str,
        path: &str,
        body: &str,
        bearer: Option<&str>,
    ) -> (u16, String) {
        let tcp = TcpStream::connect(self.admin).await.expect("connect admin");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        // As every client of the API must: /v1 refuses a body of any other type.
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        let resp = send
            .send_request(
                req.body(Full::new(Bytes::from(body.to_string())))
                    .expect("req"),
            )
            .await
            .expect("admin answer");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        if TcpStream::connect(self.admin).await.is_err() {
            return Err("admin not listening".into());
        }
        Ok(self.admin_request("GET", path, "", None).await)
    }

    pub async fn metrics(&self) -> String {
        self.admin_request("GET", "/metrics", "", None).await.1
    }

    /// A TLS connection to the public listener offering `alpn`.
    pub async fn tls(&self, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
        tls_connect(self.public, &self.ca, alpn)
            .await
            .expect("TLS handshake")
    }

    /// One HTTP/1.1 request over a fresh TLS connection.
    pub async fn https(&self, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
        let tls = self.tls(&[b"http/1.1"]).await;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let resp = send.send_request(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (parts.status, parts.headers, body)
    }

    /// POSTs a callback body to `path_and_query`.
    pub async fn callback(&self, path_and_query: &str, body: &str) -> (StatusCode, Bytes) {
        let req = Request::post(path_and_query)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let (s, _, b) = self.https(req).await;
        (s, b)
    }
}

pub async fn tls_connect(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(std::io::Error::other)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(
            ServerName::try_from("localhost").map_err(std::io::Error::other)?,
            tcp,
        )
        .await
}

pub fn callback_body(session: &str, token: &str) -> String {
    sensitive(token);
    format!(r#"{{"authorization_token":"{token}","session_id":"{session}"}}"#)
}

// ---------------------------------------------------------------------------
// Klarna, as it calls back.

/// What Klarna saw while delivering one callback.
#[derive(Debug)]
pub struct KlarnaResult {
    pub attempts: u32,
    /// The status of the last attempt that got an answer.
    pub status: Option<u16>,
    pub delivered: bool,
}

/// Delivers one callback as Klarna does: each attempt has a 2 s connect and
/// a 2 s read timeout; any 2xx ends it; at most 3 attempts, 1 s then 2 s apart.
pub async fn klarna_callback(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    path_and_query: &str,
    body: &str,
) -> KlarnaResult {
    klarna_calls(
        || tls_connect(addr, ca, &[b"http/1.1"]),
        "localhost",
        path_and_query,
        body,
    )
    .await
}

/// Klarna's attempts (see `klarna_callback`) over connections `connect`
/// opens, TLS or plain, naming `host`.
pub async fn klarna_calls<C, F, IO>(
    connect: C,
    host: &str,
    path_and_query: &str,
    body: &str,
) -> KlarnaResult
where
    C: Fn() -> F,
    F: std::future::Future<Output = std::io::Result<IO>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut result = KlarnaResult {
        attempts: 0,
        status: None,
        delivered: false,
    };
    let mut backoff = Duration::from_secs(1);
    for attempt in 1..=3 {
        result.attempts = attempt;
        if let Ok(Ok(io)) = tokio::time::timeout(Duration::from_secs(2), connect()).await {
            let exchange = async {
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                    .await
                    .ok()?;
                tokio::spawn(conn);
                let req = Request::post(path_and_query)
                    .header("host", host)
                    .header("content-type", "application/json")
                    .header("user-agent", "Klarna-Callback-Simulator")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .ok()?;
                let resp = send.send_request(req).await.ok()?;
                Some(resp.status().as_u16())
            };
            if let Ok(Some(status)) = tokio::time::timeout(Duration::from_secs(2), exchange).await {
                result.status = Some(status);
                if (200..300).contains(&status) {
                    result.delivered = true;
                    return result;
                }
            }
        }
        if attempt < 3 {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    result
}

/// `authback_callbacks_total` for route `klarna` and `outcome`.
pub fn callbacks(page: &str, outcome: &str) -> Option<f64> {
    metric(
        page,
        &format!("authback_callbacks_total{{route=\"klarna\",outcome=\"{outcome}\"}}"),
    )
}

/// `authback_deliveries_total` for route `klarna` and `outcome`.
pub fn deliveries(page: &str, outcome: &str) -> Option<f64> {
    metric(
        page,
        &format!("authback_deliveries_total{{route=\"klarna\",outcome=\"{outcome}\"}}"),
    )
}

/// The value of one sample line of a Prometheus text page.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// A request body sent as separate frames with no length announced.
pub struct Chunks(pub Vec<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.0.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let next = self.0.remove(0);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(next))))
    }
}

/// A callback path and query for `route`/`reference`, valid for an hour,
/// without the public base: tests talk to ephemeral ports.
pub fn mint_path(config: &authback::Config, route: &str, reference: &str) -> String {
    let now = authback::types::unix_ms() / 1000;
    let (url, _) = authback::callback::mint::for_route(
        config,
        route,
        reference,
        Duration::from_secs(3600),
        now,
    )
    .expect("mint");
    if let Some(t) = url.split("token=").nth(1) {
        sensitive(t);
    }
    url.trim_start_matches(&config.server.public_url)
        .to_string()
}

// ---------------------------------------------------------------------------
// The real binary.

/// Writes `text` to `dir/c.toml` for the binary; returns the file, the parsed
/// config (for minting) and the public address.
pub fn write_config(
    dir: &Path,
    text: &str,
    public: u16,
) -> (PathBuf, authback::Config, SocketAddr) {
    let path = dir.join("c.toml");
    std::fs::write(&path, text).expect("write config");
    let cfg = authback::Config::parse(text, dir).expect("config");
    let addr: SocketAddr = format!("127.0.0.1:{public}").parse().expect("addr");
    (path, cfg, addr)
}

/// `text` (from `base_config`) listening on fixed loopback ports, for the
/// binary, which binds them itself.
pub fn on_ports(text: &str, public: u16, admin: u16) -> String {
    text.replace(
        "listen = \"127.0.0.1:1\"",
        &format!("listen = \"127.0.0.1:{public}\""),
    )
    .replace(
        "listen = \"127.0.0.1:2\"",
        &format!("listen = \"127.0.0.1:{admin}\""),
    )
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts `authback run` on `config`, logging JSON to `log`, with `env` set.
pub fn spawn_binary(config: &Path, log: &Path, env: &[(&str, &str)]) -> std::process::Child {
    let log = std::fs::File::create(log).expect("log file");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_authback"));
    cmd.args(["run", "--log-format", "json", "--config"])
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    if trace_file().is_some() {
        cmd.env("RUST_LOG", "trace");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn authback")
}

/// Waits until `addr` completes a TLS handshake with `ca`.
pub async fn wait_tls(addr: SocketAddr, ca: &CertificateDer<'static>) {
    for _ in 0..400 {
        if tls_connect(addr, ca, &[b"http/1.1"]).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("authback did not start listening on {addr}");
}

// ---------------------------------------------------------------------------
// Klarna's Read Session API, simulated over real TLS.

/// One programmed answer of the Read Session simulator.
#[derive(Clone, Debug)]
pub enum ApiAnswer {
    /// 200 with this JSON body.
    Json(String),
    /// This status with an empty JSON error body.
    Status(u16),
    /// 429 with `Retry-After: secs`.
    RetryAfter(u64),
    /// No answer for this long, then 200 `{"status":"incomplete"}`.
    Slow(Duration),
}

pub struct ApiRequest {
    pub path: String,
    pub authorization: Option<String>,
    pub at: std::time::Instant,
}

/// Answers `GET /payments/v1/sessions/{id}` and records requests. A
/// session's answer comes from, in order: its one-off answers
/// (`script_once`), its script (the last answer repeats), then its live
/// state (`authorize`: incomplete until an order is placed with
/// `POST /payments/v1/authorizations/{token}/order`, then complete); a
/// session with none of these is 404.
#[derive(Clone)]
pub struct KlarnaApi {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub requests: Arc<Mutex<Vec<ApiRequest>>>,
    scripts: Arc<Mutex<std::collections::HashMap<String, Vec<ApiAnswer>>>>,
    once: Arc<Mutex<std::collections::HashMap<String, Vec<ApiAnswer>>>>,
    /// session -> (authorization_token, order placed)
    sessions: Arc<Mutex<std::collections::HashMap<String, (String, bool)>>>,
}

impl KlarnaApi {
    pub async fn start() -> Self {
        let cert = make_cert();
        let key = rustls::pki_types::PrivateKeyDer::try_from(
            rcgen::KeyPair::from_pem(&cert.key_pem)
                .expect("key")
                .serialize_der(),
        )
        .expect("key der");
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], key)
        .expect("server config");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let api = KlarnaApi {
            addr: listener.local_addr().expect("addr"),
            ca_pem: cert.cert_pem.clone(),
            requests: Arc::default(),
            scripts: Arc::default(),
            once: Arc::default(),
            sessions: Arc::default(),
        };
        let a = api.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (a, acceptor) = (a.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| {
                        let a = a.clone();
                        async move { Ok::<_, std::convert::Infallible>(a.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        api
    }

    pub fn script(&self, session: &str, answers: Vec<ApiAnswer>) {
        self.scripts
            .lock()
            .expect("lock")
            .insert(session.to_string(), answers);
    }

    /// Answers for `session` used once each, before anything else.
    pub fn script_once(&self, session: &str, answers: Vec<ApiAnswer>) {
        self.once
            .lock()
            .expect("lock")
            .insert(session.to_string(), answers);
    }

    /// The customer authorized `session` with `token`: incomplete until an
    /// order is placed with the token.
    pub fn authorize(&self, session: &str, token: &str) {
        self.sessions
            .lock()
            .expect("lock")
            .insert(session.to_string(), (token.to_string(), false));
    }

    /// Whether an order was placed for `session`.
    pub fn order_placed(&self, session: &str) -> bool {
        self.sessions
            .lock()
            .expect("lock")
            .get(session)
            .is_some_and(|(_, placed)| *placed)
    }

    /// Places the order for `token` as a backend would: a real HTTPS
    /// `POST /payments/v1/authorizations/{token}/order`. Returns the status.
    pub async fn create_order(&self, token: &str) -> u16 {
        use rustls::pki_types::pem::PemObject;
        let ca = CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("ca pem");
        let tls = tls_connect(self.addr, &ca, &[b"http/1.1"])
            .await
            .expect("TLS to Klarna");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::post(format!("/payments/v1/authorizations/{token}/order"))
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        let resp = send.send_request(req).await.expect("answer");
        resp.status().as_u16()
    }

    /// (path, Authorization header, time) of every request so far.
    pub fn seen(&self) -> Vec<(String, Option<String>, std::time::Instant)> {
        let reqs = self.requests.lock().expect("lock");
        reqs.iter()
            .map(|r| (r.path.clone(), r.authorization.clone(), r.at))
            .collect()
    }

    pub fn requests_for(&self, session: &str) -> usize {
        let path = format!("/payments/v1/sessions/{session}");
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// The `[klarna]` and `[reconcile]` sections pointing at this simulator.
    pub fn config(&self, dir: &Path, schedule: &str) -> String {
        sensitive(KLARNA_PASSWORD);
        let ca = dir.join("klarna-ca.pem");
        std::fs::write(&ca, &self.ca_pem).expect("write ca");
        format!(
            "[klarna]\napi_url = \"https://localhost:{}\"\nusername = \"K123_test\"\npassword = \"{KLARNA_PASSWORD}\"\nca_file = \"{}\"\ntimeout = \"300ms\"\n[reconcile]\nenabled = true\nschedule = {schedule}\ngive_up_after = \"30s\"\n",
            self.addr.port(),
            ca.display()
        )
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        self.requests.lock().expect("lock").push(ApiRequest {
            path: path.clone(),
            authorization,
            at: std::time::Instant::now(),
        });
        let json = |status: u16, body: String| {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("response")
        };
        if let Some(token) = path
            .strip_prefix("/payments/v1/authorizations/")
            .and_then(|p| p.strip_suffix("/order"))
        {
            let mut sessions = self.sessions.lock().expect("lock");
            return match sessions.values_mut().find(|(t, _)| t == token) {
                Some((_, placed)) if *placed => json(
                    404,
                    r#"{"error_code":"NOT_FOUND","error_messages":["Invalid authorization token"]}"#
                        .into(),
                ),
                Some((_, placed)) => {
                    *placed = true;
                    json(200, r#"{"order_id":"sim-order","fraud_status":"ACCEPTED"}"#.into())
                }
                None => json(404, r#"{"error_code":"NOT_FOUND"}"#.into()),
            };
        }
        let session = path
            .strip_prefix("/payments/v1/sessions/")
            .unwrap_or("")
            .to_string();
        let answer = {
            let once = self
                .once
                .lock()
                .expect("lock")
                .get_mut(&session)
                .filter(|l| !l.is_empty())
                .map(|l| l.remove(0));
            let mut scripts = self.scripts.lock().expect("lock");
            once.or_else(|| match scripts.get_mut(&session) {
                Some(list) if list.len() > 1 => Some(list.remove(0)),
                Some(list) => list.first().cloned(),
                None => None,
            })
            .or_else(|| {
                let sessions = self.sessions.lock().expect("lock");
                sessions.get(&session).map(|(token, placed)| {
                    let status = if *placed { "complete" } else { "incomplete" };
                    ApiAnswer::Json(format!(
                        r#"{{"status":"{status}","authorization_token":"{token}"}}"#
                    ))
                })
            })
        };
        match answer {
            None => json(404, r#"{"error_code":"NOT_FOUND"}"#.into()),
            Some(ApiAnswer::Json(body)) => json(200, body),
            Some(ApiAnswer::Status(s)) => json(s, r#"{"error_code":"SIMULATED"}"#.into()),
            Some(ApiAnswer::RetryAfter(secs)) => Response::builder()
                .status(429)
                .header("retry-after", secs.to_string())
                .body(Full::new(Bytes::new()))
                .expect("response"),
            Some(ApiAnswer::Slow(d)) => {
                tokio::time::sleep(d).await;
                json(200, r#"{"status":"incomplete"}"#.into())
            }
        }
    }
}

pub const KLARNA_PASSWORD: &str = "klarna-api-password-never-logged";

// ---------------------------------------------------------------------------
// A real redis-server of the test's own, on a loopback port.

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// Starts redis-server with append-only persistence (fsync always) in
    /// `dir`, so a restart keeps everything it acknowledged.
    pub fn start(dir: &Path) -> Self {
        let mut r = RedisServer {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--protected-mode",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (CI installs it; locally: apt-get install redis-server)");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILLs the server (no chance to flush more than it already did).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data folder.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The `[store]` section for this server.
    pub fn store_section(&self, prefix: &str) -> String {
        format!(
            "[store]\nkind = \"redis\"\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n",
            self.url()
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
