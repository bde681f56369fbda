//! Host names the public listener holds certificates for, and the one rule
//! for matching a requested name against them: case-insensitive, a trailing
//! dot ignored, and `*.example.com` standing for exactly one more label.
//! The SNI resolver, `check` and the redirect to HTTPS all ask this type.

use rustls_pki_types::DnsName;

/// A list of host names, each lowercase without a trailing dot; a name may
/// be a wildcard, `*.` and then a name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNames(Vec<String>);

/// How a host matched one of the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Match {
    /// The host is one of the names.
    Exact,
    /// The host is one label under a wildcard name.
    Wildcard,
}

impl HostNames {
    /// Names already in normal form (`normal` or a certificate's SAN list).
    pub(crate) fn new(names: Vec<String>) -> Self {
        HostNames(names)
    }

    /// One name as written in a config, in normal form, or why it is not a
    /// DNS name. IP addresses are refused: certificates here are served by
    /// name (SNI), and a client never sends an address as SNI.
    pub(crate) fn normal(name: &str) -> Result<String, String> {
        let lower = name.to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        if !lower.is_ascii() {
            return Err(format!(
                "`{name}` is not ASCII: write an international name in its xn-- form"
            ));
        }
        let base = lower.strip_prefix("*.").unwrap_or(lower);
        if base.contains('*') || DnsName::try_from(base).is_err() {
            return Err(format!(
                "`{name}` is not a DNS name (a wildcard is `*.` and then a name, such as \"*.example.com\")"
            ));
        }
        Ok(lower.to_string())
    }

    /// Whether `host` is one of the names: exactly, or one label under a
    /// wildcard. `host` is compared ignoring case and one trailing dot.
    pub fn contains(&self, host: &str) -> bool {
        self.matches(host).is_some()
    }

    /// How `host` matches, an exact name before a wildcard.
    pub(crate) fn matches(&self, host: &str) -> Option<Match> {
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() {
            return None;
        }
        if self.0.iter().any(|n| n.eq_ignore_ascii_case(host)) {
            return Some(Match::Exact);
        }
        let (label, parent) = host.split_once('.')?;
        let wild = !label.is_empty()
            && self.0.iter().any(|n| {
                n.strip_prefix("*.")
                    .is_some_and(|p| p.eq_ignore_ascii_case(parent))
            });
        wild.then_some(Match::Wildcard)
    }

    /// The names, in their order.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl std::fmt::Display for HostNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.is_empty() {
            true => f.write_str("no DNS name"),
            false => f.write_str(&self.0.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> HostNames {
        HostNames::new(
            list.iter()
                .map(|n| HostNames::normal(n).expect("valid"))
                .collect(),
        )
    }

    #[test]
    fn names_are_lowercased_and_lose_a_trailing_dot() {
        assert_eq!(
            HostNames::normal("Shop.Example.COM.").as_deref(),
            Ok("shop.example.com")
        );
        assert_eq!(
            HostNames::normal("*.Example.com").as_deref(),
            Ok("*.example.com")
        );
        for bad in [
            "",
            ".",
            "a..b",
            "*",
            "*.",
            "a.*.b",
            "**.b",
            "*a.b",
            "127.0.0.1",
            "::1",
            "bücher.example",
            "a b.example",
            "-a.example",
        ] {
            assert!(HostNames::normal(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn matching_ignores_case_and_a_trailing_dot() {
        let n = names(&["shop.example.com", "*.cdn.example.com"]);
        assert_eq!(n.matches("SHOP.example.com."), Some(Match::Exact));
        assert_eq!(n.matches("img.CDN.example.com"), Some(Match::Wildcard));
        assert_eq!(n.matches("img.cdn.example.com."), Some(Match::Wildcard));
        for miss in [
            "",
            ".",
            "example.com",
            "cdn.example.com",
            "a.b.cdn.example.com",
            ".cdn.example.com",
            "shop.example.com..",
            "xshop.example.com",
        ] {
            assert_eq!(n.matches(miss), None, "{miss:?} matched");
        }
        // A wildcard written in the host is not a wildcard.
        assert_eq!(
            names(&["a.cdn.example.com"]).matches("*.cdn.example.com"),
            None
        );
    }

    #[test]
    fn an_exact_name_is_preferred_over_a_wildcard() {
        let n = names(&["*.example.com", "api.example.com"]);
        assert_eq!(n.matches("api.example.com"), Some(Match::Exact));
        assert_eq!(n.matches("www.example.com"), Some(Match::Wildcard));
    }
}
