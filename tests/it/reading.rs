//! One reading, end to end: the backend acts on exactly what authback
//! decided. Each test is one row of the review that got around the shield
//! by making authback read a request one way and the backend (PHP) another:
//! the route is fenced by `allow_ips` to a foreign address, so a callback
//! can only be refused, and the handler must never run.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::common::*;
use crate::platforms::{plain, quote, start_php, start_platform_fenced, Php};
use crate::shield::{post, raw, seen};

/// No address of this machine: every callback on a fenced route gets 403.
const FOREIGN: &str = "192.0.2.1/32";

/// How many requests reached the imitation's callback handler and went on
/// past Magento's dry-run probe.
async fn handler_runs(php: &Php) -> usize {
    php.state().await["hits"].as_array().map_or(0, |a| {
        a.iter()
            .filter(|h| {
                !h["answer"]
                    .as_str()
                    .is_some_and(|b| b.contains("accessible"))
            })
            .count()
    })
}

async fn magento() -> (KlarnaApi, TempDir, Php, Authback) {
    let api = KlarnaApi::start().await;
    let dir = TempDir::new();
    let php = start_php("magento2", &dir.path().join("magento.db"), &api);
    let ab = start_platform_fenced(
        "examples/platforms/magento2.toml",
        &php.url(),
        &api,
        FOREIGN,
    )
    .await;
    (api, dir, php, ab)
}

async fn woocommerce() -> (KlarnaApi, TempDir, Php, Authback) {
    let api = KlarnaApi::start().await;
    let dir = TempDir::new();
    let php = start_php("woocommerce", &dir.path().join("wp.db"), &api);
    let ab = start_platform_fenced(
        "examples/platforms/woocommerce.toml",
        &php.url(),
        &api,
        FOREIGN,
    )
    .await;
    (api, dir, php, ab)
}

async fn send(ab: &Authback, pq: &str, content_type: &str, body: &str) -> u16 {
    let req = Request::post(pq)
        .header("host", "shop.example.com")
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    ab.https(req).await.0.as_u16()
}

#[tokio::test]
async fn row_1_a_dot_segment_below_the_magento_route_never_reaches_the_controller() {
    let (_api, _dir, php, ab) = magento().await;
    let t = "m2-quote-token-row1";
    quote(&php, "sess-row1", t).await;
    let body = callback_body("sess-row1", "tok-row1");
    // The imitation runs the controller for each of these when asked
    // directly: authback must not let the raw spelling through.
    assert_eq!(
        plain(
            php.addr,
            "POST",
            &format!("/checkout/klarna/authorize/..?token={t}&dryRun=1"),
            ""
        )
        .await
        .0,
        200,
        "the imitation routes the raw spelling to the controller"
    );
    for pq in [
        format!("/checkout/klarna/authorize/..?token={t}"),
        format!("/checkout/klarna/authorize/%2e%2e?token={t}"),
        format!("/index.php/checkout/klarna/authorize/..?token={t}"),
        format!("/checkout/KLARNA/authorize/x/..?token={t}"),
    ] {
        let status = send(&ab, &pq, "application/json", &body).await;
        assert_ne!(status / 100, 2, "{pq}");
    }
    assert_eq!(handler_runs(&php).await, 0, "the controller ran");
}

#[tokio::test]
async fn row_2_only_the_real_dry_run_probe_passes_through() {
    let (_api, _dir, php, ab) = magento().await;
    let t = "m2-quote-token-row2";
    quote(&php, "sess-row2", t).await;
    let body = callback_body("sess-row2", "tok-row2");
    let many: String = (0..1000).map(|i| format!("a{i}=1&")).collect();
    for pq in [
        format!("/checkout/klarna/authorize?token={t}&dryRun=1&dryRun%00=0"),
        format!("/checkout/klarna/authorize?token={t}&dryRun=1&+dryRun=0"),
        format!("/checkout/klarna/authorize?token={t}&{many}dryRun=1"),
        format!("/checkout/klarna/authorize/dryRun/0/../..?token={t}&dryRun=1"),
    ] {
        send(&ab, &pq, "application/json", &body).await;
    }
    assert_eq!(handler_runs(&php).await, 0, "the controller ran");
    // The probe itself still reaches the module, and is answered there.
    let probe = format!("/checkout/klarna/authorize?token={t}&dryRun=1");
    assert_eq!(send(&ab, &probe, "application/json", "").await, 200);
}

