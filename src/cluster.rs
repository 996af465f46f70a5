//! The cluster registry (control plane): which peer servers this one knows,
//! their route connections by pool index, the client URLs they advertise
//! (for client INFO `connect_urls`) and the routes shards should dial.
//! Touched when routes come and go, never on the publish path.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::conf::cluster::RouteUrl;
use crate::ids::{ConnId, ShardId};
use crate::options::ClusterOptions;
use crate::route_tls::RouteTls;

/// Bytes for every route but the one to the named peer.
pub type Announcement = (Option<String>, Vec<u8>);

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
    /// Pool index.
    pub pool_idx: usize,
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
    /// Its route connections, by pool index.
    pub conns: BTreeMap<usize, RouteConn>,
    /// Its pool size.
    pub pool_size: usize,
}

/// Why a route could not register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// This pool index of that peer is already connected.
    Duplicate,
    /// The route leads back to this server.
    ToSelf,
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
    dialing: Mutex<HashSet<String>>,
    /// Configured routes a reload added, for a shard to start dialing.
    added_routes: Mutex<Vec<String>>,
    /// Route TLS in force (`cluster { tls }`), for new route connections.
    tls: Mutex<Option<Arc<RouteTls>>>,
    /// Each shard's route counters, as it last published them.
    counters: Vec<Mutex<Vec<RouteCounters>>>,
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

    /// Registers a route connection to `peer` at `conn.pool_idx`.
    pub fn register(&self, peer_id: &str, peer: Peer, conn: RouteConn) -> Result<(), Refused> {
        if peer_id == self.server_id {
            return Err(Refused::ToSelf);
        }
        let mut peers = self.peers.lock().expect("cluster lock");
        let p = peers.entry(peer_id.to_string()).or_default();
        if p.conns.contains_key(&conn.pool_idx) {
            return Err(Refused::Duplicate);
        }
        let urls_changed = p.client_urls != peer.client_urls;
        p.name = peer.name;
        p.route_url = peer.route_url;
        p.client_urls = peer.client_urls;
        p.pool_size = peer.pool_size;
        p.conns.insert(conn.pool_idx, conn);
        drop(peers);
        if urls_changed {
            self.urls_generation.fetch_add(1, Relaxed);
        }
        self.generation.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Forgets a route connection; the peer goes when its last one does.
    /// Returns whether the peer is gone.
    pub fn unregister(&self, peer_id: &str, cid: ConnId) -> bool {
        let mut peers = self.peers.lock().expect("cluster lock");
        let Some(p) = peers.get_mut(peer_id) else { return false };
        p.conns.retain(|_, c| c.cid != cid);
        let gone = p.conns.is_empty();
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

    /// Whether a route to `peer_id` at `pool_idx` is registered.
    pub fn is_connected(&self, peer_id: &str, pool_idx: usize) -> bool {
        self.peers
            .lock()
            .expect("cluster lock")
            .get(peer_id)
            .is_some_and(|p| p.conns.contains_key(&pool_idx))
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
    /// already.
    pub fn start_dial(&self, d: &Dial) -> bool {
        self.dialing.lock().expect("cluster lock").insert(d.text.clone())
    }

    /// A dial ended (its route closed, or it gave up): the URL may be
    /// dialed again.
    pub fn dial_done(&self, d: &Dial) {
        self.dialing.lock().expect("cluster lock").remove(&d.text);
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

    /// The server a configured URL led to last, when it is connected now.
    pub fn url_connected(&self, url: &str) -> bool {
        let id = self.url_peers.lock().expect("cluster lock").get(url).cloned();
        id.is_some_and(|id| self.peers.lock().expect("cluster lock").contains_key(&id))
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

    /// Queues `bytes` for every registered route but the one to `skip`.
    pub fn announce(&self, skip: Option<&str>, bytes: Vec<u8>) {
        for a in &self.announcements {
            a.lock()
                .expect("cluster lock")
                .push((skip.map(str::to_string), bytes.clone()));
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

    /// Number of route connections.
    pub fn route_count(&self) -> usize {
        self.peers
            .lock()
            .expect("cluster lock")
            .values()
            .map(|p| p.conns.len())
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

    fn conn(cid: u64, idx: usize) -> RouteConn {
        RouteConn {
            cid: ConnId(cid),
            shard: ShardId(0),
            did_solicit: true,
            is_configured: true,
            ip: "127.0.0.1".into(),
            port: 1,
            start: SystemTime::now(),
            pool_idx: idx,
        }
    }

    #[test]
    fn registration_and_duplicates() {
        let c = Cluster::new("ME".into(), ClusterOptions::default(), 2);
        let peer = || Peer {
            name: "b".into(),
            client_urls: vec!["127.0.0.1:4223".into()],
            ..Default::default()
        };
        assert_eq!(c.register("ME", peer(), conn(1, 0)), Err(Refused::ToSelf));
        assert_eq!(c.register("B", peer(), conn(1, 0)), Ok(()));
        assert_eq!(c.register("B", peer(), conn(2, 0)), Err(Refused::Duplicate));
        assert_eq!(c.register("B", peer(), conn(3, 1)), Ok(()));
        assert_eq!(c.client_urls(), vec!["127.0.0.1:4223".to_string()]);
        assert!(!c.unregister("B", ConnId(1)));
        assert!(c.unregister("B", ConnId(3)));
        assert!(c.client_urls().is_empty());
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
