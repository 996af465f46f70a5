//! The cluster registry (control plane): which peer servers this one knows,
//! their route connections (pooled ones by pool index, pinned ones by
//! account), the client URLs they advertise (for client INFO
//! `connect_urls`) and the routes shards should dial. Touched when routes
//! come and go, never on the publish path. How accounts are spread over a
//! peer's connections is the [`RoutePool`].

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::conf::cluster::RouteUrl;
use crate::ids::{ConnId, ShardId};
use crate::options::ClusterOptions;
use crate::route_tls::RouteTls;

/// Bytes for one route connection of the shard it is queued for.
pub type Announcement = (ConnId, Vec<u8>);

/// How this server spreads accounts over the connections to one peer, as
/// nats-server pools routes: `size` pooled connections, an account on the
/// one its name hashes to, and pinned accounts (configured `accounts`, and
/// the system account) on a connection of their own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutePool {
    /// Pooled connections per peer; `None` with `pool_size: -1` (one
    /// connection per peer, every account on it, nothing pinned).
    pub size: Option<usize>,
    /// Accounts with a route of their own.
    pub pinned: Vec<String>,
}

/// Where an account's interest and messages go among one peer's routes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteScope {
    /// The one connection to a peer that does not pool (or when this
    /// server does not): every account, named on the wire.
    NoPool,
    /// The pooled connection at this index: the accounts whose name
    /// hashes to it, named on the wire.
    Pooled(usize),
    /// A connection dedicated to one account, never named on the wire.
    Pinned(String),
}

impl RoutePool {
    /// The pool `opts` configure, pinning `system` (the system account's
    /// name) as nats-server does whenever routes are pooled.
    pub fn new(opts: &ClusterOptions, system: &str) -> RoutePool {
        let size = match opts.pool_size {
            Some(n) if n < 0 => return RoutePool::default(),
            Some(n) if n > 0 => n as usize,
            _ => crate::options::DEFAULT_ROUTE_POOL_SIZE as usize,
        };
        let mut pinned = opts.pinned_accounts.clone();
        if !pinned.iter().any(|a| a == system) {
            pinned.push(system.to_string());
        }
        RoutePool {
            size: Some(size),
            pinned,
        }
    }

    /// The INFO's `route_pool_size` (0: not sent).
    pub fn advertised(&self) -> i32 {
        self.size.map_or(0, |n| n as i32)
    }

    /// Whether `account` has a route of its own.
    pub fn is_pinned(&self, account: &str) -> bool {
        self.pinned.iter().any(|a| a == account)
    }

    /// Whether a connection of `scope` carries `account`'s interest.
    pub fn carries(&self, scope: &RouteScope, account: &str) -> bool {
        match scope {
            RouteScope::NoPool => true,
            RouteScope::Pinned(a) => a == account,
            RouteScope::Pooled(i) => !self.is_pinned(account) && pool_index(account, self.size.unwrap_or(1)) == *i,
        }
    }
}

/// A route connection to dial.
#[derive(Debug, Clone)]
pub struct Dial {
    /// Where.
    pub url: RouteUrl,
    /// The URL as configured or learned (for logs and duplicates).
    pub text: String,
    /// Listed in the configuration (retried as `connect_retries` says; an
    /// implicit route, learned by gossip, is tried once more only).
    pub configured: bool,
    /// The `gossip_mode` the INFO that taught us this route carried,
    /// echoed in our INFO on it.
    pub gossip_mode: u8,
    /// The pinned account this connection is for (`route_account`).
    pub account: Option<String>,
    /// The first connection to the URL (dialed for good if configured);
    /// the others fill a peer's pool and end once it is full.
    pub primary: bool,
}

impl Dial {
    /// A first connection to `url` (`text` as configured or learned).
    pub fn new(url: RouteUrl, text: String, configured: bool, gossip_mode: u8) -> Dial {
        Dial {
            url,
            text,
            configured,
            gossip_mode,
            account: None,
            primary: true,
        }
    }
}

