//! A WebSocket client's transport: the upgrade handshake over the socket
//! (or TLS), then a stream that unwraps the client's frames into NATS bytes
//! for the session and wraps the server's writes into frames. Control
//! frames (ping, close) are answered here, below the session.

use std::pin::Pin;
use std::task::{Context, Poll};

use crate::rt::net::TcpStream;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::socket::Socket;
use crate::proto::errors::CloseReason;
use crate::ws::frame::{self, Control, Decoder, Encoder};
use crate::ws::handshake::{self, Upgrade};
use crate::ws::WsSettings;

/// Bytes read from the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// The framed side of a WebSocket connection.
pub struct WsStream {
    inner: Socket,
    decoder: Decoder,
    encoder: Encoder,
    /// The read buffer (allocated once); `raw[..raw_len]` is read and not
    /// yet decoded (at most a partial frame header).
    raw: Vec<u8>,
    raw_len: usize,
    /// Decoded NATS bytes not yet handed to the reader.
    data: Vec<u8>,
    data_pos: usize,
    /// Framed bytes not yet written.
    out: Vec<u8>,
    out_pos: usize,
    /// A close frame was queued: nothing more is sent or read.
    closed: bool,
    /// The writer task waiting for `out` to drain: the reader may drain it
    /// (writing a pong) and must wake it then.
    writer: Option<std::task::Waker>,
    /// This server is the WebSocket client (a leaf that dialed a hub): its
    /// frames are masked, unless the hub took `Nats-No-Masking`.
    masked: bool,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl WsStream {
    /// The socket under the framing.
    pub fn inner(&self) -> &Socket {
        &self.inner
    }

    /// Queues a close frame for a connection the server ends for `reason`
    /// (nothing when one was queued already).
    pub fn close(&mut self, reason: CloseReason) {
        self.queue_close(&frame::close_payload(frame::close_status(reason), reason.as_str()));
    }

    fn queue_close(&mut self, payload: &[u8]) {
        if !self.closed {
            self.put(frame::OP_CLOSE, payload);
            self.closed = true;
        }
    }

    /// Queues one frame, masked when this side is the client.
    fn put(&mut self, opcode: u8, payload: &[u8]) {
        if self.masked {
            frame::put_masked_frame(&mut self.out, opcode, payload);
        } else {
            frame::put_frame(&mut self.out, opcode, payload);
        }
    }

    /// Writes queued frames; `Ready(Ok)` once they are all out.
    fn drive_out(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.out_pos < self.out.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.out_pos += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Pushes queued frames and whatever TLS buffered to the socket.
    fn flush_all(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.drive_out(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }
}

impl AsyncRead for WsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        loop {
            // Pongs and the close answer go out as soon as the socket takes them.
            if !me.out.is_empty() && me.flush_all(cx).is_ready() {
                if let Some(w) = me.writer.take() {
                    w.wake();
                }
            }
            if me.data_pos < me.data.len() {
                let n = buf.len().min(me.data.len() - me.data_pos);
                buf[..n].copy_from_slice(&me.data[me.data_pos..me.data_pos + n]);
                me.data_pos += n;
                if me.data_pos == me.data.len() {
                    me.data.clear();
                    me.data_pos = 0;
                }
                return Poll::Ready(Ok(n));
            }
            if me.closed {
                return Poll::Ready(Ok(0));
            }
            if me.raw.len() < me.raw_len + READ_CHUNK {
                me.raw.resize(me.raw_len + READ_CHUNK, 0);
            }
            let start = me.raw_len;
            let n = match Pin::new(&mut me.inner).poll_read(cx, &mut me.raw[start..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            me.raw_len += n;
            let mut controls = Vec::new();
            match me
                .decoder
                .decode(&mut me.raw[..me.raw_len], &mut me.data, &mut controls)
            {
                Ok(used) => {
                    me.raw.copy_within(used..me.raw_len, 0);
                    me.raw_len -= used;
                }
                Err(e) => {
                    crate::error!("websocket protocol error: {}", e.text);
                    me.queue_close(&frame::close_payload(e.status, &e.text));
                    let _ = me.flush_all(cx);
                    if let Some(w) = me.writer.take() {
                        w.wake();
                    }
                    return Poll::Ready(Err(io_err(e)));
                }
            }
            for c in controls {
                match c {
                    Control::Ping(p) => {
                        if !me.closed {
                            me.put(frame::OP_PONG, &p);
                        }
                    }
                    Control::Close(p) => me.queue_close(&p),
                }
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        // Bound what is queued: the previous write must be out first.
        match me.drive_out(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                me.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        if me.closed {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        if me.masked {
            me.encoder.frame_masked(buf, &mut me.out);
        } else {
            me.encoder.frame(buf, &mut me.out);
        }
        let _ = me.drive_out(cx);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let r = me.flush_all(cx);
        if r.is_pending() {
            me.writer = Some(cx.waker().clone());
        }
        r
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        match me.flush_all(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut me.inner).poll_close(cx),
            other => other,
        }
    }
}

/// What a finished upgrade gives the connection.
pub struct Accepted {
    /// The framed transport.
    pub stream: WsStream,
    /// What the handshake settled (cookies, forwarded address, ...).
    pub upgrade: Upgrade,
    /// With wss and `verify_and_map`: the names the client certificate offers.
    pub cert_names: Vec<String>,
}

/// Reads and answers the HTTP upgrade on `inner` (TLS already done when
/// `tls`). `Err` carries the reason to log; the HTTP error was sent.
pub async fn accept(
    mut inner: Socket,
    settings: &WsSettings,
    tls: bool,
    max_payload: usize,
) -> Result<Accepted, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let parsed = loop {
        match handshake::parse_request(&buf) {
            Ok(Some((req, len))) => break Ok((req, len)),
            Ok(None) => {}
            Err(r) => break Err(r),
        }
        let n = inner.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed during the websocket handshake".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let result = parsed.and_then(|(req, len)| {
        if len < buf.len() {
            return Err(handshake::Refusal {
                status: 400,
                reason: "client sent data before handshake is complete".into(),
            });
        }
        handshake::upgrade(&req, settings, tls)
    });
    match result {
        Ok(upgrade) => {
            inner.write_all(&upgrade.response).await.map_err(|e| e.to_string())?;
            inner.flush().await.map_err(|e| e.to_string())?;
            let mut decoder = Decoder::new(upgrade.compress, max_payload);
            if upgrade.no_masking {
                decoder = decoder.without_masking();
            }
            let stream = WsStream {
                inner,
                decoder,
                encoder: Encoder::new(upgrade.compress, upgrade.browser),
                raw: Vec::new(),
                raw_len: 0,
                data: Vec::new(),
                data_pos: 0,
                out: Vec::new(),
                out_pos: 0,
                closed: false,
                writer: None,
                masked: false,
            };
            Ok(Accepted {
                stream,
                upgrade,
                cert_names: Vec::new(),
            })
        }
        Err(refusal) => {
            let _ = inner.write_all(&handshake::error_response(refusal.status)).await;
            let _ = inner.flush().await;
            Err(refusal.to_string())
        }
    }
}

/// Runs the TLS handshake (for wss) and the upgrade within the handshake
/// deadline, if one is set.
pub async fn open(
    tcp: TcpStream,
    settings: &WsSettings,
    tls: Option<&crate::tls::ClientTls>,
    max_payload: usize,
) -> Result<Accepted, String> {
    let work = async {
        let mut cert_names = Vec::new();
        let inner = match tls {
            Some(t) => {
                let acceptor = futures_rustls::TlsAcceptor::from(t.config.clone());
                // The tls block's own deadline bounds the TLS part.
                let s = crate::rt::timer::timeout(t.timeout, async { Ok(acceptor.accept(tcp).await) })
                    .await
                    .map_err(|_| "TLS handshake timeout".to_string())?
                    .map_err(|e| format!("TLS handshake error: {}", crate::tls::handshake_failure(&e)))?;
                cert_names = t
                    .admit(s.get_ref().1)
                    .map_err(|_| "TLS handshake error: certificate not pinned".to_string())?;
                Socket::Tls(Box::new(s))
            }
            None => Socket::Plain(tcp),
        };
        let mut accepted = accept(inner, settings, tls.is_some(), max_payload).await?;
        accepted.cert_names = cert_names;
        Ok(accepted)
    };
    match settings.handshake_timeout.filter(|d| !d.is_zero()) {
        Some(limit) => match crate::rt::timer::timeout(limit, async { Ok(work.await) }).await {
            Ok(r) => r,
            Err(_) => Err("websocket handshake timeout".into()),
        },
        None => work.await,
    }
}

/// Upgrades a connection this server dialed (a leaf to a hub's WebSocket
/// port, TLS already done for wss): nats-server's request, its checks of
/// the answer; what came after the answer is the first frames.
pub async fn dial_upgrade(
    mut inner: Socket,
    host_port: &str,
    path: &str,
    no_masking: bool,
    compress: bool,
    max_payload: usize,
) -> Result<WsStream, String> {
    use base64::Engine;
    let key_bytes: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
    inner
        .write_all(&handshake::leaf_request(host_port, path, &key, no_masking, compress))
        .await
        .map_err(|e| e.to_string())?;
    inner.flush().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let answer = loop {
        if let Some(r) = handshake::leaf_response(&buf, &key)? {
            break r;
        }
        let n = inner.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("EOF".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    crate::debug!(
        "Leafnode compression={} masking={}",
        answer.compress,
        !(no_masking && answer.no_masking)
    );
    let mut rest = buf[answer.len..].to_vec();
    // The hub's first frames may have come with its answer: decoded now,
    // as the reader reads the socket before it decodes again.
    let mut decoder = Decoder::new(answer.compress, max_payload).without_masking();
    let mut data = Vec::new();
    let mut controls = Vec::new();
    let used = decoder
        .decode(&mut rest, &mut data, &mut controls)
        .map_err(|e| e.text)?;
    rest.drain(..used);
    Ok(WsStream {
        inner,
        // The hub's frames are not masked.
        decoder,
        encoder: Encoder::new(answer.compress, false),
        raw_len: rest.len(),
        raw: rest,
        data,
        data_pos: 0,
        out: Vec::new(),
        out_pos: 0,
        closed: false,
        writer: None,
        masked: !(no_masking && answer.no_masking),
    })
}
