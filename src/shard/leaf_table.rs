//! A shard's table of its leaf node connections (kept apart from the leaf
//! tasks so the shard state can hold it without importing them).

use std::cell::RefCell;

use super::transport::Stream;
use crate::ids::ConnId;

/// One leaf connection on a shard, as monitoring shows it.
pub struct LeafEntry {
    /// The other server's name, once known.
    pub(super) name: String,
    /// This server dialed it (it is the leaf).
    pub(super) is_spoke: bool,
    /// The local account it is bound to, once known.
    pub(super) account: String,
    /// Peer address.
    pub(super) ip: String,
    /// Peer port.
    pub(super) port: u16,
    /// Its socket (shut when the server stops).
    pub(super) stream: Stream,
    /// The last PING's round trip.
    pub(super) rtt: Option<std::time::Duration>,
    /// The compression agreed (`/leafz`), once known.
    pub(super) compression: &'static str,
    /// The subjects of its subscriptions as monitoring last took them,
    /// and whether `LS+`/`LS-` changed them since (taken again only then).
    pub(super) subjects: std::sync::Arc<Vec<String>>,
    pub(super) subjects_stale: bool,
    /// Past its handshake: monitoring lists it from then on, as
    /// nats-server lists a leaf once it has registered it.
    pub(super) registered: bool,
}

/// A shard's leaf connections.
#[derive(Default)]
pub struct Leafs {
    pub(super) conns: RefCell<rustc_hash::FxHashMap<ConnId, LeafEntry>>,
}

impl Leafs {
    /// Every leaf connection on the shard.
    pub fn cids(&self) -> Vec<ConnId> {
        self.conns.borrow().keys().copied().collect()
    }
}
