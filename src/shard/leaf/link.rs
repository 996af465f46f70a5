//! One leaf node connection's life and protocol, on either side.
//!
//! Hub (accepted): INFO first (with a nonce), CONNECT checked and
//! authenticated (the `leafnodes` block's users, else the server's client
//! users), a second INFO (`connect_info`, the bound account), then the
//! account's interest. Spoke (dialed, this server the leaf): the hub's
//! INFO, CONNECT, the hub's confirming INFO, then this server's interest in
//! its local account. Both sides then exchange `LS+`/`LS-`, `LMSG`/`HMSG`
//! and PING/PONG, and announce their `$LDS.` subject: hearing one's own
//! back is a loop.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rt::net::TcpStream;

use super::LOOP_DELAY;
use crate::auth::perms::{PatternList, Permissions, SubjectRule};
use crate::compress::Negotiated;
use crate::conf::cluster::RouteUrl;
use crate::ids::{AccountId, ConnId, ConnKind, LinkKind};
use crate::options::LeafRemote;
use crate::proto::encode;
use crate::proto::errors::{CloseReason, LeafWireError};
use crate::proto::leaf_info::{LeafConnect, LeafInfo};
use crate::proto::parser::ParseError;
use crate::proto::route::{parse_leaf, RouteOp, RouteParsed};
use crate::route_tls::RouteTls;
use crate::shard::leaf_table::LeafEntry;
use crate::shard::link_s2::{switch_on, InfoGoes, SharedS2};
use crate::shard::socket::Socket;
use crate::shard::state::Shard;
use crate::shard::transport::{Stream, Transport};

/// The leaf protocol level petrel speaks (3: message tracing, as
/// nats-server 2.11+; a peer reads it from INFO and CONNECT).
const LEAF_PROTO: u32 = 3;

/// Authorization timeout on the hub side when the block sets none.
const AUTH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a spoke waits for the hub's first INFO (nats-server's
/// `first_info_timeout` default) and then for its confirming INFO.
pub(super) const FIRST_INFO: Duration = Duration::from_secs(1);
const CONNECT_CONFIRM: Duration = Duration::from_secs(2);

/// The first PING (plus up to 20 %) after the handshake.
const FIRST_PING: Duration = Duration::from_secs(1);

const TICK: Duration = Duration::from_millis(100);

/// Largest message taken from a leaf (nats-server's own ceiling), so
/// garbage cannot make the buffer grow for good.
const MAX_LEAF_MSG: usize = 64 * 1024 * 1024;

/// The remote a spoke connection was dialed for.
pub(super) struct Spoke {
    pub(super) remote: LeafRemote,
    pub(super) url: RouteUrl,
    /// TLS whatever the hub says (`tls://` URL or a `tls` block).
    pub(super) tls_required: bool,
    /// How to verify the hub when TLS is used.
    pub(super) tls: Arc<rustls::ClientConfig>,
}

#[derive(Default)]
struct State {
    /// Hub: CONNECT accepted; spoke: the hub confirmed ours.
    registered: bool,
    /// Spoke: the hub's first INFO came and CONNECT went out.
    connect_sent: bool,
    /// The local account and its name, once bound.
    account: Option<(AccountId, String)>,
    peer_name: String,
    nonce: String,
    pings_out: u32,
    next_ping: Option<Instant>,
    /// When the PING now outstanding went out (for leafz `rtt`).
    ping_at: Option<Instant>,
    /// Hub: CONNECT due; spoke: the hub's first INFO due.
    first_deadline: Option<Instant>,
    /// Spoke: the hub's confirming INFO due.
    confirm_deadline: Option<Instant>,
    /// The next connect waits this long (a loop was detected).
    delay: Option<Duration>,
    /// Hub: the leaf user's permissions (a server user's, when the leaf
    /// authenticated as one).
    perms: Option<Arc<Permissions>>,
    /// Hub: the leaf's user and version, for events.
    user: String,
    version: String,
    /// When the connection registered.
    start: String,
    /// Hub: the leaf counted against its account's JWT `leaf` limit.
    slot: Option<crate::auth::accounts::LeafSlot>,
    /// The other side's cluster name (a leaf's CONNECT, a hub's INFO).
    remote_cluster: String,
    /// The other side's protocol level (a leaf's CONNECT `protocol`, a
    /// hub's INFO `proto`): below 3 it does not understand tracing.
    peer_proto: u32,
    /// Not told interest held by other leaf connections (hub:
    /// `isolate_leafnode_interest` or the leaf's request; leaf: the
    /// remote's `isolate_leafnode_interest`).
    isolated: bool,
    /// The compression agreed, once the first INFO (or CONNECT) said.
    compression: Option<Negotiated>,
    /// This server dialed the connection.
    dialed: bool,
    /// This server takes the leaf's role (the other side is the hub):
    /// when it dialed, unless its remote says `hub`; when it accepted,
    /// only if the CONNECT says `is_hub`.
    role_spoke: bool,
    /// When the connection was made (the first RTT for `s2_auto`).
    started: Option<Instant>,
}

type Step = Result<(), (Option<LeafWireError>, CloseReason)>;

struct Link<'a> {
    shard: &'a Rc<Shard>,
    cid: ConnId,
    ip: &'a str,
    who: &'a str,
    spoke: Option<&'a Spoke>,
    /// Spoke: subjects not taken from the hub (`deny_imports`).
    deny_imports: Option<SubjectRule>,
    state: &'a RefCell<State>,
    /// Its S2, shared with its writer.
    s2: &'a SharedS2,
    /// Over WebSocket.
    ws: bool,
}

