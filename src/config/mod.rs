//! Configuration: the validated `Config` the rest of the crate uses, and
//! `load`. The TOML file as written is in `file` (unknown keys rejected by
//! serde), finding the key and line of a problem in `locate`, and the checks,
//! one function per section, in `validate` (the redis store's keys in
//! `redis`). Durations, rates, addresses and
//! secrets are parsed once; every problem is reported with its key, at once.

mod checker;
mod file;
mod front;
mod host_names;
mod locate;
mod model;
pub mod production;
mod redis;
mod routes;
mod tls;
mod validate;

pub use crate::route::{ForwardFormat, PathPattern, Route};
pub use crate::store::{StoreConfig, StoreKind};
pub use checker::resolve_secret;
pub use host_names::HostNames;
pub(crate) use host_names::Match;
pub use model::*;

pub use crate::route::dialect::{Dialect, PathForm};

use std::collections::HashSet;
use std::path::Path;

impl Config {
    /// Reads, parses and validates `path`, resolving secrets.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let fail = |errors| ConfigErrors {
            file: path.to_path_buf(),
            errors,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(vec![ConfigError {
                key: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(fail)
    }

    /// Parses and validates TOML text. Relative certificate paths are taken
    /// relative to `base_dir` (the config file's folder).
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
        let (file, mut errors) = locate::read_file(text)?;
        match validate::validate(file, base_dir) {
            Ok(config) if errors.is_empty() => Ok(config),
            Ok(_) => Err(errors),
            Err(more) => {
                // A key whose line was set aside may be reported again as
                // missing: once is enough.
                let seen: HashSet<String> = errors.iter().map(|e| e.key.clone()).collect();
                errors.extend(more.into_iter().filter(|e| !seen.contains(&e.key)));
                Err(errors)
            }
        }
    }

    /// Reads only `[admin]` from `path`: where the admin API listens and
    /// its token. For `authback deliveries`, which must not need the route
    /// secrets or anything else a running authback needs.
    pub fn load_admin(path: &Path) -> Result<AdminConfig, ConfigErrors> {
        #[derive(serde::Deserialize)]
        struct AdminOnly {
            #[serde(default)]
            admin: file::FileAdmin,
        }
        let fail = |errors| ConfigErrors {
            file: path.to_path_buf(),
            errors,
        };
        let one = |message: String| {
            fail(vec![ConfigError {
                key: String::new(),
                message,
            }])
        };
        let text = std::fs::read_to_string(path).map_err(|e| one(format!("cannot read: {e}")))?;
        let only: AdminOnly = toml::from_str(&text).map_err(|e| one(e.message().to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        validate::admin_only(&only.admin, base).map_err(fail)
    }

    pub(crate) fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// The smallest valid config, every other key left to its default: for
/// the unit tests of any module.
#[cfg(test)]
pub(crate) const MINIMAL: &str = r#"
[server]
public_url = "https://shop.example.com"
[server.tls]
self_signed = true
[upstream]
url = "http://127.0.0.1:8080"
[[routes]]
name = "klarna"
kind = "klarna_authorization"
path = "/klarna/authorization/{reference}"
forward_path = "/klarna/authorized"
secrets = ["a-long-enough-test-secret"]
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::Rate;
    use std::time::Duration;

    #[test]
    fn a_file_secret_is_read_relative_to_the_config_folder() {
        let dir = std::env::temp_dir().join(format!("authback-secret-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("secrets")).expect("dir");
        std::fs::write(dir.join("secrets/route"), "a-long-enough-file-secret\n").expect("write");
        let text = MINIMAL.replace(
            "secrets = [\"a-long-enough-test-secret\"]",
            "secrets = [\"file:secrets/route\"]",
        );
        let parsed = Config::parse(&text, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        let c = parsed.expect("the secret is found beside the config");
        assert_eq!(
            c.routes[0].secrets[0].expose(),
            b"a-long-enough-file-secret"
        );
    }

    #[test]
    fn one_root_cause_gives_one_error() {
        let text = MINIMAL.replace("[[routes]]", "[delivery]\nmax_backoff = \"60\"\n[[routes]]");
        let errs = Config::parse(&text, Path::new(".")).expect_err("a missing unit");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "delivery.max_backoff");
    }

    #[test]
    fn a_missing_variable_used_twice_is_one_error() {
        let var = "AUTHBACK_TEST_NEVER_SET_7f3a";
        let text = MINIMAL
            .replace(
                "url = \"http://127.0.0.1:8080\"",
                &format!("url = \"http://127.0.0.1:8080\"\nsigning_secret = \"env:{var}\""),
            )
            .replace("\"a-long-enough-test-secret\"", &format!("\"env:{var}\""));
        let errs = Config::parse(&text, Path::new(".")).expect_err("unset");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "upstream.signing_secret");
        assert!(
            errs[0].message.contains(var) && errs[0].message.contains("routes[0].secrets[0]"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn an_unset_klarna_credential_is_one_error_not_also_a_missing_one() {
        let text = MINIMAL.to_string()
            + "[klarna]\napi_url = \"https://api.klarna.com\"\nusername = \"env:AUTHBACK_TEST_NEVER_SET_K1\"\npassword = \"env:AUTHBACK_TEST_NEVER_SET_K2\"\n[order_watch]\nenabled = true\n";
        let errs = Config::parse(&text, Path::new(".")).expect_err("unset");
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["klarna.username", "klarna.password"], "{errs:?}");
        assert!(
            errs.iter().all(|e| e.message.contains("is not set")),
            "{errs:?}"
        );
    }

    #[test]
    fn ip_sets_are_lists_or_files_and_replace_a_built_in_list() {
        let dir = std::env::temp_dir().join(format!("authback-ipsets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("klarna.txt"), "203.0.113.0/24\n").expect("write");
        std::fs::write(dir.join("empty.txt"), "# none yet\n").expect("write");
        let with = |sets: &str, allow: &str| {
            MINIMAL.replace("secrets = [", &format!("allow_ips = {allow}\nsecrets = ["))
                + "[ip_sets]\n"
                + sets
        };
        let c = Config::parse(
            &with(
                "klarna-production = \"file:klarna.txt\"\noffice = [\"10.0.0.0/8\"]\n",
                "[\"klarna-production\", \"office\"]",
            ),
            &dir,
        )
        .expect("valid");
        let r = &c.routes[0];
        assert!(r.ip_allowed("203.0.113.9".parse().expect("ip")));
        assert!(r.ip_allowed("10.1.1.1".parse().expect("ip")));
        assert!(
            !r.ip_allowed("52.17.117.56".parse().expect("ip")),
            "the file replaced the built-in list"
        );
        assert!(c.builtin_ip_lists.is_empty());
        for (sets, key) in [
            ("office = \"file:empty.txt\"\n", "ip_sets.office"),
            ("office = \"file:missing.txt\"\n", "ip_sets.office"),
            ("office = \"10.0.0.0/8\"\n", "ip_sets.office"),
            ("\"bad name\" = [\"10.0.0.0/8\"]\n", "ip_sets.bad name"),
            ("other = [\"10.0.0.0/8\"]\n", "routes[0].allow_ips[0]"),
        ] {
            let errs = Config::parse(&with(sets, "[\"office\"]"), &dir).expect_err(sets);
            assert!(errs.iter().any(|e| e.key == key), "{sets}: {errs:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn placeholder_secrets_are_refused_outside_development() {
        let dir = std::env::temp_dir().join(format!("authback-placeholder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let production = MINIMAL
            .replace("self_signed = true", "cert = \"c.pem\"\nkey = \"k.pem\"")
            .replace(
                "a-long-enough-test-secret",
                "replace-with-openssl-rand-hex-32",
            );
        let errs = Config::parse(&production, &dir).expect_err("a placeholder");
        let _ = std::fs::remove_dir_all(&dir);
        let e = errs
            .iter()
            .find(|e| e.key == "routes[0].secrets[0]")
            .unwrap_or_else(|| panic!("{errs:?}"));
        assert!(e.message.contains("placeholder"), "{}", e.message);
        // A development config (self-signed) runs as shipped.
        let development = MINIMAL.replace(
            "a-long-enough-test-secret",
            "replace-with-openssl-rand-hex-32",
        );
        assert!(Config::parse(&development, Path::new(".")).is_ok());
    }

    #[test]
    fn minimal_config_gets_spec_defaults() {
        let c = Config::parse(MINIMAL, Path::new(".")).expect("valid");
        assert_eq!(c.server.listen, Some("0.0.0.0:8443".parse().expect("addr")));
        assert!(c.server.listen_redirect.is_none() && c.server.proxy_protocol.is_none());
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(20));
        assert_eq!(c.admin.listen, "127.0.0.1:9901".parse().expect("addr"));
        assert_eq!(c.upstream.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.upstream.timeout, Duration::from_secs(30));
        assert_eq!(c.store.kind, StoreKind::Memory);
        assert_eq!(c.store.dedupe_ttl, Duration::from_secs(48 * 3600));
        assert_eq!(c.delivery.initial_backoff, Duration::from_secs(1));
        assert_eq!(c.delivery.max_backoff, Duration::from_secs(60));
        assert_eq!(c.delivery.attempt_timeout, Duration::from_secs(10));
        assert_eq!(c.delivery.deadline, Duration::from_secs(3600));
        assert_eq!(c.delivery.max_in_flight, 64);
        assert_eq!(c.limits.max_connections, 10_000);
        assert_eq!(c.limits.max_header_bytes, 65_536);
        assert_eq!(
            c.limits.failed_token_per_ip,
            Some(Rate {
                count: 20,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(c.limits.callback_per_ip, None);
        assert_eq!(c.routes[0].forward_format, ForwardFormat::Json);
        assert!(c.warnings.iter().any(|w| w.contains("inline")));
        assert_eq!(c.upstream.path_form, PathForm::Canonical);
        assert_eq!(c.upstream.dialect, Dialect::Php);
        assert_eq!(c.upstream.max_input_vars, 1000);
        assert!(!c.server.reuse_port);
    }

    #[test]
    fn retention_is_at_least_the_dedupe_ttl() {
        let day = Duration::from_secs(86_400);
        let c = Config::parse(MINIMAL, Path::new(".")).expect("valid");
        assert_eq!(
            (c.store.keep_finished, c.store.keep_dead),
            (7 * day, 30 * day)
        );
        let with = |keys: &str| format!("{MINIMAL}[store]\n{keys}\n");
        // A longer dedupe_ttl lengthens the defaults with it.
        let c = Config::parse(&with("dedupe_ttl = \"40d\""), Path::new(".")).expect("valid");
        assert_eq!(
            (c.store.keep_finished, c.store.keep_dead),
            (40 * day, 40 * day)
        );
        let c = Config::parse(
            &with("keep_finished = \"48h\"\nkeep_dead = \"90d\""),
            Path::new("."),
        )
        .expect("valid");
        assert_eq!(
            (c.store.keep_finished, c.store.keep_dead),
            (2 * day, 90 * day)
        );
        for (keys, key) in [
            ("keep_finished = \"24h\"", "store.keep_finished"),
            (
                "dedupe_ttl = \"10d\"\nkeep_dead = \"9d\"",
                "store.keep_dead",
            ),
            ("keep_dead = \"0s\"", "store.keep_dead"),
        ] {
            let errors = Config::parse(&with(keys), Path::new(".")).expect_err(keys);
            let e = errors
                .iter()
                .find(|e| e.key == key)
                .unwrap_or_else(|| panic!("{keys}: {errors:?}"));
            assert!(
                e.message.contains("dedupe_ttl") || e.message.contains("greater than zero"),
                "{keys}: {}",
                e.message
            );
        }
    }

    #[test]
    fn the_backends_reading_is_checked_and_raw_paths_warn() {
        let with = |keys: &str| MINIMAL.replace("[upstream]\n", &format!("[upstream]\n{keys}\n"));
        let raw = Config::parse(
            &with("path_form = \"raw\"\ndialect = \"spring\""),
            Path::new("."),
        )
        .expect("valid");
        assert_eq!(raw.upstream.path_form, PathForm::Raw);
        assert_eq!(raw.upstream.dialect, Dialect::Spring);
        assert!(
            raw.warnings
                .iter()
                .any(|w| w.contains("path_form = \"raw\"")),
            "{:?}",
            raw.warnings
        );
        // Spring's trailing-slash and suffix matching are the route's.
        assert!(raw.routes[0].spelling.trailing_slash && raw.routes[0].spelling.suffix);
        for (keys, key) in [
            ("path_form = \"as-is\"", "upstream.path_form"),
            ("dialect = \"perl\"", "upstream.dialect"),
            ("max_input_vars = 0", "upstream.max_input_vars"),
        ] {
            let errors = Config::parse(&with(keys), Path::new(".")).expect_err(keys);
            assert!(errors.iter().any(|e| e.key == key), "{keys}: {errors:?}");
        }
        let endpoint = MINIMAL.replace("secrets = [", "endpoint = true\nsecrets = [");
        let errors = Config::parse(&endpoint, Path::new(".")).expect_err("endpoint");
        assert!(
            errors.iter().any(|e| e.key == "routes[0].endpoint"),
            "{errors:?}"
        );
    }

    /// `[server]` with `keys` in place of MINIMAL's, and MINIMAL's TLS.
    fn server(keys: &str) -> String {
        MINIMAL.replace("[server]\n", &format!("[server]\n{keys}\n"))
    }

    #[test]
    fn behind_an_ingress_the_tls_listener_and_its_certificate_are_optional() {
        let plain_only = server("listen_plain = \"0.0.0.0:8080\"")
            .replace("[server.tls]\nself_signed = true\n", "");
        let c = Config::parse(&plain_only, Path::new(".")).expect("valid");
        assert_eq!(c.server.listen, None);
        assert!(c.server.tls.is_none());
        // Asked for, TLS still needs its certificate.
        let both = plain_only.replace("[server]\n", "[server]\nlisten = \"0.0.0.0:8443\"\n");
        let errors = Config::parse(&both, Path::new(".")).expect_err("no certificate");
        assert!(errors.iter().any(|e| e.key == "server.tls"), "{errors:?}");
        // Given anyway, a certificate is read (its names name redirect hosts).
        let c = Config::parse(&server("listen_plain = \"0.0.0.0:8080\""), Path::new("."))
            .expect("valid");
        assert!(c.server.listen.is_none() && c.server.tls.is_some());
    }

    #[test]
    fn the_redirect_listener_has_a_port_of_its_own_and_an_https_target() {
        let c = Config::parse(
            &server("listen_redirect = \"0.0.0.0:8080\"\nacme_upstream = \"http://solver:8089/\""),
            Path::new("."),
        )
        .expect("valid");
        assert_eq!(
            c.server.listen_redirect,
            Some("0.0.0.0:8080".parse().expect("addr"))
        );
        assert_eq!(
            c.server.acme_upstream.map(|u| u.to_string()),
            Some("http://solver:8089/".to_string())
        );
        for (keys, key) in [
            (
                "listen_redirect = \"0.0.0.0:8443\"",
                "server.listen_redirect",
            ),
            (
                "listen_plain = \"0.0.0.0:80\"\nlisten_redirect = \"0.0.0.0:80\"",
                "server.listen_redirect",
            ),
            ("listen_redirect = \"127.0.0.1:9901\"", "admin.listen"),
            (
                "listen = \"0.0.0.0:8443\"\nlisten_plain = \"0.0.0.0:8443\"",
                "server.listen_plain",
            ),
            ("listen_redirect = \"80\"", "server.listen_redirect"),
            (
                "acme_upstream = \"http://solver:8089\"",
                "server.acme_upstream",
            ),
            (
                "listen_redirect = \"0.0.0.0:80\"\nacme_upstream = \"https://solver\"",
                "server.acme_upstream",
            ),
        ] {
            let errors = Config::parse(&server(keys), Path::new(".")).expect_err(keys);
            assert!(errors.iter().any(|e| e.key == key), "{keys}: {errors:?}");
        }
        // A redirect to http:// would come back to itself.
        let http = server("listen_redirect = \"0.0.0.0:80\"")
            .replace("https://shop.example.com", "http://shop.example.com");
        let errors = Config::parse(&http, Path::new(".")).expect_err("http");
        assert!(
            errors.iter().any(|e| e.key == "server.listen_redirect"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_proxy_protocol_is_believed_only_from_listed_sources() {
        let c = Config::parse(
            &server("proxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\"]"),
            Path::new("."),
        )
        .expect("valid");
        let pp = c.server.proxy_protocol.expect("on");
        assert_eq!(pp.timeout, Duration::from_secs(5));
        assert!(pp.from[0].contains("10.1.2.3".parse().expect("ip")));
        for (keys, key) in [
            ("proxy_protocol = true", "server.proxy_protocol_from"),
            (
                "proxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/33\"]",
                "server.proxy_protocol_from[0]",
            ),
            ("proxy_protocol_from = [\"10.0.0.0/8\"]", "server.proxy_protocol"),
            (
                "proxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\"]\nproxy_protocol_timeout = \"0s\"",
                "server.proxy_protocol_timeout",
            ),
        ] {
            let errors = Config::parse(&server(keys), Path::new(".")).expect_err(keys);
            assert!(errors.iter().any(|e| e.key == key), "{keys}: {errors:?}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = MINIMAL.replace("[upstream]", "[upstream]\nurll = \"x\"");
        let errs = Config::parse(&text, Path::new(".")).expect_err("unknown key");
        assert!(errs[0].message.contains("urll"), "{errs:?}");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_all_reported_with_the_rest() {
        let text = MINIMAL
            .replace("[upstream]", "[upstream]\nurll = \"x\"\ntimeout = \"soon\"")
            .replace("[server.tls]", "[server.tls]\nmystery = 1")
            .replace(
                "secrets = [\"a-long-enough-test-secret\"]",
                "secrets = [\n  \"a-long-enough-test-secret\",\n  7,\n]\nbogus = { a = 1 }",
            )
            + "[[routes]]\nname = \"b\"\nforward_path = 5\n[delivery]\nmax_in_flight = \"x\"\n";
        let errs = Config::parse(&text, Path::new(".")).expect_err("broken");
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for key in [
            "server.tls.mystery",
            "upstream.urll",
            "routes[0].secrets",
            "routes[0].bogus",
            "routes[1].forward_path",
            "delivery.max_in_flight",
            // Found by validation, after the file was read past the others.
            "upstream.timeout",
            "routes[1].kind",
        ] {
            assert!(keys.contains(&key), "{key} not reported: {errs:?}");
        }
        let typed = errs
            .iter()
            .find(|e| e.key == "routes[1].forward_path")
            .expect("typed");
        assert!(typed.message.contains("expected a string"), "{typed:?}");
        let number = errs
            .iter()
            .find(|e| e.key == "delivery.max_in_flight")
            .expect("number");
        assert!(number.message.contains("expected an integer"), "{number:?}");
        let unknown = errs
            .iter()
            .find(|e| e.key == "upstream.urll")
            .expect("urll");
        assert!(unknown.message.contains("unknown field") && unknown.message.contains("(line "));
        // routes[1].forward_path is reported once, as the wrong type, not again as missing.
        assert_eq!(
            keys.iter()
                .filter(|k| **k == "routes[1].forward_path")
                .count(),
            1
        );
    }

    #[test]
    fn values_over_several_lines_are_followed_to_their_end() {
        let extra = r#"[upstream]
signing_secret = """
abc [ {
[server]
"""
foo = 1
bar = '''x ]
'''
baz = [
  "]", # ]
  1,
]"#;
        let text = MINIMAL.replace("[upstream]", extra);
        let errs = Config::parse(&text, Path::new(".")).expect_err("unknown keys");
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for key in ["upstream.foo", "upstream.bar", "upstream.baz"] {
            assert!(keys.contains(&key), "{key} not reported: {errs:?}");
        }
        assert!(
            !keys.iter().any(|k| k.starts_with("upstream.signing")),
            "{errs:?}"
        );
    }

    #[test]
    fn a_missing_table_and_a_syntax_error_are_reported() {
        let errs = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\n", Path::new("."))
            .expect_err("no upstream");
        assert_eq!(
            (errs[0].key.as_str(), errs[0].message.as_str()),
            ("upstream", "is required")
        );
        let errs = Config::parse("[server\n", Path::new(".")).expect_err("syntax");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("line 1"), "{errs:?}");
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let text = r#"
[server]
listen = "nowhere"
shutdown_grace = "soon"
[server.tls]
cert = "a.pem"
[upstream]
url = "ftp://x"
timeout = "5"
[store]
kind = "postgres"
[delivery]
max_in_flight = 0
[[routes]]
name = "k"
kind = "klarna_authorization"
path = "klarna"
forward_format = "xml"
[[routes]]
name = "k"
kind = "other"
path = "/x/{reference}"
forward_path = "/y"
secrets = ["env:AUTHBACK_TEST_SURELY_UNSET_VAR"]
unverified = true
"#;
        let errs = Config::parse(text, Path::new(".")).expect_err("invalid");
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "server.listen",
            "server.public_url",
            "server.shutdown_grace",
            "server.tls",
            "upstream.url",
            "upstream.timeout",
            "store.kind",
            "delivery.max_in_flight",
            "routes[0].path",
            "routes[0].forward_format",
            "routes[0].secrets",
            "routes[1].name",
            "routes[1].kind",
            "routes[1].secrets[0]",
            "routes[1].unverified",
        ] {
            assert!(keys.contains(&k), "missing {k} in {errs:#?}");
        }
        // The secret's variable is named, never a value.
        assert!(errs
            .iter()
            .any(|e| e.message.contains("AUTHBACK_TEST_SURELY_UNSET_VAR")));
    }

    #[test]
    fn named_ip_lists_expand() {
        let text = MINIMAL.replace(
            "secrets = [",
            "allow_ips = [\"klarna-playground\", \"10.0.0.0/8\"]\nsecrets = [",
        );
        let c = Config::parse(&text, Path::new(".")).expect("valid");
        let r = &c.routes[0];
        assert!(r.ip_allowed("34.242.19.4".parse().expect("ip")));
        assert!(r.ip_allowed("10.1.2.3".parse().expect("ip")));
        assert!(!r.ip_allowed("52.17.117.56".parse().expect("ip")));
    }
}
