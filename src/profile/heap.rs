//! A sampling allocator wrapped around the real one (mimalloc in the
//! binary), for heap and allocs profiles like Go's: about one sample per
//! `rate` bytes allocated (512 KiB by default), chosen by a randomised
//! per-thread countdown. An unsampled allocation costs a thread-local
//! subtraction; an unsampled free, one probe of a lock-free table of
//! sampled addresses. Only sampled allocations take a lock, and a
//! re-entrancy flag keeps the sampler's own allocations out.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// Go's default sampling rate: one sample per 512 KiB on average.
pub const DEFAULT_RATE: u64 = 512 * 1024;
/// Frames kept per sample.
const MAX_FRAMES: usize = 48;
/// Slots in the table of sampled live addresses (a power of two).
const LIVE_SLOTS: usize = 1 << 16;
const EMPTY: usize = 0;
const TOMBSTONE: usize = 1;

static ENABLED: AtomicBool = AtomicBool::new(true);
static RATE: AtomicU64 = AtomicU64::new(DEFAULT_RATE);

/// Turns sampling on or off (`PETREL_HEAP_SAMPLING=0` turns it off).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Relaxed);
}

/// Whether allocations are being sampled.
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Sets the mean bytes between samples (`PETREL_HEAP_RATE`).
pub fn set_rate(bytes: u64) {
    RATE.store(bytes.max(1), Relaxed);
}

/// The mean bytes between samples.
pub fn rate() -> u64 {
    RATE.load(Relaxed)
}

thread_local! {
    /// Bytes left before this thread's next sample.
    static COUNTDOWN: Cell<i64> = const { Cell::new(-1) };
    /// Set while the sampler itself runs on this thread.
    static BUSY: Cell<bool> = const { Cell::new(false) };
    /// xorshift state for the countdown.
    static RNG: Cell<u64> = const { Cell::new(0) };
    /// Set while this thread holds the table lock.
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

/// Locks the table, marking this thread as its holder.
fn with_table<R>(f: impl FnOnce(&mut Option<Table>) -> R) -> R {
    let mut guard = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    HOLDING.with(|h| h.set(true));
    let r = f(&mut guard);
    HOLDING.with(|h| h.set(false));
    r
}

fn next_random() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            // Seeded from the thread's stack address and the clock.
            let local = 0u8;
            x = (&local as *const u8 as u64) ^ 0x9E37_79B9_7F4A_7C15;
            x ^= std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        x
    })
}

