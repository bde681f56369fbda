//! Pass-through: everything that is not a callback reaches the upstream
//! unchanged in meaning.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

#[tokio::test]
async fn get_with_query_is_passed_byte_for_byte_with_forwarded_headers() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let req = Request::get("/shop/cart.jsp?id=42&x=%2Fa%20b&token=not-ours")
        .header("host", "shop.example.com")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let (status, headers, body) = ab.https(req).await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(
        headers.get("x-upstream").and_then(|v| v.to_str().ok()),
        Some("yes")
    );
    assert!(
        headers.get("x-upstream-hop").is_none(),
        "hop-by-hop from the upstream removed"
    );
    let r = &up.recorded()[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.uri, "/shop/cart.jsp?id=42&x=%2Fa%20b&token=not-ours");
    assert_eq!(r.header("host"), Some("shop.example.com"));
    assert_eq!(r.header("x-custom"), Some("kept"));
    // 127.0.0.1 is not a trusted proxy: its X-Forwarded-For is replaced.
    assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.header("x-forwarded-proto"), Some("https"));
    assert_eq!(r.header("x-forwarded-host"), Some("shop.example.com"));
    let m = ab.metrics().await;
    assert_eq!(
        metric(&m, "authback_proxy_requests_total{status_class=\"2xx\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn forwarded_chain_is_kept_from_a_trusted_proxy_on_the_plain_listener() {
    let up = Upstream::start().await;
    let trust_loopback = |t: String| {
        t.replace(
            "shutdown_grace = \"5s\"",
            "shutdown_grace = \"5s\"\ntrusted_proxies = [\"127.0.0.0/8\"]",
        )
    };
    let ab = Authback::start_edited(&up.url(), trust_loopback, true).await;
    let tcp = tokio::net::TcpStream::connect(ab.plain.expect("plain listener"))
        .await
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get("/p")
        .header("host", "h")
        .header("x-forwarded-for", "203.0.113.9")
        // A proxy on the way added its own line rather than extend the first.
        .header("x-forwarded-for", "198.51.100.7")
        .body(Full::new(Bytes::new()))
        .expect("req");
    assert_eq!(send.send_request(req).await.expect("resp").status(), 200);
    let r = &up.recorded()[0];
    assert_eq!(
        r.header("x-forwarded-for"),
        Some("203.0.113.9, 198.51.100.7, 127.0.0.1"),
        "every line of the chain is kept, in order"
    );
    assert_eq!(r.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
}

#[tokio::test]
async fn one_mib_post_is_echoed_intact() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let payload: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let req = Request::post("/upload")
        .header("host", "localhost")
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(payload.clone())))
        .expect("req");
    let (status, _, body) = ab.https(req).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), payload.len());
    assert!(body[..] == payload[..], "echoed body differs");
    assert_eq!(up.recorded()[0].body.len(), payload.len());
}

#[tokio::test]
async fn http2_by_alpn_is_proxied() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let tls = ab.tls(&[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::post("https://shop.example.com/h2/path?q=1")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::from_static(b"over h2")))
        .expect("req");
    let resp = send.send_request(req).await.expect("answer");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"over h2");
    let r = &up.recorded()[0];
    assert_eq!(r.uri, "/h2/path?q=1");
    assert_eq!(
        r.header("host"),
        Some("shop.example.com"),
        "h2 :authority becomes Host"
    );
    let cookies: Vec<_> = r.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2"], "h2 cookie fields become one line");
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let req = Request::get("/hop")
        .header("host", "localhost")
        .header("connection", "keep-alive, x-private-hop")
        .header("x-private-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic abc")
        .header("x-end-to-end", "yes")
        .header("expect", "100-continue")
        .body(Full::new(Bytes::from_static(b"with a body")))
        .expect("req");
    assert_eq!(ab.https(req).await.0, 200);
    let r = &up.recorded()[0];
    assert_eq!(&r.body[..], b"with a body");
    for h in [
        "expect",
        "x-private-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(r.header(h).is_none(), "{h} crossed the proxy");
    }
    assert_eq!(r.header("x-end-to-end"), Some("yes"));
}

