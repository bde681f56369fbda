//! Slow and greedy clients: idle keep-alive connections, trickled request
//! heads, silent connections, connection limits, and callbacks still being
//! acknowledged while a thousand such connections are held open.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const LIMITS: &str = r#"
[limits]
tls_handshake_timeout = "1s"
header_read_timeout = "1s"
idle_timeout = "3s"
"#;

/// A trickling client's pace: one piece of its head this often.
const TRICKLE: Duration = Duration::from_millis(250);

/// Reads until the peer closes, or `limit` passes. True when it closed.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// One keep-alive HTTP/1.1 GET; returns the status line.
async fn get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The upstream answers with a small fixed-length body; read the head and
    // whatever follows it in the same segments.
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "connection closed before a response");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let body_start = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| p + 4);
    let mut have = got.len() - body_start;
    while have < len {
        let n = s.read(&mut buf).await.expect("read body");
        assert!(n > 0, "connection closed inside a body");
        have += n;
    }
    head.lines().next().unwrap_or_default().to_string()
}

/// Writes `start` a piece every 250 ms, then up to 40 header lines at the
/// same pace, until a write fails; returns how many header lines went out.
fn trickle_head<W: tokio::io::AsyncWrite + Unpin + Send + 'static>(
    mut wr: W,
    start: &'static [&'static [u8]],
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut sent = 0;
        for piece in start {
            if wr.write_all(piece).await.is_err() {
                return sent;
            }
            pace(TRICKLE).await;
        }
        for i in 0..40 {
            if wr
                .write_all(format!("x-slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
            sent += 1;
            pace(TRICKLE).await;
        }
        sent
    })
}

#[tokio::test]
async fn an_idle_keep_alive_connection_lives_for_idle_timeout_not_the_head_timeout() {
    let upstream = Upstream::start().await;
    let ab = Authback::start_with(&upstream, LIMITS, false).await;
    let mut tls = ab.tls(&[b"http/1.1"]).await;
    assert!(get(&mut tls, "/one").await.contains(" 200 "));
    // Idle for longer than header_read_timeout, shorter than idle_timeout:
    // the connection is still usable (not closed meanwhile).
    const PAST_THE_HEAD_TIMEOUT: Duration = Duration::from_millis(1800);
    tokio::time::sleep(PAST_THE_HEAD_TIMEOUT).await;
    assert!(get(&mut tls, "/two").await.contains(" 200 "));
    // Left idle, it is closed once idle_timeout passes.
    assert!(
        closed_within(&mut tls, Duration::from_secs(10)).await,
        "idle connection never closed"
    );
    assert_eq!(upstream.recorded().len(), 2);
}

#[tokio::test]
async fn a_trickled_request_head_is_cut_off_by_header_read_timeout() {
    let upstream = Upstream::start().await;
    let ab = Authback::start_with(&upstream, LIMITS, false).await;
    let tls = ab.tls(&[b"http/1.1"]).await;
    let (mut rd, wr) = tokio::io::split(tls);
    // A header line every 250 ms would take 10 s to finish the head.
    let trickle = trickle_head(wr, &[b"GET /slow HTTP/1.1\r\nhost: localhost\r\n"]);
    assert!(
        closed_within(&mut rd, Duration::from_secs(8)).await,
        "a trickled head was never cut off"
    );
    let sent = trickle.await.expect("trickle task");
    assert!(sent < 40, "the whole head got through: {sent} lines");
    assert!(
        upstream.recorded().is_empty(),
        "a request from a cut-off head reached the upstream"
    );
}

#[tokio::test]
async fn silent_connections_are_closed() {
    let upstream = Upstream::start().await;
    let ab = Authback::start_with(&upstream, LIMITS, false).await;
    // TLS done, then nothing: no request head within header_read_timeout.
    let mut tls = ab.tls(&[b"http/1.1"]).await;
    // TCP only, never a ClientHello: the handshake timeout.
    let mut tcp = TcpStream::connect(ab.public).await.expect("connect");
    // An HTTP/2 client that sends its preface and settings, then nothing.
    let mut h2 = ab.tls(&[b"h2"]).await;
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    assert!(
        closed_within(&mut tls, Duration::from_secs(8)).await,
        "a silent TLS connection stayed open"
    );
    assert!(
        closed_within(&mut tcp, Duration::from_secs(8)).await,
        "a connection without a handshake stayed open"
    );
    assert!(
        closed_within(&mut h2, Duration::from_secs(8)).await,
        "a silent HTTP/2 connection stayed open"
    );
}

