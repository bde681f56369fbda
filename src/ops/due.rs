//! The one loop for due work. Deliveries, Read Session checks and order
//! watches all wait in the store until they are due (`store::queue`); this
//! loop takes what is due under a lease, runs each item as its own task
//! within a cap, and sleeps until the next item is due, new work rings the
//! doorbell, or a running item frees a slot. On stop it lets running items
//! end within the grace and, where asked (a store that does not survive the
//! process), keeps working through what is queued until the grace ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::ops::shutdown::Stop;
use crate::store::queue::Work;
use crate::store::{BoxFuture, Queue, Store, StoreError};
use crate::types::unix_ms;

/// The work on one item, ready to run.
pub(crate) type Job = BoxFuture<'static, ()>;

/// The longest the loop sleeps without looking at the store.
const LONGEST_SLEEP: Duration = Duration::from_secs(60);
/// How soon the loop looks again after the store could not be read.
const AFTER_AN_ERROR: Duration = Duration::from_secs(1);
/// The shortest sleep when something seems due yet nothing could be taken,
/// so that a queue answering so cannot spin the loop.
const SHORTEST_SLEEP: Duration = Duration::from_millis(5);
/// How often the loop looks while draining.
const WHILE_DRAINING: Duration = Duration::from_millis(20);
/// What running items get at least after stop, however little grace is left.
const LAST_WAIT: Duration = Duration::from_millis(100);

/// One kind of work as the loop sees it.
pub(crate) trait Lane: Send + Sync {
    /// Leases up to `limit` due items and starts the work on each; an item
    /// the work declines (it is running here already) is left out.
    fn take(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Job>, StoreError>>;
    fn next_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>>;
    /// What the log says when the queue cannot be read.
    fn unreadable(&self) -> &'static str;
}

/// A lane over the store's queue of `W`: `start` turns each item taken into
/// its job, or declines it.
pub(crate) fn lane<W: Work>(
    store: Arc<dyn Store>,
    queue: fn(&dyn Store) -> &dyn Queue<W>,
    unreadable: &'static str,
    start: impl Fn(W::Item) -> Option<Job> + Send + Sync + 'static,
) -> Box<dyn Lane> {
    Box::new(Typed {
        store,
        queue,
        unreadable,
        start,
    })
}

struct Typed<W: Work, F> {
    store: Arc<dyn Store>,
    queue: fn(&dyn Store) -> &dyn Queue<W>,
    unreadable: &'static str,
    start: F,
}

impl<W: Work, F> Lane for Typed<W, F>
where
    F: Fn(W::Item) -> Option<Job> + Send + Sync + 'static,
{
    fn take(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Job>, StoreError>> {
        Box::pin(async move {
            let items = (self.queue)(&*self.store).take(now, limit).await?;
            Ok(items.into_iter().filter_map(&self.start).collect())
        })
    }

    fn next_at(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        (self.queue)(&*self.store).next_at()
    }

    fn unreadable(&self) -> &'static str {
        self.unreadable
    }
}

/// After stop, keep taking work while some is queued, until the grace ends.
pub(crate) struct Drain {
    /// How much work is still queued.
    pub queued: Box<dyn Fn() -> BoxFuture<'static, u64> + Send + Sync>,
    /// Logged, with the count, when the grace ends with work still queued.
    pub lost: &'static str,
}

/// One loop, and what it drives.
pub(crate) struct DueLoop {
    pub lanes: Vec<Box<dyn Lane>>,
    /// Items running at once, across all lanes.
    pub cap: usize,
    /// Rung when new work is queued.
    pub wake: Arc<Notify>,
    /// How often to look even when not woken: for a store shared with
    /// other processes, whose additions nobody here announces.
    pub poll: Option<Duration>,
    /// When shutdown began: the grace runs from there.
    pub began: Box<dyn Fn() -> Option<Instant> + Send + Sync>,
    pub grace: Duration,
    pub drain: Option<Drain>,
    /// Logged, with the count, when the grace ends with items running.
    pub overrun: Option<&'static str>,
}

/// A running item's hold on its slot; dropped when its task ends, even by
/// a panic.
struct Slot {
    _permit: OwnedSemaphorePermit,
    freed: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.freed.notify_one();
    }
}

