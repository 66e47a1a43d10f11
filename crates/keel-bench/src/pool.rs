//! `keel-bench pool`: what one get+put pair costs with keel-pool, against
//! the allocators and object pools a Rust service would otherwise use.
//!
//! # What is measured
//!
//! For objects of 64 B, 256 B and 4 KiB, the time of one *pair*: take an
//! object, write one byte into it (through [`black_box`], so no peer's work
//! can be optimised away), give it back. Two modes:
//!
//! - **single**: one thread loops get, write, put.
//! - **cross**: a producer thread takes objects and ships them in batches of
//!   [`BATCH`] to a consumer thread, which drops them; the batch vectors go
//!   back to the producer, so in steady state the handoff allocates nothing.
//!   Time runs from the start until the consumer has dropped the last one;
//!   ns/pair = elapsed / pairs. The handoff alone (shipping plain `usize`s the
//!   same way) is measured too and shown in its own column: it is part of
//!   every cross-thread number, the same for every peer, and can be
//!   subtracted. The producer is the benchmark's own thread; the consumer
//!   is a new thread per sample, started before the clock starts, whose
//!   first drops build its thread caches (amortised over the sample).
//!
//! ```text
//!   producer                                  consumer
//!   get, write ─► batch [o o o … 256] ─sync_channel─► drop each (the put)
//!        ▲                                            │
//!        └──────── empty batch vector ◄─sync_channel──┘   (4 in circulation)
//! ```
//!
//! # Peers
//!
//! | column    | get / put                                                       |
//! |-----------|-----------------------------------------------------------------|
//! | keel      | `keel_pool::Pool::get` (a `static` from `keel_pool::pool!`, its   |
//! |           | own thread cache) / drop the `Pooled`                           |
//! | box       | `System.alloc(layout)` / `System.dealloc` (glibc malloc/free)   |
//! | mimalloc  | `MiMalloc.alloc(layout)` / `MiMalloc.dealloc` (`GlobalAlloc`)    |
//! | slab      | `sharded_slab::Pool::create_with` / `Pool::clear(key)`           |
//! | lf-linear | `lockfree_object_pool::LinearObjectPool::pull` / drop            |
//! | lf-spin   | `lockfree_object_pool::SpinLockObjectPool::pull` / drop          |
//! | opool     | `opool::Pool::get` / drop                                        |
//!
//! # Why it is fair
//!
//! - Every pool holds the same object, [`Obj<N>`]: `N` plain bytes whose
//!   reset hook (keel's `Reset`, sharded-slab's `Clear`, the reset closures of
//!   lockfree-object-pool and opool) is the same cheap field clear.
//! - The allocators are not charged for zeroing: `box` and `mimalloc` are
//!   called through their `GlobalAlloc` methods (`System.alloc`, what a
//!   `Box` on the system allocator does, and `MiMalloc.alloc`), so both do
//!   exactly one malloc and one free per pair and write one byte, as the
//!   pools do. Neither goes through this program's global allocator, which
//!   is keel-alloc's counting wrapper (for `keel-bench echo`, see
//!   `main.rs`): its bookkeeping would be charged to these two peers only,
//!   since the pools allocate nothing in steady state. Likewise mimalloc is
//!   measured without becoming everyone's allocator.
//! - lf-spin and opool keep their free objects *by value* (a `Vec<T>` and an
//!   `ArrayQueue<T>`) and their guards hold the object inline, so a bare
//!   4 KiB object would be copied on every get and put and again when shipped
//!   between threads. They hold `Box<Obj<N>>` instead, as one would use them
//!   for large objects: a pointer moves, like in every other pool here.
//! - sharded-slab's guard does not give its slot back when dropped (a `Pool`
//!   entry lives until `clear(key)`), so its put is `clear(key)`; its
//!   borrowed guards are not `Send`, so the key crosses threads, which is how
//!   sharded-slab is meant to be used from several threads.
//! - Peers are used as their crates ship them. lockfree-object-pool inlines
//!   the cold path of `pull` (building a page of 32 objects on the stack)
//!   into the caller, so at 4 KiB every pull stack-probes a ~250 KiB frame;
//!   that is its real cost for objects this size, not a harness artefact.
//! - glibc's malloc takes cheaper, lock-free paths while a process has never
//!   started a thread. A server always has, so a thread is started (and
//!   joined) before anything is measured: every peer runs in a
//!   multi-threaded process, in single mode too.
//! - Each case is warmed up once; then rounds run every case in turn
//!   (peers interleaved, the starting peer rotating each round), and the
//!   table shows the median of the rounds, so a burst of load from other
//!   processes hits one sample of every peer instead of all samples of one.

