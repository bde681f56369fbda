//! `authback doctor`: checks from where it runs what would stop callbacks in
//! production (the config, the public URL as Klarna reaches it, the
//! upstream, Klarna's credentials and clock) and says how to fix each
//! failure. It only reads: it records nothing, and never prints a secret or
//! a URL token.

mod client;
mod klarna;
mod nonce;
mod probe;
mod report;
mod way;

pub use report::{Check, Report, Status};

use report::STEP;
use std::path::Path;

use crate::config::Config;
use crate::net::HostPort;

/// Runs every check on the config at `path`. `ca_file` adds trusted roots
/// for `server.public_url` (a private or test CA). A config that does not
/// load is the only check reported: nothing else can be trusted then.
pub async fn run(path: &Path, ca_file: Option<&Path>) -> Report {
    let config = match load(path) {
        Ok((config, check)) => {
            let mut report = Report {
                checks: vec![check],
            };
            let (mut reach, upstream, mut remote) = tokio::join!(
                probe::checks(&config, ca_file),
                upstream(&config),
                klarna::checks(&config),
            );
            report.checks.append(&mut reach);
            report.checks.push(upstream);
            report.checks.append(&mut remote);
            return report;
        }
        Err(check) => check,
    };
    Report {
        checks: vec![config],
    }
}

/// Check 1: the config loads and validates, and its certificate files load,
/// exactly as `authback check` and `authback run` read them.
fn load(path: &Path) -> Result<(Config, Check), Check> {
    let fix = format!(
        "correct the keys above (see docs/configuration.md), then run `authback check --config {}`",
        path.display()
    );
    let config = Config::load(path).map_err(|e| {
        let mut c = Check::fail("config", e.to_string().lines().next().unwrap_or(""), &fix);
        c.notes = e
            .errors
            .iter()
            .map(|err| format!("{}: {err}", e.file.display()))
            .collect();
        c
    })?;
    let errors = crate::front::tls::check(&config);
    if !errors.is_empty() {
        let n = errors.len();
        let summary = format!(
            "{}: {n} error{}",
            path.display(),
            if n == 1 { "" } else { "s" }
        );
        let mut c = Check::fail("config", summary, fix);
        c.notes = errors
            .iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect();
        return Err(c);
    }
    let mut check = Check::ok("config", format!("{} is valid", path.display()));
    // Warnings name keys, never values: safe to show.
    check.notes = config
        .warnings
        .iter()
        .map(|w| format!("warning: {w}"))
        .collect();
    Ok((config, check))
}

/// Check 3: the upstream accepts a connection within `connect_timeout`, as
/// a delivery needs; an HTTP answer of any status to `GET /` shows it is
/// an HTTP server. Nothing but that `GET` is sent.
async fn upstream(config: &Config) -> Check {
    const NAME: &str = "upstream";
    let url = &config.upstream.url;
    let Some(target) = HostPort::of(url, 80) else {
        return Check::fail(NAME, format!("{url} has no host"), "set upstream.url");
    };
    let shown = format!("http://{}", target.header());
    let limit = config.upstream.connect_timeout.min(STEP);
    let fix = format!(
        "start the backend, or point upstream.url at it (authback must reach {}:{} from here)",
        target.host(),
        target.port()
    );
    let path = format!("{}/", url.path().trim_end_matches('/'));
    match client::send(&target, None, limit, client::get(&target, &path)).await {
        Ok(answer) => Check::ok(
            NAME,
            format!(
                "{shown} is reachable (GET {path} answered {})",
                answer.status
            ),
        ),
        Err(e @ (client::Failure::Connect(_) | client::Failure::Timeout("connection", _))) => {
            Check::fail(NAME, format!("{shown}: {e}"), fix)
        }
        Err(e) => Check::fail(
            NAME,
            format!("{shown} accepts connections, but GET {path} got no HTTP answer: {e}"),
            "check that upstream.url is the backend's plain-HTTP address",
        ),
    }
}
