//! The nonce's probe: a one-time nonce from the admin API (`POST
//! /v1/probes` at `admin.listen`, with `admin.token`), sent in
//! `Authback-Probe` on a POST to a route's path through `public_url`. Only
//! an authback whose store holds the nonce answers it, with `200` naming
//! the deployment, the replica and the route: a WAF's page, a CDN's, a
//! stale deployment or one that does not share the store cannot. Nothing
//! is recorded, forwarded or counted as a callback; the nonce is used up.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use serde_json::{Map, Value};

use super::client::{self, Answer};
use super::report::{nonce as random_hex, Check, STEP};
use super::way::{authback_error, json_object, not_authback, unreachable_fix, Aim, Way, NAME};
use crate::config::Config;
use crate::net::HostPort;
use crate::store::ProbeNonce;

/// Probes `aim` with a fresh nonce. `not_read` says why the token's probe
/// of the same path could not be judged, when it came first.
pub(super) async fn probe(
    config: &Config,
    way: &Way,
    aim: &Aim<'_>,
    not_read: Option<String>,
) -> Check {
    let shown = way.shown(&aim.path);
    let nonce = match fetch(config).await {
        Ok(n) => n,
        Err((detail, fix)) => return Check::fail(NAME, format!("{shown} not sent: {detail}"), fix),
    };
    let body = format!(r#"{{"authback_doctor_probe":"{}"}}"#, random_hex(8));
    let mut req = client::request(&way.target, Method::POST, &aim.path, Bytes::from(body));
    let headers = req.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&nonce) {
        headers.insert(crate::callback::probe::HEADER, v);
    }
    match client::send(&way.target, way.tls.as_ref(), STEP, req).await {
        Ok(answer) => verdict(&answer, way, aim, &nonce, not_read),
        Err(e) => Check::fail(NAME, format!("{shown}: {e}"), unreachable_fix(&e, way)),
    }
}

/// The admin API of the authback `config` describes: `admin.listen`, on
/// loopback when it listens on every address.
fn admin_api(config: &Config) -> (Option<HostPort>, String) {
    let listen = config.admin.listen;
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(v6) if v6.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let api = format!("http://{}", SocketAddr::new(ip, listen.port()));
    let target = api
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| HostPort::of(&u, 80));
    (target, api)
}

/// A fresh nonce from the admin API, or what went wrong and its fix.
async fn fetch(config: &Config) -> Result<String, (String, String)> {
    let (Some(target), api) = admin_api(config) else {
        return Err((
            "admin.listen is not an address".into(),
            "set admin.listen".into(),
        ));
    };
    let mut req = client::request(&target, Method::POST, "/v1/probes", Bytes::new());
    let token = config.admin.token.as_ref().map(|t| t.expose().to_vec());
    if let Some(t) = &token {
        let bearer = [b"Bearer ".as_slice(), t].concat();
        let Ok(mut v) = HeaderValue::from_bytes(&bearer) else {
            let fix = "set admin.token to printable ASCII";
            return Err(("admin.token cannot be sent in a header".into(), fix.into()));
        };
        v.set_sensitive(true);
        req.headers_mut().insert(header::AUTHORIZATION, v);
    }
    let answer = client::send(&target, None, STEP, req).await.map_err(|e| {
        (
            format!("cannot get a probe nonce from the admin API at {api}: {e}"),
            "start authback, or run doctor where it runs, with its config: the nonce comes from the admin API at admin.listen".to_string(),
        )
    })?;
    let secret = token
        .as_deref()
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_default();
    let said = client::excerpt(&answer.body, &[&secret]);
    let status = answer.status;
    let fail = |fix: &str| {
        Err((
            format!("the admin API at {api} answered {status}: {said}"),
            fix.to_string(),
        ))
    };
    match status {
        StatusCode::OK => json_object(&answer)
            .and_then(|o| o.get("nonce")?.as_str().map(String::from))
            .filter(|n| ProbeNonce::parse(n).is_some())
            .map_or_else(|| fail("point admin.listen at authback's admin API"), Ok),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            fail("set admin.token (here env:AUTHBACK_ADMIN_TOKEN or file:) to the running authback's admin token")
        }
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            fail("upgrade the authback at admin.listen: it has no POST /v1/probes")
        }
        _ => fail("check GET /readyz/store on the admin API: the nonce is kept in the store"),
    }
}

/// What the answer to the nonce's probe says.
fn verdict(
    answer: &Answer,
    way: &Way,
    aim: &Aim<'_>,
    nonce: &str,
    not_read: Option<String>,
) -> Check {
    let shown = way.shown(&aim.path);
    let hide = [nonce];
    if answer.status == StatusCode::OK {
        let probe = json_object(answer)
            .filter(|o| o.get("authback").and_then(Value::as_str) == Some("probe"));
        if let Some(obj) = probe {
            return answered(&obj, way, aim, &hide, not_read);
        }
    }
    let Some((code, message)) = authback_error(answer) else {
        return not_authback(answer, &shown, &aim.path, &hide);
    };
    Check::fail(
        NAME,
        format!(
            "{shown} reached an authback that did not take the probe's nonce ({} {}: {}), so it does not share the store of the admin API at admin.listen",
            answer.status.as_u16(),
            client::excerpt(code.as_bytes(), &hide),
            client::excerpt(message.as_bytes(), &hide),
        ),
        "run doctor with the config of the authback behind server.public_url: its admin.listen must reach a replica sharing that one's store (file: the same process; redis: the same store.url and key_prefix); an authback older than probe nonces ignores the header, so upgrade it",
    )
}

