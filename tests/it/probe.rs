//! The doctor's probe nonces: `POST /v1/probes` hands one out, a request
//! on a callback route's path carrying it in `Authback-Probe` is answered
//! by authback itself, once. What an attacker can do with the header:
//! nothing. An unknown, used, malformed or repeated nonce leaves the
//! request to the route's checks (`allow_ips`, tokens, rate limits), the
//! header never reaches the backend, and a live nonce buys only authback's
//! own answer. Last, the nonce's life in each store kind: one use, one
//! minute, shared by replicas.

use std::net::SocketAddr;
use std::time::Duration;

use authback::store::{ProbeNonce, PROBE_TTL};
use authback::types::unix_ms;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::common::*;
use crate::store::{open, Env, Kind};

const ADMIN_TOKEN: &str = "probe-admin-token-0123456789abcdef";

/// Three more routes beside the base config's `klarna` (which has
/// secrets): one fenced off by `allow_ips` from every test address, with
/// an alias; one open to all; one with the plugin's own probe query.
const ROUTES: &str = r#"
[[routes]]
name = "fenced"
kind = "klarna_authorization"
path = "/shop/klarna/callback"
aliases = ["/shop/klarna/callback-alias"]
forward_format = "original"
unverified = true
allow_ips = ["192.0.2.0/24"]

[[routes]]
name = "open"
kind = "klarna_authorization"
path = "/open/klarna/callback"
forward_format = "original"
unverified = true

[[routes]]
name = "dry"
kind = "klarna_authorization"
path = "/dry/authorize"
forward_format = "original"
passthrough_query = ["dryRun=1"]
unverified = true
allow_ips = ["192.0.2.0/24"]
"#;

async fn start(upstream: &Upstream, extra: &str) -> Authback {
    Authback::start_with(upstream, &format!("{ROUTES}{extra}"), false).await
}

/// A fresh nonce from the admin API (no admin token in the base config).
async fn nonce(ab: &Authback) -> String {
    let (status, body) = ab.admin_request("POST", "/v1/probes", "", None).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let n = v["nonce"].as_str().expect("a nonce").to_string();
    sensitive(&n);
    n
}

/// POSTs `body` to `path` with `headers` on a fresh TLS connection.
async fn post(
    ab: &Authback,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    ab.https(
        req.body(Full::new(Bytes::from(body.to_string())))
            .expect("request"),
    )
    .await
}