use crate::args;
use std::alloc::{GlobalAlloc, Layout, System, handle_alloc_error};
use std::fmt::Write as _;
use std::hint::black_box;
use std::marker::PhantomData;
use std::process::ExitCode;
use std::ptr::NonNull;
use std::sync::Barrier;
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::{Duration, Instant};

use keel_pool::{Pool, Pooled, Reset, ThreadCache};
use lockfree_object_pool::{
    LinearObjectPool, LinearReusable, SpinLockObjectPool, SpinLockReusable,
};
use mimalloc::MiMalloc;

use crate::summary::{load_average, median};
use crate::table::{Align, Table};

/// Objects per batch shipped from the producer to the consumer.
pub const BATCH: usize = 256;
/// Batch vectors in circulation; at most `BATCHES * BATCH` objects are in
/// flight, so pools of that size never fall back to the allocator.
pub const BATCHES: usize = 4;
/// opool's capacity: free objects beyond it are dropped, so it must exceed
/// the objects in flight.
const OPOOL_CAPACITY: usize = 4 * BATCHES * BATCH;

/// Single-thread pairs per measurement in a full run.
const DEFAULT_ITERS: u64 = 3_000_000;
/// Single-thread pairs per measurement with `--quick`.
const QUICK_ITERS: u64 = 200_000;
/// Rounds in a full run (the median of these is reported).
const DEFAULT_ROUNDS: usize = 7;
/// Rounds with `--quick`.
const QUICK_ROUNDS: usize = 3;
/// Cells whose rounds spread more than this, (max-min)/median, are listed.
const NOISY_SPREAD: f64 = 0.25;
/// How many of those to name.
const SHOW_NOISY: usize = 5;
/// A cross-thread pair costs several times a single-thread one; measuring
/// `iters / CROSS_DIVISOR` of them keeps both kinds of sample about as long.
const CROSS_DIVISOR: u64 = 4;

/// What `keel-bench pool --help` says about the subcommand.
pub const ABOUT: &str = "\
Cost of one get+put pair (64 B, 256 B, 4 KiB objects; one thread and across
two threads) for keel-pool, Box on the system allocator, mimalloc,
sharded-slab, lockfree-object-pool and opool. Prints medians and ratios.";

// ---------------------------------------------------------------------------
// The object and the peers.
// ---------------------------------------------------------------------------

/// What every pool hands out: `N` plain bytes.
pub struct Obj<const N: usize> {
    /// The payload; a pair writes its first byte.
    pub bytes: [u8; N],
}

impl<const N: usize> Obj<N> {
    /// A zeroed object (pools build theirs with this, outside the timed
    /// steady state).
    pub fn new() -> Self {
        const { assert!(N > 0, "objects need at least the byte a pair writes") };
        Obj { bytes: [0; N] }
    }

    /// The reset every pool runs on the way back: a cheap field clear.
    #[inline]
    pub fn wipe(&mut self) {
        self.bytes[0] = 0;
    }

    /// The work a pair does with its object: write one byte, visibly.
    #[inline]
    pub fn touch(&mut self, byte: u8) {
        self.bytes[0] = byte;
        black_box(self);
    }
}

impl<const N: usize> Default for Obj<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Reset for Obj<N> {
    #[inline]
    fn reset(&mut self) {
        self.wipe();
    }
}

impl<const N: usize> sharded_slab::Clear for Obj<N> {
    #[inline]
    fn clear(&mut self) {
        self.wipe();
    }
}

/// A way to get an object and give it back: one column of the table.
pub trait Peer: Sync {
    /// The column title.
    const NAME: &'static str;
    /// What `get` hands out; dropping it is the put.
    type Obj<'a>: Send
    where
        Self: 'a;

    /// Takes an object and writes `byte` into it.
    fn get(&self, byte: u8) -> Self::Obj<'_>;

