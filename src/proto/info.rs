//! The INFO document the server sends on accept (and again after the first
//! PING, as nats-server 2.12 does), and the version petrel reports.

use serde::Serialize;

/// The nats-server version whose client protocol petrel speaks. Clients gate
/// features on it (headers need ≥ 2.2), so it is the emulated version, not
/// petrel's own crate version, which goes in the log banner.
pub const COMPAT_VERSION: &str = "2.12.0";

/// nats-server's `Info` fields sent to plain clients.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerInfo {
    /// The server's nkey public key, fresh at every start.
    pub server_id: String,
    /// `server_name`, defaulting to the id.
    pub server_name: String,
    /// Emulated nats-server version.
    pub version: String,
    /// Always 1 toward clients.
    pub proto: u32,
    /// Go runtime in nats-server; here the language and petrel's version.
    pub go: String,
    /// Listen host.
    pub host: String,
    /// Client port.
    pub port: u16,
    /// Whether message headers are supported.
    pub headers: bool,
    /// Set when any authentication is configured.
    #[serde(skip_serializing_if = "is_false")]
    pub auth_required: bool,
    /// Set when TLS is required.
    #[serde(skip_serializing_if = "is_false")]
    pub tls_required: bool,
    /// Set when TLS is configured but `allow_non_tls` lets clients stay plain.
    #[serde(skip_serializing_if = "is_false")]
    pub tls_available: bool,
    /// Set when client certificates are verified.
    #[serde(skip_serializing_if = "is_false")]
    pub tls_verify: bool,
    /// Largest payload the client may publish.
    pub max_payload: usize,
    /// The connection id.
    #[serde(skip_serializing_if = "is_zero")]
    pub client_id: u64,
    /// The client's address as the server sees it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_ip: String,
    /// Nonce to sign when nkey or JWT auth is configured.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub nonce: String,
    /// The cluster name, in a cluster.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// Other servers' client URLs (cluster).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
    /// Lame-duck notice.
    #[serde(skip_serializing_if = "is_false")]
    pub ldm: bool,
    /// Marks the INFO sent after the client's first PING (2.12).
    #[serde(skip_serializing_if = "is_false")]
    pub connect_info: bool,
    /// In that INFO: the account the client is bound to.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_account: String,
    /// In that INFO: whether that account is the system account.
    #[serde(skip_serializing_if = "is_false")]
    pub acc_is_sys: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ServerInfo {
    /// The JSON text of this INFO.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("ServerInfo always serializes")
    }
}
