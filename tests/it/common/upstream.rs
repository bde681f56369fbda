//! The upstream: records every request; answers as told.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::{init_trace, pace, patient};

#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200, echoing the request body.
    Ok,
    /// As `Ok`, with one more header in the answer.
    OkWith(&'static str, &'static str),
    /// Answer `status` this many times, then behave as `Ok`.
    Fail { times: u32, status: u16 },
    /// Never answer.
    Hang,
    /// Always answer this status.
    Status(u16),
    /// Answer after a delay.
    Slow(Duration),
    /// Always answer this status, `Content-Type` and body: a backend that
    /// says why it refused.
    Reply {
        status: u16,
        content_type: &'static str,
        body: Bytes,
    },
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the upstream answered with (0 when it hung).
    pub answered: u16,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream got JSON")
    }
}

#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    changed: Arc<Notify>,
}

impl Upstream {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr")).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        init_trace();
        let listener = TcpListener::bind(addr).await.expect("bind upstream");
        let up = Upstream {
            addr: listener.local_addr().expect("addr"),
            requests: Arc::default(),
            behaviour: Arc::new(Mutex::new(Behaviour::Ok)),
            changed: Arc::new(Notify::new()),
        };
        let u = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let u = u.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let u = u.clone();
                        async move { Ok::<_, std::convert::Infallible>(u.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        up
    }

    pub fn set(&self, b: Behaviour) {
        *self.behaviour.lock().expect("lock") = b;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn answer(&self, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.headers().contains_key("upgrade") {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let (mut r, mut w) = tokio::io::split(&mut io);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            return Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(Full::new(Bytes::new()))
                .expect("response");
        }
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let behaviour = {
            let mut b = self.behaviour.lock().expect("lock");
            let now = b.clone();
            if let Behaviour::Fail { times, status } = &mut *b {
                if *times <= 1 {
                    let s = *status;
                    *b = Behaviour::Ok;
                    Behaviour::Status(s)
                } else {
                    *times -= 1;
                    Behaviour::Status(*status)
                }
            } else {
                now
            }
        };
        // Recorded with the answer it is about to get (0: none, it hangs).
        let answered = match &behaviour {
            Behaviour::Ok | Behaviour::OkWith(..) | Behaviour::Slow(_) => 200,
            Behaviour::Status(s) | Behaviour::Reply { status: s, .. } => *s,
            Behaviour::Hang | Behaviour::Fail { .. } => 0,
        };
        let rec = Recorded {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body: body.clone(),
            answered,
        };
        self.requests.lock().expect("lock").push(rec);
        self.changed.notify_waiters();
        let mut extra = None;
        match behaviour {
            Behaviour::Ok => {}
            Behaviour::OkWith(name, value) => extra = Some((name, value)),
            Behaviour::Fail { .. } => unreachable!("resolved above"),
            Behaviour::Hang => std::future::pending::<()>().await,
            Behaviour::Status(s) => {
                return Response::builder()
                    .status(s)
                    .body(Full::new(Bytes::from_static(b"no")))
                    .expect("response")
            }
            Behaviour::Slow(d) => pace(d).await,
            Behaviour::Reply {
                status,
                content_type,
                body,
            } => {
                return Response::builder()
                    .status(status)
                    .header("content-type", content_type)
                    .body(Full::new(body))
                    .expect("response")
            }
        }
        let mut resp = Response::builder()
            .status(200)
            .header("x-upstream", "yes")
            .header("connection", "x-upstream-hop")
            .header("x-upstream-hop", "must-not-cross");
        if let Some(ct) = parts.headers.get("content-type") {
            resp = resp.header("content-type", ct);
        }
        if let Some((name, value)) = extra {
            resp = resp.header(name, value);
        }
        resp.body(Full::new(body)).expect("response")
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    /// Requests to `path` (without query) seen so far.
    pub fn to_path(&self, path: &str) -> Vec<Recorded> {
        self.recorded()
            .into_iter()
            .filter(|r| r.uri.split('?').next() == Some(path))
            .collect()
    }

    /// Waits until at least `n` requests reached `path`, up to `limit`
    /// (stretched by patience); returns what reached it by then.
    pub async fn wait_for(&self, path: &str, n: usize, limit: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + patient(limit);
        loop {
            let got = self.to_path(path);
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), self.changed.notified()).await;
        }
    }
}
