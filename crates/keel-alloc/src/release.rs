//! Memory back to the operating system from glibc's malloc, once a process
//! has gone quiet.
//!
//! glibc keeps what a burst freed in its arenas: the main one (the `brk`
//! heap) and one per thread that allocated (up to eight per core), each a
//! chain of heaps whose free space at the end (the "top") grows and
//! shrinks. `malloc_trim(0)` gives back every free page in every arena's
//! bins and the main heap's top, but never the top of another arena's
//! heap: only a `free` in that arena that merges 64 KiB or more trims it,
//! and then only when the top exceeds the trim threshold. A quiet process
//! makes no such `free`, so what a burst left there stays resident.
//!
//! ```text
//!   keep_free_memory_releasable()         once, when a server with quiet trim starts
//!     mmap threshold 32 MiB, trim threshold 16 MiB while busy
//!
//!   note_thread()                         on every thread doing Keel's I/O
//!     first time: a 2 KiB marker block, allocated in the thread's arena, registered
//!
//!   release_free_memory()                 when quiet
//!     malloc_trim(0)                      bins of every arena, the main heap's top
//!     trim threshold 128 KiB
//!     each marker: realloc to 128 KiB,    in its own arena (realloc stays there unless
//!       then back to 2 KiB                the arena is out of memory); the freed 126 KiB
//!                                         makes glibc trim that arena's top
//!     trim threshold 16 MiB
//!
//!   a noted thread exits                  malloc_trim(0), then its marker grown in its
//!                                         arena and freed: the arena's top is trimmed
//! ```
//!
//! Why fixed thresholds: glibc raises both by itself after freeing a large
//! block (the mmap threshold to its size, up to 32 MiB; the trim threshold to
//! twice that), and lowering the trim threshold for a trim, by hand, stops
//! that adaptation for good. So both are fixed from the start: blocks under
//! 32 MiB come from the heap, as they would once glibc had seen one that
//! large, and while busy an arena keeps up to 16 MiB free at its top for
//! the next large message, instead of trimming it at every `free` (glibc's
//! own rule keeps twice the largest block it mapped). `keel-bench rss`
//! measured, against glibc's defaults, 1.04x the echo QPS and 1.04x the
//! MiB/s of 1 MiB echo calls, and 0.7 MiB left after the bursts against
//! 10.3 MiB; with the busy threshold at 64 MiB, 1.03x and 0.8 MiB; at
//! 4 MiB, 0.72x (the heap trimmed and grown again at every call).
//!
//! The cost: while busy, what an arena's top keeps (up to 16 MiB each)
//! stays resident until the process has been quiet for a second. A thread
//! that never does Keel's I/O has no marker: its arena's top goes back
//! only as glibc's `free` gives it, past 16 MiB.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::{c_int, c_void};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, Once, PoisonError};

    unsafe extern "C" {
        fn malloc(size: usize) -> *mut c_void;
        fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
        fn free(ptr: *mut c_void);
        fn malloc_trim(pad: usize) -> c_int;
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    /// glibc's `mallopt` parameters.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    /// Blocks this large or larger get an `mmap` of their own: glibc's
    /// largest dynamic threshold on 64-bit.
    const MMAP_THRESHOLD: c_int = 32 << 20;
    /// The top a heap keeps while busy (see the module's notes).
    const TRIM_WHILE_BUSY: c_int = 16 << 20;
    /// The top a heap keeps once quiet: glibc's default.
    const TRIM_WHEN_QUIET: c_int = 128 << 10;
    /// A marker between trims: past the sizes a thread's cache (tcache,
    /// up to 1,032 bytes) serves, so it comes from the thread's own arena.
    const MARKER_SMALL: usize = 2048;
    /// A marker grown for a trim: shrinking it back frees 126 KiB, past
    /// the 64 KiB at which glibc's `free` trims the arena.
    const MARKER_LARGE: usize = 128 << 10;

    static ON: AtomicBool = AtomicBool::new(false);

    /// The markers of the live threads that noted themselves: an id (the
    /// thread's own) and the block's address.
    static MARKERS: Mutex<Markers> = Mutex::new(Markers {
        next: 1,
        list: Vec::new(),
    });

    struct Markers {
        next: u64,
        list: Vec<(u64, usize)>,
    }

    fn markers() -> std::sync::MutexGuard<'static, Markers> {
        MARKERS.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A thread's marker, freed when the thread exits.
    struct Marker(u64);

    impl Marker {
        fn new() -> Marker {
            // SAFETY: `malloc` takes a size; a null result is handled.
            let block = unsafe { malloc(MARKER_SMALL) };
            if block.is_null() {
                return Marker(0);
            }
            let mut m = markers();
            let id = m.next;
            m.next += 1;
            m.list.push((id, block as usize));
            Marker(id)
        }
    }

    /// The thread exits: its arena is trimmed (nothing would trim it
    /// later), and its marker leaves the list and is freed. First
    /// `malloc_trim`, outside the lock (it walks every arena): what the
    /// thread frees after this (its thread cache, later thread-locals) then
    /// mostly merges with pages already given back. The lock is held only
    /// for the markers' own reallocs, here and in `release`.
    impl Drop for Marker {
        fn drop(&mut self) {
            // SAFETY: `malloc_trim` takes no pointer (see `release`).
            unsafe { malloc_trim(0) };
            let mut m = markers();
            if let Some(i) = m.list.iter().position(|&(id, _)| id == self.0) {
                let (_, block) = m.list.swap_remove(i);
                while_quiet(|| {
                    // SAFETY: the block came from `malloc`/`realloc`, is
                    // owned by the list alone, and leaves it here: freed
                    // once, grown first (in its arena) so that its free
                    // trims the arena. A failed `realloc` leaves it as it was.
                    unsafe {
                        let grown = realloc(block as *mut c_void, MARKER_LARGE);
                        free(if grown.is_null() {
                            block as *mut c_void
                        } else {
                            grown
                        });
                    }
                });
            }
        }
    }

    /// Runs `trim` with the trim threshold at its quiet value (the
    /// markers' lock held by the caller, so trims do not interleave).
    fn while_quiet(trim: impl FnOnce()) {
        // SAFETY: `mallopt` takes no pointer; glibc allows the threshold
        // to be set at any time, from any thread.
        unsafe { mallopt(M_TRIM_THRESHOLD, TRIM_WHEN_QUIET) };
        trim();
        // SAFETY: as above.
        unsafe { mallopt(M_TRIM_THRESHOLD, TRIM_WHILE_BUSY) };
    }

    thread_local! {
        static MARKER: Marker = Marker::new();
    }

    pub(super) fn keep_releasable() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            // SAFETY: `mallopt` takes no pointer; glibc allows both
            // thresholds to be set at any time, from any thread.
            unsafe {
                mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
                mallopt(M_TRIM_THRESHOLD, TRIM_WHILE_BUSY);
            }
            ON.store(true, Ordering::Release);
        });
        note();
    }

    pub(super) fn note() {
        if ON.load(Ordering::Relaxed) {
            // Touching the thread-local creates the marker the first time;
            // a thread being torn down is skipped.
            let _ = MARKER.try_with(|_| ());
        }
    }

    pub(super) fn release() -> bool {
        // SAFETY: `malloc_trim` takes no pointer, and glibc makes it safe
        // to call from any thread at any time (it locks each arena in turn).
        let mut released = unsafe { malloc_trim(0) != 0 };
        if !ON.load(Ordering::Acquire) {
            return released;
        }
        let mut m = markers();
        if m.list.is_empty() {
            return released;
        }
        while_quiet(|| {
            for (_, block) in &mut m.list {
                // SAFETY: each block came from `malloc`/`realloc` and is
                // owned by the list, whose lock is held: no one else frees
                // or moves it. A failed `realloc` leaves it as it was.
                unsafe {
                    let grown = realloc(*block as *mut c_void, MARKER_LARGE);
                    if grown.is_null() {
                        continue;
                    }
                    let shrunk = realloc(grown, MARKER_SMALL);
                    *block = if shrunk.is_null() { grown } else { shrunk } as usize;
                }
                released = true;
            }
        });
        released
    }
}

