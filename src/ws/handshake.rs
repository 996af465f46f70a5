//! The WebSocket opening handshake, sans-IO: reads the client's HTTP
//! upgrade request, checks it as nats-server does (RFC 6455 section 4.2.1,
//! origins, compression) and writes the `101 Switching Protocols` answer
//! or the HTTP error.

use base64::Engine;
use sha1::{Digest, Sha1};

use super::WsSettings;

/// The longest upgrade request accepted (request line and headers).
pub const MAX_REQUEST: usize = 16 * 1024;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A parsed HTTP request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method (`GET`).
    pub method: String,
    /// The request target.
    pub path: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// Every value of header `name` (case-insensitive).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether header `name` lists `token` (comma-separated, any case).
    fn lists(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Why an upgrade is refused: the HTTP status and the reason logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("websocket handshake error: {reason}")]
pub struct Refusal {
    /// The HTTP status answered.
    pub status: u16,
    /// What was wrong, as nats-server logs it.
    pub reason: String,
}

fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
    }
}

/// Parses the request head at the front of `buf`: `Ok(None)` while it is
/// incomplete, otherwise the request and the length of its head.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, Refusal> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_REQUEST {
            return Err(refuse(431, "request header too large"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| refuse(400, "malformed HTTP request"))?;
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(refuse(400, "malformed HTTP request"));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() {
        return Err(refuse(400, "malformed HTTP request"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| refuse(400, "malformed HTTP header"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Some((
        Request {
            method: method.to_string(),
            path: path.to_string(),
            headers,
        },
        end + 4,
    )))
}

/// What an accepted upgrade settled for the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upgrade {
    /// The `101` response to send.
    pub response: Vec<u8>,
    /// permessage-deflate was negotiated.
    pub compress: bool,
    /// The client asked not to mask its frames (`Nats-No-Masking: true`).
    pub no_masking: bool,
    /// A browser (its frames are cut to 4 KiB, as nats-server does).
    pub browser: bool,
    /// The address in `X-Forwarded-For`, when it is one.
    pub forwarded_for: Option<String>,
    /// Credentials from the configured cookies.
    pub cookies: CookieCredentials,
    /// The request asked for nats-server's leaf node endpoint
    /// (`.../leafnode`): a leaf node, served as one when leaf nodes are
    /// configured, else closed after the upgrade, as nats-server does.
    pub leafnode: bool,
}

/// Credentials a browser passes in cookies (`jwt_cookie`, `user_cookie`,
/// `pass_cookie`, `token_cookie`), used where CONNECT leaves them out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CookieCredentials {
    /// A user JWT.
    pub jwt: Option<String>,
    /// A user name.
    pub user: Option<String>,
    /// A password.
    pub pass: Option<String>,
    /// A token.
    pub token: Option<String>,
}

impl CookieCredentials {
    /// No credential came in a cookie.
    pub fn is_empty(&self) -> bool {
        self.jwt.is_none() && self.user.is_none() && self.pass.is_none() && self.token.is_none()
    }
}

/// The upgrade request a leaf sends a hub's WebSocket port, as nats-server
/// writes it (Go's request writer: headers sorted, its user agent);
/// `path` is the URL's path, `/leafnode` is added to it.
pub fn leaf_request(host_port: &str, path: &str, key: &str, no_masking: bool, compress: bool) -> Vec<u8> {
    let path = match path.trim_start_matches('/') {
        "" => "/leafnode".to_string(),
        p => format!("/{}/leafnode", p.trim_end_matches('/')),
    };
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_port}\r\nUser-Agent: Go-http-client/1.1\r\nConnection: Upgrade\r\n"
    );
    if no_masking {
        r.push_str("Nats-No-Masking: true\r\n");
    }
    r.push_str(&format!("Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"));
    if compress {
        r.push_str(
            "Sec-Websocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n",
        );
    }
    r.push_str("Upgrade: websocket\r\n\r\n");
    r.into_bytes()
}

/// What a hub's answer to [`leaf_request`] settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafUpgrade {
    /// The hub takes unmasked frames (`Nats-No-Masking: true`).
    pub no_masking: bool,
    /// permessage-deflate is in force.
    pub compress: bool,
    /// The answer's length (frames follow).
    pub len: usize,
}

