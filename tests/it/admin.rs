//! The admin listener: probes, metrics, and the /v1 API.

use crate::common::*;

#[tokio::test]
async fn probes_and_metrics_are_served() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    assert_eq!(ab.admin_get("/healthz").await, Ok((200, "ok".to_string())));
    let (status, body) = ab.admin_get("/readyz").await.expect("readyz");
    assert_eq!(status, 200);
    assert!(
        body.contains("memory"),
        "readyz says the store is not durable: {body}"
    );
    let m = ab.metrics().await;
    for name in [
        "authback_callbacks_total{route=\"klarna\",outcome=\"accepted\"}",
        "authback_deliveries_total{route=\"klarna\",outcome=\"delivered\"}",
        "authback_delivery_queue_depth",
        "authback_oldest_pending_seconds",
        "authback_ack_duration_seconds_count",
        "authback_proxy_requests_total{status_class=\"2xx\"}",
    ] {
        assert!(metric(&m, name).is_some(), "{name} missing:\n{m}");
    }
    assert!(m.contains("# TYPE authback_ack_duration_seconds histogram"));
    // The admin API is never served on the public port: there it is proxied.
    let req = http::Request::get("/metrics")
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("req");
    let (status, _, body) = ab.https(req).await;
    assert_eq!(status, 200);
    assert!(!String::from_utf8_lossy(&body).contains("authback_"));
    assert_eq!(up.recorded()[0].uri, "/metrics");
}

#[tokio::test]
async fn callback_urls_are_minted_and_verify() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let (status, body) = ab
        .admin_request(
            "POST",
            "/v1/callback-urls",
            r#"{"route":"klarna","reference":"cart-77","ttl":"1h"}"#,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let url = v["url"].as_str().expect("url");
    assert!(
        url.starts_with("https://localhost/klarna/authorization/cart-77?token=v1."),
        "{url}"
    );
    assert!(v["expires_at"].as_str().expect("expires_at").ends_with('Z'));
    let path = url.trim_start_matches("https://localhost");
    assert_eq!(
        ab.callback(path, &callback_body("sess-m", "tok-minted-01"))
            .await
            .0,
        204
    );
    for bad in [
        r#"{"route":"nope","reference":"x"}"#,
        r#"{"route":"klarna","reference":"has space"}"#,
        r#"{"route":"klarna","reference":"x","ttl":"soon"}"#,
        "not json",
    ] {
        assert_eq!(
            ab.admin_request("POST", "/v1/callback-urls", bad, None)
                .await
                .0,
            400,
            "{bad}"
        );
    }
    let (status, _) = ab
        .admin_request("GET", "/v1/deliveries?state=bogus", "", None)
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_v1_api_requires_the_bearer_token_when_set() {
    let up = Upstream::start().await;
    let with_token = |t: String| {
        t.replace(
            "[admin]\n",
            "[admin]\ntoken = \"admin-token-for-tests-0123\"\n",
        )
    };
    let ab = Authback::start_edited(&up.url(), with_token, false).await;
    assert_eq!(
        ab.admin_request("GET", "/v1/deliveries", "", None).await.0,
        401
    );
    assert_eq!(
        ab.admin_request("GET", "/v1/deliveries", "", Some("wrong"))
            .await
            .0,
        401
    );
    sensitive("admin-token-for-tests-0123");
    let (status, body) = ab
        .admin_request(
            "GET",
            "/v1/deliveries",
            "",
            Some("admin-token-for-tests-0123"),
        )
        .await;
    assert_eq!((status, body.as_str()), (200, "[]"));
    // Probes stay open for the kubelet.
    assert_eq!(ab.admin_get("/healthz").await.map(|r| r.0), Ok(200));
}
