//! Service latency tracking (`latency` on a service export), as
//! nats-server measures it: a sampled request through an import is held
//! with its requester's description and the time it came in; its reply
//! subject ends in `.T`, so the shard where the response is published
//! adds the responder's description to it (`ShardCore::route_from`); the
//! shard holding the request reports status 200 with the service, system
//! and total latencies when the response arrives, 400 for a sampled
//! request without a reply subject, 503 when no responder received it and
//! 504 when its threshold passed without a response. Reports go to the
//! export's subject in the exporting account (`shard/reports.rs`).
//!
//! Across servers, as nats-server: a measured request's reply subject
//! ends in `.<server hash>.T`, the hash of the requester's server name.
//! The server whose client receives such a request from another server
//! times it, and when that client responds publishes its measurement
//! (nats-server's `M2`: the responder and the service latency) to
//! `$SYS.LATENCY.M2.<hash>` in the system account. The requester's server
//! waits for it when the response came from another server, and merges
//! the two: the responder's service latency and description, the rest of
//! the time counted as the system's.

use std::time::{Duration, Instant};

use super::{Msg, ShardCore};
use crate::auth::config::{LatencyConfig, LatencySampling};
use crate::ids::{AccountId, ConnId};

/// The suffix of a measured request's reply subject.
pub const TRACKED_SUFFIX: &[u8] = b".T";

/// Where a responder's server publishes its measurement, before the hash
/// of the requester's server name.
pub const MEASURED_PREFIX: &[u8] = b"$SYS.LATENCY.M2.";

/// Length of a server hash.
pub const SERVER_HASH_LEN: usize = 8;

/// nats-server's hash of a server name in tracked reply subjects: the
/// first bytes of its SHA-256, each as a base-62 digit.
pub fn server_hash(name: &str) -> [u8; SERVER_HASH_LEN] {
    use sha2::{Digest, Sha256};
    let sum = Sha256::digest(name.as_bytes());
    std::array::from_fn(|i| crate::ids::BASE62[(sum[i] % 62) as usize])
}

/// The server hash in a measured request's reply subject
/// (`<reply>.<hash>.T`), as nats-server reads it: the token before `T`.
pub fn tracked_hash(reply: &[u8]) -> Option<&[u8]> {
    // nats-server's `isTrackedReply`: longer than 4, ending in `.T`.
    let rest = reply.strip_suffix(TRACKED_SUFFIX).filter(|_| reply.len() > 4)?;
    let start = rest.iter().rposition(|&b| b == b'.').map_or(0, |i| i + 1);
    Some(&rest[start..])
}

/// A measured request from another server delivered to a client here,
/// waiting for that client's response (nats-server's remote tracking).
#[derive(Debug, Clone)]
pub(super) struct RemoteRequest {
    /// When it was delivered.
    pub(super) at: Instant,
    /// The export's response threshold: forgotten after it.
    pub(super) threshold: Duration,
}

/// What the responder's server measured (nats-server's `M2`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Measured {
    /// Time in the service, less the responder's RTT.
    pub(super) service: Duration,
    /// The responder's `ClientInfo` JSON.
    pub(super) responder: Option<Vec<u8>>,
}

impl Measured {
    /// Reads nats-server's `remoteLatency` document: the request's reply
    /// subject and the measurement.
    pub(super) fn parse(body: &[u8]) -> Option<(Vec<u8>, Measured)> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let req_id = v.get("req_id")?.as_str()?.as_bytes().to_vec();
        let m2 = v.get("m2")?;
        let measured = Measured {
            service: Duration::from_nanos(m2.get("service").and_then(|s| s.as_u64()).unwrap_or(0)),
            responder: m2
                .get("responder")
                .filter(|r| r.is_object())
                .and_then(|r| serde_json::to_vec(r).ok()),
        };
        Some((req_id, measured))
    }

    /// Folds this into `m1`, the requester's server's own report, as
    /// nats-server merges: the responder's service latency and
    /// description; what the requester's server saw beyond them and the
    /// responder's round trip is the system's.
    pub(super) fn merge_into(self, m1: &mut LatencyReport) {
        let rtt = rtt_of(self.responder.as_deref());
        m1.system = m1.service.saturating_sub(self.service + rtt);
        m1.service = self.service;
        m1.responder = self.responder;
    }
}

