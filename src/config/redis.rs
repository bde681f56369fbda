//! The `[store]` keys of the redis store: where Redis is (`url`, or
//! `sentinels` and `master_name`), its credentials and the sentinels', TLS,
//! and how many replicas must acknowledge a write. Credentials are read
//! like every secret (`env:`/`file:`) and never printed.

use std::path::Path;

use super::checker::{resolve_secret, Checker};
use super::file::FileStore;
use crate::store::redis::dial::{parse_host_port, parse_url, RedisConnect};
use crate::types::Secret;

/// Reads a key that names someone (a user name), `env:`/`file:` allowed,
/// without the inline-secret warning: a user name alone opens nothing.
fn name(c: &mut Checker, key: &str, value: Option<&str>, base: &Path) -> Option<Secret> {
    match resolve_secret(value?, base) {
        Ok((v, _)) if v.expose().is_empty() => {
            c.err(key, "is empty");
            None
        }
        Ok((v, _)) => Some(v),
        Err(e) => {
            c.err(key, e);
            None
        }
    }
}

/// The keys only the redis store reads, with whether each is set.
fn redis_only(f: &FileStore) -> [(&'static str, bool); 12] {
    [
        ("store.sentinels", f.sentinels.is_some()),
        ("store.master_name", f.master_name.is_some()),
        ("store.username", f.username.is_some()),
        ("store.password", f.password.is_some()),
        ("store.sentinel_username", f.sentinel_username.is_some()),
        ("store.sentinel_password", f.sentinel_password.is_some()),
        ("store.tls", f.tls.is_some()),
        ("store.ca_file", f.ca_file.is_some()),
        ("store.tls_cert", f.tls_cert.is_some()),
        ("store.tls_key", f.tls_key.is_some()),
        ("store.min_replicas_acked", f.min_replicas_acked.is_some()),
        ("store.replica_ack_timeout", f.replica_ack_timeout.is_some()),
    ]
}

/// Checks the redis keys of `f` (all of them when `redis` is the kind;
/// otherwise only that none of the redis-only ones is set).
pub(super) fn redis(c: &mut Checker, f: &FileStore, base: &Path, redis: bool) -> RedisConnect {
    // The URL may carry a password, so it is read like a secret
    // (`env:`/`file:` allowed) and never printed.
    let url = match f.url.as_deref().map(|u| resolve_secret(u, base)) {
        None => None,
        Some(Err(e)) => {
            c.err("store.url", e);
            None
        }
        Some(Ok((url, _))) => Some(url),
    };
    let mut to = RedisConnect {
        url,
        sentinels: f.sentinels.clone().unwrap_or_default(),
        master_name: f.master_name.clone(),
        username: name(c, "store.username", f.username.as_deref(), base),
        password: f
            .password
            .as_deref()
            .and_then(|s| c.secret("store.password", s)),
        sentinel_username: name(
            c,
            "store.sentinel_username",
            f.sentinel_username.as_deref(),
            base,
        ),
        sentinel_password: f
            .sentinel_password
            .as_deref()
            .and_then(|s| c.secret("store.sentinel_password", s)),
        tls: f.tls.unwrap_or(false),
        ca_file: f.ca_file.as_ref().map(|p| base.join(p)),
        tls_cert: f.tls_cert.as_ref().map(|p| base.join(p)),
        tls_key: f.tls_key.as_ref().map(|p| base.join(p)),
        min_replicas_acked: 0,
        replica_ack_timeout: c.positive_duration(
            "store.replica_ack_timeout",
            f.replica_ack_timeout.as_deref(),
            "250ms",
        ),
    };
    let acked = c.count("store.min_replicas_acked", f.min_replicas_acked, 0, 0);
    to.min_replicas_acked = u32::try_from(acked).unwrap_or(u32::MAX);
    if !redis {
        for (key, set) in redis_only(f) {
            if set {
                c.err(key, "is read only with kind = \"redis\"");
            }
        }
        return to;
    }
    match (&to.url, to.sentinels.is_empty()) {
        (Some(_), false) => c.err(
            "store.sentinels",
            "set store.url or store.sentinels, not both: the sentinels name the primary",
        ),
        (None, true) if f.sentinels.is_some() => c.err(
            "store.sentinels",
            "is empty: list the sentinels as \"host:port\"",
        ),
        (None, true) => c.err(
            "store.url",
            "is required with kind = \"redis\" (e.g. \"redis://127.0.0.1:6379/0\"), unless store.sentinels and store.master_name say where the primary is",
        ),
        (Some(url), true) => {
            let url = url.clone();
            check_url(c, &to, url.expose());
        }
        (None, false) => check_sentinels(c, &to),
    }
    let tls_on = to.tls
        || to
            .url
            .as_ref()
            .is_some_and(|u| u.expose().starts_with(b"rediss://"));
    for (key, set) in [
        ("store.ca_file", to.ca_file.is_some()),
        ("store.tls_cert", to.tls_cert.is_some()),
        ("store.tls_key", to.tls_key.is_some()),
    ] {
        if set && !tls_on {
            c.err(key, "is read only with TLS: a rediss:// store.url, or store.tls = true with store.sentinels");
        }
    }
    if to.tls_cert.is_some() != to.tls_key.is_some() {
        c.err(
            "store.tls_cert",
            "and store.tls_key go together: the client certificate and its key",
        );
    }
    if to.min_replicas_acked == 0 && !to.sentinels.is_empty() {
        c.warnings.push("store.min_replicas_acked: 0, so a failover can lose callbacks already answered 204 that the new primary never received; set 1 with at least two replicas".into());
    }
    to
}

/// `store.url` and what may go with it.
fn check_url(c: &mut Checker, to: &RedisConnect, url: &[u8]) {
    let ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
        .iter()
        .any(|p| url.starts_with(p.as_bytes()));
    if !ok {
        c.err("store.url", "must be a redis://, rediss:// or unix:// URL");
        return;
    }
    let Ok(text) = std::str::from_utf8(url) else {
        c.err("store.url", "is not UTF-8");
        return;
    };
    match parse_url(text) {
        Err(e) => c.err("store.url", e),
        Ok(p) => {
            if p.info.username.is_some() && to.username.is_some() {
                c.err(
                    "store.username",
                    "is in store.url too: keep it in one place",
                );
            }
            if p.info.password.is_some() && to.password.is_some() {
                c.err(
                    "store.password",
                    "is in store.url too: keep it in one place",
                );
            }
            if to.tls && !p.tls {
                c.err(
                    "store.tls",
                    "with store.url, TLS is the URL's scheme: rediss://",
                );
            }
        }
    }
    for (key, set) in [
        ("store.master_name", to.master_name.is_some()),
        ("store.sentinel_username", to.sentinel_username.is_some()),
        ("store.sentinel_password", to.sentinel_password.is_some()),
    ] {
        if set {
            c.err(key, "is read only with store.sentinels");
        }
    }
}

/// `store.sentinels` and `store.master_name`.
fn check_sentinels(c: &mut Checker, to: &RedisConnect) {
    for (i, s) in to.sentinels.iter().enumerate() {
        if parse_host_port(s).is_none() {
            c.err(
                format!("store.sentinels[{i}]"),
                format!("`{s}` is not host:port (e.g. \"10.0.0.5:26379\")"),
            );
        }
    }
    match to.master_name.as_deref() {
        None => c.err(
            "store.master_name",
            "is required with store.sentinels: the name they monitor the primary under",
        ),
        Some("") => c.err("store.master_name", "is empty"),
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, MINIMAL};
    use std::path::Path;
    use std::time::Duration;

    /// The error keys of `[store]` with `keys`, or the config.
    fn store(keys: &str) -> Result<Config, Vec<String>> {
        let text = format!("{MINIMAL}[store]\n{keys}\n");
        Config::parse(&text, Path::new("/etc/authback"))
            .map_err(|errs| errs.into_iter().map(|e| e.key).collect())
    }

    const SENTINELS: &str = "kind = \"redis\"\nsentinels = [\"10.0.0.1:26379\", \"s-1.redis.svc:26379\"]\nmaster_name = \"authback\"";

    #[test]
    fn sentinels_take_the_place_of_the_url() {
        let c = store(SENTINELS).expect("valid");
        let r = &c.store.redis;
        assert!(r.url.is_none());
        assert_eq!(r.sentinels.len(), 2);
        assert_eq!(r.master_name.as_deref(), Some("authback"));
        assert_eq!(
            (r.min_replicas_acked, r.replica_ack_timeout),
            (0, Duration::from_millis(250))
        );
        assert!(
            c.warnings
                .iter()
                .any(|w| w.starts_with("store.min_replicas_acked")),
            "{:?}",
            c.warnings
        );
        let both = format!("{SENTINELS}\nurl = \"redis://127.0.0.1:6379/0\"");
        assert_eq!(store(&both).expect_err("both"), ["store.sentinels"]);
        let nameless = "kind = \"redis\"\nsentinels = [\"10.0.0.1:26379\"]";
        assert_eq!(store(nameless).expect_err("no name"), ["store.master_name"]);
        let neither = "kind = \"redis\"";
        assert_eq!(store(neither).expect_err("neither"), ["store.url"]);
        let bad = "kind = \"redis\"\nsentinels = [\"10.0.0.1\", \"ok:1\"]\nmaster_name = \"m\"";
        assert_eq!(store(bad).expect_err("no port"), ["store.sentinels[0]"]);
        let stray = "kind = \"redis\"\nurl = \"redis://h:1/0\"\nmaster_name = \"m\"\nsentinel_password = \"x-long-secret\"";
        assert_eq!(
            store(stray).expect_err("sentinel keys without sentinels"),
            ["store.master_name", "store.sentinel_password"]
        );
    }

    #[test]
    fn credentials_are_secrets_and_said_once() {
        std::env::set_var("AUTHBACK_TEST_REDIS_PW_8c1", "from-the-environment");
        let keys = format!("{SENTINELS}\nusername = \"authback\"\npassword = \"env:AUTHBACK_TEST_REDIS_PW_8c1\"\nsentinel_password = \"inline-sentinel-pw\"\nmin_replicas_acked = 1\nreplica_ack_timeout = \"1s\"");
        let c = store(&keys).expect("valid");
        let r = &c.store.redis;
        assert_eq!(
            r.password.as_ref().map(|p| p.expose()),
            Some(&b"from-the-environment"[..])
        );
        assert_eq!(
            r.username.as_ref().map(|p| p.expose()),
            Some(&b"authback"[..])
        );
        assert_eq!(
            (r.min_replicas_acked, r.replica_ack_timeout),
            (1, Duration::from_secs(1))
        );
        assert!(
            c.inline_secrets
                .iter()
                .any(|k| k == "store.sentinel_password")
                && !c.inline_secrets.iter().any(|k| k.contains("username")),
            "an inline password is warned about, a user name is not: {:?}",
            c.inline_secrets
        );
        assert!(!c
            .warnings
            .iter()
            .any(|w| w.starts_with("store.min_replicas_acked")));
        let twice = "kind = \"redis\"\nurl = \"redis://u:pw-in-url@h:1/0\"\nusername = \"u\"\npassword = \"pw\"";
        assert_eq!(
            store(twice).expect_err("twice"),
            ["store.username", "store.password"]
        );
        let unset = "kind = \"redis\"\nurl = \"redis://h:1/0\"\npassword = \"env:AUTHBACK_TEST_NEVER_SET_R1\"";
        assert_eq!(store(unset).expect_err("unset"), ["store.password"]);
    }

    #[test]
    fn tls_files_need_tls_and_go_together() {
        let c = store("kind = \"redis\"\nurl = \"rediss://redis.svc:6380/0\"\nca_file = \"ca.pem\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"").expect("valid");
        let r = &c.store.redis;
        assert_eq!(
            r.ca_file.as_deref(),
            Some(Path::new("/etc/authback/ca.pem")),
            "relative to the config"
        );
        assert!(r.tls_cert.is_some() && r.tls_key.is_some());
        let plain = "kind = \"redis\"\nurl = \"redis://redis.svc:6379/0\"\nca_file = \"ca.pem\"";
        assert_eq!(store(plain).expect_err("no TLS"), ["store.ca_file"]);
        let scheme = "kind = \"redis\"\nurl = \"redis://redis.svc:6379/0\"\ntls = true";
        assert_eq!(store(scheme).expect_err("tls with redis://"), ["store.tls"]);
        let half = format!("{SENTINELS}\ntls = true\ntls_cert = \"c.pem\"");
        assert_eq!(store(&half).expect_err("half"), ["store.tls_cert"]);
        store(&format!("{SENTINELS}\ntls = true\nca_file = \"ca.pem\""))
            .expect("TLS with sentinels");
    }

    #[test]
    fn redis_keys_belong_to_the_redis_store() {
        let errs =
            store("kind = \"file\"\npath = \"a.db\"\nmin_replicas_acked = 1\nsentinels = []")
                .expect_err("file");
        assert_eq!(errs, ["store.sentinels", "store.min_replicas_acked"]);
        assert_eq!(
            store("kind = \"redis\"\nsentinels = []").expect_err("empty"),
            ["store.sentinels"]
        );
        assert_eq!(
            store("kind = \"redis\"\nurl = \"redis://h:1/0\"\nmin_replicas_acked = -1")
                .expect_err("negative"),
            ["store.min_replicas_acked"]
        );
    }
}
