//! The seam between a [`Channel`](crate::Channel) and the wire.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use tokio::time::Instant;

use crate::codec::Encode;
use crate::method::MethodDescriptor;
use crate::options::CallOptions;
use crate::status::Status;

/// Carries calls to a server: in-process (see
/// [`InProcess`](crate::channel::InProcess)) or over TCP with baidu_std
/// framing ([`BaiduStd`](crate::channel::BaiduStd)).
///
/// Object-safe: a channel holds it as `dyn Transport`. The channel has
/// already applied its cross-cutting concerns (per-method stats, the timeout)
/// when `call` runs, so a transport only moves bytes: encode `call.request`
/// with `call.options` (attachment, compression, log id) and the deadline,
/// send, await the matching response, hand back its payload undecoded.
pub trait Transport: Send + Sync + 'static {
    /// Sends one call and resolves to its response. Dropping the future
    /// abandons the call (timeout, cancellation): implementations must
    /// release whatever they registered for it (R1).
    fn call<'a>(&'a self, call: Call<'a>) -> TransportFuture<'a>;

    /// Calls sent and not yet answered (0 for transports that keep no
    /// table).
    fn pending_calls(&self) -> usize {
        0
    }

    /// The cluster layer, when this transport is one (a channel built on a
    /// naming URL).
    fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        None
    }
}

/// The future of [`Transport::call`].
pub type TransportFuture<'a> = Pin<Box<dyn Future<Output = Result<Reply, Status>> + Send + 'a>>;

/// One outgoing call, borrowed from the caller for the duration of the call.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// What is called; also names the service and method on the wire.
    pub method: &'static MethodDescriptor,
    /// The client's options: attachment, compression, log id, hash key.
    pub options: &'a CallOptions,
    /// The request message, encoded on demand (e.g. straight into a frame).
    pub request: &'a (dyn Encode + Sync),
    /// When the caller gives up (from `options.timeout`); sent to the server
    /// as `timeout_ms`. The channel enforces it; a transport may also use it.
    pub deadline: Option<Instant>,
    /// The call's rpcz span (unsampled when the call is not traced). A
    /// transport that can carries its ids to the server (baidu_std:
    /// `RpcRequestMeta` fields 4-6) and marks it [`Sent`](crate::rpcz::Mark::Sent)
    /// once the request is queued for writing.
    pub span: &'a crate::rpcz::SpanHandle,
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("method", &format_args!("{}", self.method))
            .field("options", self.options)
            .field("request_len", &self.request.encoded_len())
            .field("deadline", &self.deadline)
            .field("trace", &self.span.context())
            .finish()
    }
}

/// A successful response, still encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// The response message's encoding.
    pub payload: Bytes,
    /// The raw bytes the server sent after the message.
    pub attachment: Bytes,
}
