//! The TLS front door: certificate reloads without restart, and several
//! certificates chosen by SNI.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::common::*;

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_to_the_next_handshake() {
    let up = Upstream::start().await;
    let dir = TempDir::new();
    let first = make_cert();
    let (c, k) = write_cert(dir.path(), &first);
    let text = base_config(&up.url(), &c, &k, "");
    let ab = Authback::start_text(dir, first.der.clone(), &text, false).await;
    let served = |tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
    };
    assert_eq!(
        served(&ab.tls(&[b"http/1.1"]).await),
        Some(first.der.clone())
    );

    // A broken pair is refused and the last good certificate stays.
    std::fs::write(
        &k,
        "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    eventually!(
        ab.metrics()
            .await
            .contains("authback_tls_reloads_total{listener=\"public\",outcome=\"error\"}"),
        "the broken pair's reload refused"
    );
    assert_eq!(
        served(&ab.tls(&[b"http/1.1"]).await),
        Some(first.der.clone())
    );

    // Kubernetes-style swap: new files written beside, then renamed over.
    let second = make_cert();
    let (c_new, k_new) = (c.with_extension("crt.new"), k.with_extension("key.new"));
    std::fs::write(&c_new, &second.cert_pem).expect("write");
    std::fs::write(&k_new, &second.key_pem).expect("write");
    std::fs::rename(&k_new, &k).expect("rename");
    std::fs::rename(&c_new, &c).expect("rename");
    let mut got = None;
    eventually!(
        match tls_connect(ab.public, &second.der, &[b"http/1.1"]).await {
            Ok(tls) => {
                got = served(&tls);
                true
            }
            Err(_) => false,
        },
        "a handshake trusting only the new certificate"
    );
    assert_eq!(
        got,
        Some(second.der.clone()),
        "the new certificate is served without a restart"
    );
    let m = ab.metrics().await;
    assert_eq!(
        metric(
            &m,
            "authback_tls_reloads_total{listener=\"public\",outcome=\"ok\"}"
        ),
        Some(1.0)
    );
}

// ---------------------------------------------------------------------------
// Several certificates, by SNI.

/// Accepts whatever certificate the server shows, as long as the server
/// holds its key: the tests look at which one it chose.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate `addr` serves to a handshake with SNI `sni`, or with
/// none (`None`: the client connects to an address, and sends no SNI).
async fn served_for(
    addr: SocketAddr,
    sni: Option<&str>,
) -> std::io::Result<CertificateDer<'static>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).map_err(std::io::Error::other)?,
        None => ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await?;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or_else(|| std::io::Error::other("no certificate"))
}

/// The base config with one `[[server.tls.certificates]]` entry per
/// `(names, certificate)`, written to `pair{i}.crt`/`.key` in `dir`, and
/// `public_url` on the first name.
fn sni_config(up: &Upstream, dir: &Path, pairs: &[(&[&str], &Cert)], extra_tls: &str) -> String {
    let (c, k) = write_cert(dir, pairs[0].1);
    let mut entries = String::new();
    for (i, (names, cert)) in pairs.iter().enumerate() {
        let (pc, pk) = (
            dir.join(format!("pair{i}.crt")),
            dir.join(format!("pair{i}.key")),
        );
        std::fs::write(&pc, &cert.cert_pem).expect("write cert");
        std::fs::write(&pk, &cert.key_pem).expect("write key");
        entries.push_str(&format!(
            "[[server.tls.certificates]]\nnames = {names:?}\ncert = \"pair{i}.crt\"\nkey = \"pair{i}.key\"\n"
        ));
    }
    base_config(&up.url(), &c, &k, "")
        .replace(
            &format!("cert = \"{}\"\nkey = \"{}\"\n", c.display(), k.display()),
            "",
        )
        .replace(
            "reload_interval = \"100ms\"\n",
            &format!("reload_interval = \"100ms\"\n{extra_tls}\n{entries}"),
        )
        .replace(
            "public_url = \"https://localhost\"",
            &format!("public_url = \"https://{}\"", pairs[0].0[0]),
        )
}

struct ThreeNames {
    a: Cert,
    b: Cert,
    c: Cert,
}

