//! A differential fuzzer for one promise: a shop's handler never runs for
//! a request that did not pass its route's checks. The flaw it closes is a
//! request that authback reads one way (its canonical path, its own query
//! parsing) and PHP another, once authback has forwarded it.
//!
//! Each platform's PHP imitation (tests/it/platforms/) marks an answer
//! `X-Handler-Ran: 1` when its handler ran (Magento: past the dryRun
//! probe; WooCommerce: authorization_cb; generic: the forward path's
//! script), and `X-Saw-Authback: <names>` when PHP made HTTP_AUTHBACK_*
//! variables of the request's headers. authback runs on the platform's
//! config with every route fenced by `allow_ips` to a foreign address, so
//! no client here may ever make a handler run: a callback can only be
//! refused (403, 400, 401, 404, 429).
//!
//! Mutations come from a seeded grammar around each platform's callback
//! URL and the generic routes' forward paths (`fuzz/gen.rs`). Per
//! mutation, through authback: no `X-Handler-Ran`, no `X-Saw-Authback`.
//! Three controls keep the fuzzer honest:
//!  a. sent straight to PHP, a healthy share of the same mutations reach
//!     the handler, and PHP reads the look-alike headers as
//!     HTTP_AUTHBACK_* (the mutations mean something);
//!  b. with `[upstream] path_form = "raw"` and `dialect = "plain"` (the
//!     path forwarded byte for byte, names read as decoded), the fuzzer
//!     finds again the bypasses those keys reopen (`Row`, `RAW_UPSTREAM`);
//!  c. ordinary requests far from any route reach PHP through authback
//!     with the same meaning as sent straight to it.
//!
//! `AUTHBACK_FUZZ_SEED` (decimal or 0x hex) and `AUTHBACK_FUZZ_COUNT`
//! (mutations per platform; 20,000, or 1,000 under the trace-level secrets
//! audit) set the run; `AUTHBACK_FUZZ_ONLY=i,j` replays single mutations.
//! Run: `cargo test --test it fuzz::`.

mod gen;
mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use gen::{Platform, Req};
use wire::{Answer, Client};

const DEFAULT_SEED: u64 = 0x5EED_A17B_AC4B_2026;
/// Requests in flight at once, each sender on its own connection.
const IN_FLIGHT: usize = 12;
/// An answer slower than this is a failure of its own (a hung request).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// A documentation address (RFC 5737): every route admits only it.
const FOREIGN: &str = "[\"192.0.2.1/32\"]";
const ADMIN_TOKEN: &str = "fuzz-admin-token-0123456789abcdef";

/// Control b's `[upstream]` keys: the raw path forwarded byte for byte and
/// parameter names read as decoded, with no PHP reading. They reopen rows
/// 1 to 3 (see `Row`). Rows 4 and 5 stay closed whatever the keys say:
/// look-alike headers are removed and every spelling of a forward path is
/// refused in every dialect. That the fuzzer finds those two when they
/// are open is shown by control a (PHP reads the look-alike headers and
/// runs the forward path's script) and, on a build from before the keys,
/// by running this control with `AUTHBACK_FUZZ_RAW_UPSTREAM=""`: such a
/// build shields nothing of the five, and all five rows are then required.
const RAW_UPSTREAM: &str = "path_form = \"raw\"\ndialect = \"plain\"";

fn seed() -> u64 {
    let seed = match std::env::var("AUTHBACK_FUZZ_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("AUTHBACK_FUZZ_SEED={s} is not a number"))
        }
        Err(_) => DEFAULT_SEED,
    };
    eprintln!("fuzz: seed {seed:#x} (AUTHBACK_FUZZ_SEED to change it)");
    seed
}

