//! The validated config: `Config` and its sections, and the errors a file
//! can have. Built by `validate`; read by everyone else.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::host_names::HostNames;
use crate::net::{IpNet, IpSet};
use crate::route::dialect::{Dialect, PathForm};
use crate::route::Route;
use crate::store::StoreConfig;
use crate::text::Rate;
use crate::types::Secret;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in one file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(
            f,
            "{}: {n} error{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            writeln!(f, "  {}: {e}", self.file.display())?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The validated config.

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub store: StoreConfig,
    pub delivery: DeliveryConfig,
    pub routes: Vec<Route>,
    pub limits: Limits,
    pub klarna: Option<KlarnaConfig>,
    pub reconcile: ReconcileConfig,
    pub order_watch: OrderWatchConfig,
    /// Things worth a warning at start (inline secrets, short secrets...).
    pub warnings: Vec<String>,
    /// The keys of secrets written inline in the file.
    pub inline_secrets: Vec<String>,
    /// `[ip_sets]`: named address lists for `allow_ips`.
    pub ip_sets: Vec<IpSetSource>,
    /// The built-in lists (`KLARNA_IP_LISTS`) some route's `allow_ips` uses.
    pub builtin_ip_lists: Vec<&'static str>,
    pub access_log: AccessLogConfig,
}

/// `[access_log]`: one JSON line per request on a public listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub enabled: bool,
    pub to: AccessLogTarget,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    /// Appended to, and opened again on SIGHUP (after a rotation).
    File(PathBuf),
}

/// One `[ip_sets]` entry: the set routes read, and the file it is reloaded
/// from, if any.
#[derive(Debug, Clone)]
pub struct IpSetSource {
    pub set: IpSet,
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The TLS listener; `None` only when `listen_plain` is set and
    /// `listen` is not (behind an ingress that terminates TLS).
    pub listen: Option<SocketAddr>,
    pub listen_plain: Option<SocketAddr>,
    /// Plain HTTP that answers `308` to https, and passes ACME HTTP-01
    /// challenges to `acme_upstream`.
    pub listen_redirect: Option<SocketAddr>,
    /// Where ACME challenges on `listen_redirect` go; `None`: `upstream.url`.
    pub acme_upstream: Option<http::Uri>,
    /// PROXY protocol on every public listener, from these sources only.
    pub proxy_protocol: Option<ProxyProtocol>,
    pub public_url: String,
    pub trusted_proxies: Vec<IpNet>,
    pub shutdown_grace: Duration,
    /// Connection threads for the public listeners; 0 means one per CPU.
    pub workers: usize,
    /// Each worker listens on a socket of its own (`SO_REUSEPORT`); off,
    /// one accept loop hands connections to the workers.
    pub reuse_port: bool,
    /// `/readyz` also requires a healthy store (SPEC §5's stricter rule).
    pub ready_requires_store: bool,
    /// `Strict-Transport-Security` for proxied answers on the TLS listener
    /// that carry none of their own; checked for syntax at load.
    pub hsts: Option<http::HeaderValue>,
    /// `None` when no listener serves TLS and `[server.tls]` is not given.
    pub tls: Option<TlsConfig>,
}

/// `server.proxy_protocol = true`: a connection from `from` must start with
/// a PROXY header (v1 or v2), whose client address is then the peer's; a
/// connection from anywhere else that starts with one is closed.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    pub from: Vec<IpNet>,
    /// How long the header may take to arrive.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum TlsConfig {
    /// `cert`/`key` (one pair, its `names` `None`) or
    /// `[[server.tls.certificates]]` (one pair each, in the file's order).
    Files {
        pairs: Vec<CertPair>,
        reload_interval: Duration,
        /// A handshake whose SNI is in no pair's names, or that has none,
        /// fails; otherwise it gets the first pair.
        strict_sni: bool,
    },
    /// A throwaway certificate for `localhost` and the `public_url` host.
    SelfSigned { strict_sni: bool },
}

