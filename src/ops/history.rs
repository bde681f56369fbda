//! The last hour of a few numbers, kept in memory for the console's charts:
//! one sample every 10 s of the ack rate (from the callbacks counter) and
//! the queue (from the store's stats). It is per process and lost on restart;
//! Prometheus stays the record. Sampling never touches the callback path.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::ops::metrics::{CallbackOutcome, Metrics};
use crate::ops::shutdown::Stop;
use crate::store::{Stats, Store};
use crate::text::rfc3339;
use crate::types::unix_ms;

/// How often a sample is taken.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);
/// How many samples are kept: 60 minutes of them.
pub(crate) const KEEP: usize = 360;

/// The callback outcomes that answered Klarna 2xx: an ack.
const ACKED: [CallbackOutcome; 2] = [CallbackOutcome::Accepted, CallbackOutcome::Duplicate];

/// One sample. Store-derived fields are `None` when the store could not
/// answer; the chart shows a gap rather than a false zero.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Point {
    pub at: String,
    pub acks_per_min: f64,
    pub pending: Option<u64>,
    pub oldest_pending_s: Option<u64>,
    pub dead: Option<u64>,
    pub unconfirmed: Option<u64>,
}

/// A cheap handle to the shared ring.
#[derive(Clone, Default)]
pub(crate) struct History(Arc<Mutex<Ring>>);

#[derive(Default)]
struct Ring {
    points: VecDeque<Point>,
    /// The acks total and the time (ms) of the previous sample.
    last: Option<(u64, u64)>,
}

impl History {
    /// Records one sample taken at `at_ms`, with `acks` the callbacks
    /// counter's acked total so far.
    pub(crate) fn record(&self, at_ms: u64, acks: u64, stats: Option<&Stats>) {
        let mut ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let acks_per_min = match ring.last {
            Some((before, then)) if at_ms > then => {
                let per_min = acks.saturating_sub(before) as f64 * 60_000.0 / (at_ms - then) as f64;
                (per_min * 10.0).round() / 10.0
            }
            _ => 0.0,
        };
        ring.last = Some((acks, at_ms));
        ring.points.push_back(Point {
            at: rfc3339(at_ms / 1000),
            acks_per_min,
            pending: stats.map(|s| s.pending),
            oldest_pending_s: stats.map(|s| {
                s.oldest_pending_at
                    .map_or(0, |t| at_ms.saturating_sub(t) / 1000)
            }),
            dead: stats.map(|s| s.dead),
            unconfirmed: stats.map(|s| s.unconfirmed),
        });
        while ring.points.len() > KEEP {
            ring.points.pop_front();
        }
    }

    /// The samples, oldest first.
    pub(crate) fn points(&self) -> Vec<Point> {
        let ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        ring.points.iter().cloned().collect()
    }

    /// The body of `GET /v1/stats/history`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "interval_s": INTERVAL.as_secs(),
            "points": self.points(),
        })
    }
}

/// Samples every `INTERVAL` until `stop`: the first at once, so the console
/// has a point to show as soon as authback serves.
pub(crate) fn spawn_sampler(
    history: History,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    routes: Vec<String>,
    stop: Stop,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait() => return,
            }
            let acks = routes
                .iter()
                .flat_map(|r| ACKED.iter().map(|o| metrics.callbacks(r, *o)))
                .sum();
            let stats = match store.stats().await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::debug!(error = %e, "history: store stats unavailable");
                    None
                }
            };
            history.record(unix_ms(), acks, stats.as_ref());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(pending: u64, oldest: Option<u64>) -> Stats {
        Stats {
            pending,
            dead: 2,
            unconfirmed: 1,
            oldest_pending_at: oldest,
            ..Stats::default()
        }
    }

    #[test]
    fn the_ack_rate_is_the_delta_per_minute() {
        let h = History::default();
        h.record(1_000_000, 5, Some(&stats(0, None)));
        h.record(1_010_000, 15, Some(&stats(3, Some(1_004_000))));
        let p = h.points();
        assert_eq!(p[0].acks_per_min, 0.0, "no previous sample");
        assert_eq!(p[1].acks_per_min, 60.0, "10 acks in 10 s");
        assert_eq!(p[1].pending, Some(3));
        assert_eq!(p[1].oldest_pending_s, Some(6));
        assert_eq!(p[0].oldest_pending_s, Some(0));
        assert_eq!((p[1].dead, p[1].unconfirmed), (Some(2), Some(1)));
    }

    #[test]
    fn a_store_error_leaves_a_gap_and_the_ring_keeps_an_hour() {
        let h = History::default();
        h.record(0, 0, None);
        assert_eq!(h.points()[0].pending, None);
        for i in 1..=(KEEP as u64 + 5) {
            h.record(i * 10_000, i, Some(&stats(1, None)));
        }
        let p = h.points();
        assert_eq!(p.len(), KEEP);
        assert_eq!(p.last().map(|p| p.acks_per_min), Some(6.0));
        let json = h.to_json();
        assert_eq!(json["interval_s"], 10);
        assert_eq!(json["points"].as_array().map(Vec::len), Some(KEEP));
    }
}
