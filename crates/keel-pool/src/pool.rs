//! [`Pool`] and [`Pooled`]: the public face of the pool.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::Reset;
use crate::local::LocalCache;
use crate::registry::{self, Registered, Registration};
use crate::shared::{Shared, Slot, SlotPtr};
use crate::stats::PoolStats;
use crate::sync::Arc;
use crate::thread_cache::{self, TableCache, ThreadCache};
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
///
/// `C` says where the pool finds the calling thread's cache: by default
/// ([`TableCache`]) in a table every pool shares; a `static` declared with
/// [`pool!`](crate::pool) has a thread-local of its own, which makes get and
/// put about twice as fast.
pub struct Pool<T: Reset + Send + 'static, C: ThreadCache<T> = TableCache> {
    name: &'static str,
    make: fn() -> T,
    config: PoolConfig,
    inner: OnceLock<Inner<T>>,
    _cache: PhantomData<fn() -> C>,
}

struct Inner<T: Reset + Send + 'static> {
    /// Copies of `shared.uid` and `shared.index`, next to the pointer, so
    /// the table's fast path need not follow it.
    uid: u64,
    index: usize,
    shared: Arc<Shared<T>>,
    listed: std::sync::Arc<dyn Registered>,
    _registration: Registration,
}

/// The pool as the process-wide registry sees it.
struct Listed<T: Reset + Send + 'static, C: ThreadCache<T>>(Arc<Shared<T>>, PhantomData<fn() -> C>);

impl<T: Reset + Send + 'static, C: ThreadCache<T>> Registered for Listed<T, C> {
    fn stats(&self) -> PoolStats {
        self.0.stats()
    }

    fn trim(&self) -> usize {
        trim_shared::<T, C>(&self.0)
    }

    fn trim_idle(&self, idle_for: std::time::Duration) -> usize {
        trim_idle_shared::<T, C>(&self.0, idle_for)
    }
}

/// Runs `f` on this thread's cache for `shared`, found the way `C` says
/// (made first if the thread has none). `None` while the thread's
/// thread-locals are being destroyed.
#[inline]
fn with_cache<T: Reset + Send + 'static, C: ThreadCache<T>, R>(
    uid: u64,
    index: usize,
    shared: &Arc<Shared<T>>,
    f: impl FnOnce(&mut LocalCache<T>) -> R,
) -> Option<R> {
    match C::key() {
        Some(key) => thread_cache::with_cache(key, shared, f),
        None => tls::with_cache(uid, index, shared, f),
    }
}

fn trim_shared<T: Reset + Send + 'static, C: ThreadCache<T>>(shared: &Arc<Shared<T>>) -> usize {
    if let Some(d) = with_cache::<T, C, _>(shared.uid, shared.index, shared, |c| c.drain()) {
        d.destroy();
    }
    let (n, doomed) = shared.trim(0);
    doomed.destroy();
    n
}

/// An idle pool gives back its free blocks, the calling thread's cached
/// objects first (they would pin the blocks they sit in).
fn trim_idle_shared<T: Reset + Send + 'static, C: ThreadCache<T>>(
    shared: &Arc<Shared<T>>,
    idle_for: std::time::Duration,
) -> usize {
    if !shared.idle_for(idle_for) {
        return 0;
    }
    if let Some(d) = with_cache::<T, C, _>(shared.uid, shared.index, shared, |c| c.drain()) {
        d.destroy();
    }
    let (n, doomed) = shared.trim_idle(idle_for);
    doomed.destroy();
    n
}

static NEXT_UID: AtomicU64 = AtomicU64::new(1);
/// The index of pools with a thread-local of their own: they take no place
/// in the table.
const NO_INDEX: usize = usize::MAX;
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
            _cache: PhantomData,
        }
    }
}

