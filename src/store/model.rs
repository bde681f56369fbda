//! What every store kind records and answers: deliveries and their
//! states, order watches, attempt logs, listings, and the store's errors.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::types::{AuthorizationToken, DeliveryId, SessionId};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An answer that is already known, as a store future.
pub fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, Result<T, StoreError>> {
    Box::pin(std::future::ready(Ok(v)))
}

/// Why the store did not do what it was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// It cannot be opened at all (a path, URL or schema problem): fatal at
    /// start, exit code 2.
    #[error("{0}")]
    Open(String),
    /// It cannot be reached or written now (Redis down, disk full, the
    /// writer stopped): callbacks get 503, work is retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// The reason alone, without the kind: what readiness reports.
    pub(crate) fn reason(&self) -> &str {
        match self {
            StoreError::Open(r) | StoreError::Unavailable(r) => r,
        }
    }
}

/// Which store a deployment runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    File,
    Redis,
}

impl StoreKind {
    /// The kind as `store.kind` in the config names it.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::File => "file",
            StoreKind::Redis => "redis",
        }
    }
}

/// How an authorization reached authback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Callback,
    ReadSession,
    /// The notice order watch sends after a release: the authorization
    /// was cancelled at Klarna (see `Delivery::release_notice`).
    OrderWatch,
}

impl Source {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "callback" => Some(Self::Callback),
            "read_session" => Some(Self::ReadSession),
            "order_watch" => Some(Self::OrderWatch),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Callback => "callback",
            Source::ReadSession => "read_session",
            Source::OrderWatch => "order_watch",
        }
    }
}

/// Where a delivery stands. `Pending` is live work; the others are where it
/// ends up: `Delivered` (the backend took it), `Dead` (it gave up, until a
/// replay), `Released` (no order came, and order watch cancelled the
/// authorization at Klarna: the customer is no longer charged, the shop
/// may still want to reconcile it), and `Resolved` (an operator dealt with
/// a failure by hand, see `Delivery::resolvable`). A resolved record still
/// dedupes until retention removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
    Resolved,
    Released,
}

impl DeliveryState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::Resolved => "resolved",
            DeliveryState::Released => "released",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "dead" => Some(Self::Dead),
            "resolved" => Some(Self::Resolved),
            "released" => Some(Self::Released),
            _ => None,
        }
    }
}

/// How an operator closed a failed delivery: when, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Unix ms.
    pub at: u64,
    pub note: String,
}

/// The longest note a resolution keeps, in characters.
pub const RESOLVE_NOTE_MAX: usize = 500;

/// What `Store::resolve` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    Resolved,
    NotFound,
    /// Not a failure an operator can close: where it stands instead.
    NotResolvable {
        state: DeliveryState,
        watch: Option<WatchState>,
    },
}

/// Where the order watch of a delivered authorization stands: Read Session
/// is asked until Klarna says an order was placed (`Confirmed`), or until
/// `unconfirmed_after` passes without it (`Unconfirmed`: charged, no order).
/// `Releasing`: the authorization is to be cancelled at Klarna, and the
/// DELETE may be in flight; it is recorded before the DELETE is sent, so a
/// restart sends it again (and reads Klarna's 403/404 as released).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchState {
    Watching,
    Confirmed,
    Unconfirmed,
    Releasing,
}

impl WatchState {
    /// Whether checks are still due: a running watch, or a release whose
    /// DELETE is not known to have been answered.
    pub(crate) fn is_due(self) -> bool {
        matches!(self, WatchState::Watching | WatchState::Releasing)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WatchState::Watching => "watching",
            WatchState::Confirmed => "confirmed",
            WatchState::Unconfirmed => "unconfirmed",
            WatchState::Releasing => "releasing",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "watching" => Some(Self::Watching),
            "confirmed" => Some(Self::Confirmed),
            "unconfirmed" => Some(Self::Unconfirmed),
            "releasing" => Some(Self::Releasing),
            _ => None,
        }
    }
}

/// The order watch of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub state: WatchState,
    /// When the backend first accepted the delivery (unix ms): the watch's
    /// clock (`redeliver_after`, `unconfirmed_after`) runs from here.
    pub started_at: u64,
    pub next_check_at: u64,
    /// Read Session checks made so far.
    pub checks: u32,
    /// The backend got the delivery once more, with `Authback-Redelivery`.
    pub redelivered: bool,
    pub last_error: Option<String>,
    /// While the watch waits for Klarna: when its checks began to fail
    /// (unix ms). A check that reads the session clears it, and so does
    /// the end of the watch.
    pub klarna_failing_since: Option<u64>,
}

