//! `[server.tls]`: one pair (`cert`/`key`), several by host name
//! (`[[server.tls.certificates]]`), or a throwaway self-signed one. What can
//! be told from the file alone is checked here; whether each certificate
//! covers its names needs the files, and `front::tls::check` reads them.

use std::path::Path;

use super::checker::Checker;
use super::file::FileTls;
use super::host_names::HostNames;
use crate::config::model::{CertPair, TlsConfig};

pub(super) fn tls(c: &mut Checker, t: &FileTls, base: &Path) -> TlsConfig {
    let strict_sni = t.strict_sni.unwrap_or(false);
    let single = t.cert.is_some() || t.key.is_some();
    let several = !t.certificates.is_empty();
    if t.self_signed {
        if single {
            c.err(
                "server.tls.self_signed",
                "set either self_signed or cert and key, not both",
            );
        }
        if several {
            c.err(
                "server.tls.self_signed",
                "set either self_signed or [[server.tls.certificates]], not both",
            );
        }
        return TlsConfig::SelfSigned { strict_sni };
    }
    let reload_interval = c.positive_duration(
        "server.tls.reload_interval",
        t.reload_interval.as_deref(),
        "5s",
    );
    let pairs = match (&t.cert, &t.key) {
        _ if single && several => {
            c.err(
                "server.tls.certificates",
                "set either cert and key or [[server.tls.certificates]], not both",
            );
            Vec::new()
        }
        _ if several => certificates(c, t, base),
        (Some(cert), Some(key)) => vec![CertPair {
            cert: base.join(cert),
            key: base.join(key),
            names: None,
        }],
        _ => {
            c.err(
                "server.tls",
                "needs both cert and key (PEM files), [[server.tls.certificates]], or self_signed = true for development",
            );
            Vec::new()
        }
    };
    TlsConfig::Files {
        pairs,
        reload_interval,
        strict_sni,
    }
}

/// Each `[[server.tls.certificates]]` entry: its files, and its names, each
/// a DNS name in no other entry.
fn certificates(c: &mut Checker, t: &FileTls, base: &Path) -> Vec<CertPair> {
    let mut pairs = Vec::new();
    // Every name so far, with the entry it is in.
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (i, f) in t.certificates.iter().enumerate() {
        let key = format!("server.tls.certificates[{i}]");
        if f.names.is_empty() {
            c.err(
                format!("{key}.names"),
                "is required: the host names this certificate is served for, such as [\"shop.example.com\"]",
            );
        }
        let mut names = Vec::new();
        for (j, name) in f.names.iter().enumerate() {
            let at = format!("{key}.names[{j}]");
            match HostNames::normal(name) {
                Err(e) => c.err(at, e),
                Ok(n) => match seen.iter().find(|(s, _)| *s == n) {
                    Some((_, k)) => c.err(
                        at,
                        format!("`{n}` is also in server.tls.certificates[{k}].names: each name is served by one certificate"),
                    ),
                    None => {
                        seen.push((n.clone(), i));
                        names.push(n);
                    }
                },
            }
        }
        let mut file = |field: &str, value: &Option<std::path::PathBuf>| match value {
            Some(p) => Some(base.join(p)),
            None => {
                c.err(format!("{key}.{field}"), "is required (a PEM file)");
                None
            }
        };
        let (cert, key) = (file("cert", &f.cert), file("key", &f.key));
        if let (Some(cert), Some(key)) = (cert, key) {
            pairs.push(CertPair {
                cert,
                key,
                names: Some(HostNames::new(names)),
            });
        }
    }
    pairs
}

/// With `[[server.tls.certificates]]`, the host of `public_url` (the host
/// Klarna calls back) must be in some entry's names, or Klarna would be
/// served a certificate for another name and refuse it.
pub(super) fn public_url_covered(c: &mut Checker, tls: &TlsConfig, public_url: &str) {
    let TlsConfig::Files { pairs, .. } = tls else {
        return;
    };
    let Some(host) = public_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_string))
    else {
        return;
    };
    let named: Vec<&HostNames> = pairs.iter().filter_map(|p| p.names.as_ref()).collect();
    if named.is_empty() || named.iter().any(|n| n.contains(&host)) {
        return;
    }
    c.err(
        "server.public_url",
        format!("its host `{host}` is in no server.tls.certificates[].names: Klarna's callbacks to it would be served a certificate for another name; add it to the names of the certificate that covers it"),
    );
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, TlsConfig, MINIMAL};
    use std::path::Path;

    const PAIRS: &str = r#"
