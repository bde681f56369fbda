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

/// docs/api.md's metric table lists every family `/metrics` serves, with
/// its type, and nothing it does not serve.
#[tokio::test]
async fn the_metrics_table_in_the_api_docs_is_what_metrics_serves() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let served: std::collections::BTreeMap<String, String> = ab
        .metrics()
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md"))
        .expect("docs/api.md");
    let table = docs
        .split("## Metrics")
        .nth(1)
        .expect("a Metrics section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let mut documented = std::collections::BTreeMap::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let names: Vec<&str> = cells[1].split(", ").map(|n| n.trim_matches('`')).collect();
        let kinds: Vec<&str> = cells[2].split(", ").collect();
        for (i, name) in names.iter().enumerate() {
            // One type for the row, or one per name.
            let kind = kinds.get(i).or(kinds.first()).copied().unwrap_or_default();
            documented.insert(name.to_string(), kind.to_string());
        }
    }
    for (name, kind) in &served {
        match documented.get(name) {
            None => panic!("{name} is served but not in docs/api.md"),
            // Deprecated names share their row's type with the new ones.
            Some(k) if k.is_empty() => {}
            Some(k) => assert_eq!(k, kind, "the type of {name} in docs/api.md"),
        }
    }
    for name in documented.keys() {
        assert!(
            served.contains_key(name),
            "{name} is in docs/api.md but not served"
        );
    }
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

/// A GET on the admin listener: status, the `Next-Cursor` header, body.
async fn admin_page(ab: &Authback, path: &str) -> (u16, Option<String>, String) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(ab.admin)
        .await
        .expect("connect admin");
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("req");
    let resp = send.send_request(req).await.expect("admin answer");
    let status = resp.status().as_u16();
    let next = resp
        .headers()
        .get("next-cursor")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, next, String::from_utf8_lossy(&body).into_owned())
}

fn json_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The deliveries a listing path shows, following `Next-Cursor` to the end.
async fn all_pages(ab: &Authback, path: &str) -> Vec<serde_json::Value> {
    let (mut out, mut cursor) = (Vec::new(), None::<String>);
    for _ in 0..100 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let p = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_string(),
        };
        let (status, next, body) = admin_page(ab, &p).await;
        assert_eq!(status, 200, "{p}: {body}");
        out.extend(json_of(&body).as_array().expect("a list").iter().cloned());
        match next {
            Some(n) => cursor = Some(n),
            None => return out,
        }
    }
    panic!("{path}: Next-Cursor never ends");
}

/// Polls `path` until it lists `n` deliveries.
async fn until_listed(ab: &Authback, path: &str, n: usize) -> Vec<serde_json::Value> {
    let mut got;
    eventually!(
        {
            got = all_pages(ab, path).await;
            got.len() == n
        },
        "{path} to list {n}; it lists {got:?}"
    );
    got
}

/// Each delivery's `reference`, in listing order.
fn references(list: &[serde_json::Value]) -> Vec<&str> {
    list.iter()
        .map(|d| d["reference"].as_str().expect("reference"))
        .collect()
}

