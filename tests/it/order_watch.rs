//! Order watch against a simulated Klarna that learns order placement: the
//! test shop places an order by calling Klarna's create-order over HTTPS,
//! and Read Session then says `complete`. Each scenario runs on every store
//! kind it applies to.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(15);

/// Fast timings: a first check 100 ms after the backend's 2xx, then every
/// 100 ms; a redelivery at 700 ms; unconfirmed at 1.6 s.
const WATCH: &str = "[order_watch]\nenabled = true\nafter = \"100ms\"\nevery = \"100ms\"\nredeliver_after = \"700ms\"\nunconfirmed_after = \"1600ms\"\n";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    File,
    Redis,
}

/// authback in front of `shop`, reading sessions from `api`, on `kind`.
async fn start(
    kind: Kind,
    api: &KlarnaApi,
    shop: &Shop,
    watch: &str,
) -> (Authback, Option<RedisServer>) {
    start_edited(kind, api, shop, watch, |t| t).await
}

/// `start`, with the config text edited by `edit` first.
async fn start_edited(
    kind: Kind,
    api: &KlarnaApi,
    shop: &Shop,
    watch: &str,
    edit: impl FnOnce(String) -> String,
) -> (Authback, Option<RedisServer>) {
    let dir = TempDir::new();
    let redis_dir = TempDir::new();
    let redis = matches!(kind, Kind::Redis).then(|| RedisServer::start(redis_dir.path()));
    let store = match kind {
        Kind::Memory => String::new(),
        Kind::File => format!(
            "[store]\nkind = \"file\"\npath = \"{}\"\n",
            dir.path().join("authback.db").display()
        ),
        Kind::Redis => redis
            .as_ref()
            .map(|r| r.store_section("ow:"))
            .unwrap_or_default(),
    };
    let cfg = format!("{}{watch}{store}", api.config(dir.path(), r#"["1h"]"#));
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let text = edit(base_config(&shop.url(), &c, &k, &cfg));
    std::mem::forget(redis_dir);
    (
        Authback::start_text(dir, cert.der, &text, false).await,
        redis,
    )
}

/// Polls the metrics page until `series` reaches `want`, up to `WAIT`.
async fn metric_reaches(ab: &Authback, series: &str, want: f64) -> bool {
    let waiting = Waiting::new(WAIT);
    loop {
        if metric(&ab.metrics().await, series) == Some(want) {
            return true;
        }
        if waiting.expired() {
            return false;
        }
        waiting.pause().await;
    }
}

const CONFIRMED: &str = "authback_order_watch_total{outcome=\"confirmed\"}";
const REDELIVERED: &str = "authback_order_watch_total{outcome=\"redelivered\"}";
const UNCONFIRMED: &str = "authback_order_watch_total{outcome=\"unconfirmed\"}";

/// Klarna authorizes `session`; its callback reaches authback.
async fn authorize(ab: &Authback, api: &KlarnaApi, session: &str, token: &str) {
    api.authorize(session, token);
    let (status, _) = ab
        .callback(&ab.mint("cart-1"), &callback_body(session, token))
        .await;
    assert_eq!(status, 204);
}

async fn an_order_placed_at_once_is_confirmed(kind: Kind) {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    let (ab, _redis) = start(kind, &api, &shop, WATCH).await;
    shop.places("sess-ok", Places::AtOnce);
    authorize(&ab, &api, "sess-ok", "tok-ok-0001").await;
    assert!(
        metric_reaches(&ab, CONFIRMED, 1.0).await,
        "{}",
        ab.metrics().await
    );
    assert!(api.order_placed("sess-ok"));
    let got = shop.got("sess-ok");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].redelivery.is_none());
    let m = ab.metrics().await;
    assert_eq!(metric(&m, REDELIVERED), Some(0.0));
    assert_eq!(metric(&m, "authback_orders_unconfirmed"), Some(0.0));
    let (_, body) = ab
        .admin_get("/v1/deliveries?state=delivered")
        .await
        .expect("list");
    assert!(body.contains(r#""state":"confirmed""#), "{body}");
}

async fn a_backend_that_never_places_it_gets_one_redelivery_then_unconfirmed(kind: Kind) {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    let (ab, _redis) = start(kind, &api, &shop, WATCH).await;
    shop.places("sess-lie", Places::Never);
    authorize(&ab, &api, "sess-lie", "tok-lie-0001").await;
    assert!(
        metric_reaches(&ab, UNCONFIRMED, 1.0).await,
        "{}",
        ab.metrics().await
    );
    let got = shop.got("sess-lie");
    assert_eq!(got.len(), 2, "one delivery, one redelivery: {got:?}");
    assert_eq!(got[0].key, got[1].key, "the same Idempotency-Key");
    assert_eq!(
        (got[0].redelivery.as_deref(), got[1].redelivery.as_deref()),
        (None, Some("order-not-placed"))
    );
    let m = ab.metrics().await;
    assert_eq!(metric(&m, REDELIVERED), Some(1.0));
    assert_eq!(metric(&m, CONFIRMED), Some(0.0));
    assert_eq!(metric(&m, "authback_orders_unconfirmed"), Some(1.0));
    let (status, body) = ab
        .admin_get("/v1/deliveries?state=unconfirmed")
        .await
        .expect("list");
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(list[0]["session_id"], "sess-lie");
    assert_eq!(list[0]["order_watch"]["state"], "unconfirmed");
    assert_eq!(list[0]["order_watch"]["redelivered"], true);
    assert!(
        !body.contains("tok-lie-0001"),
        "tokens stay redacted: {body}"
    );
}

async fn an_order_placed_on_the_redelivery_is_confirmed(kind: Kind) {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    let (ab, _redis) = start(kind, &api, &shop, WATCH).await;
    shop.places("sess-late", Places::OnRedelivery);
    authorize(&ab, &api, "sess-late", "tok-late-0001").await;
    assert!(
        metric_reaches(&ab, CONFIRMED, 1.0).await,
        "{}",
        ab.metrics().await
    );
    let got = shop.got("sess-late");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].key, got[1].key);
    let m = ab.metrics().await;
    assert_eq!(metric(&m, REDELIVERED), Some(1.0));
    assert_eq!(metric(&m, UNCONFIRMED), Some(0.0));
}