/// What an order-watch check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchNext {
    /// Check again at `at`.
    Again { at: u64, error: Option<String> },
    /// Klarna says the order was placed: the watch ends.
    Confirmed,
    /// No order by `unconfirmed_after`: the watch ends, and the delivery is
    /// listed until an operator acts on it.
    Unconfirmed { error: Option<String> },
    /// Queue the delivery again, due at `now`, as a redelivery (once), and
    /// check again at `at`.
    Redeliver { now: u64, at: u64 },
    /// Klarna gave no usable answer, as since `since`: check again at `at`,
    /// neither redelivering nor ending the watch meanwhile, since not
    /// knowing is not "no order".
    KlarnaFailing { at: u64, since: u64, error: String },
    /// No order by `release_after`: the watch is `Releasing`, recorded
    /// before the DELETE is sent; `at` is when to send it again if it
    /// fails (or authback stops while it is in flight).
    Release { at: u64 },
    /// Klarna cancelled the authorization (or had, before a restart): the
    /// delivery is `Released`, its watch ends `Unconfirmed`.
    Released,
    /// It cannot be cancelled (expired, unknown, or Klarna failing until
    /// the token's end): the watch ends `Unconfirmed`, with `error`.
    ReleaseFailed { error: String },
}

/// Which deliveries `list` returns. Every field left `None` lets all pass;
/// `since` and `until` bound `received_at` (unix ms, `since` inclusive,
/// `until` exclusive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub state: Option<DeliveryState>,
    pub watch: Option<WatchState>,
    pub route: Option<String>,
    pub session_id: Option<SessionId>,
    pub reference: Option<String>,
    pub since: Option<u64>,
    pub until: Option<u64>,
}

impl Filter {
    pub fn state(state: DeliveryState) -> Self {
        Filter {
            state: Some(state),
            ..Filter::default()
        }
    }

    /// Whether `d` passes. A `watch` filter lists open order-watch cases,
    /// so a resolved delivery never passes one: `Unconfirmed` is the
    /// incident list, and a resolved incident has left it.
    pub fn accepts(&self, d: &Delivery) -> bool {
        self.state.is_none_or(|s| s == d.state)
            && self.watch.is_none_or(|w| {
                !matches!(d.state, DeliveryState::Resolved | DeliveryState::Released)
                    && d.watch.as_ref().is_some_and(|x| x.state == w)
            })
            && self.fields_accept(&d.route, &d.session_id, &d.reference, d.received_at)
    }

    /// The part of `accepts` that reads only what never changes after a
    /// claim: a store may check it before reading the whole record.
    pub(crate) fn fields_accept(
        &self,
        route: &str,
        session_id: &SessionId,
        reference: &str,
        received_at: u64,
    ) -> bool {
        self.route.as_deref().is_none_or(|r| r == route)
            && self.session_id.as_ref().is_none_or(|s| s == session_id)
            && self.reference.as_deref().is_none_or(|r| r == reference)
            && self.since.is_none_or(|t| received_at >= t)
            && self.until.is_none_or(|t| received_at < t)
    }
}

/// A place in a listing, which runs newest first by (`received_at`
/// descending, `id` ascending): `list` returns what comes after it. It names
/// a position, not a delivery, so it stays valid when that delivery changes
/// state or is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub received_at: u64,
    pub id: DeliveryId,
}

impl Cursor {
    pub(crate) fn of(d: &Delivery) -> Self {
        Cursor {
            received_at: d.received_at,
            id: d.id,
        }
    }

    /// Past every delivery received at `received_at`: where a listing is
    /// complete through all of that millisecond.
    pub fn end_of(received_at: u64) -> Self {
        Cursor {
            received_at,
            // The largest id: a constant, so this cannot fail.
            id: DeliveryId::from_bytes(&[0xff; 16]).expect("16 bytes make an id"),
        }
    }

    /// Whether a delivery at (`received_at`, `id`) comes after this place.
    pub(crate) fn admits(&self, received_at: u64, id: &DeliveryId) -> bool {
        received_at < self.received_at || (received_at == self.received_at && *id > self.id)
    }

