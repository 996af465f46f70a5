//! Encoders for what the server sends: MSG, HMSG, PING, PONG, +OK, -ERR, INFO.
//! They append to an outbound buffer and never allocate beyond growing it.

use super::errors::WireError;

/// `PING\r\n`
pub const PING: &[u8] = b"PING\r\n";
/// `PONG\r\n`
pub const PONG: &[u8] = b"PONG\r\n";
/// `+OK\r\n`
pub const OK: &[u8] = b"+OK\r\n";

fn put_usize(out: &mut Vec<u8>, n: usize) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(n).as_bytes());
}

/// Appends `MSG <subject> <sid> [reply] <len>\r\n<payload>\r\n`.
#[inline]
pub fn msg(out: &mut Vec<u8>, subject: &[u8], sid: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
    out.reserve(subject.len() + sid.len() + payload.len() + 32);
    out.extend_from_slice(b"MSG ");
    out.extend_from_slice(subject);
    out.push(b' ');
    out.extend_from_slice(sid);
    out.push(b' ');
    if let Some(r) = reply {
        out.extend_from_slice(r);
        out.push(b' ');
    }
    put_usize(out, payload.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends `HMSG <subject> <sid> [reply] <hdr> <total>\r\n<message>\r\n`,
/// where `message` is the header block followed by the payload.
#[inline]
pub fn hmsg(out: &mut Vec<u8>, subject: &[u8], sid: &[u8], reply: Option<&[u8]>, header_len: usize, message: &[u8]) {
    out.reserve(subject.len() + sid.len() + message.len() + 40);
    out.extend_from_slice(b"HMSG ");
    out.extend_from_slice(subject);
    out.push(b' ');
    out.extend_from_slice(sid);
    out.push(b' ');
    if let Some(r) = reply {
        out.extend_from_slice(r);
        out.push(b' ');
    }
    put_usize(out, header_len);
    out.push(b' ');
    put_usize(out, message.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(message);
    out.extend_from_slice(b"\r\n");
}

/// How a message for another server names its account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerMsgForm<'a> {
    /// Over a route: `RMSG <account> ...`, or `RMSG ...` without the
    /// account on a route dedicated to one account (`None`).
    Route(Option<&'a [u8]>),
    /// Over a leaf node connection: `LMSG ...`.
    Leaf,
    /// Over a route, a message a leaf connection of remote cluster
    /// `origin` sent: `LMSG <origin> [account] ...`, always with the
    /// header size (0 without headers), to peers that said `lnoc`.
    RouteFromLeaf {
        /// The leaf connection's remote cluster.
        origin: &'a [u8],
        /// The account (`None` on a dedicated route).
        account: Option<&'a [u8]>,
    },
}

/// Appends a message for another server: `RMSG [account] <subject>` over a
/// route, `LMSG <subject>` over a leaf node connection, then the reply and
/// the queue groups it is for (`+ <reply> <q>...` with a reply,
/// `| <q>...` without), then the size. With headers (`header_len`) the verb
/// is `HMSG` and both sizes follow, header block first.
pub fn server_msg(
    out: &mut Vec<u8>,
    form: ServerMsgForm<'_>,
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: &[&[u8]],
    header_len: Option<usize>,
    message: &[u8],
) {
    let account = match form {
        ServerMsgForm::Route(a) | ServerMsgForm::RouteFromLeaf { account: a, .. } => a,
        ServerMsgForm::Leaf => None,
    };
    out.reserve(subject.len() + message.len() + account.map_or(0, <[u8]>::len) + 48);
    // A routed leaf message always says its header size.
    let header_len = match form {
        ServerMsgForm::RouteFromLeaf { .. } => Some(header_len.unwrap_or(0)),
        _ => header_len,
    };
    out.extend_from_slice(match (header_len, form) {
        (_, ServerMsgForm::RouteFromLeaf { .. }) => b"LMSG ",
        (Some(_), _) => b"HMSG ",
        (None, ServerMsgForm::Route(_)) => b"RMSG ",
        (None, ServerMsgForm::Leaf) => b"LMSG ",
    });
    if let ServerMsgForm::RouteFromLeaf { origin, .. } = form {
        out.extend_from_slice(origin);
        out.push(b' ');
    }
    if let Some(a) = account {
        out.extend_from_slice(a);
        out.push(b' ');
    }
    out.extend_from_slice(subject);
    out.push(b' ');
    match (reply, queues.is_empty()) {
        (Some(r), true) => {
            out.extend_from_slice(r);
            out.push(b' ');
        }
        (Some(r), false) => {
            out.extend_from_slice(b"+ ");
            out.extend_from_slice(r);
            out.push(b' ');
        }
        (None, false) => out.extend_from_slice(b"| "),
        (None, true) => {}
    }
    for q in queues {
        out.extend_from_slice(q);
        out.push(b' ');
    }
    if let Some(h) = header_len {
        put_usize(out, h);
        out.push(b' ');
    }
    put_usize(out, message.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(message);
    out.extend_from_slice(b"\r\n");
}

/// Appends `RS+ [account] <subject>[ <queue> <weight>]` (route interest).
pub fn route_sub(out: &mut Vec<u8>, account: Option<&[u8]>, subject: &[u8], queue: Option<(&[u8], u32)>) {
    interest_added(out, b"RS+ ", account, subject, queue);
}

/// Appends `RS- [account] <subject>[ <queue>]` (route interest gone).
pub fn route_unsub(out: &mut Vec<u8>, account: Option<&[u8]>, subject: &[u8], queue: Option<&[u8]>) {
    interest_removed(out, b"RS- ", account, subject, queue);
}

/// Appends `LS+ <origin> [account] <subject>[ <queue> <weight>]`: route
/// interest held by leaf connections of remote cluster `origin`, to a
/// peer that takes it (`lnoc`).
pub fn route_leaf_sub(
    out: &mut Vec<u8>,
    origin: &[u8],
    account: Option<&[u8]>,
    subject: &[u8],
    queue: Option<(&[u8], u32)>,
) {
    out.extend_from_slice(b"LS+ ");
    out.extend_from_slice(origin);
    interest_added(out, b" ", account, subject, queue);
}

/// Appends `LS- [origin] [account] <subject>[ <queue>]`: that interest
/// gone (the origin named to a peer that takes it, `lnocu`).
pub fn route_leaf_unsub(
    out: &mut Vec<u8>,
    origin: Option<&[u8]>,
    account: Option<&[u8]>,
    subject: &[u8],
    queue: Option<&[u8]>,
) {
    out.extend_from_slice(b"LS- ");
    if let Some(o) = origin {
        out.extend_from_slice(o);
        out.push(b' ');
    }
    interest_removed(out, b"", account, subject, queue);
}

/// Appends `LS+ <subject>[ <queue> <weight>]` (interest told to a leaf
/// node connection: no account, the connection is bound to one).
pub fn leaf_sub(out: &mut Vec<u8>, subject: &[u8], queue: Option<(&[u8], u32)>) {
    interest_added(out, b"LS+ ", None, subject, queue);
}

/// Appends `LS- <subject>[ <queue>]`.
pub fn leaf_unsub(out: &mut Vec<u8>, subject: &[u8], queue: Option<&[u8]>) {
    interest_removed(out, b"LS- ", None, subject, queue);
}

fn interest_added(out: &mut Vec<u8>, op: &[u8], account: Option<&[u8]>, subject: &[u8], queue: Option<(&[u8], u32)>) {
    out.extend_from_slice(op);
    if let Some(a) = account {
        out.extend_from_slice(a);
        out.push(b' ');
    }
    out.extend_from_slice(subject);
    if let Some((q, w)) = queue {
        out.push(b' ');
        out.extend_from_slice(q);
        out.push(b' ');
        put_usize(out, w as usize);
    }
    out.extend_from_slice(b"\r\n");
}

fn interest_removed(out: &mut Vec<u8>, op: &[u8], account: Option<&[u8]>, subject: &[u8], queue: Option<&[u8]>) {
    out.extend_from_slice(op);
    if let Some(a) = account {
        out.extend_from_slice(a);
        out.push(b' ');
    }
    out.extend_from_slice(subject);
    if let Some(q) = queue {
        out.push(b' ');
        out.extend_from_slice(q);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `-ERR '<text>'\r\n`.
pub fn err(out: &mut Vec<u8>, e: WireError) {
    out.extend_from_slice(b"-ERR '");
    out.extend_from_slice(e.text().as_bytes());
    out.extend_from_slice(b"'\r\n");
}

/// Appends `-ERR '<text>'` for a text built by `errors` (permissions
/// violations name subjects).
pub fn err_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"-ERR '");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"'\r\n");
}

/// Appends `-ERR '<text>'` for a permissions violation.
pub fn violation(out: &mut Vec<u8>, v: super::errors::Violation<'_>) {
    err_text(out, &super::errors::permissions_violation(v));
}

/// Appends `INFO <json> \r\n` (nats-server puts a space before the CRLF).
pub fn info(out: &mut Vec<u8>, json: &[u8]) {
    out.extend_from_slice(b"INFO ");
    out.extend_from_slice(json);
    out.extend_from_slice(b" \r\n");
}

/// The header block of the no-responders status message sent to a requester
/// (nats-server 2.12 form, with the original subject).
pub fn no_responders_header(subject: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(48 + subject.len());
    h.extend_from_slice(b"NATS/1.0 503\r\nNats-Subject: ");
    h.extend_from_slice(subject);
    h.extend_from_slice(b"\r\n\r\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        let mut o = Vec::new();
        msg(&mut o, b"foo", b"1", None, b"hi");
        assert_eq!(o, b"MSG foo 1 2\r\nhi\r\n");
        o.clear();
        msg(&mut o, b"foo", b"1", Some(b"r"), b"");
        assert_eq!(o, b"MSG foo 1 r 0\r\n\r\n");
        o.clear();
        hmsg(&mut o, b"foo", b"9", None, 12, b"NATS/1.0\r\n\r\nhi");
        assert_eq!(o, b"HMSG foo 9 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
        o.clear();
        err(&mut o, WireError::InvalidSubject);
        assert_eq!(o, b"-ERR 'Invalid Subject'\r\n");
        o.clear();
        info(&mut o, b"{}");
        assert_eq!(o, b"INFO {} \r\n");
        assert_eq!(no_responders_header(b"foo").len(), 32 + 3);
    }

    #[test]
    fn server_forms() {
        let mut o = Vec::new();
        let acc = |a: &'static [u8]| ServerMsgForm::Route(Some(a));
        server_msg(&mut o, acc(b"$G"), b"foo", Some(b"r"), &[], None, b"hi");
        assert_eq!(o, b"RMSG $G foo r 2\r\nhi\r\n");
        o.clear();
        server_msg(&mut o, acc(b"ACC"), b"foo", None, &[], Some(12), b"NATS/1.0\r\n\r\nhi");
        assert_eq!(o, b"HMSG ACC foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
        o.clear();
        server_msg(&mut o, ServerMsgForm::Leaf, b"foo", None, &[], None, b"hi");
        assert_eq!(o, b"LMSG foo 2\r\nhi\r\n");
        o.clear();
        server_msg(&mut o, acc(b"A"), b"foo", Some(b"r"), &[b"q1", b"q2"], None, b"hi");
        assert_eq!(o, b"RMSG A foo + r q1 q2 2\r\nhi\r\n");
        o.clear();
        server_msg(
            &mut o,
            ServerMsgForm::Route(None),
            b"foo",
            None,
            &[b"q"],
            Some(2),
            b"hh",
        );
        assert_eq!(o, b"HMSG foo | q 2 2\r\nhh\r\n");
        o.clear();
        route_sub(&mut o, Some(b"$G"), b"foo.*", Some((b"q", 3)));
        route_unsub(&mut o, None, b"bar", None);
        assert_eq!(o, b"RS+ $G foo.* q 3\r\nRS- bar\r\n");
    }
}
