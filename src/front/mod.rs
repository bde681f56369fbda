//! The public side: listeners and connection workers, TLS, strict request
//! heads, the canonical path, and the router that
//! decides, on one reading of each request, whether it is a callback or
//! pass-through. Nothing here talks to the store or the upstream itself.

pub mod head;
pub mod path;
pub mod router;
pub mod server;
pub mod tls;
pub mod workers;
