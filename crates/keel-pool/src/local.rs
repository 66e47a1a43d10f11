//! A thread's cache of free objects for one pool: the fast path.
//!
//! `get` pops a pointer and `put` pushes one; neither takes a lock nor does an
//! atomic read-modify-write. When the cache runs dry it takes half a cache's
//! worth from the global list in one locked move; when it overflows it gives
//! half back the same way.
//!
//! Every [`IDLE_CHECK_PUTS`](crate::shared::IDLE_CHECK_PUTS) puts the cache
//! makes an *idle check* (in the cold path): the objects it
//! did not touch during the whole interval (the fewest it held, its low
//! mark) go back to the global list, and the global list counts the check as
//! a tick of its own idleness. A cache that serves a steady trickle of work
//! thus keeps what that work needs, not what an old burst left behind.

use crate::Reset;
use crate::shared::{Block, Doomed, LocalStats, Shared, SlotPtr};
use crate::sync::Arc;

use std::ptr::NonNull;
use std::sync::atomic::Ordering::{Relaxed, Release};

#[doc(hidden)]
pub struct LocalCache<T: Reset + Send> {
    /// The free objects' buffer. Its first `stats.len` entries are the
    /// cache's objects; the `Vec`'s own length is brought up to date
    /// (`sync`) only on the cold paths, so the fast path keeps one length,
    /// the published one.
    free: Vec<SlotPtr<T>>,
    /// Copy of `shared.local_capacity`, next to `free`.
    capacity: usize,
    /// `idle_check_puts` (rounded up to a power of two) in the puts' half
    /// of [`LocalStats::len_puts`]: a put whose new word reaches it makes
    /// the idle check, so the check costs the fast path one compare on the
    /// word it loads anyway.
    check_at: u64,
    /// The fewest objects `free` held since the last idle check: those at
    /// the bottom of the stack went unused for the whole interval.
    low: usize,
    /// Counters, in an allocation of their own: other threads read them
    /// (through the shared state's list) while this thread holds
    /// `&mut LocalCache`, so they must not live inside it.
    stats: NonNull<LocalStats>,
    pub(crate) shared: Arc<Shared<T>>,
}

impl<T: Reset + Send> LocalCache<T> {
    /// A new cache, listed in the shared state until it drops.
    pub(crate) fn new(shared: Arc<Shared<T>>) -> Self {
        let stats = NonNull::from(Box::leak(Box::new(LocalStats::default())));
        // SAFETY: `stats` lives until `Drop`, which unlists it first
        // (`flush_local`) and then frees it.
        unsafe { shared.register_local(stats) };
        LocalCache {
            free: Vec::with_capacity(shared.local_capacity),
            capacity: shared.local_capacity,
            check_at: u64::from(shared.idle_check_puts.next_power_of_two()) << 32,
            low: 0,
            stats,
            shared,
        }
    }

    #[inline]
    fn stats(&self) -> &LocalStats {
        // SAFETY: allocated in `new`, freed only in `drop`; only shared
        // references to it (all atomics) are ever made.
        unsafe { self.stats.as_ref() }
    }

    /// Objects in the cache now (the published length).
    #[inline]
    fn len(&self) -> usize {
        LocalStats::len_of(self.stats().len_puts.load(Relaxed))
    }

    /// Brings the `Vec`'s length up to the published one, before a cold
    /// path works on the `Vec`.
    fn sync(&mut self) {
        let len = self.len();
        // SAFETY: entries below the published length are initialised (each
        // was pushed or moved in and not popped since), and the length never
        // exceeds the capacity the buffer was made with (see `push`).
        unsafe { self.free.set_len(len) };
    }

    /// Publishes the `Vec`'s length after a cold path changed it (`Release`:
    /// see [`LocalStats`]).
    fn publish(&self) {
        self.stats().set_len(self.free.len());
    }

    /// Takes a free object: from this cache, else a batch from the global
    /// list. `None` means the pool has no free object at all; the caller
    /// builds a block (user code) outside any borrow and calls [`adopt`].
    #[inline]
    pub(crate) fn get(&mut self) -> Option<SlotPtr<T>> {
        let word = self.stats().len_puts.load(Relaxed);
        let n = LocalStats::len_of(word);
        let p = if n > 0 {
            // SAFETY: entries below the published length are initialised
            // (see `sync`).
            let p = unsafe { *self.free.as_ptr().add(n - 1) };
            // The length is at least 1: no borrow from the puts' half.
            self.stats().len_puts.store(word - 1, Release);
            if n - 1 < self.low {
                self.low = n - 1;
            }
            p
        } else {
            self.refill()?
        };
        // The get is counted by the length alone (see `LocalStats`).
        let s = self.stats();
        // SAFETY: `p` was in this cache, so this thread holds it, and a cache
        // is only used while its pool lives.
        let heap = unsafe { p.take_heap() };
        if heap != 0 {
            LocalStats::add(&s.heap, -(heap as i64));
        }
        Some(p)
    }

    #[cold]
    fn refill(&mut self) -> Option<SlotPtr<T>> {
        self.sync();
        let before = self.free.len();
        let heap = self.shared.refill(&mut self.free, self.capacity / 2);
        self.note_heap_moved(heap as i64);
        let moved = self.free.len() - before;
        let p = self.free.pop();
        self.publish();
        LocalStats::add_release(&self.stats().moved_in, moved as u64);
        self.low = self.low.min(self.free.len());
        p
    }

