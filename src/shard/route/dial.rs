//! Where route connections come from: the route listener's accept loop,
//! configured routes kept up for good, gossip-learned routes tried once;
//! and the shard's periodic cluster work (gossip out, routes a reload
//! added or removed).

use std::rc::Rc;
use std::time::Duration;

use crate::rt::net::{TcpListener, TcpStream};

use std::sync::Arc;

use super::announce::{cluster, update_connect_urls};
use super::conn::serve;
use super::link::Redial;
use crate::cluster::{Dial, Need, RoutePool};
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
                crate::rt::spawn_local(serve(shard.clone(), stream, cid, None, spawn_learned)).detach();
            }
            Err(_) if shard.shared.listeners_stopped(crate::listeners::Facing::Links) => return,
            Err(e) => {
                crate::error!("Temporary Route Accept Error({e}), sleeping 1000ms");
                crate::rt::timer::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

pub(super) async fn dial(d: &Dial) -> std::io::Result<TcpStream> {
    let addrs = crate::rt::net::resolve(&d.url.host, d.url.port).await?;
    let addr = addrs
        .get(fastrand::usize(..addrs.len().max(1)))
        .copied()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    TcpStream::connect_timeout(addr, DIAL_TIMEOUT).await
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

/// Starts keeping the configured route `text` up: its first connection
/// dialed from this shard, the connections dedicated to pinned accounts
/// from the shards in turn (the rest of the pool follows the first).
pub fn keep_configured(shard: &Rc<Shard>, text: String) {
    let Ok(url) = route_url(&text) else { return };
    let d = Dial::new(url, text, true, 0);
    cluster(shard).request_pinned(&d, &shard.routes.pool().pinned);
    crate::rt::spawn_local(keep_route(shard.clone(), d)).detach();
}

/// Keeps one route connection up as long as it is needed: dials (every
/// second, or backing off to 30 s with `connect_backoff`; an implicit
/// route `connect_retries` more times only), serves it, and looks again
/// after it closes ([`crate::cluster::Cluster::need`]: a configured
/// route's first connection is kept for good, a pool's further ones and
/// implicit ones end once nothing is missing).
pub(super) async fn keep_route(shard: Rc<Shard>, d: Dial) {
    let c = cluster(&shard);
    // One implicit dialer per URL and account; a pool's further ones are
    // started one at a time by the connection before them.
    let claimed = !d.configured && d.primary;
    if claimed && !c.start_dial(&d) {
        return;
    }
    crate::rt::timer::sleep(jitter()).await;
    let mut attempt: u64 = 0;
    let mut connected_before = false;
    let mut delay = RETRY;
    loop {
        if d.configured && !c.opts().routes.contains(&d.text) {
            break; // removed by a reload
        }
        if c.url_is_self(&d.text) {
            break;
        }
        match c.need(&d, &shard.routes.pool()) {
            Need::Done => break,
            Need::Wait => {
                crate::rt::timer::sleep(RETRY).await;
                continue;
            }
            Need::Dial => {}
        }
        match &d.account {
            Some(a) => crate::debug!(
                "Trying to connect to route on {}:{} for account {a:?}",
                d.url.host,
                d.url.port
            ),
            None => crate::debug!("Trying to connect to route on {}:{}", d.url.host, d.url.port),
        }
        match dial(&d).await {
            Ok(stream) => {
                attempt = 0;
                connected_before = true;
                delay = RETRY;
                let cid = shard.shared.next_cid();
                if serve(shard.clone(), stream, cid, Some(d.clone()), spawn_learned).await == Redial::Never {
                    break;
                }
                crate::rt::timer::sleep(if d.configured { RETRY } else { Duration::ZERO } + jitter()).await;
            }
            Err(e) => {
                attempt += 1;
                if !d.configured {
                    crate::debug!("Error trying to connect to route (attempt {attempt}): {e}");
                    if attempt > u64::from(c.opts().connect_retries) {
                        break;
                    }
                } else if shard.opts.borrow().report_connect_error(connected_before, attempt) {
                    crate::error!("Error trying to connect to route (attempt {attempt}): {e}");
                } else {
                    crate::debug!("Error trying to connect to route (attempt {attempt}): {e}");
                }
                crate::rt::timer::sleep(delay).await;
                if d.configured && c.opts().connect_backoff {
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
    if claimed {
        c.dial_done(&d);
    }
}

/// Dials, in a task of its own, a server a peer told of.
fn spawn_learned(shard: Rc<Shard>, d: Dial) {
    crate::rt::spawn_local(keep_route(shard, d)).detach();
}

/// Run from the shard's poll loop: passes on what the cluster asked every
/// route to hear (gossip), and after a reload closes routes dialed for
/// URLs no longer configured (shard 0 starts dialing new ones).
pub fn poll_cluster(shard: &Rc<Shard>) {
    let Some(c) = shard.shared.cluster.get() else { return };
    publish_counters(shard, c);
    {
        let mut core = shard.core.borrow_mut();
        for (cid, bytes) in c.take_announcements(shard.id) {
            core.send_raw(cid, &bytes);
        }
    }
    for d in c.take_dial_requests(shard.id) {
        crate::rt::spawn_local(keep_route(shard.clone(), d)).detach();
    }
    let reloaded = shard.generation_changed_routes();
    let urls = c.urls_generation.load(std::sync::atomic::Ordering::Relaxed);
    if reloaded || urls != shard.urls_seen.replace(urls) {
        update_connect_urls(shard, c, !reloaded);
    }
    if reloaded {
        let opts = c.opts();
        super::announce::announce_permissions(shard, c, opts.permissions.clone());
        let pool = RoutePool::new(&opts, &shard.verifier.borrow().accounts().system().name);
        // A new pool (size or pinned accounts) takes new connections: every
        // route is closed, and dialed again by whichever side dialed it.
        let repool = *shard.routes.pool() != pool;
        if repool {
            let old = std::mem::replace(&mut *shard.routes.pool.borrow_mut(), Arc::new(pool.clone()));
            if shard.id.index() == 0 {
                // Accounts pinned now get their routes (the first connections
                // of configured routes are dialed again by their keepers).
                let added: Vec<&String> = pool.pinned.iter().filter(|a| !old.is_pinned(a)).collect();
                for text in &opts.routes {
                    if let Ok(url) = route_url(text) {
                        c.request_pinned(&Dial::new(url, text.clone(), true, 0), added.iter().copied());
                    }
                }
            }
        }
        let routes = opts.routes;
        let removed: Vec<ConnId> = shard
            .routes
            .peers
            .borrow()
            .iter()
            .filter(|(_, e)| repool || e.configured.as_ref().is_some_and(|u| !routes.contains(u)))
            .map(|(cid, _)| *cid)
            .collect();
        let mut core = shard.core.borrow_mut();
        for cid in removed {
            core.close_conn(cid, CloseReason::RouteRemoved);
        }
    }
    if shard.id.index() == 0 {
        for url in c.take_added_routes() {
            keep_configured(shard, url);
        }
    }
}
