//! `server.hsts`: `Strict-Transport-Security` on proxied answers over TLS
//! that carry none of their own, never on the plain listener, and a value
//! `check` refuses unless its syntax is right.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use crate::common::*;

const HSTS: &str = "max-age=31536000; includeSubDomains";

fn with_hsts(value: &str) -> impl FnOnce(String) -> String + '_ {
    move |t: String| {
        t.replace(
            "shutdown_grace = \"5s\"",
            &format!("shutdown_grace = \"5s\"\nhsts = \"{value}\""),
        )
    }
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "shop.example.com")
        .body(Full::new(Bytes::new()))
        .expect("req")
}

#[tokio::test]
async fn hsts_is_added_over_tls_only_and_the_upstreams_own_is_kept() {
    let up = Upstream::start().await;
    let ab = Authback::start_edited(&up.url(), with_hsts(HSTS), true).await;
    let sts = |h: &http::HeaderMap| {
        h.get_all("strict-transport-security")
            .iter()
            .map(|v| v.to_str().expect("ascii").to_string())
            .collect::<Vec<_>>()
    };

    let (status, headers, _) = ab.https(get("/shop")).await;
    assert_eq!(status, 200);
    assert_eq!(sts(&headers), [HSTS]);

    // The upstream's own header wins, alone.
    up.set(Behaviour::OkWith("strict-transport-security", "max-age=60"));
    let (_, headers, _) = ab.https(get("/shop")).await;
    assert_eq!(sts(&headers), ["max-age=60"]);

    // An error answer gets it too.
    up.set(Behaviour::Status(503));
    let (status, headers, _) = ab.https(get("/shop")).await;
    assert_eq!(status, 503);
    assert_eq!(sts(&headers), [HSTS]);

    // Never on the plain listener, whatever the upstream answers.
    up.set(Behaviour::Ok);
    let tcp = tokio::net::TcpStream::connect(ab.plain.expect("plain listener"))
        .await
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = send.send_request(get("/shop")).await.expect("answer");
    assert_eq!(resp.status(), 200);
    assert_eq!(sts(resp.headers()), Vec::<String>::new());
}

#[tokio::test]
async fn without_server_hsts_no_header_is_added() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let (status, headers, _) = ab.https(get("/shop")).await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key("strict-transport-security"));
}

#[test]
fn check_refuses_an_hsts_value_whose_syntax_is_wrong() {
    let dir = TempDir::new();
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let check = |value: &str| {
        let text = with_hsts(value)(base_config("http://127.0.0.1:1", &c, &k, ""));
        let path = dir.path().join("hsts.toml");
        std::fs::write(&path, text).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_authback"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check("max-age=one year; includeSubDomains");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("server.hsts") && err.contains("max-age is a whole number of seconds"),
        "{err}"
    );
    let (code, err) = check("includeSubDomains; preload");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("server.hsts: max-age is required"), "{err}");
    let (code, err) = check("Max-Age=63072000; includeSubDomains; preload");
    assert_eq!(code, Some(0), "{err}");
}
