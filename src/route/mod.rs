//! A callback route as configured: its path pattern, the one place that
//! knows what a reference is (which spellings a path accepts, how a URL is
//! rendered for one), and the minting of callback URLs.

pub(crate) mod dialect;

use std::fmt;
use std::net::IpAddr;

use crate::net::{IpNet, IpSet};
use crate::route::dialect::Dialect;
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
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
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

    /// Whether `path` is this pattern, exactly as written.
    pub fn matches<'a>(&self, path: &'a str) -> PathMatch<'a> {
        self.matches_as(path, Spelling::default())
    }

    /// Whether `path` is this pattern, read as `spelling` allows: ignoring
    /// case, with a trailing `/`, as a parent of `path`, or as Spring reads
    /// its last segment (`.ext` cut).
    pub(crate) fn matches_as<'a>(&self, path: &'a str, spelling: Spelling) -> PathMatch<'a> {
        let exact = self.matches_one(path, spelling.ignore_case);
        if exact != PathMatch::No {
            return exact;
        }
        if spelling.trailing_slash && path.len() > 1 {
            if let Some(trimmed) = path.strip_suffix('/') {
                let m = self.matches_as(
                    trimmed,
                    Spelling {
                        trailing_slash: false,
                        ..spelling
                    },
                );
                if m != PathMatch::No {
                    return m;
                }
            }
        }
        if spelling.suffix {
            // Spring's suffix patterns: `/a/b.json` and `/a/b.do` are `/a/b`.
            let last = path.rfind('/').map_or(0, |i| i + 1);
            if let Some(dot) = path[last..].rfind('.').filter(|&d| d > 0) {
                let m = self.matches_one(&path[..last + dot], spelling.ignore_case);
                if m != PathMatch::No {
                    return m;
                }
            }
        }
        if spelling.subpaths {
            for (i, _) in path.match_indices('/').skip(1) {
                let m = self.matches_one(&path[..i], spelling.ignore_case);
                if m != PathMatch::No {
                    return m;
                }
            }
        }
        PathMatch::No
    }

    fn matches_one<'a>(&self, path: &'a str, ignore_case: bool) -> PathMatch<'a> {
        let strip_prefix = |s: &'a str, p: &str| -> Option<&'a str> {
            let head = s.get(..p.len())?;
            let same = if ignore_case {
                head.eq_ignore_ascii_case(p)
            } else {
                head == p
            };
            same.then(|| &s[p.len()..])
        };
        let strip_suffix = |s: &'a str, p: &str| -> Option<&'a str> {
            let at = s.len().checked_sub(p.len())?;
            let tail = s.get(at..)?;
            let same = if ignore_case {
                tail.eq_ignore_ascii_case(p)
            } else {
                tail == p
            };
            same.then(|| &s[..at])
        };
        match &self.suffix {
            None => match strip_prefix(path, &self.prefix) {
                Some("") => PathMatch::Yes(""),
                _ => PathMatch::No,
            },
            Some(suffix) => {
                let Some(rest) = strip_prefix(path, &self.prefix) else {
                    return PathMatch::No;
                };
                let Some(reference) = strip_suffix(rest, suffix) else {
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
    pub(crate) fn render(&self, reference: &str) -> Option<String> {
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
    pub(crate) fn accepts(&self, reference: &str) -> bool {
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

/// What a request path and query mean for a route.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RouteMatch {
    No,
    /// The request is this route's; the reference is `""` when it has none.
    Yes(String),
    /// The path is this route's but its reference segment is not valid.
    BadReference,
}

/// `path` without a leading front controller, `/index.php` (any case):
/// shops without rewrite rules route `/index.php/a/b` as `/a/b`.
pub(crate) fn without_front_controller(path: &str) -> Option<&str> {
    let head = path.get(..10)?;
    if !head.eq_ignore_ascii_case("/index.php") {
        return None;
    }
    let rest = &path[10..];
    rest.starts_with('/').then_some(rest)
}

/// A value as WordPress cleans it before comparing (`sanitize_key` on the
/// query, `sanitize_text_field` on the endpoint), read generously: HTML
/// tags and `%XX` octets removed, then every character but `A-Z a-z 0-9 _ -`.
pub(crate) fn clean_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut in_tag = false;
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_tag {
            in_tag = c != b'>';
        } else if c == b'<' {
            in_tag = true;
        } else if c == b'%'
            && b.len() > i + 2
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            i += 3;
            continue;
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' {
            out.push(c as char);
        }
        i += 1;
    }
    out
}

/// 1 to 128 characters of `A-Z a-z 0-9 . _ ~ -`.
pub fn valid_reference(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// Which spellings of a path a route takes as its own, besides the path as
/// written: the ones the platform behind it routes to the same handler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spelling {
    /// `/WC-API/x` is `/wc-api/x` (ASCII case).
    pub ignore_case: bool,
    /// `/a/b/` is `/a/b`.
    pub trailing_slash: bool,
    /// `/a/b/anything/below` is `/a/b` (Magento reads extra segments as
    /// parameters of the same controller).
    pub subpaths: bool,
    /// `/a/b.json` is `/a/b` (Spring MVC's suffix patterns, on by default
    /// before Spring 5.3); set by `upstream.dialect = "spring"`.
    pub suffix: bool,
}

impl Spelling {
    /// Every spelling a backend might route to the same handler: what the
    /// lenient reading takes as "near a route".
    pub(crate) const ANY: Spelling = Spelling {
        ignore_case: true,
        trailing_slash: true,
        subpaths: true,
        suffix: true,
    };
}

/// What a backend's answer to a delivery means, when the default reading
/// (2xx delivered; 408, 425, 429, 5xx retried; anything else dead) is wrong
/// for the platform behind a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Means {
    Delivered,
    Retry,
    Dead,
}