impl<T: Reset + Send + 'static, C: ThreadCache<T>> Pool<T, C> {
    /// A pool whose thread caches `C` holds; what [`pool!`](crate::pool)
    /// expands to.
    ///
    /// # Safety
    /// `C` serves this pool alone, and the pool is never dropped (a
    /// `static`): `C`'s thread-locals keep caches that point into it.
    #[doc(hidden)]
    pub const unsafe fn with_thread_cache(
        name: &'static str,
        make: fn() -> T,
        config: PoolConfig,
    ) -> Self {
        Pool {
            name,
            make,
            config,
            inner: OnceLock::new(),
            _cache: PhantomData,
        }
    }

    #[inline]
    fn inner(&self) -> &Inner<T> {
        self.inner.get_or_init(|| {
            let index = if C::key().is_some() {
                NO_INDEX
            } else {
                take_index()
            };
            let shared = Arc::new(Shared::new(
                NEXT_UID.fetch_add(1, Relaxed),
                index,
                self.name,
                self.make,
                self.config,
            ));
            let listed: std::sync::Arc<dyn Registered> =
                std::sync::Arc::new(Listed::<T, C>(shared.clone(), PhantomData));
            let weak: std::sync::Weak<dyn Registered> = std::sync::Arc::downgrade(&listed);
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
    pub fn get(&self) -> Pooled<'_, T, C> {
        let fast = match C::key() {
            // The pool's own thread-local: a cache there belongs to this
            // pool, so the pool itself is not even looked at.
            Some(key) => key
                .try_with(|slot| slot.with_installed(|c| c.get()))
                .ok()
                .flatten()
                .flatten(),
            None => {
                let inner = self.inner();
                tls::with_cache(inner.uid, inner.index, &inner.shared, |c| c.get()).flatten()
            }
        };
        let slot = match fast {
            Some(p) => p,
            None => self.get_slow(),
        };
        Pooled { slot, pool: self }
    }

    #[cold]
    #[inline(never)]
    fn get_slow(&self) -> SlotPtr<T> {
        let inner = self.inner();
        let shared = &inner.shared;
        match with_cache::<T, C, _>(inner.uid, inner.index, shared, |c| c.get()) {
            Some(Some(p)) => p,
            Some(None) => {
                // No free object anywhere: build a block with no borrow held
                // (`make` is user code and may use other pools).
                let block = shared.new_block();
                with_cache::<T, C, _>(inner.uid, inner.index, shared, |c| c.adopt(block))
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
            Some(inner) => trim_shared::<T, C>(&inner.shared),
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
            Some(inner) => trim_idle_shared::<T, C>(&inner.shared, idle_for),
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
    pub unsafe fn from_raw(&self, ptr: NonNull<T>) -> Pooled<'_, T, C> {
        // `value` is the first field of the `repr(C)` slot, so the object's
        // address is the slot's address.
        Pooled {
            slot: SlotPtr(ptr.cast::<Slot<T>>()),
            pool: self,
        }
    }
}

impl<T: Reset + Send + 'static, C: ThreadCache<T>> Drop for Pool<T, C> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.shared.kill().destroy();
            if inner.shared.index != NO_INDEX {
                release_index(inner.shared.index);
            }
        }
    }
}

impl<T: Reset + Send + 'static, C: ThreadCache<T>> fmt::Debug for Pool<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish()
    }
}

/// An object on loan from a [`Pool`]; returns to it (reset) when dropped.
pub struct Pooled<'a, T: Reset + Send + 'static, C: ThreadCache<T> = TableCache> {
    slot: SlotPtr<T>,
    pool: &'a Pool<T, C>,
}

// SAFETY: a `Pooled` owns its object exclusively; sharing `&Pooled` shares
// `&T`, which is fine for `T: Sync`.
unsafe impl<T: Reset + Send + Sync + 'static, C: ThreadCache<T>> Sync for Pooled<'_, T, C> {}

impl<'a, T: Reset + Send + 'static, C: ThreadCache<T>> Pooled<'a, T, C> {
    /// Detaches the object from RAII for intrusive users; give it back with
    /// [`Pool::from_raw`]. Until then it counts as live.
    pub fn into_raw(this: Self) -> NonNull<T> {
        let ptr = this.slot.0.cast::<T>();
        std::mem::forget(this);
        ptr
    }

    /// The pool this object returns to.
    pub fn pool(this: &Self) -> &'a Pool<T, C> {
        this.pool
    }
}

impl<T: Reset + Send + 'static, C: ThreadCache<T>> Deref for Pooled<'_, T, C> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the slot's block lives while the pool does (the borrow
        // `'a` guarantees it), its value is always initialised, and this
        // `Pooled` is the slot's only user until it drops.
        unsafe { &*(*self.slot.0.as_ptr()).value.get() }
    }
}

impl<T: Reset + Send + 'static, C: ThreadCache<T>> DerefMut for Pooled<'_, T, C> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes the access unique.
        unsafe { &mut *(*self.slot.0.as_ptr()).value.get() }
    }
}

impl<T: Reset + Send + 'static, C: ThreadCache<T>> Drop for Pooled<'_, T, C> {
    #[inline(always)]
    fn drop(&mut self) {
        // Reset first, holding no pool state: it is user code and may return
        // other pooled objects, even to this same pool.
        (**self).reset();
        let heap = (**self).heap_bytes();
        let slot = self.slot;
        // SAFETY: this `Pooled` owns the slot until the put below, and its
        // pool is alive (borrowed).
        unsafe { slot.set_heap(heap) };
        let done = match C::key() {
            // The pool's own thread-local: its cache is this pool's.
            Some(key) => key
                .try_with(|s| s.with_installed(|c| c.try_put(slot, heap)))
                .ok()
                .flatten(),
            None => {
                let inner = self.pool.inner();
                tls::with_cache(inner.uid, inner.index, &inner.shared, |c| {
                    c.try_put(slot, heap)
                })
            }
        };
        if let Some(Ok(())) = done {
            return;
        }
        put_slow::<T, C>(self.pool.inner(), slot, heap);
    }
}

/// A put that found the cache full, due for its idle check, or not made
/// yet on this thread, or the thread's caches gone (thread exit).
#[cold]
#[inline(never)]
fn put_slow<T: Reset + Send + 'static, C: ThreadCache<T>>(
    inner: &Inner<T>,
    slot: SlotPtr<T>,
    heap: usize,
) {
    let shared = &inner.shared;
    let doomed = match with_cache::<T, C, _>(inner.uid, inner.index, shared, |c| {
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

impl<T: Reset + Send + fmt::Debug + 'static, C: ThreadCache<T>> fmt::Debug for Pooled<'_, T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}
