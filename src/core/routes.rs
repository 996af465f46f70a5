//! What the routing core does for cluster routes, beside what every link
//! gets: the interest this server must announce to its routes (counted per
//! account, subject and queue group from every replica change, so a route
//! that connects on any shard gets the whole of it), messages that came in
//! over a route (delivered to the queue groups they name only), and one
//! RMSG per route per message however many of the route's subscriptions
//! matched.

use std::task::Waker;

use rustc_hash::FxHashMap;

use super::batch::InterestChange;
use super::mailbox::Mailbox;
use super::{Msg, Origin, Routed, ShardCore};
use crate::ids::{AccountId, ConnId, LinkKind, SubKey};
use crate::proto::encode::{self, ServerMsgForm};

/// A change to what this server announces to its routes: `weight` is how
/// many of this server's subscriptions share the account, subject, queue
/// group and origin now (0: none left, send `RS-`). Queue groups announce
/// their weight on every change, plain subjects only on the first and the
/// last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInterest {
    /// The account.
    pub account: AccountId,
    /// The subject.
    pub subject: Box<[u8]>,
    /// The queue group, if any.
    pub queue: Option<Box<[u8]>>,
    /// The remote cluster of the leaf connections that hold it (announced
    /// as `LS+`, as nats-server does, to peers that take it), if any.
    pub origin: Option<Box<[u8]>>,
    /// Subscriptions behind it now.
    pub weight: u32,
}

/// Account, subject, queue group, leaf origin: nats-server counts leaf
/// connections' interest apart from the rest (`keyFromSubWithOrigin`).
type InterestKey = (AccountId, Box<[u8]>, Option<Box<[u8]>>, Option<Box<[u8]>>);

/// Writes interest changes to the routes (the runtime's encoder), given
/// the core to queue the lines in.
pub type InterestFlush = Box<dyn Fn(&mut ShardCore, &[RouteInterest])>;

/// The runtime's interest writer, when it gave one.
#[derive(Default)]
struct Flusher(Option<InterestFlush>);

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Flusher(set)"
        } else {
            "Flusher(none)"
        })
    }
}

/// The core's route state (empty while the server is not clustered).
#[derive(Debug, Default)]
pub(super) struct RouteState {
    /// Writes pending interest before a message goes to a route.
    flush: Flusher,
    /// Whether interest is counted for routes.
    pub(super) clustered: bool,
    /// This server's subscriptions, counted as routes see them.
    interest: FxHashMap<InterestKey, u32>,
    /// Interest that stands for something else: importers' subscriptions
    /// in exporters' accounts (shadows). Routes hear the sum with
    /// `interest`.
    shadow: FxHashMap<InterestKey, u32>,
    /// Interest changes for the announcing task.
    events: Mailbox<RouteInterest>,
    /// Route subscriptions the message being routed matched, sent as one
    /// message per route once it is routed.
    pending: Vec<SubKey>,
    /// Routes dedicated to one account (no account on the wire).
    pinned: rustc_hash::FxHashSet<ConnId>,
    /// Routes whose peer takes leaf messages with their origin (`lnoc`).
    lnoc: rustc_hash::FxHashSet<ConnId>,
    /// Routes whose peer takes `LS-` with the origin (`lnocu`).
    lnocu: rustc_hash::FxHashSet<ConnId>,
    /// Route queue subscriptions' weights, on every shard.
    pub(super) weights: FxHashMap<SubKey, QueueWeight>,
}

/// What a route queue subscription stands for: `weight` members on the
/// peer (its `RS+` queue weight), held for leaf cluster `origin` when it
/// came as `LS+ <origin>`. Every shard keeps them for its replica: queue
/// members are picked as nats-server picks them (`ShardCore::route_in`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueWeight {
    /// Members behind it (at least 1).
    pub weight: u32,
    /// The leaf cluster it is held for.
    pub origin: Option<Box<[u8]>>,
}

