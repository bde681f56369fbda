//! Addresses: CIDR blocks, and who the client really is when trusted
//! proxies stand in front of authback.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network such as `10.0.0.0/8`; a bare address is a /32 or /128.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `::ffff:1.2.3.4` is 1.2.3.4: a dual-stack socket reports IPv4 peers that way.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = canonical(
            a.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?,
        );
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Debug for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The whole `X-Forwarded-For` chain a request carries. A proxy may add its
/// own header line rather than extend the last one, so every line counts, in
/// order: reading only the first would take a client's forged entry for the
/// one a trusted proxy added.
pub(crate) fn forwarded_chain(headers: &http::HeaderMap) -> Option<std::borrow::Cow<'_, str>> {
    static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
    let values = headers.get_all(&X_FORWARDED_FOR);
    // A line that is not text spoils the chain: skipping it would drop the
    // entry a trusted proxy appended to it, and believe the ones before.
    if values.iter().any(|v| v.to_str().is_err()) {
        return None;
    }
    let mut lines = values.iter().filter_map(|v| v.to_str().ok());
    let first = lines.next()?;
    match lines.next() {
        None => Some(std::borrow::Cow::Borrowed(first)),
        Some(second) => {
            let mut all = format!("{first}, {second}");
            for l in lines {
                all.push_str(", ");
                all.push_str(l);
            }
            Some(std::borrow::Cow::Owned(all))
        }
    }
}

/// The client's address. The peer is believed to be a proxy only when it is
/// in `trusted`; then the client is the right-most address of the chain it
/// sent that is not itself a trusted proxy (every trusted hop must append
/// the address it received the connection from). Otherwise it is the peer.
pub(crate) fn client_ip(peer: IpAddr, xff: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(chain) = xff else { return peer };
    let mut client = peer;
    for hop in chain.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// The `X-Forwarded-For` header value to send upstream: the chain a trusted
/// peer sent with the peer appended, or else the peer alone.
pub(crate) fn forwarded_for(peer: IpAddr, xff: Option<&str>, trusted: &[IpNet]) -> String {
    let peer = canonical(peer);
    match xff {
        Some(chain) if trusted.iter().any(|n| n.contains(peer)) && !chain.trim().is_empty() => {
            format!("{}, {peer}", chain.trim())
        }
        _ => ip_text(peer),
    }
}

/// An address as text. Every proxied request names its client, so IPv4 is
/// written digit by digit rather than through the formatting machinery.
pub(crate) fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut s = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if octet >= 100 {
            s.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            s.push(char::from(b'0' + octet / 10 % 10));
        }
        s.push(char::from(b'0' + octet % 10));
    }
    s
}

/// Where a URI points: its host (an IPv6 literal without its brackets, as
/// the resolver and TLS want it) and its port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostPort {
    host: String,
    port: u16,
    default_port: u16,
}

