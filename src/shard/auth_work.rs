//! Slow authentication work (bcrypt, URL resolver fetches) on workers of
//! its own, so that it never waits behind, or holds up, anything else: the
//! shards go on serving, `$SYS` and monitoring requests use threads
//! of their own (`rt::spawn_blocking`), and each kind of slow work has its own bounded queue.
//!
//! Queues are fair by client address: workers take jobs from the waiting
//! addresses in turn, so a flood from one address delays a client from
//! another by at most one job per worker. A job whose client has gone
//! (closed, or cut off by its authentication timeout) is skipped, so the
//! work done is bounded by what clients still wait for. Each address and
//! each queue has a bound; a job beyond it is refused at once
//! ([`AuthError::Overloaded`]).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crate::auth::verify::{AuthError, SlowWork};

/// Jobs one address may have waiting in one queue (many clients behind one
/// NAT reconnecting at once must fit).
const PER_ADDRESS: usize = 1024;
/// Jobs one queue may hold in all.
const PER_QUEUE: usize = 16384;

/// Jobs in lanes served in turn (round robin over lanes with work).
#[derive(Debug)]
pub struct FairQueue<L, J> {
    lanes: HashMap<L, VecDeque<J>>,
    turn: VecDeque<L>,
    len: usize,
    per_lane: usize,
    total: usize,
}

impl<L: Hash + Eq + Clone, J> FairQueue<L, J> {
    /// An empty queue with these bounds.
    pub fn new(per_lane: usize, total: usize) -> Self {
        FairQueue {
            lanes: HashMap::new(),
            turn: VecDeque::new(),
            len: 0,
            per_lane,
            total,
        }
    }

    /// Queues `job` in `lane`, or gives it back when a bound is reached.
    pub fn push(&mut self, lane: L, job: J) -> Result<(), J> {
        let q = self.lanes.entry(lane.clone()).or_default();
        if q.len() >= self.per_lane || self.len >= self.total {
            if q.is_empty() {
                self.lanes.remove(&lane);
            }
            return Err(job);
        }
        if q.is_empty() {
            self.turn.push_back(lane);
        }
        q.push_back(job);
        self.len += 1;
        Ok(())
    }

    /// The next job: the oldest of the lane whose turn it is.
    pub fn pop(&mut self) -> Option<J> {
        let lane = self.turn.pop_front()?;
        let q = self.lanes.get_mut(&lane).expect("a lane in turn has jobs");
        let job = q.pop_front().expect("a lane in turn has jobs");
        if q.is_empty() {
            self.lanes.remove(&lane);
        } else {
            self.turn.push_back(lane);
        }
        self.len -= 1;
        Some(job)
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no job waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A fair queue and the threads that serve it.
struct Workers {
    queue: Mutex<FairQueue<Option<IpAddr>, Job>>,
    ready: Condvar,
}

impl Workers {
    fn start(name: &str, threads: usize) -> Arc<Workers> {
        let w = Arc::new(Workers {
            queue: Mutex::new(FairQueue::new(PER_ADDRESS, PER_QUEUE)),
            ready: Condvar::new(),
        });
        for i in 0..threads {
            let w = w.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || w.serve())
                .expect("an authentication worker thread starts");
        }
        w
    }

    fn serve(&self) {
        loop {
            let job = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(job) = q.pop() {
                        break job;
                    }
                    q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            job();
        }
    }

    fn submit(&self, lane: Option<IpAddr>, job: Job) -> bool {
        let pushed = self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(lane, job)
            .is_ok();
        if pushed {
            self.ready.notify_one();
        }
        pushed
    }
}

/// The process's authentication workers: bcrypt on half the cores (at
/// least two), account fetches (waiting on the network) on four.
fn workers(kind: SlowWork) -> &'static Workers {
    static BCRYPT: OnceLock<Arc<Workers>> = OnceLock::new();
    static FETCH: OnceLock<Arc<Workers>> = OnceLock::new();
    match kind {
        SlowWork::Bcrypt => BCRYPT.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            Workers::start("petrel-bcrypt", cores.div_ceil(2).max(2))
        }),
        SlowWork::AccountFetch => FETCH.get_or_init(|| Workers::start("petrel-fetch", 4)),
    }
}

/// Runs `check` on the workers for `kind`, in the lane of `client`, and
/// waits for its verdict without holding the shard's thread.
pub async fn run<T: Send + 'static>(
    kind: SlowWork,
    client: Option<IpAddr>,
    check: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
) -> Result<T, AuthError> {
    let (tx, rx) = futures::channel::oneshot::channel();
    let job: Job = Box::new(move || {
        if !tx.is_canceled() {
            let _ = tx.send(check());
        }
    });
    if !workers(kind).submit(client, job) {
        return Err(AuthError::Overloaded);
    }
    rx.await.unwrap_or(Err(AuthError::Overloaded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[test]
    fn lanes_take_turns_and_bounds_refuse() {
        let mut q = FairQueue::new(3, 5);
        for i in 0..3 {
            assert!(q.push("flood", i).is_ok());
        }
        assert_eq!(q.push("flood", 3), Err(3), "per-lane bound");
        assert!(q.push("user", 100).is_ok());
        assert!(q.push("other", 200).is_ok());
        assert_eq!(q.push("late", 300), Err(300), "total bound");
        assert_eq!(q.len(), 5);
        // The flood's first job, then the user's, though the flood queued first.
        assert_eq!(q.pop(), Some(0));
        assert_eq!(q.pop(), Some(100));
        assert_eq!(q.pop(), Some(200));
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
        assert!(q.push("late", 300).is_ok(), "room again");
    }

    #[test]
    fn a_lone_job_is_not_stuck_behind_a_full_lane() {
        let mut q = FairQueue::new(64, 4096);
        for i in 0..64 {
            q.push(1u8, i).unwrap();
        }
        q.push(2u8, 1000).unwrap();
        assert_eq!(q.pop(), Some(0));
        assert_eq!(q.pop(), Some(1000));
    }

    #[test]
    fn run_answers_across_threads() {
        let v = futures::executor::block_on(run(SlowWork::Bcrypt, None, || Ok::<_, AuthError>(7)));
        assert_eq!(v, Ok(7));
    }

    #[test]
    fn jobs_of_clients_that_left_are_skipped() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        static RAN: AtomicUsize = AtomicUsize::new(0);
        let lane = Some(IpAddr::from([127, 0, 0, 9]));
        // A future dropped after its first poll: the client closed.
        for _ in 0..50 {
            let mut f = Box::pin(run(SlowWork::AccountFetch, lane, || {
                std::thread::sleep(std::time::Duration::from_millis(2));
                RAN.fetch_add(1, SeqCst);
                Ok::<_, AuthError>(())
            }));
            let waker = futures::task::noop_waker();
            let _ = f.as_mut().poll(&mut std::task::Context::from_waker(&waker));
        }
        let v = futures::executor::block_on(run(SlowWork::AccountFetch, lane, || Ok::<_, AuthError>(1)));
        assert_eq!(v, Ok(1));
        assert!(RAN.load(SeqCst) < 50, "some jobs were skipped: {}", RAN.load(SeqCst));
    }
}
