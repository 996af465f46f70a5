//! One shard's executor-local state ([`Shard`]): its core, its
//! connections' handles, its ends of the inter-shard queues and its copy of
//! the options in force; and what it does from its own poll loops (flush
//! batches, apply reloads and claims updates, answer snapshots, act on
//! client announcements). The runtime (`mod.rs`) starts shards; connection
//! tasks (`conn.rs`) and the system client (`system.rs`) work on them.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::host;
use super::mesh::{Outlet, ShardMsg};
use super::transport::{self, Stream};
use crate::auth::verify::Verifier;
use crate::control::{ClientAction, ConnSnapshot, ShardSnapshot, Shared};
use crate::core::{CoreConfig, ShardCore};
use crate::ids::{ConnId, ConnKind, ShardId};
use crate::options::Options;
use crate::proto::errors::CloseReason;
use crate::proto::info::ServerInfo;
use crate::proto::session::{Session, SessionConfig};
use rustc_hash::FxHashMap;

/// The session settings derived from options.
pub fn session_config(o: &Options) -> SessionConfig {
    SessionConfig {
        max_control_line: o.max_control_line,
        max_payload: o.max_payload,
        headers_supported: !o.no_header_support,
        ping_interval: o.ping_interval,
        ping_max: o.ping_max,
        auth_required: o.auth.is_enabled() && o.auth.no_auth_user.is_none(),
        auth_timeout: o.client_auth_timeout(),
    }
}

/// The core settings derived from options.
pub fn core_config(o: &Options) -> CoreConfig {
    CoreConfig {
        max_pending: o.max_pending,
        sublist_cache: !o.disable_sublist_cache,
        max_subscriptions: o.max_subscriptions,
        cluster_name: o.cluster.as_ref().and_then(|c| c.name.as_deref()).map(Into::into),
        no_stall: o.no_fast_producer_stall,
    }
}

/// One shard's executor-local state.
pub struct Shard {
    /// This shard's id.
    pub id: ShardId,
    /// The routing core.
    pub core: RefCell<ShardCore>,
    /// State shared with the other shards.
    pub shared: Arc<Shared>,
    pub(super) outlets: Vec<Option<Rc<Outlet>>>,
    /// This shard's copy of the options in force.
    pub opts: RefCell<Arc<Options>>,
    /// The INFO template in force.
    pub info: RefCell<ServerInfo>,
    pub(super) generation: Cell<u64>,
    /// Open connections' sessions and sockets, for applying a reload.
    pub conns: RefCell<FxHashMap<ConnId, ConnHandles>>,
    pub(super) accept_tasks: RefCell<Vec<crate::rt::Task<()>>>,
    pub(super) lame_duck_started: Cell<bool>,
    pub(super) account_seen: Cell<u64>,
    pub(super) imports_seen: Cell<u64>,
    /// This shard's copy of the verifier in force.
    pub verifier: RefCell<Arc<Verifier>>,
    pub(super) actions_seen: Cell<u64>,
    /// This shard's route connections.
    pub routes: super::route_table::Routes,
    /// This shard's leaf node connections.
    pub leafs: super::leaf_table::Leafs,
    /// The options generation whose routes this shard last checked.
    pub(super) routes_generation: Cell<u64>,
    /// The cluster's client URLs generation this shard's INFO reflects.
    pub(super) urls_seen: Cell<u64>,
    /// Clients moved here, until every shard has caught up with the move.
    pub(super) arriving: RefCell<FxHashMap<ConnId, Box<super::arrival::Arrival>>>,
    /// The poll loop sleeps its idle period: the first traffic rings it.
    pub(super) polling_idle: Cell<bool>,
    /// Capacity of the route and leaf links' read buffers.
    pub(super) link_read_buffers: Cell<usize>,
    /// When the buffer memory was last published.
    pub(super) memory_published: Cell<Option<std::time::Instant>>,
}

/// How often a shard publishes its buffer memory.
const MEMORY_EVERY: Duration = Duration::from_secs(1);

/// What a reload, lame-duck mode or a monitoring snapshot needs of an open
/// connection.
pub struct ConnHandles {
    /// The protocol state.
    pub session: Rc<RefCell<Session>>,
    /// The socket.
    pub stream: Stream,
    /// The client's address.
    pub ip: String,
    /// The client's port.
    pub port: u16,
    /// When the connection was accepted.
    pub start: std::time::SystemTime,
    /// Its authentication state (identity once connected).
    pub auth: Rc<RefCell<host::ConnAuth>>,
    /// The listener it came through.
    pub kind: crate::ids::ConnKind,
    /// Capacity of its read buffer (kept by its reader).
    pub read_buffer: Rc<Cell<usize>>,
}

