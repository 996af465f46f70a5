//! One client connection's tasks: the reader feeds the session, the writer
//! drains the core's outbound buffer to the socket with one large write per
//! wake, and the timer drives the session's deadlines.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::rt::net::TcpStream;

use super::arrival::Arrival;
use super::host::{client_info, ConnAuth, CoreHost};
use super::socket::Socket;
use super::state::Shard;
use super::transport::{read, shutdown, write_all, Stream, Transport};
use crate::ids::{ConnId, ConnKind, ShardId};
use crate::proto::connect::ClientOpts;
use crate::proto::encode;
use crate::proto::errors::{CloseReason, WireError};
use crate::proto::parser::{parse, Op, Parsed};
use crate::proto::session::Session;
use crate::sys::{ClientInfo, DataStats};

/// Smallest and largest read buffer: it grows while reads fill it.
const READ_MIN: usize = 512;
const READ_MAX: usize = 64 * 1024;

fn peer_ip(stream: &TcpStream) -> String {
    stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default()
}

/// Refuses a connection past `max_connections`: INFO, then the error, then
/// close (for a WebSocket client, after its upgrade and in frames).
pub async fn refuse(shard: Rc<Shard>, stream: TcpStream, cid: ConnId, kind: ConnKind) {
    let ip = peer_ip(&stream);
    let port = stream.peer_addr().map_or(0, |a| a.port());
    let mut out = Vec::new();
    encode::info(&mut out, &client_info(&shard.info.borrow(), cid, &ip).to_json());
    encode::err(&mut out, WireError::MaxConnectionsExceeded);
    // Rate-limited as nats-server's: a flood writes a line a second.
    if crate::logging::rate_limited("maximum connections exceeded", Instant::now()) {
        crate::error!("{ip}:{port} - cid:{} - maximum connections exceeded", cid.0);
    }
    let transport = match (kind, shard.shared.websocket()) {
        (ConnKind::WebSocket, Some(ws)) => {
            let max_payload = shard.opts.borrow().max_payload;
            match super::websocket::open(stream, &ws.settings, ws.tls.as_ref(), max_payload).await {
                Ok(a) => Transport::Ws(Box::new(a.stream)),
                Err(_) => return,
            }
        }
        _ => Transport::Socket(Socket::Plain(stream)),
    };
    let stream = Rc::new(RefCell::new(transport));
    let _ = write_all(&stream, &out).await;
    super::writer::close_transport(&stream, CloseReason::MaxConnectionsExceeded).await;
}

/// Forgets a connection that never got to its session (handshake failed).
pub(super) fn forget(shard: &Shard) {
    shard.shared.conn_counts[shard.id.index()].fetch_sub(1, Relaxed);
    shard.shared.total_conns.fetch_sub(1, Relaxed);
}

/// The INFO line a new client gets; WebSocket clients are told the
/// WebSocket listener's host, port and TLS, as nats-server does.
/// `tls_first`: the client started TLS before INFO, which then says
/// `tls_required` even with `allow_non_tls` (as in nats-server).
fn info_line(
    shard: &Shard,
    cid: ConnId,
    ip: &str,
    auth: &ConnAuth,
    ws: Option<&crate::control::WsRuntime>,
    tls_first: bool,
) -> Vec<u8> {
    let mut info = client_info(&shard.info.borrow(), cid, ip);
    info.auth_required = auth.verifier.requires_connect();
    info.nonce = auth.nonce.clone();
    match ws {
        Some(ws) => {
            info.host = ws.host.clone();
            info.port = ws.port;
            info.tls_required = ws.tls.is_some();
            info.tls_available = ws.tls.is_some();
            info.tls_verify = ws.tls.as_ref().is_some_and(|t| t.verify);
        }
        None if tls_first => info.tls_required = true,
        None => {}
    }
    let mut line = Vec::new();
    encode::info(&mut line, &info.to_json());
    line
}

/// A TLS server's accepted client: its transport, the names its
/// certificate offers (`verify_and_map`), and whether INFO already went out.
struct Accepted {
    transport: Transport,
    cert_names: Vec<String>,
    info_sent: bool,
}

