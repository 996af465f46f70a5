//! Message tracing in the core: the events of the message being routed,
//! recorded where they happen, as nats-server records them (ingress,
//! subject mapping, stream export, service import, one egress per
//! subscriber, route or leaf connection).
//!
//! The shard where the message arrives keeps the trace while it routes
//! the message. A copy delivered on another shard carries a tag in its
//! batch; that shard records the egresses of its own subscribers (and
//! routes and leaf connections, with the hop ids the origin gave them) and
//! sends them back in its next batch. When every part is in, the trace is
//! finished ([`FinishedTrace`]) and the shard runtime sends it as JSON to
//! the trace destination (`shard/trace.rs`). Untraced messages pay one
//! branch per delivery.

use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashMap;

use super::{LocalSub, ShardCore};
use crate::ids::{AccountId, ConnId, LinkKind, ShardId};
use crate::proto::trace::{self as wire, TraceAsk, TraceRequest};

/// Why an egress did not deliver (nats-server's texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressError {
    /// The publisher's own subscription, without echo.
    NoEcho,
    /// The subscriber's deny list holds the subject.
    SubDeny,
    /// The subscriber is closing.
    ClientClosed,
    /// Traced only, to a route or leaf peer that does not understand
    /// tracing: not sent.
    OnlyNoSupport,
    /// Sent to a route or leaf peer that does not understand tracing: it
    /// sends no event.
    NoSupport,
}

impl EgressError {
    /// nats-server's text.
    pub fn text(self) -> &'static str {
        match self {
            EgressError::NoEcho => "Not delivered because of no echo",
            EgressError::SubDeny => "Not delivered because subscription denies this subject",
            EgressError::ClientClosed => "Not delivered because client is closed",
            EgressError::OnlyNoSupport => "Not delivered because remote does not support message tracing",
            EgressError::NoSupport => {
                "Message delivered but remote does not support message tracing so no trace event generated from there"
            }
        }
    }
}

/// What a traced message's copy to a route or leaf connection gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Forward {
    /// Its hop id (`Nats-Trace-Hop`).
    pub(super) hop: Box<str>,
    /// Whether it is sent at all.
    pub(super) send: bool,
}

/// nats-server's connection kinds, as trace events number them.
pub fn kind_number(link: LinkKind) -> u8 {
    match link {
        LinkKind::Client => 0,
        LinkKind::Route => 1,
        LinkKind::System => 3,
        LinkKind::Leaf => 4,
    }
}

/// One event of a trace (accounts by id, times by the core's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceEvent {
    /// The message came in.
    Ingress {
        /// Connection kind ([`kind_number`]).
        kind: u8,
        /// Connection id.
        cid: u64,
        /// The client's name, or the remote server's.
        name: Option<Arc<str>>,
        /// Its account.
        account: AccountId,
        /// The subject it was published to.
        subject: Box<[u8]>,
        /// Why it went no further (a publish permission violation).
        error: Option<String>,
        /// When.
        at: Instant,
    },
    /// The account's mappings changed its subject.
    SubjectMapping {
        /// The new subject.
        to: Box<[u8]>,
        /// When.
        at: Instant,
    },
    /// It went to an importing account through a stream export.
    StreamExport {
        /// The importer.
        account: AccountId,
        /// Its subject there.
        to: Box<[u8]>,
        /// When.
        at: Instant,
    },
    /// It went to an exporting account through a service import.
    ServiceImport {
        /// The exporter.
        account: AccountId,
        /// The subject in the importer.
        from: Box<[u8]>,
        /// The subject in the exporter.
        to: Box<[u8]>,
        /// When.
        at: Instant,
    },
    /// It went out (or did not) to one subscriber, route or leaf.
    Egress {
        /// Connection kind ([`kind_number`]).
        kind: u8,
        /// Connection id.
        cid: u64,
        /// The client's name, or the remote server's.
        name: Option<Arc<str>>,
        /// The hop id a route or leaf connection's copy carries.
        hop: Option<Box<str>>,
        /// The subscriber's account, when not the ingress account.
        account: Option<AccountId>,
        /// A client's subscription subject.
        sub: Option<Box<[u8]>>,
        /// Its queue group.
        queue: Option<Box<[u8]>>,
        /// Why it was not delivered.
        error: Option<EgressError>,
        /// When.
        at: Instant,
    },
}