/// Serves one leaf connection until it closes; returns how long a spoke's
/// next connect must wait, when longer than usual (a loop).
pub(super) async fn serve(shard: Rc<Shard>, stream: TcpStream, cid: ConnId, spoke: Option<Spoke>) -> Option<Duration> {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(shard.opts.borrow().write_deadline));
    let peer = stream.peer_addr().ok();
    let ip = peer.map(|a| a.ip().to_string()).unwrap_or_default();
    let port = peer.map(|a| a.port()).unwrap_or(0);
    let who = format!("{ip}:{port} - lid:{}", cid.0);
    // INFO in the clear, then TLS when either side asks for it.
    let opened = match &spoke {
        None => open_hub(&shard, stream, cid).await,
        Some(s) => open_spoke(stream, s).await,
    };
    let (socket, first_info, nonce) = match opened {
        Ok(o) => o,
        Err(e) => {
            crate::error!("{who} - {e}");
            crate::info!("{who} - Leafnode connection closed: TLS Handshake Failure");
            return None;
        }
    };
    let stream: Stream = Rc::new(RefCell::new(Transport::Socket(socket)));
    let opened = Opened {
        ip,
        port,
        who,
        first_info,
        nonce,
        hello: None,
        ws: false,
    };
    run(shard, stream, cid, spoke, opened).await
}

/// A leaf connection over WebSocket: accepted on the WebSocket port
/// (`spoke` None: this server the hub, its INFO the first frame) or
/// dialed to a hub's (the hub's INFO comes as the first frame).
pub(super) async fn serve_ws(
    shard: Rc<Shard>,
    ws: crate::shard::websocket::WsStream,
    cid: ConnId,
    spoke: Option<Spoke>,
) -> Option<Duration> {
    let peer = ws.inner().tcp().peer_addr().ok();
    let ip = peer.map(|a| a.ip().to_string()).unwrap_or_default();
    let port = peer.map(|a| a.port()).unwrap_or(0);
    let who = format!("{ip}:{port} - lid_ws:{}", cid.0);
    let (nonce, hello) = if spoke.is_none() {
        let nonce = crate::shard::host::new_nonce();
        let mut info = hub_info(&shard, cid, Some(&nonce), None);
        // No S2 over WebSocket (see `Link::mode`).
        info.compression = crate::compress::CompressionMode::Off.info_value().into();
        let mut line = Vec::new();
        encode::info(&mut line, &info.to_json());
        (nonce, Some(line))
    } else {
        (String::new(), None)
    };
    let stream: Stream = Rc::new(RefCell::new(Transport::Ws(Box::new(ws))));
    let opened = Opened {
        ip,
        port,
        who,
        first_info: None,
        nonce,
        hello,
        ws: true,
    };
    run(shard, stream, cid, spoke, opened).await
}

/// A leaf connection past its opening: where it comes from, the hub's
/// INFO a spoke read before TLS, the nonce a hub sent, the INFO a hub
/// still has to send (WebSocket).
struct Opened {
    ip: String,
    port: u16,
    who: String,
    first_info: Option<Vec<u8>>,
    nonce: String,
    hello: Option<Vec<u8>>,
    ws: bool,
}

/// Serves an opened leaf connection until it closes.
async fn run(shard: Rc<Shard>, stream: Stream, cid: ConnId, spoke: Option<Spoke>, opened: Opened) -> Option<Duration> {
    let Opened {
        ip,
        port,
        who,
        first_info,
        nonce,
        hello,
        ws,
    } = opened;
    let lo = shard.shared.leaf.get().map(|l| l.opts()).unwrap_or_default();
    // Hub: CONNECT due; a spoke over WebSocket: the hub's first INFO due.
    let first_deadline = match &spoke {
        None => Some(Instant::now() + lo.auth_timeout.unwrap_or(AUTH_TIMEOUT)),
        Some(s) if ws => Some(Instant::now() + s.remote.first_info_timeout.unwrap_or(FIRST_INFO)),
        Some(_) => None,
    };
    let state = RefCell::new(State {
        first_deadline,
        nonce,
        started: Some(Instant::now()),
        dialed: spoke.is_some(),
        role_spoke: spoke.as_ref().is_some_and(|s| !s.remote.hub),
        ..Default::default()
    });
    let s2 = SharedS2::default();
    {
        let mut core = shard.core.borrow_mut();
        core.add_link(cid, LinkKind::Leaf, AccountId::GLOBAL);
        if let Some(line) = &hello {
            core.send_raw(cid, line);
        }
    }
    shard.leafs.conns.borrow_mut().insert(
        cid,
        LeafEntry {
            name: String::new(),
            is_spoke: spoke.is_some(),
            account: String::new(),
            ip: ip.clone(),
            port,
            stream: stream.clone(),
            rtt: None,
            compression: "",
            subjects: Default::default(),
            subjects_stale: false,
            registered: false,
        },
    );
    let deny_imports = spoke
        .as_ref()
        .filter(|s| !s.remote.deny_imports.is_empty())
        .map(|s| SubjectRule::all_but(PatternList::new(&s.remote.deny_imports)));
    let link = Link {
        shard: &shard,
        cid,
        ip: &ip,
        who: &who,
        spoke: spoke.as_ref(),
        deny_imports,
        state: &state,
        s2: &s2,
        ws,
    };
    let writer = crate::rt::spawn_local(crate::shard::writer::write_loop(
        shard.clone(),
        stream.clone(),
        cid,
        true,
        Some(s2.clone()),
    ));
    // The spoke answers the hub's INFO, read before TLS.
    let answered = match &first_info {
        Some(json) => link.hub_said(json),
        None => Ok(()),
    };
    let reason = match answered {
        Ok(()) => futures_lite::future::or(link.read_loop(&stream), link.timer_loop()).await,
        Err((err, reason)) => {
            link.fail(err, reason);
            reason
        }
    };
    shard.core.borrow_mut().close_conn(cid, reason);
    let reason = writer.await;
    let st = state.into_inner();
    if st.registered {
        crate::info!(
            "{who} - Leafnode connection closed: {} - Remote: {}",
            reason.as_str(),
            st.peer_name
        );
        disconnect_event(&shard, &st, cid, &ip, reason);
    } else {
        crate::info!("{who} - Leafnode connection closed: {}", reason.as_str());
    }
    shard.leafs.conns.borrow_mut().remove(&cid);
    if let Some((_, acc)) = st.account.clone().filter(|_| st.registered) {
        // The account's connection counts without this one.
        super::poll_leafs(&shard);
        shard.shared.announce_conns_of(acc);
    }
    shard.core.borrow_mut().remove_conn(cid);
    shard.flush().await;
    st.delay
}

