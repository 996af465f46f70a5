//! Responses to service requests that crossed accounts, held to the
//! export's response rules as nats-server holds them.
//!
//! A request through a service import gets a new reply subject in this
//! shard's reply space, `_R_.<shard token>.<request token>`, and the
//! shard keeps what the token stands for: the importer, the original reply
//! subject and the rules. The shard's response link subscribes to
//! `_R_.<shard token>.*` in every exporting account; the subscriptions are
//! broadcast like any other (and announced to routes and leaf nodes), so a
//! response published on any shard, or on another server, is delivered
//! here. A `singleton` request takes its first response only; `stream`
//! and `chunked` take any number while they keep coming within the
//! threshold; an empty message ends a request of any type; a response
//! later than the threshold (after the request, or after the latest
//! response) is dropped, as is one whose token is unknown, so a client of
//! the exporter cannot answer into the importer unasked.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::latency::{Failure, LatencyReport, Measured, Tracking, MEASURED_PREFIX, TRACKED_SUFFIX};
use super::{Msg, ShardCore};
use crate::auth::config::{ResponseRule, ResponseType};
use crate::ids::{AccountId, ConnId, LinkKind, BASE62};

/// Prefix of the reply subjects service requests get.
pub const REPLY_PREFIX: &[u8] = b"_R_.";

/// The link's subscription to other servers' measurements (the others
/// are named by account id).
const MEASURED_SID: &[u8] = b"m2";

/// How often expired requests are let go of.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A shard's reply space and the requests waiting in it.
#[derive(Default)]
pub(super) struct Responses {
    /// The response link: its subscriptions catch responses.
    link: Option<ConnId>,
    /// `_R_.<shard token>.`
    space: Vec<u8>,
    /// The exporting accounts the link subscribes in.
    subscribed: Vec<AccountId>,
    /// Requests by token.
    pending: FxHashMap<u64, Pending>,
    /// Responses delivered to the link, served once the message that
    /// brought them is routed (routing does not nest).
    pub(super) arrived: Vec<Arrived>,
    /// Reports of measured requests answered from another server, waiting
    /// for that server's measurement until their deadline (`latency.rs`).
    awaiting: FxHashMap<u64, (LatencyReport, Instant)>,
    /// Whether the link subscribes to other servers' measurements.
    measured_sub: bool,
    next_sweep: Option<Instant>,
}

/// A request waiting for its response(s).
struct Pending {
    importer: AccountId,
    exporter: AccountId,
    reply: Box<[u8]>,
    rule: ResponseRule,
    /// When the request, or its latest response, went through.
    last: Instant,
    /// When the request went through.
    requested: Instant,
    /// A measured request (`latency.rs`).
    tracking: Option<Tracking>,
}

/// What the link caught: a response in the reply space, or another
/// server's measurement of one.
pub(super) enum Arrived {
    Response(Response),
    Measured(u64, Measured),
}

/// A response caught in the reply space.
pub(super) struct Response {
    exporter: AccountId,
    token: Option<u64>,
    header_len: Option<usize>,
    message: Vec<u8>,
    /// The responder's `ClientInfo` JSON (a measured request's response).
    responder: Option<Vec<u8>>,
}

impl Responses {
    /// Whether `conn` is the response link.
    #[inline]
    pub(super) fn is_link(&self, conn: ConnId) -> bool {
        self.link == Some(conn)
    }

    /// Keeps a response the link's subscription in `exporter` received,
    /// or another server's measurement of one in this shard's space.
    pub(super) fn catch(&mut self, exporter: AccountId, msg: &Msg<'_>) {
        if msg.subject.starts_with(MEASURED_PREFIX) {
            let body = &msg.message[msg.header_len.unwrap_or(0).min(msg.message.len())..];
            if let Some((req_id, m)) = Measured::parse(body) {
                if let Some(token) = self.token_of(&req_id) {
                    self.arrived.push(Arrived::Measured(token, m));
                }
            }
            return;
        }
        let token = self.token_of(msg.subject);
        self.arrived.push(Arrived::Response(Response {
            exporter,
            token,
            header_len: msg.header_len,
            message: msg.message.to_vec(),
            responder: msg.responder.map(<[u8]>::to_vec),
        }));
    }

    /// The token of a reply subject in this shard's space: `<token>`, or
    /// `<token>.<server hash>.T` for a measured request.
    fn token_of(&self, reply: &[u8]) -> Option<u64> {
        let rest = reply.strip_prefix(&self.space[..])?;
        let end = rest.iter().position(|&b| b == b'.').unwrap_or(rest.len());
        decode(&rest[..end])
    }

