//! Waiting for what a test expects, never for a fixed time.
//!
//! `eventually!(cond, "what {}", x)` looks at `cond` (any `bool`
//! expression; `.await` inside is fine) until it holds, for up to
//! `EVENTUALLY` stretched by the patience factor, and panics naming what it
//! waited for. `eventually!(within: limit, cond, ...)` sets another limit,
//! for what takes longer by design. `eventually_blocking!` is the same for
//! code outside the runtime. A loop that needs more than a condition (a
//! value to return, a message built from the last look) uses `Waiting`.
//!
//! A test that must show that something does NOT happen has no event to
//! wait for: it sleeps for a named `Duration` (`ABSENCE` and its kin), and
//! that is the only kind of sleep a test has. A fake that takes its time on
//! purpose (a slow answer, a trickling client) says so with `pace`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long `eventually!` waits, before patience. Only a failing test waits
/// this long.
pub const EVENTUALLY: Duration = Duration::from_secs(20);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(20);

/// How long a test watches for something that must NOT happen (a second
/// forward, a request reaching the backend) before it says it did not.
pub const ABSENCE: Duration = Duration::from_millis(300);

/// The patience factor: `AUTHBACK_TEST_PATIENCE`, a positive number
/// (default 1), multiplies every wait's limit, for a slow or loaded machine.
pub fn patience() -> f64 {
    static PATIENCE: OnceLock<f64> = OnceLock::new();
    *PATIENCE.get_or_init(|| match std::env::var("AUTHBACK_TEST_PATIENCE") {
        Err(_) => 1.0,
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(p) if p.is_finite() && p > 0.0 => p,
            _ => panic!("AUTHBACK_TEST_PATIENCE must be a positive number, not {v:?}"),
        },
    })
}

/// `limit` stretched by the patience factor.
pub fn patient(limit: Duration) -> Duration {
    limit.mul_f64(patience())
}

/// A fake taking its time, as the real thing does: an answer that comes
/// late, Klarna's pause between attempts, a client's trickle. Nothing is
/// awaited, so patience does not stretch it.
pub async fn pace(d: Duration) {
    tokio::time::sleep(d).await;
}

/// One wait: its deadline, its pace, and its failure.
pub struct Waiting {
    limit: Duration,
    deadline: Instant,
}

impl Waiting {
    /// A wait of up to `limit`, stretched by the patience factor.
    pub fn new(limit: Duration) -> Self {
        let limit = patient(limit);
        Waiting {
            limit,
            deadline: Instant::now() + limit,
        }
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The pause before the next look.
    pub async fn pause(&self) {
        tokio::time::sleep(POLL).await;
    }

    /// The pause before the next look, off the runtime.
    pub fn pause_blocking(&self) {
        std::thread::sleep(POLL);
    }

    /// Fails the test: `what` never happened.
    #[track_caller]
    pub fn give_up(&self, what: std::fmt::Arguments<'_>) -> ! {
        panic!(
            "timed out after {:?} (AUTHBACK_TEST_PATIENCE={}) waiting for {what}",
            self.limit,
            patience()
        )
    }
}

/// Polls a condition until it holds; see the module's documentation.
macro_rules! eventually {
    (within: $limit:expr, $cond:expr, $($what:tt)+) => {{
        let waiting = $crate::common::Waiting::new($limit);
        loop {
            if $cond {
                break;
            }
            if waiting.expired() {
                waiting.give_up(format_args!($($what)+));
            }
            waiting.pause().await;
        }
    }};
    (within: $limit:expr, $cond:expr $(,)?) => {
        $crate::common::eventually!(within: $limit, $cond, "{}", stringify!($cond))
    };
    ($cond:expr, $($what:tt)+) => {
        $crate::common::eventually!(within: $crate::common::EVENTUALLY, $cond, $($what)+)
    };
    ($cond:expr $(,)?) => {
        $crate::common::eventually!(within: $crate::common::EVENTUALLY, $cond, "{}", stringify!($cond))
    };
}

/// `eventually!` outside the runtime: the thread blocks between looks.
macro_rules! eventually_blocking {
    (within: $limit:expr, $cond:expr, $($what:tt)+) => {{
        let waiting = $crate::common::Waiting::new($limit);
        loop {
            if $cond {
                break;
            }
            if waiting.expired() {
                waiting.give_up(format_args!($($what)+));
            }
            waiting.pause_blocking();
        }
    }};
    ($cond:expr, $($what:tt)+) => {
        $crate::common::eventually_blocking!(within: $crate::common::EVENTUALLY, $cond, $($what)+)
    };
}

pub(crate) use {eventually, eventually_blocking};