/// Backlog length past which a reader waits for its shard's queues to drain.
const BACKLOG_HIGH: usize = 256;
/// Bytes of batches in flight to one shard above which its publishers
/// wait: the batches of a fast publisher for a slower subscriber on
/// another shard would otherwise pile up in the queue and backlog.
const IN_FLIGHT_HIGH: usize = 4 << 20;

/// Checks one connection again with the credentials of its CONNECT
/// against a reloaded verifier `v` (see [`Shard::reverify`]).
fn reverify_conn(core: &mut ShardCore, cid: ConnId, auth: &mut host::ConnAuth, session: &Session, v: &Arc<Verifier>) {
    auth.verifier = v.for_kind(auth.kind);
    let Some(old) = auth.identity.take() else { return };
    let opts = if session.is_connected() {
        session.opts().clone()
    } else {
        // Not connected yet, acting as no_auth_user.
        crate::proto::connect::ClientOpts::default()
    };
    match auth.verify(&opts) {
        Ok(id) if id.account().id == old.account().id => {
            core.set_conn_identity(cid, id.account().id, id.permissions().cloned(), id.max_subscriptions());
            core.enforce_subscriptions(cid);
            auth.identity = Some(id);
        }
        Ok(_) | Err(_) => {
            // nats-server closes these without an -ERR.
            crate::debug!("cid:{} - no longer authorized after a reload", cid.0);
            core.close_conn(cid, CloseReason::AuthenticationViolation);
        }
    }
}

impl Shard {
    /// Sends the batches the core has gathered, in order, to their shards.
    pub async fn flush(self: &Rc<Self>) {
        self.send_batches();
        // Back-pressure: a publisher waits while a destination is far behind.
        while self
            .outlets
            .iter()
            .flatten()
            .any(|o| o.backlog_len() > BACKLOG_HIGH || o.in_flight() > IN_FLIGHT_HIGH)
        {
            crate::rt::timer::sleep(Duration::from_micros(200)).await;
        }
    }

    /// Sends the gathered batches without waiting for room. The mesh
    /// receivers use this: a receiver that waited for its peers' queues to
    /// drain could wait on a peer that waits on it (two shards both behind
    /// each other, as in a burst of connections handed across), and stop
    /// both shards.
    pub fn send_batches(self: &Rc<Self>) {
        let batches = self.core.borrow_mut().take_batches();
        for (dest, b) in batches {
            let outlet = self.outlets[dest.index()].as_ref().expect("never sends to itself");
            if outlet.push(ShardMsg::Batch(b)) {
                crate::rt::spawn_local(outlet.clone().drain()).detach();
            }
        }
    }

    /// Applies options installed by a reload, if any: core limits, every
    /// open session's limits and PING timing, socket write deadlines.
    pub(super) fn apply_reload(&self) {
        let generation = self.shared.generation.load(Relaxed);
        if generation == self.generation.get() {
            return;
        }
        let (opts, info) = self.shared.current();
        self.core.borrow_mut().set_config(core_config(&opts));
        let cfg = session_config(&opts);
        for h in self.conns.borrow().values() {
            h.session.borrow_mut().update_config(cfg.clone());
            let _ = h.stream.borrow().tcp().set_write_timeout(Some(opts.write_deadline));
        }
        *self.opts.borrow_mut() = opts;
        *self.info.borrow_mut() = info;
        let v = self.shared.verifier();
        if !Arc::ptr_eq(&v, &self.verifier.borrow()) {
            self.reverify(v);
        }
        self.generation.set(generation);
        self.shared.applied[self.id.index()].store(generation, Relaxed);
    }

