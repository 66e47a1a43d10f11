//! [`Pool`] and [`Pooled`]: the public face of the pool.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::Reset;
use crate::registry::{self, Registered, Registration};
use crate::shared::{Shared, Slot, SlotPtr};
use crate::stats::PoolStats;
use crate::sync::Arc;
use crate::tls;

/// How a pool sizes its blocks, caches and trimming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Free objects the global list may hold before whole free blocks are
    /// given back to the allocator automatically (it then trims down to half
    /// of this). Default 4096.
    pub high_water: usize,
    /// Objects a thread caches before giving half back; `None` picks from the
    /// object size (256 KiB per thread, between 32 and 256 objects).
    pub local_capacity: Option<usize>,
    /// Objects per block; `None` picks from the object size (16 KiB blocks,
    /// between 8 and 256 objects).
    pub block_objects: Option<usize>,
}

impl PoolConfig {
    /// The default configuration.
    pub const DEFAULT: PoolConfig = PoolConfig {
        high_water: 4096,
        local_capacity: None,
        block_objects: None,
    };
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A typed object pool.
///
/// `get` hands out a [`Pooled<T>`] that returns itself on drop, after
/// [`Reset::reset`]. A pool is usually a `static` (its constructor is
/// `const`); it may also be a local or a field, and then dropping it frees
/// every object it made (the borrow in `Pooled` guarantees none is in use).
pub struct Pool<T: Reset + Send + 'static> {
    name: &'static str,
    make: fn() -> T,
    config: PoolConfig,
    inner: OnceLock<Inner<T>>,
}

struct Inner<T: Reset + Send + 'static> {
    /// Copies of `shared.uid` and `shared.index`, next to the pointer, so
    /// the fast path need not follow it.
    uid: u64,
    index: usize,
    shared: Arc<Shared<T>>,
    listed: std::sync::Arc<Listed<T>>,
    _registration: Registration,
}

/// The pool as the process-wide registry sees it.
struct Listed<T: Reset + Send + 'static>(Arc<Shared<T>>);

impl<T: Reset + Send + 'static> Registered for Listed<T> {
    fn stats(&self) -> PoolStats {
        self.0.stats()
    }

    fn trim(&self) -> usize {
        trim_shared(&self.0)
    }

    fn trim_idle(&self, idle_for: std::time::Duration) -> usize {
        trim_idle_shared(&self.0, idle_for)
    }
}

fn trim_shared<T: Reset + Send + 'static>(shared: &Arc<Shared<T>>) -> usize {
    if let Some(d) = tls::with_cache(shared.uid, shared.index, shared, |c| c.drain()) {
        d.destroy();
    }
    let (n, doomed) = shared.trim(0);
    doomed.destroy();
    n
}

/// An idle pool gives back its free blocks, the calling thread's cached
/// objects first (they would pin the blocks they sit in).
fn trim_idle_shared<T: Reset + Send + 'static>(
    shared: &Arc<Shared<T>>,
    idle_for: std::time::Duration,
) -> usize {
    if !shared.idle_for(idle_for) {
        return 0;
    }
    if let Some(d) = tls::with_cache(shared.uid, shared.index, shared, |c| c.drain()) {
        d.destroy();
    }
    let (n, doomed) = shared.trim_idle(idle_for);
    doomed.destroy();
    n
}

static NEXT_UID: AtomicU64 = AtomicU64::new(1);
/// Free pool indices (reused) and the next fresh one.
static INDICES: std::sync::Mutex<(Vec<usize>, usize)> = std::sync::Mutex::new((Vec::new(), 0));

fn take_index() -> usize {
    let mut ix = INDICES.lock().unwrap_or_else(|e| e.into_inner());
    match ix.0.pop() {
        Some(i) => i,
        None => {
            ix.1 += 1;
            ix.1 - 1
        }
    }
}

fn release_index(i: usize) {
    INDICES.lock().unwrap_or_else(|e| e.into_inner()).0.push(i);
}

