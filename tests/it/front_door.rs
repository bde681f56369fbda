//! The front door: the redirect listener (`server.listen_redirect`: 308 to
//! https at a configured host only, ACME challenges passed through, callback
//! routes never served), the PROXY protocol from a balancer (v1 and v2, the
//! address it names is what `allow_ips` sees; refused from anyone else,
//! required from the balancer, malformed or stalled headers closed), and a
//! deployment with only a plain listener behind an ingress.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// The names of the test certificate: what a redirect may go to, with
/// `public_url`'s `shop.example`.
const NAMES: [&str; 3] = ["localhost", "shop.example", "www.shop.example"];

/// authback with `server` keys added to `[server]`, `public_url` set to
/// `https://shop.example`, a certificate for `NAMES`, and `extra` after
/// the base config.
async fn start(upstream: &Upstream, server: &str, extra: &str, plain: bool) -> Authback {
    let dir = TempDir::new();
    let generated =
        rcgen::generate_simple_self_signed(NAMES.map(String::from).to_vec()).expect("certificate");
    let cert = Cert {
        der: generated.cert.der().clone(),
        cert_pem: generated.cert.pem(),
        key_pem: generated.key_pair.serialize_pem(),
    };
    let (c, k) = write_cert(dir.path(), &cert);
    let text = base_config(&upstream.url(), &c, &k, extra)
        .replace(
            "public_url = \"https://localhost\"",
            "public_url = \"https://shop.example\"",
        )
        .replace("[server]\n", &format!("[server]\n{server}\n"));
    Authback::start_text(dir, cert.der, &text, plain).await
}

/// A response read off a raw connection: its status and head, or nothing
/// when the server closed the connection without a word.
struct Answer {
    status: u16,
    head: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Writes `bytes` and reads until the server closes: its answer, or `None`
/// when it closed without one. Panics if it neither answers nor closes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> Option<Answer> {
    // A server that refuses may close before everything is written.
    let _ = s.write_all(bytes).await;
    let mut got = Vec::new();
    let read =
        tokio::time::timeout(patient(Duration::from_secs(10)), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    let text = String::from_utf8_lossy(&got).to_string();
    let head = text.split("\r\n\r\n").next()?.to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Answer { status, head })
}

/// One request on a new plain connection to `addr`, closed after it.
async fn raw(addr: SocketAddr, request: &str) -> Option<Answer> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    exchange(&mut tcp, request.as_bytes()).await
}

