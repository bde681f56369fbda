//! Prometheus metrics, kept as plain atomics and rendered by hand in the
//! text exposition format. Label values come from the config (route names)
//! or from fixed sets, never from requests, so cardinality is bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::labels::label_values;
use crate::store::replication::{AckOperation, Figures};

/// Upper bounds of the ack latency histogram, in seconds.
const ACK_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds of the delivery latency histogram (receipt to the backend's
/// 2xx), in seconds: from an upstream that answers at once to one that
/// answers near the 60-minute deadline.
const DELIVERY_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

label_values! {
    /// The `outcome` of `authback_callbacks_total`: how a callback was
    /// answered.
    CallbackOutcome {
        Accepted => "accepted",
        Duplicate => "duplicate",
        MethodNotAllowed => "method_not_allowed",
        Forbidden => "forbidden",
        InvalidToken => "invalid_token",
        RateLimited => "rate_limited",
        TooLarge => "too_large",
        BadRequest => "bad_request",
        Timeout => "timeout",
        Unavailable => "unavailable",
    }
}

label_values! {
    /// The `outcome` of `authback_deliveries_total`: what one attempt ended in.
    DeliveryOutcome {
        Delivered => "delivered",
        Retry => "retry",
        Dead => "dead",
    }
}

label_values! {
    /// The `outcome` of `authback_reconcile_checks_total`: what one Read
    /// Session check found, or why it failed.
    CheckOutcome {
        Recovered => "recovered",
        AlreadyRecorded => "already_recorded",
        Incomplete => "incomplete",
        Complete => "complete",
        Expired => "expired",
        GaveUp => "gave_up",
        AuthError => "auth_error",
        RateLimited => "rate_limited",
        ServerError => "server_error",
        Timeout => "timeout",
        Unreachable => "unreachable",
        Error => "error",
        StoreError => "store_error",
    }
}

label_values! {
    /// The `outcome` of `authback_order_watch_total`: how an order watch
    /// ended (or redelivered).
    WatchOutcome {
        Confirmed => "confirmed",
        Redelivered => "redelivered",
        Unconfirmed => "unconfirmed",
        Released => "released",
        ReleaseFailed => "release_failed",
        Superseded => "superseded",
    }
}

label_values! {
    /// The `operation` of `authback_klarna_requests_total`: which of
    /// Klarna's API calls.
    KlarnaOperation {
        ReadSession => "read_session",
        CancelAuthorization => "cancel_authorization",
    }
}

label_values! {
    /// The `purpose` of `authback_klarna_requests_total`: what authback
    /// asked Klarna for.
    KlarnaPurpose {
        Reconcile => "reconcile",
        OrderWatch => "order_watch",
        Release => "release",
    }
}

label_values! {
    /// The `outcome` of `authback_klarna_requests_total`: how Klarna
    /// answered one request, or why it did not. `ok` and `not_found` are
    /// answers; the others are failures.
    KlarnaOutcome {
        Ok => "ok",
        NotFound => "not_found",
        Unauthorized => "unauthorized",
        RateLimited => "rate_limited",
        ServerError => "server_error",
        Unreachable => "unreachable",
        Error => "error",
    }
}

impl KlarnaOutcome {
    /// Whether Klarna answered what was asked (a session, or that there is
    /// none).
    pub(crate) const fn is_answer(self) -> bool {
        matches!(self, KlarnaOutcome::Ok | KlarnaOutcome::NotFound)
    }
}

/// Requests to Klarna's API, indexed by operation, purpose and outcome.
type KlarnaRequests =
    [[[AtomicU64; KlarnaOutcome::ALL.len()]; KlarnaPurpose::ALL.len()]; KlarnaOperation::ALL.len()];

label_values! {
    /// The `outcome` of `authback_tls_reloads_total`.
    ReloadOutcome {
        Ok => "ok",
        Error => "error",
    }
}

pub(crate) struct Metrics {
    /// When the process started (unix seconds).
    started_at: f64,
    callbacks: Counters,
    deliveries: Counters,
    proxy_by_class: [AtomicU64; 6],
    tls_reloads: Counters,
    reconcile_checks: Counters,
    recovered: AtomicU64,
    /// Order-watch outcomes, indexed by `WatchOutcome`.
    order_watch: [AtomicU64; WatchOutcome::ALL.len()],
    /// Every combination exists from the start, at zero.
    klarna_requests: KlarnaRequests,
    ack: Histogram<12>,
    delivery_latency: Histogram<12>,
    /// Access log lines not written (`ops::access_log`).
    access_log_dropped: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            callbacks: Counters::default(),
            deliveries: Counters::default(),
            proxy_by_class: Default::default(),
            tls_reloads: Counters::default(),
            reconcile_checks: Counters::default(),
            recovered: AtomicU64::new(0),
            order_watch: Default::default(),
            klarna_requests: Default::default(),
            ack: Histogram::default(),
            delivery_latency: Histogram::default(),
            access_log_dropped: AtomicU64::new(0),
        };
        // Every series exists from the start, at zero: a rate() over a
        // counter that appears on its first event misses that event.
        for outcome in CheckOutcome::ALL {
            m.reconcile_checks.declare("", outcome.as_str());
        }
        for outcome in ReloadOutcome::ALL {
            m.tls_reloads.declare("public", outcome.as_str());
        }
        m
    }
}

