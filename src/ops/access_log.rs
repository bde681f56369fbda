//! The access log: one JSON line per request on a public listener, written
//! when its answer has been sent. A request only queues its line: a thread
//! of the log's own writes the lines in batches (`Writer::run`), so a slow
//! disk or a blocked stdout never holds a request. A full queue drops the line and counts it
//! (`authback_access_log_dropped_total`). A file is opened again on SIGHUP,
//! after a rotation, with no queued line lost.
//!
//! A line never carries a query string, and the router gives a callback
//! route's request the route's path pattern, not its path: some plugins
//! carry their token in the path.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

use crate::config::{AccessLogConfig, AccessLogTarget};
use crate::ops::metrics::Metrics;
use crate::ops::shutdown::Stop;

/// Lines waiting for the writer; past this many, a new line is dropped.
/// At 50,000 requests a second that is 160 ms of them: eight `GATHER`s.
const QUEUE: usize = 8192;

/// The writer's buffer is written out when it holds this much, and after
/// each batch.
const BUFFER: usize = 64 * 1024;

/// While lines keep coming, the writer takes them this often.
const GATHER: Duration = Duration::from_millis(20);

/// The longest `X-Request-Id` logged; a longer or odd one is left out.
const MAX_REQUEST_ID: usize = 128;

/// The queue to the writer thread.
pub(crate) struct AccessLog {
    queue: SyncSender<Msg>,
    /// Set on SIGHUP: the writer opens the file again before its next line.
    reopen: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

enum Msg {
    Line(Box<Line>),
    /// Wakes the writer for a reopen (`reopen` says it, should the queue
    /// be full).
    Reopen,
    /// Write out what is buffered, then say so.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl AccessLog {
    /// Opens `config.to` and starts the writer; for a file, also the task
    /// that reopens it on SIGHUP, until `stop`. Call it inside a runtime.
    pub(crate) fn start(
        config: &AccessLogConfig,
        metrics: Arc<Metrics>,
        stop: Stop,
    ) -> std::io::Result<(Arc<AccessLog>, Option<JoinHandle<()>>)> {
        let out = match &config.to {
            AccessLogTarget::Stdout => Output::Stdout,
            AccessLogTarget::File(path) => Output::File {
                file: open(path)?,
                path: path.clone(),
            },
        };
        let log = Arc::new(AccessLog::spawn(out, QUEUE, metrics)?);
        let hup = match &config.to {
            AccessLogTarget::Stdout => None,
            AccessLogTarget::File(_) => Some(log.reopen_on_sighup(stop)),
        };
        Ok((log, hup))
    }

    fn spawn(out: Output, capacity: usize, metrics: Arc<Metrics>) -> std::io::Result<AccessLog> {
        let (queue, lines) = std::sync::mpsc::sync_channel(capacity);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            out,
            buf: Vec::with_capacity(BUFFER),
            buffered: 0,
            reopen: reopen.clone(),
            metrics: metrics.clone(),
            failing: false,
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(lines))?;
        Ok(AccessLog {
            queue,
            reopen,
            metrics,
        })
    }

    fn reopen_on_sighup(&self, stop: Stop) -> JoinHandle<()> {
        let (queue, reopen) = (self.queue.clone(), self.reopen.clone());
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot catch SIGHUP; the access log file is not reopened");
                    return;
                }
            };
            loop {
                tokio::select! {
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reopening the access log file");
                        reopen.store(true, Ordering::Release);
                        let _ = queue.try_send(Msg::Reopen);
                    }
                    _ = stop.wait() => return,
                }
            }
        })
    }

    /// Begins the line of a request that arrived now from `client`, over
    /// `tls` (its version) or plain HTTP.
    pub(crate) fn begin(
        self: &Arc<Self>,
        method: &Method,
        headers: &HeaderMap,
        client: IpAddr,
        tls: Option<&'static str>,
    ) -> Entry {
        Entry {
            log: self.clone(),
            started: Instant::now(),
            tally: Arc::default(),
            line: Box::new(Line {
                at_ms: crate::types::unix_ms(),
                client,
                method: method.clone(),
                path: None,
                route: None,
                status: 0,
                bytes_in: 0,
                bytes_out: 0,
                duration_us: 0,
                upstream: None,
                tls,
                request_id: request_id(headers),
            }),
        }
    }

    fn send(&self, line: Box<Line>) {
        match self.queue.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.access_log_dropped();
            }
        }
    }

    /// Waits, up to `within`, until every line queued so far is written.
    pub(crate) async fn flush(&self, within: Duration) {
        let (done, written) = tokio::sync::oneshot::channel();
        let queue = self.queue.clone();
        // The queue may be full: wait for room on a thread that may block.
        let sent = tokio::task::spawn_blocking(move || queue.send(Msg::Flush(done)).is_ok());
        let _ = tokio::time::timeout(within, async {
            if matches!(sent.await, Ok(true)) {
                let _ = written.await;
            }
        })
        .await;
    }
}

