//! A delivery's life after it failed, against a running authback on each
//! store: what the backend answered to each attempt (kept, its secrets
//! redacted, its size bounded), resolving dead and unconfirmed deliveries
//! (API and CLI), and retention.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    File,
    Redis,
}

/// authback on a store of `kind`, with `extra` config, and what keeps the
/// store alive: its folder, and its server for Redis.
struct Running {
    ab: Authback,
    dir: TempDir,
    redis: Option<RedisServer>,
}

impl Running {
    async fn start(kind: Kind, up: &Upstream, extra: &str) -> Self {
        let dir = TempDir::new();
        let redis = matches!(kind, Kind::Redis).then(|| RedisServer::start(dir.path()));
        let store = match (kind, &redis) {
            (Kind::File, _) => format!(
                "[store]\nkind = \"file\"\npath = \"{}\"\n",
                dir.path().join("authback.db").display()
            ),
            (Kind::Redis, Some(r)) => r.store_section("life:"),
            _ => String::new(),
        };
        let ab = Authback::start_with(up, &format!("{store}{extra}"), false).await;
        Running { ab, dir, redis }
    }

    /// Every attempt log the store holds, as it holds them.
    async fn stored_logs(&self, kind: Kind, ids: &[&str]) -> String {
        match kind {
            Kind::Memory => String::new(),
            Kind::File => {
                let db = rusqlite::Connection::open(self.dir.path().join("authback.db"))
                    .expect("open the database");
                let mut stmt = db
                    .prepare("SELECT COALESCE(attempt_log, '') FROM deliveries")
                    .expect("prepare");
                let logs: Vec<String> = stmt
                    .query_map([], |r| r.get(0))
                    .expect("query")
                    .map(|r| r.expect("row"))
                    .collect();
                logs.join("\n")
            }
            Kind::Redis => {
                let url = self.redis.as_ref().expect("redis").url();
                let mut c = ::redis::Client::open(url)
                    .expect("url")
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connect");
                let mut out = String::new();
                for id in ids {
                    let log: Option<String> = ::redis::cmd("HGET")
                        .arg(format!("life:d:{id}"))
                        .arg("attempt_log")
                        .query_async(&mut c)
                        .await
                        .expect("HGET");
                    out.push_str(&log.unwrap_or_default());
                }
                out
            }
        }
    }
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Sends a callback for `session` with `token`; 204.
async fn callback(ab: &Authback, reference: &str, session: &str, token: &str) {
    let (status, _) = ab
        .callback(&ab.mint(reference), &callback_body(session, token))
        .await;
    assert_eq!(status, 204);
}

/// The id of the delivery of `session`, once it is listed in `state`.
async fn id_in(ab: &Authback, state: &str, session: &str) -> String {
    let path = format!("/v1/deliveries?state={state}&session_id={session}");
    let mut list;
    eventually!(
        {
            let (status, body) = ab.admin_request("GET", &path, "", None).await;
            list = json_of(&body);
            status == 200 && list.as_array().is_some_and(|l| l.len() == 1)
        },
        "{session} to be {state}; {path} lists {list}"
    );
    list[0]["id"].as_str().expect("id").to_string()
}

async fn detail(ab: &Authback, id: &str) -> Value {
    let (status, body) = ab
        .admin_request("GET", &format!("/v1/deliveries/{id}"), "", None)
        .await;
    assert_eq!(status, 200, "{body}");
    json_of(&body)
}

// ---------------------------------------------------------------------------
// A. The backend's answer, kept.

/// A backend that refuses with 401 and says why, echoing what it was sent
/// and what it signs with: the attempt keeps the answer's status, type and
/// body, with the token and every secret redacted before the store sees
/// them. A long binary answer keeps its first 2 KiB, as base64.
async fn the_backends_answer_is_kept_with_its_secrets_redacted(kind: Kind) {
    let up = Upstream::start().await;
    let token = "tok-answer-000000001";
    sensitive(token);
    let said = format!(
        r#"{{"error":"bad signature","token":"{token}","signed_with":"{SIGNING_SECRET}","route":"{SECRET}"}}"#
    );
    up.set(Behaviour::Reply {
        status: 401,
        content_type: "application/json",
        body: Bytes::from(said),
    });
    let run = Running::start(kind, &up, "").await;
    let ab = &run.ab;
    callback(ab, "cart-401", "sess-answer-401", token).await;
    let refused = id_in(ab, "dead", "sess-answer-401").await;
    let d = detail(ab, &refused).await;
    let a = &d["attempts"][0];
    assert_eq!(a["status"], 401, "{kind:?}: {d}");
    assert_eq!(a["error"], "upstream answered 401 Unauthorized");
    assert_eq!(a["response_content_type"], "application/json");
    assert_eq!(
        a["response_body"],
        r#"{"error":"bad signature","token":"[redacted]","signed_with":"[redacted]","route":"[redacted]"}"#,
        "{kind:?}"
    );
    assert_eq!(
        (&a["response_body_base64"], &a["response_body_truncated"]),
        (&Value::Bool(false), &Value::Bool(false))
    );

    // 10 KiB of bytes that are not text.
    let binary: Vec<u8> = (0..10 * 1024).map(|i| (i % 256) as u8).collect();
    up.set(Behaviour::Reply {
        status: 400,
        content_type: "application/octet-stream",
        body: Bytes::from(binary.clone()),
    });
    let other = "tok-answer-000000002";
    sensitive(other);
    callback(ab, "cart-bin", "sess-answer-bin", other).await;
    let long = id_in(ab, "dead", "sess-answer-bin").await;
    let a = &detail(ab, &long).await["attempts"][0];
    assert_eq!(
        (
            &a["status"],
            &a["response_body_base64"],
            &a["response_body_truncated"]
        ),
        (&Value::from(400), &Value::Bool(true), &Value::Bool(true)),
        "{kind:?}: {a}"
    );
    let kept = base64::engine::general_purpose::STANDARD
        .decode(a["response_body"].as_str().expect("a body"))
        .expect("base64");
    assert_eq!(kept, binary[..2048], "{kind:?}: the first 2 KiB");

    let stored = run.stored_logs(kind, &[&refused, &long]).await;
    if !matches!(kind, Kind::Memory) {
        assert!(stored.contains("bad signature"), "{kind:?}: {stored}");
    }
    for secret in [token, SIGNING_SECRET, SECRET] {
        assert!(
            !stored.contains(secret),
            "{kind:?}: a secret reached the store"
        );
    }
}

/// A backend that answers 401 and then never stops sending its body: the
/// attempt reads what it keeps and no more, so it ends dead at once, not
/// timed out, and keeps what it read.
#[tokio::test]
async fn an_endless_answer_is_read_only_as_far_as_it_is_kept() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = vec![0u8; 16 * 1024];
                let _ = tcp.read(&mut head).await;
                let start = "HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain\r\n\
                             transfer-encoding: chunked\r\n\r\n";
                if tcp.write_all(start.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 1000, "n".repeat(1000));
                while tcp.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    let ab = Authback::start_edited(&format!("http://{addr}"), |c| c, false).await;
    callback(&ab, "cart-endless", "sess-endless", "tok-endless-0000001").await;
    let id = id_in(&ab, "dead", "sess-endless").await;
    let a = &detail(&ab, &id).await["attempts"][0];
    assert_eq!(a["status"], 401, "{a}");
    assert_eq!(a["response_body"], "n".repeat(2048));
    // Within the attempt timeout (500 ms), or it would have no status.
    assert_eq!(a["response_body_truncated"], true);
}

