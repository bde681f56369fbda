//! The secrets audit: with AUTHBACK_TEST_TRACE set to a file, every test logs
//! at trace level into it, the harness lists each secret and token it uses in
//! `<file>.secrets`, and the real binary's logs are kept in `<file>.d/`, with
//! the access log of every authback the harness starts (`with_access_log`).
//! `scripts/secrets-audit.sh` runs the suite so and searches the logs.

use std::path::PathBuf;
use std::sync::Mutex;

pub(super) fn trace_file() -> Option<PathBuf> {
    std::env::var_os("AUTHBACK_TEST_TRACE").map(PathBuf::from)
}

/// Installs the trace-level subscriber once, when the audit asks for it.
pub fn init_trace() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Some(path) = trace_file() else { return };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("trace file");
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_ansi(false)
            .with_writer(Mutex::new(file))
            .try_init();
    });
}

/// The config `text` with the access log on, into `access.log` in the
/// config's folder (kept for the audit with the other `*.log` files, see
/// `TempDir`), when the audit runs and `text` has no `[access_log]` of its
/// own. The section goes first: a config has no keys outside a table.
pub fn with_access_log(text: &str) -> String {
    let plain = || text.to_string();
    if trace_file().is_none() {
        return plain();
    }
    match text.parse::<toml::Table>() {
        Ok(t) if !t.contains_key("access_log") => {
            format!("[access_log]\nenabled = true\npath = \"access.log\"\n{text}")
        }
        _ => plain(),
    }
}

/// Notes a value that must never appear in any log.
pub fn sensitive(value: &str) {
    let Some(path) = trace_file() else { return };
    static LIST: Mutex<Option<std::fs::File>> = Mutex::new(None);
    let mut list = LIST.lock().expect("lock");
    if list.is_none() {
        let mut p = path.into_os_string();
        p.push(".secrets");
        *list = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok();
    }
    if let Some(f) = list.as_mut() {
        use std::io::Write;
        let _ = writeln!(f, "{value}");
    }
}