impl TraceEvent {
    /// nats-server's type code for the event (`in`, `sm`, `se`, `si`,
    /// `eg`) and when it happened.
    pub fn code_and_time(&self) -> (&'static str, Instant) {
        match self {
            TraceEvent::Ingress { at, .. } => ("in", *at),
            TraceEvent::SubjectMapping { at, .. } => ("sm", *at),
            TraceEvent::StreamExport { at, .. } => ("se", *at),
            TraceEvent::ServiceImport { at, .. } => ("si", *at),
            TraceEvent::Egress { at, .. } => ("eg", *at),
        }
    }
}

/// A trace with every event in: what goes to `dest` in `account`.
#[derive(Debug, Clone)]
pub struct FinishedTrace {
    /// The account the events are published in.
    pub account: AccountId,
    /// The trace destination.
    pub dest: Box<[u8]>,
    /// The message's headers.
    pub headers: Vec<(String, Vec<String>)>,
    /// Its size (headers and payload).
    pub msg_size: usize,
    /// Copies sent on to routes and leaf connections.
    pub hops: u32,
    /// The events, ingress first.
    pub events: Vec<TraceEvent>,
}

/// What a copy delivered on another shard carries: whose trace it is and
/// what that shard needs to record its part.
#[derive(Debug, Clone)]
pub struct TraceTag {
    /// The shard that holds the trace.
    pub origin: ShardId,
    /// The trace there.
    pub id: u64,
    /// Trace only: subscribers do not get the message.
    pub only: bool,
    /// The account the message came in on.
    pub ingress_account: AccountId,
    /// Hop ids given to route and leaf connections.
    pub hops: Vec<(ConnId, Box<str>)>,
    /// Set while the copy goes through a stream export: (exporter,
    /// importer, subject in the importer). Each importer subscription's
    /// egress follows its own stream export event and is named in the
    /// exporter's space, as nats-server records its shadow subscriptions.
    pub stream_from: Option<(AccountId, AccountId, Box<[u8]>)>,
}

/// The events another shard recorded for a traced copy.
#[derive(Debug, Clone)]
pub struct TracePart {
    /// The trace on the receiving shard.
    pub id: u64,
    /// Its egresses.
    pub events: Vec<TraceEvent>,
}

/// The trace of the message being routed (or of a copy being delivered).
#[derive(Debug)]
pub(super) struct ActiveTrace {
    pub(super) tag: TraceTag,
    /// The hop id of the copy that came in (numbering goes on from it).
    hop_in: Option<Box<str>>,
    pub(super) events: Vec<TraceEvent>,
    /// Only on the origin: what the finished trace is made of.
    head: Option<Head>,
    /// Only on the origin: the tags of copies sent to other shards, as
    /// (shard, index in that shard's outbox).
    sent: Vec<(ShardId, usize)>,
}

#[derive(Debug)]
struct Head {
    account: AccountId,
    dest: Box<[u8]>,
    headers: Vec<(String, Vec<String>)>,
    msg_size: usize,
}

/// Traces waiting for other shards' parts.
#[derive(Default)]
pub(super) struct Traces {
    next_id: u64,
    waiting: FxHashMap<u64, (FinishedTrace, usize)>,
}

impl ActiveTrace {
    /// The hop id for a copy to route or leaf connection `conn`, given
    /// once per connection (`<hop in>.<n>` or `<n>`).
    fn hop_for(&mut self, conn: ConnId) -> Box<str> {
        if let Some((_, h)) = self.tag.hops.iter().find(|(c, _)| *c == conn) {
            return h.clone();
        }
        let n = self.tag.hops.len() + 1;
        let hop: Box<str> = match &self.hop_in {
            Some(h) => format!("{h}.{n}").into(),
            None => n.to_string().into(),
        };
        self.tag.hops.push((conn, hop.clone()));
        hop
    }
}

