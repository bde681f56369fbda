//! The file store keeps its promise: a 204 means on disk. Crashes and a full
//! filesystem lose nothing that was acknowledged.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

const FORWARD: &str = "/klarna/authorized";

/// How long a test watches, after a restart, for a second forward of what
/// the first run already delivered.
const RESEND: Duration = Duration::from_millis(500);

fn store_section(db: &Path) -> String {
    format!("[store]\nkind = \"file\"\npath = \"{}\"\n", db.display())
}

/// Sends `n` distinct callbacks from `clients` concurrent senders; returns the
/// index of each callback that got a 2xx.
async fn send_many(
    addr: SocketAddr,
    ca: &rustls::pki_types::CertificateDer<'static>,
    urls: Arc<Vec<String>>,
    clients: usize,
) -> HashSet<usize> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, urls, ca) = (next.clone(), urls.clone(), ca.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= urls.len() {
                    return acked;
                }
                let body = callback_body(&format!("sess-{i}"), &format!("tok-crash-{i:06}"));
                if klarna_callback(addr, &ca, &urls[i], &body).await.delivered {
                    acked.push(i);
                }
            }
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        all.extend(t.await.expect("sender"));
    }
    all
}

/// Accepted (2xx) forwards per session id.
fn forwards_by_session(up: &Upstream) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in up
        .to_path(FORWARD)
        .into_iter()
        .filter(|r| (200..300).contains(&r.answered))
    {
        let s = r.json()["session_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *m.entry(s).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acked_and_nothing_is_forwarded_twice() {
    const N: usize = 500;
    let dir = TempDir::new();
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let (public, admin, upstream_port) = (free_port(), free_port(), free_port());
    let text = on_ports(
        &base_config(
            &format!("http://127.0.0.1:{upstream_port}"),
            &c,
            &k,
            &store_section(&dir.path().join("data/authback.db")),
        ),
        public,
        admin,
    );
    let (path, cfg, addr) = write_config(dir.path(), &text, public);
    let urls: Arc<Vec<String>> = Arc::new(
        (0..N)
            .map(|i| mint_path(&cfg, "klarna", &format!("cart-{i}")))
            .collect(),
    );

    // Run 1: the upstream is down, so every acknowledged callback is pending when we kill -9.
    let mut first = spawn_binary(&path, &dir.path().join("run1.log"), &[]);
    wait_tls(addr, &cert.der).await;
    let acked = send_many(addr, &cert.der, urls.clone(), 8).await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    assert_eq!(acked.len(), N, "every callback was acknowledged");

    // Run 2: the upstream is up; every acknowledged callback arrives exactly once.
    let up = Upstream::start_on(format!("127.0.0.1:{upstream_port}").parse().expect("addr")).await;
    let mut second = spawn_binary(&path, &dir.path().join("run2.log"), &[]);
    wait_tls(addr, &cert.der).await;
    // Klarna retries one it already delivered: acknowledged, not forwarded again.
    let again = klarna_callback(
        addr,
        &cert.der,
        &urls[7],
        &callback_body("sess-7", "tok-crash-000007"),
    )
    .await;
    assert!(again.delivered);
    up.wait_for(FORWARD, N, Duration::from_secs(60)).await;
    tokio::time::sleep(RESEND).await;
    let seen = forwards_by_session(&up);
    let missing: Vec<usize> = acked
        .iter()
        .copied()
        .filter(|i| !seen.contains_key(&format!("sess-{i}")))
        .collect();
    let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}"
    );
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(seen.len(), N);
    // And once more after delivery: still one forward.
    let late = klarna_callback(
        addr,
        &cert.der,
        &urls[9],
        &callback_body("sess-9", "tok-crash-000009"),
    )
    .await;
    assert!(late.delivered);
    tokio::time::sleep(ABSENCE).await;
    assert_eq!(forwards_by_session(&up).get("sess-9"), Some(&1));
    assert!(Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", second.id())])
        .status()
        .expect("kill")
        .success());
    assert_eq!(second.wait().expect("exit").code(), Some(0));
}

