//! A real redis-server of the test's own, on a loopback port; a replica of
//! another one; and sentinels watching them (`redis-server --sentinel`).

use std::path::{Path, PathBuf};

use super::{eventually_blocking, free_port};

pub struct RedisServer {
    pub port: u16,
    /// Listening with TLS only (`--tls-port`; its other TLS arguments are
    /// in `args`).
    tls: bool,
    dir: PathBuf,
    /// Extra arguments, kept across restarts (`--replicaof`, TLS).
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// Starts redis-server with append-only persistence (fsync always) in
    /// `dir`, so a restart keeps everything it acknowledged.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// As `start`, with more arguments (kept across restarts).
    pub fn start_with(dir: &Path, args: &[&str]) -> Self {
        Self::started(dir, args, false)
    }

    /// As `start`, listening with TLS only; `args` name its certificate,
    /// key and CA (`--tls-cert-file`, …).
    pub fn start_tls(dir: &Path, args: &[&str]) -> Self {
        Self::started(dir, args, true)
    }

    fn started(dir: &Path, args: &[&str], tls: bool) -> Self {
        let mut r = RedisServer {
            port: free_port(),
            tls,
            dir: dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        r.spawn();
        r
    }

    /// A replica of the server on `primary` (data in `dir`), once it has
    /// caught up.
    pub fn replica_of(dir: &Path, primary: u16) -> Self {
        let r = Self::start_with(dir, &["--replicaof", "127.0.0.1", &primary.to_string()]);
        r.wait_replicating();
        r
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let listen: &[&str] = if self.tls {
            &["--port", "0", "--tls-port", &port]
        } else {
            &["--port", &port]
        };
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1"])
            .args(listen)
            .args(["--save", ""])
            // A replica's full sync at once, not after the 5 s Redis waits
            // for more replicas to join it.
            .args(["--repl-diskless-sync-delay", "0"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--protected-mode",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (CI installs it; locally: apt-get install redis-server)");
        self.child = Some(child);
        eventually_blocking!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            "redis-server to listen on port {}",
            self.port
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILLs the server (no chance to flush more than it already did).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data folder.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts it again, on the same port and data, as a replica of the
    /// server on `primary`; returns once it has caught up.
    pub fn restart_as_replica_of(&mut self, primary: u16) {
        self.kill();
        if let Some(i) = self.args.iter().position(|a| a == "--replicaof") {
            let end = (i + 3).min(self.args.len());
            self.args.drain(i..end);
        }
        let primary = primary.to_string();
        self.args
            .extend(["--replicaof", "127.0.0.1", &primary].map(String::from));
        self.spawn();
        self.wait_replicating();
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to the server; false if it is gone.
    pub fn signal(&self, sig: &str) -> bool {
        self.child.as_ref().is_some_and(|c| {
            std::process::Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// One command's reply, as redis-cli prints it (empty if none came).
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// Waits until it replicates its primary with the link up.
    pub fn wait_replicating(&self) {
        eventually_blocking!(
            self.cli(&["INFO", "replication"])
                .contains("master_link_status:up"),
            "redis on port {} to replicate its primary",
            self.port
        );
    }

    /// The `[store]` section for this server.
    pub fn store_section(&self, prefix: &str) -> String {
        format!(
            "[store]\nkind = \"redis\"\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n",
            self.url()
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}

/// One command to the server on `port` through redis-cli, with a 2 s limit.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    std::process::Command::new("timeout")
        .args(["2", "redis-cli", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Three sentinels watching the primary `name`, with short clocks: down
/// after 1.5 s, a failover given up (and the next one allowed) after 3 s.
/// Not 1 s: a sentinel pings once a second and counts from when it opened
/// its link to a server, so with 1 s a primary just promoted could be
/// found down before its first ping was answered, and failed over again.
pub struct Sentinels {
    pub ports: Vec<u16>,
    pub name: String,
    children: Vec<std::process::Child>,
}

impl Sentinels {
    pub fn start(dir: &Path, name: &str, primary: u16) -> Self {
        let mut s = Sentinels {
            ports: Vec::new(),
            name: name.to_string(),
            children: Vec::new(),
        };
        for i in 0..3 {
            let port = free_port();
            let conf = dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\nlogfile {dir}/sentinel-{i}.log\n\
                     sentinel monitor {name} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {name} 1500\n\
                     sentinel failover-timeout {name} 3000\n\
                     sentinel parallel-syncs {name} 1\n",
                    dir = dir.display()
                ),
            )
            .expect("sentinel.conf");
            let child = std::process::Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("redis-server --sentinel");
            s.ports.push(port);
            s.children.push(child);
        }
        for &port in &s.ports {
            eventually_blocking!(
                redis_cli(port, &["SENTINEL", "get-master-addr-by-name", name])
                    .contains(&primary.to_string()),
                "sentinel on port {port} to watch the primary"
            );
        }
        s
    }

    /// Whether every sentinel names `primary` and sees it up (flags
    /// exactly `master`) with at least one healthy replica.
    pub fn settled_on(&self, primary: u16) -> bool {
        let up = self.ports.iter().all(|&p| {
            let out = redis_cli(p, &["SENTINEL", "master", &self.name]);
            let lines: Vec<&str> = out.lines().map(str::trim).collect();
            lines
                .windows(2)
                .any(|w| w[0] == "flags" && w[1] == "master")
        });
        up && self.agreed_primary() == Some(primary) && self.replicas_known() >= 1
    }

    /// The port every sentinel names as the primary's, once they agree.
    pub fn agreed_primary(&self) -> Option<u16> {
        let named: Vec<Option<u16>> = self
            .ports
            .iter()
            .map(|&p| {
                let out = redis_cli(p, &["SENTINEL", "get-master-addr-by-name", &self.name]);
                out.lines().nth(1).and_then(|l| l.trim().parse().ok())
            })
            .collect();
        let first = named.first().copied().flatten()?;
        named.iter().all(|n| *n == Some(first)).then_some(first)
    }

    /// How many healthy replicas of the primary every sentinel knows, at
    /// least (flags exactly `slave`: not down, not disconnected).
    pub fn replicas_known(&self) -> usize {
        self.ports
            .iter()
            .map(|&p| {
                let out = redis_cli(p, &["SENTINEL", "replicas", &self.name]);
                let lines: Vec<&str> = out.lines().map(str::trim).collect();
                lines
                    .windows(2)
                    .filter(|w| w[0] == "flags" && w[1] == "slave")
                    .count()
            })
            .min()
            .unwrap_or(0)
    }

    /// `store.sentinels` as TOML.
    pub fn toml_list(&self) -> String {
        let list: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        format!("[{}]", list.join(", "))
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
