//! Magento 2 with Klarna's module: its authorize controller
//! (`/checkout/klarna/authorize`), imitated in PHP (magento2/router.php).

use std::sync::Mutex;

use crate::common::*;

use super::*;

const MAGENTO_ROUTE: &str = "magento";

/// The module's own per-quote tokens (getUniqueHash()).
const M2_TOKENS: [&str; 3] = [
    "4b8f0e5c2a9d47f1b3e6c8a0d2f4e6a8",
    "9c1e3a5b7d9f41e3a5c7e9b1d3f5a7c9",
    "2d4f6b8a0c2e44a6c8e0b2d4f6a8c0e2",
];

/// Spellings of the module's URL (`{t}` the token), and whether Magento
/// routes each to the controller (checked by calling the imitation
/// directly); the others are authback's canonical reading of the path.
const M2_SPELLINGS: [(&str, bool); 11] = [
    ("/checkout/klarna/authorize?token={t}", true),
    ("/checkout/klarna/authorize/?token={t}", true),
    ("/checkout/Klarna/Authorize?token={t}", true),
    ("/checkout/KLARNA/AUTHORIZE/?token={t}", true),
    ("/index.php/checkout/klarna/authorize?token={t}", true),
    ("/index.php/checkout/klarna/authorize/?token={t}", true),
    ("/checkout/klarna/authorize/token/{t}", true),
    ("/index.php/checkout/klarna/authorize/token/{t}/", true),
    ("/checkout/klarna/authorize/form_key/x/token/{t}", true),
    ("/checkout/klarna/./authorize?token={t}", false),
    ("/Checkout//klarna/authorize?token={t}", false),
];

