//! The checks, one function per config section: each reads its part of the
//! file, reports every problem with its key, and returns its validated part.

use std::path::Path;
use std::time::Duration;

use super::checker::Checker;
use super::file::*;
use crate::config::model::*;
use crate::net::IpNet;
use crate::route::dialect::{Dialect, PathForm};
use crate::store::{StoreConfig, StoreKind};
use crate::text::{parse_duration, parse_rate, Rate};

/// Every section checked, every problem collected: the config, or all the errors.
pub(super) fn validate(f: FileConfig, base: &Path) -> Result<Config, Vec<ConfigError>> {
    let self_signed = f.server.tls.as_ref().is_some_and(|t| t.self_signed);
    let mut c = Checker::new(base, self_signed);
    let mut server = server(&mut c, &f.server, base);
    let admin = admin(&mut c, &f.admin, &server);
    let upstream = upstream(&mut c, &f.upstream);
    server.acme_upstream = f
        .server
        .acme_upstream
        .as_deref()
        .and_then(|u| http_url(&mut c, "server.acme_upstream", u));
    let store = store(&mut c, f.store, base);
    let delivery = delivery(&mut c, &f.delivery);
    let ip_sets = ip_sets(&mut c, f.ip_sets, base);
    let (routes, builtin_ip_lists) = super::routes::routes(
        &mut c,
        f.routes,
        f.upstream.signing_secret.is_some(),
        upstream.dialect,
        &ip_sets,
    );
    let limits = limits(&mut c, &f.limits);
    let klarna = f.klarna.map(|k| klarna(&mut c, k, base));
    let reconcile = reconcile(&mut c, f.reconcile);
    let order_watch = order_watch(&mut c, f.order_watch);
    let access_log = super::front::access_log(&mut c, &f.access_log, base);
    let uses: Vec<&str> = [
        (reconcile.enabled, "reconcile.enabled"),
        (order_watch.enabled, "order_watch.enabled"),
    ]
    .into_iter()
    .filter_map(|(on, key)| on.then_some(key))
    .collect();
    if !uses.is_empty() {
        needs_klarna(&mut c, klarna.as_ref(), &uses.join(" and "));
    }
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Config {
        server,
        admin,
        upstream,
        store,
        delivery,
        routes,
        limits,
        klarna,
        reconcile,
        order_watch,
        warnings: c.warnings,
        inline_secrets: c.inline_secrets,
        ip_sets,
        builtin_ip_lists,
        access_log,
    })
}

/// `[ip_sets]`: each name, and its networks read now (a file's relative to
/// the config's folder).
fn ip_sets(
    c: &mut Checker,
    f: std::collections::BTreeMap<String, FileIpSet>,
    base: &Path,
) -> Vec<IpSetSource> {
    let mut out = Vec::new();
    for (name, source) in f {
        let key = format!("ip_sets.{name}");
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid_name {
            c.err(key, "use 1 to 64 characters of A-Z a-z 0-9 . _ -");
            continue;
        }
        let (nets, file) = match source {
            FileIpSet::File(v) => {
                let Some(path) = v.strip_prefix("file:") else {
                    c.err(key, "is \"file:/path\" or a list of addresses");
                    continue;
                };
                let path = base.join(path);
                let read = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
                    .and_then(|t| {
                        crate::net::parse_ip_list(&t)
                            .map_err(|e| format!("{}: {e}", path.display()))
                    });
                (read, Some(path))
            }
            FileIpSet::List(list) => (crate::net::parse_ip_list(&list.join("\n")), None),
        };
        match nets {
            Ok(nets) => out.push(IpSetSource {
                set: crate::net::IpSet::new(&name, nets),
                file,
            }),
            Err(e) => c.err(key, e),
        }
    }
    out
}

