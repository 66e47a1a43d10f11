//! A counting global allocator.
//!
//! Keel promises flat memory under churn (rule R6 in `DESIGN.md`): creating and
//! destroying clients, channels, invokers, connections and spans a million
//! times must leave nothing behind. That promise is checked by counting, and
//! this crate does the counting. [`CountingAlloc`] wraps any [`GlobalAlloc`]
//! (the system allocator by default) and records, for the whole process and for
//! each thread separately:
//!
//! - allocations and frees (a `realloc` counts as one of each),
//! - bytes allocated and bytes freed, hence live bytes,
//! - an approximate peak of live bytes.
//!
//! ```text
//!   alloc/dealloc on thread T
//!        │
//!        ├──► T's own counters (plain Cells: no atomics, read by T only)
//!        │        used for per-thread attribution ("what did this side allocate")
//!        │
//!        └──► T's counter set, summed with all others on read for process
//!             totals (cache-line padded atomics; no global lock):
//!               - one of 256 sets T owns while it lives: T is its only
//!                 writer, so a count is a plain load and store;
//!               - beyond 256 living threads (or while T ends), one of 32
//!                 shared sets, one atomic add per count.
//!             An ending thread gives its set back with its counts in it;
//!             the next owner adds to them.
//! ```
//!
//! It is cheap enough to leave on in benchmarks and in production: the console
//! shows its live-heap figure. The peak is approximate: each thread checks the
//! process total only after its own net growth passes [`PEAK_GRANULE`] bytes,
//! so the true peak may exceed the reported one by at most that much per thread.
//!
//! # Example
//!
//! ```
//! use keel_alloc::{CountingAlloc, churn_thread};
//!
//! #[global_allocator]
//! static ALLOC: CountingAlloc = CountingAlloc::system();
//!
//! // A closure that allocates and frees: its net growth is zero.
//! let d = churn_thread(10, 1_000, |_| drop(vec![0u8; 100]));
//! assert_eq!(d.allocs, 1_000);
//! assert_eq!(d.live_bytes, 0);
//!
//! // A closure that leaks is caught.
//! let d = churn_thread(0, 10, |_| { Box::leak(Box::new([0u8; 64])); });
//! assert_eq!(d.live_bytes, 640);
//! ```
#![deny(missing_docs)]

mod release;
pub use release::{keep_free_memory_releasable, note_thread, release_free_memory, resident_bytes};

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};

/// Counter sets a thread can own alone (see [`Local::counters`]).
const OWNED: usize = 256;

/// Shared counter sets for threads that found no free owned one.
const SHARDS: usize = 32;

/// A thread re-checks the process peak after its live bytes grew by this much.
pub const PEAK_GRANULE: i64 = 64 * 1024;

/// A [`GlobalAlloc`] that counts what passes through it and forwards to `A`.
///
/// Install it with `#[global_allocator]`. All instances share one set of
/// counters (a process has one global allocator).
#[derive(Debug, Default)]
pub struct CountingAlloc<A = System> {
    inner: A,
}

impl CountingAlloc<System> {
    /// Counts over the system allocator.
    pub const fn system() -> Self {
        CountingAlloc { inner: System }
    }
}

impl<A> CountingAlloc<A> {
    /// Counts over `inner`, e.g. mimalloc or jemalloc.
    pub const fn new(inner: A) -> Self {
        CountingAlloc { inner }
    }
}

#[repr(align(128))]
struct Shard {
    allocs: AtomicU64,
    frees: AtomicU64,
    alloc_bytes: AtomicU64,
    free_bytes: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)] // used only as an array initialiser
const SHARD_INIT: Shard = Shard {
    allocs: AtomicU64::new(0),
    frees: AtomicU64::new(0),
    alloc_bytes: AtomicU64::new(0),
    free_bytes: AtomicU64::new(0),
};

/// Counter sets a thread owns while it lives: one writer each, so a count
/// is a plain load and store (no locked read-modify-write on every
/// allocation and free).
static OWNED_ARR: [Shard; OWNED] = [SHARD_INIT; OWNED];
/// Which of [`OWNED_ARR`] a living thread owns, one bit each.
static CLAIMED: [AtomicU64; OWNED / 64] = [const { AtomicU64::new(0) }; OWNED / 64];
/// Counter sets shared by threads beyond [`OWNED`] (or in teardown),
/// updated by atomic read-modify-write.
static SHARDS_ARR: [Shard; SHARDS] = [SHARD_INIT; SHARDS];
static PEAK: AtomicU64 = AtomicU64::new(0);
static NEXT_THREAD: AtomicU32 = AtomicU32::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Per-thread counters. Const-initialised `Cell`s without `Drop`, so touching
/// them from inside the allocator never allocates and works during thread
/// teardown.
struct Local {
    allocs: Cell<u64>,
    frees: Cell<u64>,
    alloc_bytes: Cell<u64>,
    free_bytes: Cell<u64>,
    /// Where this thread's counts go: [`UNASSIGNED`], an index into
    /// [`OWNED_ARR`] (below [`OWNED`]), or [`OWNED`] + an index into
    /// [`SHARDS_ARR`].
    counters: Cell<u32>,
    /// Net bytes grown since this thread last checked the peak.
    unchecked: Cell<i64>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            allocs: Cell::new(0),
            frees: Cell::new(0),
            alloc_bytes: Cell::new(0),
            free_bytes: Cell::new(0),
            counters: Cell::new(UNASSIGNED),
            unchecked: Cell::new(0),
        }
    };
}