    /// Waits until `poll` moves something the core gathered for a task of
    /// this shard (internal deliveries, self requests, route interest)
    /// into `into`; `poll` registers the waker when there is nothing yet.
    pub async fn next_batch<T>(
        &self,
        into: &mut Vec<T>,
        poll: fn(&mut ShardCore, &mut Vec<T>, &std::task::Waker) -> bool,
    ) {
        std::future::poll_fn(|cx| {
            if poll(&mut self.core.borrow_mut(), into, cx.waker()) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Whether options were reloaded since the routes were last checked.
    pub(super) fn generation_changed_routes(&self) -> bool {
        let g = self.generation.get();
        g != self.routes_generation.replace(g)
    }

    /// Publishes a system event into the system account (seen by its
    /// subscribers on every shard after the next flush), its server
    /// block's `seq` taken now ([`crate::sys::stamp_seq`]).
    /// Returns whether anyone will receive it.
    pub fn emit(&self, subject: &str, mut body: serde_json::Value) -> bool {
        crate::sys::stamp_seq(&mut body, crate::sys::next_seq(&self.shared));
        self.emit_bytes(subject.as_bytes(), &serde_json::to_vec(&body).unwrap_or_default())
    }

    /// Publishes `bytes` on `subject` in the system account (events and the
    /// internal client's replies); whether anyone will receive them.
    pub fn emit_bytes(&self, subject: &[u8], bytes: &[u8]) -> bool {
        self.emit_message(subject, None, bytes)
    }

    /// [`Self::emit_bytes`] of a message with a header block of
    /// `header_len` bytes at its start.
    pub fn emit_message(&self, subject: &[u8], header_len: Option<usize>, bytes: &[u8]) -> bool {
        let sys = self.verifier.borrow().accounts().system().id;
        let mut core = self.core.borrow_mut();
        core.set_now(std::time::Instant::now());
        core.inject_msg(sys, subject, None, header_len, bytes)
    }

    /// Kicks, and sends lame-duck notices to, this shard's clients named by
    /// `$SYS` requests.
    pub(super) fn apply_client_actions(&self) {
        let actions: Vec<ClientAction> = self.shared.client_actions.since(&self.actions_seen);
        if actions.is_empty() {
            return;
        }
        let conns = self.conns.borrow();
        let mut core = self.core.borrow_mut();
        for a in actions {
            match a {
                ClientAction::Kick(cid) if conns.contains_key(&ConnId(cid)) => {
                    core.close_conn(ConnId(cid), CloseReason::Kicked);
                }
                ClientAction::LameDuck(cid) => {
                    // As nats-server: only to a client past its first PONG.
                    if let Some(h) = conns
                        .get(&ConnId(cid))
                        .filter(|h| h.session.borrow().takes_async_info())
                    {
                        let mut info = self.info.borrow().clone();
                        info.ldm = true;
                        let json = host::client_info(&info, ConnId(cid), &h.ip).to_json();
                        if let Some(c) = core.conn_mut(ConnId(cid)) {
                            crate::proto::encode::info(c.out.tail(), &json);
                        }
                        core.wake(ConnId(cid));
                    }
                }
                ClientAction::Kick(_) => {}
            }
        }
    }

    /// Installs the accounts' imports when they changed (operator mode loads
    /// accounts, and their imports, as clients arrive). One atomic load
    /// when nothing changed.
    pub fn refresh_imports(&self, core: &mut ShardCore) {
        let v = self.verifier.borrow();
        let g = v.imports_generation();
        if g != self.imports_seen.get() {
            self.imports_seen.set(g);
            core.set_imports(v.imports());
        }
    }

    /// Re-checks this shard's clients of accounts whose JWT changed:
    /// revoked users and removed signing keys are closed with nats-server's
    /// errors, the others get the new permissions and limits.
    pub(super) fn apply_account_updates(&self) -> bool {
        let accounts = self.shared.account_updates.since(&self.account_seen);
        if accounts.is_empty() {
            return false;
        }
        let conns = self.conns.borrow();
        let mut core = self.core.borrow_mut();
        for account in accounts {
            for cid in core.conns_of(account) {
                let Some(h) = conns.get(&cid) else { continue };
                let auth = h.auth.borrow();
                let Some(id) = auth.identity.as_ref() else { continue };
                self.recheck_identity(&mut core, cid, id);
            }
            // A lowered connection limit closes the newest clients beyond it.
            if let Some(acc) = self.verifier.borrow().accounts().by_id(account) {
                let mut newest = core.conns_of(account);
                newest.sort_by_key(|c| std::cmp::Reverse(*c));
                for cid in newest {
                    if core.conn(cid).is_none_or(|c| c.closing().is_some()) {
                        continue;
                    }
                    if !acc.claim_excess() {
                        break;
                    }
                    core.fail_conn(cid, crate::proto::errors::WireError::MaxAccountConnectionsExceeded);
                }
            }
        }
        true
    }

    /// Installs a reloaded verifier and checks every open connection
    /// against it again with the credentials of its CONNECT, as nats-server
    /// does: clients no longer allowed in, or now in another account, are
    /// closed; the others get their new permissions (losing subscriptions
    /// those refuse).
    fn reverify(&self, v: Arc<Verifier>) {
        *self.verifier.borrow_mut() = v.clone();
        let mut core = self.core.borrow_mut();
        core.set_imports(v.imports());
        self.imports_seen.set(v.imports_generation());
        for (cid, h) in self.conns.borrow().iter() {
            reverify_conn(&mut core, *cid, &mut h.auth.borrow_mut(), &h.session.borrow(), &v);
        }
    }

    /// Brings a client that arrived from another shard up to what this
    /// shard applied while it was on its way (it was in neither shard's
    /// connection table then): a reload (`generation`) and account
    /// updates (`accounts_seen`) newer than those its old shard had seen.
    pub(super) fn refresh_arrived(
        &self,
        cid: ConnId,
        session: &RefCell<Session>,
        auth: &RefCell<host::ConnAuth>,
        generation: u64,
        accounts_seen: u64,
    ) {
        let mut core = self.core.borrow_mut();
        if self.generation.get() > generation {
            session.borrow_mut().update_config(session_config(&self.opts.borrow()));
            let v = self.verifier.borrow().clone();
            reverify_conn(&mut core, cid, &mut auth.borrow_mut(), &session.borrow(), &v);
        }
        if self.account_seen.get() > accounts_seen {
            if let Some(id) = auth.borrow().identity.as_ref() {
                self.recheck_identity(&mut core, cid, id);
            }
        }
    }

    /// Checks a connected client's identity again after its account's JWT
    /// changed: new permissions and limits, or the connection fails.
    fn recheck_identity(&self, core: &mut ShardCore, cid: ConnId, id: &crate::auth::verify::Identity) {
        match self.verifier.borrow().recheck(id) {
            Ok(r) => {
                core.set_conn_identity(cid, id.account().id, r.permissions, r.max_subs);
                core.enforce_subscriptions(cid);
                core.check_subs_limit(cid);
                core.enforce_subs_limit(cid);
            }
            Err(e) => {
                crate::debug!("cid:{} - {} after an account update", cid.0, e.text());
                core.fail_conn(cid, e);
            }
        }
    }

    /// Writes this shard's connection snapshot when one was asked for.
    pub(super) fn answer_snapshot(&self) {
        let request = self.shared.snapshot_request.load(Relaxed);
        let slot = &self.shared.snapshots[self.id.index()];
        if slot.lock().unwrap_or_else(|e| e.into_inner()).0 >= request {
            return;
        }
        let core = self.core.borrow();
        let out: Vec<ConnSnapshot> = self
            .conns
            .borrow()
            .keys()
            .filter_map(|cid| self.conn_snapshot(&core, *cid))
            .collect();
        let t = core.index_totals();
        let snap = ShardSnapshot {
            shard: self.id.0,
            conns: out,
            subscriptions: t.0,
            cache: t.1,
            index: t.2,
            max_fanout: t.3,
            fanout_sum: t.4,
        };
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = (request, snap);
    }

    /// One of this shard's connections as monitoring shows it (also kept
    /// for `connz?state=closed` when it closes).
    pub fn conn_snapshot(&self, core: &ShardCore, cid: ConnId) -> Option<ConnSnapshot> {
        let conns = self.conns.borrow();
        let h = conns.get(&cid)?;
        let c = core.conn(cid)?;
        let session = h.session.borrow();
        let o = session.opts();
        let (account, user) = h.auth.borrow().account_and_user();
        let subs = core.subscriptions_of(cid);
        Some(ConnSnapshot {
            cid: cid.0,
            ip: h.ip.clone(),
            port: h.port,
            start: h.start,
            rtt: session.rtt(),
            pending_bytes: c.out.len(),
            buffer_bytes: h.read_buffer.get() + core.out_held(cid),
            in_msgs: c.in_msgs,
            in_bytes: c.in_bytes,
            out_msgs: c.out_msgs,
            out_bytes: c.out_bytes,
            subjects: subs.iter().map(|s| s.0.clone()).collect(),
            name: o.name.clone(),
            lang: o.lang.clone(),
            version: o.version.clone(),
            shard: self.id.0,
            account,
            user,
            subs,
            kind: h.kind,
            takes_async_info: session.takes_async_info(),
        })
    }

    /// Shuts the sockets of clients the core just closed as slow
    /// consumers, as nats-server closes them at once: their writers may be
    /// blocked on a reader that does not read.
    pub fn cut_off_slow_consumers(&self) {
        let cut = self.core.borrow_mut().take_cut_off();
        if cut.is_empty() {
            return;
        }
        let conns = self.conns.borrow();
        for cid in cut {
            if let Some(h) = conns.get(&cid) {
                transport::shutdown(&h.stream);
            } else if let Some(s) = self.routes.stream(cid) {
                transport::shutdown(&s);
            } else if let Some(e) = self.leafs.conns.borrow().get(&cid) {
                transport::shutdown(&e.stream);
            }
        }
    }

    /// Publishes the core's counters for readers on other threads.
    pub fn publish_stats(&self) {
        self.shared.stats[self.id.index()].publish(&self.core.borrow().counters());
    }

    /// Publishes the memory this shard's connections hold (read buffers,
    /// outbound queues) and its chunk pool: O(connections), so from the
    /// poll loop and at most once a second (it may poll every 20 ms), not
    /// per read.
    pub(super) fn publish_memory(&self, now: std::time::Instant) {
        if self
            .memory_published
            .get()
            .is_some_and(|t| now.saturating_duration_since(t) < MEMORY_EVERY)
        {
            return;
        }
        self.memory_published.set(Some(now));
        let (out, pool) = self.core.borrow().out_memory();
        let reads: usize = self.conns.borrow().values().map(|h| h.read_buffer.get()).sum();
        let buffers = out + reads + self.link_read_buffers.get();
        self.shared.stats[self.id.index()].publish_memory(crate::stats::ShardMemory {
            buffers: buffers as u64,
            pool: pool as u64,
        });
    }

    pub(super) fn send_move(
        self: &Rc<Self>,
        dest: usize,
        parcel: Box<crate::core::ConnParcel>,
        a: Box<super::arrival::Arrival>,
    ) {
        let outlet = self.outlets[dest].as_ref().expect("never sends to itself");
        if outlet.push(ShardMsg::Move(parcel, a)) {
            crate::rt::spawn_local(outlet.clone().drain()).detach();
        }
    }

    /// How soon the shard's poll loop should come round again: every
    /// 20 ms with routes or leaf nodes configured (their dialing and gossip
    /// run from it), every 100 ms while messages move (affinity needs no
    /// more: each wake-up costs about what a request does), else `idle`.
    /// `traffic` keeps the message count of the last look.
    pub(super) fn next_poll(&self, traffic: &mut u64, idle: Duration) -> Duration {
        let c = self.core.borrow().counters();
        let now = c.in_msgs + c.out_msgs;
        let moved = std::mem::replace(traffic, now) != now;
        if self.shared.cluster.get().is_some() || self.shared.leaf.get().is_some() {
            return Duration::from_millis(20);
        }
        if moved {
            Duration::from_millis(100)
        } else {
            idle
        }
    }

    /// Called as messages move: wakes a poll loop that sleeps its idle
    /// period, so traffic gets its busy polls (affinity) at once.
    #[inline]
    pub(super) fn note_traffic(&self) {
        if self.polling_idle.replace(false) {
            self.shared.ring_shard(self.id.index());
        }
    }

    /// Marks the clients that should move to another shard by affinity
    /// (their readers move them between two reads).
    pub(super) fn mark_affinity_moves(&self) {
        let loads: Vec<usize> = self.shared.conn_counts.iter().map(|c| c.load(Relaxed)).collect();
        let back = self
            .shared
            .moved_in_lately(self.id.index(), crate::core::AFFINITY_SETTLE);
        let mut core = self.core.borrow_mut();
        core.set_now(std::time::Instant::now());
        core.affinity_moves(&loads, &back);
    }

    pub(super) fn send_conn(
        self: &Rc<Self>,
        dest: usize,
        stream: crate::rt::net::AcceptedTcpStream,
        cid: ConnId,
        kind: ConnKind,
    ) {
        let outlet = self.outlets[dest].as_ref().expect("never sends to itself");
        if outlet.push(ShardMsg::Conn(stream, cid, kind)) {
            crate::rt::spawn_local(outlet.clone().drain()).detach();
        }
    }
}
