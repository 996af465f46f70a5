//! Client TLS with rustls: the server configuration from the `tls` block
//! (certificate chain and key, with `verify` the CA that client
//! certificates must chain to, the cipher suites, curves and lowest
//! version allowed, and the pinned client keys).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring::{cipher_suite as cs, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

use crate::options::{TlsOptions, TlsVersion, TLS_DEFAULT_TIMEOUT as DEFAULT_TIMEOUT};

/// nats-server's delay for `handshake_first: auto`.
pub const DEFAULT_FIRST_FALLBACK: Duration = Duration::from_millis(50);

/// The client TLS settings a shard needs.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The rustls server configuration.
    pub config: Arc<ServerConfig>,
    /// Handshake deadline.
    pub timeout: Duration,
    /// TLS before INFO.
    pub handshake_first: bool,
    /// With TLS first: how long to wait for the client's first byte before
    /// sending INFO in the clear after all (the fallback form).
    pub first_fallback: Option<Duration>,
    /// Client certificates required.
    pub verify: bool,
    /// The client certificate names the user (`verify_and_map`).
    pub map: bool,
    /// `pinned_certs`: the SPKI digests a client certificate must have
    /// (shared, since every connection clones these settings).
    pub pinned: Option<Arc<HashSet<String>>>,
}

/// A `tls` block value petrel cannot honour, with nats-server's wording
/// where nats-server refuses the same value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsValueError {
    /// Not a cipher suite name Go knows.
    UnrecognizedCipher(String),
    /// A Go cipher suite name that rustls does not implement (CBC, static
    /// RSA key exchange, RC4, 3DES).
    UnsupportedCipher(String),
    /// Not a curve name Go knows.
    UnrecognizedCurve(String),
    /// A Go curve name the ring provider does not implement.
    UnsupportedCurve(String),
    /// Not one of "1.0" .. "1.3".
    UnknownVersion(String),
    /// TLS 1.0 or 1.1, which nats-server refuses too.
    VersionTooLow(&'static str),
    /// Not 64 hex digits.
    BadPin(String),
}

impl fmt::Display for TlsValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsValueError::UnrecognizedCipher(n) => write!(f, "unrecognized cipher {n}"),
            TlsValueError::UnsupportedCipher(n) => write!(
                f,
                "cipher {n} is not supported by petrel (rustls offers the TLS 1.3 suites and \
                 ECDHE with AES-GCM or ChaCha20-Poly1305)"
            ),
            TlsValueError::UnrecognizedCurve(n) => write!(f, "unrecognized curve preference {n}"),
            TlsValueError::UnsupportedCurve(n) => write!(
                f,
                "curve preference {n} is not supported by petrel (rustls with ring offers X25519, \
                 CurveP256 and CurveP384)"
            ),
            TlsValueError::UnknownVersion(v) => write!(f, "unknown version: {v}"),
            TlsValueError::VersionTooLow(v) => write!(f, "unsupported TLS version: TLS {v}"),
            TlsValueError::BadPin(p) => write!(
                f,
                "'pinned_certs' key {p} does not look like hex-encoded sha256 of DER encoded \
                 SubjectPublicKeyInfo"
            ),
        }
    }
}

impl std::error::Error for TlsValueError {}

/// A failed handshake as the log tells it: rustls's own words, except for
/// a peer certificate in X.509 version 1, which nats-server (Go) accepts
/// and rustls refuses with an internal error name.
pub fn handshake_failure(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.contains("UnsupportedCertVersion") {
        return "the peer's certificate is X.509 version 1, which petrel does not accept \
                (nats-server does): reissue it as version 3"
            .to_string();
    }
    text
}

/// The rustls suite for a nats-server (Go `crypto/tls`) cipher suite name.
pub fn cipher_suite(name: &str) -> Result<SupportedCipherSuite, TlsValueError> {
    Ok(match name {
        "TLS_AES_128_GCM_SHA256" => cs::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" => cs::TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" => cs::TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        // The rest of the IANA suites Go knows: CBC, static RSA key
        // exchange, RC4 and 3DES, which rustls leaves out by design.
        "TLS_RSA_WITH_RC4_128_SHA"
        | "TLS_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA256"
        | "TLS_RSA_WITH_AES_128_GCM_SHA256"
        | "TLS_RSA_WITH_AES_256_GCM_SHA384"
        | "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256" => return Err(TlsValueError::UnsupportedCipher(name.to_string())),
        _ => return Err(TlsValueError::UnrecognizedCipher(name.to_string())),
    })
}

