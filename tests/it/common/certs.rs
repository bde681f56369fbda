//! Temporary folders and certificates.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::pki_types::CertificateDer;

use super::trace::{init_trace, trace_file};

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        init_trace();
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "authback-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(trace) = trace_file() {
            // Keep the binary's logs for the secrets audit.
            let mut keep = trace.into_os_string();
            keep.push(".d");
            let keep = PathBuf::from(keep);
            let _ = std::fs::create_dir_all(&keep);
            let name = self
                .0
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    let file = p
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    let _ = std::fs::copy(&p, keep.join(format!("{name}-{file}")));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate (for `localhost` unless named) as PEM.
pub struct Cert {
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn make_cert() -> Cert {
    make_cert_for(&["localhost"])
}

/// A self-signed certificate whose subjectAltName holds `names`.
pub fn make_cert_for(names: &[&str]) -> Cert {
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let c = rcgen::generate_simple_self_signed(names).expect("cert");
    Cert {
        der: c.cert.der().clone(),
        cert_pem: c.cert.pem(),
        key_pem: c.key_pair.serialize_pem(),
    }
}

pub fn write_cert(dir: &Path, cert: &Cert) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&c, &cert.cert_pem).expect("write cert");
    std::fs::write(&k, &cert.key_pem).expect("write key");
    (c, k)
}

/// A TLS acceptor for HTTP/1.1 with `cert`: the test's own HTTPS servers
/// (the simulated Klarna, doctor's fakes).
pub fn tls_acceptor(cert: &Cert) -> tokio_rustls::TlsAcceptor {
    let key = rustls::pki_types::PrivateKeyDer::try_from(
        rcgen::KeyPair::from_pem(&cert.key_pem)
            .expect("key")
            .serialize_der(),
    )
    .expect("key der");
    let mut cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der.clone()], key)
    .expect("server config");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg))
}
