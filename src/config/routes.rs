//! The `[[routes]]` section's checks: each route's name, kind, paths and
//! their other spellings, forwarding, tokens, address fences, and its
//! reading of the backend's answers.

use std::collections::HashSet;

use super::checker::Checker;
use super::file::FileRoute;
use crate::config::model::*;
use crate::net::IpNet;
use crate::route::dialect::Dialect;
use crate::route::{valid_reference, AnswerRule, Means, Spelling};
use crate::route::{AllowIps, ForwardFormat, PathPattern, Route};
use crate::types::Secret;

/// `signed`: deliveries carry a signature (`upstream.signing_secret` is set).
pub(super) fn routes(
    c: &mut Checker,
    file_routes: Vec<FileRoute>,
    signed: bool,
    dialect: Dialect,
    ip_sets: &[IpSetSource],
) -> (Vec<Route>, Vec<&'static str>) {
    let mut routes = Vec::new();
    let mut builtin = Vec::new();
    let mut names = HashSet::new();
    if file_routes.is_empty() {
        c.warnings
            .push("no [[routes]]: authback only proxies".into());
    }
    for (i, r) in file_routes.into_iter().enumerate() {
        let name = name(c, &mut names, i, &r);
        kind(c, i, &r);
        let path = path(c, i, &r);
        let forward_format = forwarding(c, i, &r);
        let (secrets, static_tokens) = tokens(c, i, &r, forward_format, signed);
        let allow_ips = allow_ips(c, i, &r, ip_sets, &mut builtin);
        let matching = route_matching(c, &r, i, &path, forward_format);
        routes.push(Route {
            name,
            path,
            aliases: matching.aliases,
            spelling: Spelling {
                ignore_case: r.ignore_case,
                trailing_slash: r.trailing_slash || dialect == Dialect::Spring,
                subpaths: r.subpaths,
                // Spring MVC before 5.3 matches `.ext` suffixes and, before
                // 6, a trailing slash.
                suffix: dialect == Dialect::Spring,
            },
            query_match: matching.query_match,
            passthrough_query: matching.passthrough_query,
            endpoint: r.endpoint,
            clean_values: r.clean_values,
            dialect,
            answers: matching.answers,
            forward_path: r.forward_path,
            forward_format,
            secrets,
            static_tokens,
            unverified: r.unverified,
            allow_ips,
        });
    }
    no_shared_paths(c, &routes);
    (routes, builtin)
}

fn name(c: &mut Checker, names: &mut HashSet<String>, i: usize, r: &FileRoute) -> String {
    let name = r.name.clone().unwrap_or_default();
    let key = format!("routes[{i}].name");
    if name.is_empty() {
        c.err(key, "is required");
    } else if !valid_reference(&name) || name.len() > 64 {
        c.err(key, "use 1 to 64 characters of A-Z a-z 0-9 . _ ~ -");
    } else if !names.insert(name.clone()) {
        c.err(key, format!("`{name}` is used by another route"));
    }
    name
}

fn kind(c: &mut Checker, i: usize, r: &FileRoute) {
    let key = format!("routes[{i}].kind");
    match r.kind.as_deref() {
        Some("klarna_authorization") => {}
        None => c.err(key, "is required (\"klarna_authorization\")"),
        Some(other) => c.err(
            key,
            format!("`{other}` is not a route kind (\"klarna_authorization\")"),
        ),
    }
}

fn path(c: &mut Checker, i: usize, r: &FileRoute) -> PathPattern {
    let key = format!("routes[{i}].path");
    let root = || PathPattern {
        prefix: "/".into(),
        suffix: None,
    };
    match r.path.as_deref() {
        None => {
            c.err(
                key,
                "is required, e.g. \"/klarna/authorization/{reference}\"",
            );
            root()
        }
        Some(p) => PathPattern::parse(p).unwrap_or_else(|e| {
            c.err(key, format!("`{p}`: {e}"));
            root()
        }),
    }
}

