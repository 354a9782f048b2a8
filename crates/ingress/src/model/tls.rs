//! TLS Secrets to serving certificates, and the host → certificate table
//! the SNI resolver reads. Everything expensive (PEM decoding, key loading,
//! key/cert matching) happens here once per Secret change, so a handshake
//! only does a map lookup and clones an `Arc`.
//!
//! Names (CN + DNS SANs) are read with a small bounds-checked DER walk:
//! rustls-webpki validates the certificate (via
//! [`rustls::server::ParsedCertificate`]) but does not expose its names, and
//! x509-parser is only compiled behind an rcgen feature we do not enable.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// Subject CN of the built-in certificate (ingress-nginx's wording; checks grep it).
pub const DEFAULT_COMMON_NAME: &str = "Kubernetes Ingress Controller Fake Certificate";

static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

/// The ring provider shared by key loading and the server config, so
/// nothing depends on a process-wide default provider being installed.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    PROVIDER.clone()
}

/// Why a host gets the default certificate instead of its Secret's.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TlsError {
    #[error("secret {secret} not found")]
    SecretNotFound { secret: String },
    #[error("secret {secret} contains no keypair or CA certificate")]
    NoKeypair { secret: String },
    #[error("key '{key}' missing from Secret {secret}")]
    MissingKey { secret: String, key: &'static str },
    #[error("secret {secret}: '{key}' has no valid PEM formatted block: {reason}")]
    BadPem {
        secret: String,
        key: &'static str,
        reason: String,
    },
    #[error(
        "certificate in secret {secret} contains invalid data ({reason}), and must be created with 'kubectl create secret tls'"
    )]
    BadCertificate { secret: String, reason: String },
    #[error("secret {secret}: unusable private key: {reason}")]
    BadKey { secret: String, reason: String },
    #[error("secret {secret}: ensure that certificate and private key have a matching public key")]
    KeyMismatch { secret: String },
    #[error(
        "SSL certificate {secret} does not contain a Common Name or Subject Alternative Name for server {host}"
    )]
    NotForHost { secret: String, host: String },
}

impl TlsError {
    /// The Event reason (brief §9): `TLSSecretNotFound`, `TLSCertificateMismatch` or `TLSSecretInvalid`.
    pub fn reason(&self) -> &'static str {
        match self {
            TlsError::SecretNotFound { .. } => "TLSSecretNotFound",
            TlsError::NotForHost { .. } => "TLSCertificateMismatch",
            _ => "TLSSecretInvalid",
        }
    }
}

/// A parsed serving certificate, ready for rustls.
#[derive(Clone, Debug)]
pub struct Certificate {
    pub key: Arc<CertifiedKey>,
    /// DNS names it covers: DNS SANs and a hostname-like CN, lowercase, deduplicated.
    pub names: Vec<String>,
    /// Subject CN as written.
    pub common_name: Option<String>,
    /// Serial number, lowercase hex without leading zeros.
    pub serial: String,
    /// SHA-256 of the leaf DER, lowercase hex.
    pub fingerprint: String,
}

impl Certificate {
    /// Whether the certificate is valid for `host`: an exact name, or a
    /// `*.parent` name when `host` is exactly one label below `parent`.
    pub fn covers(&self, host: &str) -> bool {
        let host = normalize(host);
        self.names.iter().any(|name| {
            *name == host
                || name.strip_prefix("*.").is_some_and(|parent| {
                    host.split_once('.').is_some_and(|(label, rest)| {
                        !label.is_empty() && label != "*" && rest == parent
                    })
                })
        })
    }

    /// `Ok` when the certificate covers `host`, else [`TlsError::NotForHost`].
    pub fn check_host(&self, secret: &str, host: &str) -> Result<(), TlsError> {
        if self.covers(host) {
            Ok(())
        } else {
            Err(TlsError::NotForHost {
                secret: secret.to_string(),
                host: host.to_string(),
            })
        }
    }

    /// The end-entity certificate in DER.
    pub fn leaf_der(&self) -> &[u8] {
        self.key
            .cert
            .first()
            .map(|c| c.as_ref())
            .unwrap_or_default()
    }
}

