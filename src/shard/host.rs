//! The bridge between one connection's [`Session`](crate::proto::session::Session)
//! and its shard's [`ShardCore`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::auth::verify::{AuthError, ConnectRequest, Identity, Verifier};
use crate::core::ShardCore;
use crate::ids::ConnId;
use crate::proto::connect::ClientOpts;
use crate::proto::errors::Violation;
use crate::proto::errors::WireError;
use crate::proto::info::ServerInfo;
use crate::proto::session::{ConnectGrant, LimitRefusal, Publish, Routed, SessionHost, TraceStart};
use crate::proto::trace::{self, TraceAsk};

/// A connection's authentication state: the verifier, what the client was
/// told (nonce) and is (address), a verdict computed ahead of the CONNECT
/// (off the shard when slow), and the identity once accepted.
pub struct ConnAuth {
    /// The server's verifier.
    pub verifier: Arc<Verifier>,
    /// The nonce sent in INFO ("" when none).
    pub nonce: String,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The client's port (for log lines, `ip:port` as nats-server writes).
    pub port: u16,
    /// A verdict for the CONNECT at the front of the input, computed before
    /// the session reads it.
    pub pending: Option<Result<Identity, AuthError>>,
    /// The identity of the accepted client.
    pub identity: Option<Identity>,
    /// Names from the client certificate (TLS `verify_and_map`).
    pub cert_names: Vec<String>,
    /// The listener the client came through.
    pub kind: crate::ids::ConnKind,
    /// Credentials from WebSocket cookies, used where CONNECT has none.
    pub cookies: crate::ws::handshake::CookieCredentials,
    /// Wall-clock deadline → monotonic deadline offset, for expiry.
    pub clock: (SystemTime, Instant),
}

impl ConnAuth {
    /// Fresh state for a new connection.
    pub fn new(verifier: Arc<Verifier>, ip: Option<IpAddr>) -> ConnAuth {
        let nonce = if verifier.needs_nonce() {
            new_nonce()
        } else {
            String::new()
        };
        ConnAuth {
            verifier,
            nonce,
            ip,
            port: 0,
            pending: None,
            identity: None,
            cert_names: Vec::new(),
            kind: crate::ids::ConnKind::Standard,
            cookies: Default::default(),
            clock: (SystemTime::now(), Instant::now()),
        }
    }

    /// The identity's account and user names ("" before CONNECT).
    pub fn account_and_user(&self) -> (String, String) {
        match &self.identity {
            Some(id) => (id.account().name.clone(), id.user().to_string()),
            None => (String::new(), String::new()),
        }
    }

    /// State for a server without authentication (tests, fuzzing).
    pub fn open() -> ConnAuth {
        let v = Verifier::new(&Default::default()).expect("the open configuration is valid");
        ConnAuth::new(Arc::new(v), None)
    }

    /// Verifies `opts` now, on this thread.
    pub fn verify(&self, opts: &ClientOpts) -> Result<Identity, AuthError> {
        // Only WebSocket clients with credential cookies pay for a copy.
        let filled;
        let opts = if self.cookies.is_empty() {
            opts
        } else {
            filled = with_cookies(opts.clone(), &self.cookies);
            &filled
        };
        self.verifier.verify(&self.request(opts), SystemTime::now())
    }

    /// The verifier's view of a CONNECT with `opts` on this connection.
    pub fn request<'a>(&'a self, opts: &'a ClientOpts) -> ConnectRequest<'a> {
        ConnectRequest {
            opts,
            nonce: &self.nonce,
            ip: self.ip,
            cert_names: &self.cert_names,
            kind: self.kind,
        }
    }
}

/// `opts` with the WebSocket cookies' credentials filling what CONNECT left
/// out, as nats-server does.
pub fn with_cookies(mut o: ClientOpts, c: &crate::ws::handshake::CookieCredentials) -> ClientOpts {
    if o.jwt.is_none() {
        o.jwt = c.jwt.clone();
    }
    if o.user.is_none() {
        o.user = c.user.clone();
    }
    if o.pass.is_none() {
        o.pass = c.pass.clone();
    }
    if o.auth_token.is_none() {
        o.auth_token = c.token.clone();
    }
    o
}

