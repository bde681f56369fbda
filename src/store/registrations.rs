//! Registrations for the Read Session fallback: sessions the backend created
//! whose authorization authback recovers from Klarna if the callback never
//! comes. `RegIndex` is the in-process schedule of the active ones, shared by
//! the stores that run in one process.

use std::collections::HashMap;

use crate::store::due::Due;

use crate::types::SessionId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegState {
    Active,
    Ended,
}

#[derive(Debug, Clone)]
pub struct Registration {
    pub session_id: SessionId,
    pub route: String,
    pub reference: String,
    /// Unix ms.
    pub registered_at: u64,
    /// Read Session checks made so far.
    pub checks: u32,
    pub next_check_at: u64,
    pub state: RegState,
    /// Why it ended: `callback`, `read_session`, `complete`, `expired`, `gave_up`.
    pub outcome: Option<String>,
    pub last_error: Option<String>,
}

/// What a check decided.
#[derive(Debug, Clone)]
pub enum CheckNext {
    Again { at: u64, error: Option<String> },
    Ended { outcome: String },
}

#[derive(Default)]
pub(crate) struct RegIndex {
    active: HashMap<SessionId, Registration>,
    due: Due<SessionId>,
}

impl RegIndex {
    pub(crate) fn insert(&mut self, r: Registration) {
        if r.state == RegState::Active {
            self.due.insert(r.next_check_at, r.session_id.clone());
            self.active.insert(r.session_id.clone(), r);
        }
    }

    pub(crate) fn contains(&self, s: &SessionId) -> bool {
        self.active.contains_key(s)
    }

    /// Leases due registrations until `finish`.
    pub(crate) fn take_due(&mut self, now: u64, limit: usize) -> Vec<Registration> {
        let active = &self.active;
        self.due.take(now, limit, |s| active.get(s).cloned())
    }

    pub(crate) fn next_due(&self) -> Option<u64> {
        self.due.next()
    }

    pub(crate) fn finish(&mut self, s: &SessionId, checks: u32, next: &CheckNext) {
        let Some(r) = self.active.get_mut(s) else {
            return;
        };
        r.checks = checks;
        match next {
            CheckNext::Again { at, error } => {
                // A leased registration is not in `due`: put it back.
                r.next_check_at = *at;
                r.last_error = error.clone();
                self.due.insert(*at, s.clone());
            }
            CheckNext::Ended { .. } => self.end(s),
        }
    }

    /// A callback or recovery for `s` was recorded: no more checks.
    pub(crate) fn end(&mut self, s: &SessionId) {
        if let Some(r) = self.active.remove(s) {
            self.due.remove(r.next_check_at, &r.session_id);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.active.len()
    }
}
