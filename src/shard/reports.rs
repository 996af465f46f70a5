//! Publishes what the core reports, from the shard that holds it: each
//! finished message trace (`core/trace.rs`) as nats-server's
//! `MsgTraceEvent` JSON to its destination, in the account the traced
//! message came in on; each service latency measurement
//! (`core/latency.rs`) as its `ServiceLatency` JSON to the export's
//! subject in the exporting account.

use std::rc::Rc;
use std::time::{Instant, SystemTime};

use serde_json::{json, Map, Value};

use super::state::Shard;
use crate::compress::encoding::{self, ContentEncoding};
use crate::control::Shared;
use crate::core::latency::{LatencyReport, MeasuredReport};
use crate::core::reports::Report;
use crate::core::trace::{FinishedTrace, TraceEvent};
use crate::core::ShardCore;
use crate::ids::AccountId;
use crate::timefmt::rfc3339;

/// Spawns the task that publishes this shard's reports.
pub fn start(shard: &Rc<Shard>) {
    crate::rt::spawn_local(run(shard.clone())).detach();
}

async fn run(shard: Rc<Shard>) {
    let mut reports: Vec<Report> = Vec::new();
    loop {
        shard.next_batch(&mut reports, ShardCore::poll_reports).await;
        for r in reports.drain(..) {
            let (account, subject, body, accept) = match r {
                Report::Trace(t) => (
                    t.account,
                    t.dest.clone(),
                    event_json(&shard.shared, &t),
                    trace_accepts(&t),
                ),
                Report::Latency(l) => (l.account, l.subject.clone(), latency_json(&l, true), None),
                Report::Measured(m) => (m.report.account, m.report.subject.clone(), measured_json(&m), None),
            };
            let body = serde_json::to_vec(&body).unwrap_or_default();
            let (header_len, message) = encoding::message(accept, &body);
            shard
                .core
                .borrow_mut()
                .inject_msg(account, &subject, None, header_len, &message);
        }
        shard.flush().await;
    }
}

/// How a trace's events are encoded: as its message's `Accept-Encoding`
/// asks (nats-server compresses them so).
fn trace_accepts(t: &FinishedTrace) -> Option<ContentEncoding> {
    let (_, values) = t.headers.iter().find(|(k, _)| k == encoding::ACCEPT_ENCODING)?;
    ContentEncoding::from_accept(values.first()?)
}

/// Converts the core's clock to wall-clock time (RFC 3339).
struct WallClock(SystemTime, Instant);

impl WallClock {
    fn now() -> WallClock {
        WallClock(SystemTime::now(), Instant::now())
    }

    fn at(&self, at: Instant) -> String {
        rfc3339(self.0 - self.1.saturating_duration_since(at))
    }
}

/// nats-server's `ServiceLatency` document for a measurement; without
/// `typed`, its type, id and timestamp are Go's zero values (as in a
/// measurement sent to another server).
pub fn latency_json(l: &LatencyReport, typed: bool) -> Value {
    let clock = WallClock::now();
    let raw = |b: &Option<Vec<u8>>| b.as_deref().and_then(|j| serde_json::from_slice::<Value>(j).ok());
    let mut doc = Map::new();
    if typed {
        doc.insert("type".into(), json!("io.nats.server.metric.v1.service_latency"));
        doc.insert("id".into(), json!(crate::sys::event_id()));
        doc.insert("timestamp".into(), json!(rfc3339(clock.0)));
    } else {
        doc.insert("type".into(), json!(""));
        doc.insert("id".into(), json!(""));
        doc.insert("timestamp".into(), json!("0001-01-01T00:00:00Z"));
    }
    doc.insert("status".into(), json!(l.status));
    if let Some(e) = l.error {
        doc.insert("description".into(), json!(e));
    }
    if let Some(r) = raw(&l.requestor) {
        doc.insert("requestor".into(), r);
    }
    if let Some(r) = raw(&l.responder) {
        doc.insert("responder".into(), r);
    }
    if !l.header.is_empty() {
        let header: Map<String, Value> = l.header.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        doc.insert("header".into(), Value::Object(header));
    }
    doc.insert("start".into(), json!(clock.at(l.start)));
    doc.insert("service".into(), json!(l.service.as_nanos() as u64));
    doc.insert("system".into(), json!(l.system.as_nanos() as u64));
    doc.insert("total".into(), json!(l.total.as_nanos() as u64));
    Value::Object(doc)
}

