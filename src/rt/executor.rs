//! The executor: tasks of one thread, run in the order they were woken,
//! and the loop that runs them, collects I/O and timers, and sleeps.
//!
//! A task woken on its own thread goes on a plain local queue. One woken
//! from another thread (a shard sending a batch to this one) goes on the
//! executor's remote queue, and the waker writes the executor's eventfd
//! only when the executor is asleep or about to be, so a busy shard is
//! never interrupted.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_task::Runnable;
use crossbeam_queue::SegQueue;

use super::reactor::Reactor;
use super::timer::Timers;

/// A spawned task: awaiting it gives its output, dropping it cancels the
/// task, [`Task::detach`] lets it run on its own.
pub type Task<T> = async_task::Task<T>;

/// What other threads reach of an executor: its remote queue and bell.
pub(crate) struct Remote {
    queue: SegQueue<Runnable>,
    /// Set while the executor sleeps, or is about to: a waker then rings.
    sleeping: AtomicBool,
    bell: OwnedFd,
}

impl Remote {
    fn push(&self, runnable: Runnable) {
        self.queue.push(runnable);
        // Pairs with the fence in `Local::sleep`: either the executor sees
        // this task before it sleeps, or this sees it sleeping and rings.
        fence(SeqCst);
        if self.sleeping.swap(false, SeqCst) {
            ring(&self.bell);
        }
    }
}

fn ring(bell: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
    unsafe { libc::write(bell.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Tasks run before the executor looks at I/O again while work keeps coming.
const TASKS_BETWEEN_IO: usize = 256;

/// One thread's executor state.
pub(crate) struct Local {
    queue: RefCell<VecDeque<Runnable>>,
    remote: Arc<Remote>,
    reactor: &'static Reactor,
    timers: &'static Timers,
    /// How long to poll for more work before sleeping.
    spin: Duration,
}

thread_local! {
    static LOCAL: Cell<Option<&'static Local>> = const { Cell::new(None) };
}

/// The executor of this thread. Panics outside one, as a task spawned
/// there could never run.
pub(crate) fn local() -> &'static Local {
    LOCAL.with(|l| l.get()).expect("no petrel executor on this thread")
}

/// Runs `future` as a task on this thread's executor.
pub fn spawn_local<F>(future: F) -> Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let remote = local().remote.clone();
    let schedule = move |runnable: Runnable| {
        let mine = LOCAL
            .try_with(|l| l.get().filter(|l| Arc::ptr_eq(&l.remote, &remote)))
            .ok()
            .flatten();
        match mine {
            Some(l) => l.queue.borrow_mut().push_back(runnable),
            None => remote.push(runnable),
        }
    };
    let (runnable, task) = async_task::spawn_local(future, schedule);
    runnable.schedule();
    task
}

/// Runs `work` on a worker thread and waits for its result without
/// blocking the executor (monitoring snapshots, account lookups).
pub async fn spawn_blocking<R, F>(work: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = futures::channel::oneshot::channel();
    blocking_pool().submit(Box::new(move || {
        let _ = tx.send(work());
    }));
    rx.await.expect("blocking work panicked")
}

type Job = Box<dyn FnOnce() + Send>;

/// Worker threads for [`spawn_blocking`], shared by every executor: one
/// more starts whenever a job finds none idle, and one idle for
/// [`IDLE_WORKER`] ends.
struct BlockingPool {
    state: std::sync::Mutex<PoolState>,
    work: std::sync::Condvar,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<Job>,
    idle: usize,
}

/// How long a worker with nothing to do stays.
const IDLE_WORKER: Duration = Duration::from_secs(10);

fn blocking_pool() -> &'static BlockingPool {
    static POOL: std::sync::OnceLock<BlockingPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| BlockingPool {
        state: Default::default(),
        work: std::sync::Condvar::new(),
    })
}