/// The sum of `authback_callbacks_total` over every route and outcome.
fn callbacks_counted(page: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with("authback_callbacks_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The answer's JSON when it is authback's answer to a probe.
fn probe_answer(status: StatusCode, headers: &HeaderMap, body: &Bytes) -> serde_json::Value {
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(body));
    assert_eq!(headers["cache-control"], "no-store");
    let v: serde_json::Value = serde_json::from_slice(body).expect("JSON");
    assert_eq!(v["authback"], "probe", "{v}");
    v
}

#[tokio::test]
async fn a_live_nonce_is_answered_on_every_route_before_its_checks_and_goes_nowhere() {
    let up = Upstream::start().await;
    let ab = start(&up, "").await;
    let body = callback_body("sess-probe", "tok-probe-0001");
    for (path, route) in [
        ("/shop/klarna/callback", "fenced"),
        ("/shop/klarna/callback-alias", "fenced"),
        ("/klarna/authorization/doctor-probe", "klarna"),
        ("/open/klarna/callback", "open"),
        ("/dry/authorize?dryRun=1", "dry"),
    ] {
        let n = nonce(&ab).await;
        let (s, h, b) = post(&ab, path, &[("authback-probe", &n)], &body).await;
        let v = probe_answer(s, &h, &b);
        assert_eq!(v["route"], route, "{path}: {v}");
        assert_eq!(v["deployment"], "localhost", "{v}");
        assert!(v["replica"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
        let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            ["authback", "deployment", "replica", "route", "version"],
            "nothing else is said: {v}"
        );
    }
    // Neither recorded nor forwarded nor counted as a callback, though the
    // body was a valid callback each time.
    assert!(ab.deliveries().await.is_empty());
    assert!(up.recorded().is_empty(), "{:?}", up.recorded().len());
    assert_eq!(callbacks_counted(&ab.metrics().await), 0.0);
    ab.stop().await.expect("stop");
}

#[tokio::test]
async fn a_nonce_is_good_once_then_the_request_meets_the_routes_checks() {
    let up = Upstream::start().await;
    let ab = start(&up, "").await;
    let n = nonce(&ab).await;
    let probe = [("authback-probe", n.as_str())];
    let body = callback_body("sess-once", "tok-once-0001");
    let (s, h, b) = post(&ab, "/shop/klarna/callback", &probe, &body).await;
    probe_answer(s, &h, &b);
    // Used: the header is as good as absent, everywhere.
    let (s, _, _) = post(&ab, "/shop/klarna/callback", &probe, &body).await;
    assert_eq!(s, 403, "allow_ips");
    let (s, _, _) = post(&ab, "/klarna/authorization/doctor-probe", &probe, &body).await;
    assert_eq!(s, 401, "the token");
    let (s, _, _) = post(&ab, "/open/klarna/callback", &probe, &body).await;
    assert_eq!(s, 204, "a callback like any other");
    // That callback reaches the backend as authback's own request, without
    // the client's header.
    let got = up
        .wait_for("/open/klarna/callback", 1, Duration::from_secs(10))
        .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("authback-probe"), None);
    assert_eq!(callbacks(&ab.metrics().await, "invalid_token"), Some(1.0));
    ab.stop().await.expect("stop");
}

#[tokio::test]
async fn an_unknown_malformed_or_repeated_nonce_changes_nothing() {
    let up = Upstream::start().await;
    let ab = start(&up, "").await;
    let live = nonce(&ab).await;
    let unknown = ProbeNonce::random().expect("nonce").to_string();
    let upper = live.to_uppercase();
    let body = callback_body("sess-bad", "tok-bad-0001");
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("authback-probe", &unknown)],
        vec![("authback-probe", &upper)],
        vec![("authback-probe", "")],
        vec![("authback-probe", "' OR 1=1 --")],
        vec![("authback-probe", &live), ("authback-probe", &live)],
        vec![("authback_probe", &live)],
        vec![("authback.probe", &live)],
        vec![("x-authback-probe", &live)],
    ];
    for headers in &cases {
        let (s, _, _) = post(&ab, "/shop/klarna/callback", headers, &body).await;
        assert_eq!(s, 403, "{headers:?}: allow_ips still decides");
        let (s, _, _) = post(&ab, "/klarna/authorization/x", headers, &body).await;
        assert_eq!(s, 401, "{headers:?}: the token still decides");
        let (s, _, _) = post(&ab, "/dry/authorize", headers, &body).await;
        assert_eq!(s, 403, "{headers:?}");
    }
    assert!(up.recorded().is_empty());
    // None of those took the live nonce.
    let (s, h, b) = post(
        &ab,
        "/shop/klarna/callback",
        &[("authback-probe", &live)],
        &body,
    )
    .await;
    probe_answer(s, &h, &b);
    ab.stop().await.expect("stop");
}