/// Counters keyed by a pair of label values. The outer key is looked up by
/// `&str`, so counting allocates nothing once a series exists.
#[derive(Default)]
struct Counters(Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>);

impl Counters {
    fn add(&self, a: &str, b: &'static str, n: u64) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(a) {
            Some(inner) => *inner.entry(b).or_insert(0) += n,
            None => {
                m.insert(a.to_string(), BTreeMap::from([(b, n)]));
            }
        }
    }

    fn inc(&self, a: &str, b: &'static str) {
        self.add(a, b, 1);
    }

    /// Makes the series exist at zero.
    fn declare(&self, a: &str, b: &'static str) {
        self.add(a, b, 0);
    }

    fn get(&self, a: &str, b: &'static str) -> u64 {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(a)
            .and_then(|inner| inner.get(b))
            .copied()
            .unwrap_or(0)
    }

    /// The second-label values and counts under first label `a`.
    fn row(&self, a: &str) -> Vec<(&'static str, u64)> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(a)
            .map(|inner| inner.iter().map(|(b, v)| (*b, *v)).collect())
            .unwrap_or_default()
    }

    fn render(&self, out: &mut String, name: &str, help: &str, la: &str, lb: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (a, inner) in m.iter() {
            for (b, v) in inner {
                let _ = writeln!(out, "{name}{{{la}=\"{a}\",{lb}=\"{b}\"}} {v}");
            }
        }
    }
}

struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&self, bounds: &[f64; N], d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in bounds.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str, bounds: &[f64; N]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in bounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {:.6}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

impl Metrics {
    /// Declares a route so its series exist (at zero) before any traffic.
    pub(crate) fn declare_route(&self, route: &str) {
        for outcome in CallbackOutcome::ALL {
            self.callbacks.declare(route, outcome.as_str());
        }
        for outcome in DeliveryOutcome::ALL {
            self.deliveries.declare(route, outcome.as_str());
        }
    }

    pub(crate) fn callback(&self, route: &str, outcome: CallbackOutcome) {
        self.callbacks.inc(route, outcome.as_str());
    }

    pub(crate) fn callbacks(&self, route: &str, outcome: CallbackOutcome) -> u64 {
        self.callbacks.get(route, outcome.as_str())
    }

    pub(crate) fn delivery(&self, route: &str, outcome: DeliveryOutcome) {
        self.deliveries.inc(route, outcome.as_str());
    }

    pub(crate) fn reconcile_check(&self, outcome: CheckOutcome) {
        self.reconcile_checks.inc("", outcome.as_str());
    }

    pub(crate) fn recovered(&self) {
        self.recovered.fetch_add(1, Ordering::Relaxed);
    }

