//! Resolving failures by hand: `POST /v1/deliveries/{id}/resolve` and the
//! bulk `POST /v1/deliveries/resolve`. An operator who dealt with a dead
//! delivery, or with an authorization whose order was never placed, closes
//! it with a note: it leaves the dead and unconfirmed lists and gauges, and
//! its record stays, so Klarna's retries are still duplicates.
//!
//! It knows the store, not the listener: `api` reads the request, finds the
//! matches with the listing's filters, and hands over here.

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{json, json_error, Body};
use crate::store::{
    DeliveryState, Filter, Resolve, Store, StoreError, WatchState, RESOLVE_NOTE_MAX,
};
use crate::text::rfc3339;
use crate::types::{unix_ms, DeliveryId};

/// Resolves sent to the store at once, as bulk replay does.
const BATCH: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct One {
    note: Option<String>,
}

/// The note of a single resolve's body, or why it is refused.
pub(crate) fn note_of(body: &[u8]) -> Result<String, String> {
    let r: One = serde_json::from_slice(body)
        .map_err(|e| format!("expected {{\"note\": \"why it is resolved\"}}: {e}"))?;
    note(r.note.as_deref())
}

/// A note as it is kept: trimmed, not empty, at most `RESOLVE_NOTE_MAX`
/// characters.
fn note(n: Option<&str>) -> Result<String, String> {
    let n = n.map(str::trim).unwrap_or_default();
    if n.is_empty() {
        return Err("note: say why it is resolved (what was done about it)".into());
    }
    let len = n.chars().count();
    if len > RESOLVE_NOTE_MAX {
        return Err(format!(
            "note: at most {RESOLVE_NOTE_MAX} characters (this one has {len})"
        ));
    }
    Ok(n.to_string())
}

/// `POST /v1/deliveries/{id}/resolve`.
pub(crate) async fn one(store: &dyn Store, id: DeliveryId, note: String) -> http::Response<Body> {
    let at = unix_ms();
    match store.resolve(id, at, note.clone()).await {
        Ok(Resolve::Resolved) => {
            tracing::info!(%id, "delivery resolved");
            json(
                StatusCode::OK,
                &json!({
                    "id": id.to_string(),
                    "state": DeliveryState::Resolved.as_str(),
                    "resolved_at": rfc3339(at / 1000),
                    "note": note,
                }),
            )
        }
        Ok(Resolve::NotFound) => json_error(StatusCode::NOT_FOUND, "not_found", "no such delivery"),
        Ok(Resolve::NotResolvable { state, watch }) => conflict(state, watch),
        Err(e) => unavailable(&e),
    }
}

/// `409`: where the delivery stands, and what can be resolved.
fn conflict(state: DeliveryState, watch: Option<WatchState>) -> http::Response<Body> {
    let now = match watch {
        Some(w) => format!("{} (order watch: {})", state.as_str(), w.as_str()),
        None => state.as_str().to_string(),
    };
    json(
        StatusCode::CONFLICT,
        &json!({
            "error": "conflict",
            "message": format!("only a dead delivery, or a delivered one whose order watch ended unconfirmed, can be resolved; this one is {now}"),
            "state": state.as_str(),
            "order_watch": watch.map(WatchState::as_str),
        }),
    )
}

fn unavailable(e: &StoreError) -> http::Response<Body> {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        &e.to_string(),
    )
}

/// A bulk resolve's body: the listing's filters, which failures (`state`:
/// `dead`, the default, `unconfirmed`, or `released`), the note, and
/// `dry_run`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Bulk {
    state: Option<String>,
    pub route: Option<String>,
    pub session_id: Option<String>,
    pub reference: Option<String>,
    pub since: Option<Value>,
    pub until: Option<Value>,
    note: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

impl Bulk {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, String> {
        let r: Bulk = serde_json::from_slice(body).map_err(|e| {
            format!("expected {{\"state\"?: \"dead\" | \"unconfirmed\" | \"released\", \"route\"?, \"session_id\"?, \"reference\"?, \"since\"?, \"until\"?, \"note\", \"dry_run\"?}}: {e}")
        })?;
        if !r.dry_run {
            note(r.note.as_deref())?;
        }
        Ok(r)
    }

    /// `filter` (the listing's filters) narrowed to the failures asked for.
    pub(crate) fn narrow(&self, filter: Filter) -> Result<Filter, String> {
        match self.state.as_deref().filter(|s| !s.is_empty()) {
            None | Some("dead") => Ok(Filter {
                state: Some(DeliveryState::Dead),
                ..filter
            }),
            Some("unconfirmed") => Ok(Filter {
                watch: Some(WatchState::Unconfirmed),
                ..filter
            }),
            // Released authorizations the shop has reconciled.
            Some("released") => Ok(Filter {
                state: Some(DeliveryState::Released),
                ..filter
            }),
            Some(_) => Err(
                "state: \"dead\", \"unconfirmed\" or \"released\": only failures are resolved"
                    .into(),
            ),
        }
    }

