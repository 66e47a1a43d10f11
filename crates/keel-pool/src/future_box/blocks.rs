//! Size-class blocks and each thread's cache of free ones.
//!
//! A block is raw memory of one class size (64 B, 128 B, … 16 KiB), aligned
//! to [`BLOCK_ALIGN`]. A free block sits in its thread's list for that class,
//! linked through its own first word, so the cache needs no memory of its
//! own and taking or returning a block is a pointer swap:
//!
//! ```text
//!   CACHE (thread-local, const-initialised):
//!     lists[class]: head ──► [next ─┼──────] ──► [next ─┼──────] ──► null
//!                   len  = 2           free block          free block
//! ```
//!
//! Statistics are counted per thread in plain cells on the hot path and
//! folded into process-wide atomics every [`FOLD_EVERY`] operations, on
//! every allocator call, on trim and at thread exit.

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Alignment of every class block: what `malloc` gives for free on 64-bit
/// targets (`max_align_t`), and enough for all but SIMD- or cache-line-aligned
/// futures, which get an exact allocation instead.
pub(super) const BLOCK_ALIGN: usize = 16;
/// The smallest class.
const MIN_BLOCK: usize = 64;
/// The largest class; larger futures get an exact allocation.
pub(super) const MAX_BLOCK: usize = 16 * 1024;
/// Classes: 64, 128, 256, 512, 1 Ki, 2 Ki, 4 Ki, 8 Ki, 16 Ki bytes.
const CLASSES: usize = (MAX_BLOCK / MIN_BLOCK).trailing_zeros() as usize + 1;

/// A thread caches at most this many free blocks of one class…
pub(super) const MAX_CACHED_BLOCKS: usize = 8;
/// …and at most this many bytes of one class (but at least one block: so
/// 4 blocks of 2 KiB, one of 8 or 16 KiB). A thread caches at most about
/// 64 KiB over all classes, and only in the classes it uses: enough for a
/// server's calls to reuse their blocks, too little to keep a burst's.
pub(super) const MAX_CACHED_BYTES: usize = 8 * 1024;
/// Hot-path operations a thread counts before publishing its counters.
const FOLD_EVERY: u32 = 64;

/// The size of a block of `class`.
pub(super) const fn class_size(class: usize) -> usize {
    MIN_BLOCK << class
}

const fn layout(class: usize) -> Layout {
    match Layout::from_size_align(class_size(class), BLOCK_ALIGN) {
        Ok(l) => l,
        Err(_) => panic!("class sizes are powers of two up to 16 KiB"),
    }
}

/// Blocks of `class` a thread keeps: the byte bound's share, at least one
/// (so a future of any class is served from the cache in steady state).
const fn limit(class: usize) -> u32 {
    let by_bytes = MAX_CACHED_BYTES / (MIN_BLOCK << class);
    let n = if by_bytes < MAX_CACHED_BLOCKS {
        by_bytes
    } else {
        MAX_CACHED_BLOCKS
    };
    if n == 0 { 1 } else { n as u32 }
}

const LAYOUTS: [Layout; CLASSES] = {
    let mut l = [layout(0); CLASSES];
    let mut c = 0;
    while c < CLASSES {
        l[c] = layout(c);
        c += 1;
    }
    l
};

const LIMITS: [u32; CLASSES] = {
    let mut l = [0; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        l[c] = limit(c);
        c += 1;
    }
    l
};

/// The class holding `size` bytes (`1 ..= MAX_BLOCK`).
pub(super) const fn class_of(size: usize) -> usize {
    if size <= MIN_BLOCK {
        0
    } else {
        (size.next_power_of_two().trailing_zeros() - MIN_BLOCK.trailing_zeros()) as usize
    }
}

// Process-wide counters (rule R4). `BLOCKS_CACHED`/`BYTES_CACHED` are sums of
// what each thread last published, kept with wrapping adds of differences.
static BLOCKS_CACHED: AtomicU64 = AtomicU64::new(0);
static BYTES_CACHED: AtomicU64 = AtomicU64::new(0);
static BLOCKS_ALLOCATED: AtomicU64 = AtomicU64::new(0);
static BLOCKS_REUSED: AtomicU64 = AtomicU64::new(0);
static BLOCKS_FREED: AtomicU64 = AtomicU64::new(0);
static EXACT_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// What a free block holds: the link to the next free block of its list.
struct FreeBlock {
    next: *mut FreeBlock,
}

struct ClassList {
    head: Cell<*mut FreeBlock>,
    len: Cell<u32>,
}

/// One thread's free blocks and unpublished counters.
struct ThreadCache {
    lists: [ClassList; CLASSES],
    /// Pops and pushes since the last fold.
    unfolded: Cell<u32>,
    /// Blocks reused since the last fold.
    reused: Cell<u64>,
    /// What this thread last added to `BLOCKS_CACHED` and `BYTES_CACHED`.
    published_blocks: Cell<u64>,
    published_bytes: Cell<u64>,
}

