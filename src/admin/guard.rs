//! Who may use `/v1`: never a web page of another site, then the bearer
//! token or, without one, a loopback `Host`, and a POST's body as JSON.
//! It reads only the request's head; the API's answers are `api`'s.

use http::{header, Method, Request, Response, StatusCode};

use crate::body::{json_error, Body};
use crate::types::{ct_eq, Secret};

/// Who may use `/v1`, and how. First, never a web page of another site
/// (`same_origin`), token or none: the operator's browser can reach a
/// loopback listener. Then, with `admin.token`, whoever sends it as a
/// bearer token. Without one the listener is on loopback (`check`
/// insists), and the `Host` must be a loopback name too: a web page whose
/// name an attacker rebinds to 127.0.0.1 would otherwise reach the API
/// from the operator's own browser. Last, a POST's body must be JSON
/// (`json_body`).
pub(crate) fn check<B: hyper::body::Body>(
    token: Option<&Secret>,
    req: &Request<B>,
) -> Result<(), Box<Response<Body>>> {
    let headers = req.headers();
    if let Err(why) = same_origin(headers) {
        return Err(Box::new(json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            why,
        )));
    }
    authorized(token, headers)?;
    if req.method() == Method::POST
        && (!req.body().is_end_stream() || declares_body(headers))
        && !is_json(headers)
    {
        return Err(Box::new(json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a POST body must be sent with Content-Type: application/json",
        )));
    }
    Ok(())
}

/// Refuses what a browser sends for a page of another origin. A page of
/// another site may still send a "simple" request (a form, or a `fetch`
/// with a text/plain body) without asking first, and the browser would
/// carry it to a loopback listener: the `Origin` it adds must then be the
/// listener's own (its host and port those of `Host`), and
/// `Sec-Fetch-Site`, where the browser sends it, `same-origin` or `none`.
/// Tools send neither header.
fn same_origin(headers: &http::HeaderMap) -> Result<(), &'static str> {
    for site in headers.get_all("sec-fetch-site") {
        let site = site.to_str().unwrap_or("").trim();
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Err("the admin API does not answer requests made by another site's pages (Sec-Fetch-Site)");
        }
    }
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let Some(origin) = origins.next() else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origins.next(), origin.to_str().ok(), host) {
        (None, Some(origin), Some(host)) if origin_is_host(origin, host) => Ok(()),
        _ => Err("the admin API answers only pages of its own origin: Origin must be the scheme, host and port of Host"),
    }
}

/// Whether the serialized origin `origin` (`scheme://host[:port]`) names
/// the `Host` header's `host` and port. Names compare without regard to
/// case; a port left out is the scheme's default (http 80, https 443), in
/// `Host` too, as a TLS-terminating proxy in front forwards it. `null`, an
/// origin with a path or user, or any other scheme never matches.
fn origin_is_host(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default = if scheme.eq_ignore_ascii_case("http") {
        80
    } else if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        return false;
    };
    let (Some(o), Some(h)) = (host_port(authority), host_port(host)) else {
        return false;
    };
    o.0.eq_ignore_ascii_case(h.0) && o.1.unwrap_or(default) == h.1.unwrap_or(default)
}

/// The name and the port, if given, of `host[:port]` (`[v6]:port` too).
/// `None` for anything else: a user, a path, an empty name, a bad port.
fn host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (name, rest) = match s.strip_prefix('[') {
        Some(inner) => {
            let end = inner.find(']')?;
            inner[..end].parse::<std::net::Ipv6Addr>().ok()?;
            s.split_at(end + 2)
        }
        None => {
            let (name, rest) = s.split_at(s.find(':').unwrap_or(s.len()));
            let named = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if name.is_empty() || !named {
                return None;
            }
            (name, rest)
        }
    };
    let port = match rest {
        "" => None,
        _ => {
            let digits = rest.strip_prefix(':')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(digits.parse::<u16>().ok()?)
        }
    };
    Some((name, port))
}

/// Whether the head announces a body: a length over zero, or chunks.
fn declares_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) != Some(0))
}

/// Whether the one `Content-Type` is `application/json`, with any
/// parameters (`; charset=utf-8`).
fn is_json(headers: &http::HeaderMap) -> bool {
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    match (types.next().map(|v| v.to_str()), types.next()) {
        (Some(Ok(v)), None) => v
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")),
        _ => false,
    }
}