async fn klarna_failing_during_the_watch_is_asked_again(kind: Kind) {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    // Four Read Session calls, 100 ms apart, must all come before a
    // redelivery is due: on a loaded machine 700 ms is not always enough.
    let watch = WATCH
        .replace("redeliver_after = \"700ms\"", "redeliver_after = \"5s\"")
        .replace(
            "unconfirmed_after = \"1600ms\"",
            "unconfirmed_after = \"10s\"",
        );
    assert_ne!(watch, WATCH);
    let (ab, _redis) = start(kind, &api, &shop, &watch).await;
    shop.places("sess-flaky", Places::AtOnce);
    api.script_once(
        "sess-flaky",
        vec![
            ApiAnswer::Status(503),
            ApiAnswer::RetryAfter(0),
            ApiAnswer::Status(500),
        ],
    );
    authorize(&ab, &api, "sess-flaky", "tok-flaky-0001").await;
    assert!(
        metric_reaches(&ab, CONFIRMED, 1.0).await,
        "{}",
        ab.metrics().await
    );
    assert!(
        api.requests_for("sess-flaky") >= 4,
        "three failures, then complete"
    );
    assert_eq!(
        shop.got("sess-flaky").len(),
        1,
        "no redelivery: the order was placed"
    );
}

/// The order watch of `session`'s delivery, as the admin API lists it.
async fn watch_of(ab: &Authback, session: &str) -> serde_json::Value {
    ab.deliveries()
        .await
        .into_iter()
        .find(|d| d["session_id"] == session)
        .map(|d| d["order_watch"].clone())
        .unwrap_or_default()
}

/// `authback_klarna_requests_total` of Read Session for order watch.
fn klarna_requests(page: &str, outcome: &str) -> f64 {
    let series = format!(
        "authback_klarna_requests_total{{operation=\"read_session\",purpose=\"order_watch\",outcome=\"{outcome}\"}}"
    );
    metric(page, &series).unwrap_or(-1.0)
}