/// `status` (and, if set, a body containing `body_contains`) means `means`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRule {
    pub status: u16,
    pub body_contains: Option<String>,
    pub means: Means,
}

impl AnswerRule {
    pub(crate) fn applies(&self, status: u16, body: &[u8]) -> bool {
        self.status == status
            && self.body_contains.as_ref().is_none_or(|needle| {
                body.windows(needle.len().max(1))
                    .any(|w| w == needle.as_bytes())
            })
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub path: PathPattern,
    /// More paths that reach the same handler (`/index.php/...`).
    pub aliases: Vec<PathPattern>,
    pub spelling: Spelling,
    /// `(name, value)`: a request on any path whose query has this
    /// parameter (the value compared as `spelling` says) is this route's.
    pub query_match: Vec<(String, String)>,
    /// `(name, value)`: a request for the route's own path (or an alias,
    /// not a subpath) whose query carries this parameter once, with exactly
    /// this value, is proxied as it is: a plugin's own probe it answers
    /// before doing any work (Magento's `dryRun=1`).
    pub passthrough_query: Vec<(String, String)>,
    /// Each `query_match` parameter may also be a path endpoint at any
    /// depth, `/<any page>/<name>/<value>` (WordPress's `EP_ALL`).
    pub endpoint: bool,
    /// `query_match` values are compared cleaned, as WordPress cleans them
    /// (`sanitize_key`, `sanitize_text_field`): see `clean_value`.
    pub clean_values: bool,
    /// How the backend reads parameter names.
    pub dialect: Dialect,
    /// How the backend's answers read, first match wins.
    pub answers: Vec<AnswerRule>,
    pub forward_path: Option<String>,
    pub forward_format: ForwardFormat,
    pub secrets: Vec<Secret>,
    pub static_tokens: Vec<Secret>,
    pub unverified: bool,
    /// Empty means every address is allowed.
    pub allow_ips: AllowIps,
}

/// Where a route takes callbacks from: fixed networks, and named sets that
/// may be reloaded while serving (`[ip_sets]`). With neither, every address.
#[derive(Debug, Clone, Default)]
pub struct AllowIps {
    pub(crate) nets: Vec<IpNet>,
    pub(crate) sets: Vec<IpSet>,
}

impl AllowIps {
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && self.sets.is_empty()
    }

    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        self.is_empty()
            || self.nets.iter().any(|n| n.contains(ip))
            || self.sets.iter().any(|s| s.contains(ip))
    }
}

impl Route {
    /// The route's own paths: its path and its aliases.
    fn paths(&self) -> impl Iterator<Item = &PathPattern> {
        std::iter::once(&self.path).chain(&self.aliases)
    }

