//! What a store with a server behind it knows about that server's
//! replication: which address is the primary it writes to, how often the
//! primary changed (a failover), and writes the primary took that its
//! replicas did not acknowledge in time. The admin API reads it at scrape
//! time.
//!
//! Only the redis store has one. An address is `host:port` (or a socket's
//! path), never a URL's credentials.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The `operation` of `authback_store_replica_ack_failures_total`: which
/// write the replicas did not acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckOperation {
    /// Recording a callback (the claim and its delivery, one step): the
    /// callback was answered 503.
    Claim,
    /// Recording what a delivery attempt ended in, after the backend
    /// answered: counted, nothing else can be done.
    Outcome,
}

impl AckOperation {
    /// Every value, each exported at zero from the start.
    pub(crate) const ALL: [AckOperation; 2] = [AckOperation::Claim, AckOperation::Outcome];

    /// The label value.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            AckOperation::Claim => "claim",
            AckOperation::Outcome => "outcome",
        }
    }
}

/// The counts and the primary, as one reading.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Figures {
    pub failovers: u64,
    /// Indexed by `AckOperation`.
    pub ack_failures: [u64; AckOperation::ALL.len()],
    /// `host:port` (or a socket path) of the primary, once reached.
    pub primary: Option<String>,
}

/// The live counts and primary of one store. `pub` because the `Store`
/// trait names it; its methods are the crate's.
#[derive(Debug, Default)]
pub struct Replication {
    failovers: AtomicU64,
    ack_failures: [AtomicU64; AckOperation::ALL.len()],
    primary: Mutex<Option<String>>,
}

impl Replication {
    /// A connection reached the primary at `address`. The first one is
    /// where the store starts; any other than the last is a failover,
    /// counted, and returned with the address it replaces.
    pub(crate) fn reached(&self, address: &str) -> Option<String> {
        let mut primary = self.primary.lock().unwrap_or_else(|p| p.into_inner());
        match primary.as_deref() {
            Some(known) if known == address => None,
            None => {
                *primary = Some(address.to_string());
                None
            }
            Some(_) => {
                self.failovers.fetch_add(1, Ordering::Relaxed);
                primary.replace(address.to_string())
            }
        }
    }

    /// A write of `operation` the primary took and its replicas did not
    /// acknowledge in time.
    pub(crate) fn ack_failure(&self, operation: AckOperation) {
        self.ack_failures[operation as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn figures(&self) -> Figures {
        Figures {
            failovers: self.failovers.load(Ordering::Relaxed),
            ack_failures: std::array::from_fn(|i| self.ack_failures[i].load(Ordering::Relaxed)),
            primary: self
                .primary
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_primary_is_no_failover_and_each_change_is_one() {
        let r = Replication::default();
        assert_eq!(r.figures(), Figures::default());
        assert_eq!(r.reached("10.0.0.1:6379"), None);
        assert_eq!(r.reached("10.0.0.1:6379"), None, "the same one again");
        assert_eq!(r.figures().failovers, 0);
        assert_eq!(r.reached("10.0.0.2:6379").as_deref(), Some("10.0.0.1:6379"));
        assert_eq!(r.reached("10.0.0.2:6379"), None);
        assert_eq!(r.reached("10.0.0.1:6379").as_deref(), Some("10.0.0.2:6379"));
        let f = r.figures();
        assert_eq!(f.failovers, 2);
        assert_eq!(f.primary.as_deref(), Some("10.0.0.1:6379"));
    }

    #[test]
    fn ack_failures_count_by_operation() {
        let r = Replication::default();
        r.ack_failure(AckOperation::Outcome);
        r.ack_failure(AckOperation::Outcome);
        r.ack_failure(AckOperation::Claim);
        let f = r.figures();
        assert_eq!(f.ack_failures[AckOperation::Claim as usize], 1);
        assert_eq!(f.ack_failures[AckOperation::Outcome as usize], 2);
        for (i, op) in AckOperation::ALL.into_iter().enumerate() {
            assert_eq!(op as usize, i);
        }
    }
}
