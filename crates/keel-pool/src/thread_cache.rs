//! Where a pool finds the calling thread's cache: in the process-wide table
//! every pool shares, or in a thread-local of its own.
//!
//! ```text
//!   Pool<T> (TableCache)                     Pool<T, SpanCache> (pool! macro)
//!   ───────────────────                      ──────────────────────────────
//!   OnceLock → uid, index                    SpanCache's own thread_local
//!   TABLE[index] → (uid?) → Box<LocalCache>  └─ Option<LocalCache<T>> inline
//!   (see `tls`)                                 get = pop, put = push
//! ```
//!
//! A generic pool cannot declare a `thread_local!` of its own (the macro
//! needs a concrete type), so [`Pool<T>`](crate::Pool) finds its caches
//! through the table in `tls`: a load of the pool's index and uid, a
//! thread-local array lookup and a compare on every get and put. A pool that
//! is a `static` can do better: the [`pool!`](crate::pool) macro declares,
//! next to the static, a type that owns a `thread_local!` holding that
//! pool's cache inline. Get and put then reach the cache with one
//! thread-local access whose address is known at compile time, and do not
//! look at the pool itself at all; only the cold paths (an empty or full
//! cache, an idle check, a first use on a thread) do.
//!
//! Both kinds hold the same [`LocalCache`], so everything else is shared:
//! objects move to and from the global list in the same batches, idle checks
//! and trimming work the same way, a thread's cache is listed for the pool's
//! statistics, and when the thread exits its thread-local is dropped and the
//! cache hands its objects back to the global list.

use std::cell::UnsafeCell;

use crate::Reset;
use crate::local::LocalCache;
use crate::shared::Shared;
use crate::sync::{Arc, LocalKey};

/// How a [`Pool`](crate::Pool) finds the calling thread's cache.
///
/// Two kinds exist: [`TableCache`], the default, for any pool, and the types
/// the [`pool!`](crate::pool) macro declares for one `static` pool each,
/// which give that pool a thread-local of its own (the fast path).
///
/// # Safety
/// A thread-local returned by [`key`](Self::key) must serve one pool only,
/// and that pool must live as long as any thread may use it: the
/// [`pool!`](crate::pool) macro guarantees both (it declares the type, the
/// thread-local and the `static` pool together). Implement it through the
/// macro.
pub unsafe trait ThreadCache<T: Reset + Send + 'static>: 'static {
    /// The pool's own thread-local, or `None` for the shared table.
    #[doc(hidden)]
    fn key() -> Option<&'static LocalKey<LocalSlot<T>>>;
}

/// The default [`ThreadCache`]: a process-wide table, one per thread, of
/// every pool's caches, indexed by pool. Works for any pool (locals, fields,
/// generic code); a `static` pool is faster with [`pool!`](crate::pool).
#[derive(Debug)]
pub enum TableCache {}

// SAFETY: `key` returns no thread-local; the table checks the pool's uid.
unsafe impl<T: Reset + Send + 'static> ThreadCache<T> for TableCache {
    #[inline(always)]
    fn key() -> Option<&'static LocalKey<LocalSlot<T>>> {
        None
    }
}

/// One pool's cache on one thread, held inline in the pool's own
/// thread-local: empty until the thread first uses the pool, dropped (which
/// hands the objects back) when the thread exits.
#[doc(hidden)]
pub struct LocalSlot<T: Reset + Send + 'static> {
    cache: UnsafeCell<Option<LocalCache<T>>>,
}

impl<T: Reset + Send + 'static> LocalSlot<T> {
    /// An empty slot (a `const` thread-local initialiser).
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        LocalSlot {
            cache: UnsafeCell::new(None),
        }
    }

    /// Runs `f` on the cache if this thread has one.
    ///
    /// `f` must not reach this slot again (see [`with_cache`]).
    #[inline(always)]
    pub(crate) fn with_installed<R>(&self, f: impl FnOnce(&mut LocalCache<T>) -> R) -> Option<R> {
        // SAFETY: the slot is reachable only from its own thread, and no
        // caller re-enters it while `f` runs (every `f` in this crate only
        // moves pointers and counters; user code runs outside), so this is
        // the only reference to the cache.
        unsafe { (*self.cache.get()).as_mut() }.map(f)
    }
}

/// Runs `f` on this thread's cache in `key`, making one for `shared` first
/// if the thread has none. `None` when the thread-local is being destroyed
/// (thread exit); callers then use the global list directly.
///
/// `f` must not call back into the pool: the cache is handed out as `&mut`
/// without a borrow flag, as in `tls::with_cache`.
#[inline]
pub(crate) fn with_cache<T: Reset + Send + 'static, R>(
    key: &'static LocalKey<LocalSlot<T>>,
    shared: &Arc<Shared<T>>,
    f: impl FnOnce(&mut LocalCache<T>) -> R,
) -> Option<R> {
    key.try_with(|slot| {
        // SAFETY: as in `LocalSlot::with_installed`; making the cache runs
        // no user code (it registers counters under the pool's lock).
        let cache = unsafe { &mut *slot.cache.get() };
        let cache = match cache {
            Some(c) => c,
            None => cache.insert(LocalCache::new(shared.clone())),
        };
        f(cache)
    })
    .ok()
}