/// The first byte of a TLS record carrying a handshake (ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The TLS handshake of a client on a TLS server, within the deadline;
/// without `handshake_first` the INFO goes first, in the clear, as
/// nats-server sends it (also with its fallback form, when the client sent
/// nothing within the delay). With `allow_non_tls` the client's first byte
/// decides: a TLS handshake record starts TLS, anything else (or nothing
/// within the deadline, as nats-server reads it) stays plain. After the
/// handshake the client's key must match `pinned_certs`. `None` when the
/// client did not complete the handshake or is refused; like nats-server,
/// nothing more is written to it (nats-server's `-ERR 'Secure Connection -
/// TLS Required'` goes to the unfinished TLS session and never reaches the
/// wire), and timeouts and plain clients are logged at debug level, the
/// way nats-server keeps load-balancer probes out of the error log.
async fn tls_accept(
    tls: &crate::tls::ClientTls,
    allow_non_tls: bool,
    mut tcp: TcpStream,
    info: &[u8],
    who: &str,
) -> Option<Accepted> {
    use futures_lite::AsyncWriteExt;
    let mut first = [0u8; 1];
    let mut info_sent = !tls.handshake_first;
    // The fallback form of handshake_first: a client that sends nothing
    // within the delay gets INFO in the clear after all.
    if let Some(delay) = tls.first_fallback {
        let peek = async { Ok(tcp.peek(&mut first).await) };
        if !matches!(crate::rt::timer::timeout(delay, peek).await, Ok(Ok(n)) if n > 0) {
            info_sent = true;
        }
    }
    let deadline = Instant::now() + tls.timeout;
    if info_sent && tcp.write_all(info).await.is_err() {
        return None;
    }
    let plain = |tcp| {
        Some(Accepted {
            transport: Transport::Socket(Socket::Plain(tcp)),
            cert_names: Vec::new(),
            info_sent,
        })
    };
    let may_stay_plain = allow_non_tls && info_sent;
    let closed = |why: &str, error: bool| {
        if error {
            crate::error!("{who} - {why}");
        } else {
            crate::debug!("{who} - {why}");
        }
        crate::debug!("{who} - Client connection closed: TLS Handshake Failure");
        None
    };
    // The first byte tells a TLS client from a plain one before rustls
    // sees it: a plain client on a TLS-only server is closed without the
    // alert rustls would send, as nats-server closes it.
    let peek = async { Ok(tcp.peek(&mut first).await) };
    match crate::rt::timer::timeout(tls.timeout, peek).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        _ if may_stay_plain => return plain(tcp),
        Ok(Ok(1)) => {
            return closed(
                "TLS handshake error: first record does not look like a TLS handshake",
                false,
            )
        }
        Ok(Ok(_)) => return closed("TLS handshake error: EOF", true),
        Ok(Err(e)) => return closed(&format!("TLS handshake error: {e}"), true),
        Err(_) => return closed("TLS handshake timeout", false),
    }
    crate::debug!("{who} - Starting TLS client connection handshake");
    let acceptor = futures_rustls::TlsAcceptor::from(tls.config.clone());
    let accept = async { Ok(acceptor.accept(tcp).await) };
    let left = deadline.saturating_duration_since(Instant::now());
    let t = match crate::rt::timer::timeout(left, accept).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            return closed(
                &format!("TLS handshake error: {}", crate::tls::handshake_failure(&e)),
                true,
            )
        }
        Err(_) => return closed("TLS handshake timeout", false),
    };
    let cert_names = match tls.admit(t.get_ref().1) {
        Ok(names) => names,
        Err(id) => {
            match id {
                Some(id) => crate::debug!("{who} - Failed pinned cert test for key id: {id}"),
                None => crate::debug!("{who} - Failed pinned cert test as client did not provide a certificate"),
            }
            return closed("TLS handshake error: certificate not pinned", true);
        }
    };
    Some(Accepted {
        transport: Transport::Socket(Socket::Tls(Box::new(t))),
        cert_names,
        info_sent,
    })
}

