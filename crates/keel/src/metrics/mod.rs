//! Measurements Keel reports about itself: latency histograms now; per-method
//! and process variables for the console later.

mod histogram;

pub use histogram::LatencyHistogram;