/// Klarna answers 503 for far longer than `unconfirmed_after`: not knowing
/// is not "no order", so the watch neither redelivers nor ends, and says
/// since when Klarna has failed. Once Klarna answers, the order it had
/// placed all along is confirmed.
async fn klarna_failing_holds_the_watch_until_it_answers(kind: Kind) {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    let (ab, _redis) = start(kind, &api, &shop, WATCH).await;
    shop.places("sess-503", Places::AtOnce);
    api.script("sess-503", vec![ApiAnswer::Status(503)]);
    authorize(&ab, &api, "sess-503", "tok-503-0001").await;
    // 20 checks 100 ms apart: past unconfirmed_after (1.6 s) and
    // redeliver_after (700 ms) from the backend's 2xx.
    eventually!(
        watch_of(&ab, "sess-503").await["checks"].as_u64() >= Some(20),
        "20 failed checks: {}",
        watch_of(&ab, "sess-503").await
    );
    let w = watch_of(&ab, "sess-503").await;
    assert_eq!(w["state"], "watching", "{w}");
    let error = w["last_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("Klarna unreachable since ")
            && error.ends_with("Klarna answered 503 Service Unavailable"),
        "{error}"
    );
    assert_eq!(shop.got("sess-503").len(), 1, "no redelivery on a guess");
    let m = ab.metrics().await;
    assert_eq!(metric(&m, UNCONFIRMED), Some(0.0));
    assert_eq!(metric(&m, REDELIVERED), Some(0.0));
    assert!(klarna_requests(&m, "server_error") >= 20.0, "{m}");
    assert_eq!(metric(&m, "authback_orders_unconfirmed"), Some(0.0));

    // Klarna answers again: the order was placed all along.
    api.script("sess-503", vec![]);
    assert!(
        metric_reaches(&ab, CONFIRMED, 1.0).await,
        "{}",
        ab.metrics().await
    );
    let m = ab.metrics().await;
    assert_eq!(metric(&m, UNCONFIRMED), Some(0.0));
    assert_eq!(klarna_requests(&m, "ok"), 1.0, "{m}");
    assert_eq!(shop.got("sess-503").len(), 1);
}

/// Release at 1.2 s from the callback's arrival, before `unconfirmed_after`.
const RELEASE: &str = "[order_watch]\nenabled = true\nafter = \"100ms\"\nevery = \"100ms\"\nredeliver_after = \"700ms\"\nunconfirmed_after = \"3s\"\nrelease = \"on\"\nrelease_after = \"1200ms\"\n";

const RELEASED: &str = "authback_order_watch_total{outcome=\"released\"}";
const RELEASE_FAILED: &str = "authback_order_watch_total{outcome=\"release_failed\"}";
const SUPERSEDED: &str = "authback_order_watch_total{outcome=\"superseded\"}";
const CANCELS_OK: &str = "authback_klarna_requests_total{operation=\"cancel_authorization\",purpose=\"release\",outcome=\"ok\"}";

/// How long to wait to show that something did not happen.
const ABSENCE: Duration = Duration::from_millis(800);

/// The deliveries of `state` the admin API lists.
async fn listed(ab: &Authback, state: &str) -> serde_json::Value {
    let (_, body) = ab
        .admin_get(&format!("/v1/deliveries?state={state}"))
        .await
        .expect("list");
    serde_json::from_str(&body).expect("json")
}