/// A nonce as nats-server makes them: 11 random bytes, base64url without padding.
pub fn new_nonce() -> String {
    use base64::Engine;
    let bytes: [u8; 11] = std::array::from_fn(|_| fastrand::u8(..));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A [`SessionHost`] for connection `cid` on `core`.
pub struct CoreHost<'a> {
    /// The shard's core.
    pub core: &'a mut ShardCore,
    /// The connection.
    pub cid: ConnId,
    /// INFO fields shared by the server's connections.
    pub info: &'a ServerInfo,
    /// The client's address, for INFO.
    pub client_ip: &'a str,
    /// Whether the server supports headers.
    pub headers_supported: bool,
    /// The connection's authentication state.
    pub auth: &'a mut ConnAuth,
}

/// The INFO a connection gets: the server's fields plus its own.
pub fn client_info(template: &ServerInfo, cid: ConnId, client_ip: &str) -> ServerInfo {
    ServerInfo {
        client_id: cid.0,
        client_ip: client_ip.to_string(),
        ..template.clone()
    }
}

/// The credential a CONNECT presented, the first of these that is set,
/// as nats-server picks it for its log lines.
enum Claimed<'a> {
    Nkey(&'a str),
    User(&'a str),
    /// A JWT's subject, read unchecked.
    Jwt(String),
    Token,
    Nothing,
}

fn claimed(opts: &ClientOpts) -> Claimed<'_> {
    fn set(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|s| !s.is_empty())
    }
    if let Some(n) = set(&opts.nkey) {
        Claimed::Nkey(n)
    } else if let Some(u) = set(&opts.user) {
        Claimed::User(u)
    } else if let Some(j) = set(&opts.jwt) {
        Claimed::Jwt(crate::auth::jwt::peek_subject(j).unwrap_or_default())
    } else if set(&opts.auth_token).is_some() {
        Claimed::Token
    } else {
        Claimed::Nothing
    }
}

/// Who a refused client claimed to be, as nats-server's authentication
/// error line names it: ` - Nkey "U..."`, ` - User "name"`, ` - JWT User
/// "U..."`, ` - Token "[REDACTED]"`, or nothing without credentials.
fn auth_user(opts: &ClientOpts) -> String {
    match claimed(opts) {
        Claimed::Nkey(n) => format!(" - Nkey {n:?}"),
        Claimed::User(u) => format!(" - User {u:?}"),
        Claimed::Jwt(sub) => format!(" - JWT User {sub:?}"),
        Claimed::Token => " - Token \"[REDACTED]\"".to_string(),
        Claimed::Nothing => String::new(),
    }
}

