//! The thread-per-core runtime: one glommio executor pinned per core, each
//! with its own SO_REUSEPORT listener, its [`ShardCore`] and its ends of the
//! inter-shard queues. This folder is the only code that names glommio.

pub mod auth_work;
pub mod conn;
pub mod host;
pub mod mesh;
pub mod system;
pub mod websocket;

use std::cell::{Cell, RefCell};
use std::net::TcpListener as StdListener;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use crate::auth::verify::Verifier;
use crate::core::{BufferPools, CoreConfig, ShardCore};
use crate::ids::{ConnId, ConnKind, ShardId};
use crate::options::Options;
use crate::proto::errors::CloseReason;
use crate::proto::info::ServerInfo;
use crate::proto::session::{Session, SessionConfig};
use crate::stats::ShardStats;
use mesh::{Connected, MeshEnds, Outlet, ShardEnds, ShardMsg};
use rustc_hash::FxHashMap;

/// State shared by all shards (read-mostly; atomics only on the accept path).
pub struct Shared {
    /// The options in force; replaced by a reload. Shards keep their own
    /// copy and pick up a new one when `generation` moves.
    config: Mutex<(Arc<Options>, ServerInfo)>,
    /// Bumped by every applied reload.
    generation: AtomicU64,
    /// The generation each shard has applied.
    applied: Vec<AtomicU64>,
    /// Set when lame-duck mode begins; every shard acts on it.
    pub lame_duck: AtomicBool,
    /// Bumped to ask every shard for a snapshot of its connections.
    snapshot_request: AtomicU64,
    /// Each shard's latest snapshot and the request it answers.
    snapshots: Vec<Mutex<(u64, ShardSnapshot)>>,
    /// Number of shards.
    pub nshards: usize,
    /// Last connection id handed out.
    pub last_cid: AtomicU64,
    /// Open connections per shard, for balancing.
    pub conn_counts: Vec<AtomicUsize>,
    /// Open connections in all.
    pub total_conns: AtomicUsize,
    /// Each shard's published counters.
    pub stats: Vec<ShardStats>,
    /// Batch buffers on their way back to the shard that filled them.
    pub pools: Arc<BufferPools>,
    /// Checks CONNECT credentials; holds the account table. Replaced by a
    /// reload that changes users or accounts.
    verifier: Mutex<Arc<Verifier>>,
    /// Accounts whose JWT changed, numbered; every shard re-checks its
    /// clients of those accounts.
    account_updates: Announcements<crate::ids::AccountId>,
    /// When the server started.
    pub started: std::time::SystemTime,
    /// The HTTP monitoring address, once listening.
    pub http_addr: Mutex<Option<std::net::SocketAddr>>,
    /// Counter of system messages (`seq` in the `server` block).
    pub sys_seq: AtomicU64,
    /// The command line, for reloads asked over `$SYS`.
    pub args: Mutex<Vec<String>>,
    /// Kicks and lame-duck notices for single clients, numbered; each
    /// shard acts on those for its clients.
    client_actions: Announcements<crate::sys::services::ClientAction>,
    /// Set when the server is about to exit: shard 0 sends the SHUTDOWN
    /// event and sets `shutdown_sent`.
    pub shutting_down: AtomicBool,
    /// See `shutting_down`.
    pub shutdown_sent: AtomicBool,
    /// The most recently closed connections, newest last (`connz?state=closed`).
    closed: Mutex<std::collections::VecDeque<ClosedConn>>,
    /// Client TLS, when configured; a reload may replace the certificates.
    tls: Mutex<Option<crate::tls::ClientTls>>,
    /// The WebSocket listener's settings, when it is on.
    websocket: Mutex<Option<Arc<WsRuntime>>>,
}

/// What WebSocket connections need at accept time.
#[derive(Debug, Clone)]
pub struct WsRuntime {
    /// Handshake settings.
    pub settings: crate::ws::WsSettings,
    /// TLS (wss), when configured.
    pub tls: Option<crate::tls::ClientTls>,
    /// The host and port INFO names for WebSocket clients.
    pub host: String,
    /// The bound port.
    pub port: u16,
    /// Server PING interval for WebSocket clients, when it differs.
    pub ping_interval: Option<Duration>,
    /// Auth timeout for WebSocket clients, when it differs.
    pub auth_timeout: Option<Duration>,
}

