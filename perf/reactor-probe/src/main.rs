//! Reactor probe (README, Performance: why petrel has its own runtime).
//! The cost of a reactor's wake-up under petrel's request/reply pattern,
//! without petrel: a forwarder passes bytes between a requester and a
//! responder (16 B round trips, paced or not), once on glommio, once on a
//! bare io_uring loop (one-shot and multishot polls), once on epoll, and
//! reports its own CPU time. `run.sh` runs every mode in turn.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args[2].parse().unwrap();
    match args[1].as_str() {
        "fwd-glommio" => fwd_glommio(port),
        "fwd-uring" => fwd_uring(port, false),
        "fwd-epoll" => fwd_epoll(port),
        "fwd-multi" => fwd_uring(port, true),
        "responder" => responder(port),
        "requester" => requester(port, args[3].parse().unwrap(), args[4].parse().unwrap()),
        _ => panic!("mode"),
    }
}

fn pair(port: u16) -> (TcpStream, TcpStream) {
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (b, _) = l.accept().unwrap(); // responder first
    let (a, _) = l.accept().unwrap(); // then the requester
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (a, b)
}

fn fwd_glommio(port: u16) {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let (a, b) = pair(port);
    glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(0))
        .spawn(move || async move {
            use std::os::fd::{FromRawFd, IntoRawFd};
            let a2 = unsafe { glommio::net::TcpStream::from_raw_fd(libc::dup(a.as_raw_fd())) };
            let b2 = unsafe { glommio::net::TcpStream::from_raw_fd(libc::dup(b.as_raw_fd())) };
            let a = unsafe { glommio::net::TcpStream::from_raw_fd(a.into_raw_fd()) };
            let b = unsafe { glommio::net::TcpStream::from_raw_fd(b.into_raw_fd()) };
            let (mut a, mut b, mut a2, mut b2) = (a, b, a2, b2);
            let t1 = {
                glommio::spawn_local(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let n = a.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        b2.write_all(&buf[..n]).await.unwrap();
                    }
                })
            };
            let t2 = glommio::spawn_local(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = b.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    a2.write_all(&buf[..n]).await.unwrap();
                }
            });
            t1.await;
            t2.await;
        })
        .unwrap()
        .join()
        .unwrap();
    report();
}

fn pin0() {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn nonblocking(s: &TcpStream) {
    s.set_nonblocking(true).unwrap();
}

/// Reads what is there and sends it on; false at EOF.
fn pass(from: RawFd, to: RawFd, buf: &mut [u8]) -> bool {
    loop {
        let n = unsafe { libc::recv(from, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n == 0 {
            return false;
        }
        if n < 0 {
            return true; // EAGAIN
        }
        let mut off = 0;
        while off < n as usize {
            let w = unsafe { libc::send(to, buf[off..].as_ptr().cast(), n as usize - off, libc::MSG_DONTWAIT) };
            assert!(w > 0);
            off += w as usize;
        }
        if (n as usize) < buf.len() {
            return true;
        }
    }
}

/// One system call per wake-up: the re-armed polls go in and it waits.
/// `multi`: multishot polls, re-armed only when the kernel ends one.
fn fwd_uring(port: u16, multi: bool) {
    use io_uring::{opcode, types, IoUring};
    let (a, b) = pair(port);
    nonblocking(&a);
    nonblocking(&b);
    pin0();
    let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
    let mut ring = IoUring::new(64).unwrap();
    let arm = |ring: &mut IoUring, fd: RawFd, tag: u64| {
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(multi)
            .build()
            .user_data(tag);
        unsafe { ring.submission().push(&e).unwrap() };
    };
    arm(&mut ring, fa, 0);
    arm(&mut ring, fb, 1);
    let mut buf = vec![0u8; 4096];
    loop {
        ring.submit_and_wait(1).unwrap();
        let done: Vec<(u64, u32)> = ring.completion().map(|c| (c.user_data(), c.flags())).collect();
        for (tag, flags) in done {
            let (from, to) = if tag == 0 { (fa, fb) } else { (fb, fa) };
            if !pass(from, to, &mut buf) {
                return report();
            }
            if !multi || !io_uring::cqueue::more(flags) {
                arm(&mut ring, from, tag);
            }
        }
    }
}

fn fwd_epoll(port: u16) {
    let (a, b) = pair(port);
    nonblocking(&a);
    nonblocking(&b);
    pin0();
    let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
    let ep = unsafe { libc::epoll_create1(0) };
    for (fd, tag) in [(fa, 0u64), (fb, 1u64)] {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: tag,
        };
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    }
    let mut buf = vec![0u8; 4096];
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
    loop {
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 8, -1) };
        for ev in &evs[..n.max(0) as usize] {
            let (from, to) = if ev.u64 == 0 { (fa, fb) } else { (fb, fa) };
            if !pass(from, to, &mut buf) {
                return report();
            }
        }
    }
}

fn responder(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [0u8; 16];
    while s.read_exact(&mut buf).is_ok() {
        s.write_all(&buf).unwrap();
    }
}

fn requester(port: u16, rate: u64, n: usize) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [7u8; 16];
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        if rate > 0 {
            let at = start + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(d) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        let t = Instant::now();
        s.write_all(&buf).unwrap();
        s.read_exact(&mut buf).unwrap();
        lat.push(t.elapsed().as_micros() as u64);
    }
    let el = start.elapsed();
    lat.sort();
    println!(
        "{:.0} rt/s p50 {} us p99 {} us",
        n as f64 / el.as_secs_f64(),
        lat[n / 2],
        lat[n * 99 / 100]
    );
}

/// The forwarder's own CPU time, all threads.
fn report() {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    println!(
        "CPU {} us (user {} sys {})",
        us(u.ru_utime) + us(u.ru_stime),
        us(u.ru_utime),
        us(u.ru_stime)
    );
}
