//! authback: a TLS-terminating sidecar that proxies a merchant backend and
//! makes Klarna's authorization callbacks reach it exactly once.
//!
//! `run` serves on listeners the caller has bound; `main.rs` only parses the
//! command line, sets up logging and signals, and calls it. `startup` builds
//! each phase from the config: open the store, start delivery, start
//! Klarna's work, serve public, serve admin; `ops::shutdown` drains them in
//! that order, reversed.
//!
//! Modules the binary, the integration tests and the fuzz targets do not
//! name are private; items are `pub(crate)` unless one of them does.
//!
//! # The map, in the order a request meets it
//!
//! ```text
//! front/      listeners and connection workers (server, workers), the
//!             PROXY protocol (proxy_protocol), TLS and its reload (tls),
//!             strict heads (head), the canonical path (path), the router
//!             that sends each request to a callback route or to the
//!             pass-through (router), and the redirect to https (redirect)
//! route/      the route model: paths, spellings, query matches, answer rules,
//!             and how the backend's language reads names (dialect)
//! callback/   an intercepted callback: token (mint/verify), body, record, ack;
//!             the doctor's probe nonce, answered before a route's checks (probe)
//! proxy/      pass-through: the headers the backend may see, the canonical
//!             path it is sent, form bodies read as they stream (forms)
//! upstream/   the backend: one target, pooled connections, its errors
//! delivery/   the outbox worker: one attempt at a time per delivery, backoff,
//!             deadline, dead letters, the normalized request (render), what
//!             an attempt keeps of the answer, secrets redacted (excerpt)
//! store/      the Store trait (api), what is recorded (model), the three
//!             queues of leased work (queue), the doctor's probe nonces
//!             (probes), and the memory, SQLite and Redis kinds
//! klarna/     Klarna's API (client), Read Session recovery (reconcile),
//!             order watch (order_watch), and whether Klarna answers at all,
//!             logged once per outage (health)
//! admin/      the admin listener's /v1 API (api, view), resolving failures
//!             by hand (resolve), and the console and its CLI
//! ops/        the one loop for due work (due), metrics, logs, history,
//!             readiness, retention (prune), shutdown
//! doctor/     pre-flight checks against a running deployment; every route
//!             path probed through public_url, by token or nonce (probe, nonce)
//! config/     the file as written -> checked -> Config
//! ```
//!
//! `body`, `net`, `text`, `types` and `labels` are the shared vocabulary:
//! one body type, addresses (CIDRs, host:port, the client behind trusted
//! proxies), text codecs, the typed ids and secrets, and metric label values
//! as types. `client` is the one outbound client for everything but the
//! upstream (Klarna's API, the doctor, the `deliveries` CLI) and its rustls
//! configuration.

pub mod admin;
mod body;
pub mod callback;
mod client;
pub mod config;
pub mod delivery;
pub mod doctor;
pub mod front;
mod klarna;
mod labels;
mod net;
pub mod ops;
mod proxy;
pub mod route;
mod startup;
pub mod store;
pub mod text;
pub mod types;
mod upstream;

use std::future::Future;
use std::sync::Arc;

pub use config::Config;
pub use front::server::{listen, Listeners};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("TLS: {0}")]
    Tls(#[from] front::tls::TlsError),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("klarna: {0}")]
    Klarna(String),
    #[error("{0}")]
    Runtime(String),
}

/// Serves until `shutdown` resolves, then drains: stops accepting, lets
/// in-flight requests finish within `server.shutdown_grace`, and returns.
/// Each phase is built from the config in `startup`; the stop tree in
/// `ops::shutdown::Drain` is the drain order.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let stops = ops::shutdown::Drain::default();
    // 1. The shared core: metrics, TLS, the store, the upstream.
    let mut core = startup::open(Arc::new(config), &stops).await?;
    // 2. The delivery worker.
    let deliveries = startup::start_delivery(&core, &stops);
    // 3. Klarna: Read Session recovery and order watch.
    let klarna = startup::start_klarna(&core, &deliveries, &stops)?;
    // 4. The public listeners.
    let Listeners {
        public,
        plain,
        redirect,
        admin,
    } = listeners;
    let public_addr = public
        .as_ref()
        .or(plain.as_ref())
        .map_or_else(|| "-".to_string(), startup::local_addr);
    let admin_addr = startup::local_addr(&admin);
    let public = startup::Public {
        tls: public,
        plain,
        redirect,
    };
    let fronts = startup::serve_public(&mut core, &deliveries, public, &stops)?;
    // 5. The admin listener.
    let admin = startup::serve_admin(&core, &deliveries, admin, &stops);
    core.readiness.serving();
    tracing::info!(public = %public_addr, admin = %admin_addr, upstream = %core.upstream.base(), routes = core.config.routes.len(), "authback serving");

    shutdown.await;
    // 6. Drain, in the order of the stop tree.
    let started = startup::Started {
        core,
        deliveries,
        klarna,
        fronts,
        admin,
    };
    startup::drain(started, stops).await;
    Ok(())
}