/// Things every shard acts on once (an account changed, a client to
/// kick), numbered so each shard takes those it has not seen. Only the
/// poll loops read it; the data path never does.
pub struct Announcements<T> {
    seq: AtomicU64,
    items: Mutex<Vec<(u64, T)>>,
}

impl<T> Default for Announcements<T> {
    fn default() -> Self {
        Announcements {
            seq: AtomicU64::new(0),
            items: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Clone> Announcements<T> {
    /// Most kept; older ones are dropped (shards poll every 20 ms).
    const KEEP: usize = 1024;

    /// Announces `item`.
    pub fn push(&self, item: T) {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let seq = self.seq.fetch_add(1, Relaxed) + 1;
        items.push((seq, item));
        if items.len() > Self::KEEP {
            items.drain(..Self::KEEP / 2);
        }
    }

    /// The items announced since `seen`, which moves to the latest.
    pub fn since(&self, seen: &Cell<u64>) -> Vec<T> {
        let seq = self.seq.load(Relaxed);
        if seq == seen.get() {
            return Vec::new();
        }
        let from = seen.replace(seq);
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(s, _)| *s > from && *s <= seq)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

/// How many closed connections `connz` remembers (nats-server's
/// `max_closed_clients` default).
pub const MAX_CLOSED: usize = 10_000;

/// A connection that has closed, as `connz?state=closed` shows it.
#[derive(Debug, Clone)]
pub struct ClosedConn {
    /// The connection as it was at close.
    pub conn: ConnSnapshot,
    /// When it closed.
    pub stop: std::time::SystemTime,
    /// Why (nats-server's closed-state name).
    pub reason: &'static str,
}

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
    }
}

impl Shared {
    /// Builds the shared state.
    pub fn new(opts: Options, info: ServerInfo, nshards: usize, verifier: Arc<Verifier>) -> Shared {
        Shared {
            verifier: Mutex::new(verifier),
            account_updates: Announcements::default(),
            started: std::time::SystemTime::now(),
            http_addr: Mutex::new(None),
            sys_seq: AtomicU64::new(0),
            args: Mutex::new(Vec::new()),
            client_actions: Announcements::default(),
            shutting_down: AtomicBool::new(false),
            shutdown_sent: AtomicBool::new(false),
            closed: Mutex::new(std::collections::VecDeque::new()),
            tls: Mutex::new(None),
            websocket: Mutex::new(None),
            config: Mutex::new((Arc::new(opts), info)),
            generation: AtomicU64::new(0),
            applied: (0..nshards).map(|_| AtomicU64::new(0)).collect(),
            lame_duck: AtomicBool::new(false),
            snapshot_request: AtomicU64::new(0),
            snapshots: (0..nshards)
                .map(|_| Mutex::new((0, ShardSnapshot::default())))
                .collect(),
            nshards,
            last_cid: AtomicU64::new(0),
            conn_counts: (0..nshards).map(|_| AtomicUsize::new(0)).collect(),
            total_conns: AtomicUsize::new(0),
            stats: (0..nshards).map(|_| ShardStats::default()).collect(),
            pools: Arc::new(BufferPools::new(nshards)),
        }
    }

    /// The options in force and the INFO template that goes with them.
    pub fn current(&self) -> (Arc<Options>, ServerInfo) {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every shard's connections, asked for and waited on (up to `limit`);
    /// shards answer from their own tasks, so nothing is read across threads.
    pub fn connections(&self, limit: Duration) -> Vec<ConnSnapshot> {
        let mut all: Vec<ConnSnapshot> = self.snapshot(limit).into_iter().flat_map(|s| s.conns).collect();
        all.sort_by_key(|c| c.cid);
        all
    }

    /// Remembers a closed connection for `connz?state=closed`.
    pub fn record_closed(&self, c: ClosedConn) {
        let mut q = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= MAX_CLOSED {
            q.pop_front();
        }
        q.push_back(c);
    }

    /// The remembered closed connections, oldest first.
    pub fn closed_connections(&self) -> Vec<ClosedConn> {
        self.closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Every shard's snapshot (connections and index statistics), taken on
    /// the shards' own threads; waits up to `limit` for them.
    pub fn snapshot(&self, limit: Duration) -> Vec<ShardSnapshot> {
        let request = self.snapshot_request.fetch_add(1, Relaxed) + 1;
        let deadline = std::time::Instant::now() + limit;
        loop {
            let done = self
                .snapshots
                .iter()
                .all(|s| s.lock().unwrap_or_else(|e| e.into_inner()).0 >= request);
            if done || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.snapshots
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).1.clone())
            .collect()
    }

    /// Installs reloaded options and waits (up to `limit`) until every shard
    /// has applied them to its core and its open connections.
    pub fn install(&self, opts: Options, verifier: Option<Arc<Verifier>>, limit: Duration) -> bool {
        let generation = {
            let mut c = self.config.lock().unwrap_or_else(|e| e.into_inner());
            c.1.max_payload = opts.max_payload;
            if let Some(v) = verifier {
                c.1.auth_required = v.requires_connect();
                *self.verifier.lock().unwrap_or_else(|e| e.into_inner()) = v;
            }
            c.0 = Arc::new(opts);
            self.generation.fetch_add(1, Relaxed) + 1
        };
        let deadline = std::time::Instant::now() + limit;
        while self.applied.iter().any(|a| a.load(Relaxed) < generation) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Asks the shards to kick a client or send it a lame-duck notice;
    /// returns whether the client exists.
    pub fn client_action(&self, action: crate::sys::services::ClientAction) -> bool {
        use crate::sys::services::ClientAction;
        let cid = match action {
            ClientAction::Kick(c) | ClientAction::LameDuck(c) => c,
        };
        if !self
            .connections(Duration::from_millis(500))
            .iter()
            .any(|c| c.cid == cid)
        {
            return false;
        }
        self.client_actions.push(action);
        true
    }

    /// The client TLS settings in force.
    pub fn tls(&self) -> Option<crate::tls::ClientTls> {
        self.tls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Installs client TLS settings (start-up, or new certificates on reload).
    pub fn set_tls(&self, tls: Option<crate::tls::ClientTls>) {
        *self.tls.lock().unwrap_or_else(|e| e.into_inner()) = tls;
    }

    /// The WebSocket settings, when the listener is on.
    pub fn websocket(&self) -> Option<Arc<WsRuntime>> {
        self.websocket.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Installs WebSocket settings (start-up, or new certificates on reload).
    pub fn set_websocket(&self, ws: Option<WsRuntime>) {
        *self.websocket.lock().unwrap_or_else(|e| e.into_inner()) = ws.map(Arc::new);
    }

    /// The verifier in force (shards keep a copy and pick up a new one with
    /// a reload).
    pub fn verifier(&self) -> Arc<Verifier> {
        self.verifier.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Announces that `account`'s JWT changed: every shard re-checks its
    /// clients of it within one poll period.
    pub fn account_updated(&self, account: crate::ids::AccountId) {
        self.account_updates.push(account);
    }

    pub(crate) fn next_cid(&self) -> ConnId {
        ConnId(self.last_cid.fetch_add(1, Relaxed) + 1)
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
    outlets: Vec<Option<Rc<Outlet>>>,
    /// This shard's copy of the options in force.
    pub opts: RefCell<Arc<Options>>,
    /// The INFO template in force.
    pub info: RefCell<ServerInfo>,
    generation: Cell<u64>,
    /// Open connections' sessions and sockets, for applying a reload.
    pub conns: RefCell<FxHashMap<ConnId, ConnHandles>>,
    accept_tasks: RefCell<Vec<glommio::Task<()>>>,
    lame_duck_started: Cell<bool>,
    account_seen: Cell<u64>,
    imports_seen: Cell<u64>,
    /// This shard's copy of the verifier in force.
    pub verifier: RefCell<Arc<Verifier>>,
    actions_seen: Cell<u64>,
}

/// What a reload, lame-duck mode or a monitoring snapshot needs of an open
/// connection.
pub struct ConnHandles {
    /// The protocol state.
    pub session: Rc<RefCell<Session>>,
    /// The socket.
    pub stream: conn::Stream,
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
}

/// What a shard reports when asked: its connections and its index replica's
/// statistics.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    /// The shard.
    pub shard: u16,
    /// Its client connections.
    pub conns: Vec<ConnSnapshot>,
    /// Subscriptions in its replica (all accounts; every replica holds all).
    pub subscriptions: u64,
    /// Cached match results.
    pub cache: u64,
    /// Replica inserts, removes, matches and cache hits.
    pub index: crate::index::IndexStats,
    /// Largest and mean fan-out over the cached results.
    pub max_fanout: u64,
    /// Sum of cached fan-outs (for the mean).
    pub fanout_sum: u64,
}

/// One connection as `/connz` shows it, taken on its shard.
#[derive(Debug, Clone)]
pub struct ConnSnapshot {
    /// Connection id.
    pub cid: u64,
    /// Client address.
    pub ip: String,
    /// Client port.
    pub port: u16,
    /// Accept time.
    pub start: std::time::SystemTime,
    /// Last measured round trip.
    pub rtt: Option<Duration>,
    /// Bytes queued for the client.
    pub pending_bytes: usize,
    /// Messages and bytes the client published.
    pub in_msgs: u64,
    /// Bytes the client published.
    pub in_bytes: u64,
    /// Messages delivered to the client.
    pub out_msgs: u64,
    /// Bytes delivered to the client.
    pub out_bytes: u64,
    /// Its subscriptions' subjects.
    pub subjects: Vec<String>,
    /// CONNECT `name`.
    pub name: String,
    /// CONNECT `lang`.
    pub lang: String,
    /// CONNECT `version`.
    pub version: String,
    /// The shard that owns it.
    pub shard: u16,
    /// Its account's name.
    pub account: String,
    /// Its user (name, nkey or user public key).
    pub user: String,
    /// Its subscriptions: (subject, queue, sid).
    pub subs: Vec<(String, Option<String>, String)>,
    /// The listener it came through.
    pub kind: ConnKind,
}

impl ConnSnapshot {
    /// A connection that never got past its handshake: address, times, kind.
    pub fn accepted(
        cid: ConnId,
        ip: &str,
        port: u16,
        start: std::time::SystemTime,
        shard: u16,
        kind: ConnKind,
    ) -> Self {
        ConnSnapshot {
            cid: cid.0,
            ip: ip.to_string(),
            port,
            start,
            rtt: None,
            pending_bytes: 0,
            in_msgs: 0,
            in_bytes: 0,
            out_msgs: 0,
            out_bytes: 0,
            subjects: Vec::new(),
            name: String::new(),
            lang: String::new(),
            version: String::new(),
            shard,
            account: String::new(),
            user: String::new(),
            subs: Vec::new(),
            kind,
        }
    }
}

/// Microseconds an idle executor spins before it parks (see `start`).
const SPIN_US: u64 = 50;

/// How often a shard looks for reloaded options.
const RELOAD_POLL: Duration = Duration::from_millis(20);

/// Backlog length past which a reader waits for its shard's queues to drain.
const BACKLOG_HIGH: usize = 256;

impl Shard {
    /// Sends the batches the core has gathered, in order, to their shards.
    pub async fn flush(self: &Rc<Self>) {
        self.send_batches();
        // Back-pressure: a publisher waits while a destination is far behind.
        while self.outlets.iter().flatten().any(|o| o.backlog_len() > BACKLOG_HIGH) {
            glommio::timer::sleep(Duration::from_micros(200)).await;
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
                glommio::spawn_local(outlet.clone().drain()).detach();
            }
        }
    }

    /// Applies options installed by a reload, if any: core limits, every
    /// open session's limits and PING timing, socket write deadlines.
    fn apply_reload(&self) {
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

    /// Publishes a system event into the system account (seen by its
    /// subscribers on every shard after the next flush).
    pub fn emit(&self, subject: &str, body: &serde_json::Value) {
        self.emit_bytes(subject.as_bytes(), &serde_json::to_vec(body).unwrap_or_default());
    }

    /// Publishes `bytes` on `subject` in the system account (events and the
    /// internal client's replies).
    pub fn emit_bytes(&self, subject: &[u8], bytes: &[u8]) {
        let sys = self.verifier.borrow().accounts().system().id;
        let mut core = self.core.borrow_mut();
        core.set_now(std::time::Instant::now());
        core.inject(sys, subject, None, bytes);
    }

    /// Kicks, and sends lame-duck notices to, this shard's clients named by
    /// `$SYS` requests.
    fn apply_client_actions(&self) {
        use crate::sys::services::ClientAction;
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
                    if let Some(h) = conns.get(&ConnId(cid)) {
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
    fn apply_account_updates(&self) -> bool {
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
                match self.verifier.borrow().recheck(id) {
                    Ok(r) => {
                        core.set_conn_identity(cid, account, r.permissions, r.max_subs);
                        core.enforce_subscriptions(cid);
                    }
                    Err(e) => {
                        crate::debug!("cid:{} - {} after an account update", cid.0, e.text());
                        core.fail_conn(cid, e);
                    }
                }
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
            let mut auth = h.auth.borrow_mut();
            auth.verifier = v.for_kind(auth.kind);
            let Some(old) = auth.identity.take() else { continue };
            let session = h.session.borrow();
            let opts = if session.is_connected() {
                session.opts().clone()
            } else {
                // Not connected yet, acting as no_auth_user.
                crate::proto::connect::ClientOpts::default()
            };
            match auth.verify(&opts) {
                Ok(id) if id.account().id == old.account().id => {
                    core.set_conn_identity(*cid, id.account().id, id.permissions().cloned(), id.max_subscriptions());
                    core.enforce_subscriptions(*cid);
                    auth.identity = Some(id);
                }
                Ok(_) | Err(_) => {
                    // nats-server closes these without an -ERR.
                    crate::debug!("cid:{} - no longer authorized after a reload", cid.0);
                    core.close_conn(*cid, CloseReason::AuthenticationViolation);
                }
            }
        }
    }

    /// Writes this shard's connection snapshot when one was asked for.
    fn answer_snapshot(&self) {
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
                conn::shutdown(&h.stream);
            }
        }
    }

    /// Publishes the core's counters for readers on other threads.
    pub fn publish_stats(&self) {
        self.shared.stats[self.id.index()].publish(&self.core.borrow().counters());
    }

    fn send_conn(self: &Rc<Self>, dest: usize, stream: glommio::net::AcceptedTcpStream, cid: ConnId, kind: ConnKind) {
        let outlet = self.outlets[dest].as_ref().expect("never sends to itself");
        if outlet.push(ShardMsg::Conn(stream, cid, kind)) {
            glommio::spawn_local(outlet.clone().drain()).detach();
        }
    }
}

/// A started runtime: what the caller waits on.
pub struct Running {
    /// Receives `(shard, Err(text))` when an executor stops.
    pub exits: mpsc::Receiver<(usize, Result<(), String>)>,
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An executor failed to start.
    #[error("shard {shard} failed to start: {why}")]
    Executor {
        /// The shard.
        shard: usize,
        /// The executor's error.
        why: String,
    },
    /// Executors did not report in time.
    #[error("shards did not start within {0:?}")]
    Timeout(Duration),
}

/// Starts one executor per shard, each serving its listener. Returns once
/// every shard is running, or the first start failure.
pub fn start(
    shared: Arc<Shared>,
    listeners: Vec<StdListener>,
    ws_listeners: Vec<StdListener>,
) -> Result<Running, StartError> {
    let n = shared.nshards;
    let cpus = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    let mut mesh = MeshEnds::new(n);
    let (ready_tx, ready_rx) = mpsc::channel::<usize>();
    let (exit_tx, exit_rx) = mpsc::channel::<(usize, Result<(), String>)>();
    let mut ws_listeners = ws_listeners.into_iter();
    for (i, listener) in listeners.into_iter().enumerate() {
        let ends = mesh.take(i);
        let ws_fd = ws_listeners.next().map(|l| l.into_raw_fd());
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let placement = if n <= cpus {
            Placement::Fixed(i)
        } else {
            Placement::Unbound
        };
        let fd = listener.into_raw_fd();
        let mut builder = LocalExecutorBuilder::new(placement)
            .name(&format!("petrel-shard-{i}"))
            .io_memory(1 << 20)
            .ring_depth(1024);
        // Spinning briefly before parking beats parking: a request/reply round
        // trip that crosses shards went from p50 221 us to 67 us and the
        // server's CPU per request fell by half (parking and waking through
        // io_uring cost more than 50 us of spinning). PETREL_SPIN_US overrides.
        let spin = std::env::var("PETREL_SPIN_US")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(SPIN_US);
        if spin > 0 {
            builder = builder.spin_before_park(Duration::from_micros(spin));
        }
        let spawned = builder.spawn(move || async move {
            // SAFETY: the fd comes from a listening socket we own and moved here.
            let listener = unsafe { TcpListener::from_raw_fd(fd) };
            // SAFETY: as above, for the WebSocket listener.
            let ws = ws_fd.map(|fd| unsafe { TcpListener::from_raw_fd(fd) });
            shard_main(ShardId(i as u16), shared, ends, listener, ws, ready).await
        });
        let exit = exit_tx.clone();
        match spawned {
            Ok(handle) => {
                std::thread::Builder::new()
                    .name(format!("petrel-watch-{i}"))
                    .spawn(move || {
                        let r = handle.join().map_err(|e| e.to_string());
                        let _ = exit.send((i, r));
                    })
                    .expect("spawn watcher thread");
            }
            Err(e) => {
                return Err(StartError::Executor {
                    shard: i,
                    why: e.to_string(),
                })
            }
        }
    }
    drop(ready_tx);
    let limit = Duration::from_secs(10);
    let deadline = std::time::Instant::now() + limit;
    let mut started = 0;
    while started < n {
        if let Ok((shard, r)) = exit_rx.try_recv() {
            return Err(StartError::Executor {
                shard,
                why: r.err().unwrap_or_else(|| "exited".into()),
            });
        }
        match ready_rx.recv_timeout(Duration::from_millis(20)) {
            Ok(_) => started += 1,
            Err(mpsc::RecvTimeoutError::Timeout) if std::time::Instant::now() < deadline => {}
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(StartError::Timeout(limit)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let (shard, r) = exit_rx
                    .recv_timeout(Duration::from_secs(1))
                    .unwrap_or((0, Err("exited".into())));
                return Err(StartError::Executor {
                    shard,
                    why: r.err().unwrap_or_else(|| "exited".into()),
                });
            }
        }
    }
    Ok(Running { exits: exit_rx })
}

async fn shard_main(
    id: ShardId,
    shared: Arc<Shared>,
    ends: ShardEnds,
    listener: TcpListener,
    ws_listener: Option<TcpListener>,
    ready: mpsc::Sender<usize>,
) {
    let Connected { outlets, receivers } = ends.connect().await;
    let (opts, info) = shared.current();
    let mut core = ShardCore::with_pools(
        id,
        shared.nshards,
        core_config(&opts),
        shared.pools.clone(),
        Instant::now(),
    );
    core.seed(fastrand::u64(..));
    let verifier = shared.verifier();
    core.set_imports(verifier.imports());
    core.set_system_account(verifier.accounts().system().id);
    let shard = Rc::new(Shard {
        id,
        core: RefCell::new(core),
        shared,
        outlets,
        opts: RefCell::new(opts),
        info: RefCell::new(info),
        generation: Cell::new(0),
        conns: RefCell::new(FxHashMap::default()),
        accept_tasks: RefCell::new(Vec::new()),
        lame_duck_started: Cell::new(false),
        account_seen: Cell::new(0),
        imports_seen: Cell::new(verifier.imports_generation()),
        verifier: RefCell::new(verifier),
        actions_seen: Cell::new(0),
    });
    {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(RELOAD_POLL).await;
                shard.apply_reload();
                shard.apply_client_actions();
                if shard.apply_account_updates() {
                    // Subscriptions removed by new permissions reach the other shards now.
                    shard.flush().await;
                }
                shard.answer_snapshot();
                if shard.shared.lame_duck.load(Relaxed) && !shard.lame_duck_started.replace(true) {
                    glommio::spawn_local(lame_duck(shard.clone())).detach();
                }
            }
        })
        .detach();
    }
    for rx in receivers.into_iter().flatten() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    ShardMsg::Batch(b) => {
                        {
                            let mut core = shard.core.borrow_mut();
                            // The pacing of slow subscribers reads the clock.
                            core.set_now(std::time::Instant::now());
                            core.apply_batch(b);
                        }
                        shard.cut_off_slow_consumers();
                        shard.publish_stats();
                        shard.send_batches();
                        // Pace this source while a subscriber here is nearly
                        // full; the queue filling up then stalls its publishers.
                        let stall = shard.core.borrow_mut().take_stall();
                        if stall {
                            glommio::timer::sleep(conn::STALL).await;
                        }
                    }
                    ShardMsg::Conn(stream, cid, kind) => {
                        let s = shard.clone();
                        glommio::spawn_local(conn::serve(s, stream.bind_to_executor(), cid, kind)).detach();
                    }
                }
            }
        })
        .detach();
    }
    if id.index() == 0 {
        glommio::spawn_local(system::run(shard.clone())).detach();
    }
    let _ = ready.send(id.index());
    let mut tasks = vec![glommio::spawn_local(accept_loop(
        shard.clone(),
        listener,
        ConnKind::Standard,
    ))];
    if let Some(ws) = ws_listener {
        tasks.push(glommio::spawn_local(accept_loop(
            shard.clone(),
            ws,
            ConnKind::WebSocket,
        )));
    }
    *shard.accept_tasks.borrow_mut() = tasks;
    // The executor lives as long as the process; its tasks do the work.
    futures_lite::future::pending::<()>().await;
}

