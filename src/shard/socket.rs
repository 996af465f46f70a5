//! The socket under a client's protocol: plain TCP, or TLS over it. A
//! WebSocket runs over one of these; the NATS protocol over one of these or
//! over WebSocket frames (`conn::Transport`).

use std::pin::Pin;
use std::task::{Context, Poll};

use crate::rt::net::TcpStream;
use futures_lite::{AsyncRead, AsyncWrite};

/// Plain TCP, or TLS (rustls) over it.
pub enum Socket {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, this server the TLS server.
    Tls(Box<futures_rustls::server::TlsStream<TcpStream>>),
    /// TLS over TCP, this server the TLS client (a route it dialed).
    TlsDialed(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl Socket {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Plain(s) => s,
            Socket::Tls(t) => t.get_ref().0,
            Socket::TlsDialed(t) => t.get_ref().0,
        }
    }
}

impl AsyncRead for Socket {
    #[inline]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
            Socket::TlsDialed(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
            Socket::TlsDialed(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
            Socket::TlsDialed(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    #[inline]
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_close(cx),
            Socket::Tls(t) => Pin::new(t.as_mut()).poll_close(cx),
            Socket::TlsDialed(t) => Pin::new(t.as_mut()).poll_close(cx),
        }
    }
}
