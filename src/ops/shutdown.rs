//! The stop signal every task shares, on tokio-util's `CancellationToken`:
//! once cancelled it stays cancelled, any number of tasks can wait on it or
//! ask it, and a child token is cancelled with its parent. `run` builds the
//! tree so that the parent/child order is the drain order (see `Drain`).

use tokio_util::sync::CancellationToken;

/// What a task waits on.
#[derive(Clone, Default)]
pub(crate) struct Stop(CancellationToken);

impl Stop {
    /// A stop that fires with this one, and can also fire on its own.
    pub(crate) fn child(&self) -> Stop {
        Stop(self.0.child_token())
    }

    /// Fires this stop and every child of it.
    pub(crate) fn fire(&self) {
        self.0.cancel();
    }

    pub(crate) async fn wait(&self) {
        self.0.cancelled().await;
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// The stops of `run`'s phases, as a tree whose order is the drain order:
/// the public side (listeners, Klarna work, background loops) stops first,
/// then the delivery worker, then the admin listener. Firing `admin`, the
/// root, is the hard stop: it fires the other two with it.
pub(crate) struct Drain {
    pub admin: Stop,
    pub delivery: Stop,
    pub public: Stop,
}

impl Default for Drain {
    fn default() -> Self {
        let admin = Stop::default();
        let delivery = admin.child();
        let public = delivery.child();
        Drain {
            admin,
            delivery,
            public,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_fires_its_children_and_not_its_parent() {
        let d = Drain::default();
        d.public.fire();
        assert!(d.public.is_stopped());
        assert!(!d.delivery.is_stopped() && !d.admin.is_stopped());
        d.admin.fire();
        assert!(d.delivery.is_stopped());
        let late = d.public.child();
        assert!(late.is_stopped(), "a child of a fired stop is born fired");
    }
}
