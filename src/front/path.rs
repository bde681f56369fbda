//! The canonical form of a request path, computed once before any routing
//! decision: routes match it, an `original` route forwards it, logs show it.
//! A path that is already canonical (the common case) is never copied.
//!
//! The rule, as README's Security section states it:
//! 1. `%XX` escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!    decoded; other escapes are kept, with upper-case hex.
//! 2. Repeated slashes are merged (as nginx's `merge_slashes` does).
//! 3. Dot segments are removed (RFC 3986 §5.2.4).
//!
//! Some spellings cannot be made canonical safely, because backends read
//! them differently: an encoded slash or backslash (`%2F`, `%5C`), a raw
//! backslash, and a `;` parameter (Tomcat and Spring strip it, PHP keeps it).
//! `lenient` reads those the most generous way; when that reading reaches a
//! callback route or a forward path, the request is refused.

use std::borrow::Cow;

/// The canonical form of `raw` (a path without its query).
pub fn canonical(raw: &str) -> Cow<'_, str> {
    if is_canonical(raw.as_bytes()) {
        return Cow::Borrowed(raw);
    }
    Cow::Owned(normalize(&decode_unreserved(raw.as_bytes())))
}

/// Whether `raw` holds a spelling that backends read in different ways:
/// `%2F`, `%5C` (either case), `\`, `;`, or a `%` that starts no escape or
/// is itself escaped (a backend that decodes twice reads `%2%46` and `%252F`
/// as `/`).
pub(crate) fn is_ambiguous(raw: &str) -> bool {
    let b = raw.as_bytes();
    // Most paths hold none of the three bytes that can start one.
    if !b.iter().any(|&c| matches!(c, b'%' | b'\\' | b';')) {
        return false;
    }
    (0..b.len()).any(|i| {
        matches!(b[i], b'\\' | b';')
            || matches!(escape(b, i), Some(b'/' | b'\\' | b'%'))
            || (b[i] == b'%' && escape(b, i).is_none())
    })
}

/// The byte the escape `%XX` at `b[i]` stands for, if one is there.
fn escape(b: &[u8], i: usize) -> Option<u8> {
    if b.get(i) != Some(&b'%') {
        return None;
    }
    let h = hex(*b.get(i + 1)?)?;
    let l = hex(*b.get(i + 2)?)?;
    Some(h << 4 | l)
}

/// The most generous reading of an ambiguous path, for deciding whether it
/// could reach a callback route or a forward path: escapes of unreserved
/// characters, `%`, `/` and `\` are decoded, as often as a backend might
/// (three rounds), every backslash is a `/`, and a `;` parameter is cut
/// from every segment; then slashes are merged and dot segments removed.
pub fn lenient(raw: &str) -> String {
    let mut b = raw.as_bytes().to_vec();
    for _ in 0..3 {
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match escape(&b, i) {
                Some(c) if is_unreserved(c) || matches!(c, b'%' | b'/' | b'\\') => {
                    out.push(c);
                    i += 3;
                }
                _ => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        }
        if out == b {
            break;
        }
        b = out;
    }
    let mut out = Vec::with_capacity(b.len());
    let mut in_param = false;
    for c in b {
        let c = if c == b'\\' { b'/' } else { c };
        if c == b'/' {
            in_param = false;
        } else if c == b';' {
            in_param = true;
        }
        if !in_param {
            out.push(c);
        }
    }
    normalize(&out)
}

