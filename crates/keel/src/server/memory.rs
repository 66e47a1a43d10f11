//! Memory back to the operating system once the server goes quiet.
//!
//! Keel's own heap comes back after a burst (rule R6), but with glibc's
//! malloc the process's resident size does not: the bytes freed by 3,000
//! connections or 50,000 calls stay in malloc's arenas, and RSS stays
//! several MB above where it was. So the server watches its own activity
//! (connections accepted and open, calls answered, bytes read and
//! written) once a second; after a second with none of it, if anything
//! happened since the last time, it first gives back the blocks of the
//! object pools that stayed idle through that second (unless pool trimming
//! is off), since a pool block the burst allocated would pin its pages,
//! then asks the allocator to give its free pages back
//! ([`keel_alloc::release_free_memory`], glibc's `malloc_trim(0)`); and
//! again a few times while the quiet lasts (at 3, 7, 15 and 31 s), for
//! memory freed after the first trim: a tokio blocking thread exiting
//! after its keep-alive, with its thread-local caches. `malloc_trim`
//! alone never trims the top of an arena other than the main one, where a
//! large message's or a burst's freed space ends: so a server that trims
//! also sets glibc up when it starts, and each thread its connections read
//! on keeps a marker in its arena, through which the trim reaches that
//! arena's top ([`keel_alloc::keep_free_memory_releasable`],
//! [`keel_alloc::note_thread`]).
//!
//! ```text
//!   every QUIET_TICK:  activity changed? ── yes ──► busy: remember it, dirty
//!                             │ no
//!                             ▼
//!                      dirty? ── yes ──► trim idle pools; release_free_memory(); count it
//! ```
//!
//! Why this rather than another allocator: `keel-bench rss` measures the
//! candidates side by side (glibc as is, glibc with this trim, mimalloc
//! with its default and immediate purging). The trim brings RSS back as
//! close as an allocator with decay does, costs nothing while calls flow
//! (it runs only after a quiet second, and never while busy), and leaves
//! the choice of global allocator to the application. A process whose
//! allocator is not glibc's pays one cheap call per quiet period.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::server::dispatch::Counters;

/// How often the server looks at its activity; also the quiet time it
/// waits for before trimming.
pub(crate) const QUIET_TICK: Duration = Duration::from_secs(1);

/// Trims made, and the resident bytes they gave back (process-wide: the
/// allocator is).
static TRIMS: AtomicU64 = AtomicU64::new(0);
static RELEASED: AtomicU64 = AtomicU64::new(0);

/// Trims that ran so far, in this process.
pub(crate) fn trims() -> u64 {
    TRIMS.load(Ordering::Relaxed)
}

/// Resident bytes the trims gave back so far (the drop of RSS across each).
pub(crate) fn released_bytes() -> u64 {
    RELEASED.load(Ordering::Relaxed)
}

/// What the server did, as far as the quiet check cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Activity {
    accepted: u64,
    open: usize,
    calls: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Activity {
    fn of(c: &Counters) -> Activity {
        Activity {
            accepted: c.accepted.load(Ordering::Relaxed),
            open: c.connections.load(Ordering::Relaxed),
            calls: c.calls.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// Trims after the first one of a quiet period: memory freed after it
/// (a blocking thread that exits after its keep-alive, thread-local caches
/// dropped with it, deferred drops) would otherwise stay in malloc's
/// arenas until the next burst. They come 2, 4, 8 and 16 ticks apart (at
/// 1, 3, 7, 15 and 31 s of quiet), then the server trims no more until
/// something happens.
const LATER_TRIMS: u8 = 4;

/// The quiet check of one server (its accept loop runs it).
#[derive(Debug, Default)]
pub(crate) struct QuietTrim {
    last: Activity,
    /// Something happened (or pools gave back blocks) since the last trim.
    dirty: bool,
    /// Whether to trim the pools idle for a tick first.
    pools: bool,
    /// Later trims of this quiet period still to come, the ticks until the
    /// next one, and the gap after it.
    later: u8,
    wait: u32,
    gap: u32,
}

impl QuietTrim {
    /// A check starting from `counters` as they are now; `pools`: also
    /// trim the object pools idle for a tick.
    pub(crate) fn new(counters: &Counters, pools: bool) -> QuietTrim {
        QuietTrim {
            last: Activity::of(counters),
            dirty: false,
            pools,
            later: 0,
            wait: 0,
            gap: 0,
        }
    }

    /// Memory was freed outside calls (a pool gave back blocks): worth a
    /// trim at the next quiet tick.
    pub(crate) fn freed(&mut self) {
        self.dirty = true;
    }

    /// One tick: trims if the server was quiet since the last tick and
    /// was not before, and a few times more while it stays quiet (see
    /// [`LATER_TRIMS`]). Returns whether it trimmed.
    pub(crate) fn tick(&mut self, counters: &Counters) -> bool {
        let now = Activity::of(counters);
        if now != self.last {
            self.last = now;
            self.dirty = true;
            self.later = 0;
            return false;
        }
        if self.dirty {
            self.dirty = false;
            self.later = LATER_TRIMS;
            self.gap = 2;
            self.wait = self.gap;
        } else if self.later > 0 {
            self.wait -= 1;
            if self.wait > 0 {
                return false;
            }
            self.later -= 1;
            self.gap *= 2;
            self.wait = self.gap;
        } else {
            return false;
        }
        if self.pools {
            keel_pool::trim_idle_all(QUIET_TICK);
        }
        let before = crate::console::vars::resident_bytes();
        keel_alloc::release_free_memory();
        let after = crate::console::vars::resident_bytes();
        TRIMS.fetch_add(1, Ordering::Relaxed);
        RELEASED.fetch_add(before.saturating_sub(after), Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_activity_then_a_few_times_more_while_quiet() {
        let c = Counters::default();
        let mut q = QuietTrim::new(&c, true);
        assert!(!q.tick(&c), "nothing happened yet");
        c.calls.fetch_add(1, Ordering::Relaxed);
        assert!(!q.tick(&c), "busy during this tick");
        let before = trims();
        assert!(q.tick(&c), "quiet after activity");
        assert!(trims() > before);
        // Later trims at 2, 4, 8 and 16 ticks apart, then none.
        let trimmed: Vec<usize> = (1..=40).filter(|_| q.tick(&c)).collect();
        assert_eq!(trimmed, [2, 6, 14, 30]);
        c.connections.fetch_add(1, Ordering::Relaxed);
        assert!(!q.tick(&c), "a connection opened");
        assert!(q.tick(&c));
        c.calls.fetch_add(1, Ordering::Relaxed);
        assert!(!q.tick(&c), "activity stops the later trims");
        assert!(q.tick(&c));
        q.freed();
        assert!(q.tick(&c), "pools gave back blocks");
    }
}