/// The round trip time in a `ClientInfo` JSON.
fn rtt_of(info: Option<&[u8]>) -> Duration {
    info.and_then(|r| serde_json::from_slice::<serde_json::Value>(r).ok())
        .and_then(|v| v["rtt"].as_u64())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// A responder's server's measurement to publish: nats-server's
/// `remoteLatency`, to `$SYS.LATENCY.M2.<hash>` in the system account.
#[derive(Debug, Clone)]
pub struct MeasuredReport {
    /// The exporting account's name (where the responder is).
    pub exporter: String,
    /// The request's reply subject.
    pub req_id: Box<[u8]>,
    /// The measurement; its `account` and `subject` say where it goes.
    pub report: LatencyReport,
}

/// A measured request, waiting for its response.
#[derive(Debug, Clone)]
pub(super) struct Tracking {
    /// The requester's `ClientInfo` JSON, as the import shares it.
    pub(super) requestor: Option<Vec<u8>>,
    pub(super) requestor_rtt: Duration,
    /// The headers that asked for the measurement (sampling by headers).
    pub(super) header: Vec<(String, Vec<String>)>,
    /// Where the report goes, in the exporter.
    pub(super) subject: Box<[u8]>,
    /// The responder's server's measurement, when it came before the
    /// response.
    pub(super) measured: Option<Measured>,
}

impl Tracking {
    /// When a request that came in at `at` started: less the requester's
    /// round trip, as nats-server counts it.
    fn start(&self, at: Instant) -> Instant {
        at.checked_sub(self.requestor_rtt).unwrap_or(at)
    }
}

/// Why a measured request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// It had no reply subject.
    BadRequest,
    /// No responder received it.
    Unavailable,
    /// Its threshold passed.
    Timeout,
}

impl Failure {
    /// nats-server's status and description.
    fn status(self) -> (u16, &'static str) {
        match self {
            Failure::BadRequest => (400, "Bad Request"),
            Failure::Unavailable => (503, "Service Unavailable"),
            Failure::Timeout => (504, "Service Timeout"),
        }
    }
}

/// A latency report: nats-server's `ServiceLatency`, without its id and
/// timestamp (the runtime adds them).
#[derive(Debug, Clone)]
pub struct LatencyReport {
    /// The exporting account (where it is published).
    pub account: AccountId,
    /// The subject it is published to.
    pub subject: Box<[u8]>,
    /// 200, 400, 503 or 504.
    pub status: u16,
    /// The error's description, for any status but 200.
    pub error: Option<&'static str>,
    /// The requester's `ClientInfo` JSON.
    pub requestor: Option<Vec<u8>>,
    /// The responder's `ClientInfo` JSON.
    pub responder: Option<Vec<u8>>,
    /// The headers that asked for the measurement.
    pub header: Vec<(String, Vec<String>)>,
    /// When the request started: its arrival less the requester's RTT.
    pub start: Instant,
    /// Time in the service (less the responder's RTT).
    pub service: Duration,
    /// Time in the system.
    pub system: Duration,
    /// Time in all.
    pub total: Duration,
}

/// A header name as Go's `textproto` canonicalizes it (`x-b3-traceid` to
/// `X-B3-Traceid`).
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

/// The header block's entries, names canonical, values in order.
fn headers(hdr: &[u8]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let text = String::from_utf8_lossy(hdr);
    for line in text.split("\r\n").skip(1) {
        let Some((k, v)) = line.split_once(':') else { continue };
        let (k, v) = (canonical(k.trim()), v.trim().to_string());
        if k.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(name, _)| *name == k) {
            Some((_, vals)) => vals.push(v),
            None => out.push((k, vec![v])),
        }
    }
    out
}

/// Whether headers ask for a measurement (Uber, B3, W3C trace context),
/// and the headers to report with it: nats-server's `shouldSample`.
fn sampled_by_headers(hdr: &[u8]) -> Option<Vec<(String, Vec<String>)>> {
    let h = headers(hdr);
    let get = |k: &str| h.iter().find(|(name, _)| name == k).map(|(_, v)| v.clone());
    let pick = |keys: &[&str]| -> Vec<(String, Vec<String>)> {
        keys.iter().filter_map(|k| get(k).map(|v| (k.to_string(), v))).collect()
    };
    let b3 = || pick(&["X-B3-Sampled", "X-B3-Traceid", "X-B3-Parentspanid", "X-B3-Spanid"]);
    if let Some(id) = get("Uber-Trace-Id") {
        let parts: Vec<&str> = id[0].split(':').collect();
        let flags = parts
            .get(3)
            .filter(|f| parts.len() == 4 && !f.is_empty() && f.len() <= 2)?;
        // nats-server decodes "0" and the flags' last digit: that digit's
        // low bit says sampled.
        let last = flags.chars().last()?.to_digit(16)?;
        if last & 1 == 0 {
            return None;
        }
        let mut out = vec![("Uber-Trace-Id".to_string(), id)];
        out.extend(h.iter().filter(|(k, _)| k.starts_with("Uberctx-")).cloned());
        return Some(out);
    }
    match get("X-B3-Sampled") {
        Some(v) if v[0] == "1" => return Some(b3()),
        Some(v) if v[0] == "0" => return None,
        _ => {}
    }
    if get("X-B3-Traceid").is_some() {
        return Some(b3());
    }
    if let Some(v) = get("B3") {
        let parts: Vec<&str> = v[0].split('-').collect();
        if (parts.len() > 2 && parts[2] == "0") || (parts.len() == 1 && parts[0] == "0") {
            return None;
        }
        return Some(vec![("B3".to_string(), v)]);
    }
    if let Some(v) = get("Traceparent") {
        let parts: Vec<&str> = v[0].split('-').collect();
        let sampled =
            parts.len() == 4 && parts[3].len() == 2 && i8::from_str_radix(parts[3], 16).is_ok_and(|f| f & 1 == 1);
        if !sampled {
            return None;
        }
        let mut out = vec![("Traceparent".to_string(), v)];
        out.extend(pick(&["Tracestate"]));
        return Some(out);
    }
    None
}

