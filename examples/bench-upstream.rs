//! A minimal upstream for benchmarks: answers every request with 200 and a
//! 13-byte body, HTTP/1.1 keep-alive. `cargo run --release --example
//! bench-upstream -- 127.0.0.1:18080`
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".into());
    let listener = TcpListener::bind(&addr).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(answer())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// The same answer for every request: the baseline's 13-byte body, so the
/// figures compare with what was measured before authback existed.
fn answer() -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from_static(b"hello, world\n")))
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn answers_200_with_the_baseline_13_bytes() {
        let resp = super::answer();
        assert_eq!(resp.status(), 200);
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        assert_eq!(body.len(), 13);
    }
}
