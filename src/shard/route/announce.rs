//! What a shard tells its routes: this server's interest as `RS+`/`RS-`
//! (all of it to a route that registers, changes as they happen), gossip
//! and lame duck notices; and what the cluster changes for its clients
//! (`connect_urls`, async INFO).

use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::{Cluster, RouteScope};
use crate::core::ShardCore;
use crate::core::{LeafOrigins, RouteInterest};
use crate::proto::encode;
use crate::proto::route_info::{RouteInfo, ROUTE_PROTO};
use crate::shard::state::Shard;

pub(super) fn cluster(shard: &Shard) -> Arc<Cluster> {
    shard
        .shared
        .cluster
        .get()
        .expect("routes run only in a cluster")
        .clone()
}

/// This server's route INFO.
pub(super) fn our_info(shard: &Shard, c: &Cluster, gossip_mode: u8) -> RouteInfo {
    let opts = c.opts();
    let info = shard.info.borrow();
    let (host, port) = match opts.advertise.as_deref().and_then(|a| a.rsplit_once(':')) {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(0)),
        None => {
            let listen = c.listen.lock().expect("cluster lock").clone().unwrap_or_default();
            let (h, p) = listen.rsplit_once(':').unwrap_or(("", "0"));
            (h.to_string(), p.parse().unwrap_or(0))
        }
    };
    let ip = match &opts.advertise {
        Some(a) => format!("nats-route://{a}/"),
        None => String::new(),
    };
    RouteInfo {
        server_id: c.server_id.clone(),
        server_name: info.server_name.clone(),
        version: info.version.clone(),
        proto: ROUTE_PROTO,
        go: info.go.clone(),
        host,
        port,
        headers: info.headers,
        auth_required: opts.username.is_some(),
        tls_required: opts.tls.is_some(),
        tls_verify: opts.tls.is_some(),
        import: shard.routes.perms().and_then(|p| super::perms::to_wire(&p.import)),
        export: shard.routes.perms().and_then(|p| super::perms::to_wire(&p.export)),
        max_payload: info.max_payload,
        nonce: crate::shard::host::new_nonce(),
        ip,
        cluster: c.name().unwrap_or_default(),
        connect_urls: if opts.no_advertise {
            Vec::new()
        } else {
            crate::cluster::own_client_urls(&info, shard.opts.borrow().client_advertise.as_deref())
        },
        compression: opts.compression.info_value().into(),
        gossip_mode,
        route_pool_size: shard.routes.pool().advertised(),
        lnoc: true,
        lnocu: true,
        ..Default::default()
    }
}

/// A reload changed the route permissions: installs them on this shard
/// and tells its routes (an INFO with the new lists, then the interest
/// whose import changed).
pub(super) fn announce_permissions(shard: &Shard, c: &Cluster, new: Option<crate::options::RoutePermissions>) {
    let Some(changes) = super::perms::install(shard, new) else {
        return;
    };
    let mut info = our_info(shard, c, 0);
    info.nonce.clear();
    let mut line = Vec::new();
    encode::info(&mut line, &info.to_json());
    send_to_routes(shard, &line);
    send_interest(shard, &changes, |_| true);
}

/// A peer's INFO changed its route permissions' `export`: sends it the
/// interest it takes now and did not before.
pub(super) fn peer_export_changed(
    shard: &Shard,
    cid: crate::ids::ConnId,
    old: Option<&crate::proto::route_info::SubjectPermission>,
    new: Option<&crate::proto::route_info::SubjectPermission>,
) {
    let Some(scope) = shard.routes.scope(cid) else { return };
    let origins = shard.core.borrow().route_origins(cid);
    let out = interest_lines(shard, &super::perms::newly_exported(shard, old, new), &scope, origins);
    if !out.is_empty() {
        shard.core.borrow_mut().send_raw(cid, &out);
    }
}

/// `RS+`/`RS-` (and `LS+`/`LS-`) lines for the interest changes a route
/// of `scope` whose peer takes `origins` carries; interest the route
/// permissions do not import is not sent.
pub(super) fn interest_lines(
    shard: &Shard,
    changes: &[RouteInterest],
    scope: &RouteScope,
    origins: LeafOrigins,
) -> Vec<u8> {
    encode_interest(shard, changes, scope, origins, |s| super::perms::may_import(shard, s))
}

/// The lines for the changes of the accounts a route of `scope` carries
/// whose subject `keep` takes: each account named, but on a route
/// dedicated to it; interest held by leaf connections as `LS+ <origin>`
/// to a peer that takes it (as nats-server announces it), `RS+` to one
/// that does not.
fn encode_interest(
    shard: &Shard,
    changes: &[RouteInterest],
    scope: &RouteScope,
    origins: LeafOrigins,
    keep: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    let accounts = shard.verifier.borrow().accounts().clone();
    let pool = shard.routes.pool();
    let mut out = Vec::new();
    for ch in changes {
        if !keep(&ch.subject) {
            continue;
        }
        let Some(acc) = accounts.by_id(ch.account) else {
            continue;
        };
        if !pool.carries(scope, &acc.name) {
            continue;
        }
        let name = (!matches!(scope, RouteScope::Pinned(_))).then_some(acc.name.as_bytes());
        let queue = ch.queue.as_deref();
        match (ch.origin.as_deref().filter(|_| origins.lnoc), ch.weight) {
            (Some(o), 0) => {
                let named = origins.lnocu.then_some(o);
                encode::route_leaf_unsub(&mut out, named, name, &ch.subject, queue);
            }
            (Some(o), w) => encode::route_leaf_sub(&mut out, o, name, &ch.subject, queue.map(|q| (q, w))),
            (None, 0) => encode::route_unsub(&mut out, name, &ch.subject, queue),
            (None, w) => encode::route_sub(&mut out, name, &ch.subject, queue.map(|q| (q, w))),
        }
    }
    out
}

