//! The reactor: one epoll instance per executor. Every socket registers
//! once, edge-triggered, for reading and writing; an event marks the
//! socket ready and wakes the task waiting on that side. A side stays
//! ready until an operation on it would block, so a task that finds data
//! after a wake-up does not pay a system call to learn it is drained.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The token of the executor's eventfd (its remote wake-ups).
const BELL: u64 = u64::MAX;

/// Which way a task waits on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Readable (or accepting, or closed by the peer).
    Read,
    /// Writable (or connected).
    Write,
}

/// One registered socket's readiness and waiting tasks.
#[derive(Default)]
struct Slot {
    ready: [Cell<bool>; 2],
    /// The peer closed or the socket failed: reads no longer block.
    closed: Cell<bool>,
    /// Tasks waiting on each side (usually one; a TLS reader may also
    /// wait to write what its session owes the peer, beside the writer).
    waiters: [RefCell<Vec<Waker>>; 2],
}

thread_local! {
    /// This thread's reactor, installed by its executor.
    static CURRENT: Cell<Option<&'static Reactor>> = const { Cell::new(None) };
}

/// This thread's reactor. Panics outside an executor's thread.
fn current() -> &'static Reactor {
    CURRENT.with(|c| c.get()).expect("no petrel executor on this thread")
}

/// One executor's epoll instance and its registered sockets.
pub(crate) struct Reactor {
    epoll: OwnedFd,
    bell: RawFd,
    slots: RefCell<Vec<Option<Rc<Slot>>>>,
    free: RefCell<Vec<usize>>,
    events: RefCell<Vec<libc::epoll_event>>,
    /// Wakers of one poll, woken once the slots are no longer borrowed.
    woken: RefCell<Vec<Waker>>,
}

impl Reactor {
    /// An epoll instance listening to `bell` (the executor's eventfd).
    pub(crate) fn new(bell: RawFd) -> io::Result<Reactor> {
        // SAFETY: plain epoll creation; checked below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: BELL,
        };
        // SAFETY: valid epoll fd, valid eventfd, event on the stack.
        if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, bell, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Reactor {
            epoll,
            bell,
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            events: RefCell::new(vec![libc::epoll_event { events: 0, u64: 0 }; 256]),
            woken: RefCell::new(Vec::new()),
        })
    }

    /// Makes this the thread's reactor; it lives as long as the thread.
    pub(crate) fn install(self) -> &'static Reactor {
        let r: &'static Reactor = Box::leak(Box::new(self));
        CURRENT.with(|c| c.set(Some(r)));
        r
    }

    fn register(&self, fd: RawFd) -> io::Result<(usize, Rc<Slot>)> {
        let slot = Rc::new(Slot::default());
        slot.ready[0].set(true);
        slot.ready[1].set(true);
        let index = match self.free.borrow_mut().pop() {
            Some(i) => i,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(None);
                slots.len() - 1
            }
        };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: index as u64,
        };
        // SAFETY: valid epoll fd; `fd` is open (the caller owns it).
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            self.free.borrow_mut().push(index);
            return Err(io::Error::last_os_error());
        }
        self.slots.borrow_mut()[index] = Some(slot.clone());
        Ok((index, slot))
    }

    fn deregister(&self, fd: RawFd, index: usize) {
        // SAFETY: valid epoll fd; a failure (fd already gone) is harmless.
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
        self.slots.borrow_mut()[index] = None;
        self.free.borrow_mut().push(index);
    }

    /// Waits up to `wait` (forever for `None`) for events, marks their
    /// sockets ready and wakes their tasks. Returns the number of events.
    pub(crate) fn poll(&self, wait: Option<Duration>) -> usize {
        let mut events = self.events.borrow_mut();
        let n = epoll_wait(self.epoll.as_raw_fd(), &mut events, wait);
        let mut woken = self.woken.borrow_mut();
        {
            let slots = self.slots.borrow();
            for ev in &events[..n] {
                if ev.u64 == BELL {
                    let mut count = 0u64;
                    // SAFETY: reads 8 bytes into a live u64 from our eventfd.
                    unsafe { libc::read(self.bell, (&mut count as *mut u64).cast(), 8) };
                    continue;
                }
                let Some(Some(slot)) = slots.get(ev.u64 as usize) else {
                    continue;
                };
                let e = ev.events as i32;
                let broken = e & (libc::EPOLLHUP | libc::EPOLLERR) != 0;
                if broken || e & libc::EPOLLRDHUP != 0 {
                    slot.closed.set(true);
                }
                if broken || e & (libc::EPOLLIN | libc::EPOLLRDHUP) != 0 {
                    slot.ready[0].set(true);
                    woken.append(&mut slot.waiters[0].borrow_mut());
                }
                if broken || e & libc::EPOLLOUT != 0 {
                    slot.ready[1].set(true);
                    woken.append(&mut slot.waiters[1].borrow_mut());
                }
            }
        }
        drop(events);
        // Waking only queues tasks: nothing here polls the reactor again.
        for w in woken.drain(..) {
            w.wake();
        }
        n
    }
}

fn epoll_wait(epoll: RawFd, events: &mut [libc::epoll_event], wait: Option<Duration>) -> usize {
    let ts = wait.map(|d| libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `events` is a live buffer of its length; `tsp` null or live.
    let n = unsafe {
        libc::epoll_pwait2(
            epoll,
            events.as_mut_ptr(),
            events.len() as libc::c_int,
            tsp,
            std::ptr::null(),
        )
    };
    if n >= 0 {
        return n as usize;
    }
    if io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        // Kernels before 5.11: millisecond waits, rounded up.
        let ms = wait.map_or(-1, |d| {
            d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int
        });
        // SAFETY: as above.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as libc::c_int, ms) };
        return n.max(0) as usize;
    }
    0 // EINTR: the loop looks again
}

/// A file descriptor registered with this thread's reactor. Deregisters
/// and closes it when dropped.
pub struct Registered {
    fd: OwnedFd,
    index: usize,
    slot: Rc<Slot>,
}

impl Registered {
    /// Registers `fd`, already non-blocking, with this thread's reactor.
    pub fn new(fd: OwnedFd) -> io::Result<Registered> {
        let (index, slot) = current().register(fd.as_raw_fd())?;
        Ok(Registered { fd, index, slot })
    }

    /// The descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Runs `op` once `side` is ready, again after each wake-up until it
    /// stops answering `WouldBlock`.
    pub fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        side: Side,
        mut op: impl FnMut() -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        let i = side as usize;
        loop {
            if !self.slot.ready[i].get() {
                let mut waiters = self.slot.waiters[i].borrow_mut();
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            match op() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.slot.ready[i].set(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return Poll::Ready(r),
            }
        }
    }

    /// Marks `side` drained without a system call (a short read took
    /// everything there was; the next arrival raises an event).
    pub fn drained(&self, side: Side) {
        // Once closed, no event follows: the next read must see the end.
        if !self.slot.closed.get() {
            self.slot.ready[side as usize].set(false);
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // Gone with its thread: nothing to deregister from.
        if let Some(r) = CURRENT.try_with(|c| c.get()).ok().flatten() {
            r.deregister(self.fd.as_raw_fd(), self.index);
        }
    }
}