/// Hands the C allocator's free memory back to the operating system, and
/// says whether any went back: with glibc, `malloc_trim(0)` (every free
/// page in every arena's bins, and the main heap's top), then, once
/// [`keep_free_memory_releasable`] has run, the top of each arena a
/// [noted](note_thread) thread allocates from (see the module's diagram).
/// It takes each arena's lock in turn, so allocating threads wait for it:
/// call it when the process is quiet. Elsewhere than Linux with glibc
/// (musl, other systems) this does nothing and returns `false`; so does a
/// process whose Rust allocations go to another allocator (mimalloc,
/// jemalloc), whose own decay returns its memory.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        glibc::release()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Sets glibc's malloc up, once per process, so that
/// [`release_free_memory`] can give back what a burst left in every
/// [noted](note_thread) thread's arena, and notes the calling thread;
/// says whether the allocator is glibc's. It fixes the mmap threshold at
/// 32 MiB and the trim threshold at 16 MiB (see the module's notes for
/// why, what it costs, and the figures). A server
/// with quiet trim on calls it when it starts. Elsewhere than Linux with
/// glibc this does nothing and returns `false`.
pub fn keep_free_memory_releasable() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        glibc::keep_releasable();
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Once [`keep_free_memory_releasable`] has run: makes sure the calling
/// thread has a marker in its arena, through which
/// [`release_free_memory`] trims that arena (the first call on a thread
/// allocates a 2 KiB marker from glibc directly, outside any counting
/// allocator, and adds it to a list, which is counted; later calls cost a
/// thread-local read; the marker is freed when the thread exits). Keel
/// calls it where its connections read. Before that, and elsewhere than
/// Linux with glibc, it does nothing.
pub fn note_thread() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::note();
}

/// The process's resident set size in bytes, from `/proc/self/statm` (0
/// where there is none); reads into a stack buffer, allocating nothing, so
/// a counting allocator's figures are not disturbed by asking.
pub fn resident_bytes() -> u64 {
    use std::io::Read as _;
    let mut buf = [0u8; 128];
    let Ok(mut file) = std::fs::File::open("/proc/self/statm") else {
        return 0;
    };
    let n = file.read(&mut buf).unwrap_or(0);
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.split_ascii_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
