//! The public listener's TLS: the pairs the config names loaded and checked
//! (`check`, `start`), the names they serve (`host_names`), and the reload
//! loop (file changes, polled, and SIGHUP). A pair that fails to reload
//! keeps its last good one; the other pairs are not touched.

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::certs::{covers, dns_names, fingerprint, leaf, parse_pair, provider, read, self_signed};
use super::sni::{CertResolver, Served};
use crate::config::{CertPair, Config, ConfigError, HostNames, TlsConfig};
use crate::ops::metrics::{Metrics, ReloadOutcome};
use crate::ops::shutdown::Stop;

pub use super::certs::TlsError;

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

/// One pair's files parsed, and checked against its `names`: a certificate
/// that does not cover one of them is refused, at start as on a reload.
/// The single `cert`/`key` pair is served for its certificate's names.
fn served(cert: &[u8], key: &[u8], pair: &CertPair) -> Result<Served, TlsError> {
    let signing = parse_pair(cert, key, &pair.cert, &pair.key)?;
    let der = leaf(&signing).ok_or_else(|| TlsError::NoCertificate {
        path: pair.cert.clone(),
    })?;
    let names = match &pair.names {
        None => dns_names(der),
        Some(names) => {
            if let Some(name) = names.as_slice().iter().find(|n| !covers(der, n)) {
                return Err(TlsError::NotCovered {
                    path: pair.cert.clone(),
                    name: name.clone(),
                    covers: dns_names(der),
                });
            }
            names.clone()
        }
    };
    Ok(Served {
        key: Arc::new(signing),
        names,
    })
}

/// `error` under the key of pair `index` to change: its `cert`, its `key`,
/// its `names`, or the pair as a whole (a key that does not fit).
fn at(pair: &CertPair, index: usize, error: TlsError) -> TlsError {
    let field = match &error {
        TlsError::Read { path, .. }
        | TlsError::NoCertificate { path }
        | TlsError::BadPem { path, .. } => match path == &pair.key {
            true => ".key",
            false => ".cert",
        },
        TlsError::NotCovered { .. } => ".names",
        _ => "",
    };
    TlsError::At {
        key: format!("{}{field}", pair.key_name(index)),
        source: Box::new(error),
    }
}

/// Certificate and key files that are watched for changes: one pair.
struct Reloader {
    slot: usize,
    pair: CertPair,
    fingerprint: [u8; 32],
}

impl Reloader {
    /// Loads pair `slot` once; failing here is a start-up error.
    fn load(slot: usize, pair: &CertPair) -> Result<(Self, Served), TlsError> {
        let read_both = || -> Result<_, TlsError> {
            let (c, k) = (read(&pair.cert)?, read(&pair.key)?);
            Ok((fingerprint(&c, &k), served(&c, &k, pair)?))
        };
        let (fingerprint, served) = read_both().map_err(|e| at(pair, slot, e))?;
        let reloader = Self {
            slot,
            pair: pair.clone(),
            fingerprint,
        };
        Ok((reloader, served))
    }

    /// Reloads if the files changed (or `force`). Kubernetes replaces a
    /// `..data` symlink rather than the files, so content is compared, not
    /// modification times.
    fn check(&mut self, force: bool, resolver: &CertResolver, metrics: &Metrics) {
        let cert = self.pair.cert.display().to_string();
        let (c, k) = match (read(&self.pair.cert), read(&self.pair.key)) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => {
                if force {
                    tracing::error!(%cert, error = %e, "certificate reload failed; keeping the current certificate");
                    metrics.tls_reload(ReloadOutcome::Error);
                }
                return;
            }
        };
        let fp = fingerprint(&c, &k);
        if fp == self.fingerprint && !force {
            return;
        }
        // Remember even a bad pair, so it is not retried (and logged) on every poll.
        self.fingerprint = fp;
        match served(&c, &k, &self.pair) {
            Ok(s) => {
                resolver.set(self.slot, s);
                metrics.tls_reload(ReloadOutcome::Ok);
                tracing::info!(%cert, "certificate reloaded");
            }
            Err(e) => {
                metrics.tls_reload(ReloadOutcome::Error);
                tracing::error!(%cert, error = %e, "certificate reload failed; keeping the current certificate");
            }
        }
    }
}

