//! Klarna's Read Session API (`GET {api_url}/payments/v1/sessions/{id}`),
//! the fallback when an authorization callback never arrives. HTTP Basic
//! credentials go in one header marked sensitive and are never logged.
//! Checks are minutes apart, so each uses a fresh TLS connection of the
//! shared outbound client (`crate::client`).

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use crate::client::{Client, Failure, Limits};
use crate::config::KlarnaConfig;
use crate::net::HostPort;
use crate::ops::metrics::{CheckOutcome, KlarnaOutcome};
use crate::text::{base64, parse_retry_after, path_segment};
use crate::types::{unix_ms, AuthorizationToken, SessionId};

/// What Read Session said about a session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SessionState {
    /// Authorized: the token to place the order with.
    Authorized(AuthorizationToken),
    /// Not authorized (yet).
    Incomplete,
    /// An order was placed.
    Complete,
    /// Unknown or expired session (404).
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("Klarna refused the credentials ({0})")]
    Auth(StatusCode),
    /// With the wait `Retry-After` asks for, as sent: it can be as long as
    /// `u64::MAX` seconds, and the schedule caps it.
    #[error("Klarna rate-limited the check (429)")]
    RateLimited(Option<Duration>),
    #[error("Klarna answered {0}")]
    Status(StatusCode),
    #[error("no answer from Klarna within {}", crate::text::format_duration(*.0))]
    Timeout(Duration),
    /// DNS, the TCP connection, or no HTTP answer on it.
    #[error("cannot reach Klarna: {0}")]
    Connect(String),
    /// The TLS handshake, the certificate included.
    #[error("TLS with Klarna failed: {0}")]
    Tls(String),
    #[error("Klarna's answer is not the expected JSON")]
    Body,
}

impl ReadError {
    /// The `outcome` of `authback_reconcile_checks_total` this failure
    /// counts as.
    pub(crate) fn check_outcome(&self) -> CheckOutcome {
        match self {
            ReadError::Auth(_) => CheckOutcome::AuthError,
            ReadError::RateLimited(_) => CheckOutcome::RateLimited,
            ReadError::Status(s) if s.is_server_error() => CheckOutcome::ServerError,
            ReadError::Status(_) | ReadError::Body => CheckOutcome::Error,
            ReadError::Timeout(_) => CheckOutcome::Timeout,
            ReadError::Connect(_) | ReadError::Tls(_) => CheckOutcome::Unreachable,
        }
    }

    /// The `outcome` of `authback_klarna_requests_total` this failure
    /// counts as. A 403 counts as `unauthorized` like a 401: Klarna answers
    /// 401 to credentials it does not know and 403 to credentials that may
    /// not read the session (another merchant's, or an account without
    /// Klarna Payments), and the fix of both is in `[klarna]`, not at
    /// Klarna. A timeout, DNS, TCP and TLS failures are all `unreachable`;
    /// another 4xx or an answer that is not the expected JSON is `error`.
    pub(crate) fn outcome(&self) -> KlarnaOutcome {
        match self {
            ReadError::Auth(_) => KlarnaOutcome::Unauthorized,
            ReadError::RateLimited(_) => KlarnaOutcome::RateLimited,
            ReadError::Status(s) if s.is_server_error() => KlarnaOutcome::ServerError,
            ReadError::Status(_) | ReadError::Body => KlarnaOutcome::Error,
            ReadError::Timeout(_) | ReadError::Connect(_) | ReadError::Tls(_) => {
                KlarnaOutcome::Unreachable
            }
        }
    }
}

/// The `outcome` of `authback_klarna_requests_total` a Read Session call
/// counts as.
pub(crate) fn outcome(r: &Result<SessionState, ReadError>) -> KlarnaOutcome {
    match r {
        Ok(SessionState::NotFound) => KlarnaOutcome::NotFound,
        Ok(_) => KlarnaOutcome::Ok,
        Err(e) => e.outcome(),
    }
}

