//! The part of a pool every thread shares: blocks, the global free list,
//! trimming and statistics.
//!
//! Objects live in *blocks*: one allocation of `per_block` slots, every slot
//! holding a constructed `T` for the block's whole life. A slot points back at
//! its block so that trimming can tell when every slot of a block is free.
//!
//! The global free list is a flat vector of slot pointers behind a mutex.
//! Threads move pointers to and from it in batches (half a thread cache at a
//! time), so the lock is taken once per many gets or puts and is the only
//! place objects cross threads.
//!
//! A slot also records the heap bytes its object kept when it was last
//! returned ([`Reset::heap_bytes`]), so that whoever moves a free object
//! (a thread cache, the global list, a trim) can move its share of the
//! pool's retained-heap counter without calling user code under a lock.
//!
//! The global list also decides when the pool is *idle*: thread caches tick
//! it every [`IDLE_CHECK_PUTS`] puts, and after [`IDLE_TICKS`] ticks in
//! a row with no draw from the global list (no refill, no new block), its
//! fully free blocks go back to the allocator.

use std::cell::{Cell, UnsafeCell};
use std::mem;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::stats::PoolStats;
use crate::sync::{AtomicBool, AtomicU64, Mutex, lock};
use crate::{PoolConfig, Reset};

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// Puts a thread cache makes between two idle checks (a power of two).
pub(crate) const IDLE_CHECK_PUTS: u32 = 1024;
/// Idle checks in a row, from any thread, that must see no draw from the
/// global list before its free blocks are given back.
pub(crate) const IDLE_TICKS: u32 = 4;
/// The most objects a thread cache holds, whatever the configuration asks:
/// its length must fit the low half of [`LocalStats::len_puts`].
pub(crate) const MAX_LOCAL_CAPACITY: usize = LocalStats::LEN_MASK as usize;

/// One object's home. `value` is always initialised while the block lives.
#[repr(C)] // `value` first: a pointer to the object is a pointer to its slot
pub(crate) struct Slot<T> {
    pub(crate) value: UnsafeCell<T>,
    block: NonNull<Block<T>>,
    /// [`Reset::heap_bytes`] of the object when it was last returned (or
    /// built), while the slot is free; 0 while a `Pooled` holds it (taken
    /// out by [`SlotPtr::take_heap`]), so that returning an object that
    /// keeps no heap writes nothing here. Written only by whoever holds
    /// the slot.
    heap: Cell<usize>,
}

/// A batch of slots allocated together and freed together.
pub(crate) struct Block<T> {
    /// Free slots of this block counted during a trim; touched only while the
    /// global lock is held.
    mark: Cell<usize>,
    slots: NonNull<[Slot<T>]>,
}

/// A pointer to a slot that is free (in a cache or the global list) or owned
/// by exactly one [`Pooled`](crate::Pooled).
pub(crate) struct SlotPtr<T>(pub(crate) NonNull<Slot<T>>);

impl<T> Clone for SlotPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SlotPtr<T> {}

// SAFETY: a `SlotPtr` is a handle to an object that only one party (one cache,
// the global list, or one `Pooled`) uses at a time; moving that right between
// threads is moving a `T`, which is allowed for `T: Send`.
unsafe impl<T: Send> Send for SlotPtr<T> {}

impl<T> SlotPtr<T> {
    /// The heap bytes recorded for this slot's object.
    ///
    /// # Safety
    /// The caller holds the slot (in its cache, in the global list under the
    /// lock, or as its `Pooled`) and the pool is not dead.
    #[inline]
    pub(crate) unsafe fn heap(self) -> usize {
        // SAFETY: per the contract the slot's block is alive and nobody else
        // touches the slot now.
        unsafe { (*self.0.as_ptr()).heap.get() }
    }

    /// Records the heap bytes of this slot's (reset) object, on its way
    /// back: nothing to write for 0, which a held slot records already.
    ///
    /// # Safety
    /// As for [`heap`](Self::heap).
    #[inline]
    pub(crate) unsafe fn set_heap(self, bytes: usize) {
        if bytes != 0 {
            // SAFETY: as for `heap`.
            unsafe { (*self.0.as_ptr()).heap.set(bytes) }
        }
    }

