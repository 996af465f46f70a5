//! What the routing core does for leaf node links, beside what every link
//! gets. A leaf connection is bound to one account and is told, as
//! `LS+`/`LS-`, that account's interest on this server as nats-server
//! tells it: a leaf connection this server is the hub of hears all of it
//! (clients, routes, other leaf nodes) but its own and that of leaf
//! connections of its own remote cluster; a hub this server is a leaf of
//! hears only this server's own interest (clients, the internal client,
//! leaf nodes it is the hub of), never what came over routes or from
//! another hub, except loop-detection subjects. Counts are kept on every
//! shard from every replica change (leaf connections' clusters and roles
//! are broadcast like interest), so a leaf connection registering on any
//! shard gets the whole of it. Messages to a leaf go as one `LMSG` per
//! connection per message, with the queue groups picked for it (through
//! the same per-message batching as routes); a message from a leaf
//! connection never goes to one of the same remote cluster, nor from a
//! hub to another hub.

use rustc_hash::FxHashMap;

use super::batch::InterestChange;
use super::imports::Imports;
use super::{Msg, Routed, ShardCore};
use std::sync::Arc;

use crate::auth::perms::{ConnPermissions, Permissions, SubjectRule};
use crate::ids::{AccountId, ConnId, LinkKind};
use crate::proto::encode;

type Key = (Box<[u8]>, Option<Box<[u8]>>);

/// The prefix of loop-detection subjects, which pass between hubs.
const LDS: &[u8] = b"$LDS.";

/// One leaf connection on this shard: its account, what it holds itself,
/// and what it has been told.
#[derive(Debug)]
struct LeafLink {
    cid: ConnId,
    account: AccountId,
    /// The other side's cluster (interned).
    cluster: Option<u32>,
    /// This server is the leaf on it (the peer is a hub).
    spoke: bool,
    /// Not told interest held by other leaf connections.
    isolated: bool,
    own: FxHashMap<Key, u32>,
    told: FxHashMap<Key, u32>,
    /// The interest it may be told (a spoke's `deny_imports`: it does not
    /// ask for those; a hub's leaf user's publish permissions: it could
    /// not send those).
    tellable: Option<SubjectRule>,
}

/// How a leaf connection is set up when it registers.
#[derive(Debug, Default)]
pub struct LeafSetup<'a> {
    /// The other side's cluster name.
    pub cluster: Option<&'a str>,
    /// This server is the leaf on it (the peer is a hub).
    pub spoke: bool,
    /// Not told interest held by other leaf connections
    /// (`isolate_leafnode_interest`, a leaf's `request_isolation`).
    pub isolated: bool,
    /// The interest it may be told (deny_imports, a leaf user's publish
    /// permissions).
    pub tellable: Option<SubjectRule>,
    /// What it is sent and may subscribe to.
    pub perms: Option<Arc<Permissions>>,
}

/// A leaf connection on any shard, as the others know it.
#[derive(Debug, Clone, Copy)]
struct LeafConn {
    cluster: Option<u32>,
    spoke: bool,
}

/// The core's leaf node state (empty while leaf nodes are off).
#[derive(Debug, Default)]
pub(super) struct LeafState {
    /// Whether interest is counted for leaf connections.
    enabled: bool,
    /// Every account's interest on this server, whoever holds it.
    total: FxHashMap<(AccountId, Key), u32>,
    /// The part of it held by routes.
    routed: FxHashMap<(AccountId, Key), u32>,
    /// The part held by this server's own side: clients, the internal
    /// client, leaf connections it is the hub of (what its hubs hear).
    local: FxHashMap<(AccountId, Key), u32>,
    /// The part held by leaf connections this server is the hub of.
    hub_side: FxHashMap<(AccountId, Key), u32>,
    /// The part held by leaf connections to this server's hubs.
    spoke_side: FxHashMap<(AccountId, Key), u32>,
    /// The part held by leaf connections of each remote cluster.
    by_cluster: FxHashMap<(AccountId, Key, u32), u32>,
    /// Every leaf connection, on any shard.
    conns: FxHashMap<ConnId, LeafConn>,
    cluster_ids: FxHashMap<Box<str>, u32>,
    /// The names behind `cluster_ids`, by id (shared: a leaf's message
    /// takes its cluster's name along without copying it).
    cluster_names: Vec<std::rc::Rc<str>>,
    links: Vec<LeafLink>,
}

