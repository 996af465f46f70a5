//! Timers: [`sleep`] and [`timeout`], kept per executor in deadline order.
//! The executor sleeps until the earliest one and wakes the expired ones.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A timer's place: its deadline and a sequence number for equal ones.
type Key = (Instant, u64);

thread_local! {
    /// This thread's timers, installed by its executor.
    static CURRENT: Cell<Option<&'static Timers>> = const { Cell::new(None) };
}

/// This thread's timers. Panics outside an executor's thread.
fn current() -> &'static Timers {
    CURRENT.with(|c| c.get()).expect("no petrel executor on this thread")
}

/// One executor's pending timers.
#[derive(Default)]
pub(crate) struct Timers {
    pending: RefCell<BTreeMap<Key, Waker>>,
    seq: Cell<u64>,
}

impl Timers {
    /// Makes these the thread's timers; they live as long as the thread.
    pub(crate) fn install(self) -> &'static Timers {
        let t: &'static Timers = Box::leak(Box::new(self));
        CURRENT.with(|c| c.set(Some(t)));
        t
    }

    fn add(&self, at: Instant, waker: Waker) -> Key {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        self.pending.borrow_mut().insert((at, seq), waker);
        (at, seq)
    }

    fn remove(&self, key: &Key) {
        self.pending.borrow_mut().remove(key);
    }

    fn rewake(&self, key: &Key, waker: &Waker) {
        if let Some(w) = self.pending.borrow_mut().get_mut(key) {
            if !w.will_wake(waker) {
                *w = waker.clone();
            }
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.pending.borrow().keys().next().map(|k| k.0)
    }

    /// Wakes every timer due at `now`.
    pub(crate) fn fire(&self, now: Instant) {
        loop {
            let due = {
                let mut pending = self.pending.borrow_mut();
                match pending.first_entry() {
                    Some(e) if e.key().0 <= now => Some(e.remove()),
                    _ => None,
                }
            };
            match due {
                Some(w) => w.wake(),
                None => break,
            }
        }
    }
}

/// Completes once `at` has passed.
#[derive(Debug)]
pub struct Sleep {
    at: Instant,
    key: Option<Key>,
}

impl Sleep {
    /// A sleep until `at`.
    pub fn until(at: Instant) -> Sleep {
        Sleep { at, key: None }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            if let Some(k) = self.key.take() {
                current().remove(&k);
            }
            return Poll::Ready(());
        }
        let timers = current();
        match &self.key {
            Some(k) => timers.rewake(k, cx.waker()),
            None => {
                let key = timers.add(self.at, cx.waker().clone());
                self.key = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            // No executor any more (its thread is ending): nothing to remove from.
            if let Some(t) = CURRENT.try_with(|c| c.get()).ok().flatten() {
                t.remove(&k);
            }
        }
    }
}

/// Completes after `d`.
pub fn sleep(d: Duration) -> Sleep {
    Sleep::until(Instant::now() + d)
}

/// A [`timeout`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out")]
pub struct TimedOut;

/// Runs `work` for at most `d`: its result, or [`TimedOut`].
pub async fn timeout<T, F>(d: Duration, work: F) -> Result<T, TimedOut>
where
    F: Future<Output = Result<T, TimedOut>>,
{
    let out = futures_lite::future::or(async { Some(work.await) }, async {
        sleep(d).await;
        None
    })
    .await;
    out.unwrap_or(Err(TimedOut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::Builder;

    #[test]
    fn sleeps_wake_in_deadline_order_and_timeouts_cut_work_short() {
        let (order, cut, done) = Builder::new("timers")
            .spawn(|| async {
                let order = std::rc::Rc::new(RefCell::new(Vec::new()));
                let mut tasks = Vec::new();
                for (i, ms) in [30u64, 10, 20].into_iter().enumerate() {
                    let o = order.clone();
                    tasks.push(crate::rt::spawn_local(async move {
                        sleep(Duration::from_millis(ms)).await;
                        o.borrow_mut().push(i);
                    }));
                }
                for t in tasks {
                    t.await;
                }
                let start = Instant::now();
                let cut = timeout(Duration::from_millis(10), async {
                    sleep(Duration::from_secs(5)).await;
                    Ok(1)
                })
                .await;
                assert!(start.elapsed() < Duration::from_secs(1));
                let done = timeout(Duration::from_secs(5), async { Ok(2) }).await;
                let order = order.borrow().clone();
                (order, cut, done)
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(order, vec![1, 2, 0]);
        assert_eq!(cut, Err(TimedOut));
        assert_eq!(done, Ok(2));
    }
}