async fn never_placed_is_released(kind: Kind) {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    let (ab, _redis) = start(kind, &api, &shop, RELEASE).await;
    shop.places("sess-rel", Places::Never);
    authorize(&ab, &api, "sess-rel", "tok-rel-0001").await;
    assert!(
        metric_reaches(&ab, RELEASED, 1.0).await,
        "{}",
        ab.metrics().await
    );
    assert_eq!(api.cancelled("tok-rel-0001"), 1);
    let m = ab.metrics().await;
    assert_eq!(metric(&m, CANCELS_OK), Some(1.0), "{m}");
    assert_eq!(metric(&m, "authback_orders_unconfirmed"), Some(0.0));
    assert_eq!(metric(&m, UNCONFIRMED), Some(0.0));
    let list = listed(&ab, "released").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["state"], "released");
    assert!(listed(&ab, "unconfirmed")
        .await
        .as_array()
        .is_some_and(Vec::is_empty));
    // The shop reconciled it: a released delivery can be resolved.
    let id = list[0]["id"].as_str().unwrap_or_default().to_string();
    let (status, body) = ab
        .admin_request(
            "POST",
            &format!("/v1/deliveries/{id}/resolve"),
            r#"{"note":"no order in the shop; released"}"#,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(listed(&ab, "released")
        .await
        .as_array()
        .is_some_and(Vec::is_empty));
    pace(ABSENCE).await;
    assert_eq!(api.delete_calls("tok-rel-0001"), 1, "released once");
    // The backend was told, once, under a key of the notice's own.
    let got = shop.got("sess-rel");
    let notices: Vec<_> = got.iter().filter(|g| g.released.is_some()).collect();
    assert_eq!(notices.len(), 1, "{got:?}");
    assert_eq!(
        notices[0].released.as_deref(),
        Some("authorization-cancelled")
    );
    assert_eq!(notices[0].kind, "klarna.authorization.released");
    assert_eq!(notices[0].key, format!("{id}:released"));
    assert!(
        got.iter()
            .filter(|g| g.released.is_none())
            .all(|g| g.key == id && g.kind == "klarna.authorization"),
        "{got:?}"
    );
}

/// A stock plugin behind an `original` route is not told of a release: it
/// would try to place the order with the cancelled token.
#[tokio::test]
async fn an_original_route_gets_no_release_notice() {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    let original = |t: String| {
        t.replace(
            "forward_path = \"/klarna/authorized\"",
            "forward_path = \"/klarna/authorized\"\nforward_format = \"original\"",
        )
    };
    let (ab, _redis) = start_edited(Kind::Memory, &api, &shop, RELEASE, original).await;
    shop.places("sess-orig", Places::Never);
    authorize(&ab, &api, "sess-orig", "tok-orig-0001").await;
    assert!(metric_reaches(&ab, RELEASED, 1.0).await);
    assert_eq!(api.cancelled("tok-orig-0001"), 1);
    pace(ABSENCE).await;
    let got = shop.got("sess-orig");
    assert!(!got.is_empty(), "the authorization itself was delivered");
    assert!(got.iter().all(|g| g.released.is_none()), "{got:?}");
}

async fn placed_before_release_after_is_not_released(kind: Kind) {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    let (ab, _redis) = start(kind, &api, &shop, RELEASE).await;
    // Placed on the redelivery at 700 ms, before the release at 1.2 s.
    shop.places("sess-pl", Places::OnRedelivery);
    authorize(&ab, &api, "sess-pl", "tok-pl-0001").await;
    assert!(metric_reaches(&ab, CONFIRMED, 1.0).await);
    pace(ABSENCE).await;
    assert_eq!(api.delete_calls("tok-pl-0001"), 0);
    assert_eq!(metric(&ab.metrics().await, RELEASED), Some(0.0));
}

/// The redelivery is still being retried at `release_after`: no release
/// until it settles, however long that takes.
async fn a_delivery_retrying_at_release_after_holds_the_release(kind: Kind) {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    let (ab, _redis) = start(kind, &api, &shop, RELEASE).await;
    shop.places("sess-busy", Places::Never);
    authorize(&ab, &api, "sess-busy", "tok-busy-0001").await;
    eventually!(shop.got("sess-busy").len() == 1, "first delivery");
    // The redelivery (700 ms) meets a backend answering 503 past the
    // release (1.2 s).
    shop.failing(true);
    assert!(metric_reaches(&ab, REDELIVERED, 1.0).await);
    eventually!(
        shop.got("sess-busy").len() >= 3,
        "the redelivery retried: {:?}",
        shop.got("sess-busy")
    );
    pace(RELEASE_PAST).await;
    assert_eq!(api.delete_calls("tok-busy-0001"), 0, "held while retrying");
    assert_eq!(metric(&ab.metrics().await, RELEASED), Some(0.0));
    // It settles: the release goes ahead, once.
    shop.failing(false);
    assert!(
        metric_reaches(&ab, RELEASED, 1.0).await,
        "{}",
        ab.metrics().await
    );
    assert_eq!(api.delete_calls("tok-busy-0001"), 1);
}

/// Past `RELEASE`'s `release_after` (1.2 s), from any point after the
/// callback.
const RELEASE_PAST: Duration = Duration::from_millis(1500);

