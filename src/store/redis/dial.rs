//! Reaching the Redis primary: at `store.url`, or wherever the sentinels
//! say it is now (`store.sentinels`, `store.master_name`), over TCP, TLS or
//! a Unix socket, authenticated, as one multiplexed connection.
//!
//! The redis crate's own Sentinel and TLS support is not used: its async
//! Sentinel client hands out a connection to the primary of the moment and
//! never follows a failover, its TLS for the servers the sentinels name
//! takes no CA of ours, and its rustls feature adds a second crypto
//! provider (ring) beside aws-lc-rs. The connection is the crate's
//! `MultiplexedConnection` over a stream dialled here, with the crate-wide
//! rustls configuration style (aws-lc-rs, TLS 1.3 and 1.2).
//!
//! Never logs or returns a password: errors name addresses only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisConnectionInfo, RedisError, RedisResult};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::types::Secret;

/// The `[store]` keys that say how to reach Redis, validated.
#[derive(Debug, Clone)]
pub struct RedisConnect {
    /// `store.url`: the one server (it may hold a password).
    pub url: Option<Secret>,
    /// `store.sentinels` (`host:port` each) and `store.master_name`.
    pub sentinels: Vec<String>,
    pub master_name: Option<String>,
    /// `store.username` and `store.password`, for Redis itself.
    pub username: Option<Secret>,
    pub password: Option<Secret>,
    /// `store.sentinel_username` and `store.sentinel_password`.
    pub sentinel_username: Option<Secret>,
    pub sentinel_password: Option<Secret>,
    /// TLS to Redis and the sentinels: `rediss://`, or `store.tls`.
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `store.min_replicas_acked` and `store.replica_ack_timeout`.
    pub min_replicas_acked: u32,
    pub replica_ack_timeout: Duration,
}

impl RedisConnect {
    /// One server at `url`, no TLS files, no replica acknowledgement.
    pub fn url(url: &str) -> Self {
        RedisConnect {
            url: Some(Secret::new(url)),
            sentinels: Vec::new(),
            master_name: None,
            username: None,
            password: None,
            sentinel_username: None,
            sentinel_password: None,
            tls: url.starts_with("rediss://"),
            ca_file: None,
            tls_cert: None,
            tls_key: None,
            min_replicas_acked: 0,
            replica_ack_timeout: Duration::from_millis(250),
        }
    }
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Addr {
    Tcp(String, u16),
    Unix(PathBuf),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(host, port) if host.contains(':') => write!(f, "[{host}]:{port}"),
            Addr::Tcp(host, port) => write!(f, "{host}:{port}"),
            Addr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A `redis://`, `rediss://` or `unix://` URL, read: where, and who.
#[derive(Debug)]
pub(crate) struct ParsedUrl {
    pub addr: Addr,
    pub tls: bool,
    pub info: RedisConnectionInfo,
}

/// Reads a Redis URL. The redis crate parses it (as `redis://` for a
/// `rediss://` one: its own TLS is not built in). The error never holds the
/// URL, which may hold a password.
pub(crate) fn parse_url(url: &str) -> Result<ParsedUrl, String> {
    let (tls, plain) = match url.strip_prefix("rediss://") {
        Some(rest) => (true, format!("redis://{rest}")),
        None => (false, url.to_string()),
    };
    let info = redis::IntoConnectionInfo::into_connection_info(plain.as_str())
        .map_err(|e| format!("not a Redis URL: {e}"))?;
    let addr = match info.addr {
        redis::ConnectionAddr::Tcp(host, port) => Addr::Tcp(host, port),
        redis::ConnectionAddr::Unix(path) => Addr::Unix(path),
        redis::ConnectionAddr::TcpTls { host, port, .. } => Addr::Tcp(host, port),
    };
    Ok(ParsedUrl {
        addr,
        tls,
        info: info.redis,
    })
}

/// Reads `host:port` (a bracketed IPv6 host allowed); the port is required.
pub(crate) fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty() && !host.contains(['/', ' '])).then(|| (host.to_string(), port))
}

/// How the primary is found.
enum Way {
    /// `store.url`: always this server.
    Direct(Addr),
    /// Asked of the sentinels, in turn, starting with the last that answered.
    Sentinels {
        sentinels: Vec<(String, u16)>,
        master_name: String,
        info: RedisConnectionInfo,
        answered: AtomicUsize,
    },
}

/// Dials the primary: knows where to look, the credentials and TLS.
pub(crate) struct Dialer {
    way: Way,
    info: RedisConnectionInfo,
    tls: Option<tokio_rustls::TlsConnector>,
    /// For each step (a TCP connection, TLS, the first answer).
    step: Duration,
}

