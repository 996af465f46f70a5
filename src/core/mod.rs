//! The sharded routing core, without an executor: one [`ShardCore`] per
//! shard owns that shard's connections' outbound buffers, its subscriptions
//! and its replica of the index, and talks to the other shards only through
//! [`Batch`]es. The runtime moves batches between cores and bytes between
//! buffers and sockets; everything else happens here, so the multi-shard
//! behaviour is testable in one thread.

mod account_requests;
pub mod batch;
pub mod imports;
pub mod latency;
mod leafs;
mod mailbox;
pub use leafs::LeafSetup;
mod moves;
pub use moves::{ConnParcel, SETTLE as AFFINITY_SETTLE};
pub mod outq;
pub mod pool;
pub mod reports;
pub mod request_info;
mod responses;
mod routes;
pub mod trace;

use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::FxHashMap;

use crate::auth::perms::{ConnPermissions, Permissions};
use crate::ids::{AccountId, ConnId, LinkKind, ShardId, Sid, SubKey};
use crate::index::{SubIndex, SubRef};
use crate::proto::encode;
use crate::proto::errors::{CloseReason, WireError};
use crate::proto::session::Routed;
use crate::stats::Counters;
use crate::subject;
pub use batch::{Batch, Body, InterestChange, Outbox, RemoteMsg, Span, SHARE_THRESHOLD};
use imports::Imports;
pub use outq::{ChunkPool, OutQueue};
pub use pool::BufferPools;
pub use responses::REPLY_PREFIX;
pub use routes::{LeafOrigins, QueueWeight, RouteInterest};

/// Settings the core needs.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Outbound bytes a connection may have queued before it is closed as a
    /// slow consumer.
    pub max_pending: usize,
    /// Use the index's match cache.
    pub sublist_cache: bool,
    /// Most subscriptions per connection (0 = unlimited).
    pub max_subscriptions: usize,
    /// The configured cluster name (picks cluster-scoped mappings).
    pub cluster_name: Option<Arc<str>>,
    /// Never pace publishers (`no_fast_producer_stall`): a subscriber
    /// that falls behind is cut off at `max_pending` instead.
    pub no_stall: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            max_pending: 64 * 1024 * 1024,
            sublist_cache: true,
            max_subscriptions: 0,
            cluster_name: None,
            no_stall: false,
        }
    }
}

/// Bytes queued for a subscriber that is still reading above which its
/// publishers are paced (the hard stall is at 75 % of `max_pending`).
pub const SOFT_STALL: usize = 1 << 20;
/// A reader paced by a lagging client waits until the client holds less
/// than this (see [`ShardCore::lagging_over`]).
pub const SOFT_RESUME: usize = SOFT_STALL / 2;
/// Bytes queued for a route above which publishers are paced: a peer
/// reads at its own subscribers' pace.
const ROUTE_STALL: usize = 8 << 20;
/// A writer that took output this recently is reading.
const DRAINING: Duration = Duration::from_millis(100);

/// One local connection (a link of some [`LinkKind`]) as the core sees it.
#[derive(Debug)]
pub struct ConnEntry {
    /// Bytes waiting to be written to the socket.
    pub out: OutQueue,
    waker: Option<Waker>,
    sids: FxHashMap<Sid, SubKey>,
    echo: bool,
    headers: bool,
    account: AccountId,
    perms: Option<ConnPermissions>,
    max_subs: Option<usize>,
    /// Its subscription limit was applied while it already held that many
    /// (see [`ShardCore::enforce_subs_limit`]).
    subs_limit_reached: bool,
    /// What is at the other end: decides the encoder of deliveries and
    /// which messages may be forwarded to it.
    link: LinkKind,
    /// Bytes queued when the client was closed as a slow consumer.
    pub pending_at_close: usize,
    /// Interest sequence the client's latest SUB/UNSUB travels in.
    interest_seq: u64,
    deferred_pongs: Vec<Option<Vec<u8>>>,
    closing: Option<CloseReason>,
    /// Messages delivered to this connection.
    pub out_msgs: u64,
    /// Bytes delivered to this connection.
    pub out_bytes: u64,
    /// When its writer last took output or wrote a chunk: a subscriber
    /// that is reading, however slowly, is paced early (see `deliver`).
    last_drain: Option<Instant>,
    /// Capacity of the chunks its writer holds (taken, not yet sent).
    writing: usize,
    /// Messages this connection published.
    pub in_msgs: u64,
    /// Bytes this connection published.
    pub in_bytes: u64,
    /// Where its deliveries came from lately (`moves.rs`).
    affinity: moves::Affinity,
    /// Set while it arrives from another shard (`moves.rs`).
    moving_in: Option<Box<moves::MovingIn>>,
    /// When it last moved between shards.
    moved_at: Option<Instant>,
    /// Its transport can be handed to another shard (plain TCP).
    may_move: bool,
    /// Where it should move, once its reader is between reads.
    move_to: Option<ShardId>,
    /// Its name in trace events (a client's CONNECT name, a route's or
    /// leaf connection's remote server).
    name: Option<Arc<str>>,
    /// What its CONNECT said (`request_info.rs`).
    detail: Option<Arc<request_info::ClientDetail>>,
    /// Its latest round trip time.
    rtt: Duration,
    /// A route or leaf peer below protocol 3: it does not understand
    /// message tracing (`trace.rs`).
    untraced_peer: bool,
}

impl ConnEntry {
    /// Whether its writer took or wrote output lately (at `now`): a
    /// subscriber still reading, however slowly.
    fn reading(&self, now: Instant) -> bool {
        self.last_drain
            .is_some_and(|t| now.saturating_duration_since(t) < DRAINING)
    }

    /// Its subscription limit: the lower of the server's
    /// `max_subscriptions` (0: none) and its user's or account's.
    fn sub_limit(&self, server_max: usize) -> usize {
        match (server_max, self.max_subs) {
            (0, None) => usize::MAX,
            (0, Some(m)) => m,
            (s, None) => s,
            (s, Some(m)) => s.min(m),
        }
    }

    /// Outbound memory it holds: its queue's chunks and those its writer
    /// is sending.
    fn out_held(&self) -> usize {
        self.out.held() + self.writing
    }

    fn new() -> ConnEntry {
        ConnEntry {
            out: OutQueue::default(),
            waker: None,
            sids: FxHashMap::default(),
            echo: true,
            headers: false,
            account: AccountId::GLOBAL,
            perms: None,
            max_subs: None,
            subs_limit_reached: false,
            link: LinkKind::Client,
            pending_at_close: 0,
            interest_seq: 0,
            deferred_pongs: Vec::new(),
            closing: None,
            out_msgs: 0,
            out_bytes: 0,
            last_drain: None,
            writing: 0,
            in_msgs: 0,
            in_bytes: 0,
            affinity: moves::Affinity::default(),
            moving_in: None,
            moved_at: None,
            name: None,
            untraced_peer: false,
            detail: None,
            rtt: Duration::ZERO,
            may_move: false,
            move_to: None,
        }
    }

    /// Why the connection is being closed, once decided.
    pub fn closing(&self) -> Option<CloseReason> {
        self.closing
    }

    /// The account the connection is bound to.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// What kind of link the connection is.
    pub fn link(&self) -> LinkKind {
        self.link
    }

    /// Number of subscriptions the connection holds.
    pub fn subscription_count(&self) -> usize {
        self.sids.len()
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

#[derive(Debug, Clone)]
struct LocalSub {
    conn: ConnId,
    account: AccountId,
    sid: Sid,
    subject: Box<[u8]>,
    queue: Option<Box<[u8]>>,
    max: Option<u64>,
    delivered: u64,
}

/// The subject any authenticated user may ask about itself on.
pub const USER_INFO: &[u8] = b"$SYS.REQ.USER.INFO";

/// Requests a client of any account may make about its own account, as
/// nats-server's automatic service imports into every account allow; the
/// system account's clients reach the server-wide services instead.
pub const ACCOUNT_REQUESTS: &[&[u8]] = &[
    b"$SYS.REQ.ACCOUNT.PING.CONNZ",
    b"$SYS.REQ.SERVER.PING.CONNZ",
    b"$SYS.REQ.ACCOUNT.PING.STATZ",
];

/// A `$SYS` request a client made about itself or its account, delivered
/// to its shard's self-service link (see [`ShardCore::add_self_service`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfRequest {
    /// The connection that asked (a client on this shard).
    pub from: ConnId,
    /// The account it asked in.
    pub account: AccountId,
    /// The request subject.
    pub subject: Box<[u8]>,
    /// Where the answer goes (in the client's account).
    pub reply: Box<[u8]>,
    /// The request body.
    pub body: Box<[u8]>,
    /// Its header block (empty without one).
    pub header: Box<[u8]>,
}

/// A message delivered to a server-internal subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalMsg {
    /// The internal connection it was delivered to.
    pub conn: ConnId,
    /// The subscription's sid.
    pub sid: Vec<u8>,
    /// Subject.
    pub subject: Vec<u8>,
    /// Reply subject.
    pub reply: Option<Vec<u8>>,
    /// Header block length at the front of `message`.
    pub header_len: Option<usize>,
    /// Headers and payload.
    pub message: Vec<u8>,
}