#[tokio::test]
async fn beyond_max_connections_new_connections_wait_for_a_slot() {
    let upstream = Upstream::start().await;
    let ab = Authback::start_with(&upstream, "[limits]\nmax_connections = 2\n", false).await;
    let mut a = ab.tls(&[b"http/1.1"]).await;
    let _b = ab.tls(&[b"http/1.1"]).await;
    assert!(get(&mut a, "/held").await.contains(" 200 "));
    // A third connection is not accepted while both slots are held.
    let third = tokio::spawn({
        let (addr, ca) = (ab.public, ab.ca.clone());
        async move { tls_connect(addr, &ca, &[b"http/1.1"]).await }
    });
    tokio::time::sleep(ABSENCE).await;
    assert!(
        !third.is_finished(),
        "a third connection was served beyond max_connections = 2"
    );
    drop(a);
    let mut c = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the third connection got a slot once one was freed")
        .expect("task")
        .expect("handshake");
    assert!(get(&mut c, "/third").await.contains(" 200 "));
}

#[tokio::test]
async fn callbacks_are_acknowledged_while_a_thousand_slow_connections_are_held() {
    let upstream = Upstream::start().await;
    // Default timeouts (10 s): the slow connections outlive the test's work.
    let ab = Authback::start(&upstream).await;
    let mut held: Vec<tokio::task::JoinHandle<bool>> = Vec::new();
    // 400 TCP connections that never start TLS.
    let mut silent = Vec::new();
    for _ in 0..400 {
        silent.push(TcpStream::connect(ab.public).await.expect("connect"));
    }
    // 300 TLS connections that never send a request.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(ab.tls(&[b"http/1.1"]).await);
    }
    // 300 TLS connections trickling a request head, a byte every 200 ms.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for _ in 0..300 {
        let mut tls = ab.tls(&[b"http/1.1"]).await;
        let mut stop = stop_rx.clone();
        held.push(tokio::spawn(async move {
            let head = b"POST /klarna/authorization/slow HTTP/1.1\r\nhost: localhost\r\nx-filler: ";
            for b in head.iter().chain(std::iter::repeat(&b'a')) {
                if tls.write_all(&[*b]).await.is_err() {
                    return false;
                }
                tokio::select! {
                    _ = pace(Duration::from_millis(200)) => {}
                    _ = stop.changed() => return true,
                }
            }
            true
        }));
    }
    // Meanwhile Klarna's callbacks are acknowledged and delivered.
    let mut acked = 0;
    for i in 0..50 {
        let path = ab.mint(&format!("order-{i}"));
        let r = klarna_callback(
            ab.public,
            &ab.ca,
            &path,
            &callback_body(&format!("s-{i}"), &format!("t-{i}")),
        )
        .await;
        if r.delivered && r.attempts == 1 {
            acked += 1;
        }
    }
    assert_eq!(
        acked, 50,
        "every callback answered 2xx at the first attempt"
    );
    assert_eq!(
        upstream
            .wait_for("/klarna/authorized", 50, Duration::from_secs(10))
            .await
            .len(),
        50
    );
    // The slow connections were held all along, not shed to make room.
    stop_tx.send_replace(true);
    let mut still_open = 0;
    for h in held {
        if h.await.expect("trickle task") {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 300, "trickling connections were dropped early");
    let m = ab.metrics().await;
    assert_eq!(callbacks(&m, "accepted"), Some(50.0));
    drop((silent, idle));
}

#[tokio::test]
async fn a_trickled_head_on_a_kept_alive_connection_is_cut_off_too() {
    let upstream = Upstream::start().await;
    let ab = Authback::start_with(
        &upstream,
        "[limits]\nheader_read_timeout = \"1s\"\nidle_timeout = \"60s\"\n",
        false,
    )
    .await;
    let mut tls = ab.tls(&[b"http/1.1"]).await;
    assert!(get(&mut tls, "/first").await.contains(" 200 "));
    let (mut rd, wr) = tokio::io::split(tls);
    // "P" alone first: it must not be taken for the start of an HTTP/2 preface.
    let trickle = trickle_head(wr, &[b"P", b"OST /slow HTTP/1.1\r\n"]);
    // Cut by header_read_timeout (1 s), long before idle_timeout (60 s).
    assert!(
        closed_within(&mut rd, Duration::from_secs(8)).await,
        "a trickled second head was never cut off"
    );
    assert!(trickle.await.expect("trickle") < 40);
    assert_eq!(upstream.recorded().len(), 1);
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_dropped() {
    let upstream = Upstream::start().await;
    let ab = Authback::start_with(&upstream, LIMITS, false).await;
    let mut tls = ab.tls(&[b"http/1.1"]).await;
    // The upstream echoes the body: 16 MiB back, far more than socket buffers hold.
    const SIZE: usize = 16 * 1024 * 1024;
    let head = format!("POST /echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: {SIZE}\r\n\r\n");
    tls.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..SIZE / chunk.len() {
        tls.write_all(&chunk).await.expect("body");
    }
    // Read nothing for longer than the stall limit (idle_timeout 3 s here).
    pace(Duration::from_secs(6)).await;
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("the stalled connection was neither finished nor dropped"),
        }
    }
    assert!(
        got < SIZE,
        "the whole response arrived ({got} bytes): the stalled connection was kept"
    );
}