/// Declares `static` pools whose thread caches live in thread-locals of
/// their own: the fast path of keel-pool.
///
/// ```
/// use keel_pool::{Pool, Pooled, Reset};
///
/// #[derive(Default)]
/// pub struct Buffer { bytes: Vec<u8> }
///
/// impl Reset for Buffer {
///     fn reset(&mut self) { self.bytes.clear() }
/// }
///
/// keel_pool::pool! {
///     /// Buffers for the example.
///     pub static BUFFERS: Pool<Buffer, BufferCache> = Pool::new("buffers", Buffer::default);
/// }
///
/// let b: Pooled<'static, Buffer, BufferCache> = BUFFERS.get();
/// drop(b);
/// assert_eq!(BUFFERS.stats().gets, 1);
/// ```
///
/// Each declaration `$vis static NAME: Pool<T, Cache> = Pool::new(name, make);`
/// (or `Pool::with_config(name, make, config)`, with [`Pool`](crate::Pool)
/// in scope) declares the static `NAME`
/// and a type `Cache` (with the static's visibility) that owns `NAME`'s
/// thread-local; `Cache` is the second parameter of `NAME`'s
/// [`Pool`](crate::Pool) and [`Pooled`](crate::Pooled) types. Gets and puts
/// on the pool then cost one thread-local access and a pop or push; objects
/// still return from any thread, thread exit still hands a cache back, and
/// statistics and trimming are those of any pool.
#[macro_export]
macro_rules! pool {
    () => {};
    (
        $(#[$attr:meta])*
        $vis:vis static $name:ident: $pool:ident<$t:ty, $cache:ident> = $pool2:ident::new($pname:expr, $make:expr $(,)?);
        $($rest:tt)*
    ) => {
        $crate::pool!(@one [$(#[$attr])*] $vis $name, $pool, $t, $cache, $pname, $make, $crate::PoolConfig::DEFAULT);
        $crate::pool!($($rest)*);
    };
    (
        $(#[$attr:meta])*
        $vis:vis static $name:ident: $pool:ident<$t:ty, $cache:ident> = $pool2:ident::with_config($pname:expr, $make:expr, $config:expr $(,)?);
        $($rest:tt)*
    ) => {
        $crate::pool!(@one [$(#[$attr])*] $vis $name, $pool, $t, $cache, $pname, $make, $config);
        $crate::pool!($($rest)*);
    };
    (@one [$($attr:tt)*] $vis:vis $name:ident, $pool:ident, $t:ty, $cache:ident, $pname:expr, $make:expr, $config:expr) => {
        #[doc = concat!("The thread caches of [`", stringify!($name), "`], in a thread-local of their own (declared by `keel_pool::pool!`).")]
        #[derive(Debug)]
        $vis enum $cache {}

        // SAFETY: the thread-local is declared here, inside the impl of a
        // type declared just above for the static below alone.
        unsafe impl $crate::ThreadCache<$t> for $cache {
            #[inline(always)]
            fn key() -> ::core::option::Option<
                &'static $crate::__private::LocalKey<$crate::__private::LocalSlot<$t>>,
            > {
                $crate::__pool_thread_local!(SLOT, $t);
                ::core::option::Option::Some(&SLOT)
            }
        }

        $($attr)*
        $vis static $name: $pool<$t, $cache> =
            // SAFETY: `$cache` and its thread-local serve this static alone.
            unsafe { $crate::Pool::with_thread_cache($pname, $make, $config) };
    };
}

/// The thread-local of a [`pool!`] declaration (`loom`'s under `--cfg loom`).
#[cfg(not(loom))]
#[doc(hidden)]
#[macro_export]
macro_rules! __pool_thread_local {
    ($slot:ident, $t:ty) => {
        ::std::thread_local! {
            static $slot: $crate::__private::LocalSlot<$t> =
                const { $crate::__private::LocalSlot::new() };
        }
    };
}

/// The thread-local of a [`pool!`] declaration (`loom`'s under `--cfg loom`).
#[cfg(loom)]
#[doc(hidden)]
#[macro_export]
macro_rules! __pool_thread_local {
    ($slot:ident, $t:ty) => {
        $crate::__private::loom::thread_local! {
            static $slot: $crate::__private::LocalSlot<$t> = $crate::__private::LocalSlot::new();
        }
    };
}