/// One route connection's counters, published by its shard from its
/// cluster poll (every 20 ms) for routez and STATSZ.
#[derive(Debug, Clone, Default)]
pub struct RouteCounters {
    /// Connection id (`rid`).
    pub cid: u64,
    /// Bytes queued for the peer.
    pub pending_bytes: usize,
    /// Messages the peer sent.
    pub in_msgs: u64,
    /// Bytes the peer sent.
    pub in_bytes: u64,
    /// Messages sent to the peer.
    pub out_msgs: u64,
    /// Bytes sent to the peer.
    pub out_bytes: u64,
    /// Subscriptions the peer holds here.
    pub subscriptions: usize,
}

/// One registered route connection.
#[derive(Debug, Clone)]
pub struct RouteConn {
    /// Its connection id.
    pub cid: ConnId,
    /// The shard that owns it.
    pub shard: ShardId,
    /// Whether this server dialed it.
    pub did_solicit: bool,
    /// Whether its URL is in the configuration.
    pub is_configured: bool,
    /// The peer's address.
    pub ip: String,
    /// The peer's port.
    pub port: u16,
    /// When it registered.
    pub start: SystemTime,
    /// Which accounts it carries.
    pub scope: RouteScope,
    /// The compression agreed (`/routez`).
    pub compression: String,
}

/// A peer server of the cluster.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Its server name.
    pub name: String,
    /// The `host:port` its routes listen on (from its INFO).
    pub route_url: String,
    /// Its client URLs.
    pub client_urls: Vec<String>,
    /// Its pooled route connections by pool index (index 0 only for a
    /// peer that does not pool).
    pub conns: BTreeMap<usize, RouteConn>,
    /// Its connections dedicated to one account.
    pub pinned: BTreeMap<String, RouteConn>,
    /// The pool size it advertised (0: it does not pool).
    pub pool_size: usize,
}

impl Peer {
    /// Every route connection to it, pooled then pinned.
    pub fn all_conns(&self) -> impl Iterator<Item = &RouteConn> {
        self.conns.values().chain(self.pinned.values())
    }

    /// The connection gossip about other servers goes on: the pooled one
    /// with the lowest index.
    fn carrier(&self) -> Option<&RouteConn> {
        self.conns.values().next()
    }
}

/// What a dialer should do about one of its routes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Dial: the connection it is for is missing.
    Dial,
    /// Wait and look again: the connection is there (made by either side).
    Wait,
    /// Stop: nothing is left for this dialer to fill.
    Done,
}

/// Why a route could not register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// This pool index (or pinned account) of that peer is already
    /// connected.
    Duplicate,
    /// The route leads back to this server.
    ToSelf,
    /// Every pool index of that peer is connected already.
    PoolFull,
}

/// Where a route asks to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// A peer without pooling (or this server has none): its one route.
    NoPool,
    /// The pool index the dialing peer chose.
    Index(usize),
    /// This server dialed: the first free index of a pool of this size
    /// (0 when the peer has no route yet).
    FirstFree(usize),
    /// The account's dedicated route.
    Pinned(String),
}

