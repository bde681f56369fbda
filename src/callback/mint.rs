//! Callback URLs for `merchant_urls.authorization`: a route's path for a
//! reference, with a token that expires. Used by `authback mint-url` and
//! the admin API; the token format itself is `token`'s.

use std::time::Duration;

use crate::config::Config;
use crate::route::Route;

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("no route named `{0}`")]
    UnknownRoute(String),
    #[error("reference must be 1-128 characters of A-Z a-z 0-9 . _ ~ -")]
    BadReference,
    #[error("route `{0}` has no {{reference}} in its path; pass an empty reference")]
    NoReferenceInPath(String),
    #[error("route `{0}` has no secrets to mint with (static_tokens and unverified routes need no minting)")]
    NoSecrets(String),
    #[error("ttl must be greater than zero")]
    ZeroTtl,
    #[error("ttl must be at most {0} (admin.max_url_ttl)")]
    TtlTooLong(String),
}

/// Mints the callback URL for `merchant_urls.authorization`; returns it with
/// its expiry (unix seconds).
pub(crate) fn mint_url(
    route: &Route,
    public_url: &str,
    reference: &str,
    ttl: Duration,
    max_ttl: Duration,
    now_unix: u64,
) -> Result<(String, u64), MintError> {
    let secret = route
        .secrets
        .first()
        .ok_or_else(|| MintError::NoSecrets(route.name.clone()))?;
    if ttl.is_zero() {
        return Err(MintError::ZeroTtl);
    }
    if ttl > max_ttl {
        return Err(MintError::TtlTooLong(crate::text::format_duration(max_ttl)));
    }
    let path = route.path.render(reference).ok_or_else(|| {
        if route.path.suffix.is_none() {
            MintError::NoReferenceInPath(route.name.clone())
        } else {
            MintError::BadReference
        }
    })?;
    let exp = now_unix + ttl.as_secs().max(1);
    let token = super::token::mint(secret, &route.name, reference, exp);
    Ok((format!("{public_url}{path}?token={token}"), exp))
}

/// The callback URL of route `route` for `reference` under `config`'s
/// `public_url`, valid for `ttl` (at most `admin.max_url_ttl`), with its
/// expiry in unix seconds.
pub fn for_route(
    config: &Config,
    route: &str,
    reference: &str,
    ttl: Duration,
    now_unix: u64,
) -> Result<(String, u64), MintError> {
    let r = config
        .route(route)
        .ok_or_else(|| MintError::UnknownRoute(route.to_string()))?;
    mint_url(
        r,
        &config.server.public_url,
        reference,
        ttl,
        config.admin.max_url_ttl,
        now_unix,
    )
}
