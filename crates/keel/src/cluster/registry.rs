//! The process-wide list of live invokers, for the console and for tests.
//!
//! Entries are weak: the registry never keeps an invoker alive (the lesson
//! of Dubbo-Go's protocol singleton, DESIGN.md §1.2). An invoker registers
//! itself when created and its [`Registration`] guard removes the entry
//! when the invoker is dropped, on every path (rule R1).
//!
//! The entries live in a B-tree keyed by invoker id, not in a slab of
//! slots: a B-tree frees its nodes as entries leave, so the registry's
//! memory follows the invokers alive now, never a past peak (rule R7),
//! whichever invokers of a burst outlive the others. Ids only grow, so a
//! listing comes out in creation order, and a registration or removal is
//! O(log n) under the lock (invokers come and go with endpoint sets, not
//! with calls).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};

use super::invoker::{Invoker, InvokerInfo};

static REGISTRY: Mutex<BTreeMap<u64, Weak<Invoker>>> = Mutex::new(BTreeMap::new());

fn registry() -> MutexGuard<'static, BTreeMap<u64, Weak<Invoker>>> {
    // Every update leaves the registry consistent before it can panic.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An invoker's entry in the registry, found by the invoker's id; dropping
/// it removes the entry.
pub(crate) struct Registration {
    id: u64,
}

impl Registration {
    /// Registers `invoker` under `id`, which no other live invoker has.
    pub(crate) fn new(id: u64, invoker: Weak<Invoker>) -> Registration {
        let previous = registry().insert(id, invoker);
        debug_assert!(previous.is_none(), "invoker ids are unique");
        Registration { id }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The weak reference is dropped after the lock is released.
        let entry = registry().remove(&self.id);
        debug_assert!(entry.is_some(), "a registration removes its entry once");
    }
}

/// Every live invoker in this process (of every channel), oldest first:
/// endpoint, channel, state, calls in flight, errors. A snapshot; it keeps
/// nothing alive.
pub fn invokers() -> Vec<InvokerInfo> {
    let mut all = Vec::new();
    for_each(|invoker| all.push(invoker.info()));
    all
}

/// Runs `f` on every live invoker of the process, oldest first (outside
/// the registry's lock, so `f` may create or drop invokers).
pub(crate) fn for_each(mut f: impl FnMut(&Invoker)) {
    let weak: Vec<Weak<Invoker>> = registry().values().cloned().collect();
    for invoker in weak.iter().filter_map(Weak::upgrade) {
        f(&invoker);
    }
}

/// How many invokers are alive in this process.
pub fn live_invokers() -> usize {
    registry().len()
}
