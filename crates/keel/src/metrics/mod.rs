//! Measurements Keel reports about itself: latency histograms and per-method
//! call statistics (of channels and servers); process variables for the
//! console later.

pub mod buckets;
mod histogram;
mod method_stats;

pub use histogram::LatencyHistogram;
pub use method_stats::MethodStatsSnapshot;
pub(crate) use method_stats::{MethodStats, MethodStatsTable};
