//! The table of calls sent on one connection and waiting for their answer.
//!
//! ```text
//!   insert ──► CallId (a number never reused) ──► correlation id on the wire
//!                 │
//!   answer ── complete(id, result) ── Waiting(waker) ─► Done(result) + wake
//!                 │
//!   the call ── poll(id) ── Done? take it ──┐
//!   the call dropped ── remove(id) ─────────┴─► release(id): the one way
//!                                               out; shrinks the table
//! ```
//!
//! Owns: entries by call id and the table's capacity. Matching an answer
//! is a hash lookup of its correlation id; ids come from one counter for
//! the whole table, so an id is never reused and a late answer to an
//! abandoned call finds nothing.
//!
//! Every entry leaves through [`PendingCalls::release`] (answered, failed,
//! timed out or dropped), and that is where the table gives back what a
//! burst made it grow (rule R7). Entries are keyed by id, not by position,
//! so no entry pins others: the table's memory follows the calls still
//! pending (within a factor of four), whichever of them is left.
//!
//! May not touch: sockets, frames or wakeups (it returns wakers; the
//! connection wakes them outside its lock).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::task::{Poll, Waker};

use tokio::time::Instant;

use crate::status::{Code, Status};
use crate::transport::Reply;

/// Entries kept however empty the table gets (a small constant).
const KEEP: usize = 64;

/// Identifies a pending call; it is also the call's correlation id on the
/// wire. Ids of one table count up from 1 and are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CallId(u64);

impl CallId {
    pub(crate) fn correlation_id(self) -> i64 {
        self.0 as i64
    }

    pub(crate) fn from_correlation_id(cid: i64) -> CallId {
        CallId(cid as u64)
    }
}

/// Hashes a call id (or an HTTP/2 stream id), a counter, by one multiplication (Fibonacci hashing):
/// consecutive ids spread over the whole table, and the hot path pays no
/// general-purpose hasher.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u32(&mut self, id: u32) {
        self.write_u64(u64::from(id));
    }
}

/// An answer as its connection hands it over: the payload still as the
/// server compressed it (`compress_type`, brpc's number). The call
/// decompresses it in its own task, so a large or hostile payload never
/// holds up the connection's other calls, and costs nothing once the call
/// is gone.
#[derive(Debug, Default)]
pub(crate) struct Arrived {
    pub(crate) reply: Reply,
    pub(crate) compress_type: i32,
}

enum State {
    Waiting(Option<Waker>),
    Done(Result<Arrived, Status>),
}

struct Entry {
    /// The connection the call was sent on: a failed connection fails
    /// exactly its own calls.
    epoch: u64,
    /// Where its request begins in the bytes queued on that connection:
    /// when the connection fails having written no more than this, no byte
    /// of the request left, and no handler can have run it.
    start: u64,
    /// When the caller gives up: the connection fails the call then.
    deadline: Option<Instant>,
    state: State,
}

/// Pending calls of one connection (across its reconnections).
#[derive(Default)]
pub(crate) struct PendingCalls {
    entries: HashMap<CallId, Entry, BuildHasherDefault<IdHasher>>,
    last_id: u64,
    /// No waiting call's deadline is earlier (one may be later: it is
    /// recomputed only by [`expire`](Self::expire)).
    earliest: Option<Instant>,
    /// Entries still waiting for their answer (the others hold one their
    /// caller has not taken yet).
    waiting: usize,
}

impl PendingCalls {
    /// Calls in the table: waiting, or answered and not yet taken.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Calls still waiting for their answer.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Registers a call sent on connection `epoch`, its request queued
    /// after the connection's first `start` bytes, to wake `waker` when it
    /// is answered, or failed when `deadline` passes (see
    /// [`expire`](Self::expire)).
    pub(crate) fn insert(
        &mut self,
        epoch: u64,
        start: u64,
        deadline: Option<Instant>,
        waker: &Waker,
    ) -> CallId {
        if let Some(d) = deadline {
            self.earliest = Some(self.earliest.map_or(d, |e| e.min(d)));
        }
        // Positive as an i64 for 2^63 calls: never wraps in practice.
        self.last_id += 1;
        self.waiting += 1;
        let id = CallId(self.last_id);
        self.entries.insert(
            id,
            Entry {
                epoch,
                start,
                deadline,
                state: State::Waiting(Some(waker.clone())),
            },
        );
        id
    }

