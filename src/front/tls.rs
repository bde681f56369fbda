//! The public listener's TLS: PEM loading, a certificate resolver that can be
//! swapped while connections are being served, and the reload loop (file
//! changes, polled, and SIGHUP). A reload that fails keeps the last good pair.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::digest;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::ops::metrics::{Metrics, ReloadOutcome};
use crate::ops::shutdown::Stop;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {why}")]
    BadPem { path: PathBuf, why: String },
    #[error("certificate and key do not fit together: {0}")]
    Key(String),
    #[error("cannot generate a self-signed certificate: {0}")]
    SelfSigned(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Parses a PEM chain and key into a ready signing pair.
pub(crate) fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: cert_path.into(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.into(),
        });
    }
    // The error text of a key parser could echo key material: say only what failed.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::BadPem {
        path: key_path.into(),
        why: "no usable PEM private key".into(),
    })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| TlsError::Key(e.to_string()))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

/// A throwaway certificate for development (`self_signed = true`).
pub(crate) fn self_signed(names: Vec<String>) -> Result<CertifiedKey, TlsError> {
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let key = PrivateKeyDer::try_from(generated.key_pair.serialize_der())
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    CertifiedKey::from_der(vec![generated.cert.der().clone()], key, &provider())
        .map_err(|e| TlsError::Key(e.to_string()))
}

/// Serves whichever certificate was loaded last.
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertResolver")
    }
}

impl CertResolver {
    pub(crate) fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// The pair served now.
    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// TLS 1.2 and 1.3 with the provider's default (strong, AEAD-only, forward
/// secret) suites, chosen in the server's order; ALPN offers HTTP/2 first,
/// then HTTP/1.1.
pub(crate) fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Key(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server picks the suite: a client cannot steer it to a weaker one.
    cfg.ignore_client_order = true;
    Ok(Arc::new(cfg))
}

/// Certificate and key files that are watched for changes.
pub struct Reloader {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub resolver: Arc<CertResolver>,
    fingerprint: [u8; 32],
}

impl Reloader {
    /// Loads the pair once; failing here is a start-up error.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<(Self, Arc<CertResolver>), TlsError> {
        let (c, k) = (read(&cert)?, read(&key)?);
        let pair = parse_pair(&c, &k, &cert, &key)?;
        let resolver = CertResolver::new(pair);
        let fingerprint = fingerprint(&c, &k);
        Ok((
            Self {
                cert,
                key,
                resolver: resolver.clone(),
                fingerprint,
            },
            resolver,
        ))
    }

    /// Reloads if the files changed (or `force`). Kubernetes replaces a
    /// `..data` symlink rather than the files, so content is compared, not
    /// modification times.
    pub(crate) fn check(&mut self, force: bool, metrics: &Metrics) {
        let (c, k) = match (read(&self.cert), read(&self.key)) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => {
                if force {
                    tracing::error!(error = %e, "certificate reload failed; keeping the current certificate");
                    metrics.tls_reload(ReloadOutcome::Error);
                }
                return;
            }
        };
        let fp = fingerprint(&c, &k);
        if fp == self.fingerprint && !force {
            return;
        }
        match parse_pair(&c, &k, &self.cert, &self.key) {
            Ok(pair) => {
                self.resolver.set(pair);
                self.fingerprint = fp;
                metrics.tls_reload(ReloadOutcome::Ok);
                tracing::info!(cert = %self.cert.display(), "certificate reloaded");
            }
            Err(e) => {
                // Remember the bad pair so it is not retried (and logged) on every poll.
                self.fingerprint = fp;
                metrics.tls_reload(ReloadOutcome::Error);
                tracing::error!(error = %e, "certificate reload failed; keeping the current certificate");
            }
        }
    }

    /// Polls every `interval` and reloads at once on `sighup`, until `stop`.
    pub(crate) async fn run(
        mut self,
        interval: Duration,
        sighup: Arc<Notify>,
        metrics: Arc<Metrics>,
        stop: Stop,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                _ = sighup.notified() => true,
                _ = stop.wait() => return,
            };
            self.check(force, &metrics);
        }
    }
}

/// What `start` gives the listeners: TLS (none without `[server.tls]`) and
/// the certificate it serves now, for the names it is for.
pub(crate) struct Started {
    pub acceptor: Option<TlsAcceptor>,
    pub resolver: Option<Arc<CertResolver>>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// The public listener's TLS as `config` asks for it, with the tasks that
/// keep it current: the reload loop for certificate files, and the SIGHUP
/// handler. SIGHUP is always caught, so that it never ends the process (its
/// default action), even when there is no certificate file to reload.
pub(crate) fn start(
    config: Option<&TlsConfig>,
    public_url: &str,
    metrics: Arc<Metrics>,
    stop: Stop,
) -> Result<Started, TlsError> {
    let mut tasks = Vec::new();
    let sighup = Arc::new(Notify::new());
    let (resolver, reloads) = match config {
        Some(TlsConfig::Files {
            cert,
            key,
            reload_interval,
        }) => {
            let (reloader, resolver) = Reloader::load(cert.clone(), key.clone())?;
            tasks.push(tokio::spawn(reloader.run(
                *reload_interval,
                sighup.clone(),
                metrics,
                stop.clone(),
            )));
            (Some(resolver), true)
        }
        Some(TlsConfig::SelfSigned) => {
            let mut names = vec!["localhost".to_string()];
            if let Some(host) = public_url
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| u.host().map(String::from))
            {
                names.push(host);
            }
            tracing::warn!("serving a throwaway self-signed certificate (development only)");
            (Some(CertResolver::new(self_signed(names)?)), false)
        }
        None => (None, false),
    };
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = hup.recv() => {
                        if reloads {
                            tracing::info!("SIGHUP: reloading the certificate");
                            sighup.notify_one();
                        } else {
                            tracing::info!("SIGHUP: no certificate files to reload");
                        }
                    }
                    _ = stop.wait() => return,
                }
            }
        })),
        Err(e) => tracing::warn!(error = %e, "cannot catch SIGHUP"),
    }
    let acceptor = match &resolver {
        Some(r) => Some(TlsAcceptor::from(server_config(r.clone())?)),
        None => None,
    };
    Ok(Started {
        acceptor,
        resolver,
        tasks,
    })
}

fn fingerprint(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(cert);
    ctx.update(b"\0");
    ctx.update(key);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}