pub(crate) struct ReadSessionClient {
    client: Client,
    /// `https://host:port`, every request's URI starts with it.
    origin: String,
    host: String,
    base_path: String,
    authorization: HeaderValue,
    timeout: Duration,
}

impl ReadSessionClient {
    pub(crate) fn new(cfg: &KlarnaConfig) -> Result<Self, String> {
        let uri: http::Uri = cfg
            .api_url
            .parse()
            .map_err(|_| format!("klarna.api_url `{}` is not a URL", cfg.api_url))?;
        let address = HostPort::of(&uri, 443).ok_or("klarna.api_url has no host")?;
        let (Some(user), Some(pass)) = (&cfg.username, &cfg.password) else {
            return Err("klarna.username and klarna.password are required".into());
        };
        let mut creds = user.expose().to_vec();
        creds.push(b':');
        creds.extend_from_slice(pass.expose());
        let mut authorization = HeaderValue::from_str(&format!("Basic {}", base64(&creds)))
            .map_err(|_| "klarna credentials cannot be sent in a header".to_string())?;
        authorization.set_sensitive(true);

        let tls = crate::client::tls(cfg.ca_file.as_deref())
            .map_err(|e| format!("klarna.ca_file {e}"))?;
        Ok(Self {
            // `read_session` bounds the whole check with `klarna.timeout`.
            client: Client::new(Some(tls.config), Limits::default()),
            origin: crate::client::origin(true, &address),
            host: address.header(),
            base_path: uri.path().trim_end_matches('/').to_string(),
            authorization,
            timeout: cfg.timeout,
        })
    }

    /// Reads one session.
    pub(crate) async fn read_session(
        &self,
        session: &SessionId,
    ) -> Result<SessionState, ReadError> {
        let path = format!(
            "{}/payments/v1/sessions/{}",
            self.base_path,
            path_segment(session.as_str())
        );
        match tokio::time::timeout(self.timeout, self.get(&path)).await {
            Ok(r) => r,
            Err(_) => Err(ReadError::Timeout(self.timeout)),
        }
    }

    /// Cancels an authorization: `DELETE
    /// /payments/v1/authorizations/{token}`, empty body, 204.
    pub(crate) async fn cancel_authorization(
        &self,
        token: &AuthorizationToken,
    ) -> Result<Cancel, ReadError> {
        let path = format!(
            "{}/payments/v1/authorizations/{}",
            self.base_path,
            path_segment(token.expose())
        );
        let send = async {
            let (status, _, _) = self.send(http::Method::DELETE, &path).await?;
            match status.as_u16() {
                200..=299 => Ok(Cancel::Cancelled),
                403 | 404 => Ok(Cancel::Refused(status)),
                401 => Err(ReadError::Auth(status)),
                429 => Err(ReadError::RateLimited(None)),
                _ => Err(ReadError::Status(status)),
            }
        };
        match tokio::time::timeout(self.timeout, send).await {
            Ok(r) => r,
            Err(_) => Err(ReadError::Timeout(self.timeout)),
        }
    }

    async fn get(&self, path: &str) -> Result<SessionState, ReadError> {
        let (status, retry_after, body) = self.send(http::Method::GET, path).await?;
        match status.as_u16() {
            200 => parse(&body),
            404 => Ok(SessionState::NotFound),
            401 | 403 => Err(ReadError::Auth(status)),
            429 => Err(ReadError::RateLimited(retry_after)),
            _ => Err(ReadError::Status(status)),
        }
    }

    /// One request with no body: the status, `Retry-After` and the body.
    async fn send(
        &self,
        method: http::Method,
        path: &str,
    ) -> Result<(StatusCode, Option<Duration>, Bytes), ReadError> {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.origin))
            .header(header::HOST, &self.host)
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("authback/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|e| ReadError::Connect(e.to_string()))?;
        let resp = self.client.send(req).await.map_err(|e| match e {
            Failure::Timeout(..) => ReadError::Timeout(self.timeout),
            Failure::Tls(e) => ReadError::Tls(e),
            e => ReadError::Connect(e.cause()),
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, unix_ms() / 1000));
        let body = Limited::new(resp.into_body(), 1024 * 1024)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|_| ReadError::Body)?;
        Ok((status, retry_after, body))
    }
}

