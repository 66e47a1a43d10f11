//! [`ServerState`]: a candidate whose state is set from code.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use super::{Candidate, endpoint_hash};

/// A server as a balancer sees it, with every field set from code: for
/// tests, benchmarks and simulations of balancers without connections.
/// Keel's invokers are the real candidates.
#[derive(Debug)]
pub struct ServerState {
    /// See [`Candidate::weight`].
    pub weight: u32,
    /// See [`Candidate::usable`].
    pub usable: AtomicBool,
    /// See [`Candidate::in_flight`].
    pub in_flight: AtomicU32,
    /// See [`Candidate::latency_us`].
    pub latency_us: AtomicU64,
    /// See [`Candidate::hash`].
    pub hash: u64,
}

impl ServerState {
    /// A usable, idle server at `addr` of weight `weight`.
    pub fn new(addr: &str, weight: u32) -> ServerState {
        ServerState {
            weight,
            usable: AtomicBool::new(true),
            in_flight: AtomicU32::new(0),
            latency_us: AtomicU64::new(0),
            hash: endpoint_hash(addr),
        }
    }

    /// Sets the calls in flight and the latency.
    pub fn load(&self, in_flight: u32, latency_us: u64) {
        self.in_flight.store(in_flight, Relaxed);
        self.latency_us.store(latency_us, Relaxed);
    }
}

impl Candidate for ServerState {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn usable(&self) -> bool {
        self.usable.load(Relaxed)
    }
    fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }
    fn latency_us(&self) -> u64 {
        self.latency_us.load(Relaxed)
    }
    fn hash(&self) -> u64 {
        self.hash
    }
}
