//! The real binary: command line, exit codes, signals, and what it logs.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_authback"))
}

/// Waits up to `limit` for the process to exit; kills it and fails the test
/// if it does not.
async fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let waiting = Waiting::new(limit);
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if waiting.expired() {
            let _ = child.kill();
            waiting.give_up(format_args!("authback to exit after SIGTERM"));
        }
        waiting.pause().await;
    }
}

#[test]
fn check_lists_every_problem_and_exits_1() {
    let dir = TempDir::new();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        r#"
[server]
listen = "not-an-address"
shutdown_grace = "forever"
[server.tls]
self_signed = true
[upstream]
url = "http://127.0.0.1:8080"
timeout = "10 parsecs"
[[routes]]
name = "klarna"
kind = "klarna_authorization"
path = "/k/{reference}"
forward_path = "/f"
"#,
    )
    .expect("write");
    let out = bin()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.listen",
        "server.public_url",
        "server.shutdown_grace",
        "upstream.timeout",
        "routes[0].secrets",
    ] {
        assert!(err.contains(key), "{key} not reported in:\n{err}");
    }
    assert!(err.contains("broken.toml"), "names the file: {err}");

    // Unknown keys and values of the wrong type are errors too, and do not
    // hide the others.
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:1\"\nmystery = 1\n[upstream]\nurl = \"http://x:1\"\ntimeout = \"soon\"\nconnect_timeout = 5\n",
    )
    .expect("write");
    let out = bin()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.mystery",
        "upstream.connect_timeout",
        "upstream.timeout",
        "server.public_url",
    ] {
        assert!(err.contains(key), "{key} not reported in:\n{err}");
    }
}

