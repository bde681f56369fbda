//! authback: a TLS-terminating sidecar that proxies a merchant backend and
//! makes Klarna's authorization callbacks reach it exactly once.
//!
//! `run` serves on listeners the caller has bound; `main.rs` only parses the
//! command line, sets up logging and signals, and calls it.
//!
//! # The map, in the order a request meets it
//!
//! ```text
//! front/      listeners and connection workers (server, workers), TLS and its
//!             reload (tls), strict heads (head), the canonical path (path),
//!             client addresses (net), and the router that sends each request
//!             to a callback route or to the pass-through (router)
//! route/      the route model: paths, spellings, query matches, answer rules,
//!             and how the backend's language reads names (dialect)
//! callback/   an intercepted callback: token (mint/verify), body, record, ack
//! proxy/      pass-through: the headers the backend may see, the canonical
//!             path it is sent, form bodies read as they stream (forms)
//! upstream/   the backend: one target, pooled connections, its errors
//! delivery/   the outbox worker: leased attempts, backoff, deadline, dead
//!             letters, the normalized request (render)
//! store/      the store trait and its memory, SQLite and Redis kinds
//! klarna/     Klarna's API (client), Read Session recovery (reconcile) and
//!             order watch (order_watch)
//! admin/      the admin listener's /v1 API (api) and the console and its CLI
//! ops/        metrics, logs, history, readiness, shutdown
//! doctor/     pre-flight checks against a running deployment
//! config/     the file as written -> checked -> Config
//! ```
//!
//! `body`, `text` and `types` are the shared vocabulary: one body type, text
//! codecs, and the typed ids and secrets.

pub mod admin;
pub mod body;
pub mod callback;
pub mod config;
pub mod delivery;
pub mod doctor;
pub mod front;
pub mod klarna;
pub mod ops;
pub mod proxy;
pub mod route;
pub mod store;
pub mod text;
pub mod types;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

pub use config::Config;
pub use front::server::{listen, Listeners};

use front::{router, server, tls, workers};
use klarna::reconcile;
use ops::metrics::Metrics;
use ops::readiness::Readiness;
use ops::{history, shutdown};
use upstream::Upstream;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("klarna: {0}")]
    Klarna(String),
    #[error("{0}")]
    Runtime(String),
}

