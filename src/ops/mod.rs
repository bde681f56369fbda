//! Running it: metrics (and the process's own figures), logs and the
//! access log, the history the console charts, readiness, pruning
//! delivered records, reloading address lists, and the shutdown latch.

pub(crate) mod access_log;
pub(crate) mod due;
pub(crate) mod history;
pub(crate) mod ip_sets;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod process;
pub(crate) mod prune;
pub(crate) mod readiness;
pub(crate) mod shutdown;