impl LeafState {
    fn get(map: &FxHashMap<(AccountId, Key), u32>, account: AccountId, key: &Key) -> u32 {
        map.get(&(account, key.clone())).copied().unwrap_or(0)
    }

    /// The weight `link` must hear for `key` now.
    fn weight_for(&self, link: &LeafLink, key: &Key) -> u32 {
        let a = link.account;
        let total = Self::get(&self.total, a, key);
        if link.spoke {
            if key.0.starts_with(LDS) {
                // Loop detection passes between hubs (not over routes).
                let held = Self::get(&self.routed, a, key) + link.own.get(key).copied().unwrap_or(0);
                return total.saturating_sub(held);
            }
            let local = Self::get(&self.local, a, key);
            if link.isolated {
                return local.saturating_sub(Self::get(&self.hub_side, a, key));
            }
            return local;
        }
        if link.isolated {
            let leaves = Self::get(&self.hub_side, a, key) + Self::get(&self.spoke_side, a, key);
            return total.saturating_sub(leaves);
        }
        let held = match link.cluster {
            Some(c) => self.by_cluster.get(&(a, key.clone(), c)).copied().unwrap_or(0),
            None => link.own.get(key).copied().unwrap_or(0),
        };
        total.saturating_sub(held)
    }
}

impl ShardCore {
    /// Turns interest counting for leaf connections on (at start, when
    /// leaf nodes are configured, before any subscription exists).
    pub fn set_leafing(&mut self) {
        self.leafs.enabled = true;
    }

    /// Registers leaf connection `cid` (already added as a `Leaf` link)
    /// bound to `account`, and tells it the account's interest as its
    /// role and `setup` say.
    pub fn add_leaf(&mut self, cid: ConnId, account: AccountId, setup: LeafSetup<'_>) {
        let LeafSetup {
            cluster,
            spoke,
            isolated,
            tellable,
            perms,
        } = setup;
        self.index_mut(account);
        if let Some(c) = self.conns.get_mut(&cid) {
            c.account = account;
            c.perms = perms.map(ConnPermissions::new);
        }
        let cluster: Option<Box<str>> = cluster.filter(|c| !c.is_empty()).map(Into::into);
        self.note_leaf_conn(cid, cluster.as_deref(), spoke);
        self.broadcast(|| InterestChange::LeafConn {
            conn: cid,
            cluster: cluster.clone(),
            spoke,
        });
        let mut link = LeafLink {
            cid,
            account,
            cluster: self.leafs.conns.get(&cid).and_then(|c| c.cluster),
            spoke,
            isolated,
            own: FxHashMap::default(),
            told: FxHashMap::default(),
            tellable,
        };
        let mut out = Vec::new();
        let keys: Vec<Key> = self
            .leafs
            .total
            .keys()
            .filter(|(acc, key)| *acc == account && !hidden(&link.tellable, &key.0))
            .map(|(_, key)| key.clone())
            .collect();
        for key in keys {
            let w = self.leafs.weight_for(&link, &key);
            tell(&mut out, &mut link.told, &key, w);
        }
        self.leafs.links.push(link);
        self.send_raw(cid, &out);
    }

    /// The subjects of a connection's subscriptions (leafz).
    pub fn subjects_of(&self, cid: ConnId) -> Vec<String> {
        let Some(c) = self.conns.get(&cid) else {
            return Vec::new();
        };
        c.sids
            .values()
            .filter_map(|k| self.subs.get(k))
            .map(|s| String::from_utf8_lossy(&s.subject).into_owned())
            .collect()
    }

    /// Forgets a leaf connection's interest bookkeeping (its subscriptions
    /// go with the connection).
    pub(super) fn remove_leaf(&mut self, cid: ConnId) {
        let had = self.leafs.links.iter().any(|l| l.cid == cid);
        self.leafs.links.retain(|l| l.cid != cid);
        if had {
            self.forget_leaf_conn(cid);
            self.broadcast(|| InterestChange::LeafGone { conn: cid });
        }
    }

    /// Notes a leaf connection (on any shard): its remote cluster and role.
    pub(super) fn note_leaf_conn(&mut self, conn: ConnId, cluster: Option<&str>, spoke: bool) {
        let st = &mut self.leafs;
        let cluster = cluster.map(|name| {
            let next = st.cluster_ids.len() as u32;
            *st.cluster_ids.entry(name.into()).or_insert_with(|| {
                st.cluster_names.push(name.into());
                next
            })
        });
        st.conns.insert(conn, LeafConn { cluster, spoke });
    }