#[tokio::test]
async fn the_header_never_reaches_the_backend_and_the_pass_through_takes_no_nonce() {
    let up = Upstream::start().await;
    let ab = start(&up, "").await;
    let live = nonce(&ab).await;
    let unknown = ProbeNonce::random().expect("nonce").to_string();
    for (path, headers) in [
        ("/some/page", vec![("authback-probe", live.as_str())]),
        ("/some/page", vec![("authback_probe", live.as_str())]),
        // The plugin's own probe, proxied as it is, but not the header.
        (
            "/dry/authorize?dryRun=1",
            vec![("authback-probe", unknown.as_str())],
        ),
    ] {
        let (s, _, _) = post(&ab, path, &headers, "{}").await;
        assert_eq!(s, 200, "{path} {headers:?}: proxied");
    }
    let seen = up.recorded();
    assert_eq!(seen.len(), 3);
    for r in &seen {
        let names: Vec<&str> = r.headers.keys().map(|k| k.as_str()).collect();
        assert!(
            !names.iter().any(|n| n.contains("probe")),
            "{}: {names:?}",
            r.uri
        );
    }
    // The live nonce went through the pass-through twice and is still good.
    let (s, h, b) = post(
        &ab,
        "/open/klarna/callback",
        &[("authback-probe", &live)],
        "",
    )
    .await;
    probe_answer(s, &h, &b);
    ab.stop().await.expect("stop");
}

#[tokio::test]
async fn rate_limits_hold_for_a_request_with_an_unknown_nonce() {
    let up = Upstream::start().await;
    let ab = start(
        &up,
        "[limits]\ncallback_per_ip = \"2/m\"\nfailed_token_per_ip = \"2/m\"\n",
    )
    .await;
    let unknown = ProbeNonce::random().expect("nonce").to_string();
    let probe = [("authback-probe", unknown.as_str())];
    // Two bad tokens use up the failed-token quota ...
    for _ in 0..2 {
        let (s, _, _) = post(&ab, "/klarna/authorization/x?token=nope", &[], "{}").await;
        assert_eq!(s, 401);
    }
    // ... and the callback quota with them: both 429 now, header or not.
    let (s, _, _) = post(&ab, "/klarna/authorization/x?token=nope", &probe, "{}").await;
    assert_eq!(s, 429);
    let body = callback_body("sess-rl", "tok-rl-0001");
    let (s, _, _) = post(&ab, "/open/klarna/callback", &probe, &body).await;
    assert_eq!(s, 429);
    assert!(ab.deliveries().await.is_empty());
    assert!(up.recorded().is_empty());
    ab.stop().await.expect("stop");
}

