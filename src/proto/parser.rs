//! Zero-copy parser for the client side of the NATS protocol.
//!
//! [`parse`] looks at the front of the read buffer and returns either one
//! complete operation, with slices that point into the buffer, or
//! [`Parsed::Incomplete`] when more bytes are needed. It keeps no state
//! between calls: the caller keeps the unconsumed tail and calls again after
//! the next read, so an operation split across reads costs one re-scan of its
//! control line (at most `max_control_line` bytes). It never allocates.
//!
//! Errors follow nats-server's parser: an unknown operation or stray bytes
//! after a payload is [`ParseError::UnknownOp`]; wrong argument lists are
//! [`ParseError::BadArgs`] (closed without `-ERR`).

use thiserror::Error;

/// The limits a parse call enforces; they may differ per connection.
#[derive(Clone, Copy, Debug)]
pub struct ParseLimits {
    /// Longest argument part of a control line (nats-server `max_control_line`).
    pub max_control_line: usize,
    /// Largest PUB/HPUB payload (headers included).
    pub max_payload: usize,
    /// Whether HPUB is allowed on this connection.
    pub headers: bool,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_control_line: 4096,
            max_payload: 1024 * 1024,
            headers: true,
        }
    }
}

/// Upper bound on a CONNECT or INFO line that is still arriving: large JWTs
/// make long CONNECT lines legitimate, but the buffer must stay bounded, as
/// must what an unauthenticated connection can make the server hold.
/// nats-server refuses a CONNECT longer than `max_control_line` that spans
/// reads, and its reads are at most 64 KiB, so no CONNECT past 64 KiB
/// gets through it either.
pub const MAX_JSON_LINE: usize = 64 * 1024;