/// The bearer check: `admin.token` when set, else a loopback `Host`.
fn authorized(
    token: Option<&Secret>,
    headers: &http::HeaderMap,
) -> Result<(), Box<Response<Body>>> {
    match token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if ct_eq(given.as_bytes(), token.expose()) {
                return Ok(());
            }
            let mut r = json_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            Err(Box::new(r))
        }
        None if loopback_host(headers) => Ok(()),
        None => Err(Box::new(json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "without admin.token the API answers only to a loopback Host (localhost, 127.0.0.1, [::1])",
        ))),
    }
}

/// Whether the `Host` header names this machine's loopback (any port).
fn loopback_host(headers: &http::HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        // HTTP/1.0 tools send none; a browser always does.
        return true;
    };
    let name = match host.rsplit_once(':') {
        Some((n, port)) if !n.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| crate::net::canonical(ip).is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, header::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn an_origin_is_the_hosts_own_only_with_its_name_and_port() {
        for (origin, host) in [
            ("http://127.0.0.1:9901", "127.0.0.1:9901"),
            ("HTTP://LocalHost:9901", "localhost:9901"),
            ("http://[::1]:9901", "[::1]:9901"),
            ("http://admin.example", "admin.example:80"),
            ("http://admin.example:80", "admin.example"),
            ("https://admin.example", "admin.example:443"),
            // A TLS-terminating proxy forwards the Host as the browser sent it.
            ("https://admin.example", "admin.example"),
        ] {
            assert!(origin_is_host(origin, host), "{origin} {host}");
        }
        for (origin, host) in [
            ("null", "127.0.0.1:9901"),
            ("https://evil.example", "127.0.0.1:9901"),
            ("http://127.0.0.1:9902", "127.0.0.1:9901"),
            ("http://127.0.0.1", "127.0.0.1:9901"),
            ("https://admin.example", "admin.example:80"),
            ("http://admin.example:8080", "admin.example"),
            ("http://127.0.0.1:9901/", "127.0.0.1:9901"),
            ("http://user@127.0.0.1:9901", "127.0.0.1:9901"),
            ("ftp://127.0.0.1:9901", "127.0.0.1:9901"),
            ("http://127.0.0.1:9901", "127.0.0.1:9901:1"),
            ("http://127.0.0.1:", "127.0.0.1:"),
            ("http://[::1]:9901", "[::2]:9901"),
            ("http://:9901", ":9901"),
            ("127.0.0.1:9901", "127.0.0.1:9901"),
        ] {
            assert!(!origin_is_host(origin, host), "{origin} {host}");
        }
    }

    #[test]
    fn fetch_metadata_and_origin_decide_together() {
        let host = ("host", "127.0.0.1:9901");
        for ok in [
            vec![host],
            vec![],
            vec![host, ("sec-fetch-site", "same-origin")],
            vec![host, ("sec-fetch-site", "none")],
            vec![host, ("origin", "http://127.0.0.1:9901")],
        ] {
            assert!(same_origin(&headers(&ok)).is_ok(), "{ok:?}");
        }
        for refused in [
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![host, ("sec-fetch-site", "same-site")],
            vec![
                host,
                ("origin", "http://127.0.0.1:9901"),
                ("sec-fetch-site", "cross-site"),
            ],
            vec![("origin", "http://127.0.0.1:9901")],
            vec![
                host,
                ("origin", "http://127.0.0.1:9901"),
                ("origin", "https://evil.example"),
            ],
        ] {
            assert!(same_origin(&headers(&refused)).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn a_body_is_json_only_by_its_one_content_type() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            " Application/JSON ;charset=UTF-8",
        ] {
            assert!(is_json(&headers(&[("content-type", ok)])), "{ok}");
        }
        for no in ["text/plain", "application/json-seq", "json", ""] {
            assert!(!is_json(&headers(&[("content-type", no)])), "{no}");
        }
        assert!(!is_json(&headers(&[])));
        assert!(!is_json(&headers(&[
            ("content-type", "application/json"),
            ("content-type", "text/plain"),
        ])));
        assert!(declares_body(&headers(&[("content-length", "2")])));
        assert!(declares_body(&headers(&[("transfer-encoding", "chunked")])));
        assert!(!declares_body(&headers(&[("content-length", "0")])));
        assert!(!declares_body(&headers(&[])));
    }
}
