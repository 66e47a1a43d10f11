//! The table of calls sent on one connection and waiting for their answer.
//!
//! ```text
//!   insert ──► CallId { index, generation } ──► correlation id on the wire
//!                 │
//!   answer ── complete(id, result) ── Waiting(waker) ─► Done(result) + wake
//!                 │
//!   the call ── poll(id) ── Done? take it ──┐
//!   the call dropped ── remove(id) ─────────┴─► release(index): the one way
//!                                               out; shrinks the table
//! ```
//!
//! Owns: entries by index, their generations, the free list, and the
//! table's capacity. Matching an answer is an index, and a late answer to
//! an abandoned call finds a newer generation and is dropped. Generations
//! come from one counter for the whole table, so a correlation id is never
//! reused, even after the table shrinks and indices start over.
//!
//! Every entry leaves through [`PendingCalls::release`] (answered, failed,
//! timed out or dropped), and that is where the table gives back what a
//! burst made it grow (rule R7): all of it once no call is pending, and the
//! free tail once it is mostly empty.
//!
//! May not touch: sockets, frames or wakeups (it returns wakers; the
//! connection wakes them outside its lock).

use std::task::{Poll, Waker};

use crate::status::{Code, Status};
use crate::transport::Reply;

/// Entries kept however empty the table gets (a small constant).
const KEEP: usize = 64;

/// Identifies a pending call: entry index and generation. Its correlation
/// id on the wire is `generation << 32 | index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallId {
    index: u32,
    generation: u32,
}

impl CallId {
    pub(crate) fn correlation_id(self) -> i64 {
        (((self.generation as u64) << 32) | self.index as u64) as i64
    }

    pub(crate) fn from_correlation_id(cid: i64) -> CallId {
        let cid = cid as u64;
        CallId {
            index: cid as u32,
            generation: (cid >> 32) as u32,
        }
    }
}

enum State {
    Free,
    Waiting(Option<Waker>),
    Done(Result<Reply, Status>),
}

struct Entry {
    generation: u32,
    /// The connection the call was sent on: a failed connection fails
    /// exactly its own calls.
    epoch: u64,
    /// Where its request begins in the bytes queued on that connection:
    /// when the connection fails having written no more than this, no byte
    /// of the request left, and no handler can have run it.
    start: u64,
    state: State,
}

/// Pending calls of one connection (across its reconnections).
#[derive(Default)]
pub(crate) struct PendingCalls {
    entries: Vec<Entry>,
    free: Vec<u32>,
    live: usize,
    next_generation: u32,
}