    /// Whether a request for canonical `path` and `query` is this route's,
    /// with the reference it carries. A front controller's `/index.php`
    /// before the path is read as the shop's router reads it.
    pub(crate) fn matches(&self, path: &str, query: Option<&str>) -> RouteMatch {
        for candidate in std::iter::once(path).chain(without_front_controller(path)) {
            for p in self.paths() {
                match p.matches_as(candidate, self.spelling) {
                    PathMatch::No => {}
                    PathMatch::Yes(r) => return RouteMatch::Yes(r.to_string()),
                    PathMatch::BadReference => return RouteMatch::BadReference,
                }
            }
        }
        if self.query_match.is_empty() {
            return RouteMatch::No;
        }
        let asked = query.is_some_and(|q| {
            crate::route::dialect::params(q, self.dialect).any(|p| {
                self.query_match
                    .iter()
                    .any(|(k, v)| p.is(k) && self.value_is(&p.value, v))
            })
        });
        if asked || (self.endpoint && self.endpoint_in(path)) {
            return RouteMatch::Yes(String::new());
        }
        RouteMatch::No
    }

    /// Whether `path` holds a `query_match` parameter as an endpoint:
    /// a segment `<name>` followed by its value (the rest of the path,
    /// decoded, its trailing `/` trimmed), after any page.
    fn endpoint_in(&self, path: &str) -> bool {
        self.query_match.iter().any(|(k, v)| {
            let mut at = 0;
            while let Some(i) = path[at..].find(k.as_str()).map(|i| i + at) {
                at = i + 1;
                let starts = i > 0 && path.as_bytes()[i - 1] == b'/';
                let rest = &path[i + k.len()..];
                let Some(value) = rest.strip_prefix('/') else {
                    continue;
                };
                let value = crate::route::dialect::form_decode(value.trim_end_matches('/'));
                if starts && self.value_is(&value, v) {
                    return true;
                }
            }
            false
        })
    }

    /// Whether a parameter's `value` is the routed `want`.
    fn value_is(&self, value: &str, want: &str) -> bool {
        if self.clean_values {
            clean_value(value).eq_ignore_ascii_case(&clean_value(want))
        } else if self.spelling.ignore_case {
            value.eq_ignore_ascii_case(want)
        } else {
            value == want
        }
    }

    /// Whether a generous reading of a path (`path::readings`) is this
    /// route's, or below it, in any case or spelling a backend might take:
    /// such a path must never be proxied.
    pub(crate) fn near(&self, path: &str) -> bool {
        std::iter::once(path)
            .chain(without_front_controller(path))
            .any(|c| {
                self.paths()
                    .any(|p| p.matches_as(c, Spelling::ANY) != PathMatch::No)
            })
            || (self.endpoint && !self.query_match.is_empty() && self.endpoint_in(path))
    }

    /// Whether a parameter named like this (in any reading) is one this
    /// route decides on: `token`, a `query_match` or `passthrough_query` name.
    pub(crate) fn decides_on(&self, p: &crate::route::dialect::Param<'_>) -> bool {
        p.is("token")
            || self.query_match.iter().any(|(k, _)| p.is(k))
            || self.passthrough_query.iter().any(|(k, _)| p.is(k))
    }

    /// Whether the request is the plugin's probe, `passthrough_query`, and
    /// nothing else: any other value (`dryRun=0`, `dryRun=`), a repeated
    /// parameter (in any reading: PHP reads `dryRun%00` and ` dryRun` as
    /// `dryRun`), or a path below the route's (whose segments the platform
    /// may read as parameters too) is a callback like any other.
    pub(crate) fn passes_through(&self, path: &str, query: Option<&str>) -> bool {
        let Some(q) = query else { return false };
        if self.passthrough_query.is_empty() {
            return false;
        }
        let exact = Spelling {
            subpaths: false,
            ..self.spelling
        };
        let own_path = std::iter::once(path)
            .chain(without_front_controller(path))
            .any(|c| {
                self.paths()
                    .any(|p| p.matches_as(c, exact) != PathMatch::No)
            });
        own_path
            && self.passthrough_query.iter().any(|(k, v)| {
                let mut values = crate::route::dialect::params(q, self.dialect)
                    .filter(|p| p.is(k))
                    .map(|p| p.value);
                matches!((values.next(), values.next()), (Some(only), None) if only == v.as_str())
            })
    }

