//! One route connection's life on its shard: the first bytes (CONNECT
//! and INFO), the reader, writer and timer tasks, and what is undone when
//! it closes.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::rt::net::TcpStream;

use super::announce::{cluster, our_info};
use super::link::{Link, Redial, State};
use crate::cluster::Dial;
use crate::ids::{AccountId, ConnId, LinkKind};
use crate::proto::encode;
use crate::proto::errors::RouteWireError;
use crate::proto::route_info::RouteConnect;
use crate::route_tls::RouteTls;
use crate::shard::socket::Socket;
use crate::shard::state::Shard;
use crate::shard::transport::{Stream, Transport};

pub(super) const MAX_PING_INTERVAL: Duration = Duration::from_secs(30);

/// Route authorization timeout when the block sets none.
pub(super) const AUTH_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a route's timer looks at its deadlines.
pub(super) const TICK: Duration = Duration::from_millis(100);

/// Serves one route connection until it closes: `dialed` is the dial
/// that made it (this server solicited it), `None` for an accepted one;
/// `learned` dials servers its peer tells of.
pub(super) async fn serve(
    shard: Rc<Shard>,
    stream: TcpStream,
    cid: ConnId,
    dialed: Option<Dial>,
    learned: fn(Rc<Shard>, Dial),
) -> Redial {
    let _ = stream.set_nodelay(true);
    // A peer that stops reading is cut off after the write deadline, as a
    // client is (and dialed again if the route is configured).
    let c = cluster(&shard);
    let opts = c.opts();
    let _ = stream.set_write_timeout(Some(opts.write_deadline.unwrap_or(shard.opts.borrow().write_deadline)));
    let peer_addr = stream.peer_addr().ok();
    let ip = peer_addr.map(|a| a.ip().to_string()).unwrap_or_default();
    let port = peer_addr.map(|a| a.port()).unwrap_or(0);
    let who = format!("{ip}:{port} - rid:{}", cid.0);
    let socket = match c.tls() {
        None => Socket::Plain(stream),
        Some(tls) => match tls_handshake(&tls, stream, dialed.as_ref(), c.tls_name()).await {
            Ok(s) => {
                crate::debug!("{who} - TLS handshake complete");
                s
            }
            Err(e) => {
                // Always an error: route ports are not probed by load balancers.
                crate::error!("{who} - TLS route handshake error: {e}");
                return Redial::Again;
            }
        },
    };
    let stream: Stream = Rc::new(RefCell::new(Transport::Socket(socket)));
    let mut first = Vec::new();
    if let Some(d) = &dialed {
        let (user, pass) = match (&d.url.user, &opts.username) {
            (Some(u), _) => (Some(u.clone()), d.url.pass.clone()),
            (None, Some(u)) if !d.configured => (Some(u.clone()), opts.password.clone()),
            _ => (None, None),
        };
        let connect = RouteConnect {
            echo: true,
            user,
            pass,
            headers: shard.info.borrow().headers,
            tls_required: opts.tls.is_some(),
            name: c.server_id.clone(),
            cluster: c.name().unwrap_or_default(),
            lnoc: true,
            ..Default::default()
        };
        first.extend_from_slice(b"CONNECT ");
        first.extend_from_slice(&serde_json::to_vec(&connect).unwrap_or_default());
        first.extend_from_slice(b"\r\n");
    }
    // A dialer that pools holds its INFO back for the pool index the
    // peer's INFO lets it choose (a connection for one account names it).
    // So does one that may compress: its INFO says the outcome.
    let pooled = shard.routes.pool().size.is_some();
    let info_delayed = dialed
        .as_ref()
        .is_some_and(|d| pooled && d.account.is_none() || opts.compression.negotiates());
    if !info_delayed {
        let mut info = our_info(&shard, &c, dialed.as_ref().map_or(0, |d| d.gossip_mode));
        info.route_account = dialed.as_ref().and_then(|d| d.account.clone()).unwrap_or_default();
        encode::info(&mut first, &info.to_json());
    }
    {
        let mut core = shard.core.borrow_mut();
        core.add_link(cid, LinkKind::Route, AccountId::GLOBAL);
        core.send_raw(cid, &first);
    }
    let configured = dialed.as_ref().filter(|d| d.configured).map(|d| d.text.clone());
    shard.routes.peers.borrow_mut().insert(
        cid,
        crate::shard::route_table::RouteEntry {
            peer: None,
            configured,
            stream: stream.clone(),
        },
    );
    if dialed.is_some() {
        crate::debug!("{who} - Route connect msg sent");
    }
    crate::debug!("{who} - Route connection created");
    let state = Rc::new(RefCell::new(State {
        connected: dialed.is_some(),
        peer: None,
        pings_out: 0,
        next_ping: None,
        auth_deadline: (dialed.is_none() && opts.username.is_some())
            .then(|| Instant::now() + opts.auth_timeout.unwrap_or(AUTH_TIMEOUT)),
        accounts: Default::default(),
        peer_export: None,
        pinned: None,
        info_delayed,
        open_next: false,
        redial: Redial::Again,
        compression: None,
        started: Instant::now(),
        ping_sent: None,
    }));
    let s2 = crate::shard::link_s2::SharedS2::default();
    let retry = opts.write_timeout != Some(crate::options::WriteTimeoutPolicy::Close);
    let writer = crate::rt::spawn_local(crate::shard::writer::write_loop(
        shard.clone(),
        stream.clone(),
        cid,
        retry,
        Some(s2.clone()),
    ));
    let timer = crate::rt::spawn_local(timer_loop(shard.clone(), state.clone(), cid));
    let link = Link {
        shard: &shard,
        cluster: &c,
        cid,
        ip: &ip,
        port,
        who: &who,
        dialed: dialed.as_ref(),
        state: &state,
        s2: &s2,
        learned,
    };
    let reason = link.read_loop(&stream).await;
    shard.core.borrow_mut().close_conn(cid, reason);
    let reason = writer.await;
    // Not cancelled: it sees the connection gone within a tick and ends.
    timer.detach();
    let peer = state.borrow_mut().peer.take();
    match &peer {
        Some((id, name)) => {
            c.unregister(id, cid);
            crate::info!("{who} - Router connection closed: {} - Remote: {name}", reason.as_str());
        }
        None => crate::info!("{who} - Router connection closed: {}", reason.as_str()),
    }
    shard.routes.peers.borrow_mut().remove(&cid);
    shard.core.borrow_mut().remove_conn(cid);
    shard.flush().await;
    let redial = state.borrow().redial;
    redial
}

