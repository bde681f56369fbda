//! A connection to the Redis primary that heals itself: dialled when first
//! needed, dropped when it fails in a way that says the server is gone or
//! no longer the primary (I/O, a timeout, `READONLY`, `MASTERDOWN`,
//! `LOADING`), and dialled again on the next use, through the sentinels
//! when there are some, so a failover is followed without a restart.
//!
//! Dials are one at a time and back off (100 ms doubling to 2 s, with
//! jitter): while one is not due, a request fails at once with the last
//! reason, and the store answers 503 instead of waiting. Each connection
//! has a generation, so a caller can tell whether two requests went over
//! the same connection (the replicas' acknowledgement depends on it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, ErrorKind, RedisError, RedisFuture, RedisResult, Value};

use super::dial::{Dialed, Dialer};
use crate::store::replication::Replication;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A self-healing connection to the primary. Clones share it.
#[derive(Clone)]
pub(crate) struct Link(Arc<Inner>);

struct Inner {
    dialer: Arc<Dialer>,
    replication: Arc<Replication>,
    /// Each answer's limit on this link's connections.
    response: Duration,
    current: Mutex<Option<Current>>,
    dialing: tokio::sync::Mutex<Backoff>,
}

struct Current {
    conn: MultiplexedConnection,
    generation: u64,
    driver: tokio::task::AbortHandle,
}

impl Drop for Current {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[derive(Default)]
struct Backoff {
    /// Generations handed out so far.
    generations: u64,
    next_at: Option<Instant>,
    wait: Duration,
    last_error: String,
}

/// Whether an error says this connection is useless now: the server is
/// gone, silent, or no longer the primary.
fn connection_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.kind() == ErrorKind::ReadOnly
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}

impl Link {
    pub(crate) fn new(
        dialer: Arc<Dialer>,
        replication: Arc<Replication>,
        response: Duration,
    ) -> Self {
        Link(Arc::new(Inner {
            dialer,
            replication,
            response,
            current: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(Backoff::default()),
        }))
    }

    fn now_current(&self) -> Option<Pinned> {
        let current = self.0.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map(|c| Pinned {
            link: self.clone(),
            conn: c.conn.clone(),
            generation: c.generation,
        })
    }

    /// The connection of the moment, without dialling one.
    pub(crate) fn connected(&self) -> Option<Pinned> {
        self.now_current()
    }

    /// The connection of the moment, dialled if there is none and a dial is
    /// due; else the reason there is none.
    pub(crate) async fn pinned(&self) -> RedisResult<Pinned> {
        if let Some(p) = self.now_current() {
            return Ok(p);
        }
        let mut backoff = self.0.dialing.lock().await;
        // Another caller may have dialled while this one waited.
        if let Some(p) = self.now_current() {
            return Ok(p);
        }
        let now = Instant::now();
        if backoff.next_at.is_some_and(|at| now < at) {
            return Err(RedisError::from((
                ErrorKind::IoError,
                "Redis unreachable; reconnecting",
                backoff.last_error.clone(),
            )));
        }
        match self.0.dialer.primary(self.0.response).await {
            Ok(Dialed { conn, addr, driver }) => {
                backoff.generations += 1;
                backoff.next_at = None;
                backoff.wait = Duration::ZERO;
                let address = addr.to_string();
                if let Some(previous) = self.0.replication.reached(&address) {
                    tracing::warn!(primary = %address, %previous, "redis primary changed: following the failover");
                }
                let generation = backoff.generations;
                *self.0.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Current {
                    conn: conn.clone(),
                    generation,
                    driver,
                });
                Ok(Pinned {
                    link: self.clone(),
                    conn,
                    generation,
                })
            }
            Err(e) => {
                backoff.wait = (backoff.wait * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                // Full jitter's upper half: never hammering, never idle long.
                let wait = backoff.wait.mul_f64(0.5 + fastrand::f64() / 2.0);
                backoff.next_at = Some(now + wait);
                backoff.last_error = e.to_string();
                Err(e)
            }
        }
    }

    /// `e` happened on generation `generation`: if it says the connection
    /// is lost, the next use dials again.
    pub(crate) fn failed(&self, generation: u64, e: &RedisError) {
        if !connection_lost(e) {
            return;
        }
        let mut current = self.0.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            tracing::debug!(error = %e, "redis connection dropped; the next request reconnects");
            *current = None;
        }
    }
}

/// One connection of a link, as it was when taken: requests over it mark
/// the link for a new dial when they fail for good.
pub(crate) struct Pinned {
    link: Link,
    conn: MultiplexedConnection,
    pub generation: u64,
}

impl ConnectionLike for Pinned {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.conn.req_packed_command(cmd).await;
            if let Err(e) = &r {
                self.link.failed(self.generation, e);
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self.conn.req_packed_commands(cmd, offset, count).await;
            if let Err(e) = &r {
                self.link.failed(self.generation, e);
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.link.0.dialer.db()
    }
}

/// A link used as a connection: each request goes over the connection of
/// the moment, dialled if needed.
impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { self.pinned().await?.req_packed_command(cmd).await })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.pinned()
                .await?
                .req_packed_commands(cmd, offset, count)
                .await
        })
    }

    fn get_db(&self) -> i64 {
        self.0.dialer.db()
    }
}
