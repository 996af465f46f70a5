//! Leaf node connections, owned by shards like clients and routes: the
//! leaf listener's accept loop (this server a hub), the remotes this server
//! keeps connected to (this server a leaf, "spoke"), one connection's
//! protocol (`link`), and what a shard publishes for monitoring. What
//! arrives is fed to the routing core as a `LinkKind::Leaf` link bound to
//! one account (`add_leaf`, `subscribe_leaf`, `publish_leaf`); the core
//! tells each leaf connection its account's interest as `LS+`/`LS-`.

mod link;

use std::rc::Rc;
use std::time::Duration;

use crate::rt::net::{TcpListener, TcpStream};

use crate::conf::leaf::{leaf_url, leaf_ws, WsTarget};
use crate::options::LeafRemote;
use crate::shard::socket::Socket;
use crate::shard::state::Shard;

/// How long a connect to a remote may take when `dial_timeout` is unset.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a remote's connect attempts pause after a loop was detected.
pub(super) const LOOP_DELAY: Duration = Duration::from_secs(30);

/// Serves accepted leaf connections on this shard (the leaf listener is
/// bound once per shard, the kernel spreads leaf nodes over them).
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let cid = shard.shared.next_cid();
                crate::rt::spawn_local(link::serve(shard.clone(), stream, cid, None)).detach();
            }
            Err(_) if shard.shared.listeners_stopped(crate::listeners::Facing::Links) => return,
            Err(e) => {
                crate::error!("Temporary Leafnode Accept Error({e}), sleeping 1000ms");
                crate::rt::timer::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Keeps this server connected, as a leaf, to one of `remote`'s URLs:
/// after a connection ends, `reconnect` later (30 s after a loop); after a
/// failed dial, `reconnect` plus up to as much again. URLs are tried in
/// turn, shuffled unless `no_randomize`.
pub async fn keep_remote(shard: Rc<Shard>, remote: LeafRemote) {
    // The hub's verification, loaded once (the system's roots without a
    // `ca_file`).
    let tls = match crate::route_tls::dial_config(&remote.tls.clone().unwrap_or_default()) {
        Ok(t) => t,
        Err(e) => {
            crate::error!("Leafnode remote {:?}: {e}", remote.urls);
            return;
        }
    };
    let mut urls = remote.urls.clone();
    if !remote.no_randomize {
        fastrand::shuffle(&mut urls);
    }
    let mut attempt = 0u64;
    let mut connected_before = false;
    loop {
        let lo = shard.shared.leaf.get().map(|l| l.opts()).unwrap_or_default();
        let text = urls[0].clone();
        urls.rotate_left(1);
        let Ok(url) = leaf_url(&text) else { continue };
        let hostport = format!("{}:{}", url.host, url.port);
        crate::debug!("Trying to connect as leafnode to remote server on {hostport:?}");
        match dial(&url.host, url.port, lo.dial_timeout.unwrap_or(DIAL_TIMEOUT)).await {
            Ok(stream) => {
                attempt = 0;
                connected_before = true;
                let cid = shard.shared.next_cid();
                let ws = leaf_ws(&text);
                let tls_required = remote.tls.is_some()
                    || text.to_ascii_lowercase().starts_with("tls://")
                    || ws.as_ref().is_some_and(|w| w.tls);
                let spoke = link::Spoke {
                    remote: remote.clone(),
                    url,
                    tls_required,
                    tls: tls.clone(),
                };
                let delay = match ws {
                    None => link::serve(shard.clone(), stream, cid, Some(spoke)).await,
                    Some(target) => match upgrade(&shard, stream, &spoke, &target, &hostport).await {
                        Ok(ws) => link::serve_ws(shard.clone(), ws, cid, Some(spoke)).await,
                        Err(e) => {
                            crate::error!(
                                "{hostport} - lid_ws:{} - Error soliciting websocket connection: {e}",
                                cid.0
                            );
                            None
                        }
                    },
                };
                crate::rt::timer::sleep(delay.unwrap_or(lo.reconnect)).await;
            }
            Err(e) => {
                attempt += 1;
                let text = format!(
                    "Error trying to connect as leafnode to remote server {hostport:?} (attempt {attempt}): {e}"
                );
                if shard.opts.borrow().report_connect_error(connected_before, attempt) {
                    crate::error!("{text}");
                } else {
                    crate::debug!("{text}");
                }
                let jitter = lo.reconnect.mul_f64(fastrand::f64());
                crate::rt::timer::sleep(lo.reconnect + jitter).await;
            }
        }
    }
}

/// A leaf's WebSocket opening to a hub: TLS first for `wss://` (or a
/// remote `tls` block), then the upgrade, within `first_info_timeout`.
async fn upgrade(
    shard: &Shard,
    tcp: TcpStream,
    spoke: &link::Spoke,
    target: &WsTarget,
    hostport: &str,
) -> Result<crate::shard::websocket::WsStream, String> {
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_write_timeout(Some(shard.opts.borrow().write_deadline));
    let limit = spoke.remote.first_info_timeout.unwrap_or(link::FIRST_INFO);
    let max_payload = shard.opts.borrow().max_payload;
    let work = async {
        let socket = if spoke.tls_required {
            link::spoke_tls(tcp, spoke).await?
        } else {
            Socket::Plain(tcp)
        };
        crate::shard::websocket::dial_upgrade(
            socket,
            hostport,
            &target.path,
            spoke.remote.ws_no_masking,
            spoke.remote.ws_compression,
            max_payload,
        )
        .await
    };
    match crate::rt::timer::timeout(limit, async { Ok(work.await) }).await {
        Ok(r) => r,
        Err(_) => Err("i/o timeout".into()),
    }
}

/// Serves a leaf node that came to the WebSocket port (`.../leafnode`).
pub async fn serve_ws_hub(shard: Rc<Shard>, ws: crate::shard::websocket::WsStream, cid: crate::ids::ConnId) {
    link::serve_ws(shard, ws, cid, None).await;
}

async fn dial(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let addrs = crate::rt::net::resolve(host, port).await?;
    let addr = addrs
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    TcpStream::connect_timeout(addr, timeout).await
}

/// The shard's periodic leaf work: hands its leaf connections past their
/// handshake to the registry for monitoring (their subjects taken again
/// only after `LS+`/`LS-` changed them).
pub fn poll_leafs(shard: &Shard) {
    let Some(l) = shard.shared.leaf.get() else { return };
    let core = shard.core.borrow();
    let snaps = shard
        .leafs
        .conns
        .borrow_mut()
        .iter_mut()
        .filter(|(_, e)| e.registered)
        .filter_map(|(cid, e)| {
            let c = core.conn(*cid)?;
            if std::mem::take(&mut e.subjects_stale) {
                e.subjects = std::sync::Arc::new(core.subjects_of(*cid));
            }
            Some(crate::leaf::LeafSnapshot {
                cid: cid.0,
                name: e.name.clone(),
                is_spoke: e.is_spoke,
                account: e.account.clone(),
                ip: e.ip.clone(),
                port: e.port,
                in_msgs: c.in_msgs,
                in_bytes: c.in_bytes,
                out_msgs: c.out_msgs,
                out_bytes: c.out_bytes,
                subjects: e.subjects.clone(),
                rtt: e.rtt,
                compression: e.compression,
            })
        })
        .collect();
    l.publish(shard.id, snaps);
}
