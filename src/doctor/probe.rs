//! Check 2: `server.public_url` resolves, and a POST to a callback URL sent
//! through it reaches authback unchanged: a WAF, CDN or ingress that blocks
//! or rewrites POSTs on the callback path is the failure this exists for.
//!
//! The probe is a real callback URL minted with the route's secret, carrying
//! a body that is deliberately not a callback. authback checks the token
//! before the body, so only an authback holding that secret answers it with
//! `400 bad_request` and the body's own complaint; and since the body is
//! refused, nothing is recorded or forwarded. No server change is needed,
//! but nor can the answer tell this process from another deployment with
//! the same secret.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};

use super::client::{self, Answer, Failure};
use super::report::{nonce, Check, STEP};
use crate::config::Config;
use crate::net::HostPort;

/// Long enough for any retry of the doctor, short enough to be worthless
/// if it leaked.
const PROBE_TTL: Duration = Duration::from_secs(300);

/// The reference a probe URL is minted for: it shows in authback's log
/// line for the refused callback.
const PROBE_REFERENCE: &str = "doctor-probe";

pub(crate) async fn checks(config: &Config, ca_file: Option<&Path>) -> Vec<Check> {
    let public = &config.server.public_url;
    let parsed = public.parse::<http::Uri>().ok().and_then(|u| {
        let secure = u.scheme_str() == Some("https");
        HostPort::of(&u, if secure { 443 } else { 80 }).map(|t| (t, secure))
    });
    // Validation refuses such a URL; kept as a failure, never a panic.
    let Some((target, secure)) = parsed else {
        return vec![Check::fail(
            "public_url",
            format!("`{public}` has no host"),
            "set server.public_url to the https:// URL Klarna calls",
        )];
    };
    let dns = match resolve(&target).await {
        Ok(ips) => Check::ok("public_url", format!("{} resolves to {ips}", target.host())),
        Err(e) => {
            return vec![
                Check::fail(
                    "public_url",
                    format!("{} does not resolve: {e}", target.host()),
                    format!(
                        "publish a DNS record for {} pointing at your load balancer or ingress",
                        target.host()
                    ),
                ),
                Check::skip("probe", "public_url's host does not resolve"),
            ];
        }
    };
    vec![dns, probe(config, &target, secure, ca_file).await]
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

/// The route a probe goes to, and its minted URL's parts.
struct Aim {
    index: usize,
    route: String,
    path: String,
    path_and_query: String,
    /// Kept only to black them out of anything echoed back.
    token: String,
    mac: String,
}

/// The first route with secrets, and a probe URL minted for it; or the
/// check's answer when there is none.
fn aim(config: &Config) -> Result<Aim, Check> {
    let Some((index, route)) = config
        .routes
        .iter()
        .enumerate()
        .find(|(_, r)| !r.secrets.is_empty())
    else {
        return Err(Check::skip(
            NAME,
            "no route has secrets: a probe needs a token authback verifies (static_tokens and unverified routes are the merchant's own)",
        ));
    };
    let reference = if route.path.suffix.is_some() {
        PROBE_REFERENCE
    } else {
        ""
    };
    let ttl = PROBE_TTL.min(config.admin.max_url_ttl);
    let now = crate::types::unix_ms() / 1000;
    let url = match crate::callback::mint::for_route(config, &route.name, reference, ttl, now) {
        Ok((url, _)) => url,
        Err(e) => {
            return Err(Check::fail(
                NAME,
                format!("cannot mint a probe URL for route `{}`: {e}", route.name),
                "fix the route in the config",
            ))
        }
    };
    let Ok(url) = url.parse::<http::Uri>() else {
        return Err(Check::fail(
            NAME,
            format!("the probe URL for route `{}` is not a URL", route.name),
            "check server.public_url",
        ));
    };
    let path = url.path().to_string();
    let path_and_query = url
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_string());
    let token = url
        .query()
        .and_then(|q| crate::text::query_param(q, "token"))
        .unwrap_or_default();
    let mac = token.rsplit('.').next().unwrap_or_default().to_string();
    Ok(Aim {
        index,
        route: route.name.clone(),
        path,
        path_and_query,
        token,
        mac,
    })
}

const NAME: &str = "probe";