    /// The remote cluster of leaf connection `conn` (on any shard), as
    /// routes are told it: nats-server's subscription origin.
    pub(super) fn leaf_origin(&self, conn: ConnId) -> Option<Box<[u8]>> {
        let id = self.leafs.conns.get(&conn)?.cluster?;
        self.leafs.cluster_names.get(id as usize).map(|n| n.as_bytes().into())
    }

    /// Forgets a leaf connection that is gone.
    pub(super) fn forget_leaf_conn(&mut self, conn: ConnId) {
        self.leafs.conns.remove(&conn);
    }

    /// The id of a leaf remote cluster name, if a leaf connection of it
    /// was ever seen here.
    pub(super) fn leaf_cluster_id(&self, name: &[u8]) -> Option<u32> {
        let name = std::str::from_utf8(name).ok()?;
        self.leafs.cluster_ids.get(name).copied()
    }

    /// Whether `conn` is a leaf connection of remote cluster `cluster`.
    #[inline]
    pub(super) fn leaf_of_cluster(&self, conn: ConnId, cluster: u32) -> bool {
        self.leafs.conns.get(&conn).is_some_and(|c| c.cluster == Some(cluster))
    }

    /// Whether `conn` is a leaf connection to a hub of this server.
    #[inline]
    pub(super) fn is_hub_link(&self, conn: ConnId) -> bool {
        self.leafs.conns.get(&conn).is_some_and(|c| c.spoke)
    }

    /// Whether a message from leaf connection `from` must not go to leaf
    /// connection `to`: both of the same remote cluster (its nodes are
    /// connected to each other, it gets the message there), or both hubs
    /// of this server (a hub's traffic is not passed to another hub).
    #[inline]
    pub(super) fn leaf_to_leaf_blocked(&self, from: ConnId, to: ConnId) -> bool {
        let c = &self.leafs.conns;
        match (c.get(&from), c.get(&to)) {
            (Some(a), Some(b)) => (a.spoke && b.spoke) || (a.cluster.is_some() && a.cluster == b.cluster),
            _ => false,
        }
    }

    /// Adds a subscription a leaf connection announced (`LS+`), under the
    /// sid `sid` (its key for `LS-`).
    pub fn subscribe_leaf(&mut self, cid: ConnId, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) {
        let _ = self.subscribe_in(cid, None, subject, queue, sid);
    }

    /// Routes a message a leaf connection sent (`LMSG`/`HMSG`) in its
    /// account: to this server's clients, routes and other leaf
    /// connections, never back to it; to the queue groups in `queues`
    /// only (none when empty: the sending server picked for its groups).
    #[allow(clippy::too_many_arguments)]
    pub fn publish_leaf(
        &mut self,
        from: ConnId,
        subject: &[u8],
        reply: Option<&[u8]>,
        queues: &[&[u8]],
        header_len: Option<usize>,
        message: &[u8],
    ) -> Routed {
        let Some(account) = self.conns.get(&from).map(|c| c.account) else {
            return Routed::NoInterest;
        };
        // A leaf connection's messages are mapped here, as a client's.
        let original = subject;
        let mapped = self.map_in(account, subject);
        let subject = mapped.as_deref().unwrap_or(subject);
        // Its remote cluster goes with it (routes are told as `LMSG`); a
        // shared name, so no allocation per message.
        let cluster = self
            .leafs
            .conns
            .get(&from)
            .and_then(|c| c.cluster)
            .and_then(|id| self.leafs.cluster_names.get(id as usize))
            .cloned();
        let msg = Msg {
            subject,
            reply,
            header_len,
            message,
            queues: Some(queues),
            origin_cluster: cluster.as_deref().map(str::as_bytes),
            responder: None,
        };
        if header_len.is_some() {
            // Traced from the subject it came with, then its mapping.
            if !self.trace_from_server(
                from,
                account,
                &Msg {
                    subject: original,
                    ..msg
                },
            ) {
                return Routed::NoInterest;
            }
            if let (Some(to), true) = (&mapped, self.is_tracing()) {
                self.trace_mapped(to);
            }
        }
        self.publish_from_server(from, LinkKind::Leaf, account, &msg)
    }