    /// Where the object lives, to check that a pool hands the same one back.
    #[cfg(test)]
    fn addr(obj: &Self::Obj<'_>) -> usize;
}

/// keel-pool, from a `static` pool declared with `keel_pool::pool!` (its
/// own thread-local cache, as Keel's span pools use it).
pub struct Keel<const N: usize, C: ThreadCache<Obj<N>>>(pub &'static Pool<Obj<N>, C>);

/// The keel column's title.
const KEEL: &str = "keel";

impl<const N: usize, C: ThreadCache<Obj<N>>> Peer for Keel<N, C> {
    const NAME: &'static str = KEEL;
    type Obj<'a> = Pooled<'a, Obj<N>, C>;

    #[inline]
    fn get(&self, byte: u8) -> Self::Obj<'_> {
        let mut o = self.0.get();
        o.touch(byte);
        o
    }

    #[cfg(test)]
    fn addr(obj: &Self::Obj<'_>) -> usize {
        &**obj as *const Obj<N> as usize
    }
}

/// An allocator a peer calls directly through its [`GlobalAlloc`] methods,
/// never as this program's global allocator (that one counts; see
/// `main.rs`), so the peer pays for exactly one malloc and one free.
pub trait DirectAlloc: GlobalAlloc + Sync + 'static {
    /// The column title.
    const NAME: &'static str;
    /// The allocator (a unit struct).
    const INSTANCE: Self;
}

impl DirectAlloc for System {
    const NAME: &'static str = "box";
    const INSTANCE: Self = System;
}

impl DirectAlloc for MiMalloc {
    const NAME: &'static str = "mimalloc";
    const INSTANCE: Self = MiMalloc;
}

/// One allocation from `A` of `Obj<N>`'s layout, uninitialised (so no peer
/// is charged for zeroing); freed on drop.
pub struct RawObj<A: DirectAlloc, const N: usize>(NonNull<u8>, PhantomData<A>);

impl<A: DirectAlloc, const N: usize> RawObj<A, N> {
    const LAYOUT: Layout = Layout::new::<Obj<N>>();
}

// SAFETY: a `RawObj` owns its allocation exclusively, the bytes are plain
// data, and both allocators (glibc malloc, mimalloc) free memory correctly
// from any thread.
unsafe impl<A: DirectAlloc, const N: usize> Send for RawObj<A, N> {}

impl<A: DirectAlloc, const N: usize> Drop for RawObj<A, N> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the pointer came from `A::INSTANCE.alloc` with this same
        // layout and is freed exactly once, here.
        unsafe { A::INSTANCE.dealloc(self.0.as_ptr(), Self::LAYOUT) }
    }
}

/// A plain allocator as a peer: get = `alloc`, put = `dealloc`.
pub struct Direct<A: DirectAlloc, const N: usize>(PhantomData<A>);

impl<A: DirectAlloc, const N: usize> Direct<A, N> {
    /// The peer.
    pub const fn new() -> Self {
        Direct(PhantomData)
    }
}

/// The system allocator (glibc malloc), what `Box` uses under `System`:
/// `System.alloc` / `System.dealloc`, called directly.
pub type SystemBox<const N: usize> = Direct<System, N>;

/// mimalloc: `MiMalloc.alloc` / `MiMalloc.dealloc`, called directly.
pub type Mimalloc<const N: usize> = Direct<MiMalloc, N>;

impl<A: DirectAlloc, const N: usize> Peer for Direct<A, N> {
    const NAME: &'static str = A::NAME;
    type Obj<'a> = RawObj<A, N>;

    #[inline]
    fn get(&self, byte: u8) -> Self::Obj<'_> {
        let layout = RawObj::<A, N>::LAYOUT;
        // SAFETY: the layout's size is N > 0 (`Obj::new` asserts it).
        let p = unsafe { A::INSTANCE.alloc(layout) };
        let p = NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout));
        // SAFETY: `p` points at N >= 1 writable bytes that nothing else uses.
        unsafe { p.as_ptr().write(byte) };
        black_box(p);
        RawObj(p, PhantomData)
    }

    #[cfg(test)]
    fn addr(obj: &Self::Obj<'_>) -> usize {
        obj.0.as_ptr() as usize
    }
}

/// sharded-slab's `Pool`: create, then `clear(key)` to give the slot back.
pub struct Slab<const N: usize>(pub sharded_slab::Pool<Obj<N>>);

/// A live sharded-slab entry; dropping it clears the entry, which returns the
/// slot to its shard (locally, or through the remote free list).
pub struct SlabObj<'a, const N: usize> {
    pool: &'a sharded_slab::Pool<Obj<N>>,
    key: usize,
}

impl<const N: usize> Drop for SlabObj<'_, N> {
    #[inline]
    fn drop(&mut self) {
        let cleared = self.pool.clear(self.key);
        debug_assert!(cleared, "entry {} was live", self.key);
    }
}

impl<const N: usize> Peer for Slab<N> {
    const NAME: &'static str = "slab";
    type Obj<'a> = SlabObj<'a, N>;

