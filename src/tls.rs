//! Client TLS with rustls: the server configuration from the `tls` block
//! (certificate chain and key, and with `verify` the CA that client
//! certificates must chain to).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::options::TlsOptions;

/// nats-server's default TLS handshake deadline (`tls_timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The client TLS settings a shard needs.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The rustls server configuration.
    pub config: Arc<ServerConfig>,
    /// Handshake deadline.
    pub timeout: Duration,
    /// TLS before INFO.
    pub handshake_first: bool,
    /// Client certificates required.
    pub verify: bool,
    /// The client certificate names the user (`verify_and_map`).
    pub map: bool,
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

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut &text[..]).collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut &text[..])
        .map_err(|e| format!("{}: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no private key found", path.display()))
}

impl ClientTls {
    /// Loads the certificates and builds the configuration.
    pub fn new(o: &TlsOptions) -> Result<ClientTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let cert_file = o.cert_file.as_deref().ok_or("tls: cert_file is required")?;
        let key_file = o.key_file.as_deref().ok_or("tls: key_file is required")?;
        let builder = if o.verify {
            let ca = o.ca_file.as_deref().ok_or("tls: verify needs ca_file")?;
            let mut roots = RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
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
            verify: o.verify,
            map: o.map,
        })
    }
}
