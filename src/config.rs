//! Configuration: the TOML file as written (`File*` structs, unknown keys
//! rejected by serde) and the validated `Config` the rest of the crate uses.
//! Durations, rates, addresses and secrets are parsed once, here; every
//! problem is reported with its key, all at once.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::net::IpNet;
use crate::text::{parse_duration, parse_rate, Rate};
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
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: FileServer,
    #[serde(default)]
    admin: FileAdmin,
    upstream: FileUpstream,
    #[serde(default)]
    store: FileStore,
    #[serde(default)]
    delivery: FileDelivery,
    #[serde(default)]
    routes: Vec<FileRoute>,
    #[serde(default)]
    limits: FileLimits,
    klarna: Option<FileKlarna>,
    #[serde(default)]
    reconcile: FileReconcile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    listen: Option<String>,
    listen_plain: Option<String>,
    public_url: Option<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    shutdown_grace: Option<String>,
    workers: Option<i64>,
    #[serde(default)]
    tls: FileTls,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    self_signed: bool,
    reload_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    listen: Option<String>,
    token: Option<String>,
    max_url_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    url: Option<String>,
    connect_timeout: Option<String>,
    timeout: Option<String>,
    signing_secret: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStore {
    kind: Option<String>,
    path: Option<PathBuf>,
    url: Option<String>,
    key_prefix: Option<String>,
    dedupe_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDelivery {
    initial_backoff: Option<String>,
    max_backoff: Option<String>,
    attempt_timeout: Option<String>,
    deadline: Option<String>,
    max_in_flight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    name: Option<String>,
    kind: Option<String>,
    path: Option<String>,
    forward_path: Option<String>,
    forward_format: Option<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    static_tokens: Vec<String>,
    #[serde(default)]
    unverified: bool,
    #[serde(default)]
    allow_ips: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_connections: Option<i64>,
    tls_handshake_timeout: Option<String>,
    header_read_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_header_bytes: Option<i64>,
    failed_token_per_ip: Option<String>,
    callback_per_ip: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKlarna {
    api_url: Option<String>,
    username: Option<String>,
    password: Option<String>,
    timeout: Option<String>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileReconcile {
    #[serde(default)]
    enabled: bool,
    schedule: Option<Vec<String>>,
    give_up_after: Option<String>,
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
    /// Things worth a warning at start (inline secrets, short secrets...).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub listen_plain: Option<SocketAddr>,
    pub public_url: String,
    pub trusted_proxies: Vec<IpNet>,
    pub shutdown_grace: Duration,
    /// Connection threads for the public listeners; 0 means one per CPU.
    pub workers: usize,
    pub tls: TlsConfig,
}

#[derive(Debug, Clone)]
pub enum TlsConfig {
    Files {
        cert: PathBuf,
        key: PathBuf,
        reload_interval: Duration,
    },
    SelfSigned,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    File,
    Redis,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub path: Option<PathBuf>,
    /// The secret-bearing Redis URL (it may hold a password): never printed.
    pub url: Option<Secret>,
    pub key_prefix: String,
    pub dedupe_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub attempt_timeout: Duration,
    pub deadline: Duration,
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardFormat {
    Json,
    Form,
    Original,
}

/// A callback path such as `/klarna/authorization/{reference}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    pub prefix: String,
    /// `Some(suffix)` when the pattern has a `{reference}` segment.
    pub suffix: Option<String>,
}

/// What a request path means for a route.
#[derive(Debug, PartialEq, Eq)]
pub enum PathMatch<'a> {
    No,
    /// The path is this route's; the reference is `""` when it has none.
    Yes(&'a str),
    /// The path is this route's but its reference segment is not valid.
    BadReference,
}

impl PathPattern {
    fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err("must start with `/`".into());
        }
        match s.find("{reference}") {
            None => {
                if s.contains('{') || s.contains('}') {
                    return Err("the only placeholder is `{reference}`".into());
                }
                Ok(Self {
                    prefix: s.to_string(),
                    suffix: None,
                })
            }
            Some(at) => {
                let (prefix, rest) = s.split_at(at);
                let suffix = &rest["{reference}".len()..];
                if !prefix.ends_with('/') || !(suffix.is_empty() || suffix.starts_with('/')) {
                    return Err("`{reference}` must be a whole path segment".into());
                }
                if suffix.contains('{') || prefix.contains('{') {
                    return Err("`{reference}` may appear once".into());
                }
                Ok(Self {
                    prefix: prefix.to_string(),
                    suffix: Some(suffix.to_string()),
                })
            }
        }
    }

    pub fn matches<'a>(&self, path: &'a str) -> PathMatch<'a> {
        match &self.suffix {
            None => {
                if path == self.prefix {
                    PathMatch::Yes("")
                } else {
                    PathMatch::No
                }
            }
            Some(suffix) => {
                let Some(rest) = path.strip_prefix(self.prefix.as_str()) else {
                    return PathMatch::No;
                };
                let Some(reference) = rest.strip_suffix(suffix.as_str()) else {
                    return PathMatch::No;
                };
                if reference.contains('/') {
                    return PathMatch::No;
                }
                if valid_reference(reference) {
                    PathMatch::Yes(reference)
                } else {
                    PathMatch::BadReference
                }
            }
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.suffix {
            None => f.write_str(&self.prefix),
            Some(s) => write!(f, "{}{{reference}}{s}", self.prefix),
        }
    }
}

