//! Cluster route connections, owned by shards like clients: the route
//! listener's accept loop, the dialers (configured routes kept up for
//! good, gossip-learned routes tried once), and one route's handshake,
//! reader, writer and timer. What arrives is fed to the routing core as a
//! `LinkKind::Route` link (`subscribe_routed`, `publish_routed`); what this
//! server's subscriptions change is announced to every route by the
//! shard's interest task (`announce_interest`).
//!
//! petrel advertises no route pool: one connection per server pair, as a
//! nats-server with `pool_size: -1` (see `proto/route_info.rs`).

use std::cell::RefCell;
use std::future::poll_fn;
use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use glommio::net::{TcpListener, TcpStream};

use super::socket::Socket;
use super::state::Shard;
use super::transport::{read, Stream, Transport};
use crate::cluster::{Cluster, Dial, Peer, Refused, RouteConn};
use crate::conf::cluster::route_url;
use crate::core::RouteInterest;
use crate::ids::{AccountId, ConnId, LinkKind};
use crate::proto::encode;
use crate::proto::errors::{CloseReason, RouteWireError};
use crate::proto::parser::ParseError;
use crate::proto::route::{parse, RouteOp, RouteParsed};
use crate::proto::route_info::{RouteConnect, RouteInfo, ROUTE_PROTO};

/// The first PING after a route registers (plus up to 20 %), then at most
/// this often, as nats-server paces routes.
const FIRST_PING: Duration = Duration::from_secs(1);
const MAX_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Dial timeout and the pause between attempts (doubling up to 30 s with
/// `connect_backoff`).
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Route authorization timeout when the block sets none.
const AUTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest routed message taken from a peer (nats-server's own ceiling
/// for `max_payload`), so garbage cannot make the buffer grow for good.
const MAX_ROUTED: usize = 64 * 1024 * 1024;
/// A route reader that made a client fall behind waits, 2 ms at a time and
/// at most this many times, until clients being read hold less than DRAINED.
const STALL_WAITS: u32 = 25;
const DRAINED: usize = 2 << 20;
/// How often a route's timer looks at its deadlines.
const TICK: Duration = Duration::from_millis(100);

/// One route's protocol state, shared by its reader and timer.
struct State {
    /// CONNECT received (accepted) or sent (dialed).
    connected: bool,
    /// The peer, once its INFO registered the route: (id, name).
    peer: Option<(String, String)>,
    pings_out: u32,
    next_ping: Option<Instant>,
    auth_deadline: Option<Instant>,
    /// Account names this peer used, resolved.
    accounts: rustc_hash::FxHashMap<Vec<u8>, Option<AccountId>>,
}

/// Serves accepted route connections on this shard (the route listener is
/// bound once per shard, the kernel spreads peers over them).
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let cid = shard.shared.next_cid();
                glommio::spawn_local(serve(shard.clone(), stream, cid, None)).detach();
            }
            Err(e) => {
                crate::error!("Temporary Route Accept Error({e}), sleeping 1000ms");
                glommio::timer::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn cluster(shard: &Shard) -> Arc<Cluster> {
    shard
        .shared
        .cluster
        .get()
        .expect("routes run only in a cluster")
        .clone()
}

async fn dial(d: &Dial) -> std::io::Result<TcpStream> {
    let addrs: Vec<_> = (d.url.host.as_str(), d.url.port).to_socket_addrs()?.collect();
    let addr = addrs
        .get(fastrand::usize(..addrs.len().max(1)))
        .copied()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    TcpStream::connect_timeout(addr, DIAL_TIMEOUT)
        .await
        .map_err(std::io::Error::from)
}

fn jitter() -> Duration {
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
                serve(shard.clone(), stream, cid, Some(d.clone())).await;
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

/// Dials a route learned by gossip: once, plus `connect_retries` more.
async fn dial_implicit(shard: Rc<Shard>, d: Dial) {
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
                serve(shard.clone(), stream, cid, Some(d.clone())).await;
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

/// This server's route INFO.
fn our_info(shard: &Shard, c: &Cluster, gossip_mode: u8) -> RouteInfo {
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
        max_payload: info.max_payload,
        nonce: super::host::new_nonce(),
        ip,
        cluster: c.name().unwrap_or_default(),
        connect_urls: if opts.no_advertise {
            Vec::new()
        } else {
            crate::cluster::own_client_urls(&info, shard.opts.borrow().client_advertise.as_deref())
        },
        compression: "off".into(),
        gossip_mode,
        ..Default::default()
    }
}

/// Serves one route connection until it closes: `dialed` is the dial
/// that made it (this server solicited it), `None` for an accepted one.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, cid: ConnId, dialed: Option<Dial>) {
    let _ = stream.set_nodelay(true);
    let c = cluster(&shard);
    let peer_addr = stream.peer_addr().ok();
    let ip = peer_addr.map(|a| a.ip().to_string()).unwrap_or_default();
    let port = peer_addr.map(|a| a.port()).unwrap_or(0);
    let who = format!("{ip}:{port} - rid:{}", cid.0);
    let stream: Stream = Rc::new(RefCell::new(Transport::Socket(Socket::Plain(stream))));
    let opts = c.opts();
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
            name: c.server_id.clone(),
            cluster: c.name().unwrap_or_default(),
            ..Default::default()
        };
        first.extend_from_slice(b"CONNECT ");
        first.extend_from_slice(&serde_json::to_vec(&connect).unwrap_or_default());
        first.extend_from_slice(b"\r\n");
    }
    encode::info(
        &mut first,
        &our_info(&shard, &c, dialed.as_ref().map_or(0, |d| d.gossip_mode)).to_json(),
    );
    {
        let mut core = shard.core.borrow_mut();
        core.add_link(cid, LinkKind::Route, AccountId::GLOBAL);
        core.send_raw(cid, &first);
    }
    let configured = dialed.as_ref().filter(|d| d.configured).map(|d| d.text.clone());
    shard.routes.peers.borrow_mut().insert(cid, (None, configured));
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
    }));
    let writer = glommio::spawn_local(super::conn::write_loop(shard.clone(), stream.clone(), cid));
    let timer = glommio::spawn_local(timer_loop(shard.clone(), state.clone(), cid));
    let link = Link {
        shard: &shard,
        cluster: &c,
        cid,
        ip: &ip,
        port,
        who: &who,
        dialed: dialed.as_ref(),
        state: &state,
    };
    let reason = link.read_loop(&stream).await;
    shard.core.borrow_mut().close_conn(cid, reason);
    let reason = writer.await;
    drop(timer);
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
}