/// A byte stream to a server, whichever kind.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connection and the task that drives it: dropping it closes the
/// connection, however many clones of the connection are still around.
pub(crate) struct Dialed {
    pub conn: MultiplexedConnection,
    pub addr: Addr,
    pub driver: tokio::task::AbortHandle,
}

fn io_error(what: String) -> RedisError {
    RedisError::from((ErrorKind::IoError, "cannot reach Redis", what))
}

fn utf8(s: &Option<Secret>, key: &str) -> Result<Option<String>, String> {
    s.as_ref()
        .map(|s| String::from_utf8(s.expose().to_vec()).map_err(|_| format!("{key} is not UTF-8")))
        .transpose()
}

impl Dialer {
    /// Reads the config (and the TLS files it names). `step` bounds each
    /// step of a dial.
    pub(crate) fn new(c: &RedisConnect, step: Duration) -> Result<Self, String> {
        let username = utf8(&c.username, "store.username")?;
        let password = utf8(&c.password, "store.password")?;
        let (way, mut info, tls) = match &c.url {
            Some(url) => {
                let url = std::str::from_utf8(url.expose())
                    .map_err(|_| "store.url is not UTF-8".to_string())?;
                let p = parse_url(url).map_err(|e| format!("store.url: {e}"))?;
                (Way::Direct(p.addr), p.info, p.tls || c.tls)
            }
            None => {
                let sentinels = c
                    .sentinels
                    .iter()
                    .map(|s| {
                        parse_host_port(s).ok_or(format!("store.sentinels: `{s}` is not host:port"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let master_name = c
                    .master_name
                    .clone()
                    .ok_or("store.master_name is not set")?;
                let info = RedisConnectionInfo {
                    username: utf8(&c.sentinel_username, "store.sentinel_username")?,
                    password: utf8(&c.sentinel_password, "store.sentinel_password")?,
                    ..RedisConnectionInfo::default()
                };
                let way = Way::Sentinels {
                    sentinels,
                    master_name,
                    info,
                    answered: AtomicUsize::new(0),
                };
                (way, RedisConnectionInfo::default(), c.tls)
            }
        };
        if username.is_some() {
            info.username = username;
        }
        if password.is_some() {
            info.password = password;
        }
        let tls = tls
            .then(|| {
                tls_connector(
                    c.ca_file.as_deref(),
                    c.tls_cert.as_deref(),
                    c.tls_key.as_deref(),
                )
            })
            .transpose()?;
        Ok(Dialer {
            way,
            info,
            tls,
            step,
        })
    }

    pub(crate) fn db(&self) -> i64 {
        self.info.db
    }

    /// Connects to the primary, with `response` as the connection's limit
    /// for each answer. With sentinels, the server they name must say it is
    /// the primary (`ROLE`), as Redis's guide for Sentinel clients asks: a
    /// sentinel may still name the old one just after a failover.
    pub(crate) async fn primary(&self, response: Duration) -> RedisResult<Dialed> {
        let addr = match &self.way {
            Way::Direct(addr) => addr.clone(),
            Way::Sentinels { .. } => self.ask_sentinels().await?,
        };
        let dialed = self.connect(&addr, &self.info, response).await?;
        if let Way::Sentinels { .. } = self.way {
            let mut conn = dialed.conn.clone();
            let role = tokio::time::timeout(self.step, redis::cmd("ROLE").query_async(&mut conn))
                .await
                .map_err(|_| io_error(format!("no answer to ROLE from {addr}")))?;
            let role: Vec<redis::Value> = role?;
            let is_primary =
                matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master");
            if !is_primary {
                dialed.driver.abort();
                return Err(io_error(format!(
                    "{addr}, named primary by the sentinels, is not (yet) the primary"
                )));
            }
        }
        Ok(dialed)
    }

    /// The primary's address, from the first sentinel that knows it.
    async fn ask_sentinels(&self) -> RedisResult<Addr> {
        let Way::Sentinels {
            sentinels,
            master_name,
            info,
            answered,
        } = &self.way
        else {
            return Err(io_error("no sentinels".into()));
        };
        let first = answered.load(Ordering::Relaxed);
        let mut why = Vec::new();
        for i in 0..sentinels.len() {
            let n = (first + i) % sentinels.len();
            let (host, port) = &sentinels[n];
            let addr = Addr::Tcp(host.clone(), *port);
            let asked = async {
                let d = self.connect(&addr, info, self.step).await?;
                let mut conn = d.conn.clone();
                let r: RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master_name)
                    .query_async(&mut conn)
                    .await;
                d.driver.abort();
                r
            };
            match tokio::time::timeout(self.step * 2, asked).await {
                Ok(Ok(Some((host, port)))) => {
                    answered.store(n, Ordering::Relaxed);
                    return Ok(Addr::Tcp(host, port));
                }
                Ok(Ok(None)) => why.push(format!("{addr} knows no primary named {master_name}")),
                Ok(Err(e)) => why.push(format!("{addr}: {e}")),
                Err(_) => why.push(format!("{addr}: no answer")),
            }
        }
        Err(io_error(format!(
            "no sentinel named the primary: {}",
            why.join("; ")
        )))
    }

    /// Opens a stream to `addr`, TLS when configured, and a connection over
    /// it authenticated as `info` says.
    async fn connect(
        &self,
        addr: &Addr,
        info: &RedisConnectionInfo,
        response: Duration,
    ) -> RedisResult<Dialed> {
        let stream: Box<dyn Io> = match addr {
            Addr::Unix(path) => Box::new(
                tokio::time::timeout(self.step, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(|_| io_error(format!("{addr}: no connection")))??,
            ),
            Addr::Tcp(host, port) => {
                let tcp =
                    tokio::time::timeout(self.step, TcpStream::connect((host.as_str(), *port)))
                        .await
                        .map_err(|_| io_error(format!("{addr}: no connection")))??;
                let _ = tcp.set_nodelay(true);
                match &self.tls {
                    None => Box::new(tcp),
                    Some(tls) => {
                        let name = ServerName::try_from(host.clone())
                            .map_err(|_| io_error(format!("{addr}: not a TLS server name")))?;
                        let s = tokio::time::timeout(self.step, tls.connect(name, tcp))
                            .await
                            .map_err(|_| io_error(format!("{addr}: no TLS handshake")))?
                            .map_err(|e| io_error(format!("{addr}: TLS: {e}")))?;
                        Box::new(s)
                    }
                }
            }
        };
        let config = AsyncConnectionConfig::new().set_response_timeout(response);
        let (conn, driver) = tokio::time::timeout(
            self.step,
            MultiplexedConnection::new_with_config(info, stream, config),
        )
        .await
        .map_err(|_| io_error(format!("{addr}: no answer")))??;
        let driver = tokio::spawn(driver).abort_handle();
        Ok(Dialed {
            conn,
            addr: addr.clone(),
            driver,
        })
    }
}

/// The rustls client for Redis and the sentinels: the CA in `ca_file`
/// (else the built-in Mozilla roots), and the client certificate when
/// given. Errors name the file.
fn tls_connector(
    ca_file: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<tokio_rustls::TlsConnector, String> {
    let roots = match ca_file {
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
        Some(path) => {
            let bad = |e: &dyn std::fmt::Display| format!("store.ca_file {}: {e}", path.display());
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                roots.add(c.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(bad(&"no PEM certificate in it"));
            }
            roots
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("store.tls_cert {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("store.tls_key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("store.tls_cert and store.tls_key: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_read_with_their_scheme_and_no_secret_in_errors() {
        let p = parse_url("rediss://user:hunter2-secret@redis.shop.svc:6380/3").expect("url");
        assert_eq!(p.addr, Addr::Tcp("redis.shop.svc".into(), 6380));
        assert!(p.tls);
        assert_eq!(p.info.db, 3);
        assert_eq!(p.info.username.as_deref(), Some("user"));
        assert_eq!(p.info.password.as_deref(), Some("hunter2-secret"));
        let p = parse_url("redis://127.0.0.1/0").expect("url");
        assert_eq!(p.addr.to_string(), "127.0.0.1:6379");
        assert!(!p.tls);
        assert_eq!(
            parse_url("redis://[::1]:7000")
                .expect("v6")
                .addr
                .to_string(),
            "[::1]:7000"
        );
        let p = parse_url("unix:///run/redis.sock").expect("unix");
        assert_eq!(p.addr, Addr::Unix("/run/redis.sock".into()));
        let e = parse_url("redis://:hunter2-secret@host:notaport/0").expect_err("bad port");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn sentinels_are_host_and_port() {
        assert_eq!(
            parse_host_port("10.0.0.1:26379"),
            Some(("10.0.0.1".into(), 26379))
        );
        assert_eq!(parse_host_port("[::1]:26379"), Some(("::1".into(), 26379)));
        assert_eq!(
            parse_host_port("sentinel-0.redis.svc:26379"),
            Some(("sentinel-0.redis.svc".into(), 26379))
        );
        for bad in [
            "sentinel",
            "sentinel:",
            ":26379",
            "s:0",
            "s:99999",
            "redis://s:1",
        ] {
            assert_eq!(parse_host_port(bad), None, "{bad}");
        }
    }
}
