//! The object-safe [`Service`] trait servers dispatch into, and the helpers
//! generated adapters implement it with.

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::codec::{RequiredSchema, merge_request};
use crate::context::Context;
use crate::method::{MethodDescriptor, ServiceDescriptor};
use crate::status::{Code, Status};

/// The future of one dispatched call: `Ok(())` once the encoded response has
/// been appended to the caller's buffer. A type-erased future in a pooled
/// block ([`keel_pool::FutureBox`]): `ServiceFuture::new(async move { .. })`
/// where you would write `Box::pin(..)`; no allocation per call in steady
/// state.
pub type ServiceFuture<'a> = keel_pool::FutureBox<'a, Result<(), Status>>;

/// A protobuf service as the server sees it: a descriptor and one entry point
/// taking raw payloads. Object-safe, so servers hold `Arc<dyn Service>`.
///
/// Generated `FooServer<S>` adapters implement it: they decode the request
/// (failure is [`Code::EREQUEST`]), call the user's `async fn`, and encode the
/// response. Write one by hand to serve something without generated code
/// (a proxy, a reflection service).
pub trait Service: Send + Sync + 'static {
    /// The service's static descriptor; its name and method list are what
    /// the [`MethodTable`](crate::server::MethodTable) routes by.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// Serves one call of `self.descriptor().methods[method]`.
    ///
    /// `request` is the request message exactly as received (decompressed);
    /// on success the encoded response message has been **appended** to
    /// `response`, which the caller owns and may reuse across calls. The
    /// response attachment, if any, is in `ctx`. An index out of range
    /// resolves to [`Code::ENOMETHOD`].
    ///
    /// Cost: the returned future lives in a pooled block; in steady state
    /// no heap allocation.
    fn call<'a>(
        &'a self,
        method: usize,
        ctx: &'a Context,
        request: Bytes,
        response: &'a mut BytesMut,
    ) -> ServiceFuture<'a>;

    /// Serves one streaming call (client-, server- or bidirectional
    /// streaming) of `self.descriptor().methods[method]`: read the requests
    /// from `stream`, send the responses to it, and resolve to the call's
    /// status, which ends the stream. Generated adapters implement it for
    /// services with streaming methods; the default answers
    /// [`Code::ENOMETHOD`] (a unary-only service).
    fn call_stream<'a>(
        &'a self,
        method: usize,
        ctx: &'a Context,
        stream: &'a mut crate::streaming::ServerStream,
    ) -> ServiceFuture<'a> {
        let _ = (ctx, stream);
        unknown_method(self.descriptor(), method)
    }
}

/// The [`Code::ENOMETHOD`] answer for a method index `service` does not serve
/// (out of range, or a streaming method in a unary-only build).
pub fn unknown_method(
    service: &'static ServiceDescriptor,
    method: usize,
) -> ServiceFuture<'static> {
    let message = match service.methods.get(method) {
        Some(m) => format!(
            "{m} is a {:?} method, which this service does not serve",
            m.kind
        ),
        None => format!("{} has no method #{method}", service.name),
    };
    ServiceFuture::new(std::future::ready(Err(Status::new(
        Code::ENOMETHOD,
        message,
    ))))
}

/// The request and response messages of one method, pooled: a handler gets
/// `&Req` and `&mut Resp` that keep the capacity (strings, vectors) earlier
/// calls grew, so decoding a request and building a response allocate
/// nothing in steady state — brpc's `(request, response)` handler shape, for
/// the same reason. Generated adapters keep one as a `static` per method.
///
/// A message that held more than [`MessagePools::MAX_KEPT_LEN`] encoded
/// bytes is dropped rather than pooled, so one large call does not pin its
/// capacity (rule R7). The pools are keel-pool pools: they trim themselves,
/// report their statistics (the capacity pooled messages keep included, as
/// an estimate: the largest encoded length each had), and are listed with
/// every other pool.
pub struct MessagePools<
    Req: Message + Default + Send + 'static,
    Resp: Message + Default + Send + 'static,
> {
    requests: keel_pool::Pool<Pooled<Req>>,
    responses: keel_pool::Pool<Pooled<Resp>>,
}

impl<Req, Resp> std::fmt::Debug for MessagePools<Req, Resp>
where
    Req: Message + Default + Send + 'static,
    Resp: Message + Default + Send + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessagePools")
            .field("requests", &self.requests.name())
            .field("responses", &self.responses.name())
            .finish()
    }
}

/// A message in a pool: cleared on return, or dropped when it grew large.
///
/// `kept` estimates the heap the cleared message keeps, for the pool's
/// statistics ([`keel_pool::PoolStats::heap_bytes`]). prost has no way to
/// ask a message for its capacity, so the estimate is the largest encoded
/// length the message had since it was last rebuilt: a cleared string or
/// bytes field keeps at least the capacity its contents needed, and the
/// encoded length counts each field's contents once plus a few bytes of
/// tags. It is close for messages of strings and bytes (the ones that grow
/// large); repeated and nested fields are dropped by `clear` except for
/// their vectors' capacity, which it may over- or under-count. It is never
/// above [`MAX_KEPT_LEN`]: a larger message is rebuilt, not kept.
struct Pooled<M> {
    message: M,
    kept: usize,
}

