//! The callback route end to end: Klarna -> authback -> upstream.

use std::time::Duration;

use aws_lc_rs::hmac;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::common::*;

const FORWARD: &str = "/klarna/authorized";
const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn first_callback_is_forwarded_once_with_every_field_and_header() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let url = ab.mint("cart-123");
    let body = r#"{"authorization_token":"tok-0001-abcdefgh","session_id":"sess-1","merchant_reference1":"order-9"}"#;
    let k = klarna_callback(ab.public, &ab.ca, &url, body).await;
    assert!(
        k.delivered && k.attempts == 1 && k.status == Some(204),
        "{k:?}"
    );

    let got = up.wait_for(FORWARD, 1, WAIT).await;
    assert_eq!(got.len(), 1, "forwarded once");
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.uri, FORWARD);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let id = r
        .header("idempotency-key")
        .expect("Idempotency-Key")
        .to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(r.header("authback-attempt"), Some("1"));
    let v = r.json();
    assert_eq!(v["type"], "klarna.authorization");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["route"], "klarna");
    assert_eq!(v["reference"], "cart-123");
    assert_eq!(v["session_id"], "sess-1");
    assert_eq!(v["authorization_token"], "tok-0001-abcdefgh");
    assert_eq!(v["source"], "callback");
    assert_eq!(v["payload"]["merchant_reference1"], "order-9");
    let received = v["received_at"].as_str().expect("received_at");
    let expires = v["expires_at"].as_str().expect("expires_at");
    assert!(received.ends_with('Z') && expires.ends_with('Z') && expires > received);

    // The signature covers t + "." + body with the signing secret.
    let sig = r.header("authback-signature").expect("signature");
    let (t, mac) = sig
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .expect("t=..,v1=.. form");
    let key = hmac::Key::new(hmac::HMAC_SHA256, SIGNING_SECRET.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&r.body);
    let expected: String = hmac::sign(&key, &signed)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(mac, expected);

    // Recorded as delivered: never sent again (see the retry test).
    eventually!(
        deliveries(&ab.metrics().await, "delivered") == Some(1.0),
        "the delivery recorded as delivered"
    );
    assert_eq!(up.to_path(FORWARD).len(), 1);
    let m = ab.metrics().await;
    assert_eq!(callbacks(&m, "accepted"), Some(1.0));
    assert_eq!(deliveries(&m, "delivered"), Some(1.0));
    ab.stop().await.expect("clean stop");
}

#[tokio::test]
async fn concurrent_and_sequential_duplicates_give_one_forward() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let url = ab.mint("cart-dup");
    let body = callback_body("sess-dup", "tok-dup-0000001");
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (addr, ca, url, body) = (ab.public, ab.ca.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            klarna_callback(addr, &ca, &url, &body).await
        }));
    }
    for t in tasks {
        let k = t.await.expect("task");
        assert!(k.delivered && k.status == Some(204), "{k:?}");
    }
    for _ in 0..3 {
        assert_eq!(ab.callback(&url, &body).await.0, 204);
    }
    let got = up.wait_for(FORWARD, 1, WAIT).await;
    tokio::time::sleep(ABSENCE).await;
    assert_eq!(
        up.to_path(FORWARD).len(),
        1,
        "one forward for 8 identical callbacks: {got:?}"
    );
    let m = ab.metrics().await;
    assert_eq!(callbacks(&m, "accepted"), Some(1.0));
    assert_eq!(callbacks(&m, "duplicate"), Some(7.0));
}