impl ShardCore {
    /// Starts the trace of a message link `from` brought in, to `subject`
    /// in `account`, as `req` asks (the caller checked the destination).
    pub fn trace_begin(&mut self, from: ConnId, account: AccountId, req: TraceRequest, subject: &[u8], size: usize) {
        let (link, name) = match self.conns.get(&from) {
            Some(c) => (c.link, c.name.clone()),
            None => (LinkKind::Client, None),
        };
        let id = self.traces.next_id;
        self.traces.next_id += 1;
        let at = self.now;
        self.tracing = Some(Box::new(ActiveTrace {
            tag: TraceTag {
                origin: self.id,
                id,
                only: req.only,
                ingress_account: account,
                hops: Vec::new(),
                stream_from: None,
            },
            hop_in: if link == LinkKind::Client {
                None
            } else {
                req.hop.as_deref().map(Into::into)
            },
            events: vec![TraceEvent::Ingress {
                kind: kind_number(link),
                cid: from.0,
                name,
                account,
                subject: subject.into(),
                error: None,
                at,
            }],
            head: Some(Head {
                account,
                dest: req.dest.as_bytes().into(),
                headers: req.headers,
                msg_size: size,
            }),
            sent: Vec::new(),
        }));
    }

    /// Starts a trace for a message a route or leaf connection brought in
    /// when its headers ask for one (a destination that is not a valid
    /// subject, or the old origin-account header, traces nothing).
    /// Whether the message is to be routed at all (not when only traced
    /// with a bad destination).
    pub(super) fn trace_from_server(&mut self, from: ConnId, account: AccountId, msg: &super::Msg<'_>) -> bool {
        let Some(h) = msg.header_len else { return true };
        let TraceAsk::Trace(mut req) = wire::read(&msg.message[..h.min(msg.message.len())]) else {
            return true;
        };
        if req.external {
            // The account's own destination (sampled on the first server).
            match self.account_trace_dest(account) {
                Some((dest, _)) => req.dest = dest,
                None => return true,
            }
        }
        if req.origin_account.is_some() || !crate::subject::is_valid_literal_subject(req.dest.as_bytes()) {
            return !req.only;
        }
        self.trace_begin(from, account, req, msg.subject, msg.message.len());
        true
    }

    /// Account `account`'s own trace destination and sampling percent
    /// (for messages with only a sampled `traceparent`).
    pub fn account_trace_dest(&self, account: AccountId) -> Option<(String, u8)> {
        self.imports
            .trace_dest_of(account)
            .map(|(d, s)| (String::from_utf8_lossy(d).into_owned(), s))
    }

    /// Whether the message being routed is traced.
    #[inline]
    pub(super) fn is_tracing(&self) -> bool {
        self.tracing.is_some()
    }

    /// Whether the message being routed is only traced, not delivered.
    #[inline]
    pub(super) fn trace_only(&self) -> bool {
        self.tracing.as_ref().is_some_and(|t| t.tag.only)
    }

    /// Marks (or, with `None`, unmarks) the copy being routed as going
    /// through a stream export: (exporter, importer, subject there).
    pub(super) fn trace_stream_from(&mut self, export: Option<(AccountId, AccountId, Box<[u8]>)>) {
        if let Some(t) = self.tracing.as_mut() {
            t.tag.stream_from = export;
        }
    }

    /// Records that the account's mappings sent the message on as `to`.
    pub fn trace_mapped(&mut self, to: &[u8]) {
        let at = self.now;
        if let Some(t) = self.tracing.as_mut() {
            t.events.push(TraceEvent::SubjectMapping { to: to.into(), at });
        }
    }

    /// Records why the message went no further than its ingress.
    pub fn trace_ingress_error(&mut self, error: String) {
        if let Some(t) = self.tracing.as_mut() {
            if let Some(TraceEvent::Ingress { error: e, .. }) = t.events.first_mut() {
                *e = Some(error);
            }
        }
    }

    pub(super) fn trace_event(&mut self, event: impl FnOnce(Instant) -> TraceEvent) {
        let at = self.now;
        if let Some(t) = self.tracing.as_mut() {
            t.events.push(event(at));
        }
    }

