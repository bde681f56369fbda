//! Running it: metrics, logs, the history the console charts, readiness,
//! pruning delivered records, and the shutdown latch.

pub mod due;
pub mod history;
pub mod logging;
pub mod metrics;
pub mod prune;
pub mod readiness;
pub mod shutdown;
