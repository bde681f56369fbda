//! What a request head must be before anything routes it. Each rule closes a
//! way for one request to mean two things, one to authback and another to
//! the backend; nginx refuses the same heads with 400.
//!
//! This only reads the head: it never changes it.

use http::{header, Method, Request, Version};

/// Why a head is refused, as the 400's `message` says it.
pub(crate) fn check<B>(req: &Request<B>) -> Result<(), &'static str> {
    let method = req.method().as_str().as_bytes();
    // Methods are case-sensitive tokens: `get` is not `GET`, and a backend
    // that upper-cases it would read another method than authback routed.
    if method.is_empty()
        || !method
            .iter()
            .all(|&c| c.is_ascii_uppercase() || c == b'_' || c == b'-')
    {
        return Err("the method must be an upper-case token");
    }
    if req.method() == Method::CONNECT {
        return Err("CONNECT is not served: authback is not a forward proxy");
    }
    if req.uri().path() == "*" && req.method() != Method::OPTIONS {
        return Err("the target `*` is only for OPTIONS");
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    match host {
        None if req.version() == Version::HTTP_11 => {
            return Err("HTTP/1.1 requires a Host header");
        }
        None => {}
        Some(h) => {
            if !valid_host(h.as_bytes()) {
                return Err("the Host header is not a valid host[:port]");
            }
            // HTTP/2's `:authority` and an HTTP/1.1 absolute-form target
            // name a host too: the two must agree.
            if let Some(a) = req.uri().authority() {
                if !a.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes()) {
                    return Err("the Host header and the request's authority disagree");
                }
            }
        }
    }
    Ok(())
}

/// The bytes of an RFC 3986 reg-name: unreserved, sub-delims and `%`. A
/// table, because every request's `Host` is checked against it.
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            );
        c += 1;
    }
    t
};

/// `host[:port]`, where host is a registered name (RFC 3986 reg-name, no
/// `@`, `/` or space) or a bracketed IPv6 literal. An empty Host is valid
/// (RFC 9112 §3.2: a target without an authority).
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = match v.iter().rposition(|&c| c == b':') {
        // The colon of `[::1]` is inside the brackets, not a port's.
        Some(i) if !v[i..].contains(&b']') => (&v[..i], Some(&v[i + 1..])),
        _ => (v, None),
    };
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    let host_ok = match host {
        [b'[', inner @ .., b']'] => {
            !inner.is_empty()
                && inner
                    .iter()
                    .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
        }
        name => name.iter().all(|&c| REG_NAME[usize::from(c)]),
    };
    port_ok && host_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, version: Version, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri).version(version);
        for h in hosts {
            b = b.header("host", *h);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn ordinary_heads_pass() {
        let v11 = Version::HTTP_11;
        for r in [
            req("GET", "/", v11, &["shop.example"]),
            req("POST", "/a?b", v11, &["shop.example:8443"]),
            req("GET", "/", v11, &["[::1]:8443"]),
            req("GET", "/", v11, &["127.0.0.1"]),
            req("GET", "/", v11, &[""]),
            req("OPTIONS", "*", v11, &["a"]),
            req("GET", "/", Version::HTTP_10, &[]),
            req("GET", "http://a:1/x", v11, &["A:1"]),
            req("GET", "https://a/x", Version::HTTP_2, &[]),
            req("M-SEARCH", "/", v11, &["a"]),
        ] {
            assert_eq!(check(&r), Ok(()), "{r:?}");
        }
    }

    #[test]
    fn heads_nginx_refuses_are_refused() {
        let v11 = Version::HTTP_11;
        for r in [
            req("GET", "/", v11, &["a", "a"]),
            req("GET", "/", v11, &[]),
            req("GET", "/", v11, &["a b"]),
            req("GET", "/", v11, &["a/b"]),
            req("GET", "/", v11, &["user@a"]),
            req("GET", "/", v11, &["a:b"]),
            req("GET", "/", v11, &["[zz]"]),
            req("GET", "*", v11, &["a"]),
            req("get", "/", v11, &["a"]),
            req("Post", "/", v11, &["a"]),
            req("CONNECT", "evil.example:443", v11, &["evil.example:443"]),
            req("GET", "http://other/x", v11, &["a"]),
            req("GET", "https://a/x", Version::HTTP_2, &["b"]),
        ] {
            assert!(check(&r).is_err(), "{r:?}");
        }
    }
}