/// The registry.
pub struct Cluster {
    /// This server's id.
    pub server_id: String,
    opts: Mutex<ClusterOptions>,
    name: Mutex<Option<String>>,
    peers: Mutex<BTreeMap<String, Peer>>,
    /// Bytes for every registered route on each shard, but the one to the
    /// named peer (gossip about a new peer, lame duck notices).
    announcements: Vec<Mutex<Vec<Announcement>>>,
    /// Configured route URLs and the server each led to.
    url_peers: Mutex<BTreeMap<String, String>>,
    /// Bumped whenever peers' client URLs change (clients that asked get
    /// a fresh INFO).
    pub urls_generation: AtomicU64,
    /// Bumped whenever the registry changes (routez, varz).
    pub generation: AtomicU64,
    /// Where this server's routes listen (`host:port`), once bound.
    pub listen: Mutex<Option<String>>,
    dialing: Mutex<HashSet<(String, Option<String>)>>,
    /// Configured routes a reload added, for a shard to start dialing.
    added_routes: Mutex<Vec<String>>,
    /// Route TLS in force (`cluster { tls }`), for new route connections.
    tls: Mutex<Option<Arc<RouteTls>>>,
    /// Each shard's route counters, as it last published them.
    counters: Vec<Mutex<Vec<RouteCounters>>>,
    /// Dials each shard is asked to make (a pool's further connections).
    dial_requests: Vec<Mutex<Vec<Dial>>>,
    next_dialer: AtomicU64,
}

impl Cluster {
    /// A registry for `opts`, spreading dials over `nshards` shards.
    pub fn new(server_id: String, opts: ClusterOptions, nshards: usize) -> Cluster {
        Cluster {
            server_id,
            name: Mutex::new(opts.name.clone()),
            opts: Mutex::new(opts),
            peers: Mutex::new(BTreeMap::new()),
            announcements: (0..nshards).map(|_| Mutex::new(Vec::new())).collect(),
            url_peers: Mutex::new(BTreeMap::new()),
            urls_generation: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            listen: Mutex::new(None),
            dialing: Mutex::new(HashSet::new()),
            added_routes: Mutex::new(Vec::new()),
            tls: Mutex::new(None),
            counters: (0..nshards).map(|_| Mutex::new(Vec::new())).collect(),
            dial_requests: (0..nshards).map(|_| Mutex::new(Vec::new())).collect(),
            next_dialer: AtomicU64::new(0),
        }
    }

    /// A shard's route counters now (from its cluster poll).
    pub fn publish_counters(&self, shard: ShardId, counters: Vec<RouteCounters>) {
        if let Some(slot) = self.counters.get(shard.index()) {
            *slot.lock().expect("cluster lock") = counters;
        }
    }

    /// Every route connection's counters, by `rid`.
    pub fn route_counters(&self) -> std::collections::HashMap<u64, RouteCounters> {
        self.counters
            .iter()
            .flat_map(|s| s.lock().expect("cluster lock").clone())
            .map(|c| (c.cid, c))
            .collect()
    }

    /// Route TLS for new route connections (start-up and reload).
    pub fn set_tls(&self, tls: Option<Arc<RouteTls>>) {
        *self.tls.lock().expect("cluster lock") = tls;
    }

    /// Route TLS in force, if any.
    pub fn tls(&self) -> Option<Arc<RouteTls>> {
        self.tls.lock().expect("cluster lock").clone()
    }

    /// The host name a route dialed by address is verified against: the
    /// first configured route given by name (nats-server's route TLS name).
    pub fn tls_name(&self) -> Option<String> {
        let opts = self.opts.lock().expect("cluster lock");
        opts.routes.iter().find_map(|r| {
            let u = crate::conf::cluster::route_url(r).ok()?;
            u.host.parse::<std::net::IpAddr>().is_err().then_some(u.host)
        })
    }

    /// The options in force.
    pub fn opts(&self) -> ClusterOptions {
        self.opts.lock().expect("cluster lock").clone()
    }

    /// Replaces the options (reload); configured routes that are new wait
    /// for a shard to dial them ([`Self::take_added_routes`]).
    pub fn set_opts(&self, opts: ClusterOptions) {
        let mut cur = self.opts.lock().expect("cluster lock");
        let added: Vec<String> = opts
            .routes
            .iter()
            .filter(|r| !cur.routes.contains(r))
            .cloned()
            .collect();
        *cur = opts;
        drop(cur);
        self.added_routes.lock().expect("cluster lock").extend(added);
    }