/// 1 to 128 characters of `A-Z a-z 0-9 . _ ~ -`.
pub fn valid_reference(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub path: PathPattern,
    pub forward_path: Option<String>,
    pub forward_format: ForwardFormat,
    pub secrets: Vec<Secret>,
    pub static_tokens: Vec<Secret>,
    pub unverified: bool,
    /// Empty means every address is allowed.
    pub allow_ips: Vec<IpNet>,
}

impl Route {
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.allow_ips.is_empty() || self.allow_ips.iter().any(|n| n.contains(ip))
    }
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

#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    pub enabled: bool,
    pub schedule: Vec<Duration>,
    pub give_up_after: Duration,
}

/// Klarna's published callback source addresses, taken from its
/// documentation on 2026-11-23. Named lists usable in `allow_ips`.
pub const KLARNA_IP_LISTS: &[(&str, &[&str])] = &[
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
        let (file, mut errors) = read_file(text)?;
        match validate(file, base_dir) {
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

    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// Reads the file's structure. An unknown key or a value of the wrong type
/// is reported with its key and line, then its entry is set aside and the
/// file read again, so that one run reports every such problem rather than
/// the first. Fails at once on a TOML syntax error, or on a problem that
/// setting an entry aside cannot get past (a missing table).
fn read_file(text: &str) -> Result<(FileConfig, Vec<ConfigError>), Vec<ConfigError>> {
    if let Err(e) = text.parse::<toml::Table>() {
        return Err(vec![ConfigError {
            key: String::new(),
            message: e.to_string().trim_end().to_string(),
        }]);
    }
    let mut work = text.to_string();
    let mut errors = Vec::new();
    // Each round sets one entry aside; a file has finitely many.
    for _ in 0..=text.lines().count() {
        let e = match toml::from_str::<FileConfig>(&work) {
            Ok(file) => return Ok((file, errors)),
            Err(e) => e,
        };
        let entries = entries(&work);
        let at = e
            .span()
            .and_then(|span| entries.iter().find(|x| span.start < x.end));
        let whole_file = e
            .span()
            .is_some_and(|s| s.start == 0 && (s.end == 0 || s.end >= work.trim_end().len()));
        let missing = e
            .message()
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next());
        let (key, message) = match (at, missing) {
            (_, Some(field)) if whole_file => (field.to_string(), "is required".to_string()),
            (Some(x), Some(field)) => (format!("{}.{field}", x.table), "is required".to_string()),
            (Some(x), None) => (
                x.key.clone(),
                format!("{} (line {})", plain_types(e.message()), x.line + 1),
            ),
            (None, _) => (String::new(), e.message().to_string()),
        };
        errors.push(ConfigError { key, message });
        let settable = e.message().starts_with("unknown field")
            || e.message().starts_with("invalid type")
            || e.message().starts_with("invalid value");
        match at {
            Some(x) if settable && !x.header => {
                let mut next = work.clone();
                let blank: String = work[x.start..x.end]
                    .chars()
                    .map(|c| if c == '\n' { c } else { ' ' })
                    .collect();
                next.replace_range(x.start..x.end, &blank);
                if next.parse::<toml::Table>().is_err() {
                    return Err(errors);
                }
                work = next;
            }
            _ => return Err(errors),
        }
    }
    Err(errors)
}

/// serde names Rust's types ("expected u64"); a config's reader wants words.
fn plain_types(message: &str) -> String {
    let mut m = message.to_string();
    for t in [
        "u8", "u16", "u32", "u64", "usize", "i8", "i16", "i32", "i64", "isize",
    ] {
        m = m.replace(&format!("expected {t}"), "expected an integer");
    }
    m.replace("expected f64", "expected a number")
        .replace("expected f32", "expected a number")
}

/// One table header or `key = value` entry of a TOML file, by byte range
/// (a value may run over several lines).
#[derive(Debug)]
struct Entry {
    /// Dotted: `server.tls.cert`, `routes[1].secrets`; for a header, its table.
    key: String,
    /// The table it is in.
    table: String,
    header: bool,
    /// Its first line, counted from 0.
    line: usize,
    start: usize,
    end: usize,
}

/// The file's headers and entries, in order. A light scan, good enough to
/// name what an error points at in a file that has already parsed.
fn entries(text: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut table = String::new();
    let mut arrays: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    // Where the value being read stands: open brackets, multi-line strings.
    let mut value = ValueScan::default();
    let mut start = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        let end = start + l.len();
        let t = l.trim();
        if value.open() {
            if let Some(last) = out.last_mut() {
                last.end = end;
            }
        } else if t.starts_with('[') {
            let array = t.starts_with("[[");
            let name = t
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .replace(['"', '\''], "");
            table = if array {
                let n = arrays.entry(name.clone()).or_insert(0);
                *n += 1;
                format!("{name}[{}]", *n - 1)
            } else {
                // `[routes.x]` under `[[routes]]` belongs to the last route.
                match name.split_once('.') {
                    Some((head, rest)) if arrays.contains_key(head) => {
                        format!("{head}[{}].{rest}", arrays[head] - 1)
                    }
                    _ => name,
                }
            };
            out.push(Entry {
                key: table.clone(),
                table: table.clone(),
                header: true,
                line: i,
                start,
                end,
            });
            start = end;
            continue;
        } else if let Some((k, _)) = t.split_once('=').filter(|_| !t.starts_with('#')) {
            let k = k.trim().replace(['"', '\''], "");
            out.push(Entry {
                key: if table.is_empty() {
                    k
                } else {
                    format!("{table}.{k}")
                },
                table: table.clone(),
                header: false,
                line: i,
                start,
                end,
            });
        }
        value.line(l);
        start = end;
    }
    out
}

