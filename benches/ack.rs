//! `cargo bench --bench ack`: callback ack latency while the upstream hangs
//! (alone, and beside 1,000 held slow connections),
//! and pass-through requests/s beside the same client hitting the upstream
//! directly. Everything on 127.0.0.1, bounded in count and time. Timings are
//! reported, never asserted.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use common::*;

const CALLBACKS: u64 = 1000;
const CLIENTS: usize = 8;
const LOAD_SECS: u64 = 5;
const LOAD_CONNS: usize = 32;
const DURABLE_CLIENTS: usize = 64;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// How long a load runs: a number of callbacks, or a time.
#[derive(Clone, Copy)]
enum Until {
    Count(u64),
    Time(Instant),
}

/// Distinct callbacks from `clients` keep-alive TLS clients (one connection
/// each, as Klarna's senders reuse theirs) against authback started with
/// `extra` config, the upstream hanging. Returns every ack's latency, sorted.
async fn ack_load(extra: &str, tag: &str, clients: usize, until: Until) -> Vec<Duration> {
    ack_load_beside(extra, tag, clients, until, 0).await
}

/// `ack_load` while `slow` slow connections are held open: two fifths TCP
/// that never start TLS, three tenths TLS that never send a request, three
/// tenths trickling a request head a byte every 200 ms.
async fn ack_load_beside(
    extra: &str,
    tag: &str,
    clients: usize,
    until: Until,
    slow: usize,
) -> Vec<Duration> {
    let up = Upstream::start().await;
    up.set(Behaviour::Hang);
    let ab = Arc::new(Authback::start_with(&up, extra, false).await);
    let mut held_tcp = Vec::new();
    let mut held_tls = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for i in 0..slow {
        match i * 10 / slow.max(1) {
            0..=3 => held_tcp.push(
                tokio::net::TcpStream::connect(ab.public)
                    .await
                    .expect("connect"),
            ),
            4..=6 => held_tls.push(ab.tls(&[b"http/1.1"]).await),
            _ => {
                let mut tls = ab.tls(&[b"http/1.1"]).await;
                let mut stop = stop_rx.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let head = b"POST /klarna/authorization/slow HTTP/1.1\r\nhost: localhost\r\nx-filler: ";
                    for b in head.iter().chain(std::iter::repeat(&b'a')) {
                        if tls.write_all(&[*b]).await.is_err() {
                            return;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                            _ = stop.changed() => return,
                        }
                    }
                });
            }
        }
    }
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (ab, next, tag) = (ab.clone(), next.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let tls = ab.tls(&[b"http/1.1"]).await;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let url = ab.mint("cart-bench");
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match until {
                    Until::Count(n) if i >= n => return lat,
                    Until::Time(t) if Instant::now() >= t => return lat,
                    _ => {}
                }
                let body = callback_body(&format!("sess-{tag}-{i}"), &format!("tok-{tag}-{i:010}"));
                let req = Request::post(url.as_str())
                    .header("host", "localhost")
                    .body(Full::new(Bytes::from(body)))
                    .expect("req");
                let t = Instant::now();
                let resp = send.send_request(req).await.expect("answer");
                assert_eq!(resp.status(), 204);
                let _ = resp.into_body().collect().await;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    stop_tx.send_replace(true);
    drop((held_tcp, held_tls));
    all.sort();
    all
}

