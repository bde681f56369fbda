//! The mutation grammar: requests built around each platform's real
//! callback URL (and around each forward path), so that a good share of
//! them still reach the handler when sent straight to PHP, and every one
//! of them is something a client could send. Mutation `i` of seed `s` is
//! a pure function of `(s, i)`: any one can be rebuilt alone.

use std::fmt;

/// A small deterministic PRNG (splitmix64 to seed, xorshift64* to draw).
pub struct Rng(u64);

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// The generator of mutation `index` under `seed`.
    pub fn for_mutation(seed: u64, index: usize) -> Self {
        let s = splitmix(seed ^ splitmix(index as u64 ^ 0xA5A5_5A5A_0F0F_F0F0));
        Rng(if s == 0 { 0x1234_5678 } else { s })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    WooCommerce,
    Magento2,
    /// Generic `json` and `form` routes delivering to real PHP scripts.
    Generic,
}

impl Platform {
    /// Its folder under tests/it/platforms/.
    pub fn dir(self) -> &'static str {
        match self {
            Platform::WooCommerce => "woocommerce",
            Platform::Magento2 => "magento2",
            Platform::Generic => "generic",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir())
    }
}

/// The Magento module's per-quote token in the callback URL. No quote
/// has it: the controller stops at "No such entity" right after it has
/// recorded that it ran, without placing an order.
pub const QUOTE_TOKEN: &str = "fuzzQuoteToken0123456789abcdef01";
/// A Klarna session no quote or order has.
pub const SESSION: &str = "fuzz-no-such-session";

/// The generic routes' forward paths (see `fuzz::generic_config`).
pub const FORWARD_PATHS: [&str; 2] = ["/checkout/authorized.php", "/hooks/klarna-form.php"];

/// One request as sent on the wire.
#[derive(Clone)]
pub struct Req {
    pub method: &'static str,
    /// The request target, exactly as sent: printable ASCII.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// The body's chunk sizes when it is sent chunked, in order; empty
    /// for a body with a Content-Length.
    pub chunks: Vec<usize>,
    /// Which branch of the grammar made it.
    pub family: &'static str,
}

impl Req {
    pub fn new(method: &'static str, target: String, family: &'static str) -> Self {
        Req {
            method,
            target,
            headers: Vec::new(),
            content_type: None,
            body: Vec::new(),
            chunks: Vec::new(),
            family,
        }
    }

    /// The request as HTTP/1.1 bytes; `close` asks the server to close
    /// the connection after answering.
    pub fn to_bytes(&self, close: bool) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: shop.example.com\r\n",
            self.method, self.target
        );
        if let Some(ct) = &self.content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        if !self.chunks.is_empty() {
            head.push_str("Transfer-Encoding: chunked\r\n");
        } else if !self.body.is_empty() || self.method != "GET" {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if self.chunks.is_empty() {
            out.extend_from_slice(&self.body);
            return out;
        }
        let mut rest = &self.body[..];
        for &n in &self.chunks {
            let (chunk, after) = rest.split_at(n.min(rest.len()));
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
            rest = after;
        }
        if !rest.is_empty() {
            out.extend_from_slice(format!("{:x}\r\n", rest.len()).as_bytes());
            out.extend_from_slice(rest);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

impl fmt::Display for Req {
    /// The request for a failure report: long runs of dummy parameters
    /// shortened, the body escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = if self.target.len() > 300 {
            let n = self.target.matches('&').count() + 1;
            format!(
                "{} … {} [{} bytes, {n} parameters]",
                &self.target[..150],
                &self.target[self.target.len() - 120..],
                self.target.len()
            )
        } else {
            self.target.clone()
        };
        write!(f, "{} {target} ({})", self.method, self.family)?;
        if !self.chunks.is_empty() {
            write!(f, "\n      sent chunked: {:?}", self.chunks)?;
        }
        for (k, v) in &self.headers {
            write!(f, "\n      {k}: {v}")?;
        }
        if let Some(ct) = &self.content_type {
            write!(f, "\n      Content-Type: {ct}")?;
        }
        if !self.body.is_empty() {
            let body = String::from_utf8_lossy(&self.body);
            write!(
                f,
                "\n      body: {:?}",
                body.chars().take(300).collect::<String>()
            )?;
        }
        Ok(())
    }
}