async fn probe(config: &Config, target: &HostPort, secure: bool, ca_file: Option<&Path>) -> Check {
    let aim = match aim(config) {
        Ok(aim) => aim,
        Err(check) => return check,
    };
    let scheme = if secure { "https" } else { "http" };
    let shown = format!("POST {scheme}://{}{}", target.header(), aim.path);

    let tls = if secure {
        match client::tls(ca_file) {
            Ok(t) => Some(t),
            Err(e) => {
                return Check::fail(
                    NAME,
                    format!("--ca-file {e}"),
                    "pass a PEM file of CA certificates",
                )
            }
        }
    } else {
        None
    };
    let body = format!(r#"{{"authback_doctor_probe":"{}"}}"#, nonce(8));
    // What authback says to this body, from the very function it uses.
    let expected = crate::callback::parse_body(&Bytes::from(body.clone())).err();
    let mut req = client::request(target, Method::POST, &aim.path_and_query, Bytes::from(body));
    req.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let answer = match client::send(target, tls.as_ref(), STEP, req).await {
        Ok(a) => a,
        Err(e) => {
            let fix = unreachable_fix(&e, target, scheme);
            return Check::fail(NAME, format!("{shown}: {e}"), fix);
        }
    };
    verdict(&answer, &aim, &shown, expected, ca_file)
}

/// What to do when the probe got no HTTP answer.
fn unreachable_fix(e: &Failure, target: &HostPort, scheme: &str) -> String {
    match e {
        Failure::Tls(_) => format!(
            "serve a certificate for {} from a public CA (Klarna trusts no other); for a private or test CA here, pass --ca-file",
            target.host()
        ),
        Failure::Connect(_) | Failure::Timeout("connection", _) => format!(
            "open {}:{} to the internet and route it to authback (firewall, load balancer, Service)",
            target.host(),
            target.port()
        ),
        Failure::Timeout("TLS handshake", _) => format!(
            "serve HTTPS on {}:{}: something there accepts connections but does not speak TLS",
            target.host(),
            target.port()
        ),
        Failure::Http(_) | Failure::Timeout(..) => format!(
            "make {scheme}://{} forward requests to authback: it accepted the request but gave no answer",
            target.header()
        ),
    }
}

/// What the answer says about the way from the internet to authback.
fn verdict(
    answer: &Answer,
    aim: &Aim,
    shown: &str,
    expected: Option<&'static str>,
    ca_file: Option<&Path>,
) -> Check {
    let path = &aim.path;
    let through = format!(
        "allow POST to {path} through your WAF/CDN/ingress, unchanged; see docs/operations.md"
    );
    let hide = [aim.token.as_str(), aim.mac.as_str()];
    let Some((code, message)) = authback_error(answer) else {
        let location = answer
            .header(header::LOCATION)
            .map(|l| format!(" to {}", client::excerpt(l.as_bytes(), &hide)))
            .unwrap_or_default();
        return Check::fail(
            NAME,
            format!(
                "{shown} answered {}{location}, not authback: \"{}\"",
                answer.status,
                client::excerpt(&answer.body, &hide)
            ),
            through,
        );
    };
    let index = aim.index;
    let secrets = format!("routes[{index}].secrets");
    // Shown, so blacked out like any other text that came back.
    let (code, message) = (
        client::excerpt(code.as_bytes(), &hide),
        client::excerpt(message.as_bytes(), &hide),
    );
    match (answer.status, code.as_str()) {
        (StatusCode::BAD_REQUEST, "bad_request") if expected == Some(message.as_str()) => {
            let extra = if ca_file.is_some() {
                "; certificate checked with --ca-file too, but Klarna trusts only public CAs"
            } else {
                ""
            };
            Check::ok(
                NAME,
                format!(
                    "{shown} reached an authback with this route's secret (route `{}`: 400 bad_request as meant, nothing recorded or forwarded{extra})",
                    aim.route
                ),
            )
        }
        (StatusCode::FORBIDDEN, "forbidden") => Check::skip(
            NAME,
            format!(
                "{shown} reached an authback, but routes[{index}].allow_ips refuses this machine's address, so the token was not checked; run doctor from an allowed address"
            ),
        ),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited") => Check::skip(
            NAME,
            format!(
                "{shown} reached an authback, but it rate-limits this machine's address (limits.callback_per_ip or failed_token_per_ip), so the token was not checked; retry in a minute"
            ),
        ),
        (StatusCode::UNAUTHORIZED, _) => Check::fail(
            NAME,
            format!("{shown} reached an authback that refuses this route's token (401 {code}: {message})"),
            format!(
                "give every authback behind server.public_url the {secrets} of this config; \"expired\" means this machine's or that one's clock is off"
            ),
        ),
        (status, _) => Check::fail(
            NAME,
            format!("{shown} reached an authback that answered {status} {code}: {message}; something changed the request on the way"),
            through,
        ),
    }
}

/// `(error, message)` when the answer is one of authback's JSON errors.
fn authback_error(answer: &Answer) -> Option<(String, String)> {
    let json = answer
        .header(header::CONTENT_TYPE)
        .is_some_and(|t| t.starts_with("application/json"));
    if !json {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
    let obj = v.as_object()?;
    if obj.len() != 2 {
        return None;
    }
    let field = |k: &str| obj.get(k).and_then(|s| s.as_str()).map(String::from);
    Some((field("error")?, field("message")?))
}