/// Serves one client connection until it closes.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, cid: ConnId, kind: ConnKind) {
    let _ = stream.set_nodelay(true);
    let opts = shard.opts.borrow().clone();
    let _ = stream.set_write_timeout(Some(opts.write_deadline));
    let mut ip = peer_ip(&stream);
    let port = stream.peer_addr().map(|a| a.port()).unwrap_or(0);
    let accepted_at = std::time::SystemTime::now();
    let verifier = shard.verifier.borrow().for_kind(kind);
    let mut conn_auth = ConnAuth::new(verifier.clone(), ip.parse().ok());
    conn_auth.kind = kind;
    conn_auth.port = port;
    let who = format!("{ip}:{port} - cid:{}", cid.0);
    let ws = match kind {
        ConnKind::WebSocket => match shard.shared.websocket() {
            Some(ws) => Some(ws),
            None => return forget(&shard),
        },
        // Leaf connections are served by `shard::leaf`, never here.
        ConnKind::Standard | ConnKind::Leaf | ConnKind::LeafWs => None,
    };
    // (transport, whether INFO already went out in the clear, whether TLS came first)
    let (transport, info_sent, tls_first) = match (&ws, shard.shared.tls()) {
        // Boxed: the handshake futures are large, and inline they would
        // make every connection's task that much bigger for its whole life
        // (10 KiB more per idle client, measured with perf/idle_rss.py).
        (Some(ws), _) => match Box::pin(super::websocket::open(
            stream,
            &ws.settings,
            ws.tls.as_ref(),
            opts.max_payload,
        ))
        .await
        {
            Ok(accepted) if accepted.upgrade.leafnode => {
                // A leaf node: served as one when this server is a hub.
                forget(&shard);
                if shard.shared.leaf.get().is_some_and(|l| l.opts().port != 0) {
                    super::leaf::serve_ws_hub(shard.clone(), accepted.stream, cid).await;
                    return;
                }
                crate::error!("{who} - Not configured to accept leaf node connections");
                let stream = Rc::new(RefCell::new(Transport::Ws(Box::new(accepted.stream))));
                shutdown(&stream);
                return;
            }
            Ok(accepted) => {
                if let Some(f) = accepted.upgrade.forwarded_for {
                    conn_auth.ip = f.parse().ok();
                    ip = f;
                }
                conn_auth.cookies = accepted.upgrade.cookies;
                conn_auth.cert_names = accepted.cert_names;
                (Transport::Ws(Box::new(accepted.stream)), false, false)
            }
            Err(why) => {
                crate::error!("{who} - {why}");
                return forget(&shard);
            }
        },
        (None, None) => (Transport::Socket(Socket::Plain(stream)), false, false),
        (None, Some(t)) => {
            let line = info_line(&shard, cid, &ip, &conn_auth, None, false);
            match Box::pin(tls_accept(&t, opts.allow_non_tls, stream, &line, &who)).await {
                Some(a) => {
                    conn_auth.cert_names = a.cert_names;
                    (a.transport, a.info_sent, !a.info_sent)
                }
                None => {
                    // Listed among closed connections, as nats-server lists them.
                    shard.shared.record_closed(crate::control::ClosedConn {
                        conn: crate::control::ConnSnapshot::accepted(cid, &ip, port, accepted_at, shard.id.0, kind),
                        stop: std::time::SystemTime::now(),
                        reason: "TLS Handshake Failure",
                    });
                    return forget(&shard);
                }
            }
        }
    };
    let stream: Stream = Rc::new(RefCell::new(transport));
    let auth = Rc::new(RefCell::new(conn_auth));
    {
        let mut core = shard.core.borrow_mut();
        core.add_conn(cid);
        if !info_sent {
            let line = info_line(&shard, cid, &ip, &auth.borrow(), ws.as_deref(), tls_first);
            core.conn_mut(cid)
                .expect("just added")
                .out
                .tail()
                .extend_from_slice(&line);
        }
        // With no_auth_user the client is that user until its CONNECT.
        if let Some(Ok(id)) = verifier.no_auth_identity() {
            core.set_conn_identity(cid, id.account().id, id.permissions().cloned(), id.max_subscriptions());
            auth.borrow_mut().identity = Some(id);
        }
    }
    crate::debug!(
        "{ip}:{port} - cid:{} - Client connection created (shard {})",
        cid.0,
        shard.id.0
    );
    let now = Instant::now();
    let mut cfg = super::state::session_config(&opts);
    if let Some(ws) = &ws {
        cfg.auth_required = verifier.requires_connect();
        cfg.ping_interval = ws.ping_interval.unwrap_or(cfg.ping_interval);
        cfg.auth_timeout = ws.auth_timeout.unwrap_or(cfg.auth_timeout);
    }
    let base = Session::first_ping_base(cfg.ping_interval);
    let jitter = base.mul_f64(fastrand::f64() * 0.2);
    let session = Rc::new(RefCell::new(Session::new(cfg, now, base + jitter)));
    if matches!(&*stream.borrow(), Transport::Socket(Socket::Plain(_))) && affinity_on() {
        shard.core.borrow_mut().set_movable(cid);
    }
    let conn = Conn {
        cid,
        stream,
        session,
        auth,
        ip,
        port,
        start: accepted_at,
        kind,
    };
    run(shard, conn, Vec::new()).await;
}

