//! authback: a TLS-terminating sidecar that proxies a merchant backend and
//! makes Klarna's authorization callbacks reach it exactly once.
//!
//! `run` serves on listeners the caller has bound; `main.rs` only parses the
//! command line, sets up logging and signals, and calls it.

pub mod admin;
pub mod app;
pub mod body;
pub mod callback;
pub mod config;
pub mod delivery;
pub mod forward;
pub mod head;
pub mod klarna;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod path;
pub mod proxy;
pub mod reconcile;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod text;
pub mod tls;
pub mod types;
pub mod upstream;
pub mod workers;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

pub use config::Config;
pub use server::Listeners;

use app::App;
use config::{StoreKind, TlsConfig};
use metrics::Metrics;
use store::memory::MemoryStore;
use store::redis::RedisStore;
use store::sqlite::SqliteStore;
use store::Store;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("store: {0}")]
    Store(String),
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
    let metrics = Arc::new(Metrics::default());
    let sighup = Arc::new(Notify::new());
    let (trigger, stop) = shutdown::latch();

    let (resolver, reloader) = match &config.server.tls {
        TlsConfig::Files {
            cert,
            key,
            reload_interval,
        } => {
            let (reloader, resolver) = tls::Reloader::load(cert.clone(), key.clone())?;
            (resolver, Some((reloader, *reload_interval)))
        }
        TlsConfig::SelfSigned => {
            let mut names = vec!["localhost".to_string()];
            if let Some(host) = config
                .server
                .public_url
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| u.host().map(String::from))
            {
                names.push(host);
            }
            tracing::warn!("serving a throwaway self-signed certificate (development only)");
            (tls::CertResolver::new(tls::self_signed(names)?), None)
        }
    };
    let acceptor = TlsAcceptor::from(tls::server_config(resolver)?);

    let store: Arc<dyn Store> = match config.store.kind {
        StoreKind::Memory => Arc::new(MemoryStore::new(config.store.dedupe_ttl)),
        StoreKind::File => {
            let path = config
                .store
                .path
                .as_deref()
                .ok_or_else(|| RunError::Store("store.path is not set".into()))?;
            let store = SqliteStore::open(path, config.store.dedupe_ttl)
                .map_err(|e| RunError::Store(e.0))?;
            tracing::info!(path = %path.display(), "file store open");
            Arc::new(store)
        }
        StoreKind::Redis => {
            let url = config
                .store
                .url
                .as_ref()
                .ok_or_else(|| RunError::Store("store.url is not set".into()))?;
            let url = std::str::from_utf8(url.expose())
                .map_err(|_| RunError::Store("store.url is not UTF-8".into()))?;
            // A lease outlives an attempt and its recording with room to spare.
            let lease = config.delivery.attempt_timeout * 2 + Duration::from_secs(5);
            let registration_ttl = config.reconcile.give_up_after + config.store.dedupe_ttl;
            let store = RedisStore::open(
                url,
                &config.store.key_prefix,
                config.store.dedupe_ttl,
                registration_ttl,
                lease,
            )
            .await
            .map_err(|e| RunError::Store(e.0))?;
            tracing::info!(prefix = %config.store.key_prefix, "redis store connected");
            Arc::new(store)
        }
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if !store.durable() {
        tracing::warn!("store.kind = \"memory\": deliveries not yet accepted by the upstream are lost if the process crashes");
    }

    let grace = config.server.shutdown_grace;
    let limits = config.limits.clone();
    let upstream_timeout = config.upstream.timeout;
    let workers = Arc::new(
        workers::Workers::start(config.server.workers)
            .map_err(|e| RunError::Runtime(format!("cannot start connection workers: {e}")))?,
    );
    let app = Arc::new(App::new(config, store, metrics.clone()));

    let mut background = Vec::new();
    let reloads = reloader.is_some();
    if let Some((reloader, interval)) = reloader {
        background.push(tokio::spawn(reloader.run(
            interval,
            sighup.clone(),
            metrics.clone(),
            stop.clone(),
        )));
    }
    // SIGHUP is always caught, so that it never ends the process (its default
    // action), even when there is no certificate file to reload.
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            let sighup = sighup.clone();
            let stop = stop.clone();
            background.push(tokio::spawn(async move {
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
            }));
        }
        Err(e) => tracing::warn!(error = %e, "cannot catch SIGHUP"),
    }
    {
        let app = app.clone();
        let stop = stop.clone();
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            let ttl_ms = app.config.store.dedupe_ttl.as_millis() as u64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        for l in [&app.failed_token_limiter, &app.callback_limiter].into_iter().flatten() {
                            l.sweep();
                        }
                        // Retention: delivered records and their dedupe keys go after the TTL.
                        match app.store.prune(types::unix_ms().saturating_sub(ttl_ms)).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(pruned = n, "delivered records past dedupe_ttl removed"),
                            Err(e) => tracing::warn!(error = %e, "pruning delivered records failed; will retry"),
                        }
                    }
                    _ = stop.wait() => return,
                }
            }
        }));
    }
    // With the memory store, the delivery worker stops only after the
    // listeners and the Read Session checks have: a callback answered 2xx
    // while they drain must still find a worker to deliver it.
    let (worker_trigger, worker_stop) = shutdown::latch();
    let worker = tokio::spawn(delivery::run(app.clone(), worker_stop));
    let mut reconciler = None;
    if app.config.reconcile.enabled {
        let klarna =
            app.config.klarna.as_ref().ok_or_else(|| {
                RunError::Store("[klarna] is required when reconcile.enabled".into())
            })?;
        let client = klarna::ReadSessionClient::new(klarna).map_err(RunError::Klarna)?;
        tracing::info!(api_url = %klarna.api_url, pending = app.store.active_registrations(), "Read Session fallback on");
        reconciler = Some(tokio::spawn(reconcile::run(
            app.clone(),
            Arc::new(client),
            stop.clone(),
        )));
    }

    let addr = |l: &tokio::net::TcpListener| {
        l.local_addr()
            .map_or_else(|_| "-".to_string(), |a| a.to_string())
    };
    let (public_addr, admin_addr) = (addr(&listeners.public), addr(&listeners.admin));
    let mut fronts = Vec::new();
    {
        let a = app.clone();
        let handler = move |req, peer| {
            let a = a.clone();
            async move { a.handle_public(req, peer, true).await }
        };
        fronts.push(tokio::spawn(server::serve(
            listeners.public,
            Some(acceptor),
            limits.clone(),
            handler,
            stop.clone(),
            grace,
            Some(workers.clone()),
            upstream_timeout,
        )));
    }
    if let Some(plain) = listeners.plain {
        let addr = addr(&plain);
        tracing::info!(%addr, "plain HTTP listener (use only behind an ingress that terminates TLS)");
        let a = app.clone();
        let handler = move |req, peer| {
            let a = a.clone();
            async move { a.handle_public(req, peer, false).await }
        };
        fronts.push(tokio::spawn(server::serve(
            plain,
            None,
            limits.clone(),
            handler,
            stop.clone(),
            grace,
            Some(workers.clone()),
            upstream_timeout,
        )));
    }
    // The admin listener outlives the public ones, so probes see the drain.
    let (admin_trigger, admin_stop) = shutdown::latch();
    let admin_task = {
        let a = app.clone();
        let handler = move |req, _peer| {
            let a = a.clone();
            async move { admin::handle(&a, req).await }
        };
        tokio::spawn(server::serve(
            listeners.admin,
            None,
            limits,
            handler,
            admin_stop,
            Duration::from_secs(1),
            None,
            Duration::ZERO,
        ))
    };
    app.ready.store(true, Ordering::Relaxed);
    tracing::info!(public = %public_addr, admin = %admin_addr, upstream = %app.upstream_base, routes = app.config.routes.len(), "authback serving");

    shutdown.await;
    tracing::info!(grace = %text::format_duration(grace), "shutting down: no new connections; draining");
    app.stopping.store(true, Ordering::Relaxed);
    let _ = app.stop_began.set(std::time::Instant::now());
    trigger.fire();
    // A durable store keeps what is queued: its worker stops taking new work
    // at once, and its attempts in flight get the whole grace.
    if app.store.durable() {
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
