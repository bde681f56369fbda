//! The real binary: its config file, fixed ports, and the process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;

use super::trace::{trace_file, with_access_log};
use super::{eventually, tls_connect};

/// Writes `text` to `dir/c.toml` for the binary; returns the file, the parsed
/// config (for minting) and the public address.
pub fn write_config(
    dir: &Path,
    text: &str,
    public: u16,
) -> (PathBuf, authback::Config, SocketAddr) {
    let path = dir.join("c.toml");
    let text = &with_access_log(text);
    std::fs::write(&path, text).expect("write config");
    let cfg = authback::Config::parse(text, dir).expect("config");
    let addr: SocketAddr = format!("127.0.0.1:{public}").parse().expect("addr");
    (path, cfg, addr)
}

/// `text` (from `base_config`) listening on fixed loopback ports, for the
/// binary, which binds them itself.
pub fn on_ports(text: &str, public: u16, admin: u16) -> String {
    text.replace(
        "listen = \"127.0.0.1:1\"",
        &format!("listen = \"127.0.0.1:{public}\""),
    )
    .replace(
        "listen = \"127.0.0.1:2\"",
        &format!("listen = \"127.0.0.1:{admin}\""),
    )
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts `authback run` on `config`, logging JSON to `log`, with `env` set.
pub fn spawn_binary(config: &Path, log: &Path, env: &[(&str, &str)]) -> std::process::Child {
    let log = std::fs::File::create(log).expect("log file");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_authback"));
    cmd.args(["run", "--log-format", "json", "--config"])
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    if trace_file().is_some() {
        cmd.env("RUST_LOG", "trace");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn authback")
}

/// Sends `signal` (`HUP`, `TERM`, ...) to `child`.
pub fn send_signal(child: &std::process::Child, signal: &str) {
    assert!(std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill")
        .success());
}

/// Waits until `addr` completes a TLS handshake with `ca`.
pub async fn wait_tls(addr: SocketAddr, ca: &CertificateDer<'static>) {
    eventually!(
        tls_connect(addr, ca, &[b"http/1.1"]).await.is_ok(),
        "authback to start listening on {addr}"
    );
}

/// A child that leads a process group of its own (`process_group(0)` at
/// spawn), such as `php -S` with workers, which forks: dropping it ends the
/// whole group, by id, then reaps the child.
pub struct Group(pub std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