/// Where a message being routed came from: the link that published it
/// (kept out of its own deliveries when it asked for no echo) and that
/// link's kind (whose forwarding rules apply). Messages the server makes
/// itself have no origin.
#[derive(Clone, Copy, Debug)]
struct Origin {
    conn: ConnId,
    echo: bool,
    link: LinkKind,
}

impl Origin {
    /// Whether a subscription `s` may receive what came from here.
    #[inline]
    fn admits(&self, s: &SubRef) -> bool {
        (self.echo || s.conn != self.conn) && self.link.forwards_to(s.key.link())
    }
}

/// One message being routed, borrowed from wherever it came from.
#[derive(Clone, Copy)]
struct Msg<'a> {
    subject: &'a [u8],
    reply: Option<&'a [u8]>,
    header_len: Option<usize>,
    message: &'a [u8],
    /// For a message that came over a route: the queue groups the sending
    /// server picked this one for (no others get it). `None`: every group.
    queues: Option<&'a [&'a [u8]]>,
    /// The remote cluster of the leaf connection it came from, on this
    /// server or (`LMSG` over a route) another: it never goes to a leaf
    /// connection of that cluster, and routes are told it.
    origin_cluster: Option<&'a [u8]>,
    /// For a response to a measured request (`latency.rs`): the
    /// responder's `ClientInfo` JSON, added where it was published.
    responder: Option<&'a [u8]>,
}

/// A shard's routing state.
pub struct ShardCore {
    id: ShardId,
    nshards: usize,
    cfg: CoreConfig,
    /// One index replica per account, by account id.
    indexes: Vec<SubIndex>,
    imports: Arc<Imports>,
    has_imports: bool,
    has_mappings: bool,
    internal_inbox: Vec<InternalMsg>,
    /// Route interest and per-message route deliveries (`routes.rs`).
    routes: routes::RouteState,
    leafs: leafs::LeafState,
    /// This shard's self-service link: it holds, in every account's index
    /// replica here and nowhere else, the subscriptions to the `$SYS`
    /// requests a client makes about itself ([`USER_INFO`],
    /// [`ACCOUNT_REQUESTS`]), so they are matched like any subject.
    self_service: Option<ConnId>,
    self_requests: mailbox::Mailbox<SelfRequest>,
    /// This shard's reply space for service requests (`responses.rs`).
    responses: responses::Responses,
    /// The trace of the message being routed (`trace.rs`).
    tracing: Option<Box<trace::ActiveTrace>>,
    traces: trace::Traces,
    /// Traces and latency measurements for the runtime (`reports.rs`).
    reports: reports::Reports,
    /// This server's name, for detailed client information.
    server_name: Box<str>,
    /// Its hash, in measured requests' reply subjects (`latency.rs`).
    server_hash: [u8; latency::SERVER_HASH_LEN],
    /// Measured requests from other servers delivered to clients here,
    /// by client and reply subject (`latency.rs`).
    remote_requests: FxHashMap<(ConnId, Box<[u8]>), latency::RemoteRequest>,
    /// Connections and subscriptions of links that are not clients (not
    /// counted as the server's connections and subscriptions).
    server_links: usize,
    server_link_subs: usize,
    /// Account names by id, for encoders that name the account (routes).
    account_names: Vec<Box<[u8]>>,
    system_account: Option<AccountId>,
    /// Picks queue group members; seeded from outside ([`Self::seed`]).
    rng: fastrand::Rng,
    /// Connections just closed as slow consumers, whose sockets the shard
    /// shuts at once (their writer may be stuck writing to a reader that
    /// does not read).
    cut_off: Vec<ConnId>,
    now: Instant,
    conns: FxHashMap<ConnId, ConnEntry>,
    subs: FxHashMap<SubKey, LocalSub>,
    next_sub: u64,
    outbox: Vec<Outbox>,
    /// Publish number at which each outbox last received a message.
    outbox_msg_of: Vec<u64>,
    publishes: u64,
    interest_seq: u64,
    interest_pending: bool,
    acked: Vec<u64>,
    waiting_pongs: Vec<ConnId>,
    counters: Counters,
    stall: bool,
    /// Clients that paced their publishers while reading: the reader that
    /// fed them waits for these to drain (see [`Self::lagging_over`]).
    lagging: Vec<ConnId>,
    /// Readers paced by `lagging` clients, woken when a writer takes one
    /// of those below [`SOFT_RESUME`] (see [`Self::wait_for_drain`]).
    pacers: Vec<Waker>,
    pools: Arc<BufferPools>,
    chunks: ChunkPool,
    /// The shard whose batch is being applied (this one's own otherwise).
    delivering_from: ShardId,
    /// Connections moved away whose old keys other shards may still use.
    tombstones: FxHashMap<ConnId, moves::Tombstone>,
    /// Old key of a moved connection's subscription to its new one.
    forwards: FxHashMap<SubKey, SubRef>,
    /// Connections moved here that became live (`take_arrived`).
    arrived: Vec<ConnId>,
}

impl ShardCore {
    /// The core of shard `id` out of `nshards` with exchange queues of its
    /// own: only for a core that talks to no other (one shard, fuzzing).
    /// Cores that work together share one [`BufferPools`] via [`Self::with_pools`].
    /// `now` starts its clock ([`Self::set_now`] moves it).
    pub fn new(id: ShardId, nshards: usize, cfg: CoreConfig, now: Instant) -> ShardCore {
        Self::with_pools(id, nshards, cfg, Arc::new(BufferPools::new(nshards)), now)
    }

    /// The core of shard `id`, recycling batch buffers through `pools`
    /// (one `BufferPools` shared by all shards), its clock starting at `now`.
    pub fn with_pools(
        id: ShardId,
        nshards: usize,
        cfg: CoreConfig,
        pools: Arc<BufferPools>,
        now: Instant,
    ) -> ShardCore {
        ShardCore {
            pools,
            chunks: ChunkPool::default(),
            id,
            nshards,
            indexes: vec![SubIndex::new(cfg.sublist_cache)],
            imports: Arc::new(Imports::default()),
            has_imports: false,
            has_mappings: false,
            internal_inbox: Vec::new(),
            routes: routes::RouteState::default(),
            leafs: leafs::LeafState::default(),
            self_service: None,
            self_requests: Default::default(),
            responses: Default::default(),
            tracing: None,
            traces: Default::default(),
            reports: Default::default(),
            server_name: Box::from(""),
            server_hash: latency::server_hash(""),
            remote_requests: FxHashMap::default(),
            server_links: 0,
            server_link_subs: 0,
            account_names: Vec::new(),
            system_account: None,
            // Deterministic until the runtime seeds it.
            rng: fastrand::Rng::with_seed(id.0 as u64 + 1),
            cut_off: Vec::new(),
            now,
            cfg,
            conns: FxHashMap::default(),
            subs: FxHashMap::default(),
            next_sub: 1,
            outbox: (0..nshards).map(|_| Outbox::default()).collect(),
            outbox_msg_of: vec![0; nshards],
            publishes: 0,
            interest_seq: 0,
            interest_pending: false,
            acked: vec![0; nshards],
            waiting_pongs: Vec::new(),
            counters: Counters::default(),
            stall: false,
            lagging: Vec::new(),
            pacers: Vec::new(),
            delivering_from: id,
            tombstones: FxHashMap::default(),
            forwards: FxHashMap::default(),
            arrived: Vec::new(),
        }
    }

    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// Replaces the settings (config reload).
    pub fn set_config(&mut self, cfg: CoreConfig) {
        self.cfg = cfg;
    }