    /// Records the egress to local subscription `sub` of connection entry
    /// `c` (not delivered when `error` says why).
    pub(super) fn trace_egress(&mut self, sub: &LocalSub, error: Option<EgressError>) {
        let at = self.now;
        let Some(t) = self.tracing.as_mut() else { return };
        let Some(c) = self.conns.get(&sub.conn) else { return };
        let client = c.link == LinkKind::Client;
        let account = (matches!(c.link, LinkKind::Client | LinkKind::Leaf) && sub.account != t.tag.ingress_account)
            .then_some(sub.account);
        let subject = match &t.tag.stream_from {
            Some((exporter, importer, to)) => {
                t.events.push(TraceEvent::StreamExport {
                    account: *importer,
                    to: to.clone(),
                    at,
                });
                let exporter = *exporter;
                if client && sub.account != exporter {
                    self.imports
                        .shadow_name(sub.account, exporter, &sub.subject)
                        .map_or_else(|| sub.subject.clone(), Into::into)
                } else {
                    sub.subject.clone()
                }
            }
            None => sub.subject.clone(),
        };
        t.events.push(TraceEvent::Egress {
            kind: kind_number(c.link),
            cid: sub.conn.0,
            name: c.name.clone(),
            hop: None,
            account,
            sub: client.then_some(subject),
            queue: if client { sub.queue.clone() } else { None },
            error,
            at,
        });
    }

    /// For a traced request going through a service import whose export
    /// allows tracing: the message with its trace destination replaced by
    /// a reply subject of this shard's, so events from servers beyond
    /// (published in the exporter) come back to the destination in the
    /// importer.
    pub(super) fn trace_dest_through(
        &mut self,
        importer: AccountId,
        exporter: AccountId,
        msg: &super::Msg<'_>,
    ) -> Option<(Vec<u8>, usize)> {
        let h = msg.header_len?;
        let dest = self.tracing.as_ref()?.head.as_ref().map(|hd| hd.dest.clone())?;
        let rule = crate::auth::config::ResponseRule {
            kind: crate::auth::config::ResponseType::Stream,
            ..Default::default()
        };
        let (through, _) = self.hold_request(importer, exporter, &dest, rule, None)?;
        Some(wire::with_header(
            msg.message,
            h,
            wire::TRACE_DEST,
            std::str::from_utf8(&through).unwrap_or_default(),
        ))
    }

    /// Records the egress of a traced message to local subscription `key`
    /// (a client's; routes and leaf connections are recorded as their
    /// copies are sent): whether it is to be delivered (not when only
    /// traced, nor to a client that is closing or denies the subject).
    #[cold]
    pub(super) fn trace_delivery(&mut self, key: crate::ids::SubKey, msg: &super::Msg<'_>) -> bool {
        let Some(sub) = self.subs.get(&key) else { return true };
        let Some(c) = self.conns.get_mut(&sub.conn) else {
            return true;
        };
        if c.link != LinkKind::Client {
            return true;
        }
        let error = if c.closing.is_some() {
            Some(EgressError::ClientClosed)
        } else if c.perms.as_mut().is_some_and(|p| p.delivery_denied(msg.subject)) {
            Some(EgressError::SubDeny)
        } else {
            None
        };
        let sub = sub.clone();
        self.trace_egress(&sub, error);
        error.is_none() && !self.trace_only()
    }

    /// Records the copy sent to route or leaf connection `conn` and gives
    /// its hop id.
    pub(super) fn trace_forward(&mut self, conn: ConnId, account: AccountId) -> Option<Forward> {
        let at = self.now;
        let t = self.tracing.as_mut()?;
        let c = self.conns.get(&conn)?;
        let hop = t.hop_for(conn);
        let acc = (c.link == LinkKind::Leaf && account != t.tag.ingress_account).then_some(account);
        // A peer that does not understand tracing would deliver a
        // traced-only message: it is not sent there (nats-server's rule).
        let error = match (c.untraced_peer, t.tag.only) {
            (false, _) => None,
            (true, true) => Some(EgressError::OnlyNoSupport),
            (true, false) => Some(EgressError::NoSupport),
        };
        t.events.push(TraceEvent::Egress {
            kind: kind_number(c.link),
            cid: conn.0,
            name: c.name.clone(),
            hop: Some(hop.clone()),
            account: acc,
            sub: None,
            queue: None,
            error,
            at,
        });
        Some(Forward {
            hop,
            send: error != Some(EgressError::OnlyNoSupport),
        })
    }

