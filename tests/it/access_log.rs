//! The access log: one JSON line per request on a public listener, with
//! what an operator needs (who, what, how it ended, how long, the
//! upstream's part) and never a query string or a token; a file reopened
//! on SIGHUP with no line lost.

use std::path::Path;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::common::*;

const ON: &str = "[access_log]\nenabled = true\npath = \"access.log\"\n";

/// The lines of the access log at `path` so far, each parsed.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits for `n` lines in the access log at `path`; returns them.
async fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    eventually!(
        lines(path).len() >= n,
        "{n} lines in {}, have {:?}",
        path.display(),
        lines(path)
    );
    lines(path)
}

/// The one line whose path is `path`.
fn line_for<'a>(all: &'a [Value], path: &str) -> &'a Value {
    let found: Vec<&Value> = all.iter().filter(|l| l["path"] == path).collect();
    assert_eq!(found.len(), 1, "one line for {path} in {all:#?}");
    found[0]
}

/// One request over plain HTTP/1.1 to `addr`: status and body.
async fn plain(addr: std::net::SocketAddr, req: Request<Full<Bytes>>) -> (u16, Bytes) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = send.send_request(req).await.expect("answer");
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body().collect().await.expect("body").to_bytes(),
    )
}

#[tokio::test]
async fn proxied_and_callback_requests_get_one_line_each_with_their_fields() {
    let up = Upstream::start().await;
    let ab = Authback::start_with(&up, ON, true).await;
    let log = ab.dir.path().join("access.log");
    let before = authback::types::unix_ms();

    // A proxied GET over TLS, with a query and a request id.
    let query_value = "query-value-never-logged-0123";
    sensitive(query_value);
    let get = Request::get(format!("/shop/page?utm={query_value}"))
        .header("host", "shop.example.com")
        .header("x-request-id", "req-42")
        .body(Full::new(Bytes::new()))
        .expect("req");
    assert_eq!(ab.https(get).await.0, 200);
    // A proxied POST on the plain listener: the upstream echoes the body.
    let form = "a=1&b=2&c=3";
    let post = Request::post("/shop/form")
        .header("host", "shop.example.com")
        .body(Full::new(Bytes::from(form)))
        .expect("req");
    let (status, echoed) = plain(ab.plain.expect("plain listener"), post).await;
    assert_eq!((status, echoed.len()), (200, form.len()));
    // A callback.
    let url = ab.mint("cart-logged");
    let body = callback_body("sess-log-1", "tok-log-0123456789");
    assert_eq!(ab.callback(&url, &body).await.0, 204);
    // A callback refused.
    let (status, _) = ab
        .callback("/klarna/authorization/cart-logged?token=v1.1.nope", &body)
        .await;
    assert_eq!(status, 401);

    let all = wait_lines(&log, 4).await;
    assert_eq!(all.len(), 4, "{all:#?}");
    let fields = [
        "time",
        "client",
        "method",
        "path",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "route",
        "upstream_status",
        "upstream_ms",
        "tls",
        "request_id",
    ];
    for l in &all {
        let keys: Vec<&str> = l
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = fields.to_vec();
        want.sort_unstable();
        let mut have = keys.clone();
        have.sort_unstable();
        assert_eq!(have, want, "{l}");
        let at = time::OffsetDateTime::parse(
            l["time"].as_str().expect("time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339");
        assert_eq!(at.offset(), time::UtcOffset::UTC, "{l}");
        let at_ms = (at.unix_timestamp_nanos() / 1_000_000) as u64;
        assert!(
            at_ms + 1 >= before && at_ms <= authback::types::unix_ms(),
            "{l}"
        );
        assert_eq!(l["client"], "127.0.0.1");
        assert!(l["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{l}");
    }

    let g = line_for(&all, "/shop/page");
    assert_eq!(g["method"], "GET");
    assert_eq!(g["status"], 200);
    assert_eq!(g["route"], "proxy");
    assert_eq!(g["upstream_status"], 200);
    assert!(g["upstream_ms"].as_f64().is_some_and(|d| d >= 0.0), "{g}");
    assert_eq!(g["tls"], "TLSv1.3");
    assert_eq!(g["request_id"], "req-42");
    assert_eq!(
        (g["bytes_in"].as_u64(), g["bytes_out"].as_u64()),
        (Some(0), Some(0))
    );

    let p = line_for(&all, "/shop/form");
    assert_eq!(p["method"], "POST");
    assert_eq!(p["tls"], Value::Null, "the plain listener");
    assert_eq!(p["request_id"], Value::Null);
    assert_eq!(p["bytes_in"].as_u64(), Some(form.len() as u64));
    assert_eq!(p["bytes_out"].as_u64(), Some(form.len() as u64));
    assert_eq!(p["upstream_status"], 200);

    // The callbacks, under the route's pattern: no upstream call.
    let pattern = "/klarna/authorization/{reference}";
    let callbacks: Vec<&Value> = all.iter().filter(|l| l["path"] == pattern).collect();
    assert_eq!(callbacks.len(), 2, "{all:#?}");
    for c in &callbacks {
        assert_eq!(c["route"], "klarna");
        assert_eq!(c["method"], "POST");
        assert_eq!(c["tls"], "TLSv1.3");
        assert_eq!(c["upstream_status"], Value::Null);
        assert_eq!(c["upstream_ms"], Value::Null);
    }
    let accepted = callbacks.iter().find(|c| c["status"] == 204).expect("204");
    assert_eq!(accepted["bytes_in"].as_u64(), Some(body.len() as u64));
    assert_eq!(accepted["bytes_out"].as_u64(), Some(0));
    let refused = callbacks.iter().find(|c| c["status"] == 401).expect("401");
    assert!(
        refused["bytes_out"].as_u64().is_some_and(|n| n > 0),
        "{refused}"
    );

    let text = std::fs::read_to_string(&log).expect("log");
    for never in ["?", "utm", query_value, "cart-logged", "token", "tok-log"] {
        assert!(!text.contains(never), "{never} in the access log:\n{text}");
    }
    let m = ab.metrics().await;
    assert_eq!(metric(&m, "authback_access_log_dropped_total"), Some(0.0));
}

/// Behind a balancer that sends the PROXY protocol, the client is the one
/// its header names, as `allow_ips` and `X-Forwarded-For` see it.
#[tokio::test]
async fn the_client_is_the_one_a_proxy_header_names() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start().await;
    let balancer = |t: String| {
        let t = t.replace(
            "shutdown_grace = \"5s\"",
            "shutdown_grace = \"5s\"\nproxy_protocol = true\nproxy_protocol_from = [\"127.0.0.0/8\"]",
        );
        format!("{t}{ON}")
    };
    let ab = Authback::start_edited(&up.url(), balancer, true).await;
    let mut tcp = tokio::net::TcpStream::connect(ab.plain.expect("plain listener"))
        .await
        .expect("connect");
    tcp.write_all(
        b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 443\r\nGET /via-balancer HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.expect("read");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let all = wait_lines(&ab.dir.path().join("access.log"), 1).await;
    let l = line_for(&all, "/via-balancer");
    assert_eq!(l["client"], "203.0.113.9");
    assert_eq!(
        up.to_path("/via-balancer")[0].header("x-forwarded-for"),
        Some("203.0.113.9")
    );
}

/// A token may be in a callback's query (authback's own) or in its path
/// (some plugins put theirs there): neither reaches the access log, for an
/// accepted callback, a refused one, or a refused spelling of the route.
/// A proxied request's query is left out too; its path is logged as it is.
#[tokio::test]
async fn a_token_in_a_callback_path_or_query_never_reaches_the_access_log() {
    let up = Upstream::start().await;
    let plugin = "[[routes]]\nname = \"plugin\"\nkind = \"klarna_authorization\"\npath = \"/plugin/callback\"\nforward_format = \"original\"\nunverified = true\nsubpaths = true\n";
    let ab = Authback::start_with(&up, &format!("{plugin}{ON}"), false).await;
    let log = ab.dir.path().join("access.log");
    let (path_token, query_token, proxy_token) = (
        "path-token-of-the-plugin-0123456789",
        "query-token-of-the-plugin-0123456789",
        "proxy-query-secret-0123456789",
    );
    for t in [path_token, query_token, proxy_token] {
        sensitive(t);
    }
    let body = callback_body("sess-log-2", "tok-log-2-0123456789");

    // The plugin's route, its token in the path and another in the query.
    let (status, _) = ab
        .callback(
            &format!("/plugin/callback/{path_token}?token={query_token}"),
            &body,
        )
        .await;
    assert_eq!(status, 204);
    // authback's own token: minted, and a wrong one. The reference is no
    // secret (authback's own log names it), but the access log leaves the
    // whole path out all the same.
    let reference = "cart-in-the-path-0123";
    let minted = ab.mint(reference);
    assert_eq!(ab.callback(&minted, &body).await.0, 204);
    let wrong = format!("/klarna/authorization/{reference}?token=v1.1.{query_token}");
    assert_eq!(ab.callback(&wrong, &body).await.0, 401);
    // A spelling of the route it does not take, refused before any check.
    let spelling = format!("/klarna/authorization/{reference}/more?token={query_token}");
    assert_eq!(ab.callback(&spelling, &body).await.0, 400);
    // A proxied request with a token in its query.
    let get = Request::get(format!("/account/orders?token={proxy_token}"))
        .header("host", "shop.example.com")
        .body(Full::new(Bytes::new()))
        .expect("req");
    assert_eq!(ab.https(get).await.0, 200);

    let all = wait_lines(&log, 5).await;
    assert_eq!(all.len(), 5, "{all:#?}");
    let by_path = |p: &str| all.iter().filter(|l| l["path"] == p).count();
    assert_eq!(by_path("/plugin/callback"), 1, "{all:#?}");
    assert_eq!(by_path("/klarna/authorization/{reference}"), 3, "{all:#?}");
    assert_eq!(line_for(&all, "/account/orders")["route"], "proxy");
    let statuses: Vec<u64> = all.iter().filter_map(|l| l["status"].as_u64()).collect();
    for s in [204, 204, 401, 400, 200] {
        assert!(statuses.contains(&s), "{statuses:?}");
    }
    let text = std::fs::read_to_string(&log).expect("log");
    for never in [path_token, query_token, proxy_token, reference, "?"] {
        assert!(!text.contains(never), "{never} in the access log:\n{text}");
    }
}

/// Log rotation: the file is renamed, SIGHUP makes authback open a new
/// one at the configured path, and every line of a stream of requests
/// running meanwhile is in one file or the other, once.
#[tokio::test]
async fn sighup_reopens_the_access_log_file_and_loses_no_line() {
    let up = Upstream::start().await;
    let dir = TempDir::new();
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let (public, admin) = (free_port(), free_port());
    let text = on_ports(&base_config(&up.url(), &c, &k, ON), public, admin);
    let (path, _cfg, addr) = write_config(dir.path(), &text, public);
    let child = Killed(spawn_binary(&path, &dir.path().join("stderr.log"), &[]));
    wait_tls(addr, &cert.der).await;
    let (log, rotated) = (
        dir.path().join("access.log"),
        dir.path().join("rotated.log"),
    );

    let tls = tls_connect(addr, &cert.der, &[b"http/1.1"])
        .await
        .expect("tls");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let (sent_tx, mut sent_rx) = tokio::sync::watch::channel(0usize);
    const N: usize = 200;
    let stream = tokio::spawn(async move {
        for i in 0..N {
            let req = Request::get(format!("/page/{i}"))
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))
                .expect("req");
            let resp = send.send_request(req).await.expect("answer");
            assert_eq!(resp.status(), 200);
            let _ = resp.into_body().collect().await;
            let _ = sent_tx.send(i + 1);
        }
    });
    // Rotate mid-stream.
    sent_rx.wait_for(|n| *n >= N / 4).await.expect("requests");
    std::fs::rename(&log, &rotated).expect("rename");
    send_signal(&child.0, "HUP");
    eventually!(log.exists(), "SIGHUP to open a new access.log");
    stream.await.expect("the stream of requests");

    // One more, after the stream: it lands in the new file.
    let last = Request::get("/after-rotation")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let tls = tls_connect(addr, &cert.der, &[b"http/1.1"])
        .await
        .expect("tls");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    assert_eq!(send.send_request(last).await.expect("answer").status(), 200);
    eventually!(
        lines(&log).iter().any(|l| l["path"] == "/after-rotation"),
        "the request after the rotation in the new file"
    );
    let (old, new) = (lines(&rotated), lines(&log));
    assert!(!old.is_empty(), "the lines before the rotation stayed");
    assert!(
        !new.iter().any(|l| l["path"] == "/page/0"),
        "the first request is in the rotated file"
    );
    let mut paths: Vec<String> = old
        .iter()
        .chain(&new)
        .filter_map(|l| l["path"].as_str().map(String::from))
        .filter(|p| p.starts_with("/page/"))
        .collect();
    paths.sort();
    let mut want: Vec<String> = (0..N).map(|i| format!("/page/{i}")).collect();
    want.sort();
    assert_eq!(paths, want, "every request once, in one file or the other");
    let logs = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(
        logs.contains("reopening the access log file"),
        "{logs:.2000}"
    );
}

/// The child process, killed when the test ends, passed or failed.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
