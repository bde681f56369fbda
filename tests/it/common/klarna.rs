//! Klarna, simulated: the callback sender (as Klarna calls back) and the
//! Read Session and Create Order API over real TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;

use super::{make_cert, pace, sensitive, tls_acceptor, tls_connect};

// ---------------------------------------------------------------------------
// Klarna, as it calls back.

/// What Klarna saw while delivering one callback.
#[derive(Debug)]
pub struct KlarnaResult {
    pub attempts: u32,
    /// The status of the last attempt that got an answer.
    pub status: Option<u16>,
    pub delivered: bool,
}

/// Delivers one callback as Klarna does: each attempt has a 2 s connect and
/// a 2 s read timeout; any 2xx ends it; at most 3 attempts, 1 s then 2 s apart.
pub async fn klarna_callback(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    path_and_query: &str,
    body: &str,
) -> KlarnaResult {
    klarna_calls(
        || tls_connect(addr, ca, &[b"http/1.1"]),
        "localhost",
        path_and_query,
        body,
    )
    .await
}

/// Klarna's attempts (see `klarna_callback`) over connections `connect`
/// opens, TLS or plain, naming `host`.
pub async fn klarna_calls<C, F, IO>(
    connect: C,
    host: &str,
    path_and_query: &str,
    body: &str,
) -> KlarnaResult
where
    C: Fn() -> F,
    F: std::future::Future<Output = std::io::Result<IO>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut result = KlarnaResult {
        attempts: 0,
        status: None,
        delivered: false,
    };
    let mut backoff = Duration::from_secs(1);
    for attempt in 1..=3 {
        result.attempts = attempt;
        if let Ok(Ok(io)) = tokio::time::timeout(Duration::from_secs(2), connect()).await {
            let exchange = async {
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                    .await
                    .ok()?;
                tokio::spawn(conn);
                let req = Request::post(path_and_query)
                    .header("host", host)
                    .header("content-type", "application/json")
                    .header("user-agent", "Klarna-Callback-Simulator")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .ok()?;
                let resp = send.send_request(req).await.ok()?;
                Some(resp.status().as_u16())
            };
            if let Ok(Some(status)) = tokio::time::timeout(Duration::from_secs(2), exchange).await {
                result.status = Some(status);
                if (200..300).contains(&status) {
                    result.delivered = true;
                    return result;
                }
            }
        }
        if attempt < 3 {
            pace(backoff).await;
            backoff *= 2;
        }
    }
    result
}

// ---------------------------------------------------------------------------
// Klarna's Read Session API, simulated over real TLS.

/// One programmed answer of the Read Session simulator.
#[derive(Clone, Debug)]
pub enum ApiAnswer {
    /// 200 with this JSON body.
    Json(String),
    /// This status with an empty JSON error body.
    Status(u16),
    /// 429 with `Retry-After: secs`.
    RetryAfter(u64),
    /// No answer for this long, then 200 `{"status":"incomplete"}`.
    Slow(Duration),
}

pub struct ApiRequest {
    pub path: String,
    pub authorization: Option<String>,
    pub at: std::time::Instant,
}

/// Answers `GET /payments/v1/sessions/{id}` and records requests. A
/// session's answer comes from, in order: its one-off answers
/// (`script_once`), its script (the last answer repeats), then its live
/// state (`authorize`: incomplete until an order is placed with
/// `POST /payments/v1/authorizations/{token}/order`, then complete); a
/// session with none of these is 404. An order can be held (`hold_order`):
/// its creation then waits until the test releases it. While it is down
/// (`set_down`), it closes every connection before the TLS handshake.
#[derive(Clone)]
pub struct KlarnaApi {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub requests: Arc<Mutex<Vec<ApiRequest>>>,
    scripts: Arc<Mutex<std::collections::HashMap<String, Vec<ApiAnswer>>>>,
    once: Arc<Mutex<std::collections::HashMap<String, Vec<ApiAnswer>>>>,
    /// session -> (authorization_token, order placed)
    sessions: Arc<Mutex<std::collections::HashMap<String, (String, bool)>>>,
    /// Authorization tokens whose order creation waits for a release.
    held: Arc<tokio::sync::watch::Sender<std::collections::HashSet<String>>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    /// Authorization tokens cancelled with a DELETE.
    cancelled: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Statuses the next DELETEs answer, once each, before the real one.
    cancel_once: Arc<Mutex<Vec<u16>>>,
    /// Every DELETE of an authorization: (token, status answered).
    pub deletes: Arc<Mutex<Vec<(String, u16)>>>,
}

