//! The writer task every connection runs (clients, routes, leaf nodes):
//! takes what the core queued for it and writes it out, framed as S2 for
//! a link that switched, retrying a passed write deadline where the link
//! allows, and closing the transport when the core closes the
//! connection.

use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::AsyncWrite;

use super::state::Shard;
use super::transport::{shutdown, write_all_counted, Stream, Transport};
use crate::ids::ConnId;
use crate::proto::errors::CloseReason;

/// How long a publisher pauses when a subscriber it fed is nearly full
/// (and, while it waits for a lagging one, how often it looks again).
pub const STALL: Duration = Duration::from_millis(2);
/// The longest a reader waits for the clients it made lag.
const STALL_MAX: Duration = Duration::from_millis(50);

/// Paces the reader (of a client, a link, or another shard's batches)
/// whose work just made a subscriber fall behind: while a client it fed is
/// still reading and holds more than half the mark that paced it, for at
/// most [`STALL_MAX`], going on as soon as that client's writer takes its
/// queue below the half rather than at the next STALL tick. The publisher
/// goes at its subscribers' pace rather than queue what they cannot take
/// yet; a subscriber that stopped reading is not waited for (the
/// slow-consumer limit deals with it). Paced with no such client (one near
/// `max_pending`), it pauses STALL, as nats-server's fast-producer stall.
pub(super) async fn pace(shard: &Shard) {
    // Whether a client this reader made lag still holds more than the half
    // (the core's clock set first: the flush before may have waited).
    let lagging = || {
        let mut core = shard.core.borrow_mut();
        core.set_now(Instant::now());
        core.lagging_over(crate::core::SOFT_RESUME)
    };
    let deadline = Instant::now() + STALL_MAX;
    if !lagging() {
        crate::rt::timer::sleep(STALL).await;
        return;
    }
    loop {
        let mut registered = false;
        let drained = poll_fn(|cx| {
            if registered {
                return Poll::Ready(());
            }
            registered = true;
            shard.core.borrow_mut().wait_for_drain(cx.waker());
            Poll::Pending
        });
        futures_lite::future::or(drained, crate::rt::timer::sleep(STALL)).await;
        if !lagging() || Instant::now() >= deadline {
            return;
        }
    }
}

/// Ends a connection the server closes: a WebSocket client gets a close
/// frame first; then the socket is shut.
pub(super) async fn close_transport(stream: &Stream, reason: CloseReason) {
    if let Transport::Ws(w) = &mut *stream.borrow_mut() {
        w.close(reason);
    }
    let _ = poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_flush(cx)).await;
    shutdown(stream);
}

/// Writes what the core queues for `cid` until the link closes. A write
/// deadline that passes closes the link, unless `retry` (nats-server's
/// `retry` write policy, the routes' default) and some bytes went out:
/// then the link is a slow consumer and writing goes on.
pub(super) async fn write_loop(
    shard: Rc<Shard>,
    stream: Stream,
    cid: ConnId,
    retry: bool,
    s2: Option<crate::shard::link_s2::SharedS2>,
) -> CloseReason {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut slow = false;
    loop {
        let next = poll_fn(
            |cx| match shard.core.borrow_mut().poll_output(cid, &mut chunks, cx.waker()) {
                Some(r) => Poll::Ready(r),
                None => Poll::Pending,
            },
        )
        .await;
        match next {
            Ok(()) => {
                // A link that switched to S2 sends its framing instead.
                let framed = s2.as_ref().and_then(|s| s.borrow_mut().wire(&chunks));
                for chunk in framed.as_ref().unwrap_or(&chunks) {
                    if let Err(reason) = write_chunk(&shard, &stream, cid, chunk, retry, &mut slow).await {
                        return reason;
                    }
                    shard.core.borrow_mut().note_written(cid, std::time::Instant::now());
                }
                shard.core.borrow_mut().recycle_chunks(cid, chunks.drain(..));
            }
            Err(reason) => {
                close_transport(&stream, reason).await;
                return reason;
            }
        }
    }
}

/// Writes one chunk; a write deadline that passes with some bytes out is
/// waited out on a link that retries (logged once as a slow consumer).
/// Returns why the connection closed if it did.
async fn write_chunk(
    shard: &Shard,
    stream: &Stream,
    cid: ConnId,
    chunk: &[u8],
    retry: bool,
    slow: &mut bool,
) -> Result<(), CloseReason> {
    crate::trace!("cid:{} - ->> {:?}", cid.0, String::from_utf8_lossy(chunk));
    let mut at = 0;
    let result = loop {
        let (n, r) = write_all_counted(stream, &chunk[at..]).await;
        at += n;
        match r {
            Err(e) if retry && n > 0 && e.kind() == std::io::ErrorKind::TimedOut => {
                if !*slow {
                    shard.core.borrow_mut().count_slow_consumer();
                    crate::info!(
                        "rid:{} - Slow Consumer Detected: WriteDeadline exceeded with {} of {} bytes written",
                        cid.0,
                        at,
                        chunk.len()
                    );
                    *slow = true;
                }
            }
            Ok(()) if *slow => {
                crate::info!("rid:{} - Slow Consumer Recovered", cid.0);
                *slow = false;
                break Ok(());
            }
            r => break r,
        }
    };
    let Err(e) = result else { return Ok(()) };
    // Closed by the core meanwhile (a slow consumer's socket is shut under
    // a blocked write): keep its reason.
    if let Some(r) = shard.core.borrow().conn(cid).and_then(|c| c.closing()) {
        shutdown(stream);
        return Err(r);
    }
    let reason = if e.kind() == std::io::ErrorKind::TimedOut {
        shard.core.borrow_mut().count_slow_consumer();
        CloseReason::SlowConsumerWriteDeadline
    } else {
        CloseReason::WriteError
    };
    shard.core.borrow_mut().close_conn(cid, reason);
    shutdown(stream);
    Err(reason)
}
