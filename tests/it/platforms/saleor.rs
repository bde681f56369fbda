//! Saleor: the Klarna app's /api/webhooks/klarna/authorization, as its source
//! reads (saleor/saleor-app-payment-klarna): the query's transactionId,
//! channelId and saleorApiUrl must each be one string (else 400); the body a
//! JSON object with string authorization_token and session_id (400); the
//! Saleor API registered in the app's APL (401); the transaction found with
//! a checkout or order (404). Then, inside the request, it creates the
//! Klarna order (POST /payments/v1/authorizations/{token}/order) and reports
//! the charge to Saleor: 200 "[OK]". Anything that throws, Klarna's refusal
//! included, is Next.js's 500. No dedupe, no secret. Next.js answers a
//! trailing slash with a 308 to the path without it.
//!

use std::sync::Mutex;

use crate::common::*;

use super::*;

#[derive(Default)]
struct SaleorState {
    apl: Vec<String>,
    /// transactionId -> checkout id
    transactions: std::collections::HashMap<String, String>,
    /// (uri, status, from authback) of every call to the handler.
    calls: Vec<(String, u16, bool)>,
    /// (transactionId, authorization token, Klarna order id) of each order.
    orders: Vec<(String, String, String)>,
    /// Transactions whose next call throws (Klarna's create-order timing
    /// out).
    fail_once: Vec<String>,
}

#[derive(Clone)]
struct Saleor {
    addr: SocketAddr,
    state: Arc<Mutex<SaleorState>>,
}

const SALEOR_API: &str = "https://saleor.example.com/graphql/";
const SALEOR_PATH: &str = "/api/webhooks/klarna/authorization";

impl Saleor {
    async fn start(api: KlarnaApi) -> Self {
        let state: Arc<Mutex<SaleorState>> = Arc::default();
        state.lock().expect("lock").apl.push(SALEOR_API.into());
        let s = state.clone();
        let addr = serve(Arc::new(move |req| {
            let (s, api) = (s.clone(), api.clone());
            Box::pin(async move { saleor_handle(&s, &api, req).await })
        }))
        .await;
        Saleor { addr, state }
    }

    fn transaction(&self, id: &str) {
        self.state
            .lock()
            .expect("lock")
            .transactions
            .insert(id.into(), format!("checkout-{id}"));
    }

    fn orders_for(&self, transaction: &str) -> Vec<(String, String, String)> {
        self.state
            .lock()
            .expect("lock")
            .orders
            .iter()
            .filter(|o| o.0 == transaction)
            .cloned()
            .collect()
    }

    fn calls(&self) -> Vec<(String, u16, bool)> {
        self.state.lock().expect("lock").calls.clone()
    }
}

/// The URL the app gives Klarna for `transaction`.
fn saleor_url(transaction: &str) -> String {
    format!(
        "{SALEOR_PATH}?transactionId={transaction}&channelId=default-channel&saleorApiUrl=https%3A%2F%2Fsaleor.example.com%2Fgraphql%2F"
    )
}

async fn saleor_handle(
    state: &Mutex<SaleorState>,
    api: &KlarnaApi,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path == format!("{SALEOR_PATH}/") {
        return answer(308, &[("location", SALEOR_PATH)], "");
    }
    if path != SALEOR_PATH {
        return answer(404, &[], "");
    }
    let uri = req.uri().to_string();
    let from_authback = req.headers().contains_key("idempotency-key");
    let json_body = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let query = params(req.uri().query().unwrap_or_default());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let (status, said) = saleor_authorization(state, api, &query, json_body, &body).await;
    state
        .lock()
        .expect("lock")
        .calls
        .push((uri, status, from_authback));
    answer(status, &[("content-type", "application/json")], &said)
}

async fn saleor_authorization(
    state: &Mutex<SaleorState>,
    api: &KlarnaApi,
    query: &[(String, String)],
    json_body: bool,
    body: &[u8],
) -> (u16, String) {
    let bad = (400, "\"[BAD REQUEST]\"".to_string());
    let one = |n: &str| {
        let mut v = query.iter().filter(|(k, _)| k == n);
        match (v.next(), v.next()) {
            (Some((_, x)), None) => Some(x.clone()),
            _ => None,
        }
    };
    let (Some(transaction), Some(_channel), Some(saleor_api)) =
        (one("transactionId"), one("channelId"), one("saleorApiUrl"))
    else {
        return bad;
    };
    // Next.js parses a JSON body only when it says it is JSON.
    let parsed: serde_json::Value = if json_body {
        serde_json::from_slice(body).unwrap_or_default()
    } else {
        serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
    };
    if !parsed.is_object() {
        return bad;
    }
    let (Some(token), Some(_session)) = (
        parsed["authorization_token"].as_str(),
        parsed["session_id"].as_str(),
    ) else {
        return bad;
    };
    // The APL and Saleor's GraphQL API (GetTransactionById).
    pace(Duration::from_millis(300)).await;
    let checkout = {
        let st = state.lock().expect("lock");
        if !st.apl.contains(&saleor_api) {
            return (401, "\"[UNAUTHORIZED]\"".into());
        }
        st.transactions.get(&transaction).cloned()
    };
    let Some(_checkout) = checkout else {
        return (404, "\"[NOT FOUND]\"".into());
    };
    let throws = {
        let mut st = state.lock().expect("lock");
        let before = st.fail_once.len();
        st.fail_once.retain(|t| *t != transaction);
        st.fail_once.len() < before
    };
    // Klarna's create-order, then the TransactionEventReport mutation.
    pace(Duration::from_millis(400)).await;
    if throws {
        return (500, "Internal Server Error".into());
    }
    let status = api.create_order(token).await;
    if status != 200 {
        return (500, "Internal Server Error".into());
    }
    pace(Duration::from_millis(300)).await;
    state
        .lock()
        .expect("lock")
        .orders
        .push((transaction, token.to_string(), "sim-order".into()));
    (200, "\"[OK]\"".into())
}