/// A Secret's `data` to a certificate; `secret` is `ns/name` for messages.
/// Like ingress-nginx the Secret type is not checked: `kubernetes.io/tls`
/// and `Opaque` both work when `tls.crt` and `tls.key` are present.
pub fn certificate_from_secret(
    secret: &str,
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<Certificate, TlsError> {
    let (crt, key) = match (data.get("tls.crt"), data.get("tls.key")) {
        (Some(crt), Some(key)) => (crt, key),
        (None, None) => {
            return Err(TlsError::NoKeypair {
                secret: secret.into(),
            });
        }
        (None, _) => return Err(missing(secret, "tls.crt")),
        (_, None) => return Err(missing(secret, "tls.key")),
    };
    let bad_pem = |key: &'static str, reason: String| TlsError::BadPem {
        secret: secret.into(),
        key,
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem("tls.crt", e.to_string()))?;
    if chain.is_empty() {
        return Err(bad_pem("tls.crt", "no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
        pem::Error::NoItemsFound => bad_pem("tls.key", "no PRIVATE KEY block".into()),
        e => bad_pem("tls.key", e.to_string()),
    })?;
    build(secret, chain, key)
}

fn missing(secret: &str, key: &'static str) -> TlsError {
    TlsError::MissingKey {
        secret: secret.into(),
        key,
    }
}

fn build(
    secret: &str,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Certificate, TlsError> {
    let bad_cert = |reason: String| TlsError::BadCertificate {
        secret: secret.into(),
        reason,
    };
    let leaf = chain
        .first()
        .ok_or_else(|| bad_cert("empty chain".into()))?;
    rustls::server::ParsedCertificate::try_from(leaf).map_err(|e| bad_cert(e.to_string()))?;
    let info = der::leaf_info(leaf).ok_or_else(|| bad_cert("malformed X.509 structure".into()))?;
    let fingerprint = hex(ring::digest::digest(&ring::digest::SHA256, leaf).as_ref());
    let key = CertifiedKey::from_der(chain, key, &PROVIDER).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch {
                secret: secret.into(),
            }
        }
        e => TlsError::BadKey {
            secret: secret.into(),
            reason: e.to_string(),
        },
    })?;
    let mut names: Vec<String> = info
        .common_name
        .iter()
        .map(|cn| cn.to_ascii_lowercase())
        .filter(|cn| is_hostname_like(cn))
        .chain(info.dns_names.iter().map(|n| normalize(n).into_owned()))
        .collect();
    names.sort();
    names.dedup();
    Ok(Certificate {
        key: Arc::new(key),
        names,
        common_name: info.common_name,
        serial: info.serial,
        fingerprint,
    })
}

/// ingress-nginx's fake certificate (same subject and SAN), self-signed,
/// ECDSA P-256, valid 365 days from now. Served for unknown or missing SNI
/// and for hosts whose Secret is missing, invalid or not for them.
///
/// # Panics
/// Only if the system RNG or ring's key generation fails.
pub fn default_certificate() -> Certificate {
    use rcgen::{DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SerialNumber};
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate P-256 key");
    let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_string()])
        .expect("ingress.local is a valid DNS name");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Acme Co");
    params
        .distinguished_name
        .push(DnType::CommonName, DEFAULT_COMMON_NAME);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + now;
    params.not_after = params.not_before + std::time::Duration::from_secs(365 * 86_400);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut serial = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial).is_ok() {
        params.serial_number = Some(SerialNumber::from_slice(&serial));
    }
    let cert = params
        .self_signed(&key)
        .expect("self-sign the default certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    build("<default>", vec![cert.der().clone()], key).expect("the generated certificate parses")
}

/// Host → certificate table: exact hosts, then one-label wildcards
/// (`*.example.com`), then the default. Immutable once published; a change
/// builds a new one and swaps it in.
#[derive(Clone, Debug)]
pub struct CertIndex {
    exact: HashMap<String, Arc<Certificate>>,
    /// Keyed by the parent, `example.com` for `*.example.com`.
    wildcard: HashMap<String, Arc<Certificate>>,
    default: Arc<Certificate>,
}

impl CertIndex {
    pub fn new(default: Certificate) -> CertIndex {
        CertIndex {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: Arc::new(default),
        }
    }

    /// Sets the certificate for `host` (`foo.com` or `*.foo.com`), replacing any earlier one.
    pub fn insert(&mut self, host: &str, cert: Arc<Certificate>) {
        let host = normalize(host).into_owned();
        match host.strip_prefix("*.") {
            Some(parent) => self.wildcard.insert(parent.to_string(), cert),
            None => self.exact.insert(host, cert),
        };
    }