    /// Configured routes added by a reload since the last call.
    pub fn take_added_routes(&self) -> Vec<String> {
        std::mem::take(&mut *self.added_routes.lock().expect("cluster lock"))
    }

    /// The cluster name: configured, or adopted from the first peer.
    pub fn name(&self) -> Option<String> {
        self.name.lock().expect("cluster lock").clone()
    }

    /// Whether a peer's cluster name is acceptable; a server without a
    /// configured name adopts the first one it meets (nats-server's
    /// dynamic cluster names).
    pub fn accept_name(&self, theirs: &str) -> bool {
        let mut name = self.name.lock().expect("cluster lock");
        match &*name {
            Some(n) => n == theirs,
            None => {
                *name = Some(theirs.to_string());
                true
            }
        }
    }

    /// Whether the name was configured (not learned).
    pub fn name_is_dynamic(&self) -> bool {
        self.opts.lock().expect("cluster lock").name.is_none()
    }

    /// Registers a route connection to `peer` in `slot`: the scope it
    /// carries, and whether it is the peer's first pooled (or only)
    /// connection (gossip and client URLs go with that one).
    pub fn register(
        &self,
        peer_id: &str,
        peer: Peer,
        mut conn: RouteConn,
        slot: Slot,
    ) -> Result<(RouteScope, bool), Refused> {
        if peer_id == self.server_id {
            return Err(Refused::ToSelf);
        }
        let mut peers = self.peers.lock().expect("cluster lock");
        let p = peers.entry(peer_id.to_string()).or_default();
        let first = p.conns.is_empty();
        let scope = match slot {
            Slot::Pinned(acc) => {
                if p.pinned.contains_key(&acc) {
                    return Err(Refused::Duplicate);
                }
                RouteScope::Pinned(acc)
            }
            Slot::NoPool if !first => return Err(Refused::Duplicate),
            Slot::NoPool => RouteScope::NoPool,
            Slot::Index(i) if p.conns.contains_key(&i) => return Err(Refused::Duplicate),
            Slot::Index(i) => RouteScope::Pooled(i),
            Slot::FirstFree(n) => {
                let n = n.max(p.pool_size).max(1);
                match (0..n).find(|i| !p.conns.contains_key(i)) {
                    Some(i) => RouteScope::Pooled(i),
                    None => return Err(Refused::PoolFull),
                }
            }
        };
        let urls_changed = first && p.client_urls != peer.client_urls;
        if first {
            p.client_urls = peer.client_urls;
        }
        p.name = peer.name;
        if !peer.route_url.is_empty() {
            p.route_url = peer.route_url;
        }
        p.pool_size = peer.pool_size;
        conn.scope = scope.clone();
        let gossip = match &scope {
            RouteScope::Pinned(acc) => {
                p.pinned.insert(acc.clone(), conn);
                false
            }
            RouteScope::NoPool => {
                p.conns.insert(0, conn);
                true
            }
            RouteScope::Pooled(i) => {
                p.conns.insert(*i, conn);
                first
            }
        };
        drop(peers);
        if urls_changed {
            self.urls_generation.fetch_add(1, Relaxed);
        }
        self.generation.fetch_add(1, Relaxed);
        Ok((scope, gossip))
    }

    /// Forgets a route connection; the peer goes when its last one does.
    /// Returns whether the peer is gone.
    pub fn unregister(&self, peer_id: &str, cid: ConnId) -> bool {
        let mut peers = self.peers.lock().expect("cluster lock");
        let Some(p) = peers.get_mut(peer_id) else { return false };
        p.conns.retain(|_, c| c.cid != cid);
        p.pinned.retain(|_, c| c.cid != cid);
        let gone = p.conns.is_empty() && p.pinned.is_empty();
        if gone {
            let had_urls = !p.client_urls.is_empty();
            peers.remove(peer_id);
            if had_urls {
                self.urls_generation.fetch_add(1, Relaxed);
            }
        }
        self.generation.fetch_add(1, Relaxed);
        gone
    }

