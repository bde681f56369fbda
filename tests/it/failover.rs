//! Several replicas with no single point of loss: the failover drill
//! (`common/failover.rs`) in its short form. With one replica acknowledging
//! each callback before its 2xx, two failovers lose nothing acknowledged;
//! without, the callbacks acknowledged while the replica lagged are lost
//! with the old primary. The longer drill and its figures:
//! `cargo bench --bench failover`.

use std::time::Duration;

use crate::common::*;

fn drill(min_replicas_acked: u32, failovers: usize) -> Drill {
    Drill {
        min_replicas_acked,
        failovers,
        senders: 4,
        held: Duration::from_millis(800),
        steady: 20,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_replica_acknowledging_each_callback_two_failovers_lose_nothing_acknowledged() {
    let f = drill(1, 2).run().await;
    eprintln!("min_replicas_acked = 1: {f}");
    assert_eq!(f.failovers, 2);
    assert_eq!(f.failovers_counted, 2, "each authback followed both");
    assert!(
        f.lost.is_empty(),
        "acknowledged, never delivered: {:?}",
        f.lost
    );
    assert!(
        f.ack_failures_claim > 0.0,
        "callbacks the held replica did not acknowledge were refused"
    );
    assert!(f.acknowledged > 40, "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replica_acknowledgement_callbacks_acknowledged_during_the_lag_are_lost() {
    let f = drill(0, 1).run().await;
    eprintln!("min_replicas_acked = 0: {f}");
    assert_eq!(f.failovers_counted, 1);
    assert!(
        !f.lost.is_empty(),
        "2xx answered while only the killed primary had them: {f}"
    );
    assert_eq!(f.ack_failures_claim + f.ack_failures_outcome, 0.0);
}
