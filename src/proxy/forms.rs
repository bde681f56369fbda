//! Form bodies read as PHP reads them, while they stream to the backend.
//! PHP fills `$_POST` (and `$_REQUEST`) from an `x-www-form-urlencoded` or
//! `multipart/form-data` POST, and a shop's router may read its callback's
//! name there (WordPress reads `wc-api` from `$_POST` first). authback
//! cannot route a callback on a form body, so a body that carries a name a
//! route matches in the query is cut off before its end: the backend never
//! receives a whole request, and the client gets 400. Nothing is buffered
//! beyond one name (or one multipart header line), so uploads keep no size
//! cap of authback's.

use std::sync::Arc;

use http::{header, Method, Request};
use hyper::body::Incoming;

use crate::route::dialect::php_name;

/// The longest multipart header line read; a `Content-Disposition` line
/// longer than this is refused (PHP reads such lines in pieces).
const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    UrlEncoded,
    Multipart,
}

/// A scanner for `req`'s body, when it is a form POST and some route
/// matches a name in the query.
pub(crate) fn scanner(req: &Request<Incoming>, names: &Arc<[String]>) -> Option<Scanner> {
    if names.is_empty() || req.method() != Method::POST {
        return None;
    }
    let kind = req
        .headers()
        .get_all(header::CONTENT_TYPE)
        .iter()
        .find_map(|v| {
            let v = String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase();
            if v.contains("multipart/form-data") {
                Some(Kind::Multipart)
            } else if v.contains("x-www-form-urlencoded") {
                Some(Kind::UrlEncoded)
            } else {
                None
            }
        })?;
    Some(Scanner::new(kind, names.clone()))
}

/// The state of one body's scan.
pub(crate) struct Scanner {
    kind: Kind,
    names: Arc<[String]>,
    longest: usize,
    /// urlencoded: inside a value (after `=`), until the next `&`.
    in_value: bool,
    /// urlencoded: the name so far, decoded; multipart: the line so far.
    buf: Vec<u8>,
    /// The name (or line) grew past what can match and is only skipped.
    overflow: bool,
    /// urlencoded: a `%` and the hex digits seen after it so far.
    escape: Vec<u8>,
    refused: bool,
}

impl Scanner {
    fn new(kind: Kind, names: Arc<[String]>) -> Self {
        let longest = names.iter().map(|n| n.len()).max().unwrap_or(0);
        Scanner {
            kind,
            names,
            longest,
            in_value: false,
            buf: Vec::new(),
            overflow: false,
            escape: Vec::new(),
            refused: false,
        }
    }

    /// Reads one piece of the body; `false` once it has carried a routed name.
    pub(crate) fn feed(&mut self, data: &[u8]) -> bool {
        if !self.refused {
            match self.kind {
                Kind::UrlEncoded => self.feed_urlencoded(data),
                Kind::Multipart => self.feed_multipart(data),
            }
        }
        !self.refused
    }

    /// A form body is mostly values, and only names are read: one pass
    /// finds every `&`, and in each pair only the bytes up to its `=`
    /// are looked at; a name with no escape is taken whole.
    fn feed_urlencoded(&mut self, data: &[u8]) {
        let mut start = 0;
        let ends = memchr::memchr_iter(b'&', data).chain(std::iter::once(data.len()));
        for end in ends {
            if !self.in_value {
                self.name_piece(&data[start..end]);
            }
            if end < data.len() {
                self.url_byte(b'&');
            }
            if self.refused {
                return;
            }
            start = end + 1;
        }
    }

    /// The part of a pair that this piece of the body holds, while its
    /// name is still being read. The common case, a whole name with no
    /// byte PHP reads another way, is judged here in one pass over it.
    fn name_piece(&mut self, piece: &[u8]) {
        let mut special = false;
        let mut eq = None;
        for (i, &c) in piece.iter().enumerate() {
            match c {
                b'=' => {
                    eq = Some(i);
                    break;
                }
                b'%' | b'+' | b' ' | b'.' | b'[' | 0 => special = true,
                _ => {}
            }
        }
        let name = &piece[..eq.unwrap_or(piece.len())];
        let fresh = self.buf.is_empty() && self.escape.is_empty() && !self.overflow;
        if fresh && !special && eq.is_some() {
            self.refused |=
                name.len() <= self.longest && self.names.iter().any(|n| n.as_bytes() == name);
            self.in_value = true;
            return;
        }
        if !special
            && self.escape.is_empty()
            && !self.overflow
            && self.buf.len() + name.len() <= self.longest + 1
        {
            self.buf.extend_from_slice(name);
        } else {
            for &c in name {
                self.url_byte(c);
            }
        }
        if eq.is_some() {
            self.url_byte(b'=');
        }
    }

