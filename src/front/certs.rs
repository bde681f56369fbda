//! Certificate files: PEM chain and key into a signing pair, the throwaway
//! self-signed pair, and what a certificate is valid for (its DNS names,
//! and whether it covers a name). Reads files; serves nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::digest;
use rustls::client::verify_server_name;
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::HostNames;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {why}")]
    BadPem { path: PathBuf, why: String },
    #[error("certificate and key do not fit together: {0}")]
    Key(String),
    #[error("cannot generate a self-signed certificate: {0}")]
    SelfSigned(String),
    #[error("{path} does not cover `{name}`; the certificate is for {covers}")]
    NotCovered {
        path: PathBuf,
        name: String,
        covers: HostNames,
    },
    /// A problem of one configured pair, under the key to change.
    #[error("{key}: {source}")]
    At {
        key: String,
        #[source]
        source: Box<TlsError>,
    },
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Parses a PEM chain and key into a ready signing pair.
pub(crate) fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: cert_path.into(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.into(),
        });
    }
    // The error text of a key parser could echo key material: say only what failed.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::BadPem {
        path: key_path.into(),
        why: "no usable PEM private key".into(),
    })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| TlsError::Key(e.to_string()))
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

/// A throwaway certificate for development (`self_signed = true`).
pub(crate) fn self_signed(names: Vec<String>) -> Result<CertifiedKey, TlsError> {
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let key = PrivateKeyDer::try_from(generated.key_pair.serialize_der())
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    CertifiedKey::from_der(vec![generated.cert.der().clone()], key, &provider())
        .map_err(|e| TlsError::Key(e.to_string()))
}

/// What a pair's files hash to: a reload compares it, not modification times.
pub(crate) fn fingerprint(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(cert);
    ctx.update(b"\0");
    ctx.update(key);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The pair's end-entity certificate (`CertifiedKey::from_der` refuses an
/// empty chain, so there is one).
pub(crate) fn leaf(key: &CertifiedKey) -> Option<&CertificateDer<'static>> {
    key.cert.first()
}

/// Whether `leaf` is valid for `name` (a `HostNames` name). A concrete name
/// is checked by webpki, as a client would check it; webpki takes no
/// wildcard to check, so a wildcard name must be one of the certificate's
/// own names.
pub(crate) fn covers(leaf: &CertificateDer<'_>, name: &str) -> bool {
    if name.starts_with("*.") {
        return dns_names(leaf).as_slice().iter().any(|n| n == name);
    }
    let Ok(server) = ServerName::try_from(name) else {
        return false;
    };
    ParsedCertificate::try_from(leaf)
        .and_then(|cert| verify_server_name(&cert, &server))
        .is_ok()
}

/// The DNS names of a certificate's subjectAltName, in normal form and in
/// order; none if the DER does not read. No crate in the build lists them
/// (webpki only answers for one name at a time), and the walk is short:
/// Certificate > tbsCertificate > [3] extensions > the extension whose OID
/// is subjectAltName > its OCTET STRING > GeneralNames > each [2] dNSName.
pub(crate) fn dns_names(der: &[u8]) -> HostNames {
    HostNames::new(san_dns_names(der).unwrap_or_default())
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[3]`, constructed: tbsCertificate's extensions.
const EXTENSIONS: u8 = 0xa3;
/// `[2]`, primitive: a GeneralName's dNSName.
const DNS_NAME: u8 = 0x82;
/// 2.5.29.17, id-ce-subjectAltName.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

fn san_dns_names(der: &[u8]) -> Option<Vec<String>> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (mut tbs, _) = expect(cert, SEQUENCE)?;
    while !tbs.is_empty() {
        let (tag, value, rest) = tlv(tbs)?;
        tbs = rest;
        if tag != EXTENSIONS {
            continue;
        }
        let (mut extensions, _) = expect(value, SEQUENCE)?;
        while !extensions.is_empty() {
            let (extension, rest) = expect(extensions, SEQUENCE)?;
            extensions = rest;
            let (oid, mut body) = expect(extension, OID)?;
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            if let Some((_, after)) = expect(body, BOOLEAN) {
                body = after;
            }
            let (octets, _) = expect(body, OCTET_STRING)?;
            let (mut general_names, _) = expect(octets, SEQUENCE)?;
            let mut out = Vec::new();
            while !general_names.is_empty() {
                let (tag, value, rest) = tlv(general_names)?;
                general_names = rest;
                let name = std::str::from_utf8(value).ok();
                if let Some(n) = name.filter(|_| tag == DNS_NAME) {
                    out.extend(HostNames::normal(n).ok());
                }
            }
            return Some(out);
        }
    }
    Some(Vec::new())
}

/// The value of the DER element at the start of `input` if its tag is
/// `tag`, and what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match tlv(input)? {
        (t, value, rest) if t == tag => Some((value, rest)),
        _ => None,
    }
}

/// One DER element: tag, value, and the rest. Only the forms X.509 uses:
/// one-byte tags, definite lengths of up to four bytes.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            let bytes = rest.get(..n)?;
            let len = bytes.iter().try_fold(0usize, |a, &b| {
                a.checked_mul(256)?.checked_add(usize::from(b))
            })?;
            (len, rest.get(n..)?)
        }
        _ => return None,
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        rcgen::generate_simple_self_signed(names)
            .expect("cert")
            .cert
            .der()
            .clone()
    }

    #[test]
    fn the_dns_names_of_a_certificate_are_listed_in_order() {
        let der = cert(&["Shop.Example.com", "*.cdn.example.com", "127.0.0.1"]);
        assert_eq!(
            dns_names(&der).as_slice(),
            ["shop.example.com", "*.cdn.example.com"],
            "lowercased; the IP address is not a DNS name"
        );
        assert!(dns_names(&cert(&[])).as_slice().is_empty());
    }

    #[test]
    fn broken_der_lists_no_name_and_never_panics() {
        let der = cert(&["shop.example.com"]);
        for cut in 0..der.len() {
            let _ = dns_names(&der[..cut]);
        }
        let mut flipped = der.to_vec();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = dns_names(&flipped);
            flipped[i] ^= 0xff;
        }
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x80],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x1f, 0],
        ] {
            assert!(dns_names(bad).as_slice().is_empty());
        }
    }

    #[test]
    fn a_certificate_covers_its_names_and_one_label_under_its_wildcards() {
        let der = cert(&["shop.example.com", "*.cdn.example.com"]);
        for name in [
            "shop.example.com",
            "img.cdn.example.com",
            "*.cdn.example.com",
        ] {
            assert!(covers(&der, name), "{name}");
        }
        for name in [
            "example.com",
            "cdn.example.com",
            "a.b.cdn.example.com",
            "other.example.com",
            "*.example.com",
        ] {
            assert!(!covers(&der, name), "{name}");
        }
    }
}