/// The mutation indices to send: `AUTHBACK_FUZZ_ONLY`, else `0..count`.
fn indices() -> Vec<usize> {
    if let Ok(only) = std::env::var("AUTHBACK_FUZZ_ONLY") {
        return only
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("AUTHBACK_FUZZ_ONLY: {s} is not an index"))
            })
            .collect();
    }
    let default = if std::env::var_os("AUTHBACK_TEST_TRACE").is_some() {
        1_000
    } else {
        20_000
    };
    let count = std::env::var("AUTHBACK_FUZZ_COUNT")
        .ok()
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("AUTHBACK_FUZZ_COUNT={s} is not a number"))
        })
        .unwrap_or(default);
    (0..count).collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// The PHP backends: `php -S`, several workers, in fuzz mode.

struct Php {
    // `php -S` with workers forks: dropped, its whole group ends.
    _child: Group,
    addr: SocketAddr,
}

impl Php {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The platform's PHP backend on a free port. Errors and notices go to
/// stderr (a file in `dir`), never into an answer, where they would stop
/// the markers' headers. OPcache spares each request compiling the
/// imitation again.
async fn start_php(platform: Platform, dir: &Path) -> Php {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new("php");
    cmd.args(["-d", "display_errors=stderr", "-d", "opcache.enable_cli=1"])
        .args(["-S", &listen]);
    if platform == Platform::Generic {
        cmd.args(["-t", "docroot"]);
    }
    let child = cmd
        .arg("router.php")
        .current_dir(root().join("tests/it/platforms").join(platform.dir()))
        .env("PLATFORM_DB", dir.join(format!("{platform}.db")))
        .env("PLATFORM_FUZZ", "1")
        .env("PHP_CLI_SERVER_WORKERS", "4")
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{platform}-php.txt"))).expect("php log"))
        .spawn()
        .expect("php -S (CI installs php-cli and php-sqlite3)");
    let php = Php {
        _child: Group(child),
        addr: listen.parse().expect("addr"),
    };
    // The first request creates the imitation's database before the
    // workers share it.
    let first = if platform == Platform::Generic {
        "GET / HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n"
    } else {
        "GET /__test/state HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n"
    };
    eventually!(
        tokio::net::TcpStream::connect(php.addr).await.is_ok(),
        "php -S to listen on {}",
        php.addr
    );
    let a = Client::new(php.addr)
        .send(first.as_bytes())
        .await
        .expect("php answers");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    php
}

// ---------------------------------------------------------------------------
// authback on each platform's config, every route fenced off.

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the config lacks `{from}`");
    text.replace(from, to)
}

/// Where the test's certificate and the store live, and the upstream.
struct Setting<'a> {
    dir: &'a Path,
    cert: &'a Path,
    key: &'a Path,
    upstream: &'a str,
    /// More `[upstream]` keys.
    upstream_extra: &'a str,
}

