//! Which certificate a handshake gets: the pair whose names hold the SNI
//! (an exact name before a wildcard, then the first pair in the config's
//! order), else the first pair, or none under `strict_sni`. Each pair can
//! be swapped while connections are being served; nothing here reads files.

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{HostNames, Match};

/// One pair as served: its signing key and chain, and the names it is
/// chosen for.
pub(crate) struct Served {
    pub(crate) key: Arc<CertifiedKey>,
    pub(crate) names: HostNames,
}

/// Serves whichever pair was loaded last in each slot, one slot a pair.
pub(crate) struct CertResolver {
    slots: Vec<RwLock<Arc<Served>>>,
    strict: bool,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("pairs", &self.slots.len())
            .field("strict", &self.strict)
            .finish()
    }
}

impl CertResolver {
    /// The pairs in the config's order; `strict`: `server.tls.strict_sni`.
    pub(crate) fn new(pairs: Vec<Served>, strict: bool) -> Arc<Self> {
        Arc::new(Self {
            slots: pairs
                .into_iter()
                .map(|p| RwLock::new(Arc::new(p)))
                .collect(),
            strict,
        })
    }

    /// Replaces the pair in `slot` for the handshakes that follow.
    pub(crate) fn set(&self, slot: usize, served: Served) {
        if let Some(s) = self.slots.get(slot) {
            *s.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(served);
        }
    }

    fn slot(&self, i: usize) -> Option<Arc<Served>> {
        let s = self.slots.get(i)?;
        Some(s.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// The pair for a handshake that asked for `sni` (`None`: no SNI, as
    /// for a client that connected to an address).
    pub(crate) fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = sni {
            let mut wildcard = None;
            for i in 0..self.slots.len() {
                let Some(s) = self.slot(i) else { continue };
                match s.names.matches(sni) {
                    Some(Match::Exact) => return Some(s.key.clone()),
                    Some(Match::Wildcard) if wildcard.is_none() => wildcard = Some(s.key.clone()),
                    _ => {}
                }
            }
            if wildcard.is_some() {
                return wildcard;
            }
        }
        if self.strict {
            tracing::debug!(
                sni = sni.unwrap_or(""),
                "no certificate for this SNI; handshake refused (server.tls.strict_sni)"
            );
            return None;
        }
        self.slot(0).map(|s| s.key.clone())
    }

    /// Every pair's names as served now, in the config's order.
    pub(crate) fn host_names(&self) -> HostNames {
        let mut all: Vec<String> = Vec::new();
        for i in 0..self.slots.len() {
            for n in self.slot(i).iter().flat_map(|s| s.names.as_slice()) {
                if !all.contains(n) {
                    all.push(n.clone());
                }
            }
        }
        HostNames::new(all)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(names: &[&str]) -> Served {
        let key = crate::front::certs::self_signed(names.iter().map(|n| n.to_string()).collect())
            .expect("pair");
        Served {
            key: Arc::new(key),
            names: HostNames::new(names.iter().map(|n| n.to_string()).collect()),
        }
    }

    fn which(r: &CertResolver, pairs: &[Arc<CertifiedKey>], sni: Option<&str>) -> Option<usize> {
        let got = r.pick(sni)?;
        pairs.iter().position(|k| Arc::ptr_eq(k, &got))
    }

    fn resolver(strict: bool) -> (Arc<CertResolver>, Vec<Arc<CertifiedKey>>) {
        let r = CertResolver::new(
            vec![
                served(&["a.example"]),
                served(&["*.example", "b.example"]),
                served(&["c.example", "x.b.example"]),
            ],
            strict,
        );
        let keys = (0..3)
            .map(|i| r.slot(i).expect("slot").key.clone())
            .collect();
        (r, keys)
    }

    #[test]
    fn the_sni_picks_its_pair_ignoring_case_and_a_trailing_dot() {
        let (r, k) = resolver(false);
        assert_eq!(which(&r, &k, Some("a.example")), Some(0));
        assert_eq!(which(&r, &k, Some("A.Example.")), Some(0));
        assert_eq!(which(&r, &k, Some("b.example")), Some(1));
        assert_eq!(which(&r, &k, Some("C.EXAMPLE")), Some(2));
        // A wildcard of an earlier pair does not shadow an exact name.
        assert_eq!(which(&r, &k, Some("c.example")), Some(2));
        assert_eq!(which(&r, &k, Some("d.example")), Some(1), "the wildcard");
        assert_eq!(which(&r, &k, Some("x.b.example")), Some(2));
        assert_eq!(which(&r, &k, Some("unknown.test")), Some(0), "the first");
        assert_eq!(which(&r, &k, None), Some(0), "no SNI: the first");
    }

    #[test]
    fn strict_sni_refuses_an_unknown_or_missing_name() {
        let (r, k) = resolver(true);
        assert_eq!(which(&r, &k, Some("b.example")), Some(1));
        assert_eq!(which(&r, &k, Some("d.example")), Some(1));
        assert!(r.pick(Some("unknown.test")).is_none());
        assert!(r.pick(Some("a.b.c.example")).is_none());
        assert!(r.pick(None).is_none());
    }

    #[test]
    fn a_swapped_pair_serves_the_next_handshake_and_the_others_stay() {
        let (r, k) = resolver(false);
        let new = served(&["c.example", "x.b.example"]);
        let new_key = new.key.clone();
        r.set(2, new);
        let got = r.pick(Some("c.example")).expect("a pair");
        assert!(Arc::ptr_eq(&got, &new_key));
        assert_eq!(which(&r, &k, Some("a.example")), Some(0));
        assert_eq!(which(&r, &k, Some("b.example")), Some(1));
        assert_eq!(
            r.host_names().as_slice(),
            [
                "a.example",
                "*.example",
                "b.example",
                "c.example",
                "x.b.example"
            ]
        );
    }
}