pub(crate) async fn quote(php: &Php, session: &str, token: &str) {
    let (status, _) = plain(
        php.addr,
        "POST",
        &format!("/__test/quote?session_id={session}&token={token}"),
        "",
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn magento_behind_authback_places_one_order_and_klarna_never_waits() {
    let api = KlarnaApi::start().await;
    let dir = TempDir::new();
    let php = start_php("magento2", &dir.path().join("magento.db"), &api);
    let ab = start_platform("examples/platforms/magento2.toml", &php.url(), &api).await;
    let tally = Mutex::new(Tally::default());
    let spell = |pq: &str, t: &str| pq.replace("{t}", t);

    // Quote 1: Klarna's repeats and every spelling.
    let (s1, t1) = ("sess-m2-1", M2_TOKENS[0]);
    quote(&php, s1, t1).await;
    api.authorize(s1, "tok-m2-0001");
    let body1 = callback_body(s1, "tok-m2-0001");
    let url1 = spell(M2_SPELLINGS[0].0, t1);
    repeats(&ab, &tally, &url1, &body1).await;
    for (pq, direct) in M2_SPELLINGS {
        let pq = spell(pq, t1);
        if direct {
            // Called directly, it reaches the controller (which wants a body).
            let (status, answer) = plain(php.addr, "POST", &pq, "{}").await;
            assert_eq!(
                (status, answer.as_str()),
                (400, r#"{"error":"session_id is required."}"#),
                "{pq}"
            );
        }
        intercepted(&ab, &tally, MAGENTO_ROUTE, &pq, &body1).await;
    }
    // The module's probe goes to Magento, which answers it.
    let before = counter(&ab, "callbacks", MAGENTO_ROUTE, "accepted").await
        + counter(&ab, "callbacks", MAGENTO_ROUTE, "duplicate").await;
    let (status, answer) = ab.callback("/checkout/klarna/authorize?dryRun=1", "").await;
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&answer).contains("is accessible."),
        "{answer:?}"
    );
    let after = counter(&ab, "callbacks", MAGENTO_ROUTE, "accepted").await
        + counter(&ab, "callbacks", MAGENTO_ROUTE, "duplicate").await;
    assert_eq!(before, after, "the probe is no callback");

    // Quote 2: a re-authorization while the first one's order is being
    // placed: the module answers "still in progress" (retried), then "is
    // not active" once the order is placed (delivered). Klarna holds that
    // order until the re-authorization was answered and retried, so it
    // surely comes while the order is being placed.
    let (s2, t2) = ("sess-m2-2", M2_TOKENS[1]);
    quote(&php, s2, t2).await;
    api.authorize(s2, "tok-m2-0002a");
    api.hold_order("tok-m2-0002a");
    let url2 = spell(M2_SPELLINGS[0].0, t2);
    as_klarna(&ab, &tally, &url2, &callback_body(s2, "tok-m2-0002a")).await;
    eventually!(
        api.order_requested("tok-m2-0002a"),
        "quote 2's placeOrder to ask Klarna for the order"
    );
    as_klarna(&ab, &tally, &url2, &callback_body(s2, "tok-m2-0002b")).await;
    assert!(
        !api.order_placed(s2),
        "Klarna had its 2xx while the order was still being placed"
    );
    eventually!(
        counter(&ab, "deliveries", MAGENTO_ROUTE, "retry").await >= 1.0,
        "the re-authorization's delivery to be told \"still in progress\""
    );
    api.release_order("tok-m2-0002a");

    // Meanwhile, Klarna calling the module directly (quote 3): its 2 s read
    // timeout ends the first attempt while placeOrder still runs, and the
    // retries get 400 "is not active": Klarna never gets its 2xx.
    let (s3, t3) = ("sess-m2-3", M2_TOKENS[2]);
    quote(&php, s3, t3).await;
    api.authorize(s3, "tok-m2-0003");
    let (url3, body3) = (
        spell(M2_SPELLINGS[0].0, t3),
        callback_body(s3, "tok-m2-0003"),
    );
    let direct = klarna_direct(php.addr, &url3, &body3);
    let settled = async {
        let waiting = Waiting::new(EVENTUALLY);
        while counter(&ab, "deliveries", MAGENTO_ROUTE, "delivered").await != 3.0 {
            if waiting.expired() {
                waiting.give_up(format_args!(
                    "3 deliveries; metrics, PHP's state and its log:\n{}\n{:#}\n{}",
                    ab.metrics().await,
                    php.state().await,
                    php.log()
                ));
            }
            waiting.pause().await;
        }
        eventually!(confirmed(&ab).await == 3.0, "order watch");
    };
    let (direct, ()) = tokio::join!(direct, settled);
    assert!(
        !direct.delivered && direct.attempts == 3 && direct.status == Some(400),
        "{direct:?}"
    );

    let orders = |q: serde_json::Value| q["quote_id"].as_i64().unwrap_or_default();
    let state = php.state().await;
    let all_orders = state["orders"].as_array().cloned().unwrap_or_default();
    for (session, what) in [(s1, "quote 1"), (s2, "quote 2"), (s3, "quote 3, direct")] {
        let q = orders(php.rows("klarna_quotes", "session_id", session).await[0].clone());
        let n = all_orders
            .iter()
            .filter(|o| o["quote_id"].as_i64() == Some(q))
            .count();
        assert_eq!(n, 1, "{what}: {all_orders:?}");
    }
    let hits1 = php.delivered_hits(s1).await;
    assert_eq!(hits1.len(), 1, "{hits1:?}");
    assert_eq!(hits1[0]["status"], 204);
    let hits2 = php.delivered_hits(s2).await;
    let answers: Vec<String> = hits2
        .iter()
        .map(|h| h["answer"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        answers.iter().any(|a| a.contains("still in progress")),
        "{answers:?}"
    );
    assert!(
        answers.last().is_some_and(|a| a.contains("is not active.")),
        "{answers:?}"
    );
    assert_eq!(counter(&ab, "deliveries", MAGENTO_ROUTE, "dead").await, 0.0);
    assert!(counter(&ab, "deliveries", MAGENTO_ROUTE, "retry").await >= 1.0);

    tally.lock().expect("lock").report(
        "magento2",
        &format!(
            "placeOrder ran once per quote ({} orders for 3 quotes; {} calls for quote 1, {} for quote 2's two authorizations); direct: Klarna {} attempts, last status {:?}",
            all_orders.len(),
            hits1.len(),
            hits2.len(),
            direct.attempts,
            direct.status
        ),
    );
}

#[tokio::test]
async fn magento_dry_run_spellings_that_are_callbacks_are_not_passed_through() {
    let api = KlarnaApi::start().await;
    let dir = TempDir::new();
    let php = start_php("magento2", &dir.path().join("magento.db"), &api);
    let ab = start_platform("examples/platforms/magento2.toml", &php.url(), &api).await;
    let t = M2_TOKENS[0];
    quote(&php, "sess-m2-gap", t).await;
    api.authorize("sess-m2-gap", "tok-m2-gap");
    let body = callback_body("sess-m2-gap", "tok-m2-gap");
    let mut gaps = Vec::new();
    // getParam('dryRun') is falsy ("0", "", or a path parameter "0", which
    // beats the query): the module runs the callback, placeOrder included.
    for pq in [
        format!("/checkout/klarna/authorize?token={t}&dryRun=0"),
        format!("/checkout/klarna/authorize?dryRun=&token={t}"),
        format!("/checkout/klarna/authorize/dryRun/0?dryRun=1&token={t}"),
        format!("/checkout/klarna/authorize?dryRun=1&dryRun=0&token={t}"),
    ] {
        gaps.extend(proxied(&ab, &php, &pq, &body).await);
    }
    // A spelling proxied to the module ran placeOrder before it answered.
    let orders = php.state().await["orders"]
        .as_array()
        .map_or(0, |a| a.len());
    assert!(gaps.is_empty(), "{gaps:#?}\norders placed: {orders}");
}
