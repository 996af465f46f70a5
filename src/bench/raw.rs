//! The raw-protocol pub/sub clients (the default, `--client raw`): one tokio
//! `TcpStream` per client. Publishers encode each PUB into a 32 KiB write
//! buffer, as nats.go's publish does. Subscribers read 256 KiB
//! at a time and deliver every message as a client library does: subject,
//! reply and payload copied out into an owned message handed to a handler
//! task through a bounded queue, where it is counted and timed (nats.go's
//! subscription goroutine does the same work; counting frames in the read
//! buffer instead made fan-out read 1.7-2.4x nats.go's numbers). The
//! CONNECT carries the same credentials as async-nats' (`--creds`: the INFO
//! nonce signed with the user's seed, base64url). Request/reply and the
//! service subcommands stay on async-nats (`run.rs`).

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::args::Opts;
use super::client::{Counter, Ctx, Stop};
use super::report::Sample;
use std::sync::Arc;

/// Bytes a publisher buffers before a write (nats.go's write buffer).
const WRITE_RUN: usize = 32 << 10;
/// Initial read buffer (grows for a frame that does not fit).
const READ_BUF: usize = 32 << 10;

/// One connection: the socket and its read buffer.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// PONGs owed to the server's PINGs, sent with the next write.
    pongs_owed: usize,
}

/// What `Conn::parse` found.
#[derive(Default)]
struct Tally {
    msgs: u64,
    bytes: u64,
    pongs: u64,
    /// A subscriber's messages taken since the last hand-off, as a client
    /// library delivers them (`None` on publishers: they only count).
    inbox: Option<Vec<Msg>>,
}

/// A message as a client library hands it to the application: subject,
/// reply and payload copied out of the read buffer.
struct Msg {
    subject: String,
    reply: Option<String>,
    payload: bytes::Bytes,
}

/// Messages a subscriber's handler may have pending (nats.go's default
/// pending limit is 512 Ki messages; this bounds memory the same way).
const PENDING: usize = 64 * 1024;

/// Server address and the credentials in its URL.
struct Url {
    addr: String,
    user: Option<String>,
    pass: Option<String>,
}

fn parse_url(u: &str) -> Result<Url, String> {
    let (scheme, rest) = match u.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("nats".to_string(), u),
    };
    if scheme != "nats" {
        return Err(format!(
            "{u}: the raw client speaks plain nats:// only; use --client async-nats"
        ));
    }
    let rest = rest.trim_end_matches('/');
    let (userinfo, host) = match rest.rsplit_once('@') {
        Some((ui, h)) => (Some(ui), h),
        None => (None, rest),
    };
    let (user, pass) = match userinfo.map(|ui| ui.split_once(':')) {
        Some(Some((u, p))) => (Some(u.to_string()), Some(p.to_string())),
        Some(None) => (userinfo.map(str::to_string), None),
        None => (None, None),
    };
    let has_port = match host.rfind(']') {
        Some(i) => host[i..].contains(':'),
        None => host.contains(':'),
    };
    let addr = if has_port {
        host.to_string()
    } else {
        format!("{host}:4222")
    };
    Ok(Url { addr, user, pass })
}

/// Connects to the first server of `o.server` that accepts the CONNECT.
pub async fn connect(o: &Opts, name: &str, timeout: Duration) -> Result<Conn, String> {
    let mut last = String::from("no server URL");
    for u in o.server.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match tokio::time::timeout(timeout, connect_one(o, name, u)).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("{u}: no answer within {timeout:?}"),
        }
    }
    Err(format!("cannot connect to {}: {last}", o.server))
}

