//! A real redis-server of the test's own, on a loopback port.

use std::path::{Path, PathBuf};

use super::{eventually_blocking, free_port};

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// Starts redis-server with append-only persistence (fsync always) in
    /// `dir`, so a restart keeps everything it acknowledged.
    pub fn start(dir: &Path) -> Self {
        let mut r = RedisServer {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
            ])
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
        self.kill();
    }
}