impl ShardCore {
    /// Whether a request through an export tracked by `l` is measured,
    /// and the headers that asked (empty when sampled by percentage).
    pub(super) fn sample_request(&mut self, l: &LatencyConfig, msg: &Msg<'_>) -> Option<Vec<(String, Vec<String>)>> {
        match l.sampling {
            LatencySampling::Percent(p) if p >= 100 || self.rng.u8(..100) <= p => Some(Vec::new()),
            // Below the percentage, headers may still ask (as nats-server).
            _ => msg
                .header_len
                .and_then(|h| sampled_by_headers(&msg.message[..h.min(msg.message.len())])),
        }
    }

    /// The report for a measured request that got no response (`at`:
    /// when it came in).
    pub(super) fn report_failed(&mut self, exporter: AccountId, t: Tracking, at: Instant, why: Failure) {
        let (status, error) = why.status();
        self.report_latency(LatencyReport {
            account: exporter,
            start: t.start(at),
            subject: t.subject,
            status,
            error: Some(error),
            requestor: t.requestor,
            responder: None,
            header: t.header,
            service: Duration::ZERO,
            system: Duration::ZERO,
            total: Duration::ZERO,
        });
    }

    /// The report for a measured request, which came in at `requested`,
    /// answered by `responder` (its `ClientInfo` JSON; `None` when the
    /// response came from another server, or from the server itself).
    pub(super) fn answered(
        &self,
        exporter: AccountId,
        t: Tracking,
        requested: Instant,
        responder: Option<Vec<u8>>,
    ) -> LatencyReport {
        let service_rtt = self.now.saturating_duration_since(requested);
        let responder_rtt = rtt_of(responder.as_deref());
        LatencyReport {
            account: exporter,
            start: t.start(requested),
            total: t.requestor_rtt + service_rtt,
            subject: t.subject,
            status: 200,
            error: None,
            requestor: t.requestor,
            responder,
            header: t.header,
            service: service_rtt.saturating_sub(responder_rtt),
            system: Duration::ZERO,
        }
    }

    /// Notes a request another server measures, delivered to local client
    /// `conn` of `account` in `msg`: timed until the client responds, when
    /// `account` exports the service (nats-server's remote tracking).
    pub(super) fn note_remote_request(&mut self, conn: ConnId, account: AccountId, msg: &Msg<'_>) {
        let Some(reply) = msg.reply else { return };
        if tracked_hash(reply).is_none_or(|h| h == self.server_hash) {
            return;
        }
        if let Some(threshold) = self.imports.service_export(account, msg.subject) {
            let at = self.now;
            let r = RemoteRequest { at, threshold };
            self.remote_requests.insert((conn, reply.into()), r);
        }
    }

    /// When local client `conn` answers a request another server measures
    /// (`subject` its reply subject), queues this server's measurement for
    /// the requester's server.
    pub(super) fn answer_remote_request(&mut self, conn: ConnId, subject: &[u8]) {
        let key = (conn, Box::<[u8]>::from(subject));
        let Some(r) = self.remote_requests.remove(&key) else {
            return;
        };
        let (Some(sys), Some(hash)) = (self.system_account, tracked_hash(subject)) else {
            return;
        };
        let responder = self.client_info_json(conn, true);
        let rtt = rtt_of(responder.as_deref());
        let service = self.now.saturating_duration_since(r.at).saturating_sub(rtt);
        let mut to = MEASURED_PREFIX.to_vec();
        to.extend_from_slice(hash);
        // The responder's account: the exporter.
        let exporter = self
            .conns
            .get(&conn)
            .and_then(|c| c.detail.as_ref())
            .map(|d| d.account.clone());
        self.report_measured(MeasuredReport {
            exporter: exporter.unwrap_or_default(),
            req_id: key.1,
            report: LatencyReport {
                account: sys,
                subject: to.into(),
                status: 200,
                error: None,
                requestor: None,
                responder,
                header: Vec::new(),
                start: r.at,
                service,
                system: Duration::ZERO,
                total: service + rtt,
            },
        });
    }

