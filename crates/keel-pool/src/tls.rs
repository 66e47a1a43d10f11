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
//!                     RefCell<LocalCache<Span>>      RefCell<LocalCache<Buf>>
//!                              │ Arc<Shared<Span>>             │
//! ```
//!
//! When the thread exits, the table's destructor drops every cache, and a
//! cache's `Drop` hands its objects and counters back to the shared pool:
//! nothing a thread cached is lost when it ends.

use std::cell::RefCell;
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
        let entries = std::mem::take(self.entries.get_mut());
        for e in entries.into_iter().flatten() {
            // SAFETY: `cache` was produced by `install::<T>` together with the
            // matching `drop_cache::<T>`, and is dropped exactly once: here,
            // after being taken out of the table.
            unsafe { (e.drop_cache)(e.cache) };
        }
    }
}

thread_local! {
    static TABLE: Table = const { Table { entries: RefCell::new(Vec::new()) } };
}

/// # Safety
/// `p` must come from `install::<T>` and not have been dropped.
unsafe fn drop_cache<T: Reset + Send>(p: NonNull<()>) {
    // SAFETY: per the contract, `p` is a leaked `Box<RefCell<LocalCache<T>>>`.
    drop(unsafe { Box::from_raw(p.cast::<RefCell<LocalCache<T>>>().as_ptr()) });
}

/// Runs `f` on this thread's cache for `shared`. Returns `None` when the
/// thread's table is being destroyed or the cache is already borrowed
/// (reentrancy); callers then use the global list directly.
#[inline]
pub(crate) fn with_cache<T: Reset + Send + 'static, R>(
    shared: &Arc<Shared<T>>,
    f: impl FnOnce(&mut LocalCache<T>) -> R,
) -> Option<R> {
    let found = TABLE
        .try_with(|t| match t.entries.try_borrow().ok()?.get(shared.index) {
            Some(Some(e)) if e.uid == shared.uid => Some(e.cache),
            _ => None,
        })
        .ok()?;
    let ptr = match found {
        Some(p) => p,
        None => install(shared)?,
    };
    // SAFETY: the entry's uid equals `shared.uid`; uids are unique per
    // `Shared<T>`, so the entry was installed by `install::<T>` and points at
    // a live `RefCell<LocalCache<T>>`. It is only freed by this thread (when
    // replaced by `install` for a different uid, which cannot happen inside
    // `f` since caches never call back into the table, or at thread exit),
    // so it outlives this call.
    let cell = unsafe { &*ptr.cast::<RefCell<LocalCache<T>>>().as_ptr() };
    let mut cache = cell.try_borrow_mut().ok()?;
    Some(f(&mut cache))
}

#[cold]
fn install<T: Reset + Send + 'static>(shared: &Arc<Shared<T>>) -> Option<NonNull<()>> {
    let boxed = Box::new(RefCell::new(LocalCache::new(shared.clone())));
    let ptr = NonNull::from(Box::leak(boxed)).cast::<()>();
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
        Some(entries[shared.index].replace(entry))
    });
    match replaced {
        Ok(Some(old)) => {
            if let Some(old) = old {
                // SAFETY: taken out of the table just now; see `Table::drop`.
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
