//! One route connection's protocol, as its reader sees it: the
//! handshake (CONNECT checks, the peer's INFO, registration), interest and
//! messages into the core, gossip about other servers.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::announce::{announce_pending, interest_lines};
use crate::cluster::{Cluster, Dial, Peer, Refused, RouteConn};
use crate::conf::cluster::route_url;
use crate::ids::{AccountId, ConnId};
use crate::proto::encode;
use crate::proto::errors::{CloseReason, RouteWireError};
use crate::proto::parser::ParseError;
use crate::proto::route::{parse, RouteOp, RouteParsed};
use crate::proto::route_info::{RouteConnect, RouteInfo};
use crate::shard::state::Shard;
use crate::shard::transport::Stream;

impl crate::shard::link_reader::LinkProtocol for Link<'_> {
    const PARSER: &'static str = "Router";

    fn who(&self) -> &str {
        self.who
    }

    fn parse<'b>(&self, buf: &'b [u8], max_line: usize) -> Result<RouteParsed<'b>, ParseError> {
        parse(buf, true, max_line, MAX_ROUTED)
    }

    async fn on_op(&self, op: RouteOp<'_>) -> crate::shard::link_reader::Step {
        self.handle(op).await.map_err(|(e, r)| (e.map(|e| e.text()), r))
    }
}

/// The first PING after a route registers (plus up to 20 %), then at most
/// this often, as nats-server paces routes.
pub(super) const FIRST_PING: Duration = Duration::from_secs(1);

/// Largest routed message taken from a peer (nats-server's own ceiling
/// for `max_payload`), so garbage cannot make the buffer grow for good.
pub(super) const MAX_ROUTED: usize = 64 * 1024 * 1024;

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
                if !super::perms::may_export(self.shard, subject) {
                    crate::debug!(
                        "{} - Can not export {:?}, ignoring remote subscription request",
                        self.who,
                        String::from_utf8_lossy(subject)
                    );
                    return Ok(());
                }
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
                self.shard.core.borrow_mut().publish_routed(
                    self.cid,
                    acc,
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
            st.peer_export = info.export.clone();
            st.next_ping = Some(Instant::now() + FIRST_PING + FIRST_PING.mul_f64(fastrand::f64() * 0.2));
        }
        // Changes already counted go to the routes registered before this
        // one; this one gets the whole of it.
        announce_pending(self.shard);
        self.shard.routes.set_peer(self.cid, info.server_id.clone());
        super::perms::guard_route(self.shard, self.cid);
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
        (self.learned)(self.shard.clone(), d);
    }
}

/// The sid a route subscription is kept under: account, subject and
/// queue, so `RS-` finds what `RS+` made (and a repeated `RS+` with a new
/// queue weight changes nothing).
pub(super) fn route_sid(account: Option<&[u8]>, subject: &[u8], queue: Option<&[u8]>) -> Vec<u8> {
    let mut sid = account.unwrap_or(b"$G").to_vec();
    sid.push(b' ');
    sid.extend_from_slice(subject);
    if let Some(q) = queue {
        sid.push(b' ');
        sid.extend_from_slice(q);
    }
    sid
}
