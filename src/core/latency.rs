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

use std::time::{Duration, Instant};

use super::{Msg, ShardCore};
use crate::auth::config::{LatencyConfig, LatencySampling};
use crate::ids::AccountId;

/// The suffix of a measured request's reply subject.
pub const TRACKED_SUFFIX: &[u8] = b".T";

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

    /// The report for a measured request answered by `responder` (its
    /// `ClientInfo` JSON), which came in at `requested`.
    pub(super) fn report_answered(
        &mut self,
        exporter: AccountId,
        t: Tracking,
        requested: Instant,
        responder: Option<Vec<u8>>,
    ) {
        let now = self.now;
        let responder_rtt = responder
            .as_deref()
            .and_then(|r| serde_json::from_slice::<serde_json::Value>(r).ok())
            .and_then(|v| v["rtt"].as_u64())
            .map_or(Duration::ZERO, Duration::from_nanos);
        let service_rtt = now.saturating_duration_since(requested);
        self.report_latency(LatencyReport {
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
        });
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
