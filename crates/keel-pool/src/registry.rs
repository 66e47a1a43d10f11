//! The process-wide list of pools, for the console.
//!
//! A pool registers when first used and its [`Registration`] guard removes
//! the entry when the pool drops (rule R1). Entries hold `Weak` references, so
//! the list never keeps a pool alive.

use std::sync::{Mutex, Weak};

use crate::stats::PoolStats;

/// What the registry can ask of any pool, whatever its object type.
pub(crate) trait Registered: Send + Sync {
    fn stats(&self) -> PoolStats;
    fn trim(&self) -> usize;
    fn trim_idle(&self, idle_for: std::time::Duration) -> usize;
}

static POOLS: Mutex<Vec<(u64, Weak<dyn Registered>)>> = Mutex::new(Vec::new());

/// Keeps a pool listed; dropping it unlists the pool.
pub(crate) struct Registration {
    uid: u64,
}

pub(crate) fn register(uid: u64, pool: Weak<dyn Registered>) -> Registration {
    lock().push((uid, pool));
    Registration { uid }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock().retain(|(uid, _)| *uid != self.uid);
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(u64, Weak<dyn Registered>)>> {
    POOLS.lock().unwrap_or_else(|e| e.into_inner())
}

fn live() -> Vec<std::sync::Arc<dyn Registered>> {
    lock().iter().filter_map(|(_, w)| w.upgrade()).collect()
}

/// Statistics of every live pool in the process, in registration order.
pub fn all_stats() -> Vec<PoolStats> {
    live().iter().map(|p| p.stats()).collect()
}

/// Calls `f` with the statistics of every live pool, allocating nothing
/// (for samplers that run forever). The registry is locked only to take
/// each entry, never while `f` or a pool runs, so a pool registering or
/// dropping meanwhile may be seen or missed.
pub fn for_each_stats(mut f: impl FnMut(&PoolStats)) {
    let mut i = 0;
    loop {
        let pool = {
            let pools = lock();
            let Some((_, weak)) = pools.get(i) else { break };
            weak.upgrade()
        };
        if let Some(pool) = pool {
            f(&pool.stats());
        }
        i += 1;
    }
}

/// Trims every live pool (see [`Pool::trim`](crate::Pool::trim)); returns the
/// number of blocks freed. The calling thread's caches are flushed first;
/// other threads keep theirs.
pub fn trim_all() -> usize {
    live().iter().map(|p| p.trim()).sum()
}

/// Applies [`Pool::trim_idle`](crate::Pool::trim_idle) to every live pool:
/// those no thread has drawn from for `idle_for` take back the calling
/// thread's cached objects and give their fully free blocks back; returns
/// the blocks freed. Cheap enough for a timer (per pool one lock and, only
/// in an idle pool, a pass over its free list), and cheap for a pool in
/// steady use (at most one refill of the calling thread's cache per call),
/// so a process calls it periodically to give back what a pool nobody uses
/// any more still holds.
pub fn trim_idle_all(idle_for: std::time::Duration) -> usize {
    live().iter().map(|p| p.trim_idle(idle_for)).sum()
}

/// How many pools are registered now.
pub fn pool_count() -> usize {
    lock().len()
}