    /// Only lines that start a part's `Content-Disposition` are read; the
    /// rest of any other line is skipped to its end at once.
    fn feed_multipart(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.refused {
            if self.overflow {
                match memchr::memchr(b'\n', data) {
                    Some(at) => data = &data[at..],
                    None => return,
                }
            }
            self.line_byte(data[0]);
            data = &data[1..];
        }
    }

    /// The body has ended: a last name with no `=` or `&` after it counts.
    pub(crate) fn finish(&mut self) -> bool {
        if self.kind == Kind::UrlEncoded && !self.in_value {
            self.flush_escape();
            self.end_name();
        }
        !self.refused
    }

    fn url_byte(&mut self, c: u8) {
        match c {
            b'&' => {
                if !self.in_value {
                    self.flush_escape();
                    self.end_name();
                }
                self.in_value = false;
                self.buf.clear();
                self.overflow = false;
                self.escape.clear();
            }
            _ if self.in_value => {}
            b'=' => {
                self.flush_escape();
                self.end_name();
                self.in_value = true;
            }
            b'%' => {
                self.flush_escape();
                self.escape.push(c);
            }
            _ if !self.escape.is_empty() => {
                if c.is_ascii_hexdigit() {
                    self.escape.push(c);
                    if self.escape.len() == 3 {
                        let hex = |d: u8| (d as char).to_digit(16).unwrap_or(0) as u8;
                        let byte = hex(self.escape[1]) << 4 | hex(self.escape[2]);
                        self.escape.clear();
                        self.name_byte(byte);
                    }
                } else {
                    self.flush_escape();
                    self.name_byte(c);
                }
            }
            b'+' => self.name_byte(b' '),
            _ => self.name_byte(c),
        }
    }

    /// A `%` that started no escape is the byte itself, and so are the
    /// digits after it.
    fn flush_escape(&mut self) {
        let pending = std::mem::take(&mut self.escape);
        for b in pending {
            self.name_byte(b);
        }
    }

    /// One decoded byte of a name. PHP drops leading spaces, so a run of
    /// them is kept as one: the name can still match after any number.
    fn name_byte(&mut self, b: u8) {
        if self.overflow {
            return;
        }
        if b == b' ' && self.buf.iter().all(|&c| c == b' ') && !self.buf.is_empty() {
            return;
        }
        self.buf.push(b);
        // A NUL or `[` ends the name PHP reads: what follows cannot unmake
        // a match, so the name is judged now and the rest skipped.
        if b == 0 || b == b'[' {
            self.end_name();
            self.overflow = true;
            return;
        }
        if self.buf.len() > self.longest + 1 {
            self.overflow = true;
        }
    }

    fn end_name(&mut self) {
        let plain = !self.buf.iter().any(|c| matches!(c, b' ' | b'.' | b'[' | 0));
        if plain {
            // Most names: no byte PHP reads another way, no allocation.
            let b = &self.buf;
            self.refused |= self.names.iter().any(|n| n.as_bytes() == b.as_slice());
        } else {
            let name = String::from_utf8_lossy(&self.buf).into_owned();
            // `wc-api[` is read as up to the `[`, more generously than PHP.
            let stem = name.trim_end_matches(['\0', '[']);
            if self.routed(stem) {
                self.refused = true;
            }
        }
        self.buf.clear();
    }

    /// Whether a decoded name reads, plainly or as PHP reads it, as a
    /// routed name.
    fn routed(&self, name: &str) -> bool {
        let php = php_name(name);
        self.names.iter().any(|n| n == name || *n == php)
    }

    fn line_byte(&mut self, c: u8) {
        if c == b'\n' {
            self.end_line();
            return;
        }
        if self.buf.len() >= MAX_LINE {
            if self.buf.trim_ascii_start().is_empty() {
                // White space only (a file's content): skipped.
                self.overflow = true;
                self.buf.clear();
            } else {
                // A `Content-Disposition` line too long to read whole:
                // refused rather than guessed.
                self.refused = true;
            }
            return;
        }
        self.buf.push(c);
        let t = self.buf.trim_ascii_start();
        if t.len() >= 20 && !is_disposition(t) {
            // Not a part's header that names it: the rest of the line is
            // skipped (`feed`).
            self.overflow = true;
            self.buf.clear();
        }
    }

