//! A minimal HTTP/1.1 client on a raw TcpStream: the fuzzer's requests go
//! on the wire byte for byte as generated (no client library re-encodes a
//! target or a header name), over one keep-alive connection per sender.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Client { addr, conn: None }
    }

    /// Sends `request` and reads its answer. A kept-alive connection the
    /// server closed in between is opened again once.
    pub async fn send(&mut self, request: &[u8]) -> Result<Answer, String> {
        let reused = self.conn.is_some();
        match self.try_send(request).await {
            Ok(a) => Ok(a),
            Err(e) if reused => self
                .try_send(request)
                .await
                .map_err(|again| format!("{e}; on a new connection: {again}")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn try_send(&mut self, request: &[u8]) -> io::Result<Answer> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let tcp = TcpStream::connect(self.addr).await?;
                tcp.set_nodelay(true)?;
                BufReader::new(tcp)
            }
        };
        conn.get_mut().write_all(request).await?;
        let (answer, reusable) = read_answer(&mut conn).await?;
        if reusable {
            self.conn = Some(conn);
        }
        Ok(answer)
    }
}

async fn read_line(r: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before an answer",
        ));
    }
    Ok(String::from_utf8_lossy(&line)
        .trim_end_matches(['\r', '\n'])
        .to_string())
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// One answer (interim 1xx answers skipped) and whether the connection
/// may carry another request.
async fn read_answer(r: &mut BufReader<TcpStream>) -> io::Result<(Answer, bool)> {
    loop {
        let status_line = read_line(r).await?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(r).await?;
            if line.is_empty() {
                break;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("header line {line:?}")))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let mut reusable =
            version == "HTTP/1.1" && !get("connection").is_some_and(|c| c.contains("close"));
        let mut body = Vec::new();
        if status == 204 || status == 304 {
        } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            loop {
                let size_line = read_line(r).await?;
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| bad(format!("chunk size {size_line:?}")))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    while !read_line(r).await?.is_empty() {}
                    break;
                }
                let at = body.len();
                body.resize(at + size, 0);
                r.read_exact(&mut body[at..]).await?;
                read_line(r).await?;
            }
        } else if let Some(n) = get("content-length") {
            let n: usize = n
                .parse()
                .map_err(|_| bad(format!("content-length {n:?}")))?;
            body.resize(n, 0);
            r.read_exact(&mut body).await?;
        } else {
            r.read_to_end(&mut body).await?;
            reusable = false;
        }
        return Ok((
            Answer {
                status,
                headers,
                body,
            },
            reusable,
        ));
    }
}