/// A GET of `target` with `host` (none when empty), closing after it.
fn get(target: &str, host: &str) -> String {
    let host = match host {
        "" => String::new(),
        h => format!("Host: {h}\r\n"),
    };
    format!("GET {target} HTTP/1.1\r\n{host}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn the_redirect_listener_sends_every_client_to_a_configured_https_host() {
    let up = Upstream::start().await;
    let ab = start(&up, "listen_redirect = \"127.0.0.1:3\"", "", false).await;
    let redirect = ab.redirect.expect("redirect listener");
    let long_host = format!("{}.example", "a".repeat(300));
    let cases: Vec<(String, &str)> = vec![
        (
            get("/cart?id=7&x=%2F", "shop.example"),
            "https://shop.example/cart?id=7&x=%2F",
        ),
        // A name of the certificate, however the client spells it.
        (get("/a", "www.shop.example"), "https://www.shop.example/a"),
        (
            get("/a", "WWW.Shop.Example:80"),
            "https://www.shop.example/a",
        ),
        (get("/a", "www.shop.example."), "https://www.shop.example/a"),
        (get("/a", "localhost:8080"), "https://localhost/a"),
        // Any other host gets public_url's: no open redirect.
        (get("/a", "evil.example"), "https://shop.example/a"),
        (
            get("/a", "shop.example.evil.example"),
            "https://shop.example/a",
        ),
        (get("/a", "127.0.0.1"), "https://shop.example/a"),
        (get("/a", "[::1]:80"), "https://shop.example/a"),
        (get("/a", &long_host), "https://shop.example/a"),
        ("GET /a HTTP/1.0\r\n\r\n".into(), "https://shop.example/a"),
        (
            get("http://evil.example/x?y", "evil.example"),
            "https://shop.example/x?y",
        ),
        // A path that looks like an authority stays a path.
        (
            get("//evil.example/x", "shop.example"),
            "https://shop.example//evil.example/x",
        ),
        (
            get("/%0d%0aSet-Cookie:%20a=b", "evil.example"),
            "https://shop.example/%0d%0aSet-Cookie:%20a=b",
        ),
    ];
    for (request, location) in &cases {
        let a = raw(redirect, request).await.expect("an answer");
        assert_eq!(a.status, 308, "{request:?}: {}", a.head);
        assert_eq!(a.header("location"), Some(*location), "{request:?}");
        assert_eq!(a.header("set-cookie"), None, "{request:?}");
    }
    let redirects = metric(
        &ab.metrics().await,
        "authback_proxy_requests_total{status_class=\"3xx\"}",
    );
    assert_eq!(redirects, Some(cases.len() as f64));
    // Heads that cannot be read one way get 400 and no Location at all.
    for request in [
        get("/a", "shop.example@evil.example"),
        get("/a", "shop.example\tevil"),
        get("http://evil.example/x", "shop.example"),
        "GET /a HTTP/1.1\r\nHost: shop.example\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
            .into(),
        "GET /a\rb HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n".into(),
    ] {
        if let Some(a) = raw(redirect, &request).await {
            assert_eq!(a.status, 400, "{request:?}: {}", a.head);
            assert_eq!(a.header("location"), None, "{request:?}");
        }
    }
    // A target longer than a head may be is refused whole, never redirected.
    let long = get(&format!("/{}", "a".repeat(70_000)), "shop.example");
    if let Some(a) = raw(redirect, &long).await {
        assert!(
            a.status >= 400 && a.header("location").is_none(),
            "{}",
            a.head
        );
    }
    assert!(up.recorded().is_empty(), "{:?}", up.recorded());
}

#[tokio::test]
async fn acme_challenges_pass_through_and_callback_routes_are_not_served() {
    let up = Upstream::start().await;
    let solver = Upstream::start().await;
    let server = format!(
        "listen_redirect = \"127.0.0.1:3\"\nacme_upstream = \"{}\"",
        solver.url()
    );
    let ab = start(&up, &server, "", false).await;
    let redirect = ab.redirect.expect("redirect listener");
    let challenge = "/.well-known/acme-challenge/Tok-3n_x";
    let a = raw(redirect, &get(challenge, "www.shop.example"))
        .await
        .expect("answer");
    assert_eq!(a.status, 200, "{}", a.head);
    let seen = solver.to_path(challenge);
    assert_eq!(seen.len(), 1, "{:?}", solver.recorded());
    assert_eq!(seen[0].header("host"), Some("www.shop.example"));
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("http"));
    // Its canonical spelling is what the solver gets.
    let a = raw(
        redirect,
        &get("/.well-known/./acme-challenge/Tok-3n_x", "x"),
    )
    .await;
    assert_eq!(a.map(|a| a.status), Some(200));
    assert_eq!(solver.to_path(challenge).len(), 2);

    // A callback, a near spelling of its route, and a forward path: 404,
    // never the callback handler, never the upstream.
    let callback = ab.mint("cart-1");
    let body = callback_body("sess-door", "tok-door");
    let post = format!(
        "POST {callback} HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let near = callback.replacen("/klarna/", "/KLARNA/", 1);
    // A plugin may carry a token in the path: no log may name it.
    let carried = "path-carried-token-0123456789";
    sensitive(carried);
    let in_path = format!("/klarna/authorization/{carried}/more");
    for request in [
        get(&in_path, "shop.example"),
        post,
        get(&callback, "shop.example"),
        get(&near, "shop.example"),
        get("/klarna/authorized", "shop.example"),
        get("/klarna/authorized/../authorized", "shop.example"),
        get("/klarna%2Fauthorization/cart-1", "shop.example"),
    ] {
        let a = raw(redirect, &request).await.expect("answer");
        assert_eq!(a.status, 404, "{request:?}: {}", a.head);
        assert_eq!(a.header("location"), None);
    }
    assert!(up.recorded().is_empty(), "{:?}", up.recorded());
    assert_eq!(ab.deliveries().await, Vec::<serde_json::Value>::new());
    assert_eq!(solver.recorded().len(), 2);
}

#[tokio::test]
async fn acme_challenges_go_to_the_upstream_by_default() {
    let up = Upstream::start().await;
    let ab = start(&up, "listen_redirect = \"127.0.0.1:3\"", "", false).await;
    let redirect = ab.redirect.expect("redirect listener");
    let challenge = "/.well-known/acme-challenge/abc";
    let a = raw(redirect, &get(challenge, "shop.example"))
        .await
        .expect("answer");
    assert_eq!(a.status, 200, "{}", a.head);
    assert_eq!(up.to_path(challenge).len(), 1);
    // Below it, only the challenge itself: the well-known folder redirects.
    let a = raw(
        redirect,
        &get("/.well-known/acme-challenge", "shop.example"),
    )
    .await;
    assert_eq!(a.map(|a| a.status), Some(308));
}

// ---------------------------------------------------------------------------
// The PROXY protocol.

/// A v2 PROXY header over TCP/IPv4 from `client`, to 127.0.0.1:443.
fn v2_header(client: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = client else {
        panic!("an IPv4 client")
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&v4.ip().octets());
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&v4.port().to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h
}

fn v1_header(client: SocketAddr) -> Vec<u8> {
    format!(
        "PROXY TCP4 {} 127.0.0.1 {} 443\r\n",
        client.ip(),
        client.port()
    )
    .into_bytes()
}

/// A route only 203.0.113.7 may call.
const FENCED: &str = r#"
[[routes]]
name = "fenced"
kind = "klarna_authorization"
path = "/fenced/{reference}"
forward_path = "/fenced/authorized"
secrets = ["integration-test-secret-0123456789"]
allow_ips = ["203.0.113.7"]
"#;

/// A PROXY header, then a callback to the fenced route over TLS on the
/// same connection: the status it gets.
async fn fenced_callback(ab: &Authback, header: &[u8], session: &str) -> u16 {
    let mut tcp = TcpStream::connect(ab.public).await.expect("connect");
    tcp.write_all(header).await.expect("header");
    let tls = tls_handshake(tcp, &ab.ca, &[b"http/1.1"])
        .await
        .expect("TLS");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::post(ab.mint_for("fenced", "cart-9"))
        .header("host", "localhost")
        .body(Full::new(Bytes::from(callback_body(
            session,
            &format!("tok-{session}"),
        ))))
        .expect("request");
    let resp = send.send_request(req).await.expect("answer");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

const FROM_HERE: &str = "proxy_protocol = true\nproxy_protocol_from = [\"127.0.0.0/8\"]";

#[tokio::test]
async fn the_client_a_balancer_names_is_the_one_allow_ips_sees() {
    let up = Upstream::start().await;
    let ab = start(&up, FROM_HERE, FENCED, true).await;
    let allowed: SocketAddr = "203.0.113.7:40000".parse().expect("addr");
    let other: SocketAddr = "198.51.100.1:40000".parse().expect("addr");
    assert_eq!(fenced_callback(&ab, &v1_header(allowed), "s-v1").await, 204);
    assert_eq!(fenced_callback(&ab, &v2_header(allowed), "s-v2").await, 204);
    assert_eq!(fenced_callback(&ab, &v1_header(other), "s-o1").await, 403);
    assert_eq!(fenced_callback(&ab, &v2_header(other), "s-o2").await, 403);
    // The balancer's own health check (v2 LOCAL) is the balancer.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    assert_eq!(fenced_callback(&ab, local, "s-local").await, 403);

    // The pass-through names the same client to the backend.
    let plain = ab.plain.expect("plain listener");
    let mut tcp = TcpStream::connect(plain).await.expect("connect");
    let mut bytes = v2_header(allowed);
    bytes.extend_from_slice(get("/page", "localhost").as_bytes());
    let a = exchange(&mut tcp, &bytes).await.expect("answer");
    assert_eq!(a.status, 200, "{}", a.head);
    let seen = up.to_path("/page");
    assert_eq!(seen[0].header("x-forwarded-for"), Some("203.0.113.7"));
    let delivered = up.wait_for("/fenced/authorized", 2, EVENTUALLY).await;
    let sessions: Vec<String> = delivered
        .iter()
        .map(|r| {
            r.json()["session_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(sessions.contains(&"s-v1".to_string()) && sessions.contains(&"s-v2".to_string()));
}

#[tokio::test]
async fn a_proxy_header_from_anyone_else_is_refused_and_a_request_without_is_served() {
    let up = Upstream::start().await;
    let server = "proxy_protocol = true\nproxy_protocol_from = [\"192.0.2.0/24\"]\nlisten_redirect = \"127.0.0.1:3\"";
    let ab = start(&up, server, "", true).await;
    let forged: SocketAddr = "203.0.113.7:1".parse().expect("addr");
    for addr in [ab.plain.expect("plain"), ab.redirect.expect("redirect")] {
        for header in [v1_header(forged), v2_header(forged)] {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            let mut bytes = header;
            bytes.extend_from_slice(get("/forged", "localhost").as_bytes());
            assert!(
                exchange(&mut tcp, &bytes).await.is_none(),
                "{addr}: answered"
            );
        }
        // Without one, a direct client is served as itself.
        let a = raw(addr, &get("/direct", "shop.example"))
            .await
            .expect("answer");
        assert!(matches!(a.status, 200 | 308), "{}", a.head);
    }
    // Over TLS too: a header before the handshake ends the connection.
    let mut tcp = TcpStream::connect(ab.public).await.expect("connect");
    tcp.write_all(&v1_header(forged)).await.expect("write");
    assert!(tls_handshake(tcp, &ab.ca, &[b"http/1.1"]).await.is_err());
    assert!(up.to_path("/forged").is_empty());
    assert_eq!(
        up.to_path("/direct")[0].header("x-forwarded-for"),
        Some("127.0.0.1")
    );
}

#[tokio::test]
async fn a_balancer_must_send_a_well_formed_header_in_time() {
    let up = Upstream::start().await;
    let server = format!("{FROM_HERE}\nproxy_protocol_timeout = \"300ms\"");
    let ab = start(&up, &server, "", true).await;
    let plain = ab.plain.expect("plain listener");
    let request = get("/served", "localhost");
    let mut wrong_length = v2_header("203.0.113.7:1".parse().expect("addr"));
    wrong_length[13] = 0x21; // IPv6, with an IPv4 block's 12 bytes
    let mut too_long = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
    too_long.extend_from_slice(&[0; 64]);
    for header in [
        Vec::new(),
        b"GARBAGE\r\n".to_vec(),
        b"PROXY TCP4 203.0.113.7\r\n".to_vec(),
        b"PROXY TCP4 203.0.113.7 127.0.0.1 99999 443\r\n".to_vec(),
        wrong_length,
        too_long,
    ] {
        let mut tcp = TcpStream::connect(plain).await.expect("connect");
        let mut bytes = header.clone();
        bytes.extend_from_slice(request.as_bytes());
        let answer = exchange(&mut tcp, &bytes).await;
        assert!(
            answer.is_none(),
            "{header:?}: answered {:?}",
            answer.map(|a| a.head)
        );
    }
    // Truncated: part of a header, then the client's half of the
    // connection closes.
    for part in [
        &b"PROXY TCP4 203.0.113"[..],
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00",
    ] {
        let mut tcp = TcpStream::connect(plain).await.expect("connect");
        tcp.write_all(part).await.expect("write");
        tcp.shutdown().await.expect("half close");
        assert!(exchange(&mut tcp, b"").await.is_none());
    }
    // A slowloris: five bytes of a header, then nothing. The connection is
    // closed once proxy_protocol_timeout passes.
    let mut tcp = TcpStream::connect(plain).await.expect("connect");
    tcp.write_all(b"PROXY").await.expect("write");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(patient(Duration::from_secs(10)), tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a stalled header held its connection: {read:?}"
    );
    assert!(up.to_path("/served").is_empty());
    // A well-formed one is served.
    let mut tcp = TcpStream::connect(plain).await.expect("connect");
    let mut bytes = v1_header("203.0.113.7:1".parse().expect("addr"));
    bytes.extend_from_slice(request.as_bytes());
    assert_eq!(
        exchange(&mut tcp, &bytes).await.map(|a| a.status),
        Some(200)
    );
}

// ---------------------------------------------------------------------------
// Behind an ingress.

#[tokio::test]
async fn behind_an_ingress_only_a_plain_listener_is_needed() {
    let up = Upstream::start().await;
    let dir = TempDir::new();
    let text = format!(
        "[server]\nlisten_plain = \"127.0.0.1:1\"\npublic_url = \"https://shop.example\"\n\
         [admin]\nlisten = \"127.0.0.1:2\"\n[upstream]\nurl = \"{}\"\n",
        up.url()
    );
    let config = authback::Config::parse(&text, dir.path()).expect("valid without [server.tls]");
    assert!(config.server.listen.is_none() && config.server.tls.is_none());
    let plain = authback::listen("127.0.0.1:0".parse().expect("addr"), false).expect("bind");
    let addr = plain.local_addr().expect("addr");
    let listeners = authback::Listeners {
        public: None,
        plain: Some(plain),
        redirect: None,
        admin: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(authback::run(config, listeners, async {
        let _ = stopped.await;
    }));
    eventually!(
        raw(addr, &get("/behind", "shop.example"))
            .await
            .map(|a| a.status)
            == Some(200),
        "the plain listener to serve"
    );
    assert_eq!(
        up.to_path("/behind")[0].header("x-forwarded-proto"),
        Some("http")
    );
    let _ = stop.send(());
    assert!(run.await.expect("run").is_ok());
}