/// The platform's example config (its routes as they are), for the test:
/// a test certificate, the store in `dir`, the imitation as upstream with
/// `upstream_extra` added to `[upstream]`, and every route's `allow_ips`
/// a foreign address. Klarna's API and order watch are left out.
fn example_config(rel: &str, s: &Setting<'_>) -> String {
    let example = read(rel);
    let (head, _) = example
        .split_once("\n[klarna]")
        .unwrap_or_else(|| panic!("{rel}: [klarna] and [order_watch] come last"));
    let mut text = replace_once(
        head,
        "\"/etc/authback/tls/tls.crt\"",
        &format!("\"{}\"", s.cert.display()),
    );
    text = replace_once(
        &text,
        "\"/etc/authback/tls/tls.key\"",
        &format!("\"{}\"", s.key.display()),
    );
    text = replace_once(
        &text,
        "token = \"env:AUTHBACK_ADMIN_TOKEN\"",
        &format!("token = \"{ADMIN_TOKEN}\""),
    );
    text = replace_once(
        &text,
        "path = \"/var/lib/authback/authback.db\"",
        &format!("path = \"{}\"", s.dir.join("authback.db").display()),
    );
    text = replace_once(
        &text,
        "allow_ips = [\"klarna-production\"]",
        &format!("allow_ips = {FOREIGN}"),
    );
    text.lines()
        .map(|l| {
            if l.starts_with("url = \"http://127.0.0.1:") {
                format!("url = \"{}\"\n{}", s.upstream, s.upstream_extra)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Two generic routes, `json` and `form`, each delivering to a real PHP
/// script (tests/it/platforms/generic/docroot/).
fn generic_config(s: &Setting<'_>) -> String {
    let [json_fp, form_fp] = gen::FORWARD_PATHS;
    format!(
        r#"
[server]
listen = "127.0.0.1:1"
public_url = "https://localhost"
[server.tls]
cert = "{cert}"
key = "{key}"
[admin]
listen = "127.0.0.1:2"
[upstream]
url = "{upstream}"
timeout = "10s"
signing_secret = "{SIGNING_SECRET}"
{upstream_extra}
[[routes]]
name = "json"
kind = "klarna_authorization"
path = "/klarna/authorization/{{reference}}"
forward_path = "{json_fp}"
forward_format = "json"
secrets = ["{SECRET}"]
allow_ips = {FOREIGN}
[[routes]]
name = "form"
kind = "klarna_authorization"
path = "/klarna/form/{{reference}}"
forward_path = "{form_fp}"
forward_format = "form"
secrets = ["{SECRET}"]
allow_ips = {FOREIGN}
"#,
        cert = s.cert.display(),
        key = s.key.display(),
        upstream = s.upstream,
        upstream_extra = s.upstream_extra,
    )
}

/// authback for `platform` in front of `upstream`, with a plain HTTP
/// listener for the fuzzer.
async fn start_authback(platform: Platform, upstream: &str, upstream_extra: &str) -> Authback {
    let dir = TempDir::new();
    let cert = make_cert();
    let (c, k) = write_cert(dir.path(), &cert);
    let setting = Setting {
        dir: dir.path(),
        cert: &c,
        key: &k,
        upstream,
        upstream_extra,
    };
    let text = match platform {
        Platform::WooCommerce => example_config("examples/platforms/woocommerce.toml", &setting),
        Platform::Magento2 => example_config("examples/platforms/magento2.toml", &setting),
        Platform::Generic => generic_config(&setting),
    };
    Authback::start_text(dir, cert.der, &text, true).await
}

// ---------------------------------------------------------------------------
// Sending mutations.

#[derive(Clone)]
struct Outcome {
    index: usize,
    status: u16,
    ran: bool,
    saw: Option<String>,
}

impl Outcome {
    fn of(index: usize, a: &Answer) -> Self {
        Outcome {
            index,
            status: a.status,
            ran: a.header("x-handler-ran").is_some(),
            saw: a.header("x-saw-authback").map(str::to_string),
        }
    }

    fn failed(&self) -> bool {
        self.ran || self.saw.is_some()
    }
}

/// Sends mutations `indices` of `platform` to `addr`, `IN_FLIGHT` at once;
/// `close` asks for a new connection per request. A request that gets no
/// answer is a failure with its seed, index and request.
async fn blast(
    addr: SocketAddr,
    platform: Platform,
    seed: u64,
    indices: &[usize],
    close: bool,
) -> Vec<Outcome> {
    let indices = Arc::new(indices.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (indices, next) = (indices.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            let mut client = Client::new(addr);
            let mut out = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = indices.get(k) else {
                    return Ok(out);
                };
                let req = gen::mutation(platform, seed, i);
                match tokio::time::timeout(ANSWER_TIMEOUT, client.send(&req.to_bytes(close))).await
                {
                    Ok(Ok(a)) => out.push(Outcome::of(i, &a)),
                    Ok(Err(e)) => {
                        return Err(format!(
                            "seed {seed:#x} {platform} #{i}: no answer from {addr} ({e}): {req}"
                        ))
                    }
                    Err(_) => {
                        return Err(format!(
                            "seed {seed:#x} {platform} #{i}: no answer from {addr} in {ANSWER_TIMEOUT:?}: {req}"
                        ))
                    }
                }
            }
        }));
    }
    let mut all = Vec::new();
    for s in senders {
        match s.await.expect("sender") {
            Ok(mut out) => all.append(&mut out),
            Err(e) => panic!("{e}"),
        }
    }
    all.sort_by_key(|o| o.index);
    all
}

fn statuses(outcomes: &[Outcome]) -> String {
    let mut by: BTreeMap<u16, usize> = BTreeMap::new();
    for o in outcomes {
        *by.entry(o.status).or_default() += 1;
    }
    by.iter()
        .map(|(s, n)| format!("{s}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// Which known kind of bypass a failure is.

/// The known kinds of bypass, numbered as the rows of the review that
/// found them (tests/it/reading.rs has one regression test per row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Row {
    /// 1: a dot segment moves authback's canonical path off the route,
    /// while the raw path PHP routes on still names the handler.
    DotSegments = 1,
    /// 2: authback passed the request as the route's probe
    /// (`passthrough_query`), PHP read the probe's parameter otherwise.
    ProbeMisread = 2,
    /// 3: a routed parameter (`wc-api`) under a name PHP reads as it and
    /// authback does not, or in a form body.
    ParameterName = 3,
    /// 4: a look-alike of an `Authback-*` header reached PHP.
    LookAlikeHeader = 4,
    /// 5: a spelling of a forward path PHP runs the script for.
    ForwardPath = 5,
    /// None of the above: a gap of its own.
    Other = 9,
}

/// Percent-decodes `s` as bytes (invalid escapes kept), `+` as space when
/// `plus`.
fn decode_bytes(s: &str, plus: bool) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// A query's parameters as authback reads them without a dialect: split
/// on `&`, names and values decoded (`+` a space), kept raw when the
/// result is not UTF-8.
fn plain_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |s: &str| String::from_utf8(decode_bytes(s, true)).unwrap_or(s.to_string());
            (dec(k), dec(v))
        })
        .collect()
}

