//! The process's own figures for /metrics, read from /proc at scrape time,
//! under Prometheus' standard `process_*` names (as every client library's
//! process collector names them), and for one release more under the
//! deprecated `authback_process_*` ones.

use std::fmt::Write as _;

/// Writes the figures /proc has (Linux; elsewhere they are left out rather
/// than reported wrong) for a process started at `started_at` (unix
/// seconds).
pub(crate) fn render(out: &mut String, started_at: f64) {
    process_metric(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        format!("{:.3}", started_at),
    );
    if let Some(kb) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
    {
        process_metric(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            (kb * 1024).to_string(),
        );
    }
    // utime and stime are fields 14 and 15, in clock ticks: USER_HZ,
    // which Linux fixes at 100 for /proc whatever the kernel's HZ.
    if let Some(ticks) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
    {
        process_metric(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            format!("{:.2}", ticks as f64 / 100.0),
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        process_metric(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count().to_string(),
        );
    }
}

/// One process figure under its standard name and its deprecated
/// `authback_` one.
fn process_metric(out: &mut String, name: &str, kind: &str, help: &str, value: String) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n# HELP authback_{name} Deprecated: use {name}.\n# TYPE authback_{name} {kind}\nauthback_{name} {value}"
    );
}
