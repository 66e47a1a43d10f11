//! A thread's cache of free objects for one pool: the fast path.
//!
//! `get` pops a pointer and `put` pushes one; neither takes a lock nor does an
//! atomic read-modify-write. When the cache runs dry it takes half a cache's
//! worth from the global list in one locked move; when it overflows it gives
//! half back the same way.

use crate::Reset;
use crate::shared::{Doomed, LocalStats, Shared, SlotPtr};
use crate::sync::Arc;

use std::sync::atomic::Ordering::Relaxed;

pub(crate) struct LocalCache<T: Reset + Send> {
    free: Vec<SlotPtr<T>>,
    stats: Arc<LocalStats>,
    pub(crate) shared: Arc<Shared<T>>,
}

impl<T: Reset + Send> LocalCache<T> {
    pub(crate) fn new(shared: Arc<Shared<T>>) -> Self {
        let stats = Arc::new(LocalStats::default());
        shared.register_local(&stats);
        LocalCache {
            free: Vec::with_capacity(shared.local_capacity),
            stats,
            shared,
        }
    }

    /// Takes a free object: from this cache, else a batch from the global
    /// list. `None` means the pool has no free object at all; the caller
    /// builds a block (user code) outside any borrow and calls [`adopt`].
    #[inline]
    pub(crate) fn get(&mut self) -> Option<SlotPtr<T>> {
        let p = match self.free.pop() {
            Some(p) => p,
            None => {
                let half = self.shared.local_capacity / 2;
                if self.shared.refill(&mut self.free, half) == 0 {
                    return None;
                }
                self.free.pop()?
            }
        };
        self.note_get();
        Some(p)
    }

    /// Takes one object of a freshly built block; the rest of half a cache
    /// stays here, the remainder goes to the global list.
    pub(crate) fn adopt(
        &mut self,
        block: std::ptr::NonNull<crate::shared::Block<T>>,
    ) -> SlotPtr<T> {
        let room = self.shared.local_capacity / 2;
        self.shared.adopt(block, &mut self.free, room.max(1));
        let p = self.free.pop().expect("adopt moved at least one slot here");
        self.note_get();
        p
    }

    /// Returns an (already reset) object.
    #[inline]
    pub(crate) fn put(&mut self, p: SlotPtr<T>) -> Doomed<T> {
        let doomed = if self.free.len() >= self.shared.local_capacity {
            let keep = self.shared.local_capacity / 2;
            self.shared.spill(&mut self.free, keep)
        } else {
            Doomed::none()
        };
        self.free.push(p);
        LocalStats::bump(&self.stats.puts);
        self.stats.cached.store(self.free.len(), Relaxed);
        doomed
    }

    /// Hands every cached object back to the global list (before a trim, and
    /// when the thread exits).
    pub(crate) fn drain(&mut self) -> Doomed<T> {
        let d = self.shared.spill(&mut self.free, 0);
        self.stats.cached.store(0, Relaxed);
        d
    }

    #[inline]
    fn note_get(&mut self) {
        LocalStats::bump(&self.stats.gets);
        self.stats.cached.store(self.free.len(), Relaxed);
    }
}

impl<T: Reset + Send> Drop for LocalCache<T> {
    fn drop(&mut self) {
        self.shared
            .flush_local(&mut self.free, &self.stats)
            .destroy();
    }
}
