//! Probe nonces: one-time proofs that a request came from `authback doctor`
//! holding a nonce the admin API handed out (`POST /v1/probes`). They live
//! in the store, so whichever replica the probe reaches can check one, for
//! `PROBE_TTL` and for one use. `ProbeSet` is the memory store's index.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use crate::text::hex;

/// How long a nonce stays valid once handed out.
pub const PROBE_TTL: Duration = Duration::from_secs(60);

/// 128 random bits, written as 32 lowercase hex characters: too many to
/// guess, and a form the public port can check before asking the store.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProbeNonce([u8; 16]);

impl ProbeNonce {
    /// A fresh nonce from the system's randomness; `None` if it fails (a
    /// nonce is never made of anything guessable instead).
    pub fn random() -> Option<Self> {
        let mut b = [0u8; 16];
        aws_lc_rs::rand::fill(&mut b).ok()?;
        Some(Self(b))
    }

    /// Exactly 32 lowercase hex characters, nothing else.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 32 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }

    pub(crate) fn bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for ProbeNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for ProbeNonce {
    // A nonce is a credential for its minute: logs never show it whole.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProbeNonce({})", crate::text::redact(&self.to_string()))
    }
}

/// Live nonces and when each expires (unix ms), for the memory store.
#[derive(Default)]
pub(crate) struct ProbeSet(Mutex<HashMap<ProbeNonce, u64>>);

impl ProbeSet {
    /// Keeps `nonce` until `expires_at`, and forgets the expired ones.
    pub(crate) fn put(&self, nonce: ProbeNonce, expires_at: u64, now: u64) {
        let mut live = self.0.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, exp| *exp > now);
        live.insert(nonce, expires_at);
    }

    /// Removes `nonce`: whether it was there and alive at `now`.
    pub(crate) fn take(&self, nonce: &ProbeNonce, now: u64) -> bool {
        let mut live = self.0.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(nonce).is_some_and(|exp| exp > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_32_lowercase_hex_characters() {
        let n = ProbeNonce::random().expect("randomness");
        let s = n.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(ProbeNonce::parse(&s), Some(n));
        assert_ne!(ProbeNonce::random(), Some(n), "two draws differ");
        for bad in [
            "",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789ABCDEF0123456789ABCDEF",
            "+123456789abcdef0123456789abcdef",
            " 0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdeg",
            "０123456789abcdef0123456789abcd",
        ] {
            assert_eq!(ProbeNonce::parse(bad), None, "{bad:?}");
        }
        assert!(!format!("{n:?}").contains(&s));
    }

    #[test]
    fn a_nonce_is_taken_once_and_only_while_alive() {
        let set = ProbeSet::default();
        let (a, b) = (
            ProbeNonce::random().expect("a"),
            ProbeNonce::random().expect("b"),
        );
        set.put(a, 1_000, 0);
        set.put(b, 2_000, 0);
        assert!(set.take(&a, 999));
        assert!(!set.take(&a, 999), "used");
        assert!(!set.take(&b, 2_000), "expired");
        assert!(!set.take(&b, 0), "taken even when expired");
        set.put(a, 5_000, 3_000);
        assert_eq!(set.0.lock().expect("lock").len(), 1);
    }
}
