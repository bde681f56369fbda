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

on_every_store!(the_backends_answer_is_kept_with_its_secrets_redacted);
