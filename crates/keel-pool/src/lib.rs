//! Typed object pools with thread-local caches, statistics and trimming.
//!
//! Keel's per-request objects (spans, call contexts, I/O buffers) come from
//! pools so that the steady state of a call allocates nothing (rule R3 in
//! `DESIGN.md`). brpc's object pools showed the way and also the problem:
//! they never give memory back. A [`Pool`] here does, and says what it holds.
//!
//! # Design
//!
//! ```text
//!            thread A                          thread B
//!   ┌───────────────────────┐        ┌───────────────────────┐
//!   │ cache: [p p p p ...]  │        │ cache: [p p ...]      │   get = pop, put = push:
//!   └──────────┬────────────┘        └──────────┬────────────┘   no lock, no atomic RMW
//!              │ half a cache at a time          │
//!              ▼      (one lock per batch)        ▼
//!   ┌──────────────────────────────────────────────────────────┐
//!   │ global: free [p p p p p p ...]   blocks [B0 B1 B2 ...]     │  Mutex
//!   └──────────────────────────────────────────────────────────┘
//!              │ trim: blocks whose every slot is free go back to the allocator
//!              ▼
//!   ┌─ block ─────────────────────────────┐
//!   │ slot{T, ->block} slot{T, ->block} … │  one allocation, objects built once
//!   └─────────────────────────────────────┘
//! ```
//!
//! - **Fast path.** Each thread keeps, per pool, a small stack of free
//!   objects. `get` pops, dropping a [`Pooled`] pushes (after
//!   [`Reset::reset`], which clears the object but keeps its capacity).
//! - **A thread-local of its own.** A plain [`Pool<T>`] finds the thread's
//!   cache in a table every pool shares ([`TableCache`]). A `static` pool
//!   declared with [`pool!`] has a `thread_local!` of its own that holds its
//!   cache inline, so get and put are one thread-local access and a pop or
//!   push, without looking at the pool; everything below holds for both.
//! - **Across threads.** An object may be dropped on any thread; it joins
//!   that thread's cache. Caches exchange objects with the global list in
//!   batches of half a cache, so the mutex is taken once per many operations.
//! - **Thread exit.** A thread's caches are dropped with its thread-locals and
//!   hand everything back to the global list (brpc abandons them).
//! - **Bounded.** When the global list passes [`PoolConfig::high_water`]
//!   objects, whole free blocks go back to the allocator automatically;
//!   [`Pool::trim`] frees every fully free block on demand.
//! - **Trimmed when idle.** Memory a burst left behind goes back even when
//!   no count is passed and nobody calls `trim` (the rule below).
//! - **Capacity counts.** A free object's buffers are memory the pool
//!   holds. [`Reset::reset`] bounds them (a type frees capacity above what a
//!   typical use needs) and [`Reset::heap_bytes`] reports what is left; the
//!   pool keeps a running sum over its free objects (recorded in the slot as
//!   the object returns, moved with it between caches and the global list,
//!   never a walk over all objects) and reports it as
//!   [`PoolStats::heap_bytes`], part of [`PoolStats::bytes`].
//! - **Visible.** [`Pool::stats`] and [`all_stats`] report live, cached,
//!   blocks, bytes (retained heap included), gets, puts, and blocks
//!   allocated and freed. Every pool is listed in a process-wide registry
//!   through a guard that unlists it when the pool drops (rule R1).
//! - **Futures.** [`FutureBox`] is the pooled `Pin<Box<dyn Future + Send>>`:
//!   a type-erased future in a size-class block from a thread-local cache,
//!   so a server that boxes a future per call allocates nothing in steady
//!   state. Its memory is bounded and reported the same way
//!   ([`future_box_stats`], [`trim_future_boxes`]).
//!
//! # The idle rule
//!
//! A pool has no timer and no background thread; it notices idleness by
//! counting its own operations, without adding atomics to the fast path:
//!
//! ```text
//!   thread cache: every 1024th put (a mask test on the put counter the
//!   fast path already keeps) takes the cold path for an idle check, one
//!   lock:
//!     1. the objects the cache did not touch in the interval (its low mark:
//!        the fewest it held) go to the global list;
//!     2. the check is a tick of the global list's clock: a tick that sees
//!        no draw from the global list since the previous one (no refill,
//!        no new block, by any thread) is quiet;
//!     3. after 4 quiet ticks in a row every fully free block is given back
//!        (PoolStats::idle_trims counts these), and the count starts over.
//! ```
//!
//! So a burst's leftovers go back after a few thousand puts of light
//! traffic, while a busy pool, which draws from the global list all the
//! time, keeps its free objects. The fast path gains a compare on the
//! word that holds the cache's length (its puts since the last check are
//! counted in the same word, so a put stores one counter), a compare for
//! the low mark and the retained-heap counter. A [`pool!`] pool's own
//! thread-local path keeps the same rule at 1.5 to 1.6 ns a pair for
//! 64-byte objects without heap (`keel-bench pool`, against 4.9 to 5.4 ns
//! for glibc's malloc and free).
//!
//! A process that stops using a pool entirely makes no puts, so no checks.
//! For that case the global list also records *when* it was last drawn
//! from (a clock read on the cold paths that draw, never on the fast path),
//! and [`trim_idle_all`] gives back the free blocks of every pool nobody
//! drew from for a given time, after taking back the calling thread's
//! cached objects (which would pin the blocks they sit in). A pool that
//! draws from its global list is left alone, and one whose threads work
//! from their caches alone (a steady state) loses at most the calling
//! thread's cache, refilled with one new block, per call; so a timer can
//! call it: every Keel server runs one (the server's `idle_trim` period),
//! which ends with the server. Objects in
//! other threads' caches stay there (at most a cache per thread and pool,
//! and the blocks they sit in) until those threads use the pool again or
//! exit.
//!
//! Concurrency of the global list, cross-thread return, idle checks and trim
//! is model checked with loom: `RUSTFLAGS="--cfg loom" cargo test -p keel-pool --release --lib loom`.
//!
//! # Example
//!
//! ```
//! use keel_pool::{Pool, Reset};
//!
//! #[derive(Default)]
//! struct Buffer { bytes: Vec<u8> }
//!
//! impl Reset for Buffer {
//!     fn reset(&mut self) { self.bytes.clear() }
//! }
//!
//! static BUFFERS: Pool<Buffer> = Pool::new("buffers", Buffer::default);
//!
//! let mut b = BUFFERS.get();
//! b.bytes.extend_from_slice(b"hello");
//! drop(b); // reset and back in this thread's cache
//!
//! let b = BUFFERS.get(); // the same object, empty, capacity kept
//! assert!(b.bytes.is_empty() && b.bytes.capacity() >= 5);
//! assert_eq!(BUFFERS.stats().live, 1);
//! drop(b);
//! assert_eq!(BUFFERS.stats().live, 0);
//! ```
#![deny(missing_docs)]

mod future_box;
mod local;
mod pool;
mod registry;
mod reset;
mod shared;
mod stats;
mod sync;
mod thread_cache;
mod tls;

pub use future_box::{FutureBox, FutureBoxStats, future_box_stats, trim_future_boxes};
pub use pool::{Pool, PoolConfig, Pooled};
pub use registry::{all_stats, for_each_stats, pool_count, trim_all, trim_idle_all};
pub use reset::Reset;
pub use stats::PoolStats;
pub use thread_cache::{TableCache, ThreadCache};

/// What the [`pool!`] macro expands to; not an API.
#[doc(hidden)]
pub mod __private {
    pub use crate::local::LocalCache;
    pub use crate::sync::LocalKey;
    pub use crate::thread_cache::LocalSlot;
    #[cfg(loom)]
    pub use loom;
}

#[cfg(all(test, loom))]
mod loom_tests;