/// Follows a value over lines: brackets and braces opened and not yet
/// closed, and multi-line strings (`"""`, `'''`) not yet ended, ignoring what
/// is inside strings and comments.
#[derive(Default)]
struct ValueScan {
    depth: i32,
    /// Inside a multi-line string opened by three of these.
    multi: Option<char>,
}

impl ValueScan {
    fn open(&self) -> bool {
        self.depth > 0 || self.multi.is_some()
    }

    fn line(&mut self, line: &str) {
        let c: Vec<char> = line.chars().collect();
        let triple = |i: usize, q: char| c.get(i..i + 3).is_some_and(|w| w.iter().all(|x| *x == q));
        let (mut quote, mut escaped, mut i) = (None, false, 0);
        while i < c.len() {
            let ch = c[i];
            i += 1;
            if escaped {
                escaped = false;
                continue;
            }
            if let Some(q) = self.multi {
                if ch == '\\' && q == '"' {
                    escaped = true;
                } else if ch == q && triple(i - 1, q) {
                    self.multi = None;
                    i += 2;
                }
                continue;
            }
            if let Some(q) = quote {
                if ch == '\\' && q == '"' {
                    escaped = true;
                } else if ch == q {
                    quote = None;
                }
                continue;
            }
            match ch {
                '"' | '\'' if triple(i - 1, ch) => {
                    self.multi = Some(ch);
                    i += 2;
                }
                '"' | '\'' => quote = Some(ch),
                '#' => break,
                '[' | '{' => self.depth += 1,
                ']' | '}' => self.depth -= 1,
                _ => {}
            }
        }
    }
}