/// The client's `X-Request-Id`, when it is 1 to 128 visible ASCII
/// characters; authback makes none of its own.
fn request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
    let v = headers.get(&X_REQUEST_ID)?;
    let b = v.as_bytes();
    let fine = (1..=MAX_REQUEST_ID).contains(&b.len()) && b.iter().all(|c| c.is_ascii_graphic());
    fine.then(|| v.clone())
}

/// What a request's handlers tell its line as they go: the body bytes
/// read, and the upstream's answer and how long it took.
#[derive(Default)]
pub(crate) struct Tally {
    bytes_in: AtomicU64,
    /// The upstream's status; 0 when it gave none.
    upstream_status: AtomicU16,
    /// 1 + the microseconds the upstream took; 0 when it was not asked.
    upstream_us: AtomicU64,
}

impl Tally {
    /// `n` more bytes of the request body were read.
    pub(crate) fn read(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The upstream answered `status` (`None`: it failed or timed out)
    /// after `took`.
    pub(crate) fn upstream(&self, status: Option<u16>, took: Duration) {
        self.upstream_status
            .store(status.unwrap_or(0), Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX - 1);
        self.upstream_us.store(us + 1, Ordering::Relaxed);
    }
}

/// One line, as the writer turns it into JSON.
struct Line {
    at_ms: u64,
    client: IpAddr,
    method: Method,
    /// Set as the request is routed (`Entry::route`, `Entry::path`).
    path: Option<Arc<str>>,
    /// The route's name; `None` for the pass-through.
    route: Option<Arc<str>>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration_us: u64,
    /// The upstream's status, if it gave one, and the microseconds it took.
    upstream: Option<(Option<u16>, u64)>,
    tls: Option<&'static str>,
    request_id: Option<HeaderValue>,
}

impl Line {
    /// The line as one JSON object and a newline. Laid out field by field
    /// rather than through a derived `Serialize`, which cost three times as
    /// many instructions (BENCHMARKS.md); every string that may hold any
    /// character (the method, the path, the route, the request id) is
    /// written by serde_json, quoted and escaped, and the rest are digits.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(crate::text::rfc3339_ms(self.at_ms).as_bytes());
        out.extend_from_slice(b"\",\"client\":\"");
        out.extend_from_slice(crate::net::ip_text(self.client).as_bytes());
        out.extend_from_slice(b"\",\"method\":");
        json_str(out, self.method.as_str());
        out.extend_from_slice(b",\"path\":");
        json_str(out, self.path.as_deref().unwrap_or(""));
        out.extend_from_slice(b",\"status\":");
        digits(out, u64::from(self.status));
        out.extend_from_slice(b",\"bytes_in\":");
        digits(out, self.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        digits(out, self.bytes_out);
        out.extend_from_slice(b",\"duration_ms\":");
        millis(out, self.duration_us);
        out.extend_from_slice(b",\"route\":");
        json_str(out, self.route.as_deref().unwrap_or("proxy"));
        out.extend_from_slice(b",\"upstream_status\":");
        match self.upstream.and_then(|(s, _)| s) {
            Some(s) => digits(out, u64::from(s)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"upstream_ms\":");
        match self.upstream {
            Some((_, us)) => millis(out, us),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"tls\":");
        match self.tls {
            Some(v) => json_str(out, v),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"request_id\":");
        match self.request_id.as_ref().and_then(|v| v.to_str().ok()) {
            Some(id) => json_str(out, id),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}\n");
    }
}

/// `s` as a JSON string: quoted, and escaped by serde_json.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `n` in decimal.
fn digits(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

/// Microseconds as milliseconds with three decimals: `1.412`.
fn millis(out: &mut Vec<u8>, us: u64) {
    digits(out, us / 1000);
    let frac = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// One request's line, filled in as the request is routed and answered,
/// and queued when its answer's body is done with (`Logged`).
pub(crate) struct Entry {
    log: Arc<AccessLog>,
    started: Instant,
    tally: Arc<Tally>,
    line: Box<Line>,
}

impl Entry {
    /// What the handlers add to the line.
    pub(crate) fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    /// The request is a callback route's: logged under the route's name
    /// and path pattern, never its path.
    pub(crate) fn route(&mut self, name: &Arc<str>, pattern: &Arc<str>) {
        self.line.route = Some(name.clone());
        self.line.path = Some(pattern.clone());
    }

    /// The request is the pass-through's, for `path` (no query).
    pub(crate) fn path(&mut self, path: &str) {
        self.line.route = None;
        self.line.path = Some(Arc::from(path));
    }

    /// Wraps the answer's body: the line goes when it is done with.
    pub(crate) fn answered<B>(mut self, status: u16, body: B) -> Logged<B> {
        self.line.status = status;
        Logged {
            body,
            sent: 0,
            entry: Some(self),
        }
    }

    fn finish(mut self, bytes_out: u64) {
        let line = &mut self.line;
        line.bytes_out = bytes_out;
        line.duration_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        line.bytes_in = self.tally.bytes_in.load(Ordering::Relaxed);
        let us = self.tally.upstream_us.load(Ordering::Relaxed);
        if us > 0 {
            let status = self.tally.upstream_status.load(Ordering::Relaxed);
            line.upstream = Some(((status > 0).then_some(status), us - 1));
        }
        self.log.send(self.line);
    }
}

/// An answer's body that counts the bytes it gives, and queues its
/// request's line when it is dropped: once sent, or abandoned.
pub(crate) struct Logged<B> {
    body: B,
    sent: u64,
    entry: Option<Entry>,
}

impl<B> http_body::Body for Logged<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &r {
            if let Some(data) = frame.data_ref() {
                this.sent += data.len() as u64;
            }
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

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            entry.finish(self.sent);
        }
    }
}

/// Opens the log file for appending; a new one is readable by its group
/// (a log shipper) and nobody else.
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

enum Output {
    Stdout,
    File {
        path: PathBuf,
        file: std::fs::File,
    },
    #[cfg(test)]
    Test(Box<dyn Write + Send>),
}

impl Output {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            // Locked only while writing: the rest of the process may print.
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            Output::File { file, .. } => file.write_all(buf),
            #[cfg(test)]
            Output::Test(w) => w.write_all(buf),
        }
    }

