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
