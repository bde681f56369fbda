//! Stock shop plugins' Klarna callback handlers behind authback, on the
//! example configs of examples/platforms/ (docs/platforms.md). Each handler
//! is an imitation of what its source does (tests/it/platforms/<platform>/
//! for the PHP ones, in PHP; the others in Rust beside them), and counts
//! how often it really ran. Each
//! test shows, with real TLS and a simulated Klarna (2 s timeouts, 3
//! attempts): Klarna gets a 2xx at its first attempt every time; the
//! handler runs once per authorization, whatever Klarna repeats; a
//! re-authorization is one more delivery; and every spelling of the URL
//! that reaches the handler is intercepted by authback, never proxied
//! straight to it. Each test prints what it saw (`eprintln!`): the
//! spellings covered, Klarna's attempts, the handler's runs and the longest
//! time Klarna waited for its 2xx.
//!
//! This file holds what the platforms share: authback on an example config,
//! Klarna's callbacks and their tally, plain HTTP to the imitations, `php
//! -S` for the PHP ones and small servers for the Rust ones. Each platform's
//! imitation and tests are in its own submodule.

mod magento2;
mod saleor;
mod sap_commerce;
mod woocommerce;

pub(crate) use magento2::quote;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

const EXAMPLES: [&str; 4] = [
    "examples/platforms/woocommerce.toml",
    "examples/platforms/magento2.toml",
    "examples/platforms/sap-commerce.toml",
    "examples/platforms/saleor.toml",
];

const ADMIN_TOKEN: &str = "platforms-admin-token-0123456789";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the example lacks `{from}`");
    text.replace(from, to)
}

/// The example's certificate paths, stood in for by real files.
fn with_cert(text: &str, cert: &Path, key: &Path) -> String {
    let t = replace_once(
        text,
        "\"/etc/authback/tls/tls.crt\"",
        &format!("\"{}\"", cert.display()),
    );
    replace_once(
        &t,
        "\"/etc/authback/tls/tls.key\"",
        &format!("\"{}\"", key.display()),
    )
}

#[test]
fn every_platform_example_passes_check_without_a_warning() {
    let dir = TempDir::new();
    let (c, k) = write_cert(dir.path(), &make_cert());
    let env = [
        ("AUTHBACK_ADMIN_TOKEN", ADMIN_TOKEN),
        ("KLARNA_API_USERNAME", "K123456_platforms"),
        ("KLARNA_API_PASSWORD", KLARNA_PASSWORD),
    ];
    for rel in EXAMPLES {
        let text = read(rel);
        for needed in [
            "forward_format = \"original\"",
            "unverified = true",
            "allow_ips = [\"klarna-production\"]",
            "kind = \"file\"",
            "[order_watch]\nenabled = true",
            "username = \"env:KLARNA_API_USERNAME\"",
        ] {
            assert!(text.contains(needed), "{rel} lacks {needed}");
        }
        let path = dir.path().join(rel.replace('/', "_"));
        std::fs::write(&path, with_cert(&text, &c, &k)).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_authback"))
            .args(["check", "--config"])
            .arg(&path)
            .envs(env)
            .output()
            .expect("run check");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{rel} fails check:\n{said}");
        assert!(
            !said.to_lowercase().contains("warn"),
            "{rel} passes check with a warning:\n{said}"
        );
    }
}

// ---------------------------------------------------------------------------
// authback on a platform's example config.

/// authback on the example `rel`, adapted to the test: ephemeral ports, a
/// test certificate, the imitation as upstream, a store in a temp folder,
/// Klarna's calls from loopback, the simulated Klarna for order watch
/// (with fast timings). Routes, answer rules and delivery settings are the
/// example's own.
async fn start_platform(rel: &str, upstream: &str, api: &KlarnaApi) -> Authback {
    start_platform_fenced(rel, upstream, api, "127.0.0.0/8").await
}