/// Calls `f` with each generous reading of a request path until it
/// answers `true`, for deciding whether the path is near a callback route
/// or a forward path: the canonical path; the lenient reading when the raw
/// path holds an escape, a backslash or a `;`; and in the `php` dialect,
/// each of those cut after a `x.php` segment (PHP runs `x.php` for
/// `x.php/anything`, PATH_INFO); in the `spring` dialect, each with white
/// space trimmed around its segments (AntPathMatcher's `trimTokens`, on
/// before Spring 4.3). A plain path costs no allocation.
pub(crate) fn any_reading(
    raw: &str,
    canonical: &str,
    dialect: crate::route::dialect::Dialect,
    mut f: impl FnMut(&str) -> bool,
) -> bool {
    let lenient_too = raw.bytes().any(|c| matches!(c, b'%' | b'\\' | b';'));
    let generous = lenient_too.then(|| lenient(raw));
    let canonical_generous = (lenient_too && canonical.contains('%')).then(|| lenient(canonical));
    for p in std::iter::once(canonical)
        .chain(generous.as_deref())
        .chain(canonical_generous.as_deref())
    {
        if f(p) {
            return true;
        }
        match dialect {
            crate::route::dialect::Dialect::Php => {
                if php_scripts(p).any(&mut f) {
                    return true;
                }
            }
            crate::route::dialect::Dialect::Spring => {
                if let Some(t) = trimmed_segments(p) {
                    if f(&t) {
                        return true;
                    }
                }
            }
            crate::route::dialect::Dialect::Plain => {}
        }
    }
    false
}

/// Each prefix of `p` that ends a segment named `*.php` (any case) with
/// more path after it: the script PHP would run, the rest PATH_INFO.
fn php_scripts(p: &str) -> impl Iterator<Item = &str> {
    let b = p.as_bytes();
    (4..b.len())
        .filter(move |&i| b[i] == b'/' && b[i - 4..i].eq_ignore_ascii_case(b".php"))
        .map(move |i| &p[..i])
}