/// One operation a client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// `CONNECT <json>`
    Connect(&'a [u8]),
    /// `PUB <subject> [reply] <size>` and its payload.
    Pub {
        /// Destination subject (not yet validated).
        subject: &'a [u8],
        /// Optional reply subject.
        reply: Option<&'a [u8]>,
        /// The payload bytes.
        payload: &'a [u8],
    },
    /// `HPUB <subject> [reply] <hdr size> <total size>` and its headers and payload.
    HPub {
        /// Destination subject (not yet validated).
        subject: &'a [u8],
        /// Optional reply subject.
        reply: Option<&'a [u8]>,
        /// Number of bytes of `message` that are the header block.
        header_len: usize,
        /// Header block followed by the payload.
        message: &'a [u8],
    },
    /// `SUB <subject> [queue] <sid>`
    Sub {
        /// Subscription subject (not yet validated).
        subject: &'a [u8],
        /// Optional queue group.
        queue: Option<&'a [u8]>,
        /// Client-chosen subscription id.
        sid: &'a [u8],
    },
    /// `UNSUB <sid> [max]`; `max` is `Some(-1)`-like `None` when absent and
    /// `Some(0)` when it was not a number (nats-server then removes at once).
    Unsub {
        /// Client-chosen subscription id.
        sid: &'a [u8],
        /// Auto-unsubscribe after this many messages.
        max: Option<u64>,
    },
    /// `PING`
    Ping,
    /// `PONG`
    Pong,
    /// `+OK` (ignored by the server).
    Ok,
    /// `-ERR <text>` sent by a client (the server closes the connection).
    Err(&'a [u8]),
    /// `INFO <json>` sent by a client (decoded and ignored).
    Info(&'a [u8]),
}

/// Result of one parse call.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// One operation and the number of buffer bytes it used.
    Op(Op<'a>, usize),
    /// The buffer holds only part of an operation. `need` is the total
    /// buffer length required when it is known (a payload being received).
    Incomplete {
        /// Bytes the whole operation needs, when known.
        need: Option<usize>,
    },
}

/// Why the byte stream cannot be parsed. Every variant closes the connection.
#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum ParseError {
    /// Unknown operation, or the payload was not followed by CRLF.
    #[error("unknown protocol operation")]
    UnknownOp,
    /// Control-line arguments longer than `max_control_line`.
    #[error("maximum control line exceeded")]
    MaxControlLine,
    /// PUB/HPUB size (given) larger than the connection's max payload.
    #[error("maximum payload violation")]
    MaxPayload(usize),
    /// Malformed argument list for the named operation (closed without -ERR).
    #[error("protocol violation: bad {0} arguments")]
    BadArgs(&'static str),
    /// HPUB on a connection that did not enable headers.
    #[error("message headers not supported")]
    HeadersNotSupported,
}

enum Kw {
    Full,
    Partial,
    No,
}

/// Case-insensitive match of `kw` (upper case) at the front of `buf`.
fn keyword(buf: &[u8], kw: &[u8]) -> Kw {
    let n = buf.len().min(kw.len());
    if buf[..n].iter().zip(kw).any(|(b, k)| b.to_ascii_uppercase() != *k) {
        return Kw::No;
    }
    if n < kw.len() {
        Kw::Partial
    } else {
        Kw::Full
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Connect,
    Pub,
    HPub,
    Sub,
    Unsub,
    Ping,
    Pong,
    Ok,
    Err,
    Info,
}

/// Which operations carry arguments.
fn needs_args(k: Kind) -> bool {
    !matches!(k, Kind::Ping | Kind::Pong | Kind::Ok)
}

/// Which operations need a space or tab between keyword and arguments
/// (nats-server lets the JSON of CONNECT and INFO follow directly).
fn needs_separator(k: Kind) -> bool {
    needs_args(k) && !matches!(k, Kind::Connect | Kind::Info)
}

const OPS_P: [(&[u8], Kind); 3] = [(b"PUB", Kind::Pub), (b"PING", Kind::Ping), (b"PONG", Kind::Pong)];

/// Recognises the operation keyword. `Ok(None)` means more bytes are needed.
fn op_kind(buf: &[u8]) -> Result<Option<(Kind, usize)>, ParseError> {
    let single: &[(&[u8], Kind)] = match buf[0].to_ascii_uppercase() {
        b'C' => &[(b"CONNECT", Kind::Connect)],
        b'P' => &OPS_P,
        b'H' => &[(b"HPUB", Kind::HPub)],
        b'S' => &[(b"SUB", Kind::Sub)],
        b'U' => &[(b"UNSUB", Kind::Unsub)],
        b'+' => &[(b"+OK", Kind::Ok)],
        b'-' => &[(b"-ERR", Kind::Err)],
        b'I' => &[(b"INFO", Kind::Info)],
        _ => return Err(ParseError::UnknownOp),
    };
    let mut partial = false;
    for (kw, kind) in single {
        match keyword(buf, kw) {
            Kw::Full => return Ok(Some((*kind, kw.len()))),
            Kw::Partial => partial = true,
            Kw::No => {}
        }
    }
    if partial {
        Ok(None)
    } else {
        Err(ParseError::UnknownOp)
    }
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits control-line arguments on runs of spaces and tabs.
fn split_args<'a>(line: &'a [u8], out: &mut [&'a [u8]; 5]) -> usize {
    let mut n = 0;
    for a in line.split(|&b| is_ws(b)).filter(|a| !a.is_empty()) {
        if n == out.len() {
            return n + 1;
        }
        out[n] = a;
        n += 1;
    }
    n
}

/// Parses a decimal size the way nats-server does: digits only.
pub fn parse_size(b: &[u8]) -> Option<usize> {
    if b.is_empty() || b.len() > 18 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0usize, |n, d| n * 10 + (d - b'0') as usize))
}

/// Parses the operation at the front of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &ParseLimits) -> Result<Parsed<'a>, ParseError> {
    const MORE: Parsed<'static> = Parsed::Incomplete { need: None };
    if buf.is_empty() {
        return Ok(MORE);
    }
    let Some((kind, kw_len)) = op_kind(buf)? else {
        return Ok(MORE);
    };
    let mut args_start = kw_len;
    if needs_args(kind) {
        if needs_separator(kind) {
            match buf.get(kw_len) {
                None => return Ok(MORE),
                Some(&b) if is_ws(b) => {}
                Some(_) => return Err(ParseError::UnknownOp),
            }
            args_start += 1;
        }
        while args_start < buf.len() && is_ws(buf[args_start]) {
            args_start += 1;
        }
    }
    let json_line = matches!(kind, Kind::Connect | Kind::Info | Kind::Err);
    let Some(nl) = memchr(b'\n', &buf[args_start.min(buf.len())..]).map(|i| i + args_start) else {
        let pending = buf.len().saturating_sub(args_start);
        let limit = if json_line {
            MAX_JSON_LINE
        } else {
            limits.max_control_line
        };
        if needs_args(kind) && pending > limit {
            return Err(ParseError::MaxControlLine);
        }
        return Ok(MORE);
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
    let args = &buf[args_start.min(line_end)..line_end];
    let after = nl + 1;
    let op = match kind {
        Kind::Ping => Op::Ping,
        Kind::Pong => Op::Pong,
        Kind::Ok => Op::Ok,
        Kind::Connect => Op::Connect(args),
        Kind::Info => Op::Info(args),
        Kind::Err => Op::Err(args),
        Kind::Sub | Kind::Unsub | Kind::Pub | Kind::HPub => {
            if args.len() > limits.max_control_line {
                return Err(ParseError::MaxControlLine);
            }
            return parse_with_args(kind, args, buf, after, limits);
        }
    };
    Ok(Parsed::Op(op, after))
}

fn parse_with_args<'a>(
    kind: Kind,
    args: &'a [u8],
    buf: &'a [u8],
    after: usize,
    limits: &ParseLimits,
) -> Result<Parsed<'a>, ParseError> {
    let mut a: [&[u8]; 5] = [&[]; 5];
    let n = split_args(args, &mut a);
    match kind {
        Kind::Sub => {
            let op = match n {
                2 => Op::Sub {
                    subject: a[0],
                    queue: None,
                    sid: a[1],
                },
                3 => Op::Sub {
                    subject: a[0],
                    queue: Some(a[1]),
                    sid: a[2],
                },
                _ => return Err(ParseError::BadArgs("SUB")),
            };
            Ok(Parsed::Op(op, after))
        }
        Kind::Unsub => {
            let op = match n {
                1 => Op::Unsub { sid: a[0], max: None },
                2 => Op::Unsub {
                    sid: a[0],
                    max: Some(parse_size(a[1]).unwrap_or(0) as u64),
                },
                _ => return Err(ParseError::BadArgs("UNSUB")),
            };
            Ok(Parsed::Op(op, after))
        }
        Kind::Pub => {
            let (subject, reply, size) = match n {
                2 => (a[0], None, a[1]),
                3 => (a[0], Some(a[1]), a[2]),
                _ => return Err(ParseError::BadArgs("PUB")),
            };
            let size = parse_size(size).ok_or(ParseError::BadArgs("PUB"))?;
            if size > limits.max_payload {
                return Err(ParseError::MaxPayload(size));
            }
            Ok(match payload(buf, after, size)? {
                Some((payload, used)) => Parsed::Op(
                    Op::Pub {
                        subject,
                        reply,
                        payload,
                    },
                    used,
                ),
                None => Parsed::Incomplete {
                    need: Some(after + size + 2),
                },
            })
        }
        Kind::HPub => {
            if !limits.headers {
                return Err(ParseError::HeadersNotSupported);
            }
            let (subject, reply, hdr, total) = match n {
                3 => (a[0], None, a[1], a[2]),
                4 => (a[0], Some(a[1]), a[2], a[3]),
                _ => return Err(ParseError::BadArgs("HPUB")),
            };
            let header_len = parse_size(hdr).ok_or(ParseError::BadArgs("HPUB"))?;
            let total = parse_size(total).ok_or(ParseError::BadArgs("HPUB"))?;
            if header_len > total {
                return Err(ParseError::BadArgs("HPUB"));
            }
            if total > limits.max_payload {
                return Err(ParseError::MaxPayload(total));
            }
            Ok(match payload(buf, after, total)? {
                Some((message, used)) => Parsed::Op(
                    Op::HPub {
                        subject,
                        reply,
                        header_len,
                        message,
                    },
                    used,
                ),
                None => Parsed::Incomplete {
                    need: Some(after + total + 2),
                },
            })
        }
        _ => unreachable!("only argument operations reach here"),
    }
}

