//! Test harness shared by every integration test, one file per fake or
//! helper, all re-exported here (`use crate::common::*;`):
//! - `certs`: temporary folders and self-signed certificates;
//! - `upstream`: a programmable upstream that records what it receives;
//! - `authback`: authback itself, in process on ephemeral ports, with its
//!   config helpers and HTTPS and admin clients;
//! - `binary`: the real binary, on a config file and fixed ports;
//! - `klarna`: a Klarna that calls back the way Klarna does (2 s connect +
//!   2 s read timeout, 3 attempts, backoff 1 s), and its Read Session and
//!   Create Order API;
//! - `shop`: a shop backend that places orders at that API;
//! - `redis`: a real redis-server of the test's own, replicas, sentinels;
//! - `failover`: the failover drill (Redis primary, replica, sentinels, two
//!   authbacks, Klarna sending all along, the primary killed);
//! - `trace`: the secrets audit's logging;
//! - `wait`: `eventually!`, waiting for what a test expects, with patience.

#![allow(dead_code)]

mod authback;
mod binary;
mod certs;
mod failover;
mod klarna;
mod redis;
mod shop;
mod trace;
mod upstream;
mod wait;

// The benches include this harness too, and use less of it.
#[allow(unused_imports)]
pub use {
    self::authback::*,
    binary::*,
    certs::*,
    failover::*,
    klarna::*,
    redis::*,
    shop::*,
    trace::{init_trace, sensitive, with_access_log},
    upstream::*,
    wait::*,
};

use bytes::Bytes;

pub const SECRET: &str = "integration-test-secret-0123456789";
pub const SIGNING_SECRET: &str = "integration-signing-secret-abcdef";
pub const OLD_SECRET: &str = "old-secret-still-verifies-0123456789";

// ---------------------------------------------------------------------------
// Metrics pages, and request bodies.

/// `authback_callbacks_total` for route `klarna` and `outcome`.
pub fn callbacks(page: &str, outcome: &str) -> Option<f64> {
    metric(
        page,
        &format!("authback_callbacks_total{{route=\"klarna\",outcome=\"{outcome}\"}}"),
    )
}

/// `authback_deliveries_total` for route `klarna` and `outcome`.
pub fn deliveries(page: &str, outcome: &str) -> Option<f64> {
    metric(
        page,
        &format!("authback_deliveries_total{{route=\"klarna\",outcome=\"{outcome}\"}}"),
    )
}

/// The value of one sample line of a Prometheus text page.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// A request body sent as separate frames with no length announced.
pub struct Chunks(pub Vec<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.0.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let next = self.0.remove(0);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(next))))
    }
}