fn server(c: &mut Checker, f: &FileServer, base: &Path) -> ServerConfig {
    let listen_plain = f
        .listen_plain
        .as_deref()
        .map(|s| c.addr("server.listen_plain", Some(s), ""));
    // TLS by default; with only listen_plain, none (an ingress in front
    // terminates TLS). So there is always at least one public listener.
    let listen = match (f.listen.as_deref(), listen_plain) {
        (None, Some(_)) => None,
        (l, _) => Some(c.addr("server.listen", l, "0.0.0.0:8443")),
    };
    let listen_redirect = f
        .listen_redirect
        .as_deref()
        .map(|s| c.addr("server.listen_redirect", Some(s), ""));
    if listen.is_some() && listen == listen_plain {
        c.err("server.listen_plain", "must differ from server.listen");
    }
    if listen_redirect.is_some() && (listen_redirect == listen || listen_redirect == listen_plain) {
        c.err(
            "server.listen_redirect",
            "must differ from server.listen and server.listen_plain",
        );
    }
    let public_url = public_url(c, f.public_url.as_deref());
    if listen_redirect.is_some() && !public_url.starts_with("https://") {
        c.err(
            "server.listen_redirect",
            "redirects to https://: it needs an https:// server.public_url",
        );
    }
    if f.acme_upstream.is_some() && listen_redirect.is_none() {
        c.err(
            "server.acme_upstream",
            "is only for ACME challenges on server.listen_redirect, which is unset",
        );
    }
    let mut trusted_proxies = Vec::new();
    for (i, p) in f.trusted_proxies.iter().enumerate() {
        match p.parse::<IpNet>() {
            Ok(n) => trusted_proxies.push(n),
            Err(e) => c.err(format!("server.trusted_proxies[{i}]"), e),
        }
    }
    let shutdown_grace = c.duration("server.shutdown_grace", f.shutdown_grace.as_deref(), "20s");
    let workers = c.count("server.workers", f.workers, 0, 0);
    if workers > 1024 {
        c.err("server.workers", "must be at most 1024 (0: one per CPU)");
    }
    let before = c.errors.len();
    // Without a TLS listener, `[server.tls]` is needed only if written.
    let tls = match (&f.tls, listen) {
        (None, None) => None,
        (t, _) => Some(super::tls::tls(
            c,
            t.as_ref().unwrap_or(&FileTls::default()),
            base,
        )),
    };
    // Only on names that all read: one root cause, one error.
    if let (Some(tls), true) = (&tls, c.errors.len() == before) {
        super::tls::public_url_covered(c, tls, &public_url);
    }
    ServerConfig {
        listen,
        listen_plain,
        listen_redirect,
        acme_upstream: None,
        proxy_protocol: proxy_protocol(c, f),
        public_url,
        trusted_proxies,
        shutdown_grace,
        workers,
        // Off unless asked for: with SO_REUSEPORT any process of the same
        // user could bind the public port too and take a share of it.
        reuse_port: f.reuse_port.unwrap_or(false),
        ready_requires_store: f.ready_requires_store.unwrap_or(false),
        hsts: super::front::hsts(c, f.hsts.as_deref()),
        tls,
    }
}