/// `forward_format`, and a `forward_path` where it needs one.
fn forwarding(c: &mut Checker, i: usize, r: &FileRoute) -> ForwardFormat {
    let key = |k: &str| format!("routes[{i}].{k}");
    let forward_format = match r.forward_format.as_deref().unwrap_or("json") {
        "json" => ForwardFormat::Json,
        "form" => ForwardFormat::Form,
        "original" => ForwardFormat::Original,
        other => {
            c.err(
                key("forward_format"),
                format!("`{other}` is not one of \"json\", \"form\", \"original\""),
            );
            ForwardFormat::Json
        }
    };
    if let Some(fp) = &r.forward_path {
        if !fp.starts_with('/') {
            c.err(key("forward_path"), "must start with `/`");
        } else if fp.parse::<http::uri::PathAndQuery>().is_err() {
            c.err(key("forward_path"), "is not a valid path");
        }
    } else if forward_format != ForwardFormat::Original {
        c.err(
            key("forward_path"),
            "is required unless forward_format = \"original\"",
        );
    }
    forward_format
}

/// The route's `secrets` and `static_tokens`, or why it has none.
fn tokens(
    c: &mut Checker,
    i: usize,
    r: &FileRoute,
    forward_format: ForwardFormat,
    signed: bool,
) -> (Vec<Secret>, Vec<Secret>) {
    let key = |k: &str| format!("routes[{i}].{k}");
    let secrets: Vec<Secret> = r
        .secrets
        .iter()
        .enumerate()
        .filter_map(|(j, s)| c.secret(&format!("routes[{i}].secrets[{j}]"), s))
        .collect();
    for (j, s) in secrets.iter().enumerate() {
        if s.expose().len() < 16 {
            c.warnings.push(format!(
                "routes[{i}].secrets[{j}]: shorter than 16 bytes; use a long random secret (e.g. `openssl rand -hex 32`)"
            ));
        }
    }
    let static_tokens: Vec<Secret> = r
        .static_tokens
        .iter()
        .enumerate()
        .filter_map(|(j, s)| c.secret(&format!("routes[{i}].static_tokens[{j}]"), s))
        .collect();
    if r.unverified {
        if forward_format != ForwardFormat::Original {
            c.err(key("unverified"), "is allowed only with forward_format = \"original\", where the backend checks its own token");
        }
        if !r.secrets.is_empty() || !r.static_tokens.is_empty() {
            c.err(
                key("unverified"),
                "cannot be combined with secrets or static_tokens",
            );
        }
    } else if r.secrets.is_empty() && r.static_tokens.is_empty() {
        c.err(key("secrets"), "a route needs secrets or static_tokens (or unverified = true with forward_format = \"original\")");
    }
    if r.unverified && r.allow_ips.is_empty() {
        c.warnings.push(format!(
            "routes[{i}]: unverified with no allow_ips, so anyone can send it callbacks; set allow_ips = [\"klarna-production\"]"
        ));
    }
    if forward_format != ForwardFormat::Original && !signed {
        c.warnings.push(format!(
            "routes[{i}]: forward_format = \"{}\" with no upstream.signing_secret, so the backend cannot tell authback's deliveries from forged ones; set upstream.signing_secret",
            r.forward_format.as_deref().unwrap_or("json")
        ));
    }
    (secrets, static_tokens)
}

/// `allow_ips`: CIDRs, `[ip_sets]` names, or the names of Klarna's
/// built-in lists (which an `[ip_sets]` entry of the same name replaces).
fn allow_ips(
    c: &mut Checker,
    i: usize,
    r: &FileRoute,
    ip_sets: &[IpSetSource],
    builtin: &mut Vec<&'static str>,
) -> AllowIps {
    let mut allow = AllowIps::default();
    for (j, a) in r.allow_ips.iter().enumerate() {
        if let Some(s) = ip_sets.iter().find(|s| s.set.name() == a) {
            allow.sets.push(s.set.clone());
        } else if let Some((name, list)) = KLARNA_IP_LISTS.iter().find(|(n, _)| n == a) {
            allow
                .nets
                .extend(list.iter().filter_map(|ip| ip.parse::<IpNet>().ok()));
            if !builtin.contains(name) {
                builtin.push(name);
            }
        } else {
            match a.parse::<IpNet>() {
                Ok(n) => allow.nets.push(n),
                Err(e) => c.err(
                    format!("routes[{i}].allow_ips[{j}]"),
                    format!("{e}; or an [ip_sets] name, or one of \"klarna-production\", \"klarna-playground\""),
                ),
            }
        }
    }
    allow
}

