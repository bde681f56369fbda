//! Durations, rates, HTTP dates, Retry-After and query strings never panic,
//! and what parses as a duration prints back to the same duration.
#![no_main]

use authback::text::parse_retry_after;
use authback::text::{
    format_duration, parse_duration, parse_http_date, parse_rate, query_decode, query_param,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_duration(s) {
        assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
    let _ = parse_rate(s);
    let _ = parse_http_date(s);
    let _ = parse_retry_after(s, 1_700_000_000);
    let _ = parse_retry_after(s, u64::MAX);
    let _ = query_decode(s);
    let _ = query_param(s, "token");
});
