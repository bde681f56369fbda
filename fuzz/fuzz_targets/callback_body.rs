//! The callback body parser faces the internet. It never panics, and what it
//! accepts renders into a normalized JSON request that carries the same
//! session and token back.
#![no_main]

use std::time::Duration;

use authback::callback::parse_body;
use authback::delivery::render;
use authback::store::{Delivery, Source};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

const ROUTES: &str = r#"
[[routes]]
name = "json"
kind = "klarna_authorization"
path = "/a/{reference}"
forward_path = "/f"
secrets = ["a-long-enough-test-secret"]
[[routes]]
name = "form"
kind = "klarna_authorization"
path = "/b/{reference}"
forward_path = "/f"
forward_format = "form"
secrets = ["a-long-enough-test-secret"]
"#;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let Ok((session, token)) = parse_body(&body) else {
        return;
    };
    let cfg = authback_fuzz::config(ROUTES);
    let d = Delivery::new_pending(
        "json".into(),
        "ref".into(),
        session.clone(),
        token.clone(),
        Source::Callback,
        body,
        None,
        1_700_000_000_000,
        Duration::from_secs(60),
    );
    let json = render::render(&d, &cfg.routes[0]);
    let v: serde_json::Value = serde_json::from_slice(&json.body).expect("rendered JSON parses");
    assert_eq!(v["session_id"].as_str(), Some(session.as_str()));
    assert_eq!(v["authorization_token"].as_str(), Some(token.expose()));
    let _ = render::render(&d, &cfg.routes[1]);
});