    /// An order watch reached `outcome`.
    pub(crate) fn order_watch(&self, outcome: WatchOutcome) {
        self.order_watch[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// One request to Klarna's API ended in `outcome`.
    pub(crate) fn klarna_request(
        &self,
        operation: KlarnaOperation,
        purpose: KlarnaPurpose,
        outcome: KlarnaOutcome,
    ) {
        self.klarna_requests[operation as usize][purpose as usize][outcome as usize]
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn tls_reload(&self, outcome: ReloadOutcome) {
        self.tls_reloads.inc("public", outcome.as_str());
    }

    pub(crate) fn proxy_response(&self, status: u16) {
        let class = usize::from(status / 100).min(5);
        self.proxy_by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn ack_duration(&self, d: Duration) {
        self.ack.observe(&ACK_BUCKETS, d);
    }

    /// A delivery the backend accepted `d` after authback received it.
    pub(crate) fn delivery_latency(&self, d: Duration) {
        self.delivery_latency.observe(&DELIVERY_BUCKETS, d);
    }

    /// An access log line was dropped rather than wait for the writer.
    pub(crate) fn access_log_dropped(&self) {
        self.access_log_dropped.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn access_log_dropped_count(&self) -> u64 {
        self.access_log_dropped.load(Ordering::Relaxed)
    }

    /// Renders everything; gauges that live elsewhere are passed in.
    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        self.render_traffic(&mut out, gauges);
        self.render_timings(&mut out);
        self.render_recovery(&mut out, gauges);
        self.render_state(&mut out, gauges);
        out
    }

    /// Callbacks, deliveries and the outbox.
    fn render_traffic(&self, out: &mut String, gauges: &Gauges) {
        self.callbacks.render(
            out,
            "authback_callbacks_total",
            "Callbacks received, by route and outcome.",
            "route",
            "outcome",
        );
        self.deliveries.render(
            out,
            "authback_deliveries_total",
            "Delivery attempts to the upstream, by route and outcome (delivered, retry, dead).",
            "route",
            "outcome",
        );
        scalar(
            out,
            "authback_delivery_queue_depth",
            Kind::Gauge,
            "Deliveries pending (queued or in flight).",
            gauges.queue_depth,
        );
        scalar(
            out,
            "authback_dead_deliveries",
            Kind::Gauge,
            "Deliveries that gave up and wait for a replay or a resolve.",
            gauges.dead,
        );
        scalar(
            out,
            "authback_oldest_dead_seconds",
            Kind::Gauge,
            "Age (since receipt) of the oldest dead delivery not resolved (0 when none).",
            format!("{:.3}", gauges.oldest_dead_seconds),
        );
        scalar(
            out,
            "authback_oldest_pending_seconds",
            Kind::Gauge,
            "Age of the oldest pending delivery (0 when none).",
            format!("{:.3}", gauges.oldest_pending_seconds),
        );
        scalar(
            out,
            "authback_deliveries_in_flight",
            Kind::Gauge,
            "Delivery attempts in flight.",
            gauges.in_flight,
        );
    }

    /// Latencies and the pass-through.
    fn render_timings(&self, out: &mut String) {
        self.ack.render(
            out,
            "authback_ack_duration_seconds",
            "Time from a callback's arrival to its answer.",
            &ACK_BUCKETS,
        );
        self.delivery_latency.render(
            out,
            "authback_delivery_latency_seconds",
            "Time from an authorization's receipt to the backend's 2xx, retries included.",
            &DELIVERY_BUCKETS,
        );
        header(
            out,
            "authback_proxy_requests_total",
            Kind::Counter,
            "Pass-through requests, by response status class.",
        );
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let _ = writeln!(
                out,
                "authback_proxy_requests_total{{status_class=\"{class}\"}} {}",
                self.proxy_by_class[i + 1].load(Ordering::Relaxed)
            );
        }
        scalar(
            out,
            "authback_access_log_dropped_total",
            Kind::Counter,
            "Access log lines dropped, because the writer fell behind or could not write.",
            self.access_log_dropped.load(Ordering::Relaxed),
        );
    }

    /// Certificate reloads, Read Session and order watch.
    fn render_recovery(&self, out: &mut String, gauges: &Gauges) {
        self.tls_reloads.render(
            out,
            "authback_tls_reloads_total",
            "Certificate reloads, by outcome (ok, error).",
            "listener",
            "outcome",
        );
        header(
            out,
            "authback_reconcile_checks_total",
            Kind::Counter,
            "Read Session checks, by outcome.",
        );
        for (outcome, v) in self.reconcile_checks.row("") {
            let _ = writeln!(
                out,
                "authback_reconcile_checks_total{{outcome=\"{outcome}\"}} {v}"
            );
        }
        scalar(
            out,
            "authback_recovered_total",
            Kind::Counter,
            "Authorizations recovered through Read Session.",
            self.recovered.load(Ordering::Relaxed),
        );
        scalar(
            out,
            "authback_registrations_pending",
            Kind::Gauge,
            "Sessions still checked through Read Session.",
            gauges.registrations_pending,
        );
        header(out, "authback_order_watch_total", Kind::Counter, "Order watches that reached an outcome: Klarna confirmed the order, the backend got it once more, no order came in time, the authorization was released (or could not be), or an earlier authorization of a confirmed session was superseded.");
        for outcome in WatchOutcome::ALL {
            let _ = writeln!(
                out,
                "authback_order_watch_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                self.order_watch[outcome as usize].load(Ordering::Relaxed)
            );
        }
        scalar(out, "authback_orders_unconfirmed", Kind::Gauge, "Delivered authorizations with no order placed by order_watch.unconfirmed_after (charged, no order), not resolved.", gauges.unconfirmed);
        header(
            out,
            "authback_deliveries_stored",
            Kind::Gauge,
            "Deliveries the store holds, by state, read from the store (a restart shows them all).",
        );
        for (state, n) in STORED_STATES.iter().zip(gauges.stored) {
            let _ = writeln!(out, "authback_deliveries_stored{{state=\"{state}\"}} {n}");
        }
        scalar(
            out,
            "authback_oldest_unconfirmed_seconds",
            Kind::Gauge,
            "Age (since receipt) of the oldest unconfirmed delivery not resolved (0 when none).",
            format!("{:.3}", gauges.oldest_unconfirmed_seconds),
        );
        self.render_klarna(out);
    }

    /// Requests to Klarna's API: every combination of the three labels.
    fn render_klarna(&self, out: &mut String) {
        const NAME: &str = "authback_klarna_requests_total";
        header(
            out,
            NAME,
            Kind::Counter,
            "Requests to Klarna's API, by operation, purpose and outcome.",
        );
        for operation in KlarnaOperation::ALL {
            for purpose in KlarnaPurpose::ALL {
                for outcome in KlarnaOutcome::ALL {
                    let v = self.klarna_requests[operation as usize][purpose as usize]
                        [outcome as usize]
                        .load(Ordering::Relaxed);
                    let _ = writeln!(
                        out,
                        "{NAME}{{operation=\"{}\",purpose=\"{}\",outcome=\"{}\"}} {v}",
                        operation.as_str(),
                        purpose.as_str(),
                        outcome.as_str()
                    );
                }
            }
        }
    }

    /// The build, the process, readiness.
    fn render_state(&self, out: &mut String, gauges: &Gauges) {
        let _ = writeln!(
            out,
            "# HELP authback_build_info The running build.\n# TYPE authback_build_info gauge\nauthback_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        crate::ops::process::render(out, self.started_at);
        scalar(
            out,
            "authback_ready",
            Kind::Gauge,
            "Whether authback is ready (1) or not (0).",
            u8::from(gauges.ready),
        );
        scalar(
            out,
            "authback_store_up",
            Kind::Gauge,
            "Whether the store can record callbacks (1) or not (0).",
            u8::from(gauges.store_up),
        );
        render_replication(out, &gauges.replication);
    }
}

/// The store's primary, its failovers, and writes its replicas did not
/// acknowledge. The counters exist for every store (at 0 where nothing
/// fails over); the primary's series only once there is one (redis).
fn render_replication(out: &mut String, r: &Figures) {
    scalar(
        out,
        "authback_store_failovers_total",
        Kind::Counter,
        "Times the store's primary changed (a Redis failover) since the process started.",
        r.failovers,
    );
    const ACKS: &str = "authback_store_replica_ack_failures_total";
    header(
        out,
        ACKS,
        Kind::Counter,
        "Writes the primary took that fewer than store.min_replicas_acked replicas acknowledged in time, by operation (claim: the callback was answered 503; outcome: a delivery's outcome).",
    );
    for op in AckOperation::ALL {
        let v = r.ack_failures[op as usize];
        let _ = writeln!(out, "{ACKS}{{operation=\"{}\"}} {v}", op.as_str());
    }
    header(
        out,
        "authback_store_primary_info",
        Kind::Gauge,
        "The Redis primary the store writes to (host:port), always 1; no series for a file or memory store.",
    );
    if let Some(address) = &r.primary {
        let _ = writeln!(
            out,
            "authback_store_primary_info{{address=\"{}\"}} 1",
            escape_label(address)
        );
    }
}

/// A label value as the text format writes it: backslash, double quote and
/// line feed escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Values read at scrape time from their owners.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    pub queue_depth: u64,
    pub dead: u64,
    pub oldest_pending_seconds: f64,
    pub oldest_dead_seconds: f64,
    pub oldest_unconfirmed_seconds: f64,
    pub in_flight: u64,
    pub registrations_pending: u64,
    pub unconfirmed: u64,
    pub ready: bool,
    pub store_up: bool,
    /// The store's primary and failovers (nothing for file and memory).
    pub replication: Figures,
    /// What the store holds, by state: pending, delivered, dead, resolved.
    pub stored: [u64; 4],
}

/// The states `authback_deliveries_stored` reports, in `Gauges::stored`'s order.
const STORED_STATES: [&str; 4] = ["pending", "delivered", "dead", "resolved"];

/// What a Prometheus series is.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// A family's `# HELP` and `# TYPE` lines.
fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A family of one series with no labels.
fn scalar(out: &mut String, name: &str, kind: Kind, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_required_names() {
        let m = Metrics::default();
        m.declare_route("klarna");
        m.callback("klarna", CallbackOutcome::InvalidToken);
        m.ack_duration(Duration::from_micros(700));
        m.proxy_response(502);
        let text = m.render(&Gauges::default());
        for needle in [
            "authback_callbacks_total{route=\"klarna\",outcome=\"accepted\"} 0",
            "authback_callbacks_total{route=\"klarna\",outcome=\"invalid_token\"} 1",
            "authback_deliveries_total{route=\"klarna\",outcome=\"delivered\"} 0",
            "authback_delivery_queue_depth 0",
            "authback_oldest_pending_seconds 0.000",
            "authback_oldest_dead_seconds 0.000",
            "authback_oldest_unconfirmed_seconds 0.000",
            "authback_ack_duration_seconds_bucket{le=\"0.001\"} 1",
            "authback_ack_duration_seconds_bucket{le=\"0.0005\"} 0",
            "authback_ack_duration_seconds_count 1",
            "authback_proxy_requests_total{status_class=\"5xx\"} 1",
            "authback_callbacks_total{route=\"klarna\",outcome=\"unavailable\"} 0",
            "authback_deliveries_total{route=\"klarna\",outcome=\"dead\"} 0",
            "authback_reconcile_checks_total{outcome=\"recovered\"} 0",
            "authback_tls_reloads_total{listener=\"public\",outcome=\"error\"} 0",
            "authback_delivery_latency_seconds_count 0",
            "authback_order_watch_total{outcome=\"unconfirmed\"} 0",
            "authback_store_up 0",
            "authback_build_info{version=\"",
            "\nprocess_start_time_seconds ",
            "\nprocess_resident_memory_bytes ",
            "\nprocess_cpu_seconds_total ",
            "\nprocess_open_fds ",
            "# TYPE process_cpu_seconds_total counter",
            "authback_process_start_time_seconds ",
            "authback_process_resident_memory_bytes ",
            "authback_process_cpu_seconds_total ",
            "authback_process_open_fds ",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn label_values_are_distinct_and_index_in_order() {
        fn distinct(values: &[&str]) {
            let mut seen = values.to_vec();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), values.len(), "{values:?}");
        }
        distinct(&CallbackOutcome::ALL.map(CallbackOutcome::as_str));
        distinct(&DeliveryOutcome::ALL.map(DeliveryOutcome::as_str));
        distinct(&CheckOutcome::ALL.map(CheckOutcome::as_str));
        distinct(&WatchOutcome::ALL.map(WatchOutcome::as_str));
        distinct(&ReloadOutcome::ALL.map(ReloadOutcome::as_str));
        distinct(&KlarnaOperation::ALL.map(KlarnaOperation::as_str));
        distinct(&KlarnaPurpose::ALL.map(KlarnaPurpose::as_str));
        distinct(&KlarnaOutcome::ALL.map(KlarnaOutcome::as_str));
        // `order_watch` and `klarna_requests` are arrays indexed by the
        // variants.
        for (i, o) in WatchOutcome::ALL.into_iter().enumerate() {
            assert_eq!(o as usize, i);
        }
        for (i, o) in KlarnaOperation::ALL.into_iter().enumerate() {
            assert_eq!(o as usize, i);
        }
        for (i, o) in KlarnaPurpose::ALL.into_iter().enumerate() {
            assert_eq!(o as usize, i);
        }
        for (i, o) in KlarnaOutcome::ALL.into_iter().enumerate() {
            assert_eq!(o as usize, i);
        }
    }

    #[test]
    fn every_outcome_is_exported_at_zero_and_counted() {
        let m = Metrics::default();
        m.declare_route("r");
        let text = m.render(&Gauges::default());
        for o in CallbackOutcome::ALL {
            let s = o.as_str();
            assert!(text.contains(&format!(
                "authback_callbacks_total{{route=\"r\",outcome=\"{s}\"}} 0\n"
            )));
        }
        for o in DeliveryOutcome::ALL {
            let s = o.as_str();
            assert!(text.contains(&format!(
                "authback_deliveries_total{{route=\"r\",outcome=\"{s}\"}} 0\n"
            )));
        }
        for o in CheckOutcome::ALL {
            let s = o.as_str();
            assert!(text.contains(&format!(
                "authback_reconcile_checks_total{{outcome=\"{s}\"}} 0\n"
            )));
        }
        for o in WatchOutcome::ALL {
            let s = o.as_str();
            assert!(text.contains(&format!(
                "authback_order_watch_total{{outcome=\"{s}\"}} 0\n"
            )));
        }
        for o in ReloadOutcome::ALL {
            let s = o.as_str();
            assert!(text.contains(&format!(
                "authback_tls_reloads_total{{listener=\"public\",outcome=\"{s}\"}} 0\n"
            )));
        }
        for op in KlarnaOperation::ALL {
            for p in KlarnaPurpose::ALL {
                for o in KlarnaOutcome::ALL {
                    let (op, p, o) = (op.as_str(), p.as_str(), o.as_str());
                    assert!(text.contains(&format!(
                        "authback_klarna_requests_total{{operation=\"{op}\",purpose=\"{p}\",outcome=\"{o}\"}} 0\n"
                    )));
                }
            }
        }
        m.order_watch(WatchOutcome::Redelivered);
        m.klarna_request(
            KlarnaOperation::ReadSession,
            KlarnaPurpose::OrderWatch,
            KlarnaOutcome::Unreachable,
        );
        m.delivery("r", DeliveryOutcome::Retry);
        m.callback("r", CallbackOutcome::Duplicate);
        let text = m.render(&Gauges::default());
        assert!(text.contains("authback_order_watch_total{outcome=\"redelivered\"} 1\n"));
        assert!(text.contains("authback_order_watch_total{outcome=\"confirmed\"} 0\n"));
        assert!(text.contains("authback_klarna_requests_total{operation=\"read_session\",purpose=\"order_watch\",outcome=\"unreachable\"} 1\n"));
        assert!(text.contains("authback_klarna_requests_total{operation=\"read_session\",purpose=\"reconcile\",outcome=\"unreachable\"} 0\n"));
        assert!(text.contains("authback_deliveries_total{route=\"r\",outcome=\"retry\"} 1\n"));
        assert_eq!(m.callbacks("r", CallbackOutcome::Duplicate), 1);
    }

    #[test]
    fn the_store_primary_has_a_series_only_where_there_is_one() {
        let m = Metrics::default();
        let text = m.render(&Gauges::default());
        assert!(
            text.contains("\nauthback_store_failovers_total 0\n"),
            "{text}"
        );
        for op in AckOperation::ALL {
            let op = op.as_str();
            assert!(text.contains(&format!(
                "\nauthback_store_replica_ack_failures_total{{operation=\"{op}\"}} 0\n"
            )));
        }
        assert!(text.contains("# TYPE authback_store_primary_info gauge\n"));
        assert!(!text.contains("\nauthback_store_primary_info{"), "{text}");

        let g = Gauges {
            replication: Figures {
                failovers: 2,
                ack_failures: [0, 3],
                primary: Some("redis-b.shop.svc:6379".into()),
            },
            ..Gauges::default()
        };
        let text = m.render(&g);
        assert!(text.contains("\nauthback_store_failovers_total 2\n"));
        assert!(
            text.contains("\nauthback_store_replica_ack_failures_total{operation=\"outcome\"} 3\n")
        );
        assert!(
            text.contains("\nauthback_store_primary_info{address=\"redis-b.shop.svc:6379\"} 1\n")
        );
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
