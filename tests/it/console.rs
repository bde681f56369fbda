//! The operator console: its headers and history endpoint, the
//! `authback deliveries` command against a live instance, and the page
//! itself driven in headless Chromium through chromedriver (W3C WebDriver,
//! plain HTTP JSON over a std TcpStream; no extra crates).
//!
//! The browser test is skipped when Chromium or chromedriver is missing,
//! unless CI is set: .ci/run installs both. With AUTHBACK_SCREENSHOTS=dir
//! it also saves console-{list,detail,incidents,resolved}.png there.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

const FORWARD: &str = "/klarna/authorized";
const TOKEN: &str = "console-admin-token-0123456789";
const WAIT: Duration = Duration::from_secs(20);

/// Fast order watch (unconfirmed after 1.6 s, no redelivery) against the
/// Klarna simulator, and the admin token.
async fn start(up: &Upstream, api: &KlarnaApi) -> Authback {
    sensitive(TOKEN);
    let dir = TempDir::new();
    let watch = "[order_watch]\nenabled = true\nafter = \"100ms\"\nevery = \"100ms\"\nredeliver = false\nunconfirmed_after = \"1600ms\"\n";
    let extra = format!("{}{watch}", api.config(dir.path(), r#"["1h"]"#));
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let text = base_config(&up.url(), &c, &k, &extra)
        .replace("[admin]\n", &format!("[admin]\ntoken = \"{TOKEN}\"\n"));
    Authback::start_text(dir, cert.der, &text, false).await
}

/// Polls `GET path` (with the token) until its body contains `needle`.
async fn api_until(ab: &Authback, path: &str, needle: &str) -> Value {
    let mut last;
    eventually!(
        {
            last = ab.admin_request("GET", path, "", Some(TOKEN)).await;
            last.0 == 200 && last.1.contains(needle)
        },
        "{path} to hold {needle}; it answered {} {}",
        last.0,
        last.1
    );
    serde_json::from_str(&last.1).expect("json")
}

/// Sends one callback for `session`; Klarna knows it as authorized.
async fn callback(ab: &Authback, api: &KlarnaApi, reference: &str, session: &str, token: &str) {
    api.authorize(session, token);
    let (status, _) = ab
        .callback(&ab.mint(reference), &callback_body(session, token))
        .await;
    assert_eq!(status, 204);
}

/// The id of the delivery of `session` in `state`, once it is there.
async fn delivery_id(ab: &Authback, state: &str, session: &str) -> String {
    let list = api_until(
        ab,
        &format!("/v1/deliveries?state={state}&session_id={session}"),
        session,
    )
    .await;
    list.as_array()
        .and_then(|l| l.iter().find(|d| d["session_id"] == session))
        .and_then(|d| d["id"].as_str())
        .expect("id")
        .to_string()
}

// ---------------------------------------------------------------------------
// Without a browser.

/// A raw GET on the admin listener: status line and headers, lower-cased.
fn raw_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy_and_history_needs_the_token() {
    let up = Upstream::start().await;
    let api = KlarnaApi::start().await;
    let ab = start(&up, &api).await;
    let admin = ab.admin;
    let pages = tokio::task::spawn_blocking(move || {
        ["/", "/console.js", "/console.css", "/favicon.ico"].map(|p| (p, raw_get(admin, p)))
    })
    .await
    .expect("gets");
    for (path, (head, body)) in pages {
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert!(head.contains(&format!(
            "content-security-policy: {}",
            authback::admin::console::CSP
        )));
        for h in [
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "cache-control: no-store",
        ] {
            assert!(head.contains(h), "{path} lacks {h}: {head}");
        }
        assert!(!head.contains("set-cookie"), "{path}");
        assert!(!body.is_empty());
        if path == "/favicon.ico" {
            assert!(head.contains("content-type: image/svg+xml"), "{head}");
        }
    }
    // The page needs no token (it holds no data); its data does.
    let (status, _) = ab.admin_request("GET", "/v1/stats/history", "", None).await;
    assert_eq!(status, 401);
    let (status, body) = ab
        .admin_request("GET", "/v1/stats/history", "", Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(h["interval_s"], 10);
    let first = &h["points"][0];
    for k in [
        "at",
        "acks_per_min",
        "pending",
        "oldest_pending_s",
        "dead",
        "unconfirmed",
    ] {
        assert!(first.get(k).is_some(), "{k} missing: {body}");
    }
    // The console takes GET only; anything else falls through to admin.
    let (status, _) = ab.admin_request("POST", "/", "", Some(TOKEN)).await;
    assert_eq!(status, 404);
}

/// Runs `authback deliveries ARGS` against `ab`, with the token in the
/// environment and no config file.
async fn cli(ab: &Authback, args: &[&str]) -> (i32, String, String) {
    cli_at(&format!("http://{}", ab.admin), Some(TOKEN), args).await
}

pub(crate) async fn cli_at(
    admin: &str,
    token: Option<&str>,
    args: &[&str],
) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_authback"));
    cmd.args(["--config", "/nonexistent/authback.toml", "deliveries"])
        .args(args)
        .args(["--admin", admin])
        .env_remove("AUTHBACK_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("AUTHBACK_ADMIN_TOKEN", t);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run authback deliveries");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `authback deliveries` with a config whose route and upstream secrets
/// come from variables this shell does not have: it reads only `[admin]`,
/// so listing works with the admin token alone.
#[tokio::test]
async fn the_deliveries_command_needs_only_the_admin_table() {
    let up = Upstream::start().await;
    let api = KlarnaApi::start().await;
    let ab = start(&up, &api).await;
    let dir = TempDir::new();
    let config = dir.path().join("authback.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\npublic_url = \"https://shop.example.com\"\n[server.tls]\nself_signed = true\n\
             [admin]\nlisten = \"{}\"\ntoken = \"env:AUTHBACK_TEST_CLI_TOKEN\"\n\
             [upstream]\nurl = \"http://127.0.0.1:8080\"\nsigning_secret = \"env:AUTHBACK_TEST_UNSET_SIGNING\"\n\
             [[routes]]\nname = \"klarna\"\nkind = \"klarna_authorization\"\npath = \"/k/{{reference}}\"\n\
             forward_path = \"/f\"\nsecrets = [\"env:AUTHBACK_TEST_UNSET_SECRET\"]\n",
            ab.admin
        ),
    )
    .expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_authback"));
    cmd.arg("--config")
        .arg(&config)
        .args(["deliveries", "list"])
        .env_remove("AUTHBACK_ADMIN_TOKEN")
        .env_remove("AUTHBACK_TEST_UNSET_SIGNING")
        .env_remove("AUTHBACK_TEST_UNSET_SECRET")
        .env("AUTHBACK_TEST_CLI_TOKEN", TOKEN);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run authback deliveries");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("AUTHBACK_TEST_UNSET"), "{err}");
}

#[tokio::test]
async fn the_deliveries_command_lists_shows_and_replays() {
    let up = Upstream::start().await;
    up.set(Behaviour::Status(400));
    let api = KlarnaApi::start().await;
    let ab = start(&up, &api).await;
    callback(&ab, &api, "cart-cli-1", "sess-cli-1", "tok-cli-000001").await;
    callback(&ab, &api, "cart-cli-2", "sess-cli-2", "tok-cli-000002").await;
    let id = delivery_id(&ab, "dead", "sess-cli-1").await;
    delivery_id(&ab, "dead", "sess-cli-2").await;

    let (code, out, err) = cli(&ab, &["list", "--state", "dead"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ID "), "{out}");
    assert!(out.contains(&id) && out.contains("sess-cli-2") && out.contains("…0001"));
    assert!(!out.contains("tok-cli-000001"), "tokens stay redacted");

    let (code, out, err) = cli(&ab, &["show", &id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("sess-cli-1") && out.contains("attempts"),
        "{out}"
    );

    let (code, out, _) = cli(&ab, &["list", "--session-id", "sess-cli-1", "--json"]).await;
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).expect("--json is JSON");
    assert_eq!(list[0]["id"], id.as_str());

    up.set(Behaviour::Ok);
    let (code, out, err) = cli(&ab, &["replay", &id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("queued again"), "{out}");
    up.wait_for(FORWARD, 3, WAIT).await;

    let (code, out, err) = cli(
        &ab,
        &[
            "replay",
            "--state",
            "dead",
            "--session-id",
            "sess-cli-2",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dry run: 1 dead"), "{out}");
    let (code, out, err) = cli(
        &ab,
        &["replay", "--state", "dead", "--session-id", "sess-cli-2"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 1 of 1"), "{out}");

    // Replaying what is not dead: the API's 409, and exit 1.
    delivery_id(&ab, "delivered", "sess-cli-1").await;
    let (code, _, err) = cli(&ab, &["replay", &id]).await;
    assert_eq!(code, 1);
    assert!(err.contains("409"), "{err}");
    // No token: 401 and a hint.
    let (code, _, err) = cli_at(&format!("http://{}", ab.admin), None, &["list"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("401") && err.contains("AUTHBACK_ADMIN_TOKEN"),
        "{err}"
    );
    // Nothing listening: exit 2.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = cli_at(&nobody, Some(TOKEN), &["list"]).await;
    assert_eq!(code, 2, "{err}");
}

// ---------------------------------------------------------------------------
// WebDriver over plain HTTP.

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver, as a child process, with one headless Chromium session.
struct Browser {
    child: Child,
    port: u16,
    session: String,
    _profile: TempDir,
}

/// One HTTP/1.1 exchange with chromedriver: status and JSON body.
fn wd(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
    use std::io::BufRead;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    if body.is_some() {
        req.push_str("Content-Type: application/json; charset=utf-8\r\n");
    }
    req.push_str(&format!(
        "Content-Length: {}\r\n\r\n{payload}",
        payload.len()
    ));
    (&tcp)
        .write_all(req.as_bytes())
        .map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open: read by the framing.
    let mut r = std::io::BufReader::new(&tcp);
    let mut line = String::new();
    let io = |e: std::io::Error| e.to_string();
    r.read_line(&mut line).map_err(io)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {line:?}"))?;
    let (mut length, mut chunked) = (0usize, false);
    loop {
        line.clear();
        r.read_line(&mut line).map_err(io)?;
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().map_err(|_| "bad content-length")?;
        }
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
    }
    let mut data = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).map_err(io)?;
            let n = usize::from_str_radix(line.trim(), 16).map_err(|_| "bad chunk size")?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).map_err(io)?;
            if n == 0 {
                break;
            }
            data.extend_from_slice(&chunk[..n]);
        }
    } else {
        data.resize(length, 0);
        r.read_exact(&mut data).map_err(io)?;
    }
    Ok((status, serde_json::from_slice(&data).unwrap_or(Value::Null)))
}

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = TempDir::new();
        let mut b = Browser {
            child,
            port,
            session: String::new(),
            _profile: profile,
        };
        eventually_blocking!(
            matches!(wd(port, "GET", "/status", None), Ok((200, v)) if v["value"]["ready"] == true),
            "chromedriver to start"
        );
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1366,768".into(),
            format!("--user-data-dir={}", b._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args},
        }}});
        let (status, v) = wd(port, "POST", "/session", Some(&caps)).expect("new session");
        assert_eq!(status, 200, "new session: {v}");
        b.session = v["value"]["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        b
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        let (status, v) = wd(self.port, method, &full, body.as_ref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    /// `method` on `/element/{id}{suffix}` of the element matching `css`.
    /// The page re-renders as data arrives, so a found element can go
    /// stale before it is used: find it again, for up to 2 s.
    fn on(&self, css: &str, method: &str, suffix: &str, body: Option<Value>) -> Option<Value> {
        let waiting = Waiting::new(Duration::from_secs(2));
        loop {
            let e = self.find(css)?;
            let full = format!("/session/{}/element/{e}{suffix}", self.session);
            if let Ok((200, v)) = wd(self.port, method, &full, body.as_ref()) {
                return Some(v["value"].clone());
            }
            if waiting.expired() {
                return None;
            }
            waiting.pause_blocking();
        }
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> Option<String> {
        let full = format!("/session/{}/element", self.session);
        let body = json!({"using": "css selector", "value": css});
        match wd(self.port, "POST", &full, Some(&body)) {
            Ok((200, v)) => v["value"][ELEMENT].as_str().map(String::from),
            _ => None,
        }
    }

    fn count(&self, css: &str) -> usize {
        let full = format!("/session/{}/elements", self.session);
        let body = json!({"using": "css selector", "value": css});
        match wd(self.port, "POST", &full, Some(&body)) {
            Ok((200, v)) => v["value"].as_array().map_or(0, Vec::len),
            _ => 0,
        }
    }

    /// Waits for a displayed element matching `css`.
    fn wait(&self, css: &str) {
        let waiting = Waiting::new(EVENTUALLY);
        while self.on(css, "GET", "/displayed", None) != Some(Value::Bool(true)) {
            if waiting.expired() {
                let page = self.text_of("body");
                waiting.give_up(format_args!("{css} on the page; it shows:\n{page}"));
            }
            waiting.pause_blocking();
        }
    }

    /// Waits until the text of `css` satisfies `ok`; returns it.
    fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let mut t;
        eventually_blocking!(
            {
                t = self.text_of(css);
                ok(&t)
            },
            "the text of {css} to match; last: {t:?}"
        );
        t
    }

    fn click(&self, css: &str) {
        self.wait(css);
        self.on(css, "POST", "/click", Some(json!({})))
            .unwrap_or_else(|| panic!("cannot click {css}"));
    }

    fn type_into(&self, css: &str, text: &str) {
        self.wait(css);
        self.on(css, "POST", "/clear", Some(json!({})))
            .unwrap_or_else(|| panic!("cannot clear {css}"));
        self.on(css, "POST", "/value", Some(json!({ "text": text })))
            .unwrap_or_else(|| panic!("cannot type into {css}"));
    }

    fn text_of(&self, css: &str) -> String {
        self.on(css, "GET", "/text", None)
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }

    fn attribute(&self, css: &str, name: &str) -> Option<String> {
        self.on(css, "GET", &format!("/attribute/{name}"), None)?
            .as_str()
            .map(String::from)
    }

    fn screenshot(&self, dir: Option<&Path>, name: &str) {
        use base64::Engine as _;
        let Some(dir) = dir else { return };
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("base64"))
            .expect("png");
        let path = dir.join(format!("console-{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = wd(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium and chromedriver, or None (with a note) when they are missing
/// outside CI. In CI they must be there.
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let chromium = PathBuf::from("/usr/bin/chromium");
    let driver = PathBuf::from("/usr/bin/chromedriver");
    if chromium.exists() && driver.exists() {
        return Some((chromium, driver));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but /usr/bin/chromium or /usr/bin/chromedriver is missing (.ci/run installs chromium and chromium-driver)"
    );
    eprintln!(
        "SKIPPED the console browser test: /usr/bin/chromium or /usr/bin/chromedriver is missing \
         (apt-get install chromium chromium-driver)"
    );
    None
}

/// What the backend says when it refuses a delivery in the browser test.
const REFUSAL: &str = r#"{"error":"bad signature"}"#;

/// Opens the incident `id`, resolves it with a note through the
/// confirmation, and waits for the view to show it resolved; the incident
/// list is then empty of it.
fn resolve_in_browser(b: &Browser, id: &str, shots: Option<&Path>) {
    b.click(&format!("a.delivery-link[data-id='{id}']"));
    b.wait("#resolve");
    assert_eq!(
        b.attribute("#resolve-box", "hidden").as_deref(),
        Some("true"),
        "nothing is sent before the confirmation"
    );
    b.click("#resolve");
    b.type_into("#resolve-note", "order placed by hand in the shop");
    b.click("#resolve-confirm");
    eventually_blocking!(
        b.attribute("#detail-state", "data-state").as_deref() == Some("resolved"),
        "the resolved delivery shown resolved; the page shows: {}",
        b.text_of("main")
    );
    assert_eq!(
        b.text_of("#detail-note"),
        "order placed by hand in the shop"
    );
    assert_eq!(b.find("#resolve"), None, "resolved once");
    b.screenshot(shots, "resolved");
    b.click("a[data-view='incidents']");
    b.wait_text("#count", |t| !t.is_empty());
    assert_eq!(
        b.find(&format!("a.delivery-link[data-id='{id}']")),
        None,
        "it left the incident list"
    );
}

#[tokio::test]
async fn an_operator_finds_a_dead_delivery_in_the_browser_and_replays_it() {
    let Some((chromium, driver)) = browser_binaries() else {
        return;
    };
    let began = Instant::now();
    let shots = std::env::var_os("AUTHBACK_SCREENSHOTS").map(PathBuf::from);
    if let Some(d) = &shots {
        std::fs::create_dir_all(d).expect("screenshot dir");
    }
    let up = Upstream::start().await;
    let api = KlarnaApi::start().await;
    let ab = start(&up, &api).await;

    // An order never placed: an incident once the watch gives up.
    callback(
        &ab,
        &api,
        "cart-1041",
        "sess-console-noorder",
        "tok-noorder-7731",
    )
    .await;
    if shots.is_some() {
        // More rows, spread over half a minute so the charts (one sample
        // each 10 s) have a line to draw.
        for i in 0..4 {
            let (r, s, t) = (
                format!("cart-10{}", 36 + i),
                format!("sess-console-ok-{i}"),
                format!("tok-ok-{i}-48213"),
            );
            callback(&ab, &api, &r, &s, &t).await;
            delivery_id(&ab, "delivered", &s).await;
            api.create_order(&t).await;
            pace(Duration::from_secs(8)).await;
        }
        callback(
            &ab,
            &api,
            "cart-1042",
            "sess-console-noorder-2",
            "tok-noorder-9902",
        )
        .await;
    }
    let incident = delivery_id(&ab, "unconfirmed", "sess-console-noorder").await;
    // Klarna failing for one session: its watch waits, and says why.
    api.script("sess-console-klarna", vec![ApiAnswer::Status(503)]);
    callback(
        &ab,
        &api,
        "cart-1040",
        "sess-console-klarna",
        "tok-klarna-3307",
    )
    .await;
    api_until(
        &ab,
        "/v1/deliveries?session_id=sess-console-klarna",
        "Klarna unreachable since",
    )
    .await;
    let waiting_id = delivery_id(&ab, "delivered", "sess-console-klarna").await;

    // The backend refuses (401) and says why: dead at once, not retried.
    up.set(Behaviour::Reply {
        status: 401,
        content_type: "application/json",
        body: bytes::Bytes::from_static(REFUSAL.as_bytes()),
    });
    callback(&ab, &api, "cart-1043", "sess-console-dead", "tok-dead-5521").await;
    callback(
        &ab,
        &api,
        "cart-1044",
        "sess-console-dead-2",
        "tok-dead-6630",
    )
    .await;
    let dead = delivery_id(&ab, "dead", "sess-console-dead").await;
    delivery_id(&ab, "dead", "sess-console-dead-2").await;
    let forwarded = up.to_path(FORWARD).len();

    let admin = ab.admin;
    let upstream = up.clone();
    let shots_dir = shots.clone();
    let dead_id = dead.clone();
    let incident_id = incident.clone();
    let browsed = tokio::task::spawn_blocking(move || {
        let shots = shots_dir.as_deref();
        let b = Browser::start(&chromium, &driver);
        b.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": 1366, "height": 768})),
        );
        b.goto(&format!("http://{admin}/"));

        // The token, entered once.
        b.wait("#token-form");
        assert!(
            b.find("label[for='token']").is_some(),
            "the field has a label"
        );
        b.type_into("#token", TOKEN);
        b.click("#token-submit");
        b.wait_text("#count", |t| t.contains("deliveries"));
        b.wait("#counters");
        b.wait("figure.chart svg");
        // The list shows a watch's last error beside its state.
        let row = format!("#deliveries tr[data-id='{waiting_id}'] .watch-error");
        b.wait_text(&row, |t| t.starts_with("Klarna unreachable since"));
        b.screenshot(shots, "list");

        // Search by session id, open the one result.
        b.type_into("#search", "sess-console-dead");
        b.click("#apply");
        b.wait_text("#count", |t| t == "1 delivery.");
        b.click(&format!("a.delivery-link[data-id='{dead_id}']"));

        // Its attempts: one, refused with 401, and what the backend said.
        b.wait("#attempts li");
        assert_eq!(b.count("#attempts li"), 1);
        assert!(b.text_of("#attempts").contains("HTTP 401"));
        assert_eq!(b.text_of("#attempts .response-body"), REFUSAL);
        assert!(b
            .text_of("#attempts .response")
            .contains("application/json"));
        assert_eq!(
            b.attribute("#detail-state", "data-state").as_deref(),
            Some("dead")
        );
        assert!(b.text_of("#detail-session").contains("sess-console-dead"));

        // Replay, confirmed, and watch it become delivered.
        upstream.set(Behaviour::Ok);
        b.click("#replay");
        b.click("#replay-confirm");
        eventually_blocking!(
            b.attribute("#detail-state", "data-state").as_deref() == Some("delivered"),
            "the replayed delivery shown delivered; the page shows: {}",
            b.text_of("main")
        );
        b.wait_text("#attempts", |t| t.contains("HTTP 200"));
        assert_eq!(b.count("#attempts li"), 2);
        b.screenshot(shots, "detail");

        // Bulk replay: a dry run counts, then a confirmation replays.
        b.click("a[data-view='replay']");
        b.type_into("#b-session_id", "sess-console-dead-2");
        b.click("#dry-run");
        b.wait_text("#bulk-count", |t| t.starts_with("1 dead delivery matches"));
        b.click("#bulk-confirm");
        b.wait_text("#bulk-done", |t| t.starts_with("Replayed 1 of 1"));

        // The incident list: the order never placed.
        b.click("a[data-view='incidents']");
        b.wait_text("#incidents", |t| t.contains("sess-console-noorder"));
        b.screenshot(shots, "incidents");

        // The order is placed by hand in the shop: resolve the incident.
        resolve_in_browser(&b, &incident_id, shots);

        assert_eq!(
            b.attribute("body", "data-csp-violations"),
            None,
            "the page broke its own CSP"
        );
    })
    .await;
    if let Err(e) = browsed {
        std::panic::resume_unwind(e.into_panic());
    }
    let got = up.wait_for(FORWARD, forwarded + 2, WAIT).await;
    assert_eq!(got.len(), forwarded + 2, "both replays reached the backend");
    assert_eq!(
        got.iter()
            .filter(|r| r.header("idempotency-key") == Some(dead.as_str()))
            .count(),
        2
    );
    eprintln!("console browser test took {:.1?}", began.elapsed());
}