/// Reads a hub's answer to [`leaf_request`]: `Ok(None)` until its header
/// is whole; `Err` with nats-server's text when it is no upgrade, or it
/// takes permessage-deflate without both no-context-takeover parameters.
pub fn leaf_response(buf: &[u8], key: &str) -> Result<Option<LeafUpgrade>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 8192 {
            return Err("invalid websocket connection".into());
        }
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut parts = status.split_whitespace();
    let ok_status = parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) && parts.next() == Some("101");
    let mut first = std::collections::HashMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            first
                .entry(name.trim().to_ascii_lowercase())
                .or_insert_with(|| value.trim().to_string());
        }
    }
    let is = |name: &str, want: &str| first.get(name).is_some_and(|v| v.eq_ignore_ascii_case(want));
    let accepted = first.get("sec-websocket-accept").map(String::as_str) == Some(accept_key(key).as_str());
    if !ok_status || !is("upgrade", "websocket") || !is("connection", "upgrade") || !accepted {
        return Err("invalid websocket connection".into());
    }
    let mut compress = false;
    if let Some(ext) = first.get("sec-websocket-extensions") {
        for e in ext.split(',') {
            let mut params = e.split(';').map(|p| p.trim().to_ascii_lowercase());
            if params.next().as_deref() == Some("permessage-deflate") {
                let rest: Vec<String> = params.collect();
                if !rest.iter().any(|p| p == "server_no_context_takeover")
                    || !rest.iter().any(|p| p == "client_no_context_takeover")
                {
                    return Err("compression negotiation error".into());
                }
                compress = true;
            }
        }
    }
    Ok(Some(LeafUpgrade {
        no_masking: first.get("nats-no-masking").map(String::as_str) == Some("true"),
        compress,
        len: end + 4,
    }))
}

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Splits an origin or `Host` value into lower-case host and port, with
/// the scheme's default port when none is given.
pub fn host_port(tls: bool, hostport: &str) -> (String, String) {
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => {
            (h.to_string(), p.to_string())
        }
        _ => (hostport.to_string(), if tls { "443" } else { "80" }.to_string()),
    };
    (
        host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase(),
        port,
    )
}

/// An origin URL split into scheme, host and port.
pub fn parse_origin(origin: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
        return None;
    }
    let (host, port) = host_port(scheme == "https", authority);
    Some((scheme, host, port))
}

fn check_origin(req: &Request, s: &WsSettings, tls: bool) -> Result<(), String> {
    if !s.same_origin && s.allowed_origins.is_empty() {
        return Ok(());
    }
    // Dedicated (non-browser) clients send no origin: accepted, as RFC 6455 section 1.6 allows.
    let Some(origin) = req.get("Origin").or_else(|| req.get("Sec-WebSocket-Origin")) else {
        return Ok(());
    };
    if origin.is_empty() {
        return Ok(());
    }
    let (scheme, host, port) = parse_origin(origin).ok_or_else(|| format!("parse {origin:?}: invalid URI"))?;
    if s.same_origin {
        let (rh, rp) = host_port(tls, req.get("Host").unwrap_or_default());
        let rs = if tls { "https" } else { "http" };
        if host != rh || port != rp || scheme != rs {
            return Err("not same origin".into());
        }
    }
    if !s.allowed_origins.is_empty()
        && !s
            .allowed_origins
            .iter()
            .any(|(sc, h, p)| *sc == scheme && *h == host && *p == port)
    {
        return Err("not in the allowed list".into());
    }
    Ok(())
}

fn cookies(req: &Request, s: &WsSettings) -> CookieCredentials {
    let mut c = CookieCredentials::default();
    for pair in req.all("Cookie").flat_map(|v| v.split(';')) {
        let Some((name, value)) = pair.trim().split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        let is = |n: &Option<String>| n.as_deref() == Some(name.trim());
        if is(&s.jwt_cookie) {
            c.jwt = Some(value);
        } else if is(&s.user_cookie) {
            c.user = Some(value);
        } else if is(&s.pass_cookie) {
            c.pass = Some(value);
        } else if is(&s.token_cookie) {
            c.token = Some(value);
        }
    }
    c
}