impl PendingCalls {
    /// Calls waiting now.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Registers a call sent on connection `epoch`, its request queued
    /// after the connection's first `start` bytes.
    pub(crate) fn insert(&mut self, epoch: u64, start: u64) -> CallId {
        self.live += 1;
        // Indices past the end were cut off with a free tail: skip them. The
        // table only grows once the free list is empty, so no such index can
        // come back into range while still listed.
        let mut reuse = None;
        while let Some(i) = self.free.pop() {
            if (i as usize) < self.entries.len() {
                reuse = Some(i);
                break;
            }
        }
        let index = match reuse {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    epoch,
                    start,
                    state: State::Free,
                });
                (self.entries.len() - 1) as u32
            }
        };
        self.next_generation = self.next_generation.wrapping_add(1);
        let entry = &mut self.entries[index as usize];
        entry.generation = self.next_generation;
        entry.epoch = epoch;
        entry.start = start;
        entry.state = State::Waiting(None);
        CallId {
            index,
            generation: entry.generation,
        }
    }

    fn get(&mut self, id: CallId) -> Option<&mut Entry> {
        self.entries
            .get_mut(id.index as usize)
            .filter(|e| e.generation == id.generation && !matches!(e.state, State::Free))
    }

    /// The call was abandoned (its future dropped): forget it.
    pub(crate) fn remove(&mut self, id: CallId) {
        if self.get(id).is_some() {
            self.release(id.index);
        }
    }

    /// Hands `result` to the call `id`, if it still waits; returns its
    /// waker. A duplicate answer keeps the first.
    pub(crate) fn complete(&mut self, id: CallId, result: Result<Reply, Status>) -> Option<Waker> {
        let entry = self.get(id)?;
        match std::mem::replace(&mut entry.state, State::Done(result)) {
            State::Waiting(waker) => waker,
            other => {
                entry.state = other;
                None
            }
        }
    }

    /// The call's result once it has one (which releases it); else keeps
    /// `waker` to be woken.
    pub(crate) fn poll(&mut self, id: CallId, waker: &Waker) -> Poll<Result<Reply, Status>> {
        let Some(entry) = self.get(id) else {
            return Poll::Ready(Err(Status::internal("pending call vanished")));
        };
        match &mut entry.state {
            State::Done(_) => {
                let State::Done(result) = std::mem::replace(&mut entry.state, State::Free) else {
                    unreachable!("matched Done just above")
                };
                self.release(id.index);
                Poll::Ready(result)
            }
            State::Waiting(w) => {
                match w {
                    Some(w) if w.will_wake(waker) => {}
                    _ => *w = Some(waker.clone()),
                }
                Poll::Pending
            }
            State::Free => unreachable!("get() filters free entries"),
        }
    }

    /// Fails every call still waiting on connection `epoch`, which wrote
    /// its first `written` bytes; returns their wakers. Calls none of whose
    /// request was written are told so (the retry loop retries them for
    /// free).
    pub(crate) fn fail_epoch(&mut self, epoch: u64, text: &str, written: u64) -> Vec<Waker> {
        self.fail_from(epoch, 0, text, written)
    }

    /// Fails the calls waiting on connection `epoch` whose requests were
    /// queued at or after its first `from` bytes, none of them written:
    /// the connection will send nothing more (see `fail_epoch`).
    pub(crate) fn fail_unsent(&mut self, epoch: u64, from: u64, text: &str) -> Vec<Waker> {
        self.fail_from(epoch, from, text, from)
    }

    /// Whether any call still waits on connection `epoch`.
    pub(crate) fn waits_on(&self, epoch: u64) -> bool {
        self.entries
            .iter()
            .any(|e| e.epoch == epoch && matches!(e.state, State::Waiting(_)))
    }

    fn fail_from(&mut self, epoch: u64, from: u64, text: &str, written: u64) -> Vec<Waker> {
        let mut wakers = Vec::new();
        for entry in &mut self.entries {
            if entry.epoch == epoch
                && entry.start >= from
                && matches!(entry.state, State::Waiting(_))
            {
                let mut status = Status::new(Code::EFAILEDSOCKET, text.to_owned());
                if written <= entry.start {
                    status = status.with_request_unwritten();
                }
                let State::Waiting(w) =
                    std::mem::replace(&mut entry.state, State::Done(Err(status)))
                else {
                    unreachable!("matched Waiting just above")
                };
                wakers.extend(w);
            }
        }
        wakers
    }

    /// The one way out of the table.
    fn release(&mut self, index: u32) {
        let entry = &mut self.entries[index as usize];
        entry.state = State::Free;
        self.live -= 1;
        if self.live == 0 {
            // Nothing pending: start over, giving back what a burst grew.
            self.entries.clear();
            self.free.clear();
            if self.entries.capacity() > KEEP {
                self.entries = Vec::new();
                self.free = Vec::new();
            }
            return;
        }
        self.free.push(index);
        // Mostly empty with a free tail: cut the tail (its indices stay in
        // the free list until `insert` skips them), and once the table fits
        // in half its capacity, give the rest back. Each shrink halves the
        // capacity at least, so the cost is amortised over the releases that
        // emptied it.
        if self.entries.capacity() > KEEP
            && self.live * 4 < self.entries.len()
            && matches!(self.entries.last(), Some(e) if matches!(e.state, State::Free))
        {
            while matches!(self.entries.last(), Some(e) if matches!(e.state, State::Free)) {
                self.entries.pop();
            }
            let len = self.entries.len();
            if len * 2 <= self.entries.capacity() {
                self.free.retain(|&i| (i as usize) < len);
                self.entries.shrink_to(len.max(KEEP));
                self.free.shrink_to(self.free.len().max(KEEP));
            }
        }
    }

    /// Entries allocated (for tests of the shrinking).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.entries.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_round_trip_and_stale_answers_are_dropped() {
        let mut table = PendingCalls::default();
        let keep = table.insert(1, 0);
        let a = table.insert(1, 0);
        assert_eq!(CallId::from_correlation_id(a.correlation_id()), a);
        table.remove(a);
        let b = table.insert(1, 0);
        assert_eq!(a.index, b.index, "entry reused");
        assert_ne!(a.correlation_id(), b.correlation_id(), "new generation");
        // The abandoned call's late answer finds nothing.
        assert!(table.complete(a, Ok(Reply::default())).is_none());
        assert!(matches!(
            table.entries[b.index as usize].state,
            State::Waiting(_)
        ));
        assert_eq!(table.len(), 2);
        table.remove(b);
        table.remove(keep);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn correlation_ids_are_not_reused_after_the_table_shrinks() {
        let mut table = PendingCalls::default();
        let ids: Vec<_> = (0..KEEP * 4).map(|_| table.insert(1, 0)).collect();
        let first = ids[0];
        for id in ids {
            table.remove(id);
        }
        assert_eq!(
            table.capacity(),
            0,
            "an idle, oversized table is given back"
        );
        let again = table.insert(1, 0);
        assert_eq!(again.index, first.index, "indices start over");
        assert_ne!(again.correlation_id(), first.correlation_id());
        assert!(table.complete(first, Ok(Reply::default())).is_none());
    }

    #[test]
    fn answered_calls_shrink_the_table_too() {
        let mut table = PendingCalls::default();
        let long = table.insert(1, 0);
        let burst: Vec<_> = (0..10_000).map(|_| table.insert(1, 0)).collect();
        // Answered in reverse: the tail empties first.
        for id in burst.into_iter().rev() {
            assert!(table.complete(id, Ok(Reply::default())).is_none());
            assert!(table.poll(id, Waker::noop()).is_ready());
        }
        assert_eq!(table.len(), 1);
        assert!(
            table.capacity() <= 2 * KEEP,
            "a burst answered while one call waits leaves {} entries",
            table.capacity()
        );
        table.remove(long);
        assert!(table.capacity() <= KEEP);
    }

    #[test]
    fn failing_an_epoch_fails_only_its_calls() {
        let mut table = PendingCalls::default();
        let old = table.insert(1, 0);
        let new = table.insert(2, 0);
        assert!(table.fail_epoch(1, "gone", 0).is_empty()); // no wakers registered
        match table.poll(old, Waker::noop()) {
            Poll::Ready(Err(s)) => assert_eq!(s.code(), Code::EFAILEDSOCKET),
            _ => panic!("old call must fail"),
        }
        assert!(table.poll(new, Waker::noop()).is_pending());
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_retired_connection_fails_only_the_calls_it_never_took() {
        let mut table = PendingCalls::default();
        // Requests of 100 bytes; the connection took the first two for
        // writing when its server said it was stopping.
        let calls: Vec<_> = (0..4).map(|i| table.insert(7, i * 100)).collect();
        let other = table.insert(8, 0);
        table.fail_unsent(7, 200, "stopping");
        let failed: Vec<Option<bool>> = calls
            .iter()
            .map(|&id| match table.poll(id, Waker::noop()) {
                Poll::Ready(Err(s)) => Some(s.request_unwritten()),
                Poll::Ready(Ok(_)) => panic!("no answer was given"),
                Poll::Pending => None,
            })
            .collect();
        assert_eq!(failed, [None, None, Some(true), Some(true)]);
        assert!(table.waits_on(7), "the first two still wait for answers");
        assert!(table.poll(other, Waker::noop()).is_pending());
        for &id in &calls[..2] {
            table.remove(id);
        }
        assert!(!table.waits_on(7));
        assert!(table.waits_on(8));
    }

    #[test]
    fn a_failed_connection_says_which_requests_it_never_wrote() {
        let mut table = PendingCalls::default();
        // Three requests of 100 bytes each; the connection wrote 150 bytes
        // (the first request and half the second) before it failed.
        let calls: Vec<_> = (0..3).map(|i| table.insert(7, i * 100)).collect();
        table.fail_epoch(7, "reset", 150);
        let unwritten: Vec<bool> = calls
            .iter()
            .map(|&id| match table.poll(id, Waker::noop()) {
                Poll::Ready(Err(s)) => {
                    assert_eq!(s.code(), Code::EFAILEDSOCKET);
                    s.request_unwritten()
                }
                _ => panic!("every call of the connection fails"),
            })
            .collect();
        // A partly written request may not have reached a handler either,
        // but the table cannot tell: it says "unwritten" only when sure.
        assert_eq!(unwritten, [false, false, true]);
    }
}