    /// Requests waiting for a response.
    pub(super) fn waiting(&self) -> usize {
        self.pending.len()
    }
}

fn encode(mut n: u64, out: &mut Vec<u8>) {
    loop {
        out.push(BASE62[(n % 62) as usize]);
        n /= 62;
        if n == 0 {
            break;
        }
    }
}

fn decode(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 11 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in token.iter().rev() {
        let d = BASE62.iter().position(|&x| x == c)? as u64;
        n = n.checked_mul(62)?.checked_add(d)?;
    }
    Some(n)
}

impl ShardCore {
    /// Registers this shard's response link `cid` (a [`LinkKind::System`]
    /// link) with a reply space of its own, and subscribes it in every
    /// exporting account; [`Self::set_imports`] keeps the subscriptions
    /// in step with the imports.
    pub fn add_response_link(&mut self, cid: ConnId) {
        let account = self.system_account.unwrap_or(AccountId::GLOBAL);
        self.add_link(cid, LinkKind::System, account);
        let mut space = REPLY_PREFIX.to_vec();
        encode(self.rng.u64(..), &mut space);
        space.push(b'.');
        self.responses.space = space;
        self.responses.link = Some(cid);
        self.sync_reply_subs();
    }

    /// Subscribes the response link in the accounts whose services are
    /// now imported, and out of those no longer.
    pub(super) fn sync_reply_subs(&mut self) {
        let Some(cid) = self.responses.link else {
            return;
        };
        // Other servers' measurements come in the system account.
        let measured = self.imports.measures_latency() && self.system_account.is_some();
        if measured != self.responses.measured_sub {
            let sys = self.system_account.unwrap_or(AccountId::GLOBAL);
            if measured {
                let mut subject = MEASURED_PREFIX.to_vec();
                subject.extend_from_slice(&self.server_hash);
                let _ = self.subscribe_in(cid, Some(sys), &subject, None, MEASURED_SID);
            } else {
                self.unsubscribe(cid, MEASURED_SID, None);
            }
            self.responses.measured_sub = measured;
        }
        let mut wanted = self.imports.reply_exporters();
        // In a cluster, clients' account requests are answered through the
        // system account by every server (`account_requests.rs`).
        if let Some(sys) = self.system_account.filter(|_| self.routes.clustered) {
            if !wanted.contains(&sys) {
                wanted.push(sys);
            }
        }
        let mut subject = self.responses.space.clone();
        // `>`: a measured request's reply subject ends in `.T`.
        subject.push(b'>');
        let sid = |a: AccountId| itoa::Buffer::new().format(a.0).as_bytes().to_vec();
        let had = std::mem::take(&mut self.responses.subscribed);
        for &gone in had.iter().filter(|a| !wanted.contains(a)) {
            self.unsubscribe(cid, &sid(gone), None);
        }
        for &new in wanted.iter().filter(|a| !had.contains(a)) {
            // A server link has neither permissions nor a limit.
            let _ = self.subscribe_in(cid, Some(new), &subject, None, &sid(new));
        }
        self.responses.subscribed = wanted;
    }

    /// The reply subject the exporter sees for a request `importer` sent
    /// to `reply` under `rule` (measured when `tracking`), and the token
    /// that stands for it (`None` without a response link: the request
    /// goes without a reply).
    pub(super) fn hold_request(
        &mut self,
        importer: AccountId,
        exporter: AccountId,
        reply: &[u8],
        rule: ResponseRule,
        tracking: Option<Tracking>,
    ) -> Option<(Vec<u8>, u64)> {
        self.responses.link?;
        let token = loop {
            let t = self.rng.u64(..);
            if !self.responses.pending.contains_key(&t) {
                break t;
            }
        };
        let mut subject = Vec::with_capacity(self.responses.space.len() + 11);
        subject.extend_from_slice(&self.responses.space);
        encode(token, &mut subject);
        if tracking.is_some() {
            subject.push(b'.');
            subject.extend_from_slice(&self.server_hash);
            subject.extend_from_slice(TRACKED_SUFFIX);
        }
        self.responses.pending.insert(
            token,
            Pending {
                importer,
                exporter,
                reply: reply.into(),
                rule,
                last: self.now,
                requested: self.now,
                tracking,
            },
        );
        Some((subject, token))
    }

    /// Lets go of a request nobody received (a measured one is reported
    /// as 503).
    pub(super) fn drop_request(&mut self, token: u64) {
        if let Some(p) = self.responses.pending.remove(&token) {
            if let Some(t) = p.tracking {
                self.report_failed(p.exporter, t, p.requested, Failure::Unavailable);
            }
        }
    }

