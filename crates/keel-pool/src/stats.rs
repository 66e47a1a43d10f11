//! Pool statistics.

/// A snapshot of one pool's counters. Cheap to read: one lock of the pool's
/// global list and a sum over its thread caches.
///
/// Counters of other threads' caches are read without stopping them. While
/// the pool is busy, `gets` and `puts` never count more than were made:
/// `puts` misses at most the few in flight, and `gets` (derived from a
/// cache's other counters) at most the objects a cache is moving to or
/// from the global list at that moment, up to half a thread cache, so a
/// later snapshot may show a few fewer gets than an earlier one. The
/// counts of objects (`live`,
/// `cached`, `cached_local`) and `heap_bytes` may be off by up to half a
/// thread cache per working thread: objects that cache is moving to or from
/// the global list can be counted in both places or in neither. At rest a
/// snapshot is exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// The pool's name (for the console).
    pub name: &'static str,
    /// `size_of::<T>()`.
    pub object_size: usize,
    /// Objects handed out and not yet returned.
    pub live: u64,
    /// Free objects kept for reuse: `cached_global + cached_local`.
    pub cached: u64,
    /// Free objects in the global list.
    pub cached_global: u64,
    /// Free objects in thread caches.
    pub cached_local: u64,
    /// Blocks currently allocated.
    pub blocks: u64,
    /// Bytes the pool holds: its blocks, its bookkeeping, and
    /// [`heap_bytes`](Self::heap_bytes).
    pub bytes: u64,
    /// Heap bytes kept by the cached (free) objects beyond their slots, such
    /// as buffer capacity: the sum of [`Reset::heap_bytes`](crate::Reset::heap_bytes)
    /// as each returned. Part of `bytes`. Live objects' heap memory belongs
    /// to their users and is not counted.
    pub heap_bytes: u64,
    /// Objects handed out, ever.
    pub gets: u64,
    /// Objects returned, ever.
    pub puts: u64,
    /// Blocks allocated, ever.
    pub blocks_allocated: u64,
    /// Blocks given back to the allocator, ever.
    pub blocks_freed: u64,
    /// Bytes given back to the allocator, ever: the blocks freed, and the
    /// heap memory (buffers) of the cached objects in them.
    pub bytes_returned: u64,
    /// Cached objects above which whole free blocks are trimmed
    /// automatically.
    pub high_water: u64,
    /// Threads holding a cache for this pool.
    pub thread_caches: u64,
    /// Times the pool found itself idle and gave free blocks back without
    /// being asked (see the crate docs), ever.
    pub idle_trims: u64,
}
