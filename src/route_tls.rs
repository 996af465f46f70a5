//! TLS on routes, as nats-server runs it: every route connection starts
//! with a TLS handshake (before INFO and CONNECT), and both sides present
//! and verify certificates against the block's `ca_file`. The server
//! that dialed is the TLS client; the one that accepted is the TLS server.
//! Also the client side of a leaf remote's TLS ([`dial_config`]).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use crate::options::{TlsOptions, TLS_DEFAULT_TIMEOUT};
use crate::tls::{certs, crypto, key, roots, spki_sha256};

/// nats-server's warning for `insecure` on routes.
pub const INSECURE_WARNING: &str =
    "TLS certificate chain and hostname of solicited routes will not be verified. DO NOT USE IN PRODUCTION!";

/// Both halves of route TLS, built once from the `cluster { tls }` block.
#[derive(Debug, Clone)]
pub struct RouteTls {
    /// For routes this server accepts: client certificates required.
    pub server: Arc<ServerConfig>,
    /// For routes this server dials: presents the same certificate.
    pub client: Arc<ClientConfig>,
    /// Handshake deadline.
    pub timeout: Duration,
    /// `pinned_certs`: the SPKI digests a peer's certificate must have.
    pub pinned: Option<Arc<HashSet<String>>>,
    /// `insecure`: peers this server dials are not verified.
    pub insecure: bool,
}

impl RouteTls {
    /// Loads the certificates and builds both configurations. `ca_file`
    /// is required: nats-server falls back to the system's roots without
    /// it, which petrel does not read (unless `insecure` says to verify
    /// nothing on dialed routes, accepted routes still need it).
    pub fn new(o: &TlsOptions) -> Result<RouteTls, String> {
        let (provider, versions) = crypto(o)?;
        let cert_file = o.cert_file.as_deref().ok_or("tls: cert_file is required")?;
        let key_file = o.key_file.as_deref().ok_or("tls: key_file is required")?;
        let ca = o.ca_file.as_deref().ok_or(
            "tls: ca_file is required on routes (petrel verifies route peers against it, \
             and does not read the system's roots)",
        )?;
        let roots = Arc::new(roots(ca)?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("tls: cipher_suites, min_version: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(cert_file)?, key(key_file)?)
            .map_err(|e| format!("tls: {e}"))?;
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("tls: cipher_suites, min_version: {e}"))?;
        let client = if o.insecure {
            client
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        } else {
            client.with_root_certificates(roots)
        };
        let client = client
            .with_client_auth_cert(certs(cert_file)?, key(key_file)?)
            .map_err(|e| format!("tls: {e}"))?;
        Ok(RouteTls {
            server: Arc::new(server),
            client: Arc::new(client),
            timeout: o.timeout.unwrap_or(TLS_DEFAULT_TIMEOUT),
            pinned: (!o.pinned_certs.is_empty()).then(|| Arc::new(o.pinned_certs.iter().cloned().collect())),
            insecure: o.insecure,
        })
    }

    /// The name a dialed peer's certificate must carry: the URL's host
    /// name; for an address, `tls_name` (the first host name among the
    /// configured routes, as nats-server uses for routes learned by
    /// gossip) when there is one, else the address itself.
    pub fn server_name(host: &str, tls_name: Option<&str>) -> Result<ServerName<'static>, String> {
        let name = match (host.parse::<IpAddr>(), tls_name) {
            (Ok(_), Some(n)) => n,
            _ => host,
        };
        ServerName::try_from(name.to_string()).map_err(|e| format!("invalid server name {name:?}: {e}"))
    }

    /// Checks a peer's certificate against `pinned_certs`; the error names
    /// the key that is not pinned.
    pub fn check_pinned(&self, cert: Option<&CertificateDer<'_>>) -> Result<(), String> {
        let Some(pins) = &self.pinned else { return Ok(()) };
        match cert.and_then(spki_sha256) {
            Some(id) if pins.contains(&id) => Ok(()),
            Some(id) => Err(format!("peer certificate not pinned: {id}")),
            None => Err("peer certificate not pinned: none presented".into()),
        }
    }
}

/// `insecure`: accepts any certificate from a dialed peer (signatures are
/// still checked, so the handshake itself is sound).
/// The TLS client configuration for a connection this server dials as a
/// leaf: the hub verified against the block's `ca_file`, else the system's
/// roots (as nats-server's Go defaults do); the block's certificate
/// presented when it has one; `insecure` verifies nothing.
pub fn dial_config(o: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
    let (provider, versions) = crypto(o)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls: cipher_suites, min_version: {e}"))?;
    let builder = if o.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let roots = match o.ca_file.as_deref() {
            Some(ca) => roots(ca)?,
            None => system_roots(),
        };
        builder.with_root_certificates(roots)
    };
    let config = match (o.cert_file.as_deref(), o.key_file.as_deref()) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(certs(c)?, key(k)?)
            .map_err(|e| format!("tls: {e}"))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The system's trusted roots (what Go's TLS client trusts by default).
fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    roots
}

#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialed_addresses_use_the_configured_host_name() {
        let n = RouteTls::server_name("127.0.0.1", Some("nats.example")).unwrap();
        assert_eq!(n.to_str(), "nats.example");
        let n = RouteTls::server_name("127.0.0.1", None).unwrap();
        assert!(matches!(n, ServerName::IpAddress(_)));
        let n = RouteTls::server_name("a.example", Some("b.example")).unwrap();
        assert_eq!(n.to_str(), "a.example");
    }

    #[test]
    fn routes_need_a_ca() {
        let o = TlsOptions {
            cert_file: Some("/nonexistent/c.pem".into()),
            key_file: Some("/nonexistent/k.pem".into()),
            ..Default::default()
        };
        assert!(RouteTls::new(&o).unwrap_err().contains("ca_file is required"));
    }
}
