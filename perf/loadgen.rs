//! `petrel-loadgen`: a lean NATS load generator for side-by-side runs
//! against petrel and nats-server. Raw protocol over blocking sockets, one
//! thread per client, so the client costs as little CPU as possible and both
//! servers get the same headroom on a small machine.
//!
//! Subscribers subscribe and wait for PONG (so their interest is in place)
//! before publishers start; every count is checked exactly, and a run with
//! a lost or extra message fails instead of reporting a rate.
//!
//! ```text
//! petrel-loadgen --server 127.0.0.1:4222 --pubs 1 --subs 8 --msgs 1000000 --size 16 [--queue q]
//!                [--user U --password P] [--subjects N] [--churn] [--stalled N]
//! ```
//! `--subjects N`: each subscriber holds N subscriptions `SUBJECT.0` ..
//! `SUBJECT.<N-1>` and publishers cycle through those subjects (index size
//! and match speed); `--churn`: one more connection subscribes and
//! unsubscribes (plain subjects and a `*` matching SUBJECT) while the
//! publishers run; `--stalled N`: N more subscribers that never read;
//! `--sub-server ADDR`: subscribers (and the responder) connect there, so
//! in a cluster every message crosses a route; `--settle-ms N`: wait that
//! long after subscribing, for the interest to cross the routes.
//! ```text
//! ```
//! Prints one JSON line: published, received, seconds, rates.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

struct Args {
    server: String,
    /// Where subscribers and the responder connect (`--server` when absent).
    sub_server: Option<String>,
    /// Pause after subscribing before publishing.
    settle: Duration,
    subject: String,
    pubs: usize,
    subs: usize,
    msgs: u64,
    size: usize,
    queue: Option<String>,
    timeout: Duration,
    request: bool,
    /// Requests per second (request/reply only; 0: as fast as replies come).
    rate: f64,
    /// Each subscriber holds this many subscriptions (`SUBJECT.0` ...);
    /// publishers cycle through them (0: one subject).
    subjects: u64,
    /// One more connection subscribes and unsubscribes while publishers run.
    churn: bool,
    /// Extra subscribers that never read.
    stalled: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        server: "127.0.0.1:4222".into(),
        sub_server: None,
        settle: Duration::ZERO,
        subject: "bench".into(),
        pubs: 1,
        subs: 0,
        msgs: 100_000,
        size: 16,
        queue: None,
        timeout: Duration::from_secs(120),
        request: false,
        rate: 0.0,
        subjects: 0,
        churn: false,
        stalled: 0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--server" => a.server = v.trim_start_matches("nats://").to_string(),
            "--subject" => a.subject = v,
            "--pubs" => a.pubs = v.parse().expect("--pubs"),
            "--subs" => a.subs = v.parse().expect("--subs"),
            "--msgs" => a.msgs = v.parse().expect("--msgs"),
            "--size" => a.size = v.parse().expect("--size"),
            "--queue" => a.queue = Some(v),
            "--request" => {
                a.request = true;
                i += 1;
                continue;
            }
            "--churn" => {
                a.churn = true;
                i += 1;
                continue;
            }
            "--subjects" => a.subjects = v.parse().expect("--subjects"),
            "--rate" => a.rate = v.parse().expect("--rate"),
            "--stalled" => a.stalled = v.parse().expect("--stalled"),
            "--sub-server" => a.sub_server = Some(v.trim_start_matches("nats://").to_string()),
            "--settle-ms" => a.settle = Duration::from_millis(v.parse().expect("--settle-ms")),
            "--timeout" => a.timeout = Duration::from_secs(v.parse().expect("--timeout")),
            "--user" => {
                CREDS
                    .get_or_init(|| std::sync::Mutex::new((None, None)))
                    .lock()
                    .unwrap()
                    .0 = Some(v)
            }
            "--password" => {
                CREDS
                    .get_or_init(|| std::sync::Mutex::new((None, None)))
                    .lock()
                    .unwrap()
                    .1 = Some(v)
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a
}

/// `--user`/`--password` for servers with authorization.
type Creds = std::sync::Mutex<(Option<String>, Option<String>)>;
static CREDS: std::sync::OnceLock<Creds> = std::sync::OnceLock::new();

fn connect_line() -> String {
    let (user, pass) = CREDS.get().map(|c| c.lock().unwrap().clone()).unwrap_or_default();
    let auth = match user {
        Some(u) => format!(",\"user\":{u:?},\"pass\":{:?}", pass.unwrap_or_default()),
        None => String::new(),
    };
    format!("CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"headers\":true{auth}}}\r\n")
}

fn connect(server: &str) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(server).unwrap_or_else(|e| panic!("connect {server}: {e}"));
    s.set_nodelay(true).unwrap();
    let mut r = BufReader::with_capacity(1 << 20, s.try_clone().unwrap());
    let mut info = String::new();
    r.read_line(&mut info).unwrap();
    assert!(info.starts_with("INFO "), "expected INFO, got {info:?}");
    let mut w = s.try_clone().unwrap();
    w.write_all(connect_line().as_bytes()).unwrap();
    (s, r)
}

