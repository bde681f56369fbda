//! A delivery as the admin API shows it: `GET /v1/deliveries` and
//! `GET /v1/deliveries/{id}` serialize these, and `authback deliveries`
//! reads them back. Times are RFC 3339 strings, tokens only their last 4
//! characters, and a missing value is `null`, never left out.
//!
//! The fields of each struct are in alphabetical order: the answers have
//! always carried their keys sorted, and serde writes a struct's fields in
//! the order they are declared.
//!
//! Reading is lenient (`#[serde(default)]`): an answer from another
//! authback version, with a field more or less, still prints.

use serde::{Deserialize, Serialize};

/// A delivery in the listing: `attempts` is the number of attempts made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ListedDelivery {
    pub attempts: u32,
    #[serde(flatten)]
    pub delivery: DeliveryView,
}

/// One delivery with its attempt log: `attempts` is the log (its latest
/// entries, oldest first) and `attempt_count` the number the listing calls
/// `attempts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DeliveryDetail {
    pub attempt_count: u32,
    pub attempts: Vec<AttemptView>,
    #[serde(flatten)]
    pub delivery: DeliveryView,
}

/// What the listing and the detail share: every field but `attempts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DeliveryView {
    /// The token's last 4 characters.
    pub authorization_token: String,
    pub deadline_at: String,
    pub delivered_at: Option<String>,
    pub id: String,
    pub last_error: Option<String>,
    /// Pending deliveries only.
    pub next_attempt_at: Option<String>,
    pub order_watch: Option<WatchView>,
    pub received_at: String,
    pub reference: String,
    /// Resolved deliveries only.
    pub resolution: Option<ResolutionView>,
    pub route: String,
    pub session_id: String,
    /// `callback` or `read_session`.
    pub source: String,
    /// `pending`, `delivered`, `dead` or `resolved`.
    pub state: String,
}

/// How an operator resolved a delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ResolutionView {
    pub note: String,
    /// RFC 3339.
    pub resolved_at: String,
}

/// A delivery's order watch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct WatchView {
    pub checks: u32,
    pub last_error: Option<String>,
    /// While watching only.
    pub next_check_at: Option<String>,
    pub redelivered: bool,
    pub started_at: String,
    /// `watching`, `confirmed` or `unconfirmed`.
    pub state: String,
}

/// One entry of the attempt log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct AttemptView {
    /// RFC 3339 with milliseconds.
    pub at: String,
    pub duration_ms: u64,
    pub error: Option<String>,
    pub redelivery: bool,
    /// The first 2 KiB of the backend's answer, secrets redacted; `None`
    /// when it did not answer (or the entry predates this field).
    pub response_body: Option<String>,
    /// `response_body` is base64: the answer was not printable text.
    pub response_body_base64: bool,
    /// The answer went on past `response_body`.
    pub response_body_truncated: bool,
    pub response_content_type: Option<String>,
    pub retry_in_ms: Option<u64>,
    /// The backend's status; `None` when it did not answer.
    pub status: Option<u16>,
}