/// `start_platform`, with the route's `allow_ips` set to `allow` (a
/// foreign address makes every callback a 403: nothing may reach the
/// handler then).
pub(crate) async fn start_platform_fenced(
    rel: &str,
    upstream: &str,
    api: &KlarnaApi,
    allow: &str,
) -> Authback {
    let dir = TempDir::new();
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let example = read(rel);
    let (head, klarna) = example
        .split_once("\n[klarna]")
        .unwrap_or_else(|| panic!("{rel}: [klarna] and [order_watch] come last"));
    let mut text = with_cert(head, &c, &k);
    text = replace_once(
        &text,
        "token = \"env:AUTHBACK_ADMIN_TOKEN\"",
        &format!("token = \"{ADMIN_TOKEN}\""),
    );
    text = replace_once(
        &text,
        "path = \"/var/lib/authback/authback.db\"",
        &format!("path = \"{}\"", dir.path().join("authback.db").display()),
    );
    // Klarna's simulated calls come from loopback, not Klarna's addresses.
    text = replace_once(
        &text,
        "allow_ips = [\"klarna-production\"]",
        &format!("allow_ips = [\"{allow}\"]"),
    );
    text = text
        .lines()
        .map(|l| {
            if l.starts_with("url = \"http://127.0.0.1:") {
                format!("url = \"{upstream}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ca = dir.path().join("klarna-ca.pem");
    std::fs::write(&ca, &api.ca_pem).expect("write ca");
    sensitive(KLARNA_PASSWORD);
    let redeliver = if klarna.contains("redeliver = false") {
        "redeliver = false\n"
    } else {
        ""
    };
    text.push_str(&format!(
        "\n[klarna]\napi_url = \"https://localhost:{}\"\nusername = \"K123456_platforms\"\npassword = \"{KLARNA_PASSWORD}\"\nca_file = \"{}\"\ntimeout = \"2s\"\n[order_watch]\nenabled = true\nafter = \"300ms\"\nevery = \"200ms\"\nredeliver_after = \"30s\"\nunconfirmed_after = \"60s\"\n{redeliver}",
        api.addr.port(),
        ca.display()
    ));
    Authback::start_text(dir, cert.der, &text, false).await
}

/// A counter of the metrics page; 0 when absent.
async fn counter(ab: &Authback, kind: &str, route: &str, outcome: &str) -> f64 {
    let series = format!("authback_{kind}_total{{route=\"{route}\",outcome=\"{outcome}\"}}");
    metric(&ab.metrics().await, &series).unwrap_or(0.0)
}

async fn confirmed(ab: &Authback) -> f64 {
    metric(
        &ab.metrics().await,
        "authback_order_watch_total{outcome=\"confirmed\"}",
    )
    .unwrap_or(0.0)
}

/// What Klarna saw, for the report.
#[derive(Default)]
struct Tally {
    callbacks: u32,
    attempts: u32,
    max_ack: Duration,
    spellings: Vec<String>,
}

impl Tally {
    fn report(&self, platform: &str, handler_runs: &str) {
        eprintln!(
            "platform {platform}: {} URL spellings covered {:?}; {} Klarna callbacks, {} attempts; handler runs: {handler_runs}; max time to 2xx {} ms",
            self.spellings.len(),
            self.spellings,
            self.callbacks,
            self.attempts,
            self.max_ack.as_millis()
        );
    }
}

/// One callback as Klarna sends it, through authback: a 204 at the first
/// attempt.
async fn as_klarna(ab: &Authback, tally: &Mutex<Tally>, pq: &str, body: &str) {
    let started = Instant::now();
    let k = klarna_callback(ab.public, &ab.ca, pq, body).await;
    let took = started.elapsed();
    assert!(
        k.delivered && k.attempts == 1 && k.status == Some(204),
        "{pq}: {k:?}"
    );
    let mut t = tally.lock().expect("lock");
    t.callbacks += 1;
    t.attempts += k.attempts;
    t.max_ack = t.max_ack.max(took);
}

/// Klarna's repeats of one callback: two in a row, then three at once.
async fn repeats(ab: &Authback, tally: &Mutex<Tally>, pq: &str, body: &str) {
    as_klarna(ab, tally, pq, body).await;
    as_klarna(ab, tally, pq, body).await;
    tokio::join!(
        as_klarna(ab, tally, pq, body),
        as_klarna(ab, tally, pq, body),
        as_klarna(ab, tally, pq, body)
    );
}

/// `pq` is taken by authback as route `route`: a 204 at Klarna's first
/// attempt, counted as a duplicate of what authback already recorded (a
/// request proxied to the handler would not be counted).
async fn intercepted(ab: &Authback, tally: &Mutex<Tally>, route: &str, pq: &str, body: &str) {
    let before = counter(ab, "callbacks", route, "duplicate").await;
    as_klarna(ab, tally, pq, body).await;
    let after = counter(ab, "callbacks", route, "duplicate").await;
    assert_eq!(after, before + 1.0, "{pq} was not taken by route {route}");
    tally.lock().expect("lock").spellings.push(pq.to_string());
}

// ---------------------------------------------------------------------------
// Plain HTTP to the imitations, and Klarna calling one directly.

pub(crate) async fn plain(addr: SocketAddr, method: &str, pq: &str, body: &str) -> (u16, String) {
    plain_with(addr, method, pq, body, &[]).await
}

pub(crate) async fn plain_with(
    addr: SocketAddr,
    method: &str,
    pq: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(pq)
        .header("host", "shop.example.com");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(
            req.body(Full::new(Bytes::from(body.to_string())))
                .expect("request"),
        )
        .await
        .expect("answer");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Klarna calling the plugin's URL with no authback in between (plain
/// HTTP, the same timeouts and attempts as `klarna_callback`).
async fn klarna_direct(addr: SocketAddr, pq: &str, body: &str) -> KlarnaResult {
    klarna_calls(|| TcpStream::connect(addr), "shop.example.com", pq, body).await
}

// ---------------------------------------------------------------------------
// The PHP imitations (tests/it/platforms/<platform>/router.php).

pub(crate) struct Php {
    // `php -S` with workers forks: dropped, its whole group ends.
    _child: Group,
    pub(crate) addr: SocketAddr,
    log: PathBuf,
}

pub(crate) fn start_php(platform: &str, db: &Path, api: &KlarnaApi) -> Php {
    let port = free_port();
    let child = Command::new("php")
        .args(["-S", &format!("127.0.0.1:{port}"), "router.php"])
        .current_dir(root().join("tests/it/platforms").join(platform))
        .env("PLATFORM_DB", db)
        .env(
            "KLARNA_API",
            format!("https://127.0.0.1:{}", api.addr.port()),
        )
        // Several requests at once, as on a real shop.
        .env("PHP_CLI_SERVER_WORKERS", "4")
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(db.with_extension("log")).expect("php log"))
        .spawn()
        .expect("php -S (CI installs php-cli and php-sqlite3)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let php = Php {
        _child: Group(child),
        addr,
        log: db.with_extension("log"),
    };
    eventually_blocking!(
        std::net::TcpStream::connect(addr).is_ok(),
        "php -S to listen on {addr}"
    );
    // One request creates the database before the workers share it.
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect php");
    tcp.write_all(b"GET /__test/state HTTP/1.0\r\nHost: shop\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    php
}

impl Php {
    /// What PHP wrote to stderr (its request log and errors).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) async fn state(&self) -> serde_json::Value {
        let (status, body) = plain(self.addr, "GET", "/__test/state", "").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("state: {body}"))
    }

    /// Rows of `table` whose `field` is `value`.
    async fn rows(&self, table: &str, field: &str, value: &str) -> Vec<serde_json::Value> {
        let state = self.state().await;
        state[table]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|r| r[field].as_str() == Some(value))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The handler's calls that came from authback (they carry its
    /// Idempotency-Key) with `needle` in their body.
    async fn delivered_hits(&self, needle: &str) -> Vec<serde_json::Value> {
        let state = self.state().await;
        state["hits"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|h| {
                        h["idempotency_key"].as_str().is_some_and(|k| !k.is_empty())
                            && h["body"].as_str().is_some_and(|b| b.contains(needle))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn hit_count(&self) -> usize {
        self.state().await["hits"].as_array().map_or(0, |a| a.len())
    }

    /// Requests that reached the handler without coming from authback's
    /// delivery worker (which always sends an Idempotency-Key).
    async fn direct_hit_count(&self) -> usize {
        self.state().await["hits"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|h| h["idempotency_key"].as_str().is_none_or(str::is_empty))
                .count()
        })
    }
}

// ---------------------------------------------------------------------------
// Small HTTP servers for the imitations written in Rust.

type Handler = Arc<
    dyn Fn(
            Request<Incoming>,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

async fn serve(handler: Handler) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let h = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, std::convert::Infallible>(h(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

/// A query's or form's parameters, decoded.
fn params(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    percent_decode(s, true)
}

/// `%XX` decoded (and `+` as a space in a query or form).
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// Spellings that reach a handler but that no route setting can name yet.
// Each is proxied straight to the plugin: no allow_ips, no dedupe, no
// record. Ignored until routing covers them (reported; see
// docs/platforms.md, "What routing cannot cover").

/// Whether `pq` is taken by authback (204) and never reaches the imitation;
/// if not, what went wrong.
async fn proxied(ab: &Authback, php: &Php, pq: &str, body: &str) -> Option<String> {
    // Counting only direct hits: authback's own delivery of this callback
    // may reach the handler before the count is read again.
    let before = php.direct_hit_count().await;
    let (status, said) = ab.callback(pq, body).await;
    let after = php.direct_hit_count().await;
    (status != 204 || after != before)
        .then(|| format!("{pq} was proxied straight to the handler ({status} {said:?})"))
}
