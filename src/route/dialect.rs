//! How the backend's language reads what authback routes on: parameter
//! names (`upstream.dialect`) and the path it is sent (`upstream.path_form`).
//! Every route decision reads names every way the backend might, so that
//! no spelling means one thing to authback and another to the backend.
//! This module only reads; it never decides what a route is.

use std::borrow::Cow;

/// The backend's language, for reading parameter names and path spellings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    /// PHP 8: names cut at NUL, leading spaces dropped, `.` and space read
    /// as `_`, `name[…]` read as `name`; `x.php/…` runs `x.php`.
    #[default]
    Php,
    /// Tomcat with Spring MVC: names as decoded; a route also takes its
    /// path with a trailing `/`, a `.ext` suffix and spaces around a segment.
    Spring,
    /// Names as decoded, paths as written: no extra reading.
    Plain,
}

impl Dialect {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "php" => Some(Dialect::Php),
            "spring" => Some(Dialect::Spring),
            "plain" => Some(Dialect::Plain),
            _ => None,
        }
    }

    /// The backend's own reading of a decoded name, when it differs from
    /// the name as decoded; `Some("")` when the backend drops the parameter.
    pub(crate) fn read_name(self, decoded: &str) -> Option<String> {
        match self {
            Dialect::Php => {
                // Most names hold none of the bytes PHP reads differently.
                if !decoded.bytes().any(|c| matches!(c, b' ' | b'.' | b'[' | 0)) {
                    return None;
                }
                let php = php_name(decoded);
                (php != decoded).then_some(php)
            }
            Dialect::Spring | Dialect::Plain => None,
        }
    }
}

/// Which path the backend is sent for a proxied request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathForm {
    /// The canonical path, the one authback routed on.
    #[default]
    Canonical,
    /// The path byte for byte, as the client sent it (opt-out; see
    /// docs/security.md for what that lets through).
    Raw,
}

/// The top-level name PHP 8 registers for a decoded parameter name
/// (main/php_variables.c, `php_register_variable_ex`): the name is cut at
/// NUL and its leading spaces dropped; then, up to a `[` that a `]` closes
/// later (an array: the name is what came before it), space and `.` read
/// as `_`; an unclosed `[` is `_` too, and so are the spaces, dots and `[`
/// after it. An empty result means PHP drops the parameter.
pub(crate) fn php_name(decoded: &str) -> String {
    let cut = decoded.split('\0').next().unwrap_or("");
    let name = cut.trim_start_matches(' ');
    let mut out = String::with_capacity(name.len());
    let mut unclosed = false;
    for (i, c) in name.char_indices() {
        match c {
            ' ' | '.' => out.push('_'),
            '[' if unclosed => out.push('_'),
            '[' if name[i..].contains(']') => break,
            '[' => {
                unclosed = true;
                out.push('_');
            }
            c => out.push(c),
        }
    }
    out
}

/// One parameter of a query or form body: its name as decoded, the
/// backend's reading of it when that differs, and its value as decoded.
#[derive(Debug)]
pub(crate) struct Param<'a> {
    pub name: Cow<'a, str>,
    pub read: Option<String>,
    pub value: Cow<'a, str>,
}

impl Param<'_> {
    /// Whether any reading of the name is `name`.
    pub(crate) fn is(&self, name: &str) -> bool {
        self.name == name || self.read.as_deref() == Some(name)
    }
}

/// Decodes `%XX` and `+` as a query is decoded; bytes that are not UTF-8
/// are kept as U+FFFD, so a name that does not decode never equals one that
/// does.
pub(crate) fn form_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let spaced = s.replace('+', " ");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&spaced).collect();
    Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
}

/// The parameters of a query (or a form body), every non-empty `&` piece,
/// read as `dialect` reads them.
pub(crate) fn params(query: &str, dialect: Dialect) -> impl Iterator<Item = Param<'_>> {
    query.split('&').filter(|p| !p.is_empty()).map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(k);
        let read = dialect.read_name(&name);
        Param {
            name,
            read,
            value: form_decode(v),
        }
    })
}

/// How many parameters PHP counts against `max_input_vars`: every
/// non-empty `&` piece.
pub(crate) fn count_params(query: &str) -> usize {
    query.split('&').filter(|p| !p.is_empty()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_reads_names_as_php_8_does() {
        // Each pair checked against `parse_str` of PHP 8.2.
        for (decoded, php) in [
            ("a.b", "a_b"),
            ("a b", "a_b"),
            (" a", "a"),
            ("  a", "a"),
            ("a\0b", "a"),
            ("\0a", ""),
            ("a[b", "a_b"),
            ("a[b.c", "a_b_c"),
            ("a[b]", "a"),
            ("a]b", "a]b"),
            ("a[", "a_"),
            ("[a]", ""),
            ("a.[b", "a__b"),
            ("a b[c.d", "a_b_c_d"),
            ("a[b[c]", "a"),
            ("token[]", "token"),
            ("dryRun", "dryRun"),
        ] {
            assert_eq!(php_name(decoded), php, "{decoded:?}");
        }
    }

    #[test]
    fn params_carry_every_reading() {
        let q = "token=T&dryRun=1&dryRun%00=0&+dryRun=0&wc.api=x&&";
        let got: Vec<(String, Option<String>, String)> = params(q, Dialect::Php)
            .map(|p| (p.name.into_owned(), p.read, p.value.into_owned()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("token".into(), None, "T".into()),
                ("dryRun".into(), None, "1".into()),
                ("dryRun\0".into(), Some("dryRun".into()), "0".into()),
                (" dryRun".into(), Some("dryRun".into()), "0".into()),
                ("wc.api".into(), Some("wc_api".into()), "x".into()),
            ]
        );
        assert!(params(q, Dialect::Plain).all(|p| p.read.is_none()));
        assert_eq!(count_params(q), 5);
        assert_eq!(form_decode("%ff"), "\u{fffd}");
    }
}