/// Mutation `index` of `seed` for `platform`.
pub fn mutation(platform: Platform, seed: u64, index: usize) -> Req {
    let mut rng = Rng::for_mutation(seed ^ platform as u64, index);
    let mut req = match platform {
        Platform::WooCommerce => woocommerce(&mut rng),
        Platform::Magento2 => magento(&mut rng),
        Platform::Generic => generic(&mut rng),
    };
    if rng.chance(12) {
        look_alike_headers(&mut rng, &mut req);
    }
    if !req.body.is_empty() && rng.chance(15) {
        // Sent in pieces, so a name may straddle two chunks.
        let mut left = req.body.len();
        while left > 0 {
            let n = rng.range(1, left.min(12));
            req.chunks.push(n);
            left -= n;
        }
    }
    if rng.chance(3) && req.target.starts_with('/') {
        // The absolute form, which a server must accept too.
        req.target = format!("http://shop.example.com{}", req.target);
    }
    req.target = printable(&req.target);
    req
}

// ---------------------------------------------------------------------------
// Spelling changes shared by every platform.

fn hex_digit(rng: &mut Rng, d: u8, upper: Option<bool>) -> char {
    let c = b"0123456789ABCDEF"[d as usize] as char;
    match upper {
        Some(true) => c,
        Some(false) => c.to_ascii_lowercase(),
        None if rng.chance(50) => c,
        None => c.to_ascii_lowercase(),
    }
}

/// `%XX` for `b`, its hex in upper, lower or mixed case.
fn escape_byte(rng: &mut Rng, b: u8) -> String {
    let upper = match rng.below(3) {
        0 => Some(true),
        1 => Some(false),
        _ => None,
    };
    format!(
        "%{}{}",
        hex_digit(rng, b >> 4, upper),
        hex_digit(rng, b & 15, upper)
    )
}