/// The payload of `size` bytes at `start` and the position after its CRLF.
fn payload(buf: &[u8], start: usize, size: usize) -> Result<Option<(&[u8], usize)>, ParseError> {
    let end = start + size;
    match buf.get(end) {
        None => return Ok(None),
        Some(b'\r') => {}
        Some(_) => return Err(ParseError::UnknownOp),
    }
    match buf.get(end + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((&buf[start..end], end + 2))),
        Some(_) => Err(ParseError::UnknownOp),
    }
}

/// Position of the first `needle` byte in `hay`.
#[inline]
fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> Result<Parsed<'_>, ParseError> {
        parse(buf, &ParseLimits::default())
    }

    fn op(buf: &[u8]) -> Op<'_> {
        match one(buf).unwrap() {
            Parsed::Op(op, used) => {
                assert_eq!(used, buf.len(), "consumed all of {:?}", String::from_utf8_lossy(buf));
                op
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn simple_ops_any_case() {
        assert_eq!(op(b"PING\r\n"), Op::Ping);
        assert_eq!(op(b"ping\r\n"), Op::Ping);
        assert_eq!(op(b"PiNg\n"), Op::Ping);
        assert_eq!(op(b"PONG\r\n"), Op::Pong);
        assert_eq!(op(b"+OK\r\n"), Op::Ok);
        assert_eq!(op(b"-ERR 'x'\r\n"), Op::Err(b"'x'"));
        assert_eq!(op(b"CONNECT {}\r\n"), Op::Connect(b"{}"));
        assert_eq!(op(b"connect\t {\"a\":1}\r\n"), Op::Connect(b"{\"a\":1}"));
        assert_eq!(op(b"INFO {}\r\n"), Op::Info(b"{}"));
        assert_eq!(op(b"CONNECT{}\r\n"), Op::Connect(b"{}"));
    }

    #[test]
    fn pub_forms() {
        assert_eq!(
            op(b"PUB foo 5\r\nhello\r\n"),
            Op::Pub {
                subject: b"foo",
                reply: None,
                payload: b"hello"
            }
        );
        assert_eq!(
            op(b"pub\tfoo  \t bar 0\r\n\r\n"),
            Op::Pub {
                subject: b"foo",
                reply: Some(b"bar"),
                payload: b""
            }
        );
        assert_eq!(
            op(b"HPUB foo r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"),
            Op::HPub {
                subject: b"foo",
                reply: Some(b"r"),
                header_len: 12,
                message: b"NATS/1.0\r\n\r\nhi"
            }
        );
    }

    #[test]
    fn sub_unsub() {
        assert_eq!(
            op(b"SUB foo 1\r\n"),
            Op::Sub {
                subject: b"foo",
                queue: None,
                sid: b"1"
            }
        );
        assert_eq!(
            op(b"sub foo q 1\r\n"),
            Op::Sub {
                subject: b"foo",
                queue: Some(b"q"),
                sid: b"1"
            }
        );
        assert_eq!(op(b"UNSUB 1\r\n"), Op::Unsub { sid: b"1", max: None });
        assert_eq!(
            op(b"UNSUB 1 5\r\n"),
            Op::Unsub {
                sid: b"1",
                max: Some(5)
            }
        );
        assert_eq!(
            op(b"UNSUB 1 x\r\n"),
            Op::Unsub {
                sid: b"1",
                max: Some(0)
            }
        );
    }

    #[test]
    fn every_split_point_is_incomplete_then_whole() {
        let full = b"HPUB foo r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n";
        for cut in 0..full.len() {
            assert!(
                matches!(one(&full[..cut]).unwrap(), Parsed::Incomplete { .. }),
                "cut {cut}"
            );
        }
        assert!(matches!(one(full).unwrap(), Parsed::Op(_, n) if n == full.len()));
    }

    #[test]
    fn errors() {
        assert_eq!(one(b"FOO\r\n"), Err(ParseError::UnknownOp));
        assert_eq!(one(b"\r\n"), Err(ParseError::UnknownOp));
        assert_eq!(one(b"PUBX foo 1\r\n"), Err(ParseError::UnknownOp));
        assert_eq!(one(b"PUB foo\r\n"), Err(ParseError::BadArgs("PUB")));
        assert_eq!(one(b"PUB foo -1\r\n"), Err(ParseError::BadArgs("PUB")));
        assert_eq!(one(b"PUB a b c 1\r\n"), Err(ParseError::BadArgs("PUB")));
        assert_eq!(one(b"SUB foo\r\n"), Err(ParseError::BadArgs("SUB")));
        assert_eq!(one(b"PUB foo 2\r\nhiX\n"), Err(ParseError::UnknownOp));
        assert_eq!(one(b"PUB foo 2\r\nhi\rX"), Err(ParseError::UnknownOp));
        assert_eq!(one(b"HPUB foo 5 2\r\n"), Err(ParseError::BadArgs("HPUB")));
        let big = format!("PUB foo {}\r\n", 1024 * 1024 + 1);
        assert!(matches!(one(big.as_bytes()), Err(ParseError::MaxPayload(_))));
        let long = format!("PUB {} 1\r\n", "a".repeat(5000));
        assert_eq!(one(long.as_bytes()), Err(ParseError::MaxControlLine));
        let partial = format!("SUB {}", "a".repeat(5000));
        assert_eq!(one(partial.as_bytes()), Err(ParseError::MaxControlLine));
        let limits = ParseLimits {
            headers: false,
            ..Default::default()
        };
        assert_eq!(
            parse(b"HPUB foo 0 0\r\n\r\n", &limits),
            Err(ParseError::HeadersNotSupported)
        );
    }
}