/// Whether connections may move between shards by affinity
/// (`PETREL_AFFINITY=0` turns it off, for comparisons).
fn affinity_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("PETREL_AFFINITY").map_or(true, |v| v != "0"))
}

/// A client connection past its TLS or WebSocket opening, as its tasks share it.
struct Conn {
    cid: ConnId,
    stream: Stream,
    session: Rc<RefCell<Session>>,
    auth: Rc<RefCell<ConnAuth>>,
    ip: String,
    port: u16,
    start: std::time::SystemTime,
    kind: ConnKind,
}

/// Resumes a client another shard moved here, once the core says every
/// shard has caught up with the move (`ShardCore::take_arrived`).
pub async fn resume(shard: Rc<Shard>, cid: ConnId, a: Box<Arrival>) {
    let Arrival {
        fd,
        session,
        auth,
        ip,
        port,
        start,
        kind,
        unread,
        generation,
        accounts_seen,
    } = *a;
    let tcp = match TcpStream::from_std(std::net::TcpStream::from(fd)) {
        Ok(t) => t,
        Err(e) => {
            crate::error!(
                "{ip}:{port} - cid:{} - Client connection lost moving to shard {}: {e}",
                cid.0,
                shard.id.0
            );
            shard.core.borrow_mut().remove_conn(cid);
            forget(&shard);
            return;
        }
    };
    let _ = tcp.set_write_timeout(Some(shard.opts.borrow().write_deadline));
    crate::debug!(
        "{ip}:{port} - cid:{} - Client connection moved to shard {}",
        cid.0,
        shard.id.0
    );
    let (session, auth) = (RefCell::new(session), RefCell::new(auth));
    shard.refresh_arrived(cid, &session, &auth, generation, accounts_seen);
    let conn = Conn {
        cid,
        stream: Rc::new(RefCell::new(Transport::Socket(Socket::Plain(tcp)))),
        session: Rc::new(session),
        auth: Rc::new(auth),
        ip,
        port,
        start,
        kind,
    };
    run(shard, conn, unread).await;
}