    /// Notes the protocol level route or leaf peer `cid` announced: below
    /// 3 it does not understand message tracing.
    pub fn set_peer_protocol(&mut self, cid: ConnId, proto: u32) {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.untraced_peer = proto < crate::proto::route_info::TRACE_PROTO;
        }
    }

    /// Gives route or leaf connection `conn` its hop id now (on the
    /// origin, before the copy goes to the shard that owns it).
    pub(super) fn trace_hop(&mut self, conn: ConnId) {
        if let Some(t) = self.tracing.as_mut() {
            t.hop_for(conn);
        }
    }

    /// The tag a copy for shard `dest` carries; on the origin, the copy is
    /// counted as a part to wait for.
    pub(super) fn trace_tag_for(&mut self, dest: ShardId) -> Option<u32> {
        let t = self.tracing.as_mut()?;
        let ob = &mut self.outbox[dest.index()];
        let index = ob.traces.len();
        ob.traces.push(t.tag.clone());
        if t.head.is_some() {
            t.sent.push((dest, index));
        }
        Some(index as u32)
    }

    /// Ends the trace of the message just routed: finished now, or when
    /// the other shards' parts are in.
    pub fn trace_end(&mut self) {
        let Some(t) = self.tracing.take() else { return };
        let ActiveTrace {
            tag,
            events,
            head,
            sent,
            ..
        } = *t;
        let Some(head) = head else { return };
        // The copies' tags learn every hop id given while routing.
        for &(dest, index) in &sent {
            if let Some(sent_tag) = self.outbox[dest.index()].traces.get_mut(index) {
                sent_tag.hops.clone_from(&tag.hops);
            }
        }
        let trace = FinishedTrace {
            account: head.account,
            dest: head.dest,
            headers: head.headers,
            msg_size: head.msg_size,
            hops: 0,
            events,
        };
        if sent.is_empty() {
            self.finish_trace(trace);
        } else {
            self.traces.waiting.insert(tag.id, (trace, sent.len()));
        }
    }

    /// Starts recording this shard's part of a traced copy.
    pub(super) fn trace_part_begin(&mut self, tag: TraceTag) {
        self.tracing = Some(Box::new(ActiveTrace {
            tag,
            hop_in: None,
            events: Vec::new(),
            head: None,
            sent: Vec::new(),
        }));
    }

    /// Sends this shard's part back to the origin.
    pub(super) fn trace_part_end(&mut self) {
        let Some(t) = self.tracing.take() else { return };
        let part = TracePart {
            id: t.tag.id,
            events: t.events,
        };
        let origin = t.tag.origin;
        if origin == self.id {
            self.trace_part_in(part);
        } else {
            self.outbox[origin.index()].trace_parts.push(part);
        }
    }

    /// A part from another shard: the trace is finished with the last.
    pub(super) fn trace_part_in(&mut self, part: TracePart) {
        let Some((trace, left)) = self.traces.waiting.get_mut(&part.id) else {
            return;
        };
        trace.events.extend(part.events);
        *left -= 1;
        if *left == 0 {
            if let Some((trace, _)) = self.traces.waiting.remove(&part.id) {
                self.finish_trace(trace);
            }
        }
    }

    fn finish_trace(&mut self, mut trace: FinishedTrace) {
        trace.hops = trace
            .events
            .iter()
            .filter(|e| matches!(e, TraceEvent::Egress { hop: Some(_), .. }))
            .count() as u32;
        self.report_trace(trace);
    }

    /// Names connection `cid` for trace events (a client's CONNECT name,
    /// a route's or leaf connection's remote server).
    pub fn set_conn_name(&mut self, cid: ConnId, name: &str) {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.name = (!name.is_empty()).then(|| name.into());
        }
    }
}
