//! A small blocking WebSocket client written for the tests (independent of
//! petrel's own codec): upgrade, masked frames out, frames in.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine;

/// A frame the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// RSV1 (compressed).
    pub rsv1: bool,
    /// Opcode.
    pub opcode: u8,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A close frame's (status, text).
    pub fn close(&self) -> Option<(u16, String)> {
        if self.opcode != 8 {
            return None;
        }
        if self.payload.len() < 2 {
            return Some((1005, String::new()));
        }
        Some((
            u16::from_be_bytes([self.payload[0], self.payload[1]]),
            String::from_utf8_lossy(&self.payload[2..]).into_owned(),
        ))
    }
}

/// One raw WebSocket connection.
pub struct WsRaw {
    /// The socket.
    pub sock: TcpStream,
    /// The server's HTTP answer head.
    pub response: String,
    buf: Vec<u8>,
}

/// The standard upgrade request for `addr` with `extra` header lines.
pub fn upgrade_request(addr: &str, extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends `request` raw and returns the HTTP answer head (and the socket).
pub fn http_exchange(addr: &str, request: &str) -> (String, TcpStream) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match sock.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    (String::from_utf8_lossy(&head).into_owned(), sock)
}

/// A masked client frame.
pub fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mask: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];
    let mut f = vec![b0];
    match payload.len() {
        l if l <= 125 => f.push(0x80 | l as u8),
        l if l <= 65535 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(l as u16).to_be_bytes());
        }
        l => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(l as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Raw-deflates `data` as one permessage-deflate message.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    use flate2::write::DeflateEncoder;
    let mut e = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.flush().unwrap();
    let mut out = e.finish().unwrap();
    let tail = [0u8, 0, 0xff, 0xff];
    if let Some(at) = out.windows(4).rposition(|w| w == tail) {
        out.truncate(at);
    }
    out
}

/// Inflates a compressed message.
pub fn inflate(data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::new();
    let mut d = flate2::read::DeflateDecoder::new(&input[..]);
    let _ = d.read_to_end(&mut out);
    out
}

impl WsRaw {
    /// Connects and upgrades; panics unless the answer is 101.
    pub fn open(addr: &str, extra: &str) -> WsRaw {
        let (response, sock) = http_exchange(addr, &upgrade_request(addr, extra));
        assert!(response.starts_with("HTTP/1.1 101"), "upgrade refused: {response}");
        let expected = {
            use sha1::Digest;
            let mut h = sha1::Sha1::new();
            h.update(b"dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
            base64::engine::general_purpose::STANDARD.encode(h.finalize())
        };
        assert!(
            response.contains(&format!("Sec-WebSocket-Accept: {expected}")),
            "{response}"
        );
        WsRaw {
            sock,
            response,
            buf: Vec::new(),
        }
    }

    /// Wraps a socket whose upgrade the caller did.
    pub fn from_parts(sock: TcpStream, response: String) -> WsRaw {
        WsRaw {
            sock,
            response,
            buf: Vec::new(),
        }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, b: &[u8]) {
        self.sock.write_all(b).unwrap();
    }

    /// Sends `data` as one masked binary frame.
    pub fn send(&mut self, data: &[u8]) {
        self.send_raw(&client_frame(0x82, data));
    }

    /// The next frame, within `limit`.
    pub fn frame(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((f, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(f);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 65536];
            match self.sock.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return None,
            }
        }
    }

    /// The payloads of data frames (inflated when compressed) until
    /// `needle` has been seen, within `limit`.
    pub fn read_text_until(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut text = String::new();
        while !text.contains(needle) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let Some(f) = self.frame(left) else { break };
            if f.opcode == 1 || f.opcode == 2 || f.opcode == 0 {
                let payload = if f.rsv1 { inflate(&f.payload) } else { f.payload };
                text.push_str(&String::from_utf8_lossy(&payload));
            }
        }
        text
    }

    /// Frames until the connection closes (or `limit`).
    pub fn frames_until_closed(&mut self, limit: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + limit;
        let mut all = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.frame(left) {
                Some(f) => all.push(f),
                None => break,
            }
        }
        all
    }
}

fn parse_frame(b: &[u8]) -> Option<(Frame, usize)> {
    if b.len() < 2 {
        return None;
    }
    let (len, mut at) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize, 10),
        l => (l as usize, 2),
    };
    let mask = if b[1] & 0x80 != 0 {
        let m = [*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?];
        at += 4;
        Some(m)
    } else {
        None
    };
    let mut payload = b.get(at..at + len)?.to_vec();
    if let Some(m) = mask {
        for (i, x) in payload.iter_mut().enumerate() {
            *x ^= m[i % 4];
        }
    }
    Some((
        Frame {
            fin: b[0] & 0x80 != 0,
            rsv1: b[0] & 0x40 != 0,
            opcode: b[0] & 0x0f,
            payload,
        },
        at + len,
    ))
}