/// A client's life from its first read (or its arrival from another
/// shard) to its close, or until it moves to another shard.
async fn run(shard: Rc<Shard>, conn: Conn, unread: Vec<u8>) {
    let (cid, port, accepted_at, kind) = (conn.cid, conn.port, conn.start, conn.kind);
    let (stream, session, auth, ip) = (
        conn.stream.clone(),
        conn.session.clone(),
        conn.auth.clone(),
        conn.ip.clone(),
    );
    let opts = shard.opts.borrow().clone();
    let who = format!("{ip}:{port} - cid:{}", cid.0);
    let verifier = auth.borrow().verifier.clone();
    let read_buffer = Rc::new(Cell::new(0));
    shard.conns.borrow_mut().insert(
        cid,
        super::state::ConnHandles {
            session: session.clone(),
            stream: stream.clone(),
            ip: ip.clone(),
            port,
            start: accepted_at,
            auth: auth.clone(),
            kind,
            read_buffer: read_buffer.clone(),
        },
    );

    let writer = crate::rt::spawn_local(super::writer::write_loop(
        shard.clone(),
        stream.clone(),
        cid,
        false,
        None,
    ));
    // Dropping `done` tells the timer task the connection is over.
    let (done, closed) = futures::channel::oneshot::channel::<()>();
    let timer = crate::rt::spawn_local(timer_loop(
        shard.clone(),
        session.clone(),
        auth.clone(),
        cid,
        ip.clone(),
        closed,
    ));
    let reads = Reads {
        stream: &stream,
        session: &session,
        auth: &auth,
        read_buffer: &read_buffer,
    };
    let reason = match read_loop(&shard, reads, cid, &ip, unread).await {
        ReadEnd::Closed(reason) => reason,
        ReadEnd::Move { to, unread } => {
            // The writer waits for output with nothing queued and the
            // timer sleeps: both stop here, cutting no write.
            drop(done);
            timer.detach();
            drop((writer, stream, session, auth));
            hand_over(&shard, conn, to, unread);
            return;
        }
    };
    shard.core.borrow_mut().close_conn(cid, reason);
    let reason = writer.await;
    // The timer task returns at once, told the connection closed.
    drop(done);
    timer.await;
    // nats-server's notices for the two slow-consumer closes.
    match reason {
        CloseReason::SlowConsumerPendingBytes => {
            crate::info!(
                "{who} - Slow Consumer Detected: MaxPending of {} Exceeded",
                opts.max_pending
            )
        }
        CloseReason::SlowConsumerWriteDeadline => crate::info!(
            "{who} - Slow Consumer Detected: WriteDeadline of {}s exceeded",
            opts.write_deadline.as_secs_f64()
        ),
        _ => {}
    }
    let (snapshot, pending) = {
        let core = shard.core.borrow();
        let pending = core.conn(cid).map_or(0, |c| c.pending_at_close);
        (shard.conn_snapshot(&core, cid), pending)
    };
    let counts = snapshot
        .as_ref()
        .map(|c| (c.in_msgs, c.in_bytes, c.out_msgs, c.out_bytes, pending))
        .unwrap_or_default();
    if let Some(conn) = snapshot {
        shard.shared.record_closed(crate::control::ClosedConn {
            conn,
            stop: std::time::SystemTime::now(),
            reason: reason.as_str(),
        });
    }
    shard.core.borrow_mut().remove_conn(cid);
    // Dropping the identity frees its account slot before the count is announced.
    let closed_auth = std::mem::replace(&mut *auth.borrow_mut(), ConnAuth::new(verifier.clone(), None));
    close_events(&shard, &session.borrow(), &closed_auth, cid, &ip, reason, counts);
    drop(closed_auth);
    shard.conns.borrow_mut().remove(&cid);
    forget(&shard);
    shard.publish_stats();
    shard.flush().await;
    crate::debug!(
        "{ip}:{port} - cid:{} - Client connection closed: {}",
        cid.0,
        reason.as_str()
    );
}

/// What the server says about a client in system events.
fn event_client(shard: &Shard, session: &Session, auth: &ConnAuth, cid: ConnId, ip: &str) -> ClientInfo {
    let o = session.opts();
    let start = shard
        .conns
        .borrow()
        .get(&cid)
        .map(|h| h.start)
        .unwrap_or_else(std::time::SystemTime::now);
    let (acc, user) = auth.account_and_user();
    ClientInfo {
        start: crate::timefmt::rfc3339(start),
        host: ip.to_string(),
        id: cid.0,
        acc,
        user,
        name: o.name.clone(),
        lang: o.lang.clone(),
        ver: o.version.clone(),
        rtt: session.rtt().map(|r| r.as_nanos() as u64).unwrap_or(0),
        server: shard.info.borrow().server_name.clone(),
        jwt: o.jwt.clone().unwrap_or_default(),
        kind: "Client",
        client_type: auth.kind.client_type(),
        ..Default::default()
    }
}

/// After a read: the CONNECT event when the client just connected.
fn system_work(
    shard: &Rc<Shard>,
    session: &RefCell<Session>,
    auth: &RefCell<ConnAuth>,
    cid: ConnId,
    ip: &str,
    was_connected: bool,
) {
    let session = session.borrow();
    let auth = auth.borrow();
    if !was_connected && session.is_connected() {
        if let Some(id) = &auth.identity {
            let info = event_client(shard, &session, &auth, cid, ip);
            let acc = id.account().name.clone();
            shard.emit(
                &format!("$SYS.ACCOUNT.{acc}.CONNECT"),
                crate::sys::connect_event(&shard.shared, &info),
            );
            shard.shared.announce_conns_of(acc);
        }
    }
}