#[tokio::test]
async fn a_new_token_for_the_same_session_is_forwarded_again() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let url = ab.mint("cart-2");
    assert_eq!(
        ab.callback(&url, &callback_body("sess-2", "tok-first-0001"))
            .await
            .0,
        204
    );
    assert_eq!(
        ab.callback(&url, &callback_body("sess-2", "tok-second-002"))
            .await
            .0,
        204
    );
    let got = up.wait_for(FORWARD, 2, WAIT).await;
    assert_eq!(got.len(), 2);
    let mut tokens: Vec<String> = got
        .iter()
        .map(|r| {
            r.json()["authorization_token"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    tokens.sort();
    assert_eq!(tokens, ["tok-first-0001", "tok-second-002"]);
    assert_ne!(
        got[0].header("idempotency-key"),
        got[1].header("idempotency-key")
    );
}

#[tokio::test]
async fn every_token_failure_is_401_and_forwards_nothing() {
    let up = Upstream::start().await;
    sensitive("a-fixed-static-token-value-123");
    let ab = Authback::start_with(
        &up,
        r#"
[[routes]]
name = "other"
kind = "klarna_authorization"
path = "/other/{reference}"
forward_path = "/other/authorized"
secrets = ["a-different-secret-for-other-route"]

[[routes]]
name = "static"
kind = "klarna_authorization"
path = "/static/callback"
forward_path = "/static/authorized"
static_tokens = ["a-fixed-static-token-value-123"]
"#,
        false,
    )
    .await;
    let body = callback_body("sess-401", "tok-401-0000001");
    let now = authback::types::unix_ms() / 1000;
    let secret = authback::types::Secret::new(SECRET);
    let other = authback::types::Secret::new("a-different-secret-for-other-route");
    let mint = |s: &authback::types::Secret, route: &str, reference: &str, exp: u64| {
        authback::callback::token::mint(s, route, reference, exp)
    };
    let cases = [
        ("missing", "/klarna/authorization/cart-1".to_string()),
        ("empty", "/klarna/authorization/cart-1?token=".to_string()),
        (
            "malformed",
            "/klarna/authorization/cart-1?token=v1.abc.def".to_string(),
        ),
        (
            "garbage",
            "/klarna/authorization/cart-1?token=hello".to_string(),
        ),
        (
            "expired",
            format!(
                "/klarna/authorization/cart-1?token={}",
                mint(&secret, "klarna", "cart-1", now - 1)
            ),
        ),
        (
            "wrong secret",
            format!(
                "/klarna/authorization/cart-1?token={}",
                mint(&other, "klarna", "cart-1", now + 600)
            ),
        ),
        (
            "other reference",
            format!(
                "/klarna/authorization/cart-1?token={}",
                mint(&secret, "klarna", "cart-2", now + 600)
            ),
        ),
        (
            "other route",
            format!(
                "/klarna/authorization/cart-1?token={}",
                mint(&secret, "other", "cart-1", now + 600)
            ),
        ),
        (
            "static on hmac route",
            "/klarna/authorization/cart-1?token=a-fixed-static-token-value-123".to_string(),
        ),
        (
            "wrong static",
            "/static/callback?token=a-fixed-static-token-value-124".to_string(),
        ),
    ];
    for (what, url) in &cases {
        let (status, body_out) = ab.callback(url, &body).await;
        assert_eq!(status, 401, "{what}");
        let v: serde_json::Value = serde_json::from_slice(&body_out).expect("json error");
        assert_eq!(v["error"], "invalid_token", "{what}");
    }
    // The right static token and the rotated (second) secret both pass.
    assert_eq!(
        ab.callback(
            "/static/callback?token=a-fixed-static-token-value-123",
            &body
        )
        .await
        .0,
        204
    );
    let old = authback::types::Secret::new("old-secret-still-verifies-0123456789");
    let url = format!(
        "/klarna/authorization/cart-1?token={}",
        mint(&old, "klarna", "cart-1", now + 600)
    );
    assert_eq!(
        ab.callback(&url, &callback_body("sess-rot", "tok-rot-000001"))
            .await
            .0,
        204
    );
    up.wait_for("/static/authorized", 1, WAIT).await;
    up.wait_for(FORWARD, 1, WAIT).await;
    // Only the two valid callbacks were recorded: nothing else can follow.
    assert_eq!(ab.deliveries().await.len(), 2);
    assert_eq!(
        up.to_path(FORWARD).len(),
        1,
        "only the valid callback reached the upstream"
    );
    assert_eq!(up.to_path("/static/authorized").len(), 1);
    let m = ab.metrics().await;
    assert_eq!(callbacks(&m, "invalid_token"), Some(9.0));
}

#[tokio::test]
async fn bad_input_gets_its_status_and_forwards_nothing() {
    let up = Upstream::start().await;
    let ab = Authback::start_with(
        &up,
        r#"
[[routes]]
name = "fenced"
kind = "klarna_authorization"
path = "/fenced/{reference}"
forward_path = "/fenced/authorized"
secrets = ["integration-test-secret-0123456789"]
allow_ips = ["klarna-production", "10.0.0.0/8"]
"#,
        false,
    )
    .await;
    let url = ab.mint("cart-bad");
    // Wrong method.
    let req = Request::get(url.as_str())
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let (status, headers, _) = ab.https(req).await;
    assert_eq!(status, 405);
    assert_eq!(
        headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    // Too large, with and without a Content-Length.
    let big = format!(
        r#"{{"authorization_token":"t","session_id":"s","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    assert_eq!(ab.callback(&url, &big).await.0, 413);
    let tls = ab.tls(&[b"h2"]).await;
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2");
    tokio::spawn(conn);
    let big = Bytes::from(big);
    let chunks = Chunks(vec![big.slice(..100), big.slice(100..)]);
    let req = Request::post(format!("https://localhost{url}"))
        .body(chunks)
        .expect("req");
    let resp = h2.send_request(req).await.expect("h2 answer");
    assert_eq!(resp.status(), 413, "chunked body over the limit");
    // Not JSON, not an object, fields missing, empty or too long.
    for bad in [
        "not json".to_string(),
        "[1,2]".to_string(),
        r#"{"session_id":"s"}"#.to_string(),
        r#"{"authorization_token":"","session_id":"s"}"#.to_string(),
        r#"{"authorization_token":"t","session_id":7}"#.to_string(),
        format!(
            r#"{{"authorization_token":"{}","session_id":"s"}}"#,
            "t".repeat(1025)
        ),
    ] {
        let (status, body) = ab.callback(&url, &bad).await;
        assert_eq!(status, 400, "{bad:.40}");
        assert!(String::from_utf8_lossy(&body).contains("bad_request"));
    }
    // A reference that breaks the rule.
    let (status, _) = ab
        .callback(
            "/klarna/authorization/bad%20ref?token=x",
            &callback_body("s", "t"),
        )
        .await;
    assert_eq!(status, 400);
    // A source address outside allow_ips.
    let fenced = ab.mint_for("fenced", "c-1");
    let (status, body) = ab.callback(&fenced, &callback_body("s-f", "t-f")).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("forbidden"));

    // Refused, so not recorded: nothing can be forwarded later.
    assert_eq!(ab.deliveries().await, Vec::<serde_json::Value>::new());
    assert!(
        up.recorded().is_empty(),
        "nothing forwarded: {:?}",
        up.recorded()
    );
}

#[tokio::test]
async fn upstream_failing_three_times_gives_four_attempts_and_one_acceptance() {
    let up = Upstream::start().await;
    up.set(Behaviour::Fail {
        times: 3,
        status: 503,
    });
    let ab = Authback::start(&up).await;
    let url = ab.mint("cart-retry");
    assert_eq!(
        ab.callback(&url, &callback_body("sess-retry", "tok-retry-000001"))
            .await
            .0,
        204
    );
    let got = up.wait_for(FORWARD, 4, WAIT).await;
    assert_eq!(got.len(), 4);
    let attempts: Vec<&str> = got
        .iter()
        .filter_map(|r| r.header("authback-attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3", "4"]);
    let keys: Vec<&str> = got
        .iter()
        .filter_map(|r| r.header("idempotency-key"))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] == w[1]),
        "same Idempotency-Key on every attempt"
    );
    eventually!(
        deliveries(&ab.metrics().await, "delivered") == Some(1.0),
        "the fourth attempt recorded as delivered"
    );
    tokio::time::sleep(ABSENCE).await;
    assert_eq!(up.to_path(FORWARD).len(), 4, "never again after the 2xx");
    let m = ab.metrics().await;
    assert_eq!(deliveries(&m, "retry"), Some(3.0));
    assert_eq!(deliveries(&m, "delivered"), Some(1.0));
    assert_eq!(metric(&m, "authback_delivery_queue_depth"), Some(0.0));
}

