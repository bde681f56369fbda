//! The config file as written: serde structs, unknown keys rejected. Nothing
//! here is checked beyond its TOML type; `validate` does the rest.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) server: FileServer,
    #[serde(default)]
    pub(super) admin: FileAdmin,
    pub(super) upstream: FileUpstream,
    #[serde(default)]
    pub(super) store: FileStore,
    #[serde(default)]
    pub(super) delivery: FileDelivery,
    #[serde(default)]
    pub(super) routes: Vec<FileRoute>,
    #[serde(default)]
    pub(super) limits: FileLimits,
    pub(super) klarna: Option<FileKlarna>,
    #[serde(default)]
    pub(super) reconcile: FileReconcile,
    #[serde(default)]
    pub(super) order_watch: FileOrderWatch,
    #[serde(default)]
    pub(super) ip_sets: std::collections::BTreeMap<String, FileIpSet>,
    #[serde(default)]
    pub(super) access_log: FileAccessLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAccessLog {
    #[serde(default)]
    pub(super) enabled: bool,
    pub(super) path: Option<String>,
}

/// An `[ip_sets]` entry: `"file:/path"` (one network a line, reloaded on
/// change) or a list of networks.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum FileIpSet {
    File(String),
    List(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileOrderWatch {
    #[serde(default)]
    pub(super) enabled: bool,
    pub(super) after: Option<String>,
    pub(super) every: Option<String>,
    pub(super) redeliver: Option<bool>,
    pub(super) redeliver_after: Option<String>,
    pub(super) unconfirmed_after: Option<String>,
    pub(super) not_found: Option<String>,
    pub(super) release: Option<String>,
    pub(super) release_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileServer {
    pub(super) listen: Option<String>,
    pub(super) listen_plain: Option<String>,
    pub(super) listen_redirect: Option<String>,
    pub(super) acme_upstream: Option<String>,
    pub(super) proxy_protocol: Option<bool>,
    #[serde(default)]
    pub(super) proxy_protocol_from: Vec<String>,
    pub(super) proxy_protocol_timeout: Option<String>,
    pub(super) public_url: Option<String>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
    pub(super) shutdown_grace: Option<String>,
    pub(super) workers: Option<i64>,
    pub(super) reuse_port: Option<bool>,
    pub(super) ready_requires_store: Option<bool>,
    pub(super) hsts: Option<String>,
    pub(super) tls: Option<FileTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTls {
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    #[serde(default)]
    pub(super) self_signed: bool,
    pub(super) reload_interval: Option<String>,
    #[serde(default)]
    pub(super) certificates: Vec<FileCertificate>,
    pub(super) strict_sni: Option<bool>,
}

/// A `[[server.tls.certificates]]` entry: a pair and the names it serves.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCertificate {
    #[serde(default)]
    pub(super) names: Vec<String>,
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAdmin {
    pub(super) listen: Option<String>,
    pub(super) token: Option<String>,
    pub(super) max_url_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUpstream {
    pub(super) url: Option<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) signing_secret: Option<String>,
    pub(super) path_form: Option<String>,
    pub(super) dialect: Option<String>,
    pub(super) max_input_vars: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileStore {
    pub(super) kind: Option<String>,
    pub(super) path: Option<PathBuf>,
    pub(super) url: Option<String>,
    pub(super) sentinels: Option<Vec<String>>,
    pub(super) master_name: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) sentinel_username: Option<String>,
    pub(super) sentinel_password: Option<String>,
    pub(super) tls: Option<bool>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) min_replicas_acked: Option<i64>,
    pub(super) replica_ack_timeout: Option<String>,
    pub(super) key_prefix: Option<String>,
    pub(super) dedupe_ttl: Option<String>,
    pub(super) keep_finished: Option<String>,
    pub(super) keep_dead: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDelivery {
    pub(super) initial_backoff: Option<String>,
    pub(super) max_backoff: Option<String>,
    pub(super) attempt_timeout: Option<String>,
    pub(super) deadline: Option<String>,
    pub(super) max_in_flight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRoute {
    pub(super) name: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) path: Option<String>,
    pub(super) forward_path: Option<String>,
    pub(super) forward_format: Option<String>,
    #[serde(default)]
    pub(super) secrets: Vec<String>,
    #[serde(default)]
    pub(super) static_tokens: Vec<String>,
    #[serde(default)]
    pub(super) unverified: bool,
    #[serde(default)]
    pub(super) allow_ips: Vec<String>,
    #[serde(default)]
    pub(super) aliases: Vec<String>,
    #[serde(default)]
    pub(super) ignore_case: bool,
    #[serde(default)]
    pub(super) trailing_slash: bool,
    #[serde(default)]
    pub(super) subpaths: bool,
    #[serde(default)]
    pub(super) query_match: Vec<String>,
    #[serde(default)]
    pub(super) passthrough_query: Vec<String>,
    #[serde(default)]
    pub(super) endpoint: bool,
    #[serde(default)]
    pub(super) clean_values: bool,
    #[serde(default)]
    pub(super) answers: Vec<FileAnswer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAnswer {
    pub(super) status: Option<i64>,
    pub(super) body_contains: Option<String>,
    pub(super) means: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLimits {
    pub(super) max_connections: Option<i64>,
    pub(super) tls_handshake_timeout: Option<String>,
    pub(super) header_read_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_header_bytes: Option<i64>,
    pub(super) failed_token_per_ip: Option<String>,
    pub(super) callback_per_ip: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileKlarna {
    pub(super) api_url: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileReconcile {
    #[serde(default)]
    pub(super) enabled: bool,
    pub(super) schedule: Option<Vec<String>>,
    pub(super) give_up_after: Option<String>,
}
