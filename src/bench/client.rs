//! What every bench client shares, whichever protocol it speaks: the run's
//! context and stop signal, pacing, progress counters, and how a
//! publisher's sample is closed. `run.rs` and `raw.rs` both build on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::report::Sample;

/// Why clients should stop before their counts are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Running,
    /// A queue group (or the responders) got every message between them.
    GroupDone,
    TimedOut,
    Interrupted,
}

/// When message `i` of a run paced at `rate` messages per second is due.
pub fn due(start: Instant, i: u64, rate: f64) -> Instant {
    start + Duration::from_secs_f64(i as f64 / rate)
}

/// Runs a publishing client's `work` unless the run is cut short, then
/// closes its sample: end time, error, and what it sent (`counter`
/// messages of `size` bytes).
pub async fn close_sample(
    work: impl std::future::Future<Output = Result<(), String>>,
    ctx: &mut Ctx,
    mut s: Sample,
    counter: &Counter,
    size: usize,
) -> Sample {
    let result = tokio::select! {
        r = work => r,
        _ = aborted(ctx) => Err("stopped before the end".to_string()),
    };
    s.end = Some(Instant::now());
    s.error = result.err();
    s.msgs = counter.get();
    s.bytes = s.msgs * size as u64;
    s
}

/// Resolves when the run is cut short (timeout, Ctrl-C). Publishers and
/// requesters finish on their own otherwise: the responders' group can count
/// every request while the last replies are still on their way back.
async fn aborted(ctx: &mut Ctx) {
    let cut = ctx.stop.wait_for(|s| matches!(s, Stop::TimedOut | Stop::Interrupted));
    if cut.await.is_err() {
        // The run's controller is gone: nothing will cut this short.
        std::future::pending::<()>().await;
    }
}

/// One client's progress counter, alone on its cache line.
#[repr(align(64))]
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct Ctx {
    pub stop: watch::Receiver<Stop>,
    /// Becomes true when every publisher has finished (and flushed).
    pub pubs_done: watch::Receiver<bool>,
    pub timeout: Duration,
}