/// After a close: the DISCONNECT event (or CLIENT.AUTH.ERR for a client
/// that never authenticated), a slow-consumer advisory (beyond
/// nats-server), and the account's new connection count.
fn close_events(
    shard: &Rc<Shard>,
    session: &Session,
    auth: &ConnAuth,
    cid: ConnId,
    ip: &str,
    reason: CloseReason,
    counts: (u64, u64, u64, u64, usize),
) {
    let (in_msgs, in_bytes, out_msgs, out_bytes, pending) = counts;
    let mut info = event_client(shard, session, auth, cid, ip);
    info.stop = crate::timefmt::rfc3339(std::time::SystemTime::now());
    let sent = DataStats {
        msgs: in_msgs,
        bytes: in_bytes,
    };
    let received = DataStats {
        msgs: out_msgs,
        bytes: out_bytes,
    };
    let doc = crate::sys::disconnect_event(&shard.shared, &info, sent, received, reason.as_str());
    let server_id = shard.info.borrow().server_id.clone();
    if session.is_connected() {
        shard.emit(&format!("$SYS.ACCOUNT.{}.DISCONNECT", info.acc), doc);
    } else if matches!(
        reason,
        CloseReason::AuthenticationViolation | CloseReason::AuthenticationTimeout
    ) {
        shard.emit(&format!("$SYS.SERVER.{server_id}.CLIENT.AUTH.ERR"), doc);
    }
    if matches!(
        reason,
        CloseReason::SlowConsumerPendingBytes | CloseReason::SlowConsumerWriteDeadline
    ) {
        let advisory = serde_json::json!({
            "type": "io.petrel.advisory.v1.slow_consumer",
            "id": crate::sys::event_id(),
            "timestamp": crate::timefmt::rfc3339(std::time::SystemTime::now()),
            "server": crate::sys::server_block(&shard.shared),
            "client": info,
            "pending_bytes": pending,
            "reason": reason.as_str(),
        });
        shard.emit(&format!("$SYS.SERVER.{server_id}.CLIENT.SLOW_CONSUMER"), advisory);
    }
    if session.is_connected() && !info.acc.is_empty() {
        shard.shared.announce_conns_of(info.acc.clone());
    }
}

/// The CONNECT at the front of `buf`, if the whole of it is there.
fn front_connect(session: &Session, buf: &[u8]) -> Option<ClientOpts> {
    match parse(buf, &session.limits()) {
        Ok(Parsed::Op(Op::Connect(json), _)) => ClientOpts::from_json(json),
        _ => None,
    }
}

/// Verifies the CONNECT at the front of `buf` before the session reads it:
/// on the shard when that is quick, else on the authentication workers
/// (bcrypt, an account fetch), so other connections of the shard go on
/// meanwhile and nothing else waits behind it.
async fn verify_ahead(session: &RefCell<Session>, auth: &RefCell<ConnAuth>, buf: &[u8]) {
    if session.borrow().is_connected() || auth.borrow().pending.is_some() {
        return;
    }
    let Some(opts) = front_connect(&session.borrow(), buf) else {
        return;
    };
    let (verifier, nonce, ip, cert_names, kind, opts, slow) = {
        let a = auth.borrow();
        let opts = super::host::with_cookies(opts, &a.cookies);
        let slow = a.verifier.slow_work(&a.request(&opts));
        let Some(slow) = slow else {
            let v = a.verify(&opts);
            drop(a);
            auth.borrow_mut().pending = Some(v);
            return;
        };
        (
            a.verifier.clone(),
            a.nonce.clone(),
            a.ip,
            a.cert_names.clone(),
            a.kind,
            opts,
            slow,
        )
    };
    let verdict = super::auth_work::run(slow, ip, move || {
        let req = crate::auth::verify::ConnectRequest {
            opts: &opts,
            nonce: &nonce,
            ip,
            cert_names: &cert_names,
            kind,
        };
        verifier.verify(&req, std::time::SystemTime::now())
    })
    .await;
    auth.borrow_mut().pending = Some(verdict);
}

/// What a client's read loop reads from and into.
struct Reads<'a> {
    stream: &'a Stream,
    session: &'a RefCell<Session>,
    auth: &'a RefCell<ConnAuth>,
    /// The connection's read-buffer gauge (monitoring).
    read_buffer: &'a Cell<usize>,
}

