//! A hostile `Retry-After` from the upstream. The retry it asks for waits,
//! at most until the delivery's deadline. The delay must not wrap into the
//! past (a hot loop in a release build) or overflow (a panic in a debug
//! build, which leaves the delivery leased and never retried).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::common::*;

/// `u64::MAX` seconds: parses to a `Duration`, and overflows any instant it is
/// added to.
const HOSTILE: &str = "18446744073709551615";

/// How long a test watches for a retry that must not come: a hot loop
/// would make thousands of attempts meanwhile.
const HOT_LOOP: Duration = Duration::from_secs(1);

/// An upstream that answers every request `503` with `Retry-After: value`
/// and counts the requests. `Behaviour` has no way to set a header.
struct Refusing {
    url: String,
    hits: Arc<AtomicUsize>,
}

async fn refusing(value: &'static str) -> Refusing {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        Response::builder()
                            .status(503)
                            .header("retry-after", value)
                            .body(Full::new(Bytes::from_static(b"busy")))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Refusing { url, hits }
}

async fn pending(ab: &Authback) -> Vec<serde_json::Value> {
    let (status, body) = ab
        .admin_request("GET", "/v1/deliveries?state=pending", "", None)
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("a JSON list")
}

/// One callback against an upstream that always answers 503 with
/// `Retry-After: value`: one attempt, its outcome recorded, the delivery
/// still pending and its next attempt at its deadline.
async fn one_attempt_then_wait_until_the_deadline(value: &'static str) {
    let up = refusing(value).await;
    let ab = Authback::start_edited(&up.url, |t| t, false).await;
    let (status, _) = ab
        .callback(
            &ab.mint("cart-ra"),
            &callback_body("sess-ra", "tok-retry-after-01"),
        )
        .await;
    assert_eq!(status.as_u16(), 204);

    // The first attempt's outcome gets recorded. An attempt that panics
    // never records it, and its delivery stays leased with 0 attempts.
    let mut listed;
    eventually!(
        {
            listed = pending(&ab).await;
            listed
                .first()
                .is_some_and(|d| d["attempts"].as_u64() >= Some(1))
        },
        "the first attempt's outcome recorded (did the attempt panic?): {listed:?}; upstream saw {} requests",
        up.hits.load(Ordering::SeqCst)
    );
    assert_eq!(listed.len(), 1, "{listed:?}");

    // A second more: the hot loop made thousands of attempts in this time.
    tokio::time::sleep(HOT_LOOP).await;
    let hits = up.hits.load(Ordering::SeqCst);
    assert!(
        hits <= 3,
        "{hits} attempts within about a second: the retry does not wait"
    );
    let listed = pending(&ab).await;
    assert_eq!(listed.len(), 1, "still pending, not lost: {listed:?}");
    let d = &listed[0];
    assert_eq!(d["state"], "pending");
    assert_eq!(d["attempts"].as_u64(), Some(hits as u64), "{d}");
    assert!(
        d["last_error"].as_str().is_some_and(|e| e.contains("503")),
        "{d}"
    );
    assert_eq!(
        d["next_attempt_at"], d["deadline_at"],
        "a wait past the deadline is cut to the deadline: {d}"
    );
}

#[tokio::test]
async fn a_retry_after_of_u64_max_seconds_waits_until_the_deadline() {
    one_attempt_then_wait_until_the_deadline(HOSTILE).await;
}

#[tokio::test]
async fn a_retry_after_date_in_year_9999_waits_until_the_deadline() {
    one_attempt_then_wait_until_the_deadline("Fri, 31 Dec 9999 23:59:59 GMT").await;
}
