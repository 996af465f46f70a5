//! A burst of connections over two shards: every client gets its INFO and
//! PONG. (The mesh receivers once waited on each other's queues when a burst
//! of hand-overs and interest changes filled both directions, and stopped
//! both shards.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn every_client_of_a_burst_is_served() {
    // SAFETY: raising this process's own open-file limit to its hard limit.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    let s = common::petrel(&["--shards", "2"]);
    let n = 3000;
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = TcpStream::connect(s.addr()).unwrap();
        c.write_all(format!("CONNECT {{\"verbose\":false}}\r\nSUB idle.{i} 1\r\nPING\r\n").as_bytes())
            .unwrap();
        socks.push(c);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut missing = 0;
    for c in &mut socks {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(6).any(|w| w == b"PONG\r\n") {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10));
            c.set_read_timeout(Some(left)).unwrap();
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
        }
        if !got.starts_with(b"INFO ") || !got.windows(6).any(|w| w == b"PONG\r\n") {
            missing += 1;
        }
    }
    assert_eq!(missing, 0, "{missing} of {n} clients got no INFO and PONG");
}
