//! What the routing core does for leaf node links, beside what every link
//! gets. A leaf connection is bound to one account and is told, as
//! `LS+`/`LS-`, all of that account's interest on this server (clients,
//! routes, other leaf nodes) except its own; counts are kept on every
//! shard from every replica change, so a leaf connection registering on
//! any shard gets the whole of it. Messages to a leaf go as one `LMSG` per
//! connection per message, with the queue groups picked for it (through the
//! same per-message batching as routes).

use rustc_hash::FxHashMap;

use super::{Msg, Origin, Routed, ShardCore};
use std::sync::Arc;

use crate::auth::perms::{ConnPermissions, Permissions, SubjectRule};
use crate::ids::{AccountId, ConnId, LinkKind};
use crate::proto::encode;

type Key = (Box<[u8]>, Option<Box<[u8]>>);

/// One leaf connection on this shard: its account, what it holds itself,
/// and what it has been told.
#[derive(Debug)]
struct LeafLink {
    cid: ConnId,
    account: AccountId,
    own: FxHashMap<Key, u32>,
    told: FxHashMap<Key, u32>,
    /// The interest it may be told (a spoke's `deny_imports`: it does not
    /// ask for those; a hub's leaf user's publish permissions: it could
    /// not send those).
    tellable: Option<SubjectRule>,
}

/// The core's leaf node state (empty while leaf nodes are off).
#[derive(Debug, Default)]
pub(super) struct LeafState {
    /// Whether interest is counted for leaf connections.
    enabled: bool,
    /// Every account's interest on this server, whoever holds it.
    total: FxHashMap<(AccountId, Key), u32>,
    links: Vec<LeafLink>,
}

impl ShardCore {
    /// Turns interest counting for leaf connections on (at start, when
    /// leaf nodes are configured, before any subscription exists).
    pub fn set_leafing(&mut self) {
        self.leafs.enabled = true;
    }

    /// Registers leaf connection `cid` (already added as a `Leaf` link)
    /// bound to `account`, and tells it all of the account's interest that
    /// `tellable` admits. `perms` filter what it is sent (subscribe
    /// rules, deny lists included) and what it may subscribe to.
    pub fn add_leaf(
        &mut self,
        cid: ConnId,
        account: AccountId,
        tellable: Option<SubjectRule>,
        perms: Option<Arc<Permissions>>,
    ) {
        self.index_mut(account);
        if let Some(c) = self.conns.get_mut(&cid) {
            c.account = account;
            c.perms = perms.map(ConnPermissions::new);
        }
        let mut link = LeafLink {
            cid,
            account,
            own: FxHashMap::default(),
            told: FxHashMap::default(),
            tellable,
        };
        let mut out = Vec::new();
        for ((acc, key), &n) in &self.leafs.total {
            if *acc == account && n > 0 && !hidden(&link.tellable, &key.0) {
                tell(&mut out, &mut link.told, key, n);
            }
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
        self.leafs.links.retain(|l| l.cid != cid);
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
        let Some(c) = self.conns.get_mut(&from) else {
            return Routed::NoInterest;
        };
        c.in_msgs += 1;
        c.in_bytes += message.len() as u64;
        let account = c.account;
        let msg = Msg {
            subject,
            reply,
            header_len,
            message,
            queues: Some(queues),
        };
        self.route_from(
            account,
            &msg,
            Origin {
                conn: from,
                echo: false,
                link: LinkKind::Leaf,
            },
        )
    }

    /// Counts an interest change in `account` held by `origin` (a
    /// connection on this shard; `None` for another shard's) and tells each
    /// leaf connection of the account what changed for it.
    pub(super) fn note_leaf_interest(
        &mut self,
        account: AccountId,
        subject: &[u8],
        queue: Option<&[u8]>,
        origin: Option<ConnId>,
        add: bool,
    ) {
        let st = &mut self.leafs;
        if !st.enabled {
            return;
        }
        let key: Key = (subject.into(), queue.map(Into::into));
        let total = {
            let n = st.total.entry((account, key.clone())).or_insert(0);
            *n = if add { *n + 1 } else { n.saturating_sub(1) };
            let v = *n;
            if v == 0 {
                st.total.remove(&(account, key.clone()));
            }
            v
        };
        let mut sends: Vec<(ConnId, Vec<u8>)> = Vec::new();
        for link in st
            .links
            .iter_mut()
            .filter(|l| l.account == account && !hidden(&l.tellable, subject))
        {
            if Some(link.cid) == origin {
                let n = link.own.entry(key.clone()).or_insert(0);
                *n = if add { *n + 1 } else { n.saturating_sub(1) };
                if *n == 0 {
                    link.own.remove(&key);
                }
            }
            let weight = total - link.own.get(&key).copied().unwrap_or(0).min(total);
            let mut out = Vec::new();
            tell(&mut out, &mut link.told, &key, weight);
            if !out.is_empty() {
                sends.push((link.cid, out));
            }
        }
        for (cid, out) in sends {
            self.send_raw(cid, &out);
        }
    }
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
