//! The process-wide list of live invokers, for the console and for tests.
//!
//! Entries are weak: the registry never keeps an invoker alive (the lesson
//! of Dubbo-Go's protocol singleton, DESIGN.md §1.2). An invoker registers
//! itself when created and its [`Registration`] guard removes the entry
//! when the invoker is dropped, on every path (rule R1).

use std::sync::{Mutex, PoisonError, Weak};

use super::invoker::{Invoker, InvokerInfo};

struct Registry {
    entries: Vec<Option<Weak<Invoker>>>,
    free: Vec<usize>,
    live: usize,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    entries: Vec::new(),
    free: Vec::new(),
    live: 0,
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // Every update leaves the registry consistent before it can panic.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An invoker's entry in the registry; dropping it removes the entry.
pub(crate) struct Registration {
    index: usize,
}

impl Registration {
    pub(crate) fn new(invoker: Weak<Invoker>) -> Registration {
        let mut r = registry();
        r.live += 1;
        let index = match r.free.pop() {
            Some(index) => {
                r.entries[index] = Some(invoker);
                index
            }
            None => {
                r.entries.push(Some(invoker));
                r.entries.len() - 1
            }
        };
        Registration { index }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut r = registry();
        r.entries[self.index] = None;
        r.live -= 1;
        r.free.push(self.index);
        // Give back the entries past the last live entry, so a past peak of
        // invokers does not stay allocated (R4).
        let len = r
            .entries
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1);
        if len < r.entries.len() {
            r.entries.truncate(len);
            r.free.retain(|&index| index < len);
            if r.entries.capacity() > 2 * len + 16 {
                r.entries.shrink_to_fit();
                r.free.shrink_to_fit();
            }
        }
    }
}

/// Every live invoker in this process (of every channel): endpoint,
/// channel, state, calls in flight, errors. A snapshot; it keeps nothing
/// alive.
pub fn invokers() -> Vec<InvokerInfo> {
    let mut all = Vec::new();
    for_each(|invoker| all.push(invoker.info()));
    all
}

/// Runs `f` on every live invoker of the process.
pub(crate) fn for_each(mut f: impl FnMut(&Invoker)) {
    let weak: Vec<Weak<Invoker>> = registry().entries.iter().flatten().cloned().collect();
    for invoker in weak.iter().filter_map(Weak::upgrade) {
        f(&invoker);
    }
}

/// How many invokers are alive in this process.
pub fn live_invokers() -> usize {
    registry().live
}
