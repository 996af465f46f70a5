//! The INFO and CONNECT documents of a route, as nats-server 2.15 reads
//! and writes them, pool fields included: `route_pool_size` (absent when
//! the server does not pool), the dialer's `route_pool_idx`, and
//! `route_account` on a connection dedicated to one account.

use serde::{Deserialize, Serialize};

/// The route protocol level petrel speaks: accounts on the wire (2) and
/// message tracing (3), as nats-server 2.11+.
pub const ROUTE_PROTO: u32 = 3;

/// The lowest protocol level (of a route or leaf peer) that understands
/// message tracing.
pub const TRACE_PROTO: u32 = 3;

/// The INFO a server sends on a route (and forwards as gossip).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RouteInfo {
    /// The server's id (its route identity).
    pub server_id: String,
    /// The server's name (unique in the cluster).
    pub server_name: String,
    /// Version.
    pub version: String,
    /// Route protocol level.
    pub proto: u32,
    /// Runtime.
    pub go: String,
    /// Route listen host (or the advertised one).
    pub host: String,
    /// Route listen port (or the advertised one).
    pub port: u16,
    /// Header support.
    pub headers: bool,
    /// Route authentication required.
    #[serde(skip_serializing_if = "is_false")]
    pub auth_required: bool,
    /// Route TLS (every route connection starts with the handshake).
    #[serde(skip_serializing_if = "is_false")]
    pub tls_required: bool,
    /// Peers' certificates are verified (always, with route TLS).
    #[serde(skip_serializing_if = "is_false")]
    pub tls_verify: bool,
    /// Route permissions' `import` (what this server asks peers for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<SubjectPermission>,
    /// Route permissions' `export` (what peers may ask this server for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<SubjectPermission>,
    /// Largest payload.
    pub max_payload: usize,
    /// Per-connection nonce (unused by routes).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub nonce: String,
    /// `nats-route://host:port/` to dial this server at (gossip).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// The cluster name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// The cluster name was generated.
    #[serde(skip_serializing_if = "is_false")]
    pub cluster_dynamic: bool,
    /// The server's client URLs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
    /// Compression: the configured mode in the first INFO, the agreed one
    /// (or `s2_auto`) in the INFOs that negotiate it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub compression: String,
    /// Lame duck mode.
    #[serde(skip_serializing_if = "is_false")]
    pub ldm: bool,
    /// Takes leaf connections' messages and interest with their origin
    /// cluster (`LMSG`, `LS+`).
    #[serde(skip_serializing_if = "is_false")]
    pub lnoc: bool,
    /// Takes `LS-` with its origin cluster too (so a peer's interest for
    /// leaf clusters is keyed by origin on both sides).
    #[serde(skip_serializing_if = "is_false")]
    pub lnocu: bool,
    /// Gossip forwarding rule (0 default, 1 do not forward, 2 forward).
    #[serde(skip_serializing_if = "is_zero")]
    pub gossip_mode: u8,
    /// The sender's pool size (absent: it does not pool).
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub route_pool_size: i32,
    /// The pool index the dialer chose for this connection.
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub route_pool_idx: i32,
    /// Set on a connection the dialer dedicates to one account.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub route_account: String,
}

/// One direction of route permissions as nats-server writes it in INFO.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SubjectPermission {
    /// Allowed subjects (none listed: all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Denied subjects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// The CONNECT a dialing server sends first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RouteConnect {
    /// Always true.
    pub echo: bool,
    /// Always false.
    pub verbose: bool,
    /// Always false.
    pub pedantic: bool,
    /// Route user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Route password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    /// TLS in use.
    pub tls_required: bool,
    /// Header support.
    pub headers: bool,
    /// The dialing server's id.
    pub name: String,
    /// Its cluster name.
    pub cluster: String,
    /// Its cluster name was generated.
    #[serde(skip_serializing_if = "is_false")]
    pub cluster_dynamic: bool,
    /// Takes leaf messages with their origin (`LMSG`).
    #[serde(skip_serializing_if = "is_false")]
    pub lnoc: bool,
    /// Set by NATS clients only: a client dialed the route port.
    #[serde(skip_serializing)]
    pub lang: Option<String>,
    /// Set by gateways only.
    #[serde(skip_serializing)]
    pub gateway: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

impl RouteInfo {
    /// The JSON text.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("RouteInfo always serializes")
    }

    /// Where to dial the server: its `ip` URL, else `host:port`.
    pub fn dial_url(&self) -> String {
        if !self.ip.is_empty() {
            return self.ip.clone();
        }
        format!("nats-route://{}:{}/", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nats_server_info_and_writes_pool_fields_when_set() {
        let theirs = br#"{"server_id":"NCZ","server_name":"A","version":"2.15.1","proto":3,"go":"go1.27.2","host":"127.0.0.1","port":16002,"headers":true,"max_payload":1048576,"nonce":"LRh","cluster":"c1","connect_urls":["127.0.0.1:16001"],"compression":"accept","lnoc":true,"lnocu":true,"ln":true,"route_pool_size":3}"#;
        let i: RouteInfo = serde_json::from_slice(theirs).unwrap();
        assert_eq!((i.port, i.route_pool_size, &i.cluster[..]), (16002, 3, "c1"));
        assert_eq!(i.dial_url(), "nats-route://127.0.0.1:16002/");
        let ours = String::from_utf8(i.to_json()).unwrap();
        assert!(
            ours.contains(r#""route_pool_size":3"#) && ours.contains(r#""lnoc":true"#),
            "{ours}"
        );
        assert!(ours.contains(r#""lnocu":true"#), "LS- names its origin: {ours}");
        assert!(
            !ours.contains("route_pool_idx") && !ours.contains("route_account"),
            "{ours}"
        );
        let none = RouteInfo::default();
        assert!(!String::from_utf8(none.to_json()).unwrap().contains("route_pool"));
        let c: RouteConnect =
            serde_json::from_slice(br#"{"echo":true,"name":"N","cluster":"c1","lang":"go"}"#).unwrap();
        assert_eq!(c.lang.as_deref(), Some("go"));
    }
}
