//! Sockets on the reactor: TCP streams and listeners, and the Unix stream a
//! shard's doorbell rings on. Reads and writes are direct non-blocking
//! system calls; the reactor only says when to try again.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::ManuallyDrop;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};

use super::reactor::{Registered, Side};
use super::timer::{timeout, Sleep};

fn read_fd(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is live and writable for its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is live for its length. No SIGPIPE: a closed peer is an error.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A view of `fd` as a std stream, for the socket options std offers.
fn std_view(fd: RawFd) -> ManuallyDrop<std::net::TcpStream> {
    // SAFETY: the view never closes the fd (ManuallyDrop) and lives shorter
    // than its owner.
    ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) })
}

/// A TCP connection on this thread's reactor.
pub struct TcpStream {
    io: Registered,
    /// A write blocked longer than this fails with `TimedOut`.
    write_timeout: std::cell::Cell<Option<Duration>>,
    /// When the write now blocked gives up.
    write_deadline: Option<Sleep>,
}

impl TcpStream {
    /// Takes a connected std stream onto this thread's reactor.
    pub fn from_std(s: std::net::TcpStream) -> io::Result<TcpStream> {
        s.set_nonblocking(true)?;
        TcpStream::registered(OwnedFd::from(s))
    }

    /// A stream over a socket already non-blocking (accepted or dialed here).
    fn registered(fd: OwnedFd) -> io::Result<TcpStream> {
        Ok(TcpStream {
            io: Registered::new(fd)?,
            write_timeout: Default::default(),
            write_deadline: None,
        })
    }

    /// Connects to `addr`, giving up after `limit`.
    pub async fn connect_timeout(addr: SocketAddr, limit: Duration) -> io::Result<TcpStream> {
        let connect = async {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM.nonblocking().cloexec(),
                None,
            )?;
            match sock.connect(&addr.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            let s = TcpStream::registered(sock.into())?;
            // Writable once connected (or failed): wait for that event.
            s.io.drained(Side::Write);
            poll_fn(|cx| s.io.poll_io(cx, Side::Write, || Ok(()))).await?;
            let view = std_view(s.io.fd());
            match view.take_error()? {
                Some(e) => Err(e),
                None => Ok(s),
            }
        };
        match timeout(limit, async { Ok(connect.await) }).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connection timed out")),
        }
    }

    /// Sets TCP_NODELAY.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        std_view(self.io.fd()).set_nodelay(on)
    }

    /// A write that cannot make progress for `limit` fails with
    /// `TimedOut` (`None`: it waits as long as it takes).
    pub fn set_write_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        self.write_timeout.set(limit);
        Ok(())
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        std_view(self.io.fd()).peer_addr()
    }

    /// Shuts one or both directions down.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        std_view(self.io.fd()).shutdown(how)
    }

    /// Reads without taking the bytes off the socket.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| {
            self.io
                .poll_io(cx, Side::Read, || read_fd(self.io.fd(), buf, libc::MSG_PEEK))
        })
        .await
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.fd()
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let io = &self.io;
        let r = io.poll_io(cx, Side::Read, || read_fd(io.fd(), buf, 0));
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 && n < buf.len() {
                // A short read emptied the socket; the next byte raises an event.
                io.drained(Side::Read);
            }
        }
        r
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let fd = me.io.fd();
        match me.io.poll_io(cx, Side::Write, || write_fd(fd, buf)) {
            Poll::Ready(r) => {
                me.write_deadline = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let Some(limit) = me.write_timeout.get() else {
                    return Poll::Pending;
                };
                let deadline = me
                    .write_deadline
                    .get_or_insert_with(|| Sleep::until(Instant::now() + limit));
                match Pin::new(deadline).poll(cx) {
                    Poll::Ready(()) => {
                        me.write_deadline = None;
                        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown(Shutdown::Write))
    }
}

/// The addresses of `host:port`: at once for an IP literal, else looked up
/// on a worker thread, so a slow resolver never stalls the executor.
pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let host = host.to_string();
    super::spawn_blocking(move || std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).map(|a| a.collect()))
        .await
}

/// An accepted connection not yet on any reactor: it can move to another
/// shard's thread.
#[derive(Debug)]
pub struct AcceptedTcpStream(std::net::TcpStream);

impl AcceptedTcpStream {
    /// Takes the connection onto this thread's reactor.
    pub fn bind_to_executor(self) -> io::Result<TcpStream> {
        // Non-blocking since its accept.
        TcpStream::registered(OwnedFd::from(self.0))
    }
}

/// A listening socket on this thread's reactor.
pub struct TcpListener {
    io: Registered,
}