#[test]
fn the_shipped_config_passes_check_and_mint_url_mints_a_valid_token() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let out = bin()
        .args(["check", "--config", shipped])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .args([
            "mint-url",
            "--config",
            shipped,
            "--route",
            "klarna",
            "--reference",
            "cart-1",
            "--ttl",
            "2h",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let token = url.split("?token=").nth(1).expect("token in URL");
    assert!(
        url.starts_with("https://localhost:8443/klarna/authorization/cart-1?token=v1."),
        "{url}"
    );
    let cfg = authback::Config::load(std::path::Path::new(shipped)).expect("config");
    let now = authback::types::unix_ms() / 1000;
    assert_eq!(
        authback::callback::token::verify(token, &cfg.routes[0].secrets, "klarna", "cart-1", now),
        Ok(())
    );
    assert!(authback::callback::token::verify(
        token,
        &cfg.routes[0].secrets,
        "klarna",
        "cart-1",
        now + 2 * 3600 + 1
    )
    .is_err());
    // A reference outside the alphabet is refused.
    let out = bin()
        .args([
            "mint-url",
            "--config",
            shipped,
            "--route",
            "klarna",
            "--reference",
            "a/b",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_port_in_use_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = TempDir::new();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"https://localhost\"\n[server.tls]\nself_signed = true\n[admin]\nlisten = \"127.0.0.1:{}\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n",
            free_port()
        ),
    )
    .expect("write");
    let out = bin().args(["--config"]).arg(&path).output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET path` on the admin port: its status and body, or `None` if
/// nothing answers.
async fn admin_get(admin: u16, path: &str) -> Option<(u16, Bytes)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", admin))
        .await
        .ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let resp = send.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.into_body().collect().await.ok()?.to_bytes()))
}

/// SIGHUP reloads certificate files. With a self-signed certificate there is
/// nothing to reload, and the signal must not end the process (its default
/// action when nobody catches it).
#[tokio::test]
async fn sighup_without_certificate_files_does_not_stop_the_process() {
    let dir = TempDir::new();
    let (public, admin) = (free_port(), free_port());
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{public}\"\npublic_url = \"https://localhost\"\n[server.tls]\nself_signed = true\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n"
        ),
    )
    .expect("write");
    let log_path = dir.path().join("stderr.log");
    let mut child = spawn_binary(&path, &log_path, &[]);
    eventually!(
        admin_get(admin, "/healthz").await == Some((200, Bytes::from_static(b"ok"))),
        "authback to start"
    );
    // Each signal handled (logged) and the process still running: had
    // SIGHUP's default action applied, it would have ended before the log.
    let handled = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches("SIGHUP: no certificate files to reload")
            .count()
    };
    for n in 1..=2 {
        send_signal(&child, "HUP");
        eventually!(
            handled() >= n || child.try_wait().expect("wait").is_some(),
            "SIGHUP number {n} to be handled"
        );
    }
    let exited = child.try_wait().expect("wait");
    let still = admin_get(admin, "/healthz").await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(exited, None, "SIGHUP ended the process");
    assert_eq!(still.map(|r| r.0), Some(200));
    let logs = std::fs::read_to_string(&log_path).expect("logs");
    assert!(
        logs.contains("SIGHUP"),
        "the signal is logged: {logs:.2000}"
    );
}

/// One response head read off `io` (all of it, up to the blank line).
async fn read_head(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    // A byte at a time: what follows the head is not this head's.
    while !answer.ends_with(b"\r\n\r\n") {
        match io.read(&mut byte).await {
            Ok(0) | Err(_) => break,
            Ok(_) => answer.push(byte[0]),
        }
    }
    answer
}

/// With the memory store, a callback still arriving when SIGTERM comes is
/// answered 204 while the listener drains; it must still be forwarded before
/// the process exits, since nothing else would ever deliver it.
#[tokio::test]
async fn a_callback_acknowledged_during_shutdown_is_delivered_before_exit() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start().await;
    let dir = TempDir::new();
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let (public, admin) = (free_port(), free_port());
    let text = on_ports(&base_config(&up.url(), &c, &k, ""), public, admin);
    let (path, cfg, addr) = write_config(dir.path(), &text, public);
    let mut child = spawn_binary(&path, &dir.path().join("stderr.log"), &[]);
    wait_tls(addr, &cert.der).await;

    let url = mint_path(&cfg, "klarna", "cart-drain");
    let body = callback_body("sess-drain", "tok-drain-0001");
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let mut tls = tls_connect(addr, &cert.der, &[b"http/1.1"])
        .await
        .expect("tls");
    // The head asks for `100 Continue`: once it comes, authback has the
    // request in hand and is reading its body.
    let head = format!(
        "POST {url} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("head");
    let answer = read_head(&mut tls).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    tls.write_all(first).await.expect("half the body");
    send_signal(&child, "TERM");
    // Shutdown is under way, with nothing queued, when the body completes.
    eventually!(
        admin_get(admin, "/readyz").await.map(|r| r.0) != Some(200),
        "shutdown to begin (/readyz no longer 200)"
    );
    tls.write_all(rest).await.expect("the rest");
    let answer = read_head(&mut tls).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 204"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    drop(tls);
    let exit = wait_exit(&mut child, Duration::from_secs(15)).await;
    assert_eq!(exit.code(), Some(0));
    let sessions: Vec<String> = up
        .to_path("/klarna/authorized")
        .iter()
        .map(|r| {
            r.json()["session_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        sessions,
        ["sess-drain"],
        "the callback answered 204 during shutdown was forwarded"
    );
}

/// Runs the binary with trace logging, sends callbacks and proxied requests
/// carrying secrets, sends SIGTERM while a request is in flight, and checks
/// that the request finished, the process exited 0, and no secret was logged.
#[tokio::test]
async fn sigterm_mid_request_finishes_it_and_logs_hold_no_secrets() {
    let up = Upstream::start().await;
    let api = KlarnaApi::start().await;
    let recovered_token = "RECOVERED-token-never-logged-0042";
    sensitive(recovered_token);
    api.script(
        "sess-read",
        vec![ApiAnswer::Json(format!(
            r#"{{"status":"incomplete","authorization_token":"{recovered_token}"}}"#
        ))],
    );
    let dir = TempDir::new();
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let (public, admin) = (free_port(), free_port());
    let klarna = api.config(dir.path(), r#"["50ms"]"#).replace(
        &format!("password = \"{KLARNA_PASSWORD}\""),
        "password = \"env:TEST_KLARNA_PASSWORD\"",
    );
    let text = base_config(&up.url(), &c, &k, &klarna)
        .replace(
            "listen = \"127.0.0.1:1\"",
            &format!("listen = \"127.0.0.1:{public}\""),
        )
        .replace(
            "listen = \"127.0.0.1:2\"",
            &format!("listen = \"127.0.0.1:{admin}\"\ntoken = \"env:TEST_ADMIN_TOKEN\""),
        )
        .replace(
            &format!("secrets = [\"{SECRET}\""),
            "secrets = [\"env:TEST_ROUTE_SECRET\"",
        );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, &text).expect("write");
    let log_path = dir.path().join("stderr.log");
    let mut child = spawn_binary(
        &path,
        &log_path,
        &[
            ("RUST_LOG", "trace"),
            ("TEST_ROUTE_SECRET", SECRET),
            ("TEST_ADMIN_TOKEN", "admin-secret-never-logged-42"),
            ("TEST_KLARNA_PASSWORD", KLARNA_PASSWORD),
        ],
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{public}").parse().expect("addr");
    wait_tls(addr, &cert.der).await;

    let cfg = authback::Config::parse(
        &text
            .replace("env:TEST_ROUTE_SECRET", SECRET)
            .replace("env:TEST_ADMIN_TOKEN", "x")
            .replace("env:TEST_KLARNA_PASSWORD", "x"),
        dir.path(),
    )
    .expect("cfg");
    let url = mint_path(&cfg, "klarna", "cart-log");
    let url_token = url.split("?token=").nth(1).expect("token").to_string();
    let auth_token = "AUTHTOKEN-must-never-appear-in-logs-77";
    let k = klarna_callback(
        addr,
        &cert.der,
        &url,
        &callback_body("sess-log", auth_token),
    )
    .await;
    assert!(k.delivered);
    // A bad token and a proxied request with a token in its query.
    let _ = klarna_callback(
        addr,
        &cert.der,
        &format!("{url}x"),
        &callback_body("sess-log2", auth_token),
    )
    .await;
    up.wait_for("/klarna/authorized", 1, Duration::from_secs(5))
        .await;
    // A session recovered through Read Session, with HTTP Basic credentials.
    let status = register_session(admin, "sess-read", "admin-secret-never-logged-42").await;
    assert_eq!(status, 202);
    let got = up
        .wait_for("/klarna/authorized", 2, Duration::from_secs(10))
        .await;
    assert!(
        got.iter().any(|r| r.json()["source"] == "read_session"),
        "recovered through Read Session"
    );

    // A slow pass-through request is in flight when SIGTERM arrives.
    up.set(Behaviour::Slow(Duration::from_millis(1500)));
    let tls = tls_connect(addr, &cert.der, &[b"http/1.1"])
        .await
        .expect("tls");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::post(format!("/slow?token={url_token}"))
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(b"in flight")))
        .expect("req");
    let in_flight = tokio::spawn(async move {
        let resp = send
            .send_request(req)
            .await
            .expect("answer despite SIGTERM");
        let status = resp.status();
        (
            status,
            resp.into_body().collect().await.expect("body").to_bytes(),
        )
    });
    up.wait_for("/slow", 1, Duration::from_secs(10)).await;
    send_signal(&child, "TERM");
    let (status, body) = in_flight.await.expect("task");
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"in flight");
    let exit = wait_exit(&mut child, Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0));

    let logs = std::fs::read_to_string(&log_path).expect("logs");
    assert!(
        logs.contains("\"callback\""),
        "the callback was logged: {logs:.2000}"
    );
    assert!(logs.contains("SIGTERM"));
    let basic = authback::text::base64(format!("K123_test:{KLARNA_PASSWORD}").as_bytes());
    for secret in [
        auth_token,
        url_token.as_str(),
        SECRET,
        SIGNING_SECRET,
        "admin-secret-never-logged-42",
        KLARNA_PASSWORD,
        recovered_token,
        basic.as_str(),
    ] {
        assert!(
            !logs.contains(secret),
            "secret {secret:.12}… found in the logs"
        );
    }
    // The MAC part of the URL token alone does not appear either.
    let mac = url_token.rsplit('.').next().expect("mac");
    assert!(!logs.contains(mac));
}

#[test]
fn check_reports_an_unusable_certificate() {
    let dir = TempDir::new();
    let (c, k) = write_cert(dir.path(), &make_cert());
    let other = make_cert();
    std::fs::write(&k, &other.key_pem).expect("write mismatched key");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, base_config("http://127.0.0.1:9", &c, &k, "")).expect("write");
    let out = bin()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.tls"), "{err}");
    assert!(
        !err.contains("PRIVATE KEY"),
        "never echoes key material: {err}"
    );
}

/// `POST /v1/sessions` on the admin port with a bearer token.
async fn register_session(admin: u16, session: &str, bearer: &str) -> u16 {
    use http_body_util::Full;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", admin))
        .await
        .expect("connect admin");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let body = format!(r#"{{"session_id":"{session}","route":"klarna","reference":"c-read"}}"#);
    let req = Request::post("/v1/sessions")
        .header("host", "admin")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {bearer}"))
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    send.send_request(req)
        .await
        .expect("answer")
        .status()
        .as_u16()
}

/// `check --production` fails on each unmet item of README's checklist, and
/// passes a config that meets them all.
#[test]
fn check_production_names_every_unmet_checklist_item() {
    let dir = TempDir::new();
    let (c, k) = write_cert(dir.path(), &make_cert());
    let production = format!(
        r#"
[server]
public_url = "https://shop.example.com"
[server.tls]
cert = "{}"
key = "{}"
[admin]
token = "env:AUTHBACK_TEST_PROD_ADMIN"
[upstream]
url = "http://127.0.0.1:8080"
signing_secret = "env:AUTHBACK_TEST_PROD_SIGNING"
[store]
kind = "file"
path = "authback.db"
[klarna]
api_url = "https://api.klarna.com"
username = "env:AUTHBACK_TEST_PROD_KLARNA_USER"
password = "env:AUTHBACK_TEST_PROD_KLARNA_PASSWORD"
[order_watch]
enabled = true
[[routes]]
name = "klarna"
kind = "klarna_authorization"
path = "/klarna/authorization/{{reference}}"
forward_path = "/klarna/authorized"
secrets = ["env:AUTHBACK_TEST_PROD_SECRET"]
[[routes]]
name = "plugin"
kind = "klarna_authorization"
path = "/plugin/klarna"
forward_format = "original"
unverified = true
allow_ips = ["klarna-production"]
"#,
        c.display(),
        k.display()
    );
    let env = [
        (
            "AUTHBACK_TEST_PROD_ADMIN",
            "an-admin-token-0123456789abcdef",
        ),
        (
            "AUTHBACK_TEST_PROD_SIGNING",
            "a-signing-secret-0123456789abcdef",
        ),
        ("AUTHBACK_TEST_PROD_KLARNA_USER", "PK0001_0123"),
        (
            "AUTHBACK_TEST_PROD_KLARNA_PASSWORD",
            "a-klarna-password-0123456789",
        ),
        (
            "AUTHBACK_TEST_PROD_SECRET",
            "a-route-secret-0123456789abcdef",
        ),
    ];
    let check = |text: &str| {
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).expect("write");
        let out = bin()
            .args(["check", "--production", "--config"])
            .arg(&path)
            .envs(env)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check(&production);
    assert_eq!(code, Some(0), "{err}");

    let unmet = production
        .replacen(
            &format!("cert = \"{}\"\nkey = \"{}\"", c.display(), k.display()),
            "self_signed = true",
            1,
        )
        .replace(
            "kind = \"file\"\npath = \"authback.db\"",
            "kind = \"memory\"",
        )
        .replace("token = \"env:AUTHBACK_TEST_PROD_ADMIN\"\n", "")
        .replace("signing_secret = \"env:AUTHBACK_TEST_PROD_SIGNING\"\n", "")
        .replace("enabled = true", "enabled = false")
        .replace("allow_ips = [\"klarna-production\"]\n", "")
        .replace(
            "\"env:AUTHBACK_TEST_PROD_SECRET\"",
            "\"an-inline-route-secret-0123456789\"",
        );
    let (code, err) = check(&unmet);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("7 items of the checklist unmet"), "{err}");
    for key in [
        "server.tls:",
        "store.kind:",
        "routes[0].secrets[0]:",
        "admin.token:",
        "routes[1].allow_ips:",
        "upstream.signing_secret:",
        "order_watch.enabled:",
    ] {
        assert_eq!(err.matches(key).count(), 1, "{key} once in:\n{err}");
    }
}