/// The top-level name PHP registers for a decoded parameter name: cut at
/// NUL, leading spaces dropped, `name[…]` read as `name`, space and `.`
/// (and an unclosed `[`) read as `_`.
fn php_name(decoded: &[u8]) -> String {
    let cut = decoded.split(|&b| b == 0).next().unwrap_or(&[]);
    let s = String::from_utf8_lossy(cut);
    let s = s.trim_start_matches(' ');
    let base = match s.find('[') {
        Some(at) if s[at..].contains(']') => &s[..at],
        _ => s,
    };
    base.replace([' ', '.', '['], "_")
}

fn has_dot_segment(path: &str) -> bool {
    String::from_utf8_lossy(&decode_bytes(path, false))
        .split('/')
        .any(|seg| matches!(seg.split(';').next(), Some(".") | Some("..")))
}

fn classify(platform: Platform, req: &Req, o: &Outcome) -> Vec<Row> {
    let mut rows = Vec::new();
    if o.saw.is_some() {
        rows.push(Row::LookAlikeHeader);
    }
    if !o.ran {
        return rows;
    }
    let query = req.query().unwrap_or("");
    rows.push(match platform {
        Platform::Generic => Row::ForwardPath,
        Platform::Magento2 => {
            let pairs = plain_pairs(query);
            let dry: Vec<_> = pairs.iter().filter(|(k, _)| k == "dryRun").collect();
            if dry.len() == 1 && dry[0].1 == "1" {
                Row::ProbeMisread
            } else if has_dot_segment(req.path()) {
                Row::DotSegments
            } else {
                Row::Other
            }
        }
        Platform::WooCommerce => {
            let body = String::from_utf8_lossy(&req.body);
            let in_body = String::from_utf8_lossy(&decode_bytes(&body, true)).contains("wc-api");
            let disguised = query.split('&').any(|pair| {
                let raw = pair.split_once('=').map_or(pair, |(k, _)| k);
                let plain = String::from_utf8(decode_bytes(raw, true)).unwrap_or(raw.to_string());
                plain != "wc-api" && php_name(&decode_bytes(raw, true)) == "wc-api"
            });
            if in_body || disguised {
                Row::ParameterName
            } else {
                Row::Other
            }
        }
    });
    rows
}

