//! Check 2: `server.public_url` resolves, and a POST to every route's path,
//! each alias included, sent through it reaches this deployment's authback
//! unchanged: a WAF, CDN or ingress that blocks or rewrites POSTs on a
//! callback path is the failure this exists for.
//!
//! A route with `secrets` is probed with a real callback URL minted with
//! its secret, carrying a body that is deliberately not a callback.
//! authback checks the token before the body, so only an authback holding
//! that secret answers it with `400 bad_request` and the body's own
//! complaint; and since the body is refused, nothing is recorded or
//! forwarded. Every other route, and a secret route whose `allow_ips` or
//! rate limit refuses this machine before the token is read, is probed
//! with a one-time nonce from the admin API (`nonce`), which only an
//! authback sharing that API's store answers.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};

use super::client::{self, Answer};
use super::nonce;
use super::report::{nonce as random_hex, Check, STEP};
use super::way::{authback_error, not_authback, through, unreachable_fix, Aim, Way, NAME};
use crate::config::Config;
use crate::net::HostPort;
use crate::route::PathPattern;

/// Long enough for any retry of the doctor, short enough to be worthless
/// if it leaked.
const PROBE_TTL: Duration = Duration::from_secs(300);

/// The reference a probe URL carries on a path with `{reference}`: it
/// shows in authback's log line for the refused callback.
const PROBE_REFERENCE: &str = "doctor-probe";

pub(crate) async fn checks(config: &Config, ca_file: Option<&Path>) -> Vec<Check> {
    let public = &config.server.public_url;
    let parsed = public.parse::<http::Uri>().ok().and_then(|u| {
        let secure = u.scheme_str() == Some("https");
        let base = u.path().trim_end_matches('/').to_string();
        HostPort::of(&u, if secure { 443 } else { 80 }).map(|t| (t, secure, base))
    });
    // Validation refuses such a URL; kept as a failure, never a panic.
    let Some((target, secure, base)) = parsed else {
        return vec![Check::fail(
            "public_url",
            format!("`{public}` has no host"),
            "set server.public_url to the https:// URL Klarna calls",
        )];
    };
    let dns = match resolve(&target).await {
        Ok(ips) => Check::ok("public_url", format!("{} resolves to {ips}", target.host())),
        Err(e) => {
            let fix = format!(
                "publish a DNS record for {} pointing at your load balancer or ingress",
                target.host()
            );
            return vec![
                Check::fail(
                    "public_url",
                    format!("{} does not resolve: {e}", target.host()),
                    &fix,
                ),
                Check::fail(NAME, "not run: public_url's host does not resolve", fix),
            ];
        }
    };
    let tls = match secure.then(|| client::tls(ca_file)).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            let fix = "pass a PEM file of CA certificates";
            return vec![dns, Check::fail(NAME, format!("--ca-file {e}"), fix)];
        }
    };
    let way = Way {
        target,
        scheme: if secure { "https" } else { "http" },
        tls,
        base,
        ca_file: ca_file.is_some(),
    };
    let mut out = vec![dns];
    for aim in aims(config, &way) {
        out.push(probe(config, &way, &aim).await);
    }
    out
}

/// Every route's path and aliases, in the config's order.
fn aims<'a>(config: &'a Config, way: &Way) -> Vec<Aim<'a>> {
    let mut out = Vec::new();
    for (index, route) in config.routes.iter().enumerate() {
        let paths: Vec<&PathPattern> = std::iter::once(&route.path).chain(&route.aliases).collect();
        for p in paths {
            let reference = if p.suffix.is_some() {
                PROBE_REFERENCE
            } else {
                ""
            };
            // A valid reference on a path with `{reference}`, none on one
            // without: always rendered.
            let Some(rendered) = p.render(reference) else {
                continue;
            };
            out.push(Aim {
                index,
                route,
                reference,
                path: format!("{}{rendered}", way.base),
            });
        }
    }
    out
}

/// The host's addresses, as `a, b, c`.
async fn resolve(target: &HostPort) -> Result<String, String> {
    let found = tokio::time::timeout(
        STEP,
        tokio::net::lookup_host((target.host(), target.port())),
    )
    .await
    .map_err(|_| format!("no answer within {}", crate::text::format_duration(STEP)))?
    .map_err(|e| e.to_string())?;
    let mut ips: Vec<IpAddr> = Vec::new();
    for a in found {
        if !ips.contains(&a.ip()) {
            ips.push(a.ip());
        }
    }
    if ips.is_empty() {
        return Err("no addresses".into());
    }
    Ok(ips
        .iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(", "))
}

