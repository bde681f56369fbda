//! The checks of what the public side adds around each request: the
//! `Strict-Transport-Security` header (`server.hsts`) and the access log
//! (`[access_log]`). Their syntax is checked here, once, at load.

use std::path::Path;

use super::checker::Checker;
use super::file::FileAccessLog;
use crate::config::model::{AccessLogConfig, AccessLogTarget};

/// `server.hsts`: the header's value as written, once its syntax is known
/// good.
pub(super) fn hsts(c: &mut Checker, value: Option<&str>) -> Option<http::HeaderValue> {
    let value = value?;
    match parse_hsts(value) {
        Ok(v) => Some(v),
        Err(why) => {
            c.err("server.hsts", why);
            None
        }
    }
}

/// A `Strict-Transport-Security` value (RFC 6797 §6.1): `max-age=<seconds>`
/// required, `includeSubDomains` and `preload` optional, each at most once,
/// directive names in any case, separated by `;`.
fn parse_hsts(value: &str) -> Result<http::HeaderValue, String> {
    const EXAMPLE: &str = "e.g. \"max-age=31536000; includeSubDomains\"";
    let mut seen: Vec<String> = Vec::new();
    for directive in value.split(';') {
        let directive = directive.trim_matches([' ', '\t']);
        if directive.is_empty() {
            continue;
        }
        let (name, arg) = match directive.split_once('=') {
            Some((n, a)) => (
                n.trim_matches([' ', '\t']),
                Some(a.trim_matches([' ', '\t'])),
            ),
            None => (directive, None),
        };
        let lower = name.to_ascii_lowercase();
        match (lower.as_str(), arg) {
            ("max-age", Some(a)) => {
                // delta-seconds, or the same in quotes.
                let digits = a
                    .strip_prefix('"')
                    .and_then(|a| a.strip_suffix('"'))
                    .unwrap_or(a);
                let whole = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
                if !whole || digits.parse::<u64>().is_err() {
                    return Err(format!(
                        "max-age is a whole number of seconds, not `{a}` ({EXAMPLE})"
                    ));
                }
            }
            ("max-age", None) => {
                return Err(format!("max-age needs a number of seconds ({EXAMPLE})"));
            }
            ("includesubdomains" | "preload", None) => {}
            ("includesubdomains" | "preload", Some(_)) => {
                return Err(format!("`{name}` takes no value"));
            }
            _ => {
                return Err(format!(
                    "unknown directive `{name}`: use max-age, includeSubDomains and preload ({EXAMPLE})"
                ));
            }
        }
        if seen.contains(&lower) {
            return Err(format!("`{name}` appears more than once"));
        }
        seen.push(lower);
    }
    if !seen.iter().any(|d| d == "max-age") {
        return Err(format!("max-age is required ({EXAMPLE})"));
    }
    http::HeaderValue::from_str(value.trim())
        .map_err(|_| "is not a valid header value (visible ASCII only)".to_string())
}

/// `[access_log]`: where lines go, a file relative to the config's folder.
/// The file is opened when authback starts (a failure there exits 2).
pub(super) fn access_log(c: &mut Checker, f: &FileAccessLog, base: &Path) -> AccessLogConfig {
    let to = match f.path.as_deref().map(str::trim) {
        None | Some("stdout") => AccessLogTarget::Stdout,
        Some("") => {
            c.err(
                "access_log.path",
                "is \"stdout\" or a file path (relative to the config's folder)",
            );
            AccessLogTarget::Stdout
        }
        Some(p) => AccessLogTarget::File(base.join(p)),
    };
    AccessLogConfig {
        enabled: f.enabled,
        to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsts_takes_max_age_and_two_flags_in_any_case() {
        for ok in [
            "max-age=31536000",
            "max-age=31536000; includeSubDomains",
            "MAX-AGE=0",
            "max-age=\"600\"; preload; includesubdomains",
            "includeSubDomains; max-age=31536000; Preload;",
            "max-age = 60 ;includeSubDomains",
        ] {
            let v = parse_hsts(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(v.to_str().expect("ascii"), ok.trim(), "sent as written");
        }
    }

    #[test]
    fn hsts_refuses_what_a_browser_would_ignore() {
        for (bad, why) in [
            ("", "max-age is required"),
            ("includeSubDomains", "max-age is required"),
            ("max-age", "needs a number"),
            ("max-age=", "whole number"),
            ("max-age=1y", "whole number"),
            ("max-age=-1", "whole number"),
            ("max-age=1.5", "whole number"),
            ("max-age=99999999999999999999999", "whole number"),
            ("max-age=1; max-age=2", "more than once"),
            ("max-age=1; preload; PRELOAD", "more than once"),
            ("max-age=1; includeSubDomains=yes", "takes no value"),
            ("max-age=1, includeSubDomains", "whole number"),
            ("max-age=1; includeSubdomain", "unknown directive"),
            ("max-age=1; report-uri=x", "unknown directive"),
            ("max-age=1; preload\u{e9}", "unknown directive"),
        ] {
            let e = parse_hsts(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_access_log_is_off_and_on_stdout_unless_told() {
        let base = Path::new("/etc/authback");
        let mut c = Checker::new(base, true);
        let off = access_log(&mut c, &FileAccessLog::default(), base);
        assert!(!off.enabled);
        assert_eq!(off.to, AccessLogTarget::Stdout);
        let file = FileAccessLog {
            enabled: true,
            path: Some("logs/access.log".into()),
        };
        assert_eq!(
            access_log(&mut c, &file, base).to,
            AccessLogTarget::File(base.join("logs/access.log"))
        );
        assert!(c.errors.is_empty());
        let empty = FileAccessLog {
            enabled: true,
            path: Some(" ".into()),
        };
        access_log(&mut c, &empty, base);
        assert_eq!(c.errors.len(), 1);
        assert_eq!(c.errors[0].key, "access_log.path");
    }
}