/// Checks an upgrade request (`tls`: it came over TLS) and builds the
/// `101` answer, or says why it is refused.
pub fn upgrade(req: &Request, s: &WsSettings, tls: bool) -> Result<Upgrade, Refusal> {
    let path = req.path.split('?').next().unwrap_or_default();
    if path.ends_with("/mqtt") {
        return Err(refuse(404, "mqtt websocket endpoint not enabled"));
    }
    if req.method != "GET" {
        return Err(refuse(405, "request method must be GET"));
    }
    if req.get("Host").is_none_or(str::is_empty) {
        return Err(refuse(400, "'Host' missing in request"));
    }
    if !req.lists("Upgrade", "websocket") {
        return Err(refuse(400, "invalid value for header 'Upgrade'"));
    }
    if !req.lists("Connection", "Upgrade") {
        return Err(refuse(400, "invalid value for header 'Connection'"));
    }
    let key = req.get("Sec-WebSocket-Key").unwrap_or_default();
    if key.is_empty() {
        return Err(refuse(400, "key missing"));
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if decoded.map(|d| d.len()) != Ok(16) {
        return Err(refuse(400, "invalid websocket key"));
    }
    if !req.lists("Sec-WebSocket-Version", "13") {
        return Err(refuse(400, "invalid version"));
    }
    check_origin(req, s, tls).map_err(|e| refuse(403, format!("origin not allowed: {e}")))?;
    let compress = s.compression
        && req
            .all("Sec-WebSocket-Extensions")
            .flat_map(|v| v.split([',', ';']))
            .any(|p| p.trim().eq_ignore_ascii_case("permessage-deflate"));
    let no_masking = req.get("Nats-No-Masking") == Some("true");
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accept_key(key)
    );
    if compress {
        response.push_str(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n",
        );
    }
    if no_masking {
        response.push_str("Nats-No-Masking: true\r\n");
    }
    for (k, v) in &s.headers {
        response.push_str(&format!("{k}: {v}\r\n"));
    }
    response.push_str("\r\n");
    let forwarded_for = req
        .get("X-Forwarded-For")
        .map(|v| v.split(',').next().unwrap_or_default().trim())
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_string);
    let browser = req.get("User-Agent").is_some_and(|ua| ua.starts_with("Mozilla/"));
    Ok(Upgrade {
        response: response.into_bytes(),
        compress,
        no_masking,
        browser,
        forwarded_for,
        cookies: cookies(req, s),
        leafnode: path.ends_with("/leafnode"),
    })
}

