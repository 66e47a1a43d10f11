//! Keel's cluster building blocks, without connections: who the servers of a
//! channel are ([`naming`]) and which one a call goes to ([`balance`]).
//!
//! ```text
//!   naming URL ── NamingService::run ──► NamingSink::update(Vec<Endpoint>)
//!                  (list / file / dns,        │  (keel's directory: one
//!                   or the user's own)        ▼   invoker per endpoint)
//!                                     Picker::new(kind, &servers)
//!                                             │
//!   each call ── Picker::pick(&servers, hash_key, excluded) ──► index
//! ```
//!
//! The `keel` crate builds the directory, invokers and cluster strategies
//! (failover, backup requests, circuit breaking) on top of these; nothing
//! here opens a connection, so all of it is testable without a network.

pub mod balance;
pub mod endpoint;
pub mod naming;

pub use balance::{Candidate, LoadBalancer, Picker};
pub use endpoint::{Endpoint, EndpointError};
pub use naming::{NamingService, NamingSink};

/// Servers shared by reference count (as keel's invokers are) are
/// candidates like the servers themselves.
impl<C: Candidate + ?Sized> Candidate for std::sync::Arc<C> {
    fn weight(&self) -> u32 {
        (**self).weight()
    }

    fn usable(&self) -> bool {
        (**self).usable()
    }

    fn in_flight(&self) -> u32 {
        (**self).in_flight()
    }

    fn latency_us(&self) -> u64 {
        (**self).latency_us()
    }

    fn hash(&self) -> u64 {
        (**self).hash()
    }
}