    /// The heap bytes recorded for this slot's object as it leaves the
    /// free slots for a `Pooled`, which holds it with 0 recorded.
    ///
    /// # Safety
    /// As for [`heap`](Self::heap).
    #[inline]
    pub(crate) unsafe fn take_heap(self) -> usize {
        // SAFETY: as for `heap`.
        let heap = unsafe { self.heap() };
        if heap != 0 {
            // SAFETY: as for `heap`.
            unsafe { (*self.0.as_ptr()).heap.set(0) }
        }
        heap
    }
}

/// Sum of the recorded heap bytes of `slots`.
///
/// # Safety
/// The caller holds every slot (see [`SlotPtr::heap`]).
unsafe fn heap_of<T>(slots: &[SlotPtr<T>]) -> usize {
    // SAFETY: per the contract.
    slots.iter().map(|p| unsafe { p.heap() }).sum()
}

/// Counters a thread cache publishes. Written only by the owning thread (a
/// plain load + store, no read-modify-write), read by anyone for statistics.
///
/// The cache's length and its puts since its last idle check share one
/// word, `len_puts` (length in the low 32 bits, puts in the high 32): a get
/// stores it less one, a put stores it plus [`PUT`](Self::PUT), so the fast
/// path keeps one counter, and one load gives a put both its slot and
/// whether the idle check is due. The check moves the high half into
/// `puts_before` ([`roll_puts`](Self::roll_puts)), so it never grows past
/// one check's puts.
///
/// A get only pops and stores the new word: the gets are derived,
/// `puts + moved_in - moved_out - len` (every object that came into the
/// cache left it by a get or a move, or is still there). A reader on
/// another thread must never see more gets than were made, so the owner
/// stores with `Release` (a plain store on x86) in these orders, and
/// [`gets`](Self::gets) loads with `Acquire` in the order `puts_before`,
/// `moved_in`, `len_puts`, `moved_out`:
/// - a put stores `len_puts` (its length and its puts together);
/// - an idle check's roll stores `len_puts` (puts cleared), then
///   `puts_before`;
/// - a move in (a refill, a new block) stores `len_puts`, then `moved_in`;
/// - a move out (a spill, an idle check, a drain) stores `moved_out`, then
///   `len_puts`.
///
/// Each load then sees the owner at the same point as the one before it or
/// later, the counters that only grow (`puts_before`, `moved_in`) read no
/// later than the length, and `moved_out` no earlier: the sum can only
/// undercount. A roll between the loads of `puts_before` and `len_puts`
/// loses the rolled puts from that one reading (an undercount); the reverse
/// (the new `puts_before` with the puts it took still in the word) cannot
/// happen, since the word was stored first.
#[derive(Default)]
pub(crate) struct LocalStats {
    /// Objects in the cache (low 32 bits) and puts since the last idle
    /// check (high 32 bits).
    pub(crate) len_puts: AtomicU64,
    /// Puts up to the last idle check.
    pub(crate) puts_before: AtomicU64,
    /// Objects moved in from the global list or a new block, ever.
    pub(crate) moved_in: AtomicU64,
    /// Objects moved out to the global list, ever.
    pub(crate) moved_out: AtomicU64,
    /// Heap bytes kept by the objects in the cache (sum of their slots'
    /// records).
    pub(crate) heap: AtomicU64,
}

impl LocalStats {
    /// What one put adds to `len_puts`: an object and a put.
    pub(crate) const PUT: u64 = (1 << 32) | 1;
    /// The length's bits of `len_puts`.
    const LEN_MASK: u64 = u32::MAX as u64;

    /// All the puts, from `puts_before` and a `len_puts` word.
    #[inline]
    fn puts_of(before: u64, len_puts: u64) -> u64 {
        before.wrapping_add(len_puts >> 32)
    }

    /// The length in a `len_puts` word.
    #[inline]
    pub(crate) fn len_of(len_puts: u64) -> usize {
        (len_puts & Self::LEN_MASK) as usize
    }

    /// Objects in the cache now.
    pub(crate) fn cached(&self) -> u64 {
        Self::len_of(self.len_puts.load(Relaxed)) as u64
    }

    /// The owner sets the length, keeping the puts (`Release`: see the
    /// type's doc).
    pub(crate) fn set_len(&self, len: usize) {
        debug_assert!(len as u64 <= Self::LEN_MASK);
        let word = self.len_puts.load(Relaxed);
        self.len_puts
            .store((word & !Self::LEN_MASK) | len as u64, Release);
    }