/// `count` POSTs of `body` to `path`, one connection, each with a header
/// `Authback-Probe` from `nonces` and `X-Forwarded-For: from`; their
/// statuses.
async fn keep_alive(ab: &Authback, path: &str, from: &str, nonces: &[String]) -> Vec<u16> {
    let tls = ab.tls(&[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut out = Vec::new();
    for n in nonces {
        let req = Request::post(path)
            .header("host", "localhost")
            .header("x-forwarded-for", from)
            .header("authback-probe", n.as_str())
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        let resp = send.send_request(req).await.expect("answer");
        out.push(resp.status().as_u16());
        resp.into_body().collect().await.expect("body");
    }
    out
}

#[tokio::test]
async fn guessing_nonces_is_bounded_per_address_without_asking_the_store() {
    let up = Upstream::start().await;
    // The client address comes from X-Forwarded-For, so one test can be
    // several clients.
    let ab = Authback::start_edited(
        &up.url(),
        |t| {
            format!("{t}{ROUTES}").replace(
                "shutdown_grace = \"5s\"",
                "shutdown_grace = \"5s\"\ntrusted_proxies = [\"127.0.0.1/32\"]",
            )
        },
        false,
    )
    .await;
    let guesses: Vec<String> = (0..60)
        .map(|_| ProbeNonce::random().expect("nonce").to_string())
        .collect();
    let statuses = keep_alive(&ab, "/shop/klarna/callback", "198.51.100.7", &guesses).await;
    assert!(statuses.iter().all(|&s| s == 403), "{statuses:?}");
    // Its 61st nonce is not looked up, even a live one ...
    let live = nonce(&ab).await;
    let once = [live.clone()];
    let again = keep_alive(&ab, "/shop/klarna/callback", "198.51.100.7", &once).await;
    assert_eq!(again, [403]);
    // ... which stays live for another address.
    let other = keep_alive(&ab, "/shop/klarna/callback", "198.51.100.8", &once).await;
    assert_eq!(other, [200]);
    assert!(up.recorded().is_empty());
    ab.stop().await.expect("stop");
}

// ---------------------------------------------------------------------------
// The endpoint.

/// One request to the admin API with exactly `headers` (and `Host`).
async fn admin(
    addr: SocketAddr,
    method: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, HeaderMap, String) {
    let tcp = TcpStream::connect(addr).await.expect("connect admin");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri("/v1/probes")
        .header("host", host);
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
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn the_endpoint_needs_the_admin_token_and_answers_no_other_site() {
    sensitive(ADMIN_TOKEN);
    let up = Upstream::start().await;
    let ab = Authback::start_edited(
        &up.url(),
        |t| {
            t.replace(
                "[admin]\nlisten = \"127.0.0.1:2\"",
                &format!("[admin]\nlisten = \"127.0.0.1:2\"\ntoken = \"{ADMIN_TOKEN}\""),
            )
        },
        false,
    )
    .await;
    let host = "127.0.0.1";
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (s, h, b) = admin(ab.admin, "POST", host, &[], "").await;
    assert_eq!(
        (s, h.get("www-authenticate").map(|v| v.as_bytes())),
        (401, Some(&b"Bearer"[..])),
        "{b}"
    );
    let (s, _, b) = admin(
        ab.admin,
        "POST",
        host,
        &[("authorization", "Bearer nope")],
        "",
    )
    .await;
    assert_eq!(s, 401, "{b}");
    assert!(!b.contains("nonce"), "{b}");
    let with = |extra: &'static [(&'static str, &'static str)]| {
        let mut h: Vec<(&str, &str)> = vec![("authorization", bearer.as_str())];
        h.extend_from_slice(extra);
        h
    };
    // Another site's page, token or not.
    for (extra, want) in [
        (&[("origin", "https://evil.example")][..], 403),
        (&[("sec-fetch-site", "cross-site")][..], 403),
        (&[("content-type", "text/plain")][..], 415),
    ] {
        let (s, _, b) = admin(ab.admin, "POST", host, &with(extra), "x").await;
        assert_eq!(s, want, "{extra:?}: {b}");
    }
    let (s, _, b) = admin(ab.admin, "GET", host, &with(&[]), "").await;
    assert_eq!(s, 405, "{b}");
    // The token: a nonce, the header to carry it in, and its expiry.
    let mut seen = Vec::new();
    for body in ["", "{}"] {
        let headers = with(&[("content-type", "application/json")]);
        let (s, _, b) = admin(ab.admin, "POST", host, &headers, body).await;
        assert_eq!(s, 200, "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).expect("JSON");
        let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["expires_at", "header", "nonce"], "{v}");
        assert_eq!(v["header"], "Authback-Probe");
        let n = v["nonce"].as_str().expect("nonce");
        sensitive(n);
        assert!(ProbeNonce::parse(n).is_some(), "{n}");
        assert!(
            v["expires_at"].as_str().is_some_and(|e| e.ends_with('Z')),
            "{v}"
        );
        seen.push(n.to_string());
    }
    assert_ne!(seen[0], seen[1]);
    ab.stop().await.expect("stop");

    // Without admin.token: loopback Host names only.
    let ab = Authback::start(&up).await;
    let (s, _, b) = admin(ab.admin, "POST", "evil.example", &[], "").await;
    assert_eq!(s, 403, "{b}");
    let (s, _, b) = admin(ab.admin, "POST", "localhost", &[], "").await;
    assert_eq!(s, 200, "{b}");
    ab.stop().await.expect("stop");
}

// ---------------------------------------------------------------------------
// The nonce in each store kind.

const TTL: Duration = Duration::from_secs(3600);

async fn a_nonce_is_taken_once(kind: Kind) {
    let env = Env::new(kind);
    let s = open(kind, &env, TTL).await;
    let now = unix_ms();
    let n = ProbeNonce::random().expect("nonce");
    let other = ProbeNonce::random().expect("nonce");
    assert!(!s.take_probe(n, now).await.expect("take"), "unknown");
    s.put_probe(n, now + 60_000).await.expect("put");
    s.put_probe(other, now + 60_000).await.expect("put");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.take_probe(n, now).await.expect("take")
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.expect("task"));
    }
    assert_eq!(won, 1, "{kind:?}: one of 16 concurrent takes");
    assert!(!s.take_probe(n, now).await.expect("take"), "used");
    assert!(
        s.take_probe(other, now).await.expect("take"),
        "another is untouched"
    );
}