impl BlockingPool {
    fn submit(&'static self, job: Job) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.jobs.push_back(job);
        if st.idle > 0 {
            self.work.notify_one();
            return;
        }
        drop(st);
        let spawned = std::thread::Builder::new()
            .name("petrel-blocking".into())
            .spawn(move || self.work_loop());
        if spawned.is_err() {
            // No thread to be had: run it here rather than never.
            let job = self.state.lock().unwrap_or_else(|e| e.into_inner()).jobs.pop_back();
            if let Some(job) = job {
                job();
            }
        }
    }

    fn work_loop(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = st.jobs.pop_front() {
                drop(st);
                job();
                st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Counted idle exactly while waiting.
            st.idle += 1;
            let (next, waited) = self
                .work
                .wait_timeout(st, IDLE_WORKER)
                .unwrap_or_else(|e| e.into_inner());
            st = next;
            st.idle -= 1;
            if waited.timed_out() && st.jobs.is_empty() {
                return;
            }
        }
    }
}

/// Starts an executor on a thread of its own.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    name: String,
    cpu: Option<usize>,
    spin: Duration,
}

impl Builder {
    /// A builder for a thread named `name`.
    pub fn new(name: &str) -> Builder {
        Builder {
            name: name.to_string(),
            ..Builder::default()
        }
    }

    /// Pins the thread to one CPU.
    pub fn pin_to(mut self, cpu: usize) -> Builder {
        self.cpu = Some(cpu);
        self
    }

    /// Polls for work this long after the last before sleeping.
    pub fn spin_before_park(mut self, spin: Duration) -> Builder {
        self.spin = spin;
        self
    }

    /// Spawns the thread and runs the future `make` builds on it; the
    /// thread ends when that future does.
    pub fn spawn<G, F, T>(self, make: G) -> std::io::Result<Joiner<T>>
    where
        G: FnOnce() -> F + Send + 'static,
        F: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (cpu, spin) = (self.cpu, self.spin);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new().name(self.name).spawn(move || {
            if let Some(cpu) = cpu {
                pin_to_cpu(cpu);
            }
            let executor = match Local::new(spin) {
                Ok(l) => {
                    let _ = started_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return None;
                }
            };
            Some(executor.run(make()))
        })?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Joiner(handle)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("executor thread died at start")),
        }
    }
}

/// An executor thread, to wait for.
pub struct Joiner<T>(std::thread::JoinHandle<Option<T>>);