/// What Klarna said to a DELETE of an authorization.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cancel {
    /// 204: cancelled now.
    Cancelled,
    /// 403 or 404: already consumed, cancelled, expired or unknown.
    Refused(StatusCode),
}

/// The `outcome` of `authback_klarna_requests_total` a cancel counts as.
pub(crate) fn cancel_outcome(r: &Result<Cancel, ReadError>) -> KlarnaOutcome {
    match r {
        Ok(Cancel::Cancelled) => KlarnaOutcome::Ok,
        Ok(Cancel::Refused(_)) => KlarnaOutcome::NotFound,
        Err(e) => e.outcome(),
    }
}

/// The parts of a Read Session answer that matter here.
pub(crate) fn parse(body: &[u8]) -> Result<SessionState, ReadError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| ReadError::Body)?;
    let obj = v.as_object().ok_or(ReadError::Body)?;
    if obj.get("status").and_then(|s| s.as_str()) == Some("complete") {
        return Ok(SessionState::Complete);
    }
    match obj.get("authorization_token").and_then(|t| t.as_str()) {
        Some(t) if !t.is_empty() && t.len() <= crate::types::MAX_FIELD => {
            Ok(SessionState::Authorized(AuthorizationToken::new(t)))
        }
        _ => Ok(SessionState::Incomplete),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_session_bodies() {
        assert_eq!(
            parse(br#"{"status":"incomplete","authorization_token":"tok-1"}"#).expect("ok"),
            SessionState::Authorized(AuthorizationToken::new("tok-1"))
        );
        assert_eq!(
            parse(br#"{"status":"incomplete"}"#).expect("ok"),
            SessionState::Incomplete
        );
        assert_eq!(
            parse(br#"{"status":"incomplete","authorization_token":""}"#).expect("ok"),
            SessionState::Incomplete
        );
        assert_eq!(
            parse(br#"{"status":"complete","authorization_token":"tok-1"}"#).expect("ok"),
            SessionState::Complete,
            "an order was placed: nothing to recover"
        );
        assert!(parse(b"<html>").is_err());
    }

    #[test]
    fn each_answer_counts_as_one_outcome() {
        let status = |code| StatusCode::from_u16(code).expect("status");
        for (r, want) in [
            (Ok(SessionState::Complete), KlarnaOutcome::Ok),
            (Ok(SessionState::Incomplete), KlarnaOutcome::Ok),
            (Ok(SessionState::NotFound), KlarnaOutcome::NotFound),
            (
                Err(ReadError::Auth(status(401))),
                KlarnaOutcome::Unauthorized,
            ),
            (
                Err(ReadError::Auth(status(403))),
                KlarnaOutcome::Unauthorized,
            ),
            (
                Err(ReadError::RateLimited(None)),
                KlarnaOutcome::RateLimited,
            ),
            (
                Err(ReadError::Status(status(503))),
                KlarnaOutcome::ServerError,
            ),
            (Err(ReadError::Status(status(400))), KlarnaOutcome::Error),
            (Err(ReadError::Body), KlarnaOutcome::Error),
            (
                Err(ReadError::Timeout(Duration::from_secs(10))),
                KlarnaOutcome::Unreachable,
            ),
            (
                Err(ReadError::Connect("connection refused".into())),
                KlarnaOutcome::Unreachable,
            ),
            (
                Err(ReadError::Tls("invalid peer certificate".into())),
                KlarnaOutcome::Unreachable,
            ),
        ] {
            assert_eq!(outcome(&r), want, "{r:?}");
        }
    }
}
