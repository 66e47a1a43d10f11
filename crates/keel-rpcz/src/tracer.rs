//! [`Tracer`]: the sampler and the store together, as a server or channel
//! uses them.

use std::sync::Arc;
use std::time::Instant;

use crate::sampler::Sampler;
use crate::store::Store;
use crate::tree::{SpanHandle, TraceContext};

/// Opens spans for calls, deciding with its [`Sampler`] and sending finished
/// trees to its [`Store`]. One per server (or per process).
#[derive(Debug)]
pub struct Tracer {
    sampler: Sampler,
    store: Arc<Store>,
}

impl Tracer {
    /// A tracer with this sampler and store.
    pub fn new(sampler: Sampler, store: Arc<Store>) -> Tracer {
        Tracer { sampler, store }
    }

    /// The sampler (e.g. to change the target rate).
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// The store of finished trees.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A server span for a request that arrived at `received`, or an
    /// unsampled handle. A request carrying a trace id (`incoming` with a
    /// non-zero `trace_id`) is always traced: its caller is tracing.
    #[inline]
    pub fn server(
        &self,
        method: &'static str,
        incoming: Option<TraceContext>,
        received: Instant,
    ) -> SpanHandle {
        let forced = incoming.is_some_and(|c| c.trace_id != 0);
        if self.sampler.sample(forced) {
            SpanHandle::server(&self.store, method, incoming, received)
        } else {
            SpanHandle::none()
        }
    }

    /// A client span for an outgoing call. Under a current span (the server
    /// span being handled, or a client span) it is that span's child, traced
    /// exactly when the current span is, so a trace is whole or absent. With
    /// no current span the sampler decides, and a sampled call is the root
    /// of its own tree.
    #[inline]
    pub fn client(&self, current: Option<&SpanHandle>, method: &'static str) -> SpanHandle {
        match current {
            Some(parent) => parent.child(method),
            None if self.sampler.should_sample() => {
                SpanHandle::client_root(&self.store, method, Instant::now())
            }
            None => SpanHandle::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    fn tracer(target: u64) -> Tracer {
        Tracer::new(
            Sampler::new(target),
            Arc::new(Store::new(StoreConfig::default())),
        )
    }

    #[test]
    fn incoming_trace_is_forced_even_when_off() {
        let t = tracer(0);
        assert!(!t.server("a.B.C", None, Instant::now()).is_sampled());
        let ctx = TraceContext {
            trace_id: 9,
            span_id: 8,
            parent_span_id: 0,
        };
        let s = t.server("a.B.C", Some(ctx), Instant::now());
        assert!(s.is_sampled());
        let c = t.client(Some(&s), "x.Y.Z");
        assert_eq!(c.context().unwrap().trace_id, 9);
        c.finish(0);
        s.finish(0);
        assert_eq!(t.store().len(), 1);
        t.store().clear();
    }

    #[test]
    fn client_follows_its_parent_or_samples_alone() {
        let t = tracer(1_000);
        let none = SpanHandle::none();
        assert!(!t.client(Some(&none), "x.Y.Z").is_sampled());
        let root = t.client(None, "x.Y.Z");
        assert!(root.is_sampled());
        assert_eq!(root.context().unwrap().parent_span_id, 0);
        root.finish(0);
        assert_eq!(t.store().len(), 1);
        t.store().clear();
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SpanHandle>();
        check::<Tracer>();
        check::<Store>();
    }
}
