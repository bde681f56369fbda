//! The public side: listeners and connection workers, TLS (certificate
//! files in `certs`, the choice by SNI in `sni`), strict request
//! heads, the canonical path, and the router that
//! decides, on one reading of each request, whether it is a callback or
//! pass-through. Nothing here talks to the store or the upstream itself.

mod certs;
pub(crate) mod head;
pub mod path;
pub(crate) mod router;
pub(crate) mod server;
mod sni;
pub mod tls;
pub(crate) mod workers;
