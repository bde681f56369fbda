//! Checks 4 and 5, with `[klarna]` only: the credentials work (Read Session
//! of a made-up session is 404 with good credentials, 401/403 with bad
//! ones), and the local clock agrees with Klarna's `Date` header. Without
//! `[klarna]` both are skipped; with it, one that cannot be run fails.

use bytes::Bytes;
use http::header;

use super::client;
use super::report::{nonce, Check, STEP};
use crate::config::{Config, KlarnaConfig};
use crate::klarna::client::{ReadError, ReadSessionClient, SessionState};
use crate::net::HostPort;
use crate::types::SessionId;

/// More apart than this and token expiries and logs disagree with Klarna.
const MAX_SKEW_SECS: u64 = 30;

pub(crate) async fn checks(config: &Config) -> Vec<Check> {
    let Some(k) = &config.klarna else {
        return vec![
            Check::skip("klarna", "no [klarna] section"),
            Check::skip("clock", "no [klarna] section to compare with"),
        ];
    };
    let (credentials, clock) = tokio::join!(credentials(k), clock(k));
    vec![credentials, clock]
}

async fn credentials(k: &KlarnaConfig) -> Check {
    const NAME: &str = "klarna";
    let client = match ReadSessionClient::new(k) {
        Ok(c) => c,
        Err(e) => return Check::fail(NAME, e, "complete the [klarna] section"),
    };
    // Unlike any real session id, so Klarna can only answer 404 or refuse.
    let session = SessionId::new(format!("authback-doctor-{}", nonce(8)));
    let api = &k.api_url;
    // The client has its own `klarna.timeout`; this bounds it however set.
    let read = match tokio::time::timeout(STEP, client.read_session(&session)).await {
        Ok(r) => r,
        Err(_) => Err(ReadError::Timeout(STEP)),
    };
    let region = "check klarna.username and klarna.password, and that klarna.api_url is the region and environment (playground or production) they belong to";
    match read {
        Ok(SessionState::NotFound) => Check::ok(
            NAME,
            format!("{api} accepts the credentials (Read Session of a made-up session: 404)"),
        ),
        Ok(other) => Check::fail(
            NAME,
            format!("{api} answered a made-up session with a session ({other:?})"),
            "check that klarna.api_url is Klarna's API",
        ),
        Err(ReadError::Auth(status)) => Check::fail(
            NAME,
            format!("{api} refused the credentials ({status})"),
            region,
        ),
        Err(e @ (ReadError::Connect(_) | ReadError::Timeout(_))) => Check::fail(
            NAME,
            format!("{api}: {e}"),
            "check klarna.api_url and that this host may reach it (egress firewall, proxy, klarna.ca_file)",
        ),
        Err(e) => Check::fail(
            NAME,
            format!("{api}: {e}"),
            "check klarna.api_url; retry later if Klarna is rate-limiting or failing",
        ),
    }
}

/// Klarna's `Date` against the local clock, from an unauthenticated `GET`
/// of the API's root: the Read Session client does not expose headers, and
/// the credentials need not travel twice.
async fn clock(k: &KlarnaConfig) -> Check {
    const NAME: &str = "clock";
    let Some(target) = k
        .api_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| HostPort::of(&u, 443))
    else {
        return Check::fail(NAME, "klarna.api_url has no host", "set klarna.api_url");
    };
    let tls = match client::tls(k.ca_file.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            let fix = "point klarna.ca_file at a PEM file of CA certificates";
            return Check::fail(NAME, format!("klarna.ca_file {e}"), fix);
        }
    };
    let path = format!(
        "{}/",
        k.api_url
            .parse::<http::Uri>()
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default()
    );
    let req = client::request(&target, http::Method::GET, &path, Bytes::new());
    // [klarna] asks for the clock to agree: not knowing is a failure too.
    let answer = match client::send(&target, Some(&tls), STEP, req).await {
        Ok(a) => a,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("not compared: no answer from {}: {e}", k.api_url),
                "check klarna.api_url and that this host may reach it (egress firewall, proxy, klarna.ca_file)",
            )
        }
    };
    let now = crate::types::unix_ms() / 1000;
    let Some(date) = answer
        .header(header::DATE)
        .and_then(crate::text::parse_http_date)
    else {
        return Check::fail(
            NAME,
            format!("not compared: {} sent no Date header", k.api_url),
            "check that klarna.api_url is Klarna's API",
        );
    };
    let skew = now.abs_diff(date);
    let side = if now >= date { "ahead of" } else { "behind" };
    if skew > MAX_SKEW_SECS {
        Check::fail(
            NAME,
            format!("this machine's clock is {skew} s {side} Klarna's (over {MAX_SKEW_SECS} s)"),
            "run NTP (chrony or systemd-timesyncd) on this host",
        )
    } else {
        Check::ok(NAME, format!("within {skew} s of Klarna's Date header"))
    }
}