/// The rustls key-exchange group for a nats-server (Go) curve name.
pub fn curve(name: &str) -> Result<&'static dyn SupportedKxGroup, TlsValueError> {
    match name {
        "X25519" => Ok(kx_group::X25519),
        "CurveP256" => Ok(kx_group::SECP256R1),
        "CurveP384" => Ok(kx_group::SECP384R1),
        "CurveP521" | "X25519MLKEM768" => Err(TlsValueError::UnsupportedCurve(name.to_string())),
        _ => Err(TlsValueError::UnrecognizedCurve(name.to_string())),
    }
}

/// `min_version`: "1.2" or "1.3"; lower versions are refused as
/// nats-server refuses them.
pub fn min_version(text: &str) -> Result<TlsVersion, TlsValueError> {
    match text {
        "1.0" => Err(TlsValueError::VersionTooLow("1.0")),
        "1.1" => Err(TlsValueError::VersionTooLow("1.1")),
        "1.2" => Ok(TlsVersion::Tls12),
        "1.3" => Ok(TlsVersion::Tls13),
        _ => Err(TlsValueError::UnknownVersion(text.to_string())),
    }
}

/// A `pinned_certs` entry, lower-cased: 64 hex digits.
pub fn pin(entry: &str) -> Result<String, TlsValueError> {
    let lower = entry.to_ascii_lowercase();
    if lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(lower)
    } else {
        Err(TlsValueError::BadPin(lower))
    }
}

/// The pin of a certificate: hex SHA-256 of its DER SubjectPublicKeyInfo,
/// the key id nats-server compares `pinned_certs` with.
pub fn spki_sha256(der: &CertificateDer<'_>) -> Option<String> {
    use sha2::Digest;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    let digest = sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// The suites the server offers. Listed TLS 1.2 suites replace rustls'
/// TLS 1.2 list; Go ignores `cipher_suites` for TLS 1.3, so TLS 1.3 keeps
/// every suite unless the list names TLS 1.3 suites (then only those).
fn suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, String> {
    let provider = rustls::crypto::ring::default_provider();
    if names.is_empty() {
        return Ok(provider.cipher_suites);
    }
    let listed = names
        .iter()
        .map(|n| cipher_suite(n).map_err(|e| format!("tls: cipher_suites: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let is13 = |s: &SupportedCipherSuite| s.version() == &rustls::version::TLS13;
    let mut out: Vec<_> = listed.iter().copied().filter(is13).collect();
    if out.is_empty() {
        out = provider.cipher_suites.iter().copied().filter(is13).collect();
    }
    out.extend(listed.iter().copied().filter(|s| !is13(s)));
    Ok(out)
}

/// The names a client certificate offers for `verify_and_map`, in the order
/// they are tried: email addresses, DNS names, URIs, then the subject as an
/// RFC 2253 string (most specific attribute first, as Go prints it).
pub fn certificate_names(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for kind in 0..3 {
            for n in &san.value.general_names {
                match (kind, n) {
                    (0, GeneralName::RFC822Name(e)) => names.push(e.to_string()),
                    (1, GeneralName::DNSName(d)) => names.push(d.to_string()),
                    (2, GeneralName::URI(u)) => names.push(u.to_string()),
                    _ => {}
                }
            }
        }
    }
    let mut parts: Vec<String> = Vec::new();
    for rdn in cert.subject().iter() {
        for atv in rdn.iter() {
            let key = x509_parser::objects::oid2abbrev(atv.attr_type(), x509_parser::objects::oid_registry())
                .map(str::to_string)
                .unwrap_or_else(|_| atv.attr_type().to_id_string());
            if let Ok(v) = atv.as_str() {
                parts.push(format!("{key}={v}"));
            }
        }
    }
    parts.reverse();
    if !parts.is_empty() {
        names.push(parts.join(","));
    }
    names
}

/// The crypto provider and protocol versions a `tls` block allows: its
/// cipher suites, curves and lowest version.
pub(crate) fn crypto(
    o: &TlsOptions,
) -> Result<(Arc<CryptoProvider>, &'static [&'static SupportedProtocolVersion]), String> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = suites(&o.cipher_suites)?;
    if !o.curve_preferences.is_empty() {
        provider.kx_groups = o
            .curve_preferences
            .iter()
            .map(|n| curve(n).map_err(|e| format!("tls: curve_preferences: {e}")))
            .collect::<Result<_, _>>()?;
    }
    static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static TLS12_UP: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
    let versions: &'static [&'static SupportedProtocolVersion] = match o.min_version {
        Some(TlsVersion::Tls13) => &TLS13_ONLY,
        Some(TlsVersion::Tls12) | None => &TLS12_UP,
    };
    Ok((Arc::new(provider), versions))
}