    /// The text form the admin API hands out: `{received_at}-{id}`.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (at, id) = s.split_once('-')?;
        Some(Cursor {
            received_at: at.parse().ok()?,
            id: DeliveryId::parse(id)?,
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.received_at, self.id)
    }
}

/// One page of a listing. `next` is where the following page starts, when
/// more may remain; a store that bounds how much it reads per call may end
/// a page short of `limit` and still give a `next`.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub deliveries: Vec<Delivery>,
    pub next: Option<Cursor>,
}

/// How many attempts a delivery's log keeps: the latest ones.
pub const ATTEMPTS_KEPT: usize = 20;

/// One delivery attempt, as the attempt log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    /// When it started (unix ms).
    pub at: u64,
    pub duration_ms: u64,
    /// The backend's status, when it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// When a retry was scheduled: how long after the attempt ended.
    pub retry_in_ms: Option<u64>,
    /// Sent again by the order watch (`Authback-Redelivery`).
    pub redelivery: bool,
    /// What was kept of the backend's answer, when it answered. Older
    /// logs have none; older versions reading this one skip it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Excerpt>,
}

/// How many bytes of an answer's body an attempt keeps: the first ones.
pub const BODY_KEPT: usize = 2048;

/// What an attempt keeps of the backend's answer: its `Content-Type` and the
/// first `BODY_KEPT` bytes of its body, with every configured secret and the
/// delivery's authorization token already blotted out.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Excerpt {
    pub content_type: Option<String>,
    /// The body as text, or base64 of its bytes when `base64`.
    pub body: String,
    /// The body was not printable UTF-8 text.
    pub base64: bool,
    /// The body went on past what is kept.
    pub truncated: bool,
}

/// Appends `a` to a log, keeping the latest `ATTEMPTS_KEPT`.
pub fn push_attempt(log: &mut Vec<Attempt>, a: Attempt) {
    log.push(a);
    if log.len() > ATTEMPTS_KEPT {
        log.drain(..log.len() - ATTEMPTS_KEPT);
    }
}

/// A delivery with its attempt log (oldest first), as `get` returns it.
#[derive(Debug, Clone)]
pub struct Detail {
    pub delivery: Delivery,
    pub attempts: Vec<Attempt>,
}

/// The path and query a callback arrived on. It carries the URL token, so
/// `Debug` shows the path alone.
#[derive(Clone, PartialEq, Eq)]
pub struct ArrivalUri(pub String);

impl fmt::Debug for ArrivalUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.0.split('?').next().unwrap_or_default();
        write!(f, "ArrivalUri({path:?})")
    }
}

/// One authorization to forward, and where its delivery stands.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: DeliveryId,
    pub route: String,
    pub reference: String,
    pub session_id: SessionId,
    pub authorization_token: AuthorizationToken,
    pub source: Source,
    /// Unix milliseconds.
    pub received_at: u64,
    /// The callback body exactly as received.
    pub payload: Bytes,
    /// Kept only for `forward_format = "original"` without a `forward_path`.
    pub arrival_uri: Option<ArrivalUri>,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    pub next_attempt_at: u64,
    /// After this (unix ms) a failed delivery is dead.
    pub deadline_at: u64,
    pub last_error: Option<String>,
    pub delivered_at: Option<u64>,
    /// The order watch, once the backend has accepted the delivery with
    /// order watch on. A resolved or released delivery keeps the watch it
    /// ended with.
    pub watch: Option<Watch>,
    /// Set when the delivery is `Resolved`.
    pub resolution: Option<Resolution>,
}

impl Delivery {
    /// Whether the attempt now due is a redelivery: the backend accepted
    /// it once already, and the order watch found no order.
    pub fn is_redelivery(&self) -> bool {
        self.state == DeliveryState::Pending && self.watch.as_ref().is_some_and(|w| w.redelivered)
    }

    /// The notice that tells the backend order watch released this
    /// authorization: a delivery of its own (its id derived from this
    /// one's), received when this one was (so its `expires_at` is the
    /// token's), due now, with `deadline` from now.
    pub fn release_notice(&self, now: u64, deadline: std::time::Duration) -> Delivery {
        let mut n = Delivery::new_pending(
            self.route.clone(),
            self.reference.clone(),
            self.session_id.clone(),
            self.authorization_token.clone(),
            Source::OrderWatch,
            self.payload.clone(),
            None,
            now,
            deadline,
        );
        n.id = self.id.release_notice();
        n.received_at = self.received_at;
        n
    }