/// No two routes share a path or an alias.
fn no_shared_paths(c: &mut Checker, routes: &[Route]) {
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[..i] {
            let theirs: Vec<&PathPattern> = std::iter::once(&b.path).chain(&b.aliases).collect();
            if let Some(p) = std::iter::once(&a.path)
                .chain(&a.aliases)
                .find(|p| theirs.contains(p))
            {
                c.err(
                    format!("routes[{i}].path"),
                    format!("`{p}` is also a path of route `{}`", b.name),
                );
            }
        }
    }
}

/// A route's other spellings and its reading of the backend's answers.
struct Matching {
    aliases: Vec<PathPattern>,
    query_match: Vec<(String, String)>,
    passthrough_query: Vec<(String, String)>,
    answers: Vec<AnswerRule>,
}

fn route_matching(
    c: &mut Checker,
    r: &FileRoute,
    i: usize,
    path: &PathPattern,
    format: ForwardFormat,
) -> Matching {
    let key = |k: &str| format!("routes[{i}].{k}");
    let mut aliases = Vec::new();
    for (j, a) in r.aliases.iter().enumerate() {
        match PathPattern::parse(a) {
            Ok(p) => aliases.push(p),
            Err(e) => c.err(format!("routes[{i}].aliases[{j}]"), format!("`{a}`: {e}")),
        }
    }
    let query_match = name_values(
        c,
        &r.query_match,
        &key("query_match"),
        "wc-api=KP_WC_AUTHORIZATION",
    );
    if (r.endpoint || r.clean_values) && query_match.is_empty() {
        c.err(
            key(if r.endpoint {
                "endpoint"
            } else {
                "clean_values"
            }),
            "applies to query_match, which this route does not have",
        );
    }
    if path.prefix == "/" && path.suffix.is_none() {
        c.err(
            key("path"),
            "`/` would take every request as this route's; use the callback's own path",
        );
    }
    if !query_match.is_empty() && path.suffix.is_some() {
        c.err(
            key("query_match"),
            "a query match carries no reference: use a path without {reference}",
        );
    }
    if !r.passthrough_query.is_empty() && format != ForwardFormat::Original {
        c.err(
            key("passthrough_query"),
            "is allowed only with forward_format = \"original\", where the path is the backend's own",
        );
    }
    let passthrough_query = name_values(
        c,
        &r.passthrough_query,
        &key("passthrough_query"),
        "dryRun=1",
    );
    let answers = answers(c, r, i);
    Matching {
        aliases,
        query_match,
        passthrough_query,
        answers,
    }
}

/// `answers`: how the backend's answers are read.
fn answers(c: &mut Checker, r: &FileRoute, i: usize) -> Vec<AnswerRule> {
    let mut answers = Vec::new();
    for (j, a) in r.answers.iter().enumerate() {
        let k = |f: &str| format!("routes[{i}].answers[{j}].{f}");
        let status = match a.status {
            Some(s) if (100..=599).contains(&s) => s as u16,
            Some(_) => {
                c.err(k("status"), "must be an HTTP status, 100 to 599");
                continue;
            }
            None => {
                c.err(k("status"), "is required");
                continue;
            }
        };
        let means = match a.means.as_deref() {
            Some("delivered") => Means::Delivered,
            Some("retry") => Means::Retry,
            Some("dead") => Means::Dead,
            other => {
                c.err(
                    k("means"),
                    format!(
                        "{} is not one of \"delivered\", \"retry\", \"dead\"",
                        other.map_or("nothing".into(), |o| format!("`{o}`"))
                    ),
                );
                continue;
            }
        };
        if a.body_contains.as_deref() == Some("") {
            c.err(
                k("body_contains"),
                "must not be empty (leave it out to match any body)",
            );
        }
        answers.push(AnswerRule {
            status,
            body_contains: a.body_contains.clone(),
            means,
        });
    }
    answers
}

/// A list of `name=value` pairs, each checked.
fn name_values(
    c: &mut Checker,
    list: &[String],
    key: &str,
    example: &str,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (j, q) in list.iter().enumerate() {
        match q.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                out.push((k.to_string(), v.to_string()))
            }
            _ => c.err(
                format!("{key}[{j}]"),
                format!("`{q}` is not name=value, e.g. \"{example}\""),
            ),
        }
    }
    out
}