/// A hub's side of the opening: INFO (with a nonce) in the clear, then,
/// with `leafnodes { tls }`, the TLS handshake the leaf starts. Returns
/// the socket and the nonce.
async fn open_hub(
    shard: &Rc<Shard>,
    mut tcp: TcpStream,
    cid: ConnId,
) -> Result<(Socket, Option<Vec<u8>>, String), String> {
    use futures_lite::AsyncWriteExt;
    let nonce = crate::shard::host::new_nonce();
    let tls = shard.shared.leaf.get().and_then(|l| l.tls());
    let mut info = hub_info(shard, cid, Some(&nonce), None);
    info.tls_required = tls.is_some();
    info.tls_verify = tls.as_ref().is_some_and(|t| t.verify);
    let mut out = Vec::new();
    encode::info(&mut out, &info.to_json());
    tcp.write_all(&out)
        .await
        .map_err(|e| format!("Error sending INFO: {e}"))?;
    let Some(tls) = tls else {
        return Ok((Socket::Plain(tcp), None, nonce));
    };
    let accept = async { Ok(futures_rustls::TlsAcceptor::from(tls.config.clone()).accept(tcp).await) };
    let t = match crate::rt::timer::timeout(tls.timeout, accept).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            return Err(format!(
                "TLS leafnode handshake error: {}",
                crate::tls::handshake_failure(&e)
            ))
        }
        Err(_) => return Err("TLS leafnode handshake error: timeout".into()),
    };
    tls.admit(t.get_ref().1).map_err(|k| {
        format!(
            "TLS leafnode handshake error: certificate not pinned: {}",
            k.unwrap_or_default()
        )
    })?;
    Ok((Socket::Tls(Box::new(t)), None, nonce))
}

/// A spoke's side of the opening: the hub's INFO in the clear (within
/// `first_info_timeout`), then the TLS handshake when the remote's URL
/// is `tls://`, it has a `tls` block, or the hub requires TLS. Returns
/// the socket and the INFO to answer.
async fn open_spoke(mut tcp: TcpStream, spoke: &Spoke) -> Result<(Socket, Option<Vec<u8>>, String), String> {
    use futures_lite::AsyncReadExt;
    let limit = spoke.remote.first_info_timeout.unwrap_or(FIRST_INFO);
    let mut line = Vec::new();
    let read_info = async {
        let mut byte = [0u8; 1];
        // Byte by byte: nothing past the INFO line may be taken from the
        // socket before TLS (the hub sends nothing more until CONNECT).
        while !line.ends_with(b"\r\n") {
            if line.len() > 64 * 1024 || tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                return Ok(false);
            }
            line.push(byte[0]);
        }
        Ok(true)
    };
    match crate::rt::timer::timeout(limit, read_info).await {
        Ok(true) => {}
        _ => return Err("Leafnode connection closed: no INFO from the remote in time".into()),
    }
    let text = line
        .strip_prefix(b"INFO ")
        .ok_or("attempted to connect to wrong port")?;
    let json = text.trim_ascii().to_vec();
    let info: LeafInfo = serde_json::from_slice(&json).map_err(|e| format!("invalid INFO: {e}"))?;
    if !(spoke.tls_required || info.tls_required) {
        return Ok((Socket::Plain(tcp), Some(json), String::new()));
    }
    let socket = spoke_tls(tcp, spoke).await?;
    Ok((socket, Some(json), String::new()))
}

/// The TLS handshake a leaf starts with its hub (verified as the remote's
/// `tls` says, by the URL's host name), within the remote's TLS timeout.
pub(super) async fn spoke_tls(tcp: TcpStream, spoke: &Spoke) -> Result<Socket, String> {
    let name = RouteTls::server_name(&spoke.url.host, None)?;
    let timeout = spoke
        .remote
        .tls
        .as_ref()
        .and_then(|t| t.timeout)
        .unwrap_or(crate::options::TLS_DEFAULT_TIMEOUT);
    let connect = async {
        Ok(futures_rustls::TlsConnector::from(spoke.tls.clone())
            .connect(name, tcp)
            .await)
    };
    match crate::rt::timer::timeout(timeout, connect).await {
        Ok(Ok(t)) => Ok(Socket::TlsDialed(Box::new(t))),
        Ok(Err(e)) => Err(format!(
            "TLS leafnode handshake error: {}",
            crate::tls::handshake_failure(&e)
        )),
        Err(_) => Err("TLS leafnode handshake error: timeout".into()),
    }
}

/// What events say about a leaf connection: kind `Leafnode`; on the hub
/// side its user, name and version too.
fn event_client(st: &State, cid: ConnId, ip: &str, spoke: bool) -> crate::sys::ClientInfo {
    crate::sys::ClientInfo {
        start: st.start.clone(),
        host: ip.to_string(),
        id: cid.0,
        acc: st.account.as_ref().map(|a| a.1.clone()).unwrap_or_default(),
        user: if spoke { String::new() } else { st.user.clone() },
        name: if spoke { String::new() } else { st.peer_name.clone() },
        ver: if spoke { String::new() } else { st.version.clone() },
        kind: "Leafnode",
        ..Default::default()
    }
}

/// After a registered leaf connection closed: `$SYS.ACCOUNT.<acc>.DISCONNECT`
/// (kind `Leafnode`).
fn disconnect_event(shard: &Rc<Shard>, st: &State, cid: ConnId, ip: &str, reason: CloseReason) {
    let Some((_, acc)) = &st.account else { return };
    let mut info = event_client(st, cid, ip, st.dialed);
    info.stop = crate::timefmt::rfc3339(std::time::SystemTime::now());
    let (sent, received) = shard
        .core
        .borrow()
        .conn(cid)
        .map(|c| {
            (
                crate::sys::DataStats {
                    msgs: c.in_msgs,
                    bytes: c.in_bytes,
                },
                crate::sys::DataStats {
                    msgs: c.out_msgs,
                    bytes: c.out_bytes,
                },
            )
        })
        .unwrap_or_default();
    let doc = crate::sys::disconnect_event(&shard.shared, &info, sent, received, reason.as_str());
    shard.emit(&format!("$SYS.ACCOUNT.{acc}.DISCONNECT"), doc);
}

