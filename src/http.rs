//! The few HTTP/1.1 pieces petrel's own listeners share (monitoring,
//! `/debug/pprof`, the account server): read one request, answer it and
//! close. Small documents on loopback or an admin network; no keep-alive.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted (an account JWT is a few KiB).
const MAX_BODY: usize = 1 << 20;

/// One request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// The body (`Content-Length` bytes, at most 1 MiB).
    pub body: Vec<u8>,
}

impl Request {
    /// The value of query parameter `key`, if present.
    pub fn param(&self, key: &str) -> Option<std::borrow::Cow<'_, str>> {
        query_param(&self.query, key)
    }
}

/// The first value of `key` in a query string `a=1&b=2`, percent-decoded
/// (`+` is a space) as Go's `url.Values.Get` reads it for nats-server:
/// `acc=%24G` is `$G`. An empty value counts as absent, as nats-server's
/// handlers treat `Get`'s `""`.
pub fn query_param<'a>(query: &'a str, key: &str) -> Option<std::borrow::Cow<'a, str>> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// Reads one request; `None` when the peer sent no complete head.
///
/// As Go's `net/http` (which nats-server's listeners use): the whole head
/// must arrive within `timeout` (a client trickling bytes cannot hold the
/// connection), or the connection is closed: with `400 Bad Request` when
/// the request line was begun but not finished, without a word otherwise;
/// a request line that is not `METHOD TARGET HTTP/x.y` (HTTP/0.9 and
/// garbage) gets `400 Bad Request` at once.
pub fn read_request(s: &mut TcpStream, timeout: Duration) -> std::io::Result<Option<Request>> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let mut line_checked = false;
    let head_end = loop {
        if !line_checked {
            if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                if !is_request_line(&buf[..nl]) {
                    s.write_all(BAD_REQUEST)?;
                    return Ok(None);
                }
                line_checked = true;
            }
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = if left.is_zero() {
            None
        } else {
            s.set_read_timeout(Some(left))?;
            match s.read(&mut chunk) {
                Ok(n) => Some(n),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
                Err(e) => return Err(e),
            }
        };
        let Some(n) = n else {
            // Out of time: a request line begun but unfinished is answered
            // 400, anything else closed without a word (as Go does).
            if !line_checked && !buf.is_empty() {
                s.write_all(BAD_REQUEST)?;
            }
            return Ok(None);
        };
        if n == 0 || buf.len() > MAX_HEAD {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_BODY);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Some(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        body,
    }))
}

/// Go's answer to a request it cannot read.
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request";

/// `METHOD TARGET HTTP/x.y` (CR optional).
fn is_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(m), Some(t), Some(v), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !m.is_empty() && !t.is_empty() && v.starts_with(b"HTTP/")
}

/// Writes a complete response (no body for `HEAD`) and lets the caller close.
pub fn respond(
    s: &mut TcpStream,
    method: &str,
    status: &str,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra_headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    if method != "HEAD" {
        s.write_all(body)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        assert_eq!(query_param("a=1&b=two", "b").as_deref(), Some("two"));
        assert_eq!(query_param("a=1&b", "b"), None);
        assert_eq!(query_param("", "a"), None);
        assert_eq!(query_param("acc=%24G&x=a+b", "acc").as_deref(), Some("$G"));
        assert_eq!(query_param("acc=%24G&x=a+b", "x").as_deref(), Some("a b"));
        assert_eq!(
            query_param("b=1&b=2", "b").as_deref(),
            Some("1"),
            "the first, as Go's Get"
        );
    }

    #[test]
    fn request_lines() {
        assert!(is_request_line(b"GET /varz HTTP/1.1\r"));
        assert!(is_request_line(b"POST /jwt/v1/accounts/A HTTP/1.0"));
        assert!(!is_request_line(b"GET /varz\r"));
        assert!(!is_request_line(b"GET /varz HTTP/1.1 extra\r"));
        assert!(!is_request_line(b"\r"));
        assert!(!is_request_line(b"GET  HTTP/1.1"));
    }
}