/// Polls every pair every `interval`, and all at once on `sighup`, until `stop`.
async fn reload(
    mut pairs: Vec<Reloader>,
    resolver: Arc<CertResolver>,
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
        for p in &mut pairs {
            p.check(force, &resolver, &metrics);
        }
    }
}

/// Every configured pair loaded, or every pair's error under its key.
fn load(pairs: &[CertPair]) -> Result<Vec<(Reloader, Served)>, Vec<TlsError>> {
    let (mut ok, mut errors) = (Vec::new(), Vec::new());
    for (i, pair) in pairs.iter().enumerate() {
        match Reloader::load(i, pair) {
            Ok(loaded) => ok.push(loaded),
            Err(e) => errors.push(e),
        }
    }
    match errors.is_empty() {
        true => Ok(ok),
        false => Err(errors),
    }
}

/// What `authback check`, the doctor and `run` need of the certificate
/// files: every pair loads, its key fits its certificate, and its
/// certificate covers each of its `names`. Each problem under its key.
pub fn check(config: &Config) -> Vec<ConfigError> {
    let Some(TlsConfig::Files { pairs, .. }) = &config.server.tls else {
        return Vec::new();
    };
    let errors = load(pairs).err().unwrap_or_default();
    errors
        .into_iter()
        .map(|e| match e {
            TlsError::At { key, source } => ConfigError {
                key,
                message: source.to_string(),
            },
            other => ConfigError {
                key: "server.tls".into(),
                message: other.to_string(),
            },
        })
        .collect()
}

/// The names of a throwaway certificate: `localhost` and the `public_url`
/// host (an address too, which a client checks though it sends no SNI).
fn self_signed_names(public_url: &str) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Some(host) = public_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(String::from))
    {
        names.push(host);
    }
    names
}

/// Of a certificate's names, those a client can ask for by SNI.
fn dns_only(names: &[String]) -> HostNames {
    let mut out: Vec<String> = Vec::new();
    for n in names.iter().filter_map(|n| HostNames::normal(n).ok()) {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    HostNames::new(out)
}

/// Every host name the public listener holds a certificate for: each
/// `[[server.tls.certificates]]` entry's `names`, or the DNS names of the
/// single `cert` (read from its file now), or `localhost` and the
/// `public_url` host for a self-signed one. Whether a request's host is
/// one of them is `HostNames::contains` (case, a trailing dot, wildcards).
pub fn host_names(config: &Config) -> Result<HostNames, TlsError> {
    match &config.server.tls {
        None => Ok(HostNames::new(Vec::new())),
        Some(TlsConfig::SelfSigned { .. }) => {
            Ok(dns_only(&self_signed_names(&config.server.public_url)))
        }
        Some(TlsConfig::Files { pairs, .. }) => {
            let loaded = load(pairs).map_err(first)?;
            let served: Vec<Served> = loaded.into_iter().map(|(_, s)| s).collect();
            Ok(CertResolver::new(served, false).host_names())
        }
    }
}

fn first(mut errors: Vec<TlsError>) -> TlsError {
    match errors.is_empty() {
        true => TlsError::Key("no certificate".into()),
        false => errors.swap_remove(0),
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
            pairs,
            reload_interval,
            strict_sni,
        }) => {
            let (reloaders, served): (Vec<_>, Vec<_>) =
                load(pairs).map_err(first)?.into_iter().unzip();
            for s in &served {
                tracing::info!(names = %s.names, "certificate loaded");
            }
            let resolver = CertResolver::new(served, *strict_sni);
            tasks.push(tokio::spawn(reload(
                reloaders,
                resolver.clone(),
                *reload_interval,
                sighup.clone(),
                metrics,
                stop.clone(),
            )));
            (Some(resolver), true)
        }
        Some(TlsConfig::SelfSigned { strict_sni }) => {
            let names = self_signed_names(public_url);
            let key = self_signed(names.clone())?;
            tracing::warn!("serving a throwaway self-signed certificate (development only)");
            let served = Served {
                key: Arc::new(key),
                names: dns_only(&names),
            };
            (Some(CertResolver::new(vec![served], *strict_sni)), false)
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