fn public_url(c: &mut Checker, value: Option<&str>) -> String {
    let Some(u) = value else {
        c.err(
            "server.public_url",
            "is required (the base of minted callback URLs, e.g. \"https://shop.example.com\")",
        );
        return String::new();
    };
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

/// `server.proxy_protocol` and the sources it is believed from: on, it
/// needs them; off, listing them is a mistake worth saying.
fn proxy_protocol(c: &mut Checker, f: &FileServer) -> Option<ProxyProtocol> {
    let mut from = Vec::new();
    for (i, p) in f.proxy_protocol_from.iter().enumerate() {
        match p.parse::<IpNet>() {
            Ok(n) => from.push(n),
            Err(e) => c.err(format!("server.proxy_protocol_from[{i}]"), e),
        }
    }
    let timeout = c.positive_duration(
        "server.proxy_protocol_timeout",
        f.proxy_protocol_timeout.as_deref(),
        "5s",
    );
    if f.proxy_protocol != Some(true) {
        if !f.proxy_protocol_from.is_empty() || f.proxy_protocol_timeout.is_some() {
            c.err(
                "server.proxy_protocol",
                "proxy_protocol_from and proxy_protocol_timeout need proxy_protocol = true",
            );
        }
        return None;
    }
    if f.proxy_protocol_from.is_empty() {
        c.err(
            "server.proxy_protocol_from",
            "is required with proxy_protocol = true: the balancers' addresses (CIDRs), the only sources whose PROXY header is believed",
        );
    }
    Some(ProxyProtocol { from, timeout })
}

/// Only the `[admin]` table, for the clients of the admin API: everything
/// else in the file (route secrets included) is neither read nor needed.
pub(super) fn admin_only(f: &FileAdmin, base: &Path) -> Result<AdminConfig, Vec<ConfigError>> {
    let mut c = Checker::new(base, true);
    let listen = c.addr("admin.listen", f.listen.as_deref(), "127.0.0.1:9901");
    let token = f.token.as_deref().and_then(|t| c.secret("admin.token", t));
    let max_url_ttl = c.positive_duration("admin.max_url_ttl", f.max_url_ttl.as_deref(), "7d");
    if c.errors.is_empty() {
        Ok(AdminConfig {
            listen,
            token,
            max_url_ttl,
        })
    } else {
        Err(c.errors)
    }
}

fn admin(c: &mut Checker, f: &FileAdmin, server: &ServerConfig) -> AdminConfig {
    let admin_listen = c.addr("admin.listen", f.listen.as_deref(), "127.0.0.1:9901");
    let public = [server.listen, server.listen_plain, server.listen_redirect];
    if public.contains(&Some(admin_listen)) {
        c.err("admin.listen", "must not be a public port");
    }
    let admin_token = f.token.as_deref().and_then(|t| c.secret("admin.token", t));
    // The admin API mints callback URLs and replays deliveries: beyond this
    // host it needs a token.
    if f.token.is_none() && !crate::net::canonical(admin_listen.ip()).is_loopback() {
        c.err(
            "admin.token",
            format!("is required when admin.listen ({admin_listen}) is not a loopback address: set token = \"env:AUTHBACK_ADMIN_TOKEN\" (a long random secret), or listen on 127.0.0.1"),
        );
    } else if f.token.is_none() {
        c.warnings.push("admin.token: unset, so the /v1 API (minting callback URLs, replaying deliveries) answers every local user and process that can reach admin.listen; set token = \"env:AUTHBACK_ADMIN_TOKEN\" (a long random secret) outside development".into());
    }
    // Klarna sessions live 48 h: a week covers any checkout.
    let max_url_ttl = c.positive_duration("admin.max_url_ttl", f.max_url_ttl.as_deref(), "7d");
    AdminConfig {
        listen: admin_listen,
        token: admin_token,
        max_url_ttl,
    }
}

/// An `http://` URL with a host and no query: the upstream, or where ACME
/// challenges go.
fn http_url(c: &mut Checker, key: &str, u: &str) -> Option<http::Uri> {
    match u.trim_end_matches('/').parse::<http::Uri>() {
        Ok(uri)
            if uri.scheme_str() == Some("http")
                && uri.host().is_some()
                && uri.query().is_none() =>
        {
            Some(uri)
        }
        Ok(uri) if uri.scheme_str() == Some("https") => {
            c.err(key, "https upstreams are not supported: authback runs beside the backend and speaks plain HTTP to it");
            None
        }
        _ => {
            c.err(key, format!("`{u}` is not an http:// URL"));
            None
        }
    }
}

fn upstream(c: &mut Checker, f: &FileUpstream) -> UpstreamConfig {
    let upstream_url = match f.url.as_deref() {
        None => {
            c.err(
                "upstream.url",
                "is required (the merchant backend, e.g. \"http://127.0.0.1:8080\")",
            );
            None
        }
        Some(u) => http_url(c, "upstream.url", u),
    }
    .unwrap_or_else(|| http::Uri::from_static("http://127.0.0.1:8080"));
    UpstreamConfig {
        url: upstream_url,
        connect_timeout: c.positive_duration(
            "upstream.connect_timeout",
            f.connect_timeout.as_deref(),
            "1s",
        ),
        timeout: c.positive_duration("upstream.timeout", f.timeout.as_deref(), "30s"),
        signing_secret: f
            .signing_secret
            .as_deref()
            .and_then(|s| c.secret("upstream.signing_secret", s)),
        path_form: match f.path_form.as_deref().unwrap_or("canonical") {
            "canonical" => PathForm::Canonical,
            "raw" => {
                c.warnings.push("upstream.path_form = \"raw\": the backend receives the path as the client spelled it, and may route a spelling (`/a/b/..`, `/a/b.php/x`) to a handler authback did not shield; see docs/security.md".into());
                PathForm::Raw
            }
            other => {
                c.err(
                    "upstream.path_form",
                    format!("`{other}` is not one of \"canonical\", \"raw\""),
                );
                PathForm::Canonical
            }
        },
        dialect: match f
            .dialect
            .as_deref()
            .map_or(Some(Dialect::Php), Dialect::parse)
        {
            Some(d) => d,
            None => {
                c.err(
                    "upstream.dialect",
                    format!(
                        "`{}` is not one of \"php\", \"spring\", \"plain\"",
                        f.dialect.as_deref().unwrap_or_default()
                    ),
                );
                Dialect::Php
            }
        },
        max_input_vars: match f.max_input_vars {
            None => 1000,
            Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
            Some(_) => {
                c.err(
                    "upstream.max_input_vars",
                    "must be at least 1 (PHP's max_input_vars)",
                );
                1000
            }
        },
    }
}

fn store(c: &mut Checker, f: FileStore, base: &Path) -> StoreConfig {
    let kind = match f.kind.as_deref().unwrap_or("memory") {
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
            if f.path.is_none() {
                c.err("store.path", "is required with kind = \"file\" (the SQLite database, e.g. \"/var/lib/authback/authback.db\")");
            }
        }
        StoreKind::Redis => {}
    }
    let redis = super::redis::redis(c, &f, base, kind == StoreKind::Redis);
    let dedupe_ttl = c.positive_duration("store.dedupe_ttl", f.dedupe_ttl.as_deref(), "48h");
    StoreConfig {
        kind,
        path: f.path.map(|p| base.join(p)),
        redis,
        key_prefix: f.key_prefix.unwrap_or_else(|| "authback:".into()),
        keep_finished: retention(c, "store.keep_finished", f.keep_finished, "7d", dedupe_ttl),
        keep_dead: retention(c, "store.keep_dead", f.keep_dead, "30d", dedupe_ttl),
        dedupe_ttl,
    }
}