/// Route TLS before anything else is said: this server is the TLS client
/// on a route it dialed, the TLS server on one it accepted; both present
/// certificates, and `pinned_certs` applies to the peer's either way.
async fn tls_handshake(
    tls: &RouteTls,
    tcp: TcpStream,
    dialed: Option<&Dial>,
    tls_name: Option<String>,
) -> Result<Socket, String> {
    let handshake = async {
        Ok(match dialed {
            Some(d) => {
                let name = RouteTls::server_name(&d.url.host, tls_name.as_deref());
                match name {
                    Err(e) => Err(e),
                    Ok(name) => match futures_rustls::TlsConnector::from(tls.client.clone())
                        .connect(name, tcp)
                        .await
                    {
                        Ok(t) => tls
                            .check_pinned(t.get_ref().1.peer_certificates().and_then(|c| c.first()))
                            .map(|_| Socket::TlsDialed(Box::new(t))),
                        Err(e) => Err(crate::tls::handshake_failure(&e)),
                    },
                }
            }
            None => match futures_rustls::TlsAcceptor::from(tls.server.clone()).accept(tcp).await {
                Ok(t) => tls
                    .check_pinned(t.get_ref().1.peer_certificates().and_then(|c| c.first()))
                    .map(|_| Socket::Tls(Box::new(t))),
                Err(e) => Err(crate::tls::handshake_failure(&e)),
            },
        })
    };
    match crate::rt::timer::timeout(tls.timeout, handshake).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}

pub(super) async fn timer_loop(shard: Rc<Shard>, state: Rc<RefCell<State>>, cid: ConnId) {
    let c = cluster(&shard);
    loop {
        crate::rt::timer::sleep(TICK).await;
        let now = Instant::now();
        let mut st = state.borrow_mut();
        let mut core = shard.core.borrow_mut();
        if core.conn(cid).is_none_or(|c| c.closing().is_some()) {
            return;
        }
        let fail = |core: &mut crate::core::ShardCore, e: RouteWireError| {
            let mut out = Vec::new();
            encode::err_text(&mut out, &e.text());
            core.send_raw(cid, &out);
            core.close_conn(cid, e.close_reason());
        };
        if st.auth_deadline.is_some_and(|d| now >= d) {
            return fail(&mut core, RouteWireError::AuthenticationTimeout);
        }
        if st.next_ping.is_some_and(|t| now >= t) {
            let opts = c.opts();
            let (interval, max) = {
                let o = shard.opts.borrow();
                (
                    opts.ping_interval.unwrap_or(o.ping_interval).min(MAX_PING_INTERVAL),
                    opts.ping_max.unwrap_or(o.ping_max),
                )
            };
            if st.pings_out >= max {
                crate::debug!("rid:{} - Stale Client Connection - Closing", cid.0);
                return fail(&mut core, RouteWireError::StaleConnection);
            }
            st.pings_out += 1;
            st.ping_sent = Some(now);
            st.next_ping = Some(now + interval);
            core.send_raw(cid, encode::PING);
        }
    }
}