/// Lame-duck mode on one shard: stop accepting (dropping the accept task
/// closes this shard's listener), tell clients with `ldm: true` in an INFO,
/// wait the grace period, then close this shard's clients spread over the
/// rest of the lame-duck duration (at most one second apart), as
/// nats-server does.
async fn lame_duck(shard: Rc<Shard>) {
    shard.accept_tasks.borrow_mut().clear();
    if shard.id.index() == 0 {
        let id = shard.info.borrow().server_id.clone();
        let block = serde_json::to_value(crate::sys::server_block(&shard.shared)).unwrap_or_default();
        shard.emit(&format!("$SYS.SERVER.{id}.LAMEDUCK"), &block);
        shard.flush().await;
    }
    let opts = shard.opts.borrow().clone();
    let mut ldm_info = shard.info.borrow().clone();
    ldm_info.ldm = true;
    let cids: Vec<ConnId> = {
        let conns = shard.conns.borrow();
        let mut core = shard.core.borrow_mut();
        for (cid, h) in conns.iter() {
            if h.session.borrow().opts().protocol >= 1 {
                let json = host::client_info(&ldm_info, *cid, &h.ip).to_json();
                if let Some(c) = core.conn_mut(*cid) {
                    crate::proto::encode::info(c.out.tail(), &json);
                }
                core.wake(*cid);
            }
        }
        conns.keys().copied().collect()
    };
    glommio::timer::sleep(opts.lame_duck_grace_period).await;
    let spread = opts.lame_duck_duration.saturating_sub(opts.lame_duck_grace_period);
    let per_client = (spread / cids.len().max(1) as u32).min(Duration::from_secs(1));
    for cid in cids {
        shard
            .core
            .borrow_mut()
            .close_conn(cid, crate::proto::errors::CloseReason::ServerShutdown);
        let pause = per_client.mul_f64(0.5 + fastrand::f64() * 0.5);
        glommio::timer::sleep(pause).await;
    }
}