async fn a_503_on_the_delete_is_retried_and_released_once(kind: Kind) {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    let (ab, _redis) = start(kind, &api, &shop, RELEASE).await;
    shop.places("sess-5xx", Places::Never);
    api.cancel_once(vec![503]);
    authorize(&ab, &api, "sess-5xx", "tok-5xx-0001").await;
    assert!(
        metric_reaches(&ab, RELEASED, 1.0).await,
        "{}",
        ab.metrics().await
    );
    pace(ABSENCE).await;
    assert_eq!(api.delete_calls("tok-5xx-0001"), 2, "one 503, one 204");
    assert_eq!(api.cancelled("tok-5xx-0001"), 1);
    assert_eq!(metric(&ab.metrics().await, RELEASED), Some(1.0));
}

async fn dry_run_lists_and_sends_no_delete(kind: Kind) {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    let dry = RELEASE.replace("release = \"on\"", "release = \"dry_run\"");
    let (ab, _redis) = start(kind, &api, &shop, &dry).await;
    shop.places("sess-dry", Places::Never);
    authorize(&ab, &api, "sess-dry", "tok-dry-0001").await;
    assert!(metric_reaches(&ab, UNCONFIRMED, 1.0).await);
    let list = listed(&ab, "unconfirmed").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let error = list[0]["order_watch"]["last_error"].as_str().unwrap_or("");
    assert!(error.starts_with("dry_run"), "{list}");
    pace(ABSENCE).await;
    assert_eq!(api.delete_calls("tok-dry-0001"), 0);
}

async fn a_superseded_authorization_is_listed_not_cancelled(kind: Kind) {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    let (ab, _redis) = start(kind, &api, &shop, RELEASE).await;
    shop.places("sess-re", Places::Never);
    authorize(&ab, &api, "sess-re", "tok-re-old1").await;
    // The customer authorizes again; the order is placed on the new token.
    authorize(&ab, &api, "sess-re", "tok-re-new1").await;
    eventually!(shop.got("sess-re").len() >= 2);
    assert_eq!(api.create_order("tok-re-new1").await, 200);
    assert!(
        metric_reaches(&ab, SUPERSEDED, 1.0).await,
        "{}",
        ab.metrics().await
    );
    assert!(metric_reaches(&ab, CONFIRMED, 1.0).await);
    pace(ABSENCE).await;
    assert_eq!(api.delete_calls("tok-re-old1"), 0);
    assert_eq!(api.delete_calls("tok-re-new1"), 0);
    let m = ab.metrics().await;
    assert_eq!(metric(&m, RELEASED), Some(0.0));
    assert_eq!(metric(&m, RELEASE_FAILED), Some(0.0));
}

macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $scenario() { super::$scenario(super::Kind::Memory).await })*
        }
        mod file {
            $(#[tokio::test] async fn $scenario() { super::$scenario(super::Kind::File).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $scenario() { super::$scenario(super::Kind::Redis).await })*
        }
    };
}

on_every_store!(
    an_order_placed_at_once_is_confirmed,
    a_backend_that_never_places_it_gets_one_redelivery_then_unconfirmed,
    an_order_placed_on_the_redelivery_is_confirmed,
    klarna_failing_during_the_watch_is_asked_again,
    klarna_failing_holds_the_watch_until_it_answers,
    never_placed_is_released,
    placed_before_release_after_is_not_released,
    a_delivery_retrying_at_release_after_holds_the_release,
    a_503_on_the_delete_is_retried_and_released_once,
    dry_run_lists_and_sends_no_delete,
    a_superseded_authorization_is_listed_not_cancelled,
);

