//! The generic client handle generated clients wrap, and [`UnaryCall`], the
//! one way a unary call is made.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use keel_pool::FutureBox;
use prost::Message;

use crate::channel::Channel;
use crate::codec::{RawPayload, RequiredSchema, decode_response};
use crate::compression::Compression;
use crate::method::MethodDescriptor;
use crate::options::CallOptions;
use crate::status::Status;
use crate::streaming::{ClientStreamingCall, RequestSink, Streaming};

pub use crate::response::Response;

/// A channel plus the options its calls use: a few words, no heap.
///
/// [`Client::new`] clones the channel's `Arc`; [`with_options`] clones it
/// again and moves the options in. Neither allocates, so deriving a client
/// per request, per tenant or per deadline is free, and the channel's
/// per-method state does not grow with the number of clients (the
/// MagicOnion lesson, `DESIGN.md` §1.3).
///
/// [`with_options`]: Client::with_options
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    options: CallOptions,
}

impl Client {
    /// A client calling through `channel` with default options.
    pub fn new(channel: &Channel) -> Client {
        Client {
            channel: channel.clone(),
            options: CallOptions::new(),
        }
    }

    /// A client sharing this one's channel, calling with `options`.
    #[must_use]
    pub fn with_options(&self, options: CallOptions) -> Client {
        Client {
            channel: self.channel.clone(),
            options,
        }
    }

    /// The options every call of this client uses.
    pub fn options(&self) -> &CallOptions {
        &self.options
    }

    /// The channel calls go through.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// A call of `method` with `request`: await it for the decoded
    /// response, or set per-call options first
    /// ([`timeout`](UnaryCall::timeout), [`attachment`](UnaryCall::attachment),
    /// [`metadata`](UnaryCall::metadata), ...) and call
    /// [`full`](UnaryCall::full) for the response's attachment and metadata
    /// too. Generated clients' methods return this.
    ///
    /// `required` is `Resp`'s table of proto2 `required` fields when it has
    /// some (`Some(Resp::REQUIRED)`, see
    /// [`RequiredFields`](crate::codec::RequiredFields)), or `None`:
    /// generated clients pass the right one, so a response lacking a
    /// required field fails with `ERESPONSE`, as brpc fails it.
    pub fn unary<'a, Req, Resp>(
        &'a self,
        method: &'static MethodDescriptor,
        request: &'a Req,
        required: Option<&'static RequiredSchema>,
    ) -> UnaryCall<'a, Req, Resp>
    where
        Req: Message + Sync,
        Resp: Message + Default,
    {
        UnaryCall {
            client: self,
            method,
            request,
            required,
            options: None,
            running: None,
            _response: PhantomData,
        }
    }

    /// A server-streaming call of `method` (over gRPC): sends `request`
    /// and returns the stream of responses. `required` is `Resp`'s table of
    /// proto2 required fields, as for [`unary`](Self::unary).
    pub async fn server_streaming<Req, Resp>(
        &self,
        method: &'static MethodDescriptor,
        request: &Req,
        required: Option<&'static RequiredSchema>,
    ) -> Result<Streaming<Resp>, Status>
    where
        Req: Message + Sync,
        Resp: Message + Default,
    {
        let (mut requests, responses) = self.channel.open_stream(method, &self.options).await?;
        requests.send(request).await?;
        requests.close();
        Ok(Streaming::client(responses, method, required))
    }

    /// A client-streaming call of `method` (over gRPC): send requests on
    /// the returned call, then [`finish`](ClientStreamingCall::finish) it
    /// for the response.
    pub async fn client_streaming<Req, Resp>(
        &self,
        method: &'static MethodDescriptor,
        required: Option<&'static RequiredSchema>,
    ) -> Result<ClientStreamingCall<Req, Resp>, Status>
    where
        Req: Message + Sync,
        Resp: Message + Default,
    {
        let (requests, responses) = self.channel.open_stream(method, &self.options).await?;
        Ok(ClientStreamingCall::new(
            RequestSink::new(requests),
            Streaming::client(responses, method, required),
        ))
    }

    /// A bidirectional-streaming call of `method` (over gRPC): a sink for
    /// the requests and a stream of the responses, usable from different
    /// tasks. Dropping either before the call ended cancels it.
    pub async fn bidi_streaming<Req, Resp>(
        &self,
        method: &'static MethodDescriptor,
        required: Option<&'static RequiredSchema>,
    ) -> Result<(RequestSink<Req>, Streaming<Resp>), Status>
    where
        Req: Message + Sync,
        Resp: Message + Default,
    {
        let (requests, responses) = self.channel.open_stream(method, &self.options).await?;
        Ok((
            RequestSink::new(requests),
            Streaming::client(responses, method, required),
        ))
    }

    /// Sends `payload` as the already-encoded request and returns the
    /// response undecoded (proxies, `keel call`, tests of malformed input).
    pub async fn unary_raw(
        &self,
        method: &'static MethodDescriptor,
        payload: Bytes,
    ) -> Result<Response<Bytes>, Status> {
        let reply = self
            .channel
            .call(method, &self.options, &RawPayload(payload))
            .await?;
        Ok(Response {
            message: reply.payload,
            attachment: reply.attachment,
            metadata: reply.metadata,
        })
    }
}