/// The INFO a hub sends a leaf: first with a nonce, then (`account`) to
/// confirm its CONNECT.
fn hub_info(shard: &Shard, cid: ConnId, nonce: Option<&str>, account: Option<&str>) -> LeafInfo {
    let info = shard.info.borrow();
    let listen = shard
        .shared
        .leaf
        .get()
        .and_then(|l| l.listen.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default();
    let lo = shard.shared.leaf.get().map(|l| l.opts()).unwrap_or_default();
    let advertised = lo.advertise.clone().unwrap_or_else(|| listen.clone());
    let (host, port) = listen.rsplit_once(':').unwrap_or(("", "0"));
    LeafInfo {
        server_id: info.server_id.clone(),
        server_name: info.server_name.clone(),
        version: info.version.clone(),
        proto: LEAF_PROTO,
        go: info.go.clone(),
        host: host.to_string(),
        port: port.parse().unwrap_or(0),
        headers: info.headers,
        // Always: a leaf must CONNECT first, whatever the auth.
        auth_required: true,
        max_payload: info.max_payload,
        ip: advertised.clone(),
        client_id: cid.0,
        nonce: nonce.unwrap_or_default().to_string(),
        cluster: info.cluster.clone(),
        // The first INFO opens the compression negotiation.
        compression: if nonce.is_some() {
            lo.compression.info_value().into()
        } else {
            String::new()
        },
        connect_info: account.is_some(),
        remote_account: account.unwrap_or_default().to_string(),
        info_on_connect: true,
        tls_required: false,
        tls_verify: false,
        leafnode_urls: if lo.no_advertise { Vec::new() } else { vec![advertised] },
        ldm: false,
        import: None,
        export: None,
    }
}

impl Link<'_> {
    async fn read_loop(&self, stream: &Stream) -> CloseReason {
        crate::shard::link_reader::read_loop(self.shard, self.cid, stream, self).await
    }

    /// Sends `-ERR` (when given) and closes.
    fn fail(&self, err: Option<LeafWireError>, reason: CloseReason) {
        let text = err.map(|e| e.text());
        crate::shard::link_reader::fail(self.shard, self.cid, text.as_deref(), reason);
    }

    async fn handle(&self, op: RouteOp<'_>) -> Step {
        let registered = self.state.borrow().registered;
        // A leaf's first operation must be CONNECT, as nats-server has it.
        if self.spoke.is_none() && !registered && !matches!(op, RouteOp::Connect(_) | RouteOp::Info(_)) {
            crate::error!("{} - authentication error", self.who);
            return Err((
                Some(LeafWireError::AuthorizationViolation),
                CloseReason::AuthenticationViolation,
            ));
        }
        match op {
            RouteOp::Ping => self.shard.core.borrow_mut().send_raw(self.cid, encode::PONG),
            RouteOp::Pong => {
                let sent = {
                    let mut st = self.state.borrow_mut();
                    st.pings_out = 0;
                    st.ping_at.take()
                };
                if let (Some(at), Some(e)) = (sent, self.shard.leafs.conns.borrow_mut().get_mut(&self.cid)) {
                    e.rtt = Some(at.elapsed());
                    // s2_auto follows the RTT, from the next write on.
                    if self.s2.borrow().is_out() {
                        if let Some(level) = self.mode().relevel(at.elapsed()) {
                            self.s2.borrow_mut().relevel(level);
                            e.compression = level.name();
                        }
                    }
                }
            }
            RouteOp::Ok => {}
            RouteOp::Err(text) => {
                let text = String::from_utf8_lossy(text);
                let text = text.trim_matches('\'');
                crate::error!("{} - Leafnode Error '{text}'", self.who);
                if text.contains("Loop detected") && self.spoke.is_some() {
                    self.state.borrow_mut().delay = Some(LOOP_DELAY);
                    return Err((None, CloseReason::ProtocolViolation));
                }
            }
            RouteOp::Connect(json) if self.spoke.is_none() => {
                if registered {
                    return Ok(());
                }
                return self.connect(json).await;
            }
            RouteOp::Info(json) => {
                if self.spoke.is_some() {
                    return self.hub_said(json);
                }
                if !registered {
                    return self.leaf_negotiates(json);
                }
            }
            // A spoke takes nothing else before the hub confirmed it.
            _ if !registered => {}
            RouteOp::Connect(_) => {}
            RouteOp::Sub { subject, queue, .. } => {
                if subject == self.lds().as_bytes() {
                    let account = self.state.borrow().account.clone().map(|a| a.1).unwrap_or_default();
                    let e = LeafWireError::LoopDetected(account);
                    crate::error!("{} - {}", self.who, e.text());
                    if self.spoke.is_some() {
                        self.state.borrow_mut().delay = Some(LOOP_DELAY);
                    }
                    let reason = e.close_reason();
                    return Err((Some(e), reason));
                }
                if self.denied_import(subject) {
                    return Ok(());
                }
                // A hub refuses a leaf user's subscription its permissions
                // do not allow (a wildcard is taken and filtered instead).
                let refused = self.state.borrow().perms.as_ref().is_some_and(|p| {
                    !crate::subject::has_wildcard(subject) && !p.subscribe_allowed(subject, queue.map(|q| q.0))
                });
                if refused {
                    let text = crate::proto::errors::permissions_violation(crate::proto::errors::Violation::Subscribe(
                        subject, None,
                    ));
                    crate::error!(
                        "{} - Subscription Violation on {:?} - Check other side configuration",
                        self.who,
                        String::from_utf8_lossy(subject)
                    );
                    return Err((Some(LeafWireError::Permissions(text)), CloseReason::ProtocolViolation));
                }
                let sid = leaf_sid(subject, queue.map(|q| q.0));
                self.shard
                    .core
                    .borrow_mut()
                    .subscribe_leaf(self.cid, subject, queue.map(|q| q.0), &sid);
                self.subjects_changed();
            }
            RouteOp::Unsub { subject, queue, .. } => {
                let sid = leaf_sid(subject, queue);
                self.shard.core.borrow_mut().unsubscribe(self.cid, &sid, None);
                self.subjects_changed();
            }
            RouteOp::Msg(m) => {
                if self.denied_import(m.subject) {
                    return Ok(());
                }
                let refused = self
                    .state
                    .borrow()
                    .perms
                    .as_ref()
                    .is_some_and(|p| !p.publish_allowed(m.subject));
                if refused {
                    let text = crate::proto::errors::permissions_violation(crate::proto::errors::Violation::Publish(
                        m.subject,
                    ));
                    crate::error!(
                        "{} - Publish Violation on {:?} - Check other side configuration",
                        self.who,
                        String::from_utf8_lossy(m.subject)
                    );
                    return Err((Some(LeafWireError::Permissions(text)), CloseReason::ProtocolViolation));
                }
                self.shard.core.borrow_mut().publish_leaf(
                    self.cid,
                    m.subject,
                    m.reply,
                    &m.queues,
                    m.header_len,
                    m.message,
                );
            }
        }
        Ok(())
    }

    /// Monitoring takes the subscriptions' subjects again at its next poll.
    fn subjects_changed(&self) {
        if let Some(e) = self.shard.leafs.conns.borrow_mut().get_mut(&self.cid) {
            e.subjects_stale = true;
        }
    }

    fn lds(&self) -> String {
        self.shard.shared.leaf.get().map(|l| l.lds.clone()).unwrap_or_default()
    }

    /// Spoke: whether `deny_imports` keeps `subject` from this server.
    fn denied_import(&self, subject: &[u8]) -> bool {
        self.deny_imports.as_ref().is_some_and(|r| !r.admits(subject))
    }

    /// Hub: a leaf's CONNECT: checks, authentication, then the confirming
    /// INFO and the account's interest.
    async fn connect(&self, json: &[u8]) -> Step {
        let Ok(connect) = serde_json::from_slice::<LeafConnect>(json) else {
            crate::error!("{} - invalid CONNECT", self.who);
            return Err((None, CloseReason::ProtocolViolation));
        };
        if self.state.borrow().compression.is_none() {
            // No INFO came first: the leaf does not compress (or cannot).
            let n = if connect.compress_mode.is_empty() {
                Negotiated::NotSupported
            } else {
                Negotiated::Off
            };
            self.state.borrow_mut().compression = Some(n);
            if let Some(e) = self.shard.leafs.conns.borrow_mut().get_mut(&self.cid) {
                e.compression = n.name();
            }
        }
        let Some((account, name, perms)) = self.authenticate(&connect).await else {
            match &connect.user {
                Some(u) => crate::error!("{} - authentication error - User {u:?}", self.who),
                None => crate::error!("{} - authentication error", self.who),
            }
            return Err((
                Some(LeafWireError::AuthorizationViolation),
                CloseReason::AuthenticationViolation,
            ));
        };
        if connect.lang.is_some() {
            crate::error!("{} - attempted to connect to leaf node port", self.who);
            return Err((Some(LeafWireError::ClientOnLeafPort), CloseReason::IncorrectPort));
        }
        // The account's JWT `leaf` limit.
        let acc = self.shard.verifier.borrow().accounts().get(&name);
        match acc.as_ref().map(crate::auth::accounts::LeafSlot::take) {
            Some(None) => {
                crate::error!("{} - maximum account active connections exceeded", self.who);
                return Err((
                    Some(LeafWireError::MaxAccountConnections),
                    CloseReason::MaxAccountConnectionsExceeded,
                ));
            }
            Some(slot) => self.state.borrow_mut().slot = slot,
            None => {}
        }
        if connect.cluster.contains(' ') {
            return Err((Some(LeafWireError::ClusterNameSpaces), CloseReason::ProtocolViolation));
        }
        let ours = self.shard.info.borrow().cluster.clone();
        if !ours.is_empty() && connect.cluster == ours {
            crate::error!("{} - remote leafnode has same cluster name", self.who);
            return Err((Some(LeafWireError::SameClusterName), CloseReason::ProtocolViolation));
        }
        let mut info = hub_info(self.shard, self.cid, None, Some(&name));
        // The leaf learns what it may receive (import) and send (export).
        if let Some(p) = &perms {
            info.import = wire(&p.subscribe);
            info.export = wire(&p.publish);
        }
        {
            let mut st = self.state.borrow_mut();
            st.perms = perms;
            st.user = connect.user.clone().unwrap_or_default();
            st.version = connect.version.clone();
            st.remote_cluster = connect.cluster.clone();
            st.peer_proto = connect.protocol;
            st.role_spoke = connect.hub;
            st.isolated = connect.isolate || self.shard.shared.leaf.get().is_some_and(|l| l.opts().isolate);
        }
        let mut out = Vec::new();
        encode::info(&mut out, &info.to_json());
        self.shard.core.borrow_mut().send_raw(self.cid, &out);
        // nats-server confirms the CONNECT, then refuses an old leaf.
        if let Some(min) = self.shard.shared.leaf.get().and_then(|l| l.opts().min_version) {
            let (have, want) = (
                crate::conf::leaf::semver(&connect.version),
                crate::conf::leaf::semver(&min),
            );
            if have.zip(want).is_none_or(|(h, w)| h < w) {
                crate::error!(
                    "{} - leafnode version {:?} below the minimum {min:?}",
                    self.who,
                    connect.version
                );
                return Err((Some(LeafWireError::MinVersion(min)), CloseReason::ProtocolViolation));
            }
        }
        self.register(account, name, connect.name, &connect.deny_pub);
        Ok(())
    }

    /// Hub: the account the leaf's credentials bind it to: the
    /// `leafnodes` block's user or users when it has them, else the
    /// server's client users (and in operator mode the leaf's JWT).
    async fn authenticate(&self, connect: &LeafConnect) -> Option<(AccountId, String, Option<Arc<Permissions>>)> {
        let lo = self.shard.shared.leaf.get()?.opts();
        let given_pass = connect.pass.clone().unwrap_or_default();
        let configured = match (&lo.username, lo.users.is_empty()) {
            (Some(u), _) => Some((u.clone(), lo.password.clone().unwrap_or_default(), lo.account.clone())),
            (None, false) => {
                let user = connect.user.as_deref()?;
                let u = lo.users.iter().find(|u| u.user == user)?;
                Some((u.user.clone(), u.password.clone(), u.account.clone()))
            }
            (None, true) => None,
        };
        let verifier = self.shard.verifier.borrow().clone();
        let accounts = verifier.accounts().clone();
        if let Some((user, stored, account)) = configured {
            if connect.user.as_deref() != Some(user.as_str()) {
                return None;
            }
            let ok = if crate::auth::password::is_bcrypt(&stored) {
                let ip = self.ip.parse().ok();
                crate::shard::auth_work::run(crate::auth::verify::SlowWork::Bcrypt, ip, move || {
                    Ok(crate::auth::password::matches(&stored, &given_pass))
                })
                .await
                .unwrap_or(false)
            } else {
                crate::auth::password::matches(&stored, &given_pass)
            };
            if !ok {
                return None;
            }
            let name = account.unwrap_or_else(|| crate::auth::config::GLOBAL_ACCOUNT.to_string());
            let acc = accounts.get(&name)?;
            return Some((acc.id, acc.name.clone(), None));
        }
        if !verifier.auth_required() {
            let acc = accounts.get(crate::auth::config::GLOBAL_ACCOUNT)?;
            return Some((acc.id, acc.name.clone(), None));
        }
        // The server's client users, as nats-server falls back to them.
        let opts = crate::proto::connect::ClientOpts {
            user: connect.user.clone(),
            pass: connect.pass.clone(),
            jwt: connect.jwt.clone(),
            sig: connect.sig.clone(),
            nkey: connect.nkey.clone(),
            headers: connect.headers,
            ..Default::default()
        };
        let nonce = self.state.borrow().nonce.clone();
        let ip = self.ip.parse().ok();
        // The JWT connection type: LEAFNODE, or LEAFNODE_WS over WebSocket.
        let kind = if self.ws { ConnKind::LeafWs } else { ConnKind::Leaf };
        let req = crate::auth::verify::ConnectRequest {
            opts: &opts,
            nonce: &nonce,
            ip,
            cert_names: &[],
            kind,
        };
        let identity = match verifier.slow_work(&req) {
            Some(work) => {
                let v = verifier.clone();
                crate::shard::auth_work::run(work, ip, move || {
                    let req = crate::auth::verify::ConnectRequest {
                        opts: &opts,
                        nonce: &nonce,
                        ip,
                        cert_names: &[],
                        kind,
                    };
                    v.verify(&req, std::time::SystemTime::now())
                })
                .await
            }
            None => verifier.verify(&req, std::time::SystemTime::now()),
        }
        .ok()?;
        let acc = identity.account();
        Some((acc.id, acc.name.clone(), identity.permissions().cloned()))
    }

    /// Spoke: an INFO from the hub: the first (check it is a leaf port,
    /// send CONNECT), the confirming one (register), or an update.
    fn hub_said(&self, json: &[u8]) -> Step {
        let Ok(info) = serde_json::from_slice::<LeafInfo>(json) else {
            return Err((None, CloseReason::ProtocolViolation));
        };
        let (sent, registered) = {
            let st = self.state.borrow();
            (st.connect_sent, st.registered)
        };
        if registered {
            return Ok(());
        }
        if sent {
            if info.connect_info {
                self.confirmed(info.server_name);
            }
            return Ok(());
        }
        // A client port's INFO has no leaf URLs (or no client id).
        if info.client_id == 0 || info.leafnode_urls.is_empty() {
            crate::error!("{} - attempted to connect to wrong port", self.who);
            return Err((None, CloseReason::IncorrectPort));
        }
        let spoke = self.spoke.expect("spoke side");
        let current = self.state.borrow().compression;
        let negotiated = match current {
            Some(n) => n,
            None => {
                let n = self.negotiate(&info.compression)?;
                if let Negotiated::S2(level) = n {
                    // Our INFO in the clear, then S2 both ways; CONNECT
                    // follows the hub's answer.
                    let mut ours = hub_info(self.shard, self.cid, None, None);
                    ours.compression = self.mode().negotiated_info_value(n).into();
                    let mut line = Vec::new();
                    encode::info(&mut line, &ours.to_json());
                    let mut core = self.shard.core.borrow_mut();
                    switch_on(&mut core, self.cid, self.s2, level, &line, InfoGoes::Plain);
                    return Ok(());
                }
                n
            }
        };
        let Some(acc) = self.local_account() else {
            crate::error!(
                "{} - No local account {:?} for leafnode",
                self.who,
                spoke
                    .remote
                    .account
                    .as_deref()
                    .unwrap_or(crate::auth::config::GLOBAL_ACCOUNT)
            );
            return Err((None, CloseReason::ProtocolViolation));
        };
        let server = self.shard.info.borrow().clone();
        let (mut user, mut pass) = (spoke.url.user.clone(), spoke.url.pass.clone());
        let (mut jwt, mut sig) = (None, None);
        if let Some(path) = &spoke.remote.credentials {
            match std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|t| crate::auth::jwt::parse_creds(&t).map_err(|e| e.to_string()))
                .and_then(|(j, seed)| {
                    crate::auth::jwt::sign_nonce(&seed, info.nonce.as_bytes())
                        .map(|s| (j, s))
                        .map_err(|e| e.to_string())
                }) {
                Ok((j, s)) => {
                    jwt = Some(j);
                    sig = Some(s);
                    user = None;
                    pass = None;
                }
                Err(e) => {
                    crate::error!("{} - Error reading credentials file {}: {e}", self.who, path.display());
                    return Err((None, CloseReason::ProtocolViolation));
                }
            }
        }
        let connect = LeafConnect {
            version: server.version.clone(),
            user,
            pass,
            jwt,
            sig,
            server_id: server.server_id.clone(),
            name: server.server_name.clone(),
            cluster: if server.cluster.is_empty() {
                server.server_name.clone()
            } else {
                server.cluster.clone()
            },
            headers: server.headers,
            deny_pub: spoke.remote.deny_imports.clone(),
            isolate: spoke.remote.request_isolation,
            hub: spoke.remote.hub,
            compress_mode: negotiated.name().into(),
            remote_account: acc.1.clone(),
            protocol: LEAF_PROTO,
            ..Default::default()
        };
        let mut out = b"CONNECT ".to_vec();
        out.extend_from_slice(&serde_json::to_vec(&connect).unwrap_or_default());
        out.extend_from_slice(b"\r\n");
        self.shard.core.borrow_mut().send_raw(self.cid, &out);
        {
            let mut st = self.state.borrow_mut();
            st.connect_sent = true;
            st.first_deadline = None;
            st.account = Some(acc);
            st.peer_name = info.server_name.clone();
            st.remote_cluster = info.cluster.clone();
            st.peer_proto = info.proto;
            st.isolated = spoke.remote.isolate;
        }
        if info.info_on_connect {
            self.state.borrow_mut().confirm_deadline = Some(Instant::now() + CONNECT_CONFIRM);
        } else {
            // An older hub confirms nothing: the CONNECT is taken as is.
            self.confirmed(info.server_name);
        }
        Ok(())
    }

    /// This side's compression mode: the remote's (spoke) or the
    /// `leafnodes` block's (hub).
    fn mode(&self) -> crate::compress::CompressionMode {
        // Over WebSocket, where nats-server puts S2 under the frames,
        // petrel does not compress (it says `off`; either side agrees).
        if self.ws {
            return crate::compress::CompressionMode::Off;
        }
        match self.spoke {
            Some(s) => s.remote.compression.clone(),
            None => {
                self.shard
                    .shared
                    .leaf
                    .get()
                    .map(|l| l.opts())
                    .unwrap_or_default()
                    .compression
            }
        }
    }

    /// Settles compression from the peer's INFO `compression` (nats-server's
    /// matrix) and records it.
    fn negotiate(&self, theirs: &str) -> Result<Negotiated, (Option<LeafWireError>, CloseReason)> {
        let rtt = self.state.borrow().started.map_or(Duration::ZERO, |t| t.elapsed());
        let n = self.mode().select(theirs, rtt).map_err(|text| {
            crate::error!("{} - {text}", self.who);
            (Some(LeafWireError::Compression(text)), CloseReason::ProtocolViolation)
        })?;
        self.state.borrow_mut().compression = Some(n);
        if let Some(e) = self.shard.leafs.conns.borrow_mut().get_mut(&self.cid) {
            e.compression = n.name();
        }
        Ok(n)
    }

    /// Hub: a leaf's INFO before its CONNECT asks for compression (taken
    /// only when this hub's mode is not `off`, as nats-server has it): the
    /// answer is an INFO with the same nonce, already in S2.
    fn leaf_negotiates(&self, json: &[u8]) -> Step {
        let mode = self.mode();
        if !mode.negotiates() || self.state.borrow().compression.is_some() {
            crate::error!("{} - authentication error", self.who);
            return Err((
                Some(LeafWireError::AuthorizationViolation),
                CloseReason::AuthenticationViolation,
            ));
        }
        let Ok(info) = serde_json::from_slice::<LeafInfo>(json) else {
            return Err((None, CloseReason::ProtocolViolation));
        };
        let n = self.negotiate(&info.compression)?;
        if let Negotiated::S2(level) = n {
            let nonce = self.state.borrow().nonce.clone();
            let mut ours = hub_info(self.shard, self.cid, Some(&nonce), None);
            ours.compression = mode.negotiated_info_value(n).into();
            let mut line = Vec::new();
            encode::info(&mut line, &ours.to_json());
            let mut core = self.shard.core.borrow_mut();
            switch_on(&mut core, self.cid, self.s2, level, &line, InfoGoes::Compressed);
        }
        Ok(())
    }

    /// Spoke: the remote's local account.
    fn local_account(&self) -> Option<(AccountId, String)> {
        let name = self
            .spoke?
            .remote
            .account
            .clone()
            .unwrap_or_else(|| crate::auth::config::GLOBAL_ACCOUNT.to_string());
        let acc = self.shard.verifier.borrow().accounts().get(&name)?;
        Some((acc.id, acc.name.clone()))
    }

    /// Spoke: the hub took our CONNECT.
    fn confirmed(&self, hub_name: String) {
        let Some((account, name)) = self.state.borrow().account.clone() else {
            return;
        };
        self.state.borrow_mut().confirm_deadline = None;
        self.register(account, name, hub_name, &[]);
    }

    /// Both sides: the link is bound to `account`: it hears the account's
    /// interest (and this server's loop-detection subject) from now on.
    fn register(&self, account: AccountId, name: String, peer: String, deny_pub: &[String]) {
        crate::info!("{} - Leafnode connection created for account: {name}", self.who);
        {
            let mut core = self.shard.core.borrow_mut();
            core.name_account(account, &name);
            // What a request through an import says of a leaf connection.
            core.set_conn_detail(
                self.cid,
                std::sync::Arc::new(crate::core::request_info::ClientDetail {
                    account: name.clone(),
                    name: peer.clone(),
                    kind: "Leafnode",
                    ..Default::default()
                }),
            );
            let (tellable, perms) = self.filters(deny_pub);
            let (cluster, isolated, role_spoke, peer_proto) = {
                let st = self.state.borrow();
                (st.remote_cluster.clone(), st.isolated, st.role_spoke, st.peer_proto)
            };
            core.add_leaf(
                self.cid,
                account,
                crate::core::LeafSetup {
                    cluster: Some(&cluster),
                    spoke: role_spoke,
                    isolated,
                    tellable,
                    perms,
                },
            );
            core.set_peer_protocol(self.cid, peer_proto);
            let mut lds = Vec::new();
            encode::leaf_sub(&mut lds, self.lds().as_bytes(), None);
            core.send_raw(self.cid, &lds);
        }
        // Trace events name a leaf connection by its remote server.
        self.shard.core.borrow_mut().set_conn_name(self.cid, &peer);
        if let Some(e) = self.shard.leafs.conns.borrow_mut().get_mut(&self.cid) {
            e.name = peer.clone();
            e.account = name.clone();
            e.is_spoke = self.state.borrow().role_spoke;
            e.registered = true;
        }
        {
            let mut st = self.state.borrow_mut();
            st.registered = true;
            st.first_deadline = None;
            st.account = Some((account, name.clone()));
            st.peer_name = peer;
            st.start = crate::timefmt::rfc3339(std::time::SystemTime::now());
            st.next_ping = Some(Instant::now() + FIRST_PING + FIRST_PING.mul_f64(fastrand::f64() * 0.2));
        }
        // A leaf announces its connection as a client's (CONNECT); a hub
        // only counts it (nats-server's events).
        if self.spoke.is_some() {
            let info = event_client(&self.state.borrow(), self.cid, self.ip, true);
            let doc = crate::sys::connect_event(&self.shard.shared, &info);
            self.shard.emit(&format!("$SYS.ACCOUNT.{name}.CONNECT"), doc);
        }
        super::poll_leafs(self.shard);
        self.shard.shared.announce_conns_of(name);
    }

    /// What the link may be told of and sent. Spoke: its `deny_imports`
    /// (it does not ask for those subjects) and `deny_exports` (it does
    /// not send those). Hub: the leaf user's permissions (publish: what it
    /// is told of, as it could only send those; subscribe: what it is
    /// sent) and the leaf's CONNECT `deny_pub` (not sent either).
    fn filters(&self, deny_pub: &[String]) -> (Option<SubjectRule>, Option<Arc<Permissions>>) {
        let list = |l: &[String]| (!l.is_empty()).then(|| PatternList::new(l));
        match self.spoke {
            Some(s) => (
                self.deny_imports.clone(),
                list(&s.remote.deny_exports).map(|d| Arc::new(Permissions::sent_all_but(d))),
            ),
            None => {
                let user = self.state.borrow().perms.clone();
                let tellable = user.as_ref().map(|p| p.publish.clone()).filter(|r| !r.is_open());
                let mut deny: Vec<String> = user
                    .as_ref()
                    .and_then(|p| p.subscribe.deny.as_ref())
                    .map(PatternList::entries)
                    .unwrap_or_default();
                deny.extend(deny_pub.iter().cloned());
                let allow = user.as_ref().and_then(|p| p.subscribe.allow.clone());
                let perms = (allow.is_some() || !deny.is_empty()).then(|| {
                    Arc::new(Permissions {
                        subscribe: SubjectRule {
                            allow,
                            deny: list(&deny),
                        },
                        ..Default::default()
                    })
                });
                (tellable, perms)
            }
        }
    }

    /// Deadlines: CONNECT (hub) or the hub's INFO (spoke) in time, the
    /// hub's confirmation, and PINGs.
    async fn timer_loop(&self) -> CloseReason {
        loop {
            crate::rt::timer::sleep(TICK).await;
            let now = Instant::now();
            if let Some(r) = self.shard.core.borrow().conn(self.cid).and_then(|c| c.closing()) {
                return r;
            }
            let (first, confirm, next_ping, pings_out) = {
                let st = self.state.borrow();
                (st.first_deadline, st.confirm_deadline, st.next_ping, st.pings_out)
            };
            if first.is_some_and(|d| now >= d) {
                if self.spoke.is_some() {
                    // No INFO from the hub: nothing to answer.
                    self.fail(None, CloseReason::ReadError);
                    return CloseReason::ReadError;
                }
                let e = LeafWireError::AuthenticationTimeout;
                let r = e.close_reason();
                self.fail(Some(e), r);
                return r;
            }
            if confirm.is_some_and(|d| now >= d) {
                let e = LeafWireError::StaleLeafConnection;
                let r = e.close_reason();
                self.fail(Some(e), r);
                return r;
            }
            if next_ping.is_some_and(|t| now >= t) {
                let (interval, max) = {
                    let o = self.shard.opts.borrow();
                    (o.ping_interval, o.ping_max)
                };
                if pings_out >= max {
                    crate::debug!("{} - Stale Client Connection - Closing", self.who);
                    let e = LeafWireError::StaleConnection;
                    let r = e.close_reason();
                    self.fail(Some(e), r);
                    return r;
                }
                let mut st = self.state.borrow_mut();
                st.pings_out += 1;
                st.next_ping = Some(now + interval);
                st.ping_at = Some(now);
                self.shard.core.borrow_mut().send_raw(self.cid, encode::PING);
            }
        }
    }
}