    /// What the dialer of `d` should do now, `pool` being this server's.
    pub fn need(&self, d: &Dial, pool: &RoutePool) -> Need {
        let peer_id = self.url_peers.lock().expect("cluster lock").get(&d.text).cloned();
        let peers = self.peers.lock().expect("cluster lock");
        let peer = peer_id.as_ref().and_then(|id| peers.get(id));
        // A configured route's own dialer stays to redial it; a pool's
        // further dialers and implicit ones end once nothing is missing.
        let keep = if d.configured && d.primary {
            Need::Wait
        } else {
            Need::Done
        };
        if let Some(acc) = &d.account {
            if pool.size.is_none() || !pool.is_pinned(acc) {
                return Need::Done;
            }
            return match peer {
                Some(p) if p.pinned.contains_key(acc) => keep,
                Some(p) if !p.conns.is_empty() && p.pool_size == 0 => Need::Done,
                _ => Need::Dial,
            };
        }
        let full = |p: &Peer| {
            let n = pool.size.unwrap_or(1).max(p.pool_size);
            p.pool_size == 0 || pool.size.is_none() || p.conns.len() >= n
        };
        match peer {
            Some(p) if !p.conns.is_empty() && full(p) => keep,
            Some(p) if !p.conns.is_empty() => Need::Dial,
            _ if d.primary => Need::Dial,
            _ => Need::Done,
        }
    }

    /// Updates a peer's client URLs (an INFO it sent later).
    pub fn set_client_urls(&self, peer_id: &str, urls: Vec<String>) {
        let mut peers = self.peers.lock().expect("cluster lock");
        if let Some(p) = peers.get_mut(peer_id) {
            if p.client_urls != urls {
                p.client_urls = urls;
                self.urls_generation.fetch_add(1, Relaxed);
            }
        }
    }

    /// How many peers have a registered route now.
    pub fn connected_peers(&self) -> usize {
        let peers = self.peers.lock().expect("cluster lock");
        peers.values().filter(|p| !p.conns.is_empty()).count()
    }

    /// A copy of the known peers.
    pub fn peers(&self) -> BTreeMap<String, Peer> {
        self.peers.lock().expect("cluster lock").clone()
    }

    /// Whether `peer_id` has a pooled (or its only) route, and for
    /// `account`, that account's route too.
    pub fn is_connected(&self, peer_id: &str, account: Option<&str>) -> bool {
        let peers = self.peers.lock().expect("cluster lock");
        let Some(p) = peers.get(peer_id) else { return false };
        match account {
            None => !p.conns.is_empty(),
            Some(a) => p.pinned.contains_key(a) || p.pool_size == 0 && !p.conns.is_empty(),
        }
    }

    /// Route URLs of every known peer (gossip to a new peer).
    pub fn peer_route_urls(&self) -> Vec<(String, String)> {
        self.peers
            .lock()
            .expect("cluster lock")
            .iter()
            .filter(|(_, p)| !p.route_url.is_empty())
            .map(|(id, p)| (id.clone(), p.route_url.clone()))
            .collect()
    }

