//! The global allocator of `keel-bench`: keel-alloc's counting allocator
//! over glibc's malloc, or over mimalloc when the process is started with
//! `KEEL_BENCH_ALLOCATOR=mimalloc` (`keel-bench rss` starts its mimalloc
//! server processes so; every other benchmark runs on glibc).
//!
//! A process has one global allocator, chosen before its first allocation
//! and kept: memory must be freed by the allocator that gave it. The
//! choice is made in a function glibc runs from `.init_array` before
//! `main` (it receives the environment as its third argument, so it reads
//! the variable without allocating). The first allocation fixes the
//! choice: if anything allocated before that function ran, the process
//! stays on glibc, and says so (`rss` prints the allocator each server
//! actually uses). Off Linux with glibc, it is always the system
//! allocator.
//!
//! ```text
//!   .init_array: KEEL_BENCH_ALLOCATOR=mimalloc? ──► MODE: undecided → mimalloc
//!   first alloc:                                ──► MODE: undecided → system
//!   every alloc/free: MODE (one relaxed load) ──► System | MiMalloc
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::Relaxed;

use mimalloc::MiMalloc;

/// The environment variable that asks for mimalloc, and its value.
pub const VARIABLE: &str = "KEEL_BENCH_ALLOCATOR";
pub const MIMALLOC_VALUE: &str = "mimalloc";
/// `VARIABLE=MIMALLOC_VALUE`, as an environment entry.
const MIMALLOC_ENTRY: &[u8] = b"KEEL_BENCH_ALLOCATOR=mimalloc";

const UNDECIDED: u8 = 0;
const SYSTEM: u8 = 1;
const MIMALLOC: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// System or mimalloc, as the environment chose at start.
#[derive(Debug, Default)]
pub struct Switch;

impl Switch {
    fn mode() -> u8 {
        match MODE.load(Relaxed) {
            UNDECIDED => match MODE.compare_exchange(UNDECIDED, SYSTEM, Relaxed, Relaxed) {
                Ok(_) => SYSTEM,
                Err(chosen) => chosen,
            },
            chosen => chosen,
        }
    }
}

/// The allocator this process uses: `"glibc"` (the system's) or `"mimalloc"`.
pub fn name() -> &'static str {
    if Switch::mode() == MIMALLOC {
        "mimalloc"
    } else {
        "glibc"
    }
}

// SAFETY: every method forwards to System or MiMalloc, both sound
// `GlobalAlloc`s, and picks the same one for a block's whole life: MODE is
// fixed before the first allocation and never changes after it.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if Switch::mode() == MIMALLOC {
                MiMalloc.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if Switch::mode() == MIMALLOC {
                MiMalloc.alloc_zeroed(layout)
            } else {
                System.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract; `ptr` came from the same allocator
        // (the mode never changes once anything was allocated).
        unsafe {
            if Switch::mode() == MIMALLOC {
                MiMalloc.dealloc(ptr, layout);
            } else {
                System.dealloc(ptr, layout);
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`.
        unsafe {
            if Switch::mode() == MIMALLOC {
                MiMalloc.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}

/// Run by glibc before `main`, with the process's environment.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn choose(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
    envp: *const *const std::ffi::c_char,
) {
    if envp.is_null() {
        return;
    }
    let mut i = 0;
    loop {
        // SAFETY: glibc passes `envp`, a null-terminated array of pointers
        // to NUL-terminated strings, as it passes it to `main`.
        let entry = unsafe { *envp.add(i) };
        if entry.is_null() {
            return;
        }
        // SAFETY: each entry is a NUL-terminated string (above).
        let bytes = unsafe { std::ffi::CStr::from_ptr(entry) }.to_bytes();
        if bytes == MIMALLOC_ENTRY {
            let _ = MODE.compare_exchange(UNDECIDED, MIMALLOC, Relaxed, Relaxed);
            return;
        }
        i += 1;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[unsafe(link_section = ".init_array")]
static CHOOSE: extern "C" fn(
    std::ffi::c_int,
    *const *const std::ffi::c_char,
    *const *const std::ffi::c_char,
) = choose;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_is_the_variable_and_its_value() {
        assert_eq!(
            MIMALLOC_ENTRY,
            format!("{VARIABLE}={MIMALLOC_VALUE}").as_bytes()
        );
    }

    #[test]
    fn tests_run_on_glibc() {
        assert_eq!(name(), "glibc");
    }
}
