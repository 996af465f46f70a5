//! The control plane: what every shard, the `$SYS` services and the HTTP
//! monitor share (options in force, the verifier, reload, per-shard
//! counters and snapshots, closed connections, announcements to every
//! shard). It sits below the shard runtime and the system services and
//! names neither: shards poll it from their own loops, readers wait on it
//! from their own threads, and a reload runs through the options source
//! `main` handed in.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::verify::Verifier;
use crate::core::BufferPools;
use crate::ids::{ConnId, ConnKind};
use crate::options::Options;
use crate::proto::info::ServerInfo;
use crate::reload::ReloadOutcome;
use crate::stats::ShardStats;

/// Re-reads the configuration and applies it: what `$SYS` RELOAD and
/// SIGHUP run. Installed at start-up by whoever knows where options come
/// from (the command line, through `main`).
pub type Reloader = Arc<dyn Fn(&Shared) -> Result<ReloadOutcome, String> + Send + Sync>;

/// State shared by all shards (read-mostly; atomics only on the accept path).
pub struct Shared {
    /// The options in force; replaced by a reload. Shards keep their own
    /// copy and pick up a new one when `generation` moves.
    config: Mutex<(Arc<Options>, ServerInfo)>,
    /// Bumped by every applied reload.
    pub(crate) generation: AtomicU64,
    /// The generation each shard has applied.
    pub(crate) applied: Vec<AtomicU64>,
    /// Set when lame-duck mode begins; every shard acts on it.
    pub lame_duck: AtomicBool,
    /// Bumped to ask every shard for a snapshot of its connections.
    pub(crate) snapshot_request: AtomicU64,
    /// Each shard's latest snapshot and the request it answers.
    pub(crate) snapshots: Vec<Mutex<(u64, ShardSnapshot)>>,
    /// Number of shards.
    pub nshards: usize,
    /// Last connection id handed out.
    pub last_cid: AtomicU64,
    /// Open connections per shard, for balancing.
    pub conn_counts: Vec<AtomicUsize>,
    /// Open connections in all.
    pub total_conns: AtomicUsize,
    /// When a client last moved between two shards by affinity, in
    /// milliseconds since `epoch` (0: never), by `to * nshards + from`.
    moves: Vec<AtomicU64>,
    /// The clock `moves` counts from.
    epoch: std::time::Instant,
    /// Each shard's published counters.
    pub stats: Vec<ShardStats>,
    /// Batch buffers on their way back to the shard that filled them.
    pub pools: Arc<BufferPools>,
    /// The cluster registry, when routes are configured.
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// The leaf node registry, when leaf nodes are configured.
    pub leaf: std::sync::OnceLock<Arc<crate::leaf::LeafNodes>>,
    /// Checks CONNECT credentials; holds the account table. Replaced by a
    /// reload that changes users or accounts.
    verifier: Mutex<Arc<Verifier>>,
    /// Accounts whose JWT changed, numbered; every shard re-checks its
    /// clients of those accounts.
    pub(crate) account_updates: Announcements<crate::ids::AccountId>,
    /// When the server started.
    pub started: std::time::SystemTime,
    /// The HTTP monitoring address, once listening.
    pub http_addr: Mutex<Option<std::net::SocketAddr>>,
    /// Requests served per monitoring endpoint (varz `http_req_stats`),
    /// keyed by nats-server's path names, in Go's sorted key order.
    pub http_req_stats: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Counter of system messages (`seq` in the `server` block).
    pub sys_seq: AtomicU64,
    /// Accounts whose connection counts changed, for shard 0 to announce
    /// (`SERVER.CONNS`): sent from one shard, their `seq`s rise in the
    /// order peers receive them.
    conns_to_announce: Mutex<Vec<String>>,
    /// Re-reads and applies the configuration (`$SYS` RELOAD, SIGHUP).
    reloader: Mutex<Option<Reloader>>,
    /// Kicks and lame-duck notices for single clients, numbered; each
    /// shard acts on those for its clients.
    pub(crate) client_actions: Announcements<ClientAction>,
    /// Set when the server is about to exit: shard 0 sends the SHUTDOWN
    /// event and sets `shutdown_sent`.
    pub shutting_down: AtomicBool,
    /// See `shutting_down`.
    pub shutdown_sent: AtomicBool,
    /// Whether anyone (a peer, a local subscriber) was to receive the
    /// SHUTDOWN event: the exit then lets the writers put it on the wire.
    pub shutdown_heard: AtomicBool,
    /// Taken by the task that sends the SHUTDOWN event (one only).
    pub shutdown_claimed: AtomicBool,
    /// How many other servers the system client hears (STATSZ
    /// `active_servers` less one); see `sys::remote_servers`.
    pub remote_servers: AtomicUsize,
    /// The most recently closed connections, newest last (`connz?state=closed`).
    closed: Mutex<std::collections::VecDeque<ClosedConn>>,
    /// How many of them are kept (`max_closed_clients`, fixed at start).
    max_closed: usize,
    /// Client TLS, when configured; a reload may replace the certificates.
    tls: Mutex<Option<crate::tls::ClientTls>>,
    /// The WebSocket listener's settings, when it is on.
    websocket: Mutex<Option<Arc<WsRuntime>>>,
    /// Each shard's doorbell, the end written to (non-blocking): a byte
    /// wakes that shard's poll loop at once (see [`Shared::ring`]).
    doorbells: Vec<std::os::unix::net::UnixStream>,
    /// The ends each shard's poll loop reads, until it takes its own.
    doorbell_ends: Mutex<Vec<Option<std::os::fd::OwnedFd>>>,
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
    /// Most kept; older ones are dropped (each push rings the shards, which
    /// take them at once).
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

/// What the server does beyond replying (kicks and lame-duck notices act
/// on a client's shard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// Close the client with reason "Kicked".
    Kick(u64),
    /// Send the client an INFO with `ldm: true`.
    LameDuck(u64),
}

