//! Zero-copy parser for the server-to-server route protocol (nats-server's
//! `RS+`, `RS-`, `RMSG`, `HMSG`, `LS+`, `LS-`, `LMSG`, plus INFO, CONNECT,
//! PING, PONG, +OK and -ERR). Stateless like the client parser: one
//! operation from the front of the buffer, or "need more". On a route
//! dedicated to one account (`route_account` in INFO) the account is left
//! out of every operation, so the caller says which form it reads.

use super::parser::ParseError;

/// Most queue group names one routed message may carry.
pub const MAX_QUEUES: usize = 64;

/// One operation a peer server sent over a route.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteOp<'a> {
    /// `INFO <json>`
    Info(&'a [u8]),
    /// `CONNECT <json>`
    Connect(&'a [u8]),
    /// `PING`
    Ping,
    /// `PONG`
    Pong,
    /// `+OK`
    Ok,
    /// `-ERR <text>`
    Err(&'a [u8]),
    /// `RS+`/`LS+`: the peer has interest (a queue group with its weight).
    Sub {
        /// The account, unless the route is dedicated to one.
        account: Option<&'a [u8]>,
        /// The subject.
        subject: &'a [u8],
        /// Queue group and weight.
        queue: Option<(&'a [u8], u32)>,
        /// `LS+` over a route: the leaf cluster the peer holds this
        /// interest for (counted apart from its own, as nats-server keys
        /// it).
        origin: Option<&'a [u8]>,
    },
    /// `RS-`/`LS-`: the peer's interest is gone.
    Unsub {
        /// The account, unless the route is dedicated to one.
        account: Option<&'a [u8]>,
        /// The subject.
        subject: &'a [u8],
        /// Queue group.
        queue: Option<&'a [u8]>,
        /// `LS-` over a route: its leaf cluster (peers name it, as this
        /// server advertises `lnocu`).
        origin: Option<&'a [u8]>,
    },
    /// `RMSG`/`HMSG`/`LMSG` and the message.
    Msg(RoutedMsg<'a>),
}

/// A message that came over a route.
#[derive(Debug, PartialEq, Eq)]
pub struct RoutedMsg<'a> {
    /// The remote cluster of the leaf connection it came from (`LMSG`
    /// over a route).
    pub origin: Option<&'a [u8]>,
    /// The account, unless the route is dedicated to one.
    pub account: Option<&'a [u8]>,
    /// Subject.
    pub subject: &'a [u8],
    /// Reply subject.
    pub reply: Option<&'a [u8]>,
    /// Queue groups on this server the sender picked for it.
    pub queues: Vec<&'a [u8]>,
    /// Header block length at the front of `message`.
    pub header_len: Option<usize>,
    /// Headers and payload.
    pub message: &'a [u8],
}

/// The result of one parse call.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteParsed<'a> {
    /// One operation and the bytes it used.
    Op(RouteOp<'a>, usize),
    /// More bytes are needed.
    Incomplete,
}

fn split(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| *b == b' ' || *b == b'\t').filter(|a| !a.is_empty())
}

fn number(a: &[u8]) -> Result<usize, ParseError> {
    if a.is_empty() || a.len() > 12 || !a.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadArgs("route"));
    }
    Ok(a.iter().fold(0usize, |n, d| n * 10 + (d - b'0') as usize))
}

/// Parses one operation from the front of `buf`. `with_account`: whether
/// operations name their account (false on a dedicated route).
/// `max_control_line` bounds a line still arriving; `max_payload` a
/// message.
pub fn parse(
    buf: &[u8],
    with_account: bool,
    max_control_line: usize,
    max_payload: usize,
) -> Result<RouteParsed<'_>, ParseError> {
    parse_with(buf, with_account, false, max_control_line, max_payload)
}

/// Parses one operation from a leaf node connection: `LS+ <subject>[ <queue>
/// <weight>]`, `LS- <subject>[ <queue>]`, `LMSG <subject> [reply | + reply
/// queues | \| queues] <size>` and `HMSG` (header size before the total),
/// none naming an account or an origin (the connection is bound to one
/// account), plus INFO, CONNECT, PING, PONG and -ERR.
pub fn parse_leaf(buf: &[u8], max_control_line: usize, max_payload: usize) -> Result<RouteParsed<'_>, ParseError> {
    parse_with(buf, false, true, max_control_line, max_payload)
}