impl KlarnaApi {
    pub async fn start() -> Self {
        let cert = make_cert();
        let acceptor = tls_acceptor(&cert);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let api = KlarnaApi {
            addr: listener.local_addr().expect("addr"),
            ca_pem: cert.cert_pem.clone(),
            requests: Arc::default(),
            scripts: Arc::default(),
            once: Arc::default(),
            sessions: Arc::default(),
            held: Arc::new(tokio::sync::watch::Sender::new(Default::default())),
            down: Arc::default(),
            cancelled: Arc::default(),
            cancel_once: Arc::default(),
            deletes: Arc::default(),
        };
        let a = api.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                if a.down.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(tcp);
                    continue;
                }
                let (a, acceptor) = (a.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| {
                        let a = a.clone();
                        async move { Ok::<_, std::convert::Infallible>(a.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        api
    }

    pub fn script(&self, session: &str, answers: Vec<ApiAnswer>) {
        self.scripts
            .lock()
            .expect("lock")
            .insert(session.to_string(), answers);
    }

    /// Down (every connection closed at once, as a host that is gone or a
    /// firewall that resets), or up again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Answers for `session` used once each, before anything else.
    pub fn script_once(&self, session: &str, answers: Vec<ApiAnswer>) {
        self.once
            .lock()
            .expect("lock")
            .insert(session.to_string(), answers);
    }

    /// The customer authorized `session` with `token`: incomplete until an
    /// order is placed with the token.
    pub fn authorize(&self, session: &str, token: &str) {
        self.sessions
            .lock()
            .expect("lock")
            .insert(session.to_string(), (token.to_string(), false));
    }

    /// Holds the creation of `token`'s order until `release_order`: the
    /// backend placing it waits, and the test acts meanwhile.
    pub fn hold_order(&self, token: &str) {
        self.held.send_modify(|h| {
            h.insert(token.to_string());
        });
    }

    /// Lets `token`'s order be created, now or when it is asked for.
    pub fn release_order(&self, token: &str) {
        self.held.send_modify(|h| {
            h.remove(token);
        });
    }

    /// Whether a backend asked to create `token`'s order (held or not).
    pub fn order_requested(&self, token: &str) -> bool {
        let path = format!("/payments/v1/authorizations/{token}/order");
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .any(|r| r.path == path)
    }

    /// Every DELETE is applied at once and answered only after
    /// `release_order(HOLD_CANCELS)`.
    pub fn hold_cancels(&self) {
        self.hold_order(HOLD_CANCELS);
    }

    /// The next DELETEs answer these statuses, once each.
    pub fn cancel_once(&self, statuses: Vec<u16>) {
        *self.cancel_once.lock().expect("lock") = statuses;
    }

    /// DELETEs of `token` answered 204 (cancelled).
    pub fn cancelled(&self, token: &str) -> usize {
        self.deletes
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, s)| t == token && *s == 204)
            .count()
    }

    /// Every DELETE of `token`, whatever it was answered.
    pub fn delete_calls(&self, token: &str) -> usize {
        self.deletes
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, _)| t == token)
            .count()
    }

    /// Cancel an authorization: 204 for a live token, 403 for one an
    /// order consumed or already cancelled, 404 for one never issued.
    fn cancel(&self, token: &str) -> u16 {
        let status = {
            let mut once = self.cancel_once.lock().expect("lock");
            (!once.is_empty()).then(|| once.remove(0))
        };
        let status = status.unwrap_or_else(|| {
            let sessions = self.sessions.lock().expect("lock");
            let mut cancelled = self.cancelled.lock().expect("lock");
            match sessions.values().find(|(t, _)| t == token) {
                None => 404,
                Some((_, true)) => 403,
                Some(_) if !cancelled.insert(token.to_string()) => 403,
                Some(_) => 204,
            }
        });
        self.deletes
            .lock()
            .expect("lock")
            .push((token.to_string(), status));
        status
    }

    /// Whether an order was placed for `session`.
    pub fn order_placed(&self, session: &str) -> bool {
        self.sessions
            .lock()
            .expect("lock")
            .get(session)
            .is_some_and(|(_, placed)| *placed)
    }

    /// Places the order for `token` as a backend would: a real HTTPS
    /// `POST /payments/v1/authorizations/{token}/order`. Returns the status.
    pub async fn create_order(&self, token: &str) -> u16 {
        use rustls::pki_types::pem::PemObject;
        let ca = CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("ca pem");
        let tls = tls_connect(self.addr, &ca, &[b"http/1.1"])
            .await
            .expect("TLS to Klarna");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::post(format!("/payments/v1/authorizations/{token}/order"))
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        let resp = send.send_request(req).await.expect("answer");
        resp.status().as_u16()
    }

    /// (path, Authorization header, time) of every request so far.
    pub fn seen(&self) -> Vec<(String, Option<String>, std::time::Instant)> {
        let reqs = self.requests.lock().expect("lock");
        reqs.iter()
            .map(|r| (r.path.clone(), r.authorization.clone(), r.at))
            .collect()
    }

    pub fn requests_for(&self, session: &str) -> usize {
        let path = format!("/payments/v1/sessions/{session}");
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// The `[klarna]` and `[reconcile]` sections pointing at this simulator.
    pub fn config(&self, dir: &Path, schedule: &str) -> String {
        sensitive(KLARNA_PASSWORD);
        let ca = dir.join("klarna-ca.pem");
        std::fs::write(&ca, &self.ca_pem).expect("write ca");
        format!(
            "[klarna]\napi_url = \"https://localhost:{}\"\nusername = \"K123_test\"\npassword = \"{KLARNA_PASSWORD}\"\nca_file = \"{}\"\ntimeout = \"300ms\"\n[reconcile]\nenabled = true\nschedule = {schedule}\ngive_up_after = \"30s\"\n",
            self.addr.port(),
            ca.display()
        )
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        self.requests.lock().expect("lock").push(ApiRequest {
            path: path.clone(),
            authorization,
            at: std::time::Instant::now(),
        });
        let json = |status: u16, body: String| {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("response")
        };
        if req.method() == http::Method::DELETE {
            let token = path
                .strip_prefix("/payments/v1/authorizations/")
                .unwrap_or("");
            let status = self.cancel(token);
            // Cancelled at Klarna, the answer held: as a DELETE in flight
            // when authback stops.
            let mut held = self.held.subscribe();
            let _ = held.wait_for(|h| !h.contains(HOLD_CANCELS)).await;
            return json(status, String::new());
        }
        if let Some(token) = path
            .strip_prefix("/payments/v1/authorizations/")
            .and_then(|p| p.strip_suffix("/order"))
        {
            if self.cancelled.lock().expect("lock").contains(token) {
                return json(403, r#"{"error_code":"NOT_ALLOWED"}"#.into());
            }
            let mut held = self.held.subscribe();
            let _ = held.wait_for(|h| !h.contains(token)).await;
            let mut sessions = self.sessions.lock().expect("lock");
            return match sessions.values_mut().find(|(t, _)| t == token) {
                Some((_, placed)) if *placed => json(
                    404,
                    r#"{"error_code":"NOT_FOUND","error_messages":["Invalid authorization token"]}"#
                        .into(),
                ),
                Some((_, placed)) => {
                    *placed = true;
                    json(200, r#"{"order_id":"sim-order","fraud_status":"ACCEPTED"}"#.into())
                }
                None => json(404, r#"{"error_code":"NOT_FOUND"}"#.into()),
            };
        }
        let session = path
            .strip_prefix("/payments/v1/sessions/")
            .unwrap_or("")
            .to_string();
        let answer = {
            let once = self
                .once
                .lock()
                .expect("lock")
                .get_mut(&session)
                .filter(|l| !l.is_empty())
                .map(|l| l.remove(0));
            let mut scripts = self.scripts.lock().expect("lock");
            once.or_else(|| match scripts.get_mut(&session) {
                Some(list) if list.len() > 1 => Some(list.remove(0)),
                Some(list) => list.first().cloned(),
                None => None,
            })
            .or_else(|| {
                let sessions = self.sessions.lock().expect("lock");
                sessions.get(&session).map(|(token, placed)| {
                    let status = if *placed { "complete" } else { "incomplete" };
                    ApiAnswer::Json(format!(
                        r#"{{"status":"{status}","authorization_token":"{token}"}}"#
                    ))
                })
            })
        };
        match answer {
            None => json(404, r#"{"error_code":"NOT_FOUND"}"#.into()),
            Some(ApiAnswer::Json(body)) => json(200, body),
            Some(ApiAnswer::Status(s)) => json(s, r#"{"error_code":"SIMULATED"}"#.into()),
            Some(ApiAnswer::RetryAfter(secs)) => Response::builder()
                .status(429)
                .header("retry-after", secs.to_string())
                .body(Full::new(Bytes::new()))
                .expect("response"),
            Some(ApiAnswer::Slow(d)) => {
                pace(d).await;
                json(200, r#"{"status":"incomplete"}"#.into())
            }
        }
    }
}

/// The key `hold_cancels` holds answers to DELETEs under.
pub const HOLD_CANCELS: &str = "DELETE";

pub const KLARNA_PASSWORD: &str = "klarna-api-password-never-logged";