/// Percent-encodes each byte of `s` with `percent` chance.
fn escape_some(rng: &mut Rng, s: &str, percent: usize) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if rng.chance(percent) {
            out.push_str(&escape_byte(rng, b));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Percent-encodes one random byte of `s`.
fn escape_one(rng: &mut Rng, s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    let at = rng.below(s.len());
    let mut out = String::new();
    for (i, b) in s.bytes().enumerate() {
        if i == at {
            out.push_str(&escape_byte(rng, b));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// All upper, all lower, or letters flipped at random.
fn case_mix(rng: &mut Rng, s: &str) -> String {
    match rng.below(3) {
        0 => s.to_ascii_uppercase(),
        1 => s.to_ascii_lowercase(),
        _ => s
            .chars()
            .map(|c| {
                if rng.chance(50) {
                    if c.is_ascii_uppercase() {
                        c.to_ascii_lowercase()
                    } else {
                        c.to_ascii_uppercase()
                    }
                } else {
                    c
                }
            })
            .collect(),
    }
}

/// A dot segment that leaves the path where it was (`/x/..`, `/.`),
/// spelled plainly or escaped.
fn neutral_dots(rng: &mut Rng) -> String {
    rng.pick(&[
        "/.",
        "/%2e",
        "/%2E",
        "/x/..",
        "/x/%2e%2e",
        "/x/%2E%2e",
        "/X/.%2e",
        "/./.",
        "/a/b/../..",
    ])
    .to_string()
}

/// A dot segment that climbs out of the last segment (`/..`).
fn climbing_dots(rng: &mut Rng) -> String {
    rng.pick(&[
        "/..", "/%2e%2e", "/%2E%2e", "/.%2e", "/%2e.", "/..;", "/../", "/x/../..", "/%2E%2E/",
    ])
    .to_string()
}

/// Parameters with no meaning, `n` of them.
fn dummies(rng: &mut Rng, n: usize) -> Vec<String> {
    let style = rng.below(3);
    (0..n)
        .map(|i| match style {
            0 => format!("p{i}=1"),
            1 => format!("utm_{i}=x"),
            _ => format!("f{}={}", i % 7, i),
        })
        .collect()
}

/// How many dummy parameters to add: mostly none, sometimes a few,
/// sometimes hundreds, sometimes more than PHP reads (max_input_vars 1000).
fn dummy_count(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=54 => 0,
        55..=79 => rng.range(1, 8),
        80..=91 => rng.range(100, 600),
        _ => rng.range(990, 1100),
    }
}

/// Authback-* headers as a client might disguise them: PHP turns `-`,
/// `_` and `.` alike into `_`, so each becomes HTTP_AUTHBACK_*.
fn look_alike_headers(rng: &mut Rng, req: &mut Req) {
    const NAMES: [&str; 9] = [
        "Authback_Attempt",
        "Authback.Signature",
        "authback-attempt",
        "AUTHBACK-SIGNATURE",
        "Authback_Signature",
        "Authback-Attempt",
        "authback.attempt",
        "Authback-Attempt_",
        "AuthBack_Idempotency",
    ];
    for _ in 0..rng.range(1, 2) {
        let name = rng.pick(&NAMES).to_string();
        let value = rng
            .pick(&["1", "3", "t=1700000000,v1=00ff", "yes"])
            .to_string();
        req.headers.push((name, value));
    }
}

/// The target as printable ASCII: any other byte escaped.
fn printable(target: &str) -> String {
    let mut out = String::with_capacity(target.len());
    for b in target.bytes() {
        if (0x21..0x7f).contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn join_query(path: String, params: &[String]) -> String {
    if params.is_empty() {
        path
    } else {
        format!("{path}?{}", params.join("&"))
    }
}

fn shuffle(rng: &mut Rng, xs: &mut [String]) {
    for i in (1..xs.len()).rev() {
        let j = rng.below(i + 1);
        xs.swap(i, j);
    }
}

/// The authorization token in the fuzzer's callback bodies.
const AUTHORIZATION_TOKEN: &str = "fuzz-authorization-token";

/// A callback body as Klarna sends it, for a session no one has.
fn json_body() -> Vec<u8> {
    static LISTED: std::sync::Once = std::sync::Once::new();
    LISTED.call_once(|| crate::common::sensitive(AUTHORIZATION_TOKEN));
    format!(r#"{{"authorization_token":"{AUTHORIZATION_TOKEN}","session_id":"{SESSION}"}}"#)
        .into_bytes()
}

// ---------------------------------------------------------------------------
// Magento 2: POST /checkout/klarna/authorize?token=<quote token>.

fn magento(rng: &mut Rng) -> Req {
    let mut path = String::new();
    match rng.below(100) {
        0..=24 => path.push_str("/index.php"),
        25..=27 => path.push_str(rng.pick(&["/INDEX.PHP", "/index.php/", "/%69ndex.php"])),
        28..=30 => path.push('/'),
        _ => {}
    }
    let mut segments = [
        "checkout".to_string(),
        "klarna".to_string(),
        "authorize".to_string(),
    ];
    if rng.chance(4) {
        segments[0] = case_mix(rng, "checkout");
    }
    for s in segments.iter_mut().skip(1) {
        if rng.chance(30) {
            *s = case_mix(rng, s);
        }
    }
    if rng.chance(6) {
        let i = rng.below(3);
        segments[i] = escape_one(rng, &segments[i]);
    }
    let inner = rng.chance(8).then(|| rng.below(3));
    for (i, s) in segments.iter().enumerate() {
        if inner == Some(i) {
            if rng.chance(70) {
                path.push_str(&neutral_dots(rng));
            } else {
                path.push('/');
            }
        }
        path.push('/');
        path.push_str(s);
    }
    // What follows the action: Magento reads segments as parameters.
    match rng.below(100) {
        0..=29 => {}
        30..=39 => path.push('/'),
        40..=47 => path.push_str(&format!("/token/{QUOTE_TOKEN}")),
        48..=55 => path.push_str(rng.pick(&["/dryRun/0", "/dryRun/", "/dryrun/0", "/dryRun/1"])),
        56..=79 => {
            if rng.chance(30) {
                path.push_str(rng.pick(&["/dryRun/0", "/x", "/token/x"]));
            }
            path.push_str(&climbing_dots(rng));
            if rng.chance(25) {
                path.push_str(&climbing_dots(rng));
            }
        }
        80..=87 => path.push_str(&neutral_dots(rng)),
        88..=93 => path.push_str(rng.pick(&["/x", "/x/y", "/key/value/", "/%2e%2e%2f"])),
        _ => path.push_str(rng.pick(&["%2F", "%2f..", ";x", "%20", "/%00"])),
    }
    if rng.chance(8) {
        path.push('/');
    }

    let mut params = Vec::new();
    if rng.chance(90) {
        let t = format!("token={QUOTE_TOKEN}");
        params.push(if rng.chance(10) {
            escape_some(rng, &t, 10)
        } else {
            t
        });
    }
    let n = dummy_count(rng);
    let many = n >= 990;
    let mut extra = dummies(rng, n);
    let probe = rng.chance(60);
    let mut family = "magento path";
    if probe {
        family = "magento probe";
        let mut dry = Vec::new();
        match rng.below(100) {
            // The probe itself, alone or shadowed by a name PHP reads as
            // `dryRun` and authback may not.
            0..=24 => dry.push("dryRun=1".to_string()),
            25..=64 => {
                let shadow = rng
                    .pick(&[
                        "dryRun%00=0",
                        "+dryRun=0",
                        "%20dryRun=0",
                        "dryRun%00x=0",
                        "++dryRun=",
                        "dry%52un=0",
                        "dryRun=0",
                        "dryRun%5B%5D=0",
                        "dryRun[]=0",
                        "dryrun=0",
                        "DRYRUN=0",
                        "%2BdryRun=0",
                        "dryRun.=0",
                        "dryRun=",
                    ])
                    .to_string();
                if rng.chance(75) {
                    dry.push("dryRun=1".into());
                    dry.push(shadow);
                } else {
                    dry.push(shadow);
                    dry.push("dryRun=1".into());
                }
            }
            65..=84 => dry.push(
                rng.pick(&[
                    "dryRun=0",
                    "dryRun=",
                    "dryRun",
                    "dryRun=true",
                    "dryRun=01",
                    "dryRun=1%00",
                    "dryRun=%31",
                    "dryRun=+1",
                ])
                .to_string(),
            ),
            _ => dry.push(escape_some(rng, "dryRun=1", 20)),
        }
        if many {
            // More parameters than PHP reads come before the probe: PHP
            // never sees it.
            extra.append(&mut dry);
        } else {
            params.append(&mut dry);
        }
    }
    if many || rng.chance(50) {
        extra.append(&mut params);
        params = extra;
    } else {
        params.append(&mut extra);
    }
    if rng.chance(15) && params.len() < 20 {
        shuffle(rng, &mut params);
    }
    let method = match rng.below(100) {
        0..=91 => "POST",
        92..=95 => "GET",
        _ => "PUT",
    };
    let mut req = Req::new(method, join_query(path, &params), family);
    if rng.chance(10) {
        // The probe's answer may come from a form field too.
        req.content_type = Some("application/x-www-form-urlencoded".into());
        req.body = rng
            .pick(&["dryRun=0", "dryRun=1", "token=x&dryRun=", "a=1"])
            .as_bytes()
            .to_vec();
    } else if method != "GET" {
        req.content_type = Some("application/json".into());
        req.body = json_body();
    }
    req
}

// ---------------------------------------------------------------------------
// WooCommerce: /wc-api/KP_WC_AUTHORIZATION, or `wc-api` as a parameter.

const WOO_NAME: &str = "KP_WC_AUTHORIZATION";

fn woo_value(rng: &mut Rng, junk: &[&str]) -> String {
    let mut v = WOO_NAME.to_string();
    if rng.chance(40) {
        v = case_mix(rng, &v);
    }
    if rng.chance(15) {
        v = escape_some(rng, &v, 15);
    }
    if rng.chance(15) {
        v.push_str(rng.pick(junk));
    }
    if rng.chance(4) {
        v.insert_str(0, rng.pick(&["+", "%20", "%09"]));
    }
    v
}

fn woo_page(rng: &mut Rng) -> String {
    rng.pick(&[
        "/",
        "/",
        "/index.php",
        "/shop/",
        "/shop",
        "/2026/11/hello-world/",
        "/wp-login.php",
        "/?",
        "/cart/",
    ])
    .to_string()
}

fn woocommerce(rng: &mut Rng) -> Req {
    let method = match rng.below(100) {
        0..=79 => "POST",
        80..=92 => "GET",
        93..=95 => "PUT",
        96..=97 => "PATCH",
        _ => "DELETE",
    };
    let family = match rng.below(100) {
        0..=39 => "woo endpoint",
        40..=79 => "woo query",
        _ => "woo body",
    };
    let mut req = match family {
        "woo endpoint" => woo_endpoint(rng, method),
        "woo query" => woo_query(rng, method),
        _ => woo_body(rng),
    };
    if req.body.is_empty() && req.method != "GET" && rng.chance(80) {
        req.content_type = Some("application/json".into());
        req.body = json_body();
    }
    req
}

fn woo_endpoint(rng: &mut Rng, method: &'static str) -> Req {
    let mut path = match rng.below(100) {
        0..=44 => String::new(),
        45..=59 => "/index.php".into(),
        60..=84 => rng
            .pick(&[
                "/shop",
                "/2026/11/hello-world",
                "/product/klarna-test",
                "/shop/index.php",
                "/wc-api/x",
            ])
            .to_string(),
        _ => neutral_dots(rng),
    };
    if rng.chance(5) {
        path.push('/');
    }
    let endpoint = match rng.below(100) {
        0..=89 => "wc-api".to_string(),
        90..=94 => case_mix(rng, "wc-api"),
        _ => escape_one(rng, "wc-api"),
    };
    path.push('/');
    path.push_str(&endpoint);
    if rng.chance(5) {
        path.push_str(&neutral_dots(rng));
    }
    path.push('/');
    path.push_str(&woo_value(
        rng,
        &["%20", "%3Cb%3E", "%09", "+", "%0A", "!", "%00", "/"],
    ));
    match rng.below(100) {
        0..=69 => {}
        70..=84 => path.push('/'),
        85..=89 => path.push_str("//"),
        90..=94 => path.push_str("/x"),
        _ => path.push_str(&climbing_dots(rng)),
    }
    let n = if rng.chance(30) { dummy_count(rng) } else { 0 };
    let params = dummies(rng, n);
    Req::new(method, join_query(path, &params), "woo endpoint")
}

fn woo_query(rng: &mut Rng, method: &'static str) -> Req {
    let page = woo_page(rng);
    let name = match rng.below(100) {
        0..=44 => "wc-api".to_string(),
        45..=89 => rng
            .pick(&[
                "+wc-api",
                "%20wc-api",
                "wc-api%00",
                "wc-api%00junk",
                "++wc-api",
                "%20%20wc-api",
                "%2Bwc-api",
                "wc%2Dapi",
                "WC-API",
                "wc-api[]",
                "wc-api%5B%5D",
                "wc_api",
                "wc.api",
                "wc-api.",
            ])
            .to_string(),
        _ => escape_some(rng, "wc-api", 25),
    };
    let value = woo_value(rng, &["!", ".", "%00", "%20", "*", "%3C", "+"]);
    let mut params = vec![format!("{name}={value}")];
    if rng.chance(10) {
        let other = rng
            .pick(&["wc-api=other", "wc-api=", "wc-api=KP_WC_AUTHORIZATION"])
            .to_string();
        if rng.chance(50) {
            params.push(other);
        } else {
            params.insert(0, other);
        }
    }
    let n = dummy_count(rng);
    let mut all = dummies(rng, n);
    if rng.chance(70) || n >= 990 {
        all.append(&mut params);
    } else {
        params.append(&mut all);
        all = params;
    }
    let page = page.trim_end_matches('?').to_string();
    Req::new(method, join_query(page, &all), "woo query")
}

fn woo_body(rng: &mut Rng) -> Req {
    let mut target = woo_page(rng).trim_end_matches('?').to_string();
    if rng.chance(15) {
        target.push_str("?p=12");
    }
    let mut req = Req::new("POST", target, "woo body");
    if rng.chance(70) {
        req.content_type = Some(
            rng.pick(&[
                "application/x-www-form-urlencoded",
                "application/x-www-form-urlencoded",
                "application/x-www-form-urlencoded; charset=UTF-8",
                "Application/X-WWW-Form-Urlencoded",
                "APPLICATION/X-WWW-FORM-URLENCODED",
                "application/x-www-form-urlencoded ;charset=x",
                "application/x-www-form-urlencoded;",
            ])
            .to_string(),
        );
        let value = woo_value(rng, &["!", "%20", "."]);
        let body = match rng.below(6) {
            0 => format!("wc-api={value}"),
            1 => format!("+wc-api={value}"),
            2 => format!(
                "{{\"session_id\":\"{SESSION}\",\"authorization_token\":\"t\",\"x\":\"&wc-api={value}&\"}}"
            ),
            3 => format!("a=1&wc-api={value}&b=2"),
            4 => format!("wc%2Dapi={value}"),
            _ => format!("wc-api%00={value}"),
        };
        req.body = body.into_bytes();
    } else {
        let boundary = "fuzzBoundary7MA4YWxkTrZu0gW";
        req.content_type = Some(
            rng.pick(&[
                "multipart/form-data; boundary=fuzzBoundary7MA4YWxkTrZu0gW",
                "multipart/form-data; boundary=\"fuzzBoundary7MA4YWxkTrZu0gW\"",
                "Multipart/Form-Data;boundary=fuzzBoundary7MA4YWxkTrZu0gW",
            ])
            .to_string(),
        );
        let name = rng.pick(&[
            "name=\"wc-api\"",
            "name=\"wc-api\"",
            "name=wc-api",
            "NAME=\"wc-api\"",
            "name=\" wc-api\"",
            "name=\"wc-api[]\"",
            "name=\"wc%2Dapi\"",
        ]);
        let mut value = WOO_NAME.to_string();
        if rng.chance(40) {
            value = case_mix(rng, &value);
        }
        if rng.chance(15) {
            value.push_str(rng.pick(&["!", " ", "<b>"]));
        }
        req.body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; {name}\r\n\r\n{value}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"session_id\"\r\n\r\n{SESSION}\r\n--{boundary}--\r\n"
        )
        .into_bytes();
    }
    req
}

// ---------------------------------------------------------------------------
// Generic routes: the forward paths, where only authback may deliver.

fn generic(rng: &mut Rng) -> Req {
    let method = match rng.below(100) {
        0..=84 => "POST",
        85..=94 => "GET",
        _ => "PUT",
    };
    let mut req = if rng.chance(88) {
        forward_path(rng, method)
    } else {
        route_path(rng, method)
    };
    if method != "GET" {
        if rng.chance(50) {
            req.content_type = Some("application/json".into());
            req.body = json_body();
        } else {
            req.content_type = Some("application/x-www-form-urlencoded".into());
            req.body = format!("session_id={SESSION}&authorization_token=t").into_bytes();
        }
    }
    req
}

fn forward_path(rng: &mut Rng, method: &'static str) -> Req {
    let fp = rng.pick(&FORWARD_PATHS);
    let mut segments: Vec<String> = fp
        .trim_start_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    if rng.chance(35) {
        let i = rng.below(segments.len());
        segments[i] = escape_some(rng, &segments[i], 25);
    }
    if rng.chance(6) {
        let i = rng.below(segments.len());
        segments[i] = case_mix(rng, &segments[i]);
    }
    let mut path = String::new();
    if rng.chance(4) {
        path.push_str(rng.pick(&["/index.php", "/x.php"]));
    }
    let dots = rng.chance(15).then(|| rng.below(segments.len()));
    let slashes = rng.chance(8).then(|| rng.below(segments.len()));
    for (i, s) in segments.iter().enumerate() {
        if dots == Some(i) {
            path.push_str(&neutral_dots(rng));
        }
        if slashes == Some(i) {
            path.push('/');
        }
        path.push('/');
        path.push_str(s);
    }
    // What PHP may still run the script for: PATH_INFO after `x.php`.
    if rng.chance(55) {
        path.push_str(rng.pick(&[
            "/",
            "/x",
            "/x/y",
            "/authorized",
            "%2F",
            "%2f",
            "%2Fx",
            "/%2e",
            "/.",
            "/..",
            "/x/..",
            ";x",
            "%20",
            ".",
            "%00",
            "%5C",
            "/%2F",
            "//",
        ]));
    }
    let mut params = Vec::new();
    if rng.chance(25) {
        params.push("a=1".to_string());
        let n = rng.range(0, 3);
        params.extend(dummies(rng, n));
    }
    Req::new(method, join_query(path, &params), "forward path")
}

fn route_path(rng: &mut Rng, method: &'static str) -> Req {
    let base = if rng.chance(50) {
        "/klarna/authorization/cart-1"
    } else {
        "/klarna/form/cart-1"
    };
    let mut path = base.to_string();
    if rng.chance(40) {
        path = format!("/{}", escape_some(rng, &base[1..], 15));
    }
    if rng.chance(20) {
        path.push_str(rng.pick(&["/", "/..", "%2F", "/x/.."]));
    }
    Req::new(method, format!("{path}?token=fuzz-bad-token"), "route path")
}