/// How long a kind of record is kept (`store.keep_finished`,
/// `store.keep_dead`). A record is its authorization's dedupe key, so it is
/// kept at least `dedupe_ttl`: a shorter value given is an error, and the
/// default grows to `dedupe_ttl` when that is longer.
fn retention(
    c: &mut Checker,
    key: &str,
    value: Option<String>,
    default: &str,
    dedupe_ttl: Duration,
) -> Duration {
    let keep = c.positive_duration(key, value.as_deref(), default);
    match value {
        None => keep.max(dedupe_ttl),
        Some(v) if !keep.is_zero() && keep < dedupe_ttl => {
            c.err(
                key,
                format!(
                    "{v} is shorter than store.dedupe_ttl ({}): a record is its authorization's dedupe key, so it must be kept at least that long",
                    crate::text::format_duration(dedupe_ttl)
                ),
            );
            dedupe_ttl
        }
        Some(_) => keep,
    }
}

fn delivery(c: &mut Checker, d: &FileDelivery) -> DeliveryConfig {
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
    // Only when both parsed: a value already reported as wrong is not
    // reported again as out of order (one root cause, one error).
    let both_parsed = [&d.initial_backoff, &d.max_backoff]
        .iter()
        .all(|v| v.as_deref().is_none_or(|s| parse_duration(s).is_ok()));
    if both_parsed && delivery.max_backoff < delivery.initial_backoff {
        c.err(
            "delivery.max_backoff",
            "must not be less than delivery.initial_backoff",
        );
    }
    delivery
}

