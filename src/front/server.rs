//! Listeners and connections: the TLS handshake (bounded in time), HTTP/1.1
//! and HTTP/2 on one port, connection limits, and the graceful drain. What a
//! request means is decided elsewhere (`app`, `admin`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::body::Body;
use crate::config::{Limits, ProxyProtocol};
use crate::front::workers::Workers;
use crate::ops::shutdown::Stop;

/// The sockets authback serves on, bound before `run` so that tests can use
/// ephemeral ports and so that a port in use is reported before anything starts.
pub struct Listeners {
    /// TLS (`server.listen`).
    pub public: Option<TcpListener>,
    /// Plain HTTP behind an ingress (`server.listen_plain`).
    pub plain: Option<TcpListener>,
    /// Plain HTTP that redirects to https (`server.listen_redirect`).
    pub redirect: Option<TcpListener>,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &crate::config::Config) -> std::io::Result<Self> {
        let bind = |addr: Option<SocketAddr>| match addr {
            None => Ok(None),
            Some(addr) => listen(addr, config.server.reuse_port)
                .map(Some)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                }),
        };
        Ok(Self {
            public: bind(config.server.listen)?,
            plain: bind(config.server.listen_plain)?,
            redirect: bind(config.server.listen_redirect)?,
            admin: TcpListener::bind(config.admin.listen).await.map_err(|e| {
                let addr = config.admin.listen;
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?,
        })
    }
}

/// Listens on `addr`. With `reuse_port` (`SO_REUSEPORT`), each connection
/// worker then listens on the same address with a socket of its own: the
/// kernel spreads new connections over them, and an accepted socket never
/// crosses threads. A process of the same user could then bind the port
/// too and take a share of the connections; without it, nothing else can
/// bind the port, and one accept loop hands connections to the workers.
/// Call it inside a runtime.
pub fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(reuse_port)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // The connection watchdog below bounds request heads and idle time;
        // hyper's own timer would also close idle keep-alive connections.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(limits.idle_timeout / 2)
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// How one listener serves its connections.
pub(crate) struct Options {
    /// TLS on this listener, or plain HTTP.
    pub tls: Option<TlsAcceptor>,
    pub limits: Limits,
    /// How long open connections may finish after `stop`.
    pub grace: Duration,
    /// Serve each connection on the next worker's thread; without, on the
    /// caller's runtime.
    pub workers: Option<Arc<Workers>>,
    /// A request in flight may wait this long for the upstream before its
    /// bytes count as stalled (0: only `limits.idle_timeout`).
    pub upstream_timeout: Duration,
    /// Read the PROXY protocol header (`server.proxy_protocol`) before
    /// anything else; the client it names is the peer.
    pub proxy_protocol: Option<Arc<ProxyProtocol>>,
}

/// Accepts connections until `stop`, then lets open ones finish within
/// `options.grace`.
pub(crate) async fn serve<H, F>(listener: TcpListener, options: Options, handler: H, stop: Stop)
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let Options {
        tls,
        limits,
        grace,
        workers,
        upstream_timeout,
        proxy_protocol,
    } = options;
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let accept = Accept {
        slots: slots.clone(),
        proto: Conn {
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            builder: Arc::new(builder(&limits)),
            handler,
            tls,
            proxy_protocol,
            timeouts: Timeouts {
                handshake: limits.tls_handshake_timeout,
                header_read: limits.header_read_timeout,
                idle: limits.idle_timeout,
                stalled: limits.idle_timeout.max(upstream_timeout),
            },
            stop: stop.clone(),
        },
    };
    match workers {
        None => accept.run(listener, None).await,
        Some(w) => match own_listeners(listener, w.len()) {
            // Each worker accepts on a socket of its own.
            Ok(mine) => {
                let loops: Vec<_> = mine
                    .into_iter()
                    .enumerate()
                    .map(|(i, std)| {
                        let accept = accept.clone();
                        w.spawn_on(i, async move {
                            match TcpListener::from_std(std) {
                                Ok(l) => accept.run(l, None).await,
                                Err(e) => tracing::error!(error = %e, "a worker cannot listen"),
                            }
                        })
                    })
                    .collect();
                for l in loops {
                    let _ = l.await;
                }
            }
            // A socket bound without SO_REUSEPORT: one accept loop hands
            // each connection to the next worker.
            Err((listener, e)) => {
                tracing::debug!(error = %e, "one accept loop for all workers");
                accept.run(listener, Some(w)).await;
            }
        },
    }
    // Every connection task holds a slot; all slots back means all are done.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace elapsed with connections still open; closing them");
    }
}