/// Why a [`ClientAction`] was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionRefused {
    /// No client (or leaf connection) has that id.
    NoSuchClient,
    /// The client takes no async INFO yet (`protocol` 0, or before the
    /// PONG to its first PING), so it cannot be told of lame duck mode.
    NotReady,
}

impl Shared {
    /// Whether the listeners facing `facing` were stopped on purpose (the
    /// server exits; lame duck mode for the client-facing ones): their
    /// accept loops then end instead of reporting errors.
    pub fn listeners_stopped(&self, facing: crate::listeners::Facing) -> bool {
        self.shutting_down.load(Relaxed)
            || (facing == crate::listeners::Facing::Clients && self.lame_duck.load(Relaxed))
    }

    /// Notes a client moving from shard `from` to shard `to` now.
    pub fn note_move(&self, from: usize, to: usize) {
        let ms = self.epoch.elapsed().as_millis().max(1) as u64;
        if let Some(m) = self.moves.get(to * self.nshards + from) {
            m.store(ms, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// For each shard, whether a client moved from it to shard `to`
    /// within `within`: `to` then sends none of its own clients back that
    /// way (the two ends of a pair would swap places).
    pub fn moved_in_lately(&self, to: usize, within: Duration) -> Vec<bool> {
        let now = self.epoch.elapsed().as_millis() as u64;
        (0..self.nshards)
            .map(|from| {
                let at = self.moves[to * self.nshards + from].load(std::sync::atomic::Ordering::SeqCst);
                at != 0 && now.saturating_sub(at) < within.as_millis() as u64
            })
            .collect()
    }

    /// Builds the shared state.
    pub fn new(opts: Options, info: ServerInfo, nshards: usize, verifier: Arc<Verifier>) -> Shared {
        let (doorbells, ends): (Vec<_>, Vec<_>) = (0..nshards)
            .map(|_| {
                let (w, r) = std::os::unix::net::UnixStream::pair().expect("socketpair for a shard's doorbell");
                w.set_nonblocking(true).expect("non-blocking doorbell");
                (w, Some(std::os::fd::OwnedFd::from(r)))
            })
            .unzip();
        Shared {
            verifier: Mutex::new(verifier),
            account_updates: Announcements::default(),
            started: std::time::SystemTime::now(),
            http_addr: Mutex::new(None),
            http_req_stats: Mutex::new(std::collections::BTreeMap::new()),
            sys_seq: AtomicU64::new(0),
            conns_to_announce: Mutex::new(Vec::new()),
            reloader: Mutex::new(None),
            client_actions: Announcements::default(),
            shutting_down: AtomicBool::new(false),
            shutdown_sent: AtomicBool::new(false),
            shutdown_heard: AtomicBool::new(false),
            shutdown_claimed: AtomicBool::new(false),
            remote_servers: AtomicUsize::new(0),
            closed: Mutex::new(std::collections::VecDeque::new()),
            max_closed: opts.max_closed_clients,
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
            moves: (0..nshards * nshards).map(|_| AtomicU64::new(0)).collect(),
            epoch: std::time::Instant::now(),
            stats: (0..nshards).map(|_| ShardStats::default()).collect(),
            pools: Arc::new(BufferPools::new(nshards)),
            cluster: std::sync::OnceLock::new(),
            leaf: std::sync::OnceLock::new(),
            doorbells,
            doorbell_ends: Mutex::new(ends),
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
        if self.max_closed == 0 {
            return;
        }
        let mut q = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= self.max_closed {
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
        self.ring();
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
        self.ring();
        let deadline = std::time::Instant::now() + limit;
        while self.applied.iter().any(|a| a.load(Relaxed) < generation) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Asks the shards to kick a client or send it a lame-duck notice, as
    /// nats-server's KICK and LDM requests: refused for an unknown id, and
    /// a lame-duck notice for a client that takes no async INFO yet.
    pub fn client_action(&self, action: ClientAction) -> Result<(), ActionRefused> {
        let cid = match action {
            ClientAction::Kick(c) | ClientAction::LameDuck(c) => c,
        };
        let conns = self.connections(Duration::from_millis(500));
        let Some(conn) = conns.iter().find(|c| c.cid == cid) else {
            return Err(ActionRefused::NoSuchClient);
        };
        if matches!(action, ClientAction::LameDuck(_)) && !conn.takes_async_info {
            return Err(ActionRefused::NotReady);
        }
        self.client_actions.push(action);
        self.ring();
        Ok(())
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
        self.ring();
    }

    /// Wakes every shard's poll loop now: something it acts on (a
    /// snapshot request, options, an announcement, lame duck) was posted
    /// just before. An idle shard otherwise polls once a second.
    pub fn ring(&self) {
        for i in 0..self.doorbells.len() {
            self.ring_shard(i);
        }
    }

    /// Asks shard 0 to announce `account`'s connection counts.
    pub fn announce_conns_of(&self, account: String) {
        let mut queued = self.conns_to_announce.lock().unwrap_or_else(|e| e.into_inner());
        if !queued.contains(&account) {
            queued.push(account);
        }
        drop(queued);
        self.ring_shard(0);
    }

    /// The accounts [`Self::announce_conns_of`] queued since the last call.
    pub fn take_conns_to_announce(&self) -> Vec<String> {
        std::mem::take(&mut *self.conns_to_announce.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Wakes shard `i`'s poll loop now.
    pub fn ring_shard(&self, i: usize) {
        use std::io::Write;
        if let Some(d) = self.doorbells.get(i) {
            // A full doorbell has rung already.
            let _ = (&*d).write(&[1]);
        }
    }

    /// Shard `i`'s end of its doorbell (once).
    pub fn take_doorbell(&self, i: usize) -> Option<std::os::fd::OwnedFd> {
        self.doorbell_ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(i)
            .and_then(Option::take)
    }

    /// Installs what `$SYS` RELOAD and SIGHUP run.
    pub fn set_reloader(&self, r: Reloader) {
        *self.reloader.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    }

    /// Re-reads and applies the configuration, as [`Self::set_reloader`] said.
    pub fn reload(&self) -> Result<ReloadOutcome, String> {
        let r = self.reloader.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match r {
            Some(r) => r(self),
            None => Err("config reload not available".into()),
        }
    }

    pub(crate) fn next_cid(&self) -> ConnId {
        ConnId(self.last_cid.fetch_add(1, Relaxed) + 1)
    }
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
    /// Memory its buffers hold: read buffer and outbound queue, by capacity.
    pub buffer_bytes: usize,
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
    /// Whether it takes async INFO now (`Session::takes_async_info`).
    pub takes_async_info: bool,
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
            buffer_bytes: 0,
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
            takes_async_info: false,
        }
    }
}