/// The shipped `config.toml`, run from a folder of its own as a newcomer
/// runs it (only its ports and certificate swapped for the test's), keeps a
/// callback it answered 204 across `kill -9`: its store is `authback.db`
/// beside it, and the next run delivers it.
#[tokio::test]
async fn the_shipped_config_keeps_an_acknowledged_callback_across_kill_9() {
    let dir = TempDir::new();
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let (public, admin, upstream_port) = (free_port(), free_port(), free_port());
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
        .expect("shipped config");
    assert!(shipped.contains("kind = \"file\"") && shipped.contains("path = \"authback.db\""));
    let text = shipped
        .replace("127.0.0.1:8443", &format!("127.0.0.1:{public}"))
        .replace("localhost:8443", &format!("localhost:{public}"))
        .replace("127.0.0.1:9901", &format!("127.0.0.1:{admin}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{upstream_port}"))
        .replace(
            "self_signed = true",
            &format!("cert = \"{}\"\nkey = \"{}\"", c.display(), k.display()),
        )
        // Not a development config any more: its placeholder secret would
        // be refused.
        .replace("dev-only-secret-change-me-0123456789", SECRET);
    assert!(text.contains(SECRET), "the shipped secret was swapped");
    let (path, cfg, addr) = write_config(dir.path(), &text, public);
    let url = mint_path(&cfg, "klarna", "cart-1");

    let mut first = spawn_binary(&path, &dir.path().join("run1.log"), &[]);
    wait_tls(addr, &cert.der).await;
    let acked = klarna_callback(
        addr,
        &cert.der,
        &url,
        &callback_body("sess-1", "tok-ship-000001"),
    )
    .await;
    assert!(acked.delivered, "answered 2xx");
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    assert!(
        dir.path().join("authback.db").exists(),
        "the store is beside the config"
    );

    let up = Upstream::start_on(format!("127.0.0.1:{upstream_port}").parse().expect("addr")).await;
    let mut second = spawn_binary(&path, &dir.path().join("run2.log"), &[]);
    up.wait_for(FORWARD, 1, Duration::from_secs(60)).await;
    assert_eq!(forwards_by_session(&up).get("sess-1"), Some(&1));
    second.kill().expect("SIGKILL");
    second.wait().expect("reaped");
}

/// A small tmpfs the test mounts and unmounts (root, as in CI).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&at).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "this test mounts a small tmpfs to fill it, which needs root (CI runs as root)"
        );
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the filesystem refuses.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[tokio::test]
async fn a_full_filesystem_gets_503_and_readiness_follows_it() {
    let dir = TempDir::new();
    let mnt = Tmpfs::mount(dir.path().join("mnt"), "4m");
    let db = mnt.0.join("authback.db");
    let up = Upstream::start().await;
    up.set(Behaviour::Status(503));
    let store = store_section(&db);
    let ab = Authback::start_edited(&up.url(), |t| format!("{t}{store}"), false).await;
    let mut acked = Vec::new();
    for i in 0..5 {
        let s = format!("sess-ok-{i}");
        assert_eq!(
            ab.callback(&ab.mint(&format!("c{i}")), &callback_body(&s, "t-full"))
                .await
                .0,
            204
        );
        acked.push(s);
    }

    fill(&mnt.0.join("filler"));
    let mut refused = Vec::new();
    for i in 0..200 {
        let s = format!("sess-full-{i}");
        match ab
            .callback(&ab.mint(&format!("f{i}")), &callback_body(&s, "t-full"))
            .await
            .0
            .as_u16()
        {
            204 => acked.push(s),
            503 => {
                refused.push(s);
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(
        refused.len(),
        1,
        "a callback that cannot be committed is refused with 503"
    );
    // The pod keeps serving the shop; the store's own probe says why.
    let (status, body) = ab.admin_get("/readyz/store").await.expect("readyz/store");
    assert_eq!(status, 503);
    assert!(
        body.contains("store") && body.contains("authback.db"),
        "{body}"
    );
    assert_eq!(ab.admin_get("/readyz").await.expect("readyz").0, 200);
    assert_eq!(metric(&ab.metrics().await, "authback_store_up"), Some(0.0));

    // Space comes back: readiness and acks come back by themselves.
    std::fs::remove_file(mnt.0.join("filler")).expect("free space");
    assert!(
        ab.wait_store_up().await,
        "readyz recovers once the disk has room"
    );
    assert_eq!(
        ab.callback(&ab.mint("after"), &callback_body("sess-after", "t-full"))
            .await
            .0,
        204
    );
    acked.push("sess-after".into());

    // Nothing half-written: every acked callback is delivered once, the refused one never.
    up.set(Behaviour::Ok);
    up.wait_for(FORWARD, acked.len(), Duration::from_secs(30))
        .await;
    tokio::time::sleep(ABSENCE).await;
    let seen = forwards_by_session(&up);
    for s in &acked {
        assert!(seen.contains_key(s), "acked {s} was delivered");
    }
    assert!(
        !seen.contains_key(&refused[0]),
        "the refused callback was not recorded"
    );
    ab.stop().await.expect("stop");
    drop(mnt);
}

#[test]
fn a_corrupt_database_stops_the_start_with_exit_2() {
    let dir = TempDir::new();
    let (c, k) = write_cert(dir.path(), &make_cert());
    let db = dir.path().join("authback.db");
    std::fs::write(
        &db,
        b"this is not a SQLite database, just bytes that look nothing like one",
    )
    .expect("write");
    let text = on_ports(
        &base_config("http://127.0.0.1:9", &c, &k, &store_section(&db)),
        free_port(),
        free_port(),
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_authback"))
        .args(["run", "--log-format", "json", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("authback.db"), "names the database: {err}");
}