#[tokio::test]
async fn work_that_arrives_while_every_delivery_slot_is_busy_is_still_sent() {
    // One slot, and each delivery holds it for 300 ms: the callbacks after
    // the first arrive while the worker has no slot and does not listen for
    // new work. Each must still go out once a slot frees.
    let up = Upstream::start().await;
    up.set(Behaviour::Slow(Duration::from_millis(300)));
    let ab = Authback::start_edited(
        &up.url(),
        |c| c.replace("[delivery]\n", "[delivery]\nmax_in_flight = 1\n"),
        false,
    )
    .await;
    for i in 0..4 {
        let (status, _) = ab
            .callback(
                &ab.mint(&format!("cart-s{i}")),
                &callback_body(&format!("sess-s{i}"), &format!("tok-slot-{i:08}")),
            )
            .await;
        assert_eq!(status, 204);
    }
    let got = up.wait_for(FORWARD, 4, WAIT).await;
    let mut sessions: Vec<String> = got
        .iter()
        .map(|r| r.json()["session_id"].as_str().unwrap_or("").to_string())
        .collect();
    sessions.sort();
    assert_eq!(sessions, ["sess-s0", "sess-s1", "sess-s2", "sess-s3"]);
}

#[tokio::test]
async fn acks_stay_immediate_while_the_upstream_hangs() {
    let up = Upstream::start().await;
    up.set(Behaviour::Hang);
    let ab = Authback::start(&up).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (addr, ca, url) = (ab.public, ab.ca.clone(), ab.mint(&format!("cart-h{i}")));
        tasks.push(tokio::spawn(async move {
            klarna_callback(
                addr,
                &ca,
                &url,
                &callback_body(&format!("sess-h{i}"), &format!("tok-hang-{i:08}")),
            )
            .await
        }));
    }
    for t in tasks {
        let k = t.await.expect("task");
        // Within Klarna's 2 s read timeout, on the first attempt.
        assert!(k.delivered && k.attempts == 1, "{k:?}");
    }
    let m = ab.metrics().await;
    assert_eq!(callbacks(&m, "accepted"), Some(40.0));
    assert_eq!(metric(&m, "authback_delivery_queue_depth"), Some(40.0));
}

