//! The pooled keep-alive client: for deliveries, upgrades, and requests
//! served off the connection workers (the workers' others go through `pool`).

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;

pub(crate) type Pooled = Client<HttpConnector, Body>;

pub(crate) fn pooled(connect_timeout: Duration) -> Pooled {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(http)
}
