//! The callback path matcher: a match is always a valid reference taken from
//! between the pattern's prefix and suffix.
#![no_main]

use authback::route::{valid_reference, PathMatch};
use libfuzzer_sys::fuzz_target;

const ROUTES: &str = r#"
[[routes]]
name = "klarna"
kind = "klarna_authorization"
path = "/klarna/{reference}/authorized"
forward_path = "/f"
secrets = ["a-long-enough-test-secret"]
"#;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = authback_fuzz::config(ROUTES);
    match cfg.routes[0].path.matches(path) {
        PathMatch::Yes(r) => {
            assert!(valid_reference(r));
            assert_eq!(path, format!("/klarna/{r}/authorized"));
        }
        PathMatch::BadReference => {
            let inner = path
                .strip_prefix("/klarna/")
                .and_then(|p| p.strip_suffix("/authorized"))
                .expect("a bad reference still sits between prefix and suffix");
            assert!(!valid_reference(inner));
        }
        PathMatch::No => {}
    }
});
