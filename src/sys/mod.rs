//! The system account's documents: the `server` block, request filters,
//! the response envelope, client info for events, and the endpoint bodies
//! shared by `$SYS` services and HTTP monitoring (`endpoints`), so the two
//! cannot drift. Executor-free: the shards and the monitor thread call in.

pub mod account_detail;
pub mod endpoints;
pub mod go_query;
pub mod remote_servers;
pub mod services;

use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::control::Shared;
use crate::proto::info::COMPAT_VERSION;
use crate::timefmt::rfc3339;

/// nats-server's `server` block in system events and replies.
#[derive(Debug, Clone, Serialize)]
pub struct ServerBlock {
    /// Server name.
    pub name: String,
    /// Listen host.
    pub host: String,
    /// Server id.
    pub id: String,
    /// Cluster name, in a cluster.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// Version.
    pub ver: String,
    /// `server_tags`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `server_metadata`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// JetStream enabled (never, in petrel).
    pub jetstream: bool,
    /// Capability bits.
    pub flags: u64,
    /// Per-server counter of system messages.
    pub seq: u64,
    /// RFC 3339 time.
    pub time: String,
}

/// The `server` block for the next system message.
pub fn server_block(shared: &Shared) -> ServerBlock {
    let (opts, info) = shared.current();
    ServerBlock {
        name: info.server_name,
        host: info.host,
        id: info.server_id,
        cluster: cluster_name(shared),
        ver: COMPAT_VERSION.to_string(),
        tags: opts.server_tags.clone(),
        metadata: opts.server_metadata.clone(),
        jetstream: false,
        flags: 0,
        seq: next_seq(shared),
        time: rfc3339(SystemTime::now()),
    }
}

/// The next `seq` of this server's server blocks. Peers check that the
/// heartbeats and account connection counts of a server come with a rising
/// `seq` (nats-server logs "Received out of order remote server update"
/// otherwise), so events take theirs when they are sent ([`stamp_seq`]).
pub fn next_seq(shared: &Shared) -> u64 {
    shared.sys_seq.fetch_add(1, Relaxed) + 1
}

/// Gives `doc` (a document with a `server` block, or a server block itself,
/// as SHUTDOWN sends) `seq` (from [`next_seq`] where it goes out, so the
/// order of the `seq`s is the order of sending). Others are left alone.
pub fn stamp_seq(doc: &mut Value, seq: u64) {
    let block = match doc.get_mut("server") {
        Some(b) => b,
        None => doc,
    };
    if let Some(old) = block.as_object_mut().and_then(|b| b.get_mut("seq")) {
        *old = Value::from(seq);
    }
}

/// nats-server's `EventFilterOptions`, the filter a PING-style request may
/// carry.
#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    /// Server name (substring unless `exact_match`).
    #[serde(default)]
    pub server_name: String,
    /// Cluster name.
    #[serde(default)]
    pub cluster: String,
    /// Host.
    #[serde(default)]
    pub host: String,
    /// Server tags; all must match.
    #[serde(default)]
    pub tags: Vec<String>,
    /// JetStream domain.
    #[serde(default)]
    pub domain: String,
    /// Exact matching of name, cluster and host.
    #[serde(default)]
    pub exact_match: bool,
}

impl Filter {
    /// Whether this server is selected: name, host and cluster match
    /// (or contain the filter's, without `exact_match`), and it has every
    /// tag asked for (tags compare lower-cased, as nats-server's). petrel has no JetStream domain, so a filter naming
    /// one selects nothing.
    pub fn selects(&self, shared: &Shared) -> bool {
        let (opts, info) = shared.current();
        let hit = |want: &str, have: &str| {
            want.is_empty()
                || if self.exact_match {
                    want == have
                } else {
                    have.contains(want)
                }
        };
        hit(&self.server_name, &info.server_name)
            && hit(&self.host, &info.host)
            && hit(&self.cluster, &cluster_name(shared))
            && self
                .tags
                .iter()
                .all(|t| opts.server_tags.contains(&t.trim().to_lowercase()))
            && self.domain.is_empty()
    }
}

/// The cluster's name (configured or learned), empty outside a cluster.
pub fn cluster_name(shared: &Shared) -> String {
    shared.cluster.get().and_then(|c| c.name()).unwrap_or_default()
}

/// A `ServerAPIResponse`: `{"server":..,"data":..}`.
pub fn envelope(shared: &Shared, data: Value) -> Value {
    json!({"server": server_block(shared), "data": data})
}

