//! The retry budget of a cluster channel (Finagle's): every attempt earns a
//! share of a retry, every retry spends one, and at most a reserve is saved
//! up, so a sick cluster is not hit by a retry storm on top of its load.
//!
//! Owns: the balance. May not touch: invokers, picks, calls; the cluster
//! earns on every answered attempt and the channel's retry loop spends.

use std::sync::atomic::{AtomicI64, Ordering};

/// Caps failover retries at a share of calls: every attempt earns `ratio`
/// of a retry, a retry spends one, and at most `reserve` retries are saved
/// up (the balance starts there).
///
/// Only retries after a failure whose request a handler may have run, or
/// an overload answer, spend the budget: a connection lost after the
/// request was (partly) written, a timeout, `ELIMIT`, `EOVERCROWDED`.
/// Retries after failures that cannot have reached a handler cost the
/// servers nothing and are free (still bounded by `max_retry` and the
/// deadline): a connection refused or not made in time, a connection lost
/// before any byte of the request was written, `ELOGOFF` (the server is
/// stopping), `EHOSTDOWN` (no server to pick).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// Retries earned per attempt (default 0.2: about one retry per four
    /// calls at most once the reserve is spent, retries earning too).
    pub ratio: f64,
    /// Retries saved up at most, and at the start (default 100).
    pub reserve: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ratio: 0.2,
            reserve: 100,
        }
    }
}

/// Calls earn their retry budget in batches of this many.
const EARN_EVERY: u64 = 8;

/// A budget's live balance, in thousandths of a retry.
#[derive(Debug)]
pub(crate) struct Tokens {
    /// `None`: no budget, retries are never refused.
    budget: Option<(i64, i64)>,
    balance: AtomicI64,
}

impl Tokens {
    pub(crate) fn new(budget: Option<RetryBudget>) -> Tokens {
        let budget = budget.map(|b| {
            let earn = (b.ratio.clamp(0.0, 1_000.0) * 1_000.0).round() as i64;
            (earn, i64::from(b.reserve) * 1_000)
        });
        Tokens {
            balance: AtomicI64::new(budget.map_or(0, |(_, cap)| cap)),
            budget,
        }
    }

    /// One answered attempt, the `calls`-th of some counter the caller
    /// keeps anyway (an invoker's): attempts earn in batches of
    /// `EARN_EVERY`, one shared atomic add per batch.
    pub(crate) fn earn(&self, calls: u64) {
        if let Some((earn, _)) = self.budget {
            if calls % EARN_EVERY == 0 {
                self.balance
                    .fetch_add(earn * EARN_EVERY as i64, Ordering::Relaxed);
            }
        }
    }

    /// Takes one retry, if the budget has one.
    pub(crate) fn spend(&self) -> bool {
        let Some((_, cap)) = self.budget else {
            return true;
        };
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                let balance = balance.min(cap);
                (balance >= 1_000).then_some(balance - 1_000)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_starts_full_and_refills_from_calls() {
        let tokens = Tokens::new(Some(RetryBudget {
            ratio: 0.25,
            reserve: 3,
        }));
        assert!((0..3).all(|_| tokens.spend()), "the reserve");
        assert!(!tokens.spend(), "spent");
        // 8 calls earn 2 retries at 25%, in one batch.
        for calls in 1..=8 {
            tokens.earn(calls);
        }
        assert!(tokens.spend() && tokens.spend());
        assert!(!tokens.spend());
        // A long healthy spell saves up no more than the reserve.
        for calls in 9..=8_000 {
            tokens.earn(calls);
        }
        assert_eq!((0..10).filter(|_| tokens.spend()).count(), 3);
        // No budget: retries are never refused.
        let unlimited = Tokens::new(None);
        assert!((0..1_000).all(|_| unlimited.spend()));
    }
}