thread_local! {
    static CACHE: ThreadCache = const {
        ThreadCache {
            lists: [const {
                ClassList { head: Cell::new(ptr::null_mut()), len: Cell::new(0) }
            }; CLASSES],
            unfolded: Cell::new(0),
            reused: Cell::new(0),
            published_blocks: Cell::new(0),
            published_bytes: Cell::new(0),
        }
    };
}

// Every method below runs no user code and does not re-enter the cache, so
// the `Cell`s are never observed half-updated.
impl ThreadCache {
    #[inline]
    fn pop(&self, class: usize) -> Option<NonNull<u8>> {
        let list = &self.lists[class];
        let block = NonNull::new(list.head.get())?;
        // SAFETY: a listed block is a free block of this class, owned by this
        // list alone (it left every `FutureBox` when pushed), whose first word
        // `push` initialised with a `FreeBlock`.
        list.head.set(unsafe { block.as_ptr().read().next });
        list.len.set(list.len.get() - 1);
        self.reused.set(self.reused.get() + 1);
        self.tick();
        Some(block.cast())
    }

    /// Lists `block` unless the class is full; `false` leaves it to the caller.
    #[inline]
    fn push(&self, class: usize, block: NonNull<u8>) -> bool {
        let list = &self.lists[class];
        if list.len.get() >= LIMITS[class] {
            return false;
        }
        let block = block.cast::<FreeBlock>();
        // SAFETY: the caller gives up a block of this class (at least 64
        // bytes, 16-aligned) that holds nothing live: room and alignment for
        // one pointer, and nobody else will read or write it until popped.
        unsafe {
            block.as_ptr().write(FreeBlock {
                next: list.head.get(),
            })
        };
        list.head.set(block.as_ptr());
        list.len.set(list.len.get() + 1);
        self.tick();
        true
    }

    #[inline]
    fn tick(&self) {
        let n = self.unfolded.get() + 1;
        if n >= FOLD_EVERY {
            self.fold();
        } else {
            self.unfolded.set(n);
        }
    }

    /// Publishes this thread's counters to the process-wide ones.
    #[cold]
    fn fold(&self) {
        let (mut blocks, mut bytes) = (0u64, 0u64);
        for (class, list) in self.lists.iter().enumerate() {
            let n = u64::from(list.len.get());
            blocks += n;
            bytes += n * LAYOUTS[class].size() as u64;
        }
        BLOCKS_CACHED.fetch_add(blocks.wrapping_sub(self.published_blocks.get()), Relaxed);
        BYTES_CACHED.fetch_add(bytes.wrapping_sub(self.published_bytes.get()), Relaxed);
        BLOCKS_REUSED.fetch_add(self.reused.get(), Relaxed);
        self.published_blocks.set(blocks);
        self.published_bytes.set(bytes);
        self.reused.set(0);
        self.unfolded.set(0);
    }

    /// Gives every cached block back to the allocator; returns how many.
    fn trim(&self) -> usize {
        let mut freed = 0;
        for (class, list) in self.lists.iter().enumerate() {
            let mut p = list.head.replace(ptr::null_mut());
            list.len.set(0);
            while !p.is_null() {
                // SAFETY: as in `pop`: a free block of this class, now
                // unlisted, so this loop is its only owner; it was allocated
                // with `LAYOUTS[class]`, and is read before it is freed.
                unsafe {
                    let next = p.read().next;
                    alloc::dealloc(p.cast(), LAYOUTS[class]);
                    p = next;
                }
                freed += 1;
            }
        }
        BLOCKS_FREED.fetch_add(freed as u64, Relaxed);
        self.fold();
        freed
    }
}

impl Drop for ThreadCache {
    /// At thread exit the cache hands its blocks back to the allocator. Boxes
    /// dropped later in this thread's teardown find the cache gone and free
    /// their block directly.
    fn drop(&mut self) {
        self.trim();
    }
}

/// A block of `class` for a new future: from this thread's cache if it has
/// one, else from the allocator.
#[inline]
pub(super) fn take(class: usize) -> NonNull<u8> {
    match CACHE.try_with(|c| c.pop(class)) {
        Ok(Some(block)) => block,
        _ => fresh(class),
    }
}

#[cold]
#[inline(never)]
fn fresh(class: usize) -> NonNull<u8> {
    BLOCKS_ALLOCATED.fetch_add(1, Relaxed);
    let _ = CACHE.try_with(ThreadCache::fold);
    alloc_exact(LAYOUTS[class])
}

