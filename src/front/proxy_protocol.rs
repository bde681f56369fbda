//! The PROXY protocol (v1 text, v2 binary) on the public listeners: the
//! client address a balancer in front says it took the connection from.
//! It is believed only from `server.proxy_protocol_from`, where it is
//! required. A connection from anywhere else that starts with one is
//! closed: its author could claim any address `allow_ips` and the limits
//! trust. The header is read in bounded pieces, within a time limit.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use ppp::v2::{Command, Protocol};
use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::config::ProxyProtocol;

/// v1's longest header, CRLF included (the specification's 107 bytes).
const V1_MAX: usize = 107;
/// v2's fixed part: signature, version and command, family, length.
const V2_FIXED: usize = 16;
/// The longest v2 address block and TLVs read. Addresses take at most 216
/// bytes (AF_UNIX); the rest is room for the TLVs balancers add (a cloud's
/// endpoint id, HAProxy's unique id or TLS details).
pub(crate) const V2_MAX_LEN: usize = 2048;
/// How much of a balancer's header is read at once.
const CHUNK: usize = 256;
const V1_SIGNATURE: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Why a connection was closed before anything was served on it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("a PROXY header from a source not in server.proxy_protocol_from")]
    Untrusted,
    #[error("no PROXY header from a source in server.proxy_protocol_from")]
    Missing,
    #[error("a malformed PROXY header")]
    Malformed,
    #[error("a PROXY header longer than {} bytes", V2_FIXED + V2_MAX_LEN)]
    TooLong,
    #[error("the PROXY header did not arrive within server.proxy_protocol_timeout")]
    Timeout,
    #[error("the connection closed before it could be served")]
    Closed,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

impl Refused {
    /// Worth an info line: what a misconfigured balancer or a forger
    /// causes. The rest is a client going away.
    pub(crate) fn is_notable(&self) -> bool {
        matches!(
            self,
            Refused::Untrusted | Refused::Missing | Refused::Malformed | Refused::TooLong
        )
    }
}

/// Reads what the connection from `peer` starts with, within
/// `config.timeout`: from a balancer, its PROXY header; from anyone else,
/// enough to tell that it is not one. Gives back the connection, with any
/// byte read past the header still to be read, and the client it is
/// served as.
pub(crate) async fn accept<I: AsyncRead + Unpin>(
    io: I,
    peer: SocketAddr,
    config: &ProxyProtocol,
) -> Result<(Rewound<I>, SocketAddr), Refused> {
    let from_balancer = config.from.iter().any(|n| n.contains(peer.ip()));
    let read = async {
        if from_balancer {
            read_header(io, peer).await
        } else {
            Ok((direct(io).await?, peer))
        }
    };
    tokio::time::timeout(config.timeout, read)
        .await
        .map_err(|_| Refused::Timeout)?
}

/// Whether `seen` is a beginning of `signature`, or the whole of it.
fn begins(seen: &[u8], signature: &[u8]) -> bool {
    let n = seen.len().min(signature.len());
    seen[..n] == signature[..n]
}

/// How long the header at the start of `buf` is, once all of it is there:
/// v2's fixed part and the length it gives, or v1's line to its CRLF.
fn whole_header(buf: &[u8]) -> Result<Option<usize>, Refused> {
    if begins(buf, V2_SIGNATURE) {
        if buf.len() < V2_FIXED {
            return Ok(None);
        }
        let n = header_limit(buf)?;
        return Ok((buf.len() >= n).then_some(n));
    }
    match buf.iter().position(|&b| b == b'\r') {
        Some(cr) => match buf.get(cr + 1) {
            Some(b'\n') => Ok(Some(cr + 2)),
            Some(_) => Err(Refused::Malformed),
            None => Ok(None),
        },
        None if buf.len() >= V1_MAX => Err(Refused::Malformed),
        None => Ok(None),
    }
}