/// One route connection as its reader sees it.
struct Link<'a> {
    shard: &'a Rc<Shard>,
    cluster: &'a Arc<Cluster>,
    cid: ConnId,
    ip: &'a str,
    port: u16,
    who: &'a str,
    dialed: Option<&'a Dial>,
    state: &'a Rc<RefCell<State>>,
}

/// What to do after an operation: go on, or close (after an optional
/// `-ERR`).
type Step = Result<(), (Option<RouteWireError>, CloseReason)>;

impl Link<'_> {
    async fn read_loop(&self, stream: &Stream) -> CloseReason {
        let max_line = self.shard.opts.borrow().max_control_line.saturating_mul(16);
        let mut buf = vec![0u8; 64 * 1024];
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let n = match read(stream, &mut buf[filled..]).await {
                Ok(0) => return CloseReason::ClientClosed,
                Ok(n) => n,
                Err(_) => {
                    if let Some(r) = self.shard.core.borrow().conn(self.cid).and_then(|c| c.closing()) {
                        return r;
                    }
                    return CloseReason::ReadError;
                }
            };
            crate::trace!(
                "{} - <<- {:?}",
                self.who,
                String::from_utf8_lossy(&buf[filled..filled + n])
            );
            filled += n;
            let mut used = 0;
            let outcome = loop {
                match parse(&buf[used..filled], true, max_line, MAX_ROUTED) {
                    Ok(RouteParsed::Incomplete) => break Ok(()),
                    Ok(RouteParsed::Op(op, len)) => {
                        used += len;
                        if let Err(e) = self.handle(op).await {
                            break Err(e);
                        }
                    }
                    Err(e) => {
                        let shown = String::from_utf8_lossy(&buf[used..filled.min(used + 32)]).into_owned();
                        crate::error!("{} - Router parser ERROR: proto='{shown:?}...': {e}", self.who);
                        break Err(match e {
                            ParseError::UnknownOp => (
                                Some(RouteWireError::UnknownProtocolOperation),
                                CloseReason::ProtocolViolation,
                            ),
                            _ => (None, CloseReason::ProtocolViolation),
                        });
                    }
                }
            };
            self.shard.publish_stats();
            self.shard.flush().await;
            if let Err((err, reason)) = outcome {
                let mut core = self.shard.core.borrow_mut();
                if let Some(e) = err {
                    let mut out = Vec::new();
                    encode::err_text(&mut out, &e.text());
                    core.send_raw(self.cid, &out);
                }
                core.close_conn(self.cid, reason);
                return reason;
            }
            buf.copy_within(used..filled, 0);
            filled -= used;
            if buf.len() > 64 * 1024 && filled <= 64 * 1024 {
                buf.truncate(64 * 1024);
                buf.shrink_to(64 * 1024);
            }
            let stall = self.shard.core.borrow_mut().take_stall();
            // Let the writers this read woke run before the next read: a
            // peer's stream is always ready, and a reader that never
            // yields keeps its subscribers' writers (and their pacing) idle.
            futures_lite::future::yield_now().await;
            if stall {
                // Everything the peer sends lands in this server's clients'
                // queues: wait (a while at most) for those being read to
                // drain, so the peer's writes back up rather than memory here.
                for _ in 0..STALL_WAITS {
                    glommio::timer::sleep(super::conn::STALL).await;
                    let mut core = self.shard.core.borrow_mut();
                    core.set_now(Instant::now());
                    if !core.draining_backlog_over(DRAINED) {
                        break;
                    }
                }
            }
        }
    }

    async fn handle(&self, op: RouteOp<'_>) -> Step {
        let registered = self.state.borrow().peer.is_some();
        match op {
            RouteOp::Ping => self.shard.core.borrow_mut().send_raw(self.cid, encode::PONG),
            RouteOp::Pong => self.state.borrow_mut().pings_out = 0,
            RouteOp::Ok => {}
            RouteOp::Err(text) => {
                let text = String::from_utf8_lossy(text);
                if !registered && text.contains("Not possible to have a dedicated route") {
                    // A pooling nats-server's connection for one account:
                    // petrel does not pool, the peer says so and closes.
                    crate::debug!("{} - Route Error {text}", self.who);
                } else {
                    crate::error!("{} - Route Error {text}", self.who);
                }
                return Err((None, CloseReason::ParseError));
            }
            RouteOp::Connect(json) => return self.connect(json).await,
            RouteOp::Info(json) => return self.info(json),
            _ if !registered => {}
            RouteOp::Sub {
                account,
                subject,
                queue,
            } => {
                let Some(acc) = self.account(account) else {
                    crate::error!(
                        "{} - Unknown account {:?} for remote subject {:?}",
                        self.who,
                        String::from_utf8_lossy(account.unwrap_or_default()),
                        String::from_utf8_lossy(subject)
                    );
                    return Ok(());
                };
                let sid = route_sid(account, subject, queue.map(|q| q.0));
                self.shard
                    .core
                    .borrow_mut()
                    .subscribe_routed(self.cid, acc, subject, queue.map(|q| q.0), &sid);
            }
            RouteOp::Unsub {
                account,
                subject,
                queue,
            } => {
                let sid = route_sid(account, subject, queue);
                self.shard.core.borrow_mut().unsubscribe(self.cid, &sid, None);
            }
            RouteOp::Msg(m) => {
                let Some(acc) = self.account(m.account) else {
                    crate::debug!(
                        "{} - Unknown account {:?} for routed message on subject: {:?}",
                        self.who,
                        String::from_utf8_lossy(m.account.unwrap_or_default()),
                        String::from_utf8_lossy(m.subject)
                    );
                    return Ok(());
                };
                let mut core = self.shard.core.borrow_mut();
                core.set_now(Instant::now());
                core.publish_routed(self.cid, acc, m.subject, m.reply, &m.queues, m.header_len, m.message);
            }
        }
        Ok(())
    }

    /// The account a peer named, resolved once per name: configured
    /// accounts only in config mode; in operator mode any account key
    /// (its JWT is fetched when a client of it connects).
    fn account(&self, name: Option<&[u8]>) -> Option<AccountId> {
        let name = name.unwrap_or(b"$G");
        if let Some(id) = self.state.borrow().accounts.get(name) {
            return *id;
        }
        let text = std::str::from_utf8(name).ok()?;
        let verifier = self.shard.verifier.borrow().clone();
        let acc = if verifier.is_operator_mode() && text.starts_with('A') && text.len() == 56 {
            Some(verifier.accounts().get_or_create(text))
        } else {
            verifier.accounts().get(text)
        };
        let id = acc.map(|a| {
            self.shard.core.borrow_mut().name_account(a.id, &a.name);
            a.id
        });
        self.state.borrow_mut().accounts.insert(name.to_vec(), id);
        id
    }

    async fn connect(&self, json: &[u8]) -> Step {
        if self.dialed.is_some() || self.state.borrow().connected {
            return Ok(());
        }
        let Ok(connect) = serde_json::from_slice::<RouteConnect>(json) else {
            return Err((None, CloseReason::ProtocolViolation));
        };
        if connect.lang.is_some() {
            crate::error!("{} - attempted to connect to route port", self.who);
            return Err((Some(RouteWireError::ClientOnRoutePort), CloseReason::IncorrectPort));
        }
        let opts = self.cluster.opts();
        if let Some(user) = &opts.username {
            let stored = opts.password.clone().unwrap_or_default();
            let given = connect.pass.clone().unwrap_or_default();
            let ok = connect.user.as_deref() == Some(user.as_str())
                && if crate::auth::password::is_bcrypt(&stored) {
                    let ip = self.ip.parse().ok();
                    super::auth_work::run(crate::auth::verify::SlowWork::Bcrypt, ip, move || {
                        Ok(crate::auth::password::matches(&stored, &given))
                    })
                    .await
                    .unwrap_or(false)
                } else {
                    crate::auth::password::matches(&stored, &given)
                };
            if !ok {
                match &connect.user {
                    Some(u) => crate::error!("{} - authentication error - User {u:?}", self.who),
                    None => crate::error!("{} - authentication error", self.who),
                }
                return Err((
                    Some(RouteWireError::AuthorizationViolation),
                    CloseReason::AuthenticationViolation,
                ));
            }
        }
        if !connect.cluster.is_empty() && !self.cluster.accept_name(&connect.cluster) {
            let e = RouteWireError::ClusterNameMismatch {
                theirs: connect.cluster.clone(),
                ours: self.cluster.name().unwrap_or_default(),
            };
            crate::error!("{} - {}", self.who, e.text());
            let reason = e.close_reason();
            return Err((Some(e), reason));
        }
        let mut st = self.state.borrow_mut();
        st.connected = true;
        st.auth_deadline = None;
        Ok(())
    }

    fn info(&self, json: &[u8]) -> Step {
        if !self.state.borrow().connected {
            crate::error!("{} - authentication error", self.who);
            return Err((
                Some(RouteWireError::AuthorizationViolation),
                CloseReason::AuthenticationViolation,
            ));
        }
        let Ok(info) = serde_json::from_slice::<RouteInfo>(json) else {
            return Err((None, CloseReason::ProtocolViolation));
        };
        let peer = self.state.borrow().peer.clone();
        match peer {
            None => self.register(info),
            Some((id, _)) if id == info.server_id => {
                // An update from the peer: lame duck mode takes its
                // client URLs away.
                let urls = if info.ldm { Vec::new() } else { info.connect_urls };
                self.cluster.set_client_urls(&id, urls);
                Ok(())
            }
            Some(_) => {
                self.gossip(info);
                Ok(())
            }
        }
    }

    /// The peer's first INFO: checks, registration, our interest, gossip.
    fn register(&self, info: RouteInfo) -> Step {
        if !info.route_account.is_empty() {
            let e = RouteWireError::NoDedicatedRoute(info.route_account.clone());
            crate::debug!("{} - {}", self.who, e.text());
            let reason = e.close_reason();
            return Err((Some(e), reason));
        }
        if !info.cluster.is_empty() && !self.cluster.accept_name(&info.cluster) {
            crate::error!(
                "{} - Rejecting connection, cluster name {:?} does not match {:?}",
                self.who,
                info.cluster,
                self.cluster.name().unwrap_or_default()
            );
            return Err((None, CloseReason::ClusterNameConflict));
        }
        if info.server_id == self.cluster.server_id {
            crate::debug!("{} - Detected route to self, ignoring {:?}", self.who, info.dial_url());
            if let Some(d) = self.dialed.filter(|d| d.configured) {
                self.cluster.set_url_peer(&d.text, &info.server_id);
            }
            return Err((None, CloseReason::DuplicateRoute));
        }
        if info.server_name == self.shard.info.borrow().server_name {
            crate::error!(
                "{} - Remote server has a duplicate name: {:?}",
                self.who,
                info.server_name
            );
            return Err((None, CloseReason::DuplicateServerName));
        }
        let ip = if info.ip.is_empty() {
            format!("nats-route://{}:{}/", self.ip, info.port)
        } else {
            info.ip.clone()
        };
        let route_host = route_url(&ip)
            .map(|u| format!("{}:{}", u.host, u.port))
            .unwrap_or_default();
        let peer = Peer {
            name: info.server_name.clone(),
            route_url: route_host,
            client_urls: if info.ldm {
                Vec::new()
            } else {
                info.connect_urls.clone()
            },
            conns: Default::default(),
            pool_size: 1,
        };
        let conn = RouteConn {
            cid: self.cid,
            shard: self.shard.id,
            did_solicit: self.dialed.is_some(),
            is_configured: self.dialed.is_some_and(|d| d.configured),
            ip: self.ip.to_string(),
            port: self.port,
            start: SystemTime::now(),
            pool_idx: 0,
        };
        match self.cluster.register(&info.server_id, peer, conn) {
            Ok(()) => {}
            Err(Refused::Duplicate) => {
                crate::debug!("{} - Detected duplicate remote route {:?}", self.who, info.server_id);
                return Err((None, CloseReason::DuplicateRoute));
            }
            Err(Refused::ToSelf) => return Err((None, CloseReason::DuplicateRoute)),
        }
        if let Some(d) = self.dialed.filter(|d| d.configured) {
            self.cluster.set_url_peer(&d.text, &info.server_id);
        }
        crate::debug!("{} - Registering remote route {:?}", self.who, info.server_id);
        crate::info!("{} - Route connection created", self.who);
        {
            let mut st = self.state.borrow_mut();
            st.peer = Some((info.server_id.clone(), info.server_name.clone()));
            st.next_ping = Some(Instant::now() + FIRST_PING + FIRST_PING.mul_f64(fastrand::f64() * 0.2));
        }
        // Changes already counted go to the routes registered before this
        // one; this one gets the whole of it.
        announce_pending(self.shard);
        self.shard.routes.set_peer(self.cid, info.server_id.clone());
        let all = self.shard.core.borrow().route_interest();
        let out = interest_lines(self.shard, &all);
        if !out.is_empty() {
            self.shard.core.borrow_mut().send_raw(self.cid, &out);
            crate::debug!("{} - Sent local subscriptions to route", self.who);
        }
        // Tell the other peers about this one, so they dial it (nats-server's
        // gossip rules: not what a gossip-learned dial found, not what the
        // peer asked to keep to itself).
        let learned = self.dialed.is_some_and(|d| !d.configured && d.gossip_mode != 2);
        if info.gossip_mode != 1 && !learned {
            let mode = match self.dialed {
                Some(d) if d.configured => 2,
                None => 1,
                Some(_) => 0,
            };
            let forwarded = RouteInfo {
                nonce: String::new(),
                ip,
                gossip_mode: mode,
                ..info
            };
            let mut line = b"INFO ".to_vec();
            line.extend_from_slice(&forwarded.to_json());
            line.extend_from_slice(b"\r\n");
            self.cluster.announce(Some(&forwarded.server_id), line);
        }
        Ok(())
    }

    /// An INFO about another server: dial it unless it is this one, known
    /// already, or a configured route (dialed anyway).
    fn gossip(&self, info: RouteInfo) {
        if info.server_id == self.cluster.server_id
            || !info.route_account.is_empty()
            || self.cluster.peers().contains_key(&info.server_id)
        {
            return;
        }
        let text = info.dial_url();
        let Ok(url) = route_url(&text) else { return };
        if self.cluster.is_configured(&url.host, url.port) {
            return;
        }
        let d = Dial {
            url,
            text,
            configured: false,
            gossip_mode: info.gossip_mode,
        };
        glommio::spawn_local(dial_implicit(self.shard.clone(), d)).detach();
    }
}