fn row_name(r: Row) -> String {
    match r {
        Row::Other => "other".into(),
        r => format!("row {}", r as u8),
    }
}

/// Failures by row (a failure may show two: a bypass with a look-alike
/// header).
fn rows_of(platform: Platform, seed: u64, failures: &[&Outcome]) -> BTreeMap<Row, Vec<Outcome>> {
    let mut by: BTreeMap<Row, Vec<Outcome>> = BTreeMap::new();
    for o in failures {
        let req = gen::mutation(platform, seed, o.index);
        for r in classify(platform, &req, o) {
            by.entry(r).or_default().push((*o).clone());
        }
    }
    by
}

fn describe(platform: Platform, seed: u64, o: &Outcome) -> String {
    let req = gen::mutation(platform, seed, o.index);
    format!(
        "seed {seed:#x} {platform} #{}: {} {}{}\n      {req}",
        o.index,
        o.status,
        if o.ran { "handler ran" } else { "" },
        o.saw
            .as_deref()
            .map(|s| format!(" backend saw {s}"))
            .unwrap_or_default()
    )
}

/// Each row's count and its `per_row` shortest requests (the easiest to
/// read and to replay), as one text: tests run side by side, and their
/// reports must not interleave.
fn report_rows(
    platform: Platform,
    seed: u64,
    by: &BTreeMap<Row, Vec<Outcome>>,
    per_row: usize,
) -> String {
    let mut out = String::new();
    for (r, list) in by {
        out.push_str(&format!(
            "  {platform} {}: {} failures\n",
            row_name(*r),
            list.len()
        ));
        let mut shortest: Vec<(usize, &Outcome)> = list
            .iter()
            .map(|o| {
                let len = gen::mutation(platform, seed, o.index).to_bytes(false).len();
                (len, o)
            })
            .collect();
        shortest.sort_by_key(|(len, o)| (*len, o.index));
        for (_, o) in shortest.into_iter().take(per_row) {
            out.push_str(&format!("    {}\n", describe(platform, seed, o)));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The invariant, through authback.

async fn handler_never_runs_through_authback(platform: Platform) {
    let seed = seed();
    let indices = indices();
    let dir = TempDir::new();
    let php = start_php(platform, dir.path()).await;
    let ab = start_authback(platform, &php.url(), "").await;
    let addr = ab.plain.expect("plain listener");
    let started = Instant::now();
    let outcomes = blast(addr, platform, seed, &indices, false).await;
    let took = started.elapsed();
    let failures: Vec<&Outcome> = outcomes.iter().filter(|o| o.failed()).collect();
    let ran = failures.iter().filter(|o| o.ran).count();
    let saw = failures.iter().filter(|o| o.saw.is_some()).count();
    eprintln!(
        "fuzz {platform} through authback: {} mutations in {:.1} s ({:.0}/s); statuses {}; {} failures: handler ran {ran}, backend saw Authback-* {saw}",
        outcomes.len(),
        took.as_secs_f64(),
        outcomes.len() as f64 / took.as_secs_f64(),
        statuses(&outcomes),
        failures.len(),
    );
    if failures.is_empty() {
        return;
    }
    let by = rows_of(platform, seed, &failures);
    eprint!("{}", report_rows(platform, seed, &by, 5));
    panic!(
        "{platform}: {} of {} mutations got past authback to the handler or with an Authback-* header (seed {seed:#x}); first: {}\nreplay one: AUTHBACK_FUZZ_SEED={seed:#x} AUTHBACK_FUZZ_ONLY={} cargo test --test it fuzz::{platform}_",
        failures.len(),
        outcomes.len(),
        describe(platform, seed, failures[0]),
        failures[0].index,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn woocommerce_handler_never_runs_through_authback() {
    handler_never_runs_through_authback(Platform::WooCommerce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magento2_handler_never_runs_through_authback() {
    handler_never_runs_through_authback(Platform::Magento2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_forward_path_scripts_never_run_through_authback() {
    handler_never_runs_through_authback(Platform::Generic).await;
}

// ---------------------------------------------------------------------------
// Control a: the mutations mean something.

/// At least this share of mutations sent straight to PHP reach the handler.
const MIN_REACH: f64 = 0.20;

async fn mutations_reach_the_handler_directly(platform: Platform) {
    let seed = seed();
    let indices = indices();
    let dir = TempDir::new();
    let php = start_php(platform, dir.path()).await;
    let started = Instant::now();
    let outcomes = blast(php.addr, platform, seed, &indices, true).await;
    let took = started.elapsed();
    let reached = outcomes.iter().filter(|o| o.ran).count();
    let rate = reached as f64 / outcomes.len().max(1) as f64;
    let exposed = outcomes.iter().filter(|o| o.saw.is_some()).count();
    let mut families: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for o in &outcomes {
        let f = families
            .entry(gen::mutation(platform, seed, o.index).family)
            .or_default();
        f.0 += usize::from(o.ran);
        f.1 += 1;
    }
    eprintln!(
        "fuzz {platform} straight to PHP: {reached} of {} mutations reached the handler ({:.1}%), {exposed} had PHP read a look-alike header as HTTP_AUTHBACK_*, in {:.1} s ({:.0}/s); by family {:?}; statuses {}",
        outcomes.len(),
        rate * 100.0,
        took.as_secs_f64(),
        outcomes.len() as f64 / took.as_secs_f64(),
        families,
        statuses(&outcomes),
    );
    if std::env::var_os("AUTHBACK_FUZZ_ONLY").is_none() {
        assert!(
            rate >= MIN_REACH,
            "{platform}: only {reached} of {} mutations reach the handler straight from a client (seed {seed:#x}): the grammar has drifted from what the platform routes",
            outcomes.len()
        );
        assert!(
            exposed > 0,
            "{platform}: no look-alike header became HTTP_AUTHBACK_* in PHP (seed {seed:#x})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn woocommerce_mutations_reach_the_handler_directly() {
    mutations_reach_the_handler_directly(Platform::WooCommerce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magento2_mutations_reach_the_handler_directly() {
    mutations_reach_the_handler_directly(Platform::Magento2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_mutations_reach_the_handler_directly() {
    mutations_reach_the_handler_directly(Platform::Generic).await;
}

// ---------------------------------------------------------------------------
// Control b: the raw control finds the bypasses it reopens.

/// One platform behind the raw control: its failures by row.
async fn raw_run(
    platform: Platform,
    seed: u64,
    indices: &[usize],
    extra: &str,
) -> BTreeMap<Row, Vec<Outcome>> {
    let dir = TempDir::new();
    let php = start_php(platform, dir.path()).await;
    let ab = start_authback(platform, &php.url(), extra).await;
    let addr = ab.plain.expect("plain listener");
    let started = Instant::now();
    let outcomes = blast(addr, platform, seed, indices, false).await;
    let failures: Vec<&Outcome> = outcomes.iter().filter(|o| o.failed()).collect();
    eprintln!(
        "fuzz {platform} through raw authback: {} mutations in {:.1} s; {} failures",
        outcomes.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    rows_of(platform, seed, &failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_upstream_rediscovers_every_known_bypass() {
    let seed = seed();
    let indices = indices();
    // AUTHBACK_FUZZ_RAW_UPSTREAM names the keys of a build that shields
    // none of the rows (see RAW_UPSTREAM): all five are then required.
    let (extra, required) = match std::env::var("AUTHBACK_FUZZ_RAW_UPSTREAM") {
        Ok(keys) => (keys, 5),
        Err(_) => (RAW_UPSTREAM.to_string(), 3),
    };
    let (woo, magento, generic) = tokio::join!(
        raw_run(Platform::WooCommerce, seed, &indices, &extra),
        raw_run(Platform::Magento2, seed, &indices, &extra),
        raw_run(Platform::Generic, seed, &indices, &extra),
    );
    let mut found: BTreeSet<Row> = BTreeSet::new();
    for (platform, by) in [
        (Platform::WooCommerce, &woo),
        (Platform::Magento2, &magento),
        (Platform::Generic, &generic),
    ] {
        eprint!("{}", report_rows(platform, seed, by, 2));
        found.extend(by.keys());
    }
    let missing: Vec<String> = [
        Row::DotSegments,
        Row::ProbeMisread,
        Row::ParameterName,
        Row::LookAlikeHeader,
        Row::ForwardPath,
    ]
    .into_iter()
    .take(required)
    .filter(|r| !found.contains(r))
    .map(row_name)
    .collect();
    assert!(
        missing.is_empty(),
        "with `[upstream] {}` the fuzzer no longer finds {missing:?} (seed {seed:#x}): it would miss them behind a broken authback too",
        extra.replace('\n', " ")
    );
}

// ---------------------------------------------------------------------------
// Control c: what is far from every route passes with its meaning.

/// What PHP read of a request (the generic backend's echo), less what a
/// proxy may add.
fn meaning(a: &Answer) -> Result<serde_json::Value, String> {
    let mut v: serde_json::Value = serde_json::from_slice(&a.body)
        .map_err(|e| format!("{} {e}: {}", a.status, String::from_utf8_lossy(&a.body)))?;
    v["status"] = a.status.into();
    Ok(v)
}

/// Ordinary shop traffic: pages and assets with queries, form posts,
/// multipart uploads, `;jsessionid=` paths, percent-encoded UTF-8.
fn corpus(seed: u64) -> Vec<Req> {
    const BOUNDARY: &str = "corpusBoundaryQ3xY9";
    let multipart = |parts: &[(&str, Option<&str>, &str)]| -> Vec<u8> {
        let mut b = String::new();
        for (name, file, content) in parts {
            b.push_str(&format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\""
            ));
            if let Some(f) = file {
                b.push_str(&format!(
                    "; filename=\"{f}\"\r\nContent-Type: application/octet-stream"
                ));
            }
            b.push_str(&format!("\r\n\r\n{content}\r\n"));
        }
        b.push_str(&format!("--{BOUNDARY}--\r\n"));
        b.into_bytes()
    };
    let get = |t: &str| Req::new("GET", t.to_string(), "corpus");
    let form = |t: &str, body: &str| {
        let mut r = Req::new("POST", t.to_string(), "corpus");
        r.content_type = Some("application/x-www-form-urlencoded".into());
        r.body = body.as_bytes().to_vec();
        r
    };
    let upload = |t: &str, parts: &[(&str, Option<&str>, &str)]| {
        let mut r = Req::new("POST", t.to_string(), "corpus");
        r.content_type = Some(format!("multipart/form-data; boundary={BOUNDARY}"));
        r.body = multipart(parts);
        r
    };
    let pdf = "%PDF-1.4 ".repeat(137);
    let mut base = vec![
        get("/"),
        get("/shop/?orderby=price&paged=2"),
        get("/product/klarna-test/?attribute_pa_color=blue&utm_source=news%20letter"),
        get("/wp-content/themes/storefront/style.css?ver=4.5.1"),
        get("/static/version1700000000/frontend/Magento/luma/en_US/mage/calendar.css"),
        get("/media/catalog/product/cache/1/image/700x/a.jpg?x=1&y[]=2&y[]=3&z[k]=v"),
        get("/search?q=k%C3%B6ttbullar+%26+lingon&cat=%E6%97%A5%E6%9C%AC"),
        get("/produkt/%C3%A4pfel-und-birnen"),
        get("/%E6%97%A5%E6%9C%AC/%E8%AA%9E"),
        get("/caf%c3%a9/men%C3%BC?s=%F0%9F%98%80"),
        get("/account;jsessionid=0123456789ABCDEF?tab=orders"),
        get("/cart;jsessionid=ABC/checkout"),
        get("/app/page;v=1"),
        get("/a%2Bb/c%26d?x=%3D&y=a+b"),
        get("/%7Euser/profile?lang=sv_SE"),
        get("/robots.txt"),
        get("/favicon.ico"),
        get("/sitemap.xml?page=2"),
        get("/checkout/cart/?coupon=SPRING"),
        get("/customer/section/load/?sections=cart%2Cmessages&force_new_section_timestamp=false&_=1700000000"),
        get("/index.php/catalog/product/view/id/42"),
        get("/blog/2026/11/hello-world/?replytocom=7"),
        form(
            "/wp-admin/admin-ajax.php",
            "action=woocommerce_add_to_cart&product_id=12&quantity=2",
        ),
        form("/checkout/cart/add/", "product=5&qty=1&options[color]=red"),
        form(
            "/customer/account/loginPost/",
            "login[username]=a%40b.c&login[password]=x%26y",
        ),
        form(
            "/contact",
            "name=J%C3%B6rg+M%C3%BCller&message=hello%0Aworld&consent=on",
        ),
        form("/?add-to-cart=12", "quantity=1&variation_id=13"),
        upload(
            "/upload?ticket=7",
            &[("note", None, "invoice"), ("doc", Some("invoice.pdf"), &pdf)],
        ),
        upload(
            "/account/returns/new",
            &[
                ("order", None, "100042"),
                ("photo", Some("a.jpg"), "JFIFJFIFJFIF"),
                ("photo2", Some("b.png"), "PNG"),
            ],
        ),
    ];
    let mut put = Req::new("PUT", "/rest/V1/carts/mine/items?a=1".into(), "corpus");
    put.content_type = Some("application/json".into());
    put.body = br#"{"cartItem":{"sku":"k-1","qty":2}}"#.to_vec();
    base.push(put);
    // Seeded variants: more parameters, UTF-8 values, either hex case.
    let mut rng = gen::Rng::for_mutation(seed, usize::MAX);
    let words = [
        "%C3%A5",
        "%E2%82%AC",
        "%F0%9F%9B%92",
        "a+b",
        "%2F",
        "%3F",
        "%26",
        "x",
        "%c3%b8",
    ];
    let mut out = base.clone();
    for i in 0..200 {
        let mut r = base[rng.below(base.len())].clone();
        let n = rng.range(1, 6);
        let extra: Vec<String> = (0..n)
            .map(|j| format!("v{i}_{j}={}", rng.pick(&words)))
            .collect();
        let sep = if r.target.contains('?') { '&' } else { '?' };
        r.target = format!("{}{sep}{}", r.target, extra.join("&"));
        out.push(r);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_corpus_reaches_php_with_its_meaning() {
    let seed = seed();
    let dir = TempDir::new();
    let php = start_php(Platform::Generic, dir.path()).await;
    let ab = start_authback(Platform::Generic, &php.url(), "").await;
    let addr = ab.plain.expect("plain listener");
    let corpus = corpus(seed);
    let differences = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let corpus = Arc::new(corpus);
    let mut senders = Vec::new();
    for _ in 0..IN_FLIGHT.min(8) {
        let (corpus, next, differences) = (corpus.clone(), next.clone(), differences.clone());
        let php_addr = php.addr;
        senders.push(tokio::spawn(async move {
            let mut through = Client::new(addr);
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = corpus.get(k) else { return };
                let direct = Client::new(php_addr).send(&req.to_bytes(true)).await;
                let via = through.send(&req.to_bytes(false)).await;
                let (direct, via) = match (direct, via) {
                    (Ok(d), Ok(v)) => (meaning(&d), meaning(&v)),
                    (d, v) => (
                        d.map(|_| serde_json::Value::Null),
                        v.map(|_| serde_json::Value::Null),
                    ),
                };
                if direct != via {
                    differences.lock().expect("lock").push(format!(
                        "#{k} {req}\n      straight: {direct:?}\n      via authback: {via:?}"
                    ));
                }
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    let differences = differences.lock().expect("lock");
    eprintln!(
        "fuzz pass-through corpus: {} requests, {} reached PHP with another meaning through authback",
        corpus.len(),
        differences.len()
    );
    assert!(
        differences.is_empty(),
        "requests far from every route changed meaning through authback (seed {seed:#x}):\n{}",
        differences.join("\n")
    );
}
