//! One body type for everything authback sends or receives, so the proxy can
//! stream hyper's `Incoming` through untouched while local answers are plain
//! bytes, without boxing every body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use crate::ops::access_log::Logged;

pub(crate) enum Body {
    Bytes(Option<Bytes>),
    Incoming(Incoming),
    /// A pass-through response on a worker's own upstream connection.
    Upstream(Returning),
    /// A proxied request body that something reads as it streams.
    Inspected(Box<Inspected<dyn Inspect>>),
    /// An answer whose request the access log writes once it is sent.
    Logged(Box<Logged<Body>>),
}

/// Why a body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// Its `Inspect` refused it: a form body carried a name a callback
    /// route matches (`proxy::forms`).
    #[error("the body carried a parameter a callback route matches")]
    Refused,
}

/// Reads a request body piece by piece as it streams to the upstream, and
/// may refuse it: then the body ends in `BodyError::Refused` and the
/// request is cut off. The proxy's form scanner is the one there is.
pub(crate) trait Inspect: Send + Sync + Unpin {
    /// One piece; `false` refuses the body.
    fn feed(&mut self, data: &[u8]) -> bool;
    /// The body has ended; `false` refuses it.
    fn finish(&mut self) -> bool;
}

/// A body read by an `Inspect` as it streams.
pub(crate) struct Inspected<I: ?Sized> {
    body: Incoming,
    inspect: I,
}

impl<I: Inspect + 'static> Inspected<I> {
    pub(crate) fn body(body: Incoming, inspect: I) -> Body {
        Body::Inspected(Box::new(Inspected { body, inspect }))
    }
}

impl http_body::Body for Inspected<dyn Inspect> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !this.inspect.feed(data) {
                        return Poll::Ready(Some(Err(BodyError::Refused)));
                    }
                }
                // The last piece: it is judged before it goes, since hyper
                // may not ask again once the body says it ended.
                if this.body.is_end_stream() && !this.inspect.finish() {
                    return Poll::Ready(Some(Err(BodyError::Refused)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                if !this.inspect.finish() {
                    return Poll::Ready(Some(Err(BodyError::Refused)));
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Http(e)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Only after the last piece was read, and judged (`poll_frame`).
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Body {
    pub(crate) fn empty() -> Self {
        Body::Bytes(None)
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        if b.is_empty() {
            Body::Bytes(None)
        } else {
            Body::Bytes(Some(b))
        }
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl From<Incoming> for Body {
    fn from(b: Incoming) -> Self {
        Body::Incoming(b)
    }
}

impl From<Returning> for Body {
    fn from(b: Returning) -> Self {
        Body::Upstream(b)
    }
}

/// A response body read on a connection lent for one exchange: once the
/// body has been read to its end (or had nothing to read), `home` takes
/// the connection back for the next request. A body dropped before its end
/// leaves the connection mid-message, and hyper closes it.
pub(crate) struct Returning {
    body: Incoming,
    sender: Option<SendRequest<Body>>,
    ended: bool,
    home: fn(SendRequest<Body>),
}

impl Returning {
    pub(crate) fn new(
        body: Incoming,
        sender: SendRequest<Body>,
        home: fn(SendRequest<Body>),
    ) -> Self {
        Returning {
            body,
            sender: Some(sender),
            ended: false,
            home,
        }
    }
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
            if self.ended || http_body::Body::is_end_stream(&self.body) {
                (self.home)(s);
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let http = |p: Poll<Option<Result<Frame<Bytes>, hyper::Error>>>| {
            p.map(|f| f.map(|r| r.map_err(BodyError::Http)))
        };
        match self.get_mut() {
            Body::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Incoming(i) => http(Pin::new(i).poll_frame(cx)),
            Body::Upstream(u) => http(Pin::new(u).poll_frame(cx)),
            Body::Inspected(s) => Pin::new(s.as_mut()).poll_frame(cx),
            Body::Logged(l) => Pin::new(l.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Bytes(b) => b.is_none(),
            Body::Incoming(i) => i.is_end_stream(),
            Body::Upstream(u) => u.is_end_stream(),
            Body::Inspected(s) => s.is_end_stream(),
            Body::Logged(l) => l.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Incoming(i) => i.size_hint(),
            Body::Upstream(u) => u.size_hint(),
            Body::Inspected(s) => s.size_hint(),
            Body::Logged(l) => l.size_hint(),
        }
    }
}

/// `{"error": CODE, "message": TEXT}` with `status`.
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `value` as a JSON answer.
pub(crate) fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    let body = match serde_json::to_string(value) {
        Ok(body) => body,
        Err(e) => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &format!("cannot write the answer: {e}"),
            )
        }
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(crate) fn text(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub(crate) fn status(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}
