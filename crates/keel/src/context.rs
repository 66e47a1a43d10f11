//! The server-side view of one call, handed to handlers by reference.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use tokio::time::Instant;

use crate::compression::Compression;
use crate::metadata::Metadata;
use crate::method::MethodDescriptor;

/// What a handler knows about the call it serves: the method, the peer, the
/// log id, the request attachment, metadata and deadline, values server
/// interceptors attached; and where it puts the response attachment and
/// metadata.
///
/// Handlers get `&Context`. It is `Sync` so handler futures holding it stay
/// `Send`; the response attachment sits behind an uncontended
/// [`Mutex`] (no allocation, a single atomic operation per access).
/// Building one allocates nothing: the request attachment is a slice of the
/// received frame.
///
/// ```
/// # use keel::{Context, MethodDescriptor, MethodKind};
/// # static PING: MethodDescriptor = MethodDescriptor { service: "demo.Pinger",
/// #     method: "Ping", path: "/demo.Pinger/Ping", index: 0, request_type: "demo.Ping",
/// #     response_type: "demo.Ping", kind: MethodKind::Unary, files: &[] };
/// use keel::bytes::Bytes;
/// let ctx = Context::new(&PING).with_log_id(7).with_attachment(Bytes::from_static(b"in"));
/// assert_eq!(ctx.attachment(), &b"in"[..]);
/// ctx.set_response_attachment(Bytes::from_static(b"out"));
/// assert_eq!(ctx.take_response_attachment(), &b"out"[..]);
/// ```
#[derive(Debug)]
pub struct Context {
    method: &'static MethodDescriptor,
    peer: Option<SocketAddr>,
    log_id: u64,
    attachment: Bytes,
    metadata: Metadata,
    deadline: Option<Instant>,
    protocol: &'static str,
    /// How the request arrived compressed.
    compression: Compression,
    extensions: Extensions,
    response: Mutex<ResponseExtras>,
}

/// What a handler sends back besides the message.
#[derive(Debug, Default)]
struct ResponseExtras {
    attachment: Bytes,
    metadata: Metadata,
    trailers: Metadata,
    compression: Option<Compression>,
}

/// Values of any type attached to a call by server interceptors (an
/// authenticated user, a quota handle) for the handler to read. Empty costs
/// nothing; each value is one allocation.
#[derive(Default)]
pub struct Extensions {
    values: Vec<Box<dyn Any + Send + Sync>>,
}

impl Extensions {
    /// Attaches `value`, replacing an earlier value of the same type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        match self.values.iter_mut().find(|v| v.is::<T>()) {
            Some(existing) => *existing = Box::new(value),
            None => self.values.push(Box::new(value)),
        }
    }

    /// The value of type `T`, if one was attached.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.values.iter().find_map(|v| v.downcast_ref::<T>())
    }

    /// Number of values attached.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether none is attached.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.values.len())
            .finish()
    }
}

impl Context {
    /// A context for a call of `method` with no peer, log id, attachment or
    /// deadline; servers fill those in with the `with_*` methods.
    pub fn new(method: &'static MethodDescriptor) -> Context {
        Context {
            method,
            peer: None,
            log_id: 0,
            attachment: Bytes::new(),
            metadata: Metadata::new(),
            deadline: None,
            protocol: "in-process",
            compression: Compression::None,
            extensions: Extensions::default(),
            response: Mutex::new(ResponseExtras::default()),
        }
    }

    /// Sets the metadata the caller sent.
    pub fn with_metadata(mut self, metadata: Metadata) -> Context {
        self.metadata = metadata;
        self
    }

    /// Sets the protocol the call arrived over (`"baidu_std"`, ...).
    pub fn with_protocol(mut self, protocol: &'static str) -> Context {
        self.protocol = protocol;
        self
    }

    /// Sets how the request arrived compressed.
    pub fn with_compression(mut self, compression: Compression) -> Context {
        self.compression = compression;
        self
    }

    /// Sets the caller's address.
    pub fn with_peer(mut self, peer: SocketAddr) -> Context {
        self.peer = Some(peer);
        self
    }

    /// Sets the log id the caller sent.
    pub fn with_log_id(mut self, log_id: u64) -> Context {
        self.log_id = log_id;
        self
    }

    /// Sets the request attachment.
    pub fn with_attachment(mut self, attachment: Bytes) -> Context {
        self.attachment = attachment;
        self
    }

    /// Sets the instant after which the caller no longer waits (from the
    /// request's `timeout_ms`).
    pub fn with_deadline(mut self, deadline: Instant) -> Context {
        self.deadline = Some(deadline);
        self
    }