#[tokio::test]
async fn row_3_woocommerce_reads_no_spelling_authback_did_not_route() {
    let (_api, _dir, php, ab) = woocommerce().await;
    let body = callback_body("sess-row3", "tok-row3");
    let spellings = [
        "/?+wc-api=KP_WC_AUTHORIZATION",
        "/?wc-api%00=KP_WC_AUTHORIZATION",
        "/shop/?%20wc-api=kp_wc_authorization",
    ];
    for pq in spellings {
        assert_eq!(
            plain(php.addr, "POST", pq, "{}").await,
            (200, "-1".into()),
            "{pq} is the handler"
        );
    }
    let direct = handler_runs(&php).await;
    for pq in spellings {
        let status = send(&ab, pq, "application/json", &body).await;
        assert_ne!(status / 100, 2, "{pq}");
    }
    let form_json = r#"{"session_id":"sess-row3","authorization_token":"tok-row3","x":"&wc-api=KP_WC_AUTHORIZATION&"}"#;
    for ct in [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=b",
    ] {
        let body = if ct.starts_with("multipart") {
            "--b\r\nContent-Disposition: form-data; name=\"wc-api\"\r\n\r\nKP_WC_AUTHORIZATION\r\n--b--\r\n"
        } else {
            form_json
        };
        let status = send(&ab, "/", ct, body).await;
        assert_eq!(status, 400, "{ct}");
    }
    assert_eq!(handler_runs(&php).await, direct, "the handler ran");
    // An ordinary form post to the shop still goes through.
    assert_eq!(
        send(
            &ab,
            "/",
            "application/x-www-form-urlencoded",
            "comment=wc-api&x=1"
        )
        .await,
        200
    );
}

#[tokio::test]
async fn row_4_authback_headers_and_their_look_alikes_never_reach_the_backend() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let req = Request::post("/checkout/pay")
        .header("host", "localhost")
        .header("authback-attempt", "1")
        .header("Authback-Signature", "t=1,v1=00")
        .header("authback-redelivery", "order-not-placed")
        .header("Authback_Attempt", "1")
        .header("Authback.Signature", "t=1,v1=00")
        .header("authback_redelivery", "x")
        .header("X_Forwarded_For", "203.0.113.9")
        .header("Idempotency.Key", "forged")
        .header("x-kept", "yes")
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("req");
    assert_eq!(ab.https(req).await.0, 200);
    let r = &up.recorded()[0];
    let names: Vec<String> = r
        .headers
        .keys()
        .map(|k| k.as_str().replace(['_', '.'], "-"))
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("authback-")),
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "x-forwarded-for").count(),
        1,
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n == "idempotency-key"), "{names:?}");
    assert_eq!(r.header("x-kept"), Some("yes"));
}

const PHP_FORWARD: &str = r#"
[[routes]]
name = "php"
kind = "klarna_authorization"
path = "/php/{reference}/cb"
forward_path = "/checkout/authorized.php"
secrets = ["php-route-secret-0123456789abcdef"]
"#;

#[tokio::test]
async fn row_5_no_spelling_of_a_php_forward_path_is_proxied() {
    let up = Upstream::start().await;
    let ab = Authback::start_with(&up, PHP_FORWARD, false).await;
    let forged =
        r#"{"type":"klarna.authorization","id":"x","session_id":"s","authorization_token":"t"}"#;
    for path in [
        "/checkout/authorized.php/",
        "/checkout/authorized.php/x",
        "/checkout/authorized.php%2F",
        "/checkout/Authorized.php",
        "/checkout/authorized.php/x/y?z=1",
    ] {
        let status = raw(&ab, &post(path, forged)).await;
        assert!(status == 404 || status == 400, "{path}: {status}");
    }
    // Refused, so neither proxied nor recorded: nothing can reach the
    // backend later (see `Authback::deliveries`).
    assert_eq!(seen(&up), Vec::<String>::new(), "reached the backend");
    assert_eq!(
        ab.deliveries().await,
        Vec::<serde_json::Value>::new(),
        "recorded"
    );
}

