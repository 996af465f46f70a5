//! A client connection's transport: the socket (plain or TLS) or WebSocket
//! frames over it, shared by the connection's reader and writer tasks.

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use crate::rt::net::TcpStream;
use futures_lite::{AsyncRead, AsyncWrite};

use super::socket::Socket;
use super::websocket::WsStream;

/// A client's transport: the socket (or TLS over it), or WebSocket frames
/// over that.
pub enum Transport {
    /// Plain TCP or TLS.
    Socket(Socket),
    /// WebSocket frames over either.
    Ws(Box<WsStream>),
}

impl Transport {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Socket(s) => s.tcp(),
            Transport::Ws(w) => w.inner().tcp(),
        }
    }
}

impl futures_lite::AsyncRead for Transport {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Socket(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Ws(w) => Pin::new(w.as_mut()).poll_read(cx, buf),
        }
    }
}

impl futures_lite::AsyncWrite for Transport {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Socket(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Ws(w) => Pin::new(w.as_mut()).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Socket(s) => Pin::new(s).poll_flush(cx),
            Transport::Ws(w) => Pin::new(w.as_mut()).poll_flush(cx),
        }
    }

    #[inline]
    fn poll_close(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Socket(s) => Pin::new(s).poll_close(cx),
            Transport::Ws(w) => Pin::new(w.as_mut()).poll_close(cx),
        }
    }
}

/// A connection's transport, shared by its reader and writer tasks.
pub type Stream = Rc<RefCell<Transport>>;

/// Reads from a connection's transport.
#[inline]
pub async fn read(stream: &Stream, buf: &mut [u8]) -> std::io::Result<usize> {
    poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_read(cx, buf)).await
}

/// Writes all of `buf` (and flushes what TLS or WebSocket framing holds).
#[inline]
pub async fn write_all(stream: &Stream, buf: &[u8]) -> std::io::Result<()> {
    write_all_counted(stream, buf).await.1
}

/// Writes all of `buf` as [`write_all`] does; also says how many bytes
/// went out before an error (a write deadline may pass mid-way).
#[inline]
pub async fn write_all_counted(stream: &Stream, mut buf: &[u8]) -> (usize, std::io::Result<()>) {
    let mut written = 0;
    while !buf.is_empty() {
        let n = match poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_write(cx, buf)).await {
            Ok(n) => n,
            Err(e) => return (written, Err(e)),
        };
        if n == 0 {
            return (written, Err(std::io::ErrorKind::WriteZero.into()));
        }
        written += n;
        buf = &buf[n..];
    }
    (written, flush(stream).await)
}

async fn flush(stream: &Stream) -> std::io::Result<()> {
    // TLS buffers records and WebSocket frames: push them to the socket.
    if !matches!(&*stream.borrow(), Transport::Socket(Socket::Plain(_))) {
        poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_flush(cx)).await?;
    }
    Ok(())
}

/// Shuts a connection's socket in both directions (its tasks then end).
pub fn shutdown(stream: &Stream) {
    // The fd stays open until the stream is dropped.
    let _ = stream.borrow().tcp().shutdown(std::net::Shutdown::Both);
}