    /// Whether `host` (exact or `*.` form) has its own entry.
    pub fn contains(&self, host: &str) -> bool {
        let host = normalize(host);
        match host.strip_prefix("*.") {
            Some(parent) => self.wildcard.contains_key(parent),
            None => self.exact.contains_key(host.as_ref()),
        }
    }

    /// The certificate for an SNI; the default for none or unknown.
    pub fn lookup(&self, sni: Option<&str>) -> &Arc<Certificate> {
        let Some(sni) = sni else { return &self.default };
        let host = normalize(sni);
        if let Some(cert) = self.exact.get(host.as_ref()) {
            return cert;
        }
        host.split_once('.')
            .filter(|(label, _)| !label.is_empty())
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }

    pub fn default_certificate(&self) -> &Arc<Certificate> {
        &self.default
    }

    /// Whether `lookup(sni)` gives the default certificate.
    pub fn is_default(&self, sni: Option<&str>) -> bool {
        Arc::ptr_eq(self.lookup(sni), &self.default)
    }

    /// Builds the table from `(host, secret ns/name)` pairs in precedence
    /// order (oldest Ingress first: the first working certificate for a host
    /// wins). `cert` parses or fetches from a cache. Every pair whose host
    /// is left on the default comes back as (position in `hosts`, host,
    /// error): one Event each on the Ingress that asked.
    pub fn build<'a>(
        default: Certificate,
        hosts: impl IntoIterator<Item = (&'a str, &'a str)>,
        mut cert: impl FnMut(&str) -> Result<Arc<Certificate>, TlsError>,
    ) -> (CertIndex, Vec<(usize, String, TlsError)>) {
        let mut index = CertIndex::new(default);
        let mut errors = Vec::new();
        for (position, (host, secret)) in hosts.into_iter().enumerate() {
            if index.contains(host) {
                continue;
            }
            match cert(secret).and_then(|c| c.check_host(secret, host).map(|()| c)) {
                Ok(c) => index.insert(host, c),
                Err(e) => errors.push((position, host.to_string(), e)),
            }
        }
        errors.retain(|(_, host, _)| !index.contains(host));
        (index, errors)
    }
}

/// Lowercase, without a trailing dot; borrows when already normal.
fn normalize(host: &str) -> std::borrow::Cow<'_, str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    }
}

fn is_hostname_like(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'*' | b'_'))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Just enough DER to read the serial, subject CN and DNS SANs of an
/// X.509 certificate. Every access is bounds-checked; anything unexpected
/// gives `None` (the caller reports the Secret as invalid).
mod der {
    pub struct LeafInfo {
        pub serial: String,
        pub common_name: Option<String>,
        pub dns_names: Vec<String>,
    }

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
    const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