/// The HTTP error answer for a refused upgrade (Go's `http.Error` shape).
pub fn error_response(status: u16) -> Vec<u8> {
    let text = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nSec-Websocket-Version: 13\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}\n",
        text.len() + 1
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leafs_upgrade_is_nats_servers() {
        let r = String::from_utf8(leaf_request("h:443", "/some/path/", "KEY==", true, false)).unwrap();
        assert_eq!(
            r,
            "GET /some/path/leafnode HTTP/1.1\r\nHost: h:443\r\nUser-Agent: Go-http-client/1.1\r\nConnection: Upgrade\r\n\
             Nats-No-Masking: true\r\nSec-WebSocket-Key: KEY==\r\nSec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n\r\n"
        );
        assert!(String::from_utf8(leaf_request("h:1", "", "K", false, false))
            .unwrap()
            .starts_with("GET /leafnode "));
        assert!(String::from_utf8(leaf_request("h:1", "", "K", false, true))
            .unwrap()
            .contains(
            "Sec-Websocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        ));
        let good = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nNats-No-Masking: true\r\n\r\n\x02\x05INFO ",
            accept_key("K")
        );
        let header = good.find("\r\n\r\n").unwrap() + 4;
        assert_eq!(
            leaf_response(good.as_bytes(), "K"),
            Ok(Some(LeafUpgrade {
                no_masking: true,
                compress: false,
                len: header
            }))
        );
        let half = good.replace(
            "Nats-No-Masking",
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\nX",
        );
        assert_eq!(
            leaf_response(half.as_bytes(), "K"),
            Err("compression negotiation error".into())
        );
        assert_eq!(leaf_response(&good.as_bytes()[..20], "K"), Ok(None));
        assert_eq!(
            leaf_response(good.as_bytes(), "OTHER"),
            Err("invalid websocket connection".into())
        );
        let keep_alive = good.replace("Connection: Upgrade", "Connection: Upgrade, keep-alive");
        assert!(
            leaf_response(keep_alive.as_bytes(), "K").is_err(),
            "the whole value, as Go checks it"
        );
    }

    fn request(extra: &str) -> Request {
        let text = format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        parse_request(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn rfc_example_accept_key() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn incomplete_then_complete() {
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap(), None);
        let (r, n) = parse_request(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!((r.path.as_str(), n), ("/x", 28));
        assert_eq!(parse_request(&[b'a'; MAX_REQUEST + 1]).unwrap_err().status, 431);
    }

    #[test]
    fn accepted_upgrade() {
        let s = WsSettings::default();
        let u = upgrade(&request(""), &s, false).unwrap();
        let text = String::from_utf8(u.response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(!u.compress);
    }

    #[test]
    fn refusals_as_nats_server() {
        let s = WsSettings::default();
        let mut r = request("");
        r.method = "POST".into();
        assert_eq!(
            upgrade(&r, &s, false).unwrap_err(),
            refuse(405, "request method must be GET")
        );
        let cases = [
            ("Host", "'Host' missing in request"),
            ("Upgrade", "invalid value for header 'Upgrade'"),
            ("Connection", "invalid value for header 'Connection'"),
            ("Sec-WebSocket-Key", "key missing"),
            ("Sec-WebSocket-Version", "invalid version"),
        ];
        for (drop, want) in cases {
            let mut r = request("");
            r.headers.retain(|(k, _)| k != drop);
            assert_eq!(upgrade(&r, &s, false).unwrap_err().reason, want);
        }
        let mut r = request("");
        for h in &mut r.headers {
            if h.0 == "Sec-WebSocket-Key" {
                h.1 = "c2hvcnQ=".into();
            }
        }
        assert_eq!(upgrade(&r, &s, false).unwrap_err().reason, "invalid websocket key");
    }

    #[test]
    fn mqtt_and_leafnode_endpoints() {
        let s = WsSettings::default();
        let mut r = request("");
        r.path = "/mqtt".into();
        assert_eq!(
            upgrade(&r, &s, false).unwrap_err(),
            refuse(404, "mqtt websocket endpoint not enabled")
        );
        r.path = "/leafnode".into();
        assert!(upgrade(&r, &s, false).unwrap().leafnode);
        r.path = "/".into();
        assert!(!upgrade(&r, &s, false).unwrap().leafnode);
    }

    #[test]
    fn compression_negotiated_only_when_enabled() {
        let ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
        let off = WsSettings::default();
        assert!(!upgrade(&request(ext), &off, false).unwrap().compress);
        let on = WsSettings {
            compression: true,
            ..Default::default()
        };
        let u = upgrade(&request(ext), &on, false).unwrap();
        assert!(u.compress);
        assert!(String::from_utf8(u.response)
            .unwrap()
            .contains("permessage-deflate; server_no_context_takeover; client_no_context_takeover"));
        assert!(!upgrade(&request(""), &on, false).unwrap().compress);
    }

    #[test]
    fn origins() {
        let same = WsSettings {
            same_origin: true,
            ..Default::default()
        };
        assert!(upgrade(&request(""), &same, false).is_ok(), "no origin: accepted");
        assert!(upgrade(&request("Origin: http://127.0.0.1:8080\r\n"), &same, false).is_ok());
        let e = upgrade(&request("Origin: http://example.com:8080\r\n"), &same, false).unwrap_err();
        assert_eq!(
            (e.status, e.reason.as_str()),
            (403, "origin not allowed: not same origin")
        );
        let listed = WsSettings {
            allowed_origins: vec![("https".into(), "example.com".into(), "443".into())],
            ..Default::default()
        };
        assert!(upgrade(&request("Origin: https://Example.com\r\n"), &listed, false).is_ok());
        let e = upgrade(&request("Origin: http://example.com\r\n"), &listed, false).unwrap_err();
        assert_eq!(e.reason, "origin not allowed: not in the allowed list");
    }

    #[test]
    fn cookies_and_forwarded_for() {
        let s = WsSettings {
            jwt_cookie: Some("jwt".into()),
            token_cookie: Some("tok".into()),
            ..Default::default()
        };
        let u = upgrade(
            &request("Cookie: a=b; jwt=eyJ.x.y; tok=s3cret\r\nX-Forwarded-For: 10.1.2.3, 1.1.1.1\r\n"),
            &s,
            false,
        )
        .unwrap();
        assert_eq!(u.cookies.jwt.as_deref(), Some("eyJ.x.y"));
        assert_eq!(u.cookies.token.as_deref(), Some("s3cret"));
        assert_eq!(u.cookies.user, None);
        assert_eq!(u.forwarded_for.as_deref(), Some("10.1.2.3"));
    }
}