/// A `ServerAPIResponse` error: `{"server":..,"error":{"code","description"}}`.
pub fn envelope_error(shared: &Shared, code: u16, description: &str) -> Value {
    json!({"server": server_block(shared), "error": {"code": code, "description": description}})
}

/// A monitoring service that could not build its document: nats-server's
/// 500 with `data` null (its handler returned a typed nil with the error).
pub fn envelope_failed(shared: &Shared, description: &str) -> Value {
    json!({"server": server_block(shared), "data": null, "error": {"code": 500, "description": description}})
}

/// What events say about a client (`ClientInfo`, all fields omitempty).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientInfo {
    /// Connection start.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub start: String,
    /// Connection end (disconnect events).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stop: String,
    /// Client IP.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Connection id.
    pub id: u64,
    /// Account.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub acc: String,
    /// User.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// CONNECT name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Client language.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub lang: String,
    /// Client version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ver: String,
    /// Round-trip time, nanoseconds.
    #[serde(skip_serializing_if = "is_zero")]
    pub rtt: u64,
    /// The server's name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub server: String,
    /// The user JWT (operator mode).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jwt: String,
    /// Connection kind.
    pub kind: &'static str,
    /// Client type (none for leaf connections).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub client_type: &'static str,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Message and byte counts.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DataStats {
    /// Messages.
    pub msgs: u64,
    /// Payload bytes.
    pub bytes: u64,
}

/// A unique-enough event id (nats-server uses a NUID: 22 base62 characters).
pub fn event_id() -> String {
    (0..22)
        .map(|_| crate::ids::BASE62[fastrand::usize(..62)] as char)
        .collect()
}

/// `$SYS.ACCOUNT.<acc>.CONNECT` body.
pub fn connect_event(shared: &Shared, client: &ClientInfo) -> Value {
    json!({
        "type": "io.nats.server.advisory.v1.client_connect",
        "id": event_id(),
        "timestamp": rfc3339(SystemTime::now()),
        "server": server_block(shared),
        "client": client,
    })
}

/// `$SYS.ACCOUNT.<acc>.DISCONNECT` (and `CLIENT.AUTH.ERR`) body. `sent`
/// is what the client sent, `received` what it was delivered.
pub fn disconnect_event(
    shared: &Shared,
    client: &ClientInfo,
    sent: DataStats,
    received: DataStats,
    reason: &str,
) -> Value {
    json!({
        "type": "io.nats.server.advisory.v1.client_disconnect",
        "id": event_id(),
        "timestamp": rfc3339(SystemTime::now()),
        "server": server_block(shared),
        "client": client,
        "sent": sent,
        "received": received,
        "reason": reason,
    })
}

/// A rule as nats-server prints permissions: `{"allow":[..],"deny":[..]}`.
fn rule_json(r: &crate::auth::perms::SubjectRule) -> Value {
    let mut v = json!({});
    if let Some(a) = &r.allow {
        v["allow"] = json!(a.entries());
    }
    if let Some(d) = &r.deny {
        v["deny"] = json!(d.entries());
    }
    v
}

/// The `$SYS.REQ.USER.INFO` reply for a connected client.
pub fn user_info(shared: &Shared, id: &crate::auth::verify::Identity) -> Value {
    let mut data = json!({
        "user": id.user(),
        "account": id.account().name,
    });
    if !id.account().name.starts_with('A') || id.account().name.len() != 56 {
        data["account_name"] = json!(id.account().name);
    }
    if let Some(p) = id.permissions() {
        let mut perms = json!({"publish": rule_json(&p.publish), "subscribe": rule_json(&p.subscribe)});
        if let Some(r) = p.response {
            perms["responses"] = json!({"max": r.max, "ttl": r.expires.as_nanos() as u64});
        }
        data["permissions"] = perms;
    }
    if let Some(e) = id.expires() {
        let left = e.duration_since(SystemTime::now()).unwrap_or_default();
        data["expires"] = json!(left.as_nanos() as u64);
    }
    envelope(shared, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_block_takes_the_seq_given_and_nothing_else_does() {
        let mut event = json!({"type": "x", "server": {"id": "N", "seq": 3}, "data": {"seq": 9}});
        stamp_seq(&mut event, 7);
        assert_eq!(event["server"]["seq"], 7);
        assert_eq!(event["data"]["seq"], 9);
        let mut block = json!({"id": "N", "seq": 3});
        stamp_seq(&mut block, 8);
        assert_eq!(block["seq"], 8);
        let mut other = json!({"type": "x", "count": 1});
        stamp_seq(&mut other, 9);
        assert_eq!(other, json!({"type": "x", "count": 1}));
    }
}