/// [`Local::counters`] before the thread's first count.
const UNASSIGNED: u32 = u32::MAX;

/// Gives the thread's owned counter set back when the thread ends; its
/// counts stay in the set, which the next owner adds to.
struct Owner;

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|l| {
            let c = l.counters.get() as usize;
            if c < OWNED {
                // Later allocations of this ending thread (other
                // thread-locals' destructors) go to a shared set.
                l.counters.set(shared_set());
                CLAIMED[c / 64].fetch_and(!(1 << (c % 64)), Release);
            }
        });
    }
}

thread_local! {
    static OWNER: Owner = const { Owner };
}

/// A shared counter set for one thread, spread over [`SHARDS`].
fn shared_set() -> u32 {
    OWNED as u32 + NEXT_THREAD.fetch_add(1, Relaxed) % SHARDS as u32
}

/// Claims a free owned counter set, if any.
fn claim() -> Option<usize> {
    for (w, word) in CLAIMED.iter().enumerate() {
        let mut bits = word.load(Relaxed);
        while bits != u64::MAX {
            let bit = (!bits).trailing_zeros() as usize;
            // Acquire: the previous owner's last counts (published by its
            // release) are what this thread adds to.
            match word.compare_exchange_weak(bits, bits | 1 << bit, Acquire, Relaxed) {
                Ok(_) => return Some(w * 64 + bit),
                Err(now) => bits = now,
            }
        }
    }
    None
}

impl Local {
    /// Adds to this thread's counter set: its own (plain loads and stores)
    /// or a shared one (atomic adds). The first count claims a set.
    #[inline]
    fn count(&self, pick: impl Fn(&Shard) -> [&AtomicU64; 2], size: u64) {
        let mut c = self.counters.get();
        if c == UNASSIGNED {
            c = self.assign();
        }
        if (c as usize) < OWNED {
            let [n, bytes] = pick(&OWNED_ARR[c as usize]);
            n.store(n.load(Relaxed) + 1, Relaxed);
            bytes.store(bytes.load(Relaxed) + size, Relaxed);
        } else {
            let [n, bytes] = pick(&SHARDS_ARR[c as usize - OWNED]);
            n.fetch_add(1, Relaxed);
            bytes.fetch_add(size, Relaxed);
        }
    }

    #[cold]
    fn assign(&self) -> u32 {
        // A shared set first: registering `OWNER`'s destructor below may
        // allocate, and that allocation is counted here too.
        let shared = shared_set();
        self.counters.set(shared);
        let Some(c) = claim() else {
            return shared;
        };
        self.counters.set(c as u32);
        if OWNER.try_with(|_| ()).is_err() {
            // The thread is ending: it could not give the set back.
            self.counters.set(shared);
            CLAIMED[c / 64].fetch_and(!(1 << (c % 64)), Release);
            return shared;
        }
        self.counters.get()
    }
}

#[inline]
fn on_alloc(size: usize) {
    let size = size as u64;
    let _ = LOCAL.try_with(|l| {
        l.allocs.set(l.allocs.get() + 1);
        l.alloc_bytes.set(l.alloc_bytes.get() + size);
        l.count(|s| [&s.allocs, &s.alloc_bytes], size);
        let unchecked = l.unchecked.get() + size as i64;
        if unchecked >= PEAK_GRANULE {
            l.unchecked.set(0);
            update_peak(process_live());
        } else {
            l.unchecked.set(unchecked);
        }
    });
}

#[inline]
fn on_free(size: usize) {
    let size = size as u64;
    let _ = LOCAL.try_with(|l| {
        l.frees.set(l.frees.get() + 1);
        l.free_bytes.set(l.free_bytes.get() + size);
        l.count(|s| [&s.frees, &s.free_bytes], size);
        // Floored at zero: growth after a large free must still reach the
        // peak within PEAK_GRANULE, not after the freed amount is made up.
        l.unchecked.set((l.unchecked.get() - size as i64).max(0));
    });
}

/// Every counter set, owned and shared.
fn all_sets() -> impl Iterator<Item = &'static Shard> {
    OWNED_ARR.iter().chain(SHARDS_ARR.iter())
}

fn process_live() -> u64 {
    let (mut a, mut f) = (0u64, 0u64);
    for s in all_sets() {
        a = a.wrapping_add(s.alloc_bytes.load(Relaxed));
        f = f.wrapping_add(s.free_bytes.load(Relaxed));
    }
    a.saturating_sub(f)
}

/// Sets [`INSTALLED`] once: a store on every allocation would pull its
/// cache line from core to core.
#[inline]
fn mark_installed() {
    if !INSTALLED.load(Relaxed) {
        INSTALLED.store(true, Relaxed);
    }
}

