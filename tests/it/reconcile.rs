//! The Read Session fallback against a simulated Klarna API over real TLS.

use std::time::Duration;

use crate::common::*;

const FORWARD: &str = "/klarna/authorized";
const WAIT: Duration = Duration::from_secs(10);
const FAST: &str = r#"["50ms", "100ms"]"#;

async fn start(api: &KlarnaApi, up: &Upstream, schedule: &str, extra: &str) -> Authback {
    let dir = TempDir::new();
    let cfg = format!("{}{extra}", api.config(dir.path(), schedule));
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let text = base_config(&up.url(), &c, &k, &cfg);
    Authback::start_text(dir, cert.der, &text, false).await
}

async fn register(ab: &Authback, session: &str, reference: &str) -> (u16, String) {
    let body =
        format!(r#"{{"session_id":"{session}","route":"klarna","reference":"{reference}"}}"#);
    ab.admin_request("POST", "/v1/sessions", &body, None).await
}

/// How long a test watches for a check that must not come: several turns
/// of the `FAST` schedule.
const NO_CHECK: Duration = Duration::from_millis(1200);

#[tokio::test]
async fn a_session_whose_callback_never_comes_is_recovered_once() {
    let (api, up) = (KlarnaApi::start().await, Upstream::start().await);
    api.script(
        "sess-lost",
        vec![
            ApiAnswer::Json(r#"{"status":"incomplete"}"#.into()),
            ApiAnswer::Json(
                r#"{"status":"incomplete","authorization_token":"tok-recovered-0001"}"#.into(),
            ),
        ],
    );
    let ab = start(&api, &up, FAST, "").await;
    assert_eq!(register(&ab, "sess-lost", "cart-9").await.0, 202);
    // Registering again is idempotent.
    let (status, body) = register(&ab, "sess-lost", "cart-9").await;
    assert_eq!(status, 202);
    assert!(body.contains(r#""registered":false"#), "{body}");

    let got = up.wait_for(FORWARD, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let v = got[0].json();
    assert_eq!(v["source"], "read_session");
    assert_eq!(v["session_id"], "sess-lost");
    assert_eq!(v["authorization_token"], "tok-recovered-0001");
    assert_eq!(v["reference"], "cart-9");
    assert_eq!(v["route"], "klarna");
    assert_eq!(v["payload"]["authorization_token"], "tok-recovered-0001");
    // Same id as a callback with that token would have.
    let expected = authback::types::DeliveryId::for_authorization(
        &authback::types::SessionId::new("sess-lost"),
        &authback::types::AuthorizationToken::new("tok-recovered-0001"),
    );
    assert_eq!(
        got[0].header("idempotency-key"),
        Some(expected.to_string().as_str())
    );

    // The exact path and HTTP Basic header; no check after the recovery,
    // which ended the registration.
    eventually!(
        metric(&ab.metrics().await, "authback_registrations_pending") == Some(0.0),
        "the recovery to end the registration"
    );
    assert_eq!(api.requests_for("sess-lost"), 2);
    let seen = api.seen();
    assert_eq!(seen[0].0, "/payments/v1/sessions/sess-lost");
    let basic = format!(
        "Basic {}",
        authback::text::base64(format!("K123_test:{KLARNA_PASSWORD}").as_bytes())
    );
    assert_eq!(seen[0].1.as_deref(), Some(basic.as_str()));
    assert_eq!(up.to_path(FORWARD).len(), 1);
    let m = ab.metrics().await;
    assert_eq!(metric(&m, "authback_recovered_total"), Some(1.0));
    assert_eq!(
        metric(&m, "authback_reconcile_checks_total{outcome=\"recovered\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "authback_reconcile_checks_total{outcome=\"incomplete\"}"
        ),
        Some(1.0)
    );
    assert_eq!(metric(&m, "authback_registrations_pending"), Some(0.0));
}

#[tokio::test]
async fn a_callback_before_or_after_registration_gives_one_forward() {
    let (api, up) = (KlarnaApi::start().await, Upstream::start().await);
    let token_json = |t: &str| {
        ApiAnswer::Json(format!(
            r#"{{"status":"incomplete","authorization_token":"{t}"}}"#
        ))
    };
    api.script("sess-before", vec![token_json("tok-before-0001")]);
    api.script("sess-after", vec![token_json("tok-after-00001")]);
    // The first check comes late enough for the "after" callback to win.
    let ab = start(&api, &up, r#"["700ms", "100ms"]"#, "").await;

    // Callback first, then registration: Read Session finds the same token.
    assert_eq!(
        ab.callback(
            &ab.mint("c-b"),
            &callback_body("sess-before", "tok-before-0001")
        )
        .await
        .0,
        204
    );
    assert_eq!(register(&ab, "sess-before", "c-b").await.0, 202);
    // Registration first, then the callback: the checks stop.
    assert_eq!(register(&ab, "sess-after", "c-a").await.0, 202);
    assert_eq!(
        ab.callback(
            &ab.mint("c-a"),
            &callback_body("sess-after", "tok-after-00001")
        )
        .await
        .0,
        204
    );

    eventually!(
        api.requests_for("sess-before") >= 1,
        "the registration made after the callback to be checked"
    );
    tokio::time::sleep(NO_CHECK).await;
    assert_eq!(
        api.requests_for("sess-after"),
        0,
        "a recorded callback ends the registration before any check"
    );
    assert_eq!(
        api.requests_for("sess-before"),
        1,
        "a check that finds the recorded token ends the registration"
    );
    let by_session = |s: &str| {
        up.to_path(FORWARD)
            .iter()
            .filter(|r| r.json()["session_id"] == s)
            .count()
    };
    assert_eq!(by_session("sess-before"), 1);
    assert_eq!(by_session("sess-after"), 1);
    let m = ab.metrics().await;
    assert_eq!(metric(&m, "authback_recovered_total"), Some(0.0));
    assert_eq!(metric(&m, "authback_registrations_pending"), Some(0.0));
}

#[tokio::test]
async fn complete_and_404_end_the_checks_and_errors_are_retried() {
    let (api, up) = (KlarnaApi::start().await, Upstream::start().await);
    api.script(
        "sess-complete",
        vec![ApiAnswer::Json(r#"{"status":"complete"}"#.into())],
    );
    // "sess-gone" is unscripted: 404.
    api.script(
        "sess-flaky",
        vec![
            ApiAnswer::Status(401),
            ApiAnswer::Status(403),
            ApiAnswer::Status(500),
            ApiAnswer::Slow(Duration::from_secs(2)),
            ApiAnswer::RetryAfter(1),
            ApiAnswer::Json(
                r#"{"status":"incomplete","authorization_token":"tok-flaky-00001"}"#.into(),
            ),
        ],
    );
    let ab = start(&api, &up, FAST, "").await;
    for (s, r) in [
        ("sess-complete", "c1"),
        ("sess-gone", "c2"),
        ("sess-flaky", "c3"),
    ] {
        assert_eq!(register(&ab, s, r).await.0, 202);
    }
    let got = up.wait_for(FORWARD, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["session_id"], "sess-flaky");
    assert_eq!(
        api.requests_for("sess-flaky"),
        6,
        "every error was retried until the token came"
    );
    // Retry-After was honoured: the check after the 429 waited at least 1 s.
    let flaky: Vec<_> = api
        .seen()
        .into_iter()
        .filter(|r| r.0.ends_with("/sess-flaky"))
        .map(|r| r.2)
        .collect();
    assert!(
        flaky[5].duration_since(flaky[4]) >= Duration::from_millis(950),
        "{:?}",
        flaky[5].duration_since(flaky[4])
    );
    // Every registration ended, each by the answer to its last check.
    eventually!(
        metric(&ab.metrics().await, "authback_registrations_pending") == Some(0.0),
        "every registration to end"
    );
    assert_eq!(
        api.requests_for("sess-complete"),
        1,
        "complete ends the checks"
    );
    assert_eq!(api.requests_for("sess-gone"), 1, "404 ends the checks");
    let m = ab.metrics().await;
    for (outcome, n) in [
        ("complete", 1.0),
        ("expired", 1.0),
        ("auth_error", 2.0),
        ("server_error", 1.0),
        ("timeout", 1.0),
        ("rate_limited", 1.0),
        ("recovered", 1.0),
    ] {
        assert_eq!(
            metric(
                &m,
                &format!("authback_reconcile_checks_total{{outcome=\"{outcome}\"}}")
            ),
            Some(n),
            "{outcome}"
        );
    }
    assert_eq!(metric(&m, "authback_registrations_pending"), Some(0.0));
    // Each request to Klarna, by how it answered: 403 counts as 401 does,
    // a timeout as unreachable.
    for (outcome, n) in [
        ("ok", 2.0),
        ("not_found", 1.0),
        ("unauthorized", 2.0),
        ("server_error", 1.0),
        ("unreachable", 1.0),
        ("rate_limited", 1.0),
        ("error", 0.0),
    ] {
        let series = format!("authback_klarna_requests_total{{operation=\"read_session\",purpose=\"reconcile\",outcome=\"{outcome}\"}}");
        assert_eq!(metric(&m, &series), Some(n), "{outcome}");
        let watch = series.replace("reconcile", "order_watch");
        assert_eq!(metric(&m, &watch), Some(0.0), "{outcome}");
    }
}

#[tokio::test]
async fn registrations_are_validated_and_refused_when_the_fallback_is_off() {
    let (api, up) = (KlarnaApi::start().await, Upstream::start().await);
    let ab = start(&api, &up, FAST, "").await;
    for bad in [
        r#"{"session_id":"","route":"klarna","reference":"c"}"#,
        r#"{"session_id":"s","route":"nope","reference":"c"}"#,
        r#"{"session_id":"s","route":"klarna","reference":"bad ref"}"#,
        r#"{"session_id":"s","route":"klarna","reference":"c","extra":1}"#,
    ] {
        assert_eq!(
            ab.admin_request("POST", "/v1/sessions", bad, None).await.0,
            400,
            "{bad}"
        );
    }
    let off = Authback::start(&up).await;
    assert_eq!(register(&off, "s", "c").await.0, 409);
}

#[tokio::test]
async fn registrations_survive_a_restart_on_the_file_store() {
    let (api, up) = (KlarnaApi::start().await, Upstream::start().await);
    api.script(
        "sess-durable",
        vec![ApiAnswer::Json(
            r#"{"status":"incomplete","authorization_token":"tok-durable-001"}"#.into(),
        )],
    );
    let dir = TempDir::new();
    let db = dir.path().join("authback.db");
    let store = format!("[store]\nkind = \"file\"\npath = \"{}\"\n", db.display());
    // The first check is due long after the restart begins.
    let first = start(&api, &up, r#"["1500ms", "100ms"]"#, &store).await;
    assert_eq!(register(&first, "sess-durable", "c-d").await.0, 202);
    first.stop().await.expect("stop");
    assert_eq!(api.requests_for("sess-durable"), 0);

    let second = start(&api, &up, r#"["1500ms", "100ms"]"#, &store).await;
    let m = second.metrics().await;
    assert_eq!(
        metric(&m, "authback_registrations_pending"),
        Some(1.0),
        "the registration was reloaded"
    );
    let got = up.wait_for(FORWARD, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["source"], "read_session");
    assert_eq!(api.requests_for("sess-durable"), 1);
}

#[tokio::test]
async fn a_retry_after_of_u64_max_seconds_neither_panics_nor_hammers_klarna() {
    let (api, up) = (KlarnaApi::start().await, Upstream::start().await);
    // Every check is answered 429 with `Retry-After: 18446744073709551615`.
    api.script("sess-hostile", vec![ApiAnswer::RetryAfter(u64::MAX)]);
    // give_up_after is short so that the rescheduled check is seen to run:
    // the wait is cut to give_up_after, and that check ends the registration.
    let dir = TempDir::new();
    let sections = api.config(dir.path(), FAST);
    assert!(sections.contains(r#"give_up_after = "30s""#), "{sections}");
    let sections = sections.replace(r#"give_up_after = "30s""#, r#"give_up_after = "2s""#);
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let text = base_config(&up.url(), &c, &k, &sections);
    let ab = Authback::start_text(dir, cert.der, &text, false).await;
    assert_eq!(register(&ab, "sess-hostile", "c-h").await.0, 202);
    eventually!(api.requests_for("sess-hostile") >= 1);

    // A check that panics leaves its registration leased, never checked
    // again and never ended; a wrapped wait checks again on every step.
    let mut m;
    eventually!(
        {
            m = ab.metrics().await;
            metric(&m, "authback_registrations_pending") == Some(0.0)
        },
        "no registration pending: {m}"
    );
    assert_eq!(
        metric(&m, "authback_reconcile_checks_total{outcome=\"gave_up\"}"),
        Some(1.0),
        "the check after the 429 ran at give_up_after and ended it: {m}"
    );
    assert_eq!(metric(&m, "authback_registrations_pending"), Some(0.0));
    assert_eq!(
        metric(
            &m,
            "authback_reconcile_checks_total{outcome=\"rate_limited\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        api.requests_for("sess-hostile"),
        1,
        "Klarna is asked once; the next check waits (here until give_up_after)"
    );
    assert_eq!(up.to_path(FORWARD).len(), 0);
}