/// An exponentially distributed gap with mean `rate()` (as Go draws it).
fn next_gap() -> i64 {
    let u = ((next_random() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    (-u.ln() * rate() as f64) as i64 + 1
}

/// One stack's totals, as estimates of all (not only sampled) allocations.
#[derive(Debug, Clone, Copy, Default)]
pub struct StackTotals {
    /// Objects allocated.
    pub alloc_objects: f64,
    /// Bytes allocated.
    pub alloc_bytes: f64,
    /// Objects still live.
    pub inuse_objects: f64,
    /// Bytes still live.
    pub inuse_bytes: f64,
}

#[derive(Default)]
struct Table {
    stacks: Vec<Vec<usize>>,
    by_stack: HashMap<Vec<usize>, usize>,
    totals: Vec<StackTotals>,
    /// Live sampled allocation -> (stack, estimated objects, estimated bytes).
    live: HashMap<usize, (usize, f64, f64)>,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);
static LIVE: [AtomicUsize; LIVE_SLOTS] = [const { AtomicUsize::new(EMPTY) }; LIVE_SLOTS];
static LIVE_COUNT: AtomicUsize = AtomicUsize::new(0);

fn slot_of(ptr: usize) -> usize {
    (ptr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - 16)
}

fn live_insert(ptr: usize) -> bool {
    if LIVE_COUNT.load(Relaxed) >= LIVE_SLOTS / 2 {
        return false;
    }
    let mut i = slot_of(ptr);
    for _ in 0..LIVE_SLOTS {
        let cur = LIVE[i].load(Relaxed);
        if (cur == EMPTY || cur == TOMBSTONE) && LIVE[i].compare_exchange(cur, ptr, Relaxed, Relaxed).is_ok() {
            LIVE_COUNT.fetch_add(1, Relaxed);
            return true;
        }
        i = (i + 1) & (LIVE_SLOTS - 1);
    }
    false
}

/// Removes `ptr` when it was sampled; one load for the common case.
fn live_remove(ptr: usize) -> bool {
    let mut i = slot_of(ptr);
    for _ in 0..LIVE_SLOTS {
        let cur = LIVE[i].load(Relaxed);
        if cur == EMPTY {
            return false;
        }
        if cur == ptr {
            if LIVE[i].compare_exchange(ptr, TOMBSTONE, Relaxed, Relaxed).is_ok() {
                LIVE_COUNT.fetch_sub(1, Relaxed);
                return true;
            }
            return false;
        }
        i = (i + 1) & (LIVE_SLOTS - 1);
    }
    false
}

/// The global allocator wrapper.
pub struct SamplingAlloc<A> {
    inner: A,
}

impl<A> SamplingAlloc<A> {
    /// Wraps `inner`.
    pub const fn new(inner: A) -> SamplingAlloc<A> {
        SamplingAlloc { inner }
    }
}

/// Records one sampled allocation (called with `BUSY` set).
fn record(ptr: usize, size: usize) {
    let mut frames = [0usize; MAX_FRAMES];
    let mut n = 0;
    // SAFETY: the trace only reads the stack; BUSY keeps this thread from
    // re-entering, and other threads use their own stacks.
    unsafe {
        backtrace::trace_unsynchronized(|f| {
            frames[n] = f.ip() as usize;
            n += 1;
            n < MAX_FRAMES
        });
    }
    // Skip the sampler's and the allocator's own frames.
    let stack: Vec<usize> = frames[..n].iter().skip(3).copied().collect();
    let r = rate() as f64;
    // Each sample stands for 1/p allocations like it, p = 1 - e^(-size/rate).
    let p = 1.0 - (-(size as f64) / r).exp();
    let objects = if p > 0.0 { 1.0 / p } else { 1.0 };
    let bytes = objects * size as f64;
    with_table(|guard| {
        let t = guard.get_or_insert_with(Table::default);
        let id = match t.by_stack.get(&stack) {
            Some(id) => *id,
            None => {
                let id = t.stacks.len();
                t.stacks.push(stack.clone());
                t.by_stack.insert(stack, id);
                t.totals.push(StackTotals::default());
                id
            }
        };
        let tot = &mut t.totals[id];
        tot.alloc_objects += objects;
        tot.alloc_bytes += bytes;
        if live_insert(ptr) {
            tot.inuse_objects += objects;
            tot.inuse_bytes += bytes;
            t.live.insert(ptr, (id, objects, bytes));
        }
    })
}

fn forget(ptr: usize) {
    // A sampled block freed by the thread that holds the table (while a
    // profile is being built) stays counted: locking again would deadlock.
    if HOLDING.with(|h| h.get()) {
        return;
    }
    with_table(|guard| {
        if let Some(t) = guard.as_mut() {
            if let Some((id, objects, bytes)) = t.live.remove(&ptr) {
                let tot = &mut t.totals[id];
                tot.inuse_objects -= objects;
                tot.inuse_bytes -= bytes;
            }
        }
    })
}

/// Hands the pages the calling thread freed back to the system. mimalloc
/// keeps freed pages for reuse and purges them only when the thread next
/// allocates or frees, so a thread that freed much and then sits idle
/// would hold them indefinitely.
pub fn give_back_freed() {
    // SAFETY: mi_collect walks this thread's heap and the allocator's own
    // lists; it may be called at any time from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Runs `f` with this thread's sampling suspended (the sampler and the
/// profile builders allocate while holding the table).
pub fn without_sampling<R>(f: impl FnOnce() -> R) -> R {
    let was = BUSY.with(|b| b.replace(true));
    let r = f();
    BUSY.with(|b| b.set(was));
    r
}

fn maybe_sample(ptr: *mut u8, size: usize) {
    if ptr.is_null() || !ENABLED.load(Relaxed) {
        return;
    }
    let Ok(take) = COUNTDOWN.try_with(|c| {
        let mut left = c.get();
        if left < 0 {
            left = next_gap();
        }
        left -= size as i64;
        if left > 0 {
            c.set(left);
            false
        } else {
            c.set(next_gap());
            true
        }
    }) else {
        return;
    };
    if !take || BUSY.with(|b| b.get()) {
        return;
    }
    without_sampling(|| record(ptr as usize, size));
}

// SAFETY: every call is forwarded to the wrapped allocator unchanged; the
// sampler only observes addresses and sizes.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SamplingAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.inner.alloc(layout) };
        maybe_sample(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        maybe_sample(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if LIVE_COUNT.load(Relaxed) > 0 && live_remove(ptr as usize) {
            without_sampling(|| forget(ptr as usize));
        }
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if LIVE_COUNT.load(Relaxed) > 0 && live_remove(ptr as usize) {
            without_sampling(|| forget(ptr as usize));
        }
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        maybe_sample(p, new_size);
        p
    }
}

/// A copy of the sampled stacks and their totals.
pub fn snapshot() -> Vec<(Vec<usize>, StackTotals)> {
    without_sampling(|| {
        with_table(|guard| match guard.as_ref() {
            Some(t) => t.stacks.iter().cloned().zip(t.totals.iter().copied()).collect(),
            None => Vec::new(),
        })
    })
}