    /// The other servers' client URLs (`connect_urls` for clients).
    pub fn client_urls(&self) -> Vec<String> {
        let peers = self.peers.lock().expect("cluster lock");
        let mut v: Vec<String> = peers.values().flat_map(|p| p.client_urls.iter().cloned()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Claims `d` for dialing: false when the same URL is being dialed
    /// already for the same account (or for the pool).
    pub fn start_dial(&self, d: &Dial) -> bool {
        self.dialing.lock().expect("cluster lock").insert(Self::dial_key(d))
    }

    /// A dial ended (its route closed, or it gave up): the URL may be
    /// dialed again.
    pub fn dial_done(&self, d: &Dial) {
        self.dialing.lock().expect("cluster lock").remove(&Self::dial_key(d));
    }

    fn dial_key(d: &Dial) -> (String, Option<String>) {
        (d.text.clone(), d.account.clone())
    }

    /// Remembers which server a configured URL leads to.
    pub fn set_url_peer(&self, url: &str, peer_id: &str) {
        self.url_peers
            .lock()
            .expect("cluster lock")
            .insert(url.to_string(), peer_id.to_string());
    }

    /// Whether a configured URL led back to this server (a file listing
    /// every node, this one included): it is not dialed again.
    pub fn url_is_self(&self, url: &str) -> bool {
        self.url_peers.lock().expect("cluster lock").get(url) == Some(&self.server_id)
    }

    /// Whether `host:port` is one of the configured routes.
    pub fn is_configured(&self, host: &str, port: u16) -> bool {
        self.opts
            .lock()
            .expect("cluster lock")
            .routes
            .iter()
            .filter_map(|r| crate::conf::cluster::route_url(r).ok())
            .any(|u| u.port == port && u.host == host)
    }

    /// Queues `bytes` for one route of every peer but `skip` (its first
    /// pooled, or only, connection), on the shard that owns it.
    pub fn announce(&self, skip: Option<&str>, bytes: Vec<u8>) {
        let targets: Vec<(ShardId, ConnId)> = self
            .peers
            .lock()
            .expect("cluster lock")
            .iter()
            .filter(|(id, _)| Some(id.as_str()) != skip)
            .filter_map(|(_, p)| p.carrier().map(|c| (c.shard, c.cid)))
            .collect();
        self.queue_for(targets, bytes);
    }

    /// Queues a pinned route's gossip (`bytes`, an INFO naming `account`)
    /// for the other peers that pool: on their route for that account, or
    /// their first pooled one; never to peers that do not pool.
    pub fn announce_pinned(&self, skip: &str, account: &str, bytes: Vec<u8>) {
        let targets: Vec<(ShardId, ConnId)> = self
            .peers
            .lock()
            .expect("cluster lock")
            .iter()
            .filter(|(id, p)| id.as_str() != skip && p.pool_size > 0)
            .filter_map(|(_, p)| p.pinned.get(account).or_else(|| p.carrier()).map(|c| (c.shard, c.cid)))
            .collect();
        self.queue_for(targets, bytes);
    }

    fn queue_for(&self, targets: Vec<(ShardId, ConnId)>, bytes: Vec<u8>) {
        for (shard, cid) in targets {
            if let Some(a) = self.announcements.get(shard.index()) {
                a.lock().expect("cluster lock").push((cid, bytes.clone()));
            }
        }
    }

    /// What shard `shard` must send to its routes.
    pub fn take_announcements(&self, shard: ShardId) -> Vec<Announcement> {
        std::mem::take(
            &mut *self.announcements[shard.index() % self.announcements.len()]
                .lock()
                .expect("cluster lock"),
        )
    }

    /// Asks a shard (in turn) to dial `d`: a pool's further connections
    /// spread over the shards.
    pub fn request_dial(&self, d: Dial) {
        let n = self.dial_requests.len();
        let i = self.next_dialer.fetch_add(1, Relaxed) as usize % n;
        self.dial_requests[i].lock().expect("cluster lock").push(d);
    }

    /// Asks the shards (in turn) to dial `d`'s server once for each of
    /// `accounts`, on routes dedicated to them.
    pub fn request_pinned<'a>(&self, d: &Dial, accounts: impl IntoIterator<Item = &'a String>) {
        for acc in accounts {
            self.request_dial(Dial {
                account: Some(acc.clone()),
                primary: true,
                ..d.clone()
            });
        }
    }

    /// Dials asked of shard `shard`.
    pub fn take_dial_requests(&self, shard: ShardId) -> Vec<Dial> {
        self.dial_requests
            .get(shard.index())
            .map(|q| std::mem::take(&mut *q.lock().expect("cluster lock")))
            .unwrap_or_default()
    }

    /// Number of route connections.
    pub fn route_count(&self) -> usize {
        self.peers
            .lock()
            .expect("cluster lock")
            .values()
            .map(|p| p.conns.len() + p.pinned.len())
            .sum()
    }
}

/// This server's client URLs as it advertises them to the cluster:
/// `client_advertise`, else the client listener's `host:port` (every
/// non-loopback address is not enumerated: a wildcard host advertises
/// 127.0.0.1, as petrel's ports file does).
pub fn own_client_urls(info: &crate::proto::info::ServerInfo, client_advertise: Option<&str>) -> Vec<String> {
    if let Some(a) = client_advertise {
        return vec![a.to_string()];
    }
    let host = match info.host.as_str() {
        "0.0.0.0" | "" | "::" | "[::]" => "127.0.0.1",
        h => h,
    };
    vec![format!("{host}:{}", info.port)]
}

/// nats-server's pool index of an account: FNV-1a (32 bit) of its name,
/// modulo the pool size.
pub fn pool_index(account: &str, pool_size: usize) -> usize {
    if pool_size <= 1 {
        return 0;
    }
    let mut h: u32 = 2_166_136_261;
    for b in account.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(16_777_619);
    }
    (h as usize) % pool_size
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(cid: u64) -> RouteConn {
        RouteConn {
            cid: ConnId(cid),
            shard: ShardId(0),
            did_solicit: true,
            is_configured: true,
            ip: "127.0.0.1".into(),
            port: 1,
            start: SystemTime::now(),
            scope: RouteScope::NoPool,
            compression: String::new(),
        }
    }