/// One path's probe: the token's when the route has secrets, the nonce's
/// otherwise, and the nonce's too when authback refused the token's for
/// this machine's address before reading the token.
async fn probe(config: &Config, way: &Way, aim: &Aim<'_>) -> Check {
    if aim.route.secrets.is_empty() {
        return nonce::probe(config, way, aim, None).await;
    }
    match token_probe(config, way, aim).await {
        Token::Done(check) => check,
        Token::NotRead(why) => nonce::probe(config, way, aim, Some(why)).await,
    }
}

/// What the token's probe came to.
enum Token {
    Done(Check),
    /// authback refused this machine's address before reading the token.
    NotRead(String),
}

/// The secrets and the token of a probe, kept only to black them out of
/// anything echoed back.
struct Minted {
    path_and_query: String,
    token: String,
    mac: String,
}

fn mint(config: &Config, aim: &Aim<'_>) -> Option<Minted> {
    let secret = aim.route.secrets.first()?;
    let ttl = PROBE_TTL.min(config.admin.max_url_ttl);
    let exp = crate::types::unix_ms() / 1000 + ttl.as_secs().max(1);
    let token = crate::callback::token::mint(secret, &aim.route.name, aim.reference, exp);
    let mac = token.rsplit('.').next().unwrap_or_default().to_string();
    Some(Minted {
        path_and_query: format!("{}?token={token}", aim.path),
        token,
        mac,
    })
}

async fn token_probe(config: &Config, way: &Way, aim: &Aim<'_>) -> Token {
    let Some(minted) = mint(config, aim) else {
        return Token::NotRead("the route has no secret".into());
    };
    let shown = way.shown(&aim.path);
    let body = format!(r#"{{"authback_doctor_probe":"{}"}}"#, random_hex(8));
    // What authback says to this body, from the very function it uses.
    let expected = crate::callback::parse_body(&Bytes::from(body.clone())).err();
    let target = &way.target;
    let mut req = client::request(target, Method::POST, &minted.path_and_query, body.into());
    req.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    match client::send(target, way.tls.as_ref(), STEP, req).await {
        Ok(answer) => verdict(&answer, aim, way, &minted, expected),
        Err(e) => Token::Done(Check::fail(
            NAME,
            format!("{shown}: {e}"),
            unreachable_fix(&e, way),
        )),
    }
}

/// What the answer to the token's probe says about the way from the
/// internet to authback.
fn verdict(
    answer: &Answer,
    aim: &Aim<'_>,
    way: &Way,
    minted: &Minted,
    expected: Option<&'static str>,
) -> Token {
    let (path, shown) = (&aim.path, way.shown(&aim.path));
    let hide = [minted.token.as_str(), minted.mac.as_str()];
    let Some((code, message)) = authback_error(answer) else {
        return Token::Done(not_authback(answer, &shown, path, &hide));
    };
    let index = aim.index;
    // Shown, so blacked out like any other text that came back.
    let (code, message) = (
        client::excerpt(code.as_bytes(), &hide),
        client::excerpt(message.as_bytes(), &hide),
    );
    Token::Done(match (answer.status, code.as_str()) {
        (StatusCode::BAD_REQUEST, "bad_request") if expected == Some(message.as_str()) => {
            let extra = if way.ca_file {
                "; certificate checked with --ca-file too, but Klarna trusts only public CAs"
            } else {
                ""
            };
            Check::ok(
                NAME,
                format!(
                    "{shown} reached an authback with this route's secret (route `{}`: 400 bad_request as meant, nothing recorded or forwarded{extra})",
                    aim.route.name
                ),
            )
        }
        (StatusCode::FORBIDDEN, "forbidden") => {
            return Token::NotRead(format!(
                "routes[{index}].allow_ips refuses this machine's address"
            ))
        }
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited") => {
            return Token::NotRead(
                "authback rate-limits this machine's address (limits.callback_per_ip or failed_token_per_ip)".into(),
            )
        }
        (StatusCode::UNAUTHORIZED, _) => Check::fail(
            NAME,
            format!("{shown} reached an authback that refuses this route's token (401 {code}: {message})"),
            format!(
                "give every authback behind server.public_url the routes[{index}].secrets of this config; \"expired\" means this machine's or that one's clock is off"
            ),
        ),
        (status, _) => Check::fail(
            NAME,
            format!("{shown} reached an authback that answered {status} {code}: {message}; something changed the request on the way"),
            through(path),
        ),
    })
}
