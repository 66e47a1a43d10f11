//! The object-safe [`Service`] trait servers dispatch into, and the helpers
//! generated adapters implement it with.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::codec::{RequiredSchema, decode_request};
use crate::context::Context;
use crate::method::{MethodDescriptor, ServiceDescriptor};
use crate::status::{Code, Status};

/// The future of one dispatched call: `Ok(())` once the encoded response has
/// been appended to the caller's buffer.
pub type ServiceFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Status>> + Send + 'a>>;

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
    /// Cost: the returned future is boxed — one heap allocation per call,
    /// holding the handler's future.
    fn call<'a>(
        &'a self,
        method: usize,
        ctx: &'a Context,
        request: Bytes,
        response: &'a mut BytesMut,
    ) -> ServiceFuture<'a>;
}

/// Serves a unary call: decode `request` as `Req`, run `handler`, append the
/// encoded `Resp` to `response`. Generated adapters call this.
///
/// `required` is `Req`'s table of proto2 `required` fields, or `None` when
/// it has none (proto3): generated code knows which, and passes
/// `Some(&...)` only then. A request missing a required field never reaches
/// the handler; it fails with [`Code::EREQUEST`] ("Fail to parse
/// request=..., ...: missing required field example.EchoRequest.message"),
/// as brpc answers it.
pub fn unary<'a, Req, Resp, F, Fut>(
    method: &'static MethodDescriptor,
    required: Option<&'static RequiredSchema>,
    request: Bytes,
    response: &'a mut BytesMut,
    handler: F,
) -> ServiceFuture<'a>
where
    Req: Message + Default + Send + 'a,
    Resp: Message + 'a,
    F: FnOnce(Req) -> Fut + Send + 'a,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'a,
{
    Box::pin(async move {
        let request = decode_request::<Req>(method, request, required)?;
        let reply = handler(request).await?;
        let len = reply.encoded_len();
        if response.capacity() == 0 {
            // Exact size: a buffer frozen into `Bytes` at full capacity
            // needs no extra allocation (`reserve` would round up).
            *response = BytesMut::with_capacity(len);
        } else {
            response.reserve(len);
        }
        reply.encode_raw(response);
        Ok(())
    })
}

/// The [`Code::ENOMETHOD`] answer for a method index `service` does not serve
/// (out of range, or a streaming method in a unary-only build).
pub fn unknown_method(
    service: &'static ServiceDescriptor,
    method: usize,
) -> ServiceFuture<'static> {
    let message = match service.methods.get(method) {
        Some(m) => format!("{m} is a {:?} method, which is not served yet", m.kind),
        None => format!("{} has no method #{method}", service.name),
    };
    Box::pin(std::future::ready(Err(Status::new(
        Code::ENOMETHOD,
        message,
    ))))
}