    /// One TLV: (tag, contents, rest). Low tag numbers, definite lengths only.
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, input) = input.split_first()?;
        let (&first, input) = input.split_first()?;
        let (len, input) = if first < 0x80 {
            (usize::from(first), input)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || tag & 0x1f == 0x1f {
                return None;
            }
            let (bytes, input) = input.split_at_checked(n)?;
            (
                bytes
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)),
                input,
            )
        };
        let (contents, rest) = input.split_at_checked(len)?;
        Some((tag, contents, rest))
    }

    fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (t, contents, rest) = tlv(input)?;
        (t == tag).then_some((contents, rest))
    }

    /// The TLVs of a constructed value's contents.
    fn items(mut input: &[u8]) -> impl Iterator<Item = Option<(u8, &[u8])>> {
        std::iter::from_fn(move || {
            if input.is_empty() {
                return None;
            }
            let item = tlv(input);
            input = item.map_or(&[][..], |(_, _, rest)| rest);
            Some(item.map(|(tag, contents, _)| (tag, contents)))
        })
    }

    pub fn leaf_info(der: &[u8]) -> Option<LeafInfo> {
        let (cert, _) = expect(der, SEQUENCE)?;
        let (tbs, _) = expect(cert, SEQUENCE)?;
        let (mut tag, mut serial, mut rest) = tlv(tbs)?;
        if tag == 0xa0 {
            (tag, serial, rest) = tlv(rest)?; // [0] version
        }
        if tag != 0x02 {
            return None;
        }
        let (_signature, rest) = expect(rest, SEQUENCE)?;
        let (_issuer, rest) = expect(rest, SEQUENCE)?;
        let (_validity, rest) = expect(rest, SEQUENCE)?;
        let (subject, rest) = expect(rest, SEQUENCE)?;
        let (_spki, rest) = expect(rest, SEQUENCE)?;
        let mut common_name = None;
        for rdn in items(subject) {
            let (SET, attrs) = rdn? else { return None };
            for attr in items(attrs) {
                let (SEQUENCE, attr) = attr? else { return None };
                let (oid, value) = expect(attr, 0x06)?;
                if oid == OID_CN {
                    // UTF8String, PrintableString, T61String, IA5String; the last CN wins (as in Go).
                    let (tag, value, _) = tlv(value)?;
                    if matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) {
                        common_name = Some(String::from_utf8_lossy(value).into_owned());
                    }
                }
            }
        }
        let mut dns_names = Vec::new();
        for field in items(rest) {
            let (tag, contents) = field?;
            if tag != 0xa3 {
                continue; // [1]/[2] unique identifiers
            }
            let (extensions, _) = expect(contents, SEQUENCE)?;
            for ext in items(extensions) {
                let (SEQUENCE, ext) = ext? else { return None };
                let (oid, mut rest) = expect(ext, 0x06)?;
                if oid != OID_SAN {
                    continue;
                }
                if let Some((_critical, r)) = expect(rest, 0x01) {
                    rest = r;
                }
                let (value, _) = expect(rest, 0x04)?;
                let (names, _) = expect(value, SEQUENCE)?;
                for name in items(names) {
                    if let (0x82, dns) = name? {
                        dns_names.push(std::str::from_utf8(dns).ok()?.to_string());
                    }
                }
            }
        }
        let serial = serial
            .iter()
            .skip_while(|&&b| b == 0)
            .map(|b| format!("{b:02x}"))
            .collect();
        Some(LeafInfo {
            serial,
            common_name,
            dns_names,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn pair(cn: &str, sans: &[&str]) -> (String, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        (params.self_signed(&key).unwrap().pem(), key)
    }

    fn data(crt: &str, key: &str) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("tls.crt".to_string(), crt.as_bytes().to_vec()),
            ("tls.key".to_string(), key.as_bytes().to_vec()),
        ])
    }

    fn cert(cn: &str, sans: &[&str]) -> Certificate {
        let (crt, key) = pair(cn, sans);
        certificate_from_secret("default/t", &data(&crt, &key.serialize_pem())).unwrap()
    }

    #[test]
    fn good_pair_gives_names_from_cn_and_sans() {
        let c = cert("Main.Test", &["a.test", "B.test", "*.wild.test"]);
        assert_eq!(c.names, ["*.wild.test", "a.test", "b.test", "main.test"]);
        assert_eq!(c.common_name.as_deref(), Some("Main.Test"));
        assert_eq!(c.fingerprint.len(), 64);
        assert!(!c.serial.is_empty());
    }

    #[test]
    fn missing_keys() {
        let (crt, key) = pair("x", &["a.test"]);
        let mut d = data(&crt, &key.serialize_pem());
        d.remove("tls.key");
        let err = certificate_from_secret("ns/s", &d).unwrap_err();
        assert_eq!(err, missing("ns/s", "tls.key"));
        assert_eq!(err.to_string(), "key 'tls.key' missing from Secret ns/s");
        assert_eq!(err.reason(), "TLSSecretInvalid");
        d.insert("tls.key".into(), key.serialize_pem().into_bytes());
        d.remove("tls.crt");
        assert_eq!(
            certificate_from_secret("ns/s", &d).unwrap_err(),
            missing("ns/s", "tls.crt")
        );
        let none = certificate_from_secret("ns/s", &BTreeMap::new()).unwrap_err();
        assert!(matches!(none, TlsError::NoKeypair { .. }));
    }

    #[test]
    fn garbage_pem() {
        let (crt, key) = pair("x", &["a.test"]);
        let err = certificate_from_secret("ns/s", &data("not a pem", &key.serialize_pem()));
        assert!(
            matches!(err, Err(TlsError::BadPem { key: "tls.crt", .. })),
            "{err:?}"
        );
        let err = certificate_from_secret("ns/s", &data(&crt, "junk"));
        assert!(
            matches!(err, Err(TlsError::BadPem { key: "tls.key", .. })),
            "{err:?}"
        );
        let bogus = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = certificate_from_secret("ns/s", &data(bogus, &key.serialize_pem()));
        assert!(
            matches!(err, Err(TlsError::BadCertificate { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn mismatched_key() {
        let (crt, _) = pair("x", &["a.test"]);
        let (_, other) = pair("y", &["b.test"]);
        let err = certificate_from_secret("ns/s", &data(&crt, &other.serialize_pem())).unwrap_err();
        assert_eq!(
            err,
            TlsError::KeyMismatch {
                secret: "ns/s".into()
            }
        );
    }

    #[test]
    fn der_walk_never_panics_on_truncated_or_flipped_input() {
        let c = cert("x", &["a.test"]);
        let der = c.leaf_der();
        for n in 0..der.len() {
            assert!(der::leaf_info(&der[..n]).is_none());
            let mut flipped = der.to_vec();
            flipped[n] ^= 0xff;
            let _ = der::leaf_info(&flipped);
        }
        assert_eq!(der::leaf_info(der).unwrap().dns_names, ["a.test"]);
    }

    #[test]
    fn covers_one_label_wildcards() {
        let c = cert("no spaces allowed here", &["a.test", "*.wild.test"]);
        assert!(c.covers("a.test") && c.covers("A.TEST.") && c.covers("x.wild.test"));
        assert!(!c.covers("wild.test") && !c.covers("y.x.wild.test") && !c.covers(".wild.test"));
        assert!(!c.covers("b.test") && !c.covers("no spaces allowed here"));
        assert!(
            c.check_host("ns/s", "b.test")
                .unwrap_err()
                .to_string()
                .contains("server b.test")
        );
    }

    #[test]
    fn default_certificate_subject() {
        let d = default_certificate();
        assert_eq!(d.common_name.as_deref(), Some(DEFAULT_COMMON_NAME));
        assert_eq!(d.names, ["ingress.local"]);
        assert!(!d.serial.is_empty() && d.serial.len() <= 32);
    }

    #[test]
    fn index_lookups() {
        let ab = Arc::new(cert("ab", &["a.test", "b.test"]));
        let wild = Arc::new(cert("w", &["*.wild.test"]));
        let mut index = CertIndex::new(default_certificate());
        index.insert("A.test", ab.clone());
        index.insert("b.test", ab.clone());
        index.insert("*.Wild.test", wild.clone());
        assert!(Arc::ptr_eq(index.lookup(Some("a.TEST")), &ab));
        assert!(Arc::ptr_eq(index.lookup(Some("B.test.")), &ab));
        assert!(Arc::ptr_eq(index.lookup(Some("X.wild.test")), &wild));
        for unknown in [
            None,
            Some("c.test"),
            Some("y.x.wild.test"),
            Some("wild.test"),
        ] {
            assert!(index.is_default(unknown), "{unknown:?}");
        }
        assert!(!index.is_default(Some("a.test")));
    }

    #[test]
    fn build_reports_errors_and_first_wins() {
        let ab = Arc::new(cert("ab", &["a.test", "b.test"]));
        let ab2 = Arc::new(cert("ab2", &["a.test", "b.test"]));
        let lookup = |s: &str| match s {
            "ns/ab" => Ok(ab.clone()),
            "ns/ab2" => Ok(ab2.clone()),
            _ => Err(TlsError::SecretNotFound { secret: s.into() }),
        };
        let hosts = [
            ("a.test", "ns/gone"),
            ("a.test", "ns/ab"),
            ("a.test", "ns/ab2"),
            ("c.test", "ns/ab"),
            ("d.test", "ns/gone"),
        ];
        let (index, errors) = CertIndex::build(default_certificate(), hosts, lookup);
        assert!(Arc::ptr_eq(index.lookup(Some("a.test")), &ab));
        let reasons: Vec<_> = errors
            .iter()
            .map(|(i, h, e)| (*i, h.as_str(), e.reason()))
            .collect();
        let want = [
            (3, "c.test", "TLSCertificateMismatch"),
            (4, "d.test", "TLSSecretNotFound"),
        ];
        assert_eq!(reasons, want);
        assert!(index.is_default(Some("c.test")) && index.is_default(Some("d.test")));
    }
}
