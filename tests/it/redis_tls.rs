//! The redis store over TLS with an ACL user: a real redis-server with
//! `--tls-port`, client certificates required and its default user off,
//! reached by `rediss://` and through a sentinel over TLS with a user of
//! its own. Certificates are made here (a CA, the servers', the client's).

use std::path::{Path, PathBuf};
use std::time::Duration;

use authback::store::redis::dial::RedisConnect;
use authback::store::redis::RedisStore;

use crate::common::*;

const FORWARD: &str = "/klarna/authorized";
const PASSWORD: &str = "acl-user-password-4e1b9c";
const SENTINEL_PASSWORD: &str = "sentinel-user-password-77d2a0";
/// Only what authback needs, on its own keys (docs/operations.md).
const ACL: &str = "authback on >acl-user-password-4e1b9c ~authback:* resetchannels -@all +@read +@write +@scripting -script|flush -script|kill +wait +role +ping +select";

/// A CA and, signed by it, a certificate for `localhost` and 127.0.0.1
/// (servers and client alike), as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path, name: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca = ca.self_signed(&ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("certificate");
    let p = Pki {
        ca: dir.join(format!("{name}-ca.crt")),
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&p.ca, ca.pem()).expect("write");
    std::fs::write(&p.cert, cert.pem()).expect("write");
    std::fs::write(&p.key, key.serialize_pem()).expect("write");
    p
}

/// The TLS arguments of a server with `p`'s certificate, requiring a
/// client certificate from the same CA.
fn tls_args(p: &Pki) -> Vec<String> {
    let s = |p: &Path| p.display().to_string();
    [
        "--tls-cert-file",
        &s(&p.cert),
        "--tls-key-file",
        &s(&p.key),
        "--tls-ca-cert-file",
        &s(&p.ca),
        "--tls-auth-clients",
        "yes",
    ]
    .map(String::from)
    .to_vec()
}

/// A TLS redis-server whose only users are `authback` (ACL) and
/// `sentinel` (for a sentinel's own work).
fn tls_redis(dir: &Path, p: &Pki) -> RedisServer {
    for s in [PASSWORD, SENTINEL_PASSWORD] {
        sensitive(s);
    }
    let mut args = tls_args(p);
    // One argument per word: redis-server joins them into its config line.
    for user in [
        "default off",
        ACL,
        "sentinel on >sentinel-on-redis-pw-1a2b ~* &* +@all",
    ] {
        args.push("--user".into());
        args.extend(user.split_whitespace().map(String::from));
    }
    sensitive("sentinel-on-redis-pw-1a2b");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    RedisServer::start_tls(dir, &refs)
}

fn connect_to(url: String, p: &Pki) -> RedisConnect {
    RedisConnect {
        ca_file: Some(p.ca.clone()),
        tls_cert: Some(p.cert.clone()),
        tls_key: Some(p.key.clone()),
        username: Some(authback::types::Secret::new("authback")),
        password: Some(authback::types::Secret::new(PASSWORD)),
        ..RedisConnect::url(&url)
    }
}

async fn open(to: &RedisConnect) -> Result<RedisStore, String> {
    let hour = Duration::from_secs(3600);
    RedisStore::connect(to, "authback:", hour, hour, hour)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn rediss_with_a_ca_a_client_certificate_and_an_acl_user() {
    let dir = TempDir::new();
    let p = pki(dir.path(), "redis");
    let redis = tls_redis(dir.path(), &p);
    let url = format!("rediss://localhost:{}/0", redis.port);
    open(&connect_to(url.clone(), &p))
        .await
        .expect("TLS, client certificate, ACL user");

    let wrong_ca = pki(dir.path(), "other");
    let e = open(&RedisConnect {
        ca_file: Some(wrong_ca.ca.clone()),
        ..connect_to(url.clone(), &p)
    })
    .await
    .err()
    .expect("a certificate from another CA");
    assert!(e.contains("TLS"), "{e}");
    let e = open(&RedisConnect {
        tls_cert: None,
        tls_key: None,
        ..connect_to(url.clone(), &p)
    })
    .await
    .err()
    .expect("no client certificate");
    assert!(!e.is_empty());
    let e = open(&RedisConnect {
        password: Some(authback::types::Secret::new("not-the-password-9f")),
        ..connect_to(url.clone(), &p)
    })
    .await
    .err()
    .expect("a wrong password");
    assert!(!e.contains("not-the-password"), "{e}");
    let e = open(&RedisConnect::url(&format!(
        "redis://127.0.0.1:{}/0",
        redis.port
    )))
    .await
    .err()
    .expect("plain text to a TLS port");
    assert!(!e.is_empty());
}

/// A sentinel on TLS watching `redis`, answering only its `authback`
/// user, and reaching the primary over TLS as the primary's `sentinel`.
fn tls_sentinel(dir: &Path, p: &Pki, redis: &RedisServer) -> (u16, Group) {
    let port = free_port();
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port 0\ntls-port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
             tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
             tls-auth-clients yes\ntls-replication yes\n\
             sentinel monitor primary 127.0.0.1 {primary} 1\n\
             sentinel auth-user primary sentinel\nsentinel auth-pass primary sentinel-on-redis-pw-1a2b\n\
             user default off\nuser authback on >{SENTINEL_PASSWORD} -@all +sentinel|get-master-addr-by-name\n",
            dir = dir.display(),
            cert = p.cert.display(),
            key = p.key.display(),
            ca = p.ca.display(),
            primary = redis.port,
        ),
    )
    .expect("sentinel.conf");
    let child = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("redis-server --sentinel")
    };
    let group = Group(child);
    eventually_blocking!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the sentinel to listen"
    );
    (port, group)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_sentinel_over_tls_each_with_its_own_user_a_callback_is_delivered() {
    let dir = TempDir::new();
    let p = pki(dir.path(), "redis");
    let redis = tls_redis(dir.path(), &p);
    let (sentinel, _sentinel) = tls_sentinel(dir.path(), &p, &redis);
    let up = Upstream::start().await;
    let store = format!(
        "[store]\nkind = \"redis\"\nsentinels = [\"127.0.0.1:{sentinel}\"]\nmaster_name = \"primary\"\n\
         tls = true\nca_file = \"{ca}\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n\
         username = \"authback\"\npassword = \"{PASSWORD}\"\n\
         sentinel_username = \"authback\"\nsentinel_password = \"{SENTINEL_PASSWORD}\"\n\
         key_prefix = \"authback:\"\n",
        ca = p.ca.display(),
        cert = p.cert.display(),
        key = p.key.display(),
    );
    let ab = Authback::start_edited(&up.url(), |t| format!("{t}{store}"), false).await;
    let (status, _) = ab
        .callback(
            &ab.mint("tls-1"),
            &callback_body("sess-tls", "tok-tls-0001"),
        )
        .await;
    assert_eq!(status, 204);
    let got = up.wait_for(FORWARD, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "delivered over TLS");
    assert_eq!(got[0].json()["session_id"], "sess-tls");
    let page = ab.metrics().await;
    assert_eq!(
        metric(
            &page,
            &format!(
                "authback_store_primary_info{{address=\"127.0.0.1:{}\"}}",
                redis.port
            )
        ),
        Some(1.0),
        "the primary the sentinel named"
    );
    assert_eq!(metric(&page, "authback_store_failovers_total"), Some(0.0));
}