async fn connect_one(o: &Opts, name: &str, u: &str) -> Result<Conn, String> {
    let url = parse_url(u)?;
    let stream = TcpStream::connect(&url.addr)
        .await
        .map_err(|e| format!("{}: {e}", url.addr))?;
    let _ = stream.set_nodelay(true);
    let mut c = Conn {
        stream,
        buf: vec![0; READ_BUF],
        start: 0,
        end: 0,
        pongs_owed: 0,
    };
    let info = loop {
        if let Some(nl) = memchr::memchr(b'\n', &c.buf[c.start..c.end]) {
            let line = String::from_utf8_lossy(&c.buf[c.start..c.start + nl])
                .trim()
                .to_string();
            c.start += nl + 1;
            break line;
        }
        c.fill().await?;
    };
    let info: serde_json::Value = serde_json::from_str(info.strip_prefix("INFO").unwrap_or(&info).trim())
        .map_err(|e| format!("{}: bad INFO: {e}", url.addr))?;
    if info["tls_required"].as_bool() == Some(true) {
        return Err(format!(
            "{}: the server requires TLS; use --client async-nats",
            url.addr
        ));
    }
    let mut cn = serde_json::json!({
        "verbose": false, "pedantic": false, "tls_required": false, "name": name, "lang": "rust",
        "version": concat!("petrel-bench-", env!("CARGO_PKG_VERSION")), "protocol": 1, "echo": true,
        "headers": true, "no_responders": true,
    });
    if let Some(path) = &o.creds {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--creds {path}: {e}"))?;
        let (jwt, seed) = petrel::auth::jwt::parse_creds(&text).map_err(|e| format!("--creds {path}: {e}"))?;
        let nonce = info["nonce"].as_str().unwrap_or_default();
        let sig = petrel::auth::jwt::sign_nonce(&seed, nonce.as_bytes()).map_err(|e| format!("--creds {path}: {e}"))?;
        cn["jwt"] = jwt.into();
        cn["sig"] = sig.into();
    }
    match (&o.user, &o.password) {
        (Some(u), Some(p)) => {
            cn["user"] = u.as_str().into();
            cn["pass"] = p.as_str().into();
        }
        (Some(t), None) => cn["auth_token"] = t.as_str().into(),
        _ => match (url.user, url.pass) {
            (Some(u), Some(p)) => {
                cn["user"] = u.into();
                cn["pass"] = p.into();
            }
            (Some(t), None) => cn["auth_token"] = t.into(),
            _ => {}
        },
    }
    if let Some(t) = &o.token {
        cn["auth_token"] = t.as_str().into();
    }
    c.write(format!("CONNECT {cn}\r\nPING\r\n").as_bytes()).await?;
    let mut t = Tally::default();
    while t.pongs == 0 {
        c.fill().await?;
        c.parse(&mut t).map_err(|e| format!("{}: {e}", url.addr))?;
    }
    Ok(c)
}

