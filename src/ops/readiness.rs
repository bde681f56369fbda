//! Readiness as one latch: starting, then serving once every listener is
//! bound, then draining once shutdown begins, never back. `/readyz` and the
//! `authback_ready` gauge read it; only `run` moves it forward.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Starting,
    Serving,
    Draining,
}

#[derive(Clone, Default)]
pub(crate) struct Readiness(Arc<AtomicU8>);

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const DRAINING: u8 = 2;

impl Readiness {
    /// Listeners are bound and serving. A latch that is draining stays so.
    pub(crate) fn serving(&self) {
        let _ = self
            .0
            .compare_exchange(STARTING, SERVING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Shutdown has begun: traffic should move away.
    pub(crate) fn draining(&self) {
        self.0.store(DRAINING, Ordering::Release);
    }

    pub(crate) fn get(&self) -> State {
        match self.0.load(Ordering::Acquire) {
            STARTING => State::Starting,
            SERVING => State::Serving,
            _ => State::Draining,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_only_moves_forward() {
        let r = Readiness::default();
        assert_eq!(r.get(), State::Starting);
        r.serving();
        assert_eq!(r.get(), State::Serving);
        r.draining();
        r.serving();
        assert_eq!(r.get(), State::Draining);
    }
}
