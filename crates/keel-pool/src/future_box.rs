//! [`FutureBox`]: a type-erased future in a pooled block.
//!
//! A server keeps its handlers in a method table, so it must erase their
//! future types: the usual tool is `Pin<Box<dyn Future + Send>>`, one
//! `malloc` and one `free` per call, and Keel's dispatch path boxes twice
//! per call. Rule R3 (`DESIGN.md`) wants the steady state of a call to
//! allocate nothing. A `FutureBox` is the same thing — an owned, pinned,
//! `Send` future with its type erased — whose memory comes from a
//! thread-local cache of size-class blocks instead of the allocator.
//!
//! # Design
//!
//! ```text
//!   FutureBox<'a, T>: two words, Unpin, Send
//!   ┌──────────┬──────────┐
//!   │ block  ──┼─┐ vtable─┼──► VTable for F, one per future type (a const,
//!   └──────────┴─┼────────┘    so a &'static): { poll::<F>, drop_in_place::<F>,
//!                │                                home: Class(2) }
//!                ▼
//!   block, 256 B, align 16: [ F, pinned here until dropped in place | spare ]
//!         ▲ new: pop                          │ drop: F dropped, block pushed
//!         │                                   ▼
//!   this thread's cache (no lock, no atomic):
//!     64 B ■→■→■   128 B ■   256 B ■→■→■→■   …   16 KiB ■
//!     at most 8 blocks and 8 KiB per class
//!         │ overflow, trim_future_boxes(), thread exit
//!         ▼
//!   global allocator
//! ```
//!
//! - **Erasure without `CoerceUnsized`.** The box holds a pointer to the
//!   block and a vtable of `unsafe fn`s monomorphised for the future type
//!   `F`, made once per type by an associated const. Polling is one indirect
//!   call, as with `dyn Future`.
//! - **Size classes.** Powers of two from 64 B to 16 KiB, aligned to 16. A
//!   future larger than 16 KiB or aligned beyond 16 gets an exact allocation
//!   that is freed on drop, never cached; a zero-sized future gets no memory.
//! - **Any thread.** A block freed on a thread joins *that* thread's cache,
//!   whichever thread made it: blocks are plain allocator memory, so a box
//!   may be made on one thread and polled and dropped on another.
//! - **Bounded** (rule R4 and R7). A thread caches at most 8 blocks and
//!   8 KiB per class; beyond that blocks go back to the allocator. At
//!   thread exit the cache's destructor frees everything it holds, and
//!   [`trim_future_boxes`] empties the calling thread's cache on demand.
//! - **Visible.** [`future_box_stats`] reports blocks and bytes cached across
//!   threads, blocks allocated, reused and freed, and exact allocations.
//!   The hot path counts in thread-local cells, folded into process-wide
//!   atomics every 64 operations, so it does no atomic read-modify-write.
//!
//! Dropping a box drops the future in place, whether it was polled to the
//! end, part way, or never, and then returns the block — also when the
//! future's destructor panics. A panic inside `poll` leaves the box
//! droppable as usual.

mod blocks;

use std::alloc::Layout;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::mem;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

pub use blocks::{FutureBoxStats, future_box_stats, trim_future_boxes};

/// An owned, pinned, `Send` future with its type erased, like
/// `Pin<Box<dyn Future<Output = T> + Send + 'a>>`, whose memory comes from a
/// thread-local cache of size-class blocks (64 B to 16 KiB, at most 8
/// blocks and 8 KiB per class and thread), so that boxing a future per
/// call allocates nothing once the cache is warm. Larger or more aligned
/// futures get an exact allocation; see [`future_box_stats`].
///
/// The box itself is `Unpin`: the future inside never moves once written.
/// Dropping the box drops the future in place, polled or not, and returns
/// its block to the dropping thread's cache.
///
/// # Example
///
/// ```
/// use std::future::Future;
/// use std::pin::Pin;
/// use std::task::{Context, Poll, Waker};
///
/// use keel_pool::FutureBox;
///
/// fn handler(x: u32) -> FutureBox<'static, u32> {
///     FutureBox::new(async move { x * 2 })
/// }
///
/// let mut f = handler(21);
/// let mut cx = Context::from_waker(Waker::noop());
/// assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(42));
/// drop(f); // the block goes back to this thread's cache
/// ```
///
/// Only `Send` futures are accepted:
///
/// ```compile_fail
/// let rc = std::rc::Rc::new(1);
/// let _ = keel_pool::FutureBox::new(async move { *rc });
/// ```
pub struct FutureBox<'a, T> {
    /// Where the future lives: a class block, an exact allocation, or a
    /// dangling aligned pointer for a zero-sized future (per `vtable.home`).
    future: NonNull<u8>,
    vtable: &'a VTable<T>,
    /// Owns a `dyn Future + Send + 'a`: hence `!Sync`, `!UnwindSafe`,
    /// invariant in `T`, covariant in `'a`, like the box it replaces.
    _owns: PhantomData<Pin<Box<dyn Future<Output = T> + Send + 'a>>>,
}

/// The operations on one future type `F`, and where its memory came from.
struct VTable<T> {
    /// Polls the `F` at the pointer, pinned.
    poll: unsafe fn(NonNull<u8>, &mut Context<'_>) -> Poll<T>,
    /// Drops the `F` at the pointer in place.
    drop_in_place: unsafe fn(NonNull<u8>),
    home: Home,
}

/// Where a future type's memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Home {
    /// Zero-sized: no memory, a dangling pointer aligned for `F`.
    Nowhere,
    /// A block of this size class.
    Class(usize),
    /// An exact allocation of `F`'s layout (too large or too aligned).
    Exact(Layout),
}

