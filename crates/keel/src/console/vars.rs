//! Every counter and gauge Keel keeps, by name: what `/vars` lists and
//! charts, and what `/metrics` exposes to Prometheus.
//!
//! Names follow Prometheus's conventions (`keel_` prefix, base units,
//! `_total` for counters). The list is the same for the life of a process
//! (whether the counting allocator is installed cannot change), so the
//! sampler keeps each variable's history by its position.

use std::sync::atomic::Ordering;

use crate::server::builder::ServerCore;

/// Counter (only grows) or gauge (goes up and down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One variable's value now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Var {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) kind: Kind,
    pub(crate) value: f64,
}

fn var(name: &'static str, help: &'static str, kind: Kind, value: impl Into<f64>) -> Var {
    Var {
        name,
        help,
        kind,
        value: value.into(),
    }
}

fn u(v: u64) -> f64 {
    v as f64
}

pub(crate) use keel_alloc::resident_bytes;

/// The most variables [`each`] reports (with the counting allocator).
pub(crate) const MAX: usize = 39;

/// Every variable, now.
pub(crate) fn all(core: &ServerCore) -> Vec<Var> {
    let mut vars = Vec::with_capacity(MAX);
    each(core, |v| vars.push(v));
    vars
}

/// Calls `f` with every variable, in a fixed order, allocating nothing.
pub(crate) fn each(core: &ServerCore, mut f: impl FnMut(Var)) {
    use Kind::{Counter, Gauge};
    let c = &core.dispatcher.stats;
    let limits = core.dispatcher.limits();
    let rejected = limits.global.rejected()
        + limits
            .methods
            .iter()
            .map(crate::server::limit::Limiter::rejected)
            .sum::<u64>();
    let (mut pool_bytes, mut pool_live, mut pool_cached) = (0, 0, 0);
    keel_pool::for_each_stats(|p| {
        pool_bytes += p.bytes;
        pool_live += p.live;
        pool_cached += p.cached;
    });
    let store = crate::rpcz::tracer().store().stats();
    let etcd = &crate::etcd::STATS;
    let limited = &core.limit_counters;
    let reconnect = &crate::transport::reconnect::STATS;
    let busy = &crate::busy_poll::STATS;
    let fixed: [Var; MAX - 3] = [
        var(
            "keel_server_connections",
            "Connections open now (every protocol).",
            Gauge,
            u(c.connections.load(Ordering::Relaxed) as u64),
        ),
        var(
            "keel_server_connections_accepted_total",
            "Connections accepted.",
            Counter,
            u(c.accepted.load(Ordering::Relaxed)),
        ),
        var(
            "keel_server_calls_total",
            "Calls answered (successes and errors, every protocol).",
            Counter,
            u(c.calls.load(Ordering::Relaxed)),
        ),
        var(
            "keel_server_errors_total",
            "Calls answered with an error.",
            Counter,
            u(c.errors.load(Ordering::Relaxed)),
        ),
        var(
            "keel_server_in_flight",
            "Calls being handled now.",
            Gauge,
            u(limits.global.current() as u64),
        ),
        var(
            "keel_server_rejected_total",
            "Calls refused by a concurrency limit.",
            Counter,
            u(rejected),
        ),
        var(
            "keel_server_received_bytes_total",
            "Bytes read from connections.",
            Counter,
            u(c.bytes_in.load(Ordering::Relaxed)),
        ),
        var(
            "keel_server_sent_bytes_total",
            "Bytes written to connections.",
            Counter,
            u(c.bytes_out.load(Ordering::Relaxed)),
        ),
        var(
            "keel_server_keepalive_pings_total",
            "HTTP/2 keepalive pings sent to gRPC clients.",
            Counter,
            u(c.keepalive_pings.load(Ordering::Relaxed)),
        ),
        var(
            "keel_server_first_request_timeouts_total",
            "Connections closed because their first request did not come in time.",
            Counter,
            u(limited.first_request_timeouts.load(Ordering::Relaxed)),
        ),
        var(
            "keel_server_idle_closes_total",
            "Connections closed after being idle for the idle timeout.",
            Counter,
            u(limited.idle_closes.load(Ordering::Relaxed)),
        ),
        var(
            "keel_server_refused_connections_total",
            "Connections closed at accept, over the maximum number of connections.",
            Counter,
            u(limited.refused_connections.load(Ordering::Relaxed)),
        ),
        var(
            "keel_server_refused_calls_total",
            "Calls refused for being over the maximum in flight on one connection.",
            Counter,
            u(limited.refused_calls.load(Ordering::Relaxed)),
        ),
        var(
            "keel_server_tls_connections_total",
            "TLS connections set up (handshakes that succeeded).",
            Counter,
            u(limited.tls_connections.load(Ordering::Relaxed)),
        ),
        var(
            "keel_server_tls_handshake_failures_total",
            "TLS handshakes that failed, or came to a server without TLS.",
            Counter,
            u(limited.tls_failures.load(Ordering::Relaxed)),
        ),
        var(
            "keel_busy_poll_hits_total",
            "Times a connection with a lone caller polled its socket and found the next request, or on a client the answer (ServerBuilder::busy_poll, ChannelBuilder::busy_poll).",
            Counter,
            u(busy.hits.load(Ordering::Relaxed)),
        ),
        var(
            "keel_busy_poll_misses_total",
            "Times such polling ran out its window with nothing read.",
            Counter,
            u(busy.misses.load(Ordering::Relaxed)),
        ),
        var(
            "keel_busy_poll_microseconds_total",
            "Time spent polling sockets instead of sleeping (CPU time).",
            Counter,
            u(busy.nanos.load(Ordering::Relaxed) / 1_000),
        ),
        var(
            "keel_process_resident_memory_bytes",
            "Resident set size of the process.",
            Gauge,
            u(resident_bytes()),
        ),
        var(
            "keel_allocator_trims_total",
            "Times a quiet server gave the allocator's free memory back to the OS (malloc_trim).",
            Counter,
            u(crate::server::memory::trims()),
        ),
        var(
            "keel_allocator_released_bytes_total",
            "Resident bytes those trims gave back to the OS.",
            Counter,
            u(crate::server::memory::released_bytes()),
        ),
        var(
            "keel_pool_bytes",
            "Bytes every keel-pool holds (blocks, bookkeeping, cached objects' buffers).",
            Gauge,
            u(pool_bytes),
        ),
        var(
            "keel_pool_live_objects",
            "Pooled objects handed out now.",
            Gauge,
            u(pool_live),
        ),
        var(
            "keel_pool_cached_objects",
            "Free pooled objects kept for reuse.",
            Gauge,
            u(pool_cached),
        ),
        var(
            "keel_invokers",
            "Live invokers of every cluster channel (destroyed ones still draining included).",
            Gauge,
            u(crate::cluster::live_invokers() as u64),
        ),
        var(
            "keel_client_reconnects_total",
            "Connection attempts to an endpoint after its first (every protocol): reconnections after a connection closed, broke or was refused.",
            Counter,
            u(reconnect.reconnects.load(Ordering::Relaxed)),
        ),
        var(
            "keel_client_reconnect_backoffs_total",
            "Waits begun before connecting again to an endpoint whose connection broke (or failed its handshake) with no answer since the last such failure.",
            Counter,
            u(reconnect.backoffs.load(Ordering::Relaxed)),
        ),
        var(
            "keel_client_backoff_refusals_total",
            "Calls failed at once (EFAILEDSOCKET, not written, so retried elsewhere) because their endpoint was waiting to reconnect.",
            Counter,
            u(reconnect.refused.load(Ordering::Relaxed)),
        ),
        var(
            "keel_client_bad_responses_total",
            "Answers a client could not read (a baidu_std meta that does not parse): each failed its own call when its id could be read, never the connection.",
            Counter,
            u(crate::transport::BAD_RESPONSES.load(Ordering::Relaxed)),
        ),
        var(
            "keel_etcd_watches",
            "etcd naming watches open now (one per channel on an etcd:// URL).",
            Gauge,
            u(etcd.watches.load(Ordering::Relaxed) as u64),
        ),
        var(
            "keel_etcd_registrations",
            "Registrations whose key is in etcd now.",
            Gauge,
            u(etcd.registered.load(Ordering::Relaxed) as u64),
        ),
        var(
            "keel_etcd_naming_updates_total",
            "Endpoint sets etcd naming sent to channels (a listing, or a batch of watch events).",
            Counter,
            u(etcd.updates.load(Ordering::Relaxed)),
        ),
        var(
            "keel_etcd_failures_total",
            "Connections to etcd lost or refused (naming and registration); each is retried on the next endpoint.",
            Counter,
            u(etcd.failures.load(Ordering::Relaxed)),
        ),
        var(
            "keel_rpcz_target_spans_per_second",
            "The rpcz sampler's target (0: tracing off).",
            Gauge,
            u(crate::rpcz::tracer().sampler().target()),
        ),
        var(
            "keel_rpcz_stored_traces",
            "Span trees held by the rpcz store.",
            Gauge,
            u(store.trees as u64),
        ),
        var(
            "keel_rpcz_store_bytes",
            "Bytes held by the rpcz store.",
            Gauge,
            u(store.bytes as u64),
        ),
    ];
    for v in fixed {
        f(v);
    }
    if keel_alloc::is_installed() {
        f(var(
            "keel_heap_live_bytes",
            "Heap bytes allocated and not freed (counting allocator).",
            Gauge,
            u(keel_alloc::live_bytes()),
        ));
        f(var(
            "keel_heap_allocations_total",
            "Heap allocations made (counting allocator): per call, with keel_server_calls_total.",
            Counter,
            u(keel_alloc::stats().allocs),
        ));
        f(var(
            "keel_heap_peak_bytes",
            "Largest live heap seen (counting allocator).",
            Gauge,
            u(keel_alloc::peak_bytes()),
        ));
    }
}