#[tokio::test]
async fn a_4xx_makes_a_delivery_dead_and_replay_delivers_it() {
    let up = Upstream::start().await;
    up.set(Behaviour::Status(422));
    let ab = Authback::start(&up).await;
    let url = ab.mint("cart-dead");
    assert_eq!(
        ab.callback(&url, &callback_body("sess-dead", "tok-dead-123456"))
            .await
            .0,
        204
    );
    up.wait_for(FORWARD, 1, WAIT).await;
    let mut dead;
    eventually!(
        {
            dead = ab
                .admin_request("GET", "/v1/deliveries?state=dead", "", None)
                .await
                .1;
            dead.contains("sess-dead")
        },
        "the delivery listed as dead"
    );
    let list: serde_json::Value = serde_json::from_str(&dead).expect("json list");
    assert_eq!(list[0]["session_id"], "sess-dead");
    assert_eq!(
        list[0]["authorization_token"], "3456",
        "redacted to the last 4"
    );
    assert!(!dead.contains("tok-dead-123456"));
    let id = list[0]["id"].as_str().expect("id").to_string();
    // Dead after its one attempt: nothing is left to retry it.
    assert_eq!(list[0]["attempts"], 1, "{dead}");
    assert_eq!(up.to_path(FORWARD).len(), 1, "a 4xx is not retried");

    up.set(Behaviour::Ok);
    let (status, _) = ab
        .admin_request("POST", &format!("/v1/deliveries/{id}/replay"), "", None)
        .await;
    assert_eq!(status, 202);
    let got = up.wait_for(FORWARD, 2, WAIT).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].header("authback-attempt"), Some("2"));
    assert_eq!(got[1].header("idempotency-key"), Some(id.as_str()));
    // Replaying a delivered one is refused; an unknown id is 404.
    eventually!(
        ab.admin_request("POST", &format!("/v1/deliveries/{id}/replay"), "", None)
            .await
            .0
            == 409,
        "a replay of the delivered {id} refused"
    );
    let (status, _) = ab
        .admin_request(
            "POST",
            "/v1/deliveries/00000000000000000000000000000000/replay",
            "",
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn form_and_original_formats() {
    let up = Upstream::start().await;
    let ab = Authback::start_with(
        &up,
        r#"
[[routes]]
name = "legacy"
kind = "klarna_authorization"
path = "/legacy/{reference}"
forward_path = "/legacy/authorized"
forward_format = "form"
secrets = ["integration-test-secret-0123456789"]

[[routes]]
name = "shield"
kind = "klarna_authorization"
path = "/checkout/klarna/push"
forward_format = "original"
unverified = true
"#,
        false,
    )
    .await;
    let legacy = ab.mint_for("legacy", "o-7");
    assert_eq!(
        ab.callback(&legacy, &callback_body("sess-form", "tok form+&="))
            .await
            .0,
        204
    );
    let got = up.wait_for("/legacy/authorized", 1, WAIT).await;
    assert_eq!(
        got[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let form = String::from_utf8_lossy(&got[0].body).into_owned();
    assert!(
        form.contains("authorization_token=tok+form%2B%26%3D"),
        "{form}"
    );
    assert!(form.contains("&reference=o-7&"), "{form}");
    assert!(
        form.contains("&payload=%7B%22authorization_token"),
        "{form}"
    );

    // The original body byte for byte, at the path and query it came on.
    let raw = "{ \"session_id\" : \"sess-orig\", \"authorization_token\": \"tok-orig-99\" }";
    for _ in 0..3 {
        assert_eq!(
            ab.callback("/checkout/klarna/push?token=backend-own-token", raw)
                .await
                .0,
            204
        );
    }
    let got = up.wait_for("/checkout/klarna/push", 1, WAIT).await;
    tokio::time::sleep(ABSENCE).await;
    assert_eq!(up.to_path("/checkout/klarna/push").len(), 1);
    assert_eq!(got[0].uri, "/checkout/klarna/push?token=backend-own-token");
    assert_eq!(&got[0].body[..], raw.as_bytes());
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert!(got[0].header("idempotency-key").is_some());
}

#[tokio::test]
async fn repeated_bad_tokens_from_one_address_get_429_but_valid_callbacks_pass() {
    let up = Upstream::start().await;
    let ab = Authback::start_with(&up, "[limits]\nfailed_token_per_ip = \"3/m\"\n", false).await;
    let bad = "/klarna/authorization/cart-rl?token=v1.1.guess";
    let body = callback_body("sess-rl", "tok-rl-00000001");
    for _ in 0..3 {
        assert_eq!(ab.callback(bad, &body).await.0, 401);
    }
    let req = Request::post(bad)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body.clone())))
        .expect("req");
    let (status, headers, _) = ab.https(req).await;
    assert_eq!(status, 429);
    let retry: u64 = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // Klarna's real callback from the same address is not locked out.
    assert_eq!(ab.callback(&ab.mint("cart-rl"), &body).await.0, 204);
    let m = ab.metrics().await;
    assert_eq!(callbacks(&m, "rate_limited"), Some(1.0));
    assert_eq!(up.wait_for(FORWARD, 1, WAIT).await.len(), 1);
}

