//! Connection workers: one single-threaded runtime per core. Each accepts
//! on a listening socket of its own (`server::listen`, `SO_REUSEPORT`) and
//! serves each connection it accepts to the end, with upstream connections
//! of its own (`upstream`). A request is then
//! handled on one thread from the client's socket to the upstream's and
//! back, without the wake-ups between threads that a work-stealing runtime
//! pays on every request.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// The index of the worker this thread is, if it is one.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running the caller, if any.
pub(crate) fn current() -> Option<usize> {
    WORKER.with(|w| w.get())
}

pub(crate) struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` workers (0: one per CPU).
    pub(crate) fn start(n: usize) -> std::io::Result<Self> {
        let n = if n == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            n
        };
        let mut w = Workers {
            handles: Vec::with_capacity(n),
            next: AtomicUsize::new(0),
            stops: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tx, rx) = oneshot::channel::<()>();
            w.handles.push(rt.handle().clone());
            w.stops.push(tx);
            w.threads.push(
                std::thread::Builder::new()
                    .name(format!("authback-conn-{i}"))
                    .spawn(move || {
                        WORKER.with(|w| w.set(Some(i)));
                        rt.block_on(async {
                            let _ = rx.await;
                        });
                        // Dropping the runtime here cancels what is left.
                    })?,
            );
        }
        Ok(w)
    }

    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// Runs `task` on worker `i` (modulo their number).
    pub(crate) fn spawn_on<F>(&self, i: usize, task: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handles[i % self.handles.len()].spawn(task)
    }

    /// Runs `task` on the next worker, round robin.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(task);
    }

    /// Stops every worker, cancelling what still runs on them, and waits for
    /// their threads.
    pub(crate) async fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}