    /// Seeds the choice of queue group members (randomness is an input).
    pub fn seed(&mut self, seed: u64) {
        self.rng.seed(seed);
    }

    /// The counters as of now.
    pub fn counters(&self) -> Counters {
        // Links that are not clients (the internal client, routes, leaf
        // nodes) and their subscriptions are not client connections
        // (nats-server counts its internal subscriptions; petrel reports
        // clients' only).
        Counters {
            subscriptions: (self.subs.len() - self.server_link_subs) as u64,
            connections: (self.conns.len() - self.server_links) as u64,
            ..self.counters
        }
    }

    /// Names `account` for encoders that put the account on the wire
    /// (messages sent over routes).
    pub fn name_account(&mut self, account: AccountId, name: &str) {
        let i = account.index();
        if i >= self.account_names.len() {
            self.account_names.resize_with(i + 1, Default::default);
        }
        self.account_names[i] = name.as_bytes().into();
    }

    /// An account's index replica (read access for monitoring and tests).
    pub fn index(&self, account: AccountId) -> Option<&SubIndex> {
        self.indexes.get(account.index())
    }

    /// Installs the accounts' imports (shared by every shard).
    pub fn set_imports(&mut self, imports: Arc<Imports>) {
        let old = std::mem::replace(&mut self.imports, imports.clone());
        self.has_imports = imports.has_services() || imports.any();
        self.has_mappings = imports.has_mappings();
        self.reroute_imports(&old, &imports);
        self.note_mapping_sources(&old, &imports);
        self.sync_reply_subs();
    }

