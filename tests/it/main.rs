//! Integration tests: real sockets on 127.0.0.1, real TLS, a real upstream.
//! One test binary (modules per area) so the crate is linked once.
//!
//! A test waits for what it expects (`eventually!`, in common/wait.rs),
//! never for a fixed time; it sleeps only to show that something does not
//! happen. On a slow or loaded machine, `AUTHBACK_TEST_PATIENCE` (a
//! multiplier, default 1) stretches every wait's limit:
//! `AUTHBACK_TEST_PATIENCE=3 cargo test --test it`.

mod common;

mod access_log;
mod admin;
mod callback;
mod chaos;
mod console;
mod doctor;
mod durability;
mod examples;
mod failover;
mod front_door;
mod fuzz;
mod hsts;
mod lifecycle;
mod order_watch;
mod php;
mod platforms;
mod probe;
mod process;
mod properties;
mod proxy;
mod reading;
mod reconcile;
mod redis_tls;
mod replicas;
mod retry_after;
mod shield;
mod slow;
mod store;
mod tls;
