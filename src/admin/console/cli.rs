//! `authback deliveries`: list, show, replay and resolve deliveries of a running
//! authback through its admin API, as the console page does. It is a plain
//! HTTP client of `/v1` (the shared outbound one, `crate::client`); it
//! never opens the store itself, so it cannot race the delivery worker.
//! Values from the API are cleaned of control characters before they
//! reach the terminal.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use crate::admin::view::{AttemptView, DeliveryDetail, ListedDelivery};
use crate::client::{Client, Limits};
use crate::text::{parse_duration, rfc3339};
use crate::types::unix_ms;

/// How long one exchange with the admin API may take.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the admin API at {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("{status}: {message}")]
    Http { status: u16, message: String },
    /// A success whose body is not what the endpoint answers.
    #[error("unexpected answer from the admin API: {0}")]
    Answer(String),
}

/// Where the admin API is, and the bearer token for it.
pub struct Target {
    host: String,
    port: u16,
    token: Option<String>,
}

impl Target {
    /// `url` is `http://host:port` (a trailing `/` is fine) or `host:port`.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, CliError> {
        let bad = || {
            CliError::Usage(format!(
                "--admin: expected http://host:port, got {url:?} (the admin API is plain HTTP)"
            ))
        };
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(_) => return Err(bad()),
            None => url,
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') || authority.contains('@') {
            return Err(bad());
        }
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Target {
            host: host.to_string(),
            port,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The admin API of an authback whose config says `admin.listen`. An
    /// unspecified address (0.0.0.0) is reached on loopback.
    pub fn from_listen(listen: SocketAddr, token: Option<String>) -> Self {
        let ip = match listen.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        Target {
            host: ip.to_string(),
            port: listen.port(),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    fn url(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

/// The filters shared by `list` and a bulk `replay`.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pub route: Option<String>,
    pub session_id: Option<String>,
    pub reference: Option<String>,
    /// RFC 3339, or a duration back from now (`2h`).
    pub since: Option<String>,
    pub until: Option<String>,
}

impl Filters {
    /// Name and value of each filter set, times made absolute.
    fn pairs(&self, now_ms: u64) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (k, v) in [
            ("route", &self.route),
            ("session_id", &self.session_id),
            ("reference", &self.reference),
        ] {
            if let Some(v) = v {
                out.push((k, v.clone()));
            }
        }
        for (k, v) in [("since", &self.since), ("until", &self.until)] {
            if let Some(v) = v {
                out.push((k, absolute_time(v, now_ms)));
            }
        }
        out
    }
}

/// `2h` means two hours ago; anything else is passed on as written.
fn absolute_time(v: &str, now_ms: u64) -> String {
    match parse_duration(v) {
        Ok(d) => rfc3339(now_ms.saturating_sub(d.as_millis() as u64) / 1000),
        Err(_) => v.to_string(),
    }
}

pub enum Action {
    List {
        state: Option<String>,
        filters: Filters,
        limit: Option<u32>,
        cursor: Option<String>,
    },
    Show {
        id: String,
    },
    Replay {
        id: String,
    },
    ReplayAll {
        filters: Filters,
        dry_run: bool,
    },
    Resolve {
        id: String,
        note: String,
    },
    /// Every dead (or unconfirmed, by `state`) delivery the filters match.
    ResolveAll {
        state: String,
        filters: Filters,
        note: Option<String>,
        dry_run: bool,
    },
}

/// Runs `action`; returns what to print on stdout, and a note for stderr.
pub async fn run(
    target: &Target,
    action: Action,
    as_json: bool,
) -> Result<(String, Option<String>), CliError> {
    match action {
        Action::List {
            state,
            filters,
            limit,
            cursor,
        } => list(target, state, &filters, limit, cursor, as_json).await,
        Action::Show { id } => {
            let path = format!("/v1/deliveries/{}", segment(&id));
            let (body, _) = target.call(Method::GET, &path, None).await?;
            if as_json {
                return Ok((pretty(&body), None));
            }
            let d: DeliveryDetail = read(body)?;
            Ok((detail(&d), None))
        }
        Action::Replay { id } => {
            let path = format!("/v1/deliveries/{}/replay", segment(&id));
            let (body, _) = target.call(Method::POST, &path, None).await?;
            if as_json {
                return Ok((pretty(&body), None));
            }
            Ok((
                format!(
                    "{}: queued again ({})\n",
                    clean(body["id"].as_str().unwrap_or(&id)),
                    clean(body["state"].as_str().unwrap_or("pending"))
                ),
                None,
            ))
        }
        Action::Resolve { id, note } => {
            let path = format!("/v1/deliveries/{}/resolve", segment(&id));
            let (body, _) = target
                .call(Method::POST, &path, Some(json!({ "note": note })))
                .await?;
            if as_json {
                return Ok((pretty(&body), None));
            }
            Ok((
                format!(
                    "{}: resolved at {}\n",
                    clean(body["id"].as_str().unwrap_or(&id)),
                    field(body["resolved_at"].as_str())
                ),
                None,
            ))
        }
        Action::ResolveAll {
            state,
            filters,
            note,
            dry_run,
        } => resolve_all(target, &state, &filters, note, dry_run, as_json).await,
        Action::ReplayAll { filters, dry_run } => {
            let req = json!({ "state": "dead", "dry_run": dry_run });
            bulk(
                target,
                "/v1/deliveries/replay",
                req,
                &filters,
                as_json,
                |n| {
                    if dry_run {
                        format!(
                            "dry run: {} dead deliveries match; nothing replayed\n",
                            n("matched")
                        )
                    } else {
                        format!(
                            "replayed {} of {} matching dead deliveries\n",
                            n("replayed"),
                            n("matched")
                        )
                    }
                },
            )
            .await
        }
    }
}

/// `list`: one page of the listing, as a table or the API's JSON, and the
/// cursor of the next page as a note.
async fn list(
    target: &Target,
    state: Option<String>,
    filters: &Filters,
    limit: Option<u32>,
    cursor: Option<String>,
    as_json: bool,
) -> Result<(String, Option<String>), CliError> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(s) = &state {
        q.append_pair("state", s);
    }
    for (k, v) in filters.pairs(unix_ms()) {
        q.append_pair(k, &v);
    }
    if let Some(l) = limit {
        q.append_pair("limit", &l.to_string());
    }
    if let Some(c) = &cursor {
        q.append_pair("cursor", c);
    }
    let q = q.finish();
    let path = if q.is_empty() {
        "/v1/deliveries".to_string()
    } else {
        format!("/v1/deliveries?{q}")
    };
    let (body, next) = target.call(Method::GET, &path, None).await?;
    let note = next.map(|c| format!("more deliveries remain: add --cursor {c}"));
    if as_json {
        return Ok((pretty(&body), note));
    }
    let list: Vec<ListedDelivery> = read(body)?;
    Ok((table(&list), note))
}

/// A bulk resolve: `POST /v1/deliveries/resolve` with the filters.
async fn resolve_all(
    target: &Target,
    state: &str,
    filters: &Filters,
    note: Option<String>,
    dry_run: bool,
    as_json: bool,
) -> Result<(String, Option<String>), CliError> {
    let mut req = json!({ "state": state, "dry_run": dry_run });
    if let Some(n) = note {
        req["note"] = Value::String(n);
    }
    bulk(
        target,
        "/v1/deliveries/resolve",
        req,
        filters,
        as_json,
        |n| {
            if dry_run {
                format!(
                    "dry run: {} {state} deliveries match; nothing resolved\n",
                    n("matched")
                )
            } else {
                format!(
                    "resolved {} of {} matching {state} deliveries\n",
                    n("resolved"),
                    n("matched")
                )
            }
        },
    )
    .await
}

/// A bulk action by filter (replay, resolve): `req` with the filters
/// added, POSTed to `path`. The answer as JSON, or `summary` of its counts
/// and a word when the action was capped.
async fn bulk(
    target: &Target,
    path: &str,
    mut req: Value,
    filters: &Filters,
    as_json: bool,
    summary: impl Fn(&dyn Fn(&str) -> u64) -> String,
) -> Result<(String, Option<String>), CliError> {
    for (k, v) in filters.pairs(unix_ms()) {
        req[k] = Value::String(v);
    }
    let (body, _) = target.call(Method::POST, path, Some(req)).await?;
    if as_json {
        return Ok((pretty(&body), None));
    }
    let mut out = summary(&|k: &str| body[k].as_u64().unwrap_or(0));
    if body["capped"].as_bool() == Some(true) {
        out.push_str("capped: one request handles a limited number; run it again for the rest\n");
    }
    Ok((out, None))
}

impl Target {
    /// One request; returns the JSON body and the `Next-Cursor` header.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(Value, Option<String>), CliError> {
        let url = self.url();
        let unreachable = |why: String| CliError::Unreachable {
            url: url.clone(),
            why,
        };
        let exchange = async {
            let mut req = Request::builder()
                .method(method)
                .uri(format!("{url}{path}"))
                .header(header::HOST, url.trim_start_matches("http://"))
                .header(header::ACCEPT, "application/json")
                .header(header::USER_AGENT, "authback-cli");
            if let Some(t) = &self.token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let payload = match body {
                Some(v) => {
                    req = req.header(header::CONTENT_TYPE, "application/json");
                    Bytes::from(v.to_string())
                }
                None => Bytes::new(),
            };
            let req = req
                .body(Full::new(payload))
                .map_err(|e| CliError::Usage(format!("bad request: {e}")))?;
            // Plain HTTP, no limit but the whole exchange's below.
            let resp = Client::new(None, Limits::default())
                .send(req)
                .await
                .map_err(|e| unreachable(e.cause()))?;
            let status = resp.status();
            let next = resp
                .headers()
                .get("next-cursor")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, CliError>((status, next, bytes))
        };
        let (status, next, bytes) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", TIMEOUT.as_secs())))??;
        let value: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let message = value
                .as_ref()
                .and_then(|v| v["message"].as_str().map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
            let message = if status == StatusCode::UNAUTHORIZED {
                format!("{message} (set AUTHBACK_ADMIN_TOKEN, or admin.token in the config)")
            } else {
                message
            };
            return Err(CliError::Http {
                status: status.as_u16(),
                message: clean(&message),
            });
        }
        Ok((value.unwrap_or(Value::Null), next))
    }
}