    /// Sets the time permission bookkeeping uses (response windows); the
    /// runtime calls it before each read and batch.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.sweep_requests();
    }

    fn index_mut(&mut self, account: AccountId) -> &mut SubIndex {
        let i = account.index();
        if i >= self.indexes.len() {
            self.grow_indexes(i + 1);
        }
        &mut self.indexes[i]
    }

    /// Adds the index replicas of accounts first seen, with the
    /// self-service link's subscriptions in each.
    #[cold]
    fn grow_indexes(&mut self, len: usize) {
        let (old, cache) = (self.indexes.len(), self.cfg.sublist_cache);
        self.indexes.resize_with(len, || SubIndex::new(cache));
        if let Some(cid) = self.self_service {
            for i in old..len {
                self.add_self_subs(cid, AccountId(i as u32));
            }
        }
    }

    /// Registers this shard's self-service link `cid`: from now on every
    /// account's index replica here holds its subscriptions to
    /// [`USER_INFO`] and, outside the system account (whose clients reach
    /// the server-wide services), to [`ACCOUNT_REQUESTS`]. They are never
    /// sent to other shards or servers: a request is answered by the
    /// requester's own shard, from the requester's identity. What they
    /// receive is taken with [`Self::poll_self_requests`].
    pub fn add_self_service(&mut self, cid: ConnId) {
        let account = self.system_account.unwrap_or(AccountId::GLOBAL);
        self.add_link(cid, LinkKind::System, account);
        self.self_service = Some(cid);
        for i in 0..self.indexes.len() {
            self.add_self_subs(cid, AccountId(i as u32));
        }
    }

    fn add_self_subs(&mut self, cid: ConnId, account: AccountId) {
        let account_requests: &[&[u8]] = if Some(account) == self.system_account {
            &[]
        } else {
            ACCOUNT_REQUESTS
        };
        for subject in std::iter::once(&USER_INFO).chain(account_requests) {
            let key = SubKey::of_link(self.id, LinkKind::System, self.next_sub);
            let sid = Sid::from_bytes(self.next_sub.to_string().as_bytes());
            self.next_sub += 1;
            self.server_link_subs += 1;
            self.indexes[account.index()].insert(subject, None, SubRef { key, conn: cid });
            if let Some(c) = self.conns.get_mut(&cid) {
                c.sids.insert(sid.clone(), key);
            }
            self.subs.insert(
                key,
                LocalSub {
                    conn: cid,
                    account,
                    sid,
                    subject: (*subject).into(),
                    queue: None,
                    max: None,
                    delivered: 0,
                },
            );
        }
    }

    /// Moves the requests the self-service link received into `into`, or
    /// registers `waker` for the next one.
    pub fn poll_self_requests(&mut self, into: &mut Vec<SelfRequest>, waker: &Waker) -> bool {
        self.self_requests.poll(into, waker)
    }

    /// A request matched by the self-service link: kept for the shard when
    /// a client of this server asked and wants an answer. Requests that
    /// came over a route or leaf node are answered by the requester's own
    /// server.
    #[cold]
    fn self_request(&mut self, account: AccountId, msg: &Msg<'_>, origin: Option<Origin>) -> bool {
        let Some(o) = origin.filter(|o| o.link == LinkKind::Client) else {
            return false;
        };
        let Some(reply) = msg.reply else { return true };
        let header_len = msg.header_len.unwrap_or(0).min(msg.message.len());
        let (hdr, body) = msg.message.split_at(header_len);
        self.self_requests.push(SelfRequest {
            from: o.conn,
            account,
            subject: msg.subject.into(),
            reply: reply.into(),
            body: body.into(),
            header: hdr.into(),
        });
        true
    }

    /// Registers a link that is not an application's client, bound to
    /// `account`: the server's internal client ([`LinkKind::System`], whose
    /// deliveries are taken with [`Self::poll_internal`]), or a route or
    /// leaf node connection. Its subscriptions route like a client's, under
    /// the forwarding rules of its kind.
    pub fn add_link(&mut self, cid: ConnId, link: LinkKind, account: AccountId) {
        let mut c = ConnEntry::new();
        c.link = link;
        c.account = account;
        c.headers = true;
        self.conns.insert(cid, c);
        if link != LinkKind::Client {
            self.server_links += 1;
        } else {
            self.counters.total_connections += 1;
        }
        self.index_mut(account);
    }

    /// Moves the messages delivered to internal subscriptions into `into`,
    /// or registers `waker` for the next one.
    pub fn poll_internal(&mut self, into: &mut Vec<InternalMsg>, waker: &Waker) -> bool {
        if self.internal_inbox.is_empty() {
            for c in self.conns.values_mut().filter(|c| c.link == LinkKind::System) {
                c.waker = Some(waker.clone());
            }
            return false;
        }
        into.append(&mut self.internal_inbox);
        true
    }

    /// Names the system account, whose clients reach the server-wide
    /// services rather than their account's.
    pub fn set_system_account(&mut self, account: AccountId) {
        self.system_account = Some(account);
    }

    /// Local client connections bound to `account`.
    pub fn conns_of(&self, account: AccountId) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.account == account && c.link == LinkKind::Client)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Writes `-ERR` for `e` to a connection and closes it.
    pub fn fail_conn(&mut self, cid: ConnId, e: WireError) {
        if let Some(c) = self.conns.get_mut(&cid) {
            if c.closing.is_none() {
                encode::err(c.out.tail(), e);
            }
        }
        if let Some(reason) = e.closes() {
            self.close_conn(cid, reason);
        }
    }

    /// Registers a new local connection.
    pub fn add_conn(&mut self, cid: ConnId) {
        self.conns.insert(cid, ConnEntry::new());
        self.counters.total_connections += 1;
    }

    /// A local connection's entry.
    pub fn conn(&self, cid: ConnId) -> Option<&ConnEntry> {
        self.conns.get(&cid)
    }

    /// A local connection's entry, mutable.
    pub fn conn_mut(&mut self, cid: ConnId) -> Option<&mut ConnEntry> {
        self.conns.get_mut(&cid)
    }

    /// Records the CONNECT options routing depends on.
    pub fn set_conn_opts(&mut self, cid: ConnId, echo: bool, headers: bool) {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.echo = echo;
            c.headers = headers;
        }
    }

    /// Binds a connection to its account and permissions (after CONNECT).
    pub fn set_conn_identity(
        &mut self,
        cid: ConnId,
        account: AccountId,
        perms: Option<Arc<Permissions>>,
        max_subs: Option<usize>,
    ) {
        self.index_mut(account);
        if let Some(c) = self.conns.get_mut(&cid) {
            c.account = account;
            c.perms = perms.map(ConnPermissions::new);
            c.max_subs = max_subs;
        }
    }

    /// Applies the client's subscription limit as nats-server does when a
    /// client registers (CONNECT) or its account's claims change (not on
    /// a reload): one already met is acted on by
    /// [`ShardCore::enforce_subs_limit`].
    pub fn check_subs_limit(&mut self, cid: ConnId) {
        let server_max = self.cfg.max_subscriptions;
        if let Some(c) = self.conns.get_mut(&cid) {
            c.subs_limit_reached = c.link == LinkKind::Client && c.sids.len() >= c.sub_limit(server_max);
        }
    }

    /// As nats-server: a client that already holds as many subscriptions
    /// as the limit just applied allows (a user JWT with `subs: 0`, an
    /// account update lowering the limit) is told `maximum subscriptions
    /// exceeded` and closed. Called once what it sent with its CONNECT is
    /// handled, so earlier replies come first (nats-server's close runs
    /// on its own goroutine, after the read in progress).
    /// Returns whether it closed the client (the host logs it).
    pub fn enforce_subs_limit(&mut self, cid: ConnId) -> bool {
        let Some(c) = self.conns.get_mut(&cid) else {
            return false;
        };
        if !std::mem::take(&mut c.subs_limit_reached) || c.closing.is_some() {
            return false;
        }
        encode::err(c.out.tail(), WireError::MaxSubscriptionsExceeded);
        self.close_conn(cid, CloseReason::MaxSubscriptionsExceeded);
        true
    }

    /// Removes a connection's subscriptions its (changed) permissions no
    /// longer allow, telling the client about each as nats-server does.
    pub fn enforce_subscriptions(&mut self, cid: ConnId) {
        let Some(c) = self.conns.get(&cid) else { return };
        let Some(p) = c.perms.as_ref() else { return };
        let doomed: Vec<SubKey> = c
            .sids
            .values()
            .copied()
            .filter(|k| {
                self.subs
                    .get(k)
                    .is_some_and(|s| !p.may_subscribe(&s.subject, s.queue.as_deref()))
            })
            .collect();
        for key in doomed {
            if let Some(s) = self.subs.get(&key) {
                let text = crate::proto::errors::permissions_violation(crate::proto::errors::Violation::Removed(
                    &s.subject,
                    s.queue.as_deref(),
                    s.sid.as_bytes(),
                ));
                if let Some(c) = self.conns.get_mut(&cid) {
                    encode::err_text(c.out.tail(), &text);
                    c.interest_seq = self.interest_seq + 1;
                }
            }
            self.remove_sub(key);
        }
        self.wake(cid);
    }

    /// Moves the connection's pending output chunks to `into`, or registers
    /// `waker` to be woken when there is some. Returns `Err` once the
    /// connection is closing and its output is drained.
    pub fn poll_output(
        &mut self,
        cid: ConnId,
        into: &mut Vec<Vec<u8>>,
        waker: &Waker,
    ) -> Option<Result<(), CloseReason>> {
        let c = self.conns.get_mut(&cid)?;
        if !c.out.is_empty() {
            c.out.drain_into(into, &mut self.chunks);
            c.writing = into.iter().map(Vec::capacity).sum();
            c.last_drain = Some(self.now);
            if c.out.len() <= SOFT_RESUME && !self.pacers.is_empty() && self.lagging.contains(&cid) {
                // The readers it paced check again now, not at their next tick.
                for w in self.pacers.drain(..) {
                    w.wake();
                }
            }
            return Some(Ok(()));
        }
        if let Some(r) = c.closing {
            return Some(Err(r));
        }
        c.waker = Some(waker.clone());
        None
    }

    /// Marks a connection as closing (the writer drains and shuts it).
    pub fn close_conn(&mut self, cid: ConnId, reason: CloseReason) {
        if let Some(c) = self.conns.get_mut(&cid) {
            if c.closing.is_none() {
                c.closing = Some(reason);
                if reason == CloseReason::StaleConnection {
                    self.counters.stale_connections += 1;
                }
            }
            c.wake();
        }
    }

    /// Takes the connections closed as slow consumers since the last call.
    pub fn take_cut_off(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.cut_off)
    }

    /// `cid`'s writer has written a chunk at `now`: the connection is
    /// being read, however long its whole write takes.
    pub fn note_written(&mut self, cid: ConnId, now: Instant) {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.last_drain = Some(now);
        }
    }

    /// Takes back chunks `cid`'s writer has sent.
    pub fn recycle_chunks(&mut self, cid: ConnId, chunks: impl Iterator<Item = Vec<u8>>) {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.writing = 0;
        }
        for c in chunks {
            self.chunks.give_back(c);
        }
    }

    /// Outbound memory `cid` holds: its queue's chunks and those its
    /// writer is sending (monitoring's per-connection memory).
    pub fn out_held(&self, cid: ConnId) -> usize {
        self.conns.get(&cid).map_or(0, ConnEntry::out_held)
    }

    /// Outbound memory of every connection of the shard (clients, routes,
    /// leaf nodes), and what its chunk pool keeps for reuse.
    pub fn out_memory(&self) -> (usize, usize) {
        let conns = self.conns.values().map(ConnEntry::out_held).sum();
        (conns, self.chunks.held())
    }

    /// A local connection's subscriptions as (subject, queue, sid), for
    /// monitoring.
    pub fn subscriptions_of(&self, cid: ConnId) -> Vec<(String, Option<String>, String)> {
        let Some(c) = self.conns.get(&cid) else {
            return Vec::new();
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        c.sids
            .values()
            .filter_map(|k| self.subs.get(k))
            .map(|s| (text(&s.subject), s.queue.as_deref().map(text), text(s.sid.as_bytes())))
            .collect()
    }

    /// The replicas' totals over all accounts: subscriptions, cached
    /// results, work counters, largest and summed cached fan-out.
    pub fn index_totals(&self) -> (u64, u64, crate::index::IndexStats, u64, u64) {
        let mut t = (0u64, 0u64, crate::index::IndexStats::default(), 0u64, 0u64);
        for ix in &self.indexes {
            t.0 += ix.len() as u64;
            t.1 += ix.cache_len() as u64;
            let st = ix.stats();
            t.2.inserts += st.inserts;
            t.2.removes += st.removes;
            t.2.matches += st.matches;
            t.2.cache_hits += st.cache_hits;
            let (max, sum) = ix.cached_fanout();
            t.3 = t.3.max(max);
            t.4 += sum;
        }
        // Only the shard owning a server link holds its subscriptions.
        t.0 = t.0.saturating_sub(self.server_link_subs as u64);
        t
    }

    /// Injects a message into `account` as the server itself (system
    /// events and replies): routed to that account's subscribers like a
    /// client's publish, with no publisher to skip.
    pub fn inject(&mut self, account: AccountId, subject: &[u8], reply: Option<&[u8]>, message: &[u8]) -> bool {
        self.inject_msg(account, subject, reply, None, message)
    }

    /// [`Self::inject`] of a message with a header block of `header_len`
    /// bytes at its start.
    pub fn inject_msg(
        &mut self,
        account: AccountId,
        subject: &[u8],
        reply: Option<&[u8]>,
        header_len: Option<usize>,
        message: &[u8],
    ) -> bool {
        let msg = Msg {
            subject,
            reply,
            header_len,
            message,
            queues: None,
            origin_cluster: None,
            responder: None,
        };
        let any = self.route_in(account, &msg, None);
        self.serve_responses();
        any
    }

    /// Whether anyone but the server's internal clients subscribes to
    /// `subject` in `account` (STATSZ heartbeats are sent only then).
    pub fn has_external_interest(&mut self, account: AccountId, subject: &[u8]) -> bool {
        let m = self.index_mut(account).matches(subject);
        let external = |s: &SubRef| s.key.link() != LinkKind::System;
        m.plain.iter().any(external) || m.queues.iter().any(|g| g.members.iter().any(external))
    }

    /// Wakes the connection's writer if it has output.
    pub fn wake(&mut self, cid: ConnId) {
        if let Some(c) = self.conns.get_mut(&cid) {
            if !c.out.is_empty() || c.closing.is_some() {
                c.wake();
            }
        }
    }

    /// True (once) when a delivery left a subscriber above 75 % of
    /// `max_pending`: the publisher should pause briefly, as nats-server's
    /// fast-producer stall does, so bursts do not cut off healthy readers.
    pub fn take_stall(&mut self) -> bool {
        std::mem::take(&mut self.stall)
    }

    /// Whether a client that paced its publishers still holds more than
    /// `limit` queued bytes and is still reading (one that stopped is
    /// left to the slow-consumer limit): the reader that fed it waits
    /// while this holds. Forgets the clients that no longer do.
    pub fn lagging_over(&mut self, limit: usize) -> bool {
        let (conns, now) = (&self.conns, self.now);
        self.lagging
            .retain(|cid| conns.get(cid).is_some_and(|c| c.out.len() > limit && c.reading(now)));
        !self.lagging.is_empty()
    }

    /// Wakes `waker` when the writer of a client in [`Self::lagging_over`]'s
    /// list takes its queue down to [`SOFT_RESUME`]: a paced reader goes on
    /// as soon as its subscribers can take more, not a fixed pause later.
    pub fn wait_for_drain(&mut self, waker: &Waker) {
        if !self.pacers.iter().any(|w| w.will_wake(waker)) {
            self.pacers.push(waker.clone());
        }
    }

    /// Counts a client closed because a write passed the write deadline.
    pub fn count_slow_consumer(&mut self) {
        self.counters.slow_consumers += 1;
    }

    /// Forgets a connection and all its subscriptions.
    pub fn remove_conn(&mut self, cid: ConnId) {
        let Some(c) = self.conns.get(&cid) else {
            return;
        };
        let keys: Vec<SubKey> = c.sids.values().copied().collect();
        for k in keys {
            self.remove_sub(k);
        }
        if self.conns.remove(&cid).is_some_and(|c| c.link != LinkKind::Client) {
            self.server_links -= 1;
            self.forget_route(cid);
        }
        self.remove_leaf(cid);
        self.waiting_pongs.retain(|w| *w != cid);
        if !self.remote_requests.is_empty() {
            self.prune_remote_requests(Some(cid));
        }
    }

    /// Adds a subscription for a local connection.
    pub fn subscribe(&mut self, cid: ConnId, subj: &[u8], queue: Option<&[u8]>, sid: &[u8]) -> Result<(), WireError> {
        self.subscribe_in(cid, None, subj, queue, sid)
    }

    /// Adds a subscription for a local connection in `account`, or in the
    /// connection's own account (`None`); routes name the account per
    /// subscription.
    fn subscribe_in(
        &mut self,
        cid: ConnId,
        account: Option<AccountId>,
        subj: &[u8],
        queue: Option<&[u8]>,
        sid: &[u8],
    ) -> Result<(), WireError> {
        let server_max = self.cfg.max_subscriptions;
        let Some(c) = self.conns.get_mut(&cid) else {
            return Ok(());
        };
        if c.perms.as_ref().is_some_and(|p| !p.may_subscribe(subj, queue)) {
            return Err(WireError::PermissionsViolation);
        }
        if c.link == LinkKind::Client && c.sids.len() >= c.sub_limit(server_max) {
            return Err(WireError::MaxSubscriptionsExceeded);
        }
        let account = account.unwrap_or(c.account);
        let link = c.link;
        let key = SubKey::of_link(self.id, link, self.next_sub);
        match c.sids.entry(Sid::from_bytes(sid)) {
            Entry::Occupied(_) => return Ok(()), // nats-server keeps the first
            Entry::Vacant(v) => {
                v.insert(key);
            }
        }
        self.next_sub += 1;
        if c.link != LinkKind::Client {
            self.server_link_subs += 1;
        }
        c.interest_seq = self.interest_seq + 1;
        let sub = SubRef { key, conn: cid };
        self.index_mut(account).insert(subj, queue, sub);
        self.subs.insert(
            key,
            LocalSub {
                conn: cid,
                account,
                sid: Sid::from_bytes(sid),
                subject: subj.into(),
                queue: queue.map(Into::into),
                max: None,
                delivered: 0,
            },
        );
        self.note_interest(account, subj, queue, link, Some(cid), true);
        self.broadcast(|| InterestChange::Add {
            account,
            subject: subj.into(),
            queue: queue.map(Into::into),
            sub,
        });
        Ok(())
    }

    /// Removes a subscription now, or after `max` deliveries in all.
    pub fn unsubscribe(&mut self, cid: ConnId, sid: &[u8], max: Option<u64>) {
        let Some(c) = self.conns.get_mut(&cid) else {
            return;
        };
        let Some(&key) = c.sids.get(sid) else { return };
        if let Some(max) = max {
            if let Some(s) = self.subs.get_mut(&key) {
                if max > s.delivered {
                    s.max = Some(max);
                    return;
                }
            }
        }
        c.interest_seq = self.interest_seq + 1;
        self.remove_sub(key);
    }

    fn broadcast(&mut self, change: impl Fn() -> InterestChange) {
        for (i, ob) in self.outbox.iter_mut().enumerate() {
            if i != self.id.index() {
                ob.interest.push(change());
            }
        }
        if self.nshards > 1 {
            self.interest_pending = true;
        }
    }

    fn remove_sub(&mut self, key: SubKey) {
        let Some(s) = self.subs.remove(&key) else {
            return;
        };
        self.index_mut(s.account).remove(&s.subject, s.queue.as_deref(), key);
        if let Some(c) = self.conns.get_mut(&s.conn) {
            c.sids.remove(&s.sid);
            if c.link != LinkKind::Client {
                self.server_link_subs -= 1;
            }
        }
        let (subject, queue, account, conn) = (s.subject, s.queue, s.account, s.conn);
        self.forget_queue_weight(key, queue.is_some());
        self.note_interest(account, &subject, queue.as_deref(), key.link(), Some(conn), false);
        self.broadcast(|| InterestChange::Remove {
            account,
            subject: subject.clone(),
            queue: queue.clone(),
            key,
            conn,
        });
    }

    /// The subject a message `from` publishes to `subject` goes to under
    /// its account's mappings (`None`: unchanged; empty: dropped by a
    /// weighted pick). One branch when no account has mappings.
    #[inline]
    pub fn map_subject(&mut self, from: ConnId, subject: &[u8]) -> Option<Vec<u8>> {
        if !self.has_mappings {
            return None;
        }
        let account = self.conns.get(&from)?.account;
        let mapped = self.map_in(account, subject);
        if let (Some(to), true) = (&mapped, self.is_tracing()) {
            self.trace_mapped(to);
        }
        mapped
    }

    fn map_in(&mut self, account: AccountId, subject: &[u8]) -> Option<Vec<u8>> {
        if !self.has_mappings {
            return None;
        }
        let cluster = self.cfg.cluster_name.as_deref();
        self.imports.mappings_of(account)?.map(subject, cluster, &mut self.rng)
    }

    /// Whether a local client's permissions let it publish to `subject`
    /// now (a response under `allow_responses` is counted here).
    pub fn may_publish(&mut self, cid: ConnId, subject: &[u8]) -> bool {
        let now = self.now;
        match self.conns.get_mut(&cid).and_then(|c| c.perms.as_mut()) {
            Some(p) => p.may_publish(subject, now),
            None => true,
        }
    }

    /// Routes a message a local link published (a client's permissions
    /// checked by [`Self::may_publish`]) under the forwarding rules of the
    /// link's kind: whether any subscriber, on any shard, will receive it.
    pub fn publish(
        &mut self,
        from: ConnId,
        subject: &[u8],
        reply: Option<&[u8]>,
        header_len: Option<usize>,
        message: &[u8],
    ) -> Routed {
        let (echo, link, account) = match self.conns.get_mut(&from) {
            Some(c) => {
                c.in_msgs += 1;
                c.in_bytes += message.len() as u64;
                (c.echo, c.link, c.account)
            }
            None => (true, LinkKind::Client, AccountId::GLOBAL),
        };
        let msg = Msg {
            subject,
            reply,
            header_len,
            message,
            queues: None,
            origin_cluster: None,
            responder: None,
        };
        self.route_from(account, &msg, Origin { conn: from, echo, link })
    }

    /// Counts and routes a message a link brought in, to `account`'s
    /// subscribers and through its imports: whether anyone will receive it.
    fn route_from(&mut self, account: AccountId, msg: &Msg<'_>, origin: Origin) -> Routed {
        self.counters.in_msgs += 1;
        self.counters.in_bytes += msg.message.len() as u64;
        // A response to a measured request says who responded; one to
        // another server's measured request is measured here for it.
        let responder;
        let with_responder;
        let tracked = msg.subject.ends_with(latency::TRACKED_SUFFIX);
        if tracked && !self.remote_requests.is_empty() && origin.link == LinkKind::Client {
            self.answer_remote_request(origin.conn, msg.subject);
        }
        let msg = if self.has_imports && tracked && msg.subject.starts_with(REPLY_PREFIX) {
            responder = self.client_info_json(origin.conn, true);
            with_responder = Msg {
                responder: responder.as_deref(),
                ..*msg
            };
            &with_responder
        } else {
            msg
        };
        let mut any = self.route_in(account, msg, Some(origin));
        if self.has_imports {
            any |= self.route_imports(account, msg, origin);
        }
        // Responses come without imports too: clients' account requests in
        // a cluster (`account_requests.rs`).
        self.serve_responses();
        if any {
            Routed::Delivered
        } else {
            Routed::NoInterest
        }
    }

    /// Routes `msg` to the subscribers of `account` that its origin
    /// admits (no-echo, forwarding rules). A queue group gets it once, from
    /// a member on this server's own side when it has one.
    fn route_in(&mut self, account: AccountId, msg: &Msg<'_>, origin: Option<Origin>) -> bool {
        let m = self.index_mut(account).matches(msg.subject);
        if m.is_empty() {
            return false;
        }
        self.publishes += 1;
        let admits = |s: &SubRef| origin.as_ref().is_none_or(|o| o.admits(s));
        // A leaf connection's message never goes to another leaf
        // connection of the same remote cluster (nats-server's rule).
        let from_leaf = origin.as_ref().filter(|o| o.link == LinkKind::Leaf).map(|o| o.conn);
        // What a route brought in never goes to this server's hubs: in a
        // leaf cluster each node sends its own side's messages to the hub.
        let from_route = origin.as_ref().is_some_and(|o| o.link == LinkKind::Route);
        // Nor, when a leaf connection of another server sent it (`LMSG`
        // with its cluster), to a leaf connection of that same cluster.
        let routed_from = if from_route {
            msg.origin_cluster.and_then(|c| self.leaf_cluster_id(c))
        } else {
            None
        };
        let blocked = |core: &ShardCore, s: &SubRef| {
            s.key.link() == LinkKind::Leaf
                && (from_leaf.is_some_and(|f| core.leaf_to_leaf_blocked(f, s.conn))
                    || (from_route && core.is_hub_link(s.conn))
                    || routed_from.is_some_and(|c| core.leaf_of_cluster(s.conn, c)))
        };
        let mut shared: Option<Bytes> = None;
        let mut any = false;
        for s in &m.plain {
            if blocked(self, s) {
                continue;
            }
            if admits(s) {
                if s.key.link() == LinkKind::System && Some(s.conn) == self.self_service {
                    any |= self.self_request(account, msg, origin);
                    continue;
                }
                any |= self.route_to(*s, msg, &mut shared);
            } else if self.tracing.is_some() && origin.is_some_and(|o| !o.echo && o.conn == s.conn) {
                if let Some(sub) = self.subs.get(&s.key).cloned() {
                    self.trace_egress(&sub, Some(trace::EgressError::NoEcho));
                }
            }
        }
        for g in &m.queues {
            if msg.queues.is_some_and(|named| !named.contains(&&*g.name)) {
                continue;
            }
            let n = g.members.len();
            let start = self.rng.usize(..n);
            let weighted = !from_route && !self.routes.weights.is_empty();
            let dice = if weighted { self.rng.u32(..) } else { 0 };
            let in_turn = || (0..n).map(|i| g.members[(start + i) % n]).filter(|s| admits(s));
            let same = |s: &SubRef| blocked(self, s);
            let pick = if !weighted {
                // What a route brought goes to this server's members (a
                // leaf connection's if none); with no members behind
                // routes, a local one first too.
                in_turn()
                    .filter(|s| !same(s))
                    .find(|s| s.key.link().is_local())
                    .or_else(|| in_turn().find(|s| !same(s)))
            } else {
                // As nats-server picks for a client's or a leaf
                // connection's message: at random among this server's
                // members and the other servers' own (a route's
                // subscription counts as many as its weight says); failing
                // those, a leaf connection's member or one a route holds
                // for a leaf cluster (not the message's own).
                let weight = |s: &SubRef| -> u32 {
                    match s.key.link() {
                        LinkKind::Client | LinkKind::System => 1,
                        LinkKind::Route => match self.routes.weights.get(&s.key) {
                            Some(w) if w.origin.is_some() => 0,
                            Some(w) => w.weight,
                            None => 1,
                        },
                        LinkKind::Leaf => 0,
                    }
                };
                let total: u32 = in_turn().filter(|s| !same(s)).map(|s| weight(&s)).sum();
                if total > 0 {
                    let mut r = dice % total;
                    in_turn().filter(|s| !same(s)).find(|s| {
                        let w = weight(s);
                        if r < w {
                            return true;
                        }
                        r -= w;
                        false
                    })
                } else {
                    let msg_origin = self.message_leaf_origin(msg, origin);
                    in_turn().filter(|s| !same(s)).find(|s| match s.key.link() {
                        LinkKind::Route => self
                            .routes
                            .weights
                            .get(&s.key)
                            .and_then(|w| w.origin.as_deref())
                            .is_none_or(|o| msg_origin.as_deref() != Some(o)),
                        _ => true,
                    })
                }
            };
            if let Some(s) = pick {
                any |= self.route_to(s, msg, &mut shared);
            }
        }
        if self.routes_pending() {
            self.flush_routes(msg);
        }
        any
    }

    /// Stream imports fed by `account`, service imports it calls, and
    /// responses to service requests it answers. The origin's forwarding
    /// rules still apply in the importing account (its echo does not: the
    /// publisher is in another account).
    fn route_imports(&mut self, account: AccountId, msg: &Msg<'_>, origin: Origin) -> bool {
        let imports = self.imports.clone();
        let origin = Some(Origin { echo: true, ..origin });
        let mut any = false;
        let Some(r) = imports.of(account) else {
            return any;
        };
        // Importers behind routes get a stream from the exporter's account
        // (their server maps it), so the mapped copy stays on this server.
        let stream_origin = origin.map(|o| Origin {
            link: LinkKind::Route,
            ..o
        });
        for si in &r.streams_out {
            if !subject::matches(&si.subject, msg.subject) {
                continue;
            }
            let mapped = si.map(msg.subject);
            let m = Msg {
                subject: mapped.as_deref().unwrap_or(msg.subject),
                ..*msg
            };
            if self.tracing.is_some() {
                if !si.allow_trace {
                    // The importer did not allow tracing: a stream export
                    // event for each of its subscribers, then, only
                    // traced, it stops here; delivered, it goes on
                    // untraced.
                    let matched = self.index_mut(si.to).matches(m.subject);
                    let n = matched.plain.len() + matched.queues.len();
                    for _ in 0..n {
                        let (to, importer) = (m.subject.into(), si.to);
                        self.trace_event(|at| trace::TraceEvent::StreamExport {
                            account: importer,
                            to,
                            at,
                        });
                    }
                    if self.trace_only() {
                        any |= n > 0;
                        continue;
                    }
                    let saved = self.tracing.take();
                    any |= self.route_in(si.to, &m, stream_origin);
                    self.tracing = saved;
                    continue;
                }
                // Each importer subscriber's egress follows its own
                // stream export event (`trace_egress`).
                self.trace_stream_from(Some((account, si.to, m.subject.into())));
                any |= self.route_in(si.to, &m, stream_origin);
                self.trace_stream_from(None);
                continue;
            }
            any |= self.route_in(si.to, &m, stream_origin);
        }
        for sv in &r.services_in {
            if !subject::matches(&sv.local, msg.subject) {
                continue;
            }
            let mut remote = sv.map(msg.subject);
            // The exporter's mappings apply to the requests it receives.
            if let Some(m) = self.map_in(sv.exporter, &remote) {
                remote = m;
            }
            // The request says who asked (`Nats-Request-Info`: account and
            // round trip time, all of it with `share`), as nats-server's do;
            // a client's or leaf connection's only.
            let requestor = origin.and_then(|o| self.client_info_json(o.conn, sv.share));
            let stamped = requestor.as_ref().map(|info| {
                crate::proto::trace::with_header(
                    msg.message,
                    msg.header_len.unwrap_or(0),
                    request_info::REQUEST_INFO,
                    std::str::from_utf8(info).unwrap_or_default(),
                )
            });
            let msg = &Msg {
                header_len: stamped.as_ref().map_or(msg.header_len, |(_, h)| Some(*h)),
                message: stamped.as_ref().map_or(msg.message, |(b, _)| &b[..]),
                ..*msg
            };
            let mut rewritten: Option<(Vec<u8>, usize)> = None;
            let mut untraced = None;
            if self.tracing.is_some() {
                let (from, to) = (msg.subject.into(), remote.as_slice().into());
                self.trace_event(|at| trace::TraceEvent::ServiceImport {
                    account: sv.exporter,
                    from,
                    to,
                    at,
                });
                if !sv.allow_trace {
                    // The exporter did not allow tracing: only traced, the
                    // request stops here; delivered, it goes on untraced
                    // and tells other servers so.
                    if self.trace_only() {
                        continue;
                    }
                    untraced = self.tracing.take();
                    rewritten = msg.header_len.map(|h| {
                        crate::proto::trace::with_header(
                            msg.message,
                            h,
                            crate::proto::trace::TRACE_DEST,
                            crate::proto::trace::TRACE_DISABLED,
                        )
                    });
                } else {
                    // Events from servers beyond come back through the
                    // reply space, as responses do.
                    rewritten = self.trace_dest_through(account, sv.exporter, msg);
                }
            }
            // A measured request (`latency.rs`) is held with its requester.
            let tracking = match &sv.latency {
                Some(l) => self.sample_request(l, msg).map(|header| latency::Tracking {
                    requestor,
                    requestor_rtt: origin.map_or(Duration::ZERO, |o| self.conn_rtt(o.conn)),
                    header,
                    subject: l.subject.as_bytes().into(),
                    measured: None,
                }),
                None => None,
            };
            // Without a reply subject there is nothing to wait for.
            let tracking = match (tracking, msg.reply) {
                (Some(t), None) => {
                    let now = self.now;
                    self.report_failed(sv.exporter, t, now, latency::Failure::BadRequest);
                    None
                }
                (t, _) => t,
            };
            let held = msg
                .reply
                .and_then(|rp| self.hold_request(account, sv.exporter, rp, sv.response, tracking));
            let m = Msg {
                subject: &remote,
                reply: held.as_ref().map(|(r, _)| &r[..]),
                header_len: rewritten.as_ref().map_or(msg.header_len, |(_, h)| Some(*h)),
                message: rewritten.as_ref().map_or(msg.message, |(b, _)| &b[..]),
                ..*msg
            };
            let delivered = self.route_in(sv.exporter, &m, origin);
            if untraced.is_some() {
                self.tracing = untraced;
            }
            if let (false, Some((_, token))) = (delivered && !self.trace_only(), held) {
                self.drop_request(token);
            }
            any |= delivered;
        }
        any
    }

    /// Delivers to a local subscription or queues for the owning shard.
    #[inline]
    fn route_to(&mut self, s: SubRef, msg: &Msg<'_>, shared: &mut Option<Bytes>) -> bool {
        let dest = s.key.shard();
        if self.tracing.is_some() && matches!(s.key.link(), LinkKind::Route | LinkKind::Leaf) {
            self.trace_hop(s.conn);
        }
        if dest == self.id {
            self.deliver_local(s.key, msg);
            return true;
        }
        let publishes = self.publishes;
        if self.outbox_msg_of[dest.index()] != publishes {
            self.outbox_msg_of[dest.index()] = publishes;
            let trace = if self.tracing.is_some() {
                self.trace_tag_for(dest)
            } else {
                None
            };
            let ob = &mut self.outbox[dest.index()];
            let subject = ob.push_bytes(msg.subject);
            let reply = msg.reply.map(|r| ob.push_bytes(r));
            let origin = msg.origin_cluster.map(|o| ob.push_bytes(o));
            let responder = msg.responder.map(|r| ob.push_bytes(r));
            let body = if msg.message.len() >= SHARE_THRESHOLD {
                ob.shared_bytes += msg.message.len();
                Body::Shared(
                    shared
                        .get_or_insert_with(|| Bytes::copy_from_slice(msg.message))
                        .clone(),
                )
            } else {
                Body::Inline(ob.push_bytes(msg.message))
            };
            let start = ob.targets.len() as u32;
            ob.msgs.push(RemoteMsg {
                subject,
                reply,
                origin,
                header_len: msg.header_len.map(|h| h as u32),
                body,
                targets: Span { start, len: 0 },
                trace,
                responder,
            });
        }
        let ob = &mut self.outbox[dest.index()];
        ob.targets.push(s.key);
        ob.msgs.last_mut().expect("message pushed above").targets.len += 1;
        true
    }

    /// Writes a message to a local subscriber; applies auto-unsubscribe and
    /// the slow-consumer limit.
    fn deliver_local(&mut self, key: SubKey, msg: &Msg<'_>) {
        if self.tracing.is_some() && !self.trace_delivery(key, msg) {
            return;
        }
        let Some(sub) = self.subs.get_mut(&key) else {
            if !self.forwards.is_empty() {
                self.forward(key, msg);
            }
            return;
        };
        let Some(c) = self.conns.get_mut(&sub.conn) else {
            return;
        };
        if c.closing.is_some() {
            return;
        }
        // A subscribe deny list also filters what wildcard subscriptions
        // receive, as nats-server's delivery filter does.
        if c.perms.as_mut().is_some_and(|p| p.delivery_denied(msg.subject)) {
            return;
        }
        if c.link == LinkKind::Client {
            c.affinity.note(self.delivering_from, self.now);
        }
        // A connection arriving from another shard holds what a shard not
        // yet clear sends it directly (`moves.rs`).
        let held = match c.moving_in.as_mut() {
            Some(m) => m.hold_for(self.delivering_from),
            None => None,
        };
        let out = match held {
            Some(h) => h,
            None => c.out.tail(),
        };
        match c.link {
            LinkKind::Client => match (msg.header_len, c.headers) {
                (Some(h), true) => encode::hmsg(out, msg.subject, sub.sid.as_bytes(), msg.reply, h, msg.message),
                (Some(h), false) => encode::msg(out, msg.subject, sub.sid.as_bytes(), msg.reply, &msg.message[h..]),
                (None, _) => encode::msg(out, msg.subject, sub.sid.as_bytes(), msg.reply, msg.message),
            },
            LinkKind::System if self.responses.is_link(sub.conn) => {
                let exporter = sub.account;
                self.responses.catch(exporter, msg);
                return;
            }
            LinkKind::System => {
                self.internal_inbox.push(InternalMsg {
                    conn: sub.conn,
                    sid: sub.sid.as_bytes().to_vec(),
                    subject: msg.subject.to_vec(),
                    reply: msg.reply.map(<[u8]>::to_vec),
                    header_len: msg.header_len,
                    message: msg.message.to_vec(),
                });
                c.wake();
                return;
            }
            LinkKind::Route => {
                // One message per route however many of its subscriptions
                // matched: sent by `flush_routes` once the message is routed.
                self.queue_route_delivery(key);
                return;
            }
            LinkKind::Leaf => {
                // As a route: one message per leaf connection, with the
                // queue groups that picked it (`flush_routes`).
                self.queue_route_delivery(key);
                return;
            }
        }
        c.out.rotate(&mut self.chunks);
        c.out_msgs += 1;
        c.out_bytes += msg.message.len() as u64;
        self.counters.out_msgs += 1;
        self.counters.out_bytes += msg.message.len() as u64;
        let queued = c.out.len();
        if self.cfg.no_stall {
            // nats-server's `no_fast_producer_stall`: nobody is paced.
        } else if queued > self.cfg.max_pending / 4 * 3 {
            self.stall = true;
        } else if queued > SOFT_STALL && c.reading(self.now) {
            // A subscriber that reads, only slower than its publishers:
            // pace them now rather than queue up to the hard limit (which
            // only grew memory and page faults, and slowed everyone). One
            // that stopped reading is not paced by this: healthy
            // subscribers keep their rate until it is cut off.
            self.stall = true;
            if !self.lagging.contains(&sub.conn) {
                self.lagging.push(sub.conn);
            }
        }
        if c.out.len() > self.cfg.max_pending {
            // nats-server drops what was queued and closes, without -ERR.
            c.pending_at_close = c.out.len();
            c.out.discard();
            c.closing = Some(CloseReason::SlowConsumerPendingBytes);
            self.counters.slow_consumers += 1;
            self.cut_off.push(sub.conn);
        }
        if let (Some(p), Some(reply)) = (c.perms.as_mut(), msg.reply) {
            p.note_reply(reply, self.now);
        }
        c.wake();
        sub.delivered += 1;
        let (conn, account) = (sub.conn, sub.account);
        if sub.max.is_some_and(|m| sub.delivered >= m) {
            self.remove_sub(key);
        }
        // A request another server measures is timed here until the client
        // responds (`latency.rs`).
        if msg.reply.is_some_and(|r| r.ends_with(latency::TRACKED_SUFFIX)) && self.imports.has_service_exports() {
            self.note_remote_request(conn, account, msg);
        }
    }

    /// Sends the no-responders status to `cid`'s subscription matching `reply`.
    pub fn no_responders(&mut self, cid: ConnId, reply: &[u8], subject: &[u8]) {
        let Some(c) = self.conns.get(&cid) else {
            return;
        };
        let key = c
            .sids
            .values()
            .copied()
            .find(|k| self.subs.get(k).is_some_and(|s| subject::matches(&s.subject, reply)));
        if let Some(key) = key {
            let hdr = encode::no_responders_header(subject);
            let msg = Msg {
                subject: reply,
                reply: None,
                header_len: Some(hdr.len()),
                message: &hdr,
                queues: None,
                origin_cluster: None,
                responder: None,
            };
            self.deliver_local(key, &msg);
        }
    }

    /// Writes PONG (and `then`) now if every shard has applied the
    /// connection's subscriptions, otherwise when they have.
    pub fn pong(&mut self, cid: ConnId, then: Option<Vec<u8>>) {
        let ready = self.interest_applied(cid);
        let Some(c) = self.conns.get_mut(&cid) else {
            return;
        };
        if ready && c.deferred_pongs.is_empty() {
            c.out.tail().extend_from_slice(encode::PONG);
            if let Some(t) = then {
                c.out.tail().extend_from_slice(&t);
            }
            c.wake();
        } else {
            c.deferred_pongs.push(then);
            if !self.waiting_pongs.contains(&cid) {
                self.waiting_pongs.push(cid);
            }
        }
    }

    fn interest_applied(&self, cid: ConnId) -> bool {
        let Some(c) = self.conns.get(&cid) else {
            return true;
        };
        self.acked
            .iter()
            .enumerate()
            .all(|(i, &a)| i == self.id.index() || a >= c.interest_seq)
    }

    fn release_pongs(&mut self) {
        let waiting = std::mem::take(&mut self.waiting_pongs);
        for cid in waiting {
            if !self.interest_applied(cid) {
                self.waiting_pongs.push(cid);
                continue;
            }
            if let Some(c) = self.conns.get_mut(&cid) {
                for then in c.deferred_pongs.drain(..) {
                    c.out.tail().extend_from_slice(encode::PONG);
                    if let Some(t) = then {
                        c.out.tail().extend_from_slice(&t);
                    }
                }
                c.wake();
            }
        }
    }

    /// Applies a batch from another shard: its acks, its interest changes,
    /// then its deliveries. Pending control batches are applied first.
    pub fn apply_batch(&mut self, b: Batch) {
        self.poll_control();
        self.apply(b);
    }

    fn apply(&mut self, b: Batch) {
        let from = b.sender().index();
        if let Some(ack) = b.ack {
            self.acked[from] = self.acked[from].max(ack);
            self.release_pongs();
        }
        for ch in b.interest {
            match ch {
                InterestChange::Add {
                    account,
                    subject,
                    queue,
                    sub,
                } => {
                    self.note_interest(
                        account,
                        &subject,
                        queue.as_deref(),
                        sub.key.link(),
                        Some(sub.conn),
                        true,
                    );
                    self.index_mut(account).insert(&subject, queue.as_deref(), sub);
                }
                InterestChange::Remove {
                    account,
                    subject,
                    queue,
                    key,
                    conn,
                } => {
                    if self.index_mut(account).remove(&subject, queue.as_deref(), key) {
                        self.note_interest(account, &subject, queue.as_deref(), key.link(), Some(conn), false);
                    }
                    self.forget_queue_weight(key, queue.is_some());
                }
                InterestChange::QueueWeight { key, weight } => {
                    self.routes.weights.insert(key, weight);
                }
                InterestChange::LeafConn { conn, cluster, spoke } => {
                    self.note_leaf_conn(conn, cluster.as_deref(), spoke)
                }
                InterestChange::LeafGone { conn } => self.forget_leaf_conn(conn),
            }
        }
        if b.interest_seq > 0 {
            self.outbox[from].ack = Some(b.interest_seq);
        }
        let (tags, parts) = match b.trace {
            Some(t) => (t.tags, t.parts),
            None => Default::default(),
        };
        for part in parts {
            self.trace_part_in(part);
        }
        self.delivering_from = ShardId(b.from);
        for m in &b.msgs {
            let body = match &m.body {
                Body::Inline(s) => s.of(&b.data),
                Body::Shared(bytes) => &bytes[..],
            };
            let msg = Msg {
                subject: m.subject.of(&b.data),
                reply: m.reply.map(|r| r.of(&b.data)),
                header_len: m.header_len.map(|h| h as usize),
                message: body,
                queues: None,
                origin_cluster: m.origin.map(|o| o.of(&b.data)),
                responder: m.responder.map(|r| r.of(&b.data)),
            };
            if let Some(tag) = m.trace.and_then(|i| tags.get(i as usize)) {
                self.trace_part_begin(tag.clone());
            }
            for key in m.targets.of_keys(&b.targets) {
                self.deliver_local(*key, &msg);
            }
            if self.routes_pending() {
                self.flush_routes(&msg);
            }
            if m.trace.is_some() {
                self.trace_part_end();
            }
        }
        self.delivering_from = self.id;
        self.serve_responses();
        if !(b.moves.is_empty() && b.move_acks.is_empty() && b.clears.is_empty()) {
            self.apply_moves(ShardId(b.from), b.moves, b.move_acks, b.clears);
        }
        self.pools.give_back(from, self.id.index(), b.data);
    }

    /// Takes the batches to send, one per destination with something to
    /// say. Interest changes and acks go ahead on the control queues; a
    /// destination that only has those gets an empty batch as a doorbell.
    pub fn take_batches(&mut self) -> Vec<(ShardId, Batch)> {
        if self.interest_pending {
            self.interest_seq += 1;
            self.interest_pending = false;
        }
        let me = self.id.index();
        let mut out = Vec::new();
        for (i, ob) in self.outbox.iter_mut().enumerate() {
            if ob.is_empty() {
                continue;
            }
            let fresh = self.pools.take(me, i, 4096);
            let mut b = ob.take(self.id, self.interest_seq, fresh);
            if !b.interest.is_empty() || b.ack.is_some() {
                let control = Batch {
                    from: b.from,
                    interest: std::mem::take(&mut b.interest),
                    interest_seq: std::mem::take(&mut b.interest_seq),
                    ack: b.ack.take(),
                    ..Batch::default()
                };
                self.pools.push_control(me, i, control);
            }
            out.push((ShardId(i as u16), b));
        }
        out
    }

    /// Applies the interest changes and acks other shards have queued for
    /// this one. Called before each client read is processed and before each
    /// delivery batch, so a subscription made on another shard is seen as
    /// soon as it was queued.
    pub fn poll_control(&mut self) {
        let me = self.id.index();
        for src in 0..self.nshards {
            if src == me {
                continue;
            }
            while let Some(b) = self.pools.pop_control(src, me) {
                self.apply(b);
            }
        }
    }

    /// True when some batch is waiting to be taken.
    pub fn has_batches(&self) -> bool {
        self.outbox.iter().any(|o| !o.is_empty())
    }
}

impl Span {
    /// The target keys this span covers.
    #[inline]
    pub fn of_keys<'a>(&self, keys: &'a [SubKey]) -> &'a [SubKey] {
        &keys[self.start as usize..(self.start + self.len) as usize]
    }
}

#[cfg(test)]
mod tests;