/// A direct client: read until its first bytes cannot be a PROXY
/// signature (a TLS record or a request line rules it out in one byte or
/// a few), and refuse the connection if they are one.
async fn direct<I: AsyncRead + Unpin>(mut io: I) -> Result<Rewound<I>, Refused> {
    let mut seen = [0u8; 12];
    let mut len = 0;
    loop {
        let n = io.read(&mut seen[len..]).await?;
        if n == 0 {
            return Err(Refused::Closed);
        }
        len += n;
        let head = &seen[..len];
        let (v1, v2) = (begins(head, V1_SIGNATURE), begins(head, V2_SIGNATURE));
        if (v1 && len >= V1_SIGNATURE.len()) || (v2 && len >= V2_SIGNATURE.len()) {
            return Err(Refused::Untrusted);
        }
        if !v1 && !v2 {
            return Ok(Rewound::new(io, head.to_vec()));
        }
    }
}

/// How many bytes the header in `buf` can be at most, judged on what has
/// arrived: v2's fixed part until its length is known, then exactly the
/// header; v1's longest otherwise. Never more is read in one go, so only
/// a v1 header can be followed by bytes read with it.
fn header_limit(buf: &[u8]) -> Result<usize, Refused> {
    if !begins(buf, V2_SIGNATURE) {
        return Ok(V1_MAX);
    }
    match buf.get(14..16) {
        None => Ok(V2_FIXED),
        Some(&[hi, lo]) => {
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            if len > V2_MAX_LEN {
                return Err(Refused::TooLong);
            }
            Ok(V2_FIXED + len)
        }
        Some(_) => Err(Refused::Malformed),
    }
}

