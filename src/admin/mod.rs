//! The admin listener: the /v1 API and health endpoints (api), resolving
//! failed deliveries (resolve), and the operator console with its CLI
//! client (console). Never on the public port.

pub(crate) mod api;
pub mod console;
pub(crate) mod guard;
pub(crate) mod resolve;
pub(crate) mod view;