// ---------------------------------------------------------------------------
// B. Resolving failures, end to end.

/// Fast order watch (unconfirmed after 1.2 s, no redelivery) against the
/// Klarna simulator.
fn order_watch(api: &KlarnaApi, dir: &std::path::Path) -> String {
    let watch = "[order_watch]\nenabled = true\nafter = \"100ms\"\nevery = \"100ms\"\nredeliver = false\nunconfirmed_after = \"1200ms\"\n";
    format!("{}{watch}", api.config(dir, r#"["1h"]"#))
}

async fn post(ab: &Authback, path: &str, body: &str) -> (u16, Value) {
    let (status, body) = ab.admin_request("POST", path, body, None).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// `authback deliveries ARGS` against `ab`.
async fn cli(ab: &Authback, args: &[&str]) -> (i32, String, String) {
    crate::console::cli_at(&format!("http://{}", ab.admin), None, args).await
}

/// The sample of `series` on the metrics page.
async fn gauge(ab: &Authback, series: &str) -> f64 {
    metric(&ab.metrics().await, series).unwrap_or_else(|| panic!("{series} missing"))
}

/// Three dead deliveries (the backend says 401, and why) and one whose
/// order was never placed; returns their ids, dead ones first.
async fn failures(ab: &Authback, up: &Upstream, api: &KlarnaApi) -> Vec<String> {
    api.authorize("sess-life-noorder", "tok-life-noorder-01");
    callback(
        ab,
        "cart-noorder",
        "sess-life-noorder",
        "tok-life-noorder-01",
    )
    .await;
    let charged = id_in(ab, "unconfirmed", "sess-life-noorder").await;
    up.set(Behaviour::Reply {
        status: 401,
        content_type: "application/json",
        body: Bytes::from_static(br#"{"error":"bad signature"}"#),
    });
    let mut ids = Vec::new();
    for i in 1..=3 {
        let (session, token) = (format!("sess-life-dead-{i}"), format!("tok-life-dead-0{i}"));
        sensitive(&token);
        callback(ab, &format!("cart-dead-{i}"), &session, &token).await;
        ids.push(id_in(ab, "dead", &session).await);
    }
    ids.push(charged);
    ids
}

/// An operator closes failures dealt with by hand, through the API and the
/// CLI, one at a time and by filter: each leaves the dead and unconfirmed
/// lists and gauges, is listed resolved with its note, keeps its attempt log,
/// and Klarna's retry of it is still a duplicate.
async fn failures_are_resolved_through_the_api_and_the_cli(kind: Kind) {
    let up = Upstream::start().await;
    let api = KlarnaApi::start().await;
    let config_dir = TempDir::new();
    let run = Running::start(kind, &up, &order_watch(&api, config_dir.path())).await;
    let ab = &run.ab;
    let ids = failures(ab, &up, &api).await;
    let (first, charged) = (&ids[0], &ids[3]);
    assert_eq!(gauge(ab, "authback_dead_deliveries").await, 3.0);
    assert_eq!(gauge(ab, "authback_orders_unconfirmed").await, 1.0);
    // Ages since receipt: the incident was received before its watch gave
    // up (1.2 s), the dead ones a moment ago.
    assert!(gauge(ab, "authback_oldest_unconfirmed_seconds").await >= 1.2);
    assert!(gauge(ab, "authback_oldest_dead_seconds").await > 0.0);

    // One, through the API; refused for what is not a failure (any more).
    let resolve = |id: &str| format!("/v1/deliveries/{id}/resolve");
    let (status, r) = post(ab, &resolve(first), r#"{"note":"refunded in the shop"}"#).await;
    assert_eq!(status, 200, "{kind:?}: {r}");
    assert_eq!(
        (&r["state"], &r["note"]),
        (
            &Value::from("resolved"),
            &Value::from("refunded in the shop")
        )
    );
    let (status, r) = post(ab, &resolve(first), r#"{"note":"again"}"#).await;
    assert_eq!(
        (status, &r["state"]),
        (409, &Value::from("resolved")),
        "{r}"
    );
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("this one is resolved")),
        "{r}"
    );
    for (path, body, want) in [
        (resolve(&ids[1]), "", 400),
        (resolve(&ids[1]), r#"{"note":"  "}"#, 400),
        (
            resolve("00000000000000000000000000000000"),
            r#"{"note":"x"}"#,
            404,
        ),
        (resolve("not-an-id"), r#"{"note":"x"}"#, 404),
    ] {
        assert_eq!(post(ab, &path, body).await.0, want, "{path} {body}");
    }

    // One, through the CLI: the order placed by hand.
    let (code, out, err) = cli(ab, &["resolve", charged, "--note", "order placed by hand"]).await;
    assert_eq!(code, 0, "{kind:?}: {err}");
    assert!(out.contains("resolved at"), "{out}");
    // By filter, through the CLI: a dry run counts, then it resolves.
    let by_session = [
        "resolve",
        "--state",
        "dead",
        "--session-id",
        "sess-life-dead-2",
    ];
    let (code, out, err) = cli(ab, &[&by_session[..], &["--dry-run"]].concat()).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dry run: 1 dead"), "{out}");
    let (code, out, err) = cli(ab, &[&by_session[..], &["--note", "cancelled"]].concat()).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("resolved 1 of 1"), "{out}");
    // By filter, through the API: the rest.
    let bulk = "/v1/deliveries/resolve";
    assert_eq!(
        post(ab, bulk, r#"{"state":"dead"}"#).await.0,
        400,
        "no note"
    );
    let (status, r) = post(ab, bulk, r#"{"dry_run":true}"#).await;
    assert_eq!(
        (status, &r["matched"], &r["resolved"]),
        (200, &Value::from(1), &Value::from(0)),
        "{r}"
    );
    let (status, r) = post(ab, bulk, r#"{"state":"dead","note":"written off"}"#).await;
    assert_eq!((status, &r["resolved"]), (200, &Value::from(1)), "{r}");

    all_resolved(ab, &ids).await;
}

/// After every failure in `ids` was resolved: the lists, the gauges, the
/// detail with its attempt log, and Klarna's retry.
async fn all_resolved(ab: &Authback, ids: &[String]) {
    for state in ["dead", "unconfirmed"] {
        let (_, body) = ab
            .admin_request("GET", &format!("/v1/deliveries?state={state}"), "", None)
            .await;
        assert_eq!(json_of(&body), Value::Array(Vec::new()), "{state}");
    }
    let (_, body) = ab
        .admin_request("GET", "/v1/deliveries?state=resolved", "", None)
        .await;
    let mut listed: Vec<String> = json_of(&body)
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| {
            assert!(
                d["resolution"]["note"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty()),
                "{d}"
            );
            d["id"].as_str().expect("id").to_string()
        })
        .collect();
    listed.sort();
    let mut want = ids.to_vec();
    want.sort();
    assert_eq!(listed, want);
    for g in [
        "authback_dead_deliveries",
        "authback_orders_unconfirmed",
        "authback_oldest_dead_seconds",
        "authback_oldest_unconfirmed_seconds",
    ] {
        assert_eq!(gauge(ab, g).await, 0.0, "{g}");
    }
    let d = detail(ab, &ids[0]).await;
    assert_eq!(d["state"], "resolved");
    assert_eq!(
        d["attempts"][0]["response_body"],
        r#"{"error":"bad signature"}"#
    );
    let (code, out, err) = cli(ab, &["show", &ids[0]]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("refunded in the shop") && out.contains("bad signature"),
        "{out}"
    );
    // Klarna retries the first dead one: still a duplicate, nothing queued.
    callback(ab, "cart-dead-1", "sess-life-dead-1", "tok-life-dead-01").await;
    assert_eq!(callbacks(&ab.metrics().await, "duplicate"), Some(1.0));
    assert_eq!(detail(ab, &ids[0]).await["state"], "resolved");
}

macro_rules! on_every_store {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $test() { super::$test(super::Kind::Memory).await })*
        }
        mod file {
            $(#[tokio::test] async fn $test() { super::$test(super::Kind::File).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $test() { super::$test(super::Kind::Redis).await })*
        }
    };
}

on_every_store!(
    the_backends_answer_is_kept_with_its_secrets_redacted,
    failures_are_resolved_through_the_api_and_the_cli,
);