/// Sends PING and reads until PONG (answering server PINGs on the way).
fn round_trip(w: &mut TcpStream, r: &mut BufReader<TcpStream>) {
    w.write_all(b"PING\r\n").unwrap();
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "server closed");
        match line.as_str() {
            "PONG\r\n" => return,
            "PING\r\n" => w.write_all(b"PONG\r\n").unwrap(),
            l if l.starts_with("INFO ") => {}
            l => panic!("unexpected {l:?} while waiting for PONG"),
        }
    }
}

/// Counts MSG frames in a stream into `mine` and `total`, answering PINGs;
/// stops at `until()`.
fn count_msgs(
    mut w: TcpStream,
    mut r: BufReader<TcpStream>,
    mine: &AtomicU64,
    total: &AtomicU64,
    until: impl Fn() -> bool,
    deadline: Instant,
) {
    let mut buf = vec![0u8; 1 << 20];
    let mut have = 0usize;
    let mut start = 0usize;
    w.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    r.get_ref().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    while !until() {
        if Instant::now() > deadline {
            return;
        }
        if start > 0 {
            buf.copy_within(start..have, 0);
            have -= start;
            start = 0;
        }
        if have == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match r.read(&mut buf[have..]) {
            Ok(0) => panic!("server closed the subscriber"),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => panic!("read: {e}"),
        };
        have += n;
        let mut count = 0;
        while let Some(nl) = memchr(&buf[start..have]) {
            let line = &buf[start..start + nl];
            if line.starts_with(b"MSG ") || line.starts_with(b"HMSG ") {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let size_tok = line.rsplit(|&b| b == b' ').next().unwrap();
                let size: usize = std::str::from_utf8(size_tok).unwrap().parse().unwrap();
                let end = start + nl + 1 + size + 2;
                if end > have {
                    break;
                }
                start = end;
                count += 1;
            } else {
                if line.starts_with(b"PING") {
                    w.write_all(b"PONG\r\n").unwrap();
                } else if line.starts_with(b"-ERR") {
                    panic!("server error: {}", String::from_utf8_lossy(line));
                }
                start += nl + 1;
            }
        }
        mine.fetch_add(count, Ordering::Relaxed);
        total.fetch_add(count, Ordering::Relaxed);
    }
}