/// One socket per worker for what `listener` listens on: `listener` itself
/// and new sockets bound to its address with `SO_REUSEPORT`. Given back,
/// with why, when its address cannot be shared.
fn own_listeners(
    listener: TcpListener,
    n: usize,
) -> Result<Vec<std::net::TcpListener>, (TcpListener, std::io::Error)> {
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return Err((listener, e)),
    };
    let mut more = Vec::with_capacity(n.saturating_sub(1));
    for _ in 1..n {
        match listen(addr, true).and_then(|l| l.into_std()) {
            Ok(l) => more.push(l),
            Err(e) => return Err((listener, e)),
        }
    }
    // Taking a socket off this runtime's reactor fails only if epoll does.
    match listener.into_std() {
        Ok(first) => more.insert(0, first),
        Err(e) => tracing::error!(%addr, error = %e, "one worker cannot listen"),
    }
    Ok(more)
}

/// An accept loop: what every connection it takes needs, and the slots
/// that bound how many are served at once.
struct Accept<H> {
    slots: Arc<Semaphore>,
    /// Each connection's `Conn` is a copy of this one, with its peer.
    proto: Conn<H>,
}

impl<H: Clone> Clone for Accept<H> {
    fn clone(&self) -> Self {
        Accept {
            slots: self.slots.clone(),
            proto: self.proto.clone(),
        }
    }
}

impl<H, F> Accept<H>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    /// Accepts until the stop, serving each connection on this thread's
    /// runtime, or, with `hand_off`, on the next worker's.
    async fn run(&self, listener: TcpListener, hand_off: Option<Arc<Workers>>) {
        let stop = &self.proto.stop;
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.wait() => break,
            };
            // Beyond max_connections, a connection accepted waits for a
            // slot before anything is read from it; the next ones wait in
            // the kernel's backlog.
            let permit = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stop.wait() => break,
            };
            let _ = tcp.set_nodelay(true);
            let mut conn = self.proto.clone();
            conn.peer = peer;
            match &hand_off {
                None => {
                    tokio::spawn(async move {
                        let _permit = permit;
                        conn.run(tcp).await;
                    });
                }
                Some(w) => {
                    // The socket moves to the worker's own reactor.
                    let Ok(std) = tcp.into_std() else { continue };
                    w.spawn(async move {
                        let _permit = permit;
                        match TcpStream::from_std(std) {
                            Ok(tcp) => conn.run(tcp).await,
                            Err(e) => tracing::warn!(%peer, error = %e, "cannot hand a connection to a worker"),
                        }
                    });
                }
            }
        }
    }
}

/// One accepted connection and what serving it needs.
struct Conn<H> {
    peer: SocketAddr,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handler: H,
    tls: Option<TlsAcceptor>,
    proxy_protocol: Option<Arc<ProxyProtocol>>,
    timeouts: Timeouts,
    stop: Stop,
}

impl<H: Clone> Clone for Conn<H> {
    fn clone(&self) -> Self {
        Conn {
            peer: self.peer,
            builder: self.builder.clone(),
            handler: self.handler.clone(),
            tls: self.tls.clone(),
            proxy_protocol: self.proxy_protocol.clone(),
            timeouts: self.timeouts,
            stop: self.stop.clone(),
        }
    }
}

