//! Several replicas sharing one Redis: one forward per authorization, work
//! taken over from a replica that dies, and nothing acknowledged lost when
//! Redis restarts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

const FORWARD: &str = "/klarna/authorized";

/// How long a test watches for a second forward of an authorization that
/// must not come (a resend after a lease, a replica's late claim).
const SECOND_FORWARD: Duration = Duration::from_millis(1500);

/// Accepted (2xx) forwards per session id.
fn accepted_by_session(up: &Upstream) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in up
        .to_path(FORWARD)
        .into_iter()
        .filter(|r| (200..300).contains(&r.answered))
    {
        *m.entry(
            r.json()["session_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
        .or_insert(0) += 1;
    }
    m
}

/// Waits until `n` sessions were accepted, up to `limit` (times patience);
/// returns the accepted forwards per session by then.
async fn wait_accepted(up: &Upstream, n: usize, limit: Duration) -> HashMap<String, usize> {
    let waiting = Waiting::new(limit);
    loop {
        let m = accepted_by_session(up);
        if m.len() >= n || waiting.expired() {
            return m;
        }
        waiting.pause().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_callback_sent_to_two_replicas_is_forwarded_once() {
    const N: usize = 60;
    let dir = TempDir::new();
    let redis = RedisServer::start(dir.path());
    let up = Upstream::start().await;
    let store = redis.store_section("race:");
    let a = Arc::new(Authback::start_edited(&up.url(), |t| format!("{t}{store}"), false).await);
    let b = Arc::new(Authback::start_edited(&up.url(), |t| format!("{t}{store}"), false).await);
    let mut tasks = Vec::new();
    for i in 0..N {
        let (a, b) = (a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            let body = callback_body(&format!("sess-{i}"), &format!("tok-race-{i:04}"));
            let (ua, ub) = (a.mint(&format!("c{i}")), b.mint(&format!("c{i}")));
            let (ra, rb) = tokio::join!(a.callback(&ua, &body), b.callback(&ub, &body));
            (ra.0.as_u16(), rb.0.as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), (204, 204));
    }
    let seen = wait_accepted(&up, N, Duration::from_secs(15)).await;
    tokio::time::sleep(SECOND_FORWARD).await;
    let seen_after = accepted_by_session(&up);
    assert_eq!(seen.len(), N);
    let twice: Vec<_> = seen_after.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "forwarded more than once: {twice:?}");
    // Recorded once in total, however the race fell.
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    let acc = |m: &str| {
        metric(
            m,
            "authback_callbacks_total{route=\"klarna\",outcome=\"accepted\"}",
        )
        .unwrap_or(0.0)
    };
    let dup = |m: &str| {
        metric(
            m,
            "authback_callbacks_total{route=\"klarna\",outcome=\"duplicate\"}",
        )
        .unwrap_or(0.0)
    };
    assert_eq!(acc(&ma) + acc(&mb), N as f64);
    assert_eq!(dup(&ma) + dup(&mb), N as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_while_holding_work_is_taken_over_by_the_survivor() {
    const N: usize = 40;
    let dir = TempDir::new();
    let redis = RedisServer::start(dir.path());
    let up = Upstream::start().await;
    up.set(Behaviour::Hang);
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let (public, admin) = (free_port(), free_port());
        let text = on_ports(
            &base_config(&up.url(), &c, &k, &redis.store_section("kill:")),
            public,
            admin,
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, &text).expect("config");
        let child = spawn_binary(&path, &dir.path().join(format!("{name}.log")), &[]);
        let addr: SocketAddr = format!("127.0.0.1:{public}").parse().expect("addr");
        wait_tls(addr, &cert.der).await;
        replicas.push((child, addr, text));
    }
    let cfg = authback::Config::parse(&replicas[0].2, dir.path()).expect("config");
    let addr_a = replicas[0].1;
    for i in 0..N {
        let url = mint_path(&cfg, "klarna", &format!("c{i}"));
        let k = klarna_callback(
            addr_a,
            &cert.der,
            &url,
            &callback_body(&format!("sess-{i}"), &format!("tok-kill-{i:04}")),
        )
        .await;
        assert!(k.delivered);
    }
    // Replica a has taken work (its attempts hang); kill it mid-flight.
    eventually!(
        !up.to_path(FORWARD).is_empty(),
        "replica a's deliveries in flight"
    );
    let (mut a, _, _) = replicas.remove(0);
    a.kill().expect("SIGKILL");
    a.wait().expect("reaped");

    up.set(Behaviour::Ok);
    let seen = wait_accepted(&up, N, Duration::from_secs(30)).await;
    tokio::time::sleep(SECOND_FORWARD).await;
    let after = accepted_by_session(&up);
    assert_eq!(seen.len(), N, "the survivor delivered everything");
    let twice: Vec<_> = after.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "accepted more than once: {twice:?}");
    let (mut b, _, _) = replicas.remove(0);
    let _ = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", b.id())])
        .status();
    let _ = b.wait();
}

#[tokio::test]
async fn redis_down_means_503_and_a_restart_loses_nothing_acked() {
    let dir = TempDir::new();
    let mut redis = RedisServer::start(dir.path());
    let up = Upstream::start().await;
    up.set(Behaviour::Status(503));
    let store = redis.store_section("restart:");
    let ab = Authback::start_edited(&up.url(), |t| format!("{t}{store}"), false).await;
    let mut acked = Vec::new();
    for i in 0..20 {
        let s = format!("sess-{i}");
        assert_eq!(
            ab.callback(
                &ab.mint(&format!("c{i}")),
                &callback_body(&s, "tok-restart")
            )
            .await
            .0,
            204
        );
        acked.push(s);
    }

    // Redis goes away: callbacks are refused with 503 and readiness says so.
    redis.kill();
    let (status, _) = ab
        .callback(&ab.mint("down"), &callback_body("sess-down", "tok-restart"))
        .await;
    assert_eq!(
        status, 503,
        "never a 2xx for a callback that cannot be recorded"
    );
    let (ready, body) = ab.admin_get("/readyz/store").await.expect("readyz/store");
    assert_eq!(ready, 503, "{body}");
    assert!(body.contains("redis"), "{body}");
    assert_eq!(
        ab.admin_get("/readyz").await.expect("readyz").0,
        200,
        "the pod keeps serving the shop"
    );

    // It comes back with its append-only file: everything acked is there.
    redis.restart();
    assert!(
        ab.wait_store_up().await,
        "readyz/store recovers when redis is back"
    );
    eventually!(
        ab.callback(
            &ab.mint("after"),
            &callback_body("sess-after", "tok-restart"),
        )
        .await
        .0 == 204,
        "callbacks acknowledged again"
    );
    acked.push("sess-after".into());

    up.set(Behaviour::Ok);
    let seen = wait_accepted(&up, acked.len(), Duration::from_secs(30)).await;
    for s in &acked {
        assert_eq!(seen.get(s), Some(&1), "{s} delivered exactly once");
    }
    assert!(
        !seen.contains_key("sess-down"),
        "the refused callback was never recorded"
    );
}

/// Sends one command to Redis and returns its first reply line.
fn redis_command(port: u16, args: &[&str]) -> String {
    use std::io::{BufRead, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("redis");
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    tcp.write_all(cmd.as_bytes()).expect("send");
    let mut line = String::new();
    std::io::BufReader::new(tcp)
        .read_line(&mut line)
        .expect("reply");
    line
}

/// The backend takes a delivery, and Redis refuses writes before authback
/// can record that. The outcome waits out the refusal, longer than the
/// delivery's lease; when writes are back, this same process is handed the
/// delivery again. It must not send it a second time: the outcome it still
/// holds settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_waiting_out_a_redis_outage_is_not_sent_again() {
    let dir = TempDir::new();
    let redis = RedisServer::start(dir.path());
    let up = Upstream::start().await;
    // The 2xx comes 700 ms after the request: time to stop Redis's writes.
    up.set(Behaviour::Slow(Duration::from_millis(700)));
    let store = redis.store_section("outage:");
    // A lease of attempt_timeout x 2 + 5 s = 7 s: Redis's outage lasts
    // longer.
    const PAST_THE_LEASE: Duration = Duration::from_secs(8);
    let edit = |t: String| {
        format!(
            "{}{store}",
            t.replace("attempt_timeout = \"500ms\"", "attempt_timeout = \"1s\"")
        )
    };
    let ab = Authback::start_edited(&up.url(), edit, false).await;
    let (status, _) = ab
        .callback(&ab.mint("c1"), &callback_body("sess-outage", "tok-outage"))
        .await;
    assert_eq!(status, 204);
    up.wait_for(FORWARD, 1, Duration::from_secs(10)).await;
    // Without a replica, every write (scripts included) is now refused.
    let set = |n: &str| redis_command(redis.port, &["CONFIG", "SET", "min-replicas-to-write", n]);
    assert_eq!(set("1").trim(), "+OK");
    // Past the lease: the delivery is due again in Redis's eyes.
    pace(PAST_THE_LEASE).await;
    assert_eq!(set("0").trim(), "+OK");
    // The outcome is recorded once writes are back...
    eventually!(
        matches!(
            ab.admin_get("/v1/deliveries?state=delivered").await,
            Ok((200, body)) if body.contains("sess-outage")
        ),
        "the 2xx recorded after the outage"
    );
    // ...and the backend saw the authorization once.
    tokio::time::sleep(SECOND_FORWARD).await;
    assert_eq!(
        up.to_path(FORWARD).len(),
        1,
        "sent again while its first outcome waited to be recorded"
    );
}
