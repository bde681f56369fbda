//! `run`'s phases, each built from the config: the shared core (metrics,
//! TLS, the store, the upstream), the delivery worker, Klarna's work, the
//! public listeners, the admin listener, and the drain that stops them in
//! the order of the stop tree (`ops::shutdown::Drain`).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, UpstreamConfig};
use crate::front::{router, server, tls, workers};
use crate::klarna::reconcile;
use crate::ops::access_log::AccessLog;
use crate::ops::history;
use crate::ops::metrics::Metrics;
use crate::ops::readiness::Readiness;
use crate::ops::shutdown::Drain;
use crate::store::{self, Store};
use crate::upstream::Upstream;
use crate::{admin, callback, delivery, proxy, RunError};

/// What every phase shares.
pub(crate) struct Core {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub store: Arc<dyn Store>,
    pub upstream: Arc<Upstream>,
    pub readiness: Readiness,
    pub history: history::History,
    /// TLS for `server.listen`; none without `[server.tls]`.
    acceptor: Option<TlsAcceptor>,
    /// The certificate served, for the names the redirect may go to.
    certs: Option<Arc<crate::front::sni::CertResolver>>,
    workers: Arc<workers::Workers>,
    /// `[access_log]`, when on.
    access_log: Option<Arc<AccessLog>>,
    /// Loops that only stop with the process: certificate reloads, the
    /// store's pruner, the limiters' sweeper, the history sampler.
    background: Vec<JoinHandle<()>>,
}