/// A permission rule as the confirming INFO carries it.
fn wire(rule: &SubjectRule) -> Option<crate::proto::route_info::SubjectPermission> {
    (!rule.is_open()).then(|| crate::proto::route_info::SubjectPermission {
        allow: rule.allow.as_ref().map(PatternList::entries).unwrap_or_default(),
        deny: rule.deny.as_ref().map(PatternList::entries).unwrap_or_default(),
    })
}

impl crate::shard::link_reader::LinkProtocol for Link<'_> {
    const PARSER: &'static str = "Leafnode";

    fn who(&self) -> &str {
        self.who
    }

    fn parse<'b>(&self, buf: &'b [u8], max_line: usize) -> Result<RouteParsed<'b>, ParseError> {
        parse_leaf(buf, max_line, MAX_LEAF_MSG)
    }

    fn link_s2(&self) -> Option<&SharedS2> {
        Some(self.s2)
    }

    async fn on_op(&self, op: RouteOp<'_>) -> crate::shard::link_reader::Step {
        self.handle(op).await.map_err(|(e, r)| (e.map(|e| e.text()), r))
    }
}

/// The sid a leaf's interest is kept under (its key for `LS-`).
fn leaf_sid(subject: &[u8], queue: Option<&[u8]>) -> Vec<u8> {
    let mut sid = subject.to_vec();
    if let Some(q) = queue {
        sid.push(b' ');
        sid.extend_from_slice(q);
    }
    sid
}