impl ThreeNames {
    fn new() -> Self {
        Self {
            a: make_cert_for(&["a.test"]),
            b: make_cert_for(&["b.test"]),
            c: make_cert_for(&["c.test", "*.c.test"]),
        }
    }

    async fn start(&self, up: &Upstream, extra_tls: &str) -> Authback {
        let dir = TempDir::new();
        let text = sni_config(
            up,
            dir.path(),
            &[
                (&["a.test"], &self.a),
                (&["B.test"], &self.b),
                (&["c.test", "*.c.test"], &self.c),
            ],
            extra_tls,
        );
        Authback::start_text(dir, self.a.der.clone(), &text, false).await
    }
}

#[tokio::test]
async fn each_sni_gets_its_own_certificate_and_any_other_the_first() {
    let up = Upstream::start().await;
    let certs = ThreeNames::new();
    let ab = certs.start(&up, "").await;
    for (sni, want, what) in [
        (Some("a.test"), &certs.a, "a.test"),
        (Some("b.test"), &certs.b, "b.test (configured as B.test)"),
        (Some("B.TEST"), &certs.b, "b.test in capitals"),
        (Some("c.test"), &certs.c, "c.test"),
        (Some("x.c.test"), &certs.c, "one label under *.c.test"),
        (Some("a.test."), &certs.a, "a.test with a trailing dot"),
        (
            Some("unknown.test"),
            &certs.a,
            "an unknown name: the first pair",
        ),
        (
            Some("x.y.c.test"),
            &certs.a,
            "two labels under *.c.test: the first pair",
        ),
        (None, &certs.a, "no SNI: the first pair"),
    ] {
        let got = served_for(ab.public, sni).await.expect(what);
        assert!(got == want.der, "{what}: another certificate was served");
    }
    // The names every certificate is held for, for whoever must tell
    // whether a Host is one of them.
    let names = authback::front::tls::host_names(&ab.config).expect("names");
    assert_eq!(names.as_slice(), ["a.test", "b.test", "c.test", "*.c.test"]);
    assert!(names.contains("X.C.test."));
    assert!(!names.contains("unknown.test"));
    ab.stop().await.expect("stop");
}

#[tokio::test]
async fn strict_sni_refuses_an_unknown_or_missing_name() {
    let up = Upstream::start().await;
    let certs = ThreeNames::new();
    let ab = certs.start(&up, "strict_sni = true").await;
    for (sni, want) in [
        ("a.test", &certs.a),
        ("b.test", &certs.b),
        ("x.c.test", &certs.c),
    ] {
        let got = served_for(ab.public, Some(sni)).await.expect(sni);
        assert!(got == want.der, "{sni}: another certificate was served");
    }
    for sni in [Some("unknown.test"), Some("x.y.c.test"), None] {
        assert!(
            served_for(ab.public, sni).await.is_err(),
            "{sni:?} was served a certificate"
        );
    }
    ab.stop().await.expect("stop");
}