fn parse_with(
    buf: &[u8],
    with_account: bool,
    leaf: bool,
    max_control_line: usize,
    max_payload: usize,
) -> Result<RouteParsed<'_>, ParseError> {
    let Some(nl) = buf.iter().position(|b| *b == b'\n') else {
        // INFO and CONNECT lines may be long (JSON); others are bounded.
        if buf.len() > max_control_line.max(super::parser::MAX_JSON_LINE) {
            return Err(ParseError::MaxControlLine);
        }
        return Ok(RouteParsed::Incomplete);
    };
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (verb, rest) = match line.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    let used = nl + 1;
    let upper: Vec<u8> = verb.to_ascii_uppercase();
    let op = match &upper[..] {
        b"PING" => RouteOp::Ping,
        b"PONG" => RouteOp::Pong,
        b"+OK" => RouteOp::Ok,
        b"-ERR" => RouteOp::Err(rest.trim_ascii()),
        b"INFO" => RouteOp::Info(rest.trim_ascii()),
        b"CONNECT" => RouteOp::Connect(rest.trim_ascii()),
        b"RS+" | b"RS-" | b"RMSG" if leaf => return Err(ParseError::UnknownOp),
        b"RS+" | b"LS+" => {
            let mut a: Vec<&[u8]> = split(rest).collect();
            let origin = if upper[0] == b'L' && !leaf && !a.is_empty() {
                Some(a.remove(0)) // the origin cluster (over a route)
            } else {
                None
            };
            let (account, a) = take_account(&a, with_account)?;
            match a {
                [s] => RouteOp::Sub {
                    account,
                    subject: s,
                    queue: None,
                    origin,
                },
                [s, q, w] => RouteOp::Sub {
                    account,
                    subject: s,
                    queue: Some((q, u32::try_from(number(w)?).map_err(|_| ParseError::BadArgs("route"))?)),
                    origin,
                },
                // nats-server reads a queue without a weight as weight 1.
                [s, q] => RouteOp::Sub {
                    account,
                    subject: s,
                    queue: Some((q, 1)),
                    origin,
                },
                _ => return Err(ParseError::BadArgs("route")),
            }
        }
        b"RS-" | b"LS-" => {
            let mut a: Vec<&[u8]> = split(rest).collect();
            // LS- over a route names its origin: this server advertises
            // `lnocu`.
            let origin = if upper[0] == b'L' && !leaf && !a.is_empty() {
                Some(a.remove(0))
            } else {
                None
            };
            let (account, a) = take_account(&a, with_account)?;
            match a {
                [s] => RouteOp::Unsub {
                    account,
                    subject: s,
                    queue: None,
                    origin,
                },
                [s, q] => RouteOp::Unsub {
                    account,
                    subject: s,
                    queue: Some(q),
                    origin,
                },
                _ => return Err(ParseError::BadArgs("route")),
            }
        }
        b"RMSG" | b"HMSG" | b"LMSG" => {
            let mut a: Vec<&[u8]> = split(rest).collect();
            let origin = if upper[0] == b'L' && !leaf && !a.is_empty() {
                Some(a.remove(0)) // the origin cluster (over a route)
            } else {
                None
            };
            // Over a route LMSG always carries the header size (0 when
            // none); over a leaf connection only HMSG does.
            let headers = match upper[0] {
                b'R' => false,
                b'L' => !leaf,
                _ => true,
            };
            let (account, a) = take_account(&a, with_account)?;
            let (sizes, a) = match (headers, a.len()) {
                (true, n) if n >= 3 => (&a[n - 2..], &a[..n - 2]),
                (false, n) if n >= 2 => (&a[n - 1..], &a[..n - 1]),
                _ => return Err(ParseError::BadArgs("route")),
            };
            let (subject, reply, queues) = match a {
                [s] => (*s, None, Vec::new()),
                [s, r] => (*s, Some(*r), Vec::new()),
                [s, m, rest @ ..] if *m == b"+" && !rest.is_empty() => (*s, Some(rest[0]), rest[1..].to_vec()),
                [s, m, rest @ ..] if *m == b"|" => (*s, None, rest.to_vec()),
                _ => return Err(ParseError::BadArgs("route")),
            };
            if queues.len() > MAX_QUEUES {
                return Err(ParseError::BadArgs("route"));
            }
            let total = number(sizes[sizes.len() - 1])?;
            let header_len = if headers { Some(number(sizes[0])?) } else { None };
            if header_len.is_some_and(|h| h > total) || total > max_payload {
                return Err(ParseError::BadArgs("route"));
            }
            let end = used + total;
            if buf.len() < end + 2 {
                return Ok(RouteParsed::Incomplete);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ParseError::UnknownOp);
            }
            // A routed LMSG with a header size of 0 has no headers.
            let header_len = header_len.filter(|h| !(upper[0] == b'L' && *h == 0));
            return Ok(RouteParsed::Op(
                RouteOp::Msg(RoutedMsg {
                    origin,
                    account,
                    subject,
                    reply,
                    queues,
                    header_len,
                    message: &buf[used..end],
                }),
                end + 2,
            ));
        }
        _ => return Err(ParseError::UnknownOp),
    };
    Ok(RouteParsed::Op(op, used))
}

