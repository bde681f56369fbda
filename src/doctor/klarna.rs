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
    let client = match ReadSessionClient::new(k) {
        Ok(c) => c,
        Err(e) => return Check::fail(CREDENTIALS, e, "complete the [klarna] section"),
    };
    // Unlike any real session id, so Klarna can only answer 404 or refuse.
    let session = SessionId::new(format!("authback-doctor-{}", nonce(8)));
    // The client has its own `klarna.timeout`; this bounds it however set.
    let read = match tokio::time::timeout(STEP, client.read_session(&session)).await {
        Ok(r) => r,
        Err(_) => Err(ReadError::Timeout(STEP)),
    };
    verdict(&k.api_url, read)
}

const CREDENTIALS: &str = "klarna";

/// What Read Session of a made-up session at `api` says about the
/// deployment. Wrong credentials and a host that cannot be reached are
/// different problems, with different fixes: the first is in `[klarna]`,
/// the second in the network between this host and Klarna.
fn verdict(api: &str, read: Result<SessionState, ReadError>) -> Check {
    const NAME: &str = CREDENTIALS;
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
        // 401: Klarna does not know them; 403: they may not read sessions
        // there (another region's or environment's account, or one
        // without Klarna Payments).
        Err(ReadError::Auth(status)) => Check::fail(
            NAME,
            format!("{api} reached, but it refused the credentials ({status})"),
            "wrong credentials: set klarna.username and klarna.password to an API key pair (Merchant Portal, Settings, Klarna API keys) of the region and environment (playground or production) klarna.api_url names",
        ),
        Err(e @ (ReadError::Connect(_) | ReadError::Timeout(_))) => Check::fail(
            NAME,
            format!("{api} unreachable: {e}"),
            "the network, not the credentials: check that klarna.api_url's host name resolves from this host (DNS) and that it may open HTTPS connections to it (egress firewall, proxy, network policy)",
        ),
        Err(e @ ReadError::Tls(_)) => Check::fail(
            NAME,
            format!("{api}: {e}"),
            "check that klarna.api_url is Klarna's API and that nothing intercepts TLS on the way; a private test CA goes in klarna.ca_file",
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::StatusCode;

    use super::*;
    use crate::doctor::report::Status;

    const API: &str = "https://api.playground.klarna.com";

    fn fix(read: Result<SessionState, ReadError>) -> (Status, String, String) {
        let c = verdict(API, read);
        (c.status, c.detail, c.fix.unwrap_or_default())
    }

    #[test]
    fn refused_credentials_point_at_the_credentials() {
        for status in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN] {
            let (s, detail, fix) = fix(Err(ReadError::Auth(status)));
            assert_eq!(s, Status::Fail);
            assert!(detail.contains("refused the credentials"), "{detail}");
            assert!(fix.starts_with("wrong credentials"), "{fix}");
            assert!(
                fix.contains("klarna.username") && fix.contains("klarna.password"),
                "{fix}"
            );
            assert!(!fix.contains("firewall"), "{fix}");
        }
    }

    #[test]
    fn an_unreachable_host_points_at_the_network() {
        for e in [
            ReadError::Connect("failed to lookup address information".into()),
            ReadError::Connect("Connection refused (os error 111)".into()),
            ReadError::Timeout(Duration::from_secs(5)),
        ] {
            let (s, detail, fix) = fix(Err(e));
            assert_eq!(s, Status::Fail);
            assert!(detail.contains("unreachable"), "{detail}");
            assert!(fix.starts_with("the network, not the credentials"), "{fix}");
            assert!(fix.contains("DNS") && fix.contains("firewall"), "{fix}");
            assert!(!fix.contains("klarna.password"), "{fix}");
        }
        let (_, _, fix) = fix(Err(ReadError::Tls("invalid peer certificate".into())));
        assert!(fix.contains("klarna.ca_file"), "{fix}");
    }

    #[test]
    fn a_404_for_a_made_up_session_passes() {
        assert_eq!(fix(Ok(SessionState::NotFound)).0, Status::Ok);
        assert_eq!(fix(Ok(SessionState::Incomplete)).0, Status::Fail);
    }
}