    /// Sends the responses the link caught on to their requesters, under
    /// their requests' rules. Called where a routing entry point ends.
    #[inline]
    pub(super) fn serve_responses(&mut self) {
        if !self.responses.arrived.is_empty() {
            self.serve_arrived();
        }
    }

    #[cold]
    fn serve_arrived(&mut self) {
        // A response may answer a request that itself came through an
        // import: serving it can catch more.
        while !self.responses.arrived.is_empty() {
            let batch = std::mem::take(&mut self.responses.arrived);
            for a in batch {
                match a {
                    Arrived::Response(r) => self.serve_one(r),
                    Arrived::Measured(token, m) => self.take_measured(token, m),
                }
            }
        }
    }

    /// Another server's measurement of the response to request `token`:
    /// merged into the report waiting for it, or kept until the response
    /// comes.
    fn take_measured(&mut self, token: u64, m: Measured) {
        if let Some((mut report, _)) = self.responses.awaiting.remove(&token) {
            m.merge_into(&mut report);
            self.report_latency(report);
        } else if let Some(t) = self.responses.pending.get_mut(&token).and_then(|p| p.tracking.as_mut()) {
            t.measured = Some(m);
        }
    }

    fn serve_one(&mut self, a: Response) {
        let now = self.now;
        let Some(token) = a.token else { return };
        let Some(p) = self.responses.pending.get(&token) else {
            return;
        };
        if p.exporter != a.exporter {
            return;
        }
        if now.saturating_duration_since(p.last) > p.rule.threshold {
            self.expire_request(token);
            return;
        }
        let (importer, reply, kind) = (p.importer, p.reply.clone(), p.rule.kind);
        // A measured request is reported as its response comes back; one
        // answered from another server (no local responder) with that
        // server's measurement, which may come before or after it.
        if let Some(p) = self.responses.pending.get_mut(&token) {
            if let Some(mut t) = p.tracking.take() {
                let (exporter, requested, threshold) = (p.exporter, p.requested, p.rule.threshold);
                let measured = t.measured.take();
                let remote = a.responder.is_none();
                let mut report = self.answered(exporter, t, requested, a.responder.clone());
                match (remote, measured) {
                    (false, _) => self.report_latency(report),
                    (true, Some(m)) => {
                        m.merge_into(&mut report);
                        self.report_latency(report);
                    }
                    (true, None) => {
                        self.responses.awaiting.insert(token, (report, now + threshold));
                    }
                }
            }
        }
        let msg = Msg {
            subject: &reply,
            reply: None,
            header_len: a.header_len,
            message: &a.message,
            queues: None,
            origin_cluster: None,
            responder: None,
        };
        let delivered = self.route_in(importer, &msg, None);
        // nats-server ends a request on its first response when it is a
        // singleton, on an empty message whatever its type, and when a
        // response reached nobody.
        if !delivered || kind == ResponseType::Singleton || a.message.is_empty() {
            self.responses.pending.remove(&token);
        } else if let Some(p) = self.responses.pending.get_mut(&token) {
            p.last = now;
        }
    }

    /// Lets go of requests whose threshold has passed, at most once a
    /// second (the runtime's clock moves before each read and batch).
    #[inline]
    pub(super) fn sweep_requests(&mut self) {
        if self.responses.pending.is_empty() && self.responses.awaiting.is_empty() && self.remote_requests.is_empty() {
            return;
        }
        let now = self.now;
        if self.responses.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.responses.next_sweep = Some(now + SWEEP_EVERY);
        let expired: Vec<u64> = self
            .responses
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last) > p.rule.threshold)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            self.expire_request(token);
        }
        // A measurement that never came: nothing is reported, as with
        // nats-server.
        self.responses.awaiting.retain(|_, (_, deadline)| now <= *deadline);
        if !self.remote_requests.is_empty() {
            self.prune_remote_requests(None);
        }
    }

    /// Lets go of a request whose threshold passed (a measured one is
    /// reported as 504).
    fn expire_request(&mut self, token: u64) {
        if let Some(p) = self.responses.pending.remove(&token) {
            if let Some(t) = p.tracking {
                self.report_failed(p.exporter, t, p.requested, Failure::Timeout);
            }
        }
    }

    /// Requests through service imports waiting for a response on this
    /// shard.
    pub fn waiting_requests(&self) -> usize {
        self.responses.waiting()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_read_back() {
        for n in [0, 1, 61, 62, 12345, u64::MAX] {
            let mut b = Vec::new();
            encode(n, &mut b);
            assert_eq!(decode(&b), Some(n));
        }
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"a.b"), None);
        assert_eq!(decode(b"zzzzzzzzzzzz"), None, "too long");
        assert_eq!(decode(b"zzzzzzzzzzz"), None, "past u64");
    }
}