impl SessionHost for CoreHost<'_> {
    fn out(&mut self) -> &mut Vec<u8> {
        self.core
            .conn_mut(self.cid)
            .expect("connection is registered while its session runs")
            .out
            .tail()
    }

    fn connect(&mut self, opts: &ClientOpts) -> Result<ConnectGrant, WireError> {
        let verdict = match self.auth.pending.take() {
            Some(v) => v,
            None => self.auth.verify(opts),
        };
        let id = match verdict {
            Ok(id) => id,
            Err(e) => {
                let (ip, port, cid) = (self.client_ip, self.auth.port, self.cid.0);
                crate::debug!("{ip}:{port} - cid:{cid} - {e}");
                if matches!(e, AuthError::MaxAccountConnections) {
                    // nats-server's words for it, rate-limited as there.
                    let text = "maximum account active connections exceeded";
                    if crate::logging::rate_limited(text, std::time::Instant::now()) {
                        crate::error!("{ip}:{port} - cid:{cid} - {text}");
                    }
                } else {
                    crate::error!("{ip}:{port} - cid:{cid} - authentication error{}", auth_user(opts));
                }
                return Err(e.wire());
            }
        };
        self.core
            .set_conn_opts(self.cid, opts.echo, opts.headers && self.headers_supported);
        self.core.set_conn_name(self.cid, &opts.name);
        self.core.set_conn_detail(
            self.cid,
            Arc::new(crate::core::request_info::ClientDetail {
                start: crate::timefmt::rfc3339(self.auth.clock.0),
                host: self.client_ip.to_string(),
                account: id.account().name.clone(),
                user: id.user().to_string(),
                name: opts.name.clone(),
                lang: opts.lang.clone(),
                version: opts.version.clone(),
                jwt: opts.jwt.clone().unwrap_or_default(),
                kind: "Client",
                client_type: self.auth.kind.client_type(),
            }),
        );
        self.core.set_conn_identity(
            self.cid,
            id.account().id,
            id.permissions().cloned(),
            id.max_subscriptions(),
        );
        self.core.check_subs_limit(self.cid);
        let (wall, mono) = self.auth.clock;
        let at = |e: SystemTime| mono + e.duration_since(wall).unwrap_or_default();
        let grant = ConnectGrant {
            max_payload: id.max_payload(),
            expires: id.expires().map(at),
            account_expires: id.account_expires().map(at),
        };
        self.auth.identity = Some(id);
        Ok(grant)
    }

    fn map_subject(&mut self, subject: &[u8]) -> Option<Vec<u8>> {
        self.core.map_subject(self.cid, subject)
    }

    fn may_publish(&mut self, subject: &[u8]) -> bool {
        self.core.may_publish(self.cid, subject)
    }

    fn publish(&mut self, msg: &Publish<'_>) -> Routed {
        self.core
            .publish(self.cid, msg.subject, msg.reply, msg.header_len, msg.message)
    }

    fn subscribe(&mut self, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) -> Result<(), WireError> {
        self.core.subscribe(self.cid, subject, queue, sid)
    }

    fn unsubscribe(&mut self, sid: &[u8], max: Option<u64>) {
        self.core.unsubscribe(self.cid, sid, max)
    }

    fn no_responders(&mut self, reply: &[u8], subject: &[u8]) {
        self.core.no_responders(self.cid, reply, subject)
    }

    fn pong(&mut self, then: Option<Vec<u8>>) {
        self.core.pong(self.cid, then)
    }

    fn connect_info_json(&mut self) -> Vec<u8> {
        let mut info = client_info(self.info, self.cid, self.client_ip);
        info.connect_info = true;
        match &self.auth.identity {
            Some(id) => {
                info.remote_account = id.account().name.clone();
                info.acc_is_sys = id.account().is_system;
            }
            None => info.remote_account = crate::auth::config::GLOBAL_ACCOUNT.to_string(),
        }
        info.to_json()
    }

    fn limit_refused(&mut self, opts: &ClientOpts, what: LimitRefusal) {
        let who = client_who(self.client_ip, self.cid, opts, self.auth);
        match what {
            LimitRefusal::Payload { size, max } => {
                crate::error!("{who} - maximum payload exceeded: {size} vs {max}")
            }
            LimitRefusal::Subscriptions => log_subs_limit(&who, self.auth),
        }
    }

    fn trace_begin(&mut self, opts: &ClientOpts, hdr: &[u8], subject: &[u8], size: usize) -> TraceStart {
        let TraceAsk::Trace(mut req) = trace::read(hdr) else {
            return TraceStart::Untraced;
        };
        let account = self
            .core
            .conn(self.cid)
            .map_or(crate::ids::AccountId::GLOBAL, |c| c.account());
        if req.external {
            // A sampled `traceparent` alone: the account's own destination,
            // for the sampled share of messages; the others are marked so
            // that no server further on traces them.
            let Some((dest, sampling)) = self.core.account_trace_dest(account) else {
                return TraceStart::Untraced;
            };
            if sampling > 0 && sampling < 100 && fastrand::u8(..100) > sampling {
                return TraceStart::Disabled;
            }
            req.dest = dest;
        }
        let who = || client_who(self.client_ip, self.cid, opts, self.auth);
        if let Some(v) = &req.origin_account {
            crate::error!(
                "{} - Message tracing disabled because of header {:?} with value={v:?}",
                who(),
                trace::TRACE_ORIGIN_ACCOUNT
            );
            return if req.only {
                TraceStart::Skip
            } else {
                TraceStart::Disabled
            };
        }
        if !crate::subject::is_valid_literal_subject(req.dest.as_bytes()) {
            crate::error!(
                "{} - Destination {:?} is not valid, won't be able to trace events",
                who(),
                req.dest
            );
            return if req.only {
                TraceStart::Skip
            } else {
                TraceStart::Untraced
            };
        }
        if !self.core.may_publish(self.cid, req.dest.as_bytes()) {
            let dest = req.dest.clone();
            self.violation(opts, Violation::Publish(dest.as_bytes()), None);
            return TraceStart::Skip;
        }
        self.core.trace_begin(self.cid, account, req, subject, size);
        TraceStart::Traced
    }

    fn trace_end(&mut self) {
        self.core.trace_end();
    }

    fn rtt_measured(&mut self, rtt: std::time::Duration) {
        self.core.set_conn_rtt(self.cid, rtt);
    }

    fn violation(&mut self, opts: &ClientOpts, v: Violation<'_>, sid: Option<&[u8]>) {
        if let Violation::Publish(subject) = v {
            self.core.trace_ingress_error(format!(
                "Permissions Violation for Publish to {:?}",
                String::from_utf8_lossy(subject)
            ));
        }
        crate::proto::encode::violation(self.out(), v);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let what = match (v, sid) {
            (Violation::Publish(s), _) => format!("Publish Violation - Subject {:?}", text(s)),
            (Violation::Subscribe(s, None), Some(sid)) => {
                format!("Subscription Violation - Subject {:?}, SID {}", text(s), text(sid))
            }
            (Violation::Subscribe(s, Some(q)), Some(sid)) => format!(
                "Subscription Violation - Subject {:?}, Queue: {:?}, SID {}",
                text(s),
                text(q),
                text(sid)
            ),
            _ => return,
        };
        crate::error!("{} - {what}", client_who(self.client_ip, self.cid, opts, self.auth));
    }
}