/// Phase 1: metrics, TLS, the store and the upstream.
pub(crate) async fn open(config: Arc<Config>, drain: &Drain) -> Result<Core, RunError> {
    let metrics = Arc::new(Metrics::default());
    for r in &config.routes {
        metrics.declare_route(&r.name);
    }
    let tls::Started {
        acceptor,
        resolver: certs,
        tasks: mut background,
    } = tls::start(
        config.server.tls.as_ref(),
        &config.server.public_url,
        metrics.clone(),
        drain.public.clone(),
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
    background.extend(crate::ops::ip_sets::spawn(
        &config.ip_sets,
        config.server.tls.as_ref(),
        drain.public.clone(),
    ));
    if !config.builtin_ip_lists.is_empty() {
        tracing::info!(
            lists = %config.builtin_ip_lists.join(", "),
            taken_on = crate::config::KLARNA_IP_LISTS_DATE,
            "allow_ips uses Klarna's built-in address lists; an [ip_sets] file of the same name replaces one without a new release"
        );
    }
    background.push(crate::ops::prune::spawn(
        store.clone(),
        &config.store,
        drain.public.clone(),
    ));
    let access_log = if config.access_log.enabled {
        let (log, reopen) =
            AccessLog::start(&config.access_log, metrics.clone(), drain.admin.clone())
                .map_err(|e| RunError::Runtime(format!("cannot open the access log: {e}")))?;
        background.extend(reopen);
        Some(log)
    } else {
        None
    };
    let workers = workers::Workers::start(config.server.workers)
        .map_err(|e| RunError::Runtime(format!("cannot start connection workers: {e}")))?;
    let history = history::History::default();
    background.push(history::spawn_sampler(
        history.clone(),
        store.clone(),
        metrics.clone(),
        config.routes.iter().map(|r| r.name.clone()).collect(),
        drain.public.clone(),
    ));
    Ok(Core {
        upstream: Arc::new(Upstream::new(&config.upstream)),
        config,
        metrics,
        store,
        readiness: Readiness::default(),
        history,
        acceptor,
        certs,
        workers: Arc::new(workers),
        access_log,
        background,
    })
}

/// The delivery worker and the bells that wake it and the Read Session loop.
pub struct Deliveries {
    pub handle: delivery::Handle,
    /// Rung on a new registration or a new order watch: the Read Session
    /// loop wakes.
    pub new_registration: Arc<Notify>,
    task: JoinHandle<()>,
}

/// Phase 2: the delivery worker. With the memory store it stops only after
/// the listeners and the Read Session checks have (`drain`): a callback
/// answered 2xx while they drain must still find a worker to deliver it.
pub(crate) fn start_delivery(core: &Core, drain: &Drain) -> Deliveries {
    let config = &core.config;
    let new_registration = Arc::new(Notify::new());
    let handle = delivery::Handle::default();
    let task = delivery::spawn(
        delivery::Worker {
            store: core.store.clone(),
            metrics: core.metrics.clone(),
            upstream: core.upstream.clone(),
            routes: config.routes.clone(),
            config: config.delivery.clone(),
            signing_secret: config.upstream.signing_secret.clone(),
            redactor: delivery::excerpt::Redactor::from_config(config),
            shutdown_grace: config.server.shutdown_grace,
            watch_after: config
                .order_watch
                .enabled
                .then_some(config.order_watch.after),
            watch_doorbell: new_registration.clone(),
            handle: handle.clone(),
        },
        drain.delivery.clone(),
    );
    Deliveries {
        handle,
        new_registration,
        task,
    }
}

/// Phase 3: Read Session recovery and order watch, when either is on.
pub(crate) fn start_klarna(
    core: &Core,
    deliveries: &Deliveries,
    drain: &Drain,
) -> Result<Option<JoinHandle<()>>, RunError> {
    let config = &core.config;
    if !(config.reconcile.enabled || config.order_watch.enabled) {
        return Ok(None);
    }
    let Some(klarna) = &config.klarna else {
        return Err(RunError::Klarna(
            "[klarna] is required when reconcile or order_watch is enabled".into(),
        ));
    };
    let client = crate::klarna::client::ReadSessionClient::new(klarna).map_err(RunError::Klarna)?;
    tracing::info!(api_url = %klarna.api_url, fallback = config.reconcile.enabled, order_watch = config.order_watch.enabled, pending = core.store.active_registrations(), "Read Session on");
    let ctx = reconcile::Context {
        store: core.store.clone(),
        metrics: core.metrics.clone(),
        client: Arc::new(client),
        health: Arc::default(),
        config: config.reconcile.clone(),
        order_watch: config.order_watch.clone(),
        deadline: config.delivery.deadline,
        shutdown_grace: config.server.shutdown_grace,
        deliveries: deliveries.handle.clone(),
        release_notices: config
            .routes
            .iter()
            .filter(|r| r.forward_format != crate::route::ForwardFormat::Original)
            .map(|r| r.name.clone())
            .collect(),
        wake: deliveries.new_registration.clone(),
    };
    Ok(Some(reconcile::spawn(ctx, drain.public.clone())))
}

/// The public listeners `run` was given.
pub(crate) struct Public {
    pub tls: Option<TcpListener>,
    pub plain: Option<TcpListener>,
    pub redirect: Option<TcpListener>,
}

/// Phase 4: the public listeners (TLS, plain HTTP behind an ingress, and
/// the redirect to https), routing each request to a callback route or the
/// pass-through.
pub(crate) fn serve_public(
    core: &mut Core,
    deliveries: &Deliveries,
    listeners: Public,
    drain: &Drain,
) -> Result<Vec<JoinHandle<()>>, RunError> {
    let app = public_app(core, deliveries, drain);
    let config = &core.config;
    let options = |tls: Option<TlsAcceptor>, workers: bool| server::Options {
        tls,
        limits: config.limits.clone(),
        grace: config.server.shutdown_grace,
        workers: workers.then(|| core.workers.clone()),
        upstream_timeout: config.upstream.timeout,
        proxy_protocol: config.server.proxy_protocol.clone().map(Arc::new),
    };
    let serve = |listener, tls: Option<TlsAcceptor>| {
        let secure = tls.is_some();
        let a = app.clone();
        let handler = move |req, peer| {
            let a = a.clone();
            async move { a.handle_public(req, peer, secure).await }
        };
        tokio::spawn(server::serve(
            listener,
            options(tls, true),
            handler,
            drain.public.clone(),
        ))
    };
    let mut fronts = Vec::new();
    if let Some(public) = listeners.tls {
        let Some(acceptor) = core.acceptor.clone() else {
            return Err(RunError::Runtime(
                "a TLS listener needs [server.tls]".into(),
            ));
        };
        fronts.push(serve(public, Some(acceptor)));
    }
    if let Some(plain) = listeners.plain {
        tracing::info!(addr = %local_addr(&plain), "plain HTTP listener (use only behind an ingress that terminates TLS)");
        fronts.push(serve(plain, None));
    }
    if let Some(listener) = listeners.redirect {
        let r = Arc::new(redirect(core, app.clone()));
        tracing::info!(addr = %local_addr(&listener), "redirect listener: 308 to https, ACME challenges passed through");
        let handler = move |req, peer| {
            let r = r.clone();
            async move { r.handle(req, peer).await }
        };
        fronts.push(tokio::spawn(server::serve(
            listener,
            options(None, false),
            handler,
            drain.public.clone(),
        )));
    }
    Ok(fronts)
}

/// The router every public listener shares, with the callback and
/// pass-through contexts it hands requests to.
fn public_app(core: &mut Core, deliveries: &Deliveries, drain: &Drain) -> Arc<router::App> {
    let config = &core.config;
    let callbacks = Arc::new(callback::Context {
        store: core.store.clone(),
        metrics: core.metrics.clone(),
        new_work: deliveries.handle.doorbell(),
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
        probes: callback::probe::Probes::new(&config.server.public_url),
    });
    core.background
        .push(callbacks.spawn_sweeper(drain.public.clone()));
    Arc::new(router::App::new(
        config.routes.clone(),
        config.server.trusted_proxies.clone(),
        router::Reading {
            dialect: config.upstream.dialect,
            max_input_vars: config.upstream.max_input_vars,
        },
        callbacks,
        proxy_context(
            core,
            core.upstream.clone(),
            proxy::public_port(&config.server.public_url),
        ),
        core.access_log.clone(),
    ))
}

/// The pass-through to `upstream`, with the forwarding rules of the config.
fn proxy_context(core: &Core, upstream: Arc<Upstream>, public_port: u16) -> proxy::Context {
    let config = &core.config;
    proxy::Context {
        upstream,
        trusted_proxies: config.server.trusted_proxies.clone(),
        path_form: config.upstream.path_form,
        public_port,
        routed_names: proxy::routed_names(&config.routes),
        metrics: core.metrics.clone(),
        hsts: config.server.hsts.clone(),
    }
}

/// The redirect listener's handler: ACME challenges go to
/// `server.acme_upstream` (the upstream unless another is named).
fn redirect(core: &Core, app: Arc<router::App>) -> crate::front::redirect::Redirect {
    let config = &core.config;
    let acme = match &config.server.acme_upstream {
        Some(url) if *url != config.upstream.url => Arc::new(Upstream::new(&UpstreamConfig {
            url: url.clone(),
            ..config.upstream.clone()
        })),
        _ => core.upstream.clone(),
    };
    // The challenge came over plain HTTP on port 80, as ACME requires.
    let acme = proxy_context(core, acme, 80);
    crate::front::redirect::Redirect::new(app, acme, &config.server.public_url, core.certs.clone())
}

/// Phase 5: the admin listener. It outlives the public ones, so probes see
/// the drain.
pub(crate) fn serve_admin(
    core: &Core,
    deliveries: &Deliveries,
    listener: TcpListener,
    drain: &Drain,
) -> JoinHandle<()> {
    let a = Arc::new(admin::api::Context {
        config: core.config.clone(),
        store: core.store.clone(),
        metrics: core.metrics.clone(),
        readiness: core.readiness.clone(),
        deliveries: deliveries.handle.clone(),
        new_registration: deliveries.new_registration.clone(),
        history: core.history.clone(),
    });
    let handler = move |req, _peer| {
        let a = a.clone();
        async move { admin::api::handle(&a, req).await }
    };
    let options = server::Options {
        tls: None,
        limits: core.config.limits.clone(),
        grace: Duration::from_secs(1),
        workers: None,
        upstream_timeout: Duration::ZERO,
        proxy_protocol: None,
    };
    tokio::spawn(server::serve(
        listener,
        options,
        handler,
        drain.admin.clone(),
    ))
}

/// What `run` started and `drain` stops.
pub(crate) struct Started {
    pub core: Core,
    pub deliveries: Deliveries,
    pub klarna: Option<JoinHandle<()>>,
    pub fronts: Vec<JoinHandle<()>>,
    pub admin: JoinHandle<()>,
}

/// Phase 6: stop in the order of the stop tree. The public side first (no
/// new connections; in-flight requests get the grace), with Klarna's work;
/// then the delivery worker; then the admin listener, so probes saw the
/// drain to its end.
pub(crate) async fn drain(started: Started, drain: Drain) {
    let Started {
        core,
        deliveries,
        klarna,
        fronts,
        admin,
    } = started;
    tracing::info!(grace = %crate::text::format_duration(core.config.server.shutdown_grace), "shutting down: no new connections; draining");
    core.readiness.draining();
    deliveries.handle.shutdown_began();
    drain.public.fire();
    // A durable store keeps what is queued: its worker stops taking new work
    // at once, and its attempts in flight get the whole grace.
    if core.store.durable() {
        drain.delivery.fire();
    }
    for f in fronts {
        let _ = f.await;
    }
    // Every answer is sent: its line is queued.
    if let Some(log) = &core.access_log {
        log.flush(Duration::from_secs(2)).await;
    }
    if let Some(k) = klarna {
        let _ = k.await;
    }
    drain.delivery.fire();
    let _ = deliveries.task.await;
    drain.admin.fire();
    let _ = admin.await;
    for b in core.background {
        b.abort();
    }
    if let Ok(w) = Arc::try_unwrap(core.workers) {
        w.stop().await;
    }
    tracing::info!("stopped");
}

/// A listener's address, for a log line.
pub(crate) fn local_addr(l: &TcpListener) -> String {
    l.local_addr()
        .map_or_else(|_| "-".to_string(), |a| a.to_string())
}
