//! Test certificates, made by the test with rcgen and never checked in: a
//! CA and certificates it signs, written as PEM files in a temp folder.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A folder holding `ca.pem` and the certificates issued into it.
pub struct Pki {
    pub dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    /// The path of a file in the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A fresh CA ("petrel test CA"), written as `ca.pem`/`ca-key.pem`.
    pub fn new() -> Pki {
        let dir = super::jwt::temp_dir();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "petrel test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("ca-key.pem"), ca_key.serialize_pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// Issues `file.pem` and `file-key.pem` for the subject alternative
    /// `names` (addresses become IP SANs) and common name `cn`. Returns the
    /// certificate's `pinned_certs` entry.
    pub fn issue(&self, names: &[&str], cn: &str, file: &str) -> String {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        self.issue_params(p, file)
    }

    /// Issues `file.pem` and `file-key.pem` from `params`. Returns the
    /// `pinned_certs` entry: hex SHA-256 of the key's SubjectPublicKeyInfo,
    /// computed from the key (servers compute it from the certificate).
    pub fn issue_params(&self, params: CertificateParams, file: &str) -> String {
        use sha2::Digest;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(self.dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{file}-key.pem")), key.serialize_pem()).unwrap();
        sha2::Sha256::digest(key.public_key_der())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