/// `maximum subscriptions exceeded`, logged as nats-server logs it: at
/// most every 2 s per account, however many clients hit the limit.
pub fn log_subs_limit(who: &str, auth: &ConnAuth) {
    let account = auth
        .identity
        .as_ref()
        .map(|id| id.account().name.clone())
        .unwrap_or_default();
    let key = format!("maximum subscriptions exceeded in {account}");
    if crate::logging::rate_limited_for(&key, std::time::Duration::from_secs(2), std::time::Instant::now()) {
        crate::error!("{who} - maximum subscriptions exceeded");
    }
}

/// How a connected client's log lines start, as nats-server's:
/// `<ip>:<port> - cid:N` and its [`client_tag`].
pub(super) fn client_who(ip: &str, cid: ConnId, opts: &ClientOpts, auth: &ConnAuth) -> String {
    format!("{ip}:{} - cid:{}{}", auth.port, cid.0, client_tag(opts, auth))
}

/// The part of a client's log lines nats-server adds once it connected:
/// ` - "v<version>:<lang>:<name>"` (the parts it sent) and ` -
/// "<account>/<user label>"` when it authenticated with credentials.
fn client_tag(opts: &ClientOpts, auth: &ConnAuth) -> String {
    let ncs = [
        (!opts.version.is_empty()).then(|| format!("v{}", opts.version)),
        (!opts.lang.is_empty()).then(|| opts.lang.clone()),
        (!opts.name.is_empty()).then(|| opts.name.clone()),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(":");
    let user = match claimed(opts) {
        Claimed::Nkey(n) => Some(format!("nkey:{n}")),
        Claimed::User(u) => Some(format!("user:{u}")),
        Claimed::Jwt(sub) => Some(format!("jwt:{sub}")),
        Claimed::Token => Some("token".to_string()),
        Claimed::Nothing => None,
    };
    let acs = match (auth.identity.as_ref(), user) {
        (Some(id), Some(u)) => format!("{}/{u}", id.account().name),
        _ => String::new(),
    };
    let mut out = String::new();
    for part in [ncs, acs] {
        if !part.is_empty() {
            out.push_str(&format!(" - {part:?}"));
        }
    }
    out
}