    #[inline]
    fn get(&self, byte: u8) -> Self::Obj<'_> {
        let key = self
            .0
            .create_with(|o| o.touch(byte))
            .expect("a shard has room: at most a few thousand entries are live");
        SlabObj { pool: &self.0, key }
    }

    #[cfg(test)]
    fn addr(obj: &Self::Obj<'_>) -> usize {
        let entry = obj.pool.get(obj.key).expect("entry is live");
        &*entry as *const Obj<N> as usize
    }
}

/// lockfree-object-pool's `LinearObjectPool` (objects stay in its pages).
pub struct LfLinear<const N: usize>(pub LinearObjectPool<Obj<N>>);

impl<const N: usize> LfLinear<N> {
    /// An empty pool with the common reset.
    pub fn new() -> Self {
        LfLinear(LinearObjectPool::new(Obj::new, Obj::wipe))
    }
}

impl<const N: usize> Peer for LfLinear<N> {
    const NAME: &'static str = "lf-linear";
    type Obj<'a> = LinearReusable<'a, Obj<N>>;

    #[inline]
    fn get(&self, byte: u8) -> Self::Obj<'_> {
        let mut o = self.0.pull();
        o.touch(byte);
        o
    }

    #[cfg(test)]
    fn addr(obj: &Self::Obj<'_>) -> usize {
        &**obj as *const Obj<N> as usize
    }
}

/// lockfree-object-pool's `SpinLockObjectPool` (a spin-locked `Vec`), of
/// boxed objects (see the module doc).
pub struct LfSpin<const N: usize>(pub SpinLockObjectPool<Box<Obj<N>>>);

impl<const N: usize> LfSpin<N> {
    /// An empty pool with the common reset.
    pub fn new() -> Self {
        LfSpin(SpinLockObjectPool::new(
            || Box::new(Obj::new()),
            |o: &mut Box<Obj<N>>| o.wipe(),
        ))
    }
}

impl<const N: usize> Peer for LfSpin<N> {
    const NAME: &'static str = "lf-spin";
    type Obj<'a> = SpinLockReusable<'a, Box<Obj<N>>>;

    #[inline]
    fn get(&self, byte: u8) -> Self::Obj<'_> {
        let mut o = self.0.pull();
        o.touch(byte);
        o
    }

    #[cfg(test)]
    fn addr(obj: &Self::Obj<'_>) -> usize {
        &***obj as *const Obj<N> as usize
    }
}

/// opool's `PoolAllocator`: boxed objects, the common reset.
pub struct ObjAllocator<const N: usize>;

impl<const N: usize> opool::PoolAllocator<Box<Obj<N>>> for ObjAllocator<N> {
    fn allocate(&self) -> Box<Obj<N>> {
        Box::new(Obj::new())
    }

    #[inline]
    fn reset(&self, obj: &mut Box<Obj<N>>) {
        obj.wipe();
    }
}

/// opool's concurrent `Pool` (a lock-free `ArrayQueue`), of boxed objects.
pub struct Opool<const N: usize>(pub opool::Pool<ObjAllocator<N>, Box<Obj<N>>>);

impl<const N: usize> Opool<N> {
    /// An empty pool that keeps up to [`OPOOL_CAPACITY`] free objects.
    pub fn new() -> Self {
        Opool(opool::Pool::new(OPOOL_CAPACITY, ObjAllocator))
    }
}

impl<const N: usize> Peer for Opool<N> {
    const NAME: &'static str = "opool";
    type Obj<'a> = opool::RefGuard<'a, ObjAllocator<N>, Box<Obj<N>>>;

    #[inline]
    fn get(&self, byte: u8) -> Self::Obj<'_> {
        let mut o = self.0.get();
        o.touch(byte);
        o
    }

    #[cfg(test)]
    fn addr(obj: &Self::Obj<'_>) -> usize {
        &***obj as *const Obj<N> as usize
    }
}

/// Every peer for one object size.
struct Peers<const N: usize, C: ThreadCache<Obj<N>>> {
    keel: Keel<N, C>,
    system: SystemBox<N>,
    mimalloc: Mimalloc<N>,
    slab: Slab<N>,
    lf_linear: LfLinear<N>,
    lf_spin: LfSpin<N>,
    opool: Opool<N>,
}