impl<M: Default> Pooled<M> {
    fn new() -> Self {
        Pooled {
            message: M::default(),
            kept: 0,
        }
    }
}

impl<M: Message + Default> keel_pool::Reset for Pooled<M> {
    fn reset(&mut self) {
        let len = self.message.encoded_len();
        if len > MAX_KEPT_LEN {
            self.message = M::default();
            self.kept = 0;
        } else {
            self.message.clear();
            self.kept = self.kept.max(len);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.kept
    }
}

const MAX_KEPT_LEN: usize = 64 * 1024;

/// A few messages per thread, one per block, and a low mark above which free
/// blocks go back: a call holds its messages only while it runs, so a
/// thread reuses a few, and what a burst of waiting calls grew is given back
/// as it ends (one object per block: no free block is pinned by a neighbour
/// still in use or cached elsewhere).
const POOLS: keel_pool::PoolConfig = keel_pool::PoolConfig {
    high_water: 8,
    local_capacity: Some(8),
    block_objects: Some(1),
};

impl<Req, Resp> MessagePools<Req, Resp>
where
    Req: Message + Default + Send + 'static,
    Resp: Message + Default + Send + 'static,
{
    /// Messages that held more encoded bytes than this are not pooled.
    pub const MAX_KEPT_LEN: usize = MAX_KEPT_LEN;

    /// Pools named `requests` and `responses` (in pool listings).
    pub const fn new(requests: &'static str, responses: &'static str) -> Self {
        MessagePools {
            requests: keel_pool::Pool::with_config(requests, Pooled::new, POOLS),
            responses: keel_pool::Pool::with_config(responses, Pooled::new, POOLS),
        }
    }

    /// A request decoded from `payload` (checked against `required`, as
    /// [`decode_request`] does) and an empty response, both from the pools.
    pub fn take(
        &'static self,
        method: &'static MethodDescriptor,
        required: Option<&'static RequiredSchema>,
        payload: Bytes,
    ) -> Result<CallMessages<Req, Resp>, Status> {
        let mut request = self.requests.get();
        merge_request(method, payload, required, &mut request.message)?;
        Ok(CallMessages {
            request,
            response: self.responses.get(),
        })
    }
}

/// One call's request (decoded) and response (to fill), on loan from
/// [`MessagePools`]; both go back when this drops.
pub struct CallMessages<
    Req: Message + Default + Send + 'static,
    Resp: Message + Default + Send + 'static,
> {
    request: keel_pool::Pooled<'static, Pooled<Req>>,
    response: keel_pool::Pooled<'static, Pooled<Resp>>,
}

impl<Req, Resp> CallMessages<Req, Resp>
where
    Req: Message + Default + Send + 'static,
    Resp: Message + Default + Send + 'static,
{
    /// The request and the response, for the handler.
    pub fn parts(&mut self) -> (&Req, &mut Resp) {
        (&self.request.message, &mut self.response.message)
    }

    /// Appends the encoded response to `out` (the dispatch path's reused
    /// buffer).
    pub fn encode_response(&self, out: &mut BytesMut) {
        let reply = &self.response.message;
        out.reserve(reply.encoded_len());
        reply.encode_raw(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::health::v1::HealthCheckRequest;

    static STRINGS: keel_pool::Pool<Pooled<HealthCheckRequest>> =
        keel_pool::Pool::with_config("test.strings", Pooled::new, POOLS);

    #[test]
    fn pooled_messages_report_the_capacity_they_keep() {
        let fresh = STRINGS.stats().heap_bytes;
        assert_eq!(fresh, 0, "a fresh message keeps nothing");

        let mut m = STRINGS.get();
        m.message.service = "x".repeat(10_000);
        let capacity = m.message.service.capacity();
        drop(m);
        let s = STRINGS.stats();
        assert!(
            s.heap_bytes >= capacity as u64 && s.heap_bytes <= capacity as u64 + 8,
            "a cleared 10,000-byte string keeps {capacity} B, reported {}",
            s.heap_bytes
        );

        // Reused for something small: the capacity is still there, and
        // still reported.
        let mut m = STRINGS.get();
        assert!(m.message.service.is_empty() && m.message.service.capacity() == capacity);
        m.message.service.push_str("small");
        drop(m);
        assert_eq!(STRINGS.stats().heap_bytes, s.heap_bytes);

        // Too large to keep: rebuilt, and nothing reported for it.
        let mut m = STRINGS.get();
        m.message.service = "y".repeat(MAX_KEPT_LEN + 1);
        drop(m);
        assert_eq!(STRINGS.stats().heap_bytes, 0);
        assert_eq!(STRINGS.get().message.service.capacity(), 0);
    }
}
