//! The failover drill: a Redis primary and one replica, three sentinels,
//! two authbacks on the redis store through the sentinels, a backend that
//! counts what it receives by `Idempotency-Key`, and a Klarna sending
//! distinct callbacks without pause. Each failover: the replica is held
//! (SIGSTOP) and its link cut, so what the primary takes from then on is
//! on the primary alone (on loopback the kernel's socket buffers would
//! otherwise carry it across, and nothing could be lost); the backend
//! answers 503 meanwhile, so those callbacks stay undelivered; then the
//! primary is killed (`kill -9`), the replica let go, the sentinels
//! promote it, and the old primary comes back as its replica.
//!
//! Every callback answered 2xx must reach the backend: `lost` counts those
//! that did not. Used by `tests/it/failover.rs` (short) and
//! `benches/failover.rs` (longer, with the figures).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use tokio::task::block_in_place as blocking;

use super::{
    callback_body, eventually, metric, mint_path, pace, tls_connect, Authback, Behaviour,
    RedisServer, Sentinels, TempDir, Upstream,
};

const FORWARD: &str = "/klarna/authorized";

/// What one drill does.
#[derive(Debug, Clone)]
pub struct Drill {
    /// `store.min_replicas_acked`.
    pub min_replicas_acked: u32,
    pub failovers: usize,
    /// Concurrent Klarna senders.
    pub senders: usize,
    /// How long the replica is held before the primary is killed.
    pub held: Duration,
    /// Callbacks answered 2xx before each failover starts.
    pub steady: usize,
}

/// What a drill measured.
#[derive(Debug, Default)]
pub struct Figures {
    pub failovers: usize,
    /// `authback_store_failovers_total`, the largest of the two authbacks.
    pub failovers_counted: u64,
    /// Distinct callbacks sent, and how many got a 2xx.
    pub callbacks: usize,
    pub acknowledged: usize,
    /// Attempts answered something else than 2xx (or nothing).
    pub refused: usize,
    /// Acknowledged, never received by the backend.
    pub lost: Vec<String>,
    /// Requests the backend accepted again for an `Idempotency-Key` it had.
    pub duplicates: usize,
    /// From each kill to the sentinels' agreeing on the new primary.
    pub promoted_after_kill: Vec<Duration>,
    /// From each kill to the first 2xx for an attempt sent after it.
    pub first_2xx_after_kill: Vec<Duration>,
    /// `authback_store_replica_ack_failures_total`, both authbacks summed.
    pub ack_failures_claim: f64,
    pub ack_failures_outcome: f64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |ds: &[Duration]| {
            let v: Vec<String> = ds
                .iter()
                .map(|d| format!("{:.2}s", d.as_secs_f64()))
                .collect();
            v.join(", ")
        };
        write!(
            f,
            "failovers {} (counted {}), callbacks {}, acknowledged {}, refused attempts {}, lost {}, duplicates {}, kill to promotion [{}], kill to first 2xx [{}], replica ack failures: claim {} outcome {}",
            self.failovers,
            self.failovers_counted,
            self.callbacks,
            self.acknowledged,
            self.refused,
            self.lost.len(),
            self.duplicates,
            secs(&self.promoted_after_kill),
            secs(&self.first_2xx_after_kill),
            self.ack_failures_claim,
            self.ack_failures_outcome
        )
    }
}

/// One attempt of one callback: when it was sent, when answered, how.
#[derive(Clone, Copy)]
struct Attempt {
    sent: Instant,
    answered: Instant,
    status: Option<u16>,
}

/// What Klarna sent, by session.
#[derive(Default)]
struct Ledger {
    attempts: Mutex<Vec<(String, Attempt)>>,
    next: AtomicUsize,
    stop: AtomicBool,
}

impl Ledger {
    fn acknowledged(&self) -> HashSet<String> {
        let a = self.attempts.lock().expect("ledger");
        a.iter()
            .filter(|(_, t)| t.status.is_some_and(|s| (200..300).contains(&s)))
            .map(|(s, _)| s.clone())
            .collect()
    }

    fn first_2xx_sent_after(&self, at: Instant) -> Option<Duration> {
        let a = self.attempts.lock().expect("ledger");
        a.iter()
            .filter(|(_, t)| t.sent >= at && t.status.is_some_and(|s| (200..300).contains(&s)))
            .map(|(_, t)| t.answered - at)
            .min()
    }
}

