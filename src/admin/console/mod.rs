//! The operator console: a page served on the admin listener (never on the
//! public port) that lists, inspects and replays deliveries through the
//! `/v1` API, and `GET /v1/stats/history` for its charts. `cli` is the same
//! console for a terminal (`authback deliveries`). The page is embedded in
//! the binary and loads nothing from anywhere else; its CSP says so.

pub mod cli;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::{json_error, Body};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");
/// The tab's icon: a small SVG, so it needs no binary asset. Served for
/// `/favicon.ico` too, which browsers ask for on their own.
const ICON: &str = include_str!("favicon.svg");

/// Scripts, styles and requests only from the admin listener itself; no
/// inline code, no framing, no forms posting anywhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) const HISTORY_PATH: &str = "/v1/stats/history";

/// Whether the admin listener should hand this request to the console.
pub(crate) fn serves(method: &Method, path: &str) -> bool {
    method == Method::GET && (asset(path).is_some() || path == HISTORY_PATH)
}

/// The page and its assets. The history (`HISTORY_PATH`) is the admin
/// listener's to answer, behind its guard.
pub(crate) fn handle<B>(req: &Request<B>) -> Response<Body> {
    match asset(req.uri().path()) {
        Some((content_type, body)) => page(content_type, body),
        None => json_error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
    }
}

fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX)),
        "/console.js" => Some(("text/javascript; charset=utf-8", SCRIPT)),
        "/console.css" => Some(("text/css; charset=utf-8", STYLE)),
        "/favicon.svg" | "/favicon.ico" => Some(("image/svg+xml", ICON)),
        _ => None,
    }
}

fn page(content_type: &'static str, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// The `/v1` bearer check, as `admin::handle` does it for the rest of `/v1`.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_console_paths_are_taken() {
        for p in [
            "/",
            "/index.html",
            "/console.js",
            "/console.css",
            "/favicon.ico",
            "/favicon.svg",
            HISTORY_PATH,
        ] {
            assert!(serves(&Method::GET, p), "{p}");
            assert!(!serves(&Method::POST, p), "{p}");
        }
        for p in [
            "/healthz",
            "/metrics",
            "/v1/deliveries",
            "/console.js/x",
            "//",
        ] {
            assert!(!serves(&Method::GET, p), "{p}");
        }
    }

    #[test]
    fn pages_carry_the_strict_headers() {
        let r = page("text/html; charset=utf-8", INDEX);
        let h = r.headers();
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
    }

    #[test]
    fn the_assets_hold_no_inline_code_and_no_html_sinks() {
        // The CSP would block them anyway; this keeps them from being written.
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
        assert!(INDEX.contains(r#"<script src="/console.js""#));
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(sink), "console.js uses {sink}");
        }
        assert!(!SCRIPT.contains("fetch('http") && !SCRIPT.contains("https://"));
        assert!(!STYLE.contains("@import") && !STYLE.contains("url("));
    }
}