#[tokio::test]
async fn row_7_a_token_php_reads_as_another_is_refused() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let path = ab.mint("cart-7");
    let body = callback_body("sess-row7", "tok-row7");
    for q in [
        "&token%00=evil",
        "&+token=evil",
        "&%20token=evil",
        "&token[x]=evil",
    ] {
        let (status, _) = ab.callback(&format!("{path}{q}"), &body).await;
        assert_eq!(status.as_u16() / 100, 4, "{q}");
    }
    // Refused, so neither proxied nor recorded: nothing can reach the
    // backend later (see `Authback::deliveries`).
    assert_eq!(seen(&up), Vec::<String>::new(), "reached the backend");
    assert_eq!(
        ab.deliveries().await,
        Vec::<serde_json::Value>::new(),
        "recorded"
    );
    assert_eq!(ab.callback(&path, &body).await.0, 204);
}

#[tokio::test]
async fn row_9_forwarding_headers_come_from_authback_or_a_trusted_proxy() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let req = Request::get("/page")
        .header("host", "localhost")
        .header("forwarded", "for=203.0.113.9;proto=https")
        .header("x-real-ip", "203.0.113.9")
        .header("x-forwarded-port", "8443")
        .header("x-forwarded-prefix", "/admin")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "evil.example")
        .body(Full::new(Bytes::new()))
        .expect("req");
    assert_eq!(ab.https(req).await.0, 200);
    let r = &up.recorded()[0];
    assert_eq!(r.header("forwarded"), None);
    assert_eq!(r.header("x-real-ip"), None);
    assert_eq!(r.header("x-forwarded-prefix"), None);
    assert_eq!(r.header("x-forwarded-proto"), Some("https"));
    assert_eq!(r.header("x-forwarded-host"), Some("localhost"));
    // public_url is https://localhost: the port the shop's visitors use.
    assert_eq!(r.header("x-forwarded-port"), Some("443"));

    // From a trusted proxy (the test connects from loopback), an ingress's
    // own view of the client's scheme, host and port is kept.
    let trusted = Authback::start_edited(
        &up.url(),
        |t| {
            t.replace(
                "[server]\n",
                "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
            )
        },
        false,
    )
    .await;
    let req = Request::get("/page")
        .header("host", "localhost")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "shop.example.com")
        .header("x-forwarded-port", "8443")
        .header("x-real-ip", "203.0.113.9")
        .body(Full::new(Bytes::new()))
        .expect("req");
    assert_eq!(trusted.https(req).await.0, 200);
    let r = up.recorded().pop().expect("recorded");
    assert_eq!(r.header("x-forwarded-host"), Some("shop.example.com"));
    assert_eq!(r.header("x-forwarded-port"), Some("8443"));
    assert_eq!(r.header("x-real-ip"), None);
}

#[tokio::test]
async fn the_backend_is_sent_the_canonical_path_unless_raw_is_asked_for() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let spelled = "/shop//a/./b/../c%2e?x=%2e%2E";
    assert_eq!(raw(&ab, &post(spelled, "")).await, 200);
    assert_eq!(seen(&up), ["POST /shop/a/c.?x=%2e%2E"]);
    let as_sent = Authback::start_edited(
        &up.url(),
        |t| t.replace("[upstream]\n", "[upstream]\npath_form = \"raw\"\n"),
        false,
    )
    .await;
    assert_eq!(raw(&as_sent, &post(spelled, "")).await, 200);
    assert_eq!(seen(&up)[1], format!("POST {spelled}"));
}
