//! The INFO and CONNECT documents of a leaf node connection, as
//! nats-server 2.15 writes and reads them. The hub sends INFO first (with
//! a nonce), the leaf answers CONNECT (credentials, its server id and the
//! local account it binds), and the hub confirms with a second INFO
//! (`connect_info`, the hub account the leaf is bound to).

use serde::{Deserialize, Serialize};

/// The INFO a hub sends on a leaf connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LeafInfo {
    /// The hub's server id.
    pub server_id: String,
    /// The hub's server name.
    pub server_name: String,
    /// Version.
    pub version: String,
    /// Protocol level.
    pub proto: u32,
    /// Runtime.
    pub go: String,
    /// Leaf listen host.
    pub host: String,
    /// Leaf listen port.
    pub port: u16,
    /// Header support.
    pub headers: bool,
    /// Authentication required.
    #[serde(skip_serializing_if = "is_false")]
    pub auth_required: bool,
    /// TLS after this INFO.
    #[serde(skip_serializing_if = "is_false")]
    pub tls_required: bool,
    /// Leaf certificates are verified.
    #[serde(skip_serializing_if = "is_false")]
    pub tls_verify: bool,
    /// Largest payload.
    pub max_payload: usize,
    /// `host:port` of the hub's leaf listener.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// The connection's id on the hub.
    #[serde(skip_serializing_if = "is_zero")]
    pub client_id: u64,
    /// Nonce for signatures (first INFO only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub nonce: String,
    /// The hub's cluster name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// Compression: the hub's configured mode in its first INFO, the
    /// agreed one (or `s2_auto`) in the INFOs that negotiate it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub compression: String,
    /// Second INFO: the CONNECT was accepted.
    #[serde(skip_serializing_if = "is_false")]
    pub connect_info: bool,
    /// Second INFO: the hub account the leaf is bound to.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_account: String,
    /// Second INFO: what the leaf user may receive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<super::route_info::SubjectPermission>,
    /// Second INFO: what the leaf user may send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<super::route_info::SubjectPermission>,
    /// The hub's (and its cluster's) leaf URLs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub leafnode_urls: Vec<String>,
    /// Lame duck mode.
    #[serde(skip_serializing_if = "is_false")]
    pub ldm: bool,
    /// The hub confirms a leaf's CONNECT with a second INFO.
    #[serde(skip_serializing_if = "is_false")]
    pub info_on_connect: bool,
}

/// The CONNECT a leaf sends its hub.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LeafConnect {
    /// The leaf's version.
    pub version: String,
    /// User (from the remote URL or credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    /// User nkey (nkey authentication).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey: Option<String>,
    /// User JWT (credentials file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<String>,
    /// Nonce signature (credentials file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// The leaf's server id.
    pub server_id: String,
    /// The leaf's server name.
    pub name: String,
    /// The leaf's cluster name (its server name when not clustered).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// Header support.
    pub headers: bool,
    /// Subjects the hub must not send this leaf (its `deny_imports`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_pub: Vec<String>,
    /// The leaf asks not to be told other leaf connections' interest
    /// (its remote's `request_isolation`).
    #[serde(skip_serializing_if = "is_false")]
    pub isolate: bool,
    /// The dialing server takes the hub's role (its remote's `hub`).
    #[serde(rename = "is_hub", skip_serializing_if = "is_false")]
    pub hub: bool,
    /// Compression mode the leaf asks for.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub compress_mode: String,
    /// The leaf's local account this connection carries.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_account: String,
    /// Leaf protocol level.
    pub protocol: u32,
    /// Set by NATS clients, never by servers: a client on the leaf port.
    #[serde(skip_serializing)]
    pub lang: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl LeafInfo {
    /// The INFO line's JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_nats_server_writes() {
        // Captured from nats-server 2.15.1.
        let hub = br#"{"server_id":"NCSB","server_name":"HUB1","version":"2.15.1","proto":3,"git_commit":"b2fd3ef","go":"go1.27.2","host":"127.0.0.1","port":17422,"headers":true,"auth_required":true,"max_payload":1048576,"ip":"127.0.0.1:17422","client_id":9,"connect_info":true,"remote_account":"A","api_lvl":5,"info_on_connect":true,"leafnode_urls":["127.0.0.1:17422"]}"#;
        let i: LeafInfo = serde_json::from_slice(hub).unwrap();
        assert_eq!((i.connect_info, i.remote_account.as_str(), i.port), (true, "A", 17422));
        let leaf = br#"{"version":"2.15.1","user":"u","pass":"p","server_id":"NBVU","name":"LEAF6","cluster":"LEAF6","headers":true,"deny_pub":["secret.\u003e"],"compress_mode":"off","remote_account":"L","protocol":3}"#;
        let c: LeafConnect = serde_json::from_slice(leaf).unwrap();
        assert_eq!(
            (c.user.as_deref(), c.remote_account.as_str(), c.name.as_str()),
            (Some("u"), "L", "LEAF6")
        );
    }
}