impl<const N: usize, C: ThreadCache<Obj<N>>> Peers<N, C> {
    fn new(keel: &'static Pool<Obj<N>, C>) -> Self {
        Peers {
            keel: Keel(keel),
            system: SystemBox::new(),
            mimalloc: Mimalloc::new(),
            slab: Slab(sharded_slab::Pool::new()),
            lf_linear: LfLinear::new(),
            lf_spin: LfSpin::new(),
            opool: Opool::new(),
        }
    }
}

keel_pool::pool! {
    static KEEL_64: Pool<Obj<64>, Keel64> = Pool::new("keel-bench 64 B", Obj::new);
    static KEEL_256: Pool<Obj<256>, Keel256> = Pool::new("keel-bench 256 B", Obj::new);
    static KEEL_4K: Pool<Obj<4096>, Keel4K> = Pool::new("keel-bench 4 KiB", Obj::new);
}

/// Table columns, in order: the handoff baseline, then the peers.
const HANDOFF: &str = "handoff";
const PEER_NAMES: [&str; 7] = [
    KEEL,
    SystemBox::<1>::NAME,
    Mimalloc::<1>::NAME,
    Slab::<1>::NAME,
    LfLinear::<1>::NAME,
    LfSpin::<1>::NAME,
    Opool::<1>::NAME,
];

// ---------------------------------------------------------------------------
// The two modes.
// ---------------------------------------------------------------------------

/// `n` pairs on this thread.
pub fn single_thread<P: Peer>(peer: &P, n: u64) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        drop(peer.get(i as u8));
    }
    start.elapsed()
}

/// `n` pairs, each object taken here and dropped on another thread.
pub fn cross_thread<P: Peer>(peer: &P, n: u64) -> Duration {
    handoff(n, |i| peer.get(i as u8))
}

/// The cross-thread handoff alone: ships `n` plain `usize`s.
pub fn handoff_only(n: u64) -> Duration {
    handoff(n, |i| black_box(i as usize))
}

/// Makes `n` values with `make` on this thread and ships them in batches to
/// a consumer thread that drops them. Returns the time from the first `make`
/// until the consumer has dropped the last value.
pub fn handoff<T: Send>(n: u64, mut make: impl FnMut(u64) -> T) -> Duration {
    let (full_tx, full_rx) = sync_channel::<Vec<T>>(BATCHES);
    let (empty_tx, empty_rx) = sync_channel::<Vec<T>>(BATCHES);
    for _ in 0..BATCHES {
        empty_tx
            .send(Vec::with_capacity(BATCH))
            .expect("the receiver is alive");
    }
    let ready = &Barrier::new(2);
    thread::scope(|s| {
        let consumer = s.spawn(move || {
            ready.wait();
            let mut dropped = 0u64;
            while dropped < n {
                let mut batch = full_rx
                    .recv()
                    .expect("the producer ships all n values before hanging up");
                dropped += batch.len() as u64;
                batch.clear(); // the puts
                // Fails only once the producer is done and gone: fine.
                let _ = empty_tx.send(batch);
            }
            (Instant::now(), dropped)
        });
        ready.wait();
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < n {
            let mut batch = empty_rx.recv().expect("the consumer returns batches");
            let k = (n - sent).min(BATCH as u64);
            batch.extend((sent..sent + k).map(&mut make));
            sent += k;
            full_tx
                .send(batch)
                .expect("the consumer runs until all n are dropped");
        }
        let (end, dropped) = consumer.join().expect("the consumer thread panicked");
        assert_eq!(dropped, n, "every value reached the consumer");
        end.duration_since(start)
    })
}

// ---------------------------------------------------------------------------
// Running: cases, rounds, medians.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Single,
    Cross,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::Cross => "cross",
        }
    }
}

/// One column of one row: a peer (or the handoff) at one size and mode.
struct Case<'a> {
    name: &'static str,
    run: Box<dyn Fn(u64) -> Duration + 'a>,
    /// ns per pair, one sample per round.
    samples: Vec<f64>,
}

/// One row: every case of a size and mode.
struct Row<'a> {
    size: usize,
    mode: Mode,
    cases: Vec<Case<'a>>,
}

impl<'a> Row<'a> {
    fn push(&mut self, name: &'static str, run: impl Fn(u64) -> Duration + 'a) {
        self.cases.push(Case {
            name,
            run: Box::new(run),
            samples: Vec::new(),
        });
    }

    fn median(&self, name: &str) -> Option<f64> {
        let c = self.cases.iter().find(|c| c.name == name)?;
        median(&c.samples)
    }
}

fn add<'a, P: Peer>(single: &mut Row<'a>, cross: &mut Row<'a>, peer: &'a P) {
    single.push(P::NAME, move |n| single_thread(peer, n));
    cross.push(P::NAME, move |n| cross_thread(peer, n));
}