/// Runs until `stop`, then as `drain` says, then lets running items end
/// within the grace.
pub(crate) async fn run(spec: DueLoop, stop: Stop) {
    let permits = Arc::new(Semaphore::new(spec.cap));
    // An item that ends wakes the loop here, not through `wake`: while every
    // slot is busy new work needs no wake-up (it would find no slot), so a
    // flood of new work against a stuck upstream costs no thread switch.
    let freed = Arc::new(Notify::new());
    let mut until: Option<Instant> = None;
    loop {
        if stop.is_stopped() && until.is_none() {
            until = Some((spec.began)().unwrap_or_else(Instant::now) + spec.grace);
        }
        if let Some(until) = until {
            let queued = match &spec.drain {
                Some(d) => (d.queued)().await,
                None => 0,
            };
            if queued == 0 || Instant::now() >= until {
                if let (Some(d), true) = (&spec.drain, queued > 0) {
                    tracing::error!(pending = queued, "{}", d.lost);
                }
                break;
            }
        }
        let (took, unreadable) = take(&spec, &permits, &freed).await;
        // Sleep until the next item is due, new work arrives, an item frees
        // a slot, or we are told to stop.
        let wait = if permits.available_permits() == 0 {
            LONGEST_SLEEP
        } else {
            match next_at(&spec).await {
                Some(at) => Duration::from_millis(at.saturating_sub(unix_ms())),
                None => LONGEST_SLEEP,
            }
        }
        .min(LONGEST_SLEEP)
        .min(spec.poll.unwrap_or(Duration::MAX))
        .min(if unreadable {
            AFTER_AN_ERROR
        } else {
            Duration::MAX
        })
        .min(until.map_or(Duration::MAX, |u| {
            u.saturating_duration_since(Instant::now())
        }));
        if wait.is_zero() && (took || until.is_some()) {
            continue;
        }
        let wait = wait.max(SHORTEST_SLEEP);
        // A notification left unclaimed while the slots were busy is kept by
        // `Notify` and wakes the loop at once when it next waits for work.
        let has_slot = permits.available_permits() > 0;
        tokio::select! {
            _ = spec.wake.notified(), if has_slot => {}
            _ = freed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait(), if until.is_none() => {}
        }
        if until.is_some() {
            // While draining, look again soon rather than sleeping long.
            tokio::time::sleep(WHILE_DRAINING).await;
        }
    }
    // Let running items end, within what is left of the grace: the whole
    // shutdown stays inside it, as an orchestrator's kill deadline expects.
    let left = until.map_or(Duration::ZERO, |u| {
        u.saturating_duration_since(Instant::now())
    });
    let all = u32::try_from(spec.cap).unwrap_or(u32::MAX);
    if tokio::time::timeout(left.max(LAST_WAIT), permits.acquire_many(all))
        .await
        .is_err()
    {
        if let Some(overrun) = spec.overrun {
            let running = spec.cap.saturating_sub(permits.available_permits());
            tracing::warn!(in_flight = running, "{overrun}");
        }
    }
}

/// Takes from each lane what free slots allow and spawns it: whether
/// anything was taken, and whether a queue could not be read.
async fn take(spec: &DueLoop, permits: &Arc<Semaphore>, freed: &Arc<Notify>) -> (bool, bool) {
    let (mut took, mut unreadable) = (false, false);
    for lane in &spec.lanes {
        let free = permits.available_permits();
        if free == 0 {
            break;
        }
        match lane.take(unix_ms(), free).await {
            Ok(jobs) => {
                for job in jobs {
                    // Only this loop takes permits, and it took no more
                    // items than were free.
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        break;
                    };
                    took = true;
                    let slot = Slot {
                        _permit: permit,
                        freed: freed.clone(),
                    };
                    tokio::spawn(async move {
                        job.await;
                        drop(slot);
                    });
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "{}", lane.unreadable());
                unreadable = true;
            }
        }
    }
    (took, unreadable)
}

/// When the earliest item of any lane is due.
async fn next_at(spec: &DueLoop) -> Option<u64> {
    let mut next: Option<u64> = None;
    for lane in &spec.lanes {
        if let Ok(Some(at)) = lane.next_at().await {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    next
}
