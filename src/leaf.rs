//! Leaf nodes' control plane: the `leafnodes` options in force, this
//! server's loop-detection subject, where the leaf listener is bound, and
//! each shard's leaf connections as monitoring shows them (published by
//! the shards from their poll loops). Never on the publish path.

use std::sync::{Arc, Mutex};

use crate::ids::ShardId;
use crate::options::LeafOptions;

/// Prefix of the subjects leaf nodes detect loops with.
pub const LDS_PREFIX: &str = "$LDS.";

/// One leaf connection as `/leafz` shows it, taken on its shard.
#[derive(Debug, Clone, Default)]
pub struct LeafSnapshot {
    /// Connection id.
    pub cid: u64,
    /// The other server's name.
    pub name: String,
    /// This server dialed it (it is the leaf, the peer the hub).
    pub is_spoke: bool,
    /// The local account it is bound to.
    pub account: String,
    /// Peer address.
    pub ip: String,
    /// Peer port.
    pub port: u16,
    /// Messages and bytes from the peer.
    pub in_msgs: u64,
    /// Bytes from the peer.
    pub in_bytes: u64,
    /// Messages to the peer.
    pub out_msgs: u64,
    /// Bytes to the peer.
    pub out_bytes: u64,
    /// The subjects of the peer's subscriptions here (shared with the
    /// shard's table: publishing a snapshot copies no strings).
    pub subjects: Arc<Vec<String>>,
    /// The last PING's round trip.
    pub rtt: Option<std::time::Duration>,
    /// The compression agreed (empty until known).
    pub compression: &'static str,
}

/// The leaf node registry.
#[derive(Debug)]
pub struct LeafNodes {
    opts: Mutex<LeafOptions>,
    /// `$LDS.<id>`: announced on every leaf connection; hearing it back
    /// means a loop.
    pub lds: String,
    /// Where the leaf listener is bound (`host:port`), if it is.
    pub listen: Mutex<Option<String>>,
    snapshots: Vec<Mutex<Vec<LeafSnapshot>>>,
    /// `leafnodes { tls }`, loaded at start-up.
    tls: Option<Arc<crate::tls::ClientTls>>,
}

impl LeafNodes {
    /// A registry for `opts` over `nshards` shards, with a new random
    /// loop-detection subject (22 characters, as nats-server's); the
    /// hub's TLS certificates are loaded now.
    pub fn new(opts: LeafOptions, nshards: usize) -> Result<LeafNodes, String> {
        let tail: String = (0..22).map(|_| fastrand::alphanumeric()).collect();
        let tls = opts
            .tls
            .as_ref()
            .map(crate::tls::ClientTls::new)
            .transpose()?
            .map(Arc::new);
        Ok(LeafNodes {
            tls,
            opts: Mutex::new(opts),
            lds: format!("{LDS_PREFIX}{tail}"),
            listen: Mutex::new(None),
            snapshots: (0..nshards).map(|_| Mutex::new(Vec::new())).collect(),
        })
    }

    /// The hub's TLS (`leafnodes { tls }`), if any.
    pub fn tls(&self) -> Option<Arc<crate::tls::ClientTls>> {
        self.tls.clone()
    }

    /// The options in force.
    pub fn opts(&self) -> LeafOptions {
        self.opts.lock().expect("leaf lock").clone()
    }

    /// A shard's leaf connections now.
    pub fn publish(&self, shard: ShardId, snaps: Vec<LeafSnapshot>) {
        if let Some(slot) = self.snapshots.get(shard.index()) {
            *slot.lock().expect("leaf lock") = snaps;
        }
    }

    /// Every leaf connection, by connection id.
    pub fn connections(&self) -> Vec<LeafSnapshot> {
        let mut all: Vec<LeafSnapshot> = self
            .snapshots
            .iter()
            .flat_map(|s| s.lock().expect("leaf lock").clone())
            .collect();
        all.sort_by_key(|s| s.cid);
        all
    }
}
