//! A shop backend for order-watch tests: it receives authback's deliveries
//! at `/klarna/authorized` and places orders at the simulated Klarna the
//! way a real backend does (create-order over HTTPS), or lies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::KlarnaApi;

/// What the test shop does with a delivery.
#[derive(Clone, Copy, Debug)]
pub enum Places {
    /// Places the order at once (calls create-order), then answers 200.
    AtOnce,
    /// Answers 200 and never places it: a lying plugin.
    Never,
    /// Answers 200; places the order only on a redelivery.
    OnRedelivery,
    /// Lies (answers 200 without placing it) on one answer in `n`, chosen
    /// by a hash of the session and the attempt, so a run is repeatable.
    LiesOneIn(u64),
}

/// One delivery the shop received.
#[derive(Clone, Debug)]
pub struct Got {
    pub session: String,
    pub key: String,
    pub redelivery: Option<String>,
    /// `Authback-Released`, on a release notice.
    pub released: Option<String>,
    /// The body's `type`.
    pub kind: String,
}

/// A shop backend at `/klarna/authorized` that places orders at Klarna.
#[derive(Clone)]
pub struct Shop {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    policy: Arc<Mutex<HashMap<String, Places>>>,
    /// While set, every delivery is answered 503 (and recorded).
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl Shop {
    pub async fn start(api: KlarnaApi) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let shop = Shop {
            addr: listener.local_addr().expect("addr"),
            got: Arc::default(),
            policy: Arc::default(),
            failing: Arc::default(),
        };
        let s = shop.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (s, api) = (s.clone(), api.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (s, api) = (s.clone(), api.clone());
                        async move { Ok::<_, std::convert::Infallible>(s.handle(req, &api).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        shop
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn places(&self, session: &str, p: Places) {
        self.policy
            .lock()
            .expect("lock")
            .insert(session.to_string(), p);
    }

    /// From now on, answers every delivery 503 (`true`), or as its policy
    /// says (`false`).
    pub fn failing(&self, on: bool) {
        self.failing.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every delivery received so far.
    pub fn all(&self) -> Vec<Got> {
        self.got.lock().expect("lock").clone()
    }

    pub fn got(&self, session: &str) -> Vec<Got> {
        let got = self.got.lock().expect("lock");
        got.iter()
            .filter(|g| g.session == session)
            .cloned()
            .collect()
    }

    async fn handle(&self, req: Request<Incoming>, api: &KlarnaApi) -> Response<Full<Bytes>> {
        let header = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let (key, redelivery, released) = (
            header("idempotency-key").unwrap_or_default(),
            header("authback-redelivery"),
            header("authback-released"),
        );
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let session = v["session_id"].as_str().unwrap_or_default().to_string();
        let token = v["authorization_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let policy = self.policy.lock().expect("lock").get(&session).copied();
        let place = match policy {
            Some(Places::AtOnce) => true,
            Some(Places::OnRedelivery) => redelivery.is_some(),
            Some(Places::LiesOneIn(n)) => {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (&session, redelivery.is_some()).hash(&mut h);
                h.finish() % n.max(1) != 0
            }
            Some(Places::Never) | None => false,
        };
        self.got.lock().expect("lock").push(Got {
            session,
            key,
            redelivery,
            released,
            kind: v["type"].as_str().unwrap_or_default().to_string(),
        });
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            let mut r = Response::new(Full::new(Bytes::from_static(b"down")));
            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            return r;
        }
        if place {
            api.create_order(&token).await;
        }
        Response::new(Full::new(Bytes::from_static(b"ok")))
    }
}
