//! Reloading `[ip_sets]` read from files: each file is compared with what
//! was last read, as often as certificates are (`server.tls.reload_interval`,
//! 5 s with a self-signed one). A change that parses replaces the set for
//! every route fenced by it; one that does not (a bad line, an empty or
//! unreadable file) is logged and the last good list stays.

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::config::{IpSetSource, TlsConfig};
use crate::net::{parse_ip_list, IpSet};
use crate::ops::shutdown::Stop;

/// How often files are compared when no certificate file sets it.
const DEFAULT_EVERY: Duration = Duration::from_secs(5);

/// Starts the reload loop, if any set comes from a file.
pub(crate) fn spawn(
    sets: &[IpSetSource],
    tls: Option<&TlsConfig>,
    stop: Stop,
) -> Option<JoinHandle<()>> {
    let mut watched: Vec<(IpSet, PathBuf, Option<String>)> = sets
        .iter()
        .filter_map(|s| {
            let path = s.file.clone()?;
            let text = std::fs::read_to_string(&path).ok();
            Some((s.set.clone(), path, text))
        })
        .collect();
    if watched.is_empty() {
        return None;
    }
    let every = match tls {
        Some(TlsConfig::Files {
            reload_interval, ..
        }) => *reload_interval,
        Some(TlsConfig::SelfSigned { .. }) | None => DEFAULT_EVERY,
    };
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    for (set, path, last) in &mut watched {
                        reload(set, path, last);
                    }
                }
                _ = stop.wait() => return,
            }
        }
    }))
}

fn reload(set: &IpSet, path: &PathBuf, last: &mut Option<String>) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            if last.is_some() {
                tracing::error!(set = set.name(), path = %path.display(), error = %e, "ip set file unreadable; keeping the last good list");
                *last = None;
            }
            return;
        }
    };
    if last.as_deref() == Some(text.as_str()) {
        return;
    }
    match parse_ip_list(&text) {
        Ok(nets) => {
            let n = nets.len();
            set.replace(nets);
            tracing::info!(set = set.name(), path = %path.display(), networks = n, "ip set reloaded");
        }
        Err(e) => {
            tracing::error!(set = set.name(), path = %path.display(), error = %e, "ip set file invalid; keeping the last good list");
        }
    }
    *last = Some(text);
}