/// `callback_per_ip` caps every callback from one client address, keyed by
/// the real client IP behind a trusted proxy; pass-through is never limited.
#[tokio::test]
async fn callback_per_ip_caps_each_client_address_and_never_pass_through() {
    let up = Upstream::start().await;
    let ab = Authback::start_edited(
        &up.url(),
        |t| {
            t.replace(
                "shutdown_grace = \"5s\"",
                "shutdown_grace = \"5s\"\ntrusted_proxies = [\"127.0.0.0/8\"]",
            ) + "[limits]\ncallback_per_ip = \"4/m\"\n"
        },
        false,
    )
    .await;
    let send = |ip: &'static str, i: usize| {
        let req = Request::post(ab.mint(&format!("cart-cap-{i}")))
            .header("host", "localhost")
            .header("x-forwarded-for", ip)
            .body(Full::new(Bytes::from(callback_body(
                &format!("sess-cap-{ip}-{i}"),
                &format!("tok-cap-{ip}-{i:04}"),
            ))))
            .expect("req");
        ab.https(req)
    };
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(send("203.0.113.7", i).await.0.as_u16());
    }
    assert_eq!(statuses, [204, 204, 204, 204, 429, 429]);
    let (status, headers, _) = send("203.0.113.7", 6).await;
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"));
    // Another client behind the same proxy has its own quota.
    assert_eq!(send("198.51.100.9", 0).await.0, 204);
    // Pass-through from the capped address is never limited.
    for _ in 0..20 {
        let req = Request::get("/catalog")
            .header("host", "localhost")
            .header("x-forwarded-for", "203.0.113.7")
            .body(Full::new(Bytes::new()))
            .expect("req");
        assert_eq!(ab.https(req).await.0, 200);
    }
    let m = ab.metrics().await;
    assert_eq!(callbacks(&m, "rate_limited"), Some(3.0));
    assert_eq!(callbacks(&m, "accepted"), Some(5.0));
    assert_eq!(up.wait_for(FORWARD, 5, WAIT).await.len(), 5);
}