/// One unary call, not sent yet: `.await` it for the decoded response, or
/// set options for this call alone first. Made by generated clients
/// (`client.echo(&request)`) and [`Client::unary`].
///
/// ```no_run
/// # mod example { keel::include_proto!("example"); }
/// # async fn demo(client: example::EchoServiceClient) -> Result<(), keel::Status> {
/// use std::time::Duration;
/// let request = example::EchoRequest { message: "hi".into() };
/// // The common case: the message.
/// let reply = client.echo(&request).await?;
/// // Per-call options, and the response's attachment and metadata.
/// let full = client
///     .echo(&request)
///     .timeout(Duration::from_millis(200))
///     .attachment(keel::bytes::Bytes::from_static(b"raw bytes"))
///     .metadata("request-id", "42")
///     .full()
///     .await?;
/// println!("{} + {} bytes, {:?}", full.message.message, full.attachment.len(), full.metadata);
/// # Ok(())
/// # }
/// ```
///
/// It is a [`Future`]: setting no option copies nothing; the first option
/// set copies the client's options for this call. Polled, it runs the call
/// in a pooled block ([`FutureBox`]), so a call allocates nothing for
/// itself in steady state.
#[must_use = "a call does nothing until awaited"]
pub struct UnaryCall<'a, Req, Resp> {
    client: &'a Client,
    method: &'static MethodDescriptor,
    request: &'a Req,
    required: Option<&'static RequiredSchema>,
    /// This call's options, once one differs from the client's.
    options: Option<CallOptions>,
    /// The call, once polled.
    running: Option<FutureBox<'a, Result<Resp, Status>>>,
    _response: PhantomData<fn() -> Resp>,
}

impl<Req, Resp> std::fmt::Debug for UnaryCall<'_, Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnaryCall")
            .field("method", &format_args!("{}", self.method))
            .field(
                "options",
                self.options.as_ref().unwrap_or(&self.client.options),
            )
            .finish_non_exhaustive()
    }
}

impl<'a, Req, Resp> UnaryCall<'a, Req, Resp>
where
    Req: Message + Sync,
    Resp: Message + Default,
{
    fn options(&self) -> &CallOptions {
        self.options.as_ref().unwrap_or(&self.client.options)
    }

    fn options_mut(&mut self) -> &mut CallOptions {
        self.options
            .get_or_insert_with(|| self.client.options.clone())
    }

    /// This call's timeout (instead of the client's or the channel's).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options_mut().timeout = Some(timeout);
        self
    }

    /// Raw bytes sent after the request message.
    pub fn attachment(mut self, attachment: Bytes) -> Self {
        self.options_mut().attachment = attachment;
        self
    }

    /// Adds `key: value` to the metadata sent with the request.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options_mut().metadata.insert(key, value);
        self
    }

    /// The log id the server logs with the call.
    pub fn log_id(mut self, log_id: u64) -> Self {
        self.options_mut().log_id = log_id;
        self
    }

    /// The key consistent-hashing load balancers use.
    pub fn hash_key(mut self, key: u64) -> Self {
        self.options_mut().hash_key = key;
        self
    }

    /// How the request payload is compressed.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.options_mut().compression = compression;
        self
    }

    /// All of this call's options at once.
    pub fn with_options(mut self, options: CallOptions) -> Self {
        self.options = Some(options);
        self
    }

    /// Sends the call; the decoded response with its attachment and
    /// metadata.
    pub async fn full(self) -> Result<Response<Resp>, Status> {
        let reply = self
            .client
            .channel
            .call(self.method, self.options(), self.request)
            .await?;
        Ok(Response {
            message: decode_response(self.method, reply.payload, self.required)?,
            attachment: reply.attachment,
            metadata: reply.metadata,
        })
    }
}

/// Sends the call and decodes the response (what awaiting a [`UnaryCall`]
/// runs, in a pooled block). An `async move` block rather than an `async
/// fn`, which rustc lays out with each argument twice (see
/// `server::dispatch::run`).
#[allow(clippy::manual_async_fn)]
fn send<'a, Req, Resp>(
    client: &'a Client,
    method: &'static MethodDescriptor,
    request: &'a Req,
    required: Option<&'static RequiredSchema>,
    options: Option<CallOptions>,
) -> impl Future<Output = Result<Resp, Status>> + Send + 'a
where
    Req: Message + Sync,
    Resp: Message + Default,
{
    async move {
        let options = options.as_ref().unwrap_or(&client.options);
        let reply = client.channel.call(method, options, request).await?;
        decode_response(method, reply.payload, required)
    }
}

impl<'a, Req, Resp> Future for UnaryCall<'a, Req, Resp>
where
    Req: Message + Sync + 'a,
    Resp: Message + Default + Send + 'a,
{
    type Output = Result<Resp, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (references, options, a `FutureBox`).
        let this = self.get_mut();
        let running = match &mut this.running {
            Some(running) => running,
            None => this.running.insert(FutureBox::new(send(
                this.client,
                this.method,
                this.request,
                this.required,
                this.options.take(),
            ))),
        };
        Pin::new(running).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unary call in flight keeps its future in a pooled block: one of
    /// 2 KiB, which holds the attempt (retry loop, transport call) once.
    #[test]
    fn a_unary_call_in_flight_takes_a_2_kib_block() {
        static METHOD: MethodDescriptor = MethodDescriptor::for_tests();
        let channel = Channel::new("127.0.0.1:1").expect("a valid address");
        let client = Client::new(&channel);
        let call = FutureBox::new(send::<(), ()>(&client, &METHOD, &(), None, None));
        assert_eq!(call.block_size(), 2048);
    }
}
