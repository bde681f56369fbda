//! The admin listener: the /v1 API and health endpoints (api), and the
//! operator console with its CLI client (console). Never on the public port.

pub mod api;
pub mod console;
pub mod guard;
pub mod view;