fn memchr(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Reads one line, answering server PINGs on the way.
fn line(w: &mut TcpStream, r: &mut BufReader<TcpStream>, buf: &mut String) {
    loop {
        buf.clear();
        assert!(r.read_line(buf).unwrap() > 0, "server closed");
        if buf == "PING\r\n" {
            w.write_all(b"PONG\r\n").unwrap();
            continue;
        }
        return;
    }
}

/// Request/reply: one responder connection answers `msgs` requests sent one
/// at a time by one requester connection (paced at `--rate` per second when
/// given: each request starts at its slot, or at once when late); prints
/// latency percentiles.
fn request_reply(a: &Args) {
    let (mut rw, mut rr) = connect(a.sub_server.as_ref().unwrap_or(&a.server));
    rw.write_all(format!("SUB {} 1\r\n", a.subject).as_bytes()).unwrap();
    round_trip(&mut rw, &mut rr);
    let size = a.size;
    let responder = std::thread::spawn(move || {
        let mut l = String::new();
        let mut payload = vec![0u8; size + 2];
        loop {
            line(&mut rw, &mut rr, &mut l);
            if !l.starts_with("MSG ") {
                continue;
            }
            let parts: Vec<&str> = l.split_whitespace().collect();
            if parts.len() < 5 {
                continue;
            }
            let n: usize = parts[4].parse().unwrap();
            payload.resize(n + 2, 0);
            rr.read_exact(&mut payload).unwrap();
            let mut out = format!("PUB {} {n}\r\n", parts[3]).into_bytes();
            out.extend_from_slice(&payload);
            if rw.write_all(&out).is_err() {
                return;
            }
        }
    });
    let (mut w, mut r) = connect(&a.server);
    w.write_all(b"SUB _INBOX.bench.* 9\r\n").unwrap();
    round_trip(&mut w, &mut r);
    std::thread::sleep(a.settle);
    let body = vec![b'x'; a.size];
    let mut lat = Vec::with_capacity(a.msgs as usize);
    let mut l = String::new();
    let mut payload = vec![0u8; a.size + 2];
    let start = Instant::now();
    for i in 0..a.msgs {
        if a.rate > 0.0 {
            let slot = start + Duration::from_secs_f64(i as f64 / a.rate);
            if let Some(wait) = slot.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let t = Instant::now();
        let mut req = format!("PUB {} _INBOX.bench.{i} {}\r\n", a.subject, a.size).into_bytes();
        req.extend_from_slice(&body);
        req.extend_from_slice(b"\r\n");
        w.write_all(&req).unwrap();
        loop {
            line(&mut w, &mut r, &mut l);
            if l.starts_with("MSG ") {
                break;
            }
        }
        r.read_exact(&mut payload).unwrap();
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    println!(
        "{{\"published\":{},\"expected\":{},\"received\":{},\"seconds\":{secs:.6},\"pub_seconds\":{secs:.6},\"pub_rate\":{:.0},\"delivered_rate\":{:.0},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1}}}",
        a.msgs,
        a.msgs,
        lat.len(),
        a.msgs as f64 / secs,
        lat.len() as f64 / secs,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        lat.last().unwrap().as_secs_f64() * 1e6
    );
    drop(w);
    drop(responder);
}

fn main() {
    let a = parse_args();
    if a.request {
        request_reply(&a);
        return;
    }
    let per_pub = a.msgs / a.pubs.max(1) as u64;
    let published = per_pub * a.pubs as u64;
    let expected: u64 = match (&a.queue, a.subs) {
        (_, 0) => 0,
        (Some(_), _) => published,
        (None, n) => published * n as u64,
    };
    let received = Arc::new(AtomicU64::new(0));
    let sub_micros = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(Barrier::new(a.subs + 1));
    // Stalled subscribers: subscribed, then never read until the end.
    let stalled: Vec<_> = (0..a.stalled)
        .map(|_| {
            let (mut w, mut r) = connect(&a.server);
            w.write_all(format!("SUB {} 1\r\n", a.subject).as_bytes()).unwrap();
            round_trip(&mut w, &mut r);
            (w, r)
        })
        .collect();
    let deadline = Instant::now() + a.timeout;
    let mut sub_threads = Vec::new();
    for _ in 0..a.subs {
        let server = a.sub_server.clone().unwrap_or_else(|| a.server.clone());
        let (subject, queue) = (a.subject.clone(), a.queue.clone());
        let (received, ready, sub_secs) = (received.clone(), ready.clone(), sub_micros.clone());
        let subjects = a.subjects;
        let per_sub = if queue.is_some() { None } else { Some(published) };
        sub_threads.push(std::thread::spawn(move || {
            let (mut w, mut r) = connect(&server);
            let t0 = Instant::now();
            if subjects > 0 {
                let mut buf = Vec::with_capacity(1 << 16);
                for i in 0..subjects {
                    buf.extend_from_slice(format!("SUB {subject}.{i} {}\r\n", i + 1).as_bytes());
                    if buf.len() >= 60_000 {
                        w.write_all(&buf).unwrap();
                        buf.clear();
                    }
                }
                w.write_all(&buf).unwrap();
            } else {
                let sub = match &queue {
                    Some(q) => format!("SUB {subject} {q} 1\r\n"),
                    None => format!("SUB {subject} 1\r\n"),
                };
                w.write_all(sub.as_bytes()).unwrap();
            }
            round_trip(&mut w, &mut r);
            sub_secs.store(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
            ready.wait();
            let mine = AtomicU64::new(0);
            count_msgs(
                w,
                r,
                &mine,
                &received,
                || match per_sub {
                    Some(n) => mine.load(Ordering::Relaxed) >= n,
                    None => received.load(Ordering::Relaxed) >= expected,
                },
                deadline,
            );
        }));
    }
    ready.wait();
    std::thread::sleep(a.settle);
    let start = Instant::now();
    let frame = {
        let mut f = format!("PUB {} {}\r\n", a.subject, a.size).into_bytes();
        f.extend(std::iter::repeat_n(b'x', a.size));
        f.extend_from_slice(b"\r\n");
        f
    };
    let per_chunk = ((64 * 1024) / frame.len()).max(1) as u64;
    let chunk: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * per_chunk as usize)
        .collect();
    let publishing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let churner = a.churn.then(|| {
        let (server, subject, publishing) = (a.server.clone(), a.subject.clone(), publishing.clone());
        std::thread::spawn(move || churn(&server, &subject, &publishing))
    });
    let pub_threads: Vec<_> = (0..a.pubs)
        .map(|_| {
            let (server, chunk, frame) = (a.server.clone(), chunk.clone(), frame.clone());
            let (subject, subjects, size) = (a.subject.clone(), a.subjects, a.size);
            std::thread::spawn(move || {
                let (mut w, mut r) = connect(&server);
                if subjects > 0 {
                    let body = vec![b'x'; size];
                    let mut buf = Vec::with_capacity(1 << 17);
                    for seq in 0..per_pub {
                        buf.extend_from_slice(format!("PUB {subject}.{} {size}\r\n", seq % subjects).as_bytes());
                        buf.extend_from_slice(&body);
                        buf.extend_from_slice(b"\r\n");
                        if buf.len() >= 1 << 16 {
                            w.write_all(&buf).unwrap();
                            buf.clear();
                        }
                    }
                    w.write_all(&buf).unwrap();
                    round_trip(&mut w, &mut r);
                    return;
                }
                let mut left = per_pub;
                while left >= per_chunk {
                    w.write_all(&chunk).unwrap();
                    left -= per_chunk;
                }
                for _ in 0..left {
                    w.write_all(&frame).unwrap();
                }
                round_trip(&mut w, &mut r);
            })
        })
        .collect();
    for t in pub_threads {
        t.join().unwrap();
    }
    let pub_secs = start.elapsed().as_secs_f64();
    for t in sub_threads {
        t.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    publishing.store(false, Ordering::Relaxed);
    let churn_ops = churner.map(|t| t.join().unwrap()).unwrap_or(0);
    drop(stalled);
    let got = received.load(Ordering::Relaxed);
    println!(
        "{{\"published\":{published},\"expected\":{expected},\"received\":{got},\"seconds\":{secs:.6},\"pub_seconds\":{pub_secs:.6},\"pub_rate\":{:.0},\"delivered_rate\":{:.0},\"subscribe_seconds\":{:.6},\"churn_ops\":{churn_ops},\"churn_rate\":{:.0}}}",
        published as f64 / secs,
        got as f64 / secs,
        sub_micros.load(Ordering::Relaxed) as f64 / 1e6,
        churn_ops as f64 / secs
    );
    if got != expected {
        eprintln!("count mismatch: expected {expected} deliveries, got {got}");
        std::process::exit(1);
    }
}

/// Subscribes and unsubscribes in batches (100 plain subjects and one `*`
/// that matches the benchmark subject, then a PING round trip, discarding
/// any deliveries) until `publishing` turns false; returns SUB+UNSUB pairs.
fn churn(server: &str, subject: &str, publishing: &std::sync::atomic::AtomicBool) -> u64 {
    let (mut w, mut r) = connect(server);
    let wildcard = if subject.contains('.') {
        format!("{}.*", subject.rsplit_once('.').unwrap().0)
    } else {
        "*".into()
    };
    let mut ops = 0u64;
    let mut sid = 1u64;
    let mut l = String::new();
    let mut skip = Vec::new();
    while publishing.load(Ordering::Relaxed) {
        let mut buf = String::with_capacity(8192);
        for _ in 0..100 {
            buf.push_str(&format!("SUB churn.{sid} {sid}\r\nUNSUB {sid}\r\n"));
            sid += 1;
        }
        buf.push_str(&format!("SUB {wildcard} {sid}\r\nUNSUB {sid}\r\nPING\r\n"));
        sid += 1;
        w.write_all(buf.as_bytes()).unwrap();
        loop {
            line(&mut w, &mut r, &mut l);
            if l == "PONG\r\n" {
                break;
            }
            if l.starts_with("MSG ") {
                let n: usize = l.split_whitespace().last().unwrap().parse().unwrap();
                skip.resize(n + 2, 0);
                r.read_exact(&mut skip).unwrap();
            }
        }
        ops += 101;
    }
    ops
}