async fn a_nonce_lives_until_its_expiry(kind: Kind) {
    let env = Env::new(kind);
    let s = open(kind, &env, TTL).await;
    let now = unix_ms();
    let expires_at = now + PROBE_TTL.as_millis() as u64;
    let (a, b) = (
        ProbeNonce::random().expect("nonce"),
        ProbeNonce::random().expect("nonce"),
    );
    s.put_probe(a, expires_at).await.expect("put");
    s.put_probe(b, expires_at).await.expect("put");
    assert!(s.take_probe(a, expires_at - 1).await.expect("take"));
    assert!(!s.take_probe(b, expires_at).await.expect("take"), "expired");
    assert!(!s.take_probe(b, now).await.expect("take"), "and gone");
    // On the clock: a nonce whose expiry has passed is refused.
    let c = ProbeNonce::random().expect("nonce");
    let soon = unix_ms() + 50;
    s.put_probe(c, soon).await.expect("put");
    eventually!(unix_ms() > soon, "the nonce's expiry to pass");
    assert!(!s.take_probe(c, unix_ms()).await.expect("take"));
}

macro_rules! every_store {
    ($($property:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $property() { super::$property(super::Kind::Memory).await })*
        }
        mod file {
            $(#[tokio::test] async fn $property() { super::$property(super::Kind::File).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $property() { super::$property(super::Kind::Redis).await })*
        }
    };
}

every_store!(a_nonce_is_taken_once, a_nonce_lives_until_its_expiry);

#[tokio::test]
async fn redis_replicas_share_a_nonce_whose_key_expires() {
    let env = Env::new(Kind::Redis);
    let (a, b) = (
        open(Kind::Redis, &env, TTL).await,
        open(Kind::Redis, &env, TTL).await,
    );
    let n = ProbeNonce::random().expect("nonce");
    s_put(&*a, n, unix_ms() + 60_000).await;
    let url = env.redis.as_ref().expect("redis").url();
    let mut c = ::redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let key = format!("t:p:{n}");
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .expect("pttl");
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    assert!(
        b.take_probe(n, unix_ms()).await.expect("take"),
        "another replica"
    );
    assert!(!a.take_probe(n, unix_ms()).await.expect("take"), "used");
    let left: i64 = ::redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut c)
        .await
        .expect("exists");
    assert_eq!(left, 0);
    // Redis itself forgets a nonce at its expiry.
    let m = ProbeNonce::random().expect("nonce");
    s_put(&*a, m, unix_ms() + 50).await;
    let key = format!("t:p:{m}");
    eventually!(
        ::redis::cmd("EXISTS")
            .arg(&key)
            .query_async::<i64>(&mut c)
            .await
            .expect("exists")
            == 0,
        "Redis to expire {key}"
    );
}

async fn s_put(s: &dyn authback::store::Store, n: ProbeNonce, at: u64) {
    s.put_probe(n, at).await.expect("put");
}

#[tokio::test]
async fn the_file_store_keeps_a_nonce_across_a_restart() {
    let env = Env::new(Kind::File);
    let n = ProbeNonce::random().expect("nonce");
    {
        let s = open(Kind::File, &env, TTL).await;
        s.put_probe(n, unix_ms() + 60_000).await.expect("put");
    }
    let s = open(Kind::File, &env, TTL).await;
    assert!(s.take_probe(n, unix_ms()).await.expect("take"));
    assert!(!s.take_probe(n, unix_ms()).await.expect("take"));
}