impl<T> Joiner<T> {
    /// Waits for the thread: its future's output, or why it ended without.
    pub fn join(self) -> Result<T, String> {
        match self.0.join() {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err("executor failed to start".into()),
            Err(p) => Err(p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panicked".into())),
        }
    }
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

impl Local {
    fn new(spin: Duration) -> std::io::Result<&'static Local> {
        // SAFETY: plain eventfd creation; checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let bell = unsafe { OwnedFd::from_raw_fd(fd) };
        let reactor = Reactor::new(bell.as_raw_fd())?.install();
        // Executors live as long as their thread; leaking gives tasks a
        // `'static` handle to theirs without a reference count per access.
        let local: &'static Local = Box::leak(Box::new(Local {
            queue: RefCell::new(VecDeque::with_capacity(256)),
            remote: Arc::new(Remote {
                queue: SegQueue::new(),
                sleeping: AtomicBool::new(false),
                bell,
            }),
            reactor,
            timers: Timers::default().install(),
            spin,
        }));
        LOCAL.with(|l| {
            assert!(l.get().is_none(), "one executor per thread");
            l.set(Some(local));
        });
        Ok(local)
    }

    /// Runs until `future` completes.
    fn run<T: 'static>(&'static self, future: impl Future<Output = T> + 'static) -> T {
        let mut main = spawn_local(future);
        let mut last_work = Instant::now();
        loop {
            // What other threads woke (the reason for most wake-ups of an
            // idle shard) runs in this pass, without a look at I/O first.
            self.take_remote();
            // Tasks in the order they were woken, those woken meanwhile
            // too (a reader wakes the writer it queued output for: no
            // look at I/O between them), up to a budget, after which I/O
            // gets its look.
            for _ in 0..TASKS_BETWEEN_IO {
                let next = self.queue.borrow_mut().pop_front();
                match next {
                    Some(r) => {
                        r.run();
                    }
                    None => break,
                }
            }
            if main.is_finished() {
                return futures_lite::future::block_on(&mut main);
            }
            self.take_remote();
            self.timers.fire(Instant::now());
            if !self.queue.borrow().is_empty() {
                last_work = Instant::now();
                self.reactor.poll(Some(Duration::ZERO));
                continue;
            }
            if !self.spin.is_zero() && last_work.elapsed() < self.spin {
                if self.reactor.poll(Some(Duration::ZERO)) > 0 {
                    last_work = Instant::now();
                }
                continue;
            }
            self.sleep();
            // Woken by I/O, a timer or another thread: work either way.
            last_work = Instant::now();
            self.timers.fire(last_work);
        }
    }

    fn take_remote(&self) {
        while let Some(r) = self.remote.queue.pop() {
            self.queue.borrow_mut().push_back(r);
        }
    }

    /// Waits for I/O, a timer or a remote wake-up.
    fn sleep(&self) {
        self.remote.sleeping.store(true, SeqCst);
        fence(SeqCst);
        if !self.remote.queue.is_empty() {
            self.remote.sleeping.store(false, SeqCst);
            return;
        }
        let wait = self
            .timers
            .next()
            .map(|at| at.saturating_duration_since(Instant::now()));
        self.reactor.poll(wait);
        self.remote.sleeping.store(false, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn run<T: Send + 'static, F: Future<Output = T> + 'static>(f: impl FnOnce() -> F + Send + 'static) -> T {
        Builder::new("test").spawn(f).unwrap().join().unwrap()
    }

    #[test]
    fn tasks_run_and_return() {
        let v = run(|| async {
            let seen = Rc::new(Cell::new(0));
            let s = seen.clone();
            let t = spawn_local(async move {
                s.set(s.get() + 1);
                7
            });
            let got = t.await;
            got + seen.get()
        });
        assert_eq!(v, 8);
    }

    #[test]
    fn a_task_woken_from_another_thread_runs() {
        let v = run(|| async {
            let (tx, rx) = futures::channel::oneshot::channel::<u32>();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                let _ = tx.send(5);
            });
            rx.await.unwrap()
        });
        assert_eq!(v, 5);
    }

    #[test]
    fn blocking_work_comes_back() {
        assert_eq!(run(|| async { spawn_blocking(|| 40 + 2).await }), 42);
    }

    #[test]
    fn blocking_jobs_that_wait_on_each_other_all_run_at_once() {
        // Eight jobs each wait (up to 5 s) until all eight have started:
        // they finish together only if the pool grew to eight workers.
        let met = run(|| async {
            let gate = Arc::new((std::sync::Mutex::new(0usize), std::sync::Condvar::new()));
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let gate = gate.clone();
                    spawn_local(spawn_blocking(move || {
                        let (count, cv) = &*gate;
                        let mut n = count.lock().unwrap();
                        *n += 1;
                        cv.notify_all();
                        let (n, _) = cv.wait_timeout_while(n, Duration::from_secs(5), |n| *n < 8).unwrap();
                        *n == 8
                    }))
                })
                .collect();
            let mut all = true;
            for t in tasks {
                all &= t.await;
            }
            all
        });
        assert!(met);
    }

    #[test]
    fn a_dropped_task_is_cancelled() {
        let v = run(|| async {
            let ran = Rc::new(Cell::new(false));
            let r = ran.clone();
            let t = spawn_local(async move {
                crate::rt::timer::sleep(Duration::from_millis(20)).await;
                r.set(true);
            });
            drop(t);
            crate::rt::timer::sleep(Duration::from_millis(60)).await;
            ran.get()
        });
        assert!(!v);
    }
}
