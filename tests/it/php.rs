//! The example legacy PHP checkout (examples/php-checkout) behind authback,
//! end to end: `php -S` mints the callback URL itself, Klarna's simulated
//! callbacks go through authback, and the checkout places one order per
//! authorization after checking `Authback-Signature`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::common::*;

const LEGACY_TOKEN: &str = "legacy-shop-token-4711";

struct Php {
    child: Child,
    port: u16,
}

impl Drop for Php {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_php(db: &std::path::Path) -> Php {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/php-checkout"
    ));
    let port = free_port();
    let child = Command::new("php")
        .args(["-S", &format!("127.0.0.1:{port}"), "router.php"])
        .current_dir(&dir)
        .env("CHECKOUT_DB", db)
        .env("PUBLIC_URL", "https://localhost")
        .env("AUTHBACK_SECRET", SECRET)
        .env("AUTHBACK_UPSTREAM_SECRET", SIGNING_SECRET)
        .env("LEGACY_TOKEN", LEGACY_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("php -S (CI installs php-cli and php-sqlite3)");
    // From here on, Drop stops the server whatever happens.
    let php = Php { child, port };
    eventually_blocking!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "php -S to listen on port {port}"
    );
    php
}

async fn php_get(port: u16, path: &str) -> serde_json::Value {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect php");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "shop")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let body = send
        .send_request(req)
        .await
        .expect("php answer")
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("php answered: {}", String::from_utf8_lossy(&body)))
}

#[tokio::test]
async fn a_legacy_php_checkout_behind_authback_places_one_order_per_authorization() {
    let dir = TempDir::new();
    let php = start_php(&dir.path().join("shop.db"));
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let extra = r#"
[[routes]]
name = "klarna-form"
kind = "klarna_authorization"
path = "/klarna-form/{reference}"
forward_path = "/authback/authorized"
forward_format = "form"
secrets = ["integration-test-secret-0123456789"]

[[routes]]
name = "legacy"
kind = "klarna_authorization"
path = "/legacy/klarna-push"
forward_format = "original"
unverified = true
"#;
    let text = base_config(&format!("http://127.0.0.1:{}", php.port), &c, &k, extra).replace(
        "forward_path = \"/klarna/authorized\"",
        "forward_path = \"/authback/authorized\"",
    );
    let ab = Authback::start_text(TempDir::new(), cert.der, &text, false).await;

    // The shop mints the callback URL itself, in PHP.
    let start = php_get(php.port, "/checkout/start?ref=cart-42").await;
    let url = start["merchant_urls"]["authorization"]
        .as_str()
        .expect("url")
        .replace("https://localhost", "");
    let body = callback_body("sess-php-json", "tok-php-json-0001");
    for _ in 0..3 {
        let k = klarna_callback(ab.public, &ab.ca, &url, &body).await;
        assert!(k.delivered && k.attempts == 1, "{k:?}");
    }
    let form_url = ab.mint_for("klarna-form", "cart-43");
    let k = klarna_callback(
        ab.public,
        &ab.ca,
        &form_url,
        &callback_body("sess-php-form", "tok php+form&0002"),
    )
    .await;
    assert!(k.delivered);

    // The old endpoint: Klarna's body, byte for byte, once, however often Klarna sends it.
    let legacy_body =
        "{\"session_id\": \"sess-php-legacy\",  \"authorization_token\": \"tok-legacy-0003\"}";
    for _ in 0..3 {
        let k = klarna_callback(
            ab.public,
            &ab.ca,
            &format!("/legacy/klarna-push?token={LEGACY_TOKEN}"),
            legacy_body,
        )
        .await;
        assert!(k.delivered);
    }

    let mut state;
    eventually!(
        {
            state = php_get(php.port, "/orders").await;
            let orders = state["orders"].as_array().map_or(0, |a| a.len());
            let legacy = state["legacy_callbacks"].as_array().map_or(0, |a| a.len());
            orders >= 2 && legacy >= 1
        },
        "two orders and a legacy callback; the shop has {state:#}"
    );
    tokio::time::sleep(ABSENCE).await;
    let state_after = php_get(php.port, "/orders").await;
    assert_eq!(state, state_after, "nothing more arrives later");
    let orders = state["orders"].as_array().expect("orders");
    assert_eq!(orders.len(), 2, "{state:#}");
    let by_session = |s: &str| {
        orders
            .iter()
            .find(|o| o["session_id"] == s)
            .unwrap_or_else(|| panic!("no order for {s}: {state:#}"))
    };
    let json_order = by_session("sess-php-json");
    assert_eq!(json_order["format"], "json");
    assert_eq!(json_order["reference"], "cart-42");
    assert_eq!(json_order["authorization_token"], "tok-php-json-0001");
    assert_eq!(json_order["source"], "callback");
    let form_order = by_session("sess-php-form");
    assert_eq!(form_order["format"], "form");
    assert_eq!(
        form_order["authorization_token"], "tok php+form&0002",
        "form encoding round-trips through $_POST"
    );
    let legacy = state["legacy_callbacks"].as_array().expect("legacy");
    assert_eq!(legacy.len(), 1);
    assert_eq!(legacy[0]["body"], legacy_body, "byte-identical");
    assert_eq!(
        legacy[0]["idempotency_key"].as_str().map(str::len),
        Some(32)
    );
    let m = ab.metrics().await;
    assert_eq!(
        metric(
            &m,
            "authback_deliveries_total{route=\"klarna\",outcome=\"delivered\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "authback_deliveries_total{route=\"klarna\",outcome=\"dead\"}"
        ),
        Some(0.0),
        "the PHP side accepted every signature"
    );
}
