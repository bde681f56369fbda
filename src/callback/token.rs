//! The URL token, version 1. This module alone knows its format:
//! `v1.EXP.base64url(HMAC-SHA256(secret, "authback.v1|ROUTE|REFERENCE|EXP"))`.
//! It is stateless so that a PHP or Java backend can mint it too.

use aws_lc_rs::hmac;

use crate::text::base64url;
use crate::types::{ct_eq, Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token in the URL")]
    Missing,
    #[error("token is malformed")]
    Malformed,
    #[error("more than one token in the URL")]
    Repeated,
    #[error("token has expired")]
    Expired,
    #[error("token does not match")]
    Mismatch,
}

/// Whether `token` has this module's format's prefix (it may still be
/// malformed); anything else can only be a static token.
pub(crate) fn is_v1(token: &str) -> bool {
    token.starts_with("v1.")
}

/// Mints a token for `route`/`reference` that expires at `exp` (unix seconds).
pub fn mint(secret: &Secret, route: &str, reference: &str, exp: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose());
    let msg = format!("authback.v1|{route}|{reference}|{exp}");
    let tag = hmac::sign(&key, msg.as_bytes());
    format!("v1.{exp}.{}", base64url(tag.as_ref()))
}

/// Verifies `token` against every secret (rotation: any may match). The
/// comparison of the MAC is constant-time; only the expiry is public.
pub fn verify(
    token: &str,
    secrets: &[Secret],
    route: &str,
    reference: &str,
    now_unix: u64,
) -> Result<(), TokenError> {
    let rest = token.strip_prefix("v1.").ok_or(TokenError::Malformed)?;
    let (exp, mac) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    if exp.is_empty() || exp.len() > 12 || !exp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    // 32 bytes of MAC are always 43 base64url characters.
    if mac.len() != 43 {
        return Err(TokenError::Malformed);
    }
    let exp: u64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    // Check every secret even after a match, so timing does not say which one.
    let mut ok = false;
    for secret in secrets {
        ok |= ct_eq(
            mint(secret, route, reference, exp).as_bytes(),
            token.as_bytes(),
        );
    }
    if !ok {
        return Err(TokenError::Mismatch);
    }
    if exp <= now_unix {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// A `static_tokens` entry matches the whole token, constant-time.
pub fn verify_static(token: &str, tokens: &[Secret]) -> Result<(), TokenError> {
    let mut ok = false;
    for t in tokens {
        ok |= ct_eq(t.expose(), token.as_bytes());
    }
    if ok {
        Ok(())
    } else {
        Err(TokenError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s)
    }

    #[test]
    fn spec_test_vectors() {
        let s = secret("test-secret-1");
        assert_eq!(
            mint(&s, "klarna", "cart-1", 2_000_000_000),
            "v1.2000000000.FAeXBHVCAUynbF3lscZkBS1ZI4nh-Aa5JdmTd5UDKt8"
        );
        assert_eq!(
            mint(&s, "klarna", "", 2_000_000_000),
            "v1.2000000000.Q-oAChxxSdvbvlokFYDLoH2cZp0ha3bn2O2vA-gvzMY"
        );
    }

    #[test]
    fn verify_accepts_and_rejects() {
        let old = secret("old-secret-xxxxxxxx");
        let new = secret("new-secret-xxxxxxxx");
        let now = 1_900_000_000;
        let t = mint(&old, "klarna", "cart-1", 2_000_000_000);
        let both = [new.clone(), old.clone()];
        assert_eq!(verify(&t, &both, "klarna", "cart-1", now), Ok(()));
        assert_eq!(
            verify(&t, &[new], "klarna", "cart-1", now),
            Err(TokenError::Mismatch)
        );
        assert_eq!(
            verify(&t, &both, "other", "cart-1", now),
            Err(TokenError::Mismatch)
        );
        assert_eq!(
            verify(&t, &both, "klarna", "cart-2", now),
            Err(TokenError::Mismatch)
        );
        assert_eq!(
            verify(&t, &both, "klarna", "cart-1", 2_000_000_000),
            Err(TokenError::Expired)
        );
        for bad in [
            "",
            "v2.1.x",
            "v1.abc.def",
            "v1.2000000000",
            "v1..x",
            "v1.2000000000.short",
        ] {
            assert_eq!(
                verify(bad, &both, "klarna", "cart-1", now),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        // A forged MAC with the right shape is a mismatch, and a moved expiry too.
        let forged = format!("v1.2000000001.{}", &t[14..]);
        assert_eq!(
            verify(&forged, &both, "klarna", "cart-1", now),
            Err(TokenError::Mismatch)
        );
    }

    #[test]
    fn static_tokens() {
        let toks = [secret("static-one"), secret("static-two")];
        assert_eq!(verify_static("static-two", &toks), Ok(()));
        assert_eq!(
            verify_static("static-thr", &toks),
            Err(TokenError::Mismatch)
        );
        assert_eq!(verify_static("", &toks), Err(TokenError::Mismatch));
    }
}