/// The single-thread and cross-thread rows for one size.
fn rows<const N: usize, C: ThreadCache<Obj<N>>>(p: &Peers<N, C>) -> [Row<'_>; 2] {
    let mut single = Row {
        size: N,
        mode: Mode::Single,
        cases: Vec::new(),
    };
    let mut cross = Row {
        size: N,
        mode: Mode::Cross,
        cases: Vec::new(),
    };
    cross.push(HANDOFF, handoff_only);
    add(&mut single, &mut cross, &p.keel);
    add(&mut single, &mut cross, &p.system);
    add(&mut single, &mut cross, &p.mimalloc);
    add(&mut single, &mut cross, &p.slab);
    add(&mut single, &mut cross, &p.lf_linear);
    add(&mut single, &mut cross, &p.lf_spin);
    add(&mut single, &mut cross, &p.opool);
    [single, cross]
}

/// The flags of `keel-bench pool`.
#[derive(Debug, Clone, PartialEq, Eq, Default, clap::Args)]
pub struct Args {
    /// Single-thread pairs per measurement (cross-thread: N/4); default
    /// 3000000: a full run takes about half a minute
    #[arg(long, value_name = "N", value_parser = args::positive)]
    iters: Option<u64>,
    /// Rounds of every case; the median is reported (default 7)
    #[arg(long, value_name = "R", value_parser = args::rounds)]
    rounds: Option<usize>,
    /// 200000 pairs, 3 rounds: a few seconds, for CI smoke runs
    #[arg(long)]
    quick: bool,
    /// Only these columns, e.g. `keel,box` (for profiling one peer); names:
    /// keel box mimalloc slab lf-linear lf-spin opool
    #[arg(long, value_name = "LIST", value_parser = |l: &str| args::names(l, &PEER_NAMES))]
    peers: Option<args::Names>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    iters: u64,
    rounds: usize,
    /// Peers to run; `None` runs all.
    peers: Option<Vec<String>>,
}

impl Options {
    fn from_args(a: &Args) -> Options {
        let (default_iters, default_rounds) = if a.quick {
            (QUICK_ITERS, QUICK_ROUNDS)
        } else {
            (DEFAULT_ITERS, DEFAULT_ROUNDS)
        };
        Options {
            iters: a.iters.unwrap_or(default_iters),
            rounds: a.rounds.unwrap_or(default_rounds),
            peers: a.peers.clone().map(|n| n.0),
        }
    }

    fn wants(&self, name: &str) -> bool {
        name == HANDOFF
            || self
                .peers
                .as_ref()
                .is_none_or(|p| p.iter().any(|n| n == name))
    }

    fn pairs(&self, mode: Mode) -> u64 {
        match mode {
            Mode::Single => self.iters,
            Mode::Cross => (self.iters / CROSS_DIVISOR).max(1),
        }
    }
}

/// Entry point of `keel-bench pool`.
pub fn main(a: &Args) -> ExitCode {
    args::main("pool", &Options::from_args(a), |opts| {
        run(opts);
        Ok(String::new())
    })
}

fn run(opts: &Options) {
    // See the module doc: glibc's malloc is cheaper until a thread starts.
    thread::spawn(|| ()).join().expect("an empty thread");

    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let load_start = load_average();
    let started = Instant::now();

    let p64 = Peers::new(&KEEL_64);
    let p256 = Peers::new(&KEEL_256);
    let p4k = Peers::new(&KEEL_4K);
    let mut rows: Vec<Row<'_>> = [rows(&p64), rows(&p256), rows(&p4k)]
        .into_iter()
        .flatten()
        .collect();
    for row in &mut rows {
        row.cases.retain(|c| opts.wants(c.name));
    }

    eprint!("keel-bench pool: warming up");
    for row in &rows {
        let n = (opts.pairs(row.mode) / 8).max((BATCHES * BATCH) as u64);
        for c in &row.cases {
            black_box((c.run)(n));
        }
    }
    eprintln!();
    for round in 0..opts.rounds {
        eprint!("\rround {}/{}", round + 1, opts.rounds);
        for row in &mut rows {
            let n = opts.pairs(row.mode);
            let k = row.cases.len();
            for j in 0..k {
                let c = &mut row.cases[(j + round) % k];
                let t = (c.run)(n);
                c.samples.push(t.as_nanos() as f64 / n as f64);
            }
        }
    }
    eprintln!();

    let elapsed = started.elapsed();
    print!(
        "{}",
        report(opts, &rows, &load_start, &load_average(), cores, elapsed)
    );
}

