//! A thread's cache of free objects for one pool: the fast path.
//!
//! `get` pops a pointer and `put` pushes one; neither takes a lock nor does an
//! atomic read-modify-write. When the cache runs dry it takes half a cache's
//! worth from the global list in one locked move; when it overflows it gives
//! half back the same way.

use crate::Reset;
use crate::shared::{Block, Doomed, LocalStats, Shared, SlotPtr};
use crate::sync::Arc;

use std::ptr::NonNull;
use std::sync::atomic::Ordering::Relaxed;

pub(crate) struct LocalCache<T: Reset + Send> {
    free: Vec<SlotPtr<T>>,
    /// Copy of `shared.local_capacity`, next to `free`.
    capacity: usize,
    /// Counters, in an allocation of their own: other threads read them
    /// (through the shared state's list) while this thread holds
    /// `&mut LocalCache`, so they must not live inside it.
    stats: NonNull<LocalStats>,
    pub(crate) shared: Arc<Shared<T>>,
}

impl<T: Reset + Send> LocalCache<T> {
    /// A new cache, listed in the shared state until it drops.
    pub(crate) fn new(shared: Arc<Shared<T>>) -> Box<Self> {
        let stats = NonNull::from(Box::leak(Box::new(LocalStats::default())));
        // SAFETY: `stats` lives until `Drop`, which unlists it first
        // (`flush_local`) and then frees it.
        unsafe { shared.register_local(stats) };
        Box::new(LocalCache {
            free: Vec::with_capacity(shared.local_capacity),
            capacity: shared.local_capacity,
            stats,
            shared,
        })
    }

    #[inline]
    fn stats(&self) -> &LocalStats {
        // SAFETY: allocated in `new`, freed only in `drop`; only shared
        // references to it (all atomics) are ever made.
        unsafe { self.stats.as_ref() }
    }

    /// Takes a free object: from this cache, else a batch from the global
    /// list. `None` means the pool has no free object at all; the caller
    /// builds a block (user code) outside any borrow and calls [`adopt`].
    #[inline]
    pub(crate) fn get(&mut self) -> Option<SlotPtr<T>> {
        let p = match self.free.pop() {
            Some(p) => p,
            None => self.refill()?,
        };
        LocalStats::bump(&self.stats().gets);
        Some(p)
    }

    #[cold]
    fn refill(&mut self) -> Option<SlotPtr<T>> {
        let moved = self.shared.refill(&mut self.free, self.capacity / 2);
        self.note_moved_in(moved as i64);
        self.free.pop()
    }

    /// Takes one object of a freshly built block; the rest of half a cache
    /// stays here, the remainder goes to the global list.
    pub(crate) fn adopt(&mut self, block: NonNull<Block<T>>) -> SlotPtr<T> {
        let before = self.free.len();
        self.shared
            .adopt(block, &mut self.free, (self.capacity / 2).max(1));
        self.note_moved_in((self.free.len() - before) as i64);
        let p = self.free.pop().expect("adopt moved at least one slot here");
        LocalStats::bump(&self.stats().gets);
        p
    }

    /// Returns an (already reset) object if the cache has room; a full cache
    /// hands it back for [`put_spilling`](Self::put_spilling). Kept small so
    /// the common case inlines to a push and a counter store.
    #[inline]
    pub(crate) fn try_put(&mut self, p: SlotPtr<T>) -> Result<(), SlotPtr<T>> {
        if self.free.len() >= self.capacity {
            return Err(p);
        }
        self.free.push(p);
        LocalStats::bump(&self.stats().puts);
        Ok(())
    }

    /// Returns an object to a full cache: half the cache goes to the global
    /// list first. The caller destroys what the spill trimmed, outside any
    /// borrow.
    #[cold]
    pub(crate) fn put_spilling(&mut self, p: SlotPtr<T>) -> Doomed<T> {
        let doomed = self.give_back(self.capacity / 2);
        self.free.push(p);
        LocalStats::bump(&self.stats().puts);
        doomed
    }

    /// Hands every cached object back to the global list (before a trim).
    pub(crate) fn drain(&mut self) -> Doomed<T> {
        self.give_back(0)
    }

    /// Moves `free[keep..]` to the global list.
    fn give_back(&mut self, keep: usize) -> Doomed<T> {
        let out = self.free.len().saturating_sub(keep);
        let doomed = self.shared.spill(&mut self.free, keep);
        self.note_moved_in(-(out as i64));
        doomed
    }

    /// Objects cached = moved in - moved out + puts - gets; the first two
    /// change only on these cold paths, so the fast path stores one counter.
    fn note_moved_in(&self, n: i64) {
        let c = &self.stats().moved_in;
        c.store(c.load(Relaxed).wrapping_add(n as u64), Relaxed);
    }
}

impl<T: Reset + Send> Drop for LocalCache<T> {
    fn drop(&mut self) {
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
