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
/// report their statistics, and are listed with every other pool.
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
struct Pooled<M>(M);

impl<M: Message + Default> keel_pool::Reset for Pooled<M> {
    fn reset(&mut self) {
        if self.0.encoded_len() > MAX_KEPT_LEN {
            self.0 = M::default();
        } else {
            self.0.clear();
        }
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
            requests: keel_pool::Pool::with_config(requests, || Pooled(Req::default()), POOLS),
            responses: keel_pool::Pool::with_config(responses, || Pooled(Resp::default()), POOLS),
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
        merge_request(method, payload, required, &mut request.0)?;
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
        (&self.request.0, &mut self.response.0)
    }

    /// Appends the encoded response to `out` (the dispatch path's reused
    /// buffer).
    pub fn encode_response(&self, out: &mut BytesMut) {
        let reply = &self.response.0;
        out.reserve(reply.encoded_len());
        reply.encode_raw(out);
    }
}
