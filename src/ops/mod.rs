//! Running it: metrics, logs, the history the console charts, readiness,
//! pruning delivered records, and the shutdown latch.

pub(crate) mod due;
pub(crate) mod history;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod prune;
pub(crate) mod readiness;
pub(crate) mod shutdown;