/// Sends interest changes to every registered route of the shard, each
/// the part its scope carries (encoded once per scope).
fn send_interest(shard: &Shard, changes: &[RouteInterest], keep: impl Fn(&[u8]) -> bool) {
    if changes.is_empty() {
        return;
    }
    send_interest_with(shard, &mut shard.core.borrow_mut(), changes, keep);
}

/// [`send_interest`] with the core already in hand (the core calls it
/// before a message goes to a route: `ShardCore::set_interest_flush`).
fn send_interest_with(shard: &Shard, core: &mut ShardCore, changes: &[RouteInterest], keep: impl Fn(&[u8]) -> bool) {
    let mut by_scope: rustc_hash::FxHashMap<(RouteScope, LeafOrigins), Vec<u8>> = Default::default();
    let routes = shard.routes.registered();
    for (cid, _, scope) in routes {
        let origins = core.route_origins(cid);
        let lines = by_scope
            .entry((scope.clone(), origins))
            .or_insert_with(|| encode_interest(shard, changes, &scope, origins, &keep));
        if !lines.is_empty() {
            core.send_raw(cid, lines);
        }
    }
}

/// Sends the interest changes counted so far to this shard's registered
/// routes.
pub(super) fn announce_pending(shard: &Rc<Shard>) {
    let changes = shard.core.borrow_mut().take_route_interest();
    send_interest(shard, &changes, |s| super::perms::may_import(shard, s));
}

/// Sends `bytes` to every registered route of the shard.
pub(super) fn send_to_routes(shard: &Shard, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let mut core = shard.core.borrow_mut();
    for (cid, _, _) in shard.routes.registered() {
        core.send_raw(cid, bytes);
    }
}

/// Announces this server's interest changes to the shard's routes as they
/// happen, and passes on what the cluster asks every route to hear.
pub async fn announce_interest(shard: Rc<Shard>) {
    // Interest pending when a message is about to go to a route is written
    // first, by the core (the shard lives as long as the process).
    let weak = Rc::downgrade(&shard);
    shard
        .core
        .borrow_mut()
        .set_interest_flush(Box::new(move |core, changes| {
            if let Some(shard) = weak.upgrade() {
                send_interest_with(&shard, core, changes, |s| super::perms::may_import(&shard, s));
            }
        }));
    let mut changes = Vec::new();
    loop {
        shard.next_batch(&mut changes, ShardCore::poll_route_interest).await;
        send_interest(&shard, &changes, |s| super::perms::may_import(&shard, s));
        changes.clear();
    }
}

/// The client INFO's `connect_urls`: this server's client URLs and every
/// peer's, once any peer advertises some (none with `no_advertise`).
/// Clients that take async INFO ([`crate::proto::session::Session::takes_async_info`]) are told
/// of a change.
pub(super) fn update_connect_urls(shard: &Shard, c: &Cluster, tell_clients: bool) {
    let opts = c.opts();
    let peers = if opts.no_advertise { Vec::new() } else { c.client_urls() };
    let urls = if peers.is_empty() {
        Vec::new()
    } else {
        let own =
            crate::cluster::own_client_urls(&shard.info.borrow(), shard.opts.borrow().client_advertise.as_deref());
        let mut all = own;
        for u in peers {
            if !all.contains(&u) {
                all.push(u);
            }
        }
        all
    };
    if shard.info.borrow().connect_urls == urls {
        return;
    }
    shard.info.borrow_mut().connect_urls = urls;
    if !tell_clients {
        return;
    }
    let info = shard.info.borrow().clone();
    let conns = shard.conns.borrow();
    let mut core = shard.core.borrow_mut();
    for (cid, h) in conns.iter() {
        let session = h.session.borrow();
        if session.takes_async_info() {
            let json = crate::shard::host::client_info(&info, *cid, &h.ip).to_json();
            if let Some(conn) = core.conn_mut(*cid) {
                encode::info(conn.out.tail(), &json);
            }
            core.wake(*cid);
        }
    }
}

/// Lame duck mode: tells this shard's routes, with `ldm` in an INFO, so
/// peers stop sending this server's URL to their clients.
pub fn announce_lame_duck(shard: &Shard) {
    let Some(c) = shard.shared.cluster.get() else { return };
    let mut info = our_info(shard, c, 0);
    info.nonce.clear();
    info.ldm = true;
    let mut line = Vec::new();
    encode::info(&mut line, &info.to_json());
    send_to_routes(shard, &line);
}