    /// Opens the file again at its path (after a rotation). On failure the
    /// file open so far stays in use.
    fn reopen(&mut self) {
        if let Output::File { path, file } = self {
            match open(path) {
                Ok(f) => *file = f,
                Err(e) => {
                    tracing::error!(error = %e, "cannot reopen the access log file; writing on to the one open")
                }
            }
        }
    }
}

/// The writer thread: lines from the queue into `buf`, and `buf` out.
struct Writer {
    out: Output,
    buf: Vec<u8>,
    /// Lines in `buf`.
    buffered: u64,
    reopen: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// Writing failed last time: logged once until it works again.
    failing: bool,
}

impl Writer {
    /// Until every sender is gone (the log is dropped). Idle, the thread
    /// sleeps until a line comes, and writes it at once. While lines keep
    /// coming, it takes what gathered every `GATHER` and writes it in one
    /// go: a request then queues its line without waking the thread, and
    /// the lines share one write, where one each would cost a wake-up and
    /// a write(2) per request.
    fn run(mut self, queue: Receiver<Msg>) {
        while let Ok(first) = queue.recv() {
            self.take(first);
            loop {
                let mut took = 0;
                loop {
                    match queue.try_recv() {
                        Ok(msg) => {
                            self.take(msg);
                            took += 1;
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            self.write_out();
                            return;
                        }
                    }
                }
                self.write_out();
                if took == 0 {
                    break;
                }
                std::thread::sleep(GATHER);
            }
        }
        self.write_out();
    }

    fn take(&mut self, msg: Msg) {
        if self.reopen.swap(false, Ordering::AcqRel) {
            // What was buffered goes to the file it was meant for.
            self.write_out();
            self.out.reopen();
        }
        match msg {
            Msg::Line(line) => {
                line.write_json(&mut self.buf);
                self.buffered += 1;
                if self.buf.len() >= BUFFER {
                    self.write_out();
                }
            }
            Msg::Reopen => {}
            Msg::Flush(done) => {
                self.write_out();
                let _ = done.send(());
            }
        }
    }

    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.out.write_all(&self.buf) {
            Ok(()) => {
                if self.failing {
                    tracing::info!("the access log is written again");
                }
                self.failing = false;
            }
            Err(e) => {
                for _ in 0..self.buffered {
                    self.metrics.access_log_dropped();
                }
                if !self.failing {
                    tracing::error!(error = %e, "cannot write the access log; its lines are dropped and counted");
                }
                self.failing = true;
            }
        }
        self.buf.clear();
        self.buffered = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A writer that holds every write until the test lets it go.
    #[derive(Clone)]
    struct Gate {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().map_err(|_| std::io::Error::other("lock"))?;
            while !*open {
                open = cv.wait(open).map_err(|_| std::io::Error::other("lock"))?;
            }
            self.written
                .lock()
                .map_err(|_| std::io::Error::other("lock"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn entry(log: &Arc<AccessLog>, path: &str) -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("req-1"));
        let mut e = log.begin(
            &Method::GET,
            &headers,
            IpAddr::from([203, 0, 113, 7]),
            Some("TLSv1.3"),
        );
        e.path(path);
        e
    }

