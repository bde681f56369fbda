//! A stop latch shared by every task: once fired it stays fired, and any
//! number of tasks can wait on it or ask it.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

pub struct Trigger(watch::Sender<bool>);

pub fn latch() -> (Trigger, Stop) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Stop(rx))
}

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Stop {
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        // An error means the trigger is gone, which also means: stop.
        let _ = rx.wait_for(|v| *v).await;
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}
