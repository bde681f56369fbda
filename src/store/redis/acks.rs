//! Waiting for the replicas (`store.min_replicas_acked`): after a write a
//! 2xx depends on, `WAIT n timeout` until `n` replicas have it.
//!
//! `WAIT` counts the writes of the connection it runs on, and blocks that
//! connection while it waits. So the writes that need it run on a
//! connection of their own (the ack lane), and one task sends the `WAIT`s
//! there: every caller whose write was answered before a `WAIT` was sent
//! shares that `WAIT`'s answer, and callers arriving meanwhile share the
//! next one, instead of each queueing a `WAIT` of its own behind the
//! others. A write that changed nothing (a duplicate claim: the record was
//! written before, maybe by another replica) asks for a marker write first,
//! so the `WAIT` covers everything the primary held when it ran, the record
//! included. (Redis 7.0 already counts, after any command, everything the
//! primary held when it ran; Redis documents only the connection's own
//! writes, and the marker makes that rule enough.) A caller whose write went
//! over another connection than the
//! one the `WAIT` runs on (the lane reconnected: a failover, maybe) is
//! refused: nothing says where its write went.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::link::Link;

/// One caller waiting for the replicas.
struct Waiter {
    /// The lane connection its write went over.
    generation: u64,
    /// Its write may have changed nothing.
    marker: bool,
    answer: oneshot::Sender<Result<(), String>>,
}

/// The shared `WAIT`s of one ack lane.
pub(crate) struct Acks {
    waiters: Option<mpsc::UnboundedSender<Waiter>>,
    task: Option<tokio::task::AbortHandle>,
}

impl Drop for Acks {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl Acks {
    /// Waits for `needed` replicas (none: nothing waits) for up to
    /// `timeout`, on `lane`; `marker` is the key the marker writes set.
    pub(crate) fn start(lane: Link, needed: u32, timeout: Duration, marker: String) -> Self {
        if needed == 0 {
            return Acks {
                waiters: None,
                task: None,
            };
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(serve(lane, needed, timeout, marker, rx)).abort_handle();
        Acks {
            waiters: Some(tx),
            task: Some(task),
        }
    }

    /// Waits until the replicas acknowledged a write answered on lane
    /// connection `generation`; `marker` when the write may have changed
    /// nothing. The error says why they did not.
    pub(crate) async fn confirm(&self, generation: u64, marker: bool) -> Result<(), String> {
        let Some(waiters) = &self.waiters else {
            return Ok(());
        };
        let (answer, answered) = oneshot::channel();
        waiters
            .send(Waiter {
                generation,
                marker,
                answer,
            })
            .map_err(|_| "the replicas' acknowledgement is no longer awaited".to_string())?;
        answered
            .await
            .unwrap_or_else(|_| Err("the replicas' acknowledgement is no longer awaited".into()))
    }
}

/// Sends one `WAIT` for every batch of waiters, until the store goes.
async fn serve(
    lane: Link,
    needed: u32,
    timeout: Duration,
    marker: String,
    mut waiters: mpsc::UnboundedReceiver<Waiter>,
) {
    // WAIT 0 would wait for ever: at least 1 ms.
    let ms = u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    while let Some(first) = waiters.recv().await {
        let mut batch = vec![first];
        while let Ok(w) = waiters.try_recv() {
            batch.push(w);
        }
        let Some(mut conn) = lane.connected() else {
            for w in batch {
                let _ = w.answer.send(Err(
                    "the connection to Redis was lost before the replicas acknowledged".into(),
                ));
            }
            continue;
        };
        let (ours, lost): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|w| w.generation == conn.generation);
        for w in lost {
            let _ = w.answer.send(Err(
                "the connection to Redis changed before the replicas acknowledged".into(),
            ));
        }
        if ours.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        if ours.iter().any(|w| w.marker) {
            pipe.cmd("SET")
                .arg(&marker)
                .arg(crate::types::unix_ms())
                .arg("PX")
                .arg(60_000)
                .ignore();
        }
        pipe.cmd("WAIT").arg(needed).arg(ms);
        let r: redis::RedisResult<(i64,)> = pipe.query_async(&mut conn).await;
        let result = match r {
            Ok((n,)) if n >= i64::from(needed) => Ok(()),
            Ok((n,)) => Err(format!(
                "{n} of {needed} replicas acknowledged within {}",
                crate::text::format_duration(timeout)
            )),
            Err(e) => Err(format!("redis: {e}")),
        };
        for w in ours {
            let _ = w.answer.send(result.clone());
        }
    }
}