/// The sid a route subscription is kept under: account, subject and
/// queue, so `RS-` finds what `RS+` made (and a repeated `RS+` with a new
/// queue weight changes nothing).
fn route_sid(account: Option<&[u8]>, subject: &[u8], queue: Option<&[u8]>) -> Vec<u8> {
    let mut sid = account.unwrap_or(b"$G").to_vec();
    sid.push(b' ');
    sid.extend_from_slice(subject);
    if let Some(q) = queue {
        sid.push(b' ');
        sid.extend_from_slice(q);
    }
    sid
}

/// `RS+`/`RS-` lines for interest changes, naming each account.
fn interest_lines(shard: &Shard, changes: &[RouteInterest]) -> Vec<u8> {
    let accounts = shard.verifier.borrow().accounts().clone();
    let mut out = Vec::new();
    for ch in changes {
        let Some(acc) = accounts.by_id(ch.account) else {
            continue;
        };
        let name = Some(acc.name.as_bytes());
        if ch.weight == 0 {
            encode::route_unsub(&mut out, name, &ch.subject, ch.queue.as_deref());
        } else {
            encode::route_sub(&mut out, name, &ch.subject, ch.queue.as_deref().map(|q| (q, ch.weight)));
        }
    }
    out
}

/// Sends the interest changes counted so far to this shard's registered
/// routes.
fn announce_pending(shard: &Rc<Shard>) {
    let changes = shard.core.borrow_mut().take_route_interest();
    if changes.is_empty() {
        return;
    }
    send_to_routes(shard, &interest_lines(shard, &changes), None);
}