impl TcpListener {
    /// Takes a listening std socket onto this thread's reactor.
    pub fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
        l.set_nonblocking(true)?;
        Ok(TcpListener {
            io: Registered::new(OwnedFd::from(l))?,
        })
    }

    /// The next connection, not yet bound to a reactor.
    pub async fn shared_accept(&self) -> io::Result<AcceptedTcpStream> {
        let fd = self.io.fd();
        let accepted = poll_fn(|cx| {
            self.io.poll_io(cx, Side::Read, || {
                // SAFETY: accept4 on our listening fd; no address wanted.
                let s = unsafe {
                    libc::accept4(
                        fd,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    )
                };
                if s < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(s)
                }
            })
        })
        .await?;
        // SAFETY: a fresh fd from accept4.
        Ok(AcceptedTcpStream(unsafe { std::net::TcpStream::from_raw_fd(accepted) }))
    }

    /// The next connection, on this thread's reactor.
    pub async fn accept(&self) -> io::Result<TcpStream> {
        self.shared_accept().await?.bind_to_executor()
    }
}

/// A Unix stream socket on this thread's reactor (read side).
pub struct UnixStream {
    io: Registered,
}

impl UnixStream {
    /// Takes the socket onto this thread's reactor.
    pub fn from_owned(fd: OwnedFd) -> io::Result<UnixStream> {
        let s = std::os::unix::net::UnixStream::from(fd);
        s.set_nonblocking(true)?;
        Ok(UnixStream {
            io: Registered::new(s.into())?,
        })
    }
}

impl AsyncRead for UnixStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let fd = self.io.fd();
        self.io.poll_io(cx, Side::Read, || read_fd(fd, buf, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::Builder;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn bytes_cross_a_connection_both_ways_and_eof_is_seen() {
        let got = Builder::new("net")
            .spawn(|| async {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = l.local_addr().unwrap();
                let listener = TcpListener::from_std(l).unwrap();
                let server = crate::rt::spawn_local(async move {
                    let mut s = listener.accept().await.unwrap();
                    let mut buf = [0u8; 5];
                    s.read_exact(&mut buf).await.unwrap();
                    s.write_all(b"world").await.unwrap();
                    s.close().await.unwrap();
                    buf
                });
                let mut c = TcpStream::connect_timeout(addr, Duration::from_secs(1)).await.unwrap();
                c.write_all(b"hello").await.unwrap();
                let mut back = Vec::new();
                c.read_to_end(&mut back).await.unwrap();
                (server.await, back)
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(&got.0, b"hello");
        assert_eq!(got.1, b"world");
    }

    #[test]
    fn two_tasks_waiting_to_read_one_socket_both_wake() {
        let seen = Builder::new("net")
            .spawn(|| async {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = l.local_addr().unwrap();
                let c = std::rc::Rc::new(TcpStream::connect_timeout(addr, Duration::from_secs(1)).await.unwrap());
                let (mut peer, _) = l.accept().unwrap();
                let peekers: Vec<_> = (0..2)
                    .map(|_| {
                        let c = c.clone();
                        crate::rt::spawn_local(async move {
                            let mut b = [0u8; 4];
                            c.peek(&mut b).await.unwrap()
                        })
                    })
                    .collect();
                // Both are waiting before the bytes arrive.
                crate::rt::timer::sleep(Duration::from_millis(20)).await;
                std::io::Write::write_all(&mut peer, b"ping").unwrap();
                let mut seen = Vec::new();
                for p in peekers {
                    // A peeker never woken shows as 0 rather than a hang.
                    seen.push(
                        timeout(Duration::from_secs(2), async { Ok(p.await) })
                            .await
                            .unwrap_or(0),
                    );
                }
                seen
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(seen, vec![4, 4]);
    }

    #[test]
    fn a_write_that_cannot_progress_times_out() {
        let kind = Builder::new("net")
            .spawn(|| async {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = l.local_addr().unwrap();
                let mut c = TcpStream::connect_timeout(addr, Duration::from_secs(1)).await.unwrap();
                let _peer = l.accept().unwrap(); // never reads
                c.set_write_timeout(Some(Duration::from_millis(50))).unwrap();
                let chunk = vec![0u8; 1 << 16];
                loop {
                    if let Err(e) = c.write_all(&chunk).await {
                        return e.kind();
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(kind, io::ErrorKind::TimedOut);
    }

    #[test]
    fn names_and_literals_resolve() {
        let (name, v4, v6) = Builder::new("net")
            .spawn(|| async {
                (
                    resolve("localhost", 4222).await.unwrap(),
                    resolve("127.0.0.1", 4222).await.unwrap(),
                    resolve("[::1]", 4222).await.unwrap(),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(name.iter().all(|a| a.ip().is_loopback() && a.port() == 4222) && !name.is_empty());
        assert_eq!(v4, vec!["127.0.0.1:4222".parse().unwrap()]);
        assert_eq!(v6, vec!["[::1]:4222".parse().unwrap()]);
    }

    #[test]
    fn a_refused_connect_fails() {
        let r = Builder::new("net")
            .spawn(|| async {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap();
                TcpStream::connect_timeout(port, Duration::from_secs(1))
                    .await
                    .map(|_| ())
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(r.is_err());
    }
}