async fn read_loop(shard: &Rc<Shard>, reads: Reads<'_>, cid: ConnId, ip: &str, unread: Vec<u8>) -> ReadEnd {
    let Reads {
        stream,
        session,
        auth,
        read_buffer,
    } = reads;
    let mut gauge = super::buffer_gauge::BufferGauge::new(read_buffer);
    let mut filled = unread.len();
    let mut buf = unread;
    buf.resize(filled.max(READ_MIN), 0);
    loop {
        if filled == buf.len() {
            let need = session.borrow().bytes_needed(&buf[..filled]).unwrap_or(0);
            let grow = (buf.len() * 2).max(need).max(READ_MIN);
            buf.resize(grow, 0);
        }
        gauge.note(buf.capacity());
        let n = match read(stream, &mut buf[filled..]).await {
            Ok(0) => return ReadEnd::Closed(CloseReason::ClientClosed),
            Ok(n) => n,
            Err(_) => {
                if let Some(r) = shard.core.borrow().conn(cid).and_then(|c| c.closing()) {
                    return ReadEnd::Closed(r);
                }
                return ReadEnd::Closed(CloseReason::ReadError);
            }
        };
        crate::trace!(
            "{ip} - cid:{} - <<- {:?}",
            cid.0,
            String::from_utf8_lossy(&buf[filled..filled + n])
        );
        let full_read = filled + n == buf.len();
        filled += n;
        if auth.borrow().verifier.auth_required() {
            verify_ahead(session, auth, &buf[..filled]).await;
        }
        let result = {
            let mut core = shard.core.borrow_mut();
            if let Some(r) = core.conn(cid).and_then(|c| c.closing()) {
                return ReadEnd::Closed(r);
            }
            // Subscriptions other shards made up to now must match this read.
            core.poll_control();
            core.set_now(Instant::now());
            shard.refresh_imports(&mut core);
            let info = shard.info.borrow();
            let mut auth_state = auth.borrow_mut();
            let mut host = CoreHost {
                core: &mut core,
                cid,
                info: &info,
                client_ip: ip,
                headers_supported: info.headers,
                auth: &mut auth_state,
            };
            let was_connected = session.borrow().is_connected();
            let r = session.borrow_mut().receive(&buf[..filled], Instant::now(), &mut host);
            if core.enforce_subs_limit(cid) {
                let who = super::host::client_who(ip, cid, session.borrow().opts(), &auth_state);
                super::host::log_subs_limit(&who, &auth_state);
            }
            core.wake(cid);
            drop((core, auth_state, info));
            system_work(shard, session, auth, cid, ip, was_connected);
            shard.cut_off_slow_consumers();
            r
        };
        // Taken before the flush can wait: another task of the shard would
        // take this read's stall meanwhile.
        let stall = shard.core.borrow_mut().take_stall();
        shard.publish_stats();
        shard.note_traffic();
        shard.flush().await;
        if stall {
            super::writer::pace(shard).await;
        }
        match result {
            Ok(used) => {
                buf.copy_within(used..filled, 0);
                filled -= used;
                // Grow while reads fill the buffer, shrink back when they don't.
                if full_read && buf.len() < READ_MAX {
                    buf.resize(buf.len() * 2, 0);
                } else if !full_read && filled < READ_MIN && buf.len() > READ_MIN && n < buf.len() / 4 {
                    buf.truncate(READ_MIN.max(filled));
                    buf.shrink_to(READ_MIN.max(filled));
                } else if buf.len() > READ_MAX && filled <= READ_MIN {
                    // Grown past READ_MAX for one large message: given back
                    // as soon as it is consumed, not on the next read (an
                    // idle client would hold it for good).
                    buf.truncate(READ_MIN);
                    buf.shrink_to(READ_MIN);
                }
            }
            Err(reason) => return ReadEnd::Closed(reason),
        }
        let to = shard.core.borrow_mut().take_move(cid);
        if let Some(to) = to {
            if writer_settles(shard, cid).await {
                buf.truncate(filled);
                return ReadEnd::Move { to, unread: buf };
            }
        }
    }
}