/// What a route's peer takes of leaf origins (its INFO's `lnoc` and
/// `lnocu`): interest held by leaf connections is announced to it as
/// `LS+ <origin> ...`, and withdrawn with the origin named too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LeafOrigins {
    /// `LMSG` and `LS+` with the origin cluster.
    pub lnoc: bool,
    /// `LS-` with the origin cluster.
    pub lnocu: bool,
}

impl ShardCore {
    /// Turns interest counting for routes on (before any subscription
    /// exists: the runtime calls it at start when a cluster is configured).
    pub fn set_clustered(&mut self) {
        self.routes.clustered = true;
    }

    /// The imports change (start-up or reload): shadows of every
    /// subscription follow, so routes hear only the difference (the reply
    /// space is the response links' subscriptions, `responses.rs`).
    pub(super) fn reroute_imports(&mut self, old: &super::imports::Imports, new: &super::imports::Imports) {
        if !self.routes.clustered {
            return;
        }
        let keys: Vec<InterestKey> = self
            .routes
            .interest
            .iter()
            .flat_map(|(k, &n)| std::iter::repeat_n(k.clone(), n as usize))
            .collect();
        for (imports, add) in [(old, false), (new, true)] {
            for (account, subject, queue, origin) in &keys {
                for (exporter, shadow) in imports.shadows(*account, subject) {
                    self.bump_interest((exporter, shadow.into(), queue.clone(), origin.clone()), true, add);
                }
            }
        }
    }

    /// Marks a route link as dedicated to one account: its messages and
    /// interest do not name the account.
    pub fn set_route_pinned(&mut self, cid: ConnId) {
        self.routes.pinned.insert(cid);
    }

    /// Notes what route `cid`'s peer takes of leaf origins (its INFO).
    pub fn set_route_origins(&mut self, cid: ConnId, o: LeafOrigins) {
        if o.lnoc {
            self.routes.lnoc.insert(cid);
        }
        if o.lnocu {
            self.routes.lnocu.insert(cid);
        }
    }

    /// What route `cid`'s peer takes of leaf origins.
    pub fn route_origins(&self, cid: ConnId) -> LeafOrigins {
        LeafOrigins {
            lnoc: self.routes.lnoc.contains(&cid),
            lnocu: self.routes.lnocu.contains(&cid),
        }
    }

    /// Forgets a closed route's dedication and abilities.
    pub(super) fn forget_route(&mut self, cid: ConnId) {
        self.routes.pinned.remove(&cid);
        self.routes.lnoc.remove(&cid);
        self.routes.lnocu.remove(&cid);
    }

    /// Counts an interest change of a subscription held by a link of kind
    /// `link`. What routes hold is never announced to routes (one hop);
    /// the self-service link's subscriptions never get here.
    pub(super) fn note_interest(
        &mut self,
        account: AccountId,
        subject: &[u8],
        queue: Option<&[u8]>,
        link: LinkKind,
        origin: Option<ConnId>,
        add: bool,
    ) {
        self.note_leaf_interest(account, subject, queue, link, origin, add);
        if !self.routes.clustered || link == LinkKind::Route {
            return;
        }
        let leaf_origin = match (link, origin) {
            (LinkKind::Leaf, Some(conn)) => self.leaf_origin(conn),
            _ => None,
        };
        let key: InterestKey = (account, subject.into(), queue.map(Into::into), leaf_origin.clone());
        self.bump_interest(key, false, add);
        if self.has_imports {
            let imports = self.imports.clone();
            for (exporter, shadow) in imports.shadows(account, subject) {
                let key = (exporter, shadow.into(), queue.map(Into::into), leaf_origin.clone());
                self.bump_interest(key, true, add);
            }
        }
    }