    /// Resolves `ids` (unless a dry run) and answers
    /// `{"matched", "resolved", "dry_run", "capped"}`.
    pub(crate) async fn run(
        &self,
        store: &Arc<dyn Store>,
        ids: &[DeliveryId],
        capped: bool,
    ) -> http::Response<Body> {
        let matched = ids.len();
        let mut resolved = 0;
        if !self.dry_run {
            let note = self.note.as_deref().unwrap_or_default().trim().to_string();
            resolved = match resolve_all(store, ids, &note).await {
                Ok(n) => n,
                Err((why, n)) => {
                    tracing::warn!(matched, resolved = n, error = %why, "bulk resolve stopped");
                    return json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        &format!("{why} (resolved {n} of {matched} before stopping)"),
                    );
                }
            };
            tracing::info!(
                matched,
                resolved,
                capped,
                "deliveries resolved by bulk resolve"
            );
        }
        json(
            StatusCode::OK,
            &json!({ "matched": matched, "resolved": resolved, "dry_run": self.dry_run, "capped": capped }),
        )
    }
}

/// Resolves `ids`, a batch at a time: how many were resolved, or the error
/// that stopped it and how many were resolved before. One that was
/// replayed, resolved or gone since it was listed is passed over.
async fn resolve_all(
    store: &Arc<dyn Store>,
    ids: &[DeliveryId],
    note: &str,
) -> Result<usize, (String, usize)> {
    let mut resolved = 0;
    let at = unix_ms();
    for batch in ids.chunks(BATCH) {
        let mut running = tokio::task::JoinSet::new();
        for &id in batch {
            let (store, note) = (store.clone(), note.to_string());
            running.spawn(async move { store.resolve(id, at, note).await });
        }
        let mut failed = None;
        while let Some(done) = running.join_next().await {
            match done {
                Ok(Ok(Resolve::Resolved)) => resolved += 1,
                Ok(Ok(Resolve::NotFound | Resolve::NotResolvable { .. })) => {}
                Ok(Err(e)) => failed = Some(e.to_string()),
                Err(e) => failed = Some(format!("resolve task failed: {e}")),
            }
        }
        if let Some(why) = failed {
            return Err((why, resolved));
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_required_trimmed_and_bounded() {
        assert_eq!(
            note_of(br#"{"note":"  refunded \n"}"#),
            Ok("refunded".into())
        );
        for bad in [
            &b"{}"[..],
            br#"{"note":"   "}"#,
            br#"{"note":null}"#,
            b"",
            b"x",
        ] {
            assert!(note_of(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(note_of(br#"{"note":"x","extra":1}"#).is_err());
        let long = format!(r#"{{"note":"{}"}}"#, "é".repeat(RESOLVE_NOTE_MAX));
        assert_eq!(
            note_of(long.as_bytes()).map(|n| n.chars().count()),
            Ok(RESOLVE_NOTE_MAX)
        );
        let longer = format!(r#"{{"note":"{}"}}"#, "é".repeat(RESOLVE_NOTE_MAX + 1));
        assert!(note_of(longer.as_bytes()).is_err());
    }

    #[test]
    fn a_bulk_resolve_takes_dead_or_unconfirmed_and_needs_a_note_unless_dry() {
        let r = Bulk::parse(br#"{"note":"handled"}"#).expect("ok");
        let f = r.narrow(Filter::default()).expect("dead");
        assert_eq!((f.state, f.watch), (Some(DeliveryState::Dead), None));
        let r = Bulk::parse(br#"{"state":"unconfirmed","dry_run":true}"#).expect("ok");
        let f = r.narrow(Filter::default()).expect("unconfirmed");
        assert_eq!((f.state, f.watch), (None, Some(WatchState::Unconfirmed)));
        assert!(Bulk::parse(br#"{"state":"dead"}"#).is_err(), "no note");
        assert!(Bulk::parse(br#"{"note":"x","refrence":"a"}"#).is_err());
        let r = Bulk::parse(br#"{"state":"pending","note":"x"}"#).expect("parses");
        assert!(r.narrow(Filter::default()).is_err());
    }

    #[test]
    fn a_conflict_says_where_the_delivery_stands() {
        let r = conflict(DeliveryState::Delivered, Some(WatchState::Watching));
        assert_eq!(r.status(), StatusCode::CONFLICT);
    }
}
