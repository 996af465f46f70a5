//! The server's listening sockets: binding one SO_REUSEPORT listener per
//! shard, the busy-port check nats-server users rely on, and closing them
//! promptly when the server stops.
//!
//! A listener handed to a shard has an io_uring accept in flight, and the
//! kernel tears a ring down after its process has gone: a socket closed
//! only by the process exiting keeps accepting for a few milliseconds
//! more. A server restarted on the same port would find it busy, and a
//! client or leaf node dialing meanwhile would connect and then be reset.
//! So the process keeps a duplicate of each listener and shuts them down
//! (which stops a listening socket whatever holds it) before it exits, and
//! the client listeners when lame duck mode starts. After SIGKILL nothing
//! runs: [`ensure_port_free`] then waits out a dying listener.

use std::net::{Shutdown, SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Why listeners could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The listen address does not resolve.
    #[error("could not resolve listen address {0}")]
    Resolve(String),
    /// The listener could not be created (the port is busy, say).
    #[error("Error listening on port: {addr}, {err}")]
    Listen {
        /// The address as configured.
        addr: String,
        /// The error.
        err: std::io::Error,
    },
}

/// How long a port that accepts is watched for refusing, as a listener of
/// a process that just stopped does once its ring is torn down.
const DYING_LISTENER_WAIT: Duration = Duration::from_millis(250);
/// The pause between two probes of such a port.
const PROBE_PAUSE: Duration = Duration::from_millis(5);

fn listen_socket(addr: SocketAddr) -> std::io::Result<StdListener> {
    let domain = if addr.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Fails, as nats-server would, when another process already listens on
/// the address. petrel's own listeners share their port through
/// SO_REUSEPORT, which would let a second server of the same user join that
/// port silently (a non-listening bind does not conflict with them either),
/// so the check is a connection attempt. A port that accepts is probed
/// again for [`DYING_LISTENER_WAIT`]: one refusal shows a listener that was
/// going away (a petrel killed a moment ago), not a server running there.
fn ensure_port_free(addr: SocketAddr) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let mut probe = addr;
    if probe.ip().is_unspecified() {
        probe.set_ip(if addr.is_ipv6() {
            std::net::Ipv6Addr::LOCALHOST.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        });
    }
    let deadline = Instant::now() + DYING_LISTENER_WAIT;
    loop {
        if std::net::TcpStream::connect_timeout(&probe, DYING_LISTENER_WAIT).is_err() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "bind: address already in use",
            ));
        }
        std::thread::sleep(PROBE_PAUSE);
    }
}

/// Binds `n` SO_REUSEPORT listeners (one per shard) on the same address;
/// a port of `-1` or `0` picks a free port for the first and reuses it for
/// the rest.
pub fn bind(host: &str, port: i32, n: usize) -> Result<(Vec<StdListener>, SocketAddr), BindError> {
    let port = if port < 0 { 0 } else { port as u16 };
    let text = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let addr = text
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| BindError::Resolve(text.clone()))?;
    let listen_err = |err| BindError::Listen {
        addr: text.clone(),
        err,
    };
    ensure_port_free(addr).map_err(listen_err)?;
    let first = listen_socket(addr).map_err(listen_err)?;
    let bound = first.local_addr().map_err(listen_err)?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(listen_socket(bound).map_err(listen_err)?);
    }
    Ok((all, bound))
}

/// Which listeners lame duck mode stops: the client-facing ones (client
/// port and WebSocket, as nats-server closes) or the links' (routes and
/// leaf nodes, which stay open until the server exits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Facing {
    /// Client and WebSocket listeners.
    Clients,
    /// Route and leaf node listeners.
    Links,
}

/// Duplicates of the listeners handed to the shards, kept to stop them.
#[derive(Default)]
pub struct Stoppers {
    kept: Vec<(Facing, StdListener)>,
}

impl Stoppers {
    /// Keeps a duplicate of each of `listeners`.
    pub fn keep(&mut self, facing: Facing, listeners: &[StdListener]) -> std::io::Result<()> {
        for l in listeners {
            self.kept.push((facing, l.try_clone()?));
        }
        Ok(())
    }

    /// Stops the listeners facing `facing`: new connections are refused at
    /// once and the shards' pending accepts fail.
    pub fn stop(&self, facing: Facing) {
        for (f, l) in &self.kept {
            if *f == facing {
                // An error means it was stopped already.
                let _ = SockRef::from(l).shutdown(Shutdown::Both);
            }
        }
    }

    /// Stops every listener.
    pub fn stop_all(&self) {
        self.stop(Facing::Clients);
        self.stop(Facing::Links);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_listener_refuses_while_its_socket_stays_open() {
        let (ls, addr) = bind("127.0.0.1", 0, 2).unwrap();
        let mut stoppers = Stoppers::default();
        stoppers.keep(Facing::Clients, &ls).unwrap();
        assert!(std::net::TcpStream::connect(addr).is_ok());
        stoppers.stop(Facing::Links);
        assert!(
            std::net::TcpStream::connect(addr).is_ok(),
            "only the links' were stopped"
        );
        stoppers.stop(Facing::Clients);
        // `ls` is still open, as a shard's listener would be.
        assert!(std::net::TcpStream::connect(addr).is_err());
        drop(ls);
    }

    #[test]
    fn a_port_someone_listens_on_is_busy() {
        let other = StdListener::bind("127.0.0.1:0").unwrap();
        let port = other.local_addr().unwrap().port();
        let started = Instant::now();
        let err = bind("127.0.0.1", port as i32, 1).unwrap_err();
        assert!(err.to_string().contains("address already in use"), "{err}");
        assert!(
            started.elapsed() >= DYING_LISTENER_WAIT,
            "a live listener is watched first"
        );
    }

    #[test]
    fn a_listener_going_away_frees_its_port() {
        let other = StdListener::bind("127.0.0.1:0").unwrap();
        let port = other.local_addr().unwrap().port();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(other);
        });
        assert!(bind("127.0.0.1", port as i32, 1).is_ok());
        closer.join().unwrap();
    }
}