/// Carries the per-type constants for `F`.
struct Erased<'a, F>(PhantomData<&'a F>);

impl<'a, F: Future + Send + 'a> Erased<'a, F> {
    const HOME: Home = {
        let (size, align) = (mem::size_of::<F>(), mem::align_of::<F>());
        if size == 0 {
            Home::Nowhere
        } else if size > blocks::MAX_BLOCK || align > blocks::BLOCK_ALIGN {
            Home::Exact(Layout::new::<F>())
        } else {
            Home::Class(blocks::class_of(size))
        }
    };

    /// A constant's value lives in static memory, so this reference is
    /// `'static`; it is typed `'a` because `F::Output` may borrow.
    const VTABLE: &'a VTable<F::Output> = &VTable {
        poll: poll::<F>,
        drop_in_place: drop_in_place::<F>,
        home: Self::HOME,
    };
}

/// # Safety
/// `future` must point at a live `F` that stays where it is until dropped in
/// place, and no other reference to it may exist during the call.
unsafe fn poll<F: Future>(future: NonNull<u8>, cx: &mut Context<'_>) -> Poll<F::Output> {
    // SAFETY: per the contract the `F` is live, exclusively ours for this
    // call, and never moves again: pinning it is sound.
    let future = unsafe { Pin::new_unchecked(&mut *future.cast::<F>().as_ptr()) };
    future.poll(cx)
}

/// # Safety
/// `future` must point at a live `F`, which is dead afterwards.
unsafe fn drop_in_place<F>(future: NonNull<u8>) {
    // SAFETY: per the contract.
    unsafe { future.cast::<F>().as_ptr().drop_in_place() }
}

impl<'a, T> FutureBox<'a, T> {
    /// Moves `future` into a block from this thread's cache (or a fresh one)
    /// and erases its type.
    #[inline]
    pub fn new<F>(future: F) -> Self
    where
        F: Future<Output = T> + Send + 'a,
    {
        let block = match Erased::<'a, F>::HOME {
            Home::Nowhere => NonNull::<F>::dangling().cast(),
            Home::Class(class) => blocks::take(class),
            Home::Exact(layout) => {
                blocks::count_exact();
                blocks::alloc_exact(layout)
            }
        };
        // SAFETY: `block` is valid for writing an `F` and aligned for it: a
        // class block is at least as large as its class and 16-aligned (and
        // `HOME` chose a class only for `size <= class`, `align <= 16`); an
        // exact allocation has `F`'s layout; a dangling pointer aligned for
        // `F` is valid for a zero-sized write. Nothing else refers to it.
        unsafe { block.cast::<F>().as_ptr().write(future) };
        FutureBox {
            future: block,
            vtable: Erased::<'a, F>::VTABLE,
            _owns: PhantomData,
        }
    }
}

impl<T> FutureBox<'_, T> {
    /// Bytes of memory the box holds for its future: its block's size
    /// class, or the exact allocation's size (0 for a zero-sized future).
    pub fn block_size(&self) -> usize {
        match self.vtable.home {
            Home::Nowhere => 0,
            Home::Class(class) => blocks::class_size(class),
            Home::Exact(layout) => layout.size(),
        }
    }
}

impl<T> Future for FutureBox<'_, T> {
    type Output = T;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        // SAFETY: `future` holds a live `F` matching `vtable` from `new` until
        // `drop`, which is the only place it is dropped or its memory given
        // back, so it never moves; `&mut self` makes this access exclusive.
        // If the poll panics, the `F` is still a valid value (unwinding
        // leaves it in a state its own `Drop` handles), so `drop` stays sound.
        unsafe { (this.vtable.poll)(this.future, cx) }
    }
}

impl<T> Drop for FutureBox<'_, T> {
    fn drop(&mut self) {
        /// Returns the memory even if the future's destructor panics: drop
        /// glue still drops the rest of the future while unwinding, so
        /// nothing live remains in the block either way.
        struct Release(NonNull<u8>, Home);

        impl Drop for Release {
            fn drop(&mut self) {
                match self.1 {
                    Home::Nowhere => {}
                    // SAFETY: the block came from `blocks::take(class)` in
                    // `new`, its future has been dropped, and the box that
                    // owned it is being dropped: nobody uses it again.
                    Home::Class(class) => unsafe { blocks::give(class, self.0) },
                    // SAFETY: allocated with this layout in `new`, its future
                    // dropped, freed once, here.
                    Home::Exact(layout) => unsafe { std::alloc::dealloc(self.0.as_ptr(), layout) },
                }
            }
        }

        let _release = Release(self.future, self.vtable.home);
        // SAFETY: `future` holds a live `F` matching `vtable` (see `poll`),
        // dropped exactly once: here, as the box itself is dropped.
        unsafe { (self.vtable.drop_in_place)(self.future) };
    }
}

// SAFETY: the box owns an `F: Send` (every constructor requires it) and
// shares nothing; the vtable holds only function pointers and a layout.
// `T` is never stored, only returned by `poll`, so it needs no bound — as
// for `Pin<Box<dyn Future<Output = T> + Send>>`.
unsafe impl<T> Send for FutureBox<'_, T> {}

impl<T> fmt::Debug for FutureBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FutureBox")
            .field("home", &self.vtable.home)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
