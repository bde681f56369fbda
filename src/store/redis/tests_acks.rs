//! The replicas' acknowledgement (`store.min_replicas_acked`) against a
//! real primary and replica: a replica held with SIGSTOP acknowledges
//! nothing, so what needs it is refused or counted, and once it runs again
//! the same callback's retry is acknowledged.

use std::time::Duration;

use super::dial::RedisConnect;
use super::tests::delivery;
use super::RedisStore;
use crate::store::api::Store;
use crate::store::model::{AttemptOutcome, Claim, Delivery, StoreError};
use crate::store::queue::{Attempted, Queues};
use crate::store::replication::AckOperation;
use crate::types::unix_ms;

const HOUR: Duration = Duration::from_secs(3600);

/// A redis-server on a free port, in a folder of its own (a replica's full
/// sync writes a file there), stopped (and continued first, if held) when
/// the test ends.
struct Server {
    port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = std::env::temp_dir().join(format!("authback-acks-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (CI installs it; locally: apt-get install redis-server)");
        let server = Server { port, dir, child };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start");
    }

    /// A replica of `primary`, once it has caught up.
    fn replica_of(primary: &Server) -> Self {
        let p = primary.port.to_string();
        let replica = Server::start(&["--replicaof", "127.0.0.1", &p]);
        for _ in 0..500 {
            if replica.info().contains("master_link_status:up") {
                return replica;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the replica never caught up");
    }

    fn info(&self) -> String {
        let c = redis::Client::open(format!("redis://127.0.0.1:{}/0", self.port));
        c.and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("INFO").arg("replication").query(&mut c))
            .unwrap_or_default()
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to the server.
    fn signal(&self, sig: &str) -> bool {
        std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A store on this primary that waits for one replica.
    async fn store(&self) -> RedisStore {
        let to = RedisConnect {
            min_replicas_acked: 1,
            replica_ack_timeout: Duration::from_millis(200),
            ..RedisConnect::url(&format!("redis://127.0.0.1:{}/0", self.port))
        };
        RedisStore::connect(&to, "t:", HOUR, HOUR, HOUR)
            .await
            .expect("open")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn failures(s: &RedisStore, op: AckOperation) -> u64 {
    s.replication()
        .map_or(0, |r| r.figures().ack_failures[op as usize])
}

/// Claims `d` until the replica acknowledges it, up to 10 s.
async fn claim_acknowledged(s: &RedisStore, d: &Delivery) -> Claim {
    for _ in 0..100 {
        if let Ok(c) = s.claim(d.clone()).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never acknowledged");
}

#[tokio::test]
async fn a_claim_no_replica_acknowledged_is_refused_and_so_is_its_retry_until_one_does() {
    let primary = Server::start(&[]);
    let replica = Server::replica_of(&primary);
    let s = primary.store().await;
    assert_eq!(
        s.claim(delivery("sess-ok")).await.expect("acked"),
        Claim::Recorded
    );

    assert!(replica.signal("-STOP"));
    let held = delivery("sess-held");
    let e = s
        .claim(held.clone())
        .await
        .expect_err("no replica acknowledged");
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("0 of 1 replicas"), "{e}");
    // Its retry finds the record, and still waits for the replica.
    s.claim(held.clone())
        .await
        .expect_err("a duplicate waits too");
    assert_eq!(failures(&s, AckOperation::Claim), 2);

    assert!(replica.signal("-CONT"));
    assert_eq!(claim_acknowledged(&s, &held).await, Claim::Duplicate);
    // Now it is seen here, and answered without Redis.
    assert_eq!(s.claim(held).await.expect("seen"), Claim::Duplicate);
    assert_eq!(failures(&s, AckOperation::Claim), 2);
}

#[tokio::test]
async fn a_duplicate_of_a_record_another_replica_wrote_waits_for_that_record() {
    let primary = Server::start(&[]);
    let replica = Server::replica_of(&primary);
    // An authback that waits for no replica records it while the replica
    // is held, so the replica lacks it...
    let quick = RedisStore::open(
        &format!("redis://127.0.0.1:{}/0", primary.port),
        "t:",
        HOUR,
        HOUR,
        HOUR,
    )
    .await
    .expect("open");
    let waiting = primary.store().await;
    assert!(replica.signal("-STOP"));
    let d = delivery("sess-elsewhere");
    assert_eq!(
        quick.claim(d.clone()).await.expect("no wait"),
        Claim::Recorded
    );
    // ...and one that waits must not answer its duplicate 2xx: nothing it
    // wrote itself says the replica has the record.
    waiting
        .claim(d.clone())
        .await
        .expect_err("the record is not on the replica");
    assert!(replica.signal("-CONT"));
    assert_eq!(claim_acknowledged(&waiting, &d).await, Claim::Duplicate);
}

#[tokio::test]
async fn an_outcome_no_replica_acknowledged_is_recorded_and_counted() {
    let primary = Server::start(&[]);
    let replica = Server::replica_of(&primary);
    let s = primary.store().await;
    let d = delivery("sess-outcome");
    assert_eq!(s.claim(d.clone()).await.expect("acked"), Claim::Recorded);
    s.deliveries().take(u64::MAX / 2, 10).await.expect("take");
    assert!(replica.signal("-STOP"));
    let done = Attempted {
        outcome: AttemptOutcome::Delivered {
            at: unix_ms(),
            watch_from: None,
        },
        log: crate::store::model::Attempt {
            at: unix_ms(),
            duration_ms: 1,
            status: Some(200),
            error: None,
            retry_in_ms: None,
            redelivery: false,
            response: None,
        },
    };
    s.deliveries()
        .finish(d.id, 1, done)
        .await
        .expect("the backend answered: recorded whatever the replicas say");
    assert_eq!(failures(&s, AckOperation::Outcome), 1);
    assert_eq!(failures(&s, AckOperation::Claim), 0);
    assert!(replica.signal("-CONT"));
}