    /// Forgets measured requests from other servers past their thresholds
    /// (as nats-server prunes them) or whose client is gone (`gone`).
    pub(super) fn prune_remote_requests(&mut self, gone: Option<ConnId>) {
        let now = self.now;
        self.remote_requests
            .retain(|(c, _), r| Some(*c) != gone && now.saturating_duration_since(r.at) <= r.threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(lines: &[&str]) -> Vec<u8> {
        let mut h = String::from("NATS/1.0\r\n");
        for l in lines {
            h.push_str(l);
            h.push_str("\r\n");
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    #[test]
    fn server_hashes_and_tracked_replies_read_as_nats_server_writes_them() {
        // nats-server 2.15.1 named "A" ends measured replies in this.
        assert_eq!(&server_hash("A"), b"NUmM6cRx");
        assert_eq!(tracked_hash(b"_R_.1B7xXC.73fzCb.NUmM6cRx.T"), Some(&b"NUmM6cRx"[..]));
        assert_eq!(tracked_hash(b"_R_.a.b"), None);
        assert_eq!(tracked_hash(b"a.T"), None, "too short for nats-server");
        assert_eq!(tracked_hash(b"ab.T"), None, "too short for nats-server");
        assert_eq!(tracked_hash(b"abc.T"), Some(&b"abc"[..]));
    }

    #[test]
    fn a_remote_measurement_merges_as_nats_server_merges() {
        let doc = br#"{"account":"A","req_id":"_R_.x.y.h.T","m2":{"type":"","id":"",
            "timestamp":"0001-01-01T00:00:00Z","status":200,"responder":{"acc":"A","rtt":1000000},
            "start":"2026-12-07T00:00:00Z","service":5000000,"system":0,"total":6000000}}"#;
        let (req_id, m) = Measured::parse(doc).unwrap();
        assert_eq!(req_id, b"_R_.x.y.h.T");
        let mut m1 = LatencyReport {
            account: AccountId::GLOBAL,
            subject: Box::from(&b"lat"[..]),
            status: 200,
            error: None,
            requestor: None,
            responder: None,
            header: Vec::new(),
            start: Instant::now(),
            service: Duration::from_millis(9),
            system: Duration::ZERO,
            total: Duration::from_millis(10),
        };
        m.merge_into(&mut m1);
        // 9 ms seen here, 5 in the service and 1 to the responder: 3 in the
        // system; the total stays.
        assert_eq!(m1.service, Duration::from_millis(5));
        assert_eq!(m1.system, Duration::from_millis(3));
        assert_eq!(m1.total, Duration::from_millis(10));
        assert!(m1.responder.is_some_and(|r| r.starts_with(b"{\"acc\":\"A\"")));
        assert!(Measured::parse(b"not json").is_none());
    }

    #[test]
    fn headers_ask_as_nats_server_reads_them() {
        let yes = |lines: &[&str]| sampled_by_headers(&hdr(lines)).is_some();
        assert!(yes(&["x-b3-sampled: 1", "X-B3-TraceId: abc"]));
        assert!(!yes(&["X-B3-Sampled: 0", "X-B3-TraceId: abc"]));
        assert!(yes(&["X-B3-TraceId: abc"]));
        assert!(yes(&["b3: 80f198ee56343ba8-e457b5a2e4d86bd1-1"]));
        assert!(!yes(&["B3: 0"]));
        assert!(!yes(&["B3: 80f198ee56343ba8-e457b5a2e4d86bd1-0"]));
        assert!(yes(&[
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ]));
        assert!(!yes(&[
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ]));
        assert!(yes(&[
            "uber-trace-id: 479fefe9525eddb:5adb976bfc1f95c1:479fefe9525eddb:1"
        ]));
        assert!(!yes(&[
            "uber-trace-id: 479fefe9525eddb:5adb976bfc1f95c1:479fefe9525eddb:0"
        ]));
        assert!(!yes(&["X-Other: 1"]));
        let reported = sampled_by_headers(&hdr(&["traceparent: 00-4bf9-00f0-01", "tracestate: a=b", "x: y"])).unwrap();
        assert_eq!(
            reported,
            vec![
                ("Traceparent".to_string(), vec!["00-4bf9-00f0-01".to_string()]),
                ("Tracestate".to_string(), vec!["a=b".to_string()]),
            ]
        );
    }
}