    /// The owner moves the puts since the last idle check into
    /// `puts_before` (in the order the type's doc gives).
    pub(crate) fn roll_puts(&self) {
        let word = self.len_puts.load(Relaxed);
        self.len_puts.store(word & Self::LEN_MASK, Release);
        let before = self.puts_before.load(Relaxed);
        self.puts_before.store(before + (word >> 32), Release);
    }

    /// Objects the cache took back, ever.
    pub(crate) fn puts(&self) -> u64 {
        let before = self.puts_before.load(Acquire);
        Self::puts_of(before, self.len_puts.load(Acquire))
    }

    /// Objects the cache handed out, ever (derived: see the type's doc).
    pub(crate) fn gets(&self) -> u64 {
        let before = self.puts_before.load(Acquire);
        let moved_in = self.moved_in.load(Acquire);
        let word = self.len_puts.load(Acquire);
        let moved_out = self.moved_out.load(Acquire);
        let puts = Self::puts_of(before, word);
        let len = Self::len_of(word) as u64;
        puts.wrapping_add(moved_in)
            .saturating_sub(len.wrapping_add(moved_out))
    }

    /// Adds `n` (negative: subtracts) to a counter only this thread writes:
    /// a load and a store, no read-modify-write.
    #[inline]
    pub(crate) fn add(counter: &AtomicU64, n: i64) {
        counter.store(counter.load(Relaxed).wrapping_add(n as u64), Relaxed);
    }

    /// [`add`](Self::add), published with `Release` (see the type's doc).
    #[inline]
    pub(crate) fn add_release(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_add(n), Release);
    }
}

/// A thread cache's counters, owned by the cache, listed here for reading.
pub(crate) struct StatsPtr(NonNull<LocalStats>);

// SAFETY: `LocalStats` is all atomics; the pointer is only read under the
// global lock while the owning cache keeps it alive (see `register_local`).
unsafe impl Send for StatsPtr {}

pub(crate) struct Global<T> {
    free: Vec<SlotPtr<T>>,
    blocks: Vec<NonNull<Block<T>>>,
    /// Automatic trimming runs when `free` reaches this length.
    next_trim_at: usize,
    /// Statistics of live thread caches.
    locals: Vec<StatsPtr>,
    /// Gets and puts of thread caches that have been flushed (thread exit),
    /// plus those served directly by the global list.
    retired_gets: u64,
    retired_puts: u64,
    /// Heap bytes kept by the objects in `free`.
    free_heap: usize,
    /// Draws from the global list (refills, direct gets, new blocks), ever.
    draws: u64,
    /// `draws` at the last idle check that saw it change.
    draws_seen: u64,
    /// Idle checks in a row that saw no draw.
    quiet_ticks: u32,
    /// Idle trims that freed blocks, ever.
    idle_trims: u64,
    /// When a thread last drew from the global list (or the pool was made):
    /// what [`Shared::trim_idle`] measures idleness by. Read and written
    /// only on cold paths under the lock.
    last_draw: Instant,
}

impl<T> Global<T> {
    /// A thread takes objects from the global list or a new block.
    fn note_draw(&mut self) {
        self.draws += 1;
        self.last_draw = Instant::now();
    }
}

/// Blocks removed from the pool, to be destroyed once no lock is held
/// (destroying runs `T::drop`, which is user code).
#[must_use = "blocks must be destroyed with `destroy`"]
pub(crate) struct Doomed<T>(Vec<NonNull<Block<T>>>);

impl<T> Doomed<T> {
    pub(crate) fn none() -> Self {
        Doomed(Vec::new())
    }

    /// Adds `other`'s blocks to these.
    pub(crate) fn join(&mut self, mut other: Doomed<T>) {
        if self.0.is_empty() {
            *self = other;
        } else {
            self.0.append(&mut other.0);
        }
    }

    /// Drops every object of every block and frees the blocks.
    pub(crate) fn destroy(self) {
        for block in self.0 {
            // SAFETY: a doomed block was removed from `Global::blocks` under
            // the lock together with every pointer to its slots (all were in
            // the free list and were filtered out), so nothing else refers to
            // it; both allocations came from `Box::into_raw` in `new_block`.
            unsafe {
                let block = Box::from_raw(block.as_ptr());
                drop(Box::from_raw(block.slots.as_ptr()));
            }
        }
    }
}

