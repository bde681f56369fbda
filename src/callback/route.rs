//! A callback route as configured: its path pattern, the one place that
//! knows what a reference is (which spellings a path accepts, how a URL is
//! rendered for one), and the minting of callback URLs.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::net::IpNet;
use crate::types::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardFormat {
    Json,
    Form,
    Original,
}

/// A callback path such as `/klarna/authorization/{reference}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    pub prefix: String,
    /// `Some(suffix)` when the pattern has a `{reference}` segment.
    pub suffix: Option<String>,
}

/// What a request path means for a route.
#[derive(Debug, PartialEq, Eq)]
pub enum PathMatch<'a> {
    No,
    /// The path is this route's; the reference is `""` when it has none.
    Yes(&'a str),
    /// The path is this route's but its reference segment is not valid.
    BadReference,
}

impl PathPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err("must start with `/`".into());
        }
        match s.find("{reference}") {
            None => {
                if s.contains('{') || s.contains('}') {
                    return Err("the only placeholder is `{reference}`".into());
                }
                Ok(Self {
                    prefix: s.to_string(),
                    suffix: None,
                })
            }
            Some(at) => {
                let (prefix, rest) = s.split_at(at);
                let suffix = &rest["{reference}".len()..];
                if !prefix.ends_with('/') || !(suffix.is_empty() || suffix.starts_with('/')) {
                    return Err("`{reference}` must be a whole path segment".into());
                }
                if suffix.contains('{') || prefix.contains('{') {
                    return Err("`{reference}` may appear once".into());
                }
                Ok(Self {
                    prefix: prefix.to_string(),
                    suffix: Some(suffix.to_string()),
                })
            }
        }
    }

    pub fn matches<'a>(&self, path: &'a str) -> PathMatch<'a> {
        match &self.suffix {
            None => {
                if path == self.prefix {
                    PathMatch::Yes("")
                } else {
                    PathMatch::No
                }
            }
            Some(suffix) => {
                let Some(rest) = path.strip_prefix(self.prefix.as_str()) else {
                    return PathMatch::No;
                };
                let Some(reference) = rest.strip_suffix(suffix.as_str()) else {
                    return PathMatch::No;
                };
                if reference.contains('/') {
                    return PathMatch::No;
                }
                if valid_reference(reference) {
                    PathMatch::Yes(reference)
                } else {
                    PathMatch::BadReference
                }
            }
        }
    }
}

impl PathPattern {
    /// The path for `reference`: `None` when the reference is not valid, or
    /// when one is given to a pattern without `{reference}`.
    pub fn render(&self, reference: &str) -> Option<String> {
        match &self.suffix {
            Some(suffix) if valid_reference(reference) => {
                Some(format!("{}{reference}{suffix}", self.prefix))
            }
            Some(_) => None,
            None if reference.is_empty() => Some(self.prefix.clone()),
            None => None,
        }
    }

    /// Whether `reference` could arrive on this path: a valid reference when
    /// the path has `{reference}`, the empty one when it has not.
    pub fn accepts(&self, reference: &str) -> bool {
        match &self.suffix {
            Some(_) => valid_reference(reference),
            None => reference.is_empty(),
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.suffix {
            None => f.write_str(&self.prefix),
            Some(s) => write!(f, "{}{{reference}}{s}", self.prefix),
        }
    }
}

/// 1 to 128 characters of `A-Z a-z 0-9 . _ ~ -`.
pub fn valid_reference(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub path: PathPattern,
    pub forward_path: Option<String>,
    pub forward_format: ForwardFormat,
    pub secrets: Vec<Secret>,
    pub static_tokens: Vec<Secret>,
    pub unverified: bool,
    /// Empty means every address is allowed.
    pub allow_ips: Vec<IpNet>,
}

impl Route {
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.allow_ips.is_empty() || self.allow_ips.iter().any(|n| n.contains(ip))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("no route named `{0}`")]
    UnknownRoute(String),
    #[error("reference must be 1-128 characters of A-Z a-z 0-9 . _ ~ -")]
    BadReference,
    #[error("route `{0}` has no {{reference}} in its path; pass an empty reference")]
    NoReferenceInPath(String),
    #[error("route `{0}` has no secrets to mint with (static_tokens and unverified routes need no minting)")]
    NoSecrets(String),
    #[error("ttl must be greater than zero")]
    ZeroTtl,
    #[error("ttl must be at most {0} (admin.max_url_ttl)")]
    TtlTooLong(String),
}

/// Mints the callback URL for `merchant_urls.authorization`; returns it with
/// its expiry (unix seconds).
pub fn mint_url(
    route: &Route,
    public_url: &str,
    reference: &str,
    ttl: Duration,
    max_ttl: Duration,
    now_unix: u64,
) -> Result<(String, u64), MintError> {
    let secret = route
        .secrets
        .first()
        .ok_or_else(|| MintError::NoSecrets(route.name.clone()))?;
    if ttl.is_zero() {
        return Err(MintError::ZeroTtl);
    }
    if ttl > max_ttl {
        return Err(MintError::TtlTooLong(crate::text::format_duration(max_ttl)));
    }
    let path = route.path.render(reference).ok_or_else(|| {
        if route.path.suffix.is_none() {
            MintError::NoReferenceInPath(route.name.clone())
        } else {
            MintError::BadReference
        }
    })?;
    let exp = now_unix + ttl.as_secs().max(1);
    let token = super::token::mint(secret, &route.name, reference, exp);
    Ok((format!("{public_url}{path}?token={token}"), exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns() {
        let p = PathPattern::parse("/klarna/authorization/{reference}").expect("valid");
        assert_eq!(
            p.matches("/klarna/authorization/cart-1"),
            PathMatch::Yes("cart-1")
        );
        assert_eq!(p.matches("/klarna/authorization/"), PathMatch::BadReference);
        assert_eq!(
            p.matches("/klarna/authorization/a%20b"),
            PathMatch::BadReference
        );
        assert_eq!(p.matches("/klarna/authorization/a/b"), PathMatch::No);
        assert_eq!(p.matches("/klarna/other"), PathMatch::No);
        let long = format!("/klarna/authorization/{}", "a".repeat(129));
        assert_eq!(p.matches(&long), PathMatch::BadReference);
        let q = PathPattern::parse("/cb/{reference}/klarna").expect("valid");
        assert_eq!(q.matches("/cb/o-1/klarna"), PathMatch::Yes("o-1"));
        assert_eq!(q.matches("/cb/o-1/other"), PathMatch::No);
        let fixed = PathPattern::parse("/klarna/push").expect("valid");
        assert_eq!(fixed.matches("/klarna/push"), PathMatch::Yes(""));
        assert!(PathPattern::parse("/a{reference}").is_err());
        assert!(PathPattern::parse("/a/{ref}").is_err());
        assert!(PathPattern::parse("a/{reference}").is_err());
    }

    #[test]
    fn render_and_accepts_agree_with_matches() {
        let p = PathPattern::parse("/k/{reference}/cb").expect("valid");
        assert_eq!(p.render("c-1").as_deref(), Some("/k/c-1/cb"));
        assert_eq!(p.render("a b"), None);
        assert_eq!(p.render(""), None);
        assert!(p.accepts("c-1") && !p.accepts("") && !p.accepts("a/b"));
        let fixed = PathPattern::parse("/k/push").expect("valid");
        assert_eq!(fixed.render("").as_deref(), Some("/k/push"));
        assert_eq!(fixed.render("x"), None);
        assert!(fixed.accepts("") && !fixed.accepts("x"));
    }
}
