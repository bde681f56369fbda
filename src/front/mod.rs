//! The public side: listeners and connection workers, the PROXY protocol
//! from a balancer in front, TLS (certificate files in `certs`, the choice
//! by SNI in `sni`), strict request heads, the canonical path, the router
//! that decides, on one reading of each request, whether it is a callback
//! or pass-through, and the plain-HTTP redirect to https. Nothing here
//! talks to the store or the upstream itself.

mod certs;
pub(crate) mod head;
pub mod path;
pub(crate) mod proxy_protocol;
pub(crate) mod redirect;
pub(crate) mod router;
pub(crate) mod server;
pub(crate) mod sni;
pub mod tls;
pub(crate) mod workers;