struct Checker {
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
}

impl Checker {
    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: &str) -> Duration {
        let s = value.unwrap_or(default);
        match parse_duration(s) {
            Ok(d) => d,
            Err(e) => {
                self.err(key, e);
                Duration::ZERO
            }
        }
    }

    fn positive_duration(&mut self, key: &str, value: Option<&str>, default: &str) -> Duration {
        let d = self.duration(key, value, default);
        if d.is_zero() && parse_duration(value.unwrap_or(default)).is_ok() {
            self.err(key, "must be greater than zero");
        }
        d
    }

    fn addr(&mut self, key: &str, value: Option<&str>, default: &str) -> SocketAddr {
        let s = value.unwrap_or(default);
        s.parse().unwrap_or_else(|_| {
            self.err(
                key,
                format!("`{s}` is not an address such as \"0.0.0.0:8443\""),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }

    fn secret(&mut self, key: &str, value: &str) -> Option<Secret> {
        match resolve_secret(value) {
            Ok((secret, inline)) => {
                if inline {
                    self.warnings.push(format!(
                        "{key}: secret is written inline in the config file; use \"env:NAME\" or \"file:/path\" in production"
                    ));
                }
                if secret.expose().is_empty() {
                    self.err(key, "secret is empty");
                    return None;
                }
                Some(secret)
            }
            Err(e) => {
                self.err(key, e);
                None
            }
        }
    }

    fn count(&mut self, key: &str, value: Option<i64>, default: i64, min: i64) -> usize {
        let n = value.unwrap_or(default);
        if n < min {
            self.err(key, format!("must be at least {min}"));
            return min.max(0) as usize;
        }
        usize::try_from(n).unwrap_or(usize::MAX)
    }
}

/// Reads `env:NAME`, `file:/path` or an inline value. Returns the secret and
/// whether it was inline. Never puts the secret in an error.
pub fn resolve_secret(value: &str) -> Result<(Secret, bool), String> {
    if let Some(name) = value.strip_prefix("env:") {
        match std::env::var(name) {
            Ok(v) => Ok((Secret::new(v), false)),
            Err(std::env::VarError::NotPresent) => {
                Err(format!("environment variable {name} is not set"))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("environment variable {name} is not UTF-8"))
            }
        }
    } else if let Some(path) = value.strip_prefix("file:") {
        let mut bytes =
            std::fs::read(path).map_err(|e| format!("cannot read secret file {path}: {e}"))?;
        // Files written by `echo` end in a newline that is not part of the secret.
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Ok((Secret::new(bytes), false))
    } else {
        Ok((Secret::new(value.as_bytes()), true))
    }
}

fn validate(f: FileConfig, base: &Path) -> Result<Config, Vec<ConfigError>> {
    let mut c = Checker {
        errors: Vec::new(),
        warnings: Vec::new(),
    };

    // [server]
    let listen = c.addr("server.listen", f.server.listen.as_deref(), "0.0.0.0:8443");
    let listen_plain = f
        .server
        .listen_plain
        .as_deref()
        .map(|s| c.addr("server.listen_plain", Some(s), ""));
    let public_url = match f.server.public_url.as_deref() {
        None => {
            c.err(
                "server.public_url",
                "is required (the base of minted callback URLs, e.g. \"https://shop.example.com\")",
            );
            String::new()
        }
        Some(u) => {
            let trimmed = u.trim_end_matches('/');
            match trimmed.parse::<http::Uri>() {
                Ok(uri)
                    if uri.scheme_str() == Some("https")
                        && uri.host().is_some()
                        && uri.query().is_none() => {}
                Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => c
                    .warnings
                    .push("server.public_url: Klarna only calls https:// URLs".into()),
                _ => c.err(
                    "server.public_url",
                    format!("`{u}` is not an absolute https:// URL"),
                ),
            }
            trimmed.to_string()
        }
    };
    let mut trusted_proxies = Vec::new();
    for (i, p) in f.server.trusted_proxies.iter().enumerate() {
        match p.parse::<IpNet>() {
            Ok(n) => trusted_proxies.push(n),
            Err(e) => c.err(format!("server.trusted_proxies[{i}]"), e),
        }
    }
    let shutdown_grace = c.duration(
        "server.shutdown_grace",
        f.server.shutdown_grace.as_deref(),
        "20s",
    );
    let workers = c.count("server.workers", f.server.workers, 0, 0);
    if workers > 1024 {
        c.err("server.workers", "must be at most 1024 (0: one per CPU)");
    }
    let tls = {
        let t = &f.server.tls;
        if t.self_signed {
            if t.cert.is_some() || t.key.is_some() {
                c.err(
                    "server.tls.self_signed",
                    "set either self_signed or cert and key, not both",
                );
            }
            TlsConfig::SelfSigned
        } else {
            let reload_interval = c.positive_duration(
                "server.tls.reload_interval",
                t.reload_interval.as_deref(),
                "5s",
            );
            match (&t.cert, &t.key) {
                (Some(cert), Some(key)) => TlsConfig::Files {
                    cert: base.join(cert),
                    key: base.join(key),
                    reload_interval,
                },
                _ => {
                    c.err("server.tls", "needs both cert and key (PEM files), or self_signed = true for development");
                    TlsConfig::SelfSigned
                }
            }
        }
    };

    // [admin]
    let admin_listen = c.addr("admin.listen", f.admin.listen.as_deref(), "127.0.0.1:9901");
    if admin_listen == listen || Some(admin_listen) == listen_plain {
        c.err("admin.listen", "must not be the public port");
    }
    let admin_token = f
        .admin
        .token
        .as_deref()
        .and_then(|t| c.secret("admin.token", t));
    // The admin API mints callback URLs and replays deliveries: beyond this
    // host it needs a token.
    if f.admin.token.is_none() && !crate::net::canonical(admin_listen.ip()).is_loopback() {
        c.err(
            "admin.token",
            format!("is required when admin.listen ({admin_listen}) is not a loopback address: set token = \"env:AUTHBACK_ADMIN_TOKEN\" (a long random secret), or listen on 127.0.0.1"),
        );
    }
    // Klarna sessions live 48 h: a week covers any checkout.
    let max_url_ttl =
        c.positive_duration("admin.max_url_ttl", f.admin.max_url_ttl.as_deref(), "7d");

    // [upstream]
    let upstream_url = match f.upstream.url.as_deref() {
        None => {
            c.err(
                "upstream.url",
                "is required (the merchant backend, e.g. \"http://127.0.0.1:8080\")",
            );
            http::Uri::from_static("http://127.0.0.1:8080")
        }
        Some(u) => match u.trim_end_matches('/').parse::<http::Uri>() {
            Ok(uri)
                if uri.scheme_str() == Some("http")
                    && uri.host().is_some()
                    && uri.query().is_none() =>
            {
                uri
            }
            Ok(uri) if uri.scheme_str() == Some("https") => {
                c.err("upstream.url", "https upstreams are not supported: authback runs beside the backend and speaks plain HTTP to it");
                uri
            }
            _ => {
                c.err("upstream.url", format!("`{u}` is not an http:// URL"));
                http::Uri::from_static("http://127.0.0.1:8080")
            }
        },
    };
    let upstream = UpstreamConfig {
        url: upstream_url,
        connect_timeout: c.positive_duration(
            "upstream.connect_timeout",
            f.upstream.connect_timeout.as_deref(),
            "1s",
        ),
        timeout: c.positive_duration("upstream.timeout", f.upstream.timeout.as_deref(), "30s"),
        signing_secret: f
            .upstream
            .signing_secret
            .as_deref()
            .and_then(|s| c.secret("upstream.signing_secret", s)),
    };

    // [store]
    let kind = match f.store.kind.as_deref().unwrap_or("memory") {
        "memory" => StoreKind::Memory,
        "file" => StoreKind::File,
        "redis" => StoreKind::Redis,
        other => {
            c.err(
                "store.kind",
                format!("`{other}` is not one of \"memory\", \"file\", \"redis\""),
            );
            StoreKind::Memory
        }
    };
    match kind {
        StoreKind::Memory => {}
        StoreKind::File => {
            if f.store.path.is_none() {
                c.err("store.path", "is required with kind = \"file\" (the SQLite database, e.g. \"/var/lib/authback/authback.db\")");
            }
        }
        StoreKind::Redis => {}
    }
    // The Redis URL may carry a password, so it is read like a secret
    // (`env:`/`file:` allowed) and never printed.
    let store_url = match f.store.url.as_deref().map(resolve_secret) {
        None => None,
        Some(Err(e)) => {
            c.err("store.url", e);
            None
        }
        Some(Ok((url, _))) => Some(url),
    };
    if kind == StoreKind::Redis {
        match &store_url {
            None => c.err(
                "store.url",
                "is required with kind = \"redis\" (e.g. \"redis://127.0.0.1:6379/0\")",
            ),
            Some(u) => {
                let ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
                    .iter()
                    .any(|p| u.expose().starts_with(p.as_bytes()));
                if !ok {
                    c.err("store.url", "must be a redis://, rediss:// or unix:// URL");
                }
            }
        }
    }
    let store = StoreConfig {
        kind,
        path: f.store.path.map(|p| base.join(p)),
        url: store_url,
        key_prefix: f.store.key_prefix.unwrap_or_else(|| "authback:".into()),
        dedupe_ttl: c.positive_duration("store.dedupe_ttl", f.store.dedupe_ttl.as_deref(), "48h"),
    };

    // [delivery]
    let d = &f.delivery;
    let delivery = DeliveryConfig {
        initial_backoff: c.positive_duration(
            "delivery.initial_backoff",
            d.initial_backoff.as_deref(),
            "1s",
        ),
        max_backoff: c.positive_duration("delivery.max_backoff", d.max_backoff.as_deref(), "60s"),
        attempt_timeout: c.positive_duration(
            "delivery.attempt_timeout",
            d.attempt_timeout.as_deref(),
            "10s",
        ),
        deadline: c.positive_duration("delivery.deadline", d.deadline.as_deref(), "60m"),
        max_in_flight: c.count("delivery.max_in_flight", d.max_in_flight, 64, 1),
    };
    if delivery.max_backoff < delivery.initial_backoff {
        c.err(
            "delivery.max_backoff",
            "must not be less than delivery.initial_backoff",
        );
    }

    // [[routes]]
    let mut routes = Vec::new();
    let mut names = HashSet::new();
    if f.routes.is_empty() {
        c.warnings
            .push("no [[routes]]: authback only proxies".into());
    }
    for (i, r) in f.routes.into_iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].{k}");
        let name = r.name.clone().unwrap_or_default();
        if name.is_empty() {
            c.err(key("name"), "is required");
        } else if !valid_reference(&name) || name.len() > 64 {
            c.err(key("name"), "use 1 to 64 characters of A-Z a-z 0-9 . _ ~ -");
        } else if !names.insert(name.clone()) {
            c.err(key("name"), format!("`{name}` is used by another route"));
        }
        match r.kind.as_deref() {
            Some("klarna_authorization") => {}
            None => c.err(key("kind"), "is required (\"klarna_authorization\")"),
            Some(other) => c.err(
                key("kind"),
                format!("`{other}` is not a route kind (\"klarna_authorization\")"),
            ),
        }
        let path = match r.path.as_deref() {
            None => {
                c.err(
                    key("path"),
                    "is required, e.g. \"/klarna/authorization/{reference}\"",
                );
                PathPattern {
                    prefix: "/".into(),
                    suffix: None,
                }
            }
            Some(p) => PathPattern::parse(p).unwrap_or_else(|e| {
                c.err(key("path"), format!("`{p}`: {e}"));
                PathPattern {
                    prefix: "/".into(),
                    suffix: None,
                }
            }),
        };
        let forward_format = match r.forward_format.as_deref().unwrap_or("json") {
            "json" => ForwardFormat::Json,
            "form" => ForwardFormat::Form,
            "original" => ForwardFormat::Original,
            other => {
                c.err(
                    key("forward_format"),
                    format!("`{other}` is not one of \"json\", \"form\", \"original\""),
                );
                ForwardFormat::Json
            }
        };
        if let Some(fp) = &r.forward_path {
            if !fp.starts_with('/') {
                c.err(key("forward_path"), "must start with `/`");
            } else if fp.parse::<http::uri::PathAndQuery>().is_err() {
                c.err(key("forward_path"), "is not a valid path");
            }
        } else if forward_format != ForwardFormat::Original {
            c.err(
                key("forward_path"),
                "is required unless forward_format = \"original\"",
            );
        }
        let secrets: Vec<Secret> = r
            .secrets
            .iter()
            .enumerate()
            .filter_map(|(j, s)| c.secret(&format!("routes[{i}].secrets[{j}]"), s))
            .collect();
        for (j, s) in secrets.iter().enumerate() {
            if s.expose().len() < 16 {
                c.warnings.push(format!(
                    "routes[{i}].secrets[{j}]: shorter than 16 bytes; use a long random secret (e.g. `openssl rand -hex 32`)"
                ));
            }
        }
        let static_tokens: Vec<Secret> = r
            .static_tokens
            .iter()
            .enumerate()
            .filter_map(|(j, s)| c.secret(&format!("routes[{i}].static_tokens[{j}]"), s))
            .collect();
        if r.unverified {
            if forward_format != ForwardFormat::Original {
                c.err(key("unverified"), "is allowed only with forward_format = \"original\", where the backend checks its own token");
            }
            if !r.secrets.is_empty() || !r.static_tokens.is_empty() {
                c.err(
                    key("unverified"),
                    "cannot be combined with secrets or static_tokens",
                );
            }
        } else if r.secrets.is_empty() && r.static_tokens.is_empty() {
            c.err(key("secrets"), "a route needs secrets or static_tokens (or unverified = true with forward_format = \"original\")");
        }
        if r.unverified && r.allow_ips.is_empty() {
            c.warnings.push(format!(
                "routes[{i}]: unverified with no allow_ips, so anyone can send it callbacks; set allow_ips = [\"klarna-production\"]"
            ));
        }
        if forward_format != ForwardFormat::Original && f.upstream.signing_secret.is_none() {
            c.warnings.push(format!(
                "routes[{i}]: forward_format = \"{}\" with no upstream.signing_secret, so the backend cannot tell authback's deliveries from forged ones; set upstream.signing_secret",
                r.forward_format.as_deref().unwrap_or("json")
            ));
        }
        let mut allow_ips = Vec::new();
        for (j, a) in r.allow_ips.iter().enumerate() {
            if let Some((_, list)) = KLARNA_IP_LISTS.iter().find(|(n, _)| n == a) {
                allow_ips.extend(list.iter().filter_map(|ip| ip.parse::<IpNet>().ok()));
            } else {
                match a.parse::<IpNet>() {
                    Ok(n) => allow_ips.push(n),
                    Err(e) => c.err(
                        format!("routes[{i}].allow_ips[{j}]"),
                        format!("{e}; or one of \"klarna-production\", \"klarna-playground\""),
                    ),
                }
            }
        }
        routes.push(Route {
            name,
            path,
            forward_path: r.forward_path,
            forward_format,
            secrets,
            static_tokens,
            unverified: r.unverified,
            allow_ips,
        });
    }
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[..i] {
            if a.path == b.path {
                c.err(
                    format!("routes[{i}].path"),
                    format!("`{}` is also the path of route `{}`", a.path, b.name),
                );
            }
        }
    }

    // [limits]
    let l = &f.limits;
    let rate = |c: &mut Checker, k: &str, v: Option<&str>| -> Option<Rate> {
        let s = v?;
        if s == "off" {
            return None;
        }
        parse_rate(s).map_err(|e| c.err(k, e)).ok()
    };
    let limits = Limits {
        max_connections: c.count("limits.max_connections", l.max_connections, 10_000, 1),
        tls_handshake_timeout: c.positive_duration(
            "limits.tls_handshake_timeout",
            l.tls_handshake_timeout.as_deref(),
            "10s",
        ),
        header_read_timeout: c.positive_duration(
            "limits.header_read_timeout",
            l.header_read_timeout.as_deref(),
            "10s",
        ),
        idle_timeout: c.positive_duration("limits.idle_timeout", l.idle_timeout.as_deref(), "60s"),
        max_header_bytes: c.count("limits.max_header_bytes", l.max_header_bytes, 65_536, 8192),
        failed_token_per_ip: rate(
            &mut c,
            "limits.failed_token_per_ip",
            Some(l.failed_token_per_ip.as_deref().unwrap_or("20/m")),
        ),
        callback_per_ip: rate(
            &mut c,
            "limits.callback_per_ip",
            l.callback_per_ip.as_deref(),
        ),
    };

    // [klarna] and [reconcile]
    let klarna = f.klarna.map(|k| {
        let api_url = k
            .api_url
            .unwrap_or_else(|| "https://api.playground.klarna.com".into());
        match api_url.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => {}
            _ => c.err(
                "klarna.api_url",
                format!("`{api_url}` is not an https:// URL"),
            ),
        }
        KlarnaConfig {
            timeout: c.positive_duration("klarna.timeout", k.timeout.as_deref(), "10s"),
            ca_file: k.ca_file.map(|p| base.join(p)),
            api_url: api_url.trim_end_matches('/').to_string(),
            username: k
                .username
                .as_deref()
                .and_then(|s| c.secret("klarna.username", s)),
            password: k
                .password
                .as_deref()
                .and_then(|s| c.secret("klarna.password", s)),
        }
    });
    let schedule_src = f.reconcile.schedule.unwrap_or_else(|| {
        ["1m", "2m", "5m", "10m", "30m", "1h", "2h"]
            .map(String::from)
            .to_vec()
    });
    if schedule_src.is_empty() {
        c.err("reconcile.schedule", "needs at least one step");
    }
    let schedule = schedule_src
        .iter()
        .enumerate()
        .map(|(i, s)| c.positive_duration(&format!("reconcile.schedule[{i}]"), Some(s), s))
        .collect();
    let reconcile = ReconcileConfig {
        enabled: f.reconcile.enabled,
        schedule,
        give_up_after: c.positive_duration(
            "reconcile.give_up_after",
            f.reconcile.give_up_after.as_deref(),
            "48h",
        ),
    };
    if reconcile.enabled {
        match &klarna {
            None => c.err(
                "klarna",
                "[klarna] with api_url, username and password is required when reconcile.enabled",
            ),
            Some(k) => {
                if k.username.is_none() {
                    c.err("klarna.username", "is required when reconcile.enabled");
                }
                if k.password.is_none() {
                    c.err("klarna.password", "is required when reconcile.enabled");
                }
            }
        }
    }

    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Config {
        server: ServerConfig {
            listen,
            listen_plain,
            public_url,
            trusted_proxies,
            shutdown_grace,
            workers,
            tls,
        },
        admin: AdminConfig {
            listen: admin_listen,
            token: admin_token,
            max_url_ttl,
        },
        upstream,
        store,
        delivery,
        routes,
        limits,
        klarna,
        reconcile,
        warnings: c.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
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

    #[test]
    fn minimal_config_gets_spec_defaults() {
        let c = Config::parse(MINIMAL, Path::new(".")).expect("valid");
        assert_eq!(c.server.listen, "0.0.0.0:8443".parse().expect("addr"));
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
    fn path_patterns() {
        let p = PathPattern::parse("/klarna/authorization/{reference}").expect("valid");
        assert_eq!(
            p.matches("/klarna/authorization/cart-1"),
            PathMatch::Yes("cart-1")
        );
        assert_eq!(p.matches("/klarna/authorization/"), PathMatch::BadReference);
        assert_eq!(
            p.matches("/klarna/authorization/a%20b"),
            PathMatch::BadReference
        );
        assert_eq!(p.matches("/klarna/authorization/a/b"), PathMatch::No);
        assert_eq!(p.matches("/klarna/other"), PathMatch::No);
        let long = format!("/klarna/authorization/{}", "a".repeat(129));
        assert_eq!(p.matches(&long), PathMatch::BadReference);
        let q = PathPattern::parse("/cb/{reference}/klarna").expect("valid");
        assert_eq!(q.matches("/cb/o-1/klarna"), PathMatch::Yes("o-1"));
        assert_eq!(q.matches("/cb/o-1/other"), PathMatch::No);
        let fixed = PathPattern::parse("/klarna/push").expect("valid");
        assert_eq!(fixed.matches("/klarna/push"), PathMatch::Yes(""));
        assert!(PathPattern::parse("/a{reference}").is_err());
        assert!(PathPattern::parse("/a/{ref}").is_err());
        assert!(PathPattern::parse("a/{reference}").is_err());
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
