//! The generic client handle generated clients wrap.

use bytes::Bytes;
use prost::Message;

use crate::channel::Channel;
use crate::codec::{RawPayload, RequiredSchema, decode_response};
use crate::method::MethodDescriptor;
use crate::options::CallOptions;
use crate::status::Status;

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

/// A decoded response and the attachment the server sent with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response<T> {
    /// The response message.
    pub message: T,
    /// The raw bytes the server sent after the message.
    pub attachment: Bytes,
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

    /// Calls `method` with `request` and decodes the response
    /// ([`Code::ERESPONSE`](crate::Code::ERESPONSE) if it does not decode),
    /// checking the response's proto2 `required` fields against `required`.
    ///
    /// `required` is `Resp`'s table when it has required fields
    /// (`Some(Resp::REQUIRED)`, see
    /// [`RequiredFields`](crate::codec::RequiredFields)), or `None`.
    /// Generated clients call this with the right one, so a response lacking
    /// a required field fails with `ERESPONSE`, as brpc fails it. Nothing is
    /// walked for `None`, and `Resp` needs no bound beyond prost's.
    pub async fn unary_checked<Req, Resp>(
        &self,
        method: &'static MethodDescriptor,
        request: &Req,
        required: Option<&'static RequiredSchema>,
    ) -> Result<Resp, Status>
    where
        Req: Message + Sync,
        Resp: Message + Default,
    {
        let reply = self.channel.call(method, &self.options, request).await?;
        decode_response(method, reply.payload, required)
    }

    /// Like [`unary_checked`](Self::unary_checked), also returning the
    /// response attachment.
    ///
    /// ```no_run
    /// # async fn demo(client: &keel::Client) -> Result<(), keel::Status> {
    /// use keel::codec::RequiredFields;
    ///
    /// mod example {
    ///     keel::include_proto!("example");
    /// }
    /// use example::{EchoRequest, EchoResponse, echo_service};
    ///
    /// let request = EchoRequest { message: "hi".into() };
    /// let reply = client
    ///     .unary_checked_with_attachment::<_, EchoResponse>(
    ///         &echo_service::ECHO,
    ///         &request,
    ///         Some(EchoResponse::REQUIRED),
    ///     )
    ///     .await?;
    /// println!("{} + {} attachment bytes", reply.message.message, reply.attachment.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn unary_checked_with_attachment<Req, Resp>(
        &self,
        method: &'static MethodDescriptor,
        request: &Req,
        required: Option<&'static RequiredSchema>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Message + Sync,
        Resp: Message + Default,
    {
        let reply = self.channel.call(method, &self.options, request).await?;
        Ok(Response {
            message: decode_response(method, reply.payload, required)?,
            attachment: reply.attachment,
        })
    }

    /// [`unary_checked`](Self::unary_checked) with no required-field check
    /// (`None`): for responses without required fields (proto3), and for
    /// callers that name only the types.
    ///
    /// A proto2 response lacking a required field decodes here (prost's
    /// default in its place) where brpc would fail the call; pass the
    /// table to `unary_checked` for such types, as generated clients do.
    pub async fn unary<Req, Resp>(
        &self,
        method: &'static MethodDescriptor,
        request: &Req,
    ) -> Result<Resp, Status>
    where
        Req: Message + Sync,
        Resp: Message + Default,
    {
        self.unary_checked(method, request, None).await
    }

    /// [`unary_checked_with_attachment`](Self::unary_checked_with_attachment)
    /// with no required-field check; see [`unary`](Self::unary).
    pub async fn unary_with_attachment<Req, Resp>(
        &self,
        method: &'static MethodDescriptor,
        request: &Req,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Message + Sync,
        Resp: Message + Default,
    {
        self.unary_checked_with_attachment(method, request, None)
            .await
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
        })
    }
}