    /// The call was abandoned (its future dropped): forget it.
    pub(crate) fn remove(&mut self, id: CallId) {
        self.release(id);
    }

    /// Hands `result` to the call `id`, if it still waits; returns its
    /// waker. A duplicate answer keeps the first.
    pub(crate) fn complete(
        &mut self,
        id: CallId,
        result: Result<Arrived, Status>,
    ) -> Option<Waker> {
        let entry = self.entries.get_mut(&id)?;
        match std::mem::replace(&mut entry.state, State::Done(result)) {
            State::Waiting(waker) => {
                self.waiting -= 1;
                waker
            }
            other => {
                entry.state = other;
                None
            }
        }
    }

    /// The call's result once it has one (which releases it); else keeps
    /// `waker` to be woken.
    pub(crate) fn poll(&mut self, id: CallId, waker: &Waker) -> Poll<Result<Arrived, Status>> {
        let Some(entry) = self.entries.get_mut(&id) else {
            return Poll::Ready(Err(Status::internal("pending call vanished")));
        };
        match &mut entry.state {
            State::Done(_) => match self.release(id) {
                Some(State::Done(result)) => Poll::Ready(result),
                _ => unreachable!("matched Done just above"),
            },
            State::Waiting(w) => {
                match w {
                    Some(w) if w.will_wake(waker) => {}
                    _ => *w = Some(waker.clone()),
                }
                Poll::Pending
            }
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

    /// When [`expire`](Self::expire) may next find a call whose deadline
    /// passed (no waiting call's deadline is earlier).
    pub(crate) fn earliest(&self) -> Option<Instant> {
        self.earliest
    }

    /// Fails with `ERPCTIMEDOUT` every waiting call whose deadline is `now`
    /// or earlier (its caller gave up: the answer would find nobody),
    /// returns their wakers, and finds the next earliest deadline. The
    /// connection calls it when [`earliest`](Self::earliest) comes: one
    /// timer per connection, not one per call.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Waker> {
        let mut wakers = Vec::new();
        let mut earliest = None::<Instant>;
        for entry in self.entries.values_mut() {
            let (Some(deadline), State::Waiting(_)) = (entry.deadline, &entry.state) else {
                continue;
            };
            if deadline > now {
                earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                continue;
            }
            let status = Status::new(Code::ERPCTIMEDOUT, "no answer before the call's deadline");
            if let State::Waiting(w) = std::mem::replace(&mut entry.state, State::Done(Err(status)))
            {
                self.waiting -= 1;
                wakers.extend(w);
            }
        }
        self.earliest = earliest;
        wakers
    }

    /// Whether any call still waits on connection `epoch`.
    pub(crate) fn waits_on(&self, epoch: u64) -> bool {
        self.entries
            .values()
            .any(|e| e.epoch == epoch && matches!(e.state, State::Waiting(_)))
    }

    fn fail_from(&mut self, epoch: u64, from: u64, text: &str, written: u64) -> Vec<Waker> {
        let mut wakers = Vec::new();
        for entry in self.entries.values_mut() {
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
                self.waiting -= 1;
                wakers.extend(w);
            }
        }
        wakers
    }

    /// The one way out of the table: removes `id` (if present) and gives
    /// back capacity once the table is mostly empty. Each shrink at least
    /// halves the capacity, so its cost is amortised over the releases
    /// that emptied it.
    fn release(&mut self, id: CallId) -> Option<State> {
        let entry = self.entries.remove(&id)?;
        if matches!(entry.state, State::Waiting(_)) {
            self.waiting -= 1;
        }
        let (len, capacity) = (self.entries.len(), self.entries.capacity());
        // `shrink_to(KEEP)` leaves a little under 2 * KEEP (hash tables
        // round up), so a table at its floor is not rehashed again.
        if capacity > 2 * KEEP && len * 4 < capacity {
            self.entries.shrink_to((len * 2).max(KEEP));
        }
        Some(entry.state)
    }