    /// A writer that cannot keep up never holds a request: past the
    /// queue's room, lines are dropped and counted, and the ones queued
    /// are all written once it catches up.
    #[tokio::test]
    async fn a_stalled_writer_drops_and_counts_instead_of_blocking() {
        let gate = Gate {
            open: Arc::new((Mutex::new(false), std::sync::Condvar::new())),
            written: Arc::default(),
        };
        let metrics = Arc::new(Metrics::default());
        let log = Arc::new(
            AccessLog::spawn(Output::Test(Box::new(gate.clone())), 4, metrics.clone())
                .expect("writer"),
        );
        // The first line is taken by the writer, which then blocks on the
        // gate; four more fill the queue; the rest are dropped.
        drop(entry(&log, "/first").answered(200, ()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.queue.try_send(Msg::Reopen).is_ok() {
            // The writer took the first line: the queue drains no more.
            assert!(Instant::now() < deadline, "the writer never blocked");
            std::thread::yield_now();
        }
        // The queue is full of wake-ups now; every line from here drops.
        for i in 0..10 {
            drop(entry(&log, &format!("/more/{i}")).answered(200, ()));
        }
        assert_eq!(metrics.access_log_dropped_count(), 10);
        {
            let (lock, cv) = &*gate.open;
            *lock.lock().expect("lock") = true;
            cv.notify_all();
        }
        log.flush(Duration::from_secs(10)).await;
        let text = String::from_utf8(gate.written.lock().expect("lock").clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        let l = &lines[0];
        assert_eq!(l["path"], "/first");
        assert_eq!(l["route"], "proxy");
        assert_eq!(l["client"], "203.0.113.7");
        assert_eq!(l["tls"], "TLSv1.3");
        assert_eq!(l["request_id"], "req-1");
        assert!(l["upstream_status"].is_null() && l["upstream_ms"].is_null());
    }

    /// Whatever a path holds, the line is one line of valid JSON that
    /// reads back as written.
    #[test]
    fn a_line_is_json_whatever_its_strings_hold() {
        let path = "/a\"b\\c\n\u{1b}[31m\u{7f}/é/\u{2028}/%00";
        let line = Line {
            at_ms: 1_764_000_000_007,
            client: "2001:db8::7".parse().expect("ip"),
            method: Method::from_bytes(b"PURGE").expect("method"),
            path: Some(Arc::from(path)),
            route: Some(Arc::from("shop")),
            status: 502,
            bytes_in: u64::MAX,
            bytes_out: 0,
            duration_us: 1_234_567,
            upstream: Some((None, 5)),
            tls: None,
            request_id: Some(HeaderValue::from_static("a\"b\\c")),
        };
        let mut out = Vec::new();
        line.write_json(&mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(text.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["time"], "2025-11-24T16:00:00.007Z");
        assert_eq!(v["client"], "2001:db8::7");
        assert_eq!(v["method"], "PURGE");
        assert_eq!(v["path"], path);
        assert_eq!(v["status"], 502);
        assert_eq!(v["bytes_in"].as_u64(), Some(u64::MAX));
        assert_eq!(v["bytes_out"], 0);
        assert_eq!(v["duration_ms"].as_f64(), Some(1234.567));
        assert_eq!(v["route"], "shop");
        assert_eq!(v["upstream_status"], serde_json::Value::Null);
        assert_eq!(v["upstream_ms"].as_f64(), Some(0.005));
        assert!(text.contains("\"upstream_ms\":0.005,"), "{text}");
        assert_eq!(v["tls"], serde_json::Value::Null);
        assert_eq!(v["request_id"], "a\"b\\c");
        assert_eq!(v.as_object().map(|o| o.len()), Some(13));
    }

    #[test]
    fn a_request_id_is_logged_only_when_short_and_visible() {
        let mut h = HeaderMap::new();
        assert_eq!(request_id(&h), None);
        h.insert("x-request-id", HeaderValue::from_static("7f3a-01"));
        assert_eq!(
            request_id(&h).as_ref().map(|v| v.as_bytes()),
            Some(&b"7f3a-01"[..])
        );
        for odd in ["a b", "", "é"] {
            if let Ok(v) = HeaderValue::from_str(odd) {
                h.insert("x-request-id", v);
                assert_eq!(request_id(&h), None, "{odd:?}");
            }
        }
        h.insert(
            "x-request-id",
            HeaderValue::from_str(&"a".repeat(129)).expect("ascii"),
        );
        assert_eq!(request_id(&h), None);
    }
}