/// A balancer's connection: its PROXY header, read piece by piece up to
/// the longest a header may be.
async fn read_header<I: AsyncRead + Unpin>(
    mut io: I,
    peer: SocketAddr,
) -> Result<(Rewound<I>, SocketAddr), Refused> {
    let mut buf = Vec::with_capacity(V1_MAX);
    let mut chunk = [0u8; CHUNK];
    loop {
        let room = header_limit(&buf)?.saturating_sub(buf.len());
        if room == 0 {
            return Err(Refused::TooLong);
        }
        let n = io.read(&mut chunk[..room.min(CHUNK)]).await?;
        if n == 0 {
            return Err(Refused::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if !begins(&buf, V1_SIGNATURE) && !begins(&buf, V2_SIGNATURE) {
            return Err(Refused::Missing);
        }
        if let Some((len, client)) = parse(&buf, peer)? {
            let rest = buf.split_off(len);
            return Ok((Rewound::new(io, rest), client));
        }
    }
}

/// The header at the start of `buf` and the client it names: `None` while
/// more bytes could complete it. A v2 `LOCAL` (the balancer's own health
/// check) and a header naming no IP client (v1 `UNKNOWN`, v2 `UNSPEC` or a
/// Unix socket) are served as the balancer itself.
pub(crate) fn parse(buf: &[u8], peer: SocketAddr) -> Result<Option<(usize, SocketAddr)>, Refused> {
    let Some(whole) = whole_header(buf)? else {
        return Ok(None);
    };
    // `ppp` is only ever given a whole header: cut short at a space, a v1
    // line can look malformed to it, and ended too soon, incomplete.
    let header = HeaderResult::parse(&buf[..whole]);
    if header.is_incomplete() {
        return Err(Refused::Malformed);
    }
    let (len, client) = match header {
        HeaderResult::V1(Ok(h)) => {
            let client = match h.addresses {
                v1::Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
                v1::Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
                v1::Addresses::Unknown => peer,
            };
            (h.header.len(), client)
        }
        HeaderResult::V2(Ok(h)) => {
            let client = match (h.command, h.protocol, &h.addresses) {
                (Command::Proxy, Protocol::Stream, v2::Addresses::IPv4(a)) => {
                    SocketAddr::from((a.source_address, a.source_port))
                }
                (Command::Proxy, Protocol::Stream, v2::Addresses::IPv6(a)) => {
                    SocketAddr::from((a.source_address, a.source_port))
                }
                _ => peer,
            };
            (h.len(), client)
        }
        HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => return Err(Refused::Malformed),
    };
    let ip = crate::net::canonical(client.ip());
    Ok(Some((len, SocketAddr::new(ip, client.port()))))
}

/// A connection with the bytes already read from it put back in front.
pub(crate) struct Rewound<I> {
    read: Vec<u8>,
    at: usize,
    io: I,
}

impl<I> Rewound<I> {
    fn new(io: I, read: Vec<u8>) -> Self {
        Rewound { read, at: 0, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewound<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.read.len() {
            let rest = &this.read[this.at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n;
            if this.at == this.read.len() {
                this.read = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewound<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    fn config(from: &str) -> ProxyProtocol {
        ProxyProtocol {
            from: vec![from.parse().expect("net")],
            timeout: Duration::from_secs(5),
        }
    }

    fn balancer() -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 5], 40000))
    }

    /// A v2 header: PROXY (or LOCAL) over TCP from `src`, with `tlvs`.
    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).expect("len");
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    const V4: [u8; 12] = [203, 0, 113, 7, 10, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb];

    /// Feeds `bytes` from `peer` and returns what `accept` made of them,
    /// and what the connection reads after the header.
    async fn feed(bytes: &[u8], peer: SocketAddr) -> Result<(SocketAddr, Vec<u8>), String> {
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(bytes).await.expect("write");
        drop(client);
        match accept(server, peer, &config("10.0.0.0/8")).await {
            Ok((mut io, addr)) => {
                let mut rest = Vec::new();
                io.read_to_end(&mut rest).await.expect("read");
                Ok((addr, rest))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    #[tokio::test]
    async fn a_balancers_header_names_the_client_and_the_rest_is_served() {
        let client: SocketAddr = "203.0.113.7:40000".parse().expect("addr");
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            feed(v1, balancer()).await,
            Ok((client, b"GET / HTTP/1.1\r\n".to_vec()))
        );
        let mut with_tlv = v2(1, 0x11, &V4, &[0x04, 0x00, 0x02, b'i', b'd']);
        with_tlv.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            feed(&with_tlv, balancer()).await,
            Ok((client, b"\x16\x03\x01".to_vec()))
        );
        let mut v6 = Vec::new();
        v6.extend_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .expect("ip")
                .octets(),
        );
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
        assert_eq!(
            feed(&v2(1, 0x21, &v6, &[]), balancer()).await,
            Ok(("[2001:db8::7]:40000".parse().expect("addr"), Vec::new()))
        );
        // A v4-mapped client is its IPv4 address, as a direct peer is.
        let mapped = b"PROXY TCP6 ::ffff:203.0.113.7 ::1 40000 443\r\n";
        assert_eq!(feed(mapped, balancer()).await, Ok((client, Vec::new())));
    }

    #[tokio::test]
    async fn a_health_check_or_an_unknown_family_is_served_as_the_balancer() {
        for header in [
            b"PROXY UNKNOWN\r\n".to_vec(),
            b"PROXY UNKNOWN ff::1 ff::2 1 2\r\n".to_vec(),
            v2(0, 0x00, &[], &[]),
            v2(0, 0x11, &V4, &[]),
            v2(1, 0x00, &[], &[]),
            v2(1, 0x31, &[0; 216], &[]),
            v2(1, 0x12, &V4, &[]),
        ] {
            assert_eq!(
                feed(&header, balancer()).await,
                Ok((balancer(), Vec::new())),
                "{header:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_balancer_must_send_a_well_formed_header() {
        let long = [V2_SIGNATURE, &[0x21, 0x11, 0x08, 0x01]].concat();
        for (bytes, why) in [
            (b"GET / HTTP/1.1\r\n".to_vec(), "no PROXY header"),
            (b"\x16\x03\x01\x02\x00".to_vec(), "no PROXY header"),
            (b"PROXY TCP4 203.0.113.7\r\n".to_vec(), "malformed"),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(),
                "malformed",
            ),
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), "malformed"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".to_vec(), "malformed"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX".to_vec(), "malformed"),
            ([b"PROXY ".as_slice(), &[b'x'; 120]].concat(), "malformed"),
            (v2(1, 0x21, &V4, &[]), "malformed"),
            (v2(2, 0x11, &V4, &[]), "malformed"),
            (v2(1, 0x51, &V4, &[]), "malformed"),
            (long, "longer than"),
            (b"PROXY TCP4 1.2.3.4".to_vec(), "closed"),
            (V2_SIGNATURE[..7].to_vec(), "closed"),
        ] {
            let got = feed(&bytes, balancer()).await.expect_err("refused");
            assert!(got.contains(why), "{bytes:?}: {got}");
        }
    }

    #[tokio::test]
    async fn anyone_else_is_served_as_it_is_unless_it_claims_an_address() {
        let direct: SocketAddr = "198.51.100.9:5555".parse().expect("addr");
        for served in [
            b"GET / HTTP/1.1\r\n".as_slice(),
            b"POST /x HTTP/1.1\r\n",
            b"PROPFIND / HTTP/1.1\r\n",
            b"PRI * HTTP/2.0\r\n",
            b"\x16\x03\x01\x02\x00\x01",
            b"\r\n\r\nGET / HTTP/1.1\r\n",
        ] {
            assert_eq!(
                feed(served, direct).await,
                Ok((direct, served.to_vec())),
                "{served:?}"
            );
        }
        for claim in [
            b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 443\r\n".to_vec(),
            b"PROXY ".to_vec(),
            v2(1, 0x11, &V4, &[]),
        ] {
            let got = feed(&claim, direct).await.expect_err("refused");
            assert!(got.contains("not in server.proxy_protocol_from"), "{got}");
        }
    }

    proptest::proptest! {
        /// Read a byte at a time, a header is incomplete until its last
        /// byte and then names its client, whatever follows it; any bytes
        /// after a signature are read or refused, never a panic.
        #[test]
        fn headers_complete_on_their_last_byte_and_nothing_panics(
            ip in proptest::prelude::any::<[u8; 4]>(),
            port in 1u16..,
            v1 in proptest::prelude::any::<bool>(),
            tlvs in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            after in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let client = SocketAddr::from((ip, port));
            let header = if v1 {
                format!("PROXY TCP4 {} 10.0.0.1 {port} 443\r\n", client.ip()).into_bytes()
            } else {
                let mut a = ip.to_vec();
                a.extend_from_slice(&[10, 0, 0, 1]);
                a.extend_from_slice(&port.to_be_bytes());
                a.extend_from_slice(&[1, 187]);
                v2(1, 0x11, &a, &tlvs)
            };
            for n in 0..header.len() {
                proptest::prop_assert!(matches!(parse(&header[..n], balancer()), Ok(None)), "{n}");
            }
            let whole = [header.as_slice(), &after].concat();
            let got = parse(&whole, balancer()).map_err(|e| e.to_string());
            proptest::prop_assert_eq!(got, Ok(Some((header.len(), client))));
            for signature in [V1_SIGNATURE, V2_SIGNATURE] {
                let junk = [signature, &tlvs, &after].concat();
                if let Ok(Some((len, _))) = parse(&junk, balancer()) {
                    proptest::prop_assert!(len <= junk.len());
                }
            }
        }
    }

    #[tokio::test]
    async fn a_header_that_stalls_is_given_up_on() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"PROXY").await.expect("write");
        let mut short = config("10.0.0.0/8");
        short.timeout = Duration::from_millis(50);
        let got = accept(server, balancer(), &short).await.err();
        assert!(matches!(got, Some(Refused::Timeout)), "{got:?}");
        drop(client);
    }
}
