//! Bounded queues between executors (one per pair of shards): a lock-free
//! ring, the receiver's waker rung when something arrives, the sender's
//! when room frees up after it found the ring full.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::task::Poll;

use crossbeam_queue::ArrayQueue;
use futures::task::AtomicWaker;

struct Ring<T> {
    slots: ArrayQueue<T>,
    receiver_waits: AtomicWaker,
    sender_waits: AtomicWaker,
    sender_gone: AtomicBool,
    receiver_gone: AtomicBool,
}

/// Why a [`Sender::try_send`] did not send.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The ring is full; the message comes back.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// The receiver is gone.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

/// The sending end; it may move to another thread once.
pub struct Sender<T>(Arc<Ring<T>>);

/// The receiving end.
pub struct Receiver<T>(Arc<Ring<T>>);

/// A queue of `capacity` messages.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let ring = Arc::new(Ring {
        slots: ArrayQueue::new(capacity),
        receiver_waits: AtomicWaker::new(),
        sender_waits: AtomicWaker::new(),
        sender_gone: AtomicBool::new(false),
        receiver_gone: AtomicBool::new(false),
    });
    (Sender(ring.clone()), Receiver(ring))
}

impl<T> Sender<T> {
    /// Sends without waiting.
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        if self.0.receiver_gone.load(SeqCst) {
            return Err(TrySendError::Closed(msg));
        }
        match self.0.slots.push(msg) {
            Ok(()) => {
                self.0.receiver_waits.wake();
                Ok(())
            }
            Err(m) => Err(TrySendError::Full(m)),
        }
    }

    /// Sends, waiting for room.
    pub async fn send(&self, msg: T) -> Result<(), Closed> {
        let mut msg = Some(msg);
        poll_fn(|cx| {
            let m = msg.take().expect("polled after completion");
            // The waker goes in before the try: room freed after it wakes us.
            self.0.sender_waits.register(cx.waker());
            match self.try_send(m) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(TrySendError::Closed(_)) => Poll::Ready(Err(Closed)),
                Err(TrySendError::Full(m)) => {
                    msg = Some(m);
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.sender_gone.store(true, SeqCst);
        self.0.receiver_waits.wake();
    }
}

impl<T> Receiver<T> {
    fn take(&self) -> Option<T> {
        let m = self.0.slots.pop()?;
        self.0.sender_waits.wake();
        Some(m)
    }

    /// The next message; `None` once the sender is gone and all is read.
    pub async fn recv(&self) -> Option<T> {
        poll_fn(|cx| {
            if let Some(m) = self.take() {
                return Poll::Ready(Some(m));
            }
            self.0.receiver_waits.register(cx.waker());
            if let Some(m) = self.take() {
                return Poll::Ready(Some(m));
            }
            if self.0.sender_gone.load(SeqCst) {
                // A last message may have landed just before the sender left.
                return Poll::Ready(self.take());
            }
            Poll::Pending
        })
        .await
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.receiver_gone.store(true, SeqCst);
        self.0.sender_waits.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::Builder;

    #[test]
    fn messages_cross_threads_in_order_through_a_full_ring() {
        let (tx, rx) = bounded::<u32>(4);
        let sender = Builder::new("tx")
            .spawn(move || async move {
                for i in 0..1000 {
                    tx.send(i).await.unwrap();
                }
            })
            .unwrap();
        let got = Builder::new("rx")
            .spawn(move || async move {
                let mut got = Vec::new();
                while let Some(m) = rx.recv().await {
                    got.push(m);
                }
                got
            })
            .unwrap()
            .join()
            .unwrap();
        sender.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_full_ring_gives_the_message_back() {
        let (tx, _rx) = bounded::<u32>(1);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    }
}