pub(crate) struct Shared<T> {
    pub(crate) uid: u64,
    pub(crate) index: usize,
    pub(crate) name: &'static str,
    pub(crate) config: PoolConfig,
    pub(crate) per_block: usize,
    pub(crate) local_capacity: usize,
    /// Copies of [`IDLE_CHECK_PUTS`] and [`IDLE_TICKS`] (smaller in loom
    /// models).
    pub(crate) idle_check_puts: u32,
    pub(crate) idle_ticks: u32,
    make: fn() -> T,
    global: Mutex<Global<T>>,
    /// Set when the owning `Pool` is dropped: its blocks are gone and pointers
    /// still sitting in thread caches must never be followed.
    dead: AtomicBool,
    blocks_allocated: AtomicU64,
    blocks_freed: AtomicU64,
    /// Heap bytes of cached objects dropped with the blocks trimmed, ever.
    heap_returned: AtomicU64,
}

// SAFETY: the raw pointers in `Global` are protected by its mutex; objects
// reached through them move between threads only as `T: Send` values.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: all shared mutation goes through the mutex or atomics.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T: Reset + Send> Shared<T> {
    pub(crate) fn new(
        uid: u64,
        index: usize,
        name: &'static str,
        make: fn() -> T,
        config: PoolConfig,
    ) -> Self {
        let slot = mem::size_of::<Slot<T>>().max(1);
        let per_block = config
            .block_objects
            .unwrap_or_else(|| (16 * 1024 / slot).clamp(8, 256))
            .max(1);
        let local_capacity = config
            .local_capacity
            .unwrap_or_else(|| (256 * 1024 / slot).clamp(32, 256))
            .clamp(2, MAX_LOCAL_CAPACITY);
        Shared {
            uid,
            index,
            name,
            config,
            per_block,
            local_capacity,
            idle_check_puts: IDLE_CHECK_PUTS,
            idle_ticks: IDLE_TICKS,
            make,
            global: Mutex::new(Global {
                free: Vec::new(),
                blocks: Vec::new(),
                next_trim_at: config.high_water,
                locals: Vec::new(),
                retired_gets: 0,
                retired_puts: 0,
                free_heap: 0,
                draws: 0,
                draws_seen: 0,
                quiet_ticks: 0,
                idle_trims: 0,
                last_draw: Instant::now(),
            }),
            dead: AtomicBool::new(false),
            blocks_allocated: AtomicU64::new(0),
            blocks_freed: AtomicU64::new(0),
            heap_returned: AtomicU64::new(0),
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Relaxed)
    }

    /// Allocates and fills a new block. Runs `make` (user code), so it is
    /// called with no lock held; the block joins the pool in [`adopt`].
    pub(crate) fn new_block(&self) -> NonNull<Block<T>> {
        let block = NonNull::from(Box::leak(Box::new(Block {
            mark: Cell::new(0),
            slots: NonNull::<[Slot<T>; 0]>::dangling(),
        })));
        let slots: Box<[Slot<T>]> = (0..self.per_block)
            .map(|_| {
                let value = (self.make)();
                Slot {
                    heap: Cell::new(value.heap_bytes()),
                    value: UnsafeCell::new(value),
                    block,
                }
            })
            .collect();
        // SAFETY: `block` was just leaked from a Box and nobody else has it.
        unsafe { (*block.as_ptr()).slots = NonNull::from(Box::leak(slots)) };
        self.blocks_allocated.fetch_add(1, Relaxed);
        block
    }

    /// Adds a new block to the pool: the first `take` of its slots go to
    /// `into` (a thread cache, or one caller), the rest to the global list.
    /// Returns the heap bytes recorded for the slots moved into `into`.
    pub(crate) fn adopt(
        &self,
        block: NonNull<Block<T>>,
        into: &mut Vec<SlotPtr<T>>,
        take: usize,
    ) -> usize {
        // SAFETY: the block is fully built and not yet shared.
        let slots = unsafe { (*block.as_ptr()).slots };
        let first = slots.cast::<Slot<T>>();
        let n = slots.len();
        let mut g = lock(&self.global);
        g.blocks.push(block);
        g.note_draw();
        let mut heap_in = 0;
        for i in 0..n {
            // SAFETY: `i < n`, inside the slot array.
            let p = SlotPtr(unsafe { first.add(i) });
            // SAFETY: the new block's slots are all ours until shared here.
            let heap = unsafe { p.heap() };
            if i < take {
                into.push(p);
                heap_in += heap;
            } else {
                g.free.push(p);
                g.free_heap += heap;
            }
        }
        heap_in
    }

    /// Moves up to `n` free objects from the global list into `into`.
    /// Returns the heap bytes they keep.
    pub(crate) fn refill(&self, into: &mut Vec<SlotPtr<T>>, n: usize) -> usize {
        let mut g = lock(&self.global);
        g.note_draw();
        let k = n.min(g.free.len());
        let from = g.free.len() - k;
        // SAFETY: free slots in the global list are held by it, under the
        // lock; the pool is alive (a dead pool has an empty list).
        let heap = unsafe { heap_of(&g.free[from..]) };
        g.free_heap -= heap;
        into.extend(g.free.drain(from..));
        if g.free.len() < self.config.high_water {
            g.next_trim_at = self.config.high_water;
        }
        heap
    }

    /// Moves `from[at..]` to the global list; trims automatically when the
    /// list passes the high-water mark. Returns the heap bytes moved.
    pub(crate) fn spill(&self, from: &mut Vec<SlotPtr<T>>, at: usize) -> (usize, Doomed<T>) {
        let mut g = lock(&self.global);
        if self.is_dead() {
            from.truncate(at);
            return (0, Doomed::none());
        }
        // SAFETY: the calling cache holds these slots; the pool is alive.
        let heap = unsafe { heap_of(&from[at..]) };
        g.free_heap += heap;
        g.free.extend(from.drain(at..));
        (heap, self.maybe_trim(&mut g))
    }

    /// A thread cache's idle check (every `idle_check_puts` of its puts):
    /// the `unused` objects at the bottom of its stack, which
    /// it did not touch during the whole interval, move to the global list;
    /// then, if no thread has drawn from the global list during the last
    /// `idle_ticks` checks, its fully free blocks go back to the allocator.
    /// Returns the heap bytes moved out of the cache.
    pub(crate) fn idle_tick(
        &self,
        from: &mut Vec<SlotPtr<T>>,
        unused: usize,
    ) -> (usize, Doomed<T>) {
        let mut g = lock(&self.global);
        if self.is_dead() {
            from.drain(..unused);
            return (0, Doomed::none());
        }
        // SAFETY: the calling cache holds these slots; the pool is alive.
        let heap = unsafe { heap_of(&from[..unused]) };
        g.free_heap += heap;
        g.free.extend(from.drain(..unused));
        if g.draws != g.draws_seen {
            g.draws_seen = g.draws;
            g.quiet_ticks = 0;
        } else {
            g.quiet_ticks = g.quiet_ticks.saturating_add(1);
        }
        if g.quiet_ticks < self.idle_ticks {
            return (heap, self.maybe_trim(&mut g));
        }
        // Idle: nobody needed the global list for a while. Give back every
        // fully free block, then wait for another quiet stretch.
        g.quiet_ticks = 0;
        let doomed = self.trim_locked(&mut g, 0);
        if !doomed.0.is_empty() {
            g.idle_trims += 1;
        }
        g.next_trim_at = self.config.high_water;
        (heap, doomed)
    }

    /// A get that bypasses thread caches (thread teardown, reentrancy).
    pub(crate) fn get_global(&self) -> SlotPtr<T> {
        {
            let mut g = lock(&self.global);
            g.note_draw();
            if let Some(p) = g.free.pop() {
                g.retired_gets += 1;
                // SAFETY: it was in the global list, which we hold.
                g.free_heap -= unsafe { p.take_heap() };
                return p;
            }
        }
        self.adopt_one(self.new_block())
    }

    /// Adds a new block and takes one object of it for a caller that has no
    /// thread cache.
    pub(crate) fn adopt_one(&self, block: NonNull<Block<T>>) -> SlotPtr<T> {
        let mut one = Vec::with_capacity(1);
        self.adopt(block, &mut one, 1);
        lock(&self.global).retired_gets += 1;
        // SAFETY: the slot is ours; what it keeps is counted in no list.
        unsafe { one[0].take_heap() };
        one[0]
    }

    /// A put that bypasses thread caches.
    pub(crate) fn put_global(&self, p: SlotPtr<T>) -> Doomed<T> {
        let mut g = lock(&self.global);
        g.retired_puts += 1;
        if self.is_dead() {
            return Doomed::none();
        }
        // SAFETY: the caller returns `p`, so holds it; the pool is alive.
        g.free_heap += unsafe { p.heap() };
        g.free.push(p);
        self.maybe_trim(&mut g)
    }

    /// Lists a thread cache's counters.
    ///
    /// # Safety
    /// `stats` must stay valid until passed to [`flush_local`](Self::flush_local).
    pub(crate) unsafe fn register_local(&self, stats: NonNull<LocalStats>) {
        lock(&self.global).locals.push(StatsPtr(stats));
    }

    /// A thread cache goes away: its objects and counters join the global
    /// state.
    pub(crate) fn flush_local(&self, free: &mut Vec<SlotPtr<T>>, stats: &LocalStats) -> Doomed<T> {
        let mut g = lock(&self.global);
        g.retired_gets += stats.gets();
        g.retired_puts += stats.puts();
        g.locals.retain(|s| !std::ptr::eq(s.0.as_ptr(), stats));
        if self.is_dead() {
            free.clear();
            return Doomed::none();
        }
        // SAFETY: the flushing cache holds these slots; the pool is alive.
        g.free_heap += unsafe { heap_of(free) };
        g.free.append(free);
        self.maybe_trim(&mut g)
    }

    fn maybe_trim(&self, g: &mut Global<T>) -> Doomed<T> {
        if g.free.len() < g.next_trim_at {
            return Doomed::none();
        }
        let doomed = self.trim_locked(g, self.config.high_water / 2);
        // Scan again at the mark if the trim got below it; otherwise only
        // after the list doubles, so a fragmented pool (free objects spread
        // over blocks that each hold a live one) costs O(1) amortised per
        // put, not a scan per spill.
        g.next_trim_at = if g.free.len() < self.config.high_water {
            self.config.high_water
        } else {
            g.free.len() * 2
        };
        doomed
    }

    /// Removes fully free blocks while more than `keep` objects stay cached
    /// globally.
    fn trim_locked(&self, g: &mut Global<T>, keep: usize) -> Doomed<T> {
        let per_block = self.per_block;
        if g.free.len() <= keep || g.free.len() < per_block {
            return Doomed::none();
        }
        for p in &g.free {
            // SAFETY: free slots belong to live blocks; `mark` is only touched
            // under the lock, which we hold.
            unsafe {
                let b = &*(*p.0.as_ptr()).block.as_ptr();
                b.mark.set(b.mark.get() + 1);
            }
        }
        let mut doomed = Vec::new();
        let mut cached = g.free.len();
        g.blocks.retain(|&b| {
            // SAFETY: as above.
            let mark = unsafe { &(*b.as_ptr()).mark };
            if mark.get() == per_block && cached >= keep + per_block {
                cached -= per_block;
                doomed.push(b);
                false
            } else {
                mark.set(0);
                true
            }
        });
        if !doomed.is_empty() {
            // Doomed blocks kept their mark (== per_block); surviving blocks
            // were reset to 0 above.
            let Global {
                free, free_heap, ..
            } = &mut *g;
            free.retain(|p| {
                // SAFETY: as above; doomed blocks are not freed yet.
                let keep = unsafe { (*(*p.0.as_ptr()).block.as_ptr()).mark.get() != per_block };
                if !keep {
                    // SAFETY: as above.
                    let heap = unsafe { p.heap() };
                    *free_heap -= heap;
                    self.heap_returned.fetch_add(heap as u64, Relaxed);
                }
                keep
            });
            // Keep room for a batch (what an idle check or a spill moves),
            // so a steady state that trims now and then does not reallocate
            // the list; an explicit trim of an empty list frees it.
            if g.free.capacity() > 2 * g.free.len() + 64 {
                g.free
                    .shrink_to((g.free.len() * 5 / 4).max(self.local_capacity));
            }
            if g.blocks.capacity() > 2 * g.blocks.len() + 16 {
                g.blocks.shrink_to(g.blocks.len() * 5 / 4);
            }
            self.blocks_freed.fetch_add(doomed.len() as u64, Relaxed);
        }
        Doomed(doomed)
    }

    /// Frees every fully free block above `keep` cached objects.
    pub(crate) fn trim(&self, keep: usize) -> (usize, Doomed<T>) {
        let mut g = lock(&self.global);
        let doomed = self.trim_locked(&mut g, keep);
        if g.free.is_empty() {
            g.free = Vec::new();
        }
        if g.blocks.is_empty() {
            g.blocks = Vec::new();
        }
        (doomed.0.len(), doomed)
    }

    /// Whether no thread has drawn from the global list for `idle_for`.
    pub(crate) fn idle_for(&self, idle_for: Duration) -> bool {
        lock(&self.global).last_draw.elapsed() >= idle_for
    }

    /// The time-based idle rule: if no thread has drawn from the global list
    /// for `idle_for`, every fully free block goes back to the allocator
    /// (counted in `idle_trims` when any did). Unlike [`trim`](Self::trim)
    /// it leaves a pool in use alone, so a timer may call it often.
    /// Returns the blocks freed.
    pub(crate) fn trim_idle(&self, idle_for: Duration) -> (usize, Doomed<T>) {
        let mut g = lock(&self.global);
        if g.last_draw.elapsed() < idle_for {
            return (0, Doomed::none());
        }
        let doomed = self.trim_locked(&mut g, 0);
        if !doomed.0.is_empty() {
            g.idle_trims += 1;
        }
        if g.free.is_empty() {
            g.free = Vec::new();
        }
        if g.blocks.is_empty() {
            g.blocks = Vec::new();
        }
        g.next_trim_at = self.config.high_water;
        (doomed.0.len(), doomed)
    }

    /// The owning pool is dropped: no object can be in use any more (every
    /// `Pooled` borrows the pool), so every block goes, including slots whose
    /// pointers still sit in other threads' caches; those caches see `dead`
    /// and never follow them.
    pub(crate) fn kill(&self) -> Doomed<T> {
        let mut g = lock(&self.global);
        self.dead.store(true, Relaxed);
        g.free = Vec::new();
        g.free_heap = 0;
        let blocks = mem::take(&mut g.blocks);
        self.blocks_freed.fetch_add(blocks.len() as u64, Relaxed);
        Doomed(blocks)
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let g = lock(&self.global);
        let mut cached_local = 0u64;
        let mut heap = g.free_heap as u64;
        let (mut gets, mut puts) = (g.retired_gets, g.retired_puts);
        for l in &g.locals {
            // SAFETY: listed counters stay valid until `flush_local` unlists
            // them under this same lock.
            let l = unsafe { l.0.as_ref() };
            cached_local = cached_local.wrapping_add(l.cached());
            heap = heap.wrapping_add(l.heap.load(Relaxed));
            gets = gets.saturating_add(l.gets());
            puts = puts.saturating_add(l.puts());
        }
        let blocks = g.blocks.len() as u64;
        let total = blocks * self.per_block as u64;
        let cached_global = g.free.len() as u64;
        let block_bytes = mem::size_of::<Block<T>>() + self.per_block * mem::size_of::<Slot<T>>();
        let list_bytes = g.free.capacity() * mem::size_of::<SlotPtr<T>>()
            + g.blocks.capacity() * mem::size_of::<NonNull<Block<T>>>();
        PoolStats {
            name: self.name,
            object_size: mem::size_of::<T>(),
            live: total.saturating_sub(cached_global + cached_local),
            cached: cached_global + cached_local,
            cached_global,
            cached_local,
            blocks,
            bytes: blocks * block_bytes as u64 + list_bytes as u64 + heap,
            heap_bytes: heap,
            gets,
            puts,
            blocks_allocated: self.blocks_allocated.load(Relaxed),
            blocks_freed: self.blocks_freed.load(Relaxed),
            bytes_returned: self.blocks_freed.load(Relaxed) * block_bytes as u64
                + self.heap_returned.load(Relaxed),
            high_water: self.config.high_water as u64,
            thread_caches: g.locals.len() as u64,
            idle_trims: g.idle_trims,
        }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Normally `kill` already emptied the pool. A `Shared` can also die
        // without `kill` only if its pool never existed as a `Pool` (not
        // possible through the public API); free what is left regardless.
        let blocks = {
            let mut g = lock(&self.global);
            g.free.clear();
            mem::take(&mut g.blocks)
        };
        Doomed(blocks).destroy();
    }
}