/// `p` with white space (`%20`, `%09` to `%0D`, and the bytes themselves)
/// trimmed from both ends of every segment; `None` when there is none.
fn trimmed_segments(p: &str) -> Option<String> {
    const WS: [&str; 7] = ["%20", "%09", "%0A", "%0B", "%0C", "%0D", " "];
    let trim = |mut s: &str| -> String {
        loop {
            let before = s.len();
            for w in WS {
                s = s.strip_prefix(w).unwrap_or(s);
                s = s.strip_suffix(w).unwrap_or(s);
            }
            if s.len() == before {
                return s.to_string();
            }
        }
    };
    let out: Vec<String> = p.split('/').map(trim).collect();
    let out = out.join("/");
    (out != p).then_some(out)
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Fast check for the common case: no escape, no `//`, no dot segment.
fn is_canonical(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => return false,
            b'/' => match &b[i + 1..] {
                [b'/', ..] | [b'.'] | [b'.', b'/', ..] | [b'.', b'.'] | [b'.', b'.', b'/', ..] => {
                    return false
                }
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    true
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Step 1: decode escapes of unreserved characters, upper-case the others.
/// A `%` not followed by two hex digits is escaped itself (`%25`): kept
/// bare, it could pair with what a decoded escape leaves beside it (`%3%30`
/// would read `%30` next time), and the canonical form would not be stable.
fn decode_unreserved(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match escape(b, i) {
            Some(c) if is_unreserved(c) => out.push(c),
            Some(_) => {
                out.push(b'%');
                out.extend_from_slice(&b[i + 1..i + 3].to_ascii_uppercase());
            }
            None if b[i] == b'%' => {
                out.extend_from_slice(b"%25");
                i += 1;
                continue;
            }
            None => {
                out.push(b[i]);
                i += 1;
                continue;
            }
        }
        i += 3;
    }
    out
}

/// Steps 2 and 3: merge slashes, then remove dot segments. The output
/// starts with `/` when the input did.
fn normalize(b: &[u8]) -> String {
    let text = String::from_utf8_lossy(b);
    let absolute = text.starts_with('/');
    let mut segments: Vec<&str> = Vec::new();
    // A trailing `/`, `/.` or `/..` leaves the path ending in `/`.
    let trailing = text.ends_with('/') || text.ends_with("/.") || text.ends_with("/..");
    for s in text.split('/').filter(|s| !s.is_empty()) {
        match s {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(text.len());
    if absolute {
        out.push('/');
    }
    out.push_str(&segments.join("/"));
    if trailing && !segments.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in ["/", "/klarna/authorization/cart-1", "/a.b/c..d/.e", "/x/"] {
            assert!(matches!(canonical(p), Cow::Borrowed(_)), "{p}");
        }
    }

    #[test]
    fn every_spelling_of_a_route_path_comes_back_to_it() {
        for p in [
            "//orig/cart-1/cb",
            "/orig//cart-1/cb",
            "/orig/./cart-1/cb",
            "/orig/x/../cart-1/cb",
            "/%6Frig/cart-1/cb",
            "/%6frig/cart-1/cb",
            "/orig/cart-1/c%62",
            "/orig/%2E/cart-1/cb",
            "/orig/x/%2e%2e/cart-1/cb",
            "/../orig/cart-1/cb",
            "/orig/cart-1/cb/x/..",
        ] {
            let c = canonical(p);
            assert!(
                c == "/orig/cart-1/cb" || c == "/orig/cart-1/cb/",
                "{p} gave {c}"
            );
        }
    }

    #[test]
    fn other_escapes_are_kept_with_upper_case_hex() {
        assert_eq!(canonical("/a%2fb"), "/a%2Fb");
        assert_eq!(canonical("/a%20b%zz%4"), "/a%20b%25zz%254");
        assert_eq!(canonical("/%3%30"), "/%2530");
        assert_eq!(canonical("/a/%C3%A9"), "/a/%C3%A9");
    }

    #[test]
    fn dot_segments_follow_rfc_3986() {
        // RFC 3986 §5.2.4's own examples.
        assert_eq!(canonical("/a/b/c/./../../g"), "/a/g");
        assert_eq!(canonical("mid/content=5/../6"), "mid/6");
        assert_eq!(canonical("/a/.."), "/");
        assert_eq!(canonical("/a/b/."), "/a/b/");
        assert_eq!(canonical("/.."), "/");
    }

    fn readings(raw: &str, dialect: crate::route::dialect::Dialect) -> Vec<String> {
        let mut seen = Vec::new();
        any_reading(raw, &canonical(raw), dialect, |p| {
            seen.push(p.to_string());
            false
        });
        seen
    }

    #[test]
    fn generous_readings_hold_what_each_backend_runs() {
        use crate::route::dialect::Dialect;
        let php = readings("/checkout/authorized.php/x", Dialect::Php);
        assert!(
            php.contains(&"/checkout/authorized.php".to_string()),
            "{php:?}"
        );
        let slash = readings("/checkout/authorized.php%2F", Dialect::Php);
        assert!(
            slash.contains(&"/checkout/authorized.php/".to_string()),
            "{slash:?}"
        );
        let upper = readings("/a/INDEX.PHP/b", Dialect::Php);
        assert!(upper.contains(&"/a/INDEX.PHP".to_string()), "{upper:?}");
        assert_eq!(readings("/a/b.php/c", Dialect::Plain), vec!["/a/b.php/c"]);
        let spring = readings("/klarna/payment/%20auth-callback%20", Dialect::Spring);
        assert!(
            spring.contains(&"/klarna/payment/auth-callback".to_string()),
            "{spring:?}"
        );
        assert_eq!(readings("/plain/path", Dialect::Php), vec!["/plain/path"]);
    }

    #[test]
    fn ambiguous_spellings_are_told_apart_and_read_generously() {
        for (p, generous) in [
            ("/orig%2Fcart-1/cb", "/orig/cart-1/cb"),
            ("/orig%2fcart-1%5Ccb", "/orig/cart-1/cb"),
            ("/orig\\cart-1/cb", "/orig/cart-1/cb"),
            ("/orig/cart-1/cb;x", "/orig/cart-1/cb"),
            ("/orig;a=b/cart-1;jsessionid=1/cb", "/orig/cart-1/cb"),
            ("/orig/x%2F..%2Fcart-1/cb", "/orig/cart-1/cb"),
            ("/orig%2%46cart-1/cb", "/orig/cart-1/cb"),
            ("/orig%252Fcart-1/cb", "/orig/cart-1/cb"),
        ] {
            assert!(is_ambiguous(p), "{p}");
            assert_eq!(lenient(p), generous, "{p}");
        }
        for p in ["/orig/cart-1/cb", "/a%20b", "/a%C3%A9"] {
            assert!(!is_ambiguous(p), "{p}");
        }
    }
}
