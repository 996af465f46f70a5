//! What the server says about a client when it stamps a service request
//! (`Nats-Request-Info`) or reports a request's latency: nats-server's
//! `ClientInfo`, from what the host recorded at CONNECT and the round
//! trip time the session measured.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::ShardCore;
use crate::ids::{ConnId, LinkKind};

/// The header nats-server stamps on requests through a service import.
pub const REQUEST_INFO: &str = "Nats-Request-Info";

/// What is known of a client from its CONNECT on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientDetail {
    /// When it connected (RFC 3339).
    pub start: String,
    /// Its address.
    pub host: String,
    /// Its account's name.
    pub account: String,
    /// The user it authenticated as.
    pub user: String,
    /// CONNECT `name`.
    pub name: String,
    /// CONNECT `lang`.
    pub lang: String,
    /// CONNECT `version`.
    pub version: String,
    /// The user JWT (operator mode).
    pub jwt: String,
    /// `Client` or `Leafnode`.
    pub kind: &'static str,
    /// `nats`, `websocket` (none for a leaf connection).
    pub client_type: &'static str,
}

/// nats-server's `ClientInfo`, in its field order, empty fields left out.
#[derive(Serialize)]
struct ClientInfoDoc<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    start: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    host: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    id: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    acc: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    user: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    lang: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    ver: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    rtt: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    server: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    cluster: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    jwt: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    client_type: &'a str,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ShardCore {
    /// Records what `cid`'s CONNECT said of it.
    pub fn set_conn_detail(&mut self, cid: ConnId, detail: Arc<ClientDetail>) {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.detail = Some(detail);
        }
    }

    /// Records `cid`'s latest round trip time.
    pub fn set_conn_rtt(&mut self, cid: ConnId, rtt: Duration) {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.rtt = rtt;
        }
    }

    /// A client's round trip time (zero before it is known).
    pub(super) fn conn_rtt(&self, cid: ConnId) -> Duration {
        self.conns.get(&cid).map_or(Duration::ZERO, |c| c.rtt)
    }

    /// Names this server in detailed client information.
    pub fn set_server_name(&mut self, name: &str) {
        self.server_name = name.into();
        self.server_hash = super::latency::server_hash(name);
    }

    /// nats-server's `ClientInfo` of local client (or leaf connection)
    /// `cid` as JSON: its account and round trip time, and with
    /// `detailed` all else (as a `share` import or a responder is
    /// described). `None` for other links.
    pub(super) fn client_info_json(&self, cid: ConnId, detailed: bool) -> Option<Vec<u8>> {
        let c = self.conns.get(&cid)?;
        if !matches!(c.link, LinkKind::Client | LinkKind::Leaf) {
            return None;
        }
        let empty = ClientDetail::default();
        let d = c.detail.as_deref().unwrap_or(&empty);
        let cluster = self.cfg.cluster_name.as_deref().unwrap_or_default();
        let doc = ClientInfoDoc {
            start: if detailed { &d.start } else { "" },
            host: if detailed { &d.host } else { "" },
            id: if detailed { cid.0 } else { 0 },
            acc: &d.account,
            user: if detailed { &d.user } else { "" },
            name: if detailed { &d.name } else { "" },
            lang: if detailed { &d.lang } else { "" },
            ver: if detailed { &d.version } else { "" },
            rtt: c.rtt.as_nanos() as u64,
            server: if detailed { &self.server_name } else { "" },
            cluster: if detailed { cluster } else { "" },
            jwt: if detailed { &d.jwt } else { "" },
            kind: if detailed { d.kind } else { "" },
            client_type: if detailed { d.client_type } else { "" },
        };
        serde_json::to_vec(&doc).ok()
    }
}