#[tokio::test]
async fn upgrades_are_tunnelled() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let mut tls = ab.tls(&[b"http/1.1"]).await;
    tls.write_all(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).await.expect("read head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    tls.write_all(b"ping through the tunnel")
        .await
        .expect("write");
    let mut buf = [0u8; 23];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&buf, b"ping through the tunnel");
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_slow_upstream_504() {
    // A port that was just free: nothing listens there.
    let free = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead_addr = free.local_addr().expect("addr");
    drop(free);
    let up = Upstream::start().await;
    let ab = Authback::start_edited(&format!("http://{dead_addr}"), |t| t, false).await;
    let req = Request::get("/x")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let (status, _, body) = ab.https(req).await;
    assert_eq!(status, 502);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"], "bad_gateway");

    up.set(Behaviour::Slow(Duration::from_secs(4)));
    let ab2 = Authback::start(&up).await; // upstream.timeout = 2s
    let req = Request::get("/slow")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let (status, _, body) = ab2.https(req).await;
    assert_eq!(status, 504);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"], "upstream_timeout");
    let m = ab2.metrics().await;
    assert_eq!(
        metric(&m, "authback_proxy_requests_total{status_class=\"5xx\"}"),
        Some(1.0)
    );
}

/// The start of a response that never ends: its head announces 64 MiB and
/// only 256 KiB follow. However much the sockets on the way hold, the body
/// cannot be read to its end, so the connection it came on stays mid-message.
static STALLED: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let mut r = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", 64 << 20).into_bytes();
    r.extend_from_slice(&vec![b'x'; 256 << 10]);
    r
});

/// A raw HTTP/1.1 upstream that counts its connections. `/close` answers
/// with `Connection: close` and closes; `/quiet-close` answers and closes
/// its side without saying so; `/empty` is a 204; `/stall` sends part of a
/// response and waits; anything else is `ok`, kept alive. A request without
/// `Host` gets 400, as HTTP/1.1 requires. `.2` counts the connections the
/// peer let go of after a quiet close or a stall.
async fn counting_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let let_go = Arc::new(AtomicUsize::new(0));
    let closed = let_go.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let has_host = head.to_ascii_lowercase().contains("\r\nhost:");
                    let (answer, close): (&[u8], bool) = match path.as_str() {
                        _ if !has_host => (
                            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
                            false,
                        ),
                        "/close" => (
                            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
                            true,
                        ),
                        "/quiet-close" => {
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if tcp.write_all(ok).await.is_ok() && tcp.shutdown().await.is_ok() {
                                // Wait for the peer to notice and go.
                                while let Ok(1..) = tcp.read(&mut chunk).await {}
                                closed.fetch_add(1, Ordering::SeqCst);
                            }
                            return;
                        }
                        "/empty" => (b"HTTP/1.1 204 No Content\r\n\r\n", false),
                        "/stall" => {
                            if tcp.write_all(&STALLED).await.is_ok() {
                                // Nothing more is sent; wait for the peer to go.
                                while let Ok(1..) = tcp.read(&mut chunk).await {}
                                closed.fetch_add(1, Ordering::SeqCst);
                            }
                            return;
                        }
                        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
                    };
                    if tcp.write_all(answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted, let_go)
}