    /// Counts one subscription more or less behind `key` (`shadow`: in the
    /// shadow counts) and records what routes must hear: a queue group's
    /// weight on every change, a plain subject on its first and last.
    fn bump_interest(&mut self, key: InterestKey, shadow: bool, add: bool) {
        let r = &mut self.routes;
        let before = r.interest.get(&key).copied().unwrap_or(0) + r.shadow.get(&key).copied().unwrap_or(0);
        let map = if shadow { &mut r.shadow } else { &mut r.interest };
        let n = map.entry(key.clone()).or_insert(0);
        let changed = if add {
            *n += 1;
            true
        } else {
            let had = *n > 0;
            *n = n.saturating_sub(1);
            had
        };
        if *n == 0 {
            map.remove(&key);
        }
        if !changed {
            return;
        }
        let weight = if add { before + 1 } else { before - 1 };
        if key.2.is_none() && (before > 0) == (weight > 0) {
            return;
        }
        r.events.push(RouteInterest {
            account: key.0,
            subject: key.1,
            queue: key.2,
            origin: key.3,
            weight,
        });
    }

    /// Moves the interest changes routes must hear into `into`, or
    /// registers `waker` for the next.
    pub fn poll_route_interest(&mut self, into: &mut Vec<RouteInterest>, waker: &Waker) -> bool {
        self.routes.events.poll(into, waker)
    }

    /// Takes the interest changes counted so far (leaves the waker alone).
    pub fn take_route_interest(&mut self) -> Vec<RouteInterest> {
        self.routes.events.take()
    }

    /// Gives the core the runtime's interest writer: before a message is
    /// queued for a route, the interest changes counted so far are
    /// written, so a peer hears of a subscription before a message (a
    /// request, say) that its answer depends on, as nats-server orders
    /// them.
    pub fn set_interest_flush(&mut self, f: InterestFlush) {
        self.routes.flush = Flusher(Some(f));
    }

    /// Writes the pending interest changes now, when the runtime gave a
    /// writer.
    fn write_pending_interest(&mut self) {
        if self.routes.events.is_empty() {
            return;
        }
        if let Some(f) = self.routes.flush.0.take() {
            let changes = self.routes.events.take();
            f(self, &changes);
            self.routes.flush = Flusher(Some(f));
        }
    }

    /// All of this server's interest, as a route that just connected must
    /// hear it.
    pub fn route_interest(&self) -> Vec<RouteInterest> {
        let mut all: FxHashMap<&InterestKey, u32> = FxHashMap::default();
        for (k, &n) in self.routes.interest.iter().chain(self.routes.shadow.iter()) {
            *all.entry(k).or_insert(0) += n;
        }
        all.into_iter()
            .map(|((account, subject, queue, origin), weight)| RouteInterest {
                account: *account,
                subject: subject.clone(),
                queue: queue.clone(),
                origin: origin.clone(),
                weight,
            })
            .collect()
    }