type Args<'s, 'a> = (Option<&'a [u8]>, &'s [&'a [u8]]);

fn take_account<'s, 'a>(a: &'s [&'a [u8]], with_account: bool) -> Result<Args<'s, 'a>, ParseError> {
    if !with_account {
        return Ok((None, a));
    }
    match a.split_first() {
        Some((acc, rest)) => Ok((Some(*acc), rest)),
        None => Err(ParseError::BadArgs("route")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(b: &[u8], acc: bool) -> RouteOp<'_> {
        match parse(b, acc, 4096, 1 << 20).unwrap() {
            RouteParsed::Op(op, n) => {
                assert_eq!(n, b.len(), "used all of {:?}", String::from_utf8_lossy(b));
                op
            }
            RouteParsed::Incomplete => panic!("incomplete"),
        }
    }

    #[test]
    fn interest_forms() {
        assert_eq!(
            one(b"RS+ $G foo.* q 3\r\n", true),
            RouteOp::Sub {
                account: Some(b"$G"),
                subject: b"foo.*",
                queue: Some((b"q", 3)),
                origin: None,
            }
        );
        assert_eq!(
            one(b"RS+ foo\r\n", false),
            RouteOp::Sub {
                account: None,
                subject: b"foo",
                queue: None,
                origin: None,
            }
        );
        assert_eq!(
            one(b"LS+ hub $G foo\r\n", true),
            RouteOp::Sub {
                account: Some(b"$G"),
                subject: b"foo",
                queue: None,
                origin: Some(b"hub"),
            }
        );
        assert_eq!(
            one(b"RS- A bar q\r\n", true),
            RouteOp::Unsub {
                account: Some(b"A"),
                subject: b"bar",
                queue: Some(b"q"),
                origin: None,
            }
        );
        assert_eq!(parse(b"RS+ $G\r\n", true, 4096, 10), Err(ParseError::BadArgs("route")));
        assert_eq!(parse(b"XYZ\r\n", true, 4096, 10), Err(ParseError::UnknownOp));
    }

    #[test]
    fn message_forms() {
        let m = |b: &'static [u8], acc| match one(b, acc) {
            RouteOp::Msg(m) => m,
            o => panic!("{o:?}"),
        };
        let r = m(b"RMSG $G foo r 2\r\nhi\r\n", true);
        assert_eq!(
            (r.account, r.subject, r.reply, r.message),
            (Some(&b"$G"[..]), &b"foo"[..], Some(&b"r"[..]), &b"hi"[..])
        );
        let r = m(b"RMSG A foo + r q1 q2 2\r\nhi\r\n", true);
        assert_eq!((r.reply, r.queues), (Some(&b"r"[..]), vec![&b"q1"[..], &b"q2"[..]]));
        let r = m(b"RMSG A foo | q 0\r\n\r\n", true);
        assert_eq!((r.reply, r.queues, r.message), (None, vec![&b"q"[..]], &b""[..]));
        let r = m(b"HMSG foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n", false);
        assert_eq!((r.account, r.header_len, r.message.len()), (None, Some(12), 14));
        let r = m(b"LMSG hub $G foo 0 2\r\nhi\r\n", true);
        assert_eq!((r.subject, r.header_len), (&b"foo"[..], None));
        assert_eq!(
            parse(b"RMSG $G foo 5\r\nhi", true, 4096, 100),
            Ok(RouteParsed::Incomplete)
        );
        assert_eq!(
            parse(b"RMSG $G foo 2\r\nhiXX", true, 4096, 100),
            Err(ParseError::UnknownOp)
        );
        assert_eq!(
            parse(b"RMSG $G foo 200\r\n", true, 4096, 100),
            Err(ParseError::BadArgs("route"))
        );
        assert_eq!(
            parse(b"HMSG $G foo 9 2\r\n", true, 4096, 100),
            Err(ParseError::BadArgs("route"))
        );
    }

    #[test]
    fn control_lines() {
        assert_eq!(one(b"PING\r\n", true), RouteOp::Ping);
        assert_eq!(one(b"pong\r\n", true), RouteOp::Pong);
        assert_eq!(one(b"INFO {\"a\":1}\r\n", true), RouteOp::Info(b"{\"a\":1}"));
        assert_eq!(one(b"-ERR 'Unknown'\r\n", true), RouteOp::Err(b"'Unknown'"));
        assert_eq!(parse(b"PIN", true, 4096, 10), Ok(RouteParsed::Incomplete));
    }

    /// Every operation of `bytes` from a leaf connection.
    fn leaf_ops(mut b: &[u8]) -> Vec<RouteOp<'_>> {
        let mut v = Vec::new();
        while !b.is_empty() {
            match parse_leaf(b, 4096, 1 << 20).unwrap() {
                RouteParsed::Op(op, n) => {
                    v.push(op);
                    b = &b[n..];
                }
                RouteParsed::Incomplete => panic!("incomplete"),
            }
        }
        v
    }

    #[test]
    fn leaf_connection_forms_as_nats_server_sends_them() {
        // Captured from nats-server 2.15.1 (hub and leaf sides).
        let ops = leaf_ops(
            b"LS+ hub.plain\r\nLS+ hub.q hq 2\r\nLS- hub.q hq\r\nLMSG foo.hub 5\r\nhello\r\n\
              LMSG foo.hub my.reply 11\r\nhello-reply\r\nLMSG q.hub | grp 4\r\nqmsg\r\n\
              LMSG leafq + rr lq 12\r\nq-from-hub-r\r\nHMSG foo.hub r2 18 21\r\nNATS/1.0\r\nK: V\r\n\r\nhp2\r\n\
              HMSG leafq + rr lq 18 23\r\nNATS/1.0\r\nA: B\r\n\r\nq-hdr\r\n",
        );
        assert_eq!(
            ops[0],
            RouteOp::Sub {
                account: None,
                subject: b"hub.plain",
                queue: None,
                origin: None,
            }
        );
        assert_eq!(
            ops[1],
            RouteOp::Sub {
                account: None,
                subject: b"hub.q",
                queue: Some((b"hq", 2)),
                origin: None,
            }
        );
        assert_eq!(
            ops[2],
            RouteOp::Unsub {
                account: None,
                subject: b"hub.q",
                queue: Some(b"hq"),
                origin: None,
            }
        );
        let msg = |i: usize| match &ops[i] {
            RouteOp::Msg(m) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (msg(3).subject, msg(3).reply, msg(3).message),
            (&b"foo.hub"[..], None, &b"hello"[..])
        );
        assert_eq!(msg(4).reply, Some(&b"my.reply"[..]));
        assert_eq!((msg(5).reply, msg(5).queues.clone()), (None, vec![&b"grp"[..]]));
        assert_eq!(
            (msg(6).reply, msg(6).queues.clone()),
            (Some(&b"rr"[..]), vec![&b"lq"[..]])
        );
        assert_eq!(
            (msg(7).reply, msg(7).header_len, msg(7).message.len()),
            (Some(&b"r2"[..]), Some(18), 21)
        );
        assert_eq!((msg(8).queues.clone(), msg(8).header_len), (vec![&b"lq"[..]], Some(18)));
        assert_eq!(parse_leaf(b"RS+ $G foo\r\n", 4096, 100), Err(ParseError::UnknownOp));
    }
}
