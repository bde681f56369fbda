//! What a store with a server behind it knows about that server's
//! replication: which address is the primary it writes to, how often the
//! primary changed (a failover), and writes the primary took that its
//! replicas did not acknowledge. The admin API reads it at scrape time.
//!
//! Only the redis store has one. With a single `store.url` the primary is
//! that URL's host and port for the life of the process, and nothing here
//! ever counts; a store that follows failovers counts them here. An address
//! never carries the URL's credentials.

use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::labels::label_values;

label_values! {
    /// The `operation` of `authback_store_replica_ack_failures_total`: which
    /// write the replicas did not acknowledge.
    AckOperation {
        /// Recording a callback (the claim and its delivery, one step).
        Claim => "claim",
        /// Recording what a delivery attempt ended in.
        Outcome => "outcome",
    }
}

/// The counts and the primary, as one reading.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Figures {
    pub failovers: u64,
    /// Indexed by `AckOperation`.
    pub ack_failures: [u64; AckOperation::ALL.len()],
    /// `host:port` (or a socket path) of the primary, when known.
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
    /// Writing to `primary`, with nothing counted yet.
    pub(crate) fn with_primary(primary: String) -> Self {
        Replication {
            primary: Mutex::new(Some(primary)),
            ..Replication::default()
        }
    }

    /// The primary moved to `to`: one failover.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "no store follows failovers yet")
    )]
    pub(crate) fn failed_over(&self, to: String) {
        *self.primary.lock().unwrap_or_else(|p| p.into_inner()) = Some(to);
        self.failovers.fetch_add(1, Ordering::Relaxed);
    }

    /// A write of `operation` the primary took and its replicas did not
    /// acknowledge.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "no store waits for its replicas yet")
    )]
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

/// The address a Redis connection goes to, as `host:port` (an IPv6 host in
/// brackets), or the socket's path: never the URL's user or password, which
/// `ConnectionAddr` does not hold.
pub(crate) fn redis_address(addr: &redis::ConnectionAddr) -> String {
    let host_port = |host: &str, port: u16| match host.parse::<Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]:{port}"),
        Err(_) => format!("{host}:{port}"),
    };
    match addr {
        redis::ConnectionAddr::Tcp(host, port) => host_port(host, *port),
        redis::ConnectionAddr::TcpTls { host, port, .. } => host_port(host, *port),
        redis::ConnectionAddr::Unix(path) => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::IntoConnectionInfo;

    fn address(url: &str) -> String {
        redis_address(&url.into_connection_info().expect("a redis URL").addr)
    }

    #[test]
    fn the_address_is_host_and_port_without_credentials() {
        assert_eq!(
            address("redis://:hunter2-secret@redis.shop.svc:6380/0"),
            "redis.shop.svc:6380"
        );
        assert_eq!(
            address("redis://authback:hunter2-secret@10.0.0.7/3"),
            "10.0.0.7:6379"
        );
        assert_eq!(address("redis://[::1]:7000"), "[::1]:7000");
        assert_eq!(
            address("redis+unix:///run/redis/redis.sock?pass=hunter2-secret"),
            "/run/redis/redis.sock"
        );
        for url in [
            "redis://:hunter2-secret@redis.shop.svc:6380/0",
            "redis+unix:///run/redis.sock?pass=hunter2-secret",
        ] {
            assert!(!address(url).contains("hunter2"), "{url}");
        }
    }

    #[test]
    fn failovers_move_the_primary_and_count() {
        let r = Replication::with_primary("a:6379".into());
        assert_eq!(
            r.figures(),
            Figures {
                primary: Some("a:6379".into()),
                ..Figures::default()
            }
        );
        r.failed_over("b:6379".into());
        r.ack_failure(AckOperation::Outcome);
        r.ack_failure(AckOperation::Outcome);
        let f = r.figures();
        assert_eq!(f.primary.as_deref(), Some("b:6379"));
        assert_eq!(f.failovers, 1);
        assert_eq!(f.ack_failures[AckOperation::Claim as usize], 0);
        assert_eq!(f.ack_failures[AckOperation::Outcome as usize], 2);
    }

    #[test]
    fn operations_are_distinct_and_index_in_order() {
        for (i, op) in AckOperation::ALL.into_iter().enumerate() {
            assert_eq!(op as usize, i);
        }
        assert_ne!(AckOperation::Claim.as_str(), AckOperation::Outcome.as_str());
    }
}
