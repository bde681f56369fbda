//! The checker every section's validation reports to: errors with their
//! keys, warnings, and the typed readers (durations, rates, secrets) they
//! share. It knows no section; `validate` and `routes` use it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::model::ConfigError;
use crate::text::parse_duration;
use crate::types::Secret;

#[derive(Default)]
pub(super) struct Checker {
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<String>,
    /// The keys of secrets written inline in the file.
    pub(super) inline_secrets: Vec<String>,
    /// The config file's folder: relative paths are read from there.
    base: PathBuf,
    /// A development config (a self-signed certificate): placeholder
    /// secrets are let through there, and only there.
    development: bool,
    /// Secret references that could not be read (`env:NAME`, `file:path`),
    /// with the index of their error: a reference used by several keys is
    /// one root cause, so one error names them all.
    unreadable: Vec<(String, usize)>,
}

/// Whether a secret is an obvious placeholder copied from an example.
fn is_placeholder(secret: &[u8]) -> bool {
    let s = String::from_utf8_lossy(secret).to_ascii_lowercase();
    const WORDS: [&str; 12] = [
        "replace",
        "changeme",
        "change-me",
        "change_me",
        "placeholder",
        "your-",
        "your_",
        "example",
        "todo",
        "fixme",
        "<",
        "xxxx",
    ];
    WORDS.iter().any(|w| s.contains(w))
}

impl Checker {
    /// A checker for a file in folder `base`; `development` when the config
    /// runs on a self-signed certificate.
    pub(super) fn new(base: &Path, development: bool) -> Self {
        Checker {
            base: base.to_path_buf(),
            development,
            ..Checker::default()
        }
    }

    pub(super) fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn duration(&mut self, key: &str, value: Option<&str>, default: &str) -> Duration {
        let s = value.unwrap_or(default);
        match parse_duration(s) {
            Ok(d) => d,
            Err(e) => {
                self.err(key, e);
                Duration::ZERO
            }
        }
    }

    pub(super) fn positive_duration(
        &mut self,
        key: &str,
        value: Option<&str>,
        default: &str,
    ) -> Duration {
        let d = self.duration(key, value, default);
        if d.is_zero() && parse_duration(value.unwrap_or(default)).is_ok() {
            self.err(key, "must be greater than zero");
        }
        d
    }

    pub(super) fn addr(&mut self, key: &str, value: Option<&str>, default: &str) -> SocketAddr {
        let s = value.unwrap_or(default);
        s.parse().unwrap_or_else(|_| {
            self.err(
                key,
                format!("`{s}` is not an address such as \"0.0.0.0:8443\""),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }

    pub(super) fn secret(&mut self, key: &str, value: &str) -> Option<Secret> {
        match resolve_secret(value, &self.base) {
            Ok((secret, inline)) => {
                if inline {
                    self.inline_secrets.push(key.to_string());
                    self.warnings.push(format!(
                        "{key}: secret is written inline in the config file; use \"env:NAME\" or \"file:/path\" in production"
                    ));
                }
                if secret.expose().is_empty() {
                    self.err(key, "secret is empty");
                    return None;
                }
                if !self.development && is_placeholder(secret.expose()) {
                    self.err(key, "looks like a placeholder, not a secret: generate one (e.g. `openssl rand -hex 32`); placeholders are refused unless server.tls.self_signed = true (a development config)");
                    return None;
                }
                Some(secret)
            }
            Err(e) => {
                match self.unreadable.iter().find(|(v, _)| v == value) {
                    Some(&(_, i)) => {
                        if let Some(first) = self.errors.get_mut(i) {
                            first.message.push_str(&format!(" (also needed by {key})"));
                        }
                    }
                    None => {
                        self.unreadable.push((value.to_string(), self.errors.len()));
                        self.err(key, e);
                    }
                }
                None
            }
        }
    }

    pub(super) fn count(&mut self, key: &str, value: Option<i64>, default: i64, min: i64) -> usize {
        let n = value.unwrap_or(default);
        if n < min {
            self.err(key, format!("must be at least {min}"));
            return min.max(0) as usize;
        }
        usize::try_from(n).unwrap_or(usize::MAX)
    }
}

/// Reads `env:NAME`, `file:/path` or an inline value. Returns the secret and
/// whether it was inline. Never puts the secret in an error.
pub fn resolve_secret(value: &str, base: &Path) -> Result<(Secret, bool), String> {
    if let Some(name) = value.strip_prefix("env:") {
        match std::env::var(name) {
            Ok(v) => Ok((Secret::new(v), false)),
            Err(std::env::VarError::NotPresent) => {
                Err(format!("environment variable {name} is not set"))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("environment variable {name} is not UTF-8"))
            }
        }
    } else if let Some(path) = value.strip_prefix("file:") {
        // Relative to the config file's folder, like every other path.
        let path = base.join(path);
        let mut bytes = std::fs::read(&path)
            .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
        // Files written by `echo` end in a newline that is not part of the secret.
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Ok((Secret::new(bytes), false))
    } else {
        Ok((Secret::new(value.as_bytes()), true))
    }
}