    #[test]
    fn registration_and_duplicates() {
        let c = Cluster::new("ME".into(), ClusterOptions::default(), 2);
        let peer = || Peer {
            name: "b".into(),
            client_urls: vec!["127.0.0.1:4223".into()],
            pool_size: 3,
            ..Default::default()
        };
        assert_eq!(c.register("ME", peer(), conn(1), Slot::Index(0)), Err(Refused::ToSelf));
        assert_eq!(
            c.register("B", peer(), conn(1), Slot::Index(1)),
            Ok((RouteScope::Pooled(1), true))
        );
        assert_eq!(
            c.register("B", peer(), conn(2), Slot::Index(1)),
            Err(Refused::Duplicate)
        );
        // A dialer takes the first free index; the pool is max(ours, theirs).
        assert_eq!(
            c.register("B", peer(), conn(3), Slot::FirstFree(2)),
            Ok((RouteScope::Pooled(0), false))
        );
        assert_eq!(
            c.register("B", peer(), conn(4), Slot::FirstFree(2)),
            Ok((RouteScope::Pooled(2), false))
        );
        assert_eq!(
            c.register("B", peer(), conn(5), Slot::FirstFree(2)),
            Err(Refused::PoolFull)
        );
        let sys = Slot::Pinned("$SYS".into());
        assert_eq!(
            c.register("B", peer(), conn(6), sys.clone()),
            Ok((RouteScope::Pinned("$SYS".into()), false))
        );
        assert_eq!(c.register("B", peer(), conn(7), sys), Err(Refused::Duplicate));
        assert_eq!(c.route_count(), 4);
        assert_eq!(c.client_urls(), vec!["127.0.0.1:4223".to_string()]);
        for cid in [1, 3, 4] {
            assert!(!c.unregister("B", ConnId(cid)));
        }
        assert!(c.unregister("B", ConnId(6)));
        assert!(c.client_urls().is_empty());
        // A peer without a pool has one route.
        assert_eq!(
            c.register("C", peer(), conn(8), Slot::NoPool),
            Ok((RouteScope::NoPool, true))
        );
        assert_eq!(c.register("C", peer(), conn(9), Slot::NoPool), Err(Refused::Duplicate));
    }

