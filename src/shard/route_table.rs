//! A shard's table of its route connections (kept apart from the route
//! tasks so the shard state can hold it without importing them).

use std::cell::RefCell;
use std::sync::Arc;

use super::transport::Stream;
use crate::cluster::{RoutePool, RouteScope};
use crate::ids::ConnId;
use crate::options::RoutePermissions;

/// One route connection on a shard.
pub(super) struct RouteEntry {
    /// The peer it registered as, and which of its accounts it carries.
    pub(super) peer: Option<(String, RouteScope)>,
    /// The configured URL it was dialed for.
    pub(super) configured: Option<String>,
    /// Its socket (shut when the core cuts the route off).
    pub(super) stream: Stream,
}

/// A shard's route connections, the route permissions it applies and
/// how it spreads accounts over each peer's connections.
pub struct Routes {
    pub(super) peers: RefCell<rustc_hash::FxHashMap<ConnId, RouteEntry>>,
    /// The route permissions this shard applies. A reload changes them
    /// from the shard's poll loop, together with the interest resync, so
    /// what was announced and what is filtered never disagree.
    pub(super) perms: RefCell<Option<Arc<RoutePermissions>>>,
    /// The pool in force on this shard (changed with the routes it
    /// closes, from the poll loop, on a reload).
    pub(super) pool: RefCell<Arc<RoutePool>>,
}

impl Routes {
    /// A table applying `perms` and spreading accounts by `pool`.
    pub fn new(perms: Option<RoutePermissions>, pool: RoutePool) -> Routes {
        Routes {
            peers: Default::default(),
            perms: RefCell::new(perms.map(Arc::new)),
            pool: RefCell::new(Arc::new(pool)),
        }
    }

    /// The route permissions in force on this shard.
    pub(super) fn perms(&self) -> Option<Arc<RoutePermissions>> {
        self.perms.borrow().clone()
    }

    /// The pool in force on this shard.
    pub(super) fn pool(&self) -> Arc<RoutePool> {
        self.pool.borrow().clone()
    }

    /// Registered routes: connection, peer id, scope.
    pub(super) fn registered(&self) -> Vec<(ConnId, String, RouteScope)> {
        self.peers
            .borrow()
            .iter()
            .filter_map(|(c, e)| e.peer.clone().map(|(p, s)| (*c, p, s)))
            .collect()
    }

    /// The scope of a registered route on this shard.
    pub(super) fn scope(&self, cid: ConnId) -> Option<RouteScope> {
        self.peers
            .borrow()
            .get(&cid)
            .and_then(|e| e.peer.as_ref().map(|p| p.1.clone()))
    }

    /// Every route connection on the shard.
    pub fn cids(&self) -> Vec<ConnId> {
        self.peers.borrow().keys().copied().collect()
    }

    /// The socket of a route connection on the shard.
    pub(super) fn stream(&self, cid: ConnId) -> Option<Stream> {
        self.peers.borrow().get(&cid).map(|e| e.stream.clone())
    }

    pub(super) fn set_peer(&self, cid: ConnId, peer: String, scope: RouteScope) {
        if let Some(e) = self.peers.borrow_mut().get_mut(&cid) {
            e.peer = Some((peer, scope));
        }
    }
}
