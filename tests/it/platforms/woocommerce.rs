//! WooCommerce with Klarna Payments for WooCommerce: its authorization
//! callback (`wc-api=KP_WC_AUTHORIZATION`), imitated in PHP
//! (woocommerce/router.php).

use std::sync::Mutex;

use crate::common::*;

use super::*;

const WOO_ROUTE: &str = "woocommerce";

/// Spellings of the plugin's URL, and whether WordPress routes each to the
/// handler (checked by calling the imitation directly); the others are
/// authback's canonical reading of the path, taken all the same.
const WOO_SPELLINGS: [(&str, bool); 13] = [
    ("/wc-api/KP_WC_AUTHORIZATION", true),
    ("/wc-api/kp_wc_authorization", true),
    ("/wc-api/Kp_Wc_Authorization/", true),
    ("/wc-api/KP_WC_AUTHORIZATION?utm=1", true),
    ("/index.php/wc-api/KP_WC_AUTHORIZATION", true),
    ("/?wc-api=KP_WC_AUTHORIZATION", true),
    ("/?wc-api=kp_wc_authorization", true),
    ("/shop/?wc-api=KP_WC_AUTHORIZATION", true),
    ("/index.php?wc-api=KP_WC_AUTHORIZATION&lang=en", true),
    ("/?wc%2Dapi=KP_WC_AUTHORIZATION", true),
    ("/wc-api/KP%5FWC%5FAUTHORIZATION", true),
    ("/wc-api/./KP_WC_AUTHORIZATION", false),
    ("/WC-API//KP_WC_AUTHORIZATION", false),
];

#[tokio::test]
async fn woocommerce_behind_authback_schedules_one_job_per_authorization() {
    let api = KlarnaApi::start().await;
    let dir = TempDir::new();
    let php = start_php("woocommerce", &dir.path().join("wp.db"), &api);
    let ab = start_platform("examples/platforms/woocommerce.toml", &php.url(), &api).await;
    let tally = Mutex::new(Tally::default());
    let (session, tok1, tok2) = ("sess-woo-1", "tok-woo-0001", "tok-woo-0002");
    plain(
        php.addr,
        "POST",
        &format!("/__test/order?session_id={session}"),
        "",
    )
    .await;
    api.authorize(session, tok1);
    let body1 = callback_body(session, tok1);

    let klarna_url = WOO_SPELLINGS[0].0;
    repeats(&ab, &tally, klarna_url, &body1).await;
    eventually!(php.delivered_hits(tok1).await.len() == 1, "the delivery");

    // Each spelling reaches the handler when called directly (an empty
    // JSON body: nothing is scheduled), and authback takes it.
    for (pq, direct) in WOO_SPELLINGS {
        if direct {
            let before = php.hit_count().await;
            let (status, answer) = plain(php.addr, "POST", pq, "{}").await;
            assert_eq!((status, answer.as_str()), (200, "-1"), "{pq}");
            assert_eq!(php.hit_count().await, before + 1, "{pq} is the handler");
        }
        intercepted(&ab, &tally, WOO_ROUTE, pq, &body1).await;
    }
    tokio::time::sleep(ABSENCE).await;
    assert_eq!(php.delivered_hits(tok1).await.len(), 1, "one delivery");
    let jobs = |s: serde_json::Value| s["jobs"].as_array().map_or(0, |a| a.len());
    assert_eq!(jobs(php.state().await), 1, "one job scheduled");
    assert_eq!(
        counter(&ab, "deliveries", WOO_ROUTE, "delivered").await,
        1.0,
        "WooCommerce answers 200 at once"
    );

    // 120 s later the job places the order at Klarna.
    let (_, ran) = plain(php.addr, "POST", "/__test/run-scheduled", "").await;
    assert_eq!(ran, r#"{"ran":1}"#);
    assert!(api.order_placed(session));

    // A re-authorization is one more delivery; its job finds the order paid.
    as_klarna(&ab, &tally, klarna_url, &callback_body(session, tok2)).await;
    eventually!(
        php.delivered_hits(tok2).await.len() == 1,
        "the re-authorization"
    );
    let (_, ran) = plain(php.addr, "POST", "/__test/run-scheduled", "").await;
    assert_eq!(ran, r#"{"ran":1}"#);
    let placements = php.rows("placements", "session_id", session).await;
    assert_eq!(placements.len(), 1, "{placements:?}");
    assert_eq!(
        php.rows("orders", "session_id", session).await[0]["status"],
        "processing"
    );

    // Order watch: WooCommerce's 200 proves nothing; Klarna's Read Session
    // confirms both deliveries.
    eventually!(confirmed(&ab).await == 2.0, "order watch");

    // Without authback, each of Klarna's repeats schedules one more job.
    let direct = "sess-woo-direct";
    plain(
        php.addr,
        "POST",
        &format!("/__test/order?session_id={direct}"),
        "",
    )
    .await;
    let direct_body = callback_body(direct, "tok-woo-direct");
    for _ in 0..3 {
        let k = klarna_direct(php.addr, klarna_url, &direct_body).await;
        assert!(k.delivered && k.attempts == 1, "{k:?}");
    }
    let direct_jobs = php.state().await["jobs"].as_array().map_or(0, |a| {
        a.iter()
            .filter(|j| j["args"].as_str().is_some_and(|s| s.contains(direct)))
            .count()
    });
    assert_eq!(direct_jobs, 3, "no dedupe in the plugin");

    let deliveries = php.delivered_hits(session).await.len();
    tally.lock().expect("lock").report(
        "woocommerce",
        &format!(
            "{deliveries} deliveries for 2 authorizations, {} order placed (jobs: 2 through authback, 3 for 3 direct repeats)",
            placements.len()
        ),
    );
}

#[tokio::test]
async fn woocommerce_spellings_of_every_kind_are_routed() {
    let api = KlarnaApi::start().await;
    let dir = TempDir::new();
    let php = start_php("woocommerce", &dir.path().join("wp.db"), &api);
    let ab = start_platform("examples/platforms/woocommerce.toml", &php.url(), &api).await;
    let tally = Mutex::new(Tally::default());
    let body = callback_body("sess-woo-gap", "tok-woo-gap");
    as_klarna(&ab, &tally, "/wc-api/KP_WC_AUTHORIZATION", &body).await;
    let mut gaps = Vec::new();
    for pq in [
        // EP_ALL: the endpoint under any page's permalink.
        "/shop/wc-api/KP_WC_AUTHORIZATION",
        "/2026/11/hello-world/wc-api/KP_WC_AUTHORIZATION",
        // sanitize_text_field trims white space and strips tags.
        "/wc-api/KP_WC_AUTHORIZATION%20",
        "/wc-api/KP_WC_AUTHORIZATION%3Cb%3E",
        // sanitize_key keeps only [a-z0-9_-].
        "/?wc-api=KP_WC_AUTHORIZATION!",
        "/?wc-api=KP_WC_AUTHORIZATION.",
    ] {
        let (status, answer) = plain(php.addr, "POST", pq, "{}").await;
        assert_eq!(
            (status, answer.as_str()),
            (200, "-1"),
            "{pq} is the handler"
        );
        gaps.extend(proxied(&ab, &php, pq, &body).await);
    }
    assert!(gaps.is_empty(), "{gaps:#?}");
}
