//! The server-side view of one call, handed to handlers by reference.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use tokio::time::Instant;

use crate::method::MethodDescriptor;

/// What a handler knows about the call it serves: the method, the peer, the
/// log id, the request attachment and the deadline; and where it puts the
/// response attachment.
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
/// #     response_type: "demo.Ping", kind: MethodKind::Unary };
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
    deadline: Option<Instant>,
    response_attachment: Mutex<Bytes>,
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
            deadline: None,
            response_attachment: Mutex::new(Bytes::new()),
        }
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
        *self.lock_response_attachment() = attachment;
    }

    /// Takes the response attachment, leaving it empty (the server calls this
    /// after the handler).
    pub fn take_response_attachment(&self) -> Bytes {
        std::mem::take(&mut *self.lock_response_attachment())
    }

    fn lock_response_attachment(&self) -> std::sync::MutexGuard<'_, Bytes> {
        // The guarded value is a plain `Bytes`, valid whatever a panicking
        // holder did, so poisoning carries no information here.
        self.response_attachment
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::MethodKind;

    static M: MethodDescriptor = MethodDescriptor {
        service: "s.S",
        method: "M",
        path: "/s.S/M",
        index: 0,
        request_type: "s.A",
        response_type: "s.B",
        kind: MethodKind::Unary,
    };

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
    }
}