#[tokio::test]
async fn upstream_connections_are_reused_and_closed_ones_replaced() {
    let (addr, accepted, let_go) = counting_upstream().await;
    // One worker, so every request uses the same worker's connections.
    let one_worker = |t: String| t.replace("[server]\n", "[server]\nworkers = 1\n");
    let ab = Authback::start_edited(&format!("http://{addr}"), one_worker, false).await;
    let get = |path: &str| {
        Request::get(path)
            .header("host", "shop.example.com")
            .body(Full::new(Bytes::new()))
            .expect("req")
    };
    for _ in 0..5 {
        let (status, _, body) = ab.https(get("/a")).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "sequential requests share one upstream connection"
    );
    assert_eq!(ab.https(get("/empty")).await.0, 204);
    assert_eq!(ab.https(get("/a")).await.0, 200);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "a response without a body leaves the connection reusable"
    );
    // The upstream says it closes: the next request needs a new connection.
    assert_eq!(ab.https(get("/close")).await.0, 200);
    assert_eq!(ab.https(get("/a")).await.0, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // The upstream closes an idle connection without a word: noticed, and
    // replaced, not answered with 502.
    assert_eq!(ab.https(get("/quiet-close")).await.0, 200);
    eventually!(
        let_go.load(Ordering::SeqCst) == 1,
        "authback to notice the quiet close and let go"
    );
    let (status, _, body) = ab.https(get("/a")).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    // HTTP/1.1 without Host is refused (RFC 9112 §3.2); HTTP/1.0 may omit
    // it, and then still names one upstream-side (HTTP/1.1 requires it).
    let no_host = Request::get("/a")
        .body(Full::new(Bytes::new()))
        .expect("req");
    assert_eq!(ab.https(no_host).await.0, 400);
    let old = Request::get("/a")
        .version(http::Version::HTTP_10)
        .body(Full::new(Bytes::new()))
        .expect("req");
    assert_eq!(ab.https(old).await.0, 200);
}

#[tokio::test]
async fn a_response_the_client_abandons_does_not_spoil_the_next_request() {
    let (addr, accepted, let_go) = counting_upstream().await;
    let one_worker = |t: String| t.replace("[server]\n", "[server]\nworkers = 1\n");
    let ab = Authback::start_edited(&format!("http://{addr}"), one_worker, false).await;
    let mut tls = ab.tls(&[b"http/1.1"]).await;
    tls.write_all(b"GET /stall HTTP/1.1\r\nhost: shop.example.com\r\n\r\n")
        .await
        .expect("write");
    let mut got = vec![0u8; 64 * 1024];
    let mut n = 0;
    while n < got.len() {
        match tls.read(&mut got[n..]).await.expect("read") {
            0 => break,
            k => n += k,
        }
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "the response began");
    // The client goes away in the middle of the body.
    drop(tls);
    // authback lets go of the upstream connection it was reading that body
    // from, rather than keeping it, or leaving it open.
    eventually!(
        let_go.load(Ordering::SeqCst) == 1,
        "the upstream connection of an abandoned response closed"
    );
    let get = Request::get("/a")
        .header("host", "shop.example.com")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let (status, _, body) = ab.https(get).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the next request goes on a new upstream connection"
    );
}

/// With `reuse_port = false` no other socket can bind the public port, and
/// one accept loop hands the connections to the workers: every request on
/// several connections is still served. With the default, each worker's own
/// socket shares the port.
#[tokio::test]
async fn reuse_port_off_keeps_the_port_to_one_socket_and_still_serves() {
    let up = Upstream::start().await;
    let off = |t: String| {
        t.replace(
            "shutdown_grace = \"5s\"",
            "shutdown_grace = \"5s\"\nreuse_port = false",
        )
    };
    let ab = Authback::start_edited(&up.url(), off, false).await;
    assert!(!ab.config.server.reuse_port);
    assert!(
        authback::listen(ab.public, true).is_err(),
        "another socket bound the public port beside reuse_port = false"
    );
    for i in 0..6 {
        let req = Request::get(format!("/conn/{i}"))
            .header("host", "shop.example.com")
            .body(Full::new(Bytes::new()))
            .expect("req");
        assert_eq!(ab.https(req).await.0, 200);
    }
    assert_eq!(up.recorded().len(), 6);

    let on = Authback::start_edited(
        &up.url(),
        |t| {
            t.replace(
                "shutdown_grace = \"5s\"",
                "shutdown_grace = \"5s\"\nreuse_port = true",
            )
        },
        false,
    )
    .await;
    assert!(on.config.server.reuse_port);
    assert!(
        !Authback::start(&up).await.config.server.reuse_port,
        "off by default"
    );
    assert!(
        authback::listen(on.public, true).is_ok(),
        "a worker's socket could not share the public port"
    );
}