#[tokio::test]
async fn deliveries_are_filtered_and_paged_with_a_cursor() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    for (i, reference) in ["cart-a", "cart-b", "cart-a", "cart-c", "cart-a"]
        .iter()
        .enumerate()
    {
        let token = format!("tok-filter-000{i}");
        sensitive(&token);
        let body = callback_body(&format!("sess-f{i}"), &token);
        assert_eq!(ab.callback(&ab.mint(reference), &body).await.0, 204);
        // Distinct milliseconds, so the order below is the arrival order.
        let acked = authback::types::unix_ms();
        eventually!(
            authback::types::unix_ms() > acked,
            "the clock to pass {acked} ms"
        );
    }
    let all = until_listed(&ab, "/v1/deliveries?state=delivered", 5).await;
    assert_eq!(
        references(&all),
        ["cart-a", "cart-c", "cart-a", "cart-b", "cart-a"],
        "newest first"
    );
    let cart_a = all_pages(&ab, "/v1/deliveries?reference=cart-a").await;
    assert_eq!(references(&cart_a), ["cart-a"; 3]);
    let one = all_pages(&ab, "/v1/deliveries?session_id=sess-f3").await;
    assert_eq!(references(&one), ["cart-c"]);
    assert_eq!(one[0]["authorization_token"], "0003", "redacted");
    assert_eq!(all_pages(&ab, "/v1/deliveries?route=klarna").await.len(), 5);
    assert!(all_pages(&ab, "/v1/deliveries?route=other")
        .await
        .is_empty());
    // An empty value is no filter, as a form sends it.
    assert_eq!(
        all_pages(&ab, "/v1/deliveries?route=&session_id=&state=")
            .await
            .len(),
        5
    );

    // Time bounds, as RFC 3339 or unix seconds; `until` is exclusive.
    let third = all[2]["received_at"].as_str().expect("received_at");
    let (_, _, body) = admin_page(&ab, "/v1/deliveries?since=0&until=4102444800").await;
    assert_eq!(json_of(&body).as_array().map(Vec::len), Some(5));
    assert!(all_pages(&ab, "/v1/deliveries?since=2100-01-01T00:00:00Z")
        .await
        .is_empty());
    assert!(
        all_pages(&ab, "/v1/deliveries?until=2000-01-01T00:00:00%2B02:00")
            .await
            .is_empty()
    );
    let recent = all_pages(&ab, &format!("/v1/deliveries?since={third}")).await;
    assert!(
        (3..=5).contains(&recent.len()),
        "since is inclusive, to the second given: {recent:?}"
    );

    // Pages of two: each delivery once, in order, the last page without a
    // cursor.
    let (status, next, body) = admin_page(&ab, "/v1/deliveries?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body).as_array().map(Vec::len), Some(2));
    assert!(next.is_some(), "more remain");
    let paged = all_pages(&ab, "/v1/deliveries?limit=2").await;
    assert_eq!(paged, all);
    let paged = all_pages(&ab, "/v1/deliveries?limit=2&reference=cart-a").await;
    assert_eq!(paged, cart_a);
    let (_, next, _) = admin_page(&ab, "/v1/deliveries?limit=5").await;
    assert_eq!(next, None, "nothing after a page that holds all");

    for (query, names) in [
        ("state=bogus", "state"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("limit=lots", "limit"),
        ("limit=0", "limit"),
        ("cursor=nope", "cursor"),
        ("sesion_id=sess-f1", "sesion_id"),
        ("route=klarna&route=other", "route"),
    ] {
        let (status, _, body) = admin_page(&ab, &format!("/v1/deliveries?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body.contains(names),
            "{query}: the message names it: {body}"
        );
    }
}

#[tokio::test]
async fn a_delivery_shows_its_attempts() {
    let up = Upstream::start().await;
    up.set(Behaviour::Fail {
        times: 2,
        status: 503,
    });
    let ab = Authback::start(&up).await;
    let token = "tok-detail-secret-4321";
    sensitive(token);
    let body = callback_body("sess-detail", token);
    assert_eq!(ab.callback(&ab.mint("cart-d"), &body).await.0, 204);
    let listed = until_listed(&ab, "/v1/deliveries?state=delivered", 1).await;
    let id = listed[0]["id"].as_str().expect("id");
    let (status, _, body) = admin_page(&ab, &format!("/v1/deliveries/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(token), "the token stays redacted: {body}");
    let d = json_of(&body);
    assert_eq!(d["authorization_token"], "4321");
    assert_eq!(
        (d["state"].as_str(), d["attempt_count"].as_u64()),
        (Some("delivered"), Some(3))
    );
    assert!(d.get("order_watch").is_some(), "{d}");
    let attempts = d["attempts"].as_array().expect("the attempt log");
    let statuses: Vec<_> = attempts.iter().map(|a| a["status"].as_u64()).collect();
    assert_eq!(statuses, [Some(503), Some(503), Some(200)], "oldest first");
    for a in &attempts[..2] {
        assert!(
            a["error"].as_str().is_some_and(|e| e.contains("503")),
            "{a}"
        );
        assert!(a["retry_in_ms"].as_u64().is_some(), "{a}");
    }
    let last = &attempts[2];
    assert!(
        last["error"].is_null() && last["retry_in_ms"].is_null(),
        "{last}"
    );
    for a in attempts {
        let at = a["at"].as_str().expect("at");
        assert!(at.ends_with('Z') && at.contains('.'), "{at}");
        assert!(a["duration_ms"].as_u64().is_some(), "{a}");
        assert_eq!(a["redelivery"], false);
    }

    let unknown = "00000000000000000000000000000000";
    for path in [
        format!("/v1/deliveries/{unknown}"),
        "/v1/deliveries/not-an-id".to_string(),
    ] {
        let (status, _, body) = admin_page(&ab, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("not_found"), "{body}");
    }
    let (status, _) = ab
        .admin_request("DELETE", &format!("/v1/deliveries/{id}"), "", None)
        .await;
    assert_eq!(status, 405);
}

#[derive(Clone, Copy, Debug)]
enum StoreKind {
    Memory,
    File,
    Redis,
}

/// Bulk replay: a dry run counts the dead deliveries a filter matches; the
/// real run queues exactly those again, and the backend gets them.
async fn bulk_replay(kind: StoreKind) {
    let up = Upstream::start().await;
    up.set(Behaviour::Status(422));
    let dir = TempDir::new();
    let redis = matches!(kind, StoreKind::Redis).then(|| RedisServer::start(dir.path()));
    let store = match kind {
        StoreKind::Memory => String::new(),
        StoreKind::File => format!(
            "[store]\nkind = \"file\"\npath = \"{}\"\n",
            dir.path().join("authback.db").display()
        ),
        StoreKind::Redis => redis
            .as_ref()
            .map(|r| r.store_section("bulk:"))
            .unwrap_or_default(),
    };
    let ab = Authback::start_with(&up, &store, false).await;
    for (i, reference) in ["cart-x", "cart-y", "cart-x", "cart-x"].iter().enumerate() {
        let token = format!("tok-bulk-000{i}");
        sensitive(&token);
        let body = callback_body(&format!("sess-b{i}"), &token);
        assert_eq!(ab.callback(&ab.mint(reference), &body).await.0, 204);
    }
    until_listed(&ab, "/v1/deliveries?state=dead", 4).await;

    let replay = |body: &'static str| ab.admin_request("POST", "/v1/deliveries/replay", body, None);
    let (status, body) = replay(r#"{"reference":"cart-x","dry_run":true}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body),
        serde_json::json!({"matched": 3, "replayed": 0, "dry_run": true, "capped": false})
    );
    assert_eq!(
        all_pages(&ab, "/v1/deliveries?state=dead").await.len(),
        4,
        "a dry run changes nothing"
    );
    for bad in [
        r#"{"state":"pending"}"#,
        r#"{"refrence":"cart-x"}"#,
        r#"{"since":"yesterday"}"#,
        r#"{"until":true}"#,
        "not json",
    ] {
        let (status, body) = replay(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    up.set(Behaviour::Ok);
    let (status, body) = replay(r#"{"state":"dead","reference":"cart-x","since":0}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body),
        serde_json::json!({"matched": 3, "replayed": 3, "dry_run": false, "capped": false})
    );
    let delivered = until_listed(&ab, "/v1/deliveries?state=delivered", 3).await;
    assert_eq!(references(&delivered), ["cart-x"; 3], "{kind:?}");
    let dead = all_pages(&ab, "/v1/deliveries?state=dead").await;
    assert_eq!(
        references(&dead),
        ["cart-y"],
        "{kind:?}: the rest stays dead"
    );
    assert_eq!(up.to_path("/klarna/authorized").len(), 4 + 3);
    let (_, body) = replay(r#"{"reference":"cart-x"}"#).await;
    assert_eq!(
        json_of(&body)["matched"],
        0,
        "nothing dead is left to match"
    );
    drop(ab);
}

#[tokio::test]
async fn bulk_replay_on_memory() {
    bulk_replay(StoreKind::Memory).await
}

#[tokio::test]
async fn bulk_replay_on_file() {
    bulk_replay(StoreKind::File).await
}

#[tokio::test]
async fn bulk_replay_on_redis() {
    bulk_replay(StoreKind::Redis).await
}

/// Without admin.token the listener is loopback-only, and so is the Host it
/// answers /v1 for: a page whose name an attacker rebinds to 127.0.0.1
/// cannot reach the API from the operator's browser.
#[tokio::test]
async fn without_a_token_v1_answers_only_a_loopback_host() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    for host in ["127.0.0.1:9901", "localhost", "[::1]:9901", "LOCALHOST:1"] {
        assert_eq!(
            get_with_host(&ab, "/v1/deliveries", host).await,
            200,
            "{host}"
        );
    }
    for host in [
        "evil.example",
        "evil.example:9901",
        "127.0.0.1.evil.example",
    ] {
        assert_eq!(
            get_with_host(&ab, "/v1/deliveries", host).await,
            403,
            "{host}"
        );
    }
    // Probes and metrics stay open, whatever the Host.
    assert_eq!(get_with_host(&ab, "/metrics", "evil.example").await, 200);
}

async fn get_with_host(ab: &Authback, path: &str, host: &str) -> u16 {
    let tcp = tokio::net::TcpStream::connect(ab.admin)
        .await
        .expect("connect admin");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", host)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("req");
    send.send_request(req)
        .await
        .expect("answer")
        .status()
        .as_u16()
}

// ---------------------------------------------------------------------------
// Cross-site requests: a web page the operator visits must not be able to
// drive /v1 from their browser, token or none.

/// One request on the admin listener, as built: status and body.
async fn admin_send<B>(ab: &Authback, req: http::Request<B>) -> (u16, String)
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(ab.admin)
        .await
        .expect("connect admin");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = send.send_request(req).await.expect("admin answer");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A request on the admin listener with `headers` (the Host among them)
/// and a body of known length.
async fn admin_with(
    ab: &Authback,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .expect("req");
    admin_send(ab, req).await
}

/// The listener's own `host:port`, as a browser on its page sends it.
fn own_host(ab: &Authback) -> String {
    format!("127.0.0.1:{}", ab.admin.port())
}

/// One dead delivery (the upstream refuses it with a 422); returns its id.
async fn seed_dead(ab: &Authback, up: &Upstream) -> String {
    up.set(Behaviour::Status(422));
    let token = "tok-csrf-dead-0001";
    sensitive(token);
    let body = callback_body("sess-csrf", token);
    assert_eq!(ab.callback(&ab.mint("cart-csrf"), &body).await.0, 204);
    let dead = until_listed(ab, "/v1/deliveries?state=dead", 1).await;
    dead[0]["id"].as_str().expect("id").to_string()
}

/// The security review's request: a page on another site posts `{}` as
/// text/plain (a "simple" request, sent without a preflight) to the bulk
/// replay. It must be refused and replay nothing.
#[tokio::test]
async fn a_cross_site_page_cannot_replay_dead_deliveries() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    seed_dead(&ab, &up).await;
    up.set(Behaviour::Ok);
    let host = own_host(&ab);
    let (status, body) = admin_with(
        &ab,
        "POST",
        "/v1/deliveries/replay",
        &[
            ("host", host.as_str()),
            ("origin", "https://evil.example"),
            ("content-type", "text/plain"),
        ],
        "{}",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(json_of(&body)["error"], "forbidden", "{body}");
    assert!(json_of(&body)["message"].is_string(), "{body}");
    // A replay marks the delivery pending before it answers: still dead
    // means nothing was queued, and the backend saw only the first attempt.
    assert_eq!(all_pages(&ab, "/v1/deliveries?state=dead").await.len(), 1);
    assert_eq!(up.to_path("/klarna/authorized").len(), 1);

    // The same replay, sent as the API asks, does replay it.
    let (status, body) = admin_with(
        &ab,
        "POST",
        "/v1/deliveries/replay",
        &[
            ("host", host.as_str()),
            ("content-type", "application/json"),
        ],
        "{}",
    )
    .await;
    assert_eq!(
        (status, json_of(&body)["replayed"].as_u64()),
        (200, Some(1))
    );
}

/// Every foreign Origin and every cross-site or same-site Sec-Fetch-Site is
/// refused on /v1, with a token configured too (a browser sends it only
/// from the console, but the rule does not lean on that).
#[tokio::test]
async fn a_foreign_origin_or_fetch_site_is_refused_on_v1() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let port = ab.admin.port();
    let host = own_host(&ab);
    let foreign = [
        "https://evil.example".to_string(),
        "null".to_string(),
        format!("http://127.0.0.1:{}", port.wrapping_add(1)),
        format!("https://127.0.0.1:{port}x"),
        format!("http://127.0.0.1.evil.example:{port}"),
        format!("http://localhost:{port}"),
        "http://127.0.0.1".to_string(),
        "not an origin".to_string(),
    ];
    for origin in &foreign {
        for (method, path, body) in [
            ("GET", "/v1/deliveries", ""),
            ("GET", "/v1/stats/history", ""),
            ("POST", "/v1/callback-urls", r#"{"route":"klarna"}"#),
        ] {
            let (status, answer) = admin_with(
                &ab,
                method,
                path,
                &[
                    ("host", host.as_str()),
                    ("origin", origin),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await;
            assert_eq!(status, 403, "{origin} {method} {path}: {answer}");
            assert_eq!(json_of(&answer)["error"], "forbidden");
        }
    }
    for site in ["cross-site", "same-site", "Cross-Site"] {
        let (status, answer) = admin_with(
            &ab,
            "GET",
            "/v1/deliveries",
            &[("host", host.as_str()), ("sec-fetch-site", site)],
            "",
        )
        .await;
        assert_eq!(status, 403, "{site}: {answer}");
    }
    // The listener's own origin, and what a tool or the console sends.
    let own = format!("http://{host}");
    let upper = format!("HTTP://LOCALHOST:{port}");
    let loopback_host = format!("localhost:{port}");
    for headers in [
        vec![("host", host.as_str()), ("origin", own.as_str())],
        vec![
            ("host", host.as_str()),
            ("origin", own.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
        vec![("host", host.as_str()), ("sec-fetch-site", "none")],
        vec![("host", loopback_host.as_str()), ("origin", upper.as_str())],
        vec![("host", "127.0.0.1:80"), ("origin", "http://127.0.0.1")],
        vec![("host", "127.0.0.1"), ("origin", "http://127.0.0.1:80")],
        vec![("host", host.as_str())],
    ] {
        let (status, answer) = admin_with(&ab, "GET", "/v1/deliveries", &headers, "").await;
        assert_eq!(status, 200, "{headers:?}: {answer}");
    }
    // Probes and metrics are not /v1: a foreign page may read them.
    let (status, _) = admin_with(
        &ab,
        "GET",
        "/metrics",
        &[("host", host.as_str()), ("origin", "https://evil.example")],
        "",
    )
    .await;
    assert_eq!(status, 200);

    // With a token, the right token does not let a foreign page in.
    let with_token = |t: String| {
        t.replace(
            "[admin]\n",
            "[admin]\ntoken = \"admin-token-for-tests-0123\"\n",
        )
    };
    let ab = Authback::start_edited(&up.url(), with_token, false).await;
    let host = own_host(&ab);
    let bearer = "Bearer admin-token-for-tests-0123";
    let (status, _) = admin_with(
        &ab,
        "GET",
        "/v1/deliveries",
        &[
            ("host", host.as_str()),
            ("authorization", bearer),
            ("sec-fetch-site", "cross-site"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = admin_with(
        &ab,
        "GET",
        "/v1/deliveries",
        &[
            ("host", host.as_str()),
            ("authorization", bearer),
            ("origin", "https://evil.example"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 403);
    let own = format!("http://{host}");
    let (status, _) = admin_with(
        &ab,
        "GET",
        "/v1/deliveries",
        &[
            ("host", host.as_str()),
            ("authorization", bearer),
            ("origin", own.as_str()),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200);
}

/// A POST with a body must say it is JSON: a form or a text/plain body is
/// what a cross-site page can send without a preflight.
#[tokio::test]
async fn a_v1_post_with_a_body_must_be_json() {
    let up = Upstream::start().await;
    let ab = Authback::start(&up).await;
    let id = seed_dead(&ab, &up).await;
    let host = own_host(&ab);
    let mint = r#"{"route":"klarna","reference":"cart-ct"}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
        Some("text/json"),
        None,
    ] {
        let mut headers = vec![("host", host.as_str())];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        for path in ["/v1/callback-urls", "/v1/deliveries/replay", "/v1/sessions"] {
            let (status, body) = admin_with(&ab, "POST", path, &headers, mint).await;
            assert_eq!(status, 415, "{content_type:?} {path}: {body}");
            assert_eq!(json_of(&body)["error"], "unsupported_media_type");
        }
    }
    // A chunked body counts as a body too.
    let req = http::Request::post("/v1/deliveries/replay")
        .header("host", host.as_str())
        .header("content-type", "text/plain")
        .body(Chunks(vec![bytes::Bytes::from_static(b"{}")]))
        .expect("req");
    assert_eq!(admin_send(&ab, req).await.0, 415);
    assert_eq!(all_pages(&ab, "/v1/deliveries?state=dead").await.len(), 1);

    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
    ] {
        let (status, body) = admin_with(
            &ab,
            "POST",
            "/v1/callback-urls",
            &[("host", host.as_str()), ("content-type", content_type)],
            mint,
        )
        .await;
        assert_eq!(status, 200, "{content_type}: {body}");
    }
    let req = http::Request::post("/v1/deliveries/replay")
        .header("host", host.as_str())
        .header("content-type", "application/json")
        .body(Chunks(vec![
            bytes::Bytes::from_static(b"{\"dry_run\""),
            bytes::Bytes::from_static(b":true}"),
        ]))
        .expect("req");
    let (status, body) = admin_send(&ab, req).await;
    assert_eq!((status, json_of(&body)["matched"].as_u64()), (200, Some(1)));

    // A POST without a body (`curl -X POST`) needs no Content-Type.
    let (status, body) = admin_with(
        &ab,
        "POST",
        &format!("/v1/deliveries/{id}/replay"),
        &[("host", host.as_str())],
        "",
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

/// `authback check` on `text` (written beside a real certificate) with
/// `env`: what it printed on stderr; it must pass.
fn check_stderr(text: impl FnOnce(&str, &str) -> String, env: &[(&str, &str)]) -> String {
    let dir = TempDir::new();
    let (c, k) = write_cert(dir.path(), &make_cert());
    let path = dir.path().join("authback.toml");
    let cert = c.display().to_string();
    let key = k.display().to_string();
    std::fs::write(&path, text(&cert, &key)).expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authback"))
        .args(["check", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .expect("run check");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "check fails:\n{err}");
    err
}

/// Without admin.token, anything that reaches the loopback listener may use
/// the API: `check` says so. With one, it says nothing about it.
#[test]
fn check_warns_when_the_admin_api_has_no_token() {
    let config = |cert: &str, key: &str| {
        use std::path::Path;
        base_config("http://127.0.0.1:8080", Path::new(cert), Path::new(key), "")
    };
    let err = check_stderr(config, &[]);
    assert!(err.contains("warning: admin.token: "), "{err}");
    let with_token = |cert: &str, key: &str| {
        config(cert, key).replace(
            "[admin]\n",
            "[admin]\ntoken = \"env:AUTHBACK_TEST_ADMIN_TOKEN\"\n",
        )
    };
    let err = check_stderr(
        with_token,
        &[("AUTHBACK_TEST_ADMIN_TOKEN", "admin-token-for-tests-0123")],
    );
    assert!(!err.contains("admin.token"), "{err}");
}

/// Redis goes away under two pods of the shop, one with
/// `server.ready_requires_store`: both refuse callbacks with 503 and say
/// their store is down, but only the strict one leaves the Service; the
/// other keeps serving the shop's pages. Redis comes back: both record
/// again, and the strict one is ready again.
#[tokio::test]
async fn a_store_that_cannot_record_takes_the_pod_out_only_when_asked() {
    let dir = TempDir::new();
    let mut redis = RedisServer::start(dir.path());
    let up = Upstream::start().await;
    let store = redis.store_section("ready:");
    let strict = Authback::start_edited(
        &up.url(),
        |t| format!("{t}{store}").replace("[server]\n", "[server]\nready_requires_store = true\n"),
        false,
    )
    .await;
    let lenient = Authback::start_edited(&up.url(), |t| format!("{t}{store}"), false).await;
    // The single server store.url names is the primary, for good.
    let primary = format!(
        "authback_store_primary_info{{address=\"127.0.0.1:{}\"}}",
        redis.port
    );
    for ab in [&strict, &lenient] {
        assert_eq!(ab.admin_get("/readyz").await.expect("readyz").0, 200);
        assert_eq!(ab.admin_get("/readyz/store").await.expect("store").0, 200);
        let m = ab.metrics().await;
        assert_eq!(metric(&m, "authback_store_up"), Some(1.0));
        assert_eq!(metric(&m, &primary), Some(1.0), "{m}");
        assert_eq!(metric(&m, "authback_store_failovers_total"), Some(0.0));
    }
    redis.kill();
    for ab in [&strict, &lenient] {
        let m = assert_store_down(ab).await;
        assert_eq!(metric(&m, &primary), Some(1.0), "still the primary");
    }
    let (status, body) = strict.admin_get("/readyz").await.expect("readyz");
    assert_eq!(status, 503, "server.ready_requires_store: {body}");
    assert!(body.contains("store"), "{body}");
    assert_eq!(metric(&strict.metrics().await, "authback_ready"), Some(0.0));
    assert_eq!(lenient.admin_get("/readyz").await.expect("readyz").0, 200);
    assert_eq!(
        metric(&lenient.metrics().await, "authback_ready"),
        Some(1.0)
    );
    // The shop's pages never needed the store.
    let page = http::Request::get("/checkout/cart")
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("req");
    assert_eq!(lenient.https(page).await.0, 200);
    assert_eq!(up.to_path("/checkout/cart").len(), 1);

    redis.restart();
    for ab in [&strict, &lenient] {
        assert!(ab.wait_store_up().await, "the store comes back with redis");
        assert_eq!(ab.admin_get("/readyz").await.expect("readyz").0, 200);
        let m = ab.metrics().await;
        assert_eq!(metric(&m, "authback_store_up"), Some(1.0));
        assert_eq!(metric(&m, "authback_ready"), Some(1.0));
        // Klarna's retry of the refused callback is recorded now.
        let (status, _) = ab
            .callback(&ab.mint("down"), &callback_body("sess-down", "tok-down"))
            .await;
        assert_eq!(status, 204);
    }
}

/// With its Redis gone, `ab` refuses a callback with 503 (never a 2xx for
/// one it cannot record), and `/readyz/store` and `authback_store_up` say
/// the store is down. Returns the metrics page. (While Redis is down a
/// scrape takes seconds: the store's figures wait for Redis's retries.)
async fn assert_store_down(ab: &Authback) -> String {
    // The store learns it is down from a failed write (a callback gets 503)
    // or its own probe; either happens within the wait.
    let (status, _) = ab
        .callback(&ab.mint("down"), &callback_body("sess-down", "tok-down"))
        .await;
    assert_eq!(status, 503);
    let mut store;
    eventually!(
        {
            store = ab.admin_get("/readyz/store").await.expect("store");
            store.0 == 503
        },
        "/readyz/store to answer 503; it answered {} {}",
        store.0,
        store.1
    );
    assert!(store.1.contains("redis"), "{}", store.1);
    let m = ab.metrics().await;
    assert_eq!(metric(&m, "authback_store_up"), Some(0.0));
    assert_eq!(callbacks(&m, "unavailable"), Some(1.0));
    m
}

/// Shutdown takes the pod out of the Service whatever the store says: while
/// a request drains, `/readyz` answers 503 and says why, though the store
/// is fine.
#[tokio::test]
async fn shutting_down_takes_the_pod_out_with_the_store_up() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start().await;
    up.set(Behaviour::Hang);
    let mut ab = Authback::start(&up).await;
    // A page the backend never answers keeps the drain going.
    let mut tls = ab.tls(&[b"http/1.1"]).await;
    tls.write_all(b"GET /slow-page HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("request");
    assert_eq!(
        up.wait_for("/slow-page", 1, std::time::Duration::from_secs(10))
            .await
            .len(),
        1,
        "the page to reach the backend"
    );
    ab.begin_stop();
    let mut ready;
    eventually!(
        {
            ready = ab.admin_get("/readyz").await.expect("readyz");
            ready.0 == 503
        },
        "/readyz to answer 503 once shutdown begins; it answered {} {}",
        ready.0,
        ready.1
    );
    assert!(ready.1.contains("shutting down"), "{}", ready.1);
    assert_eq!(
        ab.admin_get("/readyz/store").await.expect("store").0,
        200,
        "the store is fine"
    );
    let m = ab.metrics().await;
    assert_eq!(metric(&m, "authback_ready"), Some(0.0));
    assert_eq!(metric(&m, "authback_store_up"), Some(1.0));
    drop(tls);
    ab.stop().await.expect("clean stop");
}