fn limits(c: &mut Checker, l: &FileLimits) -> Limits {
    let rate = |c: &mut Checker, k: &str, v: Option<&str>| -> Option<Rate> {
        let s = v?;
        if s == "off" {
            return None;
        }
        parse_rate(s).map_err(|e| c.err(k, e)).ok()
    };
    Limits {
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
            c,
            "limits.failed_token_per_ip",
            Some(l.failed_token_per_ip.as_deref().unwrap_or("20/m")),
        ),
        callback_per_ip: rate(c, "limits.callback_per_ip", l.callback_per_ip.as_deref()),
    }
}

fn klarna(c: &mut Checker, k: FileKlarna, base: &Path) -> KlarnaConfig {
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
}

fn reconcile(c: &mut Checker, f: FileReconcile) -> ReconcileConfig {
    let schedule_src = f.schedule.unwrap_or_else(|| {
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
        enabled: f.enabled,
        schedule,
        give_up_after: c.positive_duration(
            "reconcile.give_up_after",
            f.give_up_after.as_deref(),
            "48h",
        ),
    };
    reconcile
}

/// Read Session needs Klarna's API and credentials: one error per missing
/// piece, naming what asks for them (`why`).
fn needs_klarna(c: &mut Checker, klarna: Option<&KlarnaConfig>, why: &str) {
    match klarna {
        None => c.err(
            "klarna",
            format!("[klarna] with api_url, username and password is required when {why}"),
        ),
        Some(k) => {
            // A key already in error (an unset env: variable) is not
            // reported again as missing: one root cause, one error.
            let reported = |c: &Checker, key: &str| c.errors.iter().any(|e| e.key == key);
            if k.username.is_none() && !reported(c, "klarna.username") {
                c.err("klarna.username", format!("is required when {why}"));
            }
            if k.password.is_none() && !reported(c, "klarna.password") {
                c.err("klarna.password", format!("is required when {why}"));
            }
        }
    }
}

fn order_watch(c: &mut Checker, f: FileOrderWatch) -> OrderWatchConfig {
    let after = c.positive_duration("order_watch.after", f.after.as_deref(), "2m");
    let every = c.positive_duration("order_watch.every", f.every.as_deref(), "2m");
    let redeliver_after = c.positive_duration(
        "order_watch.redeliver_after",
        f.redeliver_after.as_deref(),
        "10m",
    );
    let unconfirmed_after = c.positive_duration(
        "order_watch.unconfirmed_after",
        f.unconfirmed_after.as_deref(),
        "60m",
    );
    let not_found_is_placed = match f.not_found.as_deref().unwrap_or("unconfirmed") {
        "unconfirmed" => false,
        "confirmed" => true,
        other => {
            c.err(
                "order_watch.not_found",
                format!("`{other}` is not one of \"unconfirmed\", \"confirmed\""),
            );
            false
        }
    };
    let release = match f.release.as_deref().unwrap_or("off") {
        "off" => Release::Off,
        "dry_run" => Release::DryRun,
        "on" => Release::On,
        other => {
            c.err(
                "order_watch.release",
                format!("`{other}` is not one of \"off\", \"dry_run\", \"on\""),
            );
            Release::Off
        }
    };
    let release_after = c.positive_duration(
        "order_watch.release_after",
        f.release_after.as_deref(),
        "55m",
    );
    if f.enabled && release != Release::Off && release_after >= AUTHORIZATION_LIFE {
        c.err(
            "order_watch.release_after",
            "must be less than 60m: Klarna cancels only an authorization that has not expired",
        );
    }
    let redeliver = f.redeliver.unwrap_or(true);
    if f.enabled {
        if redeliver && redeliver_after >= unconfirmed_after {
            c.err(
                "order_watch.redeliver_after",
                "must be less than order_watch.unconfirmed_after",
            );
        }
        if redeliver && redeliver_after >= Duration::from_secs(3600) {
            c.warnings.push("order_watch.redeliver_after: an hour or more, past the authorization_token's 60 minutes; the backend cannot place an order with it by then".into());
        }
    }
    OrderWatchConfig {
        enabled: f.enabled,
        after,
        every,
        redeliver_after: redeliver.then_some(redeliver_after),
        unconfirmed_after,
        not_found_is_placed,
        release,
        release_after,
    }
}
