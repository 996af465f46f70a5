//! A shard's table of its route connections (kept apart from the route
//! tasks so the shard state can hold it without importing them).

use std::cell::RefCell;
use std::sync::Arc;

use super::transport::Stream;
use crate::ids::ConnId;
use crate::options::RoutePermissions;

/// One route connection on a shard: the peer it registered as, the
/// configured URL it was dialed for, and its socket (shut when the core
/// cuts the route off).
type RouteEntry = (Option<String>, Option<String>, Stream);

/// A shard's route connections: the peer each registered as, and the
/// configured URL it was dialed for.
pub struct Routes {
    pub(super) peers: RefCell<rustc_hash::FxHashMap<ConnId, RouteEntry>>,
    /// The route permissions this shard applies. A reload changes them
    /// from the shard's poll loop, together with the interest resync, so
    /// what was announced and what is filtered never disagree.
    pub(super) perms: RefCell<Option<Arc<RoutePermissions>>>,
}

impl Routes {
    /// A table applying `perms`.
    pub fn new(perms: Option<RoutePermissions>) -> Routes {
        Routes {
            peers: Default::default(),
            perms: RefCell::new(perms.map(Arc::new)),
        }
    }

    /// The route permissions in force on this shard.
    pub(super) fn perms(&self) -> Option<Arc<RoutePermissions>> {
        self.perms.borrow().clone()
    }

    pub(super) fn registered(&self) -> Vec<(ConnId, String)> {
        self.peers
            .borrow()
            .iter()
            .filter_map(|(c, (p, _, _))| p.clone().map(|p| (*c, p)))
            .collect()
    }

    /// Every route connection on the shard.
    pub fn cids(&self) -> Vec<ConnId> {
        self.peers.borrow().keys().copied().collect()
    }

    /// The socket of a route connection on the shard.
    pub(super) fn stream(&self, cid: ConnId) -> Option<Stream> {
        self.peers.borrow().get(&cid).map(|e| e.2.clone())
    }

    pub(super) fn set_peer(&self, cid: ConnId, peer: String) {
        if let Some(e) = self.peers.borrow_mut().get_mut(&cid) {
            e.0 = Some(peer);
        }
    }
}