[[server.tls.certificates]]
names = ["Shop.Example.com.", "*.shop.example.com"]
cert = "shop.crt"
key = "shop.key"
[[server.tls.certificates]]
names = ["api.example.com"]
cert = "/etc/tls/api.crt"
key = "/etc/tls/api.key"
"#;

    /// MINIMAL with `tls` in place of `self_signed = true`.
    fn parse(tls: &str) -> Result<Config, Vec<ConfigError>> {
        let text = MINIMAL.replace("self_signed = true\n", &format!("{tls}\n"));
        Config::parse(&text, Path::new("/cfg"))
    }

    fn keys(tls: &str) -> Vec<String> {
        let errors = parse(tls).expect_err(tls);
        errors.into_iter().map(|e| e.key).collect()
    }

    #[test]
    fn certificates_are_read_with_their_names_in_normal_form() {
        let c = parse(&format!("strict_sni = true\n{PAIRS}")).expect("valid");
        let Some(TlsConfig::Files {
            pairs, strict_sni, ..
        }) = &c.server.tls
        else {
            panic!("{:?}", c.server.tls)
        };
        assert!(strict_sni);
        assert_eq!(pairs.len(), 2);
        assert_eq!(
            pairs[0].cert,
            Path::new("/cfg/shop.crt"),
            "relative to the config"
        );
        assert_eq!(pairs[1].key, Path::new("/etc/tls/api.key"));
        let names = pairs[0].names.as_ref().expect("names");
        assert_eq!(names.as_slice(), ["shop.example.com", "*.shop.example.com"]);
        assert_eq!(pairs[1].key_name(1), "server.tls.certificates[1]");
        // The single pair is served for its certificate's own names.
        let c = parse("cert = \"a.crt\"\nkey = \"a.key\"").expect("valid");
        let Some(TlsConfig::Files {
            pairs, strict_sni, ..
        }) = &c.server.tls
        else {
            panic!("{:?}", c.server.tls)
        };
        assert!(!strict_sni, "off by default");
        assert!(pairs[0].names.is_none());
        assert_eq!(pairs[0].key_name(0), "server.tls");
    }

    #[test]
    fn one_form_or_the_other() {
        let both = format!("cert = \"a.crt\"\nkey = \"a.key\"\n{PAIRS}");
        assert_eq!(keys(&both), ["server.tls.certificates"]);
        let with_self_signed = format!("self_signed = true\n{PAIRS}");
        assert_eq!(keys(&with_self_signed), ["server.tls.self_signed"]);
        assert_eq!(keys("reload_interval = \"1s\""), ["server.tls"]);
        // strict_sni works with the self-signed certificate too.
        let c = parse("self_signed = true\nstrict_sni = true").expect("valid");
        assert!(matches!(
            c.server.tls,
            Some(TlsConfig::SelfSigned { strict_sni: true })
        ));
    }

    #[test]
    fn each_entry_needs_files_and_dns_names_of_its_own() {
        let errors = parse(
            r#"
[[server.tls.certificates]]
cert = "a.crt"
[[server.tls.certificates]]
names = ["b.example.com", "10.0.0.1", "a b", "*.*.example.com"]
key = "b.key"
[[server.tls.certificates]]
names = ["c.example.com", "B.example.com."]
cert = "c.crt"
key = "c.key"
"#,
        )
        .expect_err("invalid");
        let named: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            named,
            [
                "server.tls.certificates[0].names",
                "server.tls.certificates[0].key",
                "server.tls.certificates[1].names[1]",
                "server.tls.certificates[1].names[2]",
                "server.tls.certificates[1].names[3]",
                "server.tls.certificates[1].cert",
                "server.tls.certificates[2].names[1]",
            ],
            "{errors:#?}"
        );
        assert!(
            errors[6]
                .message
                .contains("also in server.tls.certificates[1].names"),
            "{}",
            errors[6].message
        );
        // Unknown keys in an entry are named with it.
        assert_eq!(
            keys(&PAIRS.replace("key = \"shop.key\"", "key = \"shop.key\"\nchain = \"x\"")),
            ["server.tls.certificates[0].chain"]
        );
    }

    #[test]
    fn the_public_url_host_must_be_in_some_entrys_names() {
        let with_url = |url: &str| {
            MINIMAL
                .replace("https://shop.example.com", url)
                .replace("self_signed = true\n", PAIRS)
        };
        for covered in [
            "https://shop.example.com",
            "https://SHOP.example.com:8443",
            "https://pay.shop.example.com",
            "https://api.example.com/base",
        ] {
            assert!(
                Config::parse(&with_url(covered), Path::new("/")).is_ok(),
                "{covered}"
            );
        }
        for uncovered in ["https://example.com", "https://a.b.shop.example.com"] {
            let errors = Config::parse(&with_url(uncovered), Path::new("/")).expect_err(uncovered);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].key, "server.public_url");
            assert!(
                errors[0]
                    .message
                    .contains("is in no server.tls.certificates"),
                "{}",
                errors[0].message
            );
        }
    }
}