/// The probe's own answer: this deployment's authback, on this route.
fn answered(
    obj: &Map<String, Value>,
    way: &Way,
    aim: &Aim<'_>,
    hide: &[&str],
    not_read: Option<String>,
) -> Check {
    let shown = way.shown(&aim.path);
    let field = |k: &str| {
        let v = obj.get(k).and_then(Value::as_str).unwrap_or("");
        client::excerpt(v.as_bytes(), hide)
    };
    let (deployment, replica, route) = (field("deployment"), field("replica"), field("route"));
    let expected = way.target.header();
    if !deployment.eq_ignore_ascii_case(&expected) {
        return Check::fail(
            NAME,
            format!("{shown} reached authback replica `{replica}`, whose public_url is `{deployment}`, not `{expected}`"),
            "deploy this config to every replica behind server.public_url: that one runs another",
        );
    }
    if route != aim.route.name {
        return Check::fail(
            NAME,
            format!(
                "{shown} reached authback replica `{replica}`, which takes the path as route `{route}`, not `{}`",
                aim.route.name
            ),
            "deploy this config to every replica behind server.public_url: that one runs other routes",
        );
    }
    let mut extra = String::new();
    if let Some(why) = not_read {
        extra.push_str(&format!("; the token was not checked: {why}"));
    }
    if way.ca_file {
        extra.push_str(
            "; certificate checked with --ca-file too, but Klarna trusts only public CAs",
        );
    }
    Check::ok(
        NAME,
        format!(
            "{shown} reached this deployment's authback (replica `{replica}`, route `{route}`: probe nonce taken, nothing recorded or forwarded{extra})"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\npublic_url = \"https://shop.example.com\"\n[server.tls]\nself_signed = true\n[upstream]\nurl = \"http://127.0.0.1:8080\"\n[[routes]]\nname = \"shop\"\nkind = \"klarna_authorization\"\npath = \"/cb\"\nforward_format = \"original\"\nunverified = true\n";
        Config::parse(text, &std::env::temp_dir()).expect("config")
    }

    fn way() -> Way {
        let uri = http::Uri::from_static("https://shop.example.com");
        Way {
            target: HostPort::of(&uri, 443).expect("host"),
            scheme: "https",
            tls: None,
            base: String::new(),
            ca_file: false,
        }
    }

    fn answer(deployment: &str, replica: &str, route: &str) -> Map<String, Value> {
        let v = serde_json::json!({
            "authback": "probe", "deployment": deployment, "replica": replica, "route": route,
        });
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn only_this_deployments_answer_on_this_route_passes() {
        let config = config();
        let way = way();
        let aim = Aim {
            index: 0,
            route: &config.routes[0],
            reference: "",
            path: "/cb".into(),
        };
        let hide = ["0123456789abcdef0123456789abcdef"];
        let ok = answered(
            &answer("shop.example.com", "pod-1/7", "shop"),
            &way,
            &aim,
            &hide,
            None,
        );
        assert_eq!(ok.status, super::super::Status::Ok, "{}", ok.detail);
        assert!(
            ok.detail.contains("replica `pod-1/7`, route `shop`"),
            "{}",
            ok.detail
        );
        let noted = answered(
            &answer("SHOP.example.com", "pod-1/7", "shop"),
            &way,
            &aim,
            &hide,
            Some("routes[0].allow_ips refuses this machine's address".into()),
        );
        assert!(noted
            .detail
            .contains("the token was not checked: routes[0].allow_ips"));
        let stale = answered(
            &answer("old.example.com", "pod-2/9", "shop"),
            &way,
            &aim,
            &hide,
            None,
        );
        assert_eq!(stale.status, super::super::Status::Fail);
        assert!(
            stale
                .detail
                .contains("whose public_url is `old.example.com`"),
            "{}",
            stale.detail
        );
        let other = answered(
            &answer("shop.example.com", "pod-2/9", "legacy"),
            &way,
            &aim,
            &hide,
            None,
        );
        assert_eq!(other.status, super::super::Status::Fail);
        assert!(
            other.detail.contains("as route `legacy`, not `shop`"),
            "{}",
            other.detail
        );
        // What came over the network is shown on one line, nonce blacked out.
        let forged = answered(
            &answer(
                "shop.example.com",
                "a\nok    probe 0123456789abcdef0123456789abcdef",
                "shop",
            ),
            &way,
            &aim,
            &hide,
            None,
        );
        assert!(
            !forged.detail.contains('\n') && !forged.detail.contains(hide[0]),
            "{}",
            forged.detail
        );
    }
}
