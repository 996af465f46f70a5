//! One route connection's protocol, as its reader sees it: the
//! handshake (CONNECT checks, the peer's INFO, registration), interest and
//! messages into the core, gossip about other servers.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::announce::{announce_pending, interest_lines, our_info};
use crate::cluster::{Cluster, Dial, Peer, Refused, RouteConn, RouteScope, Slot};
use crate::compress::Negotiated;
use crate::conf::cluster::route_url;
use crate::ids::{AccountId, ConnId};
use crate::proto::encode;
use crate::proto::errors::{CloseReason, RouteWireError};
use crate::proto::parser::ParseError;
use crate::proto::route::{parse, RouteOp, RouteParsed};
use crate::proto::route_info::{RouteConnect, RouteInfo};
use crate::shard::link_s2::{switch_on, InfoGoes, SharedS2};
use crate::shard::state::Shard;
use crate::shard::transport::Stream;

impl crate::shard::link_reader::LinkProtocol for Link<'_> {
    const PARSER: &'static str = "Router";

    fn who(&self) -> &str {
        self.who
    }

    fn parse<'b>(&self, buf: &'b [u8], max_line: usize) -> Result<RouteParsed<'b>, ParseError> {
        // A route dedicated to one account names none.
        let with_account = self.state.borrow().pinned.is_none();
        parse(buf, with_account, max_line, MAX_ROUTED)
    }

    async fn on_op(&self, op: RouteOp<'_>) -> crate::shard::link_reader::Step {
        self.handle(op).await.map_err(|(e, r)| (e.map(|e| e.text()), r))
    }

    fn link_s2(&self) -> Option<&SharedS2> {
        Some(self.s2)
    }
}

/// The first PING after a route registers (plus up to 20 %), then at most
/// this often, as nats-server paces routes.
pub(super) const FIRST_PING: Duration = Duration::from_secs(1);

/// Largest routed message taken from a peer (nats-server's own ceiling
/// for `max_payload`), so garbage cannot make the buffer grow for good.
pub(super) const MAX_ROUTED: usize = 64 * 1024 * 1024;

/// Whether a dialer tries its route again after it closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Redial {
    /// As its dialer's rules say.
    Again,
    /// Never: the route cannot be had (to itself, a pool already full, a
    /// dedicated route to a peer that does not pool).
    Never,
}

/// One route's protocol state, shared by its reader and timer.
pub(super) struct State {
    /// CONNECT received (accepted) or sent (dialed).
    pub(super) connected: bool,
    /// The peer, once its INFO registered the route: (id, name).
    pub(super) peer: Option<(String, String)>,
    pub(super) pings_out: u32,
    pub(super) next_ping: Option<Instant>,
    pub(super) auth_deadline: Option<Instant>,
    /// Account names this peer used, resolved.
    pub(super) accounts: rustc_hash::FxHashMap<Vec<u8>, Option<AccountId>>,
    /// The `export` of the peer's route permissions, from its INFO.
    pub(super) peer_export: Option<crate::proto::route_info::SubjectPermission>,
    /// The account this route is dedicated to, once registered.
    pub(super) pinned: Option<String>,
    /// This server dialed and holds its INFO back until the peer's INFO
    /// says which pool index the connection takes.
    pub(super) info_delayed: bool,
    /// The next connection of the pool is dialed when the PONG to the
    /// PING sent at registration comes (the route works, credentials
    /// included).
    pub(super) open_next: bool,
    /// Whether the dialer tries again after the connection closes.
    pub(super) redial: Redial,
    /// What compression the two sides agreed (from the peer's first INFO).
    pub(super) compression: Option<Negotiated>,
    /// When the connection was made (the first RTT for `s2_auto`).
    pub(super) started: Instant,
    /// When the last PING went out (RTT on its PONG).
    pub(super) ping_sent: Option<Instant>,
}

