//! The checklist doctor prints: each check's status, detail and fix, and
//! what every check shares (the limit of a network step, a nonce).

use std::fmt;
use std::time::Duration;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Fail,
    /// Not used by the config (no `[klarna]`): the reason says what. A
    /// check the config asks for but that cannot be run is a `Fail`.
    Skip,
}

/// One line of the checklist.
#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about a failure.
    pub fix: Option<String>,
    /// Further lines under the check (config errors, warnings).
    pub notes: Vec<String>,
}

impl Check {
    pub(crate) fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, detail, None)
    }

    pub(crate) fn skip(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Skip, detail, None)
    }

    pub(crate) fn fail(
        name: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Status::Fail, detail, Some(fix.into()))
    }

    fn new(
        name: &'static str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Self {
            name,
            status,
            detail: detail.into(),
            fix,
            notes: Vec::new(),
        }
    }
}

/// The whole checklist, in the order the checks are listed.
#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let status = match c.status {
                Status::Ok => "ok",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            writeln!(f, "{status:<5} {:<10} {}", c.name, c.detail)?;
            for n in &c.notes {
                writeln!(f, "        {n}")?;
            }
            if let Some(fix) = &c.fix {
                writeln!(f, "      fix: {fix}")?;
            }
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        writeln!(
            f,
            "doctor: {} ok, {} failed, {} skipped",
            count(Status::Ok),
            count(Status::Fail),
            count(Status::Skip)
        )
    }
}

/// The limit of every network step (resolve, connect, TLS, answer, body):
/// the doctor must answer even when the network does not.
pub(crate) const STEP: Duration = Duration::from_secs(5);

/// A random lowercase hex string of `bytes` bytes; time and process id if
/// the system's randomness fails (it only has to be unlike any real id).
pub(super) fn nonce(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if aws_lc_rs::rand::fill(&mut buf).is_err() {
        return format!("{:x}{:x}", crate::types::unix_ms(), std::process::id());
    }
    crate::text::hex(&buf)
}