    pub(crate) fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.allow_ips.allows(ip)
    }
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

    fn route(path: &str, aliases: &[&str], spelling: Spelling, query: &[(&str, &str)]) -> Route {
        Route {
            name: "r".into(),
            path: PathPattern::parse(path).expect("path"),
            aliases: aliases
                .iter()
                .map(|a| PathPattern::parse(a).expect("alias"))
                .collect(),
            spelling,
            query_match: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            passthrough_query: vec![("dryRun".into(), "1".into())],
            endpoint: false,
            clean_values: false,
            dialect: Dialect::Php,
            answers: Vec::new(),
            forward_path: None,
            forward_format: ForwardFormat::Original,
            secrets: Vec::new(),
            static_tokens: Vec::new(),
            unverified: true,
            allow_ips: AllowIps::default(),
        }
    }

    #[test]
    fn one_route_covers_every_spelling_of_its_handler() {
        let woo = route(
            "/wc-api/KP_WC_AUTHORIZATION",
            &[],
            Spelling {
                ignore_case: true,
                trailing_slash: true,
                subpaths: false,
                suffix: false,
            },
            &[("wc-api", "KP_WC_AUTHORIZATION")],
        );
        for (path, query) in [
            ("/wc-api/KP_WC_AUTHORIZATION", None),
            ("/wc-api/kp_wc_authorization", None),
            ("/WC-API/kp_wc_authorization/", None),
            ("/", Some("wc-api=KP_WC_AUTHORIZATION")),
            ("/shop/", Some("a=1&wc-api=kp_wc_authorization")),
            ("/", Some("wc%2Dapi=kp%5Fwc%5Fauthorization")),
        ] {
            assert_eq!(
                woo.matches(path, query),
                RouteMatch::Yes(String::new()),
                "{path} {query:?}"
            );
        }
        for (path, query) in [("/wc-api/other", None), ("/", Some("wc-api=other"))] {
            assert_eq!(woo.matches(path, query), RouteMatch::No, "{path} {query:?}");
        }
        let magento = route(
            "/checkout/klarna/authorize",
            &["/index.php/checkout/klarna/authorize"],
            Spelling {
                ignore_case: true,
                trailing_slash: true,
                subpaths: true,
                suffix: false,
            },
            &[],
        );
        for path in [
            "/checkout/klarna/authorize",
            "/checkout/klarna/authorize/",
            "/index.php/checkout/klarna/authorize",
            "/checkout/Klarna/Authorize",
            "/checkout/klarna/authorize/token/abc",
        ] {
            assert_eq!(
                magento.matches(path, None),
                RouteMatch::Yes(String::new()),
                "{path}"
            );
        }
        assert_eq!(
            magento.matches("/checkout/klarna/authorized", None),
            RouteMatch::No
        );
        let probe = "/checkout/klarna/authorize";
        assert!(magento.passes_through(probe, Some("token=x&dryRun=1")));
        assert!(magento.passes_through("/index.php/checkout/klarna/authorize/", Some("dryRun=1")));
        for (path, query) in [
            (probe, Some("token=x")),
            (probe, None),
            (probe, Some("dryRun=0")),
            (probe, Some("dryRun=")),
            (probe, Some("dryRun")),
            (probe, Some("dryRun=1&dryRun=0")),
            (probe, Some("dryRun=true")),
            ("/checkout/klarna/authorize/dryRun/0", Some("dryRun=1")),
        ] {
            assert!(!magento.passes_through(path, query), "{path} {query:?}");
        }
        // As written, a route takes its path and nothing else.
        let plain = route("/k/{reference}/cb", &[], Spelling::default(), &[]);
        assert_eq!(
            plain.matches("/k/c-1/cb", None),
            RouteMatch::Yes("c-1".into())
        );
        for path in ["/K/c-1/cb", "/k/c-1/cb/", "/k/c-1/cb/x"] {
            assert_eq!(plain.matches(path, None), RouteMatch::No, "{path}");
        }
        let ci = route(
            "/k/{reference}/cb",
            &[],
            Spelling {
                ignore_case: true,
                trailing_slash: false,
                subpaths: false,
                suffix: false,
            },
            &[],
        );
        assert_eq!(
            ci.matches("/K/Cart-1/CB", None),
            RouteMatch::Yes("Cart-1".into()),
            "the reference keeps its case"
        );
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