fn reloads(page: &str, outcome: &str) -> f64 {
    metric(
        page,
        &format!("authback_tls_reloads_total{{listener=\"public\",outcome=\"{outcome}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn one_pair_replaced_on_disk_is_served_and_the_others_stay() {
    let up = Upstream::start().await;
    let certs = ThreeNames::new();
    let ab = certs.start(&up, "").await;
    let dir = ab.dir.path().to_path_buf();
    let (crt, key) = (dir.join("pair1.crt"), dir.join("pair1.key"));
    let serves = |sni: &'static str| {
        let addr = ab.public;
        async move { served_for(addr, Some(sni)).await.expect(sni) }
    };

    // A renewed b.test, swapped in as Kubernetes does: written beside, renamed over.
    let renewed = make_cert_for(&["b.test"]);
    std::fs::write(dir.join("new.key"), &renewed.key_pem).expect("write");
    std::fs::write(dir.join("new.crt"), &renewed.cert_pem).expect("write");
    std::fs::rename(dir.join("new.key"), &key).expect("rename");
    std::fs::rename(dir.join("new.crt"), &crt).expect("rename");
    eventually!(
        serves("b.test").await == renewed.der,
        "the renewed b.test to be served"
    );
    assert!(serves("a.test").await == certs.a.der, "a.test unchanged");
    assert!(serves("c.test").await == certs.c.der, "c.test unchanged");
    assert!(reloads(&ab.metrics().await, "ok") >= 1.0);

    // A certificate for another name, on b.test's own key: only the
    // certificate file changes, and it does not cover b.test. Refused;
    // b.test keeps the renewed one.
    let errors = reloads(&ab.metrics().await, "error");
    let key_pair = rcgen::KeyPair::from_pem(&renewed.key_pem).expect("key");
    let wrong = rcgen::CertificateParams::new(vec!["other.test".to_string()])
        .expect("params")
        .self_signed(&key_pair)
        .expect("cert");
    std::fs::write(dir.join("new.crt"), wrong.pem()).expect("write");
    std::fs::rename(dir.join("new.crt"), &crt).expect("rename");
    eventually!(
        reloads(&ab.metrics().await, "error") > errors,
        "the certificate for another name to be refused"
    );
    assert!(
        serves("b.test").await == renewed.der,
        "b.test keeps its last good pair"
    );
    assert!(serves("a.test").await == certs.a.der, "a.test unchanged");
    assert!(serves("x.c.test").await == certs.c.der, "c.test unchanged");
    ab.stop().await.expect("stop");
}

#[test]
fn check_and_run_refuse_a_certificate_that_does_not_cover_its_names() {
    let dir = TempDir::new();
    let (a, b) = (make_cert_for(&["a.test"]), make_cert_for(&["b.test"]));
    let path = dir.path().join("c.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_authback"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Nothing listens on the upstream: check and a failed start need none.
    let up = "http://127.0.0.1:9";
    let text = |names_b: &[&str]| {
        let base = base_config(up, Path::new("x"), Path::new("y"), "")
            .replace("cert = \"x\"\nkey = \"y\"\n", "")
            .replace(
                "public_url = \"https://localhost\"",
                "public_url = \"https://a.test\"",
            );
        std::fs::write(dir.path().join("a.crt"), &a.cert_pem).expect("write");
        std::fs::write(dir.path().join("a.key"), &a.key_pem).expect("write");
        std::fs::write(dir.path().join("b.crt"), &b.cert_pem).expect("write");
        std::fs::write(dir.path().join("b.key"), &b.key_pem).expect("write");
        base.replace(
            "reload_interval = \"100ms\"\n",
            &format!("reload_interval = \"100ms\"\n[[server.tls.certificates]]\nnames = [\"a.test\"]\ncert = \"a.crt\"\nkey = \"a.key\"\n[[server.tls.certificates]]\nnames = {names_b:?}\ncert = \"b.crt\"\nkey = \"b.key\"\n"),
        )
    };
    let (code, err) = check(&text(&["b.test"]));
    assert_eq!(code, Some(0), "{err}");

    let bad = text(&["b.test", "shop.test"]);
    let (code, err) = check(&bad);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("server.tls.certificates[1].names: ")
            && err.contains("does not cover `shop.test`")
            && err.contains("the certificate is for b.test"),
        "{err}"
    );
    // `run` reads the pairs the same way, and does not start.
    let ports = (free_port(), free_port());
    std::fs::write(&path, on_ports(&bad, ports.0, ports.1)).expect("write");
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_authback"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn run");
    let waiting = Waiting::new(EVENTUALLY);
    let status = loop {
        if let Some(status) = run.try_wait().expect("wait") {
            break status;
        }
        if waiting.expired() {
            let _ = run.kill();
            let _ = run.wait();
            panic!("run started on a certificate that does not cover its names");
        }
        waiting.pause_blocking();
    };
    assert_eq!(status.code(), Some(2));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().expect("stderr"), &mut log)
        .expect("read stderr");
    assert!(log.contains("server.tls.certificates[1].names"), "{log}");

    // The host Klarna calls must be in some certificate's names.
    let uncovered = text(&["b.test"]).replace("https://a.test", "https://shop.test");
    let (code, err) = check(&uncovered);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("server.public_url: its host `shop.test`"),
        "{err}"
    );
}