/// Takes back a block of `class` whose future has been dropped: into this
/// thread's cache if there is room, else to the allocator.
///
/// # Safety
/// `block` must come from [`take`] with the same `class`, hold nothing live,
/// and not be used again by the caller.
#[inline]
pub(super) unsafe fn give(class: usize, block: NonNull<u8>) {
    if !matches!(CACHE.try_with(|c| c.push(class, block)), Ok(true)) {
        BLOCKS_FREED.fetch_add(1, Relaxed);
        let _ = CACHE.try_with(ThreadCache::fold);
        // SAFETY: per the contract, `block` was allocated with `LAYOUTS[class]`
        // (by `fresh`; blocks in caches all come from there) and is ours.
        unsafe { alloc::dealloc(block.as_ptr(), LAYOUTS[class]) };
    }
}

/// An allocation of exactly `layout` (not cached: for futures that fit no
/// class, and for fresh class blocks).
pub(super) fn alloc_exact(layout: Layout) -> NonNull<u8> {
    debug_assert!(layout.size() > 0);
    // SAFETY: callers pass a layout of non-zero size (zero-sized futures get
    // no memory at all).
    let p = unsafe { alloc::alloc(layout) };
    NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

/// Counts an exact allocation for a future that fits no class.
pub(super) fn count_exact() {
    EXACT_ALLOCATIONS.fetch_add(1, Relaxed);
}

/// Statistics of [`FutureBox`](super::FutureBox) memory, process-wide, for
/// the console (rule R4).
///
/// Threads publish their counters every 64 operations, on every allocator
/// call, on trim and at exit, and [`future_box_stats`] publishes the calling
/// thread's first; so at rest a figure is exact for the calling thread and
/// off by fewer than 64 operations for each other busy thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FutureBoxStats {
    /// Free blocks in thread caches, all threads.
    pub blocks_cached: u64,
    /// Bytes of those blocks.
    pub bytes_cached: u64,
    /// Class blocks taken from the allocator, ever.
    pub blocks_allocated: u64,
    /// Boxes served from a thread cache (no allocator call), ever.
    pub blocks_reused: u64,
    /// Class blocks given back to the allocator (cache full, trim, thread
    /// exit), ever.
    pub blocks_freed: u64,
    /// Futures too large (over 16 KiB) or too aligned (over 16) for a class,
    /// allocated and freed exactly, never cached; ever.
    pub exact_allocations: u64,
}

/// The process-wide [`FutureBoxStats`].
pub fn future_box_stats() -> FutureBoxStats {
    let _ = CACHE.try_with(ThreadCache::fold);
    FutureBoxStats {
        blocks_cached: BLOCKS_CACHED.load(Relaxed),
        bytes_cached: BYTES_CACHED.load(Relaxed),
        blocks_allocated: BLOCKS_ALLOCATED.load(Relaxed),
        blocks_reused: BLOCKS_REUSED.load(Relaxed),
        blocks_freed: BLOCKS_FREED.load(Relaxed),
        exact_allocations: EXACT_ALLOCATIONS.load(Relaxed),
    }
}

/// Gives the calling thread's cached [`FutureBox`](super::FutureBox) blocks
/// back to the allocator (after a peak, say); returns how many. Other
/// threads keep theirs until they exit or trim.
pub fn trim_future_boxes() -> usize {
    CACHE.try_with(ThreadCache::trim).unwrap_or(0)
}

/// Free blocks of each class in the calling thread's cache.
#[cfg(test)]
pub(super) fn thread_cached() -> [u32; CLASSES] {
    CACHE.with(|c| std::array::from_fn(|class| c.lists[class].len.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_powers_of_two_from_64_to_16k() {
        assert_eq!(CLASSES, 9);
        assert_eq!(class_of(1), 0);
        assert_eq!(class_of(64), 0);
        assert_eq!(class_of(65), 1);
        assert_eq!(class_of(128), 1);
        assert_eq!(class_of(129), 2);
        assert_eq!(class_of(MAX_BLOCK), CLASSES - 1);
        for (class, l) in LAYOUTS.iter().enumerate() {
            assert_eq!(l.size(), 64 << class);
            assert_eq!(l.align(), BLOCK_ALIGN);
        }
        assert_eq!(LIMITS[0], 8);
        assert_eq!(LIMITS[4], 8); // 1 KiB x 8 = 8 KiB
        assert_eq!(LIMITS[5], 4);
        assert_eq!(LIMITS[6], 2);
        assert_eq!(LIMITS[7], 1);
        assert_eq!(LIMITS[8], 1); // at least one
    }

    #[test]
    fn a_full_class_spills_to_the_allocator_and_trim_empties_the_cache() {
        std::thread::spawn(|| {
            let blocks: Vec<_> = (0..100).map(|_| take(3)).collect();
            for b in blocks {
                // SAFETY: taken from class 3 just above, holds nothing.
                unsafe { give(3, b) };
            }
            assert_eq!(thread_cached()[3], 8);
            assert_eq!(trim_future_boxes(), 8);
            assert_eq!(thread_cached(), [0; CLASSES]);
        })
        .join()
        .expect("thread");
    }
}