impl<H, F> Conn<H>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    /// Serves the connection, after its PROXY header when the listener
    /// reads one.
    async fn run(mut self, tcp: TcpStream) {
        let Some(config) = self.proxy_protocol.take() else {
            return self.serve(tcp).await;
        };
        let peer = self.peer;
        let read = crate::front::proxy_protocol::accept(tcp, peer, &config);
        let accepted = tokio::select! {
            r = read => r,
            _ = self.stop.wait() => return,
        };
        match accepted {
            Ok((io, client)) => {
                self.peer = client;
                self.serve(io).await;
            }
            Err(e) if e.is_notable() => tracing::info!(%peer, why = %e, "connection refused"),
            Err(e) => tracing::debug!(%peer, why = %e, "connection closed"),
        }
    }

    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            peer,
            builder,
            handler,
            tls,
            timeouts,
            stop,
            ..
        } = self;
        match tls {
            None => serve_io(io, peer, &builder, handler, timeouts, stop).await,
            Some(acceptor) => {
                let handshake = acceptor.accept(io);
                let stream = tokio::select! {
                    r = tokio::time::timeout(timeouts.handshake, handshake) => r,
                    _ = stop.wait() => return,
                };
                match stream {
                    Ok(Ok(s)) => {
                        // Each request says which TLS version carried it.
                        let version = TlsVersion::of(s.get_ref().1);
                        let handler = move |mut req: Request<Incoming>, peer| {
                            if let Some(v) = version {
                                req.extensions_mut().insert(v);
                            }
                            handler(req, peer)
                        };
                        serve_io(s, peer, &builder, handler, timeouts, stop).await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        }
    }
}

/// The TLS version a request arrived over, in its extensions; a request
/// on a plain listener has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TlsVersion(pub &'static str);

impl TlsVersion {
    fn of(conn: &rustls::ServerConnection) -> Option<TlsVersion> {
        match conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => Some(TlsVersion("TLSv1.3")),
            rustls::ProtocolVersion::TLSv1_2 => Some(TlsVersion("TLSv1.2")),
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
struct Timeouts {
    handshake: Duration,
    header_read: Duration,
    idle: Duration,
    /// How long a request in flight may go without a byte moving.
    stalled: Duration,
}

/// What the connection's watchdog knows: requests in flight, when the
/// connection last fell idle, and when a new request head started arriving.
/// Times are milliseconds since the connection was opened.
struct Activity {
    opened: Instant,
    in_flight: AtomicU32,
    served: AtomicBool,
    idle_since: AtomicU64,
    /// 1 + the time of the first byte read while idle; 0 when none was.
    head_since: AtomicU64,
    /// When bytes last moved either way.
    last_io: AtomicU64,
    /// When bytes were last written to the client.
    last_write: AtomicU64,
    h2: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            last_io: AtomicU64::new(0),
            last_write: AtomicU64::new(0),
            h2: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// When the connection is due to be closed for doing nothing, judged now.
    fn deadline(&self, t: &Timeouts) -> Instant {
        let head = self.head_since.load(Ordering::Acquire);
        let (from, limit) = if self.in_flight.load(Ordering::Acquire) > 0 {
            // A request in flight whose bytes stopped moving either way (a
            // client that stopped reading its response, say) for idle_timeout.
            // Waiting on the upstream is bounded by upstream.timeout first.
            (self.last_io.load(Ordering::Acquire), t.stalled)
        } else if !self.served.load(Ordering::Relaxed) {
            // A new connection must send its first request head promptly.
            (0, t.header_read)
        } else if head > 0 && !self.h2.load(Ordering::Relaxed) {
            // An HTTP/1 request head is trickling in: the slowloris guard.
            (head - 1, t.header_read)
        } else {
            (self.idle_since.load(Ordering::Acquire), t.idle)
        };
        let at = Duration::from_millis(from).saturating_add(limit);
        // Config durations are at most 100 years; this cannot overflow, but
        // a deadline past the clock's range would just mean "never".
        self.opened
            .checked_add(at)
            .unwrap_or_else(|| self.opened + Duration::from_secs(86_400 * 365))
    }

    /// How long since the last write to the client.
    fn written_ago(&self, now: Instant) -> Duration {
        let last = self.opened + Duration::from_millis(self.last_write.load(Ordering::Acquire));
        now.saturating_duration_since(last)
    }

    fn wrote_some(&self) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Release);
        self.last_write.store(now, Ordering::Release);
    }
}

/// Marks one request in flight until its response body is dropped, which
/// hyper does once the body is sent or the request is abandoned.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        a.served.store(true, Ordering::Relaxed);
        a.head_since.store(0, Ordering::Release);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now_ms(), Ordering::Release);
        self.0.head_since.store(0, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight.
pub(crate) struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::body::BodyError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, noting the first bytes read while no request is
/// in flight (a request head starting) and whether the client speaks HTTP/2.
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
    /// How many bytes of the HTTP/2 preface the client has sent so far;
    /// `usize::MAX` once it is known not to be one.
    preface: usize,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            let a = &this.activity;
            let now = a.now_ms();
            a.last_io.store(now, Ordering::Release);
            if this.preface < H2_PREFACE.len() {
                // Decided only on the whole preface: "P" may begin a POST.
                let want = &H2_PREFACE[this.preface..];
                let n = read.len().min(want.len());
                if read[..n] == want[..n] {
                    this.preface += n;
                    if this.preface == H2_PREFACE.len() {
                        a.h2.store(true, Ordering::Relaxed);
                    }
                } else {
                    this.preface = usize::MAX;
                }
            }
            if a.in_flight.load(Ordering::Acquire) == 0 && a.head_since.load(Ordering::Acquire) == 0
            {
                a.head_since.store(now + 1, Ordering::Release);
            }
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                this.activity.wrote_some();
            }
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                this.activity.wrote_some();
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// How long a connection told to close (idle, or shutting down with nothing
/// in flight) may take to say goodbye before it is dropped.
const GOODBYE: Duration = Duration::from_secs(1);

