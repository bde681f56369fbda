//! Pass-through's own HTTP/1.1 connections to the upstream, one idle list
//! per connection worker. A worker's requests check a connection out of its
//! thread's list and put it back once the response body has ended: no lock,
//! no pool key to hash, and the request target goes out in origin form as
//! the client sent it. Upgrades, deliveries and requests served off the
//! workers use the pooled client (`client`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Error;
use crate::body::{Body, Returning};
use crate::net::HostPort;

/// Idle connections kept per worker; more are closed when they come back.
const MAX_IDLE: usize = 256;
/// An idle connection unused this long is closed.
const IDLE_FOR: Duration = Duration::from_secs(60);

type Sender = http1::SendRequest<Body>;

thread_local! {
    /// This worker's idle upstream connections, the most recently used last.
    static IDLE: RefCell<VecDeque<(Sender, Instant)>> = const { RefCell::new(VecDeque::new()) };
}

/// The most recently used connection that can take a request now. One still
/// finishing its last response is left for later rather than waited on; one
/// idle for `IDLE_FOR` is closed, not used (a firewall on the way may have
/// forgotten it without a word).
fn checkout() -> Option<Sender> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let now = Instant::now();
        idle.retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < IDLE_FOR);
        let i = idle.iter().rposition(|(s, _)| s.is_ready())?;
        idle.remove(i).map(|(s, _)| s)
    })
}

/// Takes a connection back once its response has been read to the end.
fn put_back(s: Sender) {
    if s.is_closed() {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let now = Instant::now();
        while idle
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= IDLE_FOR)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back((s, now));
        }
    });
}

async fn connect(addr: &HostPort, timeout: Duration) -> Result<Sender, Error> {
    let stream =
        match tokio::time::timeout(timeout, TcpStream::connect((addr.host(), addr.port()))).await {
            Err(_) => return Err(Error::ConnectTimeout),
            Ok(Err(e)) => return Err(Error::Connect(e)),
            Ok(Ok(s)) => s,
        };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// Sends `req` (origin-form target, `Host` set) on one of this worker's
/// connections, or a new one. A request that a kept-alive connection closed
/// under before it was written goes again on a new connection, as the
/// pooled client does.
pub(crate) async fn send(
    addr: &HostPort,
    connect_timeout: Duration,
    mut req: Request<Body>,
) -> Result<Response<Returning>, Error> {
    loop {
        let (mut sender, reused) = match checkout() {
            Some(s) => (s, true),
            None => (connect(addr, connect_timeout).await?, false),
        };
        if let Err(e) = sender.ready().await {
            if reused {
                continue;
            }
            return Err(Error::Http(e));
        }
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok(returning(resp, sender)),
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => req = unsent,
                _ => return Err(Error::Http(e.into_error())),
            },
        }
    }
}

fn returning(resp: Response<Incoming>, sender: Sender) -> Response<Returning> {
    resp.map(|body| Returning::new(body, sender, put_back))
}