    /// Counts the sources of the accounts' subject mappings as this
    /// server's interest, so that leaf connections send what a mapping
    /// here would take even when only its destination has subscribers
    /// (as nats-server tells its leaf connections).
    pub(super) fn note_mapping_sources(&mut self, old: &Imports, new: &Imports) {
        if !self.leafs.enabled {
            return;
        }
        let (before, after) = (old.mapping_sources(), new.mapping_sources());
        for (account, source) in before.iter().filter(|x| !after.contains(x)) {
            self.note_leaf_interest(*account, source, None, LinkKind::System, None, false);
        }
        for (account, source) in after.iter().filter(|x| !before.contains(x)) {
            self.note_leaf_interest(*account, source, None, LinkKind::System, None, true);
        }
    }

    /// Counts an interest change in `account` held by `origin` (the
    /// connection, on any shard) of kind `link`, and tells each leaf
    /// connection of the account what changed for it.
    pub(super) fn note_leaf_interest(
        &mut self,
        account: AccountId,
        subject: &[u8],
        queue: Option<&[u8]>,
        link: LinkKind,
        origin: Option<ConnId>,
        add: bool,
    ) {
        let st = &mut self.leafs;
        if !st.enabled {
            return;
        }
        let key: Key = (subject.into(), queue.map(Into::into));
        let holder = origin.and_then(|o| st.conns.get(&o)).copied();
        bump(&mut st.total, (account, key.clone()), add);
        match link {
            LinkKind::Route => {
                bump(&mut st.routed, (account, key.clone()), add);
            }
            LinkKind::Leaf if holder.is_some_and(|h| h.spoke) => {
                bump(&mut st.spoke_side, (account, key.clone()), add);
            }
            LinkKind::Leaf => {
                bump(&mut st.hub_side, (account, key.clone()), add);
                bump(&mut st.local, (account, key.clone()), add);
            }
            _ => {
                bump(&mut st.local, (account, key.clone()), add);
            }
        }
        if let Some(c) = holder.and_then(|h| h.cluster) {
            bump(&mut st.by_cluster, (account, key.clone(), c), add);
        }
        let mut sends: Vec<(ConnId, Vec<u8>)> = Vec::new();
        let mut links = std::mem::take(&mut st.links);
        for l in links
            .iter_mut()
            .filter(|l| l.account == account && !hidden(&l.tellable, subject))
        {
            if Some(l.cid) == origin {
                bump(&mut l.own, key.clone(), add);
            }
            let weight = st.weight_for(l, &key);
            let mut out = Vec::new();
            tell(&mut out, &mut l.told, &key, weight);
            if !out.is_empty() {
                sends.push((l.cid, out));
            }
        }
        st.links = links;
        for (cid, out) in sends {
            self.send_raw(cid, &out);
        }
    }
}

/// Counts one more or one less under `key`; returns the count now.
fn bump<K: std::hash::Hash + Eq + Clone>(map: &mut FxHashMap<K, u32>, key: K, add: bool) -> u32 {
    let n = map.entry(key.clone()).or_insert(0);
    *n = if add { *n + 1 } else { n.saturating_sub(1) };
    let v = *n;
    if v == 0 {
        map.remove(&key);
    }
    v
}

/// Whether a leaf connection may not be told of interest in `subject`.
fn hidden(tellable: &Option<SubjectRule>, subject: &[u8]) -> bool {
    tellable.as_ref().is_some_and(|r| !r.admits(subject))
}

/// Appends what a leaf connection must hear for `key` to have `weight`
/// now, given what it was told: a plain subject on its first and last
/// subscription, a queue group's weight on every change.
fn tell(out: &mut Vec<u8>, told: &mut FxHashMap<Key, u32>, key: &Key, weight: u32) {
    let before = told.get(key).copied().unwrap_or(0);
    if before == weight {
        return;
    }
    let (subject, queue) = (&key.0, key.1.as_deref());
    if weight == 0 {
        told.remove(key);
        encode::leaf_unsub(out, subject, queue);
        return;
    }
    told.insert(key.clone(), weight);
    match queue {
        Some(q) => encode::leaf_sub(out, subject, Some((q, weight))),
        None if before == 0 => encode::leaf_sub(out, subject, None),
        None => {}
    }
}