async fn acks_beside_slow_connections() {
    const SLOW: usize = 1000;
    let all = ack_load_beside("", "slowloris", CLIENTS, Until::Count(CALLBACKS), SLOW).await;
    println!(
        "ack latency beside {SLOW} held slow connections (400 no TLS, 300 idle TLS, 300 trickling heads), {} callbacks from {CLIENTS} keep-alive TLS clients: p50 {:?}  p99 {:?}  max {:?}",
        all.len(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all[all.len() - 1]
    );
}

async fn acks_while_upstream_hangs() {
    let all = ack_load("", "latency", CLIENTS, Until::Count(CALLBACKS)).await;
    println!(
        "ack latency, {} callbacks from {CLIENTS} keep-alive TLS clients, upstream hanging: p50 {:?}  p99 {:?}  max {:?}",
        all.len(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all[all.len() - 1]
    );
}

/// Keep-alive HTTP/1.1 GETs from `LOAD_CONNS` connections for `LOAD_SECS`.
async fn load(
    addr: std::net::SocketAddr,
    tls: Option<&rustls::pki_types::CertificateDer<'static>>,
) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(LOAD_SECS);
    let mut tasks = Vec::new();
    for _ in 0..LOAD_CONNS {
        let count = count.clone();
        let ca = tls.cloned();
        tasks.push(tokio::spawn(async move {
            macro_rules! drive {
                ($io:expr) => {{
                    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new($io))
                        .await
                        .expect("handshake");
                    tokio::spawn(conn);
                    while Instant::now() < until {
                        let req = Request::get("/bench")
                            .header("host", "localhost")
                            .body(Full::new(Bytes::new()))
                            .expect("req");
                        let resp = send.send_request(req).await.expect("answer");
                        let _ = resp.into_body().collect().await;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }};
            }
            match ca {
                Some(ca) => drive!(tls_connect(addr, &ca, &[b"http/1.1"]).await.expect("tls")),
                None => drive!(tokio::net::TcpStream::connect(addr).await.expect("tcp")),
            }
        }));
    }
    for t in tasks {
        t.await.expect("load task");
    }
    count.load(Ordering::Relaxed) as f64 / LOAD_SECS as f64
}

/// `DURABLE_CLIENTS` clients for `LOAD_SECS`: acks/s, p50, p99.
async fn ack_rate(extra: &str, tag: &str) -> (f64, Duration, Duration) {
    let until = Until::Time(Instant::now() + Duration::from_secs(LOAD_SECS));
    let all = ack_load(extra, tag, DURABLE_CLIENTS, until).await;
    let rate = all.len() as f64 / LOAD_SECS as f64;
    (rate, percentile(&all, 0.50), percentile(&all, 0.99))
}

/// 200-byte appends, each followed by fdatasync, for 2 s: the disk's own limit.
fn fsync_rate(dir: &std::path::Path) -> f64 {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    let rec = [b'x'; 200];
    let until = Instant::now() + Duration::from_secs(2);
    let mut n = 0u64;
    while Instant::now() < until {
        f.write_all(&rec).expect("write");
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    let _ = std::fs::remove_file(&path);
    n as f64 / 2.0
}

async fn durable_acks() {
    let dir = TempDir::new();
    let fsyncs = fsync_rate(dir.path());
    let (mem, mem50, mem99) = ack_rate("", "mem").await;
    let store = format!(
        "[store]\nkind = \"file\"\npath = \"{}\"\n",
        dir.path().join("bench.db").display()
    );
    let (file, file50, file99) = ack_rate(&store, "file").await;
    println!(
        "callback acks, {DURABLE_CLIENTS} keep-alive TLS clients, distinct callbacks, upstream hanging, {LOAD_SECS}s each:\n  disk: {fsyncs:.0} fsyncs/s (200 B append + fdatasync)\n  memory store: {mem:.0} acks/s  p50 {mem50:?}  p99 {mem99:?}\n  file store:   {file:.0} acks/s  p50 {file50:?}  p99 {file99:?}  ({:.2}x memory)",
        file / mem
    );
}

async fn pass_through() {
    let up = Upstream::start().await;
    let ab = Authback::start_with(&up, "", true).await;
    let direct = load(up.addr, None).await;
    up.requests.lock().expect("lock").clear();
    let plain = load(ab.plain.expect("plain"), None).await;
    up.requests.lock().expect("lock").clear();
    let tls = load(ab.public, Some(&ab.ca)).await;
    println!(
        "pass-through GET, {LOAD_CONNS} keep-alive connections, {LOAD_SECS}s each, same in-process client:\n  upstream direct {direct:.0} req/s\n  authback plain  {plain:.0} req/s ({:.2}x direct)\n  authback TLS    {tls:.0} req/s ({:.2}x direct)",
        plain / direct,
        tls / direct
    );
}

/// Order watch over 1,000 authorizations whose backend lies on one answer
/// in ten (200, no order placed): how many Read Session calls a confirmed
/// order costs, and how many were redelivered and left unconfirmed.
/// Timings are scaled down (a check every 500 ms, a redelivery at 3 s,
/// unconfirmed at 8 s) so the run takes seconds, not an hour. The run is
/// sound only while every check keeps its schedule: each Read Session call
/// opens a TLS connection, so in a debug build the checks fall behind.
async fn order_watch_with_a_lying_backend(store: &str) {
    const N: usize = 1000;
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    let dir = TempDir::new();
    let store_section = match store {
        "file" => format!(
            "[store]\nkind = \"file\"\npath = \"{}\"\n",
            dir.path().join("authback.db").display()
        ),
        _ => String::new(),
    };
    let watch = "[order_watch]\nenabled = true\nafter = \"500ms\"\nevery = \"500ms\"\nredeliver_after = \"3s\"\nunconfirmed_after = \"8s\"\n";
    let cfg = format!(
        "{}{watch}{store_section}",
        api.config(dir.path(), r#"["1h"]"#)
    );
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let text = base_config(&shop.url(), &c, &k, &cfg);
    let ab = Arc::new(Authback::start_text(dir, cert.der, &text, false).await);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (ab, api, shop) = (ab.clone(), api.clone(), shop.clone());
        tasks.push(tokio::spawn(async move {
            for i in (client..N).step_by(CLIENTS) {
                let (session, token) = (format!("sess-ow-{i}"), format!("tok-ow-{i:06}"));
                api.authorize(&session, &token);
                shop.places(&session, Places::LiesOneIn(10));
                let (status, _) = ab
                    .callback(&ab.mint("cart-1"), &callback_body(&session, &token))
                    .await;
                assert_eq!(status, 204);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let series = |page: &str, outcome: &str| {
        metric(
            page,
            &format!("authback_order_watch_total{{outcome=\"{outcome}\"}}"),
        )
        .unwrap_or(0.0) as usize
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page = ab.metrics().await;
        if series(&page, "confirmed") + series(&page, "unconfirmed") >= N
            || Instant::now() > deadline
        {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (confirmed, redelivered, unconfirmed) = (
        series(&page, "confirmed"),
        series(&page, "redelivered"),
        series(&page, "unconfirmed"),
    );
    let reads = api
        .seen()
        .iter()
        .filter(|(path, _, _)| path.starts_with("/payments/v1/sessions/"))
        .count();
    let redeliveries = shop.all().len().saturating_sub(N);
    println!(
        "order watch, {N} authorizations, the backend lying on 1 answer in 10, {store} store, {:.1}s:\n  confirmed {confirmed}, redelivered {redelivered}, unconfirmed {unconfirmed}\n  deliveries to the backend {} ({redeliveries} redeliveries)\n  Read Session calls {reads}: {:.2} per order watched, {:.2} per confirmed order",
        started.elapsed().as_secs_f64(),
        shop.all().len(),
        reads as f64 / N as f64,
        reads as f64 / confirmed.max(1) as f64,
    );
}

fn main() {
    // `cargo test --all-targets` runs bench targets too; measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("ack bench: skipped (run `cargo bench --bench ack`)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // `cargo bench --bench ack -- NAME` runs only the sections whose name contains NAME.
        let filter: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .collect();
        let wanted =
            |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
        if wanted("ack_latency") {
            acks_while_upstream_hangs().await;
        }
        if wanted("slowloris") {
            acks_beside_slow_connections().await;
        }
        if wanted("durable_acks") {
            durable_acks().await;
        }
        if wanted("order_watch") {
            order_watch_with_a_lying_backend("memory").await;
            order_watch_with_a_lying_backend("file").await;
        }
        if wanted("pass_through") {
            pass_through().await;
        }
    });
}
