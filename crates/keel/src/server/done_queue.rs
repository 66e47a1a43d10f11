//! The way back for calls a baidu_std connection runs as their own tasks:
//! each task pushes its finished call, the connection's read loop pops it
//! and writes the answer.
//!
//! ```text
//!   call task ─ DoneSender::send ─► [ queue: VecDeque ] ─► DoneReceiver::recv ─► write
//!   call task ◄─ DoneSender::closed ── connection gone (receiver dropped)
//! ```
//!
//! An unbounded channel would do, but tokio's keeps every block a backlog
//! ever needed for as long as any sender lives, and a connection with one
//! long-running call keeps a sender for as long as that call runs. Here the
//! queue is a `VecDeque` that is given back once it empties after growing
//! (rule R7): its memory follows the answers waiting, not a past burst.
//!
//! May not touch: frames or sockets; it moves values between tasks.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use tokio::sync::Notify;

/// Queue capacity kept when it empties; more is given back.
const KEPT: usize = 16;

struct State<T> {
    queue: VecDeque<T>,
    /// The receiver waiting for a value.
    waker: Option<Waker>,
    /// The receiver is gone: sends fail, senders' `closed` resolves.
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes senders waiting in `closed`.
    gone: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's end: receives finished calls.
pub(crate) struct DoneReceiver<T> {
    shared: Arc<Shared<T>>,
}

/// A call task's end.
pub(crate) struct DoneSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for DoneSender<T> {
    fn clone(&self) -> Self {
        DoneSender {
            shared: self.shared.clone(),
        }
    }
}

/// A new, empty queue (no allocation until the first send but the shared
/// cell).
pub(crate) fn done_queue<T>() -> (DoneSender<T>, DoneReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            waker: None,
            closed: false,
        }),
        gone: Notify::new(),
    });
    (
        DoneSender {
            shared: shared.clone(),
        },
        DoneReceiver { shared },
    )
}

impl<T> DoneSender<T> {
    /// Queues `value` for the receiver; hands it back if the receiver is
    /// gone.
    pub(crate) fn send(&self, value: T) -> Result<(), T> {
        let waker = {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(value);
            }
            st.queue.push_back(value);
            st.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Resolves once the receiver is gone.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.shared.gone.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a close in between wakes it.
            notified.as_mut().enable();
            if self.shared.lock().closed {
                return;
            }
            notified.await;
        }
    }
}

impl<T> DoneReceiver<T> {
    /// A value queued now, if any.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        let mut st = self.shared.lock();
        Self::pop(&mut st)
    }

    /// The next value; waits for one.
    pub(crate) async fn recv(&mut self) -> T {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            match Self::pop(&mut st) {
                Some(value) => Poll::Ready(value),
                None => {
                    match &mut st.waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        w => *w = Some(cx.waker().clone()),
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    fn pop(st: &mut State<T>) -> Option<T> {
        let value = st.queue.pop_front()?;
        if st.queue.is_empty() && st.queue.capacity() > KEPT {
            st.queue = VecDeque::new();
        }
        Some(value)
    }

    /// Bytes the queue holds (for tests).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.shared.lock().queue.capacity()
    }
}

impl<T> Drop for DoneReceiver<T> {
    fn drop(&mut self) {
        let left = {
            let mut st = self.shared.lock();
            st.closed = true;
            st.waker = None;
            std::mem::take(&mut st.queue)
        };
        // Dropped outside the lock: a value's drop may do anything.
        drop(left);
        self.shared.gone.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_arrive_in_order_and_a_backlog_is_given_back() {
        let (tx, mut rx) = done_queue();
        for i in 0..10_000 {
            tx.send(i).expect("receiver alive");
        }
        assert!(rx.capacity() >= 10_000);
        for i in 0..10_000 {
            assert_eq!(rx.recv().await, i);
        }
        assert_eq!(rx.capacity(), 0, "the backlog's queue is given back");
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn a_gone_receiver_fails_sends_and_wakes_closed() {
        let (tx, rx) = done_queue::<u32>();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.closed().await }
        });
        tokio::task::yield_now().await;
        drop(rx);
        waiting.await.expect("closed resolved");
        assert_eq!(tx.send(7), Err(7));
        tx.closed().await;
    }
}