impl HostPort {
    /// The host and port of `uri`; `default_port` when it names none.
    pub(crate) fn of(uri: &http::Uri, default_port: u16) -> Option<Self> {
        let host = uri.host()?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return None;
        }
        Some(HostPort {
            host: host.to_string(),
            port: uri.port_u16().unwrap_or(default_port),
            default_port,
        })
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The `Host` header value: brackets back around an IPv6 literal, and
    /// the port only when it is not the default.
    pub(crate) fn header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// A named list of networks that may change while authback serves: an
/// `[ip_sets]` entry read from a file, reloaded when the file changes. Every
/// route fenced by it sees the new list at once.
#[derive(Clone)]
pub struct IpSet {
    name: std::sync::Arc<str>,
    nets: std::sync::Arc<std::sync::RwLock<std::sync::Arc<[IpNet]>>>,
}

impl IpSet {
    pub(crate) fn new(name: &str, nets: Vec<IpNet>) -> Self {
        IpSet {
            name: name.into(),
            nets: std::sync::Arc::new(std::sync::RwLock::new(nets.into())),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn current(&self) -> std::sync::Arc<[IpNet]> {
        // A panic while swapping cannot leave half a list: keep serving.
        self.nets.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.current().iter().any(|n| n.contains(ip))
    }

    pub(crate) fn len(&self) -> usize {
        self.current().len()
    }

    /// Swaps in a new list (never an empty one: the caller refuses it).
    pub(crate) fn replace(&self, nets: Vec<IpNet>) {
        *self.nets.write().unwrap_or_else(|p| p.into_inner()) = nets.into();
    }
}

impl fmt::Debug for IpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpSet({}, {} networks)", self.name, self.len())
    }
}

/// Reads a list of networks, one per line; `#` starts a comment and blank
/// lines are skipped. An empty list is an error: a fence that lets no one
/// in is a mistake, and authback never reads it as "everyone".
pub(crate) fn parse_ip_list(text: &str) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        match line.parse::<IpNet>() {
            Ok(net) => nets.push(net),
            Err(e) => return Err(format!("line {}: {e}", n + 1)),
        }
    }
    if nets.is_empty() {
        return Err("no address in it".into());
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_and_port_of_a_uri() {
        let hp = |u: &str, d| HostPort::of(&u.parse().expect("uri"), d);
        let v6 = hp("https://[::1]:8443/x", 443).expect("v6");
        assert_eq!(
            (v6.host(), v6.port(), v6.header().as_str()),
            ("::1", 8443, "[::1]:8443")
        );
        let named = hp("https://api.klarna.com", 443).expect("named");
        assert_eq!(
            (named.host(), named.port(), named.header().as_str()),
            ("api.klarna.com", 443, "api.klarna.com")
        );
        let plain = hp("http://127.0.0.1:8080", 80).expect("v4");
        assert_eq!(plain.header(), "127.0.0.1:8080");
        assert_eq!(hp("/relative", 80), None);
    }

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_chain_is_every_line_in_order() {
        let mut h = http::HeaderMap::new();
        assert_eq!(forwarded_chain(&h), None);
        h.append("x-forwarded-for", "1.1.1.1".parse().expect("v"));
        assert_eq!(forwarded_chain(&h).as_deref(), Some("1.1.1.1"));
        h.append("x-forwarded-for", "2.2.2.2, 3.3.3.3".parse().expect("v"));
        h.append("x-forwarded-for", "4.4.4.4".parse().expect("v"));
        let chain = forwarded_chain(&h);
        assert_eq!(chain.as_deref(), Some("1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4"));
        let mut spoilt = h.clone();
        spoilt.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff, 5.5.5.5").expect("obs-text"),
        );
        assert_eq!(forwarded_chain(&spoilt), None);
        // The client is the right-most untrusted hop: in the last line.
        let trusted: Vec<IpNet> = vec!["9.9.9.9/32".parse().expect("cidr")];
        assert_eq!(
            client_ip(ip("9.9.9.9"), chain.as_deref(), &trusted),
            ip("4.4.4.4")
        );
        let trusted: Vec<IpNet> = vec![
            "4.4.4.4/32".parse().expect("cidr"),
            "9.9.9.9/32".parse().expect("cidr"),
        ];
        assert_eq!(
            client_ip(ip("9.9.9.9"), chain.as_deref(), &trusted),
            ip("3.3.3.3")
        );
    }

    #[test]
    fn ip_text_writes_what_display_writes() {
        for o in [0u8, 1, 9, 10, 42, 99, 100, 199, 200, 255] {
            for a in [
                std::net::Ipv4Addr::new(o, 0, 255, o),
                std::net::Ipv4Addr::new(127, o, 1, 10),
            ] {
                assert_eq!(ip_text(IpAddr::V4(a)), a.to_string());
            }
        }
        assert_eq!(ip_text(ip("2001:db8::1")), "2001:db8::1");
    }

    #[test]
    fn cidr() {
        let n: IpNet = "10.0.0.0/8".parse().expect("cidr");
        assert!(n.contains(ip("10.255.0.1")));
        assert!(n.contains(ip("::ffff:10.0.0.1")));
        assert!(!n.contains(ip("11.0.0.1")));
        let all: IpNet = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains(ip("1.2.3.4")));
        let v6: IpNet = "fd00::/8".parse().expect("cidr");
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let one: IpNet = "1.2.3.4".parse().expect("ip");
        assert!(one.contains(ip("1.2.3.4")) && !one.contains(ip("1.2.3.5")));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nope".parse::<IpNet>().is_err());
    }

    #[test]
    fn forwarded_chain_believed_only_from_trusted() {
        let trusted = vec!["10.0.0.0/8".parse().expect("cidr")];
        // Untrusted peer: its header is a lie we replace.
        assert_eq!(
            client_ip(ip("8.8.8.8"), Some("1.1.1.1"), &trusted),
            ip("8.8.8.8")
        );
        assert_eq!(
            forwarded_for(ip("8.8.8.8"), Some("1.1.1.1"), &trusted),
            "8.8.8.8"
        );
        // Trusted ingress: the client is the last untrusted hop.
        assert_eq!(
            client_ip(
                ip("10.0.0.2"),
                Some("6.6.6.6, 52.17.117.56, 10.0.0.9"),
                &trusted
            ),
            ip("52.17.117.56")
        );
        assert_eq!(
            forwarded_for(ip("10.0.0.2"), Some("52.17.117.56"), &trusted),
            "52.17.117.56, 10.0.0.2"
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("garbage"), &trusted),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn an_ip_list_reads_one_network_a_line_and_is_never_empty() {
        let nets =
            parse_ip_list("# Klarna\n52.17.117.56\n\n10.0.0.0/8  # office\n").expect("valid");
        assert_eq!(nets.len(), 2);
        assert!(parse_ip_list("# nothing\n\n").is_err());
        let e = parse_ip_list("1.2.3.4\nnot-an-ip\n").expect_err("bad line");
        assert!(e.starts_with("line 2:"), "{e}");
        let set = IpSet::new("office", nets);
        assert!(set.contains(ip("10.1.2.3")) && !set.contains(ip("11.0.0.1")));
        set.replace(vec!["11.0.0.0/8".parse().expect("net")]);
        assert!(set.contains(ip("11.0.0.1")) && !set.contains(ip("10.1.2.3")));
    }
}
