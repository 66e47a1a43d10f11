//! Each thread's table of pool caches.
//!
//! A generic pool cannot declare its own `thread_local!`, so every thread has
//! one table, indexed by the pool's small `index`, whose entries point at a
//! boxed, type-erased [`LocalCache<T>`]. An entry also records the pool's
//! `uid`: indices are reused after a pool is dropped, uids never are, so a
//! stale entry is recognised and replaced.
//!
//! ```text
//!   thread-local TABLE: [ Entry{uid 7, cache *} | None | Entry{uid 9, cache *} ]
//!                              │                               │
//!                              ▼                               ▼
//!                     Box<LocalCache<Span>>          Box<LocalCache<Buf>>
//!                              │ Arc<Shared<Span>>             │
//! ```
//!
//! When the thread exits, the table's destructor drops every cache, and a
//! cache's `Drop` hands its objects and counters back to the shared pool:
//! nothing a thread cached is lost when it ends.

use std::cell::{Cell, RefCell};
use std::ptr::NonNull;

use crate::Reset;
use crate::local::LocalCache;
use crate::shared::Shared;
use crate::sync::Arc;

struct Entry {
    uid: u64,
    cache: NonNull<()>,
    drop_cache: unsafe fn(NonNull<()>),
}

struct Table {
    entries: RefCell<Vec<Option<Entry>>>,
}

impl Drop for Table {
    fn drop(&mut self) {
        // The fast index must not point at caches about to be freed.
        let _ = FAST.try_with(|f| f.iter().for_each(|e| e.set(EMPTY)));
        let entries = std::mem::take(self.entries.get_mut());
        for e in entries.into_iter().flatten() {
            // SAFETY: `cache` was produced by `install::<T>` together with the
            // matching `drop_cache::<T>`, and is dropped exactly once: here,
            // after being taken out of the table.
            unsafe { (e.drop_cache)(e.cache) };
        }
    }
}

/// Pools with an index below this are found through [`FAST`].
const FAST_SLOTS: usize = 32;
const EMPTY: (u64, *const ()) = (0, std::ptr::null());

thread_local! {
    static TABLE: Table = const { Table { entries: RefCell::new(Vec::new()) } };
    /// `(uid, cache)` of the first pools, by index: a copy of the table's
    /// entries with no lazy initialisation, no destructor and no borrow
    /// flag, so the fast path is one thread-local load and a compare. Uid 0
    /// is never assigned, so an empty slot never matches.
    static FAST: [Cell<(u64, *const ())>; FAST_SLOTS] =
        const { [const { Cell::new(EMPTY) }; FAST_SLOTS] };
}

/// # Safety
/// `p` must come from `install::<T>` and not have been dropped.
unsafe fn drop_cache<T: Reset + Send>(p: NonNull<()>) {
    // SAFETY: per the contract, `p` is a leaked `Box<LocalCache<T>>`.
    drop(unsafe { Box::from_raw(p.cast::<LocalCache<T>>().as_ptr()) });
}

/// Runs `f` on this thread's cache for `shared` (whose `uid` and `index`
/// the caller passes from its own copy, saving a pointer chase). Returns
/// `None` when the thread's table is being destroyed; callers then use the
/// global list directly.
///
/// `f` must not call back into this module for the same pool: the cache is
/// handed out as `&mut` without a borrow flag. Every `f` in this crate only
/// moves pointers and counters (user code — `make`, `reset`, `drop` — runs
/// outside), so this holds by construction.
#[inline]
pub(crate) fn with_cache<T: Reset + Send + 'static, R>(
    uid: u64,
    index: usize,
    shared: &Arc<Shared<T>>,
    f: impl FnOnce(&mut LocalCache<T>) -> R,
) -> Option<R> {
    let fast = if index < FAST_SLOTS {
        FAST.try_with(|e| e[index].get()).unwrap_or(EMPTY)
    } else {
        EMPTY
    };
    let ptr = if fast.0 == uid {
        // SAFETY: only `install` stores non-null pointers here.
        unsafe { NonNull::new_unchecked(fast.1 as *mut ()) }
    } else {
        lookup(uid, index).or_else(|| install(shared))?
    };
    // SAFETY: the pointer was registered under `uid`; uids are unique per
    // `Shared<T>`, so it was installed by `install::<T>` and points at a live
    // `LocalCache<T>`. It is only freed by this thread (when
    // replaced by `install` for a different uid, which cannot happen inside
    // `f` since caches never call back into the table, or at thread exit,
    // which clears `FAST` first), so it outlives this call. No other
    // reference to it exists while `f` runs: the cache is reachable only
    // from this thread, and `f` does not re-enter (see above).
    let cache = unsafe { &mut *ptr.cast::<LocalCache<T>>().as_ptr() };
    Some(f(cache))
}

/// The table's cache for `uid` (pools beyond the fast slots).
fn lookup(uid: u64, index: usize) -> Option<NonNull<()>> {
    TABLE
        .try_with(|t| match t.entries.try_borrow().ok()?.get(index) {
            Some(Some(e)) if e.uid == uid => Some(e.cache),
            _ => None,
        })
        .ok()
        .flatten()
}

#[cold]
fn install<T: Reset + Send + 'static>(shared: &Arc<Shared<T>>) -> Option<NonNull<()>> {
    let ptr = NonNull::from(Box::leak(Box::new(LocalCache::new(shared.clone())))).cast::<()>();
    let entry = Entry {
        uid: shared.uid,
        cache: ptr,
        drop_cache: drop_cache::<T>,
    };
    let replaced = TABLE.try_with(|t| {
        let mut entries = t.entries.try_borrow_mut().ok()?;
        if entries.len() <= shared.index {
            entries.resize_with(shared.index + 1, || None);
        }
        let old = entries[shared.index].replace(entry);
        if shared.index < FAST_SLOTS {
            let _ = FAST.try_with(|f| f[shared.index].set((shared.uid, ptr.as_ptr())));
        }
        Some(old)
    });
    match replaced {
        Ok(Some(old)) => {
            if let Some(old) = old {
                // SAFETY: taken out of the table just now (and `FAST` now
                // points at the new cache); see `Table::drop`.
                unsafe { (old.drop_cache)(old.cache) };
            }
            Some(ptr)
        }
        _ => {
            // SAFETY: never entered the table; we still own it.
            unsafe { drop_cache::<T>(ptr) };
            None
        }
    }
}