/// Wrong credentials (401) past `redeliver_after`: the redelivery waits
/// for an answer. Once Klarna reads the session (no order yet), the backend
/// gets it once more, places the order, and the watch confirms it.
#[tokio::test]
async fn with_credentials_refused_the_redelivery_waits_for_an_answer() {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    let watch = WATCH.replace(
        "unconfirmed_after = \"1600ms\"",
        "unconfirmed_after = \"30s\"",
    );
    let (ab, _redis) = start(Kind::Memory, &api, &shop, &watch).await;
    shop.places("sess-401", Places::OnRedelivery);
    api.script("sess-401", vec![ApiAnswer::Status(401)]);
    authorize(&ab, &api, "sess-401", "tok-401-0001").await;
    // 10 checks 100 ms apart: past redeliver_after (700 ms).
    eventually!(
        klarna_requests(&ab.metrics().await, "unauthorized") >= 10.0,
        "10 refused checks: {}",
        ab.metrics().await
    );
    let w = watch_of(&ab, "sess-401").await;
    let error = w["last_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("Klarna unreachable since ")
            && error.ends_with("Klarna refused the credentials (401 Unauthorized)"),
        "{error}"
    );
    assert_eq!(shop.got("sess-401").len(), 1, "no redelivery while refused");
    assert_eq!(metric(&ab.metrics().await, REDELIVERED), Some(0.0));

    api.script("sess-401", vec![]);
    assert!(
        metric_reaches(&ab, CONFIRMED, 1.0).await,
        "{}",
        ab.metrics().await
    );
    let got = shop.got("sess-401");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].redelivery.as_deref(), Some("order-not-placed"));
    assert_eq!(metric(&ab.metrics().await, REDELIVERED), Some(1.0));
}