/// An authback to send to: its address, a callback path, its certificate.
type Target = (SocketAddr, String, CertificateDer<'static>);

/// One POST over a fresh TLS connection, within Klarna's 2 s limits.
async fn post(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    path: &str,
    body: &str,
) -> Option<u16> {
    let exchange = async {
        let io = tls_connect(addr, ca, &[b"http/1.1"]).await.ok()?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .ok()?;
        Some(send.send_request(req).await.ok()?.status().as_u16())
    };
    tokio::time::timeout(Duration::from_secs(4), exchange)
        .await
        .ok()
        .flatten()
}

/// Klarna: distinct callbacks, one after another, each tried up to three
/// times (1 s, then 2 s apart) until a 2xx, spread over `targets`.
async fn sender(ledger: Arc<Ledger>, targets: Arc<Vec<Target>>) {
    while !ledger.stop.load(Ordering::Relaxed) {
        let i = ledger.next.fetch_add(1, Ordering::Relaxed);
        let session = format!("sess-fo-{i:06}");
        let body = callback_body(&session, &format!("tok-fo-{i:06}"));
        let (addr, path, ca) = &targets[i % targets.len()];
        let mut pause = Duration::from_secs(1);
        for attempt in 1..=3 {
            let sent = Instant::now();
            let status = post(*addr, ca, path, &body).await;
            let answered = Instant::now();
            ledger.attempts.lock().expect("ledger").push((
                session.clone(),
                Attempt {
                    sent,
                    answered,
                    status,
                },
            ));
            if status.is_some_and(|s| (200..300).contains(&s)) || attempt == 3 {
                break;
            }
            pace(pause).await;
            pause *= 2;
        }
    }
}

/// The primary and replica, by index into `nodes`.
struct Pair {
    nodes: [RedisServer; 2],
    primary: usize,
}

impl Drill {
    pub async fn run(&self) -> Figures {
        let dir = TempDir::new();
        let (da, db, ds) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("s"),
        );
        for d in [&da, &db, &ds] {
            std::fs::create_dir_all(d).expect("dir");
        }
        // Starting servers and asking them blocks: off the runtime's workers.
        let a = RedisServer::start(&da);
        let b = blocking(|| RedisServer::replica_of(&db, a.port));
        let sentinels = blocking(|| Sentinels::start(&ds, "authback", a.port));
        eventually!(
            blocking(|| sentinels.replicas_known()) >= 1,
            "the sentinels to know the replica"
        );
        let mut pair = Pair {
            nodes: [a, b],
            primary: 0,
        };
        let up = Upstream::start().await;
        let store = format!(
            "[store]\nkind = \"redis\"\nsentinels = {}\nmaster_name = \"authback\"\nkey_prefix = \"fo:\"\nmin_replicas_acked = {}\n",
            sentinels.toml_list(),
            self.min_replicas_acked
        );
        let mut authbacks = Vec::new();
        for _ in 0..2 {
            let s = store.clone();
            authbacks
                .push(Authback::start_edited(&up.url(), move |t| format!("{t}{s}"), false).await);
        }
        let targets: Vec<Target> = authbacks
            .iter()
            .enumerate()
            .map(|(i, ab)| {
                let path = mint_path(&ab.config, "klarna", &format!("fo-{i}"));
                (ab.public, path, ab.ca.clone())
            })
            .collect();
        let (targets, ledger) = (Arc::new(targets), Arc::new(Ledger::default()));
        let senders: Vec<_> = (0..self.senders)
            .map(|_| tokio::spawn(sender(ledger.clone(), targets.clone())))
            .collect();
        let mut figures = Figures::default();
        for _ in 0..self.failovers {
            let (promoted, first) = self.fail_over(&mut pair, &sentinels, &up, &ledger).await;
            figures.promoted_after_kill.push(promoted);
            figures.first_2xx_after_kill.push(first);
            figures.failovers += 1;
        }
        ledger.stop.store(true, Ordering::Relaxed);
        for s in senders {
            let _ = s.await;
        }
        self.settle(&authbacks, &up, &ledger, figures).await
    }

    /// One failover: steady traffic, the replica held and cut off, the
    /// primary killed, the replica promoted, the old primary back as its
    /// replica. Returns the times from the kill to the promotion and to the
    /// first 2xx after it.
    async fn fail_over(
        &self,
        pair: &mut Pair,
        sentinels: &Sentinels,
        up: &Upstream,
        ledger: &Ledger,
    ) -> (Duration, Duration) {
        let before = ledger.acknowledged().len();
        eventually!(
            ledger.acknowledged().len() >= before + self.steady,
            "{} callbacks acknowledged before the failover",
            self.steady
        );
        // Only a settled pair is failed over: the sentinels agree on the
        // primary and see it and its replica up.
        let primary = pair.nodes[pair.primary].port;
        eventually!(
            blocking(|| sentinels.settled_on(primary)),
            "the sentinels to settle on the primary on port {primary}"
        );
        let (p, r) = (pair.primary, 1 - pair.primary);
        assert!(pair.nodes[r].signal("-STOP"), "hold the replica");
        // Its link cut: from here on, writes reach the primary alone.
        blocking(|| pair.nodes[p].cli(&["CLIENT", "KILL", "TYPE", "replica"]));
        up.set(Behaviour::Status(503));
        pace(self.held).await;
        pair.nodes[p].kill();
        let killed = Instant::now();
        assert!(pair.nodes[r].signal("-CONT"), "let the replica go");
        let new_port = pair.nodes[r].port;
        eventually!(
            within: Duration::from_secs(30),
            blocking(|| sentinels.agreed_primary()) == Some(new_port),
            "the sentinels to promote the replica on port {new_port}"
        );
        let promoted = killed.elapsed();
        up.set(Behaviour::Ok);
        blocking(|| pair.nodes[p].restart_as_replica_of(new_port));
        pair.primary = r;
        eventually!(
            within: Duration::from_secs(30),
            ledger.first_2xx_sent_after(killed).is_some(),
            "a callback acknowledged after the kill"
        );
        eventually!(
            blocking(|| sentinels.replicas_known()) >= 1,
            "the sentinels to know the old primary as a replica"
        );
        let first = ledger.first_2xx_sent_after(killed).unwrap_or_default();
        (promoted, first)
    }

    /// Waits for the outbox to empty, then counts.
    async fn settle(
        &self,
        authbacks: &[Authback],
        up: &Upstream,
        ledger: &Ledger,
        mut figures: Figures,
    ) -> Figures {
        let depth = |page: &str| metric(page, "authback_delivery_queue_depth").unwrap_or(-1.0);
        eventually!(
            within: Duration::from_secs(60),
            depth(&authbacks[0].metrics().await) == 0.0,
            "every recorded callback delivered"
        );
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut delivered = HashSet::new();
        for r in up
            .to_path(FORWARD)
            .into_iter()
            .filter(|r| r.answered == 200)
        {
            *by_key
                .entry(r.header("idempotency-key").unwrap_or_default().to_string())
                .or_default() += 1;
            delivered.insert(
                r.json()["session_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        let acknowledged = ledger.acknowledged();
        {
            let attempts = ledger.attempts.lock().expect("ledger");
            figures.callbacks = attempts
                .iter()
                .map(|(s, _)| s)
                .collect::<HashSet<_>>()
                .len();
            figures.refused = attempts
                .iter()
                .filter(|(_, t)| !t.status.is_some_and(|s| (200..300).contains(&s)))
                .count();
        }
        figures.acknowledged = acknowledged.len();
        let mut lost: Vec<String> = acknowledged.difference(&delivered).cloned().collect();
        lost.sort();
        figures.lost = lost;
        figures.duplicates = by_key.values().map(|n| n - 1).sum();
        for ab in authbacks {
            let page = ab.metrics().await;
            let m = |series: &str| metric(&page, series).unwrap_or(0.0);
            figures.failovers_counted = figures
                .failovers_counted
                .max(m("authback_store_failovers_total") as u64);
            figures.ack_failures_claim +=
                m("authback_store_replica_ack_failures_total{operation=\"claim\"}");
            figures.ack_failures_outcome +=
                m("authback_store_replica_ack_failures_total{operation=\"outcome\"}");
        }
        figures
    }
}
