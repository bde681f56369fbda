//! Domain types that cross module boundaries. The ones that carry credentials
//! (`AuthorizationToken`, `Secret`) redact themselves in `Debug` and `Display`,
//! so no log line or error message can print them by accident.

use std::fmt;

use aws_lc_rs::digest;

use crate::text::{hex, redact};

/// Largest `authorization_token` or `session_id` accepted, from a callback
/// or from Klarna.
pub(crate) const MAX_FIELD: usize = 1024;

/// Klarna's payment session id. Not a secret.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Klarna's `authorization_token`: whoever holds it can place the order, so it
/// is shown only as its last four characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AuthorizationToken(String);

impl AuthorizationToken {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The full token, for the forwarded body only.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub(crate) fn redacted(&self) -> String {
        redact(&self.0)
    }
    /// Its last four characters and nothing else, as the admin API lists it;
    /// nothing at all for a token that short.
    pub(crate) fn last4(&self) -> String {
        redact(&self.0).trim_start_matches('…').to_string()
    }
}

impl fmt::Debug for AuthorizationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorizationToken({})", self.redacted())
    }
}

impl fmt::Display for AuthorizationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// One authorization: the first 32 hex characters of
/// SHA-256(session_id + "\n" + authorization_token). It is also the
/// `Idempotency-Key` the backend sees.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId([u8; 16]);

impl DeliveryId {
    pub fn for_authorization(session: &SessionId, token: &AuthorizationToken) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(session.as_str().as_bytes());
        ctx.update(b"\n");
        ctx.update(token.expose().as_bytes());
        let d = ctx.finish();
        let mut id = [0u8; 16];
        id.copy_from_slice(&d.as_ref()[..16]);
        Self(id)
    }

    /// The id of the notice that tells the backend this authorization was
    /// released (`Source::OrderWatch`): its own record, so it is claimed,
    /// queued and retried as any delivery, and deduped if claimed twice.
    pub(crate) fn release_notice(&self) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&self.0);
        ctx.update(b"\nreleased");
        let d = ctx.finish();
        let mut id = [0u8; 16];
        id.copy_from_slice(&d.as_ref()[..16]);
        Self(id)
    }

    /// Parses the 32-hex-character form.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(id))
    }

    pub(crate) fn bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Option<Self> {
        Some(Self(b.try_into().ok()?))
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeliveryId({self})")
    }
}

/// A secret read from the config (inline, `env:NAME` or `file:/path`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Equality that takes the same time wherever the inputs differ. Inputs are
/// hashed first so that not even their lengths leak.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let da = digest::digest(&digest::SHA256, a);
    let db = digest::digest(&digest::SHA256, b);
    let diff = da
        .as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// This process among a deployment's replicas, as a doctor's probe is
/// answered with it: the host's name (a pod's name under Kubernetes; at
/// most 64 of `A-Z a-z 0-9 - . _`) and the process id, as `name/pid`.
pub(crate) fn replica_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default();
        let name: String = name
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            .take(64)
            .collect();
        let name = if name.is_empty() { "unnamed" } else { &name };
        format!("{name}/{}", std::process::id())
    })
}

/// Milliseconds since the Unix epoch, the time unit of stored records.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_id_matches_spec_vector() {
        let id = DeliveryId::for_authorization(
            &SessionId::new("sess-1"),
            &AuthorizationToken::new("auth-1"),
        );
        assert_eq!(id.to_string(), "5051a647229ad6abd4e7a7db65ad80d0");
        assert_eq!(DeliveryId::parse(&id.to_string()), Some(id));
        assert_eq!(DeliveryId::parse("zz51a647229ad6abd4e7a7db65ad80d0"), None);
        assert_eq!(DeliveryId::parse("5051"), None);
    }

    #[test]
    fn credentials_redact() {
        let t = AuthorizationToken::new("0b1d9815-165e-42e2-8867-35bc03789e00");
        assert_eq!(format!("{t}"), "…9e00");
        assert_eq!(t.last4(), "9e00");
        assert_eq!(AuthorizationToken::new("abcd").last4(), "");
        assert!(!format!("{t:?}").contains("0b1d9815"));
        let s = Secret::new("hunter2-hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