    /// Takes one object of a freshly built block; the rest of half a cache
    /// stays here, the remainder goes to the global list.
    pub(crate) fn adopt(&mut self, block: NonNull<Block<T>>) -> SlotPtr<T> {
        self.sync();
        let before = self.free.len();
        let heap = self
            .shared
            .adopt(block, &mut self.free, (self.capacity / 2).max(1));
        self.note_heap_moved(heap as i64);
        self.publish();
        let moved = self.free.len() - before;
        LocalStats::add_release(&self.stats().moved_in, moved as u64);
        self.get().expect("adopt moved at least one slot here")
    }

    /// Returns an (already reset) object if the cache has room and no idle
    /// check is due; otherwise hands it back for
    /// [`put_cold`](Self::put_cold). Kept small so the common case inlines
    /// to a push and a few counter stores.
    #[inline]
    pub(crate) fn try_put(&mut self, p: SlotPtr<T>, heap: usize) -> Result<(), SlotPtr<T>> {
        // One load serves the room check, the idle check and the push.
        let word = self.stats().len_puts.load(Relaxed);
        let len = LocalStats::len_of(word);
        let next = word + LocalStats::PUT;
        if len >= self.capacity || self.check_due(next) {
            return Err(p);
        }
        self.push(p, heap, len, next);
        Ok(())
    }

    /// Whether the put that makes the cache's word `next` makes the idle
    /// check.
    #[inline]
    fn check_due(&self, next: u64) -> bool {
        next >= self.check_at
    }

    /// Pushes `p`, whose recorded heap is `heap`, onto the `len` objects
    /// the cache holds, and publishes `next`: the length and puts after it.
    #[inline]
    fn push(&mut self, p: SlotPtr<T>, heap: usize, len: usize, next: u64) {
        debug_assert_eq!(len, self.len());
        debug_assert_eq!(LocalStats::len_of(next), len + 1);
        debug_assert!(len < self.capacity && len < self.free.capacity());
        // SAFETY: callers push only while the cache holds fewer than
        // `capacity` objects, and `free` was made with room for `capacity`
        // and never shrinks, so the entry at `len` is allocated.
        unsafe { self.free.as_mut_ptr().add(len).write(p) };
        let s = self.stats();
        s.len_puts.store(next, Release);
        // Types that keep no heap (the default `heap_bytes`) skip this at
        // compile time.
        if heap != 0 {
            LocalStats::add(&s.heap, heap as i64);
        }
    }

    /// Returns an object when the cache is full (half of it goes to the
    /// global list first) or an idle check is due. The caller destroys what
    /// the global list trimmed, outside any borrow.
    #[cold]
    pub(crate) fn put_cold(&mut self, p: SlotPtr<T>, heap: usize) -> Doomed<T> {
        let due = self.check_due(self.stats().len_puts.load(Relaxed) + LocalStats::PUT);
        let mut doomed = Doomed::none();
        if due {
            doomed = self.idle_check();
        }
        if self.len() >= self.capacity {
            doomed.join(self.give_back(self.capacity / 2));
        }
        // The moves kept the puts' half: this put is counted on it.
        let word = self.stats().len_puts.load(Relaxed);
        self.push(p, heap, LocalStats::len_of(word), word + LocalStats::PUT);
        if due {
            // The next check comes `idle_check_puts` puts after this one.
            self.stats().roll_puts();
        }
        doomed
    }

    /// Gives back the objects unused since the last check and ticks the
    /// global list's idle clock.
    fn idle_check(&mut self) -> Doomed<T> {
        self.sync();
        let unused = self.low.min(self.free.len());
        let before = self.free.len();
        let (heap, doomed) = self.shared.idle_tick(&mut self.free, unused);
        self.note_heap_moved(-(heap as i64));
        self.note_moved_out(before);
        self.publish();
        self.low = self.free.len();
        doomed
    }

    /// Hands every cached object back to the global list (before a trim).
    pub(crate) fn drain(&mut self) -> Doomed<T> {
        self.give_back(0)
    }

    /// Moves `free[keep..]` to the global list.
    fn give_back(&mut self, keep: usize) -> Doomed<T> {
        self.sync();
        let before = self.free.len();
        let (heap, doomed) = self.shared.spill(&mut self.free, keep);
        self.note_heap_moved(-(heap as i64));
        self.note_moved_out(before);
        self.publish();
        self.low = self.low.min(self.free.len());
        doomed
    }

    /// Counts the objects a move out took from the `before` the cache
    /// held, before the new length is published (see [`LocalStats`]).
    fn note_moved_out(&self, before: usize) {
        let moved = before - self.free.len();
        LocalStats::add_release(&self.stats().moved_out, moved as u64);
    }

    /// The heap bytes of objects moved in (negative: out) go with them.
    fn note_heap_moved(&self, heap: i64) {
        LocalStats::add(&self.stats().heap, heap);
    }
}

impl<T: Reset + Send> Drop for LocalCache<T> {
    fn drop(&mut self) {
        self.sync();
        let stats = self.stats;
        // SAFETY: as in `stats()`; unlisted under the lock before the free
        // below, so no reader can still reach it.
        let doomed = self
            .shared
            .flush_local(&mut self.free, unsafe { stats.as_ref() });
        // SAFETY: allocated by `Box` in `new`, unlisted just now, freed once.
        drop(unsafe { Box::from_raw(stats.as_ptr()) });
        doomed.destroy();
    }
}
