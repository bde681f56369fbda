//! Chaos: the real binary on the file store is `kill -9`ed and restarted at
//! random while 8 clients send distinct callbacks the way Klarna does, and
//! the backend answers 503, resets the connection, hangs or accepts at
//! random. At the end every callback that got a 2xx has been forwarded and
//! accepted, always with one `Idempotency-Key`; a callback accepted twice is
//! allowed only where authback was killed between the backend's 2xx and
//! recording it: each run of the binary reaches the backend on a port of its
//! own, so two acceptances by the same run are a duplicate no kill explains.
//!
//! The suite runs it small. `benches/chaos.sh` runs it for longer; set
//! `AUTHBACK_CHAOS_SECS` and `AUTHBACK_CHAOS_SEED` to do the same by hand.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::common::*;

const FORWARD: &str = "/klarna/authorized";

/// How long the test watches for a resend that must not come, once every
/// acknowledged callback was accepted.
const STRAY_RESEND: Duration = Duration::from_millis(500);

/// A small xorshift generator: the test needs no cryptographic randomness,
/// only a seed it can print so that a run can be repeated.
struct Rng(AtomicU64);

impl Rng {
    fn next(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.store(x, Ordering::Relaxed);
        x
    }
    fn below(&self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Answer {
    Accept,
    Unavailable,
    Reset,
    Hang,
}

struct Seen {
    path: String,
    key: String,
    session: String,
    answer: Answer,
    /// Which run of authback sent it: the backend port it came in on.
    run: usize,
}

/// The backend: answers each forward at random while `chaos` is set, and
/// accepts everything once it is cleared.
#[derive(Clone)]
struct ChaosUpstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    chaos: Arc<AtomicBool>,
    rng: Arc<Rng>,
}

impl ChaosUpstream {
    fn new(seed: u64) -> Self {
        ChaosUpstream {
            seen: Arc::default(),
            chaos: Arc::new(AtomicBool::new(true)),
            rng: Arc::new(Rng(AtomicU64::new(seed | 1))),
        }
    }