    #[test]
    fn accounts_spread_over_the_pool_as_nats_server_spreads_them() {
        let opts = ClusterOptions {
            pinned_accounts: vec!["P".into()],
            ..Default::default()
        };
        let pool = RoutePool::new(&opts, "$SYS");
        assert_eq!(pool.size, Some(3));
        assert!(pool.is_pinned("$SYS") && pool.is_pinned("P"));
        // nats-server's indexes with pool_size 3: $G on 2, A and B on 0.
        assert!(pool.carries(&RouteScope::Pooled(2), "$G"));
        assert!(pool.carries(&RouteScope::Pooled(0), "A") && pool.carries(&RouteScope::Pooled(0), "B"));
        assert!(
            !pool.carries(&RouteScope::Pooled(0), "$SYS"),
            "pinned: its own route only"
        );
        assert!(pool.carries(&RouteScope::Pinned("$SYS".into()), "$SYS"));
        assert!(pool.carries(&RouteScope::NoPool, "$SYS"));
        let none = RoutePool::new(
            &ClusterOptions {
                pool_size: Some(-1),
                ..Default::default()
            },
            "$SYS",
        );
        assert_eq!((none.size, none.pinned.len(), none.advertised()), (None, 0, 0));
    }

    #[test]
    fn dialers_fill_the_pool_then_stop() {
        let c = Cluster::new("ME".into(), ClusterOptions::default(), 2);
        let pool = RoutePool::new(&ClusterOptions::default(), "$SYS");
        let url = crate::conf::cluster::route_url("nats://127.0.0.1:1").unwrap();
        let primary = Dial::new(url, "nats://127.0.0.1:1".into(), true, 0);
        let extra = Dial {
            primary: false,
            ..primary.clone()
        };
        let sys = Dial {
            account: Some("$SYS".into()),
            ..primary.clone()
        };
        assert_eq!(c.need(&primary, &pool), Need::Dial);
        assert_eq!(c.need(&extra, &pool), Need::Done, "extras wait for the first");
        let peer = || Peer {
            pool_size: 3,
            ..Default::default()
        };
        c.register("B", peer(), conn(1), Slot::FirstFree(3)).unwrap();
        c.set_url_peer("nats://127.0.0.1:1", "B");
        assert_eq!(c.need(&extra, &pool), Need::Dial);
        assert_eq!(c.need(&sys, &pool), Need::Dial);
        c.register("B", peer(), conn(2), Slot::FirstFree(3)).unwrap();
        c.register("B", peer(), conn(3), Slot::FirstFree(3)).unwrap();
        assert_eq!(c.need(&extra, &pool), Need::Done, "a full pool ends its extra dialers");
        assert_eq!(c.need(&primary, &pool), Need::Wait);
        c.register("B", peer(), conn(4), Slot::Pinned("$SYS".into())).unwrap();
        assert_eq!(c.need(&sys, &pool), Need::Wait);
        // A peer that does not pool: nothing more to dial.
        c.register("C", Peer::default(), conn(5), Slot::NoPool).unwrap();
        c.set_url_peer("nats://127.0.0.1:1", "C");
        assert_eq!(c.need(&sys, &pool), Need::Done);
        assert_eq!(c.need(&primary, &pool), Need::Wait);
    }

    #[test]
    fn names_are_adopted_when_dynamic() {
        let c = Cluster::new("ME".into(), ClusterOptions::default(), 1);
        assert!(c.accept_name("x"));
        assert!(!c.accept_name("y"));
        assert!(c.accept_name("x"));
    }

    #[test]
    fn pool_index_is_fnv1a() {
        // FNV-1a 32 of "" is the offset basis; of "a" is 0xe40c292c.
        assert_eq!(pool_index("a", 1 << 31), 0xe40c292c % (1 << 31));
        assert_eq!(pool_index("anything", 1), 0);
    }
}