fn send_to_routes(shard: &Shard, bytes: &[u8], skip: Option<&str>) {
    if bytes.is_empty() {
        return;
    }
    let mut core = shard.core.borrow_mut();
    for (cid, peer) in shard.routes.registered() {
        if skip != Some(peer.as_str()) {
            core.send_raw(cid, bytes);
        }
    }
}

/// Announces this server's interest changes to the shard's routes as they
/// happen, and passes on what the cluster asks every route to hear.
pub async fn announce_interest(shard: Rc<Shard>) {
    let mut changes = Vec::new();
    loop {
        poll_fn(|cx| {
            if shard.core.borrow_mut().poll_route_interest(&mut changes, cx.waker()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        let lines = interest_lines(&shard, &changes);
        changes.clear();
        send_to_routes(&shard, &lines, None);
    }
}

/// Run from the shard's poll loop: passes on what the cluster asked every
/// route to hear (gossip), and after a reload closes routes dialed for
/// URLs no longer configured (shard 0 starts dialing new ones).
pub fn poll_cluster(shard: &Rc<Shard>) {
    let Some(c) = shard.shared.cluster.get() else { return };
    for (skip, bytes) in c.take_announcements(shard.id) {
        send_to_routes(shard, &bytes, skip.as_deref());
    }
    let reloaded = shard.generation_changed_routes();
    let urls = c.urls_generation.load(std::sync::atomic::Ordering::Relaxed);
    if reloaded || urls != shard.urls_seen.replace(urls) {
        update_connect_urls(shard, c, !reloaded);
    }
    if reloaded {
        let routes = c.opts().routes;
        let removed: Vec<ConnId> = shard
            .routes
            .peers
            .borrow()
            .iter()
            .filter(|(_, (_, url))| url.as_ref().is_some_and(|u| !routes.contains(u)))
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

/// The client INFO's `connect_urls`: this server's client URLs and every
/// peer's, once any peer advertises some (none with `no_advertise`).
/// Clients that asked for async INFO (`protocol` 1) are told of a change.
fn update_connect_urls(shard: &Shard, c: &Cluster, tell_clients: bool) {
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
        if session.is_connected() && session.opts().protocol >= 1 {
            let json = super::host::client_info(&info, *cid, &h.ip).to_json();
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
    send_to_routes(shard, &line, None);
}

async fn timer_loop(shard: Rc<Shard>, state: Rc<RefCell<State>>, cid: ConnId) {
    let c = cluster(&shard);
    loop {
        glommio::timer::sleep(TICK).await;
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
            st.next_ping = Some(now + interval);
            core.send_raw(cid, encode::PING);
        }
    }
}
