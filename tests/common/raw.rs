//! A raw TCP client for byte-exact protocol tests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One raw connection.
pub struct Raw {
    s: TcpStream,
    /// The INFO line the server sent on accept.
    pub info_line: String,
    pending: Vec<u8>,
}

/// What came back, and whether the server closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The server closed the connection.
    pub closed: bool,
}

impl Reply {
    /// The bytes as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The bytes as text, then `<closed>` when the server closed.
    pub fn text_and_close(&self) -> String {
        let closed = if self.closed { "<closed>" } else { "" };
        format!("{}{closed}", self.text())
    }
}

impl Raw {
    /// Connects and reads the INFO line.
    pub fn open(addr: &str) -> Raw {
        Self::with_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// Connects from the loopback address `source` (e.g. `127.0.0.2`, so
    /// that a flood and a real user come from different addresses) and
    /// reads the INFO line.
    pub fn open_from(addr: &str, source: &str) -> Raw {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let src: std::net::SocketAddr = format!("{source}:0").parse().expect("source address");
        sock.bind(&src.into()).expect("bind the source address");
        let dst: std::net::SocketAddr = addr.parse().expect("server address");
        sock.connect(&dst.into()).expect("connect");
        Self::with_stream(sock.into())
    }

    fn with_stream(s: TcpStream) -> Raw {
        s.set_nodelay(true).unwrap();
        let mut r = Raw {
            s,
            info_line: String::new(),
            pending: Vec::new(),
        };
        let line = r.read_line(Duration::from_secs(5)).expect("INFO line");
        r.info_line = line;
        r
    }

    /// The INFO JSON.
    pub fn info(&self) -> serde_json::Value {
        let json = self
            .info_line
            .strip_prefix("INFO ")
            .unwrap()
            .strip_suffix(" \r\n")
            .unwrap();
        serde_json::from_str(json).unwrap()
    }

    /// Sends bytes.
    pub fn send(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }

    /// Reads one CRLF-terminated line.
    pub fn read_line(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.s.set_read_timeout(Some(deadline - now)).unwrap();
            let mut buf = [0u8; 65536];
            match self.s.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Reads until the server closes or has been quiet for `quiet`, for at
    /// most `limit` in all.
    pub fn read_until_quiet(&mut self, quiet: Duration, limit: Duration) -> Reply {
        let mut bytes = std::mem::take(&mut self.pending);
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Reply { bytes, closed: false };
            }
            self.s.set_read_timeout(Some(quiet.min(left))).unwrap();
            match self.s.read(&mut buf) {
                Ok(0) => return Reply { bytes, closed: true },
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    return Reply { bytes, closed: false }
                }
                Err(_) => return Reply { bytes, closed: true },
            }
        }
    }

    /// Sends `b` and returns what came back within a short quiet period.
    pub fn exchange(&mut self, b: &[u8]) -> Reply {
        self.send(b);
        self.read_until_quiet(Duration::from_millis(250), Duration::from_secs(5))
    }

    /// Sends PING and waits for PONG, returning what came before it
    /// (server PINGs on the way are answered and left out).
    pub fn ping(&mut self) -> String {
        self.send(b"PING\r\n");
        let mut before = String::new();
        loop {
            let l = self.read_line(Duration::from_secs(10)).expect("PONG in time");
            match l.as_str() {
                "PONG\r\n" => return before,
                "PING\r\n" => self.send(b"PONG\r\n"),
                _ => before.push_str(&l),
            }
        }
    }
}