const SALEOR_ROUTE: &str = "saleor";

#[tokio::test]
async fn saleor_behind_authback_creates_one_klarna_order_per_authorization() {
    let api = KlarnaApi::start().await;
    let saleor = Saleor::start(api.clone()).await;
    let ab = start_platform(
        "examples/platforms/saleor.toml",
        &format!("http://{}", saleor.addr),
        &api,
    )
    .await;
    let tally = Mutex::new(Tally::default());
    for t in ["tr-1", "tr-2", "tr-3", "tr-4"] {
        saleor.transaction(t);
    }

    // Transaction 1: Klarna's repeats and every spelling.
    let (s1, tok1) = ("sess-saleor-1", "tok-saleor-0001");
    api.authorize(s1, tok1);
    let body1 = callback_body(s1, tok1);
    let url1 = saleor_url("tr-1");
    repeats(&ab, &tally, &url1, &body1).await;
    let query1 = url1.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let reordered = format!(
        "{SALEOR_PATH}?saleorApiUrl=https%3A%2F%2Fsaleor.example.com%2Fgraphql%2F&channelId=default-channel&transactionId=tr-1"
    );
    for pq in [
        url1.clone(),
        reordered,
        format!("/api/webhooks/klarna//authorization?{query1}"),
        format!("/api/webhooks/./klarna/authorization?{query1}"),
        format!("/%61pi/webhooks/klarna/authorization?{query1}"),
    ] {
        intercepted(&ab, &tally, SALEOR_ROUTE, &pq, &body1).await;
    }
    // A trailing slash is not the handler (Next.js redirects it), but it is
    // a near miss of the route: authback refuses it rather than guess.
    let (status, _) = ab
        .callback(&format!("{SALEOR_PATH}/?{query1}"), &body1)
        .await;
    assert_eq!(status, 400);

    // Transaction 2: the app throws once (Klarna's create-order timed
    // out); authback retries and the order is created once.
    let (s2, tok2) = ("sess-saleor-2", "tok-saleor-0002");
    api.authorize(s2, tok2);
    saleor
        .state
        .lock()
        .expect("lock")
        .fail_once
        .push("tr-2".into());
    as_klarna(&ab, &tally, &saleor_url("tr-2"), &callback_body(s2, tok2)).await;

    // Transaction 3: the first authorization's token is refused by Klarna
    // (500, retried); the shopper authorizes again, and the new
    // authorization is a new delivery that creates the order.
    let s3 = "sess-saleor-3";
    as_klarna(
        &ab,
        &tally,
        &saleor_url("tr-3"),
        &callback_body(s3, "tok-saleor-0003a"),
    )
    .await;
    api.authorize(s3, "tok-saleor-0003b");
    as_klarna(
        &ab,
        &tally,
        &saleor_url("tr-3"),
        &callback_body(s3, "tok-saleor-0003b"),
    )
    .await;

    // Without authback (transaction 4): Klarna's repeat of a callback that
    // already created the order gets 500 three times.
    let (s4, tok4) = ("sess-saleor-4", "tok-saleor-0004");
    api.authorize(s4, tok4);
    let body4 = callback_body(s4, tok4);
    let url4 = saleor_url("tr-4");
    let first = klarna_direct(saleor.addr, &url4, &body4).await;
    assert!(first.delivered && first.attempts == 1, "{first:?}");
    let repeat = klarna_direct(saleor.addr, &url4, &body4).await;
    assert!(
        !repeat.delivered && repeat.status == Some(500),
        "{repeat:?}"
    );

    eventually!(
        saleor.orders_for("tr-1").len() == 1
            && saleor.orders_for("tr-2").len() == 1
            && saleor.orders_for("tr-3").len() == 1,
        "orders"
    );
    eventually!(confirmed(&ab).await == 3.0, "order watch");
    for t in ["tr-1", "tr-2", "tr-3", "tr-4"] {
        assert_eq!(saleor.orders_for(t).len(), 1, "{t}");
    }
    assert_eq!(saleor.orders_for("tr-3")[0].1, "tok-saleor-0003b");
    let via = |t: &str| {
        saleor
            .calls()
            .iter()
            .filter(|c| c.2 && c.0.contains(&format!("transactionId={t}&")))
            .count()
    };
    assert_eq!(via("tr-1"), 1, "{:?}", saleor.calls());
    assert_eq!(via("tr-2"), 2, "one 500, one retry");
    assert!(counter(&ab, "deliveries", SALEOR_ROUTE, "retry").await >= 2.0);

    tally.lock().expect("lock").report(
        "saleor",
        &format!(
            "one Klarna order per transaction (tr-1: {} call for 9 Klarna callbacks; tr-2: {} calls, one retried 500); direct repeat: Klarna {} attempts, last status {:?}",
            via("tr-1"),
            via("tr-2"),
            repeat.attempts,
            repeat.status
        ),
    );
}
