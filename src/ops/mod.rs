//! Running it: metrics, logs, the history the console charts, readiness,
//! and the shutdown latch.

pub mod history;
pub mod logging;
pub mod metrics;
pub mod readiness;
pub mod shutdown;
