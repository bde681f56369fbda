//! authback, in process, on ephemeral ports: its config, its start and
//! stop, and HTTPS and admin clients to talk to it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::{
    eventually, make_cert, sensitive, with_access_log, write_cert, TempDir, Upstream, Waiting,
    OLD_SECRET, SECRET, SIGNING_SECRET,
};

pub struct Authback {
    pub public: SocketAddr,
    pub plain: Option<SocketAddr>,
    /// Bound when the config sets `server.listen_redirect` (to any port).
    pub redirect: Option<SocketAddr>,
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
        let text = &with_access_log(text);
        let config =
            authback::Config::parse(text, dir.path()).unwrap_or_else(|e| panic!("config: {e:?}"));
        // As `authback run` binds them: each worker then listens on the
        // same port with a socket of its own.
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let bind = || authback::listen(any, config.server.reuse_port).expect("bind");
        let listeners = authback::Listeners {
            public: Some(bind()),
            plain: plain.then(bind),
            redirect: config.server.listen_redirect.map(|_| bind()),
            admin: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        };
        let addr = |l: &Option<TcpListener>| l.as_ref().map(|l| l.local_addr().expect("addr"));
        let public = addr(&listeners.public).expect("the TLS listener");
        let (plain, redirect) = (addr(&listeners.plain), addr(&listeners.redirect));
        let admin = listeners.admin.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(authback::run(config.clone(), listeners, async {
            let _ = rx.await;
        }));
        let a = Authback {
            public,
            plain,
            redirect,
            admin,
            ca,
            dir,
            config,
            stop: Some(tx),
            task: Some(task),
        };
        // Ready once the admin listener says so.
        eventually!(
            matches!(a.admin_get("/readyz").await, Ok((200, _))),
            "authback to become ready"
        );
        a
    }

    /// Waits up to 10 s (times patience) for `/readyz` to answer 200.
    pub async fn wait_ready(&self) -> bool {
        self.wait_for_200("/readyz").await
    }

    /// Waits up to 10 s (times patience) for `/readyz/store` to answer
    /// 200: the store can
    /// record callbacks again.
    pub async fn wait_store_up(&self) -> bool {
        self.wait_for_200("/readyz/store").await
    }

    async fn wait_for_200(&self, path: &str) -> bool {
        let waiting = Waiting::new(Duration::from_secs(10));
        loop {
            if self.admin_get(path).await.map(|r| r.0) == Ok(200) {
                return true;
            }
            if waiting.expired() {
                return false;
            }
            waiting.pause().await;
        }
    }

    /// Begins a graceful shutdown, as SIGTERM does, without waiting for
    /// it: the admin listener still answers while the public side drains.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Begins a graceful shutdown (if not yet begun) and waits for `run` to
    /// return.
    pub async fn stop(mut self) -> Result<(), authback::RunError> {
        self.begin_stop();
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

    /// The deliveries recorded so far, in every state, as the admin API
    /// lists them (newest first).
    ///
    /// What the upstream has not seen by the time a request was answered
    /// can only reach it later as one of these: authback proxies a request
    /// before it answers it, and forwards a callback only once it recorded
    /// it. So "the upstream saw nothing and nothing is recorded", checked
    /// right after the answers, shows without waiting that nothing refused
    /// ever reaches the backend.
    pub async fn deliveries(&self) -> Vec<serde_json::Value> {
        let (status, body) = self
            .admin_request("GET", "/v1/deliveries?limit=100", "", None)
            .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("a JSON list")
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
    tls_handshake(TcpStream::connect(addr).await?, ca, alpn).await
}

/// A TLS handshake for `localhost` over a connection already open (one
/// that has sent a PROXY header, say).
pub async fn tls_handshake(
    tcp: TcpStream,
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
