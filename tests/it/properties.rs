//! Property tests: the parsers that face the network or the config never
//! panic, whatever they are fed, and the codecs round-trip.

use std::path::Path;
use std::time::Duration;

use authback::callback::{parse_body, token};
use authback::config::Config;
use authback::route::valid_reference;
use authback::text::{parse_duration, parse_http_date, parse_rate, query_param, rfc3339};
use authback::types::Secret;
use bytes::Bytes;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn minted_tokens_verify_and_nothing_else_does(
        secret in proptest::collection::vec(any::<u8>(), 1..64),
        route in "[A-Za-z0-9._~-]{1,20}",
        reference in "[A-Za-z0-9._~-]{0,40}",
        exp in 1_000_000u64..4_000_000_000,
        other in "[A-Za-z0-9._~-]{1,40}",
    ) {
        let s = Secret::new(secret);
        let t = token::mint(&s, &route, &reference, exp);
        prop_assert!(token::verify(&t, std::slice::from_ref(&s), &route, &reference, exp - 1).is_ok());
        prop_assert!(token::verify(&t, std::slice::from_ref(&s), &route, &reference, exp).is_err(), "expired at exp");
        if other != reference {
            prop_assert!(token::verify(&t, std::slice::from_ref(&s), &route, &other, exp - 1).is_err());
        }
    }

    #[test]
    fn canonical_paths_are_stable_and_never_escape_the_root(
        raw in "/[a-z/.%2FfC5c;\\\\0-9]{0,40}",
    ) {
        let once = authback::front::path::canonical(&raw).into_owned();
        let twice = authback::front::path::canonical(&once).into_owned();
        prop_assert_eq!(twice, once.clone());
        prop_assert!(once.starts_with('/'), "{}", once);
        prop_assert!(!once.contains("//"), "{}", once);
        prop_assert!(!once.split('/').any(|s| s == "." || s == ".."), "{}", once);
        let generous = authback::front::path::lenient(&raw);
        prop_assert!(!generous.contains([';', '\\']), "{}", generous);
    }

    #[test]
    fn token_verification_never_panics(t in ".{0,200}", now in any::<u64>()) {
        let _ = token::verify(&t, &[Secret::new("k")], "klarna", "r", now);
        let _ = token::verify_static(&t, &[Secret::new("k")]);
    }

    #[test]
    fn the_body_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_body(&Bytes::from(body));
    }

    #[test]
    fn well_formed_bodies_parse(token in "[ -~]{1,1024}", session in "[ -~]{1,1024}") {
        let body = serde_json::json!({"authorization_token": token, "session_id": session, "x": [1, 2]}).to_string();
        let (s, t) = parse_body(&Bytes::from(body)).expect("valid body");
        prop_assert_eq!(s.as_str(), session.as_str());
        prop_assert_eq!(t.expose(), token.as_str());
    }

    #[test]
    fn the_path_matcher_agrees_with_the_reference_rule(seg in ".{0,140}") {
        let cfg = Config::parse(CONFIG, Path::new(".")).expect("config");
        let path = format!("/klarna/authorization/{seg}");
        match cfg.routes[0].path.matches(&path) {
            authback::route::PathMatch::Yes(r) => prop_assert!(valid_reference(r) && r == seg),
            authback::route::PathMatch::BadReference => prop_assert!(!valid_reference(&seg) && !seg.contains('/')),
            authback::route::PathMatch::No => prop_assert!(seg.contains('/')),
        }
    }

    #[test]
    fn durations_round_trip(n in 0u64..36_500, unit in prop::sample::select(vec!["ms", "s", "m", "h", "d"])) {
        let d = parse_duration(&format!("{n}{unit}")).expect("valid duration");
        let ms = match unit { "ms" => n, "s" => n * 1000, "m" => n * 60_000, "h" => n * 3_600_000, _ => n * 86_400_000 };
        prop_assert_eq!(d, Duration::from_millis(ms));
    }

    #[test]
    fn text_parsers_never_panic(s in ".{0,80}") {
        let _ = parse_duration(&s);
        let _ = parse_rate(&s);
        let _ = parse_http_date(&s);
        let _ = authback::text::parse_retry_after(&s, authback::types::unix_ms() / 1000);
        let _ = query_param(&s, "token");
    }

    #[test]
    fn http_dates_round_trip(secs in 0u64..4_000_000_000) {
        // rfc3339 and the IMF-fixdate parser agree on the calendar.
        let iso = rfc3339(secs);
        let (date, time) = iso.trim_end_matches('Z').split_once('T').expect("T");
        let mut d = date.split('-');
        let (y, mo, day) = (d.next().expect("y"), d.next().expect("m"), d.next().expect("d"));
        let month = ["Jan","Feb","Mar","Apr","May","Jun","Jul","Aug","Sep","Oct","Nov","Dec"][mo.parse::<usize>().expect("month") - 1];
        // 1970-01-01 was a Thursday; the parser checks the weekday.
        let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(secs / 86_400 % 7) as usize];
        let imf = format!("{weekday}, {day} {month} {y} {time} GMT");
        prop_assert_eq!(parse_http_date(&imf), Some(secs));
    }

    #[test]
    fn config_validation_never_panics(text in ".{0,400}") {
        let _ = Config::parse(&text, Path::new("."));
    }

    #[test]
    fn config_validation_never_panics_on_typed_values(
        listen in ".{0,30}", ttl in ".{0,12}", rate in ".{0,12}", path in ".{0,40}", max in any::<i64>(),
    ) {
        let text = format!(
            "[server]\nlisten = {listen:?}\npublic_url = \"https://x\"\n[server.tls]\nself_signed = true\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[store]\ndedupe_ttl = {ttl:?}\n[limits]\nfailed_token_per_ip = {rate:?}\nmax_connections = {max}\n[[routes]]\nname = \"k\"\nkind = \"klarna_authorization\"\npath = {path:?}\nforward_path = \"/f\"\nsecrets = [\"s\"]\n"
        );
        let _ = Config::parse(&text, Path::new("."));
    }
}

const CONFIG: &str = r#"
[server]
public_url = "https://shop.example.com"
[server.tls]
self_signed = true
[upstream]
url = "http://127.0.0.1:8080"
[[routes]]
name = "klarna"
kind = "klarna_authorization"
path = "/klarna/authorization/{reference}"
forward_path = "/f"
secrets = ["a-long-enough-test-secret"]
"#;
