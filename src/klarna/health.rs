//! Whether Klarna's API works, as the requests of every purpose (Read
//! Session recovery, order watch) find it together. Klarna failing is one
//! problem however many sessions are checked, so it is logged as one: a
//! warning at the first failure of each kind, one when Klarna answers
//! again, and nothing per request in between (the metric counts those).
//!
//! Requests run concurrently (up to 8 in flight), and they end in another
//! order than they began: a check that started before Klarna went down can
//! succeed after one that started later has failed, and a timeout can end
//! long after Klarna answers again. So each request takes a [`Ticket`]
//! when it starts, and only the newest request decides whether Klarna is
//! failing or answering. An older one that ends later is stale news: it
//! can add to a failure already known, never start one or end one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::ops::metrics::{KlarnaOperation, KlarnaOutcome, KlarnaPurpose};

/// When a request started, among all requests to Klarna.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ticket(u64);

#[derive(Default)]
pub(crate) struct Health {
    issued: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The newest request applied: older ones cannot change the state.
    newest: u64,
    failing: Option<Failing>,
}

/// Klarna has failed since `since` (unix ms), with no answer in between.
struct Failing {
    since: u64,
    failures: u64,
    /// The kinds of failure logged so far: each is logged once.
    logged: Vec<KlarnaOutcome>,
}

/// What a request's outcome changed, if it is worth a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    None,
    /// The first failure of `kind` since Klarna last answered; `since` is
    /// when the first failure of any kind came.
    Failing {
        kind: KlarnaOutcome,
        since: u64,
    },
    /// Klarna answers again after `failures` failed requests since `since`.
    Recovered {
        since: u64,
        failures: u64,
    },
}

impl Health {
    /// A request is about to start.
    pub(crate) fn begin(&self) -> Ticket {
        Ticket(self.issued.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// The request that started with `ticket` ended in `outcome` at `now`
    /// (unix ms).
    pub(crate) fn observe(&self, ticket: Ticket, outcome: KlarnaOutcome, now: u64) -> Change {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let newest = ticket.0 > s.newest;
        if newest {
            s.newest = ticket.0;
        }
        match (outcome.is_answer(), s.failing.as_mut()) {
            (true, Some(f)) if newest => {
                let change = Change::Recovered {
                    since: f.since,
                    failures: f.failures,
                };
                s.failing = None;
                change
            }
            (false, None) if newest => {
                s.failing = Some(Failing {
                    since: now,
                    failures: 1,
                    logged: vec![outcome],
                });
                Change::Failing {
                    kind: outcome,
                    since: now,
                }
            }
            (false, Some(f)) => {
                f.failures += 1;
                if f.logged.contains(&outcome) {
                    return Change::None;
                }
                f.logged.push(outcome);
                Change::Failing {
                    kind: outcome,
                    since: f.since,
                }
            }
            _ => Change::None,
        }
    }
}

/// Logs `change`, which a request of `operation` for `purpose` caused;
/// `error` is what the request failed with.
pub(crate) fn log(
    change: Change,
    operation: KlarnaOperation,
    purpose: KlarnaPurpose,
    error: Option<&dyn std::fmt::Display>,
) {
    let (operation, purpose) = (operation.as_str(), purpose.as_str());
    match change {
        Change::None => {}
        Change::Failing { kind, since } => {
            let error = error.map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(
                outcome = kind.as_str(),
                operation,
                purpose,
                %error,
                since = %crate::text::rfc3339(since / 1000),
                "Klarna failing"
            );
        }
        Change::Recovered { since, failures } => {
            tracing::warn!(
                operation,
                purpose,
                failures,
                since = %crate::text::rfc3339(since / 1000),
                "Klarna reachable again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KlarnaOutcome::*;

    #[test]
    fn one_change_at_the_first_failure_of_each_kind_and_one_at_recovery() {
        let h = Health::default();
        let seen = |o, now| h.observe(h.begin(), o, now);
        assert_eq!(seen(Ok, 1), Change::None);
        assert_eq!(
            seen(Unreachable, 10),
            Change::Failing {
                kind: Unreachable,
                since: 10
            }
        );
        assert_eq!(seen(Unreachable, 20), Change::None);
        assert_eq!(
            seen(ServerError, 30),
            Change::Failing {
                kind: ServerError,
                since: 10
            }
        );
        assert_eq!(seen(Unreachable, 40), Change::None);
        assert_eq!(seen(ServerError, 50), Change::None);
        assert_eq!(
            seen(NotFound, 60),
            Change::Recovered {
                since: 10,
                failures: 5
            }
        );
        assert_eq!(seen(Ok, 70), Change::None);
        // A new episode logs its kinds again.
        assert_eq!(
            seen(Unauthorized, 80),
            Change::Failing {
                kind: Unauthorized,
                since: 80
            }
        );
    }

    #[test]
    fn a_request_older_than_the_newest_one_cannot_start_or_end_a_failure() {
        let h = Health::default();
        // Three checks in flight; Klarna goes down after the first began.
        let (a, b, c) = (h.begin(), h.begin(), h.begin());
        assert_eq!(
            h.observe(c, Unreachable, 10),
            Change::Failing {
                kind: Unreachable,
                since: 10
            }
        );
        // `a` was answered before the outage, but ends after `c`: no recovery.
        assert_eq!(h.observe(a, Ok, 11), Change::None);
        // A stale failure of a new kind still tells of the outage, once.
        assert_eq!(
            h.observe(b, ServerError, 12),
            Change::Failing {
                kind: ServerError,
                since: 10
            }
        );
        // Klarna answers a check that began after `c`.
        let (d, e) = (h.begin(), h.begin());
        assert_eq!(
            h.observe(e, Ok, 20),
            Change::Recovered {
                since: 10,
                failures: 2
            }
        );
        // `d` timed out, but `e`, which began later, was answered: Klarna
        // works, and no second outage is logged.
        assert_eq!(h.observe(d, Unreachable, 30), Change::None);
        assert_eq!(h.observe(h.begin(), Ok, 40), Change::None);
    }

    #[test]
    fn concurrent_failures_log_one_change() {
        let h = std::sync::Arc::new(Health::default());
        let tickets: Vec<Ticket> = (0..64).map(|_| h.begin()).collect();
        let changes: Vec<Change> = std::thread::scope(|s| {
            let handles: Vec<_> = tickets
                .into_iter()
                .map(|t| {
                    let h = h.clone();
                    s.spawn(move || h.observe(t, Unreachable, 5))
                })
                .collect();
            handles
                .into_iter()
                .map(|j| j.join().expect("thread"))
                .collect()
        });
        let logged = changes.iter().filter(|c| **c != Change::None).count();
        assert_eq!(logged, 1, "{changes:?}");
    }
}