/// An answer's body as the view its endpoint answers.
fn read<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, CliError> {
    serde_json::from_value(body).map_err(|e| CliError::Answer(clean(&e.to_string())))
}

fn segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// A value for the terminal: no escape sequences, no line breaks.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A text value for the terminal: `-` when there is none, or it is empty.
fn field(v: Option<&str>) -> String {
    match v {
        None | Some("") => "-".to_string(),
        Some(s) => clean(s),
    }
}

/// A token's last 4 characters, marked as the end of a longer one.
fn last4(t: &str, note: &str) -> String {
    if t.is_empty() {
        "-".to_string()
    } else {
        format!("…{}{note}", clean(t))
    }
}

fn cut(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        s
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Columns padded to their widest cell; the last is not padded.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == n {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(
                    ' ',
                    widths[i] - cell.chars().count() + 2,
                ));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn table(list: &[ListedDelivery]) -> String {
    if list.is_empty() {
        return "no deliveries match\n".to_string();
    }
    let mut rows = vec![[
        "ID",
        "STATE",
        "ROUTE",
        "REFERENCE",
        "SESSION",
        "TOKEN",
        "ATTEMPTS",
        "RECEIVED",
        "WATCH",
        "LAST ERROR",
    ]
    .map(String::from)
    .to_vec()];
    for listed in list {
        let d = &listed.delivery;
        rows.push(vec![
            field(Some(&d.id)),
            field(Some(&d.state)),
            field(Some(&d.route)),
            cut(field(Some(&d.reference)), 24),
            cut(field(Some(&d.session_id)), 40),
            last4(&d.authorization_token, ""),
            listed.attempts.to_string(),
            field(Some(&d.received_at)),
            field(d.order_watch.as_ref().map(|w| w.state.as_str())),
            cut(field(d.last_error.as_deref()), 60),
        ]);
    }
    columns(&rows)
}

fn detail(detail: &DeliveryDetail) -> String {
    let d = &detail.delivery;
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (label, v) in [
        ("id", field(Some(&d.id))),
        ("state", field(Some(&d.state))),
        ("route", field(Some(&d.route))),
        ("reference", field(Some(&d.reference))),
        ("session_id", field(Some(&d.session_id))),
        (
            "authorization_token",
            last4(&d.authorization_token, " (last 4)"),
        ),
        ("source", field(Some(&d.source))),
        // The entries shown below, as this command has always counted.
        ("attempts", detail.attempts.len().to_string()),
        ("received_at", field(Some(&d.received_at))),
        ("next_attempt_at", field(d.next_attempt_at.as_deref())),
        ("deadline_at", field(Some(&d.deadline_at))),
        ("delivered_at", field(d.delivered_at.as_deref())),
        ("last_error", field(d.last_error.as_deref())),
    ] {
        rows.push(vec![label.to_string(), v]);
    }
    if let Some(r) = &d.resolution {
        rows.push(vec!["resolved_at".into(), field(Some(&r.resolved_at))]);
        rows.push(vec!["resolve_note".into(), field(Some(&r.note))]);
    }
    let mut out = columns(&rows);
    out.push_str("\nattempts\n");
    if detail.attempts.is_empty() {
        out.push_str("  none yet\n");
    } else {
        let mut t = vec![
            ["#", "AT", "STATUS", "MS", "RETRY IN", "REDELIVERY", "ERROR"]
                .map(String::from)
                .to_vec(),
        ];
        for (i, a) in detail.attempts.iter().enumerate() {
            t.push(vec![
                (i + 1).to_string(),
                field(Some(&a.at)),
                a.status.map_or("no answer".into(), |s| s.to_string()),
                a.duration_ms.to_string(),
                a.retry_in_ms
                    .map_or("-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
                if a.redelivery { "yes" } else { "-" }.to_string(),
                field(a.error.as_deref()),
            ]);
        }
        for line in columns(&t).lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&responses(&detail.attempts));
    }
    match &d.order_watch {
        None => out.push_str("\norder watch: none\n"),
        Some(w) => {
            out.push_str("\norder watch\n");
            let rows: Vec<Vec<String>> = [
                ("state", field(Some(&w.state))),
                ("started_at", field(Some(&w.started_at))),
                ("next_check_at", field(w.next_check_at.as_deref())),
                ("checks", w.checks.to_string()),
                ("redelivered", w.redelivered.to_string()),
                ("last_error", field(w.last_error.as_deref())),
            ]
            .into_iter()
            .map(|(k, v)| vec![format!("  {k}"), v])
            .collect();
            out.push_str(&columns(&rows));
        }
    }
    out
}

/// What the backend answered to each attempt that got an answer: the
/// content type, then the body (its first 2 KiB, secrets redacted), on one
/// line each, cleaned for the terminal.
fn responses(attempts: &[AttemptView]) -> String {
    let rows: Vec<Vec<String>> = attempts
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let body = a.response_body.as_deref()?;
            let mut notes = Vec::new();
            if a.response_body_base64 {
                notes.push("base64");
            }
            if a.response_body_truncated {
                notes.push("first 2 KiB");
            }
            let kind = match notes.is_empty() {
                true => field(a.response_content_type.as_deref()),
                false => format!(
                    "{} ({})",
                    field(a.response_content_type.as_deref()),
                    notes.join(", ")
                ),
            };
            let body = if body.is_empty() {
                "(empty)".to_string()
            } else {
                clean(body)
            };
            Some(vec![format!("  #{}", i + 1), kind, body])
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!("\nresponses\n{}", columns(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_url_is_plain_http_host_and_port() {
        let t = Target::new("http://127.0.0.1:9901/", None).expect("ok");
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 9901));
        assert_eq!(t.url(), "http://127.0.0.1:9901");
        let t = Target::new("[::1]:9901", Some(String::new())).expect("ok");
        assert_eq!((t.host.as_str(), t.token.is_none()), ("::1", true));
        assert_eq!(t.url(), "http://[::1]:9901");
        for bad in [
            "https://h:1",
            "http://h",
            "http://h:1/v1",
            "http://u@h:1",
            ":1",
        ] {
            assert!(Target::new(bad, None).is_err(), "{bad}");
        }
        let t = Target::from_listen("0.0.0.0:9901".parse().expect("addr"), None);
        assert_eq!(t.url(), "http://127.0.0.1:9901");
    }

    #[test]
    fn relative_times_become_absolute() {
        let now = 1_700_000_000_000;
        assert_eq!(absolute_time("1h", now), rfc3339(1_700_000_000 - 3600));
        assert_eq!(
            absolute_time("2026-01-01T00:00:00Z", now),
            "2026-01-01T00:00:00Z"
        );
    }

    #[test]
    fn the_table_is_aligned_and_clean() {
        let list: Vec<ListedDelivery> = serde_json::from_value(json!([
            {"id":"a1","state":"dead","route":"klarna","reference":"cart-1",
                   "session_id":"s\u{1b}[31m1","authorization_token":"0001","attempts":1,
                   "received_at":"2026-01-01T00:00:00Z","order_watch":null,
                   "last_error":"upstream answered 400\nbody"},
            {"id":"b2","state":"delivered","route":"k","reference":"",
                   "session_id":"s2","authorization_token":"0002","attempts":12,
                   "received_at":"2026-01-01T00:00:01Z","order_watch":{"state":"confirmed"},
                   "last_error":null},
        ]))
        .expect("a listing");
        let t = table(&list);
        assert!(!t.contains('\u{1b}') && t.lines().count() == 3, "{t}");
        let header = t.lines().next().expect("header");
        let at = header.find("STATE").expect("column");
        assert!(t.lines().all(|l| l.len() > at), "{t}");
        assert!(t.contains("…0001") && t.contains("confirmed"));
        assert_eq!(table(&[]), "no deliveries match\n");
    }

    #[test]
    fn the_detail_shows_attempts_and_the_watch() {
        let d = json!({"id":"a1","state":"dead","attempts":[
            {"at":"2026-01-01T00:00:00Z","duration_ms":12,"status":400,"error":"upstream answered 400","retry_in_ms":null,"redelivery":false},
            {"at":"2026-01-01T00:00:02Z","duration_ms":500,"status":null,"error":"timeout","retry_in_ms":1500,"redelivery":true}],
            "order_watch":{"state":"watching","checks":2}});
        let d: DeliveryDetail = serde_json::from_value(d).expect("a delivery");
        let s = detail(&d);
        assert!(
            s.contains("attempts             2") || s.contains("attempts  "),
            "{s}"
        );
        assert!(s.contains("no answer") && s.contains("1.5s") && s.contains("watching"));
        assert!(!s.contains("responses"), "no answer kept, no section: {s}");
    }

    #[test]
    fn the_detail_shows_a_resolution() {
        let d = json!({"id":"a1","state":"resolved","attempts":[],
            "resolution":{"resolved_at":"2026-01-02T00:00:00Z","note":"refunded\u{1b}[2J by hand"}});
        let d: DeliveryDetail = serde_json::from_value(d).expect("a delivery");
        let s = detail(&d);
        assert!(
            s.contains("resolved_at") && s.contains("2026-01-02T00:00:00Z"),
            "{s}"
        );
        assert!(
            s.contains("refunded [2J by hand") && !s.contains('\u{1b}'),
            "{s}"
        );
    }

    #[test]
    fn the_detail_shows_what_the_backend_answered() {
        let d = json!({"id":"a1","state":"dead","attempts":[
            {"at":"2026-01-01T00:00:00Z","status":401,"error":"upstream answered 401",
             "response_body":"{\"error\":\"bad signature\"}\n\u{1b}[31m","response_content_type":"application/json"},
            {"at":"2026-01-01T00:00:01Z","status":null,"error":"timeout"},
            {"at":"2026-01-01T00:00:02Z","status":500,"response_body":"/wAB","response_body_base64":true,
             "response_body_truncated":true,"response_content_type":null},
            {"at":"2026-01-01T00:00:03Z","status":204,"response_body":""}]});
        let d: DeliveryDetail = serde_json::from_value(d).expect("a delivery");
        let s = detail(&d);
        let section = s
            .split("\nresponses\n")
            .nth(1)
            .expect("a responses section");
        let lines: Vec<&str> = section.lines().collect();
        assert!(
            lines[0].starts_with("  #1")
                && lines[0].contains("application/json")
                && lines[0].contains(r#"{"error":"bad signature"}"#),
            "{s}"
        );
        assert!(!s.contains('\u{1b}'), "cleaned for the terminal");
        assert!(lines[1].starts_with("  #3") && lines[1].contains("- (base64, first 2 KiB)  /wAB"));
        assert!(
            lines[2].starts_with("  #4") && lines[2].contains("(empty)"),
            "{s}"
        );
    }

    #[test]
    fn an_answer_of_another_shape_is_an_error_not_an_empty_list() {
        let err = read::<Vec<ListedDelivery>>(json!({"error": "x"})).expect_err("not a list");
        assert!(matches!(err, CliError::Answer(_)), "{err}");
        assert!(read::<DeliveryDetail>(json!({"attempts": 3})).is_err());
    }
}
