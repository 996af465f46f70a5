//! The read loop of a server-to-server link (a route or a leaf node
//! connection): bytes in, operations parsed and handed to the link's
//! protocol, one clock reading and one flush per read, and the pacing that
//! keeps a fast peer from filling this server's slow clients' queues.

use std::rc::Rc;
use std::time::Instant;

use crate::ids::ConnId;
use crate::proto::encode;
use crate::proto::errors::{CloseReason, WireError};
use crate::proto::parser::ParseError;
use crate::proto::route::{RouteOp, RouteParsed};
use crate::shard::link_s2::{Inflate, SharedS2};
use crate::shard::state::Shard;
use crate::shard::transport::{read, Stream};

/// What to do after an operation: go on, or close after an optional
/// `-ERR` text.
pub(crate) type Step = Result<(), (Option<String>, CloseReason)>;

/// A link's protocol as its reader drives it.
pub(crate) trait LinkProtocol {
    /// How the link's log lines start (`ip:port - rid:N`).
    fn who(&self) -> &str;
    /// What log lines call its parser (`Router`, `Leafnode`).
    const PARSER: &'static str;
    /// Parses one operation from the front of `buf`.
    fn parse<'b>(&self, buf: &'b [u8], max_line: usize) -> Result<RouteParsed<'b>, ParseError>;
    /// Handles one operation.
    async fn on_op(&self, op: RouteOp<'_>) -> Step;
    /// The link's S2 state, if it may compress.
    fn link_s2(&self) -> Option<&SharedS2> {
        None
    }
}

/// Reads `stream` until the link closes; returns why.
pub(crate) async fn read_loop<P: LinkProtocol>(
    shard: &Rc<Shard>,
    cid: ConnId,
    stream: &Stream,
    proto: &P,
) -> CloseReason {
    let max_line = shard.opts.borrow().max_control_line.saturating_mul(16);
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    // Once the peer switched to S2: its raw bytes, and whether whole
    // chunks wait to be inflated before the next read.
    let mut inflate: Option<(Inflate, Vec<u8>, bool)> = None;
    // A leaf that answered the hub's INFO before its reader ran.
    if proto.link_s2().is_some_and(|s| s.borrow_mut().take_switch_in()) {
        inflate = Some((Inflate::default(), vec![0u8; 64 * 1024], false));
    }
    let mut gauge = super::buffer_gauge::BufferGauge::new(&shard.link_read_buffers);
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        gauge.note(buf.capacity() + inflate.as_ref().map_or(0, |(_, raw, _)| raw.capacity()));
        let got = match &mut inflate {
            None => read(stream, &mut buf[filled..]).await,
            Some((inf, raw, more)) => inflated(stream, inf, raw, more, &mut buf, filled).await,
        };
        let n = match got {
            Ok(0) => return CloseReason::ClientClosed,
            Ok(n) => n,
            Err(e) => {
                if let Some(r) = shard.core.borrow().conn(cid).and_then(|c| c.closing()) {
                    return r;
                }
                if e.kind() == std::io::ErrorKind::InvalidData {
                    crate::error!("{} - Error reading from compressed stream: {e}", proto.who());
                }
                return CloseReason::ReadError;
            }
        };
        crate::trace!(
            "{} - <<- {:?}",
            proto.who(),
            String::from_utf8_lossy(&buf[filled..filled + n])
        );
        filled += n;
        // One clock reading per read, as for a client's read: the pacing
        // of subscribers the messages land with reads it.
        shard.core.borrow_mut().set_now(Instant::now());
        let mut used = 0;
        let outcome = loop {
            match proto.parse(&buf[used..filled], max_line) {
                Ok(RouteParsed::Incomplete) => break Ok(()),
                Ok(RouteParsed::Op(op, len)) => {
                    used += len;
                    if let Err(e) = proto.on_op(op).await {
                        break Err(e);
                    }
                    if proto.link_s2().is_some_and(|s| s.borrow_mut().take_switch_in()) {
                        // The peer's bytes after this operation are S2: what
                        // was read past it goes to the inflater, which the
                        // next turn steps before it reads again.
                        let mut inf = Inflate::default();
                        inf.push(&buf[used..filled]);
                        filled = used;
                        inflate = Some((inf, vec![0u8; 64 * 1024], true));
                        break Ok(());
                    }
                }
                Err(e) => {
                    let shown = String::from_utf8_lossy(&buf[used..filled.min(used + 32)]).into_owned();
                    crate::error!(
                        "{} - {} parser ERROR: proto='{shown:?}...': {e}",
                        proto.who(),
                        P::PARSER
                    );
                    break Err(match e {
                        ParseError::UnknownOp => (
                            Some(WireError::UnknownProtocolOperation.text().to_string()),
                            CloseReason::ProtocolViolation,
                        ),
                        _ => (None, CloseReason::ProtocolViolation),
                    });
                }
            }
        };
        // Taken before the flush can wait: another task of the shard would
        // take this read's stall meanwhile.
        let stall = shard.core.borrow_mut().take_stall();
        shard.publish_stats();
        shard.flush().await;
        if let Err((err, reason)) = outcome {
            fail(shard, cid, err.as_deref(), reason);
            return reason;
        }
        buf.copy_within(used..filled, 0);
        filled -= used;
        if buf.len() > 64 * 1024 && filled <= 64 * 1024 {
            buf.truncate(64 * 1024);
            buf.shrink_to(64 * 1024);
        }
        // Let the writers this read woke run before the next read: a
        // peer's stream is always ready, and a reader that never yields
        // keeps its subscribers' writers (and their pacing) idle.
        futures_lite::future::yield_now().await;
        if stall {
            // Everything the peer sends lands in this server's clients'
            // queues: wait (a while at most) for those being read to drain,
            // so the peer's writes back up rather than memory here.
            crate::shard::writer::pace(shard).await;
        }
    }
}

/// The next plain bytes of an S2 link, appended at `buf[filled..]`: whole
/// chunks left from the last step first, else read and inflated; 0 only
/// when the peer closed.
async fn inflated(
    stream: &Stream,
    inf: &mut Inflate,
    raw: &mut [u8],
    more: &mut bool,
    buf: &mut Vec<u8>,
    filled: usize,
) -> std::io::Result<usize> {
    loop {
        if !*more {
            let n = read(stream, raw).await?;
            if n == 0 {
                return Ok(0);
            }
            inf.push(&raw[..n]);
        }
        buf.truncate(filled);
        *more = inf
            .step(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let n = buf.len() - filled;
        // Room for the next read past what was inflated.
        buf.resize(buf.len().max(filled + 64 * 1024), 0);
        if n > 0 {
            return Ok(n);
        }
    }
}

/// Sends `-ERR '<text>'` (when given) and closes the link.
pub(crate) fn fail(shard: &Shard, cid: ConnId, err: Option<&str>, reason: CloseReason) {
    let mut core = shard.core.borrow_mut();
    if let Some(text) = err {
        let mut out = Vec::new();
        encode::err_text(&mut out, text);
        core.send_raw(cid, &out);
    }
    core.close_conn(cid, reason);
}
