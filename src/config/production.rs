//! `check --production`: the README's production checklist, read from a
//! valid config. Each item the config does not meet is one gap, with the
//! key to change and how.

use crate::config::model::{Config, ConfigError, TlsConfig};
use crate::route::ForwardFormat;
use crate::store::StoreKind;

/// Every checklist item `config` does not meet.
pub fn gaps(config: &Config) -> Vec<ConfigError> {
    let mut out = Vec::new();
    let mut gap = |key: &str, message: &str| {
        out.push(ConfigError {
            key: key.to_string(),
            message: message.to_string(),
        })
    };
    if matches!(config.server.tls, Some(TlsConfig::SelfSigned { .. })) {
        gap(
            "server.tls",
            "a self-signed certificate: Klarna trusts only public CAs; set cert and key, or [[server.tls.certificates]]",
        );
    }
    if config.store.kind == StoreKind::Memory {
        gap(
            "store.kind",
            "the memory store loses every authorization not yet delivered when the process stops; use \"file\" or \"redis\"",
        );
    }
    for key in &config.inline_secrets {
        gap(
            key,
            "written inline in the config file; use \"env:NAME\" or \"file:/path\"",
        );
    }
    if config.admin.token.is_none() {
        gap(
            "admin.token",
            "unset: anyone who reaches admin.listen can mint callback URLs and replay deliveries; set token = \"env:AUTHBACK_ADMIN_TOKEN\"",
        );
    }
    for (i, r) in config.routes.iter().enumerate() {
        if r.unverified && r.allow_ips.is_empty() {
            gap(
                &format!("routes[{i}].allow_ips"),
                "an unverified route with no allow_ips takes callbacks from anyone; set allow_ips = [\"klarna-production\"]",
            );
        }
    }
    let rendered = config
        .routes
        .iter()
        .any(|r| r.forward_format != ForwardFormat::Original);
    if rendered && config.upstream.signing_secret.is_none() {
        gap(
            "upstream.signing_secret",
            "a json or form route forwards with no signature, so the backend cannot tell authback's deliveries from forged ones; set signing_secret = \"env:AUTHBACK_SIGNING_SECRET\"",
        );
    }
    if !config.order_watch.enabled && !config.reconcile.enabled {
        gap(
            "order_watch.enabled",
            "neither order watch nor reconcile is on: a callback Klarna never sends, or an order the backend never places, goes unnoticed; turn on [order_watch] or [reconcile] (both need [klarna])",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_shipped_minimal_config_misses_every_item_it_can() {
        let c = Config::parse(crate::config::MINIMAL, Path::new(".")).expect("valid");
        let keys: Vec<String> = gaps(&c).into_iter().map(|g| g.key).collect();
        assert_eq!(
            keys,
            [
                "server.tls",
                "store.kind",
                "routes[0].secrets[0]",
                "admin.token",
                "upstream.signing_secret",
                "order_watch.enabled"
            ]
        );
    }
}