    /// The method being called.
    pub fn method(&self) -> &'static MethodDescriptor {
        self.method
    }

    /// The caller's address; `None` for in-process calls.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The protocol the call arrived over: `"baidu_std"` or `"in-process"`.
    pub fn protocol(&self) -> &'static str {
        self.protocol
    }

    /// The string key/value pairs the caller sent (baidu_std
    /// `user_fields`; [`CallOptions::metadata`](crate::CallOptions::metadata)
    /// on a Keel client).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Values server interceptors attached to this call.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Attaches values to this call (server interceptors do, before the
    /// handler runs).
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// The caller's log id (0 when none was sent).
    pub fn log_id(&self) -> u64 {
        self.log_id
    }

    /// The raw bytes the caller sent after the request message.
    pub fn attachment(&self) -> &Bytes {
        &self.attachment
    }

    /// When the caller stops waiting; `None` when it sent no timeout. Work
    /// past it is wasted: the caller already got `ERPCTIMEDOUT`.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Runs `f` with this call's rpcz span when the call is sampled (the
    /// handler may annotate it, read its ids, set fields); `None` when it is
    /// not. Client calls made meanwhile become the span's children on their
    /// own. For a line of text, [`annotate`](Self::annotate) is shorter.
    pub fn span<R>(&self, f: impl FnOnce(&crate::rpcz::SpanHandle) -> R) -> Option<R> {
        crate::rpcz::with_current(f)
    }

    /// Adds a line to this call's rpcz span; does nothing when the call is
    /// not sampled.
    pub fn annotate(&self, text: &str) {
        crate::rpcz::annotate(text);
    }

    /// Sets the raw bytes sent back after the response message (replacing
    /// any set before). Sent only if the handler succeeds.
    pub fn set_response_attachment(&self, attachment: Bytes) {
        self.lock_response().attachment = attachment;
    }

    /// Takes the response attachment, leaving it empty (the server calls this
    /// after the handler).
    pub fn take_response_attachment(&self) -> Bytes {
        std::mem::take(&mut self.lock_response().attachment)
    }

    /// Adds `key: value` to the metadata sent back with the response
    /// (replacing an earlier value of `key`).
    pub fn set_response_metadata(&self, key: impl Into<String>, value: impl Into<String>) {
        self.lock_response().metadata.insert(key, value);
    }

    /// Takes the response metadata, leaving it empty (the server calls this
    /// after the handler).
    pub fn take_response_metadata(&self) -> Metadata {
        std::mem::take(&mut self.lock_response().metadata)
    }

    /// Adds `key: value` to the metadata sent after the response: gRPC's
    /// trailers (trailing metadata), sent whether the call succeeds or
    /// fails. baidu_std has no trailers: there it travels with the response
    /// metadata.
    pub fn set_response_trailer(&self, key: impl Into<String>, value: impl Into<String>) {
        self.lock_response().trailers.insert(key, value);
    }

    /// Takes the response trailers, leaving them empty (the server calls
    /// this after the handler).
    pub fn take_response_trailers(&self) -> Metadata {
        std::mem::take(&mut self.lock_response().trailers)
    }

    /// How the request arrived compressed ([`Compression::None`] when it
    /// did not, or in process).
    pub fn request_compression(&self) -> Compression {
        self.compression
    }

    /// Compresses the response as `compression` (if the caller accepts it;
    /// gRPC callers list what they accept). By default a response is
    /// compressed like its request.
    pub fn set_response_compression(&self, compression: Compression) {
        self.lock_response().compression = Some(compression);
    }

    /// The compression the handler chose for the response, if any.
    pub fn response_compression(&self) -> Option<Compression> {
        self.lock_response().compression
    }

    fn lock_response(&self) -> std::sync::MutexGuard<'_, ResponseExtras> {
        // The guarded values are plain data, valid whatever a panicking
        // holder did, so poisoning carries no information here.
        self.response.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static M: MethodDescriptor = MethodDescriptor::for_tests();

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn context_is_send_and_sync() {
        assert_send_sync::<Context>();
    }

    #[test]
    fn fields_and_response_attachment() {
        let peer: SocketAddr = "127.0.0.1:8000".parse().expect("valid address");
        let deadline = Instant::now();
        let ctx = Context::new(&M)
            .with_peer(peer)
            .with_log_id(9)
            .with_deadline(deadline);
        assert!(ctx.method().is(&M));
        assert_eq!(ctx.peer(), Some(peer));
        assert_eq!(ctx.log_id(), 9);
        assert_eq!(ctx.deadline(), Some(deadline));
        assert!(ctx.attachment().is_empty());
        assert!(ctx.take_response_attachment().is_empty());
        ctx.set_response_attachment(Bytes::from_static(b"a"));
        ctx.set_response_attachment(Bytes::from_static(b"b"));
        assert_eq!(ctx.take_response_attachment(), &b"b"[..]);
        assert!(ctx.take_response_attachment().is_empty());
        ctx.set_response_metadata("k", "v");
        assert_eq!(ctx.take_response_metadata().get("k"), Some("v"));
        assert!(ctx.take_response_metadata().is_empty());
    }

    #[test]
    fn extensions_hold_one_value_per_type() {
        let mut ctx = Context::new(&M).with_metadata(crate::Metadata::new().with("a", "1"));
        assert_eq!(ctx.metadata().get("a"), Some("1"));
        ctx.extensions_mut().insert(7u32);
        ctx.extensions_mut().insert("user");
        ctx.extensions_mut().insert(9u32);
        assert_eq!(ctx.extensions().get::<u32>(), Some(&9));
        assert_eq!(ctx.extensions().get::<&str>(), Some(&"user"));
        assert_eq!(ctx.extensions().get::<u64>(), None);
        assert_eq!(ctx.extensions().len(), 2);
    }
}