/// The CA certificates in `path`, as a trust store.
pub(crate) fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in certs(path)? {
        roots.add(c).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

pub(crate) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut &text[..]).collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

pub(crate) fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut &text[..])
        .map_err(|e| format!("{}: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no private key found", path.display()))
}

impl ClientTls {
    /// Loads the certificates and builds the configuration.
    pub fn new(o: &TlsOptions) -> Result<ClientTls, String> {
        let (provider, versions) = crypto(o)?;
        // Fails when the suites left allow none of the versions (TLS 1.2
        // suites only, with min_version 1.3).
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("tls: cipher_suites, min_version: {e}"))?;
        let cert_file = o.cert_file.as_deref().ok_or("tls: cert_file is required")?;
        let key_file = o.key_file.as_deref().ok_or("tls: key_file is required")?;
        let builder = if o.verify {
            let ca = o.ca_file.as_deref().ok_or("tls: verify needs ca_file")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider)
                .build()
                .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(certs(cert_file)?, key(key_file)?)
            .map_err(|e| format!("tls: {e}"))?;
        Ok(ClientTls {
            config: Arc::new(config),
            timeout: o.timeout.unwrap_or(DEFAULT_TIMEOUT),
            handshake_first: o.handshake_first,
            first_fallback: o.handshake_first_fallback.filter(|_| o.handshake_first),
            verify: o.verify,
            map: o.map,
            pinned: (!o.pinned_certs.is_empty()).then(|| Arc::new(o.pinned_certs.iter().cloned().collect())),
        })
    }

    /// What a finished handshake admits: the names the client certificate
    /// offers for `verify_and_map` (empty without it), or, as
    /// `check_pinned`, the key that `pinned_certs` does not list.
    pub fn admit(&self, conn: &rustls::ServerConnection) -> Result<Vec<String>, Option<String>> {
        let leaf = conn.peer_certificates().and_then(|c| c.first());
        self.check_pinned(leaf)?;
        Ok(match (leaf, self.map) {
            (Some(d), true) => certificate_names(d),
            _ => Vec::new(),
        })
    }

    /// Checks a client's certificate against `pinned_certs`: `Err` carries
    /// the key id that is not pinned, or `None` when the client sent no
    /// certificate.
    fn check_pinned(&self, cert: Option<&CertificateDer<'_>>) -> Result<(), Option<String>> {
        let Some(pins) = &self.pinned else { return Ok(()) };
        let id = cert.and_then(spki_sha256).ok_or(None)?;
        if pins.contains(&id) {
            Ok(())
        } else {
            Err(Some(id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_names_map_to_rustls_or_name_what_is_missing() {
        assert_eq!(
            cipher_suite("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384").unwrap().suite(),
            rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        );
        assert_eq!(
            cipher_suite("TLS_AES_128_GCM_SHA256").unwrap().suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        assert_eq!(
            cipher_suite("TLS_RSA_WITH_AES_128_CBC_SHA").unwrap_err(),
            TlsValueError::UnsupportedCipher("TLS_RSA_WITH_AES_128_CBC_SHA".into())
        );
        assert_eq!(
            cipher_suite("nope").unwrap_err().to_string(),
            "unrecognized cipher nope"
        );
        assert_eq!(curve("CurveP256").unwrap().name(), rustls::NamedGroup::secp256r1);
        assert!(matches!(curve("CurveP521"), Err(TlsValueError::UnsupportedCurve(_))));
        assert_eq!(
            curve("P256").err().unwrap().to_string(),
            "unrecognized curve preference P256"
        );
        assert_eq!(min_version("1.3").unwrap(), TlsVersion::Tls13);
        assert_eq!(
            min_version("1.1").unwrap_err().to_string(),
            "unsupported TLS version: TLS 1.1"
        );
        assert_eq!(pin(&"AB".repeat(32)).unwrap(), "ab".repeat(32));
        assert!(pin("ab").is_err());
    }

    #[test]
    fn listed_tls12_suites_keep_every_tls13_suite() {
        let s = suites(&["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()]).unwrap();
        let names: Vec<_> = s.iter().map(|s| s.suite()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.contains(&rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256));
        let s = suites(&["TLS_CHACHA20_POLY1305_SHA256".into()]).unwrap();
        assert_eq!(
            s.iter().map(|s| s.suite()).collect::<Vec<_>>(),
            vec![rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256]
        );
    }
}