/// One route connection as its reader sees it.
pub(super) struct Link<'a> {
    pub(super) shard: &'a Rc<Shard>,
    pub(super) cluster: &'a Arc<Cluster>,
    pub(super) cid: ConnId,
    pub(super) ip: &'a str,
    pub(super) port: u16,
    pub(super) who: &'a str,
    pub(super) dialed: Option<&'a Dial>,
    pub(super) state: &'a Rc<RefCell<State>>,
    /// Its S2, shared with its writer.
    pub(super) s2: &'a SharedS2,
    /// Dials a server learned of by gossip.
    pub(super) learned: fn(Rc<Shard>, Dial),
}

/// What to do after an operation: go on, or close (after an optional
/// `-ERR`).
pub(super) type Step = Result<(), (Option<RouteWireError>, CloseReason)>;

impl Link<'_> {
    pub(super) async fn read_loop(&self, stream: &Stream) -> CloseReason {
        crate::shard::link_reader::read_loop(self.shard, self.cid, stream, self).await
    }

    async fn handle(&self, op: RouteOp<'_>) -> Step {
        let registered = self.state.borrow().peer.is_some();
        match op {
            RouteOp::Ping => self.shard.core.borrow_mut().send_raw(self.cid, encode::PONG),
            RouteOp::Pong => {
                let mut st = self.state.borrow_mut();
                st.pings_out = 0;
                if let Some(sent) = st.ping_sent.take() {
                    // s2_auto follows the RTT, from the next write on.
                    if self.s2.borrow().is_out() {
                        if let Some(level) = self.cluster.opts().compression.relevel(sent.elapsed()) {
                            self.s2.borrow_mut().relevel(level);
                        }
                    }
                }
                if std::mem::take(&mut st.open_next) {
                    if let Some(d) = self.dialed {
                        self.cluster.request_dial(Dial {
                            primary: false,
                            ..d.clone()
                        });
                    }
                }
            }
            RouteOp::Ok => {}
            RouteOp::Err(text) => {
                let text = String::from_utf8_lossy(text);
                if text.contains("Not possible to have a dedicated route") {
                    // The peer does not pool: its one route carries the account.
                    self.state.borrow_mut().redial = Redial::Never;
                }
                crate::error!("{} - Route Error {text}", self.who);
                return Err((None, CloseReason::ParseError));
            }
            RouteOp::Connect(json) => return self.connect(json).await,
            RouteOp::Info(json) => return self.info(json),
            _ if !registered => {}
            RouteOp::Sub {
                account,
                subject,
                queue,
                origin,
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
                if !super::perms::may_export(self.shard, subject) {
                    crate::debug!(
                        "{} - Can not export {:?}, ignoring remote subscription request",
                        self.who,
                        String::from_utf8_lossy(subject)
                    );
                    return Ok(());
                }
                let sid = route_sid(origin, account, subject, queue.map(|q| q.0));
                self.shard
                    .core
                    .borrow_mut()
                    .subscribe_routed(self.cid, acc, subject, queue, origin, &sid);
            }
            RouteOp::Unsub {
                account,
                subject,
                queue,
                origin,
            } => {
                let sid = route_sid(origin, account, subject, queue);
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
                self.shard.core.borrow_mut().publish_routed(self.cid, acc, &m);
            }
        }
        Ok(())
    }

    /// The account a peer named, resolved once per name: configured
    /// accounts only in config mode; in operator mode any account key
    /// (its JWT is fetched when a client of it connects).
    fn account(&self, name: Option<&[u8]>) -> Option<AccountId> {
        let pinned = self.state.borrow().pinned.clone();
        let name = name.unwrap_or(pinned.as_deref().map_or(b"$G", str::as_bytes));
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
                    crate::shard::auth_work::run(crate::auth::verify::SlowWork::Bcrypt, ip, move || {
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
            None if self.state.borrow().compression.is_none() => match self.negotiate(&info) {
                // Compressing: the INFO that registers comes next, in S2.
                Ok(true) => Ok(()),
                Ok(false) => self.register(info),
                Err(step) => step,
            },
            None => self.register(info),
            Some((id, _)) if id == info.server_id => {
                // An update from the peer: lame duck mode takes its
                // client URLs away.
                let urls = if info.ldm { Vec::new() } else { info.connect_urls };
                self.cluster.set_client_urls(&id, urls);
                let old = std::mem::replace(&mut self.state.borrow_mut().peer_export, info.export.clone());
                if !info.ldm && old != info.export {
                    super::announce::peer_export_changed(self.shard, self.cid, old.as_ref(), info.export.as_ref());
                }
                Ok(())
            }
            Some(_) => {
                self.gossip(info);
                Ok(())
            }
        }
    }

    /// The peer's first INFO settles compression (nats-server's order):
    /// when both sides compress, the dialer answers with an INFO sent
    /// plain and the acceptor with one sent in S2, each side's bytes are
    /// S2 from its INFO on, and the route registers on the INFO after.
    /// Returns whether compression started.
    fn negotiate(&self, info: &RouteInfo) -> Result<bool, Step> {
        let mode = self.cluster.opts().compression;
        let rtt = self.state.borrow().started.elapsed();
        let negotiated = match mode.select(&info.compression, rtt) {
            Ok(n) => n,
            Err(text) => return Err(self.refuse(RouteWireError::Compression(text), false)),
        };
        self.state.borrow_mut().compression = Some(negotiated);
        let Negotiated::S2(level) = negotiated else {
            return Ok(false);
        };
        let mut ours = our_info(self.shard, self.cluster, self.dialed.map_or(0, |d| d.gossip_mode));
        ours.compression = mode.negotiated_info_value(negotiated).into();
        ours.route_account = self.dialed.and_then(|d| d.account.clone()).unwrap_or_default();
        let mut line = Vec::new();
        encode::info(&mut line, &ours.to_json());
        let goes = if self.dialed.is_some() {
            InfoGoes::Plain
        } else {
            InfoGoes::Compressed
        };
        switch_on(&mut self.shard.core.borrow_mut(), self.cid, self.s2, level, &line, goes);
        Ok(true)
    }

    /// Sends `e` and closes (`never`: the dialer does not try again).
    fn refuse(&self, e: RouteWireError, never: bool) -> Step {
        crate::error!("{} - {}", self.who, e.text());
        if never {
            self.state.borrow_mut().redial = Redial::Never;
        }
        let reason = e.close_reason();
        Err((Some(e), reason))
    }

    /// Where the connection asks to register among the peer's routes: its
    /// pinned account (the dialer's `route_account`), the peer's only
    /// route when either side does not pool, else a pool index (the
    /// dialer takes the first free one, the accepting side the one the
    /// dialer chose).
    fn slot(&self, info: &RouteInfo) -> Result<Slot, Step> {
        let pool = self.shard.routes.pool();
        let peer_pools = info.route_pool_size > 0 && pool.size.is_some();
        let account = match self.dialed {
            Some(d) => d.account.clone(),
            None => (!info.route_account.is_empty()).then(|| info.route_account.clone()),
        };
        if self.dialed.is_some() && info.route_pool_idx != 0 {
            return Err(self.refuse(RouteWireError::PoolIndexSet(info.route_pool_idx), false));
        }
        let ours = pool.size.unwrap_or(1);
        let size = ours.max(info.route_pool_size.max(0) as usize);
        Ok(match account {
            Some(acc) if !peer_pools => return Err(self.refuse(RouteWireError::NoDedicatedRoute(acc), true)),
            Some(acc) if !pool.is_pinned(&acc) => {
                return Err(self.refuse(RouteWireError::NoRouteForAccount(acc), false))
            }
            Some(acc) => Slot::Pinned(acc),
            None if !peer_pools => Slot::NoPool,
            None if self.dialed.is_some() => Slot::FirstFree(size),
            None => {
                let idx = info.route_pool_idx;
                if idx < 0 || idx as usize >= size {
                    let e = RouteWireError::InvalidPoolIndex {
                        idx,
                        size: info.route_pool_size,
                    };
                    return Err(self.refuse(e, false));
                }
                Slot::Index(idx as usize)
            }
        })
    }

    /// The peer's first INFO: checks, registration, our interest, gossip.
    fn register(&self, info: RouteInfo) -> Step {
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
            self.state.borrow_mut().redial = Redial::Never;
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
        let slot = match self.slot(&info) {
            Ok(s) => s,
            Err(step) => return step,
        };
        let compression = self.state.borrow().compression;
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
            pool_size: info.route_pool_size.max(0) as usize,
            ..Default::default()
        };
        let conn = RouteConn {
            cid: self.cid,
            shard: self.shard.id,
            did_solicit: self.dialed.is_some(),
            is_configured: self.dialed.is_some_and(|d| d.configured),
            ip: self.ip.to_string(),
            port: self.port,
            start: SystemTime::now(),
            scope: RouteScope::NoPool,
            compression: compression.map_or("", Negotiated::name).to_string(),
        };
        let (scope, first) = match self.cluster.register(&info.server_id, peer, conn, slot.clone()) {
            Ok(r) => r,
            Err(Refused::PoolFull) => {
                crate::debug!(
                    "{} - Route pool size reached, closing extra connection to {:?}",
                    self.who,
                    info.server_id
                );
                self.state.borrow_mut().redial = Redial::Never;
                return Err((None, CloseReason::DuplicateRoute));
            }
            Err(Refused::Duplicate) => {
                crate::debug!("{} - Detected duplicate remote route {:?}", self.who, info.server_id);
                if !matches!(slot, Slot::Index(_)) {
                    self.state.borrow_mut().redial = Redial::Never;
                }
                return Err((None, CloseReason::DuplicateRoute));
            }
            Err(Refused::ToSelf) => return Err((None, CloseReason::DuplicateRoute)),
        };
        if let Some(d) = self.dialed {
            self.cluster.set_url_peer(&d.text, &info.server_id);
        }
        let pinned = match &scope {
            RouteScope::Pinned(acc) => {
                crate::debug!(
                    "{} - Registering remote route {:?} for account {acc:?}",
                    self.who,
                    info.server_id
                );
                Some(acc.clone())
            }
            _ => {
                crate::debug!("{} - Registering remote route {:?}", self.who, info.server_id);
                None
            }
        };
        crate::info!("{} - Route connection created", self.who);
        let delayed = {
            let mut st = self.state.borrow_mut();
            st.peer = Some((info.server_id.clone(), info.server_name.clone()));
            // Trace events name a route by its remote server.
            self.shard.core.borrow_mut().set_conn_name(self.cid, &info.server_name);
            st.peer_export = info.export.clone();
            st.pinned = pinned.clone();
            st.next_ping = Some(Instant::now() + FIRST_PING + FIRST_PING.mul_f64(fastrand::f64() * 0.2));
            std::mem::take(&mut st.info_delayed)
        };
        if delayed {
            // The INFO held back, with the pool index this connection took.
            let mut ours = our_info(self.shard, self.cluster, self.dialed.map_or(0, |d| d.gossip_mode));
            if let RouteScope::Pooled(i) = scope {
                ours.route_pool_idx = i as i32;
            }
            ours.route_account = pinned.clone().unwrap_or_default();
            if let Some(n) = compression {
                ours.compression = self.cluster.opts().compression.negotiated_info_value(n).into();
            }
            let mut line = Vec::new();
            encode::info(&mut line, &ours.to_json());
            self.shard.core.borrow_mut().send_raw(self.cid, &line);
        }
        // Changes already counted go to the routes registered before this
        // one; this one gets the whole of it.
        announce_pending(self.shard);
        self.shard
            .routes
            .set_peer(self.cid, info.server_id.clone(), scope.clone());
        if pinned.is_some() {
            self.shard.core.borrow_mut().set_route_pinned(self.cid);
        }
        let origins = crate::core::LeafOrigins {
            lnoc: info.lnoc,
            lnocu: info.lnocu,
        };
        self.shard.core.borrow_mut().set_route_origins(self.cid, origins);
        self.shard.core.borrow_mut().set_peer_protocol(self.cid, info.proto);
        super::perms::guard_route(self.shard, self.cid);
        let all = self.shard.core.borrow().route_interest();
        let out = interest_lines(self.shard, &all, &scope, origins);
        if !out.is_empty() {
            self.shard.core.borrow_mut().send_raw(self.cid, &out);
            crate::debug!("{} - Sent local subscriptions to route", self.who);
        }
        if let (Some(d), RouteScope::Pooled(_)) = (self.dialed, &scope) {
            if self.cluster.need(d, &self.shard.routes.pool()) == crate::cluster::Need::Dial {
                // Not full yet: the next connection once this one answers.
                self.state.borrow_mut().open_next = true;
                self.shard.core.borrow_mut().send_raw(self.cid, encode::PING);
            }
        }
        if first || pinned.is_some() {
            self.forward_gossip(info, ip, pinned);
        }
        Ok(())
    }

    /// Tells the other peers about this one, so they dial it (nats-server's
    /// gossip rules: not what a gossip-learned dial found, not what the
    /// peer asked to keep to itself); a pinned route's INFO goes to the
    /// peers' routes for that account.
    fn forward_gossip(&self, info: RouteInfo, ip: String, pinned: Option<String>) {
        let learned = self.dialed.is_some_and(|d| !d.configured && d.gossip_mode != 2);
        if info.gossip_mode == 1 || learned {
            return;
        }
        let mode = match self.dialed {
            Some(d) if d.configured => 2,
            None => 1,
            Some(_) => 0,
        };
        let forwarded = RouteInfo {
            nonce: String::new(),
            ip,
            gossip_mode: mode,
            route_pool_idx: 0,
            route_account: pinned.clone().unwrap_or_default(),
            ..info
        };
        let mut line = b"INFO ".to_vec();
        line.extend_from_slice(&forwarded.to_json());
        line.extend_from_slice(b"\r\n");
        match pinned {
            Some(acc) => self.cluster.announce_pinned(&forwarded.server_id, &acc, line),
            None => self.cluster.announce(Some(&forwarded.server_id), line),
        }
    }

    /// An INFO about another server: dial it unless it is this one, known
    /// already, or a configured route (dialed anyway). One naming an
    /// account asks for that account's route; a peer that does not pool
    /// never sends those, so what it tells of gets every pinned route too.
    fn gossip(&self, info: RouteInfo) {
        if info.server_id == self.cluster.server_id {
            return;
        }
        let pool = self.shard.routes.pool();
        let account = (!info.route_account.is_empty()).then(|| info.route_account.clone());
        if let Some(acc) = &account {
            if pool.size.is_none() || self.cluster.is_connected(&info.server_id, Some(acc)) {
                return;
            }
        } else if self.cluster.is_connected(&info.server_id, None) {
            return;
        }
        let text = info.dial_url();
        let Ok(url) = route_url(&text) else { return };
        if self.cluster.is_configured(&url.host, url.port) {
            return;
        }
        let d = Dial {
            account: account.clone(),
            ..Dial::new(url, text, false, info.gossip_mode)
        };
        let from_no_pool = self.shard.routes.scope(self.cid) == Some(RouteScope::NoPool);
        if account.is_none() && from_no_pool {
            self.cluster.request_pinned(&d, &pool.pinned);
        }
        (self.learned)(self.shard.clone(), d);
    }
}

/// The sid a route subscription is kept under: account, subject and
/// queue, so `RS-` finds what `RS+` made (and a repeated `RS+` with a new
/// queue weight changes nothing).
pub(super) fn route_sid(
    origin: Option<&[u8]>,
    account: Option<&[u8]>,
    subject: &[u8],
    queue: Option<&[u8]>,
) -> Vec<u8> {
    // Interest a peer holds for a leaf cluster (`LS+ <origin>`) is keyed
    // apart from its own (`RS+`) and by origin, as nats-server keys it
    // (`L <origin> ...`, `R ...`): one `LS-` must not take the rest away.
    let mut sid = match origin {
        Some(o) => [b"L ", o, b" "].concat(),
        None => b"R ".to_vec(),
    };
    sid.extend_from_slice(account.unwrap_or(b"$G"));
    sid.push(b' ');
    sid.extend_from_slice(subject);
    if let Some(q) = queue {
        sid.push(b' ');
        sid.extend_from_slice(q);
    }
    sid
}
