//! The shield holds: no spelling of a callback route or a forward path gets
//! around it, heads nginx refuses are refused, only WebSocket is tunnelled,
//! and callback input that two parsers could read two ways is refused.
//! Each test here reproduces a way around the shield that once worked.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(5);

const ROUTES: &str = r#"
[[routes]]
name = "orig"
kind = "klarna_authorization"
path = "/orig/{reference}/cb"
forward_format = "original"
secrets = ["orig-route-secret-0123456789abcdef"]

[[routes]]
name = "shield"
kind = "klarna_authorization"
path = "/shield/{reference}/cb"
forward_format = "original"
unverified = true
"#;

/// Sends `request` (a whole HTTP/1.1 message) on a fresh TLS connection and
/// returns the status code of the answer.
pub(crate) async fn raw(ab: &Authback, request: &str) -> u16 {
    let mut tls = ab.tls(&[b"http/1.1"]).await;
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        while !head.ends_with(b"\r\n") {
            if tls.read_exact(&mut byte).await.is_err() {
                break;
            }
            head.push(byte[0]);
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let line = String::from_utf8_lossy(&head).into_owned();
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {request:?}: {line:?}"))
}

pub(crate) fn post(target: &str, body: &str) -> String {
    format!(
        "POST {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// What the upstream saw, as `METHOD uri` lines.
pub(crate) fn seen(up: &Upstream) -> Vec<String> {
    up.recorded()
        .iter()
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect()
}

#[tokio::test]
async fn no_spelling_of_a_callback_path_reaches_the_backend() {
    let up = Upstream::start().await;
    let ab = Authback::start_with(&up, ROUTES, false).await;
    let body = callback_body("sess-spell", "tok-spell-1");
    for (path, want) in [
        ("/orig/cart-1/cb", 401),
        ("//orig/cart-1/cb", 401),
        ("/orig//cart-1/cb", 401),
        ("/orig/./cart-1/cb", 401),
        ("/orig/x/../cart-1/cb", 401),
        ("/%6Frig/cart-1/cb", 401),
        ("/orig/cart-1/c%62", 401),
        ("/orig%2Fcart-1/cb", 400),
        ("/orig%2fcart-1/cb", 400),
        ("/orig/cart-1/cb;x", 400),
        ("/orig/cart-1;x/cb", 400),
        ("/orig%5Ccart-1/cb", 400),
        ("/orig%2%46cart-1/cb", 400),
        ("/orig%252Fcart-1/cb", 400),
    ] {
        let status = raw(&ab, &post(&format!("{path}?token=bad"), &body)).await;
        assert_eq!(status, want, "{path}");
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
async fn a_valid_callback_on_another_spelling_goes_to_the_canonical_path() {
    let up = Upstream::start().await;
    let ab = Authback::start_with(&up, ROUTES, false).await;
    let minted = ab.mint_for("orig", "cart-1");
    let query = minted.split_once('?').map(|(_, q)| q).expect("query");
    let body = callback_body("sess-canon", "tok-canon-1");
    let status = raw(
        &ab,
        &post(&format!("/orig/x/..//%63art-1/cb?{query}"), &body),
    )
    .await;
    assert_eq!(status, 204);
    let got = up.wait_for("/orig/cart-1/cb", 1, WAIT).await;
    assert_eq!(got.len(), 1, "{:?}", seen(&up));
    assert_eq!(got[0].uri, format!("/orig/cart-1/cb?{query}"));
    assert_eq!(got[0].body, Bytes::from(body));
}

#[tokio::test]
async fn an_unverified_route_dedupes_every_spelling() {
    let up = Upstream::start().await;
    let ab = Authback::start_with(&up, ROUTES, false).await;
    let body = callback_body("sess-unv", "tok-unv-1");
    for path in [
        "/shield/c-9/cb",
        "//shield/c-9/cb",
        "/shield/./c-9/cb",
        "/shield/y/../c-9/cb",
        "/%73hield/c-9/cb",
    ] {
        let status = raw(&ab, &post(&format!("{path}?token=own"), &body)).await;
        assert_eq!(status, 204, "{path}");
    }
    for path in ["/shield%2Fc-9/cb", "/shield/c-9/cb;x"] {
        let status = raw(&ab, &post(&format!("{path}?token=own"), &body)).await;
        assert_eq!(status, 400, "{path}");
    }
    // The backend checks its own token: it must not be given two to choose from.
    let status = raw(&ab, &post("/shield/c-9/cb?token=own&token=other", &body)).await;
    assert_eq!(status, 401);
    // One delivery recorded, and delivered: nothing is left to send.
    let mut listed;
    eventually!(
        {
            listed = ab.deliveries().await;
            listed.iter().all(|d| d["state"] == "delivered")
        },
        "the one delivery delivered: {listed:?}"
    );
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(seen(&up), ["POST /shield/c-9/cb?token=own"]);
}

#[tokio::test]
async fn forward_paths_cannot_be_reached_from_outside() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let forged =
        r#"{"type":"klarna.authorization","id":"x","session_id":"s","authorization_token":"t"}"#;
    for path in [
        "/klarna/authorized",
        "//klarna/authorized",
        "/klarna/./authorized",
        "/klarna/x/../authorized",
        "/klarna/%61uthorized",
        "/klarna/authorized?x=1",
        "/klarna%2Fauthorized",
        "/klarna/authorized;x",
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nIdempotency-Key: forged\r\nAuthback-Attempt: 1\r\nAuthback-Signature: t=1,v1=00\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{forged}",
            forged.len()
        );
        let status = raw(&ab, &request).await;
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
async fn heads_nginx_refuses_are_refused() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    for request in [
        "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "get / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        "GET http://other.example/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ] {
        assert_eq!(raw(&ab, request).await, 400, "{request:?}");
    }
    // Refused, so neither proxied nor recorded: nothing can reach the
    // backend later (see `Authback::deliveries`).
    assert_eq!(seen(&up), Vec::<String>::new(), "reached the backend");
    assert_eq!(
        ab.deliveries().await,
        Vec::<serde_json::Value>::new(),
        "recorded"
    );
    // What stays allowed.
    for request in [
        "OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "GET /old HTTP/1.0\r\n\r\n",
        "GET http://localhost/abs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ] {
        assert_eq!(raw(&ab, request).await, 200, "{request:?}");
    }
    assert_eq!(seen(&up), ["OPTIONS *", "GET /old", "GET /abs"]);
}

#[tokio::test]
async fn http2_authority_and_host_must_agree() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let tls = ab.tls(&[b"h2"]).await;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get("https://localhost/h2")
        .header("host", "evil.example")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let resp = send.send_request(req).await.expect("answer");
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    assert_eq!(status, 400);
    assert_eq!(seen(&up), Vec::<String>::new());
}

#[tokio::test]
async fn only_websocket_is_tunnelled() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let h2c = "GET /up HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    assert_eq!(raw(&ab, h2c).await, 200, "served as plain HTTP/1.1");
    let r = &up.recorded()[0];
    assert_eq!(r.uri, "/up");
    for h in ["upgrade", "http2-settings", "connection"] {
        assert!(r.header(h).is_none(), "{h} crossed: {:?}", r.headers);
    }
    let ws = "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    assert_eq!(raw(&ab, ws).await, 101);
}

#[tokio::test]
async fn control_characters_cannot_make_two_authorizations_one() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let path = ab.mint("cart-1");
    // Once "sx\ny" + "z" and "sx" + "y\nz" shared a dedupe id: the second was
    // answered 204 as a duplicate and never forwarded.
    for body in [
        r#"{"authorization_token":"z","session_id":"sx\ny"}"#,
        r#"{"authorization_token":"y\nz","session_id":"sx"}"#,
        r#"{"authorization_token":"a\u0000","session_id":"s"}"#,
        r#"{"authorization_token":"a","session_id":"s\u007f"}"#,
    ] {
        assert_eq!(ab.callback(&path, body).await.0, 400, "{body}");
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
async fn input_two_parsers_read_two_ways_is_refused() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let path = ab.mint("cart-1");
    let body = callback_body("sess-amb", "tok-amb-1");
    // A second token, however spelled, is refused: PHP reads `token[]` as
    // `token` too, a name read two ways (400).
    for (q, want) in [("&token=x", 401), ("&%74oken=x", 401), ("&token[]=x", 400)] {
        let (status, _) = ab.callback(&format!("{path}{q}"), &body).await;
        assert_eq!(status, want, "{q}");
    }
    for dup in [
        r#"{"authorization_token":"a-1","session_id":"s-1","session_id":"s-2"}"#,
        r#"{"authorization_token":"a-1","authorization_\u0074oken":"a-2","session_id":"s-1"}"#,
    ] {
        assert_eq!(ab.callback(&path, dup).await.0, 400, "{dup}");
    }
    // Refused, so neither proxied nor recorded: nothing can reach the
    // backend later (see `Authback::deliveries`).
    assert_eq!(seen(&up), Vec::<String>::new(), "reached the backend");
    assert_eq!(
        ab.deliveries().await,
        Vec::<serde_json::Value>::new(),
        "recorded"
    );
    // The same callback, said once, still goes through.
    assert_eq!(ab.callback(&path, &body).await.0, 204);
}

#[tokio::test]
async fn minted_urls_live_at_most_max_url_ttl() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    for (ttl, want) in [("36500d", 400), ("8d", 400), ("7d", 200), ("48h", 200)] {
        let body = format!(r#"{{"route":"klarna","reference":"c-1","ttl":"{ttl}"}}"#);
        let (status, text) = ab
            .admin_request("POST", "/v1/callback-urls", &body, None)
            .await;
        assert_eq!(status, want, "{ttl}: {text}");
    }
}

fn config_text(admin: &str, upstream: &str, routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:8443"
public_url = "https://shop.example.com"
[server.tls]
self_signed = true
[admin]
{admin}
[upstream]
url = "http://127.0.0.1:8080"
{upstream}
{routes}
"#
    )
}

#[test]
fn an_open_admin_listener_needs_a_token() {
    let dir = TempDir::new();
    let routes = "[[routes]]\nname = \"k\"\nkind = \"klarna_authorization\"\npath = \"/k/{reference}\"\nforward_path = \"/k/done\"\nsecrets = [\"0123456789abcdef0123456789abcdef\"]\n";
    for listen in ["0.0.0.0:9901", "[::]:9901", "10.1.2.3:9901"] {
        let text = config_text(&format!("listen = \"{listen}\""), "", routes);
        let errors = authback::Config::parse(&text, dir.path()).expect_err(listen);
        let e = errors
            .iter()
            .find(|e| e.key == "admin.token")
            .unwrap_or_else(|| panic!("{listen}: {errors:?}"));
        assert!(e.message.contains("127.0.0.1"), "{}", e.message);
    }
    for admin in [
        "listen = \"127.0.0.1:9901\"",
        "listen = \"[::1]:9901\"",
        "listen = \"0.0.0.0:9901\"\ntoken = \"a-long-admin-token-0123456789\"",
    ] {
        let text = config_text(admin, "", routes);
        assert!(
            authback::Config::parse(&text, dir.path()).is_ok(),
            "{admin}"
        );
    }
}

#[test]
fn check_warns_of_unsigned_deliveries_and_unfenced_unverified_routes() {
    let dir = TempDir::new();
    let routes = "[[routes]]\nname = \"k\"\nkind = \"klarna_authorization\"\npath = \"/k/{reference}\"\nforward_path = \"/k/done\"\nsecrets = [\"0123456789abcdef0123456789abcdef\"]\n[[routes]]\nname = \"u\"\nkind = \"klarna_authorization\"\npath = \"/u\"\nforward_format = \"original\"\nunverified = true\n";
    let text = config_text("listen = \"127.0.0.1:9901\"", "", routes);
    let c = authback::Config::parse(&text, dir.path()).expect("valid");
    let all = c.warnings.join("\n");
    assert!(
        all.contains("routes[0]: forward_format = \"json\" with no upstream.signing_secret"),
        "{all}"
    );
    assert!(
        all.contains("routes[1]: unverified with no allow_ips"),
        "{all}"
    );
    let signed = config_text(
        "listen = \"127.0.0.1:9901\"",
        "signing_secret = \"a-signing-secret-0123456789abcdef\"",
        &routes.replace(
            "unverified = true",
            "unverified = true\nallow_ips = [\"klarna-production\"]",
        ),
    );
    let c = authback::Config::parse(&signed, dir.path()).expect("valid");
    assert!(
        !c.warnings
            .iter()
            .any(|w| w.contains("forged") || w.contains("anyone can")),
        "{:?}",
        c.warnings
    );
}
