//! Where route connections come from: the route listener's accept loop,
//! configured routes kept up for good, gossip-learned routes tried once;
//! and the shard's periodic cluster work (gossip out, routes a reload
//! added or removed).

use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};

use super::announce::{cluster, send_to_routes, update_connect_urls};
use super::conn::serve;
use crate::cluster::Dial;
use crate::conf::cluster::route_url;
use crate::ids::ConnId;
use crate::proto::errors::CloseReason;
use crate::shard::state::Shard;

/// Dial timeout and the pause between attempts (doubling up to 30 s with
/// `connect_backoff`).
pub(super) const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) const RETRY: Duration = Duration::from_secs(1);

pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Serves accepted route connections on this shard (the route listener is
/// bound once per shard, the kernel spreads peers over them).
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let cid = shard.shared.next_cid();
                glommio::spawn_local(serve(shard.clone(), stream, cid, None, spawn_learned)).detach();
            }
            Err(e) => {
                crate::error!("Temporary Route Accept Error({e}), sleeping 1000ms");
                glommio::timer::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

pub(super) async fn dial(d: &Dial) -> std::io::Result<TcpStream> {
    let addrs: Vec<_> = (d.url.host.as_str(), d.url.port).to_socket_addrs()?.collect();
    let addr = addrs
        .get(fastrand::usize(..addrs.len().max(1)))
        .copied()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    TcpStream::connect_timeout(addr, DIAL_TIMEOUT)
        .await
        .map_err(std::io::Error::from)
}

/// Hands the shard's route counters to the registry (routez, STATSZ).
fn publish_counters(shard: &Shard, c: &crate::cluster::Cluster) {
    let cids = shard.routes.cids();
    let core = shard.core.borrow();
    let counters = cids
        .into_iter()
        .filter_map(|cid| {
            let conn = core.conn(cid)?;
            Some(crate::cluster::RouteCounters {
                cid: cid.0,
                pending_bytes: conn.out.len(),
                in_msgs: conn.in_msgs,
                in_bytes: conn.in_bytes,
                out_msgs: conn.out_msgs,
                out_bytes: conn.out_bytes,
                subscriptions: conn.subscription_count(),
            })
        })
        .collect();
    c.publish_counters(shard.id, counters);
}

pub(super) fn jitter() -> Duration {
    Duration::from_millis(fastrand::u64(..100))
}

/// Keeps a configured route up for good: dials until it connects (every
/// second, or backing off to 30 s with `connect_backoff`), serves it, and
/// dials again after it closes; while the peer is connected through a
/// route it dialed itself, waits.
pub async fn keep_configured(shard: Rc<Shard>, text: String) {
    let c = cluster(&shard);
    let Ok(url) = route_url(&text) else { return };
    let d = Dial {
        url,
        text: text.clone(),
        configured: true,
        gossip_mode: 0,
    };
    let mut attempt: u64 = 0;
    let mut delay = RETRY;
    loop {
        if !c.opts().routes.contains(&text) {
            return; // removed by a reload
        }
        if c.url_is_self(&text) {
            return;
        }
        if c.url_connected(&text) {
            glommio::timer::sleep(RETRY).await;
            continue;
        }
        crate::debug!("Trying to connect to route on {}:{}", d.url.host, d.url.port);
        match dial(&d).await {
            Ok(stream) => {
                attempt = 0;
                delay = RETRY;
                let cid = shard.shared.next_cid();
                serve(shard.clone(), stream, cid, Some(d.clone()), spawn_learned).await;
                glommio::timer::sleep(RETRY + jitter()).await;
            }
            Err(e) => {
                attempt += 1;
                if attempt == 1 || attempt.is_multiple_of(3600) {
                    crate::error!("Error trying to connect to route (attempt {attempt}): {e}");
                }
                glommio::timer::sleep(delay).await;
                if c.opts().connect_backoff {
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Dials, in a task of its own, a server a peer told of.
fn spawn_learned(shard: Rc<Shard>, d: Dial) {
    glommio::spawn_local(dial_implicit(shard, d)).detach();
}

/// Dials a route learned by gossip: once, plus `connect_retries` more.
pub(super) async fn dial_implicit(shard: Rc<Shard>, d: Dial) {
    let c = cluster(&shard);
    if !c.start_dial(&d) {
        return;
    }
    glommio::timer::sleep(jitter()).await;
    let retries = c.opts().connect_retries;
    for attempt in 0..=retries {
        crate::debug!("Trying to connect to route on {}:{}", d.url.host, d.url.port);
        match dial(&d).await {
            Ok(stream) => {
                let cid = shard.shared.next_cid();
                serve(shard.clone(), stream, cid, Some(d.clone()), spawn_learned).await;
                break;
            }
            Err(e) => {
                crate::debug!("Error trying to connect to route (attempt {}): {e}", attempt + 1);
                glommio::timer::sleep(RETRY).await;
            }
        }
    }
    c.dial_done(&d);
}

/// Run from the shard's poll loop: passes on what the cluster asked every
/// route to hear (gossip), and after a reload closes routes dialed for
/// URLs no longer configured (shard 0 starts dialing new ones).
pub fn poll_cluster(shard: &Rc<Shard>) {
    let Some(c) = shard.shared.cluster.get() else { return };
    publish_counters(shard, c);
    for (skip, bytes) in c.take_announcements(shard.id) {
        send_to_routes(shard, &bytes, skip.as_deref());
    }
    let reloaded = shard.generation_changed_routes();
    let urls = c.urls_generation.load(std::sync::atomic::Ordering::Relaxed);
    if reloaded || urls != shard.urls_seen.replace(urls) {
        update_connect_urls(shard, c, !reloaded);
    }
    if reloaded {
        let opts = c.opts();
        super::announce::announce_permissions(shard, c, opts.permissions);
        let routes = opts.routes;
        let removed: Vec<ConnId> = shard
            .routes
            .peers
            .borrow()
            .iter()
            .filter(|(_, (_, url, _))| url.as_ref().is_some_and(|u| !routes.contains(u)))
            .map(|(cid, _)| *cid)
            .collect();
        let mut core = shard.core.borrow_mut();
        for cid in removed {
            core.close_conn(cid, CloseReason::RouteRemoved);
        }
    }
    if shard.id.index() == 0 {
        for url in c.take_added_routes() {
            glommio::spawn_local(keep_configured(shard.clone(), url)).detach();
        }
    }
}