impl Conn {
    /// One read into the buffer; an error when the server closed.
    async fn fill(&mut self) -> Result<(), String> {
        use tokio::io::AsyncReadExt;
        self.make_room();
        let n = self
            .stream
            .read(&mut self.buf[self.end..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed by the server".into());
        }
        self.end += n;
        Ok(())
    }

    /// Whatever is readable now, without waiting.
    fn try_fill(&mut self) -> Result<bool, String> {
        self.make_room();
        match self.stream.try_read(&mut self.buf[self.end..]) {
            Ok(0) => Err("connection closed by the server".into()),
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    fn make_room(&mut self) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else {
                let n = self.buf.len() * 2;
                self.buf.resize(n, 0);
            }
        }
    }

    async fn write(&mut self, b: &[u8]) -> Result<(), String> {
        self.stream.write_all(b).await.map_err(|e| format!("write: {e}"))
    }

    /// Sends the PONGs owed.
    async fn pay_pongs(&mut self) -> Result<(), String> {
        while self.pongs_owed > 0 {
            self.pongs_owed -= 1;
            self.write(b"PONG\r\n").await?;
        }
        Ok(())
    }

    /// Takes every complete frame in the buffer: counts MSG/HMSG and PONG,
    /// notes PINGs; `-ERR` is an error.
    fn parse(&mut self, t: &mut Tally) -> Result<(), String> {
        let buf = &self.buf[..self.end];
        let mut p = self.start;
        let mut grow = 0;
        while p < buf.len() {
            let Some(nl) = memchr::memchr(b'\n', &buf[p..]) else {
                break;
            };
            let line_end = p + nl + 1;
            let line = &buf[p..p + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match line.first().map(u8::to_ascii_uppercase) {
                Some(b'M') | Some(b'H') => {
                    let hmsg = line[0].eq_ignore_ascii_case(&b'H');
                    let mut args = line.rsplit(|b| *b == b' ').filter(|a| !a.is_empty());
                    let total = args.next().and_then(num).ok_or_else(|| bad(line))?;
                    let hdr = if hmsg {
                        args.next().and_then(num).ok_or_else(|| bad(line))?
                    } else {
                        0
                    };
                    let frame_end = line_end + total + 2;
                    if frame_end > buf.len() {
                        grow = frame_end - p;
                        break;
                    }
                    t.msgs += 1;
                    t.bytes += total.saturating_sub(hdr) as u64;
                    if let Some(inbox) = t.inbox.as_mut() {
                        // MSG <subject> <sid> [reply] [hdr] <total>
                        let mut parts = line.split(|b| *b == b' ').filter(|a| !a.is_empty()).skip(1);
                        let subject = parts.next().ok_or_else(|| bad(line))?;
                        let _sid = parts.next().ok_or_else(|| bad(line))?;
                        let rest: Vec<&[u8]> = parts.collect();
                        let reply = (rest.len() == if hmsg { 3 } else { 2 })
                            .then(|| String::from_utf8_lossy(rest[0]).into_owned());
                        inbox.push(Msg {
                            subject: String::from_utf8_lossy(subject).into_owned(),
                            reply,
                            payload: bytes::Bytes::copy_from_slice(&buf[line_end + hdr..line_end + total]),
                        });
                    }
                    p = frame_end;
                    continue;
                }
                Some(b'P') if line.eq_ignore_ascii_case(b"PING") => self.pongs_owed += 1,
                Some(b'P') if line.eq_ignore_ascii_case(b"PONG") => t.pongs += 1,
                Some(b'+') | Some(b'I') => {}
                Some(b'-') => return Err(String::from_utf8_lossy(line).into_owned()),
                _ => return Err(bad(line)),
            }
            p = line_end;
        }
        self.start = p;
        if grow > self.buf.len() {
            self.buf.resize(grow.next_power_of_two(), 0);
        }
        Ok(())
    }
}

fn num(b: &[u8]) -> Option<usize> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn bad(line: &[u8]) -> String {
    format!(
        "protocol error at {:?}",
        String::from_utf8_lossy(&line[..line.len().min(80)])
    )
}

/// Subscribes on `c` (SUB and a PING); the subscriber task reports the PONG
/// on `ready`.
pub async fn subscribe(c: &mut Conn, subject: &str, queue: Option<&str>) -> Result<(), String> {
    let sub = match queue {
        Some(q) => format!("SUB {subject} {q} 1\r\nPING\r\n"),
        None => format!("SUB {subject} 1\r\nPING\r\n"),
    };
    c.write(sub.as_bytes()).await
}

/// Subscriber loop: counts messages until `expected`, the group is done or
/// the run stops; then, once the publishers are done, one round trip and a
/// short drain to catch extra messages.
pub async fn subscriber(
    mut c: Conn,
    mut s: Sample,
    counter: Arc<Counter>,
    mut ctx: Ctx,
    ready: oneshot::Sender<Result<(), String>>,
) -> Sample {
    let mut t = Tally {
        inbox: Some(Vec::new()),
        ..Default::default()
    };
    // The application side, as in a client library: a handler task takes
    // each message from a bounded queue (nats.go's subscription goroutine).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(PENDING);
    let handler = tokio::spawn(async move {
        let mut h = Handled::default();
        while let Some(m) = rx.recv().await {
            let now = Instant::now();
            h.first.get_or_insert(now);
            h.last = Some(now);
            h.msgs += 1;
            h.bytes += m.payload.len() as u64;
            h.names += m.subject.len() + m.reply.as_ref().map_or(0, String::len);
        }
        h
    });
    let mut ready = Some(ready);
    let note = |t: &Tally, s: &mut Sample, seen: &mut u64| {
        if t.msgs != *seen {
            let now = Instant::now();
            s.start.get_or_insert(now);
            s.end = Some(now);
            *seen = t.msgs;
            counter.set(t.msgs);
        }
    };
    let mut seen = 0u64;
    loop {
        if s.expected.is_some_and(|e| t.msgs >= e) {
            break;
        }
        let r = tokio::select! {
            biased;
            r = c.fill() => r,
            _ = ctx.stop.changed() => break,
        };
        let r = match r {
            Ok(()) => c.parse(&mut t),
            Err(e) => Err(e),
        };
        let r = match r {
            Ok(()) => hand_off(&mut t, &tx).await,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            if let Some(tx) = ready.take() {
                let _ = tx.send(Err(e.clone()));
            }
            s.error = Some(e);
            break;
        }
        if t.pongs > 0 {
            if let Some(tx) = ready.take() {
                let _ = tx.send(Ok(()));
            }
        }
        note(&t, &mut s, &mut seen);
        if let Err(e) = c.pay_pongs().await {
            s.error = Some(e);
            break;
        }
    }
    match *ctx.stop.borrow() {
        Stop::TimedOut => s.error = Some(format!("no message for {:?}", ctx.timeout)),
        Stop::Interrupted => s.error = Some("interrupted".into()),
        _ => {}
    }
    if s.error.is_none() {
        // Extra messages: wait for the publishers, go round the server once
        // and take whatever arrives before the PONG and shortly after.
        let _ = ctx.pubs_done.wait_for(|d| *d).await;
        let want = t.pongs + 1;
        let trip = async {
            c.write(b"PING\r\n").await?;
            while t.pongs < want {
                c.fill().await?;
                c.parse(&mut t)?;
                hand_off(&mut t, &tx).await?;
                c.pay_pongs().await?;
            }
            let until = tokio::time::Instant::now() + Duration::from_millis(20);
            while let Ok(r) = tokio::time::timeout_at(until, c.fill()).await {
                r?;
                c.parse(&mut t)?;
                hand_off(&mut t, &tx).await?;
            }
            Ok::<(), String>(())
        };
        if let Err(e) = trip.await {
            s.error = Some(e);
        }
        counter.set(t.msgs);
    }
    drop(tx);
    // Counted and timed when the handler has taken them, as an application
    // sees them (nats.go's bench times its subscribers in the handler too).
    let h = handler.await.unwrap_or_default();
    s.msgs = h.msgs;
    s.bytes = h.bytes;
    if h.first.is_some() {
        (s.start, s.end) = (h.first, h.last);
    }
    s
}

/// What a subscriber's handler saw.
#[derive(Default)]
struct Handled {
    msgs: u64,
    bytes: u64,
    /// Subject and reply bytes looked at (the handler reads each message).
    names: usize,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Hands the messages parsed so far to the subscriber's handler.
async fn hand_off(t: &mut Tally, tx: &tokio::sync::mpsc::Sender<Msg>) -> Result<(), String> {
    if let Some(inbox) = t.inbox.as_mut() {
        for m in inbox.drain(..) {
            tx.send(m)
                .await
                .map_err(|_| "the message handler stopped".to_string())?;
        }
    }
    Ok(())
}

/// What one raw publisher sends.
pub struct PubJob {
    pub conn: Conn,
    pub subject: String,
    pub multisubject: bool,
    pub n: u64,
    pub size: usize,
    pub rate: f64,
}

/// Publisher: PUB frames in 32 KiB writes, then a PING round trip.
pub async fn publisher(mut job: PubJob, mut s: Sample, counter: Arc<Counter>, mut ctx: Ctx) -> Sample {
    let start = Instant::now();
    s.start = Some(start);
    let size = job.size;
    let work = publish_all(&mut job, start, &counter);
    super::client::close_sample(work, &mut ctx, s, &counter, size).await
}

async fn publish_all(job: &mut PubJob, start: Instant, counter: &Counter) -> Result<(), String> {
    let c = &mut job.conn;
    let mut sent = 0u64;
    let payload = vec![0u8; job.size];
    let mut t = Tally::default();
    // Every message is encoded on its own into the write buffer, as a
    // client library's publish does (a prebuilt run of identical frames,
    // copied again and again, left the server more of a shared machine's
    // CPU than nats.go does and read 1.05-1.5x its numbers).
    let mut out = Vec::with_capacity(WRITE_RUN + job.size + 256);
    let mut num = itoa::Buffer::new();
    for i in 0..job.n {
        if job.rate > 0.0 {
            let due = super::client::due(start, i, job.rate);
            if Instant::now() < due {
                if !out.is_empty() {
                    c.write(&out).await?;
                    out.clear();
                    counter.set(sent);
                    poll_incoming(c, &mut t).await?;
                }
                tokio::time::sleep_until(due.into()).await;
            }
        }
        out.extend_from_slice(b"PUB ");
        out.extend_from_slice(job.subject.as_bytes());
        if job.multisubject {
            out.push(b'.');
            out.extend_from_slice(num.format(i).as_bytes());
        }
        out.push(b' ');
        out.extend_from_slice(num.format(job.size).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&payload);
        out.extend_from_slice(b"\r\n");
        sent += 1;
        if out.len() >= WRITE_RUN {
            c.write(&out).await?;
            out.clear();
            counter.set(sent);
            poll_incoming(c, &mut t).await?;
        }
    }
    if !out.is_empty() {
        c.write(&out).await?;
        counter.set(sent);
    }
    // Everything sent before the PING was processed when the PONG comes.
    let want = t.pongs + 1;
    c.write(b"PING\r\n").await?;
    while t.pongs < want {
        c.fill().await?;
        c.parse(&mut t)?;
        c.pay_pongs().await?;
    }
    Ok(())
}

/// A publisher reads between writes without waiting: answers PINGs, fails
/// on `-ERR`.
async fn poll_incoming(c: &mut Conn, t: &mut Tally) -> Result<(), String> {
    if c.try_fill()? {
        c.parse(t)?;
        c.pay_pongs().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("nats://a:b@localhost:4333").unwrap();
        assert_eq!(
            (u.addr.as_str(), u.user.as_deref(), u.pass.as_deref()),
            ("localhost:4333", Some("a"), Some("b"))
        );
        let u = parse_url("127.0.0.1").unwrap();
        assert_eq!((u.addr.as_str(), u.user), ("127.0.0.1:4222", None));
        let u = parse_url("nats://tok@[::1]").unwrap();
        assert_eq!((u.addr.as_str(), u.user.as_deref()), ("[::1]:4222", Some("tok")));
        assert!(parse_url("tls://x:1").is_err());
    }
}