    /// Whether this is a release notice; then the authorization's own
    /// delivery is `authorization_id`.
    pub fn is_release_notice(&self) -> bool {
        self.source == Source::OrderWatch
    }

    /// The id of the delivery a release notice is about (the delivery's own
    /// id for any other).
    pub fn authorization_id(&self) -> DeliveryId {
        DeliveryId::for_authorization(&self.session_id, &self.authorization_token)
    }

    /// Whether an operator may resolve it: a failure nothing else will
    /// act on. That is a dead delivery, a delivered one whose order
    /// watch ended unconfirmed (charged, no order), or a released one (the
    /// shop reconciles it, then closes it). A state added for
    /// another kind of failure joins this list, and leaves it to
    /// `Resolved` the same way.
    pub fn resolvable(&self) -> bool {
        resolvable(self.state, self.watch.as_ref().map(|w| w.state))
    }
}

/// `Delivery::resolvable`, for a store that reads only the two states.
pub(crate) fn resolvable(state: DeliveryState, watch: Option<WatchState>) -> bool {
    match state {
        DeliveryState::Dead | DeliveryState::Released => true,
        DeliveryState::Delivered => watch == Some(WatchState::Unconfirmed),
        DeliveryState::Pending | DeliveryState::Resolved => false,
    }
}

impl Delivery {
    /// A new authorization, due at once, however it arrived. Its id is the
    /// one SPEC §4 defines, so a callback and a Read Session recovery of the
    /// same token are the same delivery.
    #[allow(clippy::too_many_arguments)]
    pub fn new_pending(
        route: String,
        reference: String,
        session_id: SessionId,
        authorization_token: AuthorizationToken,
        source: Source,
        payload: Bytes,
        arrival_uri: Option<ArrivalUri>,
        now: u64,
        deadline: std::time::Duration,
    ) -> Self {
        Delivery {
            id: DeliveryId::for_authorization(&session_id, &authorization_token),
            route,
            reference,
            session_id,
            authorization_token,
            source,
            received_at: now,
            payload,
            arrival_uri,
            state: DeliveryState::Pending,
            attempts: 0,
            next_attempt_at: now,
            deadline_at: now + deadline.as_millis() as u64,
            last_error: None,
            delivered_at: None,
            watch: None,
            resolution: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First time: recorded and queued.
    Recorded,
    /// Seen before: nothing new queued.
    Duplicate,
}

/// What one delivery attempt ended in.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    /// The backend accepted it. With order watch on, `watch_from` is when
    /// the first Read Session check is due; a delivery already watched (a
    /// redelivery) keeps its watch.
    Delivered {
        at: u64,
        watch_from: Option<u64>,
    },
    Retry {
        next_at: u64,
        error: String,
    },
    Dead {
        error: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    Queued,
    NotFound,
    NotDead(DeliveryState),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub pending: u64,
    /// Dead deliveries not resolved.
    pub dead: u64,
    /// Deliveries whose order watch ended unconfirmed, not resolved.
    pub unconfirmed: u64,
    /// `received_at` of the oldest pending delivery.
    pub oldest_pending_at: Option<u64>,
    /// `received_at` of the oldest dead delivery.
    pub oldest_dead_at: Option<u64>,
    /// `received_at` of the oldest unconfirmed delivery.
    pub oldest_unconfirmed_at: Option<u64>,
    /// Delivered records the store holds (retention removes them).
    pub delivered: u64,
    /// Resolved records the store holds.
    pub resolved: u64,
}

/// What retention removes (unix ms: records older than these go).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Ended Read Session registrations registered by then
    /// (`store.dedupe_ttl` ago).
    pub dedupe: u64,
    /// Delivered records received by then, and resolved ones resolved by
    /// then (`store.keep_finished` ago).
    pub finished: u64,
    /// Dead records, and those whose order watch ended unconfirmed,
    /// received before then (`store.keep_dead` ago).
    pub dead: u64,
}

impl Cutoffs {
    /// Every cutoff at `at`: all that is past retention at that time.
    pub fn all(at: u64) -> Self {
        Cutoffs {
            dedupe: at,
            finished: at,
            dead: at,
        }
    }
}
