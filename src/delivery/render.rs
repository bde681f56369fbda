//! The normalized request the backend receives for one authorization (SPEC
//! §4). This is the only place that decides its path, body and headers.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::route::{ForwardFormat, Route};
use crate::store::Delivery;
use crate::text::{form_encode, rfc3339};

/// Klarna's authorization_token is valid for 60 minutes.
pub(crate) const TOKEN_LIFETIME_SECS: u64 = 3600;

pub struct Rendered {
    pub path_and_query: String,
    pub content_type: &'static str,
    pub body: Bytes,
}

#[derive(Serialize)]
struct Normalized<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    route: &'a str,
    reference: &'a str,
    session_id: &'a str,
    authorization_token: &'a str,
    source: &'static str,
    received_at: String,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
}

pub fn render(d: &Delivery, route: &Route) -> Rendered {
    let received = d.received_at / 1000;
    // A release notice speaks of the authorization's own delivery: its id,
    // and a type the backend cannot take for a new authorization.
    let (kind, id) = if d.is_release_notice() {
        ("klarna.authorization.released", d.authorization_id())
    } else {
        ("klarna.authorization", d.id)
    };
    let mut n = Normalized {
        kind,
        id: id.to_string(),
        route: &d.route,
        reference: &d.reference,
        session_id: d.session_id.as_str(),
        authorization_token: d.authorization_token.expose(),
        source: d.source.as_str(),
        received_at: rfc3339(received),
        expires_at: rfc3339(received + TOKEN_LIFETIME_SECS),
        payload: None,
    };
    let payload_text = std::str::from_utf8(&d.payload).unwrap_or("{}");
    let forward_path = route.forward_path.clone();
    match route.forward_format {
        ForwardFormat::Json => {
            // The payload was parsed as a JSON object when it was received.
            let raw: Option<&RawValue> = serde_json::from_str(payload_text).ok();
            n.payload = raw;
            let body = serde_json::to_vec(&n).unwrap_or_default();
            Rendered {
                path_and_query: forward_path.unwrap_or_default(),
                content_type: "application/json",
                body: body.into(),
            }
        }
        ForwardFormat::Form => {
            let mut out = String::with_capacity(512 + d.payload.len() * 2);
            let fields: [(&str, &str); 9] = [
                ("type", n.kind),
                ("id", &n.id),
                ("route", n.route),
                ("reference", n.reference),
                ("session_id", n.session_id),
                ("authorization_token", n.authorization_token),
                ("source", n.source),
                ("received_at", &n.received_at),
                ("expires_at", &n.expires_at),
            ];
            for (k, v) in fields.iter().chain([("payload", payload_text)].iter()) {
                if !out.is_empty() {
                    out.push('&');
                }
                out.push_str(k);
                out.push('=');
                form_encode(&mut out, v);
            }
            Rendered {
                path_and_query: forward_path.unwrap_or_default(),
                content_type: "application/x-www-form-urlencoded",
                body: out.into(),
            }
        }
        ForwardFormat::Original => Rendered {
            path_and_query: forward_path
                .or_else(|| d.arrival_uri.as_ref().map(|u| u.0.clone()))
                .unwrap_or_else(|| "/".into()),
            content_type: "application/json",
            body: d.payload.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::{ArrivalUri, DeliveryState, Source};
    use crate::types::{AuthorizationToken, DeliveryId, SessionId};

    fn sample(payload: &str) -> (Delivery, Route) {
        let cfg = Config::parse(
            r#"
[server]
public_url = "https://shop.example.com"
[server.tls]
self_signed = true
[upstream]
url = "http://127.0.0.1:1"
[[routes]]
name = "klarna"
kind = "klarna_authorization"
path = "/k/{reference}"
forward_path = "/klarna/authorized"
secrets = ["0123456789abcdef0123"]
"#,
            std::path::Path::new("."),
        )
        .expect("config");
        let session_id = SessionId::new("sess-1");
        let authorization_token = AuthorizationToken::new("auth-1");
        let d = Delivery {
            id: DeliveryId::for_authorization(&session_id, &authorization_token),
            route: "klarna".into(),
            reference: "cart-123".into(),
            session_id,
            authorization_token,
            source: Source::Callback,
            received_at: 1_795_467_600_500,
            payload: Bytes::from(payload.to_string()),
            arrival_uri: Some(ArrivalUri("/k/cart-123?token=v1.x".into())),
            state: DeliveryState::Pending,
            attempts: 0,
            next_attempt_at: 0,
            deadline_at: 0,
            last_error: None,
            delivered_at: None,
            watch: None,
            resolution: None,
        };
        (d, cfg.routes[0].clone())
    }

    #[test]
    fn json_body_has_every_field() {
        let payload =
            r#"{"authorization_token":"auth-1","session_id":"sess-1","merchant_reference1":"x"}"#;
        let (d, route) = sample(payload);
        let r = render(&d, &route);
        assert_eq!(r.path_and_query, "/klarna/authorized");
        assert_eq!(r.content_type, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["type"], "klarna.authorization");
        assert_eq!(v["id"], "5051a647229ad6abd4e7a7db65ad80d0");
        assert_eq!(v["route"], "klarna");
        assert_eq!(v["reference"], "cart-123");
        assert_eq!(v["session_id"], "sess-1");
        assert_eq!(v["authorization_token"], "auth-1");
        assert_eq!(v["source"], "callback");
        assert_eq!(v["received_at"], "2026-11-23T21:00:00Z");
        assert_eq!(v["expires_at"], "2026-11-23T22:00:00Z");
        assert_eq!(v["payload"]["merchant_reference1"], "x");
        // The payload is embedded byte for byte.
        assert!(std::str::from_utf8(&r.body)
            .expect("utf8")
            .contains(payload));
    }

    #[test]
    fn form_and_original() {
        let payload = r#"{"authorization_token":"a b","session_id":"sess-1"}"#;
        let (d, mut route) = sample(payload);
        route.forward_format = ForwardFormat::Form;
        let r = render(&d, &route);
        let body = std::str::from_utf8(&r.body).expect("utf8");
        assert_eq!(r.content_type, "application/x-www-form-urlencoded");
        assert!(body.starts_with(
            "type=klarna.authorization&id=5051a647229ad6abd4e7a7db65ad80d0&route=klarna&"
        ));
        assert!(body.contains("&payload=%7B%22authorization_token%22%3A%22a+b%22"));
        route.forward_format = ForwardFormat::Original;
        route.forward_path = None;
        let r = render(&d, &route);
        assert_eq!(r.path_and_query, "/k/cart-123?token=v1.x");
        assert_eq!(&r.body[..], payload.as_bytes());
    }
}