    /// The connection went quiet: the table keeps room for the calls still
    /// pending and no more, nothing at all when none is (the [`KEEP`] floor
    /// spares a busy table rehashing, not an idle one). A burst's table
    /// would otherwise stay at that floor, 17 KB, while the connection idles.
    pub(crate) fn quiet(&mut self) {
        if self.entries.capacity() > self.entries.len() {
            self.entries.shrink_to(self.entries.len());
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
        let keep = table.insert(1, 0, None, Waker::noop());
        let a = table.insert(1, 0, None, Waker::noop());
        assert_eq!(CallId::from_correlation_id(a.correlation_id()), a);
        table.remove(a);
        let b = table.insert(1, 0, None, Waker::noop());
        assert_ne!(a.correlation_id(), b.correlation_id(), "ids are not reused");
        // The abandoned call's late answer finds nothing.
        assert!(table.complete(a, Ok(Arrived::default())).is_none());
        assert!(matches!(table.entries[&b].state, State::Waiting(_)));
        assert_eq!(table.len(), 2);
        table.remove(b);
        table.remove(keep);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn waiting_counts_the_calls_without_an_answer_on_every_path() {
        let mut table = PendingCalls::default();
        let now = Instant::now();
        let answered = table.insert(1, 0, None, Waker::noop());
        let abandoned = table.insert(1, 0, None, Waker::noop());
        let expired = table.insert(1, 0, Some(now), Waker::noop());
        let failed = table.insert(1, 10, None, Waker::noop());
        let other = table.insert(2, 0, None, Waker::noop());
        assert_eq!(table.waiting(), 5);
        assert!(table.complete(answered, Ok(Arrived::default())).is_some());
        // A second answer changes nothing.
        assert!(table.complete(answered, Ok(Arrived::default())).is_none());
        assert_eq!(
            (table.waiting(), table.len()),
            (4, 5),
            "answered, not yet taken"
        );
        table.remove(abandoned);
        assert_eq!(table.waiting(), 3);
        assert_eq!(table.expire(now).len(), 1);
        assert_eq!(table.waiting(), 2);
        assert_eq!(table.fail_unsent(1, 10, "gone").len(), 1);
        assert_eq!(table.waiting(), 1);
        // Taking or dropping an answered call leaves the count alone.
        assert!(table.poll(answered, Waker::noop()).is_ready());
        table.remove(expired);
        table.remove(failed);
        assert_eq!((table.waiting(), table.len()), (1, 1));
        assert_eq!(table.fail_epoch(2, "gone", 0).len(), 1);
        assert_eq!(table.waiting(), 0);
        table.remove(other);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn correlation_ids_are_not_reused_after_the_table_shrinks() {
        let mut table = PendingCalls::default();
        let ids: Vec<_> = (0..KEEP * 4)
            .map(|_| table.insert(1, 0, None, Waker::noop()))
            .collect();
        let first = ids[0];
        for id in ids {
            table.remove(id);
        }
        assert!(
            table.capacity() <= 2 * KEEP,
            "an idle, oversized table is given back: {}",
            table.capacity()
        );
        let again = table.insert(1, 0, None, Waker::noop());
        assert_ne!(again.correlation_id(), first.correlation_id());
        assert!(table.complete(first, Ok(Arrived::default())).is_none());
    }

    #[test]
    fn a_quiet_table_keeps_room_for_its_pending_calls_only() {
        let mut table = PendingCalls::default();
        let ids: Vec<_> = (0..KEEP * 4)
            .map(|_| table.insert(1, 0, None, Waker::noop()))
            .collect();
        for id in &ids[1..] {
            table.remove(*id);
        }
        assert!(table.capacity() >= KEEP, "a busy table keeps its floor");
        table.quiet();
        assert!(
            table.capacity() < 4,
            "{} entries kept for one call",
            table.capacity()
        );
        table.remove(ids[0]);
        table.quiet();
        assert_eq!(table.capacity(), 0, "an idle empty table holds nothing");
    }

    #[test]
    fn answered_calls_shrink_the_table_too() {
        let mut table = PendingCalls::default();
        let long = table.insert(1, 0, None, Waker::noop());
        let burst: Vec<_> = (0..10_000)
            .map(|_| table.insert(1, 0, None, Waker::noop()))
            .collect();
        // Answered in reverse: the tail empties first.
        for id in burst.into_iter().rev() {
            assert!(table.complete(id, Ok(Arrived::default())).is_some());
            assert!(table.poll(id, Waker::noop()).is_ready());
        }
        assert_eq!(table.len(), 1);
        assert!(
            table.capacity() <= 2 * KEEP,
            "a burst answered while one call waits leaves {} entries",
            table.capacity()
        );
        table.remove(long);
        assert!(table.capacity() <= 2 * KEEP);
    }

    #[test]
    fn one_long_call_does_not_keep_a_bursts_table() {
        let mut table = PendingCalls::default();
        let burst: Vec<_> = (0..10_000)
            .map(|_| table.insert(1, 0, None, Waker::noop()))
            .collect();
        // The last call of the burst (the highest id) waits on; the others
        // are answered in the order they were sent.
        let long = *burst.last().expect("a burst");
        for &id in &burst[..burst.len() - 1] {
            assert!(table.complete(id, Ok(Arrived::default())).is_some());
            assert!(table.poll(id, Waker::noop()).is_ready());
        }
        assert_eq!(table.len(), 1);
        assert!(
            table.capacity() <= 2 * KEEP,
            "one long call keeps {} entries of a 10,000-call burst",
            table.capacity()
        );
        assert!(table.poll(long, Waker::noop()).is_pending());
        assert!(
            table.complete(long, Ok(Arrived::default())).is_some(),
            "its waker"
        );
        assert!(table.poll(long, Waker::noop()).is_ready());
    }

    #[test]
    fn failing_an_epoch_fails_only_its_calls() {
        let mut table = PendingCalls::default();
        let old = table.insert(1, 0, None, Waker::noop());
        let new = table.insert(2, 0, None, Waker::noop());
        assert_eq!(table.fail_epoch(1, "gone", 0).len(), 1); // the old call's waker
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
        let calls: Vec<_> = (0..4)
            .map(|i| table.insert(7, i * 100, None, Waker::noop()))
            .collect();
        let other = table.insert(8, 0, None, Waker::noop());
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
        let calls: Vec<_> = (0..3)
            .map(|i| table.insert(7, i * 100, None, Waker::noop()))
            .collect();
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

    #[test]
    fn calls_past_their_deadline_are_failed_and_the_next_deadline_found() {
        let mut table = PendingCalls::default();
        let now = Instant::now();
        let at = |ms| Some(now + std::time::Duration::from_millis(ms));
        let none = table.insert(1, 0, None, Waker::noop());
        let late = table.insert(1, 0, at(300), Waker::noop());
        let soon = table.insert(1, 0, at(100), Waker::noop());
        let answered = table.insert(1, 0, at(50), Waker::noop());
        assert_eq!(table.earliest(), at(50));
        table.complete(answered, Ok(Arrived::default()));
        // Nothing due yet: the answered call's deadline is dropped.
        assert!(table.expire(now).is_empty());
        assert_eq!(table.earliest(), at(100));
        assert_eq!(table.expire(at(100).unwrap()).len(), 1, "one woken");
        assert_eq!(table.earliest(), at(300));
        let Poll::Ready(Err(status)) = table.poll(soon, Waker::noop()) else {
            panic!("the call past its deadline failed");
        };
        assert_eq!(status.code(), Code::ERPCTIMEDOUT);
        assert!(table.poll(late, Waker::noop()).is_pending());
        assert!(table.poll(none, Waker::noop()).is_pending());
        assert!(table.poll(answered, Waker::noop()).is_ready());
        assert_eq!(table.expire(at(10_000).unwrap()).len(), 1);
        assert_eq!(
            table.earliest(),
            None,
            "only a call without a deadline waits"
        );
        assert!(table.poll(none, Waker::noop()).is_pending());
    }
}