/// nats-server's `remoteLatency` document: a responder's server's
/// measurement for the requester's server.
pub fn measured_json(m: &MeasuredReport) -> Value {
    json!({
        "account": m.exporter,
        "req_id": String::from_utf8_lossy(&m.req_id),
        "m2": latency_json(&m.report, false),
    })
}

/// The `MsgTraceEvent` document for a finished trace.
pub fn event_json(shared: &Shared, t: &FinishedTrace) -> Value {
    let accounts = shared.verifier().accounts().clone();
    let name = |a: AccountId| accounts.by_id(a).map(|acc| acc.name.clone()).unwrap_or_default();
    let clock = WallClock::now();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    // Go writes a map's keys in order.
    let mut headers: Vec<&(String, Vec<String>)> = t.headers.iter().collect();
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let header: Map<String, Value> = headers.into_iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let mut request = Map::new();
    if !header.is_empty() {
        request.insert("header".into(), Value::Object(header));
    }
    if t.msg_size > 0 {
        request.insert("msgsize".into(), json!(t.msg_size));
    }
    let events: Vec<Value> = t
        .events
        .iter()
        .map(|e| {
            let mut v = Map::new();
            let (code, at) = e.code_and_time();
            v.insert("type".into(), json!(code));
            v.insert("ts".into(), json!(clock.at(at)));
            // The connection an ingress or egress names: kind, id, name.
            if let TraceEvent::Ingress { kind, cid, name, .. } | TraceEvent::Egress { kind, cid, name, .. } = e {
                v.insert("kind".into(), json!(kind));
                v.insert("cid".into(), json!(cid));
                if let Some(n) = name {
                    v.insert("name".into(), json!(n.as_ref()));
                }
            }
            let mut put = |k: &str, val: Value| {
                v.insert(k.into(), val);
            };
            match e {
                TraceEvent::Ingress {
                    account,
                    subject,
                    error,
                    ..
                } => {
                    put("acc", json!(name(*account)));
                    put("subj", json!(text(subject)));
                    if let Some(err) = error {
                        put("error", json!(err));
                    }
                }
                TraceEvent::SubjectMapping { to, .. } => {
                    put("to", json!(text(to)));
                }
                TraceEvent::StreamExport { account, to, .. } => {
                    put("acc", json!(name(*account)));
                    put("to", json!(text(to)));
                }
                TraceEvent::ServiceImport { account, from, to, .. } => {
                    put("acc", json!(name(*account)));
                    put("from", json!(text(from)));
                    put("to", json!(text(to)));
                }
                TraceEvent::Egress {
                    hop,
                    account,
                    sub,
                    queue,
                    error,
                    ..
                } => {
                    if let Some(h) = hop {
                        put("hop", json!(h.as_ref()));
                    }
                    if let Some(a) = account {
                        put("acc", json!(name(*a)));
                    }
                    if let Some(s) = sub {
                        put("sub", json!(text(s)));
                    }
                    if let Some(q) = queue {
                        put("queue", json!(text(q)));
                    }
                    if let Some(err) = error {
                        put("error", json!(err.text()));
                    }
                }
            }
            Value::Object(v)
        })
        .collect();
    let mut doc = Map::new();
    doc.insert(
        "server".into(),
        serde_json::to_value(crate::sys::server_block(shared)).unwrap_or_default(),
    );
    doc.insert("request".into(), Value::Object(request));
    if t.hops > 0 {
        doc.insert("hops".into(), json!(t.hops));
    }
    doc.insert("events".into(), Value::Array(events));
    Value::Object(doc)
}