/// Serves one connection, closing it when it idles past `idle_timeout`, when
/// a request head takes longer than `header_read_timeout`, or, gracefully,
/// when the server stops.
async fn serve_io<I, H, F>(
    io: I,
    peer: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    handler: H,
    t: Timeouts,
    stop: Stop,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Watched {
        io,
        activity: activity.clone(),
        preface: 0,
    };
    let svc = {
        let activity = activity.clone();
        service_fn(move |req| {
            let guard = InFlight::start(&activity);
            let fut = handler(req, peer);
            async move {
                let resp = fut.await;
                Ok::<_, Infallible>(resp.map(|body| Tracked {
                    body,
                    _in_flight: guard,
                }))
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut closing = false;
    let recheck = t.header_read.min(t.idle);
    let watchdog = tokio::time::sleep(recheck);
    tokio::pin!(watchdog);
    loop {
        tokio::select! {
            // The connection first: bytes already read are served before the
            // watchdog can judge the connection idle.
            biased;
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait(), if !closing => {
                // Finish what is in flight; new requests are refused.
                conn.as_mut().graceful_shutdown();
                closing = true;
                watchdog.as_mut().reset(tokio::time::Instant::now() + GOODBYE);
            }
            _ = watchdog.as_mut() => {
                let now = Instant::now();
                let in_flight = activity.in_flight.load(Ordering::Acquire) > 0;
                let due = activity.deadline(&t) <= now;
                if in_flight && due {
                    tracing::debug!(%peer, "dropping a connection whose request stalled");
                    return;
                }
                if closing {
                    // Nothing in flight and the last answer written: the
                    // goodbye is over (a trickling head does not extend it).
                    if !in_flight && activity.written_ago(now) >= GOODBYE {
                        return;
                    }
                    watchdog.as_mut().reset((now + GOODBYE).into());
                } else if due {
                    tracing::debug!(%peer, "closing an idle or slow connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    watchdog.as_mut().reset((now + GOODBYE).into());
                } else {
                    // Look again by `recheck` at the latest: a request head
                    // may start arriving meanwhile, with a nearer deadline.
                    let at = activity.deadline(&t).min(now + recheck);
                    watchdog.as_mut().reset(at.into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with every server key left to its default.
    const DEFAULTS: &str = crate::config::MINIMAL;

    /// By default the public port is bound by one socket alone: another
    /// process of the same user cannot bind it beside authback and take a
    /// share of the connections. Only `reuse_port = true` lets sockets
    /// share it, one per worker.
    #[tokio::test]
    async fn a_port_is_shared_only_when_reuse_port_is_turned_on() {
        let here = std::path::Path::new(".");
        let default = crate::config::Config::parse(DEFAULTS, here).expect("valid");
        let on_text = DEFAULTS.replace("[server.tls]", "reuse_port = true\n[server.tls]");
        let on = crate::config::Config::parse(&on_text, here).expect("valid");
        let any = SocketAddr::from(([127, 0, 0, 1], 0));

        let alone = listen(any, default.server.reuse_port).expect("bind");
        let addr = alone.local_addr().expect("addr");
        assert!(
            listen(addr, true).is_err(),
            "a SO_REUSEPORT socket bound the port beside the default"
        );
        let (back, _) = own_listeners(alone, 3).expect_err("falls back to one socket");
        assert_eq!(back.local_addr().expect("addr"), addr);

        let shared = listen(any, on.server.reuse_port).expect("bind");
        let addr = shared.local_addr().expect("addr");
        let beside = listen(addr, true).expect("another socket shares the port");
        assert_eq!(beside.local_addr().expect("addr"), addr);
        drop(beside);
        let mine = own_listeners(shared, 3).expect("one socket per worker");
        assert_eq!(mine.len(), 3);
        for l in &mine {
            assert_eq!(l.local_addr().expect("addr"), addr);
        }
    }
}
