//! The doctor's probe nonces: `POST /v1/probes` hands one out, to the
//! admin token's holder only. Then the nonce's life in each store kind: one
//! use, one minute, shared by replicas.

use std::net::SocketAddr;
use std::time::Duration;

use authback::store::{ProbeNonce, PROBE_TTL};
use authback::types::unix_ms;
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::common::*;
use crate::store::{open, Env, Kind};

const ADMIN_TOKEN: &str = "probe-admin-token-0123456789abcdef";

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