    /// A new port for authback's run `run`: what comes in on it is that run's.
    async fn listen(&self, run: usize) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        let u = self.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                // Closing with SO_LINGER 0 sends a reset, not a FIN.
                let _ = tcp.set_zero_linger();
                let u = u.clone();
                let reset = Arc::new(Notify::new());
                tokio::spawn(async move {
                    let r = reset.clone();
                    let svc = service_fn(move |req| {
                        let (u, r) = (u.clone(), r.clone());
                        async move { u.answer(req, &r, run).await }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = reset.notified() => {}
                    }
                });
            }
        });
        port
    }

    async fn answer(
        &self,
        req: Request<Incoming>,
        reset: &Notify,
        run: usize,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let path = req.uri().path().to_string();
        let key = req
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let session = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["session_id"].as_str().map(str::to_string))
            .unwrap_or_default();
        let answer = if self.chaos.load(Ordering::Relaxed) {
            match self.rng.below(10) {
                0..=4 => Answer::Accept,
                5..=6 => Answer::Unavailable,
                7..=8 => Answer::Reset,
                _ => Answer::Hang,
            }
        } else {
            Answer::Accept
        };
        self.seen.lock().expect("lock").push(Seen {
            path,
            key,
            session,
            answer,
            run,
        });
        let status = match answer {
            Answer::Accept => 200,
            Answer::Unavailable => 503,
            Answer::Reset => {
                reset.notify_one();
                std::future::pending::<()>().await;
                unreachable!("the connection is dropped")
            }
            Answer::Hang => {
                // Longer than the attempt timeout: authback gives up first.
                pace(Duration::from_secs(8)).await;
                503
            }
        };
        Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("response"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill_9_and_a_flaky_backend_lose_nothing_acknowledged() {
    let secs: u64 = std::env::var("AUTHBACK_CHAOS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("AUTHBACK_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(authback::types::unix_ms);
    const CLIENTS: usize = 8;
    let rng = Arc::new(Rng(AtomicU64::new(seed | 1)));

    let dir = TempDir::new();
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let (public, admin) = (free_port(), free_port());
    let store = format!(
        "[store]\nkind = \"file\"\npath = \"{}\"\n",
        dir.path().join("data/authback.db").display()
    );
    // The attempt timeout is long enough that a 2xx answered at once is never
    // taken for a timeout on a loaded machine: then every duplicate has a
    // kill to explain it. Hangs outlast it.
    let config_for = move |upstream_port: u16| {
        on_ports(
            &base_config(&format!("http://127.0.0.1:{upstream_port}"), &c, &k, &store)
                .replace("attempt_timeout = \"500ms\"", "attempt_timeout = \"5s\""),
            public,
            admin,
        )
    };
    let up = ChaosUpstream::new(seed.rotate_left(17));
    let (path, cfg, addr) = write_config(dir.path(), &config_for(up.listen(0).await), public);

    // The killer: SIGKILL at a random moment, restart at once, again and again.
    // Each run gets a backend port of its own, so the backend knows which
    // run sent what.
    let kills = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let runs = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (kills, running, runs, rng, path, logs, up) = (
            kills.clone(),
            running.clone(),
            runs.clone(),
            rng.clone(),
            path.clone(),
            dir.path().to_path_buf(),
            up.clone(),
        );
        tokio::spawn(async move {
            loop {
                let n = runs.fetch_add(1, Ordering::Relaxed);
                if n > 0 {
                    std::fs::write(&path, config_for(up.listen(n).await)).expect("config");
                }
                let mut child = spawn_binary(&path, &logs.join(format!("run{n}.log")), &[]);
                if !running.load(Ordering::Relaxed) {
                    return child;
                }
                // A run lives 0.3 to 1.5 s.
                pace(Duration::from_millis(300 + rng.below(1200))).await;
                if !running.load(Ordering::Relaxed) {
                    return child;
                }
                child.kill().expect("SIGKILL");
                child.wait().expect("reaped");
                kills.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // Eight Klarnas, each sending distinct callbacks until time is up.
    let end = Instant::now() + Duration::from_secs(secs);
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..CLIENTS {
        let (next, cfg, ca) = (next.clone(), cfg.clone(), cert.der.clone());
        senders.push(tokio::spawn(async move {
            let (mut acked, mut refused) = (Vec::new(), 0usize);
            while Instant::now() < end {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let url = mint_path(&cfg, "klarna", &format!("cart-{i}"));
                let body = callback_body(&format!("chaos-{i}"), &format!("tok-chaos-{i:06}"));
                if klarna_callback(addr, &ca, &url, &body).await.delivered {
                    acked.push(i);
                } else {
                    refused += 1;
                }
            }
            (acked, refused)
        }));
    }
    let (mut acked, mut not_acked) = (HashSet::new(), 0usize);
    for s in senders {
        let (a, r) = s.await.expect("sender");
        acked.extend(a);
        not_acked += r;
    }
    running.store(false, Ordering::Relaxed);
    let mut last = killer.await.expect("killer");

    // The backend recovers; everything acknowledged must now arrive.
    up.chaos.store(false, Ordering::Relaxed);
    let accepted_sessions = || -> HashSet<String> {
        up.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.answer == Answer::Accept)
            .map(|s| s.session.clone())
            .collect()
    };
    let waiting = Waiting::new(Duration::from_secs(90));
    loop {
        let got = accepted_sessions();
        if acked.iter().all(|i| got.contains(&format!("chaos-{i}"))) || waiting.expired() {
            break;
        }
        waiting.pause().await;
    }
    // Give a stray resend time to show up before counting duplicates.
    tokio::time::sleep(STRAY_RESEND).await;
    let _ = last.kill();
    let _ = last.wait();

    let seen = std::mem::take(&mut *up.seen.lock().expect("lock"));
    let kills = kills.load(Ordering::Relaxed);
    let mut answers: HashMap<Answer, usize> = HashMap::new();
    let mut keys: HashMap<&str, HashSet<&str>> = HashMap::new();
    // Per session, the runs of authback whose forwards the backend accepted.
    let mut accepted: HashMap<&str, Vec<usize>> = HashMap::new();
    for s in &seen {
        assert_eq!(
            s.path, FORWARD,
            "only normalized forwards reach the backend"
        );
        *answers.entry(s.answer).or_default() += 1;
        keys.entry(&s.session).or_default().insert(&s.key);
        if s.answer == Answer::Accept {
            accepted.entry(&s.session).or_default().push(s.run);
        }
    }
    let lost: Vec<usize> = acked
        .iter()
        .copied()
        .filter(|i| !accepted.contains_key(format!("chaos-{i}").as_str()))
        .collect();
    // A second acceptance is explained only by a kill: the run that was
    // accepted first died before recording it, and a later run sent it again.
    // Two acceptances by one run have no such excuse.
    let (mut after_kill, mut unexplained) = (0usize, Vec::new());
    for (session, runs) in &accepted {
        let mut by_run: HashMap<usize, usize> = HashMap::new();
        for r in runs {
            *by_run.entry(*r).or_default() += 1;
        }
        after_kill += by_run.len() - 1;
        for (run, n) in by_run {
            if n > 1 {
                unexplained.push(format!("{session} accepted {n} times from run {run}"));
            }
        }
    }
    let delivered = accepted.len();
    eprintln!(
        "chaos: seed={seed} secs={secs} clients={CLIENTS} runs={} kills={} callbacks={} acked={} not_acked={not_acked} \
         backend: accept={} 503={} reset={} hang={} delivered={delivered} \
         duplicates: after_kill={after_kill} other={} lost={}",
        runs.load(Ordering::Relaxed),
        kills,
        acked.len() + not_acked,
        acked.len(),
        answers.get(&Answer::Accept).copied().unwrap_or(0),
        answers.get(&Answer::Unavailable).copied().unwrap_or(0),
        answers.get(&Answer::Reset).copied().unwrap_or(0),
        answers.get(&Answer::Hang).copied().unwrap_or(0),
        unexplained.len(),
        lost.len(),
    );
    assert!(kills > 0, "the run killed authback at least once");
    assert!(
        acked.len() >= 10,
        "too few callbacks got through to judge: {}",
        acked.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged but never accepted by the backend: {lost:?}"
    );
    assert!(
        unexplained.is_empty(),
        "forwarded twice by one run of authback: {unexplained:?}"
    );
    for (session, k) in &keys {
        assert_eq!(
            k.len(),
            1,
            "{session} was forwarded under several idempotency keys: {k:?}"
        );
        assert!(
            k.iter().all(|k| !k.is_empty()),
            "{session} was forwarded without an idempotency key"
        );
    }
    // Only acknowledged callbacks may reach the backend... or ones whose
    // 2xx was lost with a kill after the record was on disk.
    assert!(delivered >= acked.len());
}