fn update_peak(live: u64) {
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: every method forwards to the inner allocator with the caller's
// layout and pointer unchanged, so `A`'s guarantees are `CountingAlloc`'s; the
// counting touches only atomics and const-initialised thread-locals, which
// never allocate and so cannot recurse into the allocator.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAlloc<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's (valid, non-zero-size) layout.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            mark_installed();
            on_alloc(layout.size());
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            mark_installed();
            on_alloc(layout.size());
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` came from this allocator (hence
        // from `inner`) with this layout.
        unsafe { self.inner.dealloc(ptr, layout) };
        on_free(layout.size());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `ptr`/`layout` describe a live block
        // from this allocator and `new_size` is valid for `layout.align()`.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            on_free(layout.size());
            on_alloc(new_size);
        }
        p
    }
}

/// Counter values at one moment, for the process or for one thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations (including the allocating half of each `realloc`).
    pub allocs: u64,
    /// Frees (including the freeing half of each `realloc`).
    pub frees: u64,
    /// Bytes ever allocated.
    pub alloc_bytes: u64,
    /// Bytes ever freed.
    pub free_bytes: u64,
}

impl Stats {
    /// Bytes allocated and not yet freed. For one thread this can be
    /// negative: a thread may free what another allocated.
    pub fn live_bytes(&self) -> i64 {
        self.alloc_bytes as i64 - self.free_bytes as i64
    }

    /// What happened between `self` (earlier) and `later`.
    pub fn delta(&self, later: &Stats) -> Delta {
        Delta {
            iters: 0,
            allocs: later.allocs - self.allocs,
            frees: later.frees - self.frees,
            alloc_bytes: later.alloc_bytes - self.alloc_bytes,
            free_bytes: later.free_bytes - self.free_bytes,
            live_bytes: later.live_bytes() - self.live_bytes(),
        }
    }
}

/// The change in counters over a measured stretch of work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    /// Iterations measured (0 when built from two [`Stats`] directly).
    pub iters: u64,
    /// Allocations made.
    pub allocs: u64,
    /// Frees made.
    pub frees: u64,
    /// Bytes allocated.
    pub alloc_bytes: u64,
    /// Bytes freed.
    pub free_bytes: u64,
    /// Change in live bytes: what the work left behind (negative if it freed
    /// more than it allocated).
    pub live_bytes: i64,
}

impl Delta {
    /// Allocations per iteration.
    pub fn allocs_per_iter(&self) -> f64 {
        if self.iters == 0 {
            return self.allocs as f64;
        }
        self.allocs as f64 / self.iters as f64
    }
}

/// Process-wide counters (summed over shards).
pub fn stats() -> Stats {
    let mut s = Stats::default();
    for sh in all_sets() {
        s.allocs += sh.allocs.load(Relaxed);
        s.frees += sh.frees.load(Relaxed);
        s.alloc_bytes += sh.alloc_bytes.load(Relaxed);
        s.free_bytes += sh.free_bytes.load(Relaxed);
    }
    update_peak(s.alloc_bytes.saturating_sub(s.free_bytes));
    s
}

/// Counters of the calling thread only: what this thread allocated and freed.
pub fn thread_stats() -> Stats {
    LOCAL
        .try_with(|l| Stats {
            allocs: l.allocs.get(),
            frees: l.frees.get(),
            alloc_bytes: l.alloc_bytes.get(),
            free_bytes: l.free_bytes.get(),
        })
        .unwrap_or_default()
}

/// Process-wide live heap bytes.
pub fn live_bytes() -> u64 {
    process_live()
}

/// The highest process-wide live bytes seen since start or [`reset_peak`]
/// (approximate: see [`PEAK_GRANULE`]).
pub fn peak_bytes() -> u64 {
    update_peak(process_live());
    PEAK.load(Relaxed)
}

/// Restarts peak tracking from the current live bytes.
pub fn reset_peak() {
    PEAK.store(process_live(), Relaxed);
}

/// Whether a [`CountingAlloc`] is the process's global allocator (it has
/// served at least one allocation). When false, every figure here is zero.
pub fn is_installed() -> bool {
    INSTALLED.load(Relaxed)
}

/// Runs `f` `warmup` times, then `iters` times, and reports what the measured
/// iterations did to the process-wide counters. For churn tests (rule R6):
/// `assert!(churn(..).live_bytes <= SMALL_CONSTANT)`.
///
/// Process-wide figures include other threads' work: run such tests alone in
/// their test binary (or serialised), or use [`churn_thread`].
pub fn churn(warmup: u64, iters: u64, f: impl FnMut(u64)) -> Delta {
    measure(warmup, iters, f, stats)
}

/// Like [`churn`], but counts only what the calling thread allocated and freed.
pub fn churn_thread(warmup: u64, iters: u64, f: impl FnMut(u64)) -> Delta {
    measure(warmup, iters, f, thread_stats)
}

fn measure(warmup: u64, iters: u64, mut f: impl FnMut(u64), read: fn() -> Stats) -> Delta {
    for i in 0..warmup {
        f(i);
    }
    let before = read();
    for i in 0..iters {
        f(i);
    }
    let after = read();
    Delta {
        iters,
        ..before.delta(&after)
    }
}