/// One certificate chain and key, and the host names it is served for.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A `[[server.tls.certificates]]` entry's `names`; `None` for the
    /// single `cert`/`key` pair, which is served for its certificate's own
    /// names.
    pub names: Option<HostNames>,
}

impl CertPair {
    /// The config key of pair `index`, for errors and logs.
    pub fn key_name(&self, index: usize) -> String {
        match self.names {
            Some(_) => format!("server.tls.certificates[{index}]"),
            None => "server.tls".to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: Option<Secret>,
    /// The longest life a minted callback URL may have.
    pub max_url_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `http://host:port`, no trailing slash; a base path, if any, is kept.
    pub url: http::Uri,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub signing_secret: Option<Secret>,
    /// Which path a proxied request carries to the backend.
    pub path_form: PathForm,
    /// How the backend reads parameter names and paths.
    pub dialect: Dialect,
    /// Near a route, a request with more query parameters than this is
    /// refused: PHP would not read the ones past it.
    pub max_input_vars: usize,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub attempt_timeout: Duration,
    pub deadline: Duration,
    pub max_in_flight: usize,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub failed_token_per_ip: Option<Rate>,
    pub callback_per_ip: Option<Rate>,
}

#[derive(Debug, Clone)]
pub struct KlarnaConfig {
    pub api_url: String,
    pub username: Option<Secret>,
    pub password: Option<Secret>,
    /// One Read Session request, connect to last byte.
    pub timeout: Duration,
    /// Extra trusted roots (PEM) besides the built-in Mozilla set.
    pub ca_file: Option<PathBuf>,
}

/// `[order_watch]`: after the backend accepts a delivery, Read Session is
/// asked until Klarna says the order was placed.
#[derive(Debug, Clone)]
pub struct OrderWatchConfig {
    pub enabled: bool,
    /// The first check, after the backend's 2xx.
    pub after: Duration,
    /// Then one check per session this often.
    pub every: Duration,
    /// Deliver once more if no order by `redeliver_after` (`None`: never).
    pub redeliver_after: Option<Duration>,
    /// No order by then: the delivery is `unconfirmed`.
    pub unconfirmed_after: Duration,
    /// How a 404 from Read Session reads: the order was placed (Klarna
    /// ends a session once its order is placed), or not known.
    pub not_found_is_placed: bool,
    /// Whether an authorization with no order by `release_after` is
    /// cancelled at Klarna.
    pub release: Release,
    /// Counted from the callback's arrival: the authorization dies 60
    /// minutes after it was made, and can be cancelled only before.
    pub release_after: Duration,
}

/// How long Klarna's `authorization_token` lives after the authorization:
/// cancelling works only before, and an order can be placed only before.
pub const AUTHORIZATION_LIFE: Duration = Duration::from_secs(3600);

/// `order_watch.release`: cancel an authorization no order used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    Off,
    /// Everything but the DELETE: what would have been released is listed.
    DryRun,
    On,
}

#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    pub enabled: bool,
    pub schedule: Vec<Duration>,
    pub give_up_after: Duration,
}

/// When `KLARNA_IP_LISTS` was taken from Klarna's documentation: `check`
/// and the startup log print it, so that a stale list is noticed.
pub const KLARNA_IP_LISTS_DATE: &str = "2026-11-23";

/// Klarna's published callback source addresses, taken from its
/// documentation on `KLARNA_IP_LISTS_DATE`. Named lists usable in
/// `allow_ips`; an `[ip_sets]` entry of the same name replaces one.
pub(crate) const KLARNA_IP_LISTS: &[(&str, &[&str])] = &[
    (
        "klarna-production",
        &[
            "52.17.117.56",
            "52.17.176.198",
            "52.0.45.33",
            "52.0.46.187",
            "13.211.30.100",
            "3.104.49.49",
            "13.54.229.130",
        ],
    ),
    (
        "klarna-playground",
        &[
            "34.242.203.160",
            "34.242.19.4",
            "52.45.47.152",
            "34.235.91.238",
            "3.24.91.202",
            "52.62.115.68",
            "52.63.129.92",
        ],
    ),
];

// ---------------------------------------------------------------------------
// Loading and validation.