/// Serves until `shutdown` resolves, then drains: stops accepting, lets
/// in-flight requests finish within `server.shutdown_grace`, and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());
    for r in &config.routes {
        metrics.declare_route(&r.name);
    }
    let (trigger, stop) = shutdown::latch();
    let (acceptor, mut background) = tls::start(
        &config.server.tls,
        &config.server.public_url,
        metrics.clone(),
        stop.clone(),
    )?;
    // A Redis lease outlives an attempt and its recording with room to spare.
    let lease = config.delivery.attempt_timeout * 2 + Duration::from_secs(5);
    let registration_ttl = config.reconcile.give_up_after + config.store.dedupe_ttl;
    let store = store::open(&config.store, lease, registration_ttl).await?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if !store.durable() {
        tracing::warn!("store.kind = \"memory\": deliveries not yet accepted by the upstream are lost if the process crashes");
    }
    background.push(store::spawn_pruner(
        store.clone(),
        config.store.dedupe_ttl,
        stop.clone(),
    ));
    let workers = Arc::new(
        workers::Workers::start(config.server.workers)
            .map_err(|e| RunError::Runtime(format!("cannot start connection workers: {e}")))?,
    );
    let upstream = Arc::new(Upstream::new(&config.upstream));
    let readiness = Readiness::default();

    // With the memory store, the delivery worker stops only after the
    // listeners and the Read Session checks have: a callback answered 2xx
    // while they drain must still find a worker to deliver it.
    // Rung on a new registration or a new order watch: the Read Session loop wakes.
    let new_registration = Arc::new(Notify::new());
    let deliveries = delivery::Handle::default();
    let (worker_trigger, worker_stop) = shutdown::latch();
    let worker = delivery::spawn(
        delivery::Worker {
            store: store.clone(),
            metrics: metrics.clone(),
            upstream: upstream.clone(),
            routes: config.routes.clone(),
            config: config.delivery.clone(),
            signing_secret: config.upstream.signing_secret.clone(),
            shutdown_grace: config.server.shutdown_grace,
            watch_after: config
                .order_watch
                .enabled
                .then_some(config.order_watch.after),
            watch_doorbell: new_registration.clone(),
            handle: deliveries.clone(),
        },
        worker_stop,
    );
    let reads_sessions = config.reconcile.enabled || config.order_watch.enabled;
    let reconciler = match (&config.klarna, reads_sessions) {
        (Some(klarna), true) => {
            let client =
                klarna::client::ReadSessionClient::new(klarna).map_err(RunError::Klarna)?;
            tracing::info!(api_url = %klarna.api_url, fallback = config.reconcile.enabled, order_watch = config.order_watch.enabled, pending = store.active_registrations(), "Read Session on");
            let ctx = reconcile::Context {
                store: store.clone(),
                metrics: metrics.clone(),
                client: Arc::new(client),
                config: config.reconcile.clone(),
                order_watch: config.order_watch.clone(),
                deadline: config.delivery.deadline,
                shutdown_grace: config.server.shutdown_grace,
                deliveries: deliveries.clone(),
                wake: new_registration.clone(),
            };
            Some(reconcile::spawn(ctx, stop.clone()))
        }
        (None, true) => {
            return Err(RunError::Klarna(
                "[klarna] is required when reconcile or order_watch is enabled".into(),
            ))
        }
        _ => None,
    };

    let callbacks = Arc::new(callback::Context {
        store: store.clone(),
        metrics: metrics.clone(),
        new_work: deliveries.doorbell(),
        failed_token_limiter: config
            .limits
            .failed_token_per_ip
            .and_then(callback::limit::IpLimiter::new),
        callback_limiter: config
            .limits
            .callback_per_ip
            .and_then(callback::limit::IpLimiter::new),
        body_timeout: config.limits.header_read_timeout,
        deadline: config.delivery.deadline,
    });
    background.push(callbacks.spawn_sweeper(stop.clone()));
    let app = Arc::new(router::App::new(
        config.routes.clone(),
        config.server.trusted_proxies.clone(),
        router::Reading {
            dialect: config.upstream.dialect,
            max_input_vars: config.upstream.max_input_vars,
        },
        callbacks,
        proxy::Context {
            upstream: upstream.clone(),
            trusted_proxies: config.server.trusted_proxies.clone(),
            path_form: config.upstream.path_form,
            public_port: proxy::public_port(&config.server.public_url),
            routed_names: proxy::routed_names(&config.routes),
            metrics: metrics.clone(),
        },
    ));

    let addr = |l: &tokio::net::TcpListener| {
        l.local_addr()
            .map_or_else(|_| "-".to_string(), |a| a.to_string())
    };
    let (public_addr, admin_addr) = (addr(&listeners.public), addr(&listeners.admin));
    let grace = config.server.shutdown_grace;
    let public = |tls: Option<tokio_rustls::TlsAcceptor>| server::Options {
        tls,
        limits: config.limits.clone(),
        grace,
        workers: Some(workers.clone()),
        upstream_timeout: config.upstream.timeout,
    };
    let mut fronts = Vec::new();
    let mut serve_public = |listener, tls: Option<tokio_rustls::TlsAcceptor>| {
        let secure = tls.is_some();
        let a = app.clone();
        let handler = move |req, peer| {
            let a = a.clone();
            async move { a.handle_public(req, peer, secure).await }
        };
        fronts.push(tokio::spawn(server::serve(
            listener,
            public(tls),
            handler,
            stop.clone(),
        )));
    };
    serve_public(listeners.public, Some(acceptor));
    if let Some(plain) = listeners.plain {
        tracing::info!(addr = %addr(&plain), "plain HTTP listener (use only behind an ingress that terminates TLS)");
        serve_public(plain, None);
    }
    let history = history::History::default();
    background.push(history::spawn_sampler(
        history.clone(),
        store.clone(),
        metrics.clone(),
        config.routes.iter().map(|r| r.name.clone()).collect(),
        stop.clone(),
    ));
    // The admin listener outlives the public ones, so probes see the drain.
    let (admin_trigger, admin_stop) = shutdown::latch();
    let admin_task = {
        let a = Arc::new(admin::api::Context {
            config: config.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            deliveries: deliveries.clone(),
            new_registration,
            history: history.clone(),
        });
        let handler = move |req, _peer| {
            let a = a.clone();
            async move { admin::api::handle(&a, req).await }
        };
        let options = server::Options {
            tls: None,
            limits: config.limits.clone(),
            grace: Duration::from_secs(1),
            workers: None,
            upstream_timeout: Duration::ZERO,
        };
        tokio::spawn(server::serve(listeners.admin, options, handler, admin_stop))
    };
    readiness.serving();
    tracing::info!(public = %public_addr, admin = %admin_addr, upstream = %upstream.base(), routes = config.routes.len(), "authback serving");

    shutdown.await;
    tracing::info!(grace = %text::format_duration(grace), "shutting down: no new connections; draining");
    readiness.draining();
    deliveries.shutdown_began();
    trigger.fire();
    // A durable store keeps what is queued: its worker stops taking new work
    // at once, and its attempts in flight get the whole grace.
    if store.durable() {
        worker_trigger.fire();
    }
    for f in fronts {
        let _ = f.await;
    }
    if let Some(r) = reconciler {
        let _ = r.await;
    }
    worker_trigger.fire();
    let _ = worker.await;
    admin_trigger.fire();
    let _ = admin_task.await;
    for b in background {
        b.abort();
    }
    if let Ok(w) = Arc::try_unwrap(workers) {
        w.stop().await;
    }
    tracing::info!("stopped");
    Ok(())
}
