//! Reading what Redis answers back into store types: record hashes into
//! deliveries (with their order watch) and registrations, and the scripts'
//! flat answers into groups. A field that is missing or garbled reads as
//! empty or zero; nothing here panics on what the server sent.

use std::collections::HashMap;

use bytes::Bytes;
use redis::Value;

use super::super::registrations::{RegState, Registration};
use crate::store::model::{
    ArrivalUri, Attempt, Delivery, DeliveryState, Resolution, Source, Watch, WatchState,
};
use crate::types::{AuthorizationToken, DeliveryId, SessionId};

/// A hash as read back: field name to raw value.
pub(super) type Fields = HashMap<String, Vec<u8>>;

fn field<'a>(m: &'a Fields, k: &str) -> Option<&'a [u8]> {
    m.get(k).map(|v| v.as_slice())
}

fn text(m: &Fields, k: &str) -> String {
    field(m, k)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

fn num(m: &Fields, k: &str) -> u64 {
    text(m, k).parse().unwrap_or(0)
}

pub(super) fn delivery_from(id: &str, m: &Fields) -> Option<Delivery> {
    if m.is_empty() {
        return None;
    }
    let state = match text(m, "state").as_str() {
        "delivered" => DeliveryState::Delivered,
        "dead" => DeliveryState::Dead,
        "resolved" => DeliveryState::Resolved,
        "released" => DeliveryState::Released,
        _ => DeliveryState::Pending,
    };
    let opt = |k: &str| Some(text(m, k)).filter(|s| !s.is_empty());
    Some(Delivery {
        id: DeliveryId::parse(id)?,
        route: text(m, "route"),
        reference: text(m, "reference"),
        session_id: SessionId::new(text(m, "session_id")),
        authorization_token: AuthorizationToken::new(text(m, "token")),
        source: Source::parse(&text(m, "source")).unwrap_or(Source::Callback),
        received_at: num(m, "received_at"),
        payload: Bytes::from(field(m, "payload").unwrap_or_default().to_vec()),
        arrival_uri: opt("arrival_uri").map(ArrivalUri),
        state,
        attempts: num(m, "attempts") as u32,
        next_attempt_at: num(m, "next_at"),
        deadline_at: num(m, "deadline_at"),
        last_error: opt("last_error"),
        delivered_at: opt("delivered_at").and_then(|s| s.parse().ok()),
        watch: watch_from(m),
        resolution: (state == DeliveryState::Resolved).then(|| Resolution {
            at: num(m, "resolved_at"),
            note: text(m, "resolve_note"),
        }),
    })
}

/// The attempt log kept in the record's `attempt_log` field: one JSON
/// object a line, oldest first. A line that does not parse is skipped: the
/// log is history, and the rest of it is still worth showing.
pub(super) fn attempts_from(m: &Fields) -> Vec<Attempt> {
    text(m, "attempt_log")
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The order watch kept in the record's `w_*` fields; `None` when there is
/// none (or its state is not one this version knows).
fn watch_from(m: &Fields) -> Option<Watch> {
    Some(Watch {
        state: WatchState::parse(&text(m, "w_state"))?,
        started_at: num(m, "w_started"),
        next_check_at: num(m, "w_next"),
        checks: num(m, "w_checks") as u32,
        redelivered: text(m, "w_redelivered") == "1",
        last_error: Some(text(m, "w_error")).filter(|s| !s.is_empty()),
        klarna_failing_since: text(m, "w_failing_since").parse().ok(),
    })
}

pub(super) fn registration_from(session: &str, m: &Fields) -> Registration {
    Registration {
        session_id: SessionId::new(session),
        route: text(m, "route"),
        reference: text(m, "reference"),
        registered_at: num(m, "registered_at"),
        checks: num(m, "checks") as u32,
        next_check_at: num(m, "next_at"),
        state: if text(m, "state") == "active" {
            RegState::Active
        } else {
            RegState::Ended
        },
        outcome: Some(text(m, "outcome")).filter(|s| !s.is_empty()),
        last_error: Some(text(m, "last_error")).filter(|s| !s.is_empty()),
    }
}

/// Reads a script's flat `[a, {hash}, a, {hash}...]` answer, or with more
/// plain items before each hash: `width` items a group, the hash last.
pub(super) fn groups(v: Value, width: usize) -> Vec<(Vec<String>, Fields)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut it = items.into_iter();
    'outer: loop {
        let mut head = Vec::new();
        for _ in 0..width - 1 {
            match it.next() {
                Some(x) => head.push(redis::from_redis_value::<String>(&x).unwrap_or_default()),
                None => break 'outer,
            }
        }
        let Some(hash) = it.next() else { break };
        let map: Fields = match hash {
            Value::Array(kv) => kv
                .chunks(2)
                .filter_map(|c| {
                    let k = redis::from_redis_value::<String>(c.first()?).ok()?;
                    let v = redis::from_redis_value::<Vec<u8>>(c.get(1)?).ok()?;
                    Some((k, v))
                })
                .collect(),
            _ => HashMap::new(),
        };
        out.push((head, map));
    }
    out
}