/// A request body fed from a channel, so the test decides when it is sent.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A callback refused before its body is read (here a bad token) over
/// HTTP/2: the client gets the answer, and its stream is left open for the
/// body it is still sending rather than reset (some clients, curl among
/// them, then report the reset and not the answer).
#[tokio::test]
async fn an_http2_refusal_does_not_reset_the_stream_the_body_is_still_on() {
    use http_body_util::BodyExt;
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let tls = ab.tls(&[b"h2"]).await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let path = format!("{}x", ab.mint("h2-early"));
    let req = Request::post(format!("https://localhost{path}"))
        .body(ChannelBody(rx))
        .expect("req");
    let resp = send.send_request(req).await.expect("answer");
    assert_eq!(resp.status(), 401);
    let body = resp.into_body().collect().await.expect("answer body");
    assert!(String::from_utf8_lossy(&body.to_bytes()).contains("invalid_token"));
    // A reset would end the client's sending: the channel would close.
    let reset = tokio::time::timeout(Duration::from_secs(1), tx.closed()).await;
    assert!(reset.is_err(), "the stream was reset under the body");
    tx.send(Bytes::from_static(b"{}"))
        .await
        .expect("the body goes out");
}

/// An `[ip_sets]` list read from a file fences a route, and follows the
/// file: a change that parses takes effect while serving; a bad or empty
/// file keeps the last good list rather than opening (or closing) the
/// route.
#[tokio::test]
async fn an_ip_set_file_fences_a_route_and_is_reloaded_on_change() {
    let up = Upstream::start().await;
    let dir = TempDir::new();
    let list = dir.path().join("office.txt");
    std::fs::write(&list, "# not this machine\n10.0.0.0/8\n").expect("write");
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let text = base_config(
        &up.url(),
        &c,
        &k,
        "allow_ips = [\"office\"]\n[ip_sets]\noffice = \"file:office.txt\"\n",
    );
    let ab = Authback::start_text(dir, cert.der, &text, false).await;
    let url = ab.mint("ip-1");
    let body = callback_body("sess-ip-1", "tok-ip-000001");
    assert_eq!(ab.callback(&url, &body).await.0, 403);

    std::fs::write(&list, "127.0.0.1\n").expect("write");
    eventually!(
        ab.callback(&url, &body).await.0 == 204,
        "the reloaded list to let this machine in"
    );

    // A file that does not parse, then an empty one: the last good list stays.
    for bad in ["127.0.0.1\nnot-an-address\n", "# nothing\n"] {
        std::fs::write(&list, bad).expect("write");
        tokio::time::sleep(ABSENCE).await;
        assert_eq!(ab.callback(&url, &body).await.0, 204, "after {bad:?}");
    }
}
