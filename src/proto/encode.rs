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

/// Appends a message for another server: over a route (`account` given)
/// `RMSG <account> <subject> [reply] <size>`, over a leaf node connection
/// `LMSG <subject> [reply] <size>`; with headers (`header_len`) the verb is
/// `HMSG` and both sizes follow, header block first.
pub fn server_msg(
    out: &mut Vec<u8>,
    account: Option<&[u8]>,
    subject: &[u8],
    reply: Option<&[u8]>,
    header_len: Option<usize>,
    message: &[u8],
) {
    out.reserve(subject.len() + message.len() + account.map_or(0, <[u8]>::len) + 48);
    out.extend_from_slice(match (header_len, account) {
        (Some(_), _) => b"HMSG ",
        (None, Some(_)) => b"RMSG ",
        (None, None) => b"LMSG ",
    });
    if let Some(a) = account {
        out.extend_from_slice(a);
        out.push(b' ');
    }
    out.extend_from_slice(subject);
    out.push(b' ');
    if let Some(r) = reply {
        out.extend_from_slice(r);
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
        server_msg(&mut o, Some(b"$G"), b"foo", Some(b"r"), None, b"hi");
        assert_eq!(o, b"RMSG $G foo r 2\r\nhi\r\n");
        o.clear();
        server_msg(&mut o, Some(b"ACC"), b"foo", None, Some(12), b"NATS/1.0\r\n\r\nhi");
        assert_eq!(o, b"HMSG ACC foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
        o.clear();
        server_msg(&mut o, None, b"foo", None, None, b"hi");
        assert_eq!(o, b"LMSG foo 2\r\nhi\r\n");
    }
}