/// How a client's read loop ended.
enum ReadEnd {
    /// The connection closes.
    Closed(CloseReason),
    /// It moves to shard `to`, between two operations (`unread` holds the
    /// front of the next).
    Move { to: ShardId, unread: Vec<u8> },
}

/// Waits, briefly, until `cid`'s writer has written everything and waits
/// for more, and it can still move: true then (the caller acts before
/// yielding again), false when it did not settle (the move is dropped).
async fn writer_settles(shard: &Shard, cid: ConnId) -> bool {
    for _ in 0..20 {
        {
            let core = shard.core.borrow();
            if core.writer_idle(cid) && core.movable(cid) {
                return true;
            }
        }
        crate::rt::timer::sleep(Duration::from_micros(100)).await;
    }
    false
}

/// Sends a client whose tasks have stopped to shard `to`: the core's
/// state, the socket (a duplicate of its descriptor; this shard's copy
/// closes with its stream), the session and what was read but not parsed.
fn hand_over(shard: &Rc<Shard>, conn: Conn, to: ShardId, unread: Vec<u8>) {
    use std::os::fd::AsRawFd;
    let cid = conn.cid;
    shard.conns.borrow_mut().remove(&cid);
    let parcel = shard.core.borrow_mut().move_out(cid, to);
    let raw = conn.stream.borrow().tcp().as_raw_fd();
    // SAFETY: `raw` is the open socket of `conn.stream`, alive for this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) }.try_clone_to_owned();
    let (Some(parcel), Ok(fd)) = (parcel, fd) else {
        // Cannot happen after `writer_settles`; if it does the client
        // is closed rather than left without tasks.
        crate::error!(
            "{}:{} - cid:{} - could not move to shard {}",
            conn.ip,
            conn.port,
            cid.0,
            to.0
        );
        shard.core.borrow_mut().remove_conn(cid);
        shutdown(&conn.stream);
        forget(shard);
        return;
    };
    let session = std::mem::replace(
        &mut *conn.session.borrow_mut(),
        Session::new(Default::default(), Instant::now(), Duration::ZERO),
    );
    let verifier = conn.auth.borrow().verifier.clone();
    let auth = std::mem::replace(&mut *conn.auth.borrow_mut(), ConnAuth::new(verifier, None));
    shard.shared.note_move(shard.id.index(), to.index());
    shard.shared.conn_counts[shard.id.index()].fetch_sub(1, Relaxed);
    shard.shared.conn_counts[to.index()].fetch_add(1, Relaxed);
    let arrival = Arrival {
        fd,
        session,
        auth,
        ip: conn.ip,
        port: conn.port,
        start: conn.start,
        kind: conn.kind,
        unread,
        generation: shard.generation.get(),
        accounts_seen: shard.account_seen.get(),
    };
    // Behind this shard's batches, which hold the client's last publishes.
    shard.send_batches();
    shard.send_move(to.index(), Box::new(parcel), Box::new(arrival));
    shard.publish_stats();
}

async fn timer_loop(
    shard: Rc<Shard>,
    session: Rc<RefCell<Session>>,
    auth: Rc<RefCell<ConnAuth>>,
    cid: ConnId,
    ip: String,
    mut closed: futures::channel::oneshot::Receiver<()>,
) {
    loop {
        let deadline = session.borrow().poll_timeout();
        let wait = deadline.saturating_duration_since(Instant::now());
        let slept = futures_lite::future::or(
            async {
                crate::rt::timer::sleep(wait.max(Duration::from_millis(1))).await;
                true
            },
            async {
                let _ = (&mut closed).await; // the sender dropped
                false
            },
        )
        .await;
        if !slept {
            return;
        }
        let mut core = shard.core.borrow_mut();
        if core.conn(cid).is_none_or(|c| c.closing().is_some()) {
            return;
        }
        let info = shard.info.borrow();
        let mut auth = auth.borrow_mut();
        let mut host = CoreHost {
            core: &mut core,
            cid,
            info: &info,
            client_ip: &ip,
            headers_supported: info.headers,
            auth: &mut auth,
        };
        let r = session.borrow_mut().handle_timeout(Instant::now(), &mut host);
        core.wake(cid);
        if let Err(reason) = r {
            core.close_conn(cid, reason);
            return;
        }
    }
}