impl<T: Reset + Send + 'static> Pool<T> {
    /// A pool named `name` (shown on the console) whose objects are built by
    /// `make`, with the default configuration.
    pub const fn new(name: &'static str, make: fn() -> T) -> Self {
        Self::with_config(name, make, PoolConfig::DEFAULT)
    }

    /// A pool with an explicit configuration.
    pub const fn with_config(name: &'static str, make: fn() -> T, config: PoolConfig) -> Self {
        Pool {
            name,
            make,
            config,
            inner: OnceLock::new(),
        }
    }

    #[inline]
    fn inner(&self) -> &Inner<T> {
        self.inner.get_or_init(|| {
            let shared = Arc::new(Shared::new(
                NEXT_UID.fetch_add(1, Relaxed),
                take_index(),
                self.name,
                self.make,
                self.config,
            ));
            let listed = std::sync::Arc::new(Listed(shared.clone()));
            let weak: std::sync::Weak<dyn Registered> =
                std::sync::Arc::downgrade(&listed) as std::sync::Weak<dyn Registered>;
            let _registration = registry::register(shared.uid, weak);
            Inner {
                uid: shared.uid,
                index: shared.index,
                shared,
                listed,
                _registration,
            }
        })
    }

    /// Takes an object: a reset one from the pool, or a new one built by
    /// `make` when the pool has none free.
    #[inline]
    pub fn get(&self) -> Pooled<'_, T> {
        let inner = self.inner();
        let slot = match tls::with_cache(inner.uid, inner.index, &inner.shared, |c| c.get()) {
            Some(Some(p)) => p,
            _ => self.get_slow(),
        };
        Pooled { slot, pool: self }
    }

    #[cold]
    fn get_slow(&self) -> SlotPtr<T> {
        let inner = self.inner();
        let shared = &inner.shared;
        match tls::with_cache(inner.uid, inner.index, shared, |c| c.get()) {
            Some(Some(p)) => p,
            Some(None) => {
                // No free object anywhere: build a block with no borrow held
                // (`make` is user code and may use other pools).
                let block = shared.new_block();
                tls::with_cache(inner.uid, inner.index, shared, |c| c.adopt(block))
                    .unwrap_or_else(|| shared.adopt_one(block))
            }
            None => shared.get_global(),
        }
    }

    /// Gives every fully free block back to the allocator, after returning
    /// the calling thread's cached objects to the global list. Other threads
    /// keep their caches (at most a cache each). Returns the blocks freed.
    ///
    /// This is what brpc's pools cannot do: after a peak, memory goes back.
    pub fn trim(&self) -> usize {
        match self.inner.get() {
            Some(inner) => trim_shared(&inner.shared),
            None => 0,
        }
    }

    /// If no thread has drawn from the pool's global list (a cache refill
    /// or a new block) for at least `idle_for`, returns the calling
    /// thread's cached objects to it and gives every fully free block back
    /// to the allocator; a pool drawn from in that time is left alone.
    /// Other threads keep
    /// their caches (at most a cache each, and the blocks those objects
    /// sit in). Returns the blocks freed. See
    /// [`trim_idle_all`](crate::trim_idle_all).
    pub fn trim_idle(&self, idle_for: std::time::Duration) -> usize {
        match self.inner.get() {
            Some(inner) => trim_idle_shared(&inner.shared, idle_for),
            None => 0,
        }
    }

    /// A snapshot of this pool's counters.
    pub fn stats(&self) -> PoolStats {
        match self.inner.get() {
            Some(inner) => inner.listed.stats(),
            None => PoolStats {
                name: self.name,
                object_size: std::mem::size_of::<T>(),
                high_water: self.config.high_water as u64,
                ..PoolStats::default()
            },
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Takes back an object given out by [`Pooled::into_raw`].
    ///
    /// # Safety
    /// `ptr` must come from `Pooled::into_raw` on a `Pooled` of this same
    /// pool, and must not be used after this call.
    pub unsafe fn from_raw(&self, ptr: NonNull<T>) -> Pooled<'_, T> {
        // `value` is the first field of the `repr(C)` slot, so the object's
        // address is the slot's address.
        Pooled {
            slot: SlotPtr(ptr.cast::<Slot<T>>()),
            pool: self,
        }
    }
}

impl<T: Reset + Send + 'static> Drop for Pool<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.shared.kill().destroy();
            release_index(inner.shared.index);
        }
    }
}

impl<T: Reset + Send + 'static> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish()
    }
}

/// An object on loan from a [`Pool`]; returns to it (reset) when dropped.
pub struct Pooled<'a, T: Reset + Send + 'static> {
    slot: SlotPtr<T>,
    pool: &'a Pool<T>,
}

// SAFETY: a `Pooled` owns its object exclusively; sharing `&Pooled` shares
// `&T`, which is fine for `T: Sync`.
unsafe impl<T: Reset + Send + Sync + 'static> Sync for Pooled<'_, T> {}

impl<'a, T: Reset + Send + 'static> Pooled<'a, T> {
    /// Detaches the object from RAII for intrusive users; give it back with
    /// [`Pool::from_raw`]. Until then it counts as live.
    pub fn into_raw(this: Self) -> NonNull<T> {
        let ptr = this.slot.0.cast::<T>();
        std::mem::forget(this);
        ptr
    }

    /// The pool this object returns to.
    pub fn pool(this: &Self) -> &'a Pool<T> {
        this.pool
    }
}

impl<T: Reset + Send + 'static> Deref for Pooled<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the slot's block lives while the pool does (the borrow
        // `'a` guarantees it), its value is always initialised, and this
        // `Pooled` is the slot's only user until it drops.
        unsafe { &*(*self.slot.0.as_ptr()).value.get() }
    }
}

impl<T: Reset + Send + 'static> DerefMut for Pooled<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes the access unique.
        unsafe { &mut *(*self.slot.0.as_ptr()).value.get() }
    }
}

impl<T: Reset + Send + 'static> Drop for Pooled<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // Reset first, holding no pool state: it is user code and may return
        // other pooled objects, even to this same pool.
        (**self).reset();
        let heap = (**self).heap_bytes();
        let slot = self.slot;
        // SAFETY: this `Pooled` owns the slot until the put below, and its
        // pool is alive (borrowed).
        unsafe { slot.set_heap(heap) };
        let inner = self.pool.inner();
        if let Some(Ok(())) = tls::with_cache(inner.uid, inner.index, &inner.shared, |c| {
            c.try_put(slot, heap)
        }) {
            return;
        }
        put_slow(inner, slot, heap);
    }
}

/// A put that found the cache full, due for its idle check, or unavailable.
#[cold]
#[inline(never)]
fn put_slow<T: Reset + Send + 'static>(inner: &Inner<T>, slot: SlotPtr<T>, heap: usize) {
    let shared = &inner.shared;
    let doomed = match tls::with_cache(inner.uid, inner.index, shared, |c| {
        match c.try_put(slot, heap) {
            Ok(()) => crate::shared::Doomed::none(),
            Err(slot) => c.put_cold(slot, heap),
        }
    }) {
        Some(d) => d,
        None => shared.put_global(slot),
    };
    doomed.destroy();
}

impl<T: Reset + Send + fmt::Debug + 'static> fmt::Debug for Pooled<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}
