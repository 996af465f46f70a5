//! Message tracing requests (nats-server 2.11+): a message whose headers
//! name a `Nats-Trace-Dest` is traced, and each server it crosses sends
//! one event to that subject describing what it did with it. This module
//! reads the request out of a header block; `core/trace.rs` records the
//! events and `shard/trace.rs` sends them.

/// The header naming where trace events go.
pub const TRACE_DEST: &str = "Nats-Trace-Dest";
/// A `Nats-Trace-Dest` value that turns tracing off for the copies that
/// carry it (not a valid subject).
pub const TRACE_DISABLED: &str = "trace disabled";
/// The header carrying the hop id a message was forwarded with.
pub const TRACE_HOP: &str = "Nats-Trace-Hop";
/// `true`, `1` or `on`: trace without delivering.
pub const TRACE_ONLY: &str = "Nats-Trace-Only";
/// A header of servers before 2.11's final protocol: its presence turns
/// tracing off.
pub const TRACE_ORIGIN_ACCOUNT: &str = "Nats-Trace-Origin-Account";
/// The W3C trace context header (any case); sampled, it asks for tracing
/// to the account's own destination.
pub const TRACE_PARENT: &str = "traceparent";

/// What a header block asks of tracing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceAsk {
    /// Nothing: the message is not traced.
    None,
    /// A trace to `dest` (or, when `external`, to the account's
    /// destination: only `traceparent` was present).
    Trace(TraceRequest),
}

/// A tracing request read from a message's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRequest {
    /// Where events go (empty when `external`).
    pub dest: String,
    /// Trace without delivering (`Nats-Trace-Only`).
    pub only: bool,
    /// Only a sampled `traceparent` asked: the account's destination
    /// applies.
    pub external: bool,
    /// The hop id the previous server gave this copy (`Nats-Trace-Hop`).
    pub hop: Option<String>,
    /// `Nats-Trace-Origin-Account` was present: tracing is off.
    pub origin_account: Option<String>,
    /// Every header, names as written, values in order.
    pub headers: Vec<(String, Vec<String>)>,
}

impl TraceRequest {
    /// The first value of header `name` (exact case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.first())
            .map(String::as_str)
    }
}

/// Reads a header block (`NATS/1.0\r\n...`) the way nats-server does:
/// lines `key: value` with non-empty key and value (spaces and tabs
/// around the value dropped), `Nats-Trace-Dest` by its exact name,
/// `traceparent` in any case and only when sampled (flags bit 0). A
/// destination of `trace disabled` turns tracing off.
pub fn read(hdr: &[u8]) -> TraceAsk {
    const LINE: &[u8] = b"NATS/1.0\r\n";
    if !hdr.starts_with(LINE) || !may_ask(hdr) {
        return TraceAsk::None;
    }
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
    let (mut dest_found, mut parent_found) = (false, false);
    let mut i = LINE.len();
    while i < hdr.len() {
        let Some(colon) = memchr::memchr(b':', &hdr[i..]) else {
            break;
        };
        let key = &hdr[i..i + colon];
        i += colon + 1;
        while i < hdr.len() && (hdr[i] == b' ' || hdr[i] == b'\t') {
            i += 1;
        }
        let start = i;
        let Some(nl) = memchr::memmem::find(&hdr[start..], b"\r\n") else {
            break;
        };
        let mut end = start + nl;
        while end > start && (hdr[end - 1] == b' ' || hdr[end - 1] == b'\t') {
            end -= 1;
        }
        let val = &hdr[start..end];
        if !key.is_empty() && !val.is_empty() {
            if !parent_found && key.eq_ignore_ascii_case(TRACE_PARENT.as_bytes()) {
                parent_found = sampled(val);
            } else if !dest_found && key == TRACE_DEST.as_bytes() {
                if val == TRACE_DISABLED.as_bytes() {
                    return TraceAsk::None;
                }
                dest_found = true;
            }
            pairs.push((key, val));
        }
        i = start + nl + 2;
    }
    if !dest_found && !parent_found {
        return TraceAsk::None;
    }
    let mut headers: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in pairs {
        let (k, v) = (String::from_utf8_lossy(k), String::from_utf8_lossy(v).into_owned());
        match headers.iter_mut().find(|(name, _)| *name == k) {
            Some((_, vals)) => vals.push(v),
            None => headers.push((k.into_owned(), vec![v])),
        }
    }
    let mut req = TraceRequest {
        dest: String::new(),
        only: false,
        external: !dest_found,
        hop: None,
        origin_account: None,
        headers,
    };
    if dest_found {
        req.dest = req.header(TRACE_DEST).unwrap_or_default().to_string();
        req.only = req
            .header(TRACE_ONLY)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "on"));
    }
    req.hop = req.header(TRACE_HOP).map(str::to_string);
    req.origin_account = req.header(TRACE_ORIGIN_ACCOUNT).map(str::to_string);
    TraceAsk::Trace(req)
}

/// Whether the header block may hold a trace request: both header names
/// hold `race` (`Nats-Trace-Dest`, `traceparent` in any case), so one
/// pass for `r` finds every candidate without allocating; most messages
/// with headers ask for nothing and stop here.
fn may_ask(hdr: &[u8]) -> bool {
    memchr::memchr2_iter(b'r', b'R', hdr).any(|i| hdr.get(i + 1..i + 4).is_some_and(|s| s.eq_ignore_ascii_case(b"ace")))
}