/// Klarna down (every connection closed) past `unconfirmed_after`, for
/// the real binary: one "Klarna failing" line however many checks fail,
/// no redelivery, no incident. Once Klarna is back the session reads
/// incomplete: now it is known there is no order, and the incident says so.
#[tokio::test]
async fn klarna_down_logs_once_and_the_incident_waits_for_an_answer() {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    shop.places("sess-down", Places::Never);
    api.authorize("sess-down", "tok-down-0001");
    let dir = TempDir::new();
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let (public, admin) = (free_port(), free_port());
    let extra = format!("{}{WATCH}", api.config(dir.path(), r#"["1h"]"#));
    let text = on_ports(&base_config(&shop.url(), &c, &k, &extra), public, admin);
    let (path, cfg, addr) = write_config(dir.path(), &text, public);
    let url = mint_path(&cfg, "klarna", "cart-1");
    let log = dir.path().join("run.log");
    let mut child = spawn_binary(&path, &log, &[]);
    wait_tls(addr, &cert.der).await;
    api.set_down(true);
    let sent = klarna_callback(
        addr,
        &cert.der,
        &url,
        &callback_body("sess-down", "tok-down-0001"),
    )
    .await;
    assert!(sent.delivered);
    let page = || async { admin_get_of(admin, "/metrics").await.unwrap_or_default() };
    // 20 checks 100 ms apart: past unconfirmed_after (1.6 s).
    eventually!(
        klarna_requests(&page().await, "unreachable") >= 20.0,
        "20 checks with Klarna down: {}",
        page().await
    );
    let m = page().await;
    assert_eq!(metric(&m, UNCONFIRMED), Some(0.0), "{m}");
    assert_eq!(metric(&m, REDELIVERED), Some(0.0), "{m}");
    assert_eq!(shop.got("sess-down").len(), 1);

    api.set_down(false);
    eventually!(
        metric(&page().await, UNCONFIRMED) == Some(1.0),
        "the incident once Klarna answers: {}",
        page().await
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually!(
        logs().contains("Klarna reachable again"),
        "the recovery line"
    );
    let incidents = admin_get_of(admin, "/v1/deliveries?state=unconfirmed")
        .await
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let list: serde_json::Value = serde_json::from_str(&incidents).expect("json");
    assert_eq!(
        list[0]["order_watch"]["last_error"],
        "Read Session: no order placed (Klarna answered again)",
        "{incidents}"
    );
    let logs = logs();
    let lines = |message: &str| {
        logs.lines()
            .filter(|l| l.contains(&format!("\"message\":\"{message}\"")))
            .count()
    };
    assert_eq!(lines("Klarna failing"), 1, "{logs}");
    assert_eq!(lines("Klarna reachable again"), 1, "{logs}");
    assert!(logs.contains("\"outcome\":\"unreachable\""), "{logs}");
    assert_eq!(
        lines("no order placed yet: delivering to the backend once more"),
        0
    );
    assert_eq!(shop.got("sess-down").len(), 1);
}

/// A 404 in the session's life: by default it proves nothing (the watch
/// goes on to a redelivery and `unconfirmed`, without asking Klarna again
/// in between); with `not_found = "confirmed"` it reads as an order placed.
#[tokio::test]
async fn a_404_reads_as_configured() {
    for (reading, confirmed) in [("unconfirmed", false), ("confirmed", true)] {
        let api = KlarnaApi::start().await;
        let shop = Shop::start(api.clone()).await;
        // WATCH ends inside [order_watch]: this key joins it.
        let extra = format!("not_found = \"{reading}\"\n");
        let dir = TempDir::new();
        let cfg = format!("{}{WATCH}{extra}", api.config(dir.path(), r#"["1h"]"#));
        let cert = make_cert();
        let (c, k) = write_cert(dir.path(), &cert);
        let ab = Authback::start_text(
            dir,
            cert.der,
            &base_config(&shop.url(), &c, &k, &cfg),
            false,
        )
        .await;
        shop.places("sess-gone", Places::Never);
        // Never authorized at the simulator: Read Session answers 404.
        let (status, _) = ab
            .callback(
                &ab.mint("cart-1"),
                &callback_body("sess-gone", "tok-gone-0001"),
            )
            .await;
        assert_eq!(status, 204);
        let outcome = if confirmed { CONFIRMED } else { UNCONFIRMED };
        assert!(
            metric_reaches(&ab, outcome, 1.0).await,
            "{reading}: {}",
            ab.metrics().await
        );
        let calls = api.requests_for("sess-gone");
        if confirmed {
            assert_eq!((shop.got("sess-gone").len(), calls), (1, 1), "{reading}");
        } else {
            assert_eq!(
                shop.got("sess-gone").len(),
                2,
                "{reading}: redelivered once"
            );
            assert!(
                calls <= 3,
                "{reading}: a 404 is not asked again every 100 ms ({calls} calls)"
            );
        }
    }
}

#[test]
fn order_watch_needs_klarna_credentials() {
    let dir = TempDir::new();
    let text = format!(
        "[server]\npublic_url = \"https://shop.example.com\"\n[server.tls]\nself_signed = true\n[upstream]\nurl = \"http://127.0.0.1:8080\"\n{WATCH}"
    );
    let errors = authback::Config::parse(&text, dir.path()).expect_err("no [klarna]");
    assert!(
        errors
            .iter()
            .any(|e| e.key == "klarna" && e.message.contains("order_watch.enabled")),
        "{errors:?}"
    );
    let off = text.replace("enabled = true", "enabled = false");
    assert!(authback::Config::parse(&off, dir.path()).is_ok());
}

/// The file store, `kill -9` while a watch runs, and a restart: the watch
/// resumes where it was, redelivers on time, and the order is confirmed.
#[tokio::test]
async fn a_watch_resumes_after_kill_9_on_the_file_store() {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    shop.places("sess-k9", Places::OnRedelivery);
    api.authorize("sess-k9", "tok-k9-0001");
    let dir = TempDir::new();
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let (public, admin) = (free_port(), free_port());
    // The redelivery is due 1.5 s after the backend's 2xx: the kill lands
    // before it, with the watch already checked a few times.
    let watch = "[order_watch]\nenabled = true\nafter = \"100ms\"\nevery = \"100ms\"\nredeliver_after = \"1500ms\"\nunconfirmed_after = \"20s\"\n";
    let store = format!(
        "[store]\nkind = \"file\"\npath = \"{}\"\n",
        dir.path().join("data/authback.db").display()
    );
    let extra = format!("{}{watch}{store}", api.config(dir.path(), r#"["1h"]"#));
    let text = on_ports(&base_config(&shop.url(), &c, &k, &extra), public, admin);
    let (path, cfg, addr) = write_config(dir.path(), &text, public);
    let url = mint_path(&cfg, "klarna", "cart-1");

    let mut first = spawn_binary(&path, &dir.path().join("run1.log"), &[]);
    wait_tls(addr, &cert.der).await;
    let sent = klarna_callback(
        addr,
        &cert.der,
        &url,
        &callback_body("sess-k9", "tok-k9-0001"),
    )
    .await;
    assert!(sent.delivered);
    let waiting = Waiting::new(WAIT);
    while api.requests_for("sess-k9") < 2 && !waiting.expired() {
        waiting.pause().await;
    }
    if api.requests_for("sess-k9") < 2 {
        let _ = first.kill();
        let _ = first.wait();
        panic!("the watch did not run before the kill");
    }
    assert_eq!(shop.got("sess-k9").len(), 1, "killed before the redelivery");
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let checks_before = api.requests_for("sess-k9");

    let mut second = spawn_binary(&path, &dir.path().join("run2.log"), &[]);
    wait_tls(addr, &cert.der).await;
    // The order placed on the redelivery, and the watch confirms it.
    let waiting = Waiting::new(WAIT);
    let mut page;
    loop {
        page = metrics_of(admin).await.unwrap_or_default();
        if metric(&page, CONFIRMED) == Some(1.0) || waiting.expired() {
            break;
        }
        waiting.pause().await;
    }
    second.kill().expect("stop");
    second.wait().expect("reaped");
    assert_eq!(metric(&page, CONFIRMED), Some(1.0), "{page}");
    assert!(
        api.requests_for("sess-k9") > checks_before,
        "checks resumed after the restart"
    );
    let got = shop.got("sess-k9");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].redelivery.as_deref(), Some("order-not-placed"));
    assert_eq!(got[0].key, got[1].key);
}

/// A DELETE in flight when authback is killed: Klarna cancelled the
/// authorization, authback never heard. After the restart the recorded
/// release sends the DELETE again, reads Klarna's 403 as released, and the
/// authorization is cancelled exactly once.
#[tokio::test]
async fn a_release_cut_off_by_kill_9_is_released_once_after_restart() {
    let api = KlarnaApi::start().await;
    let shop = Shop::start(api.clone()).await;
    shop.places("sess-cut", Places::Never);
    api.authorize("sess-cut", "tok-cut-0001");
    api.hold_cancels();
    let dir = TempDir::new();
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let (public, admin) = (free_port(), free_port());
    let store = format!(
        "[store]\nkind = \"file\"\npath = \"{}\"\n",
        dir.path().join("data/authback.db").display()
    );
    let extra = format!("{}{RELEASE}{store}", api.config(dir.path(), r#"["1h"]"#));
    let text = on_ports(&base_config(&shop.url(), &c, &k, &extra), public, admin);
    let (path, cfg, addr) = write_config(dir.path(), &text, public);
    let url = mint_path(&cfg, "klarna", "cart-1");

    let mut first = spawn_binary(&path, &dir.path().join("run1.log"), &[]);
    wait_tls(addr, &cert.der).await;
    let body = callback_body("sess-cut", "tok-cut-0001");
    assert!(
        klarna_callback(addr, &cert.der, &url, &body)
            .await
            .delivered
    );
    eventually!(within: WAIT, api.delete_calls("tok-cut-0001") == 1, "no DELETE sent");
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    api.release_order(HOLD_CANCELS);

    let mut second = spawn_binary(&path, &dir.path().join("run2.log"), &[]);
    wait_tls(addr, &cert.der).await;
    let waiting = Waiting::new(WAIT);
    let mut page;
    loop {
        page = metrics_of(admin).await.unwrap_or_default();
        if metric(&page, RELEASED) == Some(1.0) || waiting.expired() {
            break;
        }
        waiting.pause().await;
    }
    pace(ABSENCE).await;
    let listed = admin_get_of(admin, "/v1/deliveries?state=released")
        .await
        .unwrap_or_default();
    second.kill().expect("stop");
    second.wait().expect("reaped");
    assert_eq!(metric(&page, RELEASED), Some(1.0), "{page}");
    assert_eq!(api.cancelled("tok-cut-0001"), 1, "cancelled once");
    assert_eq!(
        api.delete_calls("tok-cut-0001"),
        2,
        "sent again, answered 403"
    );
    assert!(listed.contains(r#""state":"released""#), "{listed}");
}

/// The metrics page of the binary whose admin listener is on `port`.
async fn metrics_of(port: u16) -> Option<String> {
    admin_get_of(port, "/metrics").await
}

/// The body of `GET path` on the binary whose admin listener is on `port`.
async fn admin_get_of(port: u16, path: &str) -> Option<String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    // Without admin.token, the API answers a loopback Host only.
    let req = Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = send.send_request(req).await.ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}
