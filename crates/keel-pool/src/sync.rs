//! Synchronisation primitives: `std`'s normally, `loom`'s under `--cfg loom`
//! so the model checker sees every lock and atomic of the shared state.

#[cfg(loom)]
pub use loom::thread::LocalKey;
#[cfg(not(loom))]
pub use std::thread::LocalKey;

#[cfg(loom)]
pub(crate) use loom::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU64},
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU64},
};

/// Locks `m`, ignoring poisoning: the pool never runs user code while holding
/// a lock, so a panic elsewhere cannot leave the protected state half-updated.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