    /// Appends protocol bytes (INFO, PING, RS+ ...) to a link's output and
    /// wakes its writer.
    pub fn send_raw(&mut self, cid: ConnId, bytes: &[u8]) {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.out.tail().extend_from_slice(bytes);
            c.out.rotate(&mut self.chunks);
            c.wake();
        }
    }

    /// Adds a subscription a route announced (`RS+`, or `LS+` with the
    /// leaf cluster `origin`) in `account`, under the sid `sid` (the
    /// route's key for it, used by `RS-`); a queue subscription with its
    /// weight, which a repeated `RS+` updates.
    pub fn subscribe_routed(
        &mut self,
        cid: ConnId,
        account: AccountId,
        subject: &[u8],
        queue: Option<(&[u8], u32)>,
        origin: Option<&[u8]>,
        sid: &[u8],
    ) {
        // Routes have no permissions or subscription limit here.
        let _ = self.subscribe_in(cid, Some(account), subject, queue.map(|q| q.0), sid);
        let Some((_, weight)) = queue else { return };
        let Some(&key) = self.conns.get(&cid).and_then(|c| c.sids.get(sid)) else {
            return;
        };
        let w = QueueWeight {
            weight: weight.max(1),
            origin: origin.map(Into::into),
        };
        if self.routes.weights.get(&key) != Some(&w) {
            self.routes.weights.insert(key, w.clone());
            self.broadcast(|| InterestChange::QueueWeight { key, weight: w.clone() });
        }
    }

    /// Sets what route `cid` must not be sent even where its peer's
    /// wildcard interest covers it: the route permissions' `export` deny
    /// list (nats-server's delivery deny filter), or nothing.
    pub fn set_route_deny(&mut self, cid: ConnId, deny: Option<crate::auth::perms::PatternList>) {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.perms = deny.map(|d| {
                crate::auth::perms::ConnPermissions::new(std::sync::Arc::new(
                    crate::auth::perms::Permissions::sent_all_but(d),
                ))
            });
        }
    }

    /// Drops the subscriptions route `cid` announced whose subject `keep`
    /// refuses (route permissions narrowed by a reload); returns how many.
    pub fn drop_routed_subs(&mut self, cid: ConnId, keep: impl Fn(&[u8]) -> bool) -> usize {
        let Some(c) = self.conns.get(&cid) else { return 0 };
        let doomed: Vec<SubKey> = c
            .sids
            .values()
            .copied()
            .filter(|k| self.subs.get(k).is_some_and(|s| !keep(&s.subject)))
            .collect();
        for &k in &doomed {
            self.remove_sub(k);
        }
        doomed.len()
    }

    /// Routes a message that came in over route `from` in `account`: to
    /// this server's clients, leaf nodes and internal subscribers (never
    /// to another route), and to one member of each queue group in
    /// `queues` only (the sending server picked this server for them).
    #[allow(clippy::too_many_arguments)]
    pub fn publish_routed(
        &mut self,
        from: ConnId,
        account: AccountId,
        m: &crate::proto::route::RoutedMsg<'_>,
    ) -> Routed {
        let msg = Msg {
            subject: m.subject,
            reply: m.reply,
            header_len: m.header_len,
            message: m.message,
            queues: Some(&m.queues),
            origin_cluster: m.origin,
            responder: None,
        };
        self.publish_from_server(from, LinkKind::Route, account, &msg)
    }

    /// Counts and routes a message a route or leaf connection brought in:
    /// never echoed to it, delivered to the queue groups it names only.
    pub(super) fn publish_from_server(
        &mut self,
        from: ConnId,
        link: LinkKind,
        account: AccountId,
        msg: &Msg<'_>,
    ) -> Routed {
        if let Some(c) = self.conns.get_mut(&from) {
            c.in_msgs += 1;
            c.in_bytes += msg.message.len() as u64;
        }
        // A leaf connection's trace starts before its mapping (`publish_leaf`).
        if !self.is_tracing() && !self.trace_from_server(from, account, msg) {
            return Routed::NoInterest;
        }
        let origin = Origin {
            conn: from,
            echo: false,
            link,
        };
        let routed = self.route_from(account, msg, origin);
        self.trace_end();
        routed
    }

    /// Sends the message just routed once to each route (and leaf
    /// connection) it matched, with the queue groups it was picked for.
    pub(super) fn flush_routes(&mut self, msg: &Msg<'_>) {
        self.write_pending_interest();
        let mut pending = std::mem::take(&mut self.routes.pending);
        pending.sort_unstable_by_key(|k| self.subs.get(k).map(|s| s.conn));
        let mut i = 0;
        while i < pending.len() {
            let Some((conn, first_account)) = self.subs.get(&pending[i]).map(|s| (s.conn, s.account)) else {
                i += 1;
                continue;
            };
            // A traced message's copy carries its hop id.
            let traced = if self.is_tracing() {
                let forward = self.trace_forward(conn, first_account);
                if forward.as_ref().is_some_and(|f| !f.send) {
                    i = pending[i..]
                        .iter()
                        .position(|k| self.subs.get(k).is_none_or(|s| s.conn != conn))
                        .map_or(pending.len(), |n| i + n);
                    continue;
                }
                forward.zip(msg.header_len).map(|(f, h)| {
                    crate::proto::trace::with_header(msg.message, h, crate::proto::trace::TRACE_HOP, &f.hop)
                })
            } else {
                None
            };
            let (header_len, message) = match &traced {
                Some((m, h)) => (Some(*h), &m[..]),
                None => (msg.header_len, msg.message),
            };

            let mut queues: Vec<&[u8]> = Vec::new();
            let mut account = AccountId::GLOBAL;
            let mut j = i;
            while j < pending.len() {
                let Some(s) = self.subs.get(&pending[j]).filter(|s| s.conn == conn) else {
                    break;
                };
                account = s.account;
                if let Some(q) = s.queue.as_deref() {
                    if !queues.contains(&q) {
                        queues.push(q);
                    }
                }
                j += 1;
            }
            let name = match self.account_names.get(account.index()) {
                Some(n) if !n.is_empty() => &n[..],
                _ => &b"$G"[..],
            };
            let account = (!self.routes.pinned.contains(&conn)).then_some(name);
            let form = match (self.conns.get(&conn).map(|c| c.link), msg.origin_cluster) {
                (Some(LinkKind::Leaf), _) => ServerMsgForm::Leaf,
                // A leaf connection's message, to a peer that takes its origin.
                (_, Some(origin)) if self.routes.lnoc.contains(&conn) => {
                    ServerMsgForm::RouteFromLeaf { origin, account }
                }
                _ => ServerMsgForm::Route(account),
            };
            if let Some(c) = self.conns.get_mut(&conn) {
                if c.closing.is_none() {
                    let out = c.out.tail();
                    encode::server_msg(out, form, msg.subject, msg.reply, &queues, header_len, message);
                    c.out.rotate(&mut self.chunks);
                    c.out_msgs += 1;
                    c.out_bytes += message.len() as u64;
                    self.counters.out_msgs += 1;
                    self.counters.out_bytes += message.len() as u64;
                    // Pace publishers while the route is behind: a peer reads
                    // at its own subscribers' pace, and a deep queue here only
                    // costs memory (and page faults) on both sides.
                    if c.out.len() > super::ROUTE_STALL {
                        self.stall = true;
                    }
                    // A peer that stopped reading: the route is closed (and
                    // dialed again if configured) rather than let memory
                    // grow, as a client past max_pending is.
                    if c.out.len() > self.cfg.max_pending {
                        c.pending_at_close = c.out.len();
                        c.out.discard();
                        c.closing = Some(crate::proto::errors::CloseReason::SlowConsumerPendingBytes);
                        self.counters.slow_consumers += 1;
                        self.cut_off.push(conn);
                    }
                    c.wake();
                }
            }
            i = j;
        }
        pending.clear();
        self.routes.pending = pending;
    }

    /// Queues a delivery to a route subscription for [`Self::flush_routes`].
    #[inline]
    pub(super) fn queue_route_delivery(&mut self, key: SubKey) {
        self.routes.pending.push(key);
    }

    /// Whether deliveries to routes wait to be sent.
    #[inline]
    pub(super) fn routes_pending(&self) -> bool {
        !self.routes.pending.is_empty()
    }

    /// Forgets the weight of route subscription `key` when it is gone (a
    /// queue subscription's: only those have one).
    pub(super) fn forget_queue_weight(&mut self, key: SubKey, queue: bool) {
        if queue && key.link() == LinkKind::Route {
            self.routes.weights.remove(&key);
        }
    }

    /// The leaf cluster a message comes from: its leaf connection's, or
    /// the one a route named (`LMSG`).
    pub(super) fn message_leaf_origin(&self, msg: &Msg<'_>, origin: Option<Origin>) -> Option<Box<[u8]>> {
        match origin {
            Some(o) if o.link == LinkKind::Leaf => self.leaf_origin(o.conn),
            _ => msg.origin_cluster.map(Into::into),
        }
    }
}