/// Whether a `traceparent` value (`version-traceid-parentid-flags`) has
/// its sampled flag set.
fn sampled(val: &[u8]) -> bool {
    let parts: Vec<&[u8]> = val.split(|&b| b == b'-').collect();
    if parts.len() != 4 || parts[3].len() != 2 {
        return false;
    }
    std::str::from_utf8(parts[3])
        .ok()
        .and_then(|s| i8::from_str_radix(s, 16).ok())
        .is_some_and(|v| v & 1 == 1)
}

/// `hdr` with header `name` set to `value` as nats-server sets it: a line
/// of that name (exact case) is taken out and the new one goes last.
pub fn set_header(hdr: &[u8], name: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(hdr.len() + name.len() + value.len() + 4);
    let body_end = hdr.len().saturating_sub(2); // the final empty line
    for (i, line) in hdr[..body_end].split_inclusive(|&b| b == b'\n').enumerate() {
        let is_it = i > 0 && line.len() > name.len() && line.starts_with(name.as_bytes()) && line[name.len()] == b':';
        if !is_it {
            out.extend_from_slice(line);
        }
    }
    if out.is_empty() {
        out.extend_from_slice(b"NATS/1.0\r\n");
    }
    out.extend_from_slice(format!("{name}: {value}\r\n\r\n").as_bytes());
    out
}

/// `message` (headers of `header_len` bytes, then the payload) with header
/// `name` set to `value` ([`set_header`]), and its new header length.
pub fn with_header(message: &[u8], header_len: usize, name: &str, value: &str) -> (Vec<u8>, usize) {
    let h = header_len.min(message.len());
    let mut out = set_header(&message[..h], name, value);
    let new_len = out.len();
    out.extend_from_slice(&message[h..]);
    (out, new_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(hdr: &str) -> TraceRequest {
        match read(hdr.as_bytes()) {
            TraceAsk::Trace(r) => r,
            TraceAsk::None => panic!("no trace in {hdr:?}"),
        }
    }

    #[test]
    fn reads_a_trace_request_as_nats_server() {
        let r = req("NATS/1.0\r\nNats-Trace-Dest: my.trace\r\nNats-Trace-Only: ON\r\nX:  a \r\nX: b\r\n\r\n");
        assert_eq!(r.dest, "my.trace");
        assert!(r.only && !r.external);
        assert_eq!(
            r.headers,
            vec![
                ("Nats-Trace-Dest".to_string(), vec!["my.trace".to_string()]),
                ("Nats-Trace-Only".to_string(), vec!["ON".to_string()]),
                ("X".to_string(), vec!["a".to_string(), "b".to_string()]),
            ]
        );
        assert!(!req("NATS/1.0\r\nNats-Trace-Dest: d\r\nNats-Trace-Only: yes\r\n\r\n").only);
        let hop = req("NATS/1.0\r\nNats-Trace-Dest: d\r\nNats-Trace-Hop: 1.2\r\n\r\n");
        assert_eq!(hop.hop.as_deref(), Some("1.2"));
    }

    #[test]
    fn the_quick_look_misses_no_request() {
        assert!(may_ask(b"NATS/1.0\r\nNats-Trace-Dest: d\r\n\r\n"));
        assert!(may_ask(b"NATS/1.0\r\nTRACEPARENT: x\r\n\r\n"));
        assert!(may_ask(b"NATS/1.0\r\ntraceParent: x\r\n\r\n"));
        assert!(!may_ask(b"NATS/1.0\r\nNats-Msg-Id: 1\r\n\r\n"));
    }

    #[test]
    fn what_is_not_a_trace_request() {
        for h in [
            "NATS/1.0\r\nX: y\r\n\r\n",
            "NATS/1.0\r\nnats-trace-dest: d\r\n\r\n",
            "NATS/1.0\r\nNats-Trace-Dest: trace disabled\r\n\r\n",
            "NATS/1.0\r\nNats-Trace-Dest:\r\n\r\n",
            "NATS/1.0 503\r\nNats-Trace-Dest: d\r\n\r\n",
            "NATS/1.0\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00\r\n\r\n",
        ] {
            assert_eq!(read(h.as_bytes()), TraceAsk::None, "{h:?}");
        }
        let ext = req("NATS/1.0\r\nTraceParent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n");
        assert!(ext.external && ext.dest.is_empty());
    }

    #[test]
    fn sets_a_header_last() {
        assert_eq!(
            set_header(b"NATS/1.0\r\nNats-Trace-Hop: 1\r\nA: 1\r\n\r\n", TRACE_HOP, "1.3"),
            b"NATS/1.0\r\nA: 1\r\nNats-Trace-Hop: 1.3\r\n\r\n"
        );
        assert_eq!(
            set_header(b"NATS/1.0\r\nA: 1\r\n\r\n", TRACE_HOP, "2"),
            b"NATS/1.0\r\nA: 1\r\nNats-Trace-Hop: 2\r\n\r\n"
        );
    }
}