    fn end_line(&mut self) {
        if !self.overflow && is_disposition(&self.buf) {
            let line = String::from_utf8_lossy(&self.buf).into_owned();
            if disposition_names(&line).any(|n| self.routed(&n)) {
                self.refused = true;
            }
        }
        self.buf.clear();
        self.overflow = false;
    }
}

/// Whether a multipart line is a `Content-Disposition` header (any case,
/// leading white space allowed).
fn is_disposition(line: &[u8]) -> bool {
    let t = line.trim_ascii_start();
    t.len() >= 20 && t[..20].eq_ignore_ascii_case(b"content-disposition:")
}

/// Every `name=` parameter of a `Content-Disposition` line (`filename=`
/// too, generously), quoted or not, backslash escapes read.
fn disposition_names(line: &str) -> impl Iterator<Item = String> + '_ {
    let lower = line.to_ascii_lowercase();
    let starts: Vec<usize> = lower.match_indices("name=").map(|(i, _)| i + 5).collect();
    starts.into_iter().map(move |at| {
        let rest = &line[at..];
        let mut out = String::new();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
        } else {
            out.extend(rest.chars().take_while(|&c| c != ';' && !c.is_whitespace()));
        }
        out
    })
}

impl crate::body::Inspect for Scanner {
    fn feed(&mut self, data: &[u8]) -> bool {
        Scanner::feed(self, data)
    }

    fn finish(&mut self) -> bool {
        Scanner::finish(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(kind: Kind, pieces: &[&str]) -> bool {
        let mut s = Scanner::new(kind, vec!["wc-api".to_string()].into());
        pieces.iter().all(|p| s.feed(p.as_bytes())) && s.finish()
    }

    #[test]
    fn a_routed_name_in_any_spelling_is_caught_across_pieces() {
        for body in [
            "wc-api=KP_WC_AUTHORIZATION",
            "a=1&wc-api=x",
            "a=1&wc-api",
            "+wc-api=1",
            "%20%20%20wc-api=1",
            "wc-api%00junk=1",
            "wc%2Dapi=1",
            "wc-api[x]=1",
            "wc-api[=1",
            "{\"session_id\":\"s\",\"x\":\"&wc-api=KP_WC_AUTHORIZATION&\"}",
        ] {
            assert!(!scan(Kind::UrlEncoded, &[body]), "{body}");
            // Split at every byte: the same answer.
            for i in 1..body.len() {
                assert!(
                    !scan(Kind::UrlEncoded, &[&body[..i], &body[i..]]),
                    "{body} at {i}"
                );
            }
        }
        for body in [
            "a=1&b=wc-api",
            "wc-apix=1",
            "wc_api=1",
            "x=%",
            "=wc-api",
            "wc-ap=i",
        ] {
            assert!(scan(Kind::UrlEncoded, &[body]), "{body}");
        }
        let long = format!("{}=1&b=2", "x".repeat(100_000));
        assert!(scan(Kind::UrlEncoded, &[&long]));
    }

    #[test]
    fn multipart_names_are_read_from_their_disposition() {
        let part = |disp: &str| format!("--b\r\n{disp}\r\n\r\nKP_WC_AUTHORIZATION\r\n--b--\r\n");
        for disp in [
            "Content-Disposition: form-data; name=\"wc-api\"",
            "content-disposition: form-data; name=wc-api",
            "Content-Disposition: form-data; name=\"wc\\-api\"",
            "Content-Disposition: form-data; name=\" wc-api\"",
        ] {
            assert!(!scan(Kind::Multipart, &[&part(disp)]), "{disp}");
        }
        let ok = part("Content-Disposition: form-data; name=\"upload\"; filename=\"a.txt\"");
        assert!(scan(Kind::Multipart, &[&ok]));
        let huge = format!("Content-Disposition: form-data; {}", "x".repeat(MAX_LINE));
        assert!(!scan(Kind::Multipart, &[&huge]));
        // A file's long lines, white space included, are only skipped.
        let file = format!(
            "--b\r\n{}\r\n{}\r\n--b--\r\n",
            "y".repeat(3 * MAX_LINE),
            " ".repeat(2 * MAX_LINE)
        );
        assert!(scan(Kind::Multipart, &[&file]));
    }
}