/// Accepts connections and keeps the shards' loads even: a shard with more
/// open connections than the least loaded one hands the new one over.
async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, kind: ConnKind) {
    let shared = shard.shared.clone();
    loop {
        let stream = match listener.shared_accept().await {
            Ok(s) => s,
            Err(e) => {
                crate::error!("Error accepting client connection: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let cid = shared.next_cid();
        let total = shared.total_conns.fetch_add(1, Relaxed) + 1;
        let max_connections = shard.opts.borrow().max_connections;
        if total > max_connections {
            shared.total_conns.fetch_sub(1, Relaxed);
            glommio::spawn_local(conn::refuse(shard.clone(), stream.bind_to_executor(), cid, kind)).detach();
            continue;
        }
        let me = shard.id.index();
        let (least, least_count) = shared
            .conn_counts
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.load(Relaxed)))
            .min_by_key(|&(i, c)| (c, i != me))
            .expect("at least one shard");
        let dest = if shared.conn_counts[me].load(Relaxed) > least_count {
            least
        } else {
            me
        };
        shared.conn_counts[dest].fetch_add(1, Relaxed);
        if dest == me {
            glommio::spawn_local(conn::serve(shard.clone(), stream.bind_to_executor(), cid, kind)).detach();
        } else {
            shard.send_conn(dest, stream, cid, kind);
        }
    }
}