// ---------------------------------------------------------------------------
// The report.
// ---------------------------------------------------------------------------

fn size_name(n: usize) -> String {
    if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

fn report(
    opts: &Options,
    rows: &[Row<'_>],
    load_start: &str,
    load_end: &str,
    cores: usize,
    elapsed: Duration,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "keel-bench pool: ns per get+put pair, median of {} rounds (peers interleaved)",
        opts.rounds
    );
    let _ = writeln!(
        out,
        "  single: {} pairs per sample; cross: {} pairs per sample, batches of {BATCH}, {BATCHES} batches in flight",
        opts.pairs(Mode::Single),
        opts.pairs(Mode::Cross),
    );
    let _ = writeln!(
        out,
        "  box and mimalloc call System / MiMalloc directly, not the counting global allocator; objects: [u8; N], reset = clear one byte"
    );
    crate::summary::machine_line(
        &mut out,
        cores,
        (load_start, load_end),
        elapsed.as_secs_f64(),
    );
    out.push('\n');

    // The table.
    let mut t = Table::new()
        .column("size", Align::Left)
        .column("mode", Align::Left)
        .column(HANDOFF, Align::Right);
    for name in PEER_NAMES {
        t = t.column(name, Align::Right);
    }
    let ratio_names = &PEER_NAMES[1..];
    for (i, name) in ratio_names.iter().enumerate() {
        t = if i == 0 {
            t.column_after_rule(name, Align::Right)
        } else {
            t.column(name, Align::Right)
        };
    }
    let first_ratio = 3 + PEER_NAMES.len();
    t = t
        .group(2, first_ratio - 1, "ns per get+put pair (median)")
        .group(
            first_ratio,
            first_ratio + ratio_names.len() - 1,
            "peer ns / keel ns (>1: keel faster)",
        );
    let ns = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
    for row in rows {
        let mut cells = vec![
            size_name(row.size),
            row.mode.name().to_string(),
            ns(row.median(HANDOFF)),
        ];
        let keel = row.median(KEEL);
        for name in PEER_NAMES {
            cells.push(ns(row.median(name)));
        }
        for name in ratio_names {
            cells.push(match (row.median(name), keel) {
                (Some(p), Some(k)) if k > 0.0 => format!("{:.2}x", p / k),
                _ => "-".to_string(),
            });
        }
        t.row(cells);
    }
    let _ = write!(out, "{t}");
    out.push_str(
        "  handoff = shipping plain usize values the same way; it is included in every cross-thread number.\n",
    );
    out.push_str(
        "  box = System.alloc/dealloc (glibc, as Box on System); mimalloc = MiMalloc.alloc/dealloc; both called directly;\n  \
         slab = sharded_slab::Pool create_with + clear(key); lf-* = lockfree-object-pool Linear/SpinLock;\n  \
         lf-spin and opool pool Box<[u8; N]> (they store objects by value).\n  \
         lf-linear at 4 KiB: pull inlines its cold path (a 32-object page built on the stack),\n  \
         so every pull stack-probes a ~250 KiB frame.\n",
    );

    // Targets, stated as facts.
    out.push_str("\ntargets:\n");
    let verdict = |met: bool| if met { "met    " } else { "NOT met" };
    let box_name = SystemBox::<1>::NAME;
    let mi_name = Mimalloc::<1>::NAME;
    let keel_name = KEEL;
    for (mode, peer, need, what) in [
        (
            Mode::Single,
            box_name,
            3.0,
            "single-thread: keel-pool >= 3x faster than system Box",
        ),
        (
            Mode::Single,
            mi_name,
            1.0,
            "single-thread: keel-pool faster than mimalloc",
        ),
        (
            Mode::Cross,
            box_name,
            1.5,
            "cross-thread:  keel-pool >= 1.5x faster than system Box",
        ),
    ] {
        let _ = writeln!(out, "  {what}");
        for row in rows.iter().filter(|r| r.mode == mode) {
            let (Some(k), Some(p)) = (row.median(keel_name), row.median(peer)) else {
                continue;
            };
            let ratio = p / k;
            let met = if need > 1.0 {
                ratio >= need
            } else {
                ratio > need
            };
            let _ = write!(
                out,
                "    {:<6} {}  {peer} {p:.1} ns / keel {k:.1} ns = {ratio:.2}x",
                size_name(row.size),
                verdict(met),
            );
            // The handoff is in both numbers; without it the ratio is wider.
            match row.median(HANDOFF) {
                Some(h) if mode == Mode::Cross && k > h => {
                    let _ = write!(
                        out,
                        "  (handoff {h:.1} ns subtracted: {:.2}x)",
                        (p - h) / (k - h)
                    );
                }
                _ => {}
            }
            out.push('\n');
        }
    }

    // How steady each case was: cells whose rounds disagree a lot are
    // either disturbed by other processes or bimodal (allocator state).
    let mut spreads: Vec<(f64, String)> = Vec::new();
    for row in rows {
        for c in &row.cases {
            let (Some(m), Some(lo), Some(hi)) = (
                median(&c.samples),
                c.samples.iter().copied().reduce(f64::min),
                c.samples.iter().copied().reduce(f64::max),
            ) else {
                continue;
            };
            let label = format!("{} {} {}", size_name(row.size), row.mode.name(), c.name);
            spreads.push(((hi - lo) / m, label));
        }
    }
    spreads.sort_by(|a, b| b.0.total_cmp(&a.0));
    let wide: Vec<String> = spreads
        .iter()
        .filter(|(s, _)| *s > NOISY_SPREAD)
        .map(|(s, label)| format!("{label} {:.0}%", s * 100.0))
        .collect();
    let _ = write!(
        out,
        "\nspread across rounds, (max-min)/median: {} of {} cells above {:.0}%",
        wide.len(),
        spreads.len(),
        NOISY_SPREAD * 100.0,
    );
    if !wide.is_empty() {
        let shown = wide.len().min(SHOW_NOISY);
        let _ = write!(out, ", widest: {}", wide[..shown].join(", "));
        if wide.len() > shown {
            let _ = write!(out, ", ...");
        }
    }
    out.push('\n');
    if wide.len() * 4 > spreads.len() {
        out.push_str(
            "  many cells moved between rounds: other processes were probably running; compare medians of two runs\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gets, drops, gets again: a pool that took its object back hands out
    /// the same one.
    fn same_object_comes_back<P: Peer>(peer: &P) {
        let first = peer.get(1);
        let addr = P::addr(&first);
        drop(first);
        let again = peer.get(2);
        assert_eq!(P::addr(&again), addr, "{} reused its object", P::NAME);
    }

    #[test]
    fn every_pool_takes_its_object_back() {
        keel_pool::pool! {
            static POOL: Pool<Obj<64>, Cache> = Pool::new("test: take back", Obj::new);
        }
        let keel = Keel(&POOL);
        same_object_comes_back(&keel);
        let s = POOL.stats();
        assert_eq!((s.gets, s.puts, s.live), (2, 2, 0), "{s:?}");

        let slab = Slab::<64>(sharded_slab::Pool::new());
        same_object_comes_back(&slab);
        let o = slab.get(3);
        let key = o.key;
        drop(o);
        assert!(slab.0.get(key).is_none(), "dropping a SlabObj clears it");

        same_object_comes_back(&LfLinear::<64>::new());
        same_object_comes_back(&LfSpin::<64>::new());

        let opool = Opool::<64>::new();
        same_object_comes_back(&opool);
        assert_eq!(opool.0.len(), 1, "opool holds its one object");
    }

    #[test]
    fn cross_thread_returns_every_keel_object() {
        keel_pool::pool! {
            static POOL: Pool<Obj<256>, Cache> = Pool::new("test: cross", Obj::new);
        }
        let n = (3 * BATCH + 17) as u64;
        cross_thread(&Keel(&POOL), n);
        let s = POOL.stats();
        assert_eq!((s.gets, s.puts, s.live), (n, n, 0), "{s:?}");
    }

    #[test]
    fn options() {
        let parse = |s: &str| args::parse::<Args>(s).map(|a| Options::from_args(&a));
        let quick = parse("--quick").expect("parses");
        assert_eq!((quick.iters, quick.rounds), (QUICK_ITERS, QUICK_ROUNDS));
        let o = parse("--iters 1_000 --rounds 5").expect("parses");
        assert_eq!((o.iters, o.rounds, o.pairs(Mode::Cross)), (1000, 5, 250));
        assert!(parse("--iters").is_err());
        assert!(parse("--iters 0").is_err());
        assert!(parse("--frobnicate").is_err());
        let o = parse("--peers keel,box").expect("parses");
        assert!(o.wants("keel") && o.wants("box") && o.wants(HANDOFF) && !o.wants("opool"));
        assert!(parse("--peers keel,jemalloc").is_err());
    }
}
