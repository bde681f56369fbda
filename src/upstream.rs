//! Pass-through's own HTTP/1.1 connections to the upstream, one idle list
//! per connection worker. A worker's requests check a connection out of its
//! thread's list and put it back once the response body has ended: no lock,
//! no pool key to hash, and the request target goes out in origin form as
//! the client sent it. Upgrades and requests served off the workers keep
//! using the pooled client in `proxy`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::Body;

/// Idle connections kept per worker; more are closed when they come back.
const MAX_IDLE: usize = 256;
/// An idle connection unused this long is closed.
const IDLE_FOR: Duration = Duration::from_secs(60);

type Sender = http1::SendRequest<Body>;

thread_local! {
    /// This worker's idle upstream connections, the most recently used last.
    static IDLE: RefCell<VecDeque<(Sender, Instant)>> = const { RefCell::new(VecDeque::new()) };
}

/// Why a request did not reach the upstream or got no answer.
#[derive(Debug)]
pub enum Error {
    ConnectTimeout,
    Connect(std::io::Error),
    Http(hyper::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::ConnectTimeout => f.write_str("connecting to the upstream timed out"),
            Error::Connect(e) => write!(f, "cannot connect to the upstream: {e}"),
            Error::Http(e) => write!(f, "{}", crate::proxy::error_chain(e)),
        }
    }
}

/// The upstream's address, as `connect` wants it.
#[derive(Clone, Debug)]
pub struct Address {
    host: String,
    port: u16,
}

impl Address {
    pub fn new(uri: &http::Uri) -> Option<Self> {
        let host = uri.host()?;
        // `[::1]` in a URI is `::1` to the resolver.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Some(Address {
            host,
            port: uri.port_u16().unwrap_or(80),
        })
    }
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

async fn connect(addr: &Address, timeout: Duration) -> Result<Sender, Error> {
    let stream =
        match tokio::time::timeout(timeout, TcpStream::connect((addr.host.as_str(), addr.port)))
            .await
        {
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
pub async fn send(
    addr: &Address,
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
    resp.map(|body| Returning {
        body,
        sender: Some(sender),
        ended: false,
    })
}

/// A response body that puts its connection back in the worker's idle list
/// once it has been read to the end (or had nothing to read).
pub struct Returning {
    body: Incoming,
    sender: Option<Sender>,
    ended: bool,
}

impl http_body::Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.body).poll_frame(cx);
        match &r {
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Err(_))) => this.sender = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let Some(s) = self.sender.take() {
            // A body dropped before its end leaves the connection mid-message:
            // hyper closes it, so it is not kept.
            if self.ended || self.body.is_end_stream() {
                put_back(s);
            }
        }
    }
}
